"""5. Latency: 1,000 followed trainings polled every 2 s by the real bot; the time from a step
appearing in the simulator to its message reaching the fake Discord (with Discord's limits and
80 ms per response), p50 and p99."""

from __future__ import annotations

import statistics
import time

from benchmarks.common import CHANNELS_PER_TRAINING, Figure, SimProcess, seed, temp_dir
from benchmarks.discord_pacing import LATENCY, add_world, bot_env, step_of
from tests.support.fakediscord import FakeDiscord
from tests.support.harness import running_bot

INTERVAL = 2.0
STARTUP = 6.0  # seconds from now before the first new step appears: the bot starts meanwhile


async def run(quick: bool) -> list[Figure]:
    trainings = 200 if quick else 1_000
    # One new step per training every `every` seconds, spread evenly over the trainings:
    # 1,000 / 30 s = 33 messages/s, inside Discord's 50/s global limit.
    every = 10.0 if quick else 30.0
    async with temp_dir() as tmp:
        db = tmp / "tunewatch.db"
        # Every training is at stage 1 (its first step line, seq 0, already recorded).
        await seed(
            db,
            trainings,
            channels=trainings,
            users=1,
            channel_subs=1,
            dm_subs=0,
            last_seq=0,
            behind_every=0,
        )
        first_step_at = time.monotonic() + STARTUP
        # Training i advances at base + i/N * every + k * every; with base one period earlier,
        # its step 2 appears in [first_step_at, first_step_at + every), step 3 one period later.
        base = first_step_at - every
        fake = FakeDiscord(rate_limits=True, latency=LATENCY)
        add_world(fake, trainings)
        await fake.start()
        try:
            async with (
                SimProcess(trainings, stage=1, advance_every=every, base=base) as sim,
                running_bot(bot_env(fake, sim.base_url, db, POLL_INTERVAL_SECONDS=INTERVAL)),
            ):
                end = first_step_at + 2 * every + INTERVAL + 3.0
                await _sleep_until(end)
                messages = [m for m in fake.messages if m.interaction_id is None]
        finally:
            await fake.stop()
    # channel of training i (seed layout: channel index 3i mod N)
    index = {10_000_000 + (i * CHANNELS_PER_TRAINING) % trainings: i for i in range(trainings)}
    latencies = []
    for message in messages:
        i = index[message.channel_id]
        number = step_of(message)
        if number not in (2, 3):
            continue  # steps of the next period were still appearing when the run stopped
        appeared = base + every * i / trainings + (number - 1) * every
        latencies.append(message.created_at - appeared)
    expected = 2 * trainings
    latencies.sort()
    p50 = statistics.median(latencies)
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
    target = INTERVAL + 1.0
    return [
        Figure(
            "latency.step_to_discord_p50",
            p50,
            "s",
            note=f"{len(latencies)} of {expected} expected messages; {trainings} trainings, "
            f"poll interval {INTERVAL:g} s",
        ),
        Figure(
            "latency.step_to_discord_p99",
            p99,
            "s",
            f"< {target:g}",
            p99 < target and len(latencies) >= expected,
            f"max {latencies[-1]:.2f} s",
        ),
    ]


async def _sleep_until(deadline: float) -> None:
    import asyncio

    await asyncio.sleep(max(0.0, deadline - time.monotonic()))
