"""What one answer of the API changes about a followed training: pure, no I/O.

``after_status`` and ``after_error`` take the training's row as the database had it when the
poll was claimed, what the API answered, and the time; they return the ``TrainingUpdate`` to
record (``None`` when the answer says nothing the row does not: most polls). The tracker only
decides when to poll and how many at once; every rule about what an answer means lives here.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum

import orjson

from bot.events import TERMINAL_SEQ, Event, EventKind
from bot.sdapi.errors import NoCredits, RateLimited, SdApiError, TrainingNotFound
from bot.sdapi.status import TrainingStatus
from bot.store import Training, TrainingUpdate
from bot.tracking.policy import (
    Bounds,
    Learned,
    Observation,
    PollPlan,
    PollPolicy,
    Sighting,
    TrainingKind,
    infer_kind,
    observe,
    plan_next_poll,
    stage_key,
)

log = logging.getLogger(__name__)

Random = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Rules:
    """The settings an answer is judged by."""

    interval: float
    """The shortest gap between two polls of one training, jitter included."""
    max_interval: float | None = None
    """The longest gap while a training runs normally (default: five times ``interval``)."""
    policy: PollPolicy = PollPolicy.FIXED
    """``adaptive`` plans each poll from what the training says; ``fixed`` every interval."""
    max_backoff: float = 900.0
    """The longest wait between polls while the API keeps failing."""
    jitter: float = 0.1
    not_found_confirmations: int = 3
    """"Not found" must be answered this many times..."""
    not_found_window: float = 300.0
    """...over at least this many seconds before followers are told the training is unknown."""
    steps_per_poll: int = 10
    """New step messages one answer may make; past it, the rest are folded into one message."""
    steps_per_training: int = 50
    """Step messages one training may make; past it, each answer makes at most one."""

    bounds: Bounds = field(init=False, repr=False, compare=False)
    """The poll policy's bounds, from the interval, the longest gap and the jitter."""

    def __post_init__(self) -> None:
        bounds = Bounds.from_settings(self.interval, self.max_interval, self.jitter)
        object.__setattr__(self, "bounds", bounds)  # frozen: set once, here

    @property
    def late_after(self) -> float:
        """A poll this long overdue (the bot was down) or an API failing this long makes the
        steps seen next late."""
        return max(2 * self.interval, self.interval + 30.0)


# What the fixed policy plans from: it looks at nothing.
_NOTHING_KNOWN = Observation(TrainingKind.UNKNOWN, 0.0, (Sighting("unknown", 0.0, None),))
NO_LEARNING = Learned()


def plan_after(
    obs: Observation | None,
    now: float,
    rules: Rules,
    learned: Learned = NO_LEARNING,
    rand: Random = random.random,
) -> PollPlan:
    """When to poll a training next, from what is known of it (``obs``), and why."""
    return plan_next_poll(obs or _NOTHING_KNOWN, now, rules.bounds, rules.policy, learned, rand)


def observation_of(row: Training, now: float, rules: Rules) -> Observation | None:
    """What the adaptive policy knows of a training (None for the fixed policy); a row
    recorded without one (an older tunewatch) is taken as first seen now."""
    if rules.policy is not PollPolicy.ADAPTIVE:
        return None
    if row.observation:
        try:
            return Observation.from_dict(orjson.loads(row.observation))
        except (ValueError, TypeError):
            log.warning("the poll observation of %s is damaged; starting over", row.training_id)
    stage = stage_key(None, row.state)
    return observe(None, now, stage=stage, polled_before=None, kind=infer_kind(row.training_id, []))


def next_poll(now: float, rules: Rules, rand: Random = random.random) -> float:
    """The next poll of a training the fixed policy follows (the interval, with jitter)."""
    return plan_after(None, now, rules, rand=rand).at


def backoff(errors: int, now: float, rules: Rules, rand: Random = random.random) -> float:
    """The next poll after ``errors`` failures in a row: doubling, capped, with jitter upwards
    only (never sooner than the interval)."""
    # The exponent is capped: 2.0 ** 1024 overflows, after some ten days of failures.
    delay = min(rules.max_backoff, rules.interval * 2.0 ** min(max(0, errors - 1), 64))
    return now + max(rules.interval, delay) * (1 + rules.jitter * rand())


def says_nothing_new(row: Training, status: TrainingStatus) -> bool:
    """True when the row already records everything this answer says (no write needed)."""
    return (
        not status.terminal
        and status.last_seq <= row.last_seq
        and row.terminal is None
        and row.consecutive_errors == 0
        and row.not_found_count == 0
        and row.state == status.raw_state
        and row.eta_minutes == status.eta_minutes
        and status.total_steps in (None, row.total_steps)
    )


def is_late(row: Training | None, now: float, rules: Rules) -> bool:
    """Whether news seen now comes after a gap: the poll was long overdue (the bot was down)
    or the API has been failing for a while."""
    if row is None:
        return False
    overdue = now - row.next_poll_at > rules.late_after
    failing = row.failing_since is not None and now - row.failing_since > rules.late_after
    return overdue or failing


class _Unread(Enum):
    FROM_ROW = "read from the row"


FROM_ROW = _Unread.FROM_ROW


def after_status(
    row: Training | None,
    ref: tuple[str, str],
    status: TrainingStatus,
    now: float,
    rules: Rules,
    *,
    learned: Learned = NO_LEARNING,
    planned_at: float | None = None,
    previous: Observation | _Unread | None = FROM_ROW,
    rand: Random = random.random,
) -> TrainingUpdate | None:
    """The update an answered poll makes; None when the row already says all of it.

    ``row`` is None for a training not recorded yet (everything it shows is news).
    ``previous`` is what the poll policy knew of the training before this answer, when the
    caller has it already (the tracker's claim read it to plan); by default read from ``row``.
    """
    training_id, key_ref = ref
    if previous is FROM_ROW:
        previous = None if row is None else observation_of(row, now, rules)
    obs = _observe(previous, training_id, status, now, rules, row, learned)
    if row is not None and says_nothing_new(row, status) and obs is previous:
        return None
    plan = plan_after(obs, now, rules, learned, rand)
    return TrainingUpdate(
        training_id=training_id,
        key_ref=key_ref,
        next_poll_at=plan.at,
        poll_reason=plan.why,
        polled_at=now,
        observation=None if obs is None or obs is previous else _json(obs),
        api=status.api.value,
        answered=True,
        state=status.raw_state,
        eta_minutes=status.eta_minutes,
        total_steps=status.total_steps,
        events=new_events(
            status,
            after_seq=-1 if row is None else row.last_seq,
            late=is_late(row, now, rules),
            rules=rules,
        ),
        planned_at=planned_at,
    )


def _observe(
    previous: Observation | None,
    training_id: str,
    status: TrainingStatus,
    now: float,
    rules: Rules,
    row: Training | None,
    learned: Learned,
) -> Observation | None:
    """What the adaptive policy knows after this answer (None under the fixed policy)."""
    if rules.policy is not PollPolicy.ADAPTIVE:
        return None
    last = status.steps[-1] if status.steps else None
    stage = stage_key(last.label if last else None, status.raw_state)
    kind = TrainingKind.UNKNOWN  # observe keeps a kind once known
    if previous is None or previous.kind is TrainingKind.UNKNOWN:
        # From every line of the log, not only the stages the polls happened to see: a
        # Dreambooth run whose compressing fell between two polls still wrote the line. The
        # lines recorded before were read when they were new.
        after = -1 if previous is None or row is None else row.last_seq
        lines = (stage_key(step.label, None) for step in status.steps if step.seq > after)
        kind = infer_kind(training_id, itertools.chain(lines, [stage]))
    eta = status.eta_minutes if status.eta_seconds is None else status.eta_seconds / 60
    return observe(
        previous,
        now,
        stage=stage,
        polled_before=None if row is None else row.last_polled_at,
        eta_minutes=eta,
        elapsed_seconds=status.elapsed_seconds,
        finished=status.terminal,
        kind=kind,
        learned=learned,
    )


def _json(obs: Observation) -> str:
    return orjson.dumps(obs.to_dict()).decode()


def new_events(
    status: TrainingStatus, *, after_seq: int, late: bool, rules: Rules
) -> Sequence[Event]:
    """The steps past ``after_seq`` and the terminal event an answer shows, a flood of steps
    folded into one event (see ``Rules.steps_per_poll`` and ``steps_per_training``)."""
    steps = [
        dataclasses.replace(step, late=True) if late else step
        for step in status.steps
        if step.seq > after_seq
    ]
    room = rules.steps_per_poll if after_seq + 1 < rules.steps_per_training else 1
    if len(steps) > room:
        kept, rest = steps[: room - 1], steps[room - 1 :]
        steps = [*kept, dataclasses.replace(rest[-1], folded=len(rest) - 1)]
    if status.finished:
        # What the ready message shows of the model (v6), kept as JSON in the detail.
        model = status.model.to_json() if status.model is not None else None
        steps.append(Event(seq=TERMINAL_SEQ, kind=EventKind.READY, detail=model, late=late))
    elif status.failed:
        steps.append(
            Event(seq=TERMINAL_SEQ, kind=EventKind.FAILED, detail=status.failure_text, late=late)
        )
    return steps


def after_error(
    row: Training,
    exc: SdApiError,
    now: float,
    rules: Rules,
    *,
    planned_at: float | None = None,
    rand: Random = random.random,
) -> TrainingUpdate:
    """The update a failed poll makes: back off, keep the last good state; a "not found" that
    has repeated long enough ends the training as unknown."""
    errors = row.consecutive_errors + 1
    next_at = backoff(errors, now, rules, rand)
    if isinstance(exc, RateLimited):
        next_at = max(next_at, now + exc.retry_after)
    elif isinstance(exc, NoCredits):
        # Nothing changes until someone buys credits: ask rarely, and resume when it answers.
        next_at = now + rules.max_backoff
    log.warning("poll of %s failed (%d in a row): %s", row.training_id, errors, exc.detail)
    update = TrainingUpdate(
        training_id=row.training_id,
        key_ref=row.key_ref,
        next_poll_at=next_at,
        poll_reason=f"backing off after {errors} failed poll{'s' if errors > 1 else ''}",
        consecutive_errors=errors,
        last_error=exc.reason,
        not_found_count=row.not_found_count,
        first_not_found_at=row.first_not_found_at,
        failing_since=row.failing_since if row.failing_since is not None else now,
        planned_at=planned_at,
    )
    if isinstance(exc, TrainingNotFound):
        # "Not found" right after creation or during an API hiccup is common: only believe it
        # after several answers spread over some minutes.
        update.not_found_count += 1
        update.first_not_found_at = row.first_not_found_at or now
        if (
            update.not_found_count >= rules.not_found_confirmations
            and now - update.first_not_found_at >= rules.not_found_window
        ):
            update.events = [Event(seq=TERMINAL_SEQ, kind=EventKind.UNKNOWN, detail=exc.reason)]
    return update
