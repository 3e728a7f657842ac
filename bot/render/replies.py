"""What commands and buttons answer: subscribing, refusals, limits, DM alerts, unsubscribing."""

from __future__ import annotations

from bot.events import EventKind
from bot.render.live import mention_markup
from bot.render.text import inert
from bot.store import Mention, MentionOn, Style

STYLE_PROMISES: dict[Style, str] = {
    Style.STEPS: (
        "a message will be posted here as each step completes (silently: nobody's phone "
        "buzzes), and a last one when the model is ready or the training fails"
    ),
    Style.LIVE: (
        "the message below is kept up to date as each step completes, and a short message "
        "follows it when the training ends"
    ),
    Style.THREAD: (
        "a thread under the message below gets a message as each step completes, and the "
        "result is posted in this channel"
    ),
    Style.FINAL: "one message will be posted here when the model is ready or the training fails",
}
ENDS: dict[MentionOn, str] = {
    MentionOn.READY: "when the model is ready",
    MentionOn.FAILED: "if the training fails",
    MentionOn.BOTH: "when the training ends",
}
STYLE_NAMES: dict[Style, str] = {
    Style.STEPS: "a message per step",
    Style.LIVE: "one live message",
    Style.THREAD: "a thread",
    Style.FINAL: "the final message only",
}

CANNOT_POST_TEXT = (
    "tunewatch cannot post embeds in this channel: give it View Channel, Send Messages and "
    "Embed Links here, then subscribe again."
)
THREAD_IN_THREAD_TEXT = (
    "The thread style starts a thread for the training: use it in a text channel, not inside a "
    "thread (or pick another style)."
)
EVERYONE_ROLE_TEXT = "tunewatch does not ping @everyone: pick a role or a member to mention."
CANNOT_UNSUBSCRIBE_TEXT = (
    "Only the person who subscribed, or a member with Manage Channels, can remove this "
    "subscription."
)
STALE_TEXT = (
    "This message's subscription no longer exists (it was removed), so its buttons are "
    "turned off. /training-list shows what this server follows."
)
FOLLOW_IN_A_SERVER_TEXT = "Follow here works in a server's channel."
FOLLOW_NEEDS_MANAGE_TEXT = (
    "Following a training in this channel needs the Manage Channels permission (as "
    "/training-subscribe does)."
)


def subscribed_text(training_id: str, style: Style, mention: Mention | None) -> str:
    """The answer to a new subscription (the mention shown, not pinged)."""
    ping = ""
    if mention is not None:
        ping = f", pinging {mention_markup(mention)} {ENDS[mention.on]}"
    promise = STYLE_PROMISES[style]
    return f"Subscribed this channel to `{training_id}`: {promise}{ping}. Current status:"


def already_following_text(training_id: str) -> str:
    """A subscription repeated as it is."""
    return f"This channel already follows `{training_id}` this way; nothing changed."


def ended_text(training_id: str, finished: bool) -> str:
    """Nothing to follow: the training has ended."""
    outcome = "is ready" if finished else "has failed"
    return f"Training `{training_id}` {outcome} already; there is nothing to follow."


def ended_alert_text(training_id: str, outcome: EventKind | None) -> str:
    """A DM alert asked for a training that has ended."""
    if outcome is EventKind.READY:
        return f"Training `{training_id}` is ready already: there is nothing to wait for."
    return f"Training `{training_id}` has ended already: there is nothing to wait for."


def guild_limit_text(limit: int) -> str:
    """The server follows as many trainings as allowed: how to free a slot."""
    return (
        f"This server already follows {limit} trainings, the most allowed. To free a slot, "
        "remove one: /training-unsubscribe in its channel, or the Unsubscribe button on its "
        "message (/training-list shows them all)."
    )


def dm_limit_text(limit: int) -> str:
    """The member has as many DM alerts as allowed: how to free a slot."""
    return (
        f"You already have {limit} DM alerts, the most allowed. To free a slot, turn one off "
        "with /training-notify and its id with off: True (/training-list shows yours), or "
        "wait for one to end."
    )


def thread_permissions_text(missing: list[str]) -> str:
    """The thread style needs permissions tunewatch lacks here."""
    names = " and ".join(missing)
    return (
        f"The thread style needs tunewatch to have {names} in this channel: grant "
        f"{'it' if len(missing) == 1 else 'them'}, or pick another style."
    )


def role_not_mentionable_text(role_id: int) -> str:
    """A role tunewatch could not ping."""
    return (
        f"tunewatch cannot ping <@&{role_id}>: make the role mentionable (Server Settings → "
        "Roles → the role → Allow anyone to @mention this role), or give tunewatch the Mention "
        "Everyone permission."
    )


def alert_text(training_id: str, *, already: bool, where: str | None = None) -> str:
    """The answer to a DM alert (the command, or a button)."""
    if already:
        return f"You already get a DM when `{training_id}` is ready or fails."
    origin = f" The DM will link back to {where}." if where else ""
    return (
        f"I will DM you when `{training_id}` is ready, or if it fails.{origin} Keep your DMs "
        "open to this server's members so the message can reach you."
    )


def alert_off_text(training_id: str, *, found: bool) -> str:
    """The answer to /training-notify ... off: True."""
    if not found:
        return f"You have no DM alert for `{training_id}`; nothing changed."
    return f"Your DM alert for `{training_id}` is off: no DM will come for it."


def unsubscribed_text(training_id: str) -> str:
    """A channel subscription removed."""
    return f"This channel no longer follows `{training_id}`."


def not_following_text(training_id: str) -> str:
    """Unsubscribing a channel that does not follow the training."""
    return f"This channel does not follow `{inert(training_id)}`."
