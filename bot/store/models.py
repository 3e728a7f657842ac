"""Plain rows the repositories read and write; no SQL here, no discord."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

from bot.events import Event, EventKind

DEFAULT_KEY_REF = "default"


class SubscriptionKind(StrEnum):
    """Where a subscription sends: a channel, or a user's DMs."""

    CHANNEL = "channel"
    DM = "dm"


class SubscriptionStatus(StrEnum):
    """Lifecycle of a subscription."""

    ACTIVE = "active"
    PAUSED = "paused"
    DONE = "done"


class Training(NamedTuple):
    """One followed training as the database knows it: ``key_ref`` names whose API key polls
    it (``default``: the operator's; ``user:<id>``: a member's), never the key itself."""

    training_id: str
    key_ref: str
    api: str
    state: str | None
    last_seq: int
    eta_minutes: int | None
    total_steps: int | None
    terminal: EventKind | None
    failure_reason: str | None
    next_poll_at: float
    consecutive_errors: int
    last_error: str | None
    not_found_count: int
    first_not_found_at: float | None
    last_ok_at: float | None
    failing_since: float | None
    observation: str | None = None
    """What the poll policy knows of the training (JSON), None before its first answer."""
    last_polled_at: float | None = None
    """When the training was last claimed for a poll."""
    poll_reason: str | None = None
    """Why ``next_poll_at`` is then ("ETA", "learned stage length", "fallback"...)."""

    @property
    def ref(self) -> tuple[str, str]:
        """``(training_id, key_ref)``: what identifies the row."""
        return self.training_id, self.key_ref


@dataclass(slots=True)
class TrainingUpdate:
    """What one poll (or one status fetched by a command) changes about a training; recorded
    with its new events and their deliveries in one transaction."""

    training_id: str
    key_ref: str
    next_poll_at: float
    api: str = "v3"
    answered: bool = False
    """The API answered with a status (else: an error, described by the fields below)."""
    state: str | None = None
    eta_minutes: int | None = None
    total_steps: int | None = None
    events: Sequence[Event] = ()
    consecutive_errors: int = 0
    last_error: str | None = None
    not_found_count: int = 0
    first_not_found_at: float | None = None
    failing_since: float | None = None
    observation: str | None = None
    """The poll policy's new view of the training (JSON); None: unchanged."""
    polled_at: float | None = None
    """When the API was asked (a command's own request counts as a poll too)."""
    poll_reason: str | None = None
    """Why ``next_poll_at`` is then."""
    planned_at: float | None = None
    """The next poll time the claim wrote: if the row says otherwise when this is recorded,
    someone asked for a poll meanwhile (a webhook, a command), and the sooner time stays."""


@dataclass(frozen=True, slots=True)
class Subscription:
    """A channel subscription or a DM alert, with its training's last known state."""

    id: int
    kind: SubscriptionKind
    guild_id: int | None
    channel_id: int | None
    user_id: int
    training_id: str
    key_ref: str
    status: SubscriptionStatus
    reason: str | None
    baseline_seq: int
    created_at: float
    state: str | None = None
    terminal: EventKind | None = None
    last_error: str | None = None
    next_poll_at: float | None = None
    """When its training is polled next (while someone follows it)..."""
    poll_reason: str | None = None
    """...and why then ("ETA", "learned stage length", "fallback"...)."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """One pending message: which subscription, which event, how often tried."""

    id: int
    subscription_id: int
    kind: SubscriptionKind
    guild_id: int | None
    channel_id: int | None
    user_id: int
    training_id: str
    attempts: int
    next_attempt_at: float
    created_at: float
    event: Event
    attempted_at: float | None = None
    """When a send of it last began; None if never. Set and not marked sent: it may be on
    Discord already."""
