"""The outbox: due deliveries in order per subscription, backoffs, marks, and a flood."""

from __future__ import annotations

from bot.events import TERMINAL_SEQ
from bot.store import Store, SubscriptionStatus
from bot.store.outbox import PER_SUBSCRIPTION
from tests.unit.store.helpers import NOW, READY, answer, step, subscribe


async def outbox_with_steps(store: Store, n: int, *channels: int) -> list[int]:
    await store.trainings.record([answer("T1")], NOW)
    subs = [(await subscribe(store, "T1", channel=c)).id for c in channels]
    await store.trainings.record([answer("T1", *(step(i) for i in range(n)))], NOW)
    return subs


async def test_due_groups_are_in_order_per_subscription(store: Store) -> None:
    a, b = await outbox_with_steps(store, 3, 1, 2)
    groups = await store.outbox.due(NOW, limit=100)
    assert [(g[0].subscription_id, [d.event.seq for d in g]) for g in groups] == [
        (a, [0, 1, 2]),
        (b, [0, 1, 2]),
    ]
    assert groups[0][0].event.label == "s0"
    assert groups[0][0].channel_id == 1


async def test_a_subscription_waiting_out_a_backoff_is_passed_over_whole(store: Store) -> None:
    a, b = await outbox_with_steps(store, 3, 1, 2)
    head = (await store.outbox.due(NOW, limit=100))[0][0]
    await store.outbox.mark_retry(head, "503", NOW + 60)
    groups = await store.outbox.due(NOW, limit=3)  # a's rows must not fill the batch
    assert [g[0].subscription_id for g in groups] == [b]
    assert await store.outbox.next_due_at() == NOW  # b's
    groups = await store.outbox.due(NOW + 61, limit=100)
    assert [g[0].subscription_id for g in groups] == [a, b]
    assert groups[0][0].attempts == 1


async def test_a_sent_end_completes_the_subscription(store: Store) -> None:
    (a,) = await outbox_with_steps(store, 1, 1)
    await store.trainings.record([answer("T1", step(0), READY)], NOW)
    groups = await store.outbox.due(NOW, limit=100)
    assert [d.event.seq for d in groups[0]] == [0, TERMINAL_SEQ]
    await store.outbox.mark_sent([(d, 1000 + i) for i, d in enumerate(groups[0])], NOW)
    assert await store.outbox.due(NOW, limit=100) == []
    sub = await store.subscriptions.get(a)
    assert sub is not None
    assert sub.status is SubscriptionStatus.DONE


async def test_a_failed_message_lets_the_next_ones_go(store: Store) -> None:
    await outbox_with_steps(store, 2, 1)
    head = (await store.outbox.due(NOW, limit=100))[0][0]
    await store.outbox.mark_failed(head, "400 bad embed")
    assert [d.event.seq for d in (await store.outbox.due(NOW, limit=100))[0]] == [1]


async def test_a_flood_of_pending_rows_is_handed_out_a_little_at_a_time(store: Store) -> None:
    await outbox_with_steps(store, 3 * PER_SUBSCRIPTION, 1)
    groups = await store.outbox.due(NOW, limit=10_000)
    assert len(groups) == 1
    assert [d.event.seq for d in groups[0]] == list(range(PER_SUBSCRIPTION))


async def test_the_due_query_finds_heads_through_the_index(store: Store) -> None:
    # The query that took 52 s with 100,000 pending rows compared every pending row with the
    # subscription's others; the heads now come from the deliveries_heads index.
    from bot.store.outbox import _HEADS

    args = (store.outbox.owner, NOW, NOW, 10)
    if store.db.sql.name == "sqlite":
        plan = await store.db.fetch(f"EXPLAIN QUERY PLAN {_HEADS}", args)
        details = " | ".join(str(r[-1]) for r in plan)
        assert "CORRELATED" not in details
    else:
        async with store.db.transaction() as tx:
            # On empty tables the planner would rightly scan: ask whether the index CAN serve.
            await tx.execute("SET LOCAL enable_seqscan = off")
            plan = await tx.fetch(f"EXPLAIN {_HEADS}", args)
            details = " | ".join(str(r[0]) for r in plan)
    assert "deliveries_heads" in details
