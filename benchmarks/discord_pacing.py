"""4. Discord pacing: 2,000 messages to 200 channels through the real discord.py client (the real
TunewatchBot, its Deliverer and DiscordNotifier) against the loopback fake Discord with Discord's
limits (50 requests/s globally, 5 messages per 5 s per channel, rate-limit headers, 429 with
retry_after) and 80 ms added to every response."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

from benchmarks.common import (
    CHANNELS_PER_GUILD,
    Figure,
    SimProcess,
    channel_of,
    seed,
    temp_dir,
)
from benchmarks.outbox import fill_outbox
from bot.sdapi.simulator import DEFAULT_KEY
from bot.store import Store
from tests.support.fakediscord import FakeDiscord, Message
from tests.support.harness import running_bot, wait_until

LATENCY = 0.080
STEP_RE = re.compile(r"Step (\d+)")


def bot_env(fake: FakeDiscord, sim_url: str, db: Path, **overrides: object) -> dict[str, str]:
    """The settings an operator would set, pointed at the fakes (as tests.support.harness does)."""
    env = {
        "DISCORD_TOKEN": fake.token,
        "SD_API_KEY": DEFAULT_KEY,
        "SD_API_BASE_URL": sim_url,
        "DATABASE_PATH": str(db),
        "POLL_INTERVAL_SECONDS": "3600",
        # The engine's figures: every interval, predictably (poll_policy measures the policy).
        "POLL_POLICY": "fixed",
        "DISCORD_API_BASE": fake.api_base,
        "DISCORD_GATEWAY_URL": fake.gateway_url,
        "LOG_LEVEL": "WARNING",
    }
    env.update({k: str(v) for k, v in overrides.items()})
    return env


async def seed_outbox(target: Path | str, channels: int, total: int) -> None:
    """A database (SQLite file or PostgreSQL URL) with one subscription per channel and every
    step of every training waiting in the outbox: ``total`` deliveries."""
    await seed(
        target,
        channels,
        channels=channels,
        users=1,
        channel_subs=1,
        dm_subs=0,
        last_seq=-1,
        behind_every=0,
        next_poll_at=time.time() + 3600,
    )
    store = await Store.open(target)
    created = await fill_outbox(store, channels)
    await store.close()
    assert created == total, created


def add_world(fake: FakeDiscord, channels: int) -> None:
    """Guilds and channels of the benchmark layout (channel_of)."""
    for k in range(channels):
        guild, channel = channel_of(0, k, channels)
        if k % CHANNELS_PER_GUILD == 0:
            fake.add_guild(guild, f"Guild {k // CHANNELS_PER_GUILD}")
        fake.add_channel(guild, channel, f"training-{k}")


def step_of(message: Message) -> int:
    title = message.embeds[0].get("title", "") if message.embeds else message.content
    match = STEP_RE.search(title)
    return int(match[1]) if match else -1


def order_kept(messages: list[Message]) -> bool:
    last: dict[int, int] = {}
    for message in sorted(messages, key=lambda m: m.id):
        step = step_of(message)
        if step <= last.get(message.channel_id, -1):
            return False
        last[message.channel_id] = step
    return True


async def run(quick: bool) -> list[Figure]:
    channels = 50 if quick else 200
    per_channel = 10
    total = channels * per_channel
    async with temp_dir() as tmp, SimProcess(channels, stage=2) as sim:
        db = tmp / "tunewatch.db"
        await seed_outbox(db, channels, total)
        fake = FakeDiscord(rate_limits=True, latency=LATENCY)
        add_world(fake, channels)
        await fake.start()
        try:
            async with running_bot(bot_env(fake, sim.base_url, db)):
                await wait_until(lambda: len(fake.messages) >= total, 300, "every message", 0.05)
            posts = [r for r in fake.requests if r.method == "POST" and "/messages" in r.path]
            messages = list(fake.messages)
        finally:
            await fake.stop()
    first = min(r.at for r in posts)
    last = max(m.created_at for m in messages)
    rate = (len(messages) - 1) / (last - first)
    limited = fake.rate_limited_count
    share = limited / max(1, len(posts))
    kept = order_kept(messages)
    return [
        Figure(
            "discord_pacing.messages_per_s",
            rate,
            "messages/s",
            ">= 45",
            rate >= 45 and len(messages) == total and kept,
            f"{len(messages)} messages to {channels} channels in {last - first:.1f} s; "
            f"order per channel {'kept' if kept else 'BROKEN'}",
        ),
        Figure(
            "discord_pacing.429s",
            limited,
            "responses",
            "< 1% of requests",
            share < 0.01,
            f"{share:.2%} of {len(posts)} message requests",
        ),
    ]


if __name__ == "__main__":  # pragma: no cover
    asyncio.run(run(True))
