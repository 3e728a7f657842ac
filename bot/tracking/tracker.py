"""When to poll which training, and what each poll changes: one request per training and key
per cycle however many channels and users follow it."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Protocol

from bot import metrics
from bot.sdapi.client import SdApiClient
from bot.sdapi.errors import RateLimited, SdApiError, TrainingNotFound
from bot.sdapi.status import TrainingStatus
from bot.store import TERMINAL_SEQ, Event, EventKind, Store, Training, TrainingUpdate
from bot.tracking.loops import wait_event
from bot.tracking.timetable import Timetable

log = logging.getLogger(__name__)

Clock = Callable[[], float]
Key = tuple[str, str]  # (training_id, key_ref): one polled training
Claim = tuple[Key, Training]  # a training handed to the workers, with its key
_POLLS_OK = metrics.POLLS.labels("ok")


class KeyResolver(Protocol):
    """Finds the API key a ``key_ref`` names (never stored with the training)."""

    async def key_for(self, key_ref: str) -> str | None:
        """The key, or None when it is not (or no longer) available."""

    def missing_reason(self, key_ref: str) -> str:
        """Why a key_ref has no key: one sentence for /training-list."""


def shows_news(status: TrainingStatus, after_seq: int) -> bool:
    """Whether a status shows a step past ``after_seq`` or the end (steps are in log order)."""
    return status.terminal or status.last_seq > after_seq


def events_from_status(
    status: TrainingStatus, *, late: bool = False, after_seq: int = -1
) -> Sequence[Event]:
    """The step events (past ``after_seq``) and the terminal event a status shows."""
    if not shows_news(status, after_seq):
        return ()  # most polls
    events = [
        Event(
            seq=step.seq,
            kind=EventKind.STEP,
            number=step.number,
            label=step.label,
            steps_to_go=step.steps_to_go,
            eta_minutes=step.eta_minutes,
            raw=step.raw,
            late=late,
        )
        for step in status.steps
        if step.seq > after_seq
    ]
    if status.finished:
        events.append(Event(seq=TERMINAL_SEQ, kind=EventKind.READY, late=late))
    elif status.failed:
        events.append(
            Event(seq=TERMINAL_SEQ, kind=EventKind.FAILED, detail=status.failure_reason, late=late)
        )
    return events


class Tracker:
    """Polls due trainings with a pool of workers and records results in batched transactions.

    The schedule lives in memory: the followed trainings are read from the database at start
    and again whenever the store reports a change of who follows what (a subscription, a
    pause, a ``poll_now``), and each row is read back after the tracker writes it. A poll that
    sees nothing new writes nothing; the next poll times are written when the tracker stops.
    """

    def __init__(
        self,
        store: Store,
        client: SdApiClient,
        keys: KeyResolver,
        *,
        interval: float,
        max_backoff: float = 900.0,
        jitter: float = 0.1,
        not_found_confirmations: int = 3,
        not_found_window: float = 300.0,
        workers: int = 16,
        per_key: int = 4,
        batch_size: int = 1000,
        write_batch: int = 2000,
        write_linger: float = 0.2,
        resync_every: float = 300.0,
        clock: Clock = time.time,
        on_outbox: Callable[[], None] | None = None,
    ) -> None:
        self._store = store
        self._client = client
        self._keys = keys
        self.interval = interval
        self._max_backoff = max_backoff
        self._jitter = jitter
        self._nf_confirmations = not_found_confirmations
        self._nf_window = not_found_window
        self._workers = workers
        self._per_key = per_key
        # At most batch_size trainings wait claimed (queued or parked) for a worker; more are
        # claimed when the workers have taken them down to the low water.
        self._batch_size = batch_size
        self._low_water = batch_size // 2
        self._write_batch = write_batch
        # A result waits at most a tenth of the interval to be written with others.
        self._write_linger = min(write_linger, interval / 10)
        # The followed trainings are read again this often even when the store reports no
        # change (a row edited by hand, or by another tool).
        self._resync_every = resync_every
        self._clock = clock
        self._on_outbox = on_outbox or (lambda: None)
        self._late_after = max(2 * interval, interval + 30.0)
        self._started_at = clock()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        # When each training last answered, for polls that wrote nothing (the row's
        # last_ok_at is only as new as the last write).
        self._last_ok: dict[Key, float] = {}
        self._reset()
        self.last_tick: float | None = None
        self.polls_done = 0
        self._quiet_polls = 0  # answered with nothing new, not yet in the metrics

    def _reset(self) -> None:
        """Forget the schedule and what was claimed and in flight (at creation, and after
        stop()): start() reads the schedule from the database again."""
        # The followed trainings as the database has them (each row read back after the
        # tracker writes it), and when each one not claimed is next due.
        self._rows: dict[Key, Training] = {}
        self._due: Timetable[Key] = Timetable()
        # The store's follow_changes at the last complete read (None: not read yet).
        self._synced: int | None = None
        self._touched: set[Key] | None = None  # read back during a _sync()
        self._resync_at = 0.0
        self._sleep_until = 0.0  # when the scheduler looks again (0 while it is looking)
        self._queue: asyncio.Queue[Claim] = asyncio.Queue()
        self._results: asyncio.Queue[TrainingUpdate] = asyncio.Queue()
        self._waiting = 0  # claimed trainings not yet taken by a worker (queued or parked)
        self._idle = asyncio.Event()  # set while no training waits or is being polled
        self._idle.set()
        # Polls in flight per key, and trainings set aside while their key has no free slot:
        # a worker never waits on one busy key while another key's trainings are due.
        self._busy: dict[str, int] = {}
        self._parked: dict[str, deque[Claim]] = {}
        # Claimed trainings until their result is written (or the poll is given up).
        self._pending: set[Key] = set()
        # Pending trainings asked for by poll_soon() meanwhile: polled again as soon as written.
        self._again: set[Key] = set()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the scheduler, the workers and the writer."""
        if self._tasks:
            return
        self._tasks.append(asyncio.create_task(self._schedule(), name="tracker-scheduler"))
        self._tasks.append(asyncio.create_task(self._write(), name="tracker-writer"))
        for i in range(self._workers):
            self._tasks.append(asyncio.create_task(self._work(), name=f"tracker-worker-{i}"))

    async def stop(self) -> None:
        """Stop every task and write the schedule (a poll in flight is abandoned: it is made
        again after a restart, at once)."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        # gather: a cancellation of stop() itself is not swallowed with the tasks' own.
        await asyncio.gather(*tasks, return_exceptions=True)
        moved = [
            (*key, due)
            for key, due in self._due.items()
            if key in self._rows and due != self._rows[key].next_poll_at
        ]
        self._reset()
        try:
            await self._store.save_next_polls(moved)
        except Exception:
            # Only costs polls made early after the restart.
            log.exception("could not record the next poll times of %d trainings", len(moved))

    def wake(self) -> None:
        """Look for due trainings now (a subscription was added or a webhook arrived)."""
        self._wake.set()

    async def poll_soon(self, training_id: str) -> bool:
        """Make a followed training due now; False when nobody follows it."""
        now = self._clock()
        key_refs = await self._store.poll_now(training_id, now)
        keys = [(training_id, key_ref) for key_ref in key_refs]
        await self._read_back(keys)  # the rows as written (the copies only ever come from reads)
        for key in keys:
            if key not in self._rows:
                continue  # followed since the last read: read again (the store says so)
            if key in self._pending:
                # A poll of it in flight (or its result not yet written) would set its own
                # next time over this one: that result asks for the next poll at once instead.
                self._again.add(key)
            else:
                self._plan(key, now)
        if key_refs:
            self.wake()
        return bool(key_refs)

    async def ingest(self, training_id: str, key_ref: str, status: TrainingStatus) -> None:
        """Record a status fetched outside the loop (by a command) like a poll result."""
        now = self._clock()
        key = (training_id, key_ref)
        update = self._success(key, None, status, now)
        if update is None:  # not without a row to compare with: everything is news
            return
        created = await self._store.apply_updates([update], now)
        await self._read_back([key])
        if created:
            self._on_outbox()

    # -- the schedule ------------------------------------------------------------------------

    def _plan(self, key: Key, at: float) -> None:
        """Make a followed training, not claimed, due at ``at``."""
        self._due.plan(key, at)
        if at < self._sleep_until:
            self._wake.set()  # due before the scheduler would look again

    def _forget(self, key: Key) -> None:
        """Not polled any more (finished, or nobody follows it)."""
        self._rows.pop(key, None)
        self._due.discard(key)
        self._last_ok.pop(key, None)

    async def _sync(self, soonest: int | None = None) -> None:
        """Read the followed trainings again: add the new ones, drop the unfollowed, and
        take rows someone else wrote (a ``poll_now``, say) as they are now.

        With ``soonest``, only that many due first are read (nothing is dropped unless that
        was all of them): the first polls need not wait for thousands of rows to be read.
        """
        changes = self._store.follow_changes
        # Rows the writer reads back meanwhile are newer than these: they stay as they are.
        touched = self._touched = set()
        try:
            rows = await self._store.followed_trainings(soonest)
        finally:
            self._touched = None
        fresh = {(row.training_id, row.key_ref): row for row in rows}
        if soonest is None or len(rows) < soonest:
            self._synced = changes
            self._resync_at = self._clock() + self._resync_every
            for key in [key for key in self._rows if key not in fresh]:
                self._forget(key)  # a result in flight is written, then not planned again
        planned: list[tuple[Key, float]] = []
        for key, row in fresh.items():
            known = self._rows.get(key)
            if known == row or key in touched:
                continue
            self._rows[key] = row
            if key in self._pending:
                continue
            due = self._due.get(key)
            # New: at its time in the database. Written by someone else: the earlier of that
            # and the planned time (another writer only ever asks for a poll sooner).
            planned.append((key, row.next_poll_at if due is None else min(due, row.next_poll_at)))
        self._due.plan_many(planned)

    async def _read_back(self, keys: list[Key]) -> None:
        """Take the rows just written as the database has them now."""
        for row in await self._store.trainings(keys):
            key = (row.training_id, row.key_ref)
            if self._touched is not None:
                self._touched.add(key)
            if key not in self._rows:
                continue  # not followed (yet): the next read adds it
            if row.terminal is not None:
                self._forget(key)
            else:
                self._rows[key] = row

    # -- loops -------------------------------------------------------------------------------

    async def _schedule(self) -> None:
        while True:
            try:
                self._wake.clear()
                self._sleep_until = 0.0
                if self._synced is None and not self._rows:
                    # Starting: the trainings due first, then (at once, while they are polled)
                    # all of them.
                    await self._sync(soonest=self._batch_size)
                elif self._synced != self._store.follow_changes or self._clock() >= self._resync_at:
                    await self._sync()
                now = self._clock()
                self.last_tick = now
                if self._quiet_polls:
                    _POLLS_OK.inc(self._take_quiet_polls())
                room = self._batch_size - self._waiting
                claimed = self._due.pop_due(now, room)
                if claimed:
                    self._pending.update(claimed)
                    self._waiting += len(claimed)
                    self._idle.clear()
                    rows, queue = self._rows, self._queue
                    for key in claimed:
                        queue.put_nowait((key, rows[key]))
                next_at = self._due.next_at()
                if self._synced is None:
                    delay = 0.0  # the rest of the schedule is read next
                elif len(claimed) >= room:
                    # Enough claimed and not yet polled: claiming more would only make them
                    # wait. The workers wake this loop when they are down to the low water.
                    delay = 5.0
                else:
                    delay = 5.0 if next_at is None else min(5.0, max(0.0, next_at - now))
                self._sleep_until = now + delay
                await wait_event(self._wake, delay)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("tracker scheduler failed; retrying in 1s")
                await asyncio.sleep(1.0)

    async def _work(self) -> None:
        queue, busy = self._queue, self._busy
        while True:
            # The next training whose key has a free slot (taken without a coroutine while
            # trainings wait: most of the time).
            try:
                claim = queue.get_nowait()
            except asyncio.QueueEmpty:
                claim = await queue.get()
            key, training = claim
            key_ref = training.key_ref
            polling = busy.get(key_ref, 0)
            if polling >= self._per_key:
                # Parked only while the key's slots are all taken: one of those polls will
                # finish and hand it back (see _release).
                self._parked.setdefault(key_ref, deque()).append(claim)
                continue
            busy[key_ref] = polling + 1
            self._waiting -= 1
            if self._waiting == self._low_water:
                self._wake.set()  # time to claim the next trainings
            update: TrainingUpdate | None = None
            quiet = False  # answered, with nothing new
            try:
                # The poll is written out here rather than in a coroutine of its own: every
                # coroutine between this loop and the socket is resumed at each step of a
                # request.
                api_key = await self._keys.key_for(key_ref)
                if api_key is None:
                    await self._pause_key(key_ref)
                else:
                    started = time.monotonic()
                    try:
                        status = await self._client.attempt(training.training_id, api_key)
                    except TrainingNotFound as exc:
                        metrics.POLLS.labels("not_found").inc()
                        update = self._not_found(training, exc, self._clock())
                    except SdApiError as exc:
                        metrics.POLLS.labels(type(exc).__name__).inc()
                        update = self._failure(training, exc, self._clock())
                    else:
                        update = self._success(key, training, status, self._clock())
                        quiet = update is None
                    finally:
                        metrics.API_LATENCY.observe(time.monotonic() - started)
            except asyncio.CancelledError:
                raise
            except Exception:
                # One bad training never stops the others; it is polled again next time.
                log.exception("polling %s failed unexpectedly", training.training_id)
                update = None
            finally:
                self._release(key_ref)
            if update is not None:
                self._results.put_nowait(update)
                continue
            # Nothing to write: the poll saw nothing new (or was given up). Its next time is
            # kept here, without a trip through the writer.
            self._settled(key, self._next_poll(self._clock()))
            if quiet:
                self.polls_done += 1
                self._quiet_polls += 1

    def _take_quiet_polls(self) -> int:
        """Quiet polls not yet counted in the metrics (counted in bulk: inc() takes a lock)."""
        quiet, self._quiet_polls = self._quiet_polls, 0
        return quiet

    def _settled(self, key: Key, next_at: float) -> None:
        """A claimed training's poll is over (its result written, or given up): plan the next
        one at ``next_at`` (at once if poll_soon() asked meanwhile), if it is still followed."""
        self._pending.discard(key)
        if key in self._again:
            self._again.discard(key)
            next_at = self._clock()
        if key in self._rows:
            self._plan(key, next_at)

    def _release(self, key_ref: str) -> None:
        """A poll of this key finished: hand its oldest parked training back to the queue."""
        self._busy[key_ref] -= 1
        if not self._busy[key_ref]:
            del self._busy[key_ref]
            if not self._busy and not self._waiting:
                self._idle.set()
        parked = self._parked.get(key_ref)
        if parked:
            self._queue.put_nowait(parked.popleft())
            if not parked:
                del self._parked[key_ref]

    async def _write(self) -> None:
        while True:
            batch = [await self._results.get()]
            if self._results.qsize() < self._write_batch - 1 and not self._idle.is_set():
                # Let results gather a moment while polls are under way: a transaction costs
                # about the same for 50 rows as for 2,000 (each one rewrites the pages it
                # touches), and the results arrive a few at a time. No wait once the workers
                # have nothing left to do: no more results are coming.
                await wait_event(self._idle, self._write_linger)
            while len(batch) < self._write_batch and not self._results.empty():
                batch.append(self._results.get_nowait())
            created: int | None = 0
            try:
                created = await self._store.apply_updates(batch, self._clock())
                await self._read_back([(u.training_id, u.key_ref) for u in batch])
            except asyncio.CancelledError:
                raise
            except Exception:
                created = None
                log.exception(
                    "recording %d poll results failed; they will be polled again", len(batch)
                )
            for update in batch:
                self._settled((update.training_id, update.key_ref), update.next_poll_at)
            if created is None:
                continue
            self.polls_done += len(batch)
            # Counted per batch: a counter's inc() takes a lock, and this is every poll.
            _POLLS_OK.inc(sum(1 for update in batch if update.ok) + self._take_quiet_polls())
            if created:
                self._on_outbox()

    # -- one poll's result -------------------------------------------------------------------------

    async def _pause_key(self, key_ref: str) -> None:
        """No key for this key_ref (any more): pause what it polls, with the reason."""
        reason = self._keys.missing_reason(key_ref)
        paused = await self._store.pause_key_ref(key_ref, reason, self._clock())
        log.warning("no key for %s: paused %d subscriptions", key_ref, paused)

    def _next_poll(self, now: float) -> float:
        # random.uniform(1 - jitter, 1 + jitter), without its call: this is every poll.
        return now + self.interval * (1 - self._jitter + 2 * self._jitter * random.random())

    def _backoff(self, errors: int, now: float) -> float:
        delay = min(self._max_backoff, self.interval * 2.0 ** max(0, errors - 1))
        return now + delay * random.uniform(1 - self._jitter, 1 + self._jitter)

    def _success(
        self, key: Key, training: Training | None, status: TrainingStatus, now: float
    ) -> TrainingUpdate | None:
        """The update a successful poll makes; None when it has nothing to record (the row
        already says all of it: most polls)."""
        if (
            training is not None
            and not shows_news(status, training.last_seq)
            and training.terminal is None
            and training.consecutive_errors == 0
            and training.not_found_count == 0
            and training.state == status.raw_state
            and training.eta_minutes == status.eta_minutes
            and status.total_steps in (None, training.total_steps)
        ):
            self._last_ok[key] = now
            return None
        # Steps first seen after a gap (the bot was down, or the API was) are marked late.
        last_ok = self._last_ok.get(key, training.last_ok_at if training else None)
        late = last_ok is not None and (
            last_ok < self._started_at or now - last_ok > self._late_after
        )
        if status.terminal:
            self._last_ok.pop(key, None)  # not polled any more
        else:
            self._last_ok[key] = now
        training_id, key_ref = key
        return TrainingUpdate(
            training_id=training_id,
            key_ref=key_ref,
            next_poll_at=self._next_poll(now),
            ok=True,
            state=status.raw_state,
            eta_minutes=status.eta_minutes,
            total_steps=status.total_steps,
            # Only what the claimed row had not recorded yet; the store filters again against
            # the row as it is when written.
            events=events_from_status(
                status, late=late, after_seq=training.last_seq if training else -1
            ),
        )

    def _failure(self, training: Training, exc: SdApiError, now: float) -> TrainingUpdate:
        errors = training.consecutive_errors + 1
        next_at = self._backoff(errors, now)
        if isinstance(exc, RateLimited):
            next_at = max(next_at, now + exc.retry_after)
        log.warning("poll of %s failed (%d in a row): %s", training.training_id, errors, exc.detail)
        return TrainingUpdate(
            training_id=training.training_id,
            key_ref=training.key_ref,
            next_poll_at=next_at,
            consecutive_errors=errors,
            last_error=exc.user_message,
            not_found_count=training.not_found_count,
            first_not_found_at=training.first_not_found_at,
        )

    def _not_found(self, training: Training, exc: TrainingNotFound, now: float) -> TrainingUpdate:
        # "Not found" right after creation or during an API hiccup is common: only believe it
        # after several answers spread over some minutes.
        update = self._failure(training, exc, now)
        update.not_found_count = training.not_found_count + 1
        update.first_not_found_at = training.first_not_found_at or now
        if (
            update.not_found_count >= self._nf_confirmations
            and now - update.first_not_found_at >= self._nf_window
        ):
            update.events = [
                Event(seq=TERMINAL_SEQ, kind=EventKind.UNKNOWN, detail=exc.user_message)
            ]
        return update
