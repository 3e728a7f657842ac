"""Events as table rows: the ``events`` columns the trainings and the outbox read and write."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bot.events import Event, EventKind

EVENT_COLUMNS = (
    "seq, kind, number, label, steps_to_go, eta_minutes, raw, detail, late, folded, elapsed_seconds"
)


def event_row(event: Event) -> tuple[Any, ...]:
    """An event as the columns of ``EVENT_COLUMNS``."""
    return (
        event.seq,
        event.kind.value,
        event.number,
        event.label,
        event.steps_to_go,
        event.eta_minutes,
        event.raw,
        event.detail,
        int(event.late),
        event.folded,
        event.elapsed_seconds,
    )


def event_of(row: Sequence[Any]) -> Event:
    """An Event from the columns of ``EVENT_COLUMNS``, in that order."""
    return Event(
        seq=row[0],
        kind=EventKind(row[1]),
        number=row[2],
        label=row[3],
        steps_to_go=row[4],
        eta_minutes=row[5],
        raw=row[6],
        detail=row[7],
        late=bool(row[8]),
        folded=row[9] or 0,
        elapsed_seconds=row[10],
    )
