"""When to poll which training, and what each poll changes: one request per training and key
per cycle however many channels and users follow it."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Protocol

from bot import metrics
from bot.sdapi.client import SdApiClient
from bot.sdapi.errors import RateLimited, SdApiError, TrainingNotFound
from bot.sdapi.status import TrainingStatus
from bot.store import TERMINAL_SEQ, Event, EventKind, Store, Training, TrainingUpdate
from bot.tracking.loops import wait_event

log = logging.getLogger(__name__)

Clock = Callable[[], float]
_POLLS_OK = metrics.POLLS.labels("ok")


class KeyResolver(Protocol):
    """Finds the API key a ``key_ref`` names (never stored with the training)."""

    async def key_for(self, key_ref: str) -> str | None:
        """The key, or None when it is not (or no longer) available."""

    def missing_reason(self, key_ref: str) -> str:
        """Why a key_ref has no key: one sentence for /training-list."""


def events_from_status(
    status: TrainingStatus, *, late: bool = False, after_seq: int = -1
) -> list[Event]:
    """The step events (past ``after_seq``) and the terminal event a status shows."""
    if not status.terminal and (not status.steps or status.steps[-1].seq <= after_seq):
        return []  # most polls: nothing new (steps are in log order)
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
    """Polls due trainings with a pool of workers and records results in batched transactions."""

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
        self._clock = clock
        self._on_outbox = on_outbox or (lambda: None)
        self._late_after = max(2 * interval, interval + 30.0)
        self._started_at = clock()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        # When each training last answered, for polls that wrote nothing (the row's
        # last_ok_at is only as new as the last write).
        self._last_ok: dict[tuple[str, str], float] = {}
        self._reset()
        self.last_tick: float | None = None
        self.polls_done = 0

    def _reset(self) -> None:
        """Forget what was claimed and in flight (at creation, and after stop())."""
        self._queue: asyncio.Queue[Training] = asyncio.Queue()
        self._results: asyncio.Queue[TrainingUpdate] = asyncio.Queue()
        self._waiting = 0  # claimed trainings not yet taken by a worker (queued or parked)
        self._idle = asyncio.Event()  # set while no training waits or is being polled
        self._idle.set()
        # Polls in flight per key, and trainings set aside while their key has no free slot:
        # a worker never waits on one busy key while another key's trainings are due.
        self._busy: Counter[str] = Counter()
        self._parked: dict[str, deque[Training]] = {}
        # Claimed trainings (and when) until their result is written (or the poll is given up).
        self._pending: dict[tuple[str, str], float] = {}
        # Pending trainings asked for by poll_soon() meanwhile: polled again as soon as written.
        self._again: set[tuple[str, str]] = set()

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
        """Stop every task (a poll in flight is abandoned: made again at its next time)."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        # gather: a cancellation of stop() itself is not swallowed with the tasks' own.
        await asyncio.gather(*tasks, return_exceptions=True)
        # What was claimed is due again at its next time; a later start() claims anew.
        self._reset()

    def wake(self) -> None:
        """Look for due trainings now (a subscription was added or a webhook arrived)."""
        self._wake.set()

    async def poll_soon(self, training_id: str) -> bool:
        """Make a followed training due now; False when nobody follows it."""
        changed = await self._store.poll_now(training_id, self._clock())
        if changed:
            # A poll of it in flight (or its result not yet written) would write its own next
            # time over this one: that result asks for the next poll at once instead.
            self._again.update(key for key in self._pending if key[0] == training_id)
            self.wake()
        return changed > 0

    async def ingest(self, training_id: str, key_ref: str, status: TrainingStatus) -> None:
        """Record a status fetched outside the loop (by a command) like a poll result."""
        now = self._clock()
        update = self._success(training_id, key_ref, None, status, now)
        if await self._store.apply_updates([update], now):
            self._on_outbox()

    # -- loops -------------------------------------------------------------------------------

    async def _schedule(self) -> None:
        while True:
            try:
                self._wake.clear()
                now = self._clock()
                self.last_tick = now
                if self._waiting > self._low_water:
                    # Enough claimed and not yet polled: claiming more would only make them
                    # wait. The workers wake this loop when they are down to the low water.
                    delay = 5.0
                else:
                    room = self._batch_size - self._waiting
                    due = await self._store.claim_due(
                        now,
                        next_at=now + self.interval,
                        spread=self.interval * self._jitter,
                        limit=room,
                    )
                    for training in due:
                        key = (training.training_id, training.key_ref)
                        if key in self._pending:
                            # Due again before its last poll's result was written (a poll
                            # slower than the interval): queued or in flight already.
                            continue
                        self._pending[key] = now
                        self._waiting += 1
                        self._idle.clear()
                        self._queue.put_nowait(training)
                    if len(due) == room:
                        continue
                    next_at = await self._store.next_poll_at()
                    delay = 5.0 if next_at is None else min(5.0, max(0.0, next_at - now))
                await wait_event(self._wake, delay)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("tracker scheduler failed; retrying in 1s")
                await asyncio.sleep(1.0)

    async def _work(self) -> None:
        while True:
            training = await self._take()
            self._waiting -= 1
            if self._waiting == self._low_water:
                self._wake.set()  # time to claim the next trainings
            key_ref = training.key_ref
            self._busy[key_ref] += 1
            try:
                update = await self._poll(training)
            except asyncio.CancelledError:
                raise
            except Exception:
                # One bad training never stops the others; it is polled again next time.
                log.exception("polling %s failed unexpectedly", training.training_id)
                update = None
            finally:
                self._release(key_ref)
            if update is None:
                self._settled(training.training_id, key_ref)
            else:
                self._results.put_nowait(update)

    def _settled(self, training_id: str, key_ref: str) -> None:
        """A claimed training's poll is over (its result written, or given up)."""
        key = (training_id, key_ref)
        self._pending.pop(key, None)
        self._again.discard(key)

    async def _take(self) -> Training:
        """The next training whose key has a free slot; others wait parked, in order."""
        while True:
            training = await self._queue.get()
            key_ref = training.key_ref
            if self._busy[key_ref] < self._per_key:
                return training
            # Parked only while the key's slots are all taken: one of those polls will finish
            # and hand it back (see _release).
            self._parked.setdefault(key_ref, deque()).append(training)

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
            now = self._clock()
            if self._again:
                for update in batch:
                    key = (update.training_id, update.key_ref)
                    if key in self._again:
                        self._again.discard(key)
                        update.next_poll_at = now
                        update.unchanged = False  # the next time must be written
            # An unchanged poll needs no write while the next time its claim wrote is ahead;
            # one that finished later (a slow poll) writes its own, or it would be due at once.
            fresh = now - self.interval * (1 - self._jitter)
            changed = [
                update
                for update in batch
                if not update.unchanged
                or self._pending.get((update.training_id, update.key_ref), 0.0) <= fresh
            ]
            created: int | None = 0
            try:
                if changed:
                    created = await self._store.apply_updates(changed, now)
            except asyncio.CancelledError:
                raise
            except Exception:
                created = None
                log.exception(
                    "recording %d poll results failed; they will be polled again", len(changed)
                )
            finally:
                for update in batch:
                    self._settled(update.training_id, update.key_ref)
            if created is None:
                continue
            self.polls_done += len(batch)
            # Counted per batch: a counter's inc() takes a lock, and this is every poll.
            _POLLS_OK.inc(sum(1 for update in batch if update.ok))
            self._wake.set()  # the next due time moved: let the scheduler look again
            if created:
                self._on_outbox()

    # -- one poll ----------------------------------------------------------------------------

    async def _poll(self, training: Training) -> TrainingUpdate | None:
        key = await self._keys.key_for(training.key_ref)
        now = self._clock()
        if key is None:
            reason = self._keys.missing_reason(training.key_ref)
            paused = await self._store.pause_key_ref(training.key_ref, reason, now)
            log.warning("no key for %s: paused %d subscriptions", training.key_ref, paused)
            return None
        started = time.monotonic()
        try:
            status = await self._client.fine_tune_status(training.training_id, key, retries=False)
        except TrainingNotFound as exc:
            metrics.POLLS.labels("not_found").inc()
            return self._not_found(training, exc, self._clock())
        except SdApiError as exc:
            metrics.POLLS.labels(type(exc).__name__).inc()
            return self._failure(training, exc, self._clock())
        finally:
            metrics.API_LATENCY.observe(time.monotonic() - started)
        return self._success(
            training.training_id, training.key_ref, training, status, self._clock()
        )

    def _next_poll(self, now: float) -> float:
        return now + self.interval * random.uniform(1 - self._jitter, 1 + self._jitter)

    def _backoff(self, errors: int, now: float) -> float:
        delay = min(self._max_backoff, self.interval * 2.0 ** max(0, errors - 1))
        return now + delay * random.uniform(1 - self._jitter, 1 + self._jitter)

    def _success(
        self,
        training_id: str,
        key_ref: str,
        training: Training | None,
        status: TrainingStatus,
        now: float,
    ) -> TrainingUpdate:
        # Steps first seen after a gap (the bot was down, or the API was) are marked late.
        key = (training_id, key_ref)
        last_ok = self._last_ok.get(key, training.last_ok_at if training else None)
        late = last_ok is not None and (
            last_ok < self._started_at or now - last_ok > self._late_after
        )
        if status.terminal:
            self._last_ok.pop(key, None)  # not polled any more
        else:
            self._last_ok[key] = now
        # Only what the claimed row had not recorded yet: most polls see nothing new, and
        # the store filters again against the row as it is when written.
        events = events_from_status(
            status, late=late, after_seq=training.last_seq if training else -1
        )
        return TrainingUpdate(
            training_id=training_id,
            key_ref=key_ref,
            next_poll_at=self._next_poll(now),
            ok=True,
            state=status.raw_state,
            eta_minutes=status.eta_minutes,
            total_steps=status.total_steps,
            events=events,
            unchanged=(
                training is not None
                and not events
                and training.terminal is None
                and training.consecutive_errors == 0
                and training.not_found_count == 0
                and training.state == status.raw_state
                and training.eta_minutes == status.eta_minutes
                and status.total_steps in (None, training.total_steps)
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
