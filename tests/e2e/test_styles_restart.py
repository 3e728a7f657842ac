"""`python -m bot` killed hard in the middle of a training followed in every style, then started
again on the same database: each channel sees exactly its messages and edits (no lost step in
the live message, no second live message, one final message), and the buttons sent by the
first process work in the second; a stale one answers privately."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from bot.sdapi.simulator import Simulator
from tests.support.fakediscord import FakeDiscord, Interaction, Message
from tests.support.harness import (
    CHANNEL,
    GUILD,
    MANAGE_CHANNELS,
    USER,
    BotProcess,
    settings_for,
    step_messages,
)

pytestmark = pytest.mark.timeout(120)

ROLE = 600000000000000001
FRIEND = 7002
STRANGER = 7003
STEPS, LIVE, THREAD, FINAL, GONE = (CHANNEL + i for i in range(5))
TID = "Restart0S1"
STEP_LINE = re.compile(r"^<t:\d+:t> (Step \d: .+)$", re.MULTILINE)


def titles(messages: list[Message]) -> list[str]:
    return [m.embeds[0]["title"] for m in messages]


def steps_shown(state: dict[str, object]) -> list[str]:
    embeds = state["embeds"]
    assert isinstance(embeds, list)
    return STEP_LINE.findall(embeds[0].get("description") or "")


async def command(fake: FakeDiscord, name: str, channel: int, **options: object) -> Interaction:
    interaction = await fake.invoke(
        name,
        {"training_id": TID, **options},
        guild_id=GUILD,
        channel_id=channel,
        user_id=USER,
        permissions=MANAGE_CHANNELS,
    )
    await interaction.wait_final(timeout=20)
    assert not interaction.late
    return interaction


async def click(fake: FakeDiscord, message: Message, action: str, user: int) -> str:
    custom_id = next(c for c in message.custom_ids() if c.startswith(f"tw:{action}:"))
    interaction = await fake.click(message, custom_id, user_id=user)
    text = await interaction.wait_private(timeout=20)
    assert not interaction.late
    return text


async def test_every_style_across_a_kill_and_restart(
    fake: FakeDiscord, sim: Simulator, db_path: Path
) -> None:
    for channel in (LIVE, THREAD, FINAL, GONE):
        fake.add_channel(GUILD, channel, f"room-{channel}")
    fake.add_role(GUILD, ROLE, "trainers", mentionable=True)
    training = sim.add_training(TID, stage=1)
    env = settings_for(fake, sim, db_path)

    first = BotProcess(env)
    await first.start()
    try:
        await fake.wait_for(lambda f: f.identify_count == 1, timeout=30, what="first READY")
        await command(fake, "training-subscribe", STEPS)
        await command(fake, "training-subscribe", LIVE, style="live", mention=ROLE)
        await command(fake, "training-subscribe", THREAD, style="thread")
        await command(fake, "training-subscribe", FINAL, style="final")
        await command(fake, "training-subscribe", GONE, style="live")
        await fake.wait_for(
            lambda f: (
                all(len(step_messages(f, c)) == 1 for c in (LIVE, THREAD, GONE))
                and len(f.threads_of(THREAD)) == 1
            ),
            timeout=20,
            what="the live messages, the summary and its thread",
        )
        (live,) = step_messages(fake, LIVE)
        # Discord receives the live message's edit for step 2; the bot dies before the answer.
        hold = fake.hold(rf"^/channels/{LIVE}/messages/{live.id}$")
        training.advance()
        await asyncio.wait_for(hold.arrived.wait(), timeout=20)
    finally:
        await first.kill()
    hold.release()
    await fake.wait_for(lambda f: len(live.versions) == 2, what="the held edit applied")
    training.advance(3)  # steps 3 and 4 while no bot runs

    second = BotProcess(env)
    await second.start()
    try:
        await fake.wait_for(lambda f: f.identify_count == 2, timeout=30, what="second READY")
        # Buttons sent by the first process work in the second.
        assert "1/6" not in await click(fake, live, "refresh", STRANGER)
        assert "link back to the live message" in await click(fake, live, "dm", FRIEND)
        (gone,) = step_messages(fake, GONE)
        await command(fake, "training-unsubscribe", GONE)
        assert "subscription no longer exists" in await click(fake, gone, "refresh", STRANGER)
        assert all(c.get("disabled") for row in gone.components for c in row["components"])

        training.advance(2)
        await fake.wait_for(
            lambda f: (
                len(step_messages(f, STEPS)) == 4
                and len(step_messages(f, LIVE)) == 2
                and len(step_messages(f, THREAD)) == 2
                and len(step_messages(f, FINAL)) == 1
                and len(f.dms_to(FRIEND)) == 1
            ),
            timeout=40,
            what="every channel's final message and the DM",
        )
    finally:
        await second.kill()

    # steps: each step once, silent; the end once, not silent.
    steps = step_messages(fake, STEPS)
    assert titles(steps) == [
        f"{TID} · Step 2: Training Done",
        f"{TID} · Step 3: Model Uploading",
        f"{TID} · Step 4: Model Uploaded",
        f"{TID} · Model ready",
    ]
    assert [m.silent for m in steps] == [True, True, True, False]

    # live: one live message showing every step in turn, then its final form; one reply.
    live_again, reply = step_messages(fake, LIVE)
    assert live_again.id == live.id
    states = live.visible_states()
    assert [len(steps_shown(s)) for s in states] == [1, 2, 3, 4, 4]
    assert states[-1]["embeds"][0]["title"] == f"Training {TID} · Model ready"
    assert reply.message_reference is not None
    assert reply.message_reference["message_id"] == str(live.id)
    assert (reply.content, reply.pinged_roles) == (f"<@&{ROLE}>", [ROLE])

    # thread: the summary showing every step in turn, like the live message, then its final
    # form; each step once in the thread.
    summary, thread_end = step_messages(fake, THREAD)
    assert fake.threads_of(THREAD) == [summary.id]
    assert titles(fake.messages_in(summary.id)) == [
        f"{TID} · Step 2: Training Done",
        f"{TID} · Step 3: Model Uploading",
        f"{TID} · Step 4: Model Uploaded",
    ]
    states = summary.visible_states()
    assert [len(steps_shown(s)) for s in states] == [1, 2, 3, 4, 4]
    assert states[-1]["embeds"][0]["title"] == f"Training {TID} · Model ready"
    assert titles([thread_end]) == [f"{TID} · Model ready"]

    # final: the end only.
    assert titles(step_messages(fake, FINAL)) == [f"{TID} · Model ready"]
    assert len(step_messages(fake, GONE)) == 1  # unsubscribed: nothing more there

    (note,) = fake.dms_to(FRIEND)
    assert f"/{GUILD}/{LIVE}/{live.id}" in note.embeds[0]["description"]
    assert "Traceback" not in first.log + second.log
