"""Buttons end to end: on live and final messages (Refresh, DM me when ready, Unsubscribe), on
/training-status answers (Refresh, Follow here, DM me when ready), stale ones, /training-list in
pages, and /training-notify off. Each click is answered within Discord's 3 seconds (the fake
answers a late callback with 10062, which these tests would see)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.app import TunewatchBot
from bot.lookups import StatusLookups
from bot.sdapi.simulator import Fault, Simulator
from bot.store import SubscriptionKind, SubscriptionStatus
from tests.support.fakediscord import FakeDiscord, Interaction, Message
from tests.support.harness import (
    CHANNEL,
    GUILD,
    MANAGE_CHANNELS,
    USER,
    running_bot,
    settings_for,
    step_messages,
    wait_until,
)

pytestmark = pytest.mark.timeout(90)

FRIEND = 7002
STRANGER = 7003


@pytest.fixture
async def bot(fake: FakeDiscord, sim: Simulator, db_path: Path) -> AsyncIterator[TunewatchBot]:
    env = settings_for(fake, sim, db_path, MAX_BACKOFF_SECONDS="0.5")
    async with running_bot(env) as running:
        # Members' asks share one request for a few seconds: these tests click Refresh right
        # after a step, and want to see it.
        running.lookups = StatusLookups(running.sdapi, fresh_for=0.0)
        yield running


async def live_message(fake: FakeDiscord, sim: Simulator, training_id: str) -> Message:
    interaction = await fake.invoke(
        "training-subscribe",
        {"training_id": training_id, "style": "live"},
        guild_id=GUILD,
        channel_id=CHANNEL,
        user_id=USER,
        permissions=MANAGE_CHANNELS,
    )
    await interaction.wait_final(timeout=20)
    await fake.wait_for(lambda f: len(step_messages(f, CHANNEL)) == 1, what="the live message")
    return step_messages(fake, CHANNEL)[0]


def button_id(message: Message, action: str) -> str:
    return next(c for c in message.custom_ids() if c.startswith(f"tw:{action}:"))


async def click(
    fake: FakeDiscord, message: Message, action: str, user: int, permissions: int = 0
) -> Interaction:
    interaction = await fake.click(
        message, button_id(message, action), user_id=user, permissions=permissions
    )
    await interaction.wait_response(timeout=10)
    assert not interaction.late
    assert interaction.callback_statuses[0] == 200
    return interaction


async def test_refresh_dm_and_unsubscribe_on_a_live_message(
    bot: TunewatchBot, fake: FakeDiscord, sim: Simulator
) -> None:
    training = sim.add_training("Button0001", stage=1)
    live = await live_message(fake, sim, "Button0001")

    # Refresh: the status now, privately; a step found on the way reaches the live message.
    training.advance()
    refresh = await click(fake, live, "refresh", STRANGER)
    await refresh.wait_final()
    assert refresh.ephemeral()
    assert "2/6 steps" in str(refresh.followups or refresh.responses)
    await fake.wait_for(lambda f: len(live.visible_states()) == 2, what="the live message edited")

    # DM me when ready: an alert for whoever clicks, linking back to the live message.
    dm = await click(fake, live, "dm", FRIEND)
    assert "The DM will link back to the live message." in await dm.wait_private()
    again = await click(fake, live, "dm", FRIEND)
    assert "You already get a DM" in await again.wait_private()

    # Unsubscribe: not for a member who neither subscribed nor manages channels.
    refused = await click(fake, live, "unsub", STRANGER)
    assert "Only the person who subscribed" in await refused.wait_private()
    assert not live.button(button_id(live, "unsub")).get("disabled")

    training.advance(5)
    await fake.wait_for(lambda f: len(f.dms_to(FRIEND)) == 1, timeout=20, what="the DM")
    (note,) = fake.dms_to(FRIEND)
    text = note.embeds[0]["description"]
    assert text.startswith("From #training-log in **Trainers** · [the live message]")
    assert f"https://discord.com/channels/{GUILD}/{CHANNEL}/{live.id}" in text
    assert "Took at least" in text
    assert "Next: generate images with model_id `Button0001`." in text
    assert note.embeds[0]["title"] == "Button0001 · Model ready"
    assert note.components == []

    # The creator may unsubscribe (the training is over: it leaves /training-list too).
    gone = await click(fake, live, "unsub", USER)
    assert await gone.wait_private() == "This channel no longer follows `Button0001`."
    assert all(c.get("disabled") for row in live.components for c in row["components"])


async def test_a_stale_button_answers_privately_and_turns_itself_off(
    bot: TunewatchBot, fake: FakeDiscord, sim: Simulator
) -> None:
    sim.add_training("Stale00001", stage=1)
    live = await live_message(fake, sim, "Stale00001")
    interaction = await fake.invoke(
        "training-unsubscribe",
        {"training_id": "Stale00001"},
        guild_id=GUILD,
        channel_id=CHANNEL,
        user_id=USER,
        permissions=MANAGE_CHANNELS,
    )
    await interaction.wait_final()
    stale = await click(fake, live, "refresh", STRANGER)
    assert "subscription no longer exists" in await stale.wait_private()
    assert stale.responses[0]["type"] == 7  # the message itself is updated...
    assert live.custom_ids()  # ...its buttons kept, turned off
    assert all(c.get("disabled") for row in live.components for c in row["components"])
    assert sim.request_count("Stale00001") == 1  # the click asked the API nothing


async def test_buttons_on_a_status_answer(
    bot: TunewatchBot, fake: FakeDiscord, sim: Simulator
) -> None:
    training = sim.add_training("Status0001", stage=1)
    interaction = await fake.invoke(
        "training-status",
        {"training_id": "Status0001"},
        guild_id=GUILD,
        channel_id=CHANNEL,
        user_id=USER,
    )
    await interaction.wait_final()
    answer = interaction.original
    assert answer is not None
    assert answer.custom_ids() == [
        "tw:refresh:t:v3:Status0001",
        "tw:follow:t:v3:Status0001",
        "tw:dm:t:v3:Status0001",
    ]

    # Refresh shows the status again in place.
    training.advance()
    refresh = await click(fake, answer, "refresh", STRANGER)
    await fake.wait_for(
        lambda f: "2/6 steps" in str(answer.embeds), what="the answer refreshed in place"
    )
    assert refresh.private_texts() == []

    # Follow here: with the same rules as /training-subscribe.
    refused = await click(fake, answer, "follow", STRANGER)
    assert "needs the Manage Channels permission" in await refused.wait_private()
    follow = await click(fake, answer, "follow", USER, MANAGE_CHANNELS)
    assert "Subscribed this channel to `Status0001`" in await follow.wait_private()
    sub = await bot.store.subscriptions.find(
        SubscriptionKind.CHANNEL, "Status0001", channel_id=CHANNEL, user_id=USER
    )
    assert sub is not None

    dm = await click(fake, answer, "dm", FRIEND)
    assert f"The DM will link back to <#{CHANNEL}>" in await dm.wait_private()
    training.advance(5)
    await fake.wait_for(lambda f: len(f.dms_to(FRIEND)) == 1, timeout=20, what="the DM")
    text = fake.dms_to(FRIEND)[0].embeds[0]["description"]
    assert text.startswith("From #training-log in **Trainers**.")


async def test_notify_off_and_a_limit_that_says_how_to_free_a_slot(
    fake: FakeDiscord, sim: Simulator, db_path: Path
) -> None:
    env = settings_for(fake, sim, db_path, MAX_DM_ALERTS_PER_USER="1")
    async with running_bot(env) as bot:
        for tid in ("Alert00001", "Alert00002"):
            sim.add_training(tid, stage=1)

        async def notify(training_id: str, **options: Any) -> str:
            interaction = await fake.invoke(
                "training-notify",
                {"training_id": training_id, **options},
                guild_id=GUILD,
                channel_id=CHANNEL,
                user_id=USER,
            )
            final = await interaction.wait_final()
            assert interaction.ephemeral()
            return final.get("content") or final["embeds"][0]["description"]

        assert (await notify("Alert00001")).startswith("I will DM you")
        full = await notify("Alert00002")
        assert "You already have 1 DM alerts, the most allowed" in full
        assert "turn one off with /training-notify and its id with off: True" in full
        assert await notify("Alert00001", off=True) == (
            "Your DM alert for `Alert00001` is off: no DM will come for it."
        )
        assert await bot.store.subscriptions.alerts_of(USER) == []
        assert "nothing changed" in await notify("Alert00001", off=True)
        assert (await notify("Alert00002")).startswith("I will DM you")


async def test_list_in_words_finished_hidden_and_pages(
    bot: TunewatchBot, fake: FakeDiscord, sim: Simulator
) -> None:
    channels = [CHANNEL + i for i in range(1, 13)]
    for i, channel in enumerate(channels):
        fake.add_channel(GUILD, channel, f"room-{channel}")
        tid = f"List{channel:06d}"
        sim.add_training(tid, stage=2)
        interaction = await fake.invoke(
            "training-subscribe",
            {"training_id": tid, "style": "live" if i == 0 else "steps"},
            guild_id=GUILD,
            channel_id=channel,
            user_id=USER + i,  # a member may ask 10 times a minute
            permissions=MANAGE_CHANNELS,
        )
        await interaction.wait_final(timeout=20)
    # One finished two days ago: hidden unless asked for.
    old = await bot.store.subscriptions.find(
        SubscriptionKind.CHANNEL, f"List{channels[-1]:06d}", channel_id=channels[-1], user_id=0
    )
    assert old is not None
    await _finish_long_ago(bot, old.id)

    async def listing(**options: Any) -> tuple[Interaction, dict[str, Any]]:
        interaction = await fake.invoke(
            "training-list", options, guild_id=GUILD, channel_id=CHANNEL, user_id=USER
        )
        final = await interaction.wait_final()
        assert interaction.ephemeral()
        return interaction, final["embeds"][0]

    interaction, first = await listing()
    assert first["footer"]["text"] == "Page 1 of 2"
    assert "**This server** (11 active)" in first["description"]
    # Newest first, states in words.
    assert (
        f"`List{channels[-2]:06d}` → <#{channels[-2]}> · Training done · next check <t:"
        in (first["description"])
    )
    assert "1 finished more than 24 hours ago is hidden" in first["description"]
    assert f"List{channels[-1]:06d}" not in str(first)
    page_message = interaction.original
    assert page_message is not None
    assert page_message.custom_ids() == ["tw:list:none:previous", "tw:list:2:0"]
    turn = await fake.click(page_message, "tw:list:2:0", user_id=USER)
    await turn.wait_response()
    second = page_message.embeds[0]
    assert second["footer"]["text"] == "Page 2 of 2"
    assert (
        f"`List{channels[0]:06d}` → <#{channels[0]}> · Training done · live message"
        in (second["description"])
    )
    assert "**Your DM alerts**\nNo DM alerts." in second["description"]
    assert page_message.custom_ids() == ["tw:list:1:0", "tw:list:none:next"]

    _, everything = await listing(show_finished=True)
    assert f"`List{channels[-1]:06d}`" in everything["description"]
    assert "Model ready · done" in everything["description"]


async def _finish_long_ago(bot: TunewatchBot, sub_id: int) -> None:
    async with bot.store.db.transaction() as tx:
        await tx.execute(
            "UPDATE subscriptions SET status = 'done', updated_at = 0 WHERE id = ?", (sub_id,)
        )
        await tx.execute(
            "UPDATE trainings SET terminal = 'ready' WHERE training_id IN "
            "(SELECT training_id FROM subscriptions WHERE id = ?)",
            (sub_id,),
        )

    async def done() -> bool:
        sub = await bot.store.subscriptions.get(sub_id)
        return sub is not None and sub.status is SubscriptionStatus.DONE

    await wait_until(done, what="the subscription done")


async def test_a_click_answers_within_three_seconds_when_the_api_hangs(
    bot: TunewatchBot, fake: FakeDiscord, sim: Simulator
) -> None:
    sim.add_training("Hang000001", stage=1)
    live = await live_message(fake, sim, "Hang000001")
    status = await fake.invoke(
        "training-status",
        {"training_id": "Hang000001"},
        guild_id=GUILD,
        channel_id=CHANNEL,
        user_id=USER,
    )
    await status.wait_final()
    answer = status.original
    assert answer is not None
    sim.inject(Fault.HANG, count=None)
    try:
        on_live, on_answer = await asyncio.gather(
            fake.click(live, button_id(live, "refresh"), user_id=STRANGER),
            fake.click(answer, button_id(answer, "refresh"), user_id=FRIEND),
        )
        texts = await asyncio.gather(on_live.wait_private(20), on_answer.wait_private(20))
    finally:
        sim.release_hangs()
    # Deferred within Discord's 3 seconds (privately; as an update of the answer), then told.
    assert [on_live.responses[0]["type"], on_answer.responses[0]["type"]] == [5, 6]
    assert not on_live.late
    assert not on_answer.late
    assert all("could not be reached" in text for text in texts)
    assert "1/6 steps" in str(answer.embeds)  # the answer itself is left as it was
