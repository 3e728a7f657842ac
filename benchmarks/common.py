"""Shared pieces: figures and their lines, the machine line, the simulator process, the seed."""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.simproc import training_id
from bot.store import Store, transfer

ROOT = Path(__file__).resolve().parent.parent
KEY_REF = "default"
# No request of a benchmark waits longer: a stuck simulator fails the run instead of hanging it.
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=60)

# The layout of the big load: per training 3 channel subscriptions and 2 DM alerts.
CHANNELS_PER_TRAINING = 3
DMS_PER_TRAINING = 2
CHANNELS_PER_GUILD = 50
CHANNEL_BASE = 10_000_000
GUILD_BASE = 5_000_000
USER_BASE = 20_000_000
# Every this many trainings, one is a step behind the simulator (a cycle records news too).
BEHIND_EVERY = 10


@dataclass
class Figure:
    """One line of the table."""

    name: str
    value: float
    unit: str
    target: str = "-"
    ok: bool | None = None  # None: informational
    note: str = ""

    def line(self) -> str:
        if isinstance(self.value, float) and not self.value.is_integer():
            value = f"{self.value:.3g}" if abs(self.value) < 100 else f"{self.value:,.0f}"
        else:
            value = f"{int(self.value):d}"
        status = "" if self.ok is None else ("  ok" if self.ok else "  MISSED")
        note = f"  ({self.note})" if self.note else ""
        return f"{self.name:<34} {value} {self.unit}  target {self.target}{status}{note}"


def machine_line() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return (
        f"machine: {os.cpu_count()} cores, {model}, Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}, {platform.system()} {platform.release()}"
    )


def emit(figures: list[Figure]) -> None:
    for figure in figures:
        print(figure.line(), flush=True)


class SimProcess:
    """``python -m benchmarks.simproc`` on 127.0.0.1; stops when the benchmark ends."""

    def __init__(self, trainings: int, *, stage: int = 2, **extra: Any) -> None:
        self.args = ["--trainings", str(trainings), "--stage", str(stage)]
        for name, value in extra.items():
            if value is not None:
                self.args += [f"--{name.replace('_', '-')}", str(value)]
        self.proc: asyncio.subprocess.Process | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v3"

    async def __aenter__(self) -> SimProcess:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "benchmarks.simproc",
            *self.args,
            "--port",
            "0",
            cwd=str(ROOT),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout=120)
        if not line.startswith(b"PORT "):
            raise RuntimeError(f"simulator did not start: {line!r}")
        self.port = int(line.split()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), timeout=10)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()

    async def reset(self) -> None:
        async with (
            aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as session,
            session.post(f"http://127.0.0.1:{self.port}/_bench/reset") as response,
        ):
            await response.read()

    async def stats(self) -> dict[str, Any]:
        async with (
            aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as session,
            session.get(f"http://127.0.0.1:{self.port}/_bench/stats") as response,
        ):
            result: dict[str, Any] = await response.json()
            return result


def channel_of(i: int, j: int, channels: int) -> tuple[int, int]:
    """(guild_id, channel_id) of the j-th channel subscription of training i."""
    k = (i * CHANNELS_PER_TRAINING + j) % channels
    return GUILD_BASE + k // CHANNELS_PER_GUILD, CHANNEL_BASE + k


def user_of(i: int, j: int, users: int) -> int:
    return USER_BASE + (i * DMS_PER_TRAINING + j) % users


async def seed(
    path: Path | str,
    trainings: int,
    *,
    channels: int,
    users: int,
    last_seq: int = 1,
    behind_every: int = BEHIND_EVERY,
    next_poll_at: float = 0.0,
    channel_subs: int = CHANNELS_PER_TRAINING,
    dm_subs: int = DMS_PER_TRAINING,
    eta_minutes: int | None = None,
    total_steps: int | None = None,
    observation: str | None = None,
) -> None:
    """A database as a busy bot has it: ``trainings`` followed trainings, each with
    ``channel_subs`` channel subscriptions and ``dm_subs`` DM alerts, all active.

    Every ``behind_every``-th training is one step behind the simulator (``last_seq - 1``) so a
    cycle records new events and deliveries too. The rows are loaded in bulk, as
    ``tunewatch migrate-db`` loads a database (50,000 ``subscribe`` calls would measure the
    command path, not the engine). ``observation`` is what the adaptive poll policy keeps of
    each training (JSON, as the tracker writes it); None as an older tunewatch left rows.
    """
    store = await Store.open(path)
    now = time.time()
    training_rows = [
        (
            training_id(i),
            KEY_REF,
            "v3",
            "training_success",
            last_seq - 1 if behind_every and i % behind_every == 0 else last_seq,
            eta_minutes,
            total_steps,
            None,
            None,
            next_poll_at,
            0,
            None,
            0,
            None,
            now,
            None,
            now,
            None,
            observation,
        )
        for i in range(trainings)
    ]
    subscription_rows: list[tuple[Any, ...]] = []
    for i in range(trainings):
        tid = training_id(i)
        targets = [(*channel_of(i, j, channels), USER_BASE + 1) for j in range(channel_subs)]
        targets += [("dm", None, user_of(i, j, users)) for j in range(dm_subs)]
        for guild, channel, user in targets:
            kind = "dm" if guild == "dm" else "channel"
            subscription_rows.append(
                (
                    len(subscription_rows) + 1,
                    kind,
                    None if kind == "dm" else guild,
                    channel,
                    user,
                    tid,
                    KEY_REF,
                    "active",
                    None,
                    -1,
                    now,
                    now,
                    "steps",
                    None,
                    None,
                    "both",
                    None,
                    None,
                    None,
                )
            )
    try:
        await transfer.load(store.db, "trainings", training_rows)
        await transfer.load(store.db, "subscriptions", subscription_rows)
    finally:
        await store.close()


def cpu_seconds() -> float:
    """CPU time of this process, every thread included (aiosqlite works in a thread)."""
    return time.process_time()


@contextlib.asynccontextmanager
async def temp_dir() -> AsyncIterator[Path]:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="tunewatch-bench-") as name:
        yield Path(name)
