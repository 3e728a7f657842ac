"""7. A poll cycle on PostgreSQL, one instance and two, next to SQLite: 10,000 followed trainings
(50,000 subscriptions), every one due; the simulator in a process of its own.

Two instances are two Trackers, each with its own store (its own connection pool, its own
claims), in this process: the split of the polls between them comes from the database's claims
(FOR UPDATE SKIP LOCKED) alone. CPU per poll counts this process and, for PostgreSQL, the
server's processes (SQLite does its share inside this process).
"""

from __future__ import annotations

import asyncio
import gc
import time
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.common import (
    HTTP_TIMEOUT,
    Figure,
    SimProcess,
    cpu_seconds,
    seed,
    temp_dir,
)
from benchmarks.pg_common import ServerCpu, pg_server
from benchmarks.poll_cycle import CONCURRENCY, RULES, OneKey, stage2_layout
from bot.sdapi.client import SdApiClient
from bot.sdapi.status import TrainingStatus
from bot.store import Store
from bot.tracking.tracker import Tracker
from tests.support.harness import wait_until


class CountingClient(SdApiClient):
    """The real client, counting the polls of its instance."""

    polls = 0

    async def attempt(
        self, training_id: str, key: str, *args: Any, **kwargs: Any
    ) -> TrainingStatus:
        self.polls += 1
        return await super().attempt(training_id, key, *args, **kwargs)


async def cycle(
    targets: list[Path | str], base_url: str, trainings: int
) -> tuple[float, list[int]]:
    """Run one Tracker per target (all on the same database) until every training was polled
    once; returns (wall seconds, polls per instance)."""
    stores = [await Store.open(target) for target in targets]
    async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as session:
        clients = [
            CountingClient(
                session, base_url, max_concurrency=CONCURRENCY, max_concurrency_per_key=CONCURRENCY
            )
            for _ in stores
        ]
        trackers = [
            Tracker(store, client, OneKey(), RULES)
            for store, client in zip(stores, clients, strict=True)
        ]
        gc.collect()
        t0 = time.perf_counter()
        for tracker in trackers:
            tracker.start()
        try:
            await wait_until(
                lambda: (
                    sum(c.polls for c in clients) >= trainings
                    and all(not t._polls for t in trackers)
                ),
                180,
                "a full poll cycle",
            )
            wall = time.perf_counter() - t0
        finally:
            for tracker in trackers:
                await tracker.stop()
    for store in stores:
        await store.close()
    return wall, [c.polls for c in clients]


async def run(quick: bool) -> list[Figure]:
    trainings = 2_000 if quick else 10_000
    rounds = 1 if quick else 3
    layout = stage2_layout(trainings)
    results: dict[str, tuple[float, float, list[int]]] = {}
    async with temp_dir() as tmp, SimProcess(trainings, stage=2) as sim:
        with pg_server() as server:
            server_cpu = ServerCpu(server)
            for name, instances in (("sqlite", 1), ("postgresql", 1), ("postgresql_x2", 2)):
                best: tuple[float, float, list[int]] | None = None
                for n in range(rounds):
                    if name == "sqlite":
                        target: Path | str = tmp / f"{name}{n}.db"
                    else:
                        target = await asyncio.to_thread(server.new_database)
                    await seed(target, trainings, **layout)
                    before = (await sim.stats())["requests"]
                    server_cpu.start()
                    cpu0 = cpu_seconds()
                    wall, polls = await cycle([target] * instances, sim.base_url, trainings)
                    cpu = cpu_seconds() - cpu0 + (server_cpu.seconds() if name != "sqlite" else 0)
                    requests = (await sim.stats())["requests"] - before
                    if requests != trainings:
                        raise RuntimeError(f"{name}: {requests} requests for {trainings}")
                    if best is None or wall < best[0]:
                        best = (wall, cpu, polls)
                assert best is not None
                results[name] = best
    figures = []
    for name, (wall, cpu, _) in results.items():
        figures.append(
            Figure(
                f"pg_cycle.{name}.wall",
                wall,
                "s",
                note=f"{trainings} polls, {trainings / wall:,.0f}/s, "
                f"{cpu / trainings * 1e6:.0f} us CPU/poll; best of {rounds}",
            )
        )
    base_cpu = results["sqlite"][1]
    ratio = results["postgresql"][1] / base_cpu
    figures.append(
        Figure(
            "pg_cycle.cpu_per_poll_vs_sqlite",
            ratio,
            "x",
            "<= 2",
            ratio <= 2.0,
            "PostgreSQL's CPU (this process + the server) over SQLite's, one instance",
        )
    )
    polls = results["postgresql_x2"][2]
    shares = [p / sum(polls) for p in polls]
    figures.append(
        Figure(
            "pg_cycle.two_instances_share",
            min(shares) * 100,
            "% (smaller)",
            "40-60 % each",
            all(0.4 <= s <= 0.6 for s in shares),
            "polls per instance: " + ", ".join(str(p) for p in polls),
        )
    )
    return figures
