"""What Discord's error answers mean for a delivery: retry later, pause the subscription (the
target cannot receive; a reason its members see in /training-list), or give up on one message."""

from __future__ import annotations

import discord

from bot.reasons import PauseReason
from bot.store import Delivery, Style
from bot.tracking.delivery import DeliveryError, PermanentDeliveryError, TransientDeliveryError

# Discord's JSON error codes that tunewatch tells apart.
UNKNOWN_CHANNEL = 10003
UNKNOWN_MESSAGE = 10008
UNKNOWN_USER = 10013
MISSING_ACCESS = 50001
CANNOT_DM = 50007
MISSING_PERMISSIONS = 50013
THREAD_ARCHIVED = 50083
THREAD_ALREADY_CREATED = 160004


def classify(delivery: Delivery, exc: discord.HTTPException) -> DeliveryError:
    """The deliverer's outcome for an error Discord answered."""
    if isinstance(exc, discord.RateLimited):  # pragma: no cover - discord.py waits them out
        return TransientDeliveryError("rate limited", retry_after=exc.retry_after)
    if exc.status == 429 or exc.status >= 500:
        return TransientDeliveryError(f"Discord answered {exc.status}")
    reason = _pause_reason(delivery, exc)
    if reason is not None:
        return PermanentDeliveryError(reason)
    return DeliveryError(f"Discord refused the message: {exc.status} {exc.text}")


def _pause_reason(delivery: Delivery, exc: discord.HTTPException) -> str | None:
    """The stored pause reason when the target cannot receive, else None."""
    in_thread = delivery.style is Style.THREAD and delivery.event is not None
    in_thread = in_thread and not delivery.terminal
    if exc.code == CANNOT_DM:
        return PauseReason.DMS_CLOSED.value
    if exc.code == MISSING_ACCESS:
        return PauseReason.NO_ACCESS.with_detail(delivery.channel_id)
    if exc.code == MISSING_PERMISSIONS:
        if in_thread or (delivery.opening and delivery.style is Style.THREAD):
            return PauseReason.NO_THREAD_PERMISSIONS.with_detail(delivery.channel_id)
        return PauseReason.MISSING_PERMISSIONS.with_detail(delivery.channel_id)
    if exc.code == THREAD_ARCHIVED:
        return PauseReason.THREAD_ARCHIVED.value
    if exc.code == UNKNOWN_CHANNEL:
        return PauseReason.THREAD_DELETED.value if in_thread else PauseReason.CHANNEL_DELETED.value
    if exc.code == UNKNOWN_USER:
        return PauseReason.USER_UNKNOWN.value
    if exc.status in (403, 404):
        return PauseReason.DISCORD_REFUSED.with_detail(f"{exc.status}, code {exc.code}")
    return None
