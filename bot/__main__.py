"""``python -m bot``: run the bot; ``status <id>``: one status in the terminal; ``simulate``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from datetime import UTC, datetime

import aiohttp

from bot.config import ConfigError, Settings, load_settings

log = logging.getLogger("bot")


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


def run_bot(settings: Settings) -> int:
    """Run until interrupted."""
    import discord

    from bot.app import TunewatchBot

    async def main() -> None:
        async with TunewatchBot(settings) as bot:
            # SIGTERM (systemd, docker stop) closes cleanly, as Ctrl+C does.
            loop = asyncio.get_running_loop()
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(signal.SIGTERM, lambda: loop.create_task(bot.close()))
            token = settings.DISCORD_TOKEN
            assert token is not None  # noqa: S101 - load_settings(require_token=True)
            await bot.start(token.get_secret_value())

    try:
        asyncio.run(main())
    except discord.LoginFailure:
        print(
            "Discord refused DISCORD_TOKEN: check that it is the bot token from the Developer "
            "Portal (Bot -> Reset Token).",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        pass
    return 0


def run_status(settings: Settings, training_id: str) -> int:
    """Print one training's status."""
    from bot.render import api_error_plain, status_text
    from bot.sdapi.client import SdApiClient
    from bot.sdapi.errors import SdApiError

    if settings.SD_API_KEY is None:
        print(
            "SD_API_KEY is not set: put your API key in the environment or .env.", file=sys.stderr
        )
        return 2
    key = settings.SD_API_KEY.get_secret_value()

    async def main() -> int:
        async with aiohttp.ClientSession() as session:
            client = SdApiClient(
                session, settings.SD_API_BASE_URL, timeout=settings.API_TIMEOUT_SECONDS
            )
            try:
                status = await client.fine_tune_status(training_id, key, budget=60)
            except SdApiError as exc:
                print(api_error_plain(exc), file=sys.stderr)
                return 1
        print(status_text(training_id.strip(), status, datetime.now(UTC)))
        return 0

    return asyncio.run(main())


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
        prog="python -m bot",
        description="tunewatch: a Discord bot that watches Stable Diffusion API trainings.",
    )
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("run", help="run the bot (the default)")
    status = sub.add_parser("status", help="print one training's status (uses SD_API_KEY)")
    status.add_argument("training_id")
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
    rotate = sub.add_parser(
        "rotate-secret", help="re-encrypt stored API keys from TUNEWATCH_SECRET to a new secret"
    )
    rotate.add_argument("--new-secret-env", default="TUNEWATCH_NEW_SECRET")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m bot`` and the ``tunewatch`` script."""
    args = build_parser().parse_args(argv)
    command = args.command or "run"
    if command == "simulate":
        logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)-8s %(message)s")
        return run_simulator(args.host, args.port, args.advance_every, args.fast)
    try:
        settings = load_settings(require_token=command == "run")
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    configure_logging(settings.LOG_LEVEL)
    if command == "status":
        return run_status(settings, args.training_id)
    if command == "rotate-secret":
        from bot.secrets import rotate_secret_cli

        return rotate_secret_cli(settings, args.new_secret_env)
    return run_bot(settings)


if __name__ == "__main__":
    sys.exit(main())
