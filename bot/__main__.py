"""``tunewatch`` (or ``python -m bot``): run the bot; ``status <id>``: one status in the terminal;
``health``: ask the running bot's /healthz; ``simulate``; ``rotate-secret``; ``migrate-db``
(SQLite to PostgreSQL).

Exit codes, for every command: 0 done (the bot stopped when told; the training is running or
ready; healthy), 1 failed (the training failed; the bot could not start; unhealthy), 2 usage or
settings, 3 Discord or the API unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import urllib.error
import urllib.request
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

import aiohttp

from bot.config import ConfigError, Settings, load_settings, start_warnings
from bot.preflight import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    StartupError,
    explain,
    preflight,
)

if TYPE_CHECKING:
    from bot.app import TunewatchBot

log = logging.getLogger("bot")

PROG = "tunewatch"
# A stop must end well within what service managers wait before SIGKILL (docker stop: 10 s,
# systemd: 90 s); past this bound the process exits without a clean close (SQLite's journal
# and the message nonces make even that lose nothing).
SHUTDOWN_SECONDS = 3.5
# After close(), start() returns at once; a login hanging on a slow Discord is abandoned.
START_TASK_GRACE_SECONDS = 0.5
HEALTH_TIMEOUT_SECONDS = 5.0


def package_version() -> str:
    """The installed distribution's version."""
    try:
        return version("tunewatch")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "(not installed)"


def configure_logging(level: str) -> None:
    """Configure logging once for the process."""
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)-8s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # discord.py's DEBUG output holds raw gateway events and request bodies, and so whatever a
    # member typed into a modal (their API key): it never goes below INFO, whatever LOG_LEVEL.
    logging.getLogger("discord").setLevel(max(logging.INFO, logging.getLevelName(level)))


def fail(message: str) -> None:
    """Tell the operator, on one line, why a command could not do its work."""
    print(f"{PROG}: {message}", file=sys.stderr)


def _exit_now(code: int) -> None:
    """Leave at once: no close, no waiting for threads (a second signal asked for this)."""
    logging.shutdown()
    os._exit(code)


class StopRequest:
    """SIGTERM or SIGINT: the first asks for a clean stop, the second stops at once."""

    def __init__(self) -> None:
        self.requested = asyncio.Event()

    def on_signal(self, signum: int) -> None:
        """Handle one signal (called by the event loop, never inside a signal handler)."""
        name = signal.Signals(signum).name
        if self.requested.is_set():
            log.warning("%s again: stopping at once, without closing", name)
            _exit_now(128 + signum)
        log.info("%s: stopping (send it again to stop at once)", name)
        self.requested.set()


async def close_within(bot: TunewatchBot, seconds: float) -> bool:
    """Close the bot to the end, within ``seconds``; past that, exit without a clean close."""
    try:
        async with asyncio.timeout(seconds):
            await bot.close()
    except TimeoutError:
        log.error(
            "could not close within %gs; exiting anyway (SQLite recovers at the next start, "
            "and messages in flight are resent with the same nonce)",
            seconds,
        )
        _exit_now(EXIT_FAILED)
    except Exception:
        log.exception("closing failed")
        return False
    return True


async def serve(settings: Settings) -> int:
    """Run the bot until a signal or a failure; return the exit code.

    The shutdown is explicit: a signal sets a flag, this coroutine closes the bot and waits for
    the close to end (the database closed last) before it returns. Letting ``bot.start()``
    return into ``asyncio.run`` instead would cancel a close still in progress, leaving the
    database open and its worker thread keeping the process alive.
    """
    from bot.app import make_bot

    loop = asyncio.get_running_loop()
    stop = StopRequest()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):  # no loop signal handlers on Windows
            loop.add_signal_handler(signum, stop.on_signal, signum)

    await preflight(settings)
    if stop.requested.is_set():
        return EXIT_OK
    bot = make_bot(settings)
    token = settings.DISCORD_TOKEN
    assert token is not None  # noqa: S101 - load_settings(require_token=True)
    running = asyncio.create_task(bot.start(token.get_secret_value()), name="tunewatch")
    stopping = asyncio.create_task(stop.requested.wait(), name="stop-request")
    await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    closed = await close_within(bot, SHUTDOWN_SECONDS)
    done, _ = await asyncio.wait({running}, timeout=START_TASK_GRACE_SECONDS)
    if not done:
        running.cancel()
    (outcome,) = await asyncio.gather(running, return_exceptions=True)

    if stop.requested.is_set():
        if closed:
            log.info("stopped cleanly")
        return EXIT_OK if closed else EXIT_FAILED
    if isinstance(outcome, BaseException):
        error = explain(outcome, settings)
        if error is None:
            log.error("tunewatch stopped on an unexpected error", exc_info=outcome)
            return EXIT_FAILED
        raise error
    return EXIT_OK if closed else EXIT_FAILED


def run_bot(settings: Settings) -> int:
    """Run until stopped by a signal; one line on stderr if it cannot start."""
    for warning in start_warnings(settings):
        log.warning("%s", warning)
    try:
        return asyncio.run(serve(settings))
    except StartupError as exc:
        fail(str(exc))
        return exc.exit_code


# --watch: how often to ask by default (the API's spam filter refuses the same request repeated
# within seconds), and how many asks in a row may fail before the watch gives up.
WATCH_EVERY_SECONDS = 30.0
WATCH_FAILURES_TOLERATED = 5


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

    if settings.SD_API_KEY is None:
        fail("SD_API_KEY is not set: put your API key in the environment or .env.")
        return EXIT_USAGE
    if not every > 0:
        fail("--every must be a positive number of seconds")
        return EXIT_USAGE
    key = settings.SD_API_KEY.get_secret_value()
    shown_id = training_id.strip()
    live = watch and not as_json and sys.stdout.isatty()

    def show(status: TrainingStatus, last: str | None) -> str:
        now = datetime.now(UTC)
        if as_json:
            text = changed = json.dumps(status_json(shown_id, status), ensure_ascii=False)
        elif watch:
            text = watch_line(shown_id, status, now)
            changed = text.rsplit(" · checked ", 1)[0]
        else:
            text, changed = status_text(shown_id, status, now), ""
        if live:  # redraw one line in place
            print(f"\r\x1b[2K{text}", end="", flush=True)
        elif changed != last:
            print(text, flush=True)
        return changed

    def exit_code(exc: SdApiError) -> int:
        if isinstance(exc, InvalidTrainingId | InvalidApiKey):
            return EXIT_USAGE
        if isinstance(exc, TrainingNotFound):
            return EXIT_FAILED
        return EXIT_UNREACHABLE  # unavailable, rate limited, or no readable answer

    async def main() -> int:
        async with aiohttp.ClientSession() as session:
            client = SdApiClient(
                session,
                settings.SD_API_BASE_URL,
                v6_base_url=settings.SD_API_V6_BASE_URL,
                timeout=settings.API_TIMEOUT_SECONDS,
                max_attempts=settings.API_MAX_ATTEMPTS,
            )
            chosen = None if api is None else Api(api)
            last: str | None = None
            failures = 0
            while True:
                try:
                    status = await client.fine_tune_status(training_id, key, api=chosen, budget=60)
                except SdApiError as exc:
                    code = exit_code(exc)
                    failures += 1
                    if not watch or code != EXIT_UNREACHABLE or failures > WATCH_FAILURES_TOLERATED:
                        if live:
                            print(flush=True)
                        fail(api_error_plain(exc))
                        return code
                    wait = every
                    if isinstance(exc, RateLimited):
                        wait = max(every, (exc.retry_at - datetime.now(UTC)).total_seconds())
                    log.warning("%s; asking again in %.0f s", api_error_plain(exc), wait)
                    await asyncio.sleep(wait)
                    continue
                failures = 0
                last = show(status, last)
                if not watch or status.terminal:
                    break
                await asyncio.sleep(every)
        if live:
            print(flush=True)
        if watch and not as_json:
            print(status_text(shown_id, status, datetime.now(UTC)))
        if status.failed:
            return EXIT_FAILED
        return EXIT_OK

    return asyncio.run(main())


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


def run_migrate(settings: Settings, to: str, source: str | None) -> int:
    """Copy the SQLite database to an empty PostgreSQL database, in one transaction."""
    from pathlib import Path

    from bot.preflight import explain_database
    from bot.store import Database, is_postgres_url, masked_url, transfer

    if not is_postgres_url(to):
        fail("migrate-db: --to must be a PostgreSQL URL: postgresql://user:password@host/db")
        return EXIT_USAGE
    path = Path(source) if source else settings.DATABASE_PATH
    shown = masked_url(to)
    if not path.is_file():
        fail(f"migrate-db: no SQLite database at {path.absolute()}: set DATABASE_PATH or --from.")
        return EXIT_USAGE

    async def opened(target: str | Path) -> Database:
        try:
            return await Database.open(target)
        except Exception as exc:
            error = explain_database(exc, target, name="--to")
            if error is None:
                raise
            raise error from None

    async def main() -> int:
        new = await opened(to)
        try:
            old = await opened(path)
            try:
                counts = await transfer.copy(old, new)
            except transfer.TargetNotEmpty as exc:
                fail(
                    f"migrate-db: {shown} already holds tunewatch data (rows in {exc.table}); "
                    "it copies into an empty database only. Nothing was changed."
                )
                return EXIT_FAILED
            except Exception as exc:
                fail(
                    f"migrate-db: the copy failed and was rolled back, nothing was written to "
                    f"{shown} ({type(exc).__name__}: {exc})."
                )
                return EXIT_FAILED
            finally:
                await old.close()
        finally:
            await new.close()
        copied = ", ".join(f"{n} {table}" for table, n in counts.items() if table != "meta")
        print(
            f"migrate-db: copied {path.absolute()} to {shown} ({copied}). Set DATABASE_URL to "
            "that URL and start tunewatch; keep the SQLite file as a backup."
        )
        return EXIT_OK

    try:
        return asyncio.run(main())
    except StartupError as exc:
        fail(f"migrate-db: {exc}")
        return exc.exit_code


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


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="tunewatch: a Discord bot that watches Stable Diffusion API trainings.",
        epilog="Exit codes: 0 done (running or ready), 1 failed, 2 usage or settings, "
        "3 Discord or the API unreachable. Settings come from the environment or .env "
        "(see .env.example).",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {package_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("run", help="run the bot (the default)")
    status = sub.add_parser(
        "status",
        help="print one training's status (uses SD_API_KEY)",
        description="Print one training's status. Exit code 0: running or ready (with "
        "--watch: ready); 1: failed or unknown; 2: usage or settings; 3: the API could not be "
        "reached.",
        epilog="An id starting with '-' goes after '--': tunewatch status -- -abc123",
    )
    status.add_argument("training_id")
    status.add_argument(
        "--api", choices=("v3", "v6"), default=None, help="which API (default: by the id)"
    )
    status.add_argument(
        "--watch",
        action="store_true",
        help="redraw a progress line until the training ends; exit 0 ready, 1 failed",
    )
    status.add_argument(
        "--every",
        type=float,
        default=WATCH_EVERY_SECONDS,
        metavar="SECONDS",
        help=f"with --watch, ask this often (default {WATCH_EVERY_SECONDS:g})",
    )
    status.add_argument(
        "--json", action="store_true", help="print the parsed status as JSON (one line each)"
    )
    sub.add_parser(
        "health",
        help="ask the running bot's /healthz (needs HTTP_PORT); exit 0 when healthy",
    )
    sim = sub.add_parser("simulate", help="serve a local simulator of the API with demo trainings")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=8765)
    sim.add_argument(
        "--advance-every",
        type=float,
        default=None,
        help="seconds per stage, counted from the first request about a training (default 120)",
    )
    sim.add_argument("--fast", action="store_true", help="a stage every 3 s (tests, quick looks)")
    migrate = sub.add_parser(
        "migrate-db",
        help="copy the SQLite database (DATABASE_PATH) to an empty PostgreSQL database",
        description="Copy every table of the SQLite database (subscriptions, trainings, "
        "outbox, encrypted user keys) to an empty PostgreSQL database in one transaction: all "
        "of it or nothing. Stop the bot first. A database that already holds tunewatch data "
        "is refused.",
    )
    migrate.add_argument("--to", required=True, metavar="postgresql://USER:PASSWORD@HOST/DB")
    migrate.add_argument(
        "--from", dest="source", metavar="FILE", help="the SQLite file (default: DATABASE_PATH)"
    )
    rotate = sub.add_parser(
        "rotate-secret", help="re-encrypt stored API keys from TUNEWATCH_SECRET to a new secret"
    )
    rotate.add_argument("--new-secret-env", default="TUNEWATCH_NEW_SECRET")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m bot`` and the ``tunewatch`` script."""
    args = build_parser().parse_args(argv)
    command = args.command or "run"
    if command == "run":
        # Until the event loop takes the signals over (serve()), SIGTERM stops a starting bot
        # as Ctrl+C does. As PID 1 in a container, a signal without a handler is ignored.
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return dispatch(command, args)
    except KeyboardInterrupt:
        # For the bot, a stop asked for before anything was opened; for the others, Ctrl+C.
        return EXIT_OK if command == "run" else 128 + signal.SIGINT


def dispatch(command: str, args: argparse.Namespace) -> int:
    """Run one command."""
    if command == "simulate":
        logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)-8s %(message)s")
        return run_simulator(args.host, args.port, args.advance_every, args.fast)
    try:
        settings = load_settings(require_token=command == "run")
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    configure_logging(settings.LOG_LEVEL)
    if command == "status":
        return run_status(
            settings,
            args.training_id,
            api=args.api,
            watch=args.watch,
            every=args.every,
            as_json=args.json,
        )
    if command == "health":
        return run_health(settings)
    if command == "migrate-db":
        return run_migrate(settings, args.to, args.source)
    if command == "rotate-secret":
        from bot.secrets import rotate_secret_cli

        return rotate_secret_cli(settings, args.new_secret_env)
    return run_bot(settings)


if __name__ == "__main__":
    sys.exit(main())
