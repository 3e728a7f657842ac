"""The one place that sends the tracker's messages to Discord, and what Discord's answers mean.

``DiscordNotifier.send`` carries out one delivery row as its subscription's style says, and maps
Discord's errors to the deliverer's three outcomes: retry later (network, 5xx, 429), pause the
subscription (the target cannot receive: a reason the members see in /training-list), or give
up on this one message.

What a delivery row becomes on Discord, by style (a channel's; a DM alert gets the final DM):

- ``steps``: a step is a new message, sent silent (SUPPRESS_NOTIFICATIONS); the end is the
  final message, not silent, pinging the subscription's mention, with buttons.
- ``final``: the end only (the outbox makes no step rows for it).
- ``live``: the opening row posts the live message and stores its id before anything edits it;
  a step row edits it to show the steps up to that row (an edit is idempotent: done twice, it
  shows the same); the end edits it to its final form, then posts the short final message as a
  reply to it (with the row's nonce, like every new message). A deleted live message is posted
  again once, by the step that finds it gone, and the next steps edit the new one.
- ``thread``: the opening posts the summary message and starts a thread under it (the thread has
  the message's id); a step edits the summary to show it (as ``live`` does) and is posted
  silent in the thread; the end edits the summary to its final form and posts the final
  message in the channel, as for ``live``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Literal

import aiohttp
import discord
from aiolimiter import AsyncLimiter

from bot import render
from bot.discord_errors import (
    THREAD_ALREADY_CREATED,
    UNKNOWN_MESSAGE,
    classify,
)
from bot.events import EventKind
from bot.render import components
from bot.render.live import Origin, allowed_mentions, ping_content
from bot.store import Delivery, Store, Story, Style, SubscriptionKind
from bot.tracking.delivery import TransientDeliveryError

log = logging.getLogger(__name__)

# Discord allows a bot 50 requests per second in all (the global limit). discord.py honours the
# per-route buckets from response headers, but learns of the global limit only from a 429: pace
# the tracker's requests just below it instead, evenly (a bucket of one, so never a burst),
# leaving a little room for the other requests of the process (command answers are not counted).
GLOBAL_SENDS_PER_SECOND = 48.0
# Messages looked through for one that may have been sent before a crash (Discord's page size).
HISTORY_LIMIT = 50
# A DM names the server and channel it came from: how long to wait for the gateway's cache
# after a start before naming them by id instead.
NAMES_WAIT_SECONDS = 5.0
THREAD_ARCHIVE_MINUTES: Literal[10080] = (
    10080  # a week: Discord's longest; a message wakes an archived thread
)


def repost_nonce(nonce: str) -> str:
    """The nonce of a live message posted again (not the row's own: Discord could answer that
    one with the message it first made, the deleted one)."""
    return "tl" + nonce[2:]


class DiscordNotifier:
    """Sends deliveries through a discord.py client and classifies what Discord answers."""

    def __init__(
        self, client: discord.Client, store: Store, *, rate: float = GLOBAL_SENDS_PER_SECOND
    ) -> None:
        self._client = client
        self._subscriptions = store.subscriptions
        self._outbox = store.outbox
        self._dm_channels: dict[int, int] = {}
        self._pacer = AsyncLimiter(1, 1.0 / rate)

    # -- the Notifier protocol -------------------------------------------------------------

    async def send(self, delivery: Delivery, nonce: str) -> int | None:
        """Carry out one delivery; map Discord's answer to retry, pause, or give up."""
        try:
            return await self._send(delivery, nonce)
        except discord.HTTPException as exc:
            raise classify(delivery, exc) from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TransientDeliveryError(f"network error: {type(exc).__name__}") from None

    async def find_sent(self, delivery: Delivery) -> int | None:
        """This delivery's message in the channel's last ``HISTORY_LIMIT`` messages, or None.

        Asked before sending again a message whose send may have happened past Discord's nonce
        window. Needs Read Message History; without it (or on any error) the message is sent
        again, and may show twice. A live message's edit is not looked for: done again, it
        shows the same.
        """
        try:
            if delivery.opening:
                found = await self._find_live_message(delivery)
                if found is not None:
                    await self._remember_live(delivery, found)
                    if delivery.style is Style.THREAD:
                        await self._start_thread(delivery, found)
                return found
            if delivery.style is Style.LIVE and not delivery.terminal:
                return None
            return await self._find_embed(delivery)
        except discord.Forbidden:
            log.warning(
                "cannot read the history of channel %s (Read Message History missing): a "
                "message sent before a long outage may show twice",
                delivery.channel_id or f"DM of {delivery.user_id}",
            )
        except (discord.HTTPException, aiohttp.ClientError, TimeoutError) as exc:
            log.info("could not look for delivery %d in its channel: %s", delivery.id, exc)
        return None

    # -- what each row becomes -------------------------------------------------------------

    async def _send(self, delivery: Delivery, nonce: str) -> int:
        if delivery.kind is SubscriptionKind.DM:
            return await self._send_dm(delivery, nonce)
        if delivery.opening:
            return await self._open(delivery, nonce)
        if not delivery.terminal:
            if delivery.style is Style.LIVE:
                return await self._update_live(delivery, nonce)
            if delivery.style is Style.THREAD:
                return await self._post_in_thread(delivery, nonce)
            embed = render.delivery_embed(delivery)
            return await self._post(self._channel(delivery), nonce, embed=embed, silent=True)
        if delivery.style.keeps_a_message:
            return await self._end_live(delivery, nonce)
        story = await self._story(delivery)
        return await self._post(
            self._channel(delivery),
            nonce,
            content=ping_content(delivery.mention, _outcome(delivery)),
            embed=render.final_embed(story),
            view=components.subscription_buttons(delivery.subscription_id),
            allowed_mentions=allowed_mentions(delivery.mention, _outcome(delivery)),
        )

    async def _open(self, delivery: Delivery, nonce: str) -> int:
        """Post the live (or summary) message, store its id before any edit; start the thread.

        An id stored already was posted by an earlier attempt of this opening (subscribing
        anew clears it): that message is kept, and only the thread is started if need be.
        """
        message_id = await self._live_id(delivery)
        if message_id is None:
            story = await self._outbox.story(
                delivery.training_id, delivery.key_ref, delivery.baseline_seq
            )
            message_id = await self._post_live(delivery, story, nonce)
        if delivery.style is Style.THREAD:
            await self._start_thread(delivery, message_id)
        return message_id

    async def _post_live(self, delivery: Delivery, story: Story, nonce: str) -> int:
        message_id = await self._post(
            self._channel(delivery),
            nonce,
            embed=render.live_embed(story, thread=delivery.style is Style.THREAD),
            view=components.subscription_buttons(delivery.subscription_id),
            silent=True,
        )
        await self._remember_live(delivery, message_id)
        return message_id

    async def _update_live(self, delivery: Delivery, nonce: str) -> int:
        """Edit the live message to show the steps up to this row; post it again if gone."""
        story = await self._story(delivery)
        message_id = await self._live_id(delivery)
        if message_id is not None and await self._edit(
            delivery, message_id, render.live_embed(story)
        ):
            return message_id
        # Deleted (or never posted): posted again, once; the next rows edit the new one. A
        # repost lost to a crash is in the channel already.
        found = await self._find_live_message(delivery) if delivery.attempted_at else None
        if found is not None and found != message_id:
            await self._remember_live(delivery, found)
            await self._edit(delivery, found, render.live_embed(story))
            return found
        log.info(
            "the live message of subscription %d is gone: posting it again",
            delivery.subscription_id,
        )
        return await self._post_live(delivery, story, repost_nonce(nonce))

    async def _post_in_thread(self, delivery: Delivery, nonce: str) -> int:
        """Bring the summary up to this step, then post the step in the thread. The edit comes
        first: done again by a retry of this row, it shows the same; a summary someone deleted
        stays gone (the thread goes on)."""
        thread_id = await self._live_id(delivery)
        if thread_id is None:  # the opening never reached Discord: open now, then post
            thread_id = await self._open(delivery, repost_nonce(nonce))
        story = await self._story(delivery)
        await self._edit(delivery, thread_id, render.live_embed(story, thread=True))
        thread = self._client.get_partial_messageable(
            thread_id, guild_id=delivery.guild_id, type=discord.ChannelType.public_thread
        )
        return await self._post(thread, nonce, embed=render.delivery_embed(delivery), silent=True)

    async def _end_live(self, delivery: Delivery, nonce: str) -> int:
        """The end of a live or thread subscription: its message in its final form, then the
        short final message replying to it (the edit notifies nobody)."""
        story = await self._story(delivery)
        message_id = await self._live_id(delivery)
        thread = delivery.style is Style.THREAD
        if message_id is not None and not await self._edit(
            delivery,
            message_id,
            render.live_embed(story, thread=thread),
            view=components.subscription_buttons(delivery.subscription_id),
        ):
            message_id = None  # deleted: the final message alone says it
        reference = None
        if message_id is not None:
            reference = discord.MessageReference(
                message_id=message_id,
                channel_id=self._channel_id(delivery),
                guild_id=delivery.guild_id,
                fail_if_not_exists=False,
            )
        return await self._post(
            self._channel(delivery),
            nonce,
            content=ping_content(delivery.mention, _outcome(delivery)),
            embed=render.final_embed(story, short=True),
            view=components.subscription_buttons(delivery.subscription_id),
            allowed_mentions=allowed_mentions(delivery.mention, _outcome(delivery)),
            reference=reference,
        )

    async def _send_dm(self, delivery: Delivery, nonce: str) -> int:
        story = await self._story(delivery)
        embed = render.dm_embed(story, await self._origin(delivery))
        return await self._post(await self._dm(delivery), nonce, embed=embed)

    # -- Discord ---------------------------------------------------------------------------

    def _channel_id(self, delivery: Delivery) -> int:
        assert delivery.channel_id is not None  # noqa: S101 - schema: channel rows have one
        return delivery.channel_id

    def _channel(self, delivery: Delivery) -> discord.PartialMessageable:
        return self._client.get_partial_messageable(
            self._channel_id(delivery), guild_id=delivery.guild_id
        )

    async def _dm(self, delivery: Delivery) -> discord.PartialMessageable:
        channel_id = self._dm_channels.get(delivery.user_id)
        if channel_id is None:
            async with self._pacer:
                dm = await self._client.create_dm(discord.Object(id=delivery.user_id))
            channel_id = self._dm_channels[delivery.user_id] = dm.id
        return self._client.get_partial_messageable(channel_id, type=discord.ChannelType.private)

    async def _post(
        self,
        target: discord.abc.Messageable,
        nonce: str,
        *,
        content: str | None = None,
        embed: discord.Embed,
        view: discord.ui.View | None = None,
        silent: bool = False,
        allowed_mentions: discord.AllowedMentions | None = None,
        reference: discord.MessageReference | None = None,
    ) -> int:
        kwargs: dict[str, Any] = {}
        if view is not None:
            kwargs["view"] = view
        if reference is not None:
            kwargs["reference"] = reference
            kwargs["mention_author"] = False
        async with self._pacer:
            message = await target.send(
                content,
                embed=embed,
                nonce=nonce,
                silent=silent,
                allowed_mentions=allowed_mentions or discord.AllowedMentions.none(),
                **kwargs,
            )
        return message.id

    async def _edit(
        self,
        delivery: Delivery,
        message_id: int,
        embed: discord.Embed,
        *,
        view: discord.ui.View | None = None,
    ) -> bool:
        """Edit the subscription's message; False when it was deleted."""
        message = self._channel(delivery).get_partial_message(message_id)
        kwargs: dict[str, Any] = {} if view is None else {"view": view}
        try:
            async with self._pacer:
                await message.edit(
                    embed=embed, allowed_mentions=discord.AllowedMentions.none(), **kwargs
                )
        except discord.NotFound as exc:
            if exc.code == UNKNOWN_MESSAGE:
                return False
            raise
        return True

    async def _start_thread(self, delivery: Delivery, message_id: int) -> None:
        """Start the thread under the summary message (it gets the message's id); a thread
        already started (the same row sent again) is fine."""
        try:
            async with self._pacer:
                await self._client.http.start_thread_with_message(
                    self._channel_id(delivery),
                    message_id,
                    name=render.thread_name(delivery.training_id),
                    auto_archive_duration=THREAD_ARCHIVE_MINUTES,
                )
        except discord.HTTPException as exc:
            if exc.code != THREAD_ALREADY_CREATED:
                raise

    async def _find_live_message(self, delivery: Delivery) -> int | None:
        """The subscription's live (or summary) message in its channel's history: the one
        with this subscription's buttons."""
        wanted = components.sub_custom_id("refresh", delivery.subscription_id)
        me = self._client.user
        async with self._pacer:
            async for message in self._channel(delivery).history(limit=HISTORY_LIMIT):
                if me is not None and message.author.id != me.id:
                    continue
                if wanted in _custom_ids(message) and message.reference is None:
                    return message.id
        return None

    async def _find_embed(self, delivery: Delivery) -> int | None:
        """A step or final message in its channel's history, by its embed."""
        expected = render.delivery_embed(delivery).to_dict()
        if delivery.kind is SubscriptionKind.DM:
            target: discord.abc.Messageable = await self._dm(delivery)
        elif delivery.style is Style.THREAD and not delivery.terminal:
            thread_id = await self._live_id(delivery)
            if thread_id is None:
                return None
            target = self._client.get_partial_messageable(thread_id, guild_id=delivery.guild_id)
        else:
            target = self._channel(delivery)
        me = self._client.user
        async with self._pacer:
            async for message in target.history(limit=HISTORY_LIMIT):
                if me is not None and message.author.id != me.id:
                    continue
                for embed in message.embeds:
                    if _same_embed(embed.to_dict(), expected, whole=not delivery.terminal):
                        return message.id
        return None

    # -- the store -------------------------------------------------------------------------

    async def _live_id(self, delivery: Delivery) -> int | None:
        """The subscription's live message as stored now (the batch's row may predate it)."""
        return await self._subscriptions.live_message_of(delivery.subscription_id)

    async def _remember_live(self, delivery: Delivery, message_id: int) -> None:
        """Store the live message's id: before any edit of it, so that a restart edits it
        instead of posting a second one."""
        await self._subscriptions.set_live_message(delivery.subscription_id, message_id)

    async def _story(self, delivery: Delivery) -> Story:
        return await self._outbox.story(delivery.training_id, delivery.key_ref, delivery.seq)

    async def _origin(self, delivery: Delivery) -> Origin | None:
        """Where a DM alert made with a button came from, named as the gateway's cache says
        (after a start, the cache fills a moment after the first sends)."""
        if delivery.origin_channel_id is None:
            return None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._client.wait_until_ready(), NAMES_WAIT_SECONDS)
        guild = self._client.get_guild(delivery.guild_id) if delivery.guild_id else None
        channel = self._client.get_channel(delivery.origin_channel_id)
        return Origin(
            guild_id=delivery.guild_id,
            channel_id=delivery.origin_channel_id,
            message_id=delivery.origin_message_id,
            guild_name=guild.name if guild is not None else None,
            channel_name=getattr(channel, "name", None),
        )


def _outcome(delivery: Delivery) -> EventKind | None:
    return None if delivery.event is None else delivery.event.kind


def _custom_ids(message: discord.Message) -> set[str]:
    found = set()
    for row in message.components:
        for child in row.children if isinstance(row, discord.ActionRow) else [row]:
            custom_id = getattr(child, "custom_id", None)
            if custom_id:
                found.add(custom_id)
    return found


def _same_embed(found: Any, expected: Any, *, whole: bool) -> bool:
    """Whether an embed in the channel is the one this delivery renders: its title (a final
    message: there is one per training and channel), and for a step its description too."""
    names = ("title", "description") if whole else ("title",)
    return all(found.get(name) == expected.get(name) for name in names)
