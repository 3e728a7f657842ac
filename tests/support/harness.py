"""End-to-end harness: the real bot (in this process, or as `python -m bot`) against the
loopback fake Discord and the API simulator."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import discord

from bot.app import TunewatchBot
from bot.config import Settings
from bot.sdapi.simulator import DEFAULT_KEY, Simulator
from tests.support.fakediscord import FakeDiscord, Message

GUILD = 4242
CHANNEL = 5001
USER = 7001
ADMIN_PERMISSIONS = 1 << 3  # Administrator
MANAGE_CHANNELS = 1 << 4
ROOT = Path(__file__).resolve().parents[2]


def settings_for(fake: FakeDiscord, sim: Simulator, db: Path, **overrides: Any) -> dict[str, str]:
    """The environment a user would set, pointed at the fakes."""
    env = {
        "DISCORD_TOKEN": fake.token,
        "SD_API_KEY": DEFAULT_KEY,
        "SD_API_BASE_URL": sim.base_url,
        "SD_API_V6_BASE_URL": sim.v6_base_url,
        "DATABASE_PATH": str(db),
        "POLL_INTERVAL_SECONDS": "1",
        # Every second, predictably: the adaptive policy has tests of its own.
        "POLL_POLICY": "fixed",
        "DISCORD_API_BASE": fake.api_base,
        "DISCORD_GATEWAY_URL": fake.gateway_url,
        "LOG_LEVEL": "INFO",
        "API_TIMEOUT_SECONDS": "2",
        "API_MAX_ATTEMPTS": "2",
        "NOT_FOUND_WINDOW_SECONDS": "0",
    }
    env.update({k: str(v) for k, v in overrides.items()})
    return env


@contextlib.asynccontextmanager
async def running_bot(env: dict[str, str]) -> AsyncIterator[TunewatchBot]:
    """The real TunewatchBot in this process; closed cleanly afterwards."""
    settings = Settings(_env_file=None, **env)  # type: ignore[call-arg, arg-type]
    saved = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    bot = TunewatchBot(settings, guild_ready_timeout=0.05)
    task = asyncio.create_task(bot.start(env["DISCORD_TOKEN"]))
    try:
        ready = asyncio.create_task(bot.wait_until_ready())
        done, _ = await asyncio.wait({ready, task}, timeout=15, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()  # raises what start() raised
        if ready not in done:
            raise TimeoutError("bot did not become ready")
        yield bot
    finally:
        await bot.close()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = saved


class BotProcess:
    """`python -m bot` as an operator runs it, killable without a clean shutdown."""

    def __init__(self, env: dict[str, str], *, nofile: int | None = None) -> None:
        self.env = env
        self.nofile = nofile  # its limit on open files (RLIMIT_NOFILE), as systemd's LimitNOFILE=
        self.proc: asyncio.subprocess.Process | None = None
        self.output = bytearray()
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        # Only the settings the test chose: nothing from the environment, and no .env (the
        # process runs beside its database, not in the checkout where a developer's .env lives).
        names = set(Settings.model_fields)
        env = {k: v for k, v in os.environ.items() if k not in names}
        env.update(self.env)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            cwd=str(Path(self.env["DATABASE_PATH"]).parent),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            preexec_fn=None if self.nofile is None else self._limit_files,
        )
        self._reader = asyncio.create_task(self._read())

    def _limit_files(self) -> None:
        assert self.nofile is not None
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, hard))

    async def _read(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        while chunk := await self.proc.stdout.read(4096):
            self.output.extend(chunk)

    def signal(self, signum: int) -> None:
        """Send a signal: SIGTERM as systemctl stop and docker stop do, SIGINT as Ctrl+C."""
        assert self.proc is not None
        self.proc.send_signal(signum)

    async def wait(self, timeout: float = 30.0) -> int:
        """The exit code, once the process has exited (and all its output is read)."""
        assert self.proc is not None
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        if self._reader is not None:
            await self._reader
        return code

    async def kill(self) -> None:
        """SIGKILL: no clean shutdown, as a crash or an OOM kill."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()
        if self._reader is not None:
            await self._reader

    @property
    def log(self) -> str:
        return self.output.decode(errors="replace")


async def subscribe(
    fake: FakeDiscord,
    training_id: str,
    channel_id: int = CHANNEL,
    *,
    user_id: int = USER,
    permissions: int = MANAGE_CHANNELS,
) -> dict[str, Any]:
    """/training-subscribe in a channel, as a channel manager; returns what the member sees."""
    interaction = await fake.invoke(
        "training-subscribe",
        {"training_id": training_id},
        guild_id=GUILD,
        channel_id=channel_id,
        user_id=user_id,
        permissions=permissions,
    )
    final = await interaction.wait_final(timeout=20)
    assert not interaction.late
    return final


def step_messages(fake: FakeDiscord, channel_id: int) -> list[Message]:
    """Messages the tracker posted (not interaction answers) in a channel."""
    return [m for m in fake.messages_in(channel_id) if m.interaction_id is None]


def titles(messages: list[Message]) -> list[str]:
    """The embed titles of messages."""
    return [m.embeds[0]["title"] if m.embeds else m.content for m in messages]


__all__ = [
    "ADMIN_PERMISSIONS",
    "CHANNEL",
    "GUILD",
    "MANAGE_CHANNELS",
    "USER",
    "BotProcess",
    "free_port",
    "health",
    "running_bot",
    "settings_for",
    "step_messages",
    "subscribe",
    "titles",
    "wait_until",
]


async def wait_until(
    predicate: Any, timeout: float = 10.0, what: Any = "condition", every: float = 0.02
) -> None:
    """Wait for a condition on state that offers no event (the store, the tracker's counters).

    ``predicate`` may be sync or async; ``what`` (a string, or a callable giving one) names the
    condition in the TimeoutError."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise TimeoutError(f"timed out waiting for {what() if callable(what) else what}")
        await asyncio.sleep(every)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a bot's HTTP_PORT)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def health(port: int) -> tuple[int, dict[str, Any]] | None:
    """A bot's /healthz: (HTTP status, body), or None when nothing answers."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
            session.get(f"http://127.0.0.1:{port}/healthz") as response,
        ):
            return response.status, await response.json()
    except (aiohttp.ClientError, OSError, ValueError):
        return None
