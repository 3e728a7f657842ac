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
        # Steps that completed while the bot was down are marked late; the others are not.
        late = [bool(m.embeds[0].get("footer")) for m in messages]
        assert late == [False, True, True, False], (channel, late)

    # The resend after the crash carried the same nonce, and Discord deduplicated it.
    posts = [r for r in fake.requests if r.path == f"/channels/{CHANNEL}/messages"]
    step_two_nonce = step_messages(fake, CHANNEL)[0].nonce
    assert sum(1 for r in posts if r.json["nonce"] == step_two_nonce) == 2
    # Command definitions did not change, so the restart did not sync them again.
    assert len(fake.command_syncs) == 1
    assert "Traceback" not in first.log + second.log


async def test_sigterm_closes_cleanly(fake: FakeDiscord, sim: Simulator, db_path: Path) -> None:
    bot = BotProcess(settings_for(fake, sim, db_path))
    await bot.start()
    try:
        await fake.wait_for(lambda f: f.identify_count == 1, timeout=30, what="READY")
        assert bot.proc is not None
        bot.proc.terminate()
        assert await asyncio.wait_for(bot.proc.wait(), timeout=20) == 0
    finally:
        await bot.kill()
    assert "Traceback" not in bot.log
