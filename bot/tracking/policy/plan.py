"""Planning the next poll, and keeping what is known of a training up to date (``observe``)."""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from bot.tracking.policy.learn import MAX_STAGE, Learned, StageStats, start_of
from bot.tracking.policy.model import (
    DEFAULT_TUNING,
    MAX_SIGHTINGS,
    Bounds,
    Clamp,
    Observation,
    PollPolicy,
    Reason,
    Sighting,
    TrainingKind,
    Tuning,
)
from bot.tracking.policy.stats import FAR, MIN_SPREAD, finite, posterior


def observe(
    previous: Observation | None,
    now: float,
    *,
    stage: str,
    polled_before: float | None,
    eta_minutes: float | None = None,
    elapsed_seconds: float | None = None,
    finished: bool = False,
    kind: TrainingKind = TrainingKind.UNKNOWN,
    learned: Learned | None = None,
    tuning: Tuning | None = None,
) -> Observation:
    """What is known after a poll at ``now`` showed ``stage`` (a ``stage_key``).

    ``polled_before``: when the training was last polled before this poll (None at its first).
    Returns ``previous`` itself when nothing changed, so the caller can skip writing it. A kind
    once known is kept when a later call says ``UNKNOWN``.

    When a new stage (or the end) shows, when it began is placed between ``polled_before`` and
    ``now``: where the plan expected it (from ``learned``, as ``plan_next_poll`` did at the
    poll before) and where the trainer's elapsed stamps put it, as far as those agree with
    that interval. A stage there at the first poll is taken to begin then.
    """
    tuning = tuning or DEFAULT_TUNING
    # Non-finite numbers say nothing; None says so plainly, and compares equal to itself.
    eta_minutes = _finite_or_none(eta_minutes)
    elapsed_seconds = _finite_or_none(elapsed_seconds)
    eta_at = None if eta_minutes is None else now
    if previous is None:
        first = Sighting(stage, now, None, eta_minutes, eta_at, elapsed_seconds, now, None)
        ended = replace(first, eta_minutes=None, eta_seen_at=None) if finished else None
        return Observation(kind, now, (first,), ended)
    known_kind = previous.kind if kind is TrainingKind.UNKNOWN else kind
    new_stage = stage != previous.current.stage
    if previous.finished or not (new_stage or finished):
        current = previous.current
        if not new_stage and eta_minutes != current.eta_minutes:
            current = replace(current, eta_minutes=eta_minutes, eta_seen_at=eta_at)
        if not new_stage and elapsed_seconds not in (None, current.elapsed_seconds):
            current = replace(current, elapsed_seconds=elapsed_seconds)
        if current is previous.current and known_kind is previous.kind:
            return previous
        return replace(previous, kind=known_kind, stages=(*previous.stages[:-1], current))
    # A change: when did it happen?
    changed = previous
    if new_stage:
        began, spread = _began(previous, now, polled_before, elapsed_seconds, learned, tuning)
        sighting = Sighting(
            stage, now, polled_before, eta_minutes, eta_at, elapsed_seconds, began, spread
        )
        stages = (*previous.stages, sighting)[-MAX_SIGHTINGS:]
        changed = replace(previous, kind=known_kind, stages=stages)
    else:
        changed = replace(previous, kind=known_kind)
    if finished:
        # The end has no stamp of its own: the one shown is the last line's.
        began, spread = _began(changed, now, polled_before, None, learned, tuning)
        ended = Sighting(stage, now, polled_before, None, None, None, began, spread)
        changed = replace(changed, ended=ended)
    return changed


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _began(
    previous: Observation,
    now: float,
    polled_before: float | None,
    elapsed: float | None,
    learned: Learned | None,
    tuning: Tuning,
) -> tuple[float, float | None]:
    """When a change first seen at ``now`` most likely happened, and give or take how much."""
    if polled_before is None or not (finite(polled_before) and polled_before < now):
        return now, None
    lo, hi = polled_before, now
    factors: list[tuple[float, float]] = []
    if learned is not None:
        expected = expect_stage_end(previous, polled_before, learned, tuning)
        if expected is not None:
            factors.append((expected.end, expected.spread))
    if elapsed is not None:
        zero = _trainer_zero(previous.stages)
        if zero is not None:
            factors.append((zero[0] + elapsed, zero[1]))
    return posterior(lo, hi, factors)


def _trainer_zero(stages: Sequence[Sighting]) -> tuple[float, float] | None:
    """When the trainer's clock read zero on ours (and give or take), from the stamped lines
    whose start is placed: their precision-weighted mean."""
    weight = total = 0.0
    for s in stages:
        spread = s.began_spread
        if s.elapsed_seconds is None or s.began_at is None or spread is None:
            continue
        if not 0 <= spread <= FAR:
            continue
        w = 1 / max(spread, MIN_SPREAD) ** 2
        weight += w
        total += w * (s.began_at - s.elapsed_seconds)
    if weight == 0 or not finite(total):
        return None
    return total / weight, 1 / math.sqrt(weight)


# -- planning -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Expectation:
    """When the current stage is expected to end (our clock), give or take ``spread`` seconds
    (a standard deviation), and what says so (``Reason.ETA`` or ``Reason.LEARNED``)."""

    end: float
    spread: float
    source: Reason


@dataclass(frozen=True, slots=True)
class PollPlan:
    """When to poll next, and why."""

    at: float
    reason: Reason
    clamped: Clamp | None = None
    expected_end: float | None = None
    """When the current stage is expected to end, when something says so."""

    @property
    def why(self) -> str:
        """The reason as a short phrase: "ETA", "fallback, clamped to maximum"..."""
        return self.reason.value if self.clamped is None else f"{self.reason}, {self.clamped}"


# Above this a float clock has less than a millisecond of resolution; no Unix clock gets there.
_MAX_CLOCK = 1e12


def plan_next_poll(
    obs: Observation,
    now: float,
    bounds: Bounds,
    policy: PollPolicy,
    learned: Learned,
    rand: Callable[[], float],
    tuning: Tuning = DEFAULT_TUNING,
) -> PollPlan:
    """The next poll of the training ``obs`` describes, planned at ``now``.

    ``rand()`` returns a float in [0, 1) (``random.random``). The gap from ``now`` always lies
    in ``[bounds.min_gap, bounds.max_gap]``: ``FIXED`` polls every ``min_gap`` plus up to
    ``jitter`` of it; ``ADAPTIVE`` as the module docstring says. A finished training gets a
    plan too (``Reason.FINISHED``, ``max_gap`` away), though the tracker stops polling it.
    ``ValueError`` if ``now`` is not a finite clock reading.
    """
    if not (math.isfinite(now) and abs(now) < _MAX_CLOCK):
        raise ValueError(f"the clock must read a finite time, not {now}")
    r = _unit(rand())
    if obs.finished:
        return _plan(now, bounds.max_gap, Reason.FINISHED, bounds)
    if policy is PollPolicy.FIXED:
        # The interval, with jitter upwards only: never below the interval.
        return _plan(now, bounds.min_gap * (1 + bounds.jitter * r), Reason.FIXED, bounds)
    expected = expect_stage_end(obs, now, learned, tuning)
    if expected is None:
        gap = tuning.cold * bounds.min_gap * (1 + bounds.jitter * r)
        return _plan(now, gap, Reason.FALLBACK, bounds)
    return _adaptive(expected, now, bounds, tuning, r)


def _adaptive(
    expected: Expectation, now: float, bounds: Bounds, tuning: Tuning, r: float
) -> PollPlan:
    """The adaptive plan around an expected end of the current stage (``r``: a draw in [0, 1))."""
    g, big = bounds.min_gap, bounds.max_gap
    # Relative to now from here: an expectation years away (a clock that jumped) stays finite.
    end = expected.end - now
    spread = expected.spread
    if not (abs(end) <= FAR and spread <= FAR):
        return _plan(now, big, Reason.OVERDUE if end < 0 else expected.source, bounds)
    # Dense polling from `lead` spreads before the expected end to `linger` after it. A vague
    # expectation would make that long: it gets `dense_polls` polls at most, around the end;
    # and one vaguer still is no better than the first round's interval there.
    lead, linger = tuning.lead * spread, tuning.linger * spread
    vague = lead + linger > 2 * tuning.dense_polls * g
    if lead + linger > tuning.dense_polls * g and not vague:
        shrink = tuning.dense_polls * g / (lead + linger)
        lead, linger = lead * shrink, linger * shrink
    dense_from, dense_to = end - lead, end + linger
    if dense_to <= 0:
        gap = (g + tuning.backoff * -dense_to) * (1 + bounds.jitter * (2 * r - 1))
        return _plan(now, gap, Reason.OVERDUE, bounds, expected.end)
    if vague and tuning.fallback * g >= dense_from:
        gap = tuning.fallback * g * (1 + bounds.jitter * (2 * r - 1))
        return _plan(now, gap, expected.source, bounds, expected.end)
    # Dense polls fall on a grid through `aim`, every `g`: go to the first one at or after
    # `dense_from` (and at least `g` away); past `aim` (or when the stage showed too late to
    # reach it), as soon as allowed.
    aim = min(end + tuning.aim * spread, dense_to)
    target = max(dense_from, g)
    # (On the grid already, rounding must not skip the next point: hence the nudge.)
    steps = min(math.ceil((target - aim) / g - 1e-9), 0) if aim > target else 0
    gap = aim + steps * g if aim > target else target
    if dense_from <= 0 and gap > g:
        # Inside the window already (the expectation moved since the grid was laid): no gap
        # longer than `g` to reach the new grid.
        gap = g
    clamped = None
    if gap > big:
        # Too far for one gap: wait as long as allowed but leave room to land on the grid.
        gap = max(g, min(big, gap - g)) * (1 - bounds.jitter * r)
    elif gap < 2 * g and dense_from <= g:
        clamped = Clamp.MIN  # polling as often as allowed
    return _plan(now, gap, expected.source, bounds, expected.end, clamped)


def _unit(value: float) -> float:
    """A random draw forced into [0, 1), whatever the source returned."""
    if not math.isfinite(value):
        return 0.5
    return min(max(value, 0.0), math.nextafter(1.0, 0.0))


def _plan(
    now: float,
    gap: float,
    reason: Reason,
    bounds: Bounds,
    expected_end: float | None = None,
    clamped: Clamp | None = None,
) -> PollPlan:
    if not gap >= bounds.min_gap:  # also NaN
        gap, clamped = bounds.min_gap, Clamp.MIN
    elif gap > bounds.max_gap:
        gap, clamped = bounds.max_gap, Clamp.MAX
    at = now + gap
    # Float rounding must not break the bounds by an ulp either way.
    while at - now > bounds.max_gap:
        at = math.nextafter(at, -math.inf)
    while at - now < bounds.min_gap:
        at = math.nextafter(at, math.inf)
    if expected_end is not None and not finite(expected_end):
        expected_end = None
    return PollPlan(at, reason, clamped, expected_end)


def expect_stage_end(
    obs: Observation, now: float, learned: Learned, tuning: Tuning = DEFAULT_TUNING
) -> Expectation | None:
    """When the current stage should end: from the ETA on its line when that is plausible and
    predicted better than the stage's learned length in past runs, else from that length;
    scaled by the run's pace when its finished stages were far off their predictions. None
    when past runs say nothing of the stage."""
    current = obs.current
    stats = learned.get(obs.kind, current.stage, tuning.min_samples)
    if stats is None:
        return None
    start = start_of(current)
    start_spread = current.began_spread or 0.0
    if not (finite(start) and finite(start_spread)):
        return None
    start = min(start, now)  # a clock that went back: the stage began by now at the latest
    pace = _pace(obs, learned, tuning)
    if 1 / tuning.pace_trigger <= pace <= tuning.pace_trigger:
        predicted = _predict(stats, current.eta_minutes, tuning)
        if predicted is None:
            return None
        length, spread, source = predicted
    else:
        # Off pace: its ETA is not to be believed; its learned lengths, scaled, may be.
        if not (finite(stats.length) and finite(stats.spread)):
            return None
        length, spread, source = stats.length * pace, stats.spread * pace, Reason.LEARNED
    spread = math.hypot(max(spread, tuning.spread_floor), start_spread)
    end = start + max(length, 0.0)
    if not (finite(end) and finite(spread)):
        return None
    return Expectation(end, spread, source)


def _predict(
    stats: StageStats, eta: float | None, tuning: Tuning
) -> tuple[float, float, Reason] | None:
    """(length, spread, source) of a stage from what past runs say and the ETA on its line."""
    if not (finite(stats.length) and finite(stats.spread)):
        return None
    best = (stats.length, stats.spread, Reason.LEARNED)
    if (
        eta is None
        or not 0 < eta <= tuning.eta_max_minutes
        or stats.eta_slope is None
        or stats.eta_intercept is None
        or stats.eta_spread is None
    ):
        return best
    length = stats.eta_slope * eta + stats.eta_intercept
    spread = stats.eta_spread
    if not (finite(length) and finite(spread) and length > 0 and spread < stats.spread):
        return best
    # An ETA far from what the stage usually takes is a broken ETA, not a strange run.
    if abs(length - stats.length) > tuning.eta_agreement * stats.spread:
        return best
    return length, spread, Reason.ETA


def _pace(obs: Observation, learned: Learned, tuning: Tuning) -> float:
    """How many times longer than predicted this run's finished stages took, from those that
    were measured well enough and differ beyond the prediction's spread; 1 when none do."""
    logs = []
    for before, after in itertools.pairwise(obs.stages):
        if before.began_spread is None or after.began_spread is None:
            continue
        stats = learned.get(obs.kind, before.stage, tuning.min_samples)
        predicted = None if stats is None else _predict(stats, before.eta_minutes, tuning)
        if predicted is None or not predicted[0] > 0:
            continue
        length = start_of(after) - start_of(before)
        blur = abs(before.began_spread) + abs(after.began_spread)
        if not (0 < length <= MAX_STAGE and length > 4 * blur):
            continue
        if abs(length - predicted[0]) > 3 * math.hypot(predicted[1], blur):
            logs.append(max(-2.0, min(2.0, math.log(length / predicted[0]))))
    if not logs:
        return 1.0
    return math.exp(statistics.median(logs))
