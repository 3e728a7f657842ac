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
import logging
import os
import signal
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from bot.cli import WATCH_EVERY_SECONDS, fail, run_health, run_simulator, run_status
from bot.config import ConfigError, Settings, load_settings, start_warnings
from bot.preflight import (
    EXIT_FAILED,
    EXIT_OK,
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
