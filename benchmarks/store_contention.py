"""Why the store passes rows as one JSON parameter: result writes beside a busy event loop.

The same 10,000 poll results (one row update each, in batches of 1,000) are written twice while
the event loop keeps busy the way HTTP polling does (a little Python, then a system call): once
through the store's own ``apply_updates`` (one statement per batch, its rows in one JSON
parameter) and once through ``executemany`` with the same UPDATE (one step per row, and Python's
sqlite3 takes the GIL back at every step). Figures: database time for each, and how much work the
loop got done meanwhile. Informational; no target.
"""

from __future__ import annotations

import asyncio
import random
import socket
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from benchmarks.common import Figure, seed, temp_dir
from benchmarks.simproc import training_id
from bot.store import Store, TrainingUpdate

TRAININGS = 10_000
BATCH = 1_000
ROUNDS = 3

# The row update apply_updates makes for a successful poll, one row per parameter set.
_UPDATE = (
    "UPDATE trainings SET state = ?, last_seq = ?, eta_minutes = ?, total_steps = COALESCE(?, "
    "total_steps), terminal = NULL, failure_reason = NULL, next_poll_at = ?, "
    "consecutive_errors = 0, last_error = NULL, not_found_count = 0, first_not_found_at = NULL, "
    "last_ok_at = ?, finished_at = NULL WHERE training_id = ? AND key_ref = ?"
)


def _updates(trainings: int) -> list[TrainingUpdate]:
    now = time.time()
    updates = [
        TrainingUpdate(
            training_id=training_id(i),
            key_ref="default",
            next_poll_at=now + 3600 * random.random(),
            ok=True,
            state="training_success",
            eta_minutes=20,
            total_steps=7,
        )
        for i in range(trainings)
    ]
    random.shuffle(updates)  # polls finish in no particular order
    return updates


async def _json(store: Store, batch: list[TrainingUpdate]) -> None:
    await store.apply_updates(batch, time.time())


async def _executemany(store: Store, batch: list[TrainingUpdate]) -> None:
    now = time.time()
    async with store.transaction() as db:
        await db.executemany(
            _UPDATE,
            [
                (
                    *("training_success", 1, u.eta_minutes, u.total_steps, u.next_poll_at, now),
                    *(u.training_id, u.key_ref),
                )
                for u in batch
            ],
        )


Write = Callable[[Store, list[TrainingUpdate]], Awaitable[None]]


async def _measure(
    store: Store, write: Write, updates: list[TrainingUpdate]
) -> tuple[float, float]:
    """(database seconds, loop iterations per second) for writing every update."""
    a, b = socket.socketpair()
    done = asyncio.Event()
    iterations = 0

    async def busy() -> None:
        nonlocal iterations
        while not done.is_set():
            sum(range(300))
            a.send(b"x")
            b.recv(16)
            iterations += 1
            await asyncio.sleep(0)

    loop = asyncio.create_task(busy())
    try:
        t0 = time.perf_counter()
        for i in range(0, len(updates), BATCH):
            await write(store, updates[i : i + BATCH])
        elapsed = time.perf_counter() - t0
    finally:
        done.set()
        await loop
        a.close()
        b.close()
    return elapsed, iterations / elapsed


async def run(quick: bool) -> list[Figure]:
    trainings = 2_000 if quick else TRAININGS
    results: dict[str, list[tuple[float, float]]] = {"json": [], "executemany": []}
    async with temp_dir() as tmp:
        path: Path = tmp / "contention.db"
        await seed(path, trainings, channels=trainings, users=trainings, channel_subs=1, dm_subs=0)
        store = await Store.open(path)
        try:
            for _ in range(1 if quick else ROUNDS):
                for name, write in (("json", _json), ("executemany", _executemany)):
                    results[name].append(await _measure(store, write, _updates(trainings)))
        finally:
            await store.close()
    figures = []
    for name in ("json", "executemany"):
        db_time = statistics.median(r[0] for r in results[name])
        loop_rate = statistics.median(r[1] for r in results[name])
        figures.append(
            Figure(
                f"store_contention.{name}",
                db_time,
                "s",
                note=(
                    f"{trainings} row updates in batches of {BATCH} beside a busy loop "
                    f"(loop at {loop_rate:,.0f} iterations/s); median of {len(results[name])}"
                ),
            )
        )
    return figures
