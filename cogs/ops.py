"""Operator commands: /training-webhook."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot.app import TunewatchBot
from bot.interactions import reply, reply_error


class OpsCog(commands.Cog):
    """Commands for the people who run trainings and the bot."""

    def __init__(self, bot: TunewatchBot) -> None:
        self.bot = bot

    @app_commands.command(
        name="training-webhook",
        description="The webhook URL to pass when creating trainings, for instant updates",
    )
    @app_commands.default_permissions(manage_guild=True)
    async def training_webhook(self, interaction: discord.Interaction[TunewatchBot]) -> None:
        """Show the webhook URL, privately, or say plainly what is missing."""
        settings = self.bot.settings
        missing = [
            name
            for name, value in (
                ("HTTP_PORT", settings.HTTP_PORT),
                ("PUBLIC_URL", settings.PUBLIC_URL),
                ("WEBHOOK_SECRET", settings.WEBHOOK_SECRET),
            )
            if value is None
        ]
        if missing:
            await reply_error(
                interaction,
                "Webhooks are not set up on this bot: its operator must set "
                + ", ".join(missing)
                + " (see the README). Updates still arrive by polling.",
            )
            return
        assert settings.WEBHOOK_SECRET is not None  # noqa: S101 - checked just above
        url = f"{settings.PUBLIC_URL}/webhooks/sdapi/{settings.WEBHOOK_SECRET.get_secret_value()}"
        await reply(
            interaction,
            "Pass this as `webhook` when you create a training; tunewatch then checks the "
            f"training as soon as the API calls it (polling stays on as a safety net):\n`{url}`\n"
            "Keep it private: anyone with it can make tunewatch check trainings early.",
            ephemeral=True,
        )


async def setup(bot: TunewatchBot) -> None:
    """Extension entry point."""
    await bot.add_cog(OpsCog(bot))
