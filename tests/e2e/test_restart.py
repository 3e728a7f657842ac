"""`python -m bot` killed hard mid-delivery and while steps complete, then restarted on the same
database: every step exactly once per channel, none missing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bot.sdapi.simulator import Simulator
from tests.support.fakediscord import FakeDiscord
from tests.support.harness import (
    CHANNEL,
    GUILD,
    BotProcess,
    settings_for,
    step_messages,
    subscribe,
    titles,
)

pytestmark = pytest.mark.timeout(120)

EXPECTED = [
    "Restart001 · Step 2: Training Done",
    "Restart001 · Step 3: Model Uploading",
    "Restart001 · Step 4: Model Uploaded",
    "Restart001 · Model ready",
]


async def test_kill_mid_delivery_and_restart(
    fake: FakeDiscord, sim: Simulator, db_path: Path
) -> None:
    channels = [CHANNEL, CHANNEL + 1, CHANNEL + 2]
    for channel in channels[1:]:
        fake.add_channel(GUILD, channel, f"room-{channel}")
    training = sim.add_training("Restart001", stage=1)
    env = settings_for(fake, sim, db_path)

    first = BotProcess(env)
    await first.start()
    try:
        await fake.wait_for(lambda f: f.identify_count == 1, timeout=30, what="first READY")
        for channel in channels:
            assert "Subscribed" in (await subscribe(fake, "Restart001", channel))["content"]

        # Discord receives step 2 for the first channel, but the bot dies before it hears back
        # and before it can write the "sent" mark.
        hold = fake.hold(rf"^/channels/{CHANNEL}/messages$")
        training.advance()
        await asyncio.wait_for(hold.arrived.wait(), timeout=20)
        await fake.wait_for(
            lambda f: all(len(step_messages(f, c)) == 1 for c in channels[1:]), timeout=20
        )
    finally:
        await first.kill()
    hold.release()
    await fake.wait_for(lambda f: len(step_messages(f, CHANNEL)) == 1)

    # Steps 3 and 4 complete while no bot is running (the documented log has no compressing line).
    training.advance(3)

    second = BotProcess(env)
    await second.start()
    try:
        await fake.wait_for(lambda f: f.identify_count == 2, timeout=30, what="second READY")
        await fake.wait_for(
            lambda f: all(len(step_messages(f, c)) == 3 for c in channels), timeout=30
        )
        training.advance(2)
        await fake.wait_for(
            lambda f: all(len(step_messages(f, c)) == 4 for c in channels), timeout=30
        )
    finally:
        await second.kill()

    for channel in channels:
        messages = step_messages(fake, channel)
        assert titles(messages) == EXPECTED, channel
        # The bot was down for a moment, less than a gap worth a "late" mark (two poll
        # intervals; tests/integration/test_tracker.py covers a long one).
        late = [bool(m.embeds[0].get("footer")) for m in messages]
        assert late == [False] * len(EXPECTED), (channel, late)

    # The message the first bot sent without hearing back was found in the channel's history
    # by the second one, which marked it sent instead of posting it again.
    path = f"/channels/{CHANNEL}/messages"
    posts = [r for r in fake.requests if r.path == path and r.method == "POST"]
    step_two_nonce = step_messages(fake, CHANNEL)[0].nonce
    assert sum(1 for r in posts if r.json["nonce"] == step_two_nonce) == 1
    assert any(r.path == path and r.method == "GET" for r in fake.requests)
    # Command definitions did not change, so the restart did not sync them again.
    assert len(fake.command_syncs) == 1
    assert "Traceback" not in first.log + second.log


@pytest.mark.parametrize("read_history", [True, False], ids=["history", "no-history"])
async def test_a_send_lost_to_a_crash_is_not_posted_again_past_the_nonce_window(
    sim: Simulator, db_path: Path, read_history: bool
) -> None:
    # Discord keeps a nonce for a few minutes; this fake forgets it at once, as after a long
    # outage. Only the channel's history can then tell that the message is there already:
    # without Read Message History, the message shows twice.
    fake = FakeDiscord(nonce_window=0.0)
    fake.add_channel(GUILD, CHANNEL, "training-log", read_history=read_history)
    await fake.start()
    try:
        training = sim.add_training("Lost000001", stage=1)
        env = settings_for(fake, sim, db_path)
        first = BotProcess(env)
        await first.start()
        try:
            await fake.wait_for(lambda f: f.identify_count == 1, timeout=30, what="READY")
            assert "Subscribed" in (await subscribe(fake, "Lost000001"))["content"]
            hold = fake.hold(rf"^/channels/{CHANNEL}/messages$")
            training.advance()  # step 2 reaches Discord; the bot dies before it hears back
            await asyncio.wait_for(hold.arrived.wait(), timeout=20)
        finally:
            await first.kill()
        hold.release()
        await fake.wait_for(lambda f: len(step_messages(f, CHANNEL)) == 1)

        second = BotProcess(env)
        await second.start()
        try:
            training.advance(6)
            await fake.wait_for(
                lambda f: any("Model ready" in t for t in titles(step_messages(f, CHANNEL))),
                timeout=30,
                what="the final message",
            )
        finally:
            await second.kill()
        shown = titles(step_messages(fake, CHANNEL))
        step_two = shown.count("Lost000001 · Step 2: Training Done")
        assert step_two == (1 if read_history else 2), shown
    finally:
        await fake.stop()
