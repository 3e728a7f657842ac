"""The one-shot commands of the terminal: ``status`` (with ``--watch`` and ``--json``),
``health`` and ``simulate``. Terminal words only: no Discord markup reaches the terminal."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp

from bot.config import Settings
from bot.preflight import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE
from bot.render import api_error_plain, status_json, status_text, watch_line
from bot.sdapi.client import SdApiClient
from bot.sdapi.errors import (
    InvalidApiKey,
    InvalidTrainingId,
    RateLimited,
    SdApiError,
    TrainingNotFound,
)
from bot.sdapi.status import Api, TrainingStatus

log = logging.getLogger("bot")

HEALTH_TIMEOUT_SECONDS = 5.0
# --watch: how often to ask by default (the API's spam filter refuses the same request repeated
# within seconds), and how many asks in a row may fail before the watch gives up.
WATCH_EVERY_SECONDS = 30.0
WATCH_FAILURES_TOLERATED = 5


def fail(message: str) -> None:
    """Tell the operator, on one line, why a command could not do its work."""
    print(f"tunewatch: {message}", file=sys.stderr)


def exit_code_of(exc: SdApiError) -> int:
    """The exit code an API error stands for."""
    if isinstance(exc, InvalidTrainingId | InvalidApiKey):
        return EXIT_USAGE
    if isinstance(exc, TrainingNotFound):
        return EXIT_FAILED
    return EXIT_UNREACHABLE  # unavailable, rate limited, or no readable answer


@dataclass
class _Printer:
    """How one status shows: the full text, a progress line (``watch``, redrawn in place on a
    terminal), or JSON; while watching, only what changed is printed again."""

    training_id: str
    watch: bool
    as_json: bool
    live: bool
    last: str | None = None

    def show(self, status: TrainingStatus) -> None:
        now = datetime.now(UTC)
        if self.as_json:
            text = changed = json.dumps(status_json(self.training_id, status), ensure_ascii=False)
        elif self.watch:
            text = watch_line(self.training_id, status, now)
            changed = text.rsplit(" · checked ", 1)[0]
        else:
            text, changed = status_text(self.training_id, status, now), ""
        if self.live:  # redraw one line in place
            print(f"\r\x1b[2K{text}", end="", flush=True)
        elif changed != self.last:
            print(text, flush=True)
        self.last = changed

    def end(self, status: TrainingStatus | None) -> None:
        if self.live:
            print(flush=True)
        if status is not None and self.watch and not self.as_json:
            print(status_text(self.training_id, status, datetime.now(UTC)))


def run_status(
    settings: Settings,
    training_id: str,
    *,
    api: str | None = None,
    watch: bool = False,
    every: float = WATCH_EVERY_SECONDS,
    as_json: bool = False,
) -> int:
    """Print one training's status (``watch``: a progress line until it ends; ``as_json``: the
    parsed status as JSON). Exit code: 0 running or ready (with ``watch``: ready), 1 failed or
    unknown, 2 usage or settings, 3 the API unreachable."""
    if settings.SD_API_KEY is None:
        fail("SD_API_KEY is not set: put your API key in the environment or .env.")
        return EXIT_USAGE
    if not every > 0:
        fail("--every must be a positive number of seconds")
        return EXIT_USAGE
    live = watch and not as_json and sys.stdout.isatty()
    printer = _Printer(training_id.strip(), watch, as_json, live)
    return asyncio.run(
        _status(settings, training_id, None if api is None else Api(api), printer, every)
    )


async def _status(
    settings: Settings, training_id: str, api: Api | None, printer: _Printer, every: float
) -> int:
    assert settings.SD_API_KEY is not None  # noqa: S101 - checked by run_status
    key = settings.SD_API_KEY.get_secret_value()
    async with aiohttp.ClientSession() as session:
        client = SdApiClient(
            session,
            settings.SD_API_BASE_URL,
            v6_base_url=settings.SD_API_V6_BASE_URL,
            timeout=settings.API_TIMEOUT_SECONDS,
            max_attempts=settings.API_MAX_ATTEMPTS,
        )
        failures = 0
        while True:
            try:
                status = await client.fine_tune_status(training_id, key, api=api, budget=60)
            except SdApiError as exc:
                failures += 1
                code = exit_code_of(exc)
                if (
                    not printer.watch
                    or code != EXIT_UNREACHABLE
                    or failures > WATCH_FAILURES_TOLERATED
                ):
                    printer.end(None)
                    fail(api_error_plain(exc))
                    return code
                await _wait_after(exc, every)
                continue
            failures = 0
            printer.show(status)
            if not printer.watch or status.terminal:
                break
            await asyncio.sleep(every)
    printer.end(status)
    return EXIT_FAILED if status.failed else EXIT_OK


async def _wait_after(exc: SdApiError, every: float) -> None:
    """While watching, a passing failure: wait (at least what a rate limit asks) and ask again."""
    wait = every
    if isinstance(exc, RateLimited):
        wait = max(every, (exc.retry_at - datetime.now(UTC)).total_seconds())
    log.warning("%s; asking again in %.0f s", api_error_plain(exc), wait)
    await asyncio.sleep(wait)


def run_health(settings: Settings) -> int:
    """Ask the running bot's /healthz (the container's HEALTHCHECK); print its answer."""
    if settings.HTTP_PORT is None:
        fail("HTTP_PORT is not set: the health check asks the bot's HTTP server; set HTTP_PORT.")
        return EXIT_USAGE
    # A server listening on every address answers on loopback.
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(settings.HTTP_HOST, settings.HTTP_HOST)  # noqa: S104
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{settings.HTTP_PORT}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=HEALTH_TIMEOUT_SECONDS) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            problems = ", ".join(json.loads(body)["problems"])
        except (ValueError, KeyError, TypeError):
            problems = f"HTTP {exc.code}"
        fail(f"unhealthy: {problems}")
        return EXIT_FAILED
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        fail(f"nothing answers on {url} ({reason}): is the bot running with this HTTP_PORT?")
        return EXIT_UNREACHABLE
    print(body.decode(errors="replace"))
    return EXIT_OK


def run_simulator(host: str, port: int, advance_every: float | None, fast: bool) -> int:
    """Serve the API simulator with its demo trainings until interrupted; print what to try."""
    from bot.sdapi.demo import DEFAULT_ADVANCE_EVERY, FAST_ADVANCE_EVERY, run_demo

    if advance_every is None:
        advance_every = FAST_ADVANCE_EVERY if fast else DEFAULT_ADVANCE_EVERY
    if not advance_every > 0:
        print("--advance-every must be a positive number of seconds", file=sys.stderr)
        return 2
    pace = advance_every

    def announce(v3_url: str, v6_url: str) -> None:
        print(demo_guide(v3_url, v6_url, pace), flush=True)

    with contextlib.suppress(KeyboardInterrupt):
        run_demo(host, port, advance_every, announce=announce)
    return 0


def demo_guide(v3_url: str, v6_url: str, advance_every: float) -> str:
    """What a newcomer needs to try the simulator: the ids, the settings, commands."""
    from bot.sdapi.demo import DEMO_TRAININGS, DEMO_V6_ID
    from bot.sdapi.simulator import DEFAULT_KEY

    pace = f"{advance_every / 60:g} min" if advance_every >= 60 else f"{advance_every:g} s"
    width = max(len(demo.training_id) for demo in DEMO_TRAININGS)
    running = "DemoDream01"
    key_body = f"-H 'Content-Type: application/json' -d '{{\"key\": \"{DEFAULT_KEY}\"}}'"
    lines = [
        f"Simulated Stable Diffusion API, key {DEFAULT_KEY}",
        f"  v3: {v3_url}",
        f"  v6: {v6_url}",
        "",
        f"Demo trainings (each starts when first asked about, then moves a stage every {pace}):",
        *(f"  {d.training_id:<{width}}  {d.shows}" for d in DEMO_TRAININGS),
        "",
        "Settings for the bot (.env or the environment):",
        f"  SD_API_BASE_URL={v3_url}",
        f"  SD_API_V6_BASE_URL={v6_url}",
        f"  SD_API_KEY={DEFAULT_KEY}",
        "",
        "Try:",
        f"  python -m bot status {running}",
        f"  python -m bot status {DEMO_V6_ID}",
        f"  in Discord: /training-subscribe {running}, /training-status {DEMO_V6_ID}",
        f"  curl -s -X POST {v3_url}/fine_tune_status/{running} {key_body}",
        f"  a fresh training: curl -s -X POST {v3_url}/fine_tune {key_body}",
    ]
    return "\n".join(lines)
