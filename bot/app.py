"""The Bot: owns the one aiohttp session, the store, the API client, tracker and deliverer."""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

import aiohttp
import discord
import yarl
from discord import app_commands
from discord.ext import commands

from bot.config import Settings
from bot.keys import KeyRing
from bot.render import error_embed
from bot.sdapi.client import SdApiClient
from bot.store import Store
from bot.tracking.delivery import Deliverer, Notifier
from bot.tracking.tracker import Tracker
from bot.web import HttpLimits, OpsDeps, OpsServer

log = logging.getLogger(__name__)

EXTENSIONS = ("cogs.training", "cogs.keys", "cogs.ops")


def point_discord_at(settings: Settings) -> None:
    """Send discord.py's REST and gateway traffic where the settings say (proxies, tests)."""
    discord.http.Route.BASE = settings.DISCORD_API_BASE
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.DISCORD_GATEWAY_URL)


class TunewatchTree(app_commands.CommandTree["TunewatchBot"]):
    """Handles app-command errors in one place: log it, tell the user one sentence."""

    async def on_error(
        self, interaction: discord.Interaction[TunewatchBot], error: app_commands.AppCommandError
    ) -> None:
        if isinstance(error, app_commands.MissingPermissions | app_commands.NoPrivateMessage):
            message = str(error)
        elif isinstance(error, app_commands.CheckFailure):
            message = "You cannot use this command here."
        else:
            name = interaction.command.name if interaction.command else "?"
            log.error("command /%s failed", name, exc_info=error)
            message = "Something went wrong on tunewatch's side; it was logged. Try again later."
        try:
            if interaction.response.is_done():
                await interaction.followup.send(embed=error_embed(message), ephemeral=True)
            else:
                await interaction.response.send_message(embed=error_embed(message), ephemeral=True)
        except discord.HTTPException:
            log.warning("could not tell the user about the error (interaction expired?)")


class TunewatchBot(commands.Bot):
    """The bot process: discord.py client plus tunewatch's engine."""

    store: Store
    sdapi: SdApiClient
    keys: KeyRing
    tracker: Tracker
    deliverer: Deliverer | None

    def __init__(self, settings: Settings, **options: Any) -> None:
        point_discord_at(settings)
        intents = discord.Intents.none()
        intents.guilds = True
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents,
            tree_cls=TunewatchTree,
            help_command=None,
            allowed_mentions=discord.AllowedMentions.none(),
            **options,
        )
        self.settings = settings
        self.session: aiohttp.ClientSession | None = None
        self.deliverer = None
        self.ops_server: OpsServer | None = None

    async def setup_hook(self) -> None:
        """Open the store and session, build the engine, load the cog, sync commands."""
        settings = self.settings
        self.session = aiohttp.ClientSession(
            headers={"User-Agent": "tunewatch (+https://github.com/tunewatch)"}
        )
        self.store = await Store.open(settings.DATABASE_PATH)
        self.sdapi = SdApiClient(
            self.session,
            settings.SD_API_BASE_URL,
            timeout=settings.API_TIMEOUT_SECONDS,
            max_concurrency=settings.API_MAX_CONCURRENCY,
            max_concurrency_per_key=settings.API_MAX_CONCURRENCY_PER_KEY,
            max_attempts=settings.API_MAX_ATTEMPTS,
        )
        self.keys = KeyRing(settings, self.store, on_forget=self.sdapi.forget_keys)
        self.tracker = Tracker(
            self.store,
            self.sdapi,
            self.keys,
            interval=settings.POLL_INTERVAL_SECONDS,
            max_backoff=settings.MAX_BACKOFF_SECONDS,
            not_found_confirmations=settings.NOT_FOUND_CONFIRMATIONS,
            not_found_window=settings.NOT_FOUND_WINDOW_SECONDS,
            workers=settings.API_MAX_CONCURRENCY,
            per_key=settings.API_MAX_CONCURRENCY_PER_KEY,
            on_outbox=self._outbox_written,
        )
        for extension in EXTENSIONS:
            await self.load_extension(extension)
        await self.sync_commands()
        if settings.HTTP_PORT is not None:
            secret = settings.WEBHOOK_SECRET
            self.ops_server = OpsServer(
                OpsDeps(
                    store=self.store,
                    tracker=self.tracker,
                    gateway_connected=self.gateway_connected,
                    webhook_secret=None if secret is None else secret.get_secret_value(),
                ),
                limits=HttpLimits.from_settings(settings),
            )
            await self.ops_server.start(settings.HTTP_HOST, settings.HTTP_PORT)

    def gateway_connected(self) -> bool:
        """True while the gateway session is up."""
        return self.is_ready() and not self.is_closed() and self.ws is not None and self.ws.open

    def _outbox_written(self) -> None:
        if self.deliverer is not None:
            self.deliverer.wake()

    async def start_engine(self, notifier: Notifier) -> None:
        """Start polling and delivering (called by the cog when it loads)."""
        self.deliverer = Deliverer(
            self.store,
            notifier,
            instance_id=await self.store.instance_id(),
            max_backoff=self.settings.MAX_BACKOFF_SECONDS,
        )
        self.deliverer.start()
        self.tracker.start()

    async def stop_engine(self) -> None:
        """Stop polling and delivering."""
        if hasattr(self, "tracker"):  # close() may come before setup_hook built it
            await self.tracker.stop()
        if self.deliverer is not None:
            await self.deliverer.stop()
            self.deliverer = None

    def command_fingerprint(self, guild: discord.abc.Snowflake | None = None) -> str:
        """A hash of the command definitions as Discord would receive them."""
        payload = [cmd.to_dict(self.tree) for cmd in self.tree.get_commands(guild=guild)]
        blob = json.dumps(payload, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()

    async def sync_commands(self) -> None:
        """Guild sync while developing; global sync only when the definitions changed.

        Discord limits command creates per day, so a restart loop must not sync every time.
        """
        guild_id = self.settings.DISCORD_GUILD_ID
        if guild_id is not None:
            guild = discord.Object(id=guild_id)
            self.tree.copy_global_to(guild=guild)
            await self.tree.sync(guild=guild)
            log.info("commands synced to guild %s", guild_id)
            return
        fingerprint = self.command_fingerprint()
        if await self.store.get_meta("commands_hash") == fingerprint:
            log.info("command definitions unchanged since the last sync; not syncing")
            return
        await self.tree.sync()
        await self.store.set_meta("commands_hash", fingerprint)
        log.info("commands synced globally")

    async def close(self) -> None:
        """Stop the engine, then discord.py, then release the session and the database."""
        try:
            if self.ops_server is not None:
                await self.ops_server.stop()
            await self.stop_engine()
        finally:
            await super().close()
            if self.session is not None:
                await self.session.close()
            if hasattr(self, "store"):
                await self.store.close()
