"""Small builders for the store's tests."""

from __future__ import annotations

from bot.events import TERMINAL_SEQ, Event, EventKind
from bot.store import DEFAULT_KEY_REF, Store, Subscription, SubscriptionKind, TrainingUpdate

NOW = 1_000_000.0


def step(seq: int) -> Event:
    return Event(seq=seq, kind=EventKind.STEP, number=seq + 1, label=f"s{seq}")


READY = Event(seq=TERMINAL_SEQ, kind=EventKind.READY)


def answer(training_id: str, *events: Event, next_poll_at: float = NOW + 60, **kw: object):
    return TrainingUpdate(
        training_id,
        DEFAULT_KEY_REF,
        next_poll_at=next_poll_at,
        answered=True,
        events=list(events),
        **kw,  # type: ignore[arg-type]
    )


async def subscribe(
    store: Store, training_id: str, *, channel: int | None = 1, user: int = 9, guild: int = 1
) -> Subscription:
    kind = SubscriptionKind.CHANNEL if channel is not None else SubscriptionKind.DM
    sub, _ = await store.subscriptions.subscribe(
        kind=kind,
        guild_id=guild,
        channel_id=channel,
        user_id=user,
        training_id=training_id,
        key_ref=DEFAULT_KEY_REF,
        limit=100,
        now=NOW,
    )
    return sub
