"""6. Restart: 50,000 subscriptions in the database; the time from starting ``python -m bot`` to
its first poll reaching the simulator."""

from __future__ import annotations

import shutil
import statistics
import time

from benchmarks.common import DMS_PER_TRAINING, Figure, SimProcess, seed, temp_dir
from benchmarks.discord_pacing import add_world, bot_env
from tests.support.fakediscord import FakeDiscord
from tests.support.harness import BotProcess, wait_until

ROUNDS = 3


async def run(quick: bool) -> list[Figure]:
    trainings = 2_000 if quick else 10_000
    channels = trainings
    times = []
    async with temp_dir() as tmp, SimProcess(trainings, stage=2) as sim:
        seeded = tmp / "seeded.db"
        await seed(seeded, trainings, channels=channels, users=trainings * DMS_PER_TRAINING)
        fake = FakeDiscord()
        add_world(fake, channels)
        await fake.start()
        try:
            for n in range(ROUNDS):
                # A fresh copy each time: every training due, as after a long downtime.
                db = tmp / f"round{n}.db"
                shutil.copy(seeded, db)
                await sim.reset()
                bot = BotProcess(bot_env(fake, sim.base_url, db, POLL_INTERVAL_SECONDS=60))
                started = time.monotonic()
                await bot.start()
                try:

                    async def polled() -> bool:
                        return (await sim.stats())["first_at"] is not None

                    await wait_until(polled, 60, "the first poll", 0.01)
                finally:
                    await bot.kill()
                times.append((await sim.stats())["first_at"] - started)
        finally:
            await fake.stop()
    best, worst = min(times), max(times)
    return [
        Figure(
            "restart.start_to_first_poll",
            statistics.median(times),
            "s",
            "< 3",
            worst < 3.0,
            f"median of {ROUNDS} starts of `python -m bot` (best {best:.2f}, worst {worst:.2f}); "
            f"{trainings * 5} subscriptions",
        )
    ]
