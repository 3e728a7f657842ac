"""10. Discord pacing with two instances: 1,000 messages to 100 channels sent by two `python -m
bot` processes on one PostgreSQL database (one gateway shard each), against the fake Discord
with Discord's limits (50 requests/s globally, 5 messages per 5 s per channel, 429s) and 80 ms
added to every response; one instance is SIGKILLed a third of the way and started again.

Each instance paces its sends to its share of the global budget (48/s x 1/2), so together they
stay below Discord's limit whether one, two or a rejoining one are sending.
"""

from __future__ import annotations

import asyncio
import time

from benchmarks.common import Figure, SimProcess, temp_dir
from benchmarks.discord_pacing import LATENCY, add_world, bot_env, order_kept, seed_outbox
from benchmarks.pg_common import pg_server
from tests.support.fakediscord import FakeDiscord
from tests.support.harness import BotProcess, wait_until


async def run(quick: bool) -> list[Figure]:
    channels = 50 if quick else 100
    per_channel = 10
    total = channels * per_channel
    async with temp_dir() as tmp, SimProcess(channels, stage=2) as sim:
        with pg_server() as server:
            url = await asyncio.to_thread(server.new_database)
            await seed_outbox(url, channels, total)
            fake = FakeDiscord(rate_limits=True, latency=LATENCY)
            fake.shards = 2
            add_world(fake, channels)
            await fake.start()

            def instance(shard: int) -> BotProcess:
                folder = tmp / f"i{shard}"
                folder.mkdir(exist_ok=True)
                env = bot_env(
                    fake,
                    sim.base_url,
                    folder / "unused.db",
                    DATABASE_URL=url,
                    SHARD_COUNT=2,
                    SHARD_IDS=shard,
                )
                return BotProcess(env)

            bots = [instance(0), instance(1)]
            try:
                for bot in bots:
                    await bot.start()
                await wait_until(lambda: len(fake.messages) >= total // 3, 300, "a third", 0.05)
                killed_at = time.monotonic()
                await bots[1].kill()
                bots[1] = instance(1)
                await bots[1].start()
                await wait_until(lambda: len(fake.messages) >= total, 300, "every message", 0.05)
            finally:
                for bot in bots:
                    await bot.kill()
                await fake.stop()
    posts = [r for r in fake.requests if r.method == "POST" and "/messages" in r.path]
    messages = list(fake.messages)
    first = min(r.at for r in posts)
    last = max(m.created_at for m in messages)
    rate = (len(messages) - 1) / (last - first)
    before = [m for m in messages if m.created_at <= killed_at]
    both = (len(before) - 1) / (max(m.created_at for m in before) - first)
    limited = fake.rate_limited_count
    kept = order_kept(messages)
    return [
        Figure(
            "pg_pacing.two_instances_messages_per_s",
            both,
            "messages/s",
            "40-50",
            40 <= both <= 50 and len(messages) == total and kept,
            f"both running; {len(messages)} messages to {channels} channels in "
            f"{last - first:.1f} s ({rate:.1f}/s) with one instance killed and restarted (its "
            f"leases held its channels back until they ran out); order per channel "
            f"{'kept' if kept else 'BROKEN'}",
        ),
        Figure(
            "pg_pacing.429s",
            limited,
            "responses",
            "< 1% of requests",
            limited / max(1, len(posts)) < 0.01,
            f"{limited} of {len(posts)} message requests",
        ),
    ]
