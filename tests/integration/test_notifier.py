"""DiscordNotifier's exactly-once paths for the live and thread styles, against the fake Discord
with a real discord.py client and a real store, the crashes played by dropping what a killed
process would not have written: a live message posted but its id not stored, a live message
posted again but not stored, a thread started twice, and what Discord's refusals pause."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import discord
import pytest
import yarl

from bot.events import TERMINAL_SEQ, Event, EventKind
from bot.notifier import DiscordNotifier
from bot.reasons import PauseReason
from bot.store import (
    DEFAULT_KEY_REF,
    Delivery,
    Following,
    Store,
    Style,
    SubscriptionKind,
    TrainingUpdate,
)
from bot.tracking.delivery import PermanentDeliveryError, TransientDeliveryError
from tests.support.fakediscord import FakeDiscord, Message

GUILD = 111
CHANNEL = 222
NOW = 1_000_000.0


@pytest.fixture
async def world(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[FakeDiscord, discord.Client, Store]]:
    # Discord forgets nonces at once here: only the channel's history can tell what was sent.
    fake = FakeDiscord(nonce_window=0.0)
    await fake.start()
    fake.add_guild(GUILD, "Trainers")
    fake.add_channel(GUILD, CHANNEL, "training-log")
    monkeypatch.setattr(discord.http.Route, "BASE", fake.api_base)
    monkeypatch.setattr(
        discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(fake.gateway_url)
    )
    intents = discord.Intents.none()
    intents.guilds = True
    client = discord.Client(intents=intents, guild_ready_timeout=0.05)
    task = asyncio.create_task(client.start(fake.token))
    store = await Store.open(tmp_path / "n.db")
    try:
        async with asyncio.timeout(10):
            await client.wait_until_ready()
        yield fake, client, store
    finally:
        await store.close()
        await client.close()
        await asyncio.wait_for(task, 10)
        await fake.stop()


def step(n: int) -> Event:
    return Event(seq=n, kind=EventKind.STEP, number=n + 1, label=f"Step label {n + 1}",
                 steps_to_go=5 - n, eta_minutes=10)  # fmt: skip


async def rows(store: Store, style: Style, *events: Event) -> list[Delivery]:
    """Subscribe the channel in ``style``, record ``events``; the rows due, attempted."""
    await store.subscriptions.subscribe(
        kind=SubscriptionKind.CHANNEL,
        guild_id=GUILD,
        channel_id=CHANNEL,
        user_id=1,
        training_id="T1",
        key_ref=DEFAULT_KEY_REF,
        limit=10,
        now=NOW,
        following=Following(style=style),
    )
    update = TrainingUpdate("T1", DEFAULT_KEY_REF, next_poll_at=NOW + 60, answered=True,
                            events=list(events))  # fmt: skip
    await store.trainings.record([update], NOW)
    (group,) = await store.outbox.due(NOW + 1, limit=100)
    # As after a crash: each row's send may have begun.
    return [dataclasses.replace(d, attempted_at=NOW) for d in group]


async def forget_live_message(store: Store, message_id: int | None = None) -> None:
    """What a process killed right after posting leaves: the id not (or not newly) stored."""
    async with store.db.transaction() as tx:
        await tx.execute("UPDATE subscriptions SET live_message_id = ?", (message_id,))


def bot_messages(fake: FakeDiscord, channel_id: int = CHANNEL) -> list[Message]:
    return fake.messages_in(channel_id)


async def test_a_live_message_posted_but_not_stored_is_found_not_posted_again(
    world: tuple[FakeDiscord, discord.Client, Store],
) -> None:
    fake, client, store = world
    opening, first_step = await rows(store, Style.LIVE, step(0))
    before = DiscordNotifier(client, store)
    posted = await before.send(opening, "twaaaa1")
    await forget_live_message(store)

    after = DiscordNotifier(client, store)  # the restarted process
    assert await after.find_sent(opening) == posted
    sub = await store.subscriptions.get(opening.subscription_id)
    assert sub is not None
    assert sub.live_message_id == posted  # stored before any edit
    assert await after.send(first_step, "twaaaa2") == posted  # an edit of the same message
    (live,) = bot_messages(fake)
    assert len(live.visible_states()) == 2


async def test_a_live_message_posted_again_but_not_stored_is_found(
    world: tuple[FakeDiscord, discord.Client, Store],
) -> None:
    fake, client, store = world
    opening, first, second = await rows(store, Style.LIVE, step(0), step(1))
    notifier = DiscordNotifier(client, store)
    original = await notifier.send(opening, "twbbbb1")
    fake.delete_message(original)
    again = await notifier.send(first, "twbbbb2")  # gone: posted again, once
    assert again != original
    assert bot_messages(fake)[-1].nonce == "tlbbbb2"  # not the row's own nonce
    await forget_live_message(store, original)

    restarted = DiscordNotifier(client, store)
    assert await restarted.send(first, "twbbbb2") == again  # found, not posted a third time
    assert await restarted.send(second, "twbbbb3") == again
    live = [m for m in bot_messages(fake) if not m.deleted]
    assert [m.id for m in live] == [again]
    assert len(live[0].visible_states()) == 2  # the same state twice is one, then step 2


async def test_a_thread_started_twice_is_one_thread(
    world: tuple[FakeDiscord, discord.Client, Store],
) -> None:
    fake, client, store = world
    opening, first = await rows(store, Style.THREAD, step(0))
    summary = await DiscordNotifier(client, store).send(opening, "twcccc1")
    await forget_live_message(store)
    restarted = DiscordNotifier(client, store)
    assert await restarted.find_sent(opening) == summary  # and the thread: already there
    assert fake.threads_of(CHANNEL) == [summary]
    await restarted.send(first, "twcccc2")
    assert [m.embeds[0]["title"] for m in fake.messages_in(summary)] == [
        "T1 · Step 1: Step label 1"
    ]
    assert fake.messages_in(summary)[0].silent


async def test_what_discord_refuses_for_threads_pauses_with_a_reason(
    world: tuple[FakeDiscord, discord.Client, Store],
) -> None:
    fake, client, store = world
    opening, first, end = await rows(
        store, Style.THREAD, step(0), Event(seq=TERMINAL_SEQ, kind=EventKind.READY)
    )
    notifier = DiscordNotifier(client, store)
    fake.set_channel_access(CHANNEL, can_send=True)
    fake.channels[CHANNEL]["create_threads"] = False
    with pytest.raises(PermanentDeliveryError) as refused:
        await notifier.send(opening, "twdddd1")
    assert refused.value.reason == PauseReason.NO_THREAD_PERMISSIONS.with_detail(CHANNEL)

    fake.channels[CHANNEL]["create_threads"] = True
    summary = await notifier.send(opening, "twdddd2")
    fake.delete_channel(summary)  # a moderator deletes the thread
    with pytest.raises(PermanentDeliveryError) as gone:
        await notifier.send(first, "twdddd3")
    assert gone.value.reason == PauseReason.THREAD_DELETED.value
    # The end still goes to the channel, replying to the summary.
    final = await notifier.send(end, "twdddd4")
    (message,) = [m for m in bot_messages(fake) if m.id == final]
    assert message.message_reference is not None
    assert message.message_reference["message_id"] == str(summary)


async def test_a_thread_refused_for_a_moment_is_started_on_the_retry_under_the_same_summary(
    world: tuple[FakeDiscord, discord.Client, Store],
) -> None:
    fake, client, store = world
    (opening,) = await rows(store, Style.THREAD)
    notifier = DiscordNotifier(client, store)
    fake.fail_next(r"/threads$", 503)
    with pytest.raises(TransientDeliveryError):
        await notifier.send(opening, "tweeee1")
    (summary,) = bot_messages(fake)
    assert await store.subscriptions.live_message_of(opening.subscription_id) == summary.id
    assert fake.threads_of(CHANNEL) == []
    assert await notifier.send(opening, "tweeee1") == summary.id  # the retry
    assert [m.id for m in bot_messages(fake)] == [summary.id]
    assert fake.threads_of(CHANNEL) == [summary.id]


async def test_the_thread_summary_shows_each_step_and_a_deleted_one_stays_gone(
    world: tuple[FakeDiscord, discord.Client, Store],
) -> None:
    fake, client, store = world
    opening, first, second, end = await rows(
        store, Style.THREAD, step(0), step(1), Event(seq=TERMINAL_SEQ, kind=EventKind.READY)
    )
    notifier = DiscordNotifier(client, store)
    summary = await notifier.send(opening, "twffff1")
    fake.fail_next(rf"/channels/{summary}/messages$", 503)  # the step's post, after the edit
    with pytest.raises(TransientDeliveryError):
        await notifier.send(first, "twffff2")
    await notifier.send(first, "twffff2")  # the retry: the same edit again, then the post
    (message,) = bot_messages(fake)
    assert ["Step label 1" in s["embeds"][0]["description"] for s in message.visible_states()] == [
        False,
        True,
    ]
    fake.delete_message(summary)  # someone deletes the summary; its thread goes on
    await notifier.send(second, "twffff3")
    assert [m.embeds[0]["title"] for m in fake.messages_in(summary)] == [
        "T1 · Step 1: Step label 1",
        "T1 · Step 2: Step label 2",
    ]
    assert [m.id for m in bot_messages(fake) if not m.deleted] == []  # not posted again
    final = await notifier.send(end, "twffff4")  # the end: in the channel, replying to nothing
    (last,) = [m for m in bot_messages(fake) if m.id == final]
    assert last.message_reference is None
