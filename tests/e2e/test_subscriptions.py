"""Subscriptions end to end: one message per step, fan-out, DM alerts, faults, lost access."""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.app import TunewatchBot
from bot.sdapi.simulator import Fault, Simulator
from bot.store import SubscriptionKind, SubscriptionStatus
from tests.support.fakediscord import FakeDiscord
from tests.support.harness import (
    CHANNEL,
    GUILD,
    MANAGE_CHANNELS,
    USER,
    running_bot,
    settings_for,
    step_messages,
    subscribe,
    titles,
    wait_until,
)

pytestmark = pytest.mark.timeout(90)

# The documented timeline after its first step (no line for compressing or deploying).
STEP_TITLES = [
    "Step 2: Training Done",
    "Step 3: Model Uploading",
    "Step 4: Model Uploaded",
]
MESSAGES = len(STEP_TITLES) + 1  # the steps, then "Model ready"


@pytest.fixture
async def bot(fake: FakeDiscord, sim: Simulator, db_path: Path) -> AsyncIterator[TunewatchBot]:
    env = settings_for(fake, sim, db_path, MAX_BACKOFF_SECONDS="0.5")
    async with running_bot(env) as running:
        yield running


async def notify(fake: FakeDiscord, training_id: str, user_id: int) -> dict:
    interaction = await fake.invoke(
        "training-notify",
        {"training_id": training_id},
        guild_id=GUILD,
        channel_id=CHANNEL,
        user_id=user_id,
    )
    final = await interaction.wait_final(timeout=20)
    assert interaction.ephemeral()
    return final


async def assert_silence(bot: TunewatchBot, fake: FakeDiscord, sim: Simulator, tid: str) -> None:
    """Nothing more is polled or posted: make the tracker tick a few times and compare."""
    polls, messages = sim.request_count(tid), len(fake.messages)
    for _ in range(3):
        before = bot.tracker.last_tick
        bot.tracker.wake()
        await wait_until(lambda b=before: bot.tracker.last_tick != b, what="a tracker tick")
    assert bot.deliverer is not None
    assert await bot.deliverer.drain_once() == 0
    assert sim.request_count(tid) == polls
    assert len(fake.messages) == messages


async def test_full_flow_one_message_per_step_then_silence(
    bot: TunewatchBot, fake: FakeDiscord, sim: Simulator
) -> None:
    training = sim.add_training("Flow000001", stage=1)
    final = await subscribe(fake, "Flow000001")
    assert final["content"].startswith("Subscribed this channel to `Flow000001`")
    assert "1/6 steps" in str(final["embeds"][0])
    again = await subscribe(fake, "Flow000001")
    assert "already follows" in again["content"]

    for expected in (1, 1, 2, 3, 3, 4):  # after each stage, 2 to 7
        training.advance()
        await fake.wait_for(lambda f, n=expected: len(step_messages(f, CHANNEL)) >= n)

    messages = step_messages(fake, CHANNEL)
    assert titles(messages) == [f"Flow000001 · {t}" for t in STEP_TITLES] + [
        "Flow000001 · Model ready"
    ]
    step_two = messages[0].embeds[0]
    assert {f["name"]: f["value"] for f in step_two["fields"]}["Steps left"] == "4"
    assert all(m.nonce and len(m.nonce) <= 25 for m in messages)

    async def done() -> bool:
        sub = await bot.store.subscriptions.find(
            SubscriptionKind.CHANNEL, "Flow000001", channel_id=CHANNEL, user_id=USER
        )
        return sub is not None and sub.status is SubscriptionStatus.DONE

    await wait_until(done, what="the subscription done")
    await assert_silence(bot, fake, sim, "Flow000001")


async def test_fan_out_one_poll_per_cycle(fake: FakeDiscord, sim: Simulator, db_path: Path) -> None:
    # A 1 s interval: each command's status check pushes the next poll a full interval back.
    env = settings_for(fake, sim, db_path, POLL_INTERVAL_SECONDS="1")
    async with running_bot(env) as bot:
        await _fan_out(bot, fake, sim)


async def _fan_out(bot: TunewatchBot, fake: FakeDiscord, sim: Simulator) -> None:
    training = sim.add_training("FanOut0001", stage=1)
    channels = [CHANNEL + i for i in range(1, 6)]
    for channel in channels:
        fake.add_channel(GUILD, channel, f"room-{channel}")
    for channel in channels:
        await subscribe(fake, "FanOut0001", channel)
    users = [USER + 1, USER + 2]
    for user in users:
        final = await notify(fake, "FanOut0001", user)
        assert "I will DM you" in final["content"]
    command_polls = sim.request_count("FanOut0001")
    # Seven commands within a few seconds about one training and key share one request.
    assert command_polls == 1

    training.advance(6)
    await fake.wait_for(
        lambda f: (
            all(len(step_messages(f, c)) == MESSAGES for c in channels)
            and all(len(f.dms_to(u)) == 1 for u in users)
        ),
        timeout=20,
    )
    for channel in channels:
        assert titles(step_messages(fake, channel))[-1] == "FanOut0001 · Model ready"
    for user in users:
        assert fake.dms_to(user)[0].embeds[0]["title"] == "FanOut0001 · Model ready"
    # The tracker polled once per cycle for all seven followers, never once per follower.
    tracker_polls = sim.request_count("FanOut0001") - command_polls
    assert 1 <= tracker_polls <= 3
    times = [r.at for r in sim.requests if r.training_id == "FanOut0001"][command_polls:]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(gap >= 1 * 0.85 for gap in gaps), gaps
    await assert_silence(bot, fake, sim, "FanOut0001")


async def test_failed_training_final_message_with_reason(
    bot: TunewatchBot, fake: FakeDiscord, sim: Simulator
) -> None:
    training = sim.add_training("Fails00001", stage=2, fail_at=5, failure_reason="Disk full")
    await subscribe(fake, "Fails00001")
    await notify(fake, "Fails00001", USER)
    training.advance(5)
    await fake.wait_for(lambda f: len(f.dms_to(USER)) == 1 and len(step_messages(f, CHANNEL)) == 2)
    messages = step_messages(fake, CHANNEL)
    assert titles(messages) == [
        "Fails00001 · Step 3: Model Uploading",
        "Fails00001 · Training failed",
    ]
    assert "Disk full" in messages[-1].embeds[0]["description"]
    assert "Disk full" in fake.dms_to(USER)[0].embeds[0]["description"]


@pytest.mark.parametrize(
    "fault",
    [Fault.SERVER_ERROR, Fault.HTML, Fault.EMPTY, Fault.RATE_LIMIT_429, Fault.RATE_LIMIT_BODY],
)
async def test_api_faults_mid_training_lose_nothing(
    fake: FakeDiscord, db_path: Path, fault: Fault
) -> None:
    async with Simulator(retry_after=0.3) as sim:
        env = settings_for(fake, sim, db_path, MAX_BACKOFF_SECONDS="0.5")
        async with running_bot(env) as bot:
            training = sim.add_training("Faulty0001", stage=1)
            await subscribe(fake, "Faulty0001")
            training.advance()
            await fake.wait_for(lambda f: len(step_messages(f, CHANNEL)) == 1)
            sim.inject(fault, count=None)
            before = sim.request_count("Faulty0001")
            training.advance(2)
            if fault is Fault.RATE_LIMIT_BODY:
                # "please wait for 30 seconds": honoured, so only one request in this test's time
                await sim.wait_for_requests(before + 1, training_id="Faulty0001")

                async def waits_30s() -> bool:
                    row = await bot.store.trainings.get("Faulty0001", "default")
                    return row is not None and row.next_poll_at - time.time() > 25

                await wait_until(waits_30s, what="a 30 s wait recorded")
                sim.clear_faults()
                assert await bot.tracker.poll_soon("Faulty0001")
            else:
                await sim.wait_for_requests(before + 4, training_id="Faulty0001")
                sim.clear_faults()
            assert len(step_messages(fake, CHANNEL)) == 1  # nothing readable came back
            training.advance(5)
            await fake.wait_for(lambda f: len(step_messages(f, CHANNEL)) == MESSAGES, timeout=20)
            assert titles(step_messages(fake, CHANNEL)) == [
                f"Faulty0001 · {t}" for t in STEP_TITLES
            ] + ["Faulty0001 · Model ready"]
            await assert_silence(bot, fake, sim, "Faulty0001")


async def test_api_hang_mid_training(fake: FakeDiscord, sim: Simulator, db_path: Path) -> None:
    env = settings_for(fake, sim, db_path, API_TIMEOUT_SECONDS="0.3", MAX_BACKOFF_SECONDS="0.5")
    async with running_bot(env) as bot:
        training = sim.add_training("Hangs00001", stage=1)
        await subscribe(fake, "Hangs00001")
        sim.inject(Fault.HANG, count=None)
        before = sim.request_count("Hangs00001")
        training.advance()
        await sim.wait_for_requests(before + 2, training_id="Hangs00001", timeout=20)
        sim.clear_faults()
        sim.release_hangs()
        training.advance(5)
        await fake.wait_for(lambda f: len(step_messages(f, CHANNEL)) == MESSAGES, timeout=20)
        assert titles(step_messages(fake, CHANNEL))[0] == "Hangs00001 · Step 2: Training Done"
        await assert_silence(bot, fake, sim, "Hangs00001")


async def test_lost_permission_and_deleted_channel_pause_only_those(
    bot: TunewatchBot, fake: FakeDiscord, sim: Simulator
) -> None:
    healthy, locked, deleted = CHANNEL, CHANNEL + 10, CHANNEL + 11
    fake.add_channel(GUILD, locked, "locked")
    fake.add_channel(GUILD, deleted, "deleted")
    training = sim.add_training("Perms00001", stage=1)
    for channel in (healthy, locked, deleted):
        await subscribe(fake, "Perms00001", channel)
    fake.set_channel_access(locked, can_send=False, announce=False)
    fake.delete_channel(deleted, announce=False)
    training.advance(6)
    await fake.wait_for(lambda f: len(step_messages(f, healthy)) == MESSAGES, timeout=20)
    assert step_messages(fake, locked) == []

    async def paused() -> bool:
        subs = await bot.store.subscriptions.of_guild(GUILD)
        return sum(s.status is SubscriptionStatus.PAUSED for s in subs) == 2

    await wait_until(paused, what="two paused subscriptions")
    listing = await fake.invoke("training-list", guild_id=GUILD, channel_id=healthy, user_id=USER)
    final = await listing.wait_final()
    text = str(final["embeds"][0])
    assert listing.ephemeral()
    assert "Missing Permissions" in text
    assert "The channel was deleted." in text
    # Exactly one attempt each: a permanent failure is not retried.
    attempts = [r for r in fake.requests if r.path == f"/channels/{locked}/messages"]
    assert len(attempts) == 1


async def test_closed_dms_mark_the_alert_undeliverable(
    bot: TunewatchBot, fake: FakeDiscord, sim: Simulator
) -> None:
    closed, open_ = USER + 50, USER + 51
    fake.add_user(closed, "closed", dms_open=False)
    fake.add_user(open_, "open")
    training = sim.add_training("DmClosed01", stage=3)
    await notify(fake, "DmClosed01", closed)
    await notify(fake, "DmClosed01", open_)
    training.advance(4)
    await fake.wait_for(lambda f: len(f.dms_to(open_)) == 1)

    async def undeliverable() -> bool:
        alerts = await bot.store.subscriptions.alerts_of(closed)
        return bool(alerts) and alerts[0].status is SubscriptionStatus.PAUSED

    await wait_until(undeliverable, what="the closed-DM alert paused")
    listing = await fake.invoke("training-list", guild_id=GUILD, channel_id=CHANNEL, user_id=closed)
    assert "DMs are closed" in str((await listing.wait_final())["embeds"][0])
    await assert_silence(bot, fake, sim, "DmClosed01")


async def test_subscribe_needs_embed_permission(
    bot: TunewatchBot, fake: FakeDiscord, sim: Simulator
) -> None:
    sim.add_training("NoEmbed001", stage=1)
    fake.add_channel(GUILD, CHANNEL + 20, "no-embeds", embed_links=False)
    interaction = await fake.invoke(
        "training-subscribe",
        {"training_id": "NoEmbed001"},
        guild_id=GUILD,
        channel_id=CHANNEL + 20,
        user_id=USER,
        permissions=MANAGE_CHANNELS,
    )
    final = await interaction.wait_final()
    assert interaction.ephemeral()
    assert "Embed Links" in final["embeds"][0]["description"]
    assert sim.request_count() == 0


async def test_subscription_limit(fake: FakeDiscord, sim: Simulator, db_path: Path) -> None:
    env = settings_for(fake, sim, db_path, MAX_SUBSCRIPTIONS_PER_GUILD="1")
    async with running_bot(env):
        sim.add_training("LimitA0001", stage=1)
        sim.add_training("LimitB0001", stage=1)
        await subscribe(fake, "LimitA0001")
        final = await subscribe(fake, "LimitB0001")
        assert "already follows 1 trainings" in final["embeds"][0]["description"]


async def test_unsubscribe_stops_messages(
    bot: TunewatchBot, fake: FakeDiscord, sim: Simulator
) -> None:
    training = sim.add_training("Unsub00001", stage=1)
    await subscribe(fake, "Unsub00001")
    interaction = await fake.invoke(
        "training-unsubscribe",
        {"training_id": "Unsub00001"},
        guild_id=GUILD,
        channel_id=CHANNEL,
        user_id=USER,
        permissions=MANAGE_CHANNELS,
    )
    assert "no longer follows" in (await interaction.wait_final())["content"]
    training.advance(6)
    await assert_silence(bot, fake, sim, "Unsub00001")
    assert step_messages(fake, CHANNEL) == []


async def test_command_registration(bot: TunewatchBot, fake: FakeDiscord) -> None:
    commands = {c["name"]: c for c in fake.registered_commands[None]}
    assert set(commands) >= {
        "training-status",
        "training-subscribe",
        "training-unsubscribe",
        "training-notify",
        "training-list",
    }
    for name in ("training-subscribe", "training-unsubscribe"):
        assert int(commands[name]["default_member_permissions"]) == MANAGE_CHANNELS
        assert commands[name]["contexts"] == [0]  # guild only
    assert commands["training-status"]["default_member_permissions"] is None
    assert commands["training-notify"]["default_member_permissions"] is None


async def test_dm_alert_limit(fake: FakeDiscord, sim: Simulator, db_path: Path) -> None:
    env = settings_for(fake, sim, db_path, MAX_DM_ALERTS_PER_USER="2")
    async with running_bot(env):
        for tid in ("DmLimit001", "DmLimit002", "DmLimit003"):
            sim.add_training(tid, stage=1)
        for tid in ("DmLimit001", "DmLimit002"):
            assert "I will DM you" in (await notify(fake, tid, USER))["content"]
        again = await notify(fake, "DmLimit001", USER)
        assert "already get a DM" in again["content"]
        refused = await notify(fake, "DmLimit003", USER)
        assert "You already have 2 DM alerts" in refused["embeds"][0]["description"]


async def test_notify_on_a_finished_training_says_so(
    bot: TunewatchBot, fake: FakeDiscord, sim: Simulator
) -> None:
    sim.add_training("Finished01", stage=7)
    final = await notify(fake, "Finished01", USER)
    assert final["content"] == (
        "Training `Finished01` is ready already: there is nothing to wait for."
    )
    assert await bot.store.subscriptions.alerts_of(USER) == []
    done = await subscribe(fake, "Finished01")
    assert "is ready already; there is nothing to follow" in done["content"]
    assert await bot.store.subscriptions.of_guild(GUILD) == []


async def test_guild_sync_at_every_start(fake: FakeDiscord, sim: Simulator, db_path: Path) -> None:
    env = settings_for(fake, sim, db_path, DISCORD_GUILD_ID=str(GUILD))
    for _ in range(2):
        async with running_bot(env):
            pass
    assert [guild for guild, _ in fake.command_syncs] == [GUILD, GUILD]
    async with running_bot(env):
        sim.add_training("GuildCmd01", stage=2)
        interaction = await fake.invoke(
            "training-status",
            {"training_id": "GuildCmd01"},
            guild_id=GUILD,
            channel_id=CHANNEL,
            user_id=USER,
        )
        assert interaction.payload["data"]["guild_id"] == str(GUILD)
        final = await interaction.wait_final()
    assert final["embeds"][0]["title"] == "Training GuildCmd01"


@pytest.mark.allow_errors  # a refused payload is logged as an error, on purpose
async def test_archived_thread_pauses_and_refused_payload_skips_one_message(
    bot: TunewatchBot, fake: FakeDiscord, sim: Simulator
) -> None:
    thread, other = CHANNEL + 30, CHANNEL + 31
    fake.add_channel(GUILD, thread, "thread-ish")
    fake.add_channel(GUILD, other, "other")
    training = sim.add_training("Archive001", stage=1)
    await subscribe(fake, "Archive001", thread)
    await subscribe(fake, "Archive001", other)
    fake.fail_next(rf"^/channels/{thread}/messages$", 400, code=50083)
    fake.fail_next(rf"^/channels/{other}/messages$", 400, code=50035)  # Invalid Form Body
    training.advance(3)
    await fake.wait_for(lambda f: len(step_messages(f, other)) == 1)

    async def archived_paused() -> bool:
        subs = await bot.store.subscriptions.of_guild(GUILD)
        return any(s.reason and "archived" in s.reason for s in subs)

    await wait_until(archived_paused, what="the thread subscription paused")
    # The refused message was given up; the next one still went out.
    assert titles(step_messages(fake, other)) == ["Archive001 · Step 3: Model Uploading"]


async def test_training_id_autocomplete_suggests_followed_trainings(
    bot: TunewatchBot, fake: FakeDiscord, sim: Simulator
) -> None:
    for tid in ("AutoAbc001", "AutoAbc002", "Other_0001"):
        sim.add_training(tid, stage=1)
        await subscribe(fake, tid)
    sim.add_training("MineOnly01", stage=1)
    await notify(fake, "MineOnly01", USER + 7)

    async def choices(user: int, current: str, command: str = "training-status") -> list[str]:
        interaction = await fake.autocomplete(
            command,
            {"training_id": current},
            focused="training_id",
            guild_id=GUILD,
            channel_id=CHANNEL,
            user_id=user,
        )
        response = await interaction.wait_response()
        assert response["type"] == 8
        assert not interaction.late
        return [c["value"] for c in response["data"]["choices"]]

    assert await choices(USER, "Auto") == ["AutoAbc002", "AutoAbc001"]
    assert await choices(USER, "") == ["Other_0001", "AutoAbc002", "AutoAbc001"]
    assert await choices(USER, "%") == []  # LIKE wildcards are literal
    assert await choices(USER, "Other_") == ["Other_0001"]
    # A member's own DM alerts are suggested to them, in any server; others' are not.
    assert "MineOnly01" in await choices(USER + 7, "", "training-notify")
    assert "MineOnly01" not in await choices(USER, "")
