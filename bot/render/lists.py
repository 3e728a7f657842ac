"""/training-list: one line per subscription."""

from __future__ import annotations

from bot.events import EventKind
from bot.render.errors import pause_reason_text
from bot.render.text import (
    _code,
    inert,
    truncate,
)
from bot.store import Subscription, SubscriptionStatus


def subscription_line(sub: Subscription) -> str:
    """One line of /training-list."""
    where = f"<#{sub.channel_id}>" if sub.channel_id else "your DMs"
    state = _code(truncate(sub.state, 64)) if sub.state else "not checked yet"
    if sub.terminal is EventKind.READY:
        state = "model ready"
    elif sub.terminal is EventKind.FAILED:
        state = "failed"
    elif sub.terminal is EventKind.UNKNOWN:
        state = "unknown to the API"
    line = f"`{sub.training_id}` → {where} · {state}"
    if sub.status is SubscriptionStatus.PAUSED:
        reason = pause_reason_text(sub.reason) if sub.reason else "no reason recorded"
        line += f" · **paused**: {reason}"
    elif sub.status is SubscriptionStatus.DONE:
        line += " · done"
    elif sub.last_error:
        line += f" · last check failed: {inert(truncate(sub.last_error, 120))}"
    return line
