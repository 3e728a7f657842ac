"""8. The outbox on PostgreSQL, one deliverer and two, next to SQLite: 50,000 pending deliveries
(1,000 trainings x 5 channels x 10 steps) drained through a notifier that records and returns.

Two deliverers are two instances (each its own store, pool and lease owner) in this process:
the leases decide who sends what; every message must go exactly once, in order per channel.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from benchmarks.common import Figure, cpu_seconds, seed, temp_dir
from benchmarks.outbox import STEPS, fill_outbox, sent_in_order
from benchmarks.pg_common import ServerCpu, pg_server
from bot.store import Delivery, Store
from bot.tracking.delivery import Deliverer


class SharedLog:
    """What every instance sent, in the order it was sent (one event loop: one order)."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, int, str]] = []
        self.per_instance: list[int] = []

    def notifier(self) -> _Recorder:
        self.per_instance.append(0)
        return _Recorder(self, len(self.per_instance) - 1)


class _Recorder:
    def __init__(self, log: SharedLog, index: int) -> None:
        self._log = log
        self._index = index

    async def send(self, delivery: Delivery, nonce: str) -> int | None:
        self._log.sent.append((delivery.subscription_id, delivery.event.seq, nonce))
        self._log.per_instance[self._index] += 1
        return len(self._log.sent)


async def drain(target: Path | str, instances: int, log: SharedLog) -> float:
    """Drain the outbox with ``instances`` deliverers at once; returns wall seconds."""
    stores = [await Store.open(target) for _ in range(instances)]
    deliverers = [Deliverer(s, log.notifier(), instance_id="bench") for s in stores]
    t0 = time.perf_counter()

    async def until_empty(deliverer: Deliverer, store: Store) -> None:
        while True:
            if await deliverer.drain_once():
                continue
            if await store.outbox.next_due_at() is None:
                return
            await asyncio.sleep(0.005)  # the other instance holds what is left

    await asyncio.gather(*(until_empty(d, s) for d, s in zip(deliverers, stores, strict=True)))
    wall = time.perf_counter() - t0
    for store in stores:
        await store.close()
    return wall


async def run(quick: bool) -> list[Figure]:
    deliveries = 10_000 if quick else 50_000
    trainings = deliveries // (5 * STEPS)
    figures = []
    async with temp_dir() as tmp:
        with pg_server() as server:
            server_cpu = ServerCpu(server)
            for name, instances in (("sqlite", 1), ("postgresql", 1), ("postgresql_x2", 2)):
                if name == "sqlite":
                    target: Path | str = tmp / "outbox.db"
                else:
                    target = await asyncio.to_thread(server.new_database)
                await seed(
                    target,
                    trainings,
                    channels=trainings * 5,
                    users=1,
                    channel_subs=5,
                    dm_subs=0,
                    last_seq=-1,
                )
                store = await Store.open(target)
                created = await fill_outbox(store, trainings)
                await store.close()
                log = SharedLog()
                server_cpu.start()
                cpu0 = cpu_seconds()
                wall = await drain(target, instances, log)
                cpu = cpu_seconds() - cpu0 + (server_cpu.seconds() if name != "sqlite" else 0)
                keys = [(sub, seq) for sub, seq, _ in log.sent]
                duplicates = len(keys) - len(set(keys))
                in_order = sent_in_order(log.sent)
                ok = len(set(keys)) == created == deliveries and duplicates == 0 and in_order
                rate = len(keys) / wall
                split = ", ".join(str(n) for n in log.per_instance)
                figures.append(
                    Figure(
                        f"pg_outbox.{name}.drain_rate",
                        rate,
                        "deliveries/s",
                        ">= 2000",
                        ok and rate >= 2000,
                        f"{len(set(keys))} of {created} sent once ({duplicates} twice), order "
                        f"{'kept' if in_order else 'BROKEN'}; {wall:.2f} s, {cpu:.2f} CPU s; "
                        f"per instance {split}",
                    )
                )
    return figures
