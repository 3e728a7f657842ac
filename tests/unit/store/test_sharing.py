"""Several instances on one database: claims that never hand one training to two instances,
delivery leases that keep a subscription's messages with one instance at a time (and pass to
another when it stops renewing them)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.store import Store, Training
from tests.unit.store.helpers import NOW, answer, step, subscribe

LEASE = 30.0


@pytest.fixture
async def other(target: str | Path, store: Store) -> AsyncIterator[Store]:
    """A second instance on the same database: on PostgreSQL its own connections; SQLite's
    file lock refuses a second process, so there the same connection with its own lease
    owner (the lease statements are the same on both)."""
    if not store.shared:
        yield Store(store.db, owner="other")
        return
    opened = await Store.open(target, owner="other")
    yield opened
    await opened.close()


def plan(row: Training) -> tuple[float, str]:
    return NOW + 60, "test"


async def test_two_instances_claiming_at_once_never_take_the_same_training(
    store: Store, other: Store
) -> None:
    for i in range(40):
        await store.trainings.record([answer(f"T{i:02d}", next_poll_at=NOW - 1)], NOW)
        await subscribe(store, f"T{i:02d}", channel=i + 1)

    async def claim_all(instance: Store) -> list[str]:
        taken: list[str] = []
        while claimed := await instance.trainings.claim_due(NOW, 3, plan):
            taken += [row.training_id for row, _ in claimed]
            await asyncio.sleep(0)
        return taken

    mine, theirs = await asyncio.gather(claim_all(store), claim_all(other))
    assert sorted(mine + theirs) == [f"T{i:02d}" for i in range(40)]  # each exactly once
    assert await store.trainings.claim_due(NOW, 100, plan) == []
    assert await other.trainings.claim_due(NOW + 61, 100, plan) != []  # due again after the lease


async def test_a_subscription_leased_to_one_instance_is_not_handed_to_another(
    store: Store, other: Store
) -> None:
    await store.trainings.record([answer("T1")], NOW)
    a = await subscribe(store, "T1", channel=1)
    b = await subscribe(store, "T1", channel=2)
    await store.trainings.record([answer("T1", step(0), step(1))], NOW)

    mine = await store.outbox.due(NOW, limit=100, lease=LEASE)
    assert [g[0].subscription_id for g in mine] == [a.id, b.id]
    assert await other.outbox.due(NOW, limit=100, lease=LEASE) == []
    # The other instance waits for the lease, not in a loop.
    assert await other.outbox.next_due_at() == NOW + LEASE
    assert await store.outbox.next_due_at() == NOW

    # Done with a: its lease goes back, and the other instance may take it.
    await store.outbox.mark_sent([(d, 1) for d in mine[0]], NOW)
    await store.outbox.release([a.id])
    await store.trainings.record([answer("T1", step(0), step(1), step(2))], NOW)
    theirs = await other.outbox.due(NOW, limit=100, lease=LEASE)
    assert [(g[0].subscription_id, [d.event.seq for d in g]) for g in theirs] == [(a.id, [2])]


async def test_leases_that_are_not_renewed_run_out_and_another_instance_takes_over(
    store: Store, other: Store
) -> None:
    await store.trainings.record([answer("T1")], NOW)
    sub = await subscribe(store, "T1", channel=1)
    await store.trainings.record([answer("T1", step(0), step(1))], NOW)
    taken = await store.outbox.due(NOW, limit=100, lease=LEASE)
    assert [d.event.seq for d in taken[0]] == [0, 1]
    # Renewed while it sends: still its own past the first term.
    assert await store.outbox.renew([sub.id], NOW + 2 * LEASE) == 1
    assert await other.outbox.due(NOW + LEASE + 1, limit=100, lease=LEASE) == []
    # It died after sending step 0 (marked) and before step 1: the other instance takes over
    # where it stopped, once the lease has run out.
    await store.outbox.mark_sent([(taken[0][0], 1)], NOW)
    later = NOW + 2 * LEASE + 1
    theirs = await other.outbox.due(later, limit=100, lease=LEASE)
    assert [(g[0].id, g[0].event.seq) for g in theirs] == [(taken[0][1].id, 1)]  # same row
    # The dead instance's lease is gone: renewing it finds nothing, so it must not send.
    assert await store.outbox.renew([sub.id], later + LEASE) == 0


async def test_a_restarted_sqlite_instance_keeps_no_leases_of_its_previous_life(
    tmp_path: Path,
) -> None:
    path = tmp_path / "one.db"
    first = await Store.open(path)
    await first.trainings.record([answer("T1")], NOW)
    await subscribe(first, "T1")
    await first.trainings.record([answer("T1", step(0))], NOW)
    assert await first.outbox.due(NOW, limit=10, lease=LEASE)
    await first.close()  # as if killed: the lease is still in the file
    second = await Store.open(path)
    try:
        assert [d.event.seq for d in (await second.outbox.due(NOW, limit=10))[0]] == [0]
    finally:
        await second.close()


async def test_an_instance_leases_its_share_and_leaves_the_rest(store: Store, other: Store) -> None:
    await store.trainings.record([answer("T1")], NOW)
    subs = [(await subscribe(store, "T1", channel=c)).id for c in range(1, 11)]
    await store.trainings.record([answer("T1", step(0))], NOW)
    mine = await store.outbox.due(NOW, limit=1000, lease=LEASE, share=0.5)
    theirs = await other.outbox.due(NOW, limit=1000, lease=LEASE, share=1.0)
    assert len(mine) == 5
    assert sorted(g[0].subscription_id for g in mine + theirs) == subs  # each once
