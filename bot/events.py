"""What happens to a training, as tunewatch records and reports it: one event type for all.

The parser's step lines, the events the store keeps and the messages delivered are the same
``Event``: a step by its position in the log (``seq``), or the terminal event after every step.
The parser makes steps; the tracker adds the terminal event and marks late ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

# The terminal event sorts after every step line of the log.
TERMINAL_SEQ = 1_000_000_000


class EventKind(StrEnum):
    """What an event records."""

    STEP = "step"
    READY = "ready"
    FAILED = "failed"
    UNKNOWN = "unknown"  # the API kept saying it does not know the training

    @property
    def terminal(self) -> bool:
        """True for the events after which nothing more is sent."""
        return self is not EventKind.STEP


@dataclass(frozen=True, slots=True)
class Event:
    """A step line of the log, or the terminal event of a training."""

    seq: int
    kind: EventKind
    number: int | None = None
    label: str | None = None
    steps_to_go: int | None = None
    eta_minutes: int | None = None
    raw: str | None = None
    detail: str | None = None
    late: bool = False
    folded: int = 0
    """Steps folded into this one (a flood of step lines in one answer is sent as one)."""
    elapsed_seconds: float | None = None
    """The trainer's ``Time Elapsed`` on a step line: seconds since training started."""

    @property
    def total_steps(self) -> int | None:
        """What a step line states as the total: its number plus the steps it says are left."""
        if self.number is None or self.steps_to_go is None:
            return None
        return self.number + self.steps_to_go


def step(
    seq: int,
    number: int | None,
    label: str,
    steps_to_go: int | None,
    eta_minutes: int | None,
    raw: str,
    elapsed_seconds: float | None = None,
) -> Event:
    """A step line of the log (or a v6 milestone), as the parser reads it."""
    return Event(
        seq=seq,
        kind=EventKind.STEP,
        number=number,
        label=label,
        steps_to_go=steps_to_go,
        eta_minutes=eta_minutes,
        raw=raw,
        elapsed_seconds=elapsed_seconds,
    )
