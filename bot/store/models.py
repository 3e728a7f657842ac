"""Plain rows the repositories read and write; no SQL here, no discord."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

from bot.events import Event, EventKind

DEFAULT_KEY_REF = "default"
OPENING_SEQ = -1
"""The ``seq`` of a live or thread subscription's first delivery: posting the message it keeps
up to date (no event of the training goes with it)."""


class SubscriptionKind(StrEnum):
    """Where a subscription sends: a channel, or a user's DMs."""

    CHANNEL = "channel"
    DM = "dm"


class SubscriptionStatus(StrEnum):
    """Lifecycle of a subscription."""

    ACTIVE = "active"
    PAUSED = "paused"
    DONE = "done"


class Style(StrEnum):
    """How a channel follows a training."""

    STEPS = "steps"  # a message per step (silent), then the final message
    LIVE = "live"  # one message edited at each step, then a short final message
    THREAD = "thread"  # a summary message, a thread of step messages, the final message
    FINAL = "final"  # the final message only

    @property
    def keeps_a_message(self) -> bool:
        """Whether it posts a message when subscribing and edits it later."""
        return self in (Style.LIVE, Style.THREAD)


class MentionKind(StrEnum):
    """Who a final message pings."""

    ROLE = "role"
    USER = "user"


class MentionOn(StrEnum):
    """Which outcomes ping."""

    READY = "ready"
    FAILED = "failed"
    BOTH = "both"


@dataclass(frozen=True, slots=True)
class Mention:
    """A role or a member pinged by a subscription's final message."""

    kind: MentionKind
    id: int
    on: MentionOn = MentionOn.BOTH

    def pings_for(self, outcome: EventKind) -> bool:
        """Whether the final message of this outcome pings (failed and unknown are failures)."""
        if self.on is MentionOn.BOTH:
            return outcome.terminal
        if self.on is MentionOn.READY:
            return outcome is EventKind.READY
        return outcome in (EventKind.FAILED, EventKind.UNKNOWN)


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
    style: Style = Style.STEPS
    mention: Mention | None = None
    live_message_id: int | None = None
    """The message a live or thread subscription keeps up to date, once posted."""
    origin_channel_id: int | None = None
    """A DM alert made with a button: the channel it was clicked in."""
    origin_message_id: int | None = None
    """... and the live message it links to."""
    updated_at: float | None = None
    """When it last changed (for a done subscription: when it finished)."""
    next_poll_at: float | None = None
    """When its training is polled next (while someone follows it)..."""
    poll_reason: str | None = None
    """...and why then ("ETA", "learned stage length", "fallback"...)."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """One pending message: which subscription, which event, how often tried.

    ``event`` is None for a live or thread subscription's opening (``seq`` ``OPENING_SEQ``):
    the message it keeps up to date is posted then.
    """

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
    event: Event | None
    attempted_at: float | None = None
    """When a send of it last began; None if never. Set and not marked sent: it may be on
    Discord already."""
    key_ref: str = DEFAULT_KEY_REF
    style: Style = Style.STEPS
    mention: Mention | None = None
    live_message_id: int | None = None
    """As the subscription had it when the batch was read."""
    origin_channel_id: int | None = None
    origin_message_id: int | None = None
    baseline_seq: int = -1

    @property
    def opening(self) -> bool:
        """The first delivery of a live or thread subscription: post its message."""
        return self.event is None

    @property
    def terminal(self) -> bool:
        """The final message."""
        return self.event is not None and self.event.kind.terminal

    @property
    def seq(self) -> int:
        """The event's position (``OPENING_SEQ`` for the opening)."""
        return OPENING_SEQ if self.event is None else self.event.seq


@dataclass(frozen=True, slots=True)
class Story:
    """What tunewatch recorded of a training up to one event, for the messages that show its
    whole course (the live message, the final messages)."""

    training_id: str
    first_seen_at: float | None
    """When tunewatch first recorded the training."""
    events: tuple[tuple[Event, float], ...]
    """Each event with when it was observed, in order."""
    state: str | None = None
    """The training's last raw state (the training's now, not as of the last event)."""
