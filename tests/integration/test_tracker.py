"""The tracker with a real SQLite file and the real client against the simulator on loopback."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.events import TERMINAL_SEQ, EventKind
from bot.sdapi.client import SdApiClient
from bot.sdapi.simulator import DEFAULT_KEY, Fault, Simulator
from bot.store import DEFAULT_KEY_REF, Store, SubscriptionKind, SubscriptionStatus, TrainingUpdate
from bot.tracking.outcome import Rules
from bot.tracking.policy import PollPolicy
from bot.tracking.tracker import Tracker
from tests.support.harness import wait_until

pytestmark = pytest.mark.timeout(60)


class Keys:
    def __init__(self, key: str | None = DEFAULT_KEY) -> None:
        self.key = key

    async def key_for(self, key_ref: str) -> str | None:
        return self.key

    def missing_reason(self, key_ref: str) -> str:
        return f"no key for {key_ref}"


@pytest.fixture
async def client(sim: Simulator) -> AsyncIterator[SdApiClient]:
    async with aiohttp.ClientSession() as session:
        # Generous: a loaded machine must not turn a slow answer into an error.
        yield SdApiClient(session, sim.base_url, timeout=5.0, max_attempts=1)


async def subscribe(store: Store, training_id: str, *, channel: int = 1, key_ref: str = "default"):
    sub, _ = await store.subscriptions.subscribe(
        kind=SubscriptionKind.CHANNEL,
        guild_id=1,
        channel_id=channel,
        user_id=9,
        training_id=training_id,
        key_ref=key_ref,
        limit=100,
        now=time.time(),
    )
    return sub


def make_tracker(store: Store, client: SdApiClient, **kw: Any) -> Tracker:
    rules = Rules(
        interval=kw.pop("interval", 0.1),
        max_backoff=kw.pop("max_backoff", 0.4),
        not_found_confirmations=kw.pop("not_found_confirmations", 3),
        not_found_window=kw.pop("not_found_window", 300.0),
    )
    return Tracker(store, client, kw.pop("keys", Keys()), rules, **kw)


async def follow(tracker: Tracker, client: SdApiClient, store: Store, training_id: str):
    """Follow a training as /training-subscribe does: its status recorded, then a subscription
    (of channel 1); returns the subscription."""
    status = await client.fine_tune_status(training_id, DEFAULT_KEY)
    await tracker.ingest(training_id, DEFAULT_KEY_REF, status)
    return await subscribe(store, training_id)


async def row(store: Store, training_id: str, key_ref: str = DEFAULT_KEY_REF):
    training = await store.trainings.get(training_id, key_ref)
    assert training is not None
    return training


async def pending(store: Store) -> list[list[tuple[int, bool]]]:
    """(seq, late) of the deliveries due, per subscription."""
    groups = await store.outbox.due(time.time() + 3600, limit=1000)
    return [[(d.event.seq, d.event.late) for d in g] for g in groups]


async def test_one_poll_per_cycle_for_many_followers(store, client, sim) -> None:
    training = sim.add_training("Many000001", stage=1)
    tracker = make_tracker(store, client, interval=0.2)
    await follow(tracker, client, store, "Many000001")
    for channel in range(2, 21):
        await subscribe(store, "Many000001", channel=channel)
    tracker.start()
    try:
        await sim.wait_for_requests(5, training_id="Many000001")
        training.advance(6)
        await wait_until(lambda: _terminal(store, "Many000001"), what="the training finished")
    finally:
        await tracker.stop()
    times = [r.at for r in sim.requests if r.training_id == "Many000001"][1:]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 0.2 * 0.85, gaps
    groups = await pending(store)
    assert len(groups) == 20
    assert all([seq for seq, _ in g] == [1, 2, 3, TERMINAL_SEQ] for g in groups)


async def _terminal(store: Store, training_id: str) -> bool:
    training = await store.trainings.get(training_id, DEFAULT_KEY_REF)
    return training is not None and training.terminal is not None


async def test_backoff_grows_and_is_capped_and_keeps_the_subscription(store, client, sim) -> None:
    sim.add_training("Backoff001", stage=1)
    tracker = make_tracker(store, client, interval=0.05, max_backoff=0.4)
    sub = await follow(tracker, client, store, "Backoff001")
    await store.trainings.poll_now("Backoff001", time.time())
    sim.inject(Fault.UNAVAILABLE, count=None)
    tracker.start()
    try:
        await sim.wait_for_requests(9, training_id="Backoff001")
        await wait_until(
            lambda: _errors_at_least(store, "Backoff001", 7), what="seven errors recorded"
        )
    finally:
        await tracker.stop()
    times = [r.at for r in sim.requests if r.training_id == "Backoff001"][1:]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[-1] > gaps[0] * 2  # exponential...
    # ...and capped: uncapped, the last gaps would be 0.05 * 2**7 = 6.4 s; the slack is for a
    # loaded machine.
    assert max(gaps) < 1.5, gaps
    training = await row(store, "Backoff001")
    assert training.last_error
    assert training.failing_since is not None
    kept = await store.subscriptions.get(sub.id)
    assert kept is not None
    assert kept.status is SubscriptionStatus.ACTIVE


async def _errors_at_least(store: Store, training_id: str, n: int) -> bool:
    training = await store.trainings.get(training_id, DEFAULT_KEY_REF)
    return training is not None and training.consecutive_errors >= n


async def test_not_found_must_repeat_before_followers_are_told(store, client, sim) -> None:
    sim.add_training("Vanish0001", stage=2)
    tracker = make_tracker(store, client, not_found_confirmations=3, not_found_window=0.0)
    sub = await follow(tracker, client, store, "Vanish0001")
    sim.inject(Fault.NOT_FOUND, count=2, training_id="Vanish0001")
    tracker.start()
    try:
        await sim.wait_for_requests(4, training_id="Vanish0001")  # 2 not found, then found
        await wait_until(lambda: _found_again(store, "Vanish0001"))
        assert await pending(store) == []
        sim.inject(Fault.NOT_FOUND, count=None, training_id="Vanish0001")
        await wait_until(lambda: _terminal(store, "Vanish0001"), what="the unknown event")
    finally:
        await tracker.stop()
    groups = await store.outbox.due(time.time(), limit=10)
    assert [[d.event.kind for d in g] for g in groups] == [[EventKind.UNKNOWN]]
    assert groups[0][0].subscription_id == sub.id


async def _found_again(store: Store, training_id: str) -> bool:
    training = await store.trainings.get(training_id, DEFAULT_KEY_REF)
    return (
        training is not None
        and training.not_found_count == 0
        and training.consecutive_errors == 0
        and training.last_ok_at is not None
    )


async def test_missing_key_pauses_with_reason(store, client, sim) -> None:
    sim.add_training("NoKey00001", stage=1)
    tracker = make_tracker(store, client, keys=Keys(None))
    sub = await follow(tracker, client, store, "NoKey00001")
    before = sim.request_count()
    tracker.start()
    try:
        await wait_until(lambda: _paused(store, sub.id), what="paused")
    finally:
        await tracker.stop()
    paused = await store.subscriptions.get(sub.id)
    assert paused is not None
    assert paused.reason == "no key for default"
    assert sim.request_count() == before


async def _paused(store: Store, sub_id: int) -> bool:
    sub = await store.subscriptions.get(sub_id)
    return sub is not None and sub.status is SubscriptionStatus.PAUSED


async def test_resumes_from_the_database_after_a_restart(tmp_path: Path, client, sim) -> None:
    now = [time.time()]
    training = sim.add_training("Resume0001", stage=1)
    first = await Store.open(tmp_path / "r.db")
    tracker = make_tracker(first, client, clock=lambda: now[0])
    await follow(tracker, client, first, "Resume0001")
    await first.close()  # no tracker ever ran on it

    training.advance(3)  # two new step lines: the documented log has none for compressing
    now[0] += 600  # down for ten minutes
    second = await Store.open(tmp_path / "r.db")
    tracker = make_tracker(second, client, clock=lambda: now[0])
    tracker.start()
    try:
        await wait_until(lambda: _delivered(second, 2), what="steps recorded after restart")
    finally:
        await tracker.stop()
        groups = await pending(second)
        await second.close()
    assert groups == [[(1, True), (2, True)]]  # seen long after they were due: late


async def _delivered(store: Store, n: int) -> bool:
    groups = await pending(store)
    return bool(groups) and len(groups[0]) >= n


async def test_an_unfollowed_training_is_not_polled(store, client, sim) -> None:
    sim.add_training("Alone00001", stage=1)
    tracker = make_tracker(store, client)
    status = await client.fine_tune_status("Alone00001", DEFAULT_KEY)
    await tracker.ingest("Alone00001", DEFAULT_KEY_REF, status)
    await store.trainings.record(
        [TrainingUpdate("Alone00001", DEFAULT_KEY_REF, time.time(), answered=True)], time.time()
    )
    before = sim.request_count()
    tracker.start()
    try:
        for _ in range(3):
            tick = tracker.last_tick
            tracker.wake()
            await wait_until(lambda t=tick: tracker.last_tick != t)
    finally:
        await tracker.stop()
    assert sim.request_count() == before
    assert not await tracker.poll_soon("Alone00001")


TWO_KEYS = {DEFAULT_KEY_REF: DEFAULT_KEY, "user:2": "second-key-0000"}


class TwoKeys:
    async def key_for(self, key_ref: str) -> str | None:
        return TWO_KEYS.get(key_ref)

    def missing_reason(self, key_ref: str) -> str:
        return "missing"


async def follow_two_keys(store: Store, sim: Simulator, slow: list[str], fast: list[str]) -> None:
    """``slow`` trainings on the default key, every request about them hanging; ``fast`` ones
    on user:2's key; all followed. The slow ones are due first, so they are claimed first."""
    for tid in slow:
        sim.add_training(tid, stage=1)
        sim.inject(Fault.HANG, count=None, training_id=tid)
    for tid in fast:
        sim.add_training(tid, stage=1, key=TWO_KEYS["user:2"])
    now = time.time()
    await store.trainings.record(
        [TrainingUpdate(t, DEFAULT_KEY_REF, now - 10, answered=True) for t in slow]
        + [TrainingUpdate(t, "user:2", now - 5, answered=True) for t in fast],
        now,
    )
    for i, tid in enumerate(slow + fast):
        await subscribe(store, tid, channel=100 + i, key_ref="user:2" if tid in fast else "default")


async def test_a_hanging_key_does_not_starve_another(store: Store, sim: Simulator) -> None:
    slow = [f"SlowKey{i:03d}" for i in range(8)]
    fast = [f"FastKey{i:03d}" for i in range(3)]
    await follow_two_keys(store, sim, slow, fast)
    async with aiohttp.ClientSession() as session:
        client = SdApiClient(session, sim.base_url, timeout=30, max_concurrency_per_key=1)
        tracker = Tracker(store, client, TwoKeys(), Rules(interval=60))
        tracker.start()
        try:
            for tid in fast:
                await sim.wait_for_requests(1, training_id=tid, timeout=10)
            # The slow key never had more than its one slot in flight.
            assert sum(sim.request_count(t) for t in slow) == 1
        finally:
            sim.clear_faults()
            sim.release_hangs()
            await tracker.stop()


async def test_a_busy_key_takes_no_worker_from_another(store: Store, sim: Simulator) -> None:
    # Two workers (the client's two requests at once), one request at once per key: the slow
    # key's six trainings, claimed first, hang. Its one request in flight is all it holds: the
    # other worker polls the other key's trainings meanwhile.
    slow = [f"BusyKey{i:03d}" for i in range(6)]
    fast = [f"FreeKey{i:03d}" for i in range(3)]
    await follow_two_keys(store, sim, slow, fast)
    async with aiohttp.ClientSession() as session:
        client = SdApiClient(
            session, sim.base_url, timeout=30, max_concurrency=2, max_concurrency_per_key=1
        )
        tracker = Tracker(store, client, TwoKeys(), Rules(interval=60))
        tracker.start()
        try:
            for tid in fast:
                await sim.wait_for_requests(1, training_id=tid, timeout=10)
            assert sum(sim.request_count(t) for t in slow) == 1
        finally:
            sim.clear_faults()
            sim.release_hangs()
            await tracker.stop()


async def test_text_no_database_takes_is_made_safe_before_it_is_recorded(
    store, client, sim
) -> None:
    # A lone surrogate (\\ud800) or a NUL (\\u0000) in an answer is valid JSON but no UTF-8
    # encoder or PostgreSQL takes it: recorded as is, it would roll back the whole batch of
    # poll results, every cycle, and the other trainings' news with it.
    poison = (
        b'{"status": "success", "messege": "training_started", "data": '
        b'"Step:1 Training \\ud800 Started\\u0000, 5 More Steps to go : ETA : 30 minutes"}'
    )
    sim.add_scripted("Poison0001", lambda: poison)
    sim.add_training("Healthy001", stage=1)
    tracker = make_tracker(store, client, interval=60)
    ids = ("Poison0001", "Healthy001")
    now = time.time()
    await store.trainings.record(
        [TrainingUpdate(t, DEFAULT_KEY_REF, now - 1, answered=True) for t in ids], now
    )
    for channel, training_id in enumerate(ids, start=1):
        await subscribe(store, training_id, channel=channel)
    tracker.start()
    try:
        for training_id in ids:
            await sim.wait_for_requests(1, training_id=training_id)
        await tracker.settled()
    finally:
        await tracker.stop()
    groups = await store.outbox.due(time.time() + 3600, limit=1000)
    labels = {g[0].training_id: [d.event.label for d in g if d.event] for g in groups}
    assert labels["Poison0001"] == ["Training \ufffd Started\ufffd"]
    assert labels["Healthy001"]  # its news recorded beside the poison's


async def test_a_training_declared_unknown_can_be_followed_again(store, client, sim) -> None:
    training = sim.add_training("Revive0001", stage=1)
    tracker = make_tracker(store, client, not_found_confirmations=1, not_found_window=0.0)
    sub = await follow(tracker, client, store, "Revive0001")
    await store.trainings.poll_now("Revive0001", time.time())
    sim.inject(Fault.NOT_FOUND, count=None, training_id="Revive0001")
    tracker.start()
    try:
        await wait_until(lambda: _terminal(store, "Revive0001"), what="declared unknown")
    finally:
        await tracker.stop()
    assert (await row(store, "Revive0001")).terminal is EventKind.UNKNOWN

    # The API knows it again: a new subscription (which ingests the status) follows it anew.
    sim.clear_faults()
    again = await follow(tracker, client, store, "Revive0001")
    assert again.id == sub.id
    assert again.status is SubscriptionStatus.ACTIVE
    training.advance(6)
    await store.trainings.poll_now("Revive0001", time.time())
    tracker.start()
    try:
        await wait_until(lambda: _terminal(store, "Revive0001"), what="ready")
    finally:
        await tracker.stop()
    assert (await row(store, "Revive0001")).terminal is EventKind.READY


# -- claims, leases and stopping ------------------------------------------------------------


async def parked(event: asyncio.Event) -> None:
    """Wait until a loop sits in ``await event.wait()`` (asyncio keeps no public count)."""
    await wait_until(lambda: bool(event._waiters), what="the loop to wait for its wake-up")


async def test_tracker_stops_when_woken_just_before(store, client) -> None:
    # asyncio.wait_for in Python 3.11 swallows a cancellation that arrives together with the
    # result it waits for: a wake-up right before stop() left the scheduler running.
    tracker = make_tracker(store, client)
    tracker.start()
    await parked(tracker._wake)
    tracker.wake()
    stopping = asyncio.create_task(tracker.stop())
    done, _ = await asyncio.wait({stopping}, timeout=5)
    assert done, "stop() did not return: a loop swallowed its cancellation"


async def test_claims_are_bounded_and_nothing_is_polled_twice(store, client, sim) -> None:
    # A window of 4 claimed trainings and an API that hangs: only 4 polls are in flight, and
    # when the clock passes their next poll time while they hang, they are not polled again.
    now = [1_000_000.0]
    ids = [f"Claim{i:05d}" for i in range(8)]
    for training_id in ids:
        sim.add_training(training_id, stage=1)
    tracker = make_tracker(
        store, client, interval=10, max_backoff=900, claim_size=4, clock=lambda: now[0]
    )
    for training_id in ids:
        await follow(tracker, client, store, training_id)
        await store.trainings.poll_now(training_id, now[0])
    before = {training_id: sim.request_count(training_id) for training_id in ids}

    def polled() -> int:
        return sum(sim.request_count(t) - before[t] for t in ids)

    sim.inject(Fault.HANG, count=None)
    tracker.start()
    try:
        await wait_until(lambda: polled() >= 4, what="the first claim's polls")
        now[0] += 12  # every training is due, the hanging ones again
        for _ in range(3):  # the scheduler looks again (its ticks read the test's clock)
            now[0] += 0.001
            tracker.wake()
            await wait_until(lambda: tracker.last_tick == now[0])
        assert polled() == 4  # the window, no more
        sim.clear_faults()
        sim.release_hangs()  # they answer 503: backed off, not polled again now
        await wait_until(lambda: polled() >= len(ids), what="every training")
    finally:
        await tracker.stop()
    assert {t: sim.request_count(t) - before[t] for t in ids} == dict.fromkeys(ids, 1)


async def test_a_start_polls_the_soonest_first(store, client, sim) -> None:
    now = [2_000_000.0]
    ids = [f"Start{i:05d}" for i in range(10)]
    for training_id in ids:
        sim.add_training(training_id, stage=1)
    tracker = make_tracker(store, client, interval=600, claim_size=1, clock=lambda: now[0])
    for training_id in ids:
        await follow(tracker, client, store, training_id)
    # Due in the reverse of the order followed.
    await store.trainings.record(
        [
            TrainingUpdate(t, DEFAULT_KEY_REF, now[0] - 100 + (9 - i), answered=True)
            for i, t in enumerate(ids)
        ],
        now[0] - 1000,
    )
    first = len(sim.requests)
    tracker.start()
    try:
        await wait_until(lambda: len(sim.requests) - first >= len(ids), what="every training")
    finally:
        await tracker.stop()
    assert [r.training_id for r in sim.requests[first:]] == list(reversed(ids))


async def test_poll_soon_during_a_poll_polls_again_after_it(store, client, sim) -> None:
    # A webhook or a command asks for a poll while one is in flight: that poll's result (here
    # a backoff of some minutes: the API failed five times before) must not write its own
    # next time over the request, which is one interval after the poll in flight.
    sim.add_training("Again00001", stage=1)
    tracker = make_tracker(store, client, interval=1, max_backoff=900)
    await follow(tracker, client, store, "Again00001")
    failing = TrainingUpdate(
        "Again00001", DEFAULT_KEY_REF, time.time(), consecutive_errors=8, last_error="x"
    )
    await store.trainings.record([failing], time.time())
    before = sim.request_count("Again00001")
    sim.inject(Fault.HANG, training_id="Again00001")
    tracker.start()
    try:
        await sim.wait_for_requests(before + 1, training_id="Again00001")
        assert await tracker.poll_soon("Again00001")
        sim.release_hangs()  # the hung poll answers 503
        await sim.wait_for_requests(before + 2, training_id="Again00001")
    finally:
        await tracker.stop()


async def test_a_poll_cancelled_by_stop_is_made_again_after_start(store, client, sim) -> None:
    sim.add_training("Stop000001", stage=1)
    tracker = make_tracker(store, client, interval=0.5)
    await follow(tracker, client, store, "Stop000001")
    await store.trainings.poll_now("Stop000001", time.time())
    sim.inject(Fault.HANG, training_id="Stop000001")
    before = sim.request_count("Stop000001")
    tracker.start()
    await sim.wait_for_requests(before + 1, training_id="Stop000001")
    await tracker.stop()
    sim.release_hangs()
    tracker.start()
    try:
        await sim.wait_for_requests(before + 2, training_id="Stop000001")
    finally:
        await tracker.stop()


async def test_polls_that_see_nothing_new_write_nothing_and_are_not_late(
    store, client, sim
) -> None:
    # A poll that changes nothing leaves the row alone, apart from the claim's next time. A
    # step seen later after many quiet polls is not late: they were all on time.
    now = [1_000_000.0]
    training = sim.add_training("Quiet00001", stage=1)
    tracker = make_tracker(store, client, interval=10, clock=lambda: now[0])
    await follow(tracker, client, store, "Quiet00001")
    written = await row(store, "Quiet00001")
    before = sim.request_count("Quiet00001")
    tracker.start()
    try:
        for cycle in range(1, 7):  # a minute of quiet polls
            now[0] += 11
            tracker.wake()
            await sim.wait_for_requests(before + cycle, training_id="Quiet00001")
        await wait_until(lambda: _quiet_since(store, written), what="the claims written")
        training.advance()
        now[0] += 11
        tracker.wake()
        await wait_until(lambda: _delivered(store, 1), what="the step recorded")
    finally:
        await tracker.stop()
    assert await pending(store) == [[(1, False)]]


async def _quiet_since(store: Store, written: Any) -> bool:
    current = await store.trainings.get(written.training_id, written.key_ref)

    # Only the claim's columns moved (when next, why, when last claimed), nothing the polls saw.
    def seen(row: Any) -> Any:
        return row._replace(next_poll_at=0, last_polled_at=0, poll_reason=None)

    return current is not None and seen(current) == seen(written)


# -- the poll policy ------------------------------------------------------------------------


async def test_asking_for_a_poll_keeps_the_shortest_gap(store, client, sim) -> None:
    # A webhook (or a command) brings a poll planned far away to the shortest gap after the
    # last poll, never sooner: the API's spam filter counts repeated requests.
    now = [1_000_000.0]
    sim.add_training("Gap0000001", stage=1)
    tracker = make_tracker(store, client, interval=30, clock=lambda: now[0])
    await follow(tracker, client, store, "Gap0000001")  # the command's request is a poll
    await store.trainings.record(  # planned far away, as a long stage would be
        [TrainingUpdate("Gap0000001", DEFAULT_KEY_REF, now[0] + 3600, answered=True)], now[0]
    )
    now[0] += 5
    assert await tracker.poll_soon("Gap0000001")
    training = await row(store, "Gap0000001")
    assert training.next_poll_at == 1_000_030.0  # 30 s after the command's request
    assert training.poll_reason == "asked for"
    await store.trainings.record(  # planned far away again
        [TrainingUpdate("Gap0000001", DEFAULT_KEY_REF, now[0] + 3600, answered=True)], now[0]
    )
    now[0] += 40
    assert await tracker.poll_soon("Gap0000001")
    assert (await row(store, "Gap0000001")).next_poll_at == now[0]  # past the gap: now


async def test_the_adaptive_policy_plans_from_what_the_training_says(store, client, sim) -> None:
    # Through the real tracker, on a clock of the test's own: every gap between two polls of
    # the training stays within the bounds, each plan says why, and the training is followed
    # to its end.
    now = [1_000_000.0]
    training = sim.add_training("Adapt00001", stage=1, timeline="dreambooth")
    rules = Rules(interval=30, max_interval=150, policy=PollPolicy.ADAPTIVE)
    tracker = Tracker(store, client, Keys(), rules, clock=lambda: now[0])
    await follow(tracker, client, store, "Adapt00001")
    tracker.start()
    polls: list[float] = []
    reasons: set[str] = set()
    try:
        for _ in range(40):
            due = await store.trainings.next_due_at()
            if due is None:
                break
            now[0] = due
            before = sim.request_count("Adapt00001")
            tracker.wake()
            await wait_until(lambda b=before: sim.request_count("Adapt00001") > b, what="a poll")
            await tracker.settled()
            polls.append(now[0])
            reasons.add((await row(store, "Adapt00001")).poll_reason or "")
            if len(polls) % 3 == 0:
                training.advance()
    finally:
        await tracker.stop()
    gaps = [b - a for a, b in itertools.pairwise(polls)]
    assert all(30 <= gap <= 150 * 1.0001 for gap in gaps), gaps
    assert (await row(store, "Adapt00001")).terminal is EventKind.READY
    assert reasons - {""}  # each plan says why
    finished = await store.trainings.finished_observations(10)
    assert len(finished) == 1  # what the next runs learn from
