"""The poll_policy replay through the real tracker, store and client against the simulator.

Time is simulated: one clock, read by the tracker and the simulator alike, jumps from one
moment something can happen to the next (a training created, a training due). At each moment
the tracker is woken and the replay waits until every poll it claimed is answered and
recorded (``Tracker.settled``), so the figures do not depend on the machine's speed: what the
tracker polls, and when on the simulated clock, is what the real bot would.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import aiohttp

from benchmarks.policy_timelines import Timeline, status_body
from benchmarks.poll_policy import Figures
from bot.sdapi.client import SdApiClient
from bot.sdapi.simulator import DEFAULT_KEY, Simulator
from bot.store import DEFAULT_KEY_REF, Store, SubscriptionKind
from bot.tracking.outcome import Rules
from bot.tracking.tracker import Tracker
from tests.support.harness import wait_until

T0 = 1_800_000_000.0  # the simulated clock's start (a Unix time)


class OneKey:
    async def key_for(self, key_ref: str) -> str | None:
        return DEFAULT_KEY

    def missing_reason(self, key_ref: str) -> str:
        return "no key"


async def replay(
    timelines: list[Timeline], rules: Rules, created_every: float, folder: Path
) -> Figures:
    """Follow every timeline from its creation (a subscription then) to its end."""
    now = [T0]
    created = {t.training_id: T0 + i * created_every for i, t in enumerate(timelines)}
    sim = Simulator(clock=lambda: now[0], keys=(DEFAULT_KEY,))
    for timeline in timelines:
        start = created[timeline.training_id]
        sim.add_scripted(
            timeline.training_id,
            lambda tl=timeline, c=start: json.dumps(status_body(tl, now[0] - c)).encode(),
        )
    base_url = await sim.start()
    store = await Store.open(folder / f"replay-{rules.policy}.db")
    try:
        async with aiohttp.ClientSession() as session:
            client = SdApiClient(session, base_url, max_attempts=1, max_concurrency_per_key=16)
            tracker = Tracker(store, client, OneKey(), rules, clock=lambda: now[0])
            tracker.start()
            try:
                await _run(timelines, created, now, store, client, tracker)
            finally:
                await tracker.stop()
    finally:
        await store.close()
        await sim.stop()
    return _figures(timelines, created, sim)


async def _run(
    timelines: list[Timeline],
    created: dict[str, float],
    now: list[float],
    store: Store,
    client: SdApiClient,
    tracker: Tracker,
) -> None:
    waiting = sorted(timelines, key=lambda t: created[t.training_id])
    followed = 0
    while True:
        due = await store.trainings.next_due_at()
        upcoming = created[waiting[0].training_id] if waiting else None
        if due is None and upcoming is None and followed == len(timelines):
            return
        now[0] = min(t for t in (due, upcoming) if t is not None)
        while waiting and created[waiting[0].training_id] <= now[0]:
            timeline = waiting.pop(0)
            await _follow(timeline.training_id, store, client, tracker, now[0])
            followed += 1
        tracker.wake()
        await wait_until(lambda: tracker.last_tick == now[0], 60, "the tracker's tick", 0.001)
        await tracker.settled()


async def _follow(
    training_id: str, store: Store, client: SdApiClient, tracker: Tracker, now: float
) -> None:
    """What /training-subscribe does: ask for the status, record it, subscribe."""
    status = await client.fine_tune_status(training_id, DEFAULT_KEY)
    await tracker.ingest(training_id, DEFAULT_KEY_REF, status)
    await store.subscriptions.subscribe(
        kind=SubscriptionKind.CHANNEL,
        guild_id=1,
        channel_id=hash(training_id) % 10**9,
        user_id=1,
        training_id=training_id,
        key_ref=DEFAULT_KEY_REF,
        limit=10**9,
        now=now,
    )


def _figures(timelines: list[Timeline], created: dict[str, float], sim: Simulator) -> Figures:
    """Requests per training, and from each change worth a message to the first request that
    could see it."""
    asked: dict[str, list[float]] = {}
    for request in sim.requests:
        asked.setdefault(request.training_id, []).append(request.at)
    delays = []
    for timeline in timelines:
        times = asked.get(timeline.training_id, [])
        start = created[timeline.training_id]
        for event in timeline.events:
            if not event.message:
                continue
            change = start + event.at
            seen = next((t for t in times if t >= change), None)
            if seen is not None:
                delays.append(seen - change)
    cuts = statistics.quantiles(delays, n=100, method="inclusive")
    requests = statistics.fmean(len(asked.get(t.training_id, [])) for t in timelines)
    return Figures(requests, cuts[49], cuts[94])
