"""The optional HTTP server: API webhooks (a nudge to poll now), health and metrics."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from bot import metrics
from bot.burst_log import BurstLog, ServerLog
from bot.config import Settings
from bot.http_guard import GuardedListener, connection_cap, file_limit
from bot.render import api_error_plain
from bot.sdapi.client import validate_training_id
from bot.sdapi.errors import SdApiError
from bot.sdapi.status import parse_webhook
from bot.store import Store
from bot.tracking.tracker import Tracker

log = logging.getLogger(__name__)
# aiohttp's request handler logs through this one (malformed requests, failed handlers).
server_log = logging.getLogger(f"{__name__}.server")

MAX_WEBHOOK_BODY = 64 * 1024
# A training nudged this recently is not polled again for a repeated webhook.
POKE_DEBOUNCE_SECONDS = 2.0
# The scheduler wakes at least every few seconds; a tick older than this means it is stuck.
TICK_MAX_AGE_SECONDS = 60.0
# Every endpoint answers within a few seconds (/healthz gives the database 2 s).
SHUTDOWN_SECONDS = 5.0


@dataclass(frozen=True)
class HttpLimits:
    """How much of the process clients of the HTTP server may hold."""

    max_connections: int  # HTTP_MAX_CONNECTIONS
    read_timeout: float  # HTTP_READ_TIMEOUT_SECONDS: to send a whole request, header and body

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpLimits:
        """The limits the operator set (see .env.example)."""
        return cls(settings.HTTP_MAX_CONNECTIONS, settings.HTTP_READ_TIMEOUT_SECONDS)


# The defaults of bot/config.py, for an OpsServer built without settings.
DEFAULT_LIMITS = HttpLimits(max_connections=128, read_timeout=10.0)


@dataclass
class OpsDeps:
    """What the endpoints look at; plain callables so the server can be tested without a bot."""

    store: Store
    tracker: Tracker
    gateway_connected: Callable[[], bool]
    webhook_secret: str | None
    engine_problems: Callable[[], list[str]] = list
    """What stops the engine from working (a full disk, the database file deleted)."""


class OpsServer:
    """aiohttp.web on the bot's own event loop."""

    def __init__(
        self,
        deps: OpsDeps,
        *,
        clock: Callable[[], float] = time.time,
        limits: HttpLimits = DEFAULT_LIMITS,
    ) -> None:
        self._deps = deps
        self._clock = clock
        self._limits = limits
        self._runner: web.AppRunner | None = None
        self._guard: GuardedListener | None = None
        self._server_bursts = BurstLog(server_log)
        self._pokes: dict[str, float] = {}
        self.port: int | None = None

    @property
    def connections(self) -> int:
        """HTTP connections open now."""
        return 0 if self._guard is None else self._guard.connections

    def connection_states(self) -> dict[str, int]:
        """HTTP connections open now by where they stand (see bot/http_guard.py)."""
        return {} if self._guard is None else self._guard.states()

    @property
    def max_connections(self) -> int | None:
        """The cap in force (HTTP_MAX_CONNECTIONS, or less under a low file limit)."""
        return None if self._guard is None else self._guard.max_connections

    def make_app(self) -> web.Application:
        """The routes."""
        middlewares: list[Middleware] = [] if self._guard is None else [self._guard.middleware]
        app = web.Application(client_max_size=MAX_WEBHOOK_BODY, middlewares=middlewares)
        app.router.add_post("/webhooks/sdapi/{secret}", self._webhook)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        return app

    async def start(self, host: str, port: int) -> None:
        """Listen on host:port (port 0 picks a free one)."""
        limits = self._limits
        files = file_limit()
        cap = connection_cap(limits.max_connections, files)
        if cap < limits.max_connections:
            log.warning(
                "HTTP_MAX_CONNECTIONS=%d lowered to %d: this process may open %s files "
                "(RLIMIT_NOFILE, e.g. systemd's LimitNOFILE=) and keeps half for its own",
                limits.max_connections,
                cap,
                files,
            )
        # Not aiohttp's TCPSite: bot/http_guard.py says why. The guard accepts the connections
        # and aiohttp's request handler (runner.server) speaks HTTP on each of them.
        self._guard = GuardedListener(
            max_connections=cap, read_timeout=limits.read_timeout, max_body=MAX_WEBHOOK_BODY
        )
        self._runner = web.AppRunner(
            self.make_app(),
            access_log=None,
            logger=ServerLog(server_log, self._server_bursts, self._mask),
            # The bot's shutdown waits this long at most for requests being answered (aiohttp's
            # default is 60 s); connections waiting for a request are closed at once.
            shutdown_timeout=SHUTDOWN_SECONDS,
        )
        await self._runner.setup()
        server = self._runner.server
        if server is None:
            raise RuntimeError("aiohttp's runner made no server")
        self.port = await self._guard.start(server, host, port)
        log.info(
            "HTTP server listening on %s:%s (at most %d connections, %g s to send a request)",
            host,
            self.port,
            cap,
            limits.read_timeout,
        )

    async def stop(self) -> None:
        """Stop listening and close the connections."""
        if self._guard is not None:
            await self._guard.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._server_bursts.close()

    def _mask(self, text: str) -> str:
        secret = self._deps.webhook_secret
        return text.replace(secret, "<WEBHOOK_SECRET>") if secret else text

    # -- endpoints ---------------------------------------------------------------------------

    async def _webhook(self, request: web.Request) -> web.Response:
        secret = self._deps.webhook_secret
        given = request.match_info["secret"]
        if not secret or not hmac.compare_digest(given.encode(), secret.encode()):
            # Same answer as an unknown path: the secret is what makes the URL exist.
            raise web.HTTPNotFound
        if request.content_length is not None and request.content_length > MAX_WEBHOOK_BODY:
            return _json({"error": "body too large"}, 413)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _json({"error": "body too large"}, 413)
        try:
            training_id, _state = parse_webhook(body, request.content_type)
            training_id = validate_training_id(training_id)
        except SdApiError as exc:
            return _json({"error": api_error_plain(exc)}, 400)
        # The body is never trusted as a status: it only makes the tracker poll now.
        now = self._clock()
        last = self._pokes.get(training_id)
        if last is not None and now - last < POKE_DEBOUNCE_SECONDS:
            return _json({"ok": True, "training_id": training_id, "duplicate": True}, 202)
        if len(self._pokes) > 10_000:
            self._pokes = {k: v for k, v in self._pokes.items() if now - v < 60}
        self._pokes[training_id] = now
        followed = await self._deps.tracker.poll_soon(training_id)
        log.info("webhook for %s (followed: %s)", training_id, followed)
        return _json({"ok": True, "training_id": training_id, "followed": followed}, 202)

    async def _healthz(self, _request: web.Request) -> web.Response:
        problems: list[str] = []
        if not self._deps.gateway_connected():
            problems.append("gateway not connected")
        try:
            async with asyncio.timeout(2.0):
                answered = await self._deps.store.db.ping()
            if not answered:
                problems.append("database not answering")
        except Exception as exc:  # any failure to answer is the finding itself
            problems.append(f"database error: {type(exc).__name__}")
        tick = self._deps.tracker.last_tick
        age = None if tick is None else round(self._clock() - tick, 3)
        if age is None or age > TICK_MAX_AGE_SECONDS:
            problems.append("tracker has not ticked recently")
        problems.extend(self._deps.engine_problems())
        body = {"ok": not problems, "problems": problems, "tracker_tick_age_seconds": age}
        return _json(body, 503 if problems else 200)

    async def _metrics(self, _request: web.Request) -> web.Response:
        store = self._deps.store
        metrics.ACTIVE_TRAININGS.set(await store.trainings.count_followed())
        metrics.NEXT_POLL.clear()  # only the trainings followed now
        for training_id, key_ref, at, reason in await store.trainings.schedule():
            metrics.NEXT_POLL.labels(training_id, key_ref, reason or "unknown").set(at)
        for (kind, status), count in (await store.subscriptions.count_by_status()).items():
            metrics.SUBSCRIPTIONS.labels(kind, status).set(count)
        tick = self._deps.tracker.last_tick
        if tick is not None:
            metrics.LAST_TICK_AGE.set(self._clock() - tick)
        return web.Response(
            body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )


def _json(body: dict[str, object], status: int) -> web.Response:
    return web.json_response(body, status=status)
