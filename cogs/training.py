"""The training slash commands: status, subscribe, unsubscribe, notify, list."""

from __future__ import annotations

from datetime import UTC, datetime

import discord
from discord import app_commands
from discord.ext import commands

from bot import render
from bot.app import TunewatchBot
from bot.interactions import answer_soon, reply, reply_error
from bot.keys import NoKeyAvailable
from bot.lookups import SlowDown
from bot.sdapi.client import validate_training_id
from bot.sdapi.errors import SdApiError
from bot.sdapi.status import Api, TrainingStatus, api_for
from bot.store import LimitReached, SubscriptionKind, SubscriptionStatus

# An interaction's follow-up stays valid for 15 minutes, but a person waits seconds, not minutes.
API_BUDGET_SECONDS = 12.0
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


class TrainingCog(commands.Cog):
    """/training-status, -subscribe, -unsubscribe, -notify, -list."""

    def __init__(self, bot: TunewatchBot) -> None:
        self.bot = bot

    async def _fetch(
        self, interaction: Interaction, raw_id: str, api: str, *, ephemeral: bool = False
    ) -> tuple[str, str, TrainingStatus] | None:
        """Validate the id, pick the key, ask the API; on any error, answer and return None."""
        try:
            chosen = api_for(raw_id, None if api == AUTO else Api(api))
            training_id = validate_training_id(raw_id, chosen)
            key_ref, key = await self.bot.keys.key_for_user(interaction.user.id)
            status = await answer_soon(
                interaction,
                self.bot.lookups.status(
                    training_id,
                    key_ref,
                    key,
                    chosen,
                    member_id=interaction.user.id,
                    budget=API_BUDGET_SECONDS,
                ),
                ephemeral=ephemeral,
            )
        except SdApiError as exc:
            await reply_error(interaction, render.api_error_text(exc))
            return None
        except NoKeyAvailable:
            await reply_error(interaction, render.NO_KEY_TEXT)
            return None
        except SlowDown as exc:
            await reply_error(interaction, render.slow_down_text(exc.retry_after))
            return None
        return training_id, key_ref, status

    async def _follow(
        self,
        interaction: Interaction,
        kind: SubscriptionKind,
        training_id: str,
        key_ref: str,
        status: TrainingStatus,
        limit: int,
    ) -> bool:
        """Record what the API just said (steps so far are the baseline), then subscribe.

        Returns whether the subscription already existed; raises LimitReached.
        """
        await self.bot.tracker.ingest(training_id, key_ref, status)
        _, already = await self.bot.store.subscriptions.subscribe(
            kind=kind,
            guild_id=interaction.guild_id,
            channel_id=interaction.channel_id if kind is SubscriptionKind.CHANNEL else None,
            user_id=interaction.user.id,
            training_id=training_id,
            key_ref=key_ref,
            limit=limit,
            now=datetime.now(UTC).timestamp(),
        )
        self.bot.tracker.wake()
        return already

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
        """Answer with the training's current status."""
        fetched = await self._fetch(interaction, training_id, api)
        if fetched is None:
            return
        training_id, _, status = fetched
        embed = render.status_embed(training_id, status, datetime.now(UTC))
        await reply(interaction, embed=embed)

    @app_commands.command(
        name="training-subscribe",
        description="Post a message in this channel as each step of a training completes",
    )
    @app_commands.guild_only()
    @app_commands.default_permissions(manage_channels=True)
    @TRAINING_ID
    @API_OPTION
    @API_CHOICES
    @AUTOCOMPLETE_ID
    async def training_subscribe(
        self, interaction: Interaction, training_id: str, api: str = AUTO
    ) -> None:
        """Subscribe the channel the command is used in."""
        perms = interaction.app_permissions
        can_post = (
            perms.view_channel
            and perms.embed_links
            and (
                perms.send_messages_in_threads
                if isinstance(interaction.channel, discord.Thread)
                else perms.send_messages
            )
        )
        if not can_post:
            await reply_error(
                interaction,
                "tunewatch cannot post embeds in this channel: give it View Channel, Send "
                "Messages and Embed Links here, then subscribe again.",
            )
            return
        fetched = await self._fetch(interaction, training_id, api)
        if fetched is None:
            return
        training_id, key_ref, status = fetched
        embed = render.status_embed(training_id, status, datetime.now(UTC))
        if status.terminal:
            outcome = "is ready" if status.finished else "has failed"
            await reply(
                interaction,
                f"Training `{training_id}` {outcome} already; there is nothing to follow.",
                embed=embed,
            )
            return
        try:
            already = await self._follow(
                interaction,
                SubscriptionKind.CHANNEL,
                training_id,
                key_ref,
                status,
                self.bot.settings.MAX_SUBSCRIPTIONS_PER_GUILD,
            )
        except LimitReached as exc:
            await reply_error(
                interaction,
                f"This server already follows {exc.limit} trainings, the most allowed; "
                "unsubscribe from one first.",
            )
            return
        if already:
            text = f"This channel already follows `{training_id}`; nothing changed."
        else:
            text = (
                f"Subscribed this channel to `{training_id}`: a message will be posted here as "
                "each step completes, and a last one when the model is ready or the training "
                "fails. Current status:"
            )
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
            await reply_error(interaction, f"This channel does not follow `{training_id}`.")
            return
        perms = interaction.permissions
        if sub.user_id != interaction.user.id and not perms.manage_channels:
            await reply_error(
                interaction,
                "Only the person who subscribed, or a member with Manage Channels, can remove "
                "this subscription.",
            )
            return
        await self.bot.store.subscriptions.remove(sub.id)
        await reply(interaction, f"This channel no longer follows `{training_id}`.")

    @app_commands.command(
        name="training-notify", description="Get a DM when a training is ready, or if it fails"
    )
    @TRAINING_ID
    @API_OPTION
    @API_CHOICES
    @AUTOCOMPLETE_ID
    async def training_notify(
        self, interaction: Interaction, training_id: str, api: str = AUTO
    ) -> None:
        """Create a DM alert for the user."""
        fetched = await self._fetch(interaction, training_id, api, ephemeral=True)
        if fetched is None:
            return
        training_id, key_ref, status = fetched
        if status.terminal:
            outcome = "is ready" if status.finished else "has already failed"
            embed = render.status_embed(training_id, status, datetime.now(UTC))
            await reply(
                interaction, f"Training `{training_id}` {outcome}.", embed=embed, ephemeral=True
            )
            return
        try:
            already = await self._follow(
                interaction,
                SubscriptionKind.DM,
                training_id,
                key_ref,
                status,
                self.bot.settings.MAX_DM_ALERTS_PER_USER,
            )
        except LimitReached as exc:
            await reply_error(
                interaction,
                f"You already have {exc.limit} DM alerts, the most allowed; wait for one to "
                "finish first.",
            )
            return
        text = (
            f"You already get a DM when `{training_id}` is ready or fails."
            if already
            else f"I will DM you when `{training_id}` is ready, or if it fails. Keep your DMs "
            "open to this server's members so the message can reach you."
        )
        await reply(interaction, text, ephemeral=True)

    @app_commands.command(
        name="training-list", description="This server's subscriptions and your DM alerts"
    )
    async def training_list(self, interaction: Interaction) -> None:
        """List subscriptions (this server) and the user's DM alerts, privately."""
        subscriptions = self.bot.store.subscriptions
        embed = discord.Embed(title="tunewatch subscriptions", colour=render.COLOUR_RUNNING)
        if interaction.guild_id is not None:
            subs = await subscriptions.of_guild(interaction.guild_id)
            active = sum(s.status is SubscriptionStatus.ACTIVE for s in subs)
            embed.description = f"**This server** ({active} active)\n" + render.fit_lines(
                [render.subscription_line(s) for s in subs],
                "No subscriptions.",
                render.DESCRIPTION_LIMIT - 40,
            )
        alerts = await subscriptions.alerts_of(interaction.user.id)
        embed.add_field(
            name="Your DM alerts",
            value=render.fit_lines([render.subscription_line(a) for a in alerts], "No DM alerts."),
            inline=False,
        )
        await reply(interaction, embed=embed, ephemeral=True)


async def setup(bot: TunewatchBot) -> None:
    """Extension entry point."""
    await bot.add_cog(TrainingCog(bot))
