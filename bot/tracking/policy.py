"""When to poll a training next: a pure policy (issue 18).

The status of a training says when its next change is likely: each step line carries an ETA, the
trainer stamps its time elapsed, and past runs of the same kind show how long each stage lasts.
``plan_next_poll`` uses that to poll densely (every ``min_gap``) around the moment the current
stage is expected to end and sparsely (up to ``max_gap``) while nothing can change; when the
expected end passes with no change it stays dense for a while, then backs off towards
``max_gap``. Every gap, jitter included, lies in ``[min_gap, max_gap]``, and an unfinished
training always gets a finite next poll, whatever its ETA or the clock say.

Everything here is pure: the clock (``now``) and the random source are parameters; nothing reads
a file, the network or the database. The tracker keeps one ``Observation`` per training, made
and updated by ``observe`` after each answer (it returns the same object when nothing changed,
so a quiet poll has nothing to write), plans with ``plan_next_poll``, and learns from finished
runs with ``learn_stage_lengths``.

Times are seconds on the caller's clock (Unix time in the bot); lengths are seconds.
"""

from __future__ import annotations

import itertools
import math
import re
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

__all__ = [
    "DEFAULT_TUNING",
    "Bounds",
    "Clamp",
    "Expectation",
    "Learned",
    "Observation",
    "PollPlan",
    "PollPolicy",
    "Reason",
    "RunRecord",
    "Sighting",
    "StageStats",
    "TrainingKind",
    "Tuning",
    "expect_stage_end",
    "infer_kind",
    "learn_stage_lengths",
    "observe",
    "plan_next_poll",
    "stage_key",
]


class PollPolicy(StrEnum):
    """``POLL_POLICY``: follow the training, or poll at the interval as the first round did."""

    ADAPTIVE = "adaptive"
    FIXED = "fixed"


class TrainingKind(StrEnum):
    """What kind of training a run is; its stages and their lengths depend on it."""

    DREAMBOOTH = "dreambooth"
    LORA = "lora"
    V6 = "v6"
    UNKNOWN = "unknown"


class Reason(StrEnum):
    """Why a poll was planned when it was; the value is the phrase users see."""

    ETA = "ETA"
    LEARNED = "learned stage length"
    OVERDUE = "stage overdue, backing off"
    FALLBACK = "fallback"
    FIXED = "fixed"
    FINISHED = "finished"


class Clamp(StrEnum):
    """The gap wanted lay outside the bounds and was brought back to one of them."""

    MIN = "clamped to minimum"
    MAX = "clamped to maximum"


# A gap longer than about 30 years is a typo; refusing it keeps every sum of times finite.
_MAX_GAP = 1e9


@dataclass(frozen=True, slots=True)
class Bounds:
    """The operator's settings: the shortest and longest gap between two polls of one training
    (jitter included) and the jitter, a fraction of the gap."""

    min_gap: float = 30.0
    max_gap: float = 150.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if not (math.isfinite(self.min_gap) and self.min_gap > 0):
            raise ValueError(f"the shortest poll gap must be a positive number, not {self.min_gap}")
        if not (self.min_gap <= self.max_gap <= _MAX_GAP):
            raise ValueError(
                f"the longest poll gap ({self.max_gap}) must be a number at least the shortest "
                f"({self.min_gap}) and at most {_MAX_GAP:.0e} seconds"
            )
        if not (math.isfinite(self.jitter) and 0 <= self.jitter < 1):
            raise ValueError(f"the poll jitter must be in [0, 1), not {self.jitter}")

    @classmethod
    def from_settings(
        cls, interval: float, max_seconds: float | None = None, jitter: float = 0.1
    ) -> Bounds:
        """``POLL_INTERVAL_SECONDS`` and ``POLL_MAX_SECONDS`` (default: five times the interval)."""
        return cls(interval, 5 * interval if max_seconds is None else max_seconds, jitter)


@dataclass(frozen=True, slots=True)
class Tuning:
    """The adaptive policy's constants. The defaults are the ones ``benchmarks/poll_policy``
    measured; the benchmark varies them, the bot does not."""

    lead: float = 2.5
    """Dense polling starts this many spreads before the expected end of the stage."""
    aim: float = 1.0
    """One dense poll lands this many spreads after the expected end, the others every
    ``min_gap`` before and after it: a well-predicted change is seen soon after it happens
    instead of anywhere in a gap."""
    linger: float = 2.5
    """Dense polling lasts this many spreads after the expected end..."""
    backoff: float = 0.25
    """...then each gap grows by this share of the time since, up to ``max_gap``."""
    dense_polls: float = 14.0
    """At most this many polls from the start of dense polling to its end: a vague
    expectation narrows the window instead; twice as vague, and it polls every ``fallback``
    there instead."""
    fallback: float = 2.0
    """With nothing to go on, the gap is this many ``min_gap`` (60 s at the defaults, the first
    round's interval)."""
    min_samples: int = 3
    """Learned figures from fewer runs than this are not used."""
    spread_floor: float = 2.0
    """Seconds: no prediction is trusted to better than this."""
    eta_max_minutes: float = 24 * 60.0
    """An ETA above this (or at most 0) is not believed."""
    eta_agreement: float = 3.0
    """An ETA-based prediction further than this many spreads from the learned length's is not
    believed either."""
    pace_trigger: float = 1.3
    """A run whose finished stages took this many times longer (or shorter) than predicted,
    beyond the prediction's spread, is off pace: its ETA is not believed and its learned
    lengths are scaled by its pace."""


DEFAULT_TUNING = Tuning()


# -- what is known of a training ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sighting:
    """One stage of a training (or its end) as the polls saw it."""

    stage: str
    seen_at: float
    """The first poll that showed this stage."""
    unseen_at: float | None
    """The poll before it, which did not; None when the stage was there at the first poll."""
    eta_minutes: float | None = None
    """The ETA on the stage's line (the last one given, if it changed)."""
    eta_seen_at: float | None = None
    elapsed_seconds: float | None = None
    """The trainer's "Time Elapsed" stamp on the stage's line."""
    began_at: float | None = None
    """When the stage most likely began on our clock (see ``observe``)..."""
    began_spread: float | None = None
    """...give or take this (a standard deviation); None: only known to be before ``seen_at``."""


_MAX_SIGHTINGS = 32


@dataclass(frozen=True, slots=True)
class Observation:
    """What is known of one training when its next poll is planned. Made and kept up to date
    by ``observe``; plain data (``to_dict``/``from_dict``) so the store can keep it."""

    kind: TrainingKind
    first_seen_at: float
    stages: tuple[Sighting, ...]
    """Oldest first, the last is the current stage; never empty (at most the last 32)."""
    ended: Sighting | None = None
    """The training's end (ready, failed, cancelled) as the polls saw it; None while it runs."""

    def __post_init__(self) -> None:
        if not self.stages:
            raise ValueError("an observation has at least its current stage")

    @property
    def current(self) -> Sighting:
        """The current stage."""
        return self.stages[-1]

    @property
    def finished(self) -> bool:
        """The training will not change any more."""
        return self.ended is not None

    def run_record(self) -> RunRecord | None:
        """The finished run, for ``learn_stage_lengths``; None while it runs."""
        return None if self.ended is None else RunRecord(self.kind, self.stages, self.ended)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data; ``from_dict`` reads it back."""
        return {
            "v": 1,
            "kind": self.kind.value,
            "first_seen_at": self.first_seen_at,
            "stages": [_sighting_row(s) for s in self.stages],
            "ended": None if self.ended is None else _sighting_row(self.ended),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Observation:
        """Read ``to_dict``'s data; ``ValueError`` saying what is wrong when it is not that."""
        try:
            if data.get("v") != 1:
                raise ValueError(f"unknown version {data.get('v')!r}")
            ended = data["ended"]
            return cls(
                TrainingKind(data["kind"]),
                float(data["first_seen_at"]),
                tuple(_sighting_of(row) for row in data["stages"]),
                None if ended is None else _sighting_of(ended),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a stored poll observation: {exc}") from exc


def _sighting_row(s: Sighting) -> list[Any]:
    return [
        s.stage,
        s.seen_at,
        s.unseen_at,
        s.eta_minutes,
        s.eta_seen_at,
        s.elapsed_seconds,
        s.began_at,
        s.began_spread,
    ]


def _sighting_of(row: Any) -> Sighting:
    stage, seen, *rest = row
    if not isinstance(stage, str) or len(rest) != 6:
        raise ValueError(f"not a stage row: {row!r}")
    unseen, eta, eta_at, elapsed, began, spread = (None if v is None else float(v) for v in rest)
    return Sighting(stage, float(seen), unseen, eta, eta_at, elapsed, began, spread)


_SPACES_RE = re.compile(r"\s+")
_UUID_RE = re.compile(
    r"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}", re.IGNORECASE
)


def stage_key(label: str | None, state: str | None) -> str:
    """The name of the stage a training is in: its last step line's label, else its state."""
    for text in (label, state):
        if text:
            key = _SPACES_RE.sub(" ", text).strip().lower()
            if key:
                return key
    return "unknown"


def infer_kind(training_id: str, stages: Iterable[str]) -> TrainingKind:
    """The kind of a training from its id and the stages seen so far (``stage_key`` names).

    v6 runs have UUID ids; a Dreambooth run compresses its model, a LoRA run uploads it
    without compressing; until either shows, the kind is unknown.
    """
    if _UUID_RE.fullmatch(training_id.strip()):
        return TrainingKind.V6
    for stage in stages:
        if "compress" in stage:
            return TrainingKind.DREAMBOOTH
        if "upload" in stage:
            return TrainingKind.LORA
    return TrainingKind.UNKNOWN


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
        if not new_stage and elapsed_seconds is not None:
            current = replace(current, elapsed_seconds=elapsed_seconds)
        if current == previous.current and known_kind is previous.kind:
            return previous
        return replace(previous, kind=known_kind, stages=(*previous.stages[:-1], current))
    # A change: when did it happen?
    changed = previous
    if new_stage:
        began, spread = _began(previous, now, polled_before, elapsed_seconds, learned, tuning)
        sighting = Sighting(
            stage, now, polled_before, eta_minutes, eta_at, elapsed_seconds, began, spread
        )
        stages = (*previous.stages, sighting)[-_MAX_SIGHTINGS:]
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
    if polled_before is None or not (_finite(polled_before) and polled_before < now):
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
    return _posterior(lo, hi, factors)


def _trainer_zero(stages: Sequence[Sighting]) -> tuple[float, float] | None:
    """When the trainer's clock read zero on ours (and give or take), from the stamped lines
    whose start is placed: their precision-weighted mean."""
    weight = total = 0.0
    for s in stages:
        spread = s.began_spread
        if s.elapsed_seconds is None or s.began_at is None or spread is None:
            continue
        if not 0 <= spread <= _FAR:
            continue
        w = 1 / max(spread, _MIN_SPREAD) ** 2
        weight += w
        total += w * (s.began_at - s.elapsed_seconds)
    if weight == 0 or not _finite(total):
        return None
    return total / weight, 1 / math.sqrt(weight)


_MIN_SPREAD = 0.5
_SQRT2 = math.sqrt(2)
_SQRT3 = math.sqrt(3)
_SQRT12 = math.sqrt(12)


def _posterior(lo: float, hi: float, factors: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """Mean and standard deviation of a time known to lie in [lo, hi], with normal beliefs
    (mean, sd) about it; beliefs the interval rules out give way to a flat one."""
    factors = [(m, max(s, _MIN_SPREAD)) for m, s in factors if _finite(m) and 0 <= s <= _FAR]
    if factors:
        precision = sum(1 / (s * s) for _, s in factors)
        mean = sum(m / (s * s) for m, s in factors) / precision
        moments = _truncated(mean, 1 / math.sqrt(precision), lo, hi)
        if moments is not None:
            return moments[0], math.sqrt(moments[1])
    return (lo + hi) / 2, (hi - lo) / 2 / _SQRT3


def _truncated(mean: float, sd: float, lo: float, hi: float) -> tuple[float, float] | None:
    """Mean and variance of a normal (mean, sd > 0) restricted to [lo, hi]; None when that
    interval is too far in its tails to say."""
    if lo == hi:
        return lo, 0.0
    a, b = (lo - mean) / sd, (hi - mean) / sd
    mass = _cdf(b) - _cdf(a)
    if not mass > 1e-6:
        return None
    pa, pb = _pdf(a), _pdf(b)
    shift = (pa - pb) / mass
    var = 1 + ((a * pa if _finite(a) else 0) - (b * pb if _finite(b) else 0)) / mass - shift**2
    return min(max(mean + sd * shift, lo), hi), sd * sd * max(var, 0.0)


def _cdf(z: float) -> float:
    return 0.5 * (1 + math.erf(z / _SQRT2))


def _pdf(z: float) -> float:
    return math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi) if abs(z) < 40 else 0.0


# -- learning from finished runs ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunRecord:
    """A finished run: its kind, its stages and its end as the polls saw them
    (``Observation.run_record``)."""

    kind: TrainingKind
    stages: Sequence[Sighting]
    ended: Sighting


@dataclass(frozen=True, slots=True)
class StageStats:
    """What past runs say about one stage of one kind of training."""

    samples: int
    length: float
    """Mean length, seconds..."""
    spread: float
    """...and its standard deviation."""
    eta_samples: int = 0
    eta_slope: float | None = None
    """The stage lasts ``eta_slope`` seconds per minute of the ETA on its line, plus
    ``eta_intercept`` (ETAs count to the end of the whole run, and generously)..."""
    eta_intercept: float | None = None
    eta_spread: float | None = None
    """...give or take this (the standard deviation of that prediction's error)."""


@dataclass(frozen=True, slots=True)
class Learned:
    """Stage statistics per (kind, stage); ``UNKNOWN`` pools every kind."""

    stats: Mapping[tuple[TrainingKind, str], StageStats] = field(default_factory=dict)

    def get(self, kind: TrainingKind, stage: str, min_samples: int = 3) -> StageStats | None:
        """The stage's figures for that kind, else pooled over every kind, if enough runs."""
        for key in ((kind, stage), (TrainingKind.UNKNOWN, stage)):
            stats = self.stats.get(key)
            if stats is not None and stats.samples >= min_samples:
                return stats
        return None


_MAD_TO_SD = 1.4826
# No stage of a training lasts a month: a longer "length" comes from a clock that jumped.
_MAX_STAGE = 30 * 86_400.0
_OUTLIER_SPREADS = 4.0
_EM_ROUNDS = 40


def learn_stage_lengths(runs: Iterable[RunRecord]) -> Learned:
    """Per kind of training and per stage: the length's mean and spread, and how the ETA on
    the stage's line predicts it, from finished runs.

    A run shows a stage's length only roughly: the stage began between the poll that first
    showed it and the poll before (narrowed by the trainer's elapsed stamps, which all the
    run's stamped lines pin down together), and ended likewise; between two stamped lines the
    stamps' difference is exact. The figures are the maximum-likelihood fit of a normal law
    to what the polls show (by expectation-maximisation over those intervals), so where the
    polls happened to fall does not bias them. Outliers (beyond four robust spreads of the
    median, such as a run stalled for an hour, or far off its ETA) do not count, nor do
    impossible samples (lengths not positive or not finite, from a clock that jumped). A stage
    already there at the first poll counts from that poll (a training is mostly followed from
    its creation; one followed later shortens the fit a little, which polls early rather than
    late).
    """
    samples: dict[tuple[TrainingKind, str], list[_Sample]] = {}
    eta_samples: dict[tuple[TrainingKind, str], list[_Sample]] = {}
    for run in runs:
        marks = [*run.stages, run.ended]
        windows = _windows(marks)
        for i, sighting in enumerate(run.stages):
            sample = _length_sample(marks[i], marks[i + 1], windows[i], windows[i + 1])
            if sample is None:
                continue
            keys = [(TrainingKind.UNKNOWN, sighting.stage)]
            if run.kind is not TrainingKind.UNKNOWN:
                keys.append((run.kind, sighting.stage))
            eta = sighting.eta_minutes
            for key in keys:
                samples.setdefault(key, []).append(sample)
                if eta is not None and 0 < eta <= DEFAULT_TUNING.eta_max_minutes:
                    eta_samples.setdefault(key, []).append((eta, *sample[1:]))
    stats: dict[tuple[TrainingKind, str], StageStats] = {}
    for key, found in samples.items():
        fit = _fit(found, regress=False)
        if fit is not None:
            n, _, mean, sd = fit
            stats[key] = StageStats(n, mean, sd)
    for key, found in eta_samples.items():
        fit = _fit(found, regress=True)
        if key in stats and fit is not None:
            n, slope, intercept, sd = fit
            stats[key] = replace(
                stats[key], eta_samples=n, eta_slope=slope, eta_intercept=intercept, eta_spread=sd
            )
    return Learned(stats)


# (x, lo, hi, v): a length known to lie in [lo, hi] give or take a normal error of variance v
# (where its start was), and x, the ETA it is regressed on.
_Sample = tuple[float, float, float, float]


def _length_sample(
    start: Sighting,
    end: Sighting,
    start_window: tuple[float, float],
    end_window: tuple[float, float],
) -> _Sample | None:
    a, b = start.elapsed_seconds, end.elapsed_seconds
    if a is not None and b is not None and 0 < b - a <= _MAX_STAGE:
        return 0.0, b - a, b - a, 0.0
    # The start's uncertainty is taken as noise (a uniform's variance), the end's as the bounds.
    width = start_window[1] - start_window[0]
    middle = (start_window[0] + start_window[1]) / 2
    lo, hi = end_window[0] - middle, end_window[1] - middle
    if not (0 <= width <= _MAX_STAGE and 0 < hi <= _MAX_STAGE and 0 <= hi - lo <= _MAX_STAGE):
        return None
    noise = width * width / 12
    # A length is positive: less a few spreads of the start's noise at most.
    lo = max(lo, -4 * math.sqrt(noise))
    return 0.0, lo, hi, noise


def _windows(marks: Sequence[Sighting]) -> list[tuple[float, float]]:
    """For each sighting, the interval in which its change happened, from the polls alone
    (not from what was expected: learning from expectations would confirm them)."""
    raw = []
    for s in marks:
        lo = s.unseen_at if s.unseen_at is not None and s.unseen_at < s.seen_at else s.seen_at
        raw.append((lo, s.seen_at))
    # Each stamped line bounds when the trainer's clock read zero; the newest that agree pin it.
    z_lo, z_hi = -math.inf, math.inf
    for (lo, hi), s in zip(reversed(raw), reversed(marks), strict=True):
        if s.elapsed_seconds is None or not lo < hi or not _finite(lo + hi + s.elapsed_seconds):
            continue
        a, b = lo - s.elapsed_seconds, hi - s.elapsed_seconds
        if max(a, z_lo) > min(b, z_hi):
            break
        z_lo, z_hi = max(a, z_lo), min(b, z_hi)
    windows = []
    for (lo, hi), s in zip(raw, marks, strict=True):
        if s.elapsed_seconds is not None and _finite(z_lo + z_hi + s.elapsed_seconds):
            a, b = max(lo, z_lo + s.elapsed_seconds), min(hi, z_hi + s.elapsed_seconds)
            if a <= b:
                lo, hi = a, b
        windows.append((lo, hi))
    return windows


def _fit(samples: Sequence[_Sample], *, regress: bool) -> tuple[int, float, float, float] | None:
    """(samples kept, slope, intercept, sd) of the maximum-likelihood normal law of the
    lengths (around ``slope * x + intercept`` when ``regress``, else around the mean), by
    expectation-maximisation, once outliers are dropped; None with too little to go on."""
    if not samples or (regress and (len(samples) < 3 or _flat(samples))):
        return None
    slope, intercept = _line(samples, [(lo + hi) / 2 for _, lo, hi, _ in samples], regress)
    samples = _screen(samples, slope, intercept)
    if regress and (len(samples) < 3 or _flat(samples)):
        return None
    mids = [(lo + hi) / 2 for _, lo, hi, _ in samples]
    slope, intercept = _line(samples, mids, regress)
    residuals = [m - slope * s[0] - intercept for s, m in zip(samples, mids, strict=True)]
    sd = max(statistics.pstdev(residuals), _MIN_SPREAD)
    for _ in range(_EM_ROUNDS):
        # Per sample: its prediction, and the expected length and squared error given what
        # the polls showed (a normal law with the start's noise on top, cut to the bounds).
        guesses = []
        for x, lo, hi, noise in samples:
            p = slope * x + intercept
            guesses.append((p, *_expected_length(p, sd, lo, hi, noise)))
        new_slope, new_intercept = _line(samples, [g[1] for g in guesses], regress)
        residual = 0.0
        for (x, *_), (p, mean, square) in zip(samples, guesses, strict=True):
            shift = p - (new_slope * x + new_intercept)
            residual += square + 2 * shift * (mean - p) + shift * shift
        new_sd = max(math.sqrt(max(residual / len(samples), 0.0)), _MIN_SPREAD / 10)
        done = abs(new_sd - sd) < 0.01 and abs(new_intercept - intercept) < 0.01
        slope, intercept, sd = new_slope, new_intercept, new_sd
        if done:
            break
    if not (_finite(slope) and _finite(intercept) and _finite(sd)) or (
        not regress and intercept < 0
    ):
        return None
    return len(samples), slope, intercept, sd


def _expected_length(
    predicted: float, sd: float, lo: float, hi: float, noise: float
) -> tuple[float, float]:
    """E[length] and E[(length - predicted)^2] when length ~ N(predicted, sd) and length plus
    a N(0, noise) error was seen in [lo, hi]."""
    total = sd * sd + noise
    gain = sd * sd / total
    m, var = _truncated(predicted, math.sqrt(total), lo, hi) or _flat_moments(lo, hi)
    error = m - predicted
    return predicted + gain * error, gain * gain * (var + error * error) + sd * sd * noise / total


def _flat_moments(lo: float, hi: float) -> tuple[float, float]:
    """Mean and variance of a uniform law on [lo, hi]."""
    return (lo + hi) / 2, (hi - lo) * (hi - lo) / 12


def _flat(samples: Sequence[_Sample]) -> bool:
    """All the ETAs alike: nothing to regress on."""
    return statistics.pvariance([x for x, *_ in samples]) < 1e-9


def _line(samples: Sequence[_Sample], ys: Sequence[float], regress: bool) -> tuple[float, float]:
    if not regress:
        return 0.0, statistics.fmean(ys)
    slope, intercept = statistics.linear_regression([x for x, *_ in samples], ys)
    return slope, intercept


def _screen(samples: Sequence[_Sample], slope: float, intercept: float) -> list[_Sample]:
    """The samples that come within four spreads of the median residual. The spread is robust,
    and at least what the samples' own uncertainty makes of it: when most intervals are alike
    (polls aimed alike) their midpoints' spread is no measure."""
    residuals = [(lo + hi) / 2 - slope * x - intercept for x, lo, hi, _ in samples]
    center = statistics.median(residuals)
    blur = statistics.median(math.sqrt(_flat_moments(lo, hi)[1] + v) for _, lo, hi, v in samples)
    limit = _OUTLIER_SPREADS * max(_robust_sd(residuals, center), blur)
    return [
        sample
        for sample, r in zip(samples, residuals, strict=True)
        if abs(r - center) - (sample[2] - sample[1]) / 2 <= limit
    ]


def _start_of(sighting: Sighting) -> float:
    began = sighting.began_at
    return began if began is not None and _finite(began) else sighting.seen_at


def _robust_sd(values: Sequence[float], center: float) -> float:
    return _MAD_TO_SD * statistics.median(abs(v - center) for v in values)


def _finite(value: float) -> bool:
    return math.isfinite(value)


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
# Expectations further than this from now (about three years) are as good as none.
_FAR = 1e8


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
    g, big = bounds.min_gap, bounds.max_gap
    expected = expect_stage_end(obs, now, learned, tuning)
    if expected is None:
        gap = tuning.fallback * g * (1 + bounds.jitter * (2 * r - 1))
        return _plan(now, gap, Reason.FALLBACK, bounds)
    # Relative to now from here: an expectation years away (a clock that jumped) stays finite.
    end = expected.end - now
    spread = expected.spread
    if not (abs(end) <= _FAR and spread <= _FAR):
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
    if expected_end is not None and not _finite(expected_end):
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
    start = _start_of(current)
    start_spread = current.began_spread or 0.0
    if not (_finite(start) and _finite(start_spread)):
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
        if not (_finite(stats.length) and _finite(stats.spread)):
            return None
        length, spread, source = stats.length * pace, stats.spread * pace, Reason.LEARNED
    spread = math.hypot(max(spread, tuning.spread_floor), start_spread)
    end = start + max(length, 0.0)
    if not (_finite(end) and _finite(spread)):
        return None
    return Expectation(end, spread, source)


def _predict(
    stats: StageStats, eta: float | None, tuning: Tuning
) -> tuple[float, float, Reason] | None:
    """(length, spread, source) of a stage from what past runs say and the ETA on its line."""
    if not (_finite(stats.length) and _finite(stats.spread)):
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
    if not (_finite(length) and _finite(spread) and length > 0 and spread < stats.spread):
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
        length = _start_of(after) - _start_of(before)
        blur = abs(before.began_spread) + abs(after.began_spread)
        if not (0 < length <= _MAX_STAGE and length > 4 * blur):
            continue
        if abs(length - predicted[0]) > 3 * math.hypot(predicted[1], blur):
            logs.append(max(-2.0, min(2.0, math.log(length / predicted[0]))))
    if not logs:
        return 1.0
    return math.exp(statistics.median(logs))
