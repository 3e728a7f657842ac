"""The deliverer with a real SQLite file; a recording notifier stands in for Discord (the e2e
tests cover the real one)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from bot.events import Event, EventKind
from bot.store import (
    DEFAULT_KEY_REF,
    Delivery,
    Store,
    SubscriptionKind,
    SubscriptionStatus,
    TrainingUpdate,
)
from bot.tracking.delivery import (
    Deliverer,
    DeliveryError,
    PermanentDeliveryError,
    TransientDeliveryError,
    make_nonce,
)
from tests.support.disk import TinyDisk
from tests.support.harness import wait_until

pytestmark = pytest.mark.timeout(60)


@dataclass
class RecordingNotifier:
    sent: list[tuple[int, int, EventKind, int]] = field(default_factory=list)  # sub, seq, kind
    failures: dict[int, list[Exception]] = field(default_factory=dict)  # sub id -> to raise
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    looked_for: list[int] = field(default_factory=list)  # delivery ids

    async def send(self, delivery: Delivery, nonce: str) -> int | None:
        pending = self.failures.get(delivery.subscription_id)
        if pending:
            raise pending.pop(0)
        self.sent.append(
            (delivery.subscription_id, delivery.event.seq, delivery.event.kind, len(nonce))
        )
        self.arrived.set()
        return len(self.sent)

    async def find_sent(self, delivery: Delivery) -> int | None:
        """As a channel's history would show it: the message, if it was sent."""
        self.looked_for.append(delivery.id)
        for i, (sub, seq, _, _) in enumerate(self.sent):
            if (sub, seq) == (delivery.subscription_id, delivery.event.seq):
                return i + 1
        return None

    def seqs(self, sub_id: int) -> list[int]:
        return [seq for sub, seq, _, _ in self.sent if sub == sub_id]


async def subscribe(store: Store, training_id: str, *, channel: int | None = 1, user: int = 9):
    kind = SubscriptionKind.CHANNEL if channel is not None else SubscriptionKind.DM
    sub, _ = await store.subscriptions.subscribe(
        kind=kind,
        guild_id=1,
        channel_id=channel,
        user_id=user,
        training_id=training_id,
        key_ref=DEFAULT_KEY_REF,
        limit=100,
        now=time.time(),
    )
    return sub


def step(seq: int) -> Event:
    return Event(seq=seq, kind=EventKind.STEP, number=seq + 1, label=f"s{seq}")


# -- the deliverer ------------------------------------------------------------------------


async def test_nonce_is_short_and_deterministic() -> None:
    assert make_nonce("deadbeef", 1) == make_nonce("deadbeef", 1)
    assert make_nonce("deadbeef", 1) != make_nonce("deadbeef", 2)
    assert len(make_nonce("deadbeef", 2**62)) <= 25


async def outbox_with_steps(store: Store, n: int, *subs: int | None) -> list[int]:
    now = time.time()
    await store.trainings.record([TrainingUpdate("T1", DEFAULT_KEY_REF, now, answered=True)], now)
    ids = [(await subscribe(store, "T1", channel=c, user=100 + i)).id for i, c in enumerate(subs)]
    update = TrainingUpdate(
        "T1", DEFAULT_KEY_REF, now, answered=True, events=[step(i) for i in range(n)]
    )
    await store.trainings.record([update], now)
    return ids


def delivery_counts(store: Store) -> dict[str, int]:
    """Deliveries by status, read with a connection of the test's own."""
    with sqlite3.connect(store.db.path) as conn:
        rows = conn.execute("SELECT status, COUNT(*) FROM deliveries GROUP BY status")
        return {str(status): int(n) for status, n in rows}


async def test_delivery_keeps_order_through_transient_failures(store: Store) -> None:
    a, b = await outbox_with_steps(store, 3, 1, 2)
    notifier = RecordingNotifier(failures={a: [TransientDeliveryError("503")]})
    deliverer = Deliverer(store, notifier, instance_id="abcd1234", base_backoff=0.0)
    await deliverer.drain_once()
    assert notifier.seqs(a) == []  # head failed: the rest wait behind it
    assert notifier.seqs(b) == [0, 1, 2]
    await deliverer.drain_once()
    assert notifier.seqs(a) == [0, 1, 2]
    assert await deliverer.drain_once() == 0
    counts = delivery_counts(store)
    assert counts == {"sent": 6}


async def test_a_subscription_in_backoff_does_not_starve_the_others(store: Store) -> None:
    a, b = await outbox_with_steps(store, 3, 1, 2)
    notifier = RecordingNotifier(failures={a: [TransientDeliveryError("503")]})
    deliverer = Deliverer(store, notifier, instance_id="abcd1234", base_backoff=60.0, batch_size=3)
    await deliverer.drain_once()  # a's head fails and waits a minute; b got nothing yet
    assert notifier.seqs(b) == []
    await deliverer.drain_once()  # the batch of 3 must not be a's waiting rows again
    assert notifier.seqs(b) == [0, 1, 2]
    assert notifier.seqs(a) == []


async def test_retry_after_is_honoured(store: Store) -> None:
    (a,) = await outbox_with_steps(store, 1, 1)
    notifier = RecordingNotifier(failures={a: [TransientDeliveryError("429", retry_after=60)]})
    deliverer = Deliverer(store, notifier, instance_id="abcd1234", base_backoff=0.0)
    await deliverer.drain_once()
    assert await deliverer.drain_once() == 0  # not due yet
    next_at = await store.outbox.next_due_at()
    assert next_at is not None
    assert next_at - time.time() > 55


async def test_permanent_failure_pauses_only_that_subscription(store: Store) -> None:
    a, b = await outbox_with_steps(store, 2, 1, 2)
    notifier = RecordingNotifier(failures={a: [PermanentDeliveryError("channel_deleted")]})
    deliverer = Deliverer(store, notifier, instance_id="abcd1234")
    await deliverer.drain_once()
    assert notifier.seqs(b) == [0, 1]
    paused = await store.subscriptions.get(a)
    assert paused is not None
    assert paused.status is SubscriptionStatus.PAUSED
    assert paused.reason == "channel_deleted"
    assert await deliverer.drain_once() == 0  # nothing retries
    assert delivery_counts(store) == {"sent": 2, "dropped": 2}


@pytest.mark.allow_errors
async def test_unclassified_failure_gives_up_on_that_message_only(store: Store) -> None:
    (a,) = await outbox_with_steps(store, 2, 1)
    notifier = RecordingNotifier(failures={a: [DeliveryError("400 bad embed")]})
    deliverer = Deliverer(store, notifier, instance_id="abcd1234")
    await deliverer.drain_once()
    assert notifier.seqs(a) == [1]
    assert delivery_counts(store) == {"failed": 1, "sent": 1}


@pytest.mark.allow_errors
async def test_a_crashing_notifier_does_not_kill_the_loop(store: Store) -> None:
    a, b = await outbox_with_steps(store, 1, 1, 2)
    notifier = RecordingNotifier(failures={a: [RuntimeError("bug")]})
    deliverer = Deliverer(store, notifier, instance_id="abcd1234", base_backoff=0.0)
    deliverer.start()
    try:
        await wait_until(lambda: notifier.seqs(b) == [0] and notifier.seqs(a) == [0])
    finally:
        await deliverer.stop()


async def parked(event: asyncio.Event) -> None:
    """Wait until a loop sits in ``await event.wait()`` (asyncio keeps no public count)."""
    await wait_until(lambda: bool(event._waiters), what="the loop to wait for its wake-up")


async def stops(stop: Any) -> None:
    """``stop()`` returns (a hang shows as a failure, not as a test that never ends)."""
    stopping = asyncio.create_task(stop())
    done, _ = await asyncio.wait({stopping}, timeout=5)
    assert done, "stop() did not return: a loop swallowed its cancellation"
    stopping.result()


async def test_deliverer_stops_when_woken_just_before(store: Store) -> None:
    deliverer = Deliverer(store, RecordingNotifier(), instance_id="abcd1234")
    deliverer.start()
    await parked(deliverer._wake)
    deliverer.wake()
    await stops(deliverer.stop)


async def test_a_message_sent_before_a_crash_is_found_not_sent_again(store: Store) -> None:
    # The bot sent step 0 and died before writing its mark: the row was stamped as attempted.
    (a,) = await outbox_with_steps(store, 2, 1)
    notifier = RecordingNotifier()
    batch = await store.outbox.due(time.time(), limit=10)
    await store.outbox.mark_attempted(batch[0][:1], time.time())
    await notifier.send(batch[0][0], "nonce")  # what reached Discord before the crash
    await Deliverer(store, notifier, instance_id="abcd1234").drain_once()
    assert notifier.seqs(a) == [0, 1]  # step 0 once, found in the channel
    assert notifier.looked_for == [batch[0][0].id]  # only the attempted one was looked for
    assert delivery_counts(store) == {"sent": 2}


@pytest.mark.allow_errors  # the full disk is logged (once) as an ERROR
async def test_a_full_disk_stops_sending_until_the_marks_can_be_written(
    tiny_disk: TinyDisk, caplog: pytest.LogCaptureFixture
) -> None:
    # The disk fills up between the sends and their "sent" marks: no message may be sent
    # again (or any new one sent) until the marks are written.
    store = await Store.open(tiny_disk.path / "t.db")
    try:
        (a,) = await outbox_with_steps(store, 3, 1)
        notifier = FillingNotifier(tiny_disk)
        deliverer = Deliverer(store, notifier, instance_id="abcd1234", store_backoff_max=0.05)
        deliverer.start()
        try:
            await wait_until(lambda: deliverer.problem is not None, what="the full disk seen")
            assert "full" in deliverer.problem  # type: ignore[operator]
            await wait_until(lambda: deliverer._store.failures >= 3, what="three refused writes")
            assert notifier.seqs(a) == [0, 1, 2]  # once each, never again while unmarked
            tiny_disk.free()
            await wait_until(lambda: deliverer.problem is None, what="the marks written")
        finally:
            await deliverer.stop()
        assert notifier.seqs(a) == [0, 1, 2]
        assert delivery_counts(store) == {"sent": 3}
    finally:
        await store.close()
    stopped = [r for r in caplog.records if "delivering is stopped" in r.getMessage()]
    assert len(stopped) == 1  # said once, not at every retry


class FillingNotifier(RecordingNotifier):
    """Discord's side; the disk fills up right after the first message is sent."""

    def __init__(self, disk: TinyDisk) -> None:
        super().__init__()
        self.disk = disk

    async def send(self, delivery: Delivery, nonce: str) -> int | None:
        message_id = await super().send(delivery, nonce)
        self.disk.fill()
        return message_id
