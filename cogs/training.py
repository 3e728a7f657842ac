"""The training slash commands: status, subscribe, unsubscribe, notify, list."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import discord
from discord import app_commands
from discord.ext import commands

from bot import render
from bot.app import TunewatchBot
from bot.following import (
    Fetched,
    Mentionable,
    fetch_status,
    follow,
    mention_of,
    mention_refusal,
    post_refusal,
)
from bot.interactions import reply, reply_error
from bot.render import components, replies
from bot.render.lists import FINISHED_SHOWN_HOURS
from bot.sdapi.client import validate_training_id
from bot.sdapi.errors import SdApiError
from bot.sdapi.status import Api
from bot.store import Following, LimitReached, MentionOn, Style, SubscriptionKind

TRAINING_ID = app_commands.describe(
    training_id="The training id the API returned when the training was created"
)
Interaction = discord.Interaction[TunewatchBot]
AUTOCOMPLETE_CHOICES = 25  # Discord's maximum


async def known_training_ids(
    interaction: Interaction, current: str
) -> list[app_commands.Choice[str]]:
    """Suggest the trainings this server's channels or this member follow(ed)."""
    ids = await interaction.client.store.subscriptions.known_training_ids(
        guild_id=interaction.guild_id,
        user_id=interaction.user.id,
        prefix=current.strip(),
        limit=AUTOCOMPLETE_CHOICES,
    )
    return [app_commands.Choice(name=training_id, value=training_id) for training_id in ids]


AUTOCOMPLETE_ID = app_commands.autocomplete(training_id=known_training_ids)
AUTO = "auto"
API_OPTION = app_commands.describe(
    api="Which status endpoint to ask (default: by the id; a UUID is a v6 trainer run)"
)
API_CHOICES = app_commands.choices(
    api=[
        app_commands.Choice(name="auto (by the id)", value=AUTO),
        app_commands.Choice(name="v3 fine-tune (Dreambooth, LoRA)", value=Api.V3.value),
        app_commands.Choice(name="v6 trainer (Flux, SDXL LoRA)", value=Api.V6.value),
    ]
)
SUBSCRIBE_OPTIONS = app_commands.describe(
    style="How the channel follows it (default: a message per step)",
    mention="A role or a member to ping on the final message",
    mention_on="Which outcome pings (default: both)",
)
SUBSCRIBE_CHOICES = app_commands.choices(
    style=[
        app_commands.Choice(
            name="steps: a silent message per step, then the result", value="steps"
        ),
        app_commands.Choice(
            name="live: one message kept up to date, then the result", value="live"
        ),
        app_commands.Choice(
            name="thread: a thread of step messages, the result here", value="thread"
        ),
        app_commands.Choice(name="final: only the result", value="final"),
    ],
    mention_on=[
        app_commands.Choice(name="ready: when the model is ready", value="ready"),
        app_commands.Choice(name="failed: if the training fails", value="failed"),
        app_commands.Choice(name="both: when the training ends", value="both"),
    ],
)


def _api(value: str) -> Api | None:
    return None if value == AUTO else Api(value)


class TrainingCog(commands.Cog):
    """/training-status, -subscribe, -unsubscribe, -notify, -list."""

    def __init__(self, bot: TunewatchBot) -> None:
        self.bot = bot

    @app_commands.command(
        name="training-status", description="Show a training's state, steps, ETA and log"
    )
    @TRAINING_ID
    @API_OPTION
    @API_CHOICES
    @AUTOCOMPLETE_ID
    async def training_status(
        self, interaction: Interaction, training_id: str, api: str = AUTO
    ) -> None:
        """Answer with the training's current status, and buttons to refresh or follow it."""
        fetched = await fetch_status(self.bot, interaction, training_id, _api(api))
        if fetched is None:
            return
        embed, view = status_page(interaction, fetched)
        await reply(interaction, embed=embed, view=view)

    @app_commands.command(
        name="training-subscribe",
        description="Follow a training in this channel: step messages, a live message or a thread",
    )
    @app_commands.guild_only()
    @app_commands.default_permissions(manage_channels=True)
    @TRAINING_ID
    @API_OPTION
    @API_CHOICES
    @SUBSCRIBE_OPTIONS
    @SUBSCRIBE_CHOICES
    @AUTOCOMPLETE_ID
    async def training_subscribe(
        self,
        interaction: Interaction,
        training_id: str,
        api: str = AUTO,
        style: str = Style.STEPS.value,
        mention: Mentionable | None = None,
        mention_on: str = MentionOn.BOTH.value,
    ) -> None:
        """Subscribe the channel the command is used in."""
        chosen = Style(style)
        refusal = post_refusal(interaction, chosen) or mention_refusal(interaction, mention)
        if refusal is not None:
            await reply_error(interaction, refusal)
            return
        fetched = await fetch_status(self.bot, interaction, training_id, _api(api))
        if fetched is None:
            return
        embed = render.status_embed(fetched.training_id, fetched.status, datetime.now(UTC))
        if fetched.status.terminal:
            text = replies.ended_text(fetched.training_id, fetched.status.finished)
            await reply(interaction, text, embed=embed)
            return
        ping = mention_of(mention, MentionOn(mention_on))
        try:
            already = await follow(
                self.bot,
                interaction,
                SubscriptionKind.CHANNEL,
                fetched,
                limit=self.bot.settings.MAX_SUBSCRIPTIONS_PER_GUILD,
                following=Following(style=chosen, mention=ping),
            )
        except LimitReached as exc:
            await reply_error(interaction, replies.guild_limit_text(exc.limit))
            return
        if already:
            text = replies.already_following_text(fetched.training_id)
        else:
            text = replies.subscribed_text(fetched.training_id, chosen, ping)
        await reply(interaction, text, embed=embed)

    @app_commands.command(
        name="training-unsubscribe", description="Stop this channel's updates for a training"
    )
    @app_commands.guild_only()
    @app_commands.default_permissions(manage_channels=True)
    @TRAINING_ID
    @AUTOCOMPLETE_ID
    async def training_unsubscribe(self, interaction: Interaction, training_id: str) -> None:
        """Remove this channel's subscription."""
        try:
            training_id = validate_training_id(training_id)
        except SdApiError as exc:
            await reply_error(interaction, render.api_error_text(exc))
            return
        sub = await self.bot.store.subscriptions.find(
            SubscriptionKind.CHANNEL,
            training_id,
            channel_id=interaction.channel_id,
            user_id=interaction.user.id,
        )
        if sub is None:
            await reply_error(interaction, replies.not_following_text(training_id))
            return
        if sub.user_id != interaction.user.id and not interaction.permissions.manage_channels:
            await reply_error(interaction, replies.CANNOT_UNSUBSCRIBE_TEXT)
            return
        await self.bot.store.subscriptions.remove(sub.id)
        await reply(interaction, replies.unsubscribed_text(training_id))

    @app_commands.command(
        name="training-notify",
        description="Get a DM when a training is ready, or if it fails (off: stop it)",
    )
    @TRAINING_ID
    @API_OPTION
    @API_CHOICES
    @app_commands.describe(off="True to turn this DM alert off")
    @AUTOCOMPLETE_ID
    async def training_notify(
        self, interaction: Interaction, training_id: str, api: str = AUTO, off: bool = False
    ) -> None:
        """Create (or with ``off``, remove) a DM alert for the user."""
        if off:
            await self._alert_off(interaction, training_id)
            return
        fetched = await fetch_status(self.bot, interaction, training_id, _api(api), ephemeral=True)
        if fetched is None:
            return
        if fetched.status.terminal:
            embed = render.status_embed(fetched.training_id, fetched.status, datetime.now(UTC))
            text = replies.ended_alert_text(fetched.training_id, render.outcome_of(fetched.status))
            await reply(interaction, text, embed=embed, ephemeral=True)
            return
        try:
            already = await follow(
                self.bot,
                interaction,
                SubscriptionKind.DM,
                fetched,
                limit=self.bot.settings.MAX_DM_ALERTS_PER_USER,
            )
        except LimitReached as exc:
            await reply_error(interaction, replies.dm_limit_text(exc.limit))
            return
        await reply(
            interaction, replies.alert_text(fetched.training_id, already=already), ephemeral=True
        )

    async def _alert_off(self, interaction: Interaction, training_id: str) -> None:
        try:
            training_id = validate_training_id(training_id)
        except SdApiError as exc:
            await reply_error(interaction, render.api_error_text(exc))
            return
        sub = await self.bot.store.subscriptions.find(
            SubscriptionKind.DM, training_id, channel_id=None, user_id=interaction.user.id
        )
        if sub is not None:
            await self.bot.store.subscriptions.remove(sub.id)
        text = replies.alert_off_text(training_id, found=sub is not None)
        await reply(interaction, text, ephemeral=True)

    @app_commands.command(
        name="training-list", description="This server's subscriptions and your DM alerts"
    )
    @app_commands.describe(
        show_finished=f"Also those that finished more than {FINISHED_SHOWN_HOURS} hours ago",
        page="Which page, when the list is long",
    )
    async def training_list(
        self,
        interaction: Interaction,
        show_finished: bool = False,
        page: app_commands.Range[int, 1, 1000] = 1,
    ) -> None:
        """List subscriptions (this server) and the user's DM alerts, privately, in pages."""
        embed, view = await list_page(self.bot, interaction, page, show_finished)
        await reply(interaction, embed=embed, ephemeral=True, view=view)


def status_page(
    interaction: discord.Interaction[TunewatchBot], fetched: Fetched
) -> tuple[discord.Embed, discord.ui.View]:
    """The /training-status answer: the status embed and its buttons (Refresh shows it again)."""
    embed = render.status_embed(fetched.training_id, fetched.status, datetime.now(UTC))
    view = components.status_buttons(
        fetched.training_id, fetched.status.api, in_guild=interaction.guild_id is not None
    )
    return embed, view


async def list_page(
    bot: TunewatchBot, interaction: discord.Interaction[TunewatchBot], page: int, show: bool
) -> tuple[discord.Embed, discord.ui.View | None]:
    """One page of /training-list for this member, with its page buttons."""
    subscriptions = bot.store.subscriptions
    since = None
    if not show:
        since = (datetime.now(UTC) - timedelta(hours=FINISHED_SHOWN_HOURS)).timestamp()
    server = None
    if interaction.guild_id is not None:
        server = await subscriptions.of_guild(interaction.guild_id, finished_since=since)
    alerts = await subscriptions.alerts_of(interaction.user.id, finished_since=since)
    hidden = 0
    if since is not None:
        hidden = await subscriptions.count_finished_before(
            guild_id=interaction.guild_id, user_id=interaction.user.id, before=since
        )
    listing = render.Listing(server=server, alerts=alerts, hidden=hidden, show_finished=show)
    embed, shown = render.list_embed(listing, page)
    return embed, components.list_buttons(shown, render.list_pages(listing), show)


async def setup(bot: TunewatchBot) -> None:
    """Extension entry point."""
    await bot.add_cog(TrainingCog(bot))
