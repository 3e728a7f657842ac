"""/training-key set|clear|show: each person's own Stable Diffusion API key, kept private."""

from __future__ import annotations

import logging

import discord
from discord import app_commands
from discord.ext import commands

from bot import render
from bot.app import TunewatchBot
from bot.interactions import answer_soon, reply, reply_error
from bot.keys import UserKeysDisabled
from bot.render import api_error_text
from bot.sdapi.client import KeyCheck
from bot.sdapi.errors import InvalidApiKey

log = logging.getLogger(__name__)

Interaction = discord.Interaction[TunewatchBot]

# Checking a key must leave time to answer the modal; answer_soon defers after 1.5 s.
CHECK_BUDGET_SECONDS = 12.0
# An unanswered form is forgotten after this long (discord.py keeps open modals in memory).
MODAL_TIMEOUT_SECONDS = 900.0
KEY_MIN_LENGTH = 8
KEY_MAX_LENGTH = 200


class ApiKeyModal(discord.ui.Modal, title="Your Stable Diffusion API key"):
    """The private form a key is typed into: it never travels as a visible command option."""

    def __init__(self, bot: TunewatchBot, owner_id: int) -> None:
        # The default random custom_id keeps two people's open forms apart.
        super().__init__(timeout=MODAL_TIMEOUT_SECONDS)
        self.bot = bot
        self.owner_id = owner_id
        # Discord has no password field: a short single-line input, said plainly to be private.
        self.key_input: discord.ui.TextInput[ApiKeyModal] = discord.ui.TextInput(
            custom_id="api_key",
            style=discord.TextStyle.short,
            placeholder="Paste the API key from your dashboard",
            min_length=KEY_MIN_LENGTH,
            max_length=KEY_MAX_LENGTH,
            required=True,
        )
        self.add_item(
            discord.ui.Label(
                text="API key (only you see this form)",
                description="Checked with the API, then stored encrypted. Only its last 4 "
                "characters are ever shown.",
                component=self.key_input,
            )
        )

    async def interaction_check(self, interaction: Interaction) -> bool:  # type: ignore[override]
        """Only the person who opened the form can submit it."""
        return interaction.user.id == self.owner_id

    async def on_submit(self, interaction: Interaction) -> None:  # type: ignore[override]
        """Check the key with the API, then store it encrypted."""
        key = self.key_input.value.strip()
        if len(key) < KEY_MIN_LENGTH or any(c.isspace() for c in key):
            await reply_error(
                interaction,
                "That does not look like an API key (it has spaces, or is too short); nothing "
                "was saved. Copy the key from your Stable Diffusion API dashboard.",
            )
            return
        try:
            checked = await answer_soon(interaction, self._check_and_save(key), ephemeral=True)
        except InvalidApiKey as exc:
            # The API's reason; the client has removed the key if the body echoed it.
            await reply_error(interaction, f"Your key was not saved. {api_error_text(exc)}")
            return
        except UserKeysDisabled:
            await reply_error(interaction, render.USER_KEYS_DISABLED_TEXT)
            return
        text = (
            f"Saved your API key ending in `{key[-4:]}`. Your /training-status, "
            "/training-subscribe and /training-notify now use it; `/training-key clear` "
            "removes it."
        )
        if checked is KeyCheck.UNVERIFIED:
            text += (
                " The API's answer did not prove it valid or invalid, so it is not verified "
                "yet: if it is wrong, your requests will say so."
            )
        await reply(interaction, text, ephemeral=True)

    async def _check_and_save(self, key: str) -> KeyCheck:
        """Refuse the key only when the API says it is invalid; otherwise save it."""
        checked = await self.bot.sdapi.check_key(key, budget=CHECK_BUDGET_SECONDS)
        await self.bot.keys.set_user_key(self.owner_id, key)
        return checked

    async def on_error(self, interaction: Interaction, error: Exception) -> None:  # type: ignore[override]
        """Log (the exception never holds the key) and tell the user one sentence."""
        log.error("saving an API key failed", exc_info=error)
        try:
            await reply_error(
                interaction,
                "Something went wrong on tunewatch's side; your key was not saved. Try again "
                "later.",
            )
        except discord.HTTPException:
            log.warning("could not tell the user about the error (interaction expired?)")


class KeysCog(commands.Cog):
    """/training-key set, clear, show."""

    training_key = app_commands.Group(
        name="training-key", description="Use your own Stable Diffusion API key (private)"
    )

    def __init__(self, bot: TunewatchBot) -> None:
        self.bot = bot

    @training_key.command(name="set", description="Save your own API key (opens a private form)")
    async def key_set(self, interaction: Interaction) -> None:
        """Open the form; the key never appears as a command option."""
        if not self.bot.keys.user_keys_enabled:
            await reply_error(interaction, self._disabled_message())
            return
        await interaction.response.send_modal(ApiKeyModal(self.bot, interaction.user.id))

    @training_key.command(name="show", description="Whether you have an API key set")
    async def key_show(self, interaction: Interaction) -> None:
        """Say whether a key is set, showing only its last 4 characters."""
        keys = self.bot.keys
        if not keys.user_keys_enabled:
            await reply_error(interaction, self._disabled_message())
            return
        hint = await keys.user_key_hint(interaction.user.id)
        if hint is not None:
            text = (
                f"You have an API key set, ending in `{hint}`. Your trainings are checked with "
                "it; `/training-key clear` removes it."
            )
        elif await keys.has_stored_key(interaction.user.id):
            text = (
                "Your stored API key can no longer be read (the bot's secret changed). Set it "
                "again with `/training-key set`."
            )
        elif keys.has_operator_key:
            text = (
                "You have no API key set: your requests use the bot operator's key. Use "
                "`/training-key set` to use your own."
            )
        else:
            text = "You have no API key set. Use `/training-key set` to add yours."
        await reply(interaction, text, ephemeral=True)

    @training_key.command(name="clear", description="Remove your API key from tunewatch")
    async def key_clear(self, interaction: Interaction) -> None:
        """Delete the key; the subscriptions it polled pause with that reason."""
        # Allowed even when per-user keys are off, so anyone can delete what was stored.
        removed, paused = await self.bot.keys.clear_user_key(interaction.user.id)
        if not removed:
            await reply(interaction, "You had no API key stored; nothing changed.", ephemeral=True)
            return
        text = "Removed your API key."
        if paused:
            text += f" {paused} subscription(s) that used it are paused; /training-list shows them."
        await reply(interaction, text, ephemeral=True)

    def _disabled_message(self) -> str:
        message = render.USER_KEYS_DISABLED_TEXT
        if self.bot.keys.has_operator_key:
            return message + " Your requests use the operator's key."
        return message


async def setup(bot: TunewatchBot) -> None:
    """Extension entry point."""
    await bot.add_cog(KeysCog(bot))
