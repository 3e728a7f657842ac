"""9. Takeover: two `python -m bot` instances on one PostgreSQL database (one gateway shard each),
against the loopback fake Discord (with Discord's rate limits) and the simulator. Twenty times,
one instance is SIGKILLed at a random moment of the poll interval, the other carries on, and
the dead one is started again; meanwhile the trainings advance.

Figures: the time from a SIGKILL until every unfinished training (the dead instance's
included) has been polled again by the survivor; messages lost and sent twice over all the
kills; Discord's 429 answers (each instance paces to its half of the global budget, so none
join or leave with a burst).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import statistics
import time
from pathlib import Path

from benchmarks.common import Figure, temp_dir
from benchmarks.pg_common import pg_server
from bot.sdapi.simulator import DEFAULT_KEY, STAGES, TERMINAL_STAGE, Simulator
from bot.store import DEFAULT_KEY_REF, Store, SubscriptionKind, TrainingUpdate
from tests.support.fakediscord import FakeDiscord
from tests.support.harness import BotProcess, step_messages, titles, wait_until

INTERVAL = 2.0
STEP = re.compile(r"Step (\d+)")
GUILD = 4242
CHANNEL_BASE = 7000


def env_for(
    fake: FakeDiscord, sim: Simulator, url: str, folder: Path, shard: int
) -> dict[str, str]:
    folder.mkdir(exist_ok=True)
    return {
        "DISCORD_TOKEN": fake.token,
        "SD_API_KEY": DEFAULT_KEY,
        "SD_API_BASE_URL": str(sim.base_url),
        "DATABASE_PATH": str(folder / "unused.db"),
        "DATABASE_URL": url,
        "POLL_INTERVAL_SECONDS": str(INTERVAL),
        "POLL_POLICY": "fixed",
        "DISCORD_API_BASE": fake.api_base,
        "DISCORD_GATEWAY_URL": fake.gateway_url,
        "LOG_LEVEL": "WARNING",
        "SHARD_COUNT": "2",
        "SHARD_IDS": str(shard),
    }


async def seed_followed(url: str, sim: Simulator, ids: list[str]) -> None:
    """Each training followed by a channel of its own, as /training-subscribe leaves it: the
    training's row (due now), then the subscription."""
    store = await Store.open(url)
    try:
        for i, tid in enumerate(ids):
            sim.add_training(tid, stage=1)
            now = time.time()
            await store.trainings.record(
                [TrainingUpdate(tid, DEFAULT_KEY_REF, next_poll_at=now, answered=True)], now
            )
            await store.subscriptions.subscribe(
                kind=SubscriptionKind.CHANNEL,
                guild_id=GUILD,
                channel_id=CHANNEL_BASE + i,
                user_id=1,
                training_id=tid,
                key_ref=DEFAULT_KEY_REF,
                limit=100,
                now=now,
            )
    finally:
        await store.close()


def advance_some(sim: Simulator, ids: list[str], round_: int) -> None:
    """A quarter of the trainings complete a stage (none reaches its end before the last)."""
    for i, tid in enumerate(ids):
        training = sim.trainings[tid]
        if i % 4 == round_ % 4 and training.stage < TERMINAL_STAGE - 1:
            training.advance()


async def takeover_after(sim: Simulator, ids: list[str], killed_at: float) -> float | None:
    """Seconds from the kill until every unfinished training was polled again."""
    running = {t for t in ids if sim.trainings[t].stage < TERMINAL_STAGE}

    def all_polled() -> bool:
        return running <= {r.training_id for r in sim.requests if r.at > killed_at}

    await wait_until(all_polled, 60, "every training polled after the kill")
    firsts: dict[str, float] = {}
    for request in sim.requests:
        if request.at > killed_at and request.training_id in running:
            firsts.setdefault(request.training_id, request.at)
    return max(firsts.values()) - killed_at if firsts else None


def tally(fake: FakeDiscord, count: int, expected: int) -> tuple[int, int, bool]:
    """Messages lost and sent twice over every channel, and whether each channel's are in
    order and end with the final message."""
    lost = duplicated = 0
    ordered = True
    for i in range(count):
        got = titles(step_messages(fake, CHANNEL_BASE + i))
        lost += max(0, expected - len(set(got)))
        duplicated += len(got) - len(set(got))
        steps = [int(m[1]) if (m := STEP.search(t)) else 99 for t in got]
        ordered = ordered and steps == sorted(steps) and bool(got) and "ready" in got[-1]
    return lost, duplicated, ordered


async def run(quick: bool) -> list[Figure]:
    kills = 4 if quick else 20
    count = 12
    ids = [f"Takeover{i:02d}" for i in range(count)]
    expected = sum(1 for _, line in STAGES if line)  # a message per log line
    takeovers: list[float] = []
    async with temp_dir() as tmp, Simulator() as sim:
        with pg_server() as server:
            url = await asyncio.to_thread(server.new_database)
            await seed_followed(url, sim, ids)
            fake = FakeDiscord(rate_limits=True)
            fake.shards = 2
            fake.add_guild(GUILD)
            for i in range(count):
                fake.add_channel(GUILD, CHANNEL_BASE + i, f"t{i}")
            await fake.start()
            bots = [BotProcess(env_for(fake, sim, url, tmp / f"i{s}", s)) for s in (0, 1)]
            try:
                for bot in bots:
                    await bot.start()
                await fake.wait_for(lambda f: len(f.identified_shards) >= 2, timeout=60)
                await wait_until(lambda: all(sim.request_count(t) for t in ids), 60, "polls")
                rng = random.Random(17)
                for round_ in range(kills):
                    advance_some(sim, ids, round_)
                    await asyncio.sleep(rng.uniform(0, INTERVAL))
                    victim = round_ % 2
                    killed_at = time.monotonic()
                    await bots[victim].kill()
                    took = await takeover_after(sim, ids, killed_at)
                    if took is not None:
                        takeovers.append(took)
                    identified = len(fake.identified_shards)
                    bots[victim] = BotProcess(env_for(fake, sim, url, tmp / f"i{victim}", victim))
                    await bots[victim].start()
                    await fake.wait_for(
                        lambda f, n=identified: len(f.identified_shards) > n, timeout=60
                    )
                for tid in ids:
                    training = sim.trainings[tid]
                    training.advance(TERMINAL_STAGE - training.stage)
                with contextlib.suppress(TimeoutError):  # counted as lost below
                    await wait_until(
                        lambda: all(
                            len(step_messages(fake, CHANNEL_BASE + i)) >= expected
                            for i in range(count)
                        ),
                        90,
                        "every message",
                    )
            finally:
                for bot in bots:
                    await bot.kill()
                await fake.stop()
    lost, duplicated, ordered = tally(fake, count, expected)
    worst = max(takeovers)
    return [
        Figure(
            "takeover.sigkill_to_polled",
            statistics.median(takeovers),
            "s",
            f"< {2 * INTERVAL:g} (two intervals)",
            worst < 2 * INTERVAL,
            f"median of {len(takeovers)} kills, worst {worst:.2f} s; poll interval {INTERVAL:g} s",
        ),
        Figure(
            "takeover.lost_messages",
            lost,
            "messages",
            "0",
            lost == 0,
            f"of {expected * count} over {kills} kills",
        ),
        Figure(
            "takeover.duplicate_messages",
            duplicated,
            "messages",
            "0",
            duplicated == 0,
            f"order per channel {'kept' if ordered else 'BROKEN'}",
        ),
        Figure(
            "takeover.discord_429s",
            fake.rate_limited_count,
            "responses",
            "0",
            fake.rate_limited_count == 0,
            f"{len(fake.requests)} requests to the fake Discord",
        ),
    ]
