"""The one place that sends the tracker's messages to Discord, and what Discord's answers mean.

``DiscordNotifier.send`` posts one delivery with its nonce and maps Discord's errors to the
deliverer's three outcomes: retry later (network, 5xx, 429), pause the subscription (the target
cannot receive: a reason the members see in /training-list), or give up on this one message.
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
import discord
from aiolimiter import AsyncLimiter

from bot import render
from bot.reasons import PauseReason
from bot.store import Delivery, SubscriptionKind
from bot.tracking.delivery import DeliveryError, PermanentDeliveryError, TransientDeliveryError

log = logging.getLogger(__name__)

# Discord allows a bot 50 requests per second in all (the global limit). discord.py honours the
# per-route buckets from response headers, but learns of the global limit only from a 429: pace
# the tracker's sends just below it instead, evenly (a bucket of one, so never a burst), leaving
# a little room for the other requests of the process (command answers are not counted).
GLOBAL_SENDS_PER_SECOND = 48.0
# Messages looked through for one that may have been sent before a crash (Discord's page size).
HISTORY_LIMIT = 50

# Discord's JSON error codes that tunewatch tells apart.
UNKNOWN_CHANNEL = 10003
UNKNOWN_USER = 10013
MISSING_ACCESS = 50001
CANNOT_DM = 50007
MISSING_PERMISSIONS = 50013
THREAD_ARCHIVED = 50083


class DiscordNotifier:
    """Sends deliveries through a discord.py client and classifies what Discord answers."""

    def __init__(self, client: discord.Client, *, rate: float = GLOBAL_SENDS_PER_SECOND) -> None:
        self._client = client
        self._dm_channels: dict[int, int] = {}
        self._pacer = AsyncLimiter(1, 1.0 / rate)

    async def _target(self, delivery: Delivery) -> discord.abc.Messageable:
        if delivery.kind is SubscriptionKind.CHANNEL:
            assert delivery.channel_id is not None  # noqa: S101 - schema: channel rows have one
            return self._client.get_partial_messageable(delivery.channel_id)
        channel_id = self._dm_channels.get(delivery.user_id)
        if channel_id is None:
            async with self._pacer:
                dm = await self._client.create_dm(discord.Object(id=delivery.user_id))
            channel_id = self._dm_channels[delivery.user_id] = dm.id
        return self._client.get_partial_messageable(channel_id, type=discord.ChannelType.private)

    async def send(self, delivery: Delivery, nonce: str) -> int | None:
        """Send one delivery; map Discord's answer to retry, pause, or give up."""
        embed = render.delivery_embed(delivery)
        try:
            target = await self._target(delivery)
            async with self._pacer:
                message = await target.send(
                    embed=embed, nonce=nonce, allowed_mentions=discord.AllowedMentions.none()
                )
        except discord.HTTPException as exc:
            raise classify(delivery, exc) from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TransientDeliveryError(f"network error: {type(exc).__name__}") from None
        return message.id

    async def find_sent(self, delivery: Delivery) -> int | None:
        """This delivery's message in the channel's last ``HISTORY_LIMIT`` messages, or None.

        Asked before sending again a message whose send may have happened past Discord's nonce
        window. Needs Read Message History; without it (or on any error) the message is sent
        again, and may show twice.
        """
        expected = render.delivery_embed(delivery).to_dict()
        me = self._client.user
        try:
            target = await self._target(delivery)
            async with self._pacer:
                async for message in target.history(limit=HISTORY_LIMIT):
                    if me is not None and message.author.id != me.id:
                        continue
                    if any(_same_embed(e.to_dict(), expected) for e in message.embeds):
                        return message.id
        except discord.Forbidden:
            log.warning(
                "cannot read the history of channel %s (Read Message History missing): a "
                "message sent before a long outage may show twice",
                delivery.channel_id or f"DM of {delivery.user_id}",
            )
        except (discord.HTTPException, aiohttp.ClientError, TimeoutError) as exc:
            log.info("could not look for delivery %d in its channel: %s", delivery.id, exc)
        return None


def _same_embed(found: Any, expected: Any) -> bool:
    """Whether an embed in the channel is the one this delivery renders (its words, not the
    fields Discord adds, such as the type)."""
    return all(found.get(name) == expected.get(name) for name in ("title", "description"))


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
    if exc.code == CANNOT_DM:
        return PauseReason.DMS_CLOSED.value
    if exc.code == MISSING_ACCESS:
        return PauseReason.NO_ACCESS.with_detail(delivery.channel_id)
    if exc.code == MISSING_PERMISSIONS:
        return PauseReason.MISSING_PERMISSIONS.with_detail(delivery.channel_id)
    if exc.code == THREAD_ARCHIVED:
        return PauseReason.THREAD_ARCHIVED.value
    if exc.code == UNKNOWN_CHANNEL:
        return PauseReason.CHANNEL_DELETED.value
    if exc.code == UNKNOWN_USER:
        return PauseReason.USER_UNKNOWN.value
    if exc.status in (403, 404):
        return PauseReason.DISCORD_REFUSED.with_detail(f"{exc.status}, code {exc.code}")
    return None
