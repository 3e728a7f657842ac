"""Two `python -m bot` instances on one PostgreSQL database, each holding one of two gateway
shards: five subscriptions on three trainings; the instance sending a message is SIGKILLed while
Discord holds the request, the other takes its polls and messages over, and the dead one is
started again. Every step message once, in order, per channel; the DM alert once; a training is
never polled twice in one interval."""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict
from pathlib import Path

import discord
import pytest

from bot.app import ShardedTunewatchBot, make_bot
from bot.config import Settings
from bot.sdapi.simulator import Simulator
from bot.store import Store
from tests.support.fakediscord import FakeDiscord
from tests.support.harness import (
    CHANNEL,
    GUILD,
    USER,
    BotProcess,
    settings_for,
    step_messages,
    titles,
)

pytestmark = pytest.mark.timeout(240)

INTERVAL = 2.0
GUILD_B = (1 << 22) | 4243  # held by shard 1 of 2 (GUILD 4242 by shard 0)
A1, A2 = CHANNEL, CHANNEL + 1  # in GUILD
B1, B2 = 6001, 6002  # in GUILD_B
STEPS = [
    "Step 2: Training Done",  # stage 2
    "Step 3: Model Uploading",  # stage 4 (stage 3, compressing, adds no line)
    "Step 4: Model Uploaded",  # stage 5
    "Model ready",  # stage 7
]
FOLLOWS = {A1: "Share00001", B1: "Share00001", A2: "Share00002", B2: "Share00003"}


async def owner_pid(url: str, channel_id: int) -> int | None:
    """The process holding the delivery lease of a channel's subscription (lease owners are
    host:pid:random)."""
    store = await Store.open(url)
    try:
        rows = await store.db.fetch(
            "SELECT l.owner FROM delivery_leases l JOIN subscriptions s "
            "ON s.id = l.subscription_id WHERE s.channel_id = ?",
            (channel_id,),
        )
    finally:
        await store.close()
    return int(str(rows[0][0]).split(":")[1]) if rows else None


def all_have(fake: FakeDiscord, n: int) -> bool:
    return all(len(step_messages(fake, c)) >= n for c in FOLLOWS)


async def test_two_instances_share_the_work_and_survive_a_kill(
    fake: FakeDiscord, sim: Simulator, pg_url: str, tmp_path: Path
) -> None:
    fake.shards = 2
    fake.add_channel(GUILD, A2, "second")
    fake.add_channel(GUILD_B, B1, "b-one")
    fake.add_channel(GUILD_B, B2, "b-two")
    trainings = [sim.add_training(t, stage=1) for t in sorted(set(FOLLOWS.values()))]

    def instance(shard: int) -> BotProcess:
        folder = tmp_path / f"instance{shard}"
        folder.mkdir(exist_ok=True)
        env = settings_for(
            fake,
            sim,
            folder / "unused.db",
            DATABASE_URL=pg_url,
            POLL_INTERVAL_SECONDS=INTERVAL,
            SHARD_COUNT=2,
            SHARD_IDS=shard,
        )
        return BotProcess(env)

    bots = [instance(0), instance(1)]
    try:
        for bot in bots:
            await bot.start()
        await fake.wait_for(
            lambda f: {(0, 2), (1, 2)} <= set(f.identified_shards), timeout=60, what="2 shards"
        )
        # Each interaction reaches the instance holding its guild's shard, which answers it.
        for channel, training_id in FOLLOWS.items():
            guild = GUILD if channel in (A1, A2) else GUILD_B
            interaction = await fake.invoke(
                "training-subscribe",
                {"training_id": training_id},
                guild_id=guild,
                channel_id=channel,
                user_id=USER,
                permissions=1 << 4,
            )
            assert "Subscribed" in (await interaction.wait_final(timeout=20))["content"]
        alert = await fake.invoke(
            "training-notify",
            {"training_id": "Share00002"},
            guild_id=GUILD_B,
            channel_id=B1,
            user_id=USER,
        )
        assert "I will DM you" in (await alert.wait_final(timeout=20))["content"]
        started_at = max(r.at for r in sim.requests)  # the subscriptions' own first polls

        for training in trainings:
            training.advance()
        await fake.wait_for(lambda f: all_have(f, 1), timeout=30, what="step 2 everywhere")

        # Discord receives step 3 for A1 but its sender dies before it hears back.
        hold = fake.hold(rf"^/channels/{A1}/messages$")
        for training in trainings:
            training.advance(2)
        await asyncio.wait_for(hold.arrived.wait(), timeout=30)
        pid = await owner_pid(pg_url, A1)
        victim = next(i for i, b in enumerate(bots) if b.proc and b.proc.pid == pid)
        await bots[victim].kill()
        hold.release()
        survivor = bots[1 - victim]

        # Step 4 completes while one instance runs: it polls all three trainings.
        await fake.wait_for(lambda f: all_have(f, 2), timeout=60, what="step 3 everywhere")
        for training in trainings:
            training.advance()
        await fake.wait_for(lambda f: all_have(f, 3), timeout=60, what="step 4 everywhere")
        assert survivor.proc is not None
        assert survivor.proc.returncode is None

        bots[victim] = instance(victim)
        await bots[victim].start()
        await fake.wait_for(lambda f: len(f.identified_shards) == 3, timeout=60, what="rejoin")
        for training in trainings:
            training.advance(2)
        await fake.wait_for(lambda f: all_have(f, 4), timeout=60, what="the end everywhere")
        await fake.wait_for(lambda f: len(f.dms_to(USER)) == 1, timeout=30, what="the DM")
    finally:
        for bot in bots:
            await bot.kill()

    for channel, training_id in FOLLOWS.items():
        expected = [f"{training_id} · {s}" for s in STEPS]
        assert titles(step_messages(fake, channel)) == expected, channel
    dms = fake.dms_to(USER)
    assert [m.embeds[0]["title"] for m in dms] == ["Share00002 · Model ready"]
    # The message Discord got from the dead instance shows once: the survivor found it in the
    # channel's history (or sent it again with the same nonce, which Discord drops).
    nonce = step_messages(fake, A1)[1].nonce
    path = f"/channels/{A1}/messages"
    posts = [r for r in fake.requests if r.path == path and r.method == "POST"]
    resent = sum(1 for r in posts if (r.json or {}).get("nonce") == nonce)
    looked = any(r.path == path and r.method == "GET" for r in fake.requests)
    assert (resent, looked) in ((1, True), (2, False), (2, True)), (resent, looked)
    # One poll per training per interval: after the subscriptions' first polls, two polls of
    # one training are never closer than a quarter of an interval (a second instance polling
    # the same training would be), though both instances ran, one died and came back.
    polls: dict[str, list[float]] = defaultdict(list)
    for request in sim.requests:
        if request.at > started_at:
            polls[request.training_id].append(request.at)
    for training_id, times in polls.items():
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert min(gaps) > INTERVAL / 4, (training_id, gaps)
    for bot in bots:
        assert "Traceback" not in bot.log, bot.log[-3000:]


async def test_one_instance_can_hold_every_shard(
    fake: FakeDiscord, sim: Simulator, db_path: Path
) -> None:
    fake.shards = 2
    fake.add_channel(GUILD_B, B1, "b-one")
    sim.add_training("AllShards1", stage=1)
    env = settings_for(fake, sim, db_path, SHARD_COUNT=2, HTTP_PORT=0)
    settings = Settings(_env_file=None, **env)  # type: ignore[call-arg, arg-type]
    saved = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    bot = make_bot(settings, guild_ready_timeout=0.05)
    assert isinstance(bot, ShardedTunewatchBot)
    task = asyncio.create_task(bot.start(fake.token))
    try:
        await fake.wait_for(lambda f: set(f.identified_shards) == {(0, 2), (1, 2)}, timeout=30)
        await asyncio.wait_for(bot.wait_until_ready(), timeout=30)
        for guild, channel in ((GUILD, A1), (GUILD_B, B1)):
            interaction = await fake.invoke(
                "training-subscribe",
                {"training_id": "AllShards1"},
                guild_id=guild,
                channel_id=channel,
                user_id=USER,
                permissions=1 << 4,
            )
            assert "Subscribed" in (await interaction.wait_final(timeout=20))["content"]
        assert bot.gateway_connected()
        sim.trainings["AllShards1"].advance()
        await fake.wait_for(lambda f: all_have_one(f, (A1, B1)), timeout=30)
    finally:
        await bot.close()
        await asyncio.gather(task, return_exceptions=True)
        discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = saved


def all_have_one(fake: FakeDiscord, channels: tuple[int, ...]) -> bool:
    return all(len(step_messages(fake, c)) == 1 for c in channels)
