"""2. Memory: peak RSS of the bot (``python -m bot``, engine and discord.py together) while it
polls 10,000 trainings with 50,000 subscriptions once and delivers what the cycle found."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from benchmarks.common import DMS_PER_TRAINING, Figure, SimProcess, seed, temp_dir
from benchmarks.discord_pacing import add_world, bot_env
from tests.support.fakediscord import FakeDiscord
from tests.support.harness import BotProcess, wait_until

SETTLE = 10.0  # seconds of delivering after the cycle, still measured


def peak_rss_mb(pid: int) -> float:
    """VmHWM: the process's peak resident set so far."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc")


async def run(quick: bool) -> list[Figure]:
    trainings = 2_000 if quick else 10_000
    channels = trainings
    async with temp_dir() as tmp, SimProcess(trainings, stage=2) as sim:
        db = tmp / "tunewatch.db"
        await seed(db, trainings, channels=channels, users=trainings * DMS_PER_TRAINING)
        fake = FakeDiscord()
        add_world(fake, channels)
        await fake.start()
        try:
            bot = BotProcess(bot_env(fake, sim.base_url, db, POLL_INTERVAL_SECONDS=3600))
            started = time.monotonic()
            await bot.start()
            assert bot.proc is not None
            try:

                async def cycle_done() -> bool:
                    return int((await sim.stats())["requests"]) >= trainings

                await wait_until(cycle_done, 300, "a full poll cycle", 0.1)
                cycle = time.monotonic() - started
                await asyncio.sleep(SETTLE)
                peak = peak_rss_mb(bot.proc.pid)
                delivered = len(fake.messages)
            finally:
                await bot.kill()
        finally:
            await fake.stop()
    return [
        Figure(
            "memory.bot_peak_rss",
            peak,
            "MB",
            "< 200",
            peak < 200,
            f"VmHWM of `python -m bot`: {trainings} trainings, {trainings * 5} subscriptions, "
            f"{channels} channels in {channels // 50} guilds; cycle done {cycle:.1f} s after "
            f"start, then {SETTLE:g} s more ({delivered} messages delivered)",
        )
    ]
