"""The buttons on tunewatch's messages, handled whatever process sent them (persistent).

Each button's custom id carries what its click needs (see ``bot.render.components``); the
handlers are registered for those templates when the cog loads, so a button sent before a
restart works after it. A click answers within Discord's 3 seconds: the store's work is quick,
and a status asked of the API is deferred when it is slow. A button whose subscription is gone
answers privately and turns its message's buttons off.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from typing import Any, cast

import discord
from discord.ext import commands

from bot import render
from bot.app import TunewatchBot
from bot.following import fetch_status, follow, post_refusal
from bot.interactions import reply, reply_error, update
from bot.render import components, replies
from bot.sdapi.status import Api
from bot.store import Following, LimitReached, Style, Subscription, SubscriptionKind
from cogs.training import list_page, status_page

log = logging.getLogger(__name__)

Interaction = discord.Interaction[TunewatchBot]
SOMETHING_WENT_WRONG = "Something went wrong on tunewatch's side; it was logged. Try again later."


class _Persistent(discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"tw:never"):
    """A button rebuilt from its custom id; subclasses name their template and handler."""

    def __init__(self, custom_id: str) -> None:
        super().__init__(discord.ui.Button(custom_id=custom_id))

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str]
    ) -> _Persistent:
        """The button, from the custom id Discord sent back."""
        return cls(match.string)

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        """Handle the click; a failure is logged and told to the member, never raised."""
        match = self.template.fullmatch(self.custom_id or "")
        if match is None:  # pragma: no cover - discord.py matched the template to get here
            return
        try:
            await self.handle(cast(Interaction, interaction), match)
        except Exception:
            log.exception("button %s failed", self.custom_id)
            try:
                await reply_error(interaction, SOMETHING_WENT_WRONG)
            except discord.HTTPException:
                log.warning("could not tell the member about the failure (interaction expired?)")

    async def handle(self, interaction: Interaction, match: re.Match[str]) -> None:
        """What the click does."""
        raise NotImplementedError


class SubscriptionButton(_Persistent, template=components.SUB_ID):
    """Refresh, DM me when ready, Unsubscribe: on a subscription's live and final messages."""

    async def handle(self, interaction: Interaction, match: re.Match[str]) -> None:
        """Find the subscription (or say it is gone), then do what the button says."""
        bot = interaction.client
        sub = await bot.store.subscriptions.get(int(match["sub"]))
        if (
            sub is None
            or sub.kind is not SubscriptionKind.CHANNEL
            or sub.guild_id != interaction.guild_id
            or sub.channel_id != interaction.channel_id
        ):
            await stale(interaction)
        elif match["action"] == "refresh":
            await refresh_subscription(interaction, sub)
        elif match["action"] == "dm":
            await dm_from_subscription(interaction, sub)
        else:
            await unsubscribe(interaction, sub)


class TrainingButton(_Persistent, template=components.TRAINING_ID):
    """Refresh, Follow here, DM me when ready: on a /training-status answer."""

    async def handle(self, interaction: Interaction, match: re.Match[str]) -> None:
        """Do what the button says for the training its custom id names."""
        training_id, api = match["training"], Api(match["api"])
        if match["action"] == "refresh":
            await refresh_status(interaction, training_id, api)
        elif match["action"] == "follow":
            await follow_here(interaction, training_id, api)
        else:
            await dm_from_status(interaction, training_id, api)


class ListPageButton(_Persistent, template=components.LIST_PAGE):
    """Previous and Next on /training-list."""

    async def handle(self, interaction: Interaction, match: re.Match[str]) -> None:
        """Show the page the button names, for the member who clicked."""
        page, show = int(match["page"]), match["finished"] == "1"
        embed, view = await list_page(interaction.client, interaction, page, show)
        await update(interaction, embed=embed, view=view or components.ButtonRow())


async def stale(interaction: Interaction) -> None:
    """The button's subscription is gone: turn the message's buttons off, say so privately."""
    message = interaction.message
    off = components.disabled(message.components if message is not None else [])
    await interaction.response.edit_message(view=off)
    await interaction.followup.send(embed=render.error_embed(replies.STALE_TEXT), ephemeral=True)


async def refresh_subscription(interaction: Interaction, sub: Subscription) -> None:
    """The training's status now, privately; new steps found on the way reach the channel."""
    bot = interaction.client
    row = await bot.store.trainings.get(sub.training_id, sub.key_ref)
    api = Api(row.api) if row is not None else None
    fetched = await fetch_status(
        bot, interaction, sub.training_id, api, ephemeral=True, key_ref=sub.key_ref
    )
    if fetched is None:
        return
    await bot.tracker.ingest(fetched.training_id, fetched.key_ref, fetched.status)
    embed = render.status_embed(fetched.training_id, fetched.status, datetime.now(UTC))
    await reply(interaction, embed=embed, ephemeral=True)


async def dm_from_subscription(interaction: Interaction, sub: Subscription) -> None:
    """A DM alert for the member who clicked, polled with the channel's key, linking back."""
    bot = interaction.client
    if sub.terminal is not None:
        await reply(
            interaction, replies.ended_alert_text(sub.training_id, sub.terminal), ephemeral=True
        )
        return
    linked = sub.live_message_id if sub.style.keeps_a_message else None
    try:
        _, already = await bot.store.subscriptions.subscribe(
            kind=SubscriptionKind.DM,
            guild_id=interaction.guild_id,
            channel_id=None,
            user_id=interaction.user.id,
            training_id=sub.training_id,
            key_ref=sub.key_ref,
            limit=bot.settings.MAX_DM_ALERTS_PER_USER,
            now=datetime.now(UTC).timestamp(),
            following=Following(origin_channel_id=sub.channel_id, origin_message_id=linked),
        )
    except LimitReached as exc:
        await reply_error(interaction, replies.dm_limit_text(exc.limit))
        return
    bot.tracker.wake()
    where = "the live message" if linked is not None else f"<#{sub.channel_id}>"
    await reply(
        interaction,
        replies.alert_text(sub.training_id, already=already, where=where),
        ephemeral=True,
    )


async def unsubscribe(interaction: Interaction, sub: Subscription) -> None:
    """Remove the channel's subscription (its creator or Manage Channels only)."""
    if sub.user_id != interaction.user.id and not interaction.permissions.manage_channels:
        await reply_error(interaction, replies.CANNOT_UNSUBSCRIBE_TEXT)
        return
    await interaction.client.store.subscriptions.remove(sub.id)
    message = interaction.message
    off = components.disabled(message.components if message is not None else [])
    await interaction.response.edit_message(view=off)
    await interaction.followup.send(replies.unsubscribed_text(sub.training_id), ephemeral=True)


async def refresh_status(interaction: Interaction, training_id: str, api: Api) -> None:
    """The /training-status answer, asked again and shown in place."""
    bot = interaction.client
    fetched = await fetch_status(bot, interaction, training_id, api, update=True)
    if fetched is None:
        return
    embed, view = status_page(interaction, fetched)
    await update(interaction, embed=embed, view=view)


async def follow_here(interaction: Interaction, training_id: str, api: Api) -> None:
    """Subscribe this channel, as /training-subscribe would (the steps style)."""
    bot = interaction.client
    if interaction.guild_id is None:
        await reply_error(interaction, replies.FOLLOW_IN_A_SERVER_TEXT)
        return
    if not interaction.permissions.manage_channels:
        await reply_error(interaction, replies.FOLLOW_NEEDS_MANAGE_TEXT)
        return
    refusal = post_refusal(interaction, Style.STEPS)
    if refusal is not None:
        await reply_error(interaction, refusal)
        return
    fetched = await fetch_status(bot, interaction, training_id, api, ephemeral=True)
    if fetched is None:
        return
    if fetched.status.terminal:
        text = replies.ended_text(fetched.training_id, fetched.status.finished)
        await reply(interaction, text, ephemeral=True)
        return
    try:
        already = await follow(
            bot,
            interaction,
            SubscriptionKind.CHANNEL,
            fetched,
            limit=bot.settings.MAX_SUBSCRIPTIONS_PER_GUILD,
        )
    except LimitReached as exc:
        await reply_error(interaction, replies.guild_limit_text(exc.limit))
        return
    if already:
        text = replies.already_following_text(fetched.training_id)
    else:
        text = replies.subscribed_text(fetched.training_id, Style.STEPS, None)
    await reply(interaction, text.removesuffix(" Current status:"), ephemeral=True)


async def dm_from_status(interaction: Interaction, training_id: str, api: Api) -> None:
    """A DM alert for the member who clicked, with their own key, as /training-notify."""
    bot = interaction.client
    fetched = await fetch_status(bot, interaction, training_id, api, ephemeral=True)
    if fetched is None:
        return
    if fetched.status.terminal:
        outcome = render.outcome_of(fetched.status)
        await reply(
            interaction, replies.ended_alert_text(fetched.training_id, outcome), ephemeral=True
        )
        return
    origin = interaction.channel_id if interaction.guild_id is not None else None
    try:
        already = await follow(
            bot,
            interaction,
            SubscriptionKind.DM,
            fetched,
            limit=bot.settings.MAX_DM_ALERTS_PER_USER,
            following=Following(origin_channel_id=origin),
        )
    except LimitReached as exc:
        await reply_error(interaction, replies.dm_limit_text(exc.limit))
        return
    where = f"<#{origin}>" if origin is not None else None
    await reply(
        interaction,
        replies.alert_text(fetched.training_id, already=already, where=where),
        ephemeral=True,
    )


class ButtonsCog(commands.Cog):
    """Registers the persistent buttons' handlers."""

    ITEMS = (SubscriptionButton, TrainingButton, ListPageButton)

    def __init__(self, bot: TunewatchBot) -> None:
        self.bot = bot

    async def cog_load(self) -> None:
        """Take the clicks on any tunewatch button, sent by this process or an earlier one."""
        self.bot.add_dynamic_items(*self.ITEMS)

    async def cog_unload(self) -> None:
        """Stop taking them."""
        self.bot.remove_dynamic_items(*self.ITEMS)


async def setup(bot: TunewatchBot) -> None:
    """Extension entry point."""
    await bot.add_cog(ButtonsCog(bot))
