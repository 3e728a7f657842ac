"""Subscription styles in the store: the opening delivery, the live message id, what each style
is sent, mentions, the story of a training, and lists that leave finished subscriptions out."""

from __future__ import annotations

import pytest

from bot.events import TERMINAL_SEQ, Event, EventKind
from bot.store import (
    DEFAULT_KEY_REF,
    OPENING_SEQ,
    Following,
    Mention,
    MentionKind,
    MentionOn,
    Store,
    Style,
    Subscription,
    SubscriptionKind,
    SubscriptionStatus,
)
from tests.unit.store.helpers import NOW, READY, answer, step

FAILED = Event(seq=TERMINAL_SEQ, kind=EventKind.FAILED, detail="Disk full")
UNKNOWN = Event(seq=TERMINAL_SEQ, kind=EventKind.UNKNOWN)


async def follow(
    store: Store,
    training_id: str,
    style: Style = Style.STEPS,
    *,
    channel: int = 1,
    mention: Mention | None = None,
    now: float = NOW,
) -> tuple[Subscription, bool]:
    return await store.subscriptions.subscribe(
        kind=SubscriptionKind.CHANNEL,
        guild_id=1,
        channel_id=channel,
        user_id=9,
        training_id=training_id,
        key_ref=DEFAULT_KEY_REF,
        limit=100,
        now=now,
        following=Following(style=style, mention=mention),
    )


async def due_seqs(store: Store) -> dict[int, list[int]]:
    groups = await store.outbox.due(NOW + 1, limit=100)
    return {g[0].subscription_id: [d.seq for d in g] for g in groups}


@pytest.mark.parametrize(
    ("style", "expected"),
    [
        (Style.STEPS, [1, 2, TERMINAL_SEQ]),
        (Style.LIVE, [OPENING_SEQ, 1, 2, TERMINAL_SEQ]),
        (Style.THREAD, [OPENING_SEQ, 1, 2, TERMINAL_SEQ]),
        (Style.FINAL, [TERMINAL_SEQ]),
    ],
)
async def test_what_each_style_is_sent(store: Store, style: Style, expected: list[int]) -> None:
    await store.trainings.record([answer("T1", step(0))], NOW)
    sub, already = await follow(store, "T1", style)
    assert not already
    assert (sub.style, sub.baseline_seq, sub.live_message_id) == (style, 0, None)
    await store.trainings.record([answer("T1", step(0), step(1), step(2), READY)], NOW)
    assert await due_seqs(store) == {sub.id: expected}
    (group,) = (await store.outbox.due(NOW + 1, limit=100))[:1]
    first = group[0]
    assert first.opening is style.keeps_a_message
    assert (first.style, first.baseline_seq, first.key_ref) == (style, 0, DEFAULT_KEY_REF)
    assert [d.terminal for d in group][-1]


async def test_the_opening_comes_first_and_its_message_is_remembered(store: Store) -> None:
    sub, _ = await follow(store, "T1", Style.LIVE)
    await store.trainings.record([answer("T1", step(0))], NOW)
    group = (await store.outbox.due(NOW + 1, limit=100))[0]
    assert group[0].event is None
    assert await store.subscriptions.live_message_of(sub.id) is None
    await store.subscriptions.set_live_message(sub.id, 123456789012345678)
    assert await store.subscriptions.live_message_of(sub.id) == 123456789012345678
    # The next batch carries the stored id; the opening sent does not end the subscription.
    await store.outbox.mark_sent([(group[0], 123456789012345678)], NOW)
    (after,) = await store.outbox.due(NOW + 1, limit=100)
    assert [d.seq for d in after] == [0]
    assert after[0].live_message_id == 123456789012345678
    again = await store.subscriptions.get(sub.id)
    assert again is not None
    assert again.status is SubscriptionStatus.ACTIVE
    assert again.live_message_id == 123456789012345678


async def test_subscribing_again_the_same_way_changes_nothing(store: Store) -> None:
    role = Mention(MentionKind.ROLE, 555, MentionOn.READY)
    sub, _ = await follow(store, "T1", Style.LIVE, mention=role)
    await store.subscriptions.set_live_message(sub.id, 42)
    same, already = await follow(store, "T1", Style.LIVE, mention=role)
    assert already
    assert (same.id, same.live_message_id, same.mention) == (sub.id, 42, role)
    assert await due_seqs(store) == {sub.id: [OPENING_SEQ]}


async def test_a_new_style_or_mention_starts_the_subscription_over(store: Store) -> None:
    sub, _ = await follow(store, "T1", Style.LIVE)
    (opening,) = (await store.outbox.due(NOW + 1, limit=100))[0]
    await store.subscriptions.set_live_message(sub.id, 42)
    await store.outbox.mark_sent([(opening, 42)], NOW)
    await store.trainings.record([answer("T1", step(0))], NOW)

    # Another mention: a new live message (the old opening, sent, gives way to a new one).
    user = Mention(MentionKind.USER, 7, MentionOn.FAILED)
    changed, already = await follow(store, "T1", Style.LIVE, mention=user)
    assert not already
    assert (changed.id, changed.live_message_id, changed.mention) == (sub.id, None, user)
    assert changed.baseline_seq == 0
    assert await due_seqs(store) == {sub.id: [OPENING_SEQ]}

    # To the steps style: no opening, nothing pending.
    steps, already = await follow(store, "T1", Style.STEPS)
    assert not already
    assert (steps.style, steps.mention) == (Style.STEPS, None)
    assert await due_seqs(store) == {}


async def test_a_dm_alert_keeps_where_it_came_from(store: Store) -> None:
    sub, _ = await store.subscriptions.subscribe(
        kind=SubscriptionKind.DM,
        guild_id=1,
        channel_id=None,
        user_id=9,
        training_id="T1",
        key_ref=DEFAULT_KEY_REF,
        limit=10,
        now=NOW,
        following=Following(style=Style.LIVE, origin_channel_id=5, origin_message_id=6),
    )
    assert (sub.origin_channel_id, sub.origin_message_id) == (5, 6)
    assert await due_seqs(store) == {}  # a DM alert posts no live message, whatever it says
    await store.trainings.record([answer("T1", step(0), READY)], NOW)
    (group,) = await store.outbox.due(NOW + 1, limit=100)
    assert [(d.seq, d.origin_channel_id, d.origin_message_id) for d in group] == [
        (TERMINAL_SEQ, 5, 6)
    ]


@pytest.mark.parametrize(
    ("on", "pinged"),
    [
        (MentionOn.BOTH, {EventKind.READY, EventKind.FAILED, EventKind.UNKNOWN}),
        (MentionOn.READY, {EventKind.READY}),
        (MentionOn.FAILED, {EventKind.FAILED, EventKind.UNKNOWN}),
    ],
)
def test_which_outcomes_ping(on: MentionOn, pinged: set[EventKind]) -> None:
    mention = Mention(MentionKind.ROLE, 1, on)
    assert {kind for kind in EventKind if mention.pings_for(kind)} == pinged


async def test_the_story_of_a_training(store: Store) -> None:
    await store.trainings.record([answer("T1", step(0))], NOW)
    await store.trainings.record([answer("T1", step(0), step(1), FAILED, state="failed")], NOW + 60)
    story = await store.outbox.story("T1", DEFAULT_KEY_REF, 1)
    assert story.first_seen_at == NOW
    assert [(e.seq, at) for e, at in story.events] == [(0, NOW), (1, NOW + 60)]
    whole = await store.outbox.story("T1", DEFAULT_KEY_REF, TERMINAL_SEQ)
    assert whole.events[-1][0].kind is EventKind.FAILED
    assert whole.events[-1][0].detail == "Disk full"
    assert whole.state == "failed"
    nothing = await store.outbox.story("Nope", DEFAULT_KEY_REF, TERMINAL_SEQ)
    assert (nothing.first_seen_at, nothing.events) == (None, ())


async def test_lists_leave_out_what_finished_before_a_time(store: Store) -> None:
    old, _ = await follow(store, "Old", channel=1)
    new, _ = await follow(store, "New", channel=2)
    running, _ = await follow(store, "Running", channel=3)
    for training, at in (("Old", NOW), ("New", NOW + 1000)):
        await store.trainings.record([answer(training, READY)], at)
    for group in await store.outbox.due(NOW + 1000, limit=100):
        finished_at = NOW if group[0].training_id == "Old" else NOW + 1000
        await store.outbox.mark_sent([(d, 1) for d in group], finished_at)
    everything = await store.subscriptions.of_guild(1)
    assert {s.id for s in everything} == {old.id, new.id, running.id}
    shown = await store.subscriptions.of_guild(1, finished_since=NOW + 500)
    assert {s.id for s in shown} == {new.id, running.id}
    assert (
        await store.subscriptions.count_finished_before(guild_id=1, user_id=9, before=NOW + 500)
        == 1
    )
    done = next(s for s in everything if s.id == old.id)
    assert (done.status, done.updated_at) == (SubscriptionStatus.DONE, NOW)
