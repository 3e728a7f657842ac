"""3. Outbox: 50,000 pending deliveries drained through a notifier that records and returns."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from benchmarks.common import Figure, cpu_seconds, seed, temp_dir
from benchmarks.simproc import training_id
from bot.events import Event, EventKind
from bot.store import Delivery, Store, TrainingUpdate, transfer
from bot.tracking.delivery import Deliverer

STEPS = 10  # step events per training; each goes to its 5 channel subscriptions


class RecordingNotifier:
    """Sends nothing: records the delivery and returns a message id at once."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, int, str]] = []

    async def send(self, delivery: Delivery, nonce: str) -> int | None:
        self.sent.append((delivery.subscription_id, delivery.event.seq, nonce))
        return len(self.sent)


async def fill_outbox(store: Store, trainings: int) -> int:
    """Record STEPS new steps of each training: the store writes their deliveries."""
    now = time.time()
    updates = [
        TrainingUpdate(
            training_id=training_id(i),
            key_ref="default",
            next_poll_at=now + 3600,
            answered=True,
            state="training_started",
            events=[
                Event(seq=s, kind=EventKind.STEP, number=s + 1, label=f"Step {s + 1}", raw="x")
                for s in range(STEPS)
            ],
        )
        for i in range(trainings)
    ]
    return await store.trainings.record(updates, now)


async def run(quick: bool) -> list[Figure]:
    deliveries = 10_000 if quick else 50_000
    trainings = deliveries // (5 * STEPS)
    async with temp_dir() as tmp:
        db = tmp / "tunewatch.db"
        await seed(
            db, trainings, channels=trainings * 5, users=1, channel_subs=5, dm_subs=0, last_seq=-1
        )
        store = await Store.open(db)
        t0 = time.perf_counter()
        created = await fill_outbox(store, trainings)
        fill = time.perf_counter() - t0
        notifier = RecordingNotifier()
        deliverer = Deliverer(store, notifier, instance_id="bench")
        cpu0, t0 = cpu_seconds(), time.perf_counter()
        while await deliverer.drain_once():
            pass
        wall, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
        statuses = [row[5] async for rows in transfer.dump(store.db, "deliveries") for row in rows]
        sent = statuses.count("sent")
        await store.close()
        flood = await flooded_outbox(tmp)
    in_order = sent_in_order(notifier.sent)
    rate = sent / wall
    return [
        *flood,
        Figure(
            "outbox.deliveries_sent",
            sent,
            "deliveries",
            f"= {deliveries}",
            sent == deliveries == created and in_order,
            f"{created} written by trainings.record in {fill:.2f} s; "
            f"order per subscription {'kept' if in_order else 'BROKEN'}",
        ),
        Figure(
            "outbox.drain_rate",
            rate,
            "deliveries/s",
            ">= 2000",
            rate >= 2000,
            f"{wall:.2f} s, {cpu:.2f} CPU s, sent marks written included",
        ),
    ]


FLOOD = 100_000  # pending deliveries of one subscription (a log of 100,000 step lines)


async def flooded_outbox(tmp: Path) -> list[Figure]:
    """The outbox query with FLOOD pending rows for one channel (they can no longer come from
    one answer, which folds a flood into one message, but could from an older database), and
    how long a command's read waits behind it on the one connection."""
    db = tmp / "flood.db"
    await seed(db, 1, channels=1, users=1, channel_subs=1, dm_subs=0, last_seq=-1)
    store = await Store.open(db)
    now = time.time()
    step = [Event(seq=s, kind=EventKind.STEP, number=s + 1, label="x") for s in range(FLOOD)]
    update = TrainingUpdate(training_id(0), "default", now + 3600, answered=True, events=step)
    await store.trainings.record([update], now)
    timings = []
    for _ in range(5):
        t0 = time.perf_counter()
        groups = await store.outbox.due(time.time(), limit=5000)
        timings.append(time.perf_counter() - t0)
    # A command's read (/training-list) queued behind the drain's query on the connection.
    drain = asyncio.ensure_future(store.outbox.due(time.time(), limit=5000))
    for _ in range(3):
        await asyncio.sleep(0)  # the drain's query reaches the connection's queue first
    t0 = time.perf_counter()
    await store.subscriptions.of_guild(1)
    command = time.perf_counter() - t0
    await drain
    await store.close()
    best = min(timings)
    return [
        Figure(
            "outbox.due_with_100k_pending",
            best * 1000,
            "ms",
            "< 1000",
            best < 1.0,
            f"{sum(len(g) for g in groups)} handed out of {FLOOD:,} pending for one channel "
            "(was 52.6 s)",
        ),
        Figure(
            "outbox.command_read_behind_it",
            command * 1000,
            "ms",
            "< 1000",
            command < 1.0,
            "/training-list's read while the drain's query runs on the one connection",
        ),
    ]


def sent_in_order(sent: list[tuple[int, int, str]]) -> bool:
    """Whether each subscription's deliveries (subscription, seq, ...) went out in order."""
    last: dict[int, int] = {}
    for sub, seq, _ in sent:
        if last.get(sub, -1) >= seq:
            return False
        last[sub] = seq
    return True
