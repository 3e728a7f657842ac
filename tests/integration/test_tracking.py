"""Tracker and deliverer with a real SQLite file and the real client against the simulator; a
recording notifier stands in for Discord (the e2e tests cover the real one)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.sdapi.client import SdApiClient
from bot.sdapi.simulator import DEFAULT_KEY, Fault, Simulator
from bot.store import (
    DEFAULT_KEY_REF,
    TERMINAL_SEQ,
    Delivery,
    Event,
    EventKind,
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


@dataclass
class RecordingNotifier:
    sent: list[tuple[int, int, EventKind, int]] = field(default_factory=list)  # sub, seq, kind
    failures: dict[int, list[Exception]] = field(default_factory=dict)  # sub id -> to raise
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def send(self, delivery: Delivery, nonce: str) -> int | None:
        pending = self.failures.get(delivery.subscription_id)
        if pending:
            raise pending.pop(0)
        self.sent.append(
            (delivery.subscription_id, delivery.event.seq, delivery.event.kind, len(nonce))
        )
        self.arrived.set()
        return len(self.sent)

    def seqs(self, sub_id: int) -> list[int]:
        return [seq for sub, seq, _, _ in self.sent if sub == sub_id]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(tmp_path / "t.db")
    yield opened
    await opened.close()


@pytest.fixture
async def client(sim: Simulator) -> AsyncIterator[SdApiClient]:
    async with aiohttp.ClientSession() as session:
        yield SdApiClient(session, sim.base_url, timeout=1.0, max_attempts=1)


async def subscribe(store: Store, training_id: str, *, channel: int | None = 1, user: int = 9):
    kind = SubscriptionKind.CHANNEL if channel is not None else SubscriptionKind.DM
    sub, _ = await store.subscribe(
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


# -- the outbox ---------------------------------------------------------------------------


async def test_outbox_baseline_and_kinds(store: Store) -> None:
    now = time.time()
    base = TrainingUpdate("T1", DEFAULT_KEY_REF, next_poll_at=now, ok=True, events=[step(0)])
    await store.apply_updates([base], now)
    channel = await subscribe(store, "T1")
    dm = await subscribe(store, "T1", channel=None, user=5)
    assert channel.baseline_seq == 0
    more = TrainingUpdate(
        "T1",
        DEFAULT_KEY_REF,
        next_poll_at=now,
        ok=True,
        events=[step(0), step(1), step(2), Event(seq=TERMINAL_SEQ, kind=EventKind.READY)],
    )
    assert await store.apply_updates([more], now) == 3 + 1  # two steps + final, and the DM
    # The same poll again changes nothing: events are identified by position.
    assert await store.apply_updates([more], now) == 0
    groups = await store.pending_deliveries(now + 1, limit=100)
    by_sub = {g[0].subscription_id: [d.event.seq for d in g] for g in groups}
    assert by_sub == {channel.id: [1, 2, TERMINAL_SEQ], dm.id: [TERMINAL_SEQ]}
    training = await store.get_training("T1", DEFAULT_KEY_REF)
    assert training is not None
    assert training.terminal is EventKind.READY
    assert training.last_seq == 2
    assert await store.count_active_trainings() == 0  # finished: no longer polled


async def test_nonce_is_short_and_deterministic() -> None:
    assert make_nonce("deadbeef", 1) == make_nonce("deadbeef", 1)
    assert make_nonce("deadbeef", 1) != make_nonce("deadbeef", 2)
    assert len(make_nonce("deadbeef", 2**62)) <= 25


# -- the deliverer ------------------------------------------------------------------------


async def outbox_with_steps(store: Store, n: int, *subs: int | None) -> list[int]:
    now = time.time()
    await store.apply_updates([TrainingUpdate("T1", DEFAULT_KEY_REF, now, ok=True)], now)
    ids = [(await subscribe(store, "T1", channel=c, user=100 + i)).id for i, c in enumerate(subs)]
    update = TrainingUpdate("T1", DEFAULT_KEY_REF, now, ok=True, events=[step(i) for i in range(n)])
    await store.apply_updates([update], now)
    return ids


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
    counts = await store.delivery_counts()
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
    next_at = await store.next_delivery_at()
    assert next_at is not None
    assert next_at - time.time() > 55


async def test_permanent_failure_pauses_only_that_subscription(store: Store) -> None:
    a, b = await outbox_with_steps(store, 2, 1, 2)
    notifier = RecordingNotifier(failures={a: [PermanentDeliveryError("The channel was deleted.")]})
    deliverer = Deliverer(store, notifier, instance_id="abcd1234")
    await deliverer.drain_once()
    assert notifier.seqs(b) == [0, 1]
    paused = await store.get_subscription(a)
    assert paused is not None
    assert paused.status is SubscriptionStatus.PAUSED
    assert paused.reason == "The channel was deleted."
    assert await deliverer.drain_once() == 0  # nothing retries
    assert (await store.delivery_counts()) == {"sent": 2, "dropped": 2}


@pytest.mark.allow_errors
async def test_unclassified_failure_gives_up_on_that_message_only(store: Store) -> None:
    (a,) = await outbox_with_steps(store, 2, 1)
    notifier = RecordingNotifier(failures={a: [DeliveryError("400 bad embed")]})
    deliverer = Deliverer(store, notifier, instance_id="abcd1234")
    await deliverer.drain_once()
    assert notifier.seqs(a) == [1]
    assert (await store.delivery_counts()) == {"failed": 1, "sent": 1}


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


# -- the tracker --------------------------------------------------------------------------


async def ingest_from_api(tracker: Tracker, client: SdApiClient, training_id: str) -> None:
    """Record what the API says of a training now, as a command that subscribes does first."""
    status = await client.fine_tune_status(training_id, DEFAULT_KEY)
    await tracker.ingest(training_id, DEFAULT_KEY_REF, status)


async def follow(tracker: Tracker, client: SdApiClient, store: Store, training_id: str):
    """Follow a training as /training-subscribe does: its status recorded, then a subscription
    (of channel 1); returns the subscription."""
    await ingest_from_api(tracker, client, training_id)
    return await subscribe(store, training_id)


def make_tracker(store: Store, client: SdApiClient, **kw) -> Tracker:
    kw.setdefault("interval", 0.1)
    kw.setdefault("max_backoff", 0.4)
    kw.setdefault("workers", 4)
    return Tracker(store, client, kw.pop("keys", Keys()), **kw)


async def test_one_poll_per_cycle_for_many_followers(store, client, sim) -> None:
    training = sim.add_training("Many000001", stage=1)
    tracker = make_tracker(store, client, interval=0.2)
    await ingest_from_api(tracker, client, "Many000001")
    for channel in range(1, 21):
        await subscribe(store, "Many000001", channel=channel)
    tracker.start()
    try:
        await sim.wait_for_requests(5, training_id="Many000001")
        training.advance(6)
        await wait_until(lambda: _done(store), what="the training finished")
    finally:
        await tracker.stop()
    times = [r.at for r in sim.requests if r.training_id == "Many000001"][1:]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 0.2 * 0.85, gaps
    groups = await store.pending_deliveries(time.time(), limit=10_000)
    assert len(groups) == 20
    assert all([d.event.seq for d in g] == [1, 2, 3, TERMINAL_SEQ] for g in groups)


async def _done(store: Store) -> bool:
    training = await store.get_training("Many000001", DEFAULT_KEY_REF)
    return training is not None and training.terminal is EventKind.READY


async def test_backoff_grows_and_is_capped_and_keeps_the_subscription(store, client, sim) -> None:
    sim.add_training("Backoff001", stage=1)
    tracker = make_tracker(store, client, interval=0.05, max_backoff=0.4)
    sub = await follow(tracker, client, store, "Backoff001")
    sim.inject(Fault.UNAVAILABLE, count=None)
    tracker.start()
    try:
        await sim.wait_for_requests(9, training_id="Backoff001")
    finally:
        await tracker.stop()
    times = [r.at for r in sim.requests if r.training_id == "Backoff001"][1:]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[-1] > gaps[0] * 2  # exponential...
    # ...and capped: uncapped, the last gaps would be 0.05 * 2**7 = 6.4 s; the slack is for a
    # loaded machine.
    assert max(gaps) < 1.5, gaps
    training = await store.get_training("Backoff001", DEFAULT_KEY_REF)
    assert training is not None
    assert training.consecutive_errors >= 7
    assert training.last_error is not None
    assert training.last_error == "The Stable Diffusion API is having trouble (HTTP 503)."
    kept = await store.get_subscription(sub.id)
    assert kept is not None
    assert kept.status is SubscriptionStatus.ACTIVE


async def test_not_found_must_repeat_before_followers_are_told(store, client, sim) -> None:
    sim.add_training("Vanish0001", stage=2)
    tracker = make_tracker(store, client, not_found_confirmations=3, not_found_window=0.0)
    sub = await follow(tracker, client, store, "Vanish0001")
    sim.inject(Fault.NOT_FOUND, count=2, training_id="Vanish0001")
    tracker.start()
    try:
        await sim.wait_for_requests(4, training_id="Vanish0001")  # 2 not found, then found
        training = await store.get_training("Vanish0001", DEFAULT_KEY_REF)
        await wait_until(lambda: _nf_reset(store, "Vanish0001"))
        assert training is not None
        assert (await store.pending_deliveries(time.time(), limit=10)) == []
        sim.inject(Fault.NOT_FOUND, count=None, training_id="Vanish0001")
        await wait_until(lambda: _terminal(store, "Vanish0001"), what="the unknown event")
    finally:
        await tracker.stop()
    groups = await store.pending_deliveries(time.time(), limit=10)
    assert [[d.event.kind for d in g] for g in groups] == [[EventKind.UNKNOWN]]
    assert groups[0][0].subscription_id == sub.id


async def _nf_reset(store: Store, tid: str) -> bool:
    training = await store.get_training(tid, DEFAULT_KEY_REF)
    return (
        training is not None and training.not_found_count == 0 and training.last_ok_at is not None
    )


async def _terminal(store: Store, tid: str) -> bool:
    training = await store.get_training(tid, DEFAULT_KEY_REF)
    return training is not None and training.terminal is not None


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
    paused = await store.get_subscription(sub.id)
    assert paused is not None
    assert paused.reason == "no key for default"
    assert sim.request_count() == before


async def _paused(store: Store, sub_id: int) -> bool:
    sub = await store.get_subscription(sub_id)
    return sub is not None and sub.status is SubscriptionStatus.PAUSED


async def test_resumes_from_the_database_after_a_restart(tmp_path: Path, client, sim) -> None:
    training = sim.add_training("Resume0001", stage=1)
    first = await Store.open(tmp_path / "r.db")
    tracker = make_tracker(first, client)
    await follow(tracker, client, first, "Resume0001")
    await first.close()  # no tracker ever ran on it

    training.advance(3)  # two new step lines: the documented log has none for compressing
    second = await Store.open(tmp_path / "r.db")
    tracker = make_tracker(second, client)
    tracker.start()
    try:
        await wait_until(lambda: _has_deliveries(second, 2), what="steps recorded after restart")
    finally:
        await tracker.stop()
        groups = await second.pending_deliveries(time.time(), limit=10)
        await second.close()
    assert [d.event.seq for d in groups[0]] == [1, 2]
    assert all(d.event.late for d in groups[0])  # seen after the restart: marked late


async def _has_deliveries(store: Store, n: int) -> bool:
    groups = await store.pending_deliveries(time.time(), limit=10)
    return bool(groups) and len(groups[0]) >= n


async def test_unfollowed_training_is_not_polled(store, client, sim) -> None:
    sim.add_training("Alone00001", stage=1)
    tracker = make_tracker(store, client)
    await ingest_from_api(tracker, client, "Alone00001")
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


async def test_a_slow_key_does_not_starve_another(store: Store, sim: Simulator) -> None:
    slow = [f"SlowKey{i:03d}" for i in range(8)]
    fast = [f"FastKey{i:03d}" for i in range(3)]
    for tid in slow:
        sim.add_training(tid, stage=1)
        sim.inject(Fault.HANG, count=None, training_id=tid)
    for tid in fast:
        sim.add_training(tid, stage=1, key=TWO_KEYS["user:2"])
    now = time.time()
    # Slow trainings are due first, so they are first in the queue.
    await store.apply_updates(
        [TrainingUpdate(t, DEFAULT_KEY_REF, now - 10, ok=True) for t in slow]
        + [TrainingUpdate(t, "user:2", now - 5, ok=True) for t in fast],
        now,
    )
    for i, tid in enumerate(slow + fast):
        await store.subscribe(
            kind=SubscriptionKind.CHANNEL,
            guild_id=1,
            channel_id=100 + i,
            user_id=2,
            training_id=tid,
            key_ref="user:2" if tid in fast else DEFAULT_KEY_REF,
            limit=100,
            now=now,
        )
    async with aiohttp.ClientSession() as session:
        client = SdApiClient(session, sim.base_url, timeout=30, max_concurrency_per_key=1)
        tracker = Tracker(store, client, TwoKeys(), interval=60, workers=4, per_key=1)
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


async def test_a_training_declared_unknown_can_be_followed_again(store, client, sim) -> None:
    training = sim.add_training("Revive0001", stage=1)
    tracker = make_tracker(store, client, not_found_confirmations=1, not_found_window=0.0)
    sub = await follow(tracker, client, store, "Revive0001")
    sim.inject(Fault.NOT_FOUND, count=None, training_id="Revive0001")
    tracker.start()
    try:
        await wait_until(lambda: _terminal(store, "Revive0001"), what="declared unknown")
    finally:
        await tracker.stop()
    notifier = RecordingNotifier()
    await Deliverer(store, notifier, instance_id="abcd1234").drain_once()
    assert [kind for _, _, kind, _ in notifier.sent] == [EventKind.UNKNOWN]

    # The API knows it again: a new subscription (which ingests the status) follows it anew.
    sim.clear_faults()
    again = await follow(tracker, client, store, "Revive0001")
    assert again.id == sub.id
    assert again.status is SubscriptionStatus.ACTIVE
    training.advance(6)
    tracker.start()
    try:
        await wait_until(lambda: _terminal(store, "Revive0001"), what="ready")
    finally:
        await tracker.stop()
    row = await store.get_training("Revive0001", DEFAULT_KEY_REF)
    assert row is not None
    assert row.terminal is EventKind.READY
    await Deliverer(store, notifier, instance_id="abcd1234").drain_once()
    assert [kind for _, _, kind, _ in notifier.sent][-1] is EventKind.READY


# -- stopping ------------------------------------------------------------------------------


async def parked(event: asyncio.Event) -> None:
    """Wait until a loop sits in ``await event.wait()`` (asyncio keeps no public count)."""
    await wait_until(lambda: bool(event._waiters), what="the loop to wait for its wake-up")


async def stops(stop: Any) -> None:
    """``stop()`` returns (a hang shows as a failure, not as a test that never ends)."""
    stopping = asyncio.create_task(stop())
    done, _ = await asyncio.wait({stopping}, timeout=5)
    assert done, "stop() did not return: a loop swallowed its cancellation"
    stopping.result()


async def test_tracker_stops_when_woken_just_before(store, client) -> None:
    # asyncio.wait_for in Python 3.11 swallows a cancellation that arrives together with the
    # result it waits for: a wake-up right before stop() left the scheduler running and stop()
    # waiting on it for ever (seen as a benchmark that hung after its last figure).
    tracker = make_tracker(store, client)
    tracker.start()
    await parked(tracker._wake)
    tracker.wake()
    await stops(tracker.stop)


async def test_deliverer_stops_when_woken_just_before(store: Store) -> None:
    deliverer = Deliverer(store, RecordingNotifier(), instance_id="abcd1234")
    deliverer.start()
    await parked(deliverer._wake)
    deliverer.wake()
    await stops(deliverer.stop)


# -- claiming ------------------------------------------------------------------------------


async def test_claims_stay_ahead_of_the_workers_and_nothing_is_polled_twice(
    store, client, sim
) -> None:
    # One worker, a window of 4 claimed trainings, and an API that hangs on the first poll
    # until the clock is past the next poll time of every training claimed so far: they are
    # due again while queued or in flight, and each must still be polled once, not once per
    # claim.
    now = [1_000_000.0]
    ids = [f"Claim{i:05d}" for i in range(8)]
    for training_id in ids:
        sim.add_training(training_id, stage=1)
    tracker = make_tracker(
        store,
        client,
        interval=10,
        max_backoff=900,
        workers=1,
        per_key=1,
        batch_size=4,
        clock=lambda: now[0],
    )
    for training_id in ids:
        await follow(tracker, client, store, training_id)
        await store.poll_now(training_id, now[0])
    before = {training_id: sim.request_count(training_id) for training_id in ids}
    sim.inject(Fault.HANG, training_id=ids[0])
    tracker.start()
    try:
        await sim.wait_for_requests(before[ids[0]] + 1, training_id=ids[0])
        assert tracker._waiting <= 4  # the window, not every due training
        now[0] += 12  # every training claimed so far is due again
        sim.release_hangs()
        await wait_until(lambda: tracker.polls_done >= len(ids), what="every result recorded")
    finally:
        await tracker.stop()
    polls = {t: sim.request_count(t) - before[t] for t in ids}
    assert polls == dict.fromkeys(ids, 1)


async def test_a_start_polls_the_soonest_first_each_once_before_the_whole_schedule_is_read(
    store, client, sim
) -> None:
    # The tracker reads the trainings due first (one claim window) before all of them, so the
    # first polls do not wait for a schedule of thousands to be read. The order must still be
    # the schedule's across that seam (trainings due at the same moment in the order they
    # were followed), and no training may be polled twice or missed.
    now = [2_000_000.0]
    ids = [f"Start{i:05d}" for i in range(10)]
    for training_id in ids:
        sim.add_training(training_id, stage=1)
    tracker = make_tracker(
        store, client, interval=600, workers=1, per_key=1, batch_size=4, clock=lambda: now[0]
    )
    for training_id in ids:
        await follow(tracker, client, store, training_id)
    # Due in the reverse of the order followed, except Start00007..09 all due at one moment.
    due = {t: now[0] - 100 + (9 - i) for i, t in enumerate(ids)}
    due.update(dict.fromkeys(ids[7:], now[0] - 200))
    await store.save_next_polls([(t, DEFAULT_KEY_REF, at) for t, at in due.items()])
    first = len(sim.requests)
    tracker.start()
    try:
        await wait_until(lambda: tracker.polls_done >= len(ids), what="every training polled")
    finally:
        await tracker.stop()
    polled = [r.training_id for r in sim.requests[first:]]
    assert polled == [*ids[7:], *reversed(ids[:7])]


async def test_poll_soon_during_a_poll_polls_again_after_it(store, client, sim) -> None:
    # A webhook or a command asks for a poll while one is in flight: that poll's result must
    # not write its own next time (here a backoff) over the request.
    sim.add_training("Again00001", stage=1)
    tracker = make_tracker(store, client, interval=60, max_backoff=900)
    await follow(tracker, client, store, "Again00001")
    await store.poll_now("Again00001", time.time())
    before = sim.request_count("Again00001")
    sim.inject(Fault.HANG, training_id="Again00001")
    tracker.start()
    try:
        await sim.wait_for_requests(before + 1, training_id="Again00001")
        assert await tracker.poll_soon("Again00001")
        sim.release_hangs()  # the hung poll answers 503: a backoff of about a minute
        await sim.wait_for_requests(before + 2, training_id="Again00001")
    finally:
        await tracker.stop()


async def test_a_poll_cancelled_by_stop_is_made_again_after_start(store, client, sim) -> None:
    # stop() abandons the poll in flight; at its next poll time, a later start() must poll
    # that training again, not take it for one still in flight (it was left in the set of
    # pending trainings, and skipped at every claim).
    sim.add_training("Stop000001", stage=1)
    tracker = make_tracker(store, client, interval=0.5)
    await follow(tracker, client, store, "Stop000001")
    await store.poll_now("Stop000001", time.time())
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


async def test_polls_that_see_nothing_new_write_nothing_and_are_not_taken_for_a_gap(
    store, client, sim
) -> None:
    # A poll that changes nothing leaves the row alone (the schedule is kept in memory), so
    # the row's last_ok_at ages. A step seen later must still not be marked late: the tracker
    # knows when the training last answered.
    now = [1_000_000.0]
    training = sim.add_training("Quiet00001", stage=1)
    tracker = make_tracker(store, client, interval=10, clock=lambda: now[0])
    await follow(tracker, client, store, "Quiet00001")
    written = await store.get_training("Quiet00001", DEFAULT_KEY_REF)
    assert written is not None
    tracker.start()
    try:
        for cycle in range(1, 7):  # 60 s of quiet polls: past the 40 s after which a gap shows
            now[0] += 11
            tracker.wake()
            await wait_until(lambda n=cycle: tracker.polls_done >= n, what=f"poll {cycle}")
        row = await store.get_training("Quiet00001", DEFAULT_KEY_REF)
        assert row is not None
        assert row == written  # nothing written by the quiet polls
        training.advance()
        now[0] += 11
        tracker.wake()
        await wait_until(lambda: tracker.polls_done >= 7, what="the poll that sees the step")
    finally:
        await tracker.stop()
    groups = await store.pending_deliveries(time.time(), limit=10)
    assert [[(d.event.seq, d.event.late) for d in g] for g in groups] == [[(1, False)]]


async def test_the_schedule_kept_in_memory_is_written_at_stop(store, client, sim) -> None:
    # Quiet polls write nothing; stop() writes when each training is next due, so a restart
    # polls at that time, not at once.
    now = [1_000_000.0]
    sim.add_training("Sched00001", stage=1)
    tracker = make_tracker(store, client, interval=10, clock=lambda: now[0])
    await follow(tracker, client, store, "Sched00001")
    written = await store.get_training("Sched00001", DEFAULT_KEY_REF)
    assert written is not None
    before = sim.request_count("Sched00001")
    tracker.start()
    try:
        now[0] += 11
        tracker.wake()
        await wait_until(lambda: tracker.polls_done >= 1, what="a quiet poll")
        assert await store.get_training("Sched00001", DEFAULT_KEY_REF) == written
    finally:
        await tracker.stop()
    row = await store.get_training("Sched00001", DEFAULT_KEY_REF)
    assert row is not None
    assert now[0] + 9 <= row.next_poll_at <= now[0] + 11  # the interval, give or take jitter
    assert row._replace(next_poll_at=written.next_poll_at) == written

    again = make_tracker(store, client, interval=10, clock=lambda: now[0])
    again.start()
    try:
        tick = again.last_tick
        again.wake()
        await wait_until(lambda: again.last_tick != tick, what="a tick of the new tracker")
        assert sim.request_count("Sched00001") == before + 1  # not due yet
        now[0] += 11
        again.wake()
        await sim.wait_for_requests(before + 2, training_id="Sched00001")
    finally:
        await again.stop()
