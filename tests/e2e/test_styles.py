"""Subscription styles end to end, through the real discord.py client against the fake Discord:
the exact messages and edits a channel sees over a whole training for each style, mentions that
reach exactly who was named, and the refusals at subscribe time."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.app import TunewatchBot
from bot.sdapi.simulator import Simulator
from tests.support.fakediscord import MENTION_EVERYONE, FakeDiscord, Message
from tests.support.harness import (
    CHANNEL,
    GUILD,
    MANAGE_CHANNELS,
    USER,
    running_bot,
    settings_for,
    step_messages,
)

pytestmark = pytest.mark.timeout(90)

ROLE = 600000000000000001  # mentionable
QUIET_ROLE = 600000000000000002  # not mentionable
FRIEND = 7002
STEP_LINE = re.compile(r"^<t:\d+:t> (Step \d: .+)$", re.MULTILINE)


@pytest.fixture
async def bot(fake: FakeDiscord, sim: Simulator, db_path: Path) -> AsyncIterator[TunewatchBot]:
    fake.add_role(GUILD, ROLE, "trainers", mentionable=True)
    fake.add_role(GUILD, QUIET_ROLE, "quiet")
    env = settings_for(fake, sim, db_path, MAX_BACKOFF_SECONDS="0.5")
    async with running_bot(env) as running:
        yield running


async def subscribe(
    fake: FakeDiscord, training_id: str, channel_id: int = CHANNEL, **options: Any
) -> dict[str, Any]:
    interaction = await fake.invoke(
        "training-subscribe",
        {"training_id": training_id, **options},
        guild_id=GUILD,
        channel_id=channel_id,
        user_id=USER,
        permissions=MANAGE_CHANNELS,
    )
    final = await interaction.wait_final(timeout=20)
    assert not interaction.late
    return final


def title(state: dict[str, Any]) -> str:
    return state["embeds"][0]["title"]


def steps_shown(state: dict[str, Any]) -> list[str]:
    return STEP_LINE.findall(state["embeds"][0].get("description") or "")


def sub_buttons(message: Message) -> list[str]:
    return [re.sub(r":\d+$", ":N", c) for c in message.custom_ids()]


async def wait_messages(fake: FakeDiscord, channel_id: int, n: int, what: str) -> list[Message]:
    await fake.wait_for(lambda f: len(step_messages(f, channel_id)) >= n, timeout=20, what=what)
    return step_messages(fake, channel_id)


async def test_live_one_message_edited_at_each_step_then_a_reply_that_pings(
    bot: TunewatchBot, fake: FakeDiscord, sim: Simulator
) -> None:
    training = sim.add_training("Live000001", stage=1)
    answer = await subscribe(fake, "Live000001", style="live", mention=ROLE, mention_on="ready")
    assert answer["content"].startswith(
        "Subscribed this channel to `Live000001`: the message below is kept up to date"
    )
    assert f"pinging <@&{ROLE}> when the model is ready" in answer["content"]
    (live,) = await wait_messages(fake, CHANNEL, 1, "the live message")
    assert live.silent
    assert sub_buttons(live) == ["tw:refresh:s:N", "tw:dm:s:N", "tw:unsub:s:N"]
    assert steps_shown(live.snapshot()) == ["Step 1: Training Started"]

    training.advance(6)  # steps 2 to 4, then ready: whatever the polls see at once
    live, reply = await wait_messages(fake, CHANNEL, 2, "the final reply")
    states = live.visible_states()
    assert [title(s) for s in states] == ["Training Live000001"] * 4 + [
        "Training Live000001 · Model ready"
    ]
    assert [len(steps_shown(s)) for s in states] == [1, 2, 3, 4, 4]
    assert steps_shown(states[-1]) == [
        "Step 1: Training Started",
        "Step 2: Training Done",
        "Step 3: Model Uploading",
        "Step 4: Model Uploaded",
    ]
    assert "ETA <t:" in states[1]["embeds"][0]["description"]
    final_text = states[-1]["embeds"][0]["description"]
    assert "Took at least" in final_text
    assert "Next: generate images with model_id `Live000001`." in final_text
    assert len(live.edits) == 4  # one per step row and the end: nothing edited twice
    assert all("components" not in e for e in live.edits[:-1])  # a step edit leaves buttons

    # The short final message: a reply to the live message, pinging exactly the role.
    assert reply.message_reference is not None
    assert reply.message_reference["message_id"] == str(live.id)
    assert reply.content == f"<@&{ROLE}>"
    assert reply.pinged_roles == [ROLE]
    assert (reply.pinged_users, reply.pinged_everyone) == ([], False)
    assert reply.allowed_mentions == {"parse": [], "roles": [ROLE], "replied_user": False}
    assert not reply.silent
    assert reply.nonce
    assert title(reply.snapshot()) == "Live000001 · Model ready"
    assert sub_buttons(reply) == ["tw:refresh:s:N", "tw:dm:s:N", "tw:unsub:s:N"]


async def test_thread_summary_in_the_channel_steps_in_its_thread(
    bot: TunewatchBot, fake: FakeDiscord, sim: Simulator
) -> None:
    training = sim.add_training("Thread0001", stage=1, fail_at=5, failure_reason="Disk full")
    answer = await subscribe(fake, "Thread0001", style="thread", mention=FRIEND)
    assert "a thread under the message below" in answer["content"]
    (summary,) = await wait_messages(fake, CHANNEL, 1, "the summary")
    await fake.wait_for(lambda f: f.threads_of(CHANNEL) == [summary.id], what="the thread")
    assert fake.channels[summary.id]["name"] == "Training Thread0001"
    assert fake.channels[summary.id]["auto_archive_duration"] == 10080

    training.advance(4)  # steps 2 and 3, then it fails
    summary, final = await wait_messages(fake, CHANNEL, 2, "the final message")
    in_thread = fake.messages_in(summary.id)
    assert [title(m.snapshot()) for m in in_thread] == [
        "Thread0001 · Step 2: Training Done",
        "Thread0001 · Step 3: Model Uploading",
    ]
    assert all(m.silent for m in in_thread)
    states = summary.visible_states()
    assert [title(s) for s in states] == [
        "Training Thread0001",  # opened at step 1
        "Training Thread0001",  # step 2
        "Training Thread0001",  # step 3
        "Training Thread0001 · Training failed",
    ]
    descriptions = [s["embeds"][0]["description"] for s in states]
    assert all("Each step is posted in the thread" in d for d in descriptions[:3])
    assert ["Step 3: Model Uploading" in d for d in descriptions] == [False, False, True, True]
    assert "Step 2: Training Done" in descriptions[1]
    assert final.message_reference is not None
    assert final.message_reference["message_id"] == str(summary.id)
    assert title(final.snapshot()) == "Thread0001 · Training failed"
    description = final.embeds[0]["description"]
    assert "Reason: Disk full" in description
    assert "Next: fix the cause, then start a new training" in description
    assert (final.content, final.pinged_users) == (f"<@{FRIEND}>", [FRIEND])
    assert final.allowed_mentions == {"parse": [], "users": [FRIEND], "replied_user": False}


async def test_final_only_the_end_and_a_mention_only_on_its_outcome(
    bot: TunewatchBot, fake: FakeDiscord, sim: Simulator
) -> None:
    training = sim.add_training("Final00001", stage=1)
    await subscribe(fake, "Final00001", style="final", mention=ROLE, mention_on="failed")
    training.advance(6)
    (final,) = await wait_messages(fake, CHANNEL, 1, "the final message")
    assert title(final.snapshot()) == "Final00001 · Model ready"
    assert final.content == ""  # it asked for a ping on failure only
    assert final.pinged_roles == []
    assert final.allowed_mentions == {"parse": []}
    assert not final.silent
    assert sub_buttons(final) == ["tw:refresh:s:N", "tw:dm:s:N", "tw:unsub:s:N"]


async def test_steps_are_silent_the_end_is_not(
    bot: TunewatchBot, fake: FakeDiscord, sim: Simulator
) -> None:
    training = sim.add_training("Steps00001", stage=1, timeline="dreambooth")
    await subscribe(fake, "Steps00001")
    training.advance(7)
    # Steps 2, 3 (compressing), 3 (uploading) and 4, then the end.
    messages = await wait_messages(fake, CHANNEL, 5, "steps and the end")
    assert [m.silent for m in messages] == [True] * 4 + [False]
    assert [m.custom_ids() == [] for m in messages] == [True] * 4 + [False]
    end = messages[-1].embeds[0]["description"]
    # The trainer's own clock: 1,502 s at its last step, so about 25 min.
    assert "Took about 2" in end
    assert "Next: generate images with model_id `Steps00001`." in end


async def test_api_text_with_mentions_pings_nobody(
    bot: TunewatchBot, fake: FakeDiscord, sim: Simulator
) -> None:
    # Even with Mention Everyone granted, text from the API cannot ping: only the mention the
    # subscription names does.
    fake.set_bot_permissions(GUILD, MENTION_EVERYONE)
    hostile = f"@everyone @here <@&{QUIET_ROLE}> <@{FRIEND}> failed"
    second = CHANNEL + 1
    fake.add_channel(GUILD, second, "plain")
    training = sim.add_training("Hostile001", stage=1, fail_at=2, failure_reason=hostile)
    await subscribe(fake, "Hostile001", style="live", mention=ROLE)
    await subscribe(fake, "Hostile001", second)
    training.advance(2)
    _, reply = await wait_messages(fake, CHANNEL, 2, "the live style's end")
    (plain_end,) = await wait_messages(fake, second, 1, "the steps style's end")
    for message in (reply, plain_end, *step_messages(fake, CHANNEL)):
        assert message.pinged_everyone is False
        assert message.pinged_users == []
        assert QUIET_ROLE not in message.pinged_roles
    assert reply.pinged_roles == [ROLE]
    assert plain_end.pinged_roles == []
    assert "@\u200beveryone" in plain_end.embeds[0]["description"]  # shown, inert


async def test_subscribe_refusals_say_what_is_missing(
    bot: TunewatchBot, fake: FakeDiscord, sim: Simulator
) -> None:
    sim.add_training("Refuse0001", stage=1)
    no_threads = CHANNEL + 2
    fake.add_channel(GUILD, no_threads, "no-threads", create_threads=False)

    async def refused(channel_id: int, **options: Any) -> str:
        interaction = await fake.invoke(
            "training-subscribe",
            {"training_id": "Refuse0001", **options},
            guild_id=GUILD,
            channel_id=channel_id,
            user_id=USER,
            permissions=MANAGE_CHANNELS,
        )
        final = await interaction.wait_final()
        assert interaction.ephemeral(), final
        return final["embeds"][0]["description"]

    assert "needs tunewatch to have Create Public Threads in this channel" in await refused(
        no_threads, style="thread"
    )
    assert f"tunewatch cannot ping <@&{QUIET_ROLE}>: make the role mentionable" in await refused(
        CHANNEL, mention=QUIET_ROLE
    )
    assert "does not ping @everyone" in await refused(CHANNEL, mention=GUILD)
    assert sim.request_count("Refuse0001") == 0  # refused before asking the API
    assert step_messages(fake, no_threads) == []

    # Mention Everyone lets tunewatch ping a role that is not mentionable.
    fake.set_bot_permissions(GUILD, MENTION_EVERYONE)
    answer = await subscribe(fake, "Refuse0001", mention=QUIET_ROLE)
    assert answer["content"].startswith("Subscribed this channel")


async def test_a_deleted_live_message_is_posted_again_once(
    bot: TunewatchBot, fake: FakeDiscord, sim: Simulator
) -> None:
    training = sim.add_training("Deleted001", stage=1)
    await subscribe(fake, "Deleted001", style="live")
    (first,) = await wait_messages(fake, CHANNEL, 1, "the live message")
    fake.delete_message(first.id)
    training.advance()  # step 2: its edit finds the message gone and posts it again
    _, again = await wait_messages(fake, CHANNEL, 2, "the live message again")
    assert steps_shown(again.snapshot()) == ["Step 1: Training Started", "Step 2: Training Done"]
    training.advance(5)
    messages = await wait_messages(fake, CHANNEL, 3, "the final reply")
    assert [m.id for m in messages[:2]] == [first.id, again.id]  # no third live message
    reply = messages[2]
    assert title(again.snapshot()) == "Training Deleted001 · Model ready"
    assert len(steps_shown(again.snapshot())) == 4
    assert reply.message_reference is not None
    assert reply.message_reference["message_id"] == str(again.id)
    sub = await bot.store.subscriptions.find(
        *_channel_sub("Deleted001"), channel_id=CHANNEL, user_id=USER
    )
    assert sub is not None
    assert sub.live_message_id == again.id


def _channel_sub(training_id: str) -> tuple[Any, str]:
    from bot.store import SubscriptionKind

    return SubscriptionKind.CHANNEL, training_id
