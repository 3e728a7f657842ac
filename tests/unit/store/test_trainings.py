"""The trainings repository: claims (the schedule and its lease), and recording answers."""

from __future__ import annotations

import asyncpg
import pytest

from bot.events import TERMINAL_SEQ, Event, EventKind
from bot.store import DEFAULT_KEY_REF, Store, Training, TrainingUpdate
from bot.store.trainings import MAX_REFUSED, UNFOLLOWED_PARK_SECONDS
from tests.unit.store.helpers import NOW, READY, answer, step, subscribe


def plan_in(seconds: float):
    def plan(row: Training) -> tuple[float, str]:
        return NOW + seconds, "test"

    return plan


async def test_an_answer_is_recorded_once_by_position_in_the_log(store: Store) -> None:
    await store.trainings.record([answer("T1", step(0))], NOW)
    channel = await subscribe(store, "T1")
    dm = await subscribe(store, "T1", channel=None, user=5)
    assert channel.baseline_seq == 0  # what was known when subscribing is not sent
    more = answer("T1", step(0), step(1), step(2), READY)
    assert await store.trainings.record([more], NOW) == 3 + 1  # two steps + end, and the DM's end
    assert await store.trainings.record([more], NOW) == 0  # the same answer again: nothing new
    row = await store.trainings.get("T1", DEFAULT_KEY_REF)
    assert row is not None
    assert (row.terminal, row.last_seq) == (EventKind.READY, 2)
    groups = await store.outbox.due(NOW + 1, limit=100)
    assert {g[0].subscription_id: [d.event.seq for d in g] for g in groups} == {
        channel.id: [1, 2, TERMINAL_SEQ],
        dm.id: [TERMINAL_SEQ],
    }
    assert await store.trainings.count_followed() == 0  # finished: no longer polled


async def test_a_claim_takes_the_due_trainings_soonest_first_and_leases_them(store: Store) -> None:
    for i, due in enumerate((NOW - 5, NOW - 10, NOW + 30)):
        await store.trainings.record([answer(f"T{i}", next_poll_at=due)], NOW)
        await subscribe(store, f"T{i}", channel=i + 1)
    claimed = await store.trainings.claim_due(NOW, 10, plan_in(60))
    assert [(row.training_id, at) for row, at in claimed] == [("T1", NOW + 60), ("T0", NOW + 60)]
    assert [row.next_poll_at for row, _ in claimed] == [NOW - 10, NOW - 5]  # as before the claim
    assert await store.trainings.claim_due(NOW, 10, plan_in(60)) == []  # leased until then
    assert await store.trainings.next_due_at() == NOW + 30
    later = await store.trainings.claim_due(NOW + 60, 10, plan_in(60))
    assert [row.training_id for row, _ in later] == ["T2", "T0", "T1"]  # equal times: by id


async def test_a_claim_takes_at_most_its_limit(store: Store) -> None:
    for i in range(5):
        await store.trainings.record([answer(f"T{i}", next_poll_at=NOW - i)], NOW)
        await subscribe(store, f"T{i}", channel=i + 1)
    first = await store.trainings.claim_due(NOW, 2, plan_in(60))
    second = await store.trainings.claim_due(NOW, 10, plan_in(60))
    assert [r.training_id for r, _ in first] == ["T4", "T3"]
    assert [r.training_id for r, _ in second] == ["T2", "T1", "T0"]


async def test_a_training_nobody_follows_is_set_aside_not_claimed(store: Store) -> None:
    await store.trainings.record([answer("Alone", next_poll_at=NOW - 1)], NOW)
    assert await store.trainings.claim_due(NOW, 10, plan_in(60)) == []
    row = await store.trainings.get("Alone", DEFAULT_KEY_REF)
    assert row is not None
    assert row.next_poll_at == NOW + UNFOLLOWED_PARK_SECONDS
    assert await store.trainings.poll_now("Alone", NOW) == []  # nobody follows it


async def test_a_poll_asked_for_during_a_poll_is_kept(store: Store) -> None:
    # A webhook asks for a poll while the claimed one is in flight: that poll's result must
    # not write its own next time over the request.
    await store.trainings.record([answer("T1", next_poll_at=NOW - 1)], NOW)
    await subscribe(store, "T1")
    ((_, planned),) = await store.trainings.claim_due(NOW, 10, plan_in(60))
    assert await store.trainings.poll_now("T1", NOW + 1) == [DEFAULT_KEY_REF]
    await store.trainings.record(
        [answer("T1", step(0), next_poll_at=NOW + 61, planned_at=planned)], NOW
    )
    again = await store.trainings.get("T1", DEFAULT_KEY_REF)
    assert again is not None
    assert again.next_poll_at == NOW + 1
    # Without a request meanwhile, the result's own next time is written.
    ((_, planned),) = await store.trainings.claim_due(NOW + 1, 10, plan_in(60))
    await store.trainings.record(
        [answer("T1", step(1), next_poll_at=NOW + 70, planned_at=planned)], NOW
    )
    assert (await store.trainings.get("T1", DEFAULT_KEY_REF)).next_poll_at == NOW + 70  # type: ignore[union-attr]


async def test_an_error_keeps_the_last_good_state(store: Store) -> None:
    await store.trainings.record([answer("T1", step(0), state="training_started")], NOW)
    failed = TrainingUpdate(
        "T1",
        DEFAULT_KEY_REF,
        next_poll_at=NOW + 120,
        consecutive_errors=2,
        last_error="the API is having trouble",
        failing_since=NOW - 50,
    )
    await store.trainings.record([failed], NOW)
    row = await store.trainings.get("T1", DEFAULT_KEY_REF)
    assert row is not None
    assert (row.state, row.last_seq, row.consecutive_errors) == ("training_started", 0, 2)
    assert (row.last_error, row.failing_since) == ("the API is having trouble", NOW - 50)
    await store.trainings.record([answer("T1", state="training_success")], NOW + 200)
    row = await store.trainings.get("T1", DEFAULT_KEY_REF)
    assert row is not None
    assert (row.consecutive_errors, row.last_error, row.failing_since) == (0, None, None)
    assert row.last_ok_at == NOW + 200


async def test_nothing_is_recorded_after_the_end_but_an_unknown_training_can_come_back(
    store: Store,
) -> None:
    unknown = Event(seq=TERMINAL_SEQ, kind=EventKind.UNKNOWN, detail="not found")
    await store.trainings.record([answer("T1", step(0))], NOW)
    await store.trainings.record(
        [TrainingUpdate("T1", DEFAULT_KEY_REF, NOW + 60, not_found_count=3, events=[unknown])],
        NOW,
    )
    row = await store.trainings.get("T1", DEFAULT_KEY_REF)
    assert row is not None
    assert row.terminal is EventKind.UNKNOWN
    await store.trainings.record([answer("T1", step(0), step(1))], NOW)  # it answers again
    row = await store.trainings.get("T1", DEFAULT_KEY_REF)
    assert row is not None
    assert (row.terminal, row.last_seq) == (None, 1)
    await store.trainings.record([answer("T1", READY)], NOW)
    await store.trainings.record([answer("T1", step(5))], NOW)  # after the end: ignored
    row = await store.trainings.get("T1", DEFAULT_KEY_REF)
    assert row is not None
    assert (row.terminal, row.last_seq) == (EventKind.READY, 1)


async def test_a_training_answered_twice_in_one_batch_is_recorded_in_order(store: Store) -> None:
    await subscribe(store, "T1")
    first = answer("T1", step(0), state="a")
    second = answer("T1", step(0), step(1), state="b")
    assert await store.trainings.record([first, second], NOW) == 2
    row = await store.trainings.get("T1", DEFAULT_KEY_REF)
    assert row is not None
    assert (row.state, row.last_seq) == ("b", 1)


async def test_the_api_of_a_training_is_kept(store: Store) -> None:
    await store.trainings.record([answer("T1", api="v6")], NOW)
    row = await store.trainings.get("T1", DEFAULT_KEY_REF)
    assert row is not None
    assert row.api == "v6"


async def test_an_update_the_database_refuses_is_split_off_and_the_rest_recorded(
    store: Store, target: object
) -> None:
    """One poll result the database cannot take (here a lone surrogate no encoding takes, and
    on PostgreSQL a NUL, which its text refuses) must not roll back the rest of its batch."""
    bad = [answer("SURROGATE", step(0), state="training\ud800")]
    if isinstance(target, str):  # PostgreSQL
        bad.append(answer("NUL", step(0), state="training\x00started"))
    good = [answer(f"T{i}", step(0), step(1)) for i in range(6)]
    for training_id in ["SURROGATE", "NUL", *(u.training_id for u in good)]:
        await subscribe(store, training_id)
    batch = [*good[:3], bad[0], *good[3:5], *bad[1:], good[5]]
    recorded = await store.trainings.record_apart(batch, NOW)
    assert [u.training_id for u, _ in recorded.refused] == [u.training_id for u in bad]
    assert all(store.db.refused_data(exc) for _, exc in recorded.refused)
    assert recorded.created == 6 * 2  # two steps for each good one's channel
    for update in good:
        row = await store.trainings.get(update.training_id, DEFAULT_KEY_REF)
        assert row is not None
        assert row.last_seq == 1
    for update in bad:
        assert await store.trainings.get(update.training_id, DEFAULT_KEY_REF) is None


async def test_a_whole_batch_refused_is_the_databases_fault_not_each_updates(store: Store) -> None:
    """Past a few refusals in one batch, the refusal is raised as an outage would be, instead of
    costing a transaction per update (a bug that refuses everything)."""
    batch = [answer(f"T{i}", step(0), state="\ud800") for i in range(MAX_REFUSED + 3)]
    with pytest.raises(TypeError):
        await store.trainings.record_apart(batch, NOW)
    assert await store.trainings.get("T0", DEFAULT_KEY_REF) is None


async def test_an_outage_is_raised_not_split(store: Store) -> None:
    """An error that is not about the values (here: the database closed) is not retried in
    halves: the caller drops the batch and polls those trainings again."""
    await store.close()
    # aiosqlite: "no active connection"; asyncpg: "pool is closed".
    with pytest.raises((ValueError, asyncpg.InterfaceError)) as raised:
        await store.trainings.record_apart([answer("T1", step(0)), answer("T2", step(0))], NOW)
    assert not store.db.refused_data(raised.value)
