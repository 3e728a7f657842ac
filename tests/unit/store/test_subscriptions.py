"""The subscriptions repository: baselines, limits, re-subscribing, pausing, listing."""

from __future__ import annotations

import pytest

from bot.store import DEFAULT_KEY_REF, LimitReached, Store, SubscriptionKind, SubscriptionStatus
from tests.unit.store.helpers import NOW, answer, step, subscribe


async def test_subscribing_twice_is_one_subscription(store: Store) -> None:
    first = await subscribe(store, "T1")
    again, already = await store.subscriptions.subscribe(
        kind=SubscriptionKind.CHANNEL,
        guild_id=1,
        channel_id=1,
        user_id=77,
        training_id="T1",
        key_ref=DEFAULT_KEY_REF,
        limit=100,
        now=NOW,
    )
    assert already
    assert again.id == first.id
    assert again.user_id == first.user_id  # nothing changed


async def test_limits_count_a_guilds_channels_and_a_members_alerts(store: Store) -> None:
    async def channel(training_id: str, channel_id: int, guild: int = 1) -> None:
        await store.subscriptions.subscribe(
            kind=SubscriptionKind.CHANNEL,
            guild_id=guild,
            channel_id=channel_id,
            user_id=9,
            training_id=training_id,
            key_ref=DEFAULT_KEY_REF,
            limit=2,
            now=NOW,
        )

    await channel("T1", 1)
    await channel("T2", 2)
    with pytest.raises(LimitReached) as caught:
        await channel("T3", 3)
    assert caught.value.limit == 2
    await channel("T3", 3, guild=2)  # another guild has its own limit
    await channel("T1", 1)  # already there: not counted twice


async def test_a_paused_subscription_comes_back_from_what_is_known_now(store: Store) -> None:
    await store.trainings.record([answer("T1", step(0))], NOW)
    sub = await subscribe(store, "T1")
    await store.trainings.record([answer("T1", step(0), step(1))], NOW)
    await store.subscriptions.pause(sub.id, "channel_deleted", NOW)
    paused = await store.subscriptions.get(sub.id)
    assert paused is not None
    assert (paused.status, paused.reason) == (SubscriptionStatus.PAUSED, "channel_deleted")
    assert await store.outbox.due(NOW, limit=10) == []  # its pending message was dropped
    back = await subscribe(store, "T1")
    assert back.id == sub.id
    assert (back.status, back.reason, back.baseline_seq) == (SubscriptionStatus.ACTIVE, None, 1)


async def test_pausing_a_key_pauses_only_what_it_polls(store: Store) -> None:
    mine = await subscribe(store, "T1")
    theirs, _ = await store.subscriptions.subscribe(
        kind=SubscriptionKind.CHANNEL,
        guild_id=1,
        channel_id=2,
        user_id=3,
        training_id="T2",
        key_ref="user:3",
        limit=10,
        now=NOW,
    )
    assert await store.subscriptions.pause_key_ref("user:3", "key_removed", NOW) == 1
    assert (await store.subscriptions.get(mine.id)).status is SubscriptionStatus.ACTIVE  # type: ignore[union-attr]
    assert (await store.subscriptions.get(theirs.id)).status is SubscriptionStatus.PAUSED  # type: ignore[union-attr]
    assert await store.subscriptions.count_by_status() == {
        ("channel", "active"): 1,
        ("channel", "paused"): 1,
    }


async def test_listing_and_finding(store: Store) -> None:
    a = await subscribe(store, "Alpha_1", channel=1)
    b = await subscribe(store, "Alpha%2", channel=2)
    dm = await subscribe(store, "Beta", channel=None, user=5)
    await subscribe(store, "Other", channel=3, guild=2)
    assert [s.id for s in await store.subscriptions.of_guild(1)] == [b.id, a.id]
    assert [s.id for s in await store.subscriptions.alerts_of(5)] == [dm.id]
    found = await store.subscriptions.find(
        SubscriptionKind.CHANNEL, "Alpha_1", channel_id=1, user_id=0
    )
    assert found is not None
    assert found.id == a.id
    assert (
        await store.subscriptions.find(SubscriptionKind.DM, "Beta", channel_id=None, user_id=6)
        is None
    )
    # Autocomplete: this guild's and this member's ids, LIKE's wildcards taken literally.
    ids = await store.subscriptions.known_training_ids(guild_id=1, user_id=5, prefix="", limit=10)
    assert set(ids) == {"Alpha_1", "Alpha%2", "Beta"}
    assert await store.subscriptions.known_training_ids(
        guild_id=1, user_id=5, prefix="Alpha%", limit=10
    ) == ["Alpha%2"]
    await store.subscriptions.remove(a.id)
    assert await store.subscriptions.get(a.id) is None
