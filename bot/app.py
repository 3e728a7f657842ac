"""The Bot: owns the one aiohttp session, the store, the API client, tracker and deliverer."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from typing import Any, TypedDict

import aiohttp
import discord
import yarl
from discord import app_commands
from discord.ext import commands

from bot.config import Settings
from bot.keys import KeyRing
from bot.lookups import StatusLookups
from bot.notifier import GLOBAL_SENDS_PER_SECOND, DiscordNotifier
from bot.render import error_embed
from bot.sdapi.client import SdApiClient
from bot.store import Store
from bot.tracking.delivery import Deliverer
from bot.tracking.outcome import Rules
from bot.tracking.policy import PollPolicy
from bot.tracking.tracker import Tracker
from bot.web import HttpLimits, OpsDeps, OpsServer

log = logging.getLogger(__name__)

EXTENSIONS = ("cogs.training", "cogs.buttons", "cogs.keys", "cogs.ops")
# Closing the gateway waits for Discord's answer to the close frame: bounded, so a stop is quick
# on a dead network too.
DISCORD_CLOSE_SECONDS = 2.0
# How often the database file is checked for being deleted or replaced under the bot.
DATABASE_CHECK_SECONDS = 5.0


def point_discord_at(settings: Settings) -> None:
    """Send discord.py's REST and gateway traffic where the settings say (proxies, tests)."""
    discord.http.Route.BASE = settings.DISCORD_API_BASE
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.DISCORD_GATEWAY_URL)


def shard_options(settings: Settings) -> dict[str, Any]:
    """discord.py's sharding options for SHARD_COUNT and SHARD_IDS (none: one connection)."""
    if settings.SHARD_COUNT is None:
        return {}
    ids = settings.shard_ids
    if ids is not None and len(ids) == 1:
        return {"shard_id": ids[0], "shard_count": settings.SHARD_COUNT}
    return {"shard_ids": ids, "shard_count": settings.SHARD_COUNT}


class DeliveryTiming(TypedDict, total=False):
    """The Deliverer's lease and idle settings."""

    lease_seconds: float
    idle_seconds: float


# The longest a dead instance's delivery leases hold its subscriptions' messages back.
LEASE_SECONDS = 15.0


def delivery_timing(settings: Settings, *, shared: bool) -> DeliveryTiming:
    """How long a delivery lease lasts and how long the deliverer sleeps with nothing due.

    On a shared database another instance may write deliveries, or die holding leases: both
    are bounded by the poll interval and by LEASE_SECONDS (a lease is renewed every third of
    it while its messages go out), so a dead instance's messages go out again within the
    shorter of about two intervals and half a minute.
    """
    if not shared:
        return {}
    interval = settings.POLL_INTERVAL_SECONDS
    return {
        "lease_seconds": min(LEASE_SECONDS, max(2.0, interval)),
        "idle_seconds": min(LEASE_SECONDS, interval),
    }


def make_bot(settings: Settings, **options: Any) -> TunewatchBot:
    """The bot these settings ask for: one gateway connection, or several shards."""
    ids = settings.shard_ids
    if settings.SHARD_COUNT is not None and (ids is None or len(ids) > 1):
        return ShardedTunewatchBot(settings, **options)
    return TunewatchBot(settings, **options)


class TunewatchTree(app_commands.CommandTree["TunewatchBot"]):
    """Handles app-command errors in one place: log it, tell the user one sentence."""

    async def on_error(
        self, interaction: discord.Interaction[TunewatchBot], error: app_commands.AppCommandError
    ) -> None:
        if interaction.client.is_closed():
            # The bot is stopping and its connection to Discord is gone: nobody to tell.
            log.info(
                "command /%s interrupted: the bot is stopping",
                interaction.command.name if interaction.command else "?",
            )
            return
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


def quiet_voice_warnings() -> None:
    """tunewatch never joins a voice channel: discord.py's warnings about the missing voice
    libraries (PyNaCl, davey) at every start are noise. They are flags discord.py itself clears
    after warning once."""
    discord.VoiceClient.warn_nacl = False
    discord.VoiceClient.warn_dave = False


class TunewatchBot(commands.Bot):
    """The bot process: discord.py client plus tunewatch's engine."""

    store: Store
    sdapi: SdApiClient
    keys: KeyRing
    lookups: StatusLookups
    tracker: Tracker
    deliverer: Deliverer | None

    def __init__(self, settings: Settings, **options: Any) -> None:
        point_discord_at(settings)
        quiet_voice_warnings()
        intents = discord.Intents.none()
        intents.guilds = True
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents,
            tree_cls=TunewatchTree,
            help_command=None,
            allowed_mentions=discord.AllowedMentions.none(),
            **shard_options(settings),
            **options,
        )
        self.settings = settings
        self.session: aiohttp.ClientSession | None = None
        self.deliverer = None
        self.ops_server: OpsServer | None = None
        self._closing: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self.database_problem: str | None = None

    async def setup_hook(self) -> None:
        """Open the store and session, build and start the engine, load the cogs, sync."""
        settings = self.settings
        self.session = aiohttp.ClientSession(
            headers={"User-Agent": "tunewatch (+https://github.com/tunewatch)"}
        )
        self.store = await Store.open(settings.database)
        self.sdapi = SdApiClient(
            self.session,
            settings.SD_API_BASE_URL,
            v6_base_url=settings.SD_API_V6_BASE_URL,
            timeout=settings.API_TIMEOUT_SECONDS,
            max_concurrency=settings.API_MAX_CONCURRENCY,
            max_concurrency_per_key=settings.API_MAX_CONCURRENCY_PER_KEY,
            max_attempts=settings.API_MAX_ATTEMPTS,
        )
        self.lookups = StatusLookups(self.sdapi)
        self.keys = KeyRing(settings, self.store)
        self.tracker = Tracker(
            self.store,
            self.sdapi,
            self.keys,
            Rules(
                interval=settings.POLL_INTERVAL_SECONDS,
                max_interval=settings.poll_max_seconds,
                policy=PollPolicy(settings.POLL_POLICY),
                max_backoff=settings.MAX_BACKOFF_SECONDS,
                not_found_confirmations=settings.NOT_FOUND_CONFIRMATIONS,
                not_found_window=settings.NOT_FOUND_WINDOW_SECONDS,
                steps_per_poll=settings.STEP_MESSAGES_PER_POLL,
                steps_per_training=settings.STEP_MESSAGES_PER_TRAINING,
            ),
            on_outbox=self._outbox_written,
        )
        self.deliverer = Deliverer(
            self.store,
            # Discord's global limit is the bot's, whichever process sends: each instance paces
            # its sends to its own share of it (its shards' part), so together they stay below.
            DiscordNotifier(
                self, self.store, rate=GLOBAL_SENDS_PER_SECOND * settings.gateway_share
            ),
            instance_id=await self.store.db.instance_id(),
            max_backoff=settings.MAX_BACKOFF_SECONDS,
            share=settings.gateway_share,
            **delivery_timing(settings, shared=self.store.shared),
        )
        for extension in EXTENSIONS:
            await self.load_extension(extension)
        await self.sync_commands()
        self.deliverer.start()
        self.tracker.start()
        self._watchdog = asyncio.create_task(self._watch_database(), name="database-watch")
        if settings.HTTP_PORT is not None:
            secret = settings.WEBHOOK_SECRET
            self.ops_server = OpsServer(
                OpsDeps(
                    store=self.store,
                    tracker=self.tracker,
                    gateway_connected=self.gateway_connected,
                    webhook_secret=None if secret is None else secret.get_secret_value(),
                    engine_problems=self.engine_problems,
                ),
                limits=HttpLimits.from_settings(settings),
            )
            await self.ops_server.start(settings.HTTP_HOST, settings.HTTP_PORT)

    def engine_problems(self) -> list[str]:
        """What keeps tunewatch from recording or delivering now (for /healthz)."""
        problems = []
        if self.database_problem is not None:
            problems.append(self.database_problem)
        for part in (getattr(self, "tracker", None), self.deliverer):
            if part is not None and part.problem is not None:
                problems.append(part.problem)
        return problems

    async def _watch_database(self) -> None:
        """Stop the engine if the database file is deleted or replaced under it: writes to a
        deleted file go on silently and are lost at the next start."""
        while self.database_problem is None:
            await asyncio.sleep(DATABASE_CHECK_SECONDS)
            problem = self.store.db.file_problem()
            if problem is not None:
                self.database_problem = problem
                log.error(
                    "%s: polling and delivering are stopped so that nothing more is lost; "
                    "put the file back and restart tunewatch",
                    problem,
                )
                await self.stop_engine()

    def gateway_connected(self) -> bool:
        """True while the gateway session is up."""
        return self.is_ready() and not self.is_closed() and self.ws is not None and self.ws.open

    def _outbox_written(self) -> None:
        if self.deliverer is not None:
            self.deliverer.wake()

    async def stop_engine(self) -> None:
        """Stop polling and delivering."""
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None and watchdog is not asyncio.current_task():
            watchdog.cancel()
            await asyncio.gather(watchdog, return_exceptions=True)
        if hasattr(self, "tracker"):  # close() may come before setup_hook built it
            await self.tracker.stop()
        if self.deliverer is not None:
            await self.deliverer.stop()

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
        if await self.store.db.get_meta("commands_hash") == fingerprint:
            log.info("command definitions unchanged since the last sync; not syncing")
            return
        await self.tree.sync()
        await self.store.db.set_meta("commands_hash", fingerprint)
        log.info("commands synced globally")

    async def close(self) -> None:
        """Stop the HTTP server and the engine, then discord.py, then release the session and
        the database.

        Every step runs even when an earlier one fails, and Discord's part is bounded (a
        websocket close handshake can wait on a dead network): the database and the HTTP
        session are always closed, or aiosqlite's worker thread would keep the process alive.
        Calls after the first wait for the same close; it goes on even if a caller is cancelled.
        """
        if self._closing is None:
            close_discord = super().close

            async def close_all() -> None:
                try:
                    if self.ops_server is not None:
                        await self.ops_server.stop()
                    await self.stop_engine()
                except Exception:
                    log.exception("stopping the engine failed; closing the rest")
                try:
                    async with asyncio.timeout(DISCORD_CLOSE_SECONDS):
                        await close_discord()
                except TimeoutError:
                    log.warning(
                        "Discord's connection did not close within %gs", DISCORD_CLOSE_SECONDS
                    )
                except Exception:
                    log.exception("closing the Discord connection failed")
                finally:
                    try:
                        if self.session is not None:
                            await self.session.close()
                    finally:
                        if hasattr(self, "store"):
                            await self.store.close()

            self._closing = asyncio.get_running_loop().create_task(close_all(), name="bot-close")
        await asyncio.shield(self._closing)


class ShardedTunewatchBot(TunewatchBot, commands.AutoShardedBot):
    """The bot holding several shards of the gateway in one process (SHARD_IDS with more than
    one shard, or SHARD_COUNT alone: all of them)."""

    def gateway_connected(self) -> bool:
        """True while every shard's session is up."""
        return (
            self.is_ready()
            and not self.is_closed()
            and bool(self.shards)
            and all(not shard.is_closed() for shard in self.shards.values())
        )
