"""Plain rows the store reads and writes; no SQL here, no discord."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

# The terminal event sorts after every step line of the log.
TERMINAL_SEQ = 1_000_000_000
DEFAULT_KEY_REF = "default"


class EventKind(StrEnum):
    """What an event row records."""

    STEP = "step"
    READY = "ready"
    FAILED = "failed"
    UNKNOWN = "unknown"  # the API kept saying it does not know the training

    @property
    def terminal(self) -> bool:
        """True for the events after which nothing more is sent."""
        return self is not EventKind.STEP


class SubscriptionKind(StrEnum):
    """Where a subscription sends: a channel, or a user's DMs."""

    CHANNEL = "channel"
    DM = "dm"


class SubscriptionStatus(StrEnum):
    """Lifecycle of a subscription."""

    ACTIVE = "active"
    PAUSED = "paused"
    DONE = "done"


@dataclass(frozen=True, slots=True)
class Event:
    """A step line or terminal event of one training."""

    seq: int
    kind: EventKind
    number: int | None = None
    label: str | None = None
    steps_to_go: int | None = None
    eta_minutes: int | None = None
    raw: str | None = None
    detail: str | None = None
    late: bool = False


class Training(NamedTuple):
    """One tracked training as the database knows it.

    A named tuple rather than a frozen dataclass: the scheduler builds thousands a second, and
    a frozen dataclass sets each of its fourteen fields through ``object.__setattr__``.
    """

    training_id: str
    key_ref: str
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


@dataclass(slots=True)
class TrainingUpdate:
    """What one poll changes about a training; applied with its events and deliveries at once."""

    training_id: str
    key_ref: str
    next_poll_at: float
    consecutive_errors: int = 0
    last_error: str | None = None
    not_found_count: int = 0
    first_not_found_at: float | None = None
    ok: bool = False
    state: str | None = None
    eta_minutes: int | None = None
    total_steps: int | None = None
    # A tuple by default: most polls see nothing new, and an empty list per poll is garbage
    # the cyclic collector has to look at.
    events: Sequence[Event] = ()


@dataclass(frozen=True, slots=True)
class Subscription:
    """A channel subscription or a DM alert."""

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
