"""When to poll which training: one request per training and key per cycle, however many
channels and members follow it.

The schedule is the database's (``trainings.next_poll_at``). The scheduler claims the trainings
due, which writes when each is due next (the claim is the lease), and polls each in a task of
its own; the API client bounds how many requests run at once, overall and per key. What an
answer changes is decided by ``outcome`` (pure); results with something to record are written
in batches.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import NamedTuple, Protocol

import orjson

from bot import metrics
from bot.sdapi.client import SdApiClient
from bot.sdapi.errors import SdApiError
from bot.sdapi.status import Api, TrainingStatus
from bot.store import Store, Training, TrainingUpdate
from bot.tracking import outcome
from bot.tracking.loops import FailureStreak, wait_event
from bot.tracking.outcome import Rules
from bot.tracking.policy import Learned, Observation, PollPolicy, learn_stage_lengths

log = logging.getLogger(__name__)

Clock = Callable[[], float]
# The adaptive policy learns from this many finished runs, again after every few more.
LEARN_FROM_RUNS = 200
LEARN_EVERY = 5


def learn_from(stored: list[str]) -> Learned:
    """Stage lengths per kind of training from stored observations (damaged ones skipped)."""
    runs = []
    for text in stored:
        try:
            record = Observation.from_dict(orjson.loads(text)).run_record()
        except (ValueError, TypeError):
            continue
        if record is not None:
            runs.append(record)
    return learn_stage_lengths(runs)


class KeyResolver(Protocol):
    """Finds the API key a ``key_ref`` names (never stored with the training)."""

    async def key_for(self, key_ref: str) -> str | None:
        """The key, or None when it is not (or no longer) available."""

    def missing_reason(self, key_ref: str) -> str:
        """Why a key_ref has no key (stored as the paused subscriptions' reason)."""


class Claim(NamedTuple):
    """A training claimed for a poll."""

    row: Training
    """As the database had it when claimed."""
    planned_at: float
    """Its next poll, written by the claim (kept when the answer changes nothing)."""
    observation: Observation | None
    """What the poll policy knew of it, as read to plan that poll."""


class Tracker:
    """Claims due trainings, polls each, and records what the answers change."""

    def __init__(
        self,
        store: Store,
        client: SdApiClient,
        keys: KeyResolver,
        rules: Rules,
        *,
        claim_size: int = 1000,
        write_batch: int = 2000,
        write_linger: float = 0.2,
        clock: Clock = time.time,
        rand: Callable[[], float] = random.random,
        on_outbox: Callable[[], None] | None = None,
    ) -> None:
        self._trainings = store.trainings
        self._subscriptions = store.subscriptions
        self._client = client
        self._keys = keys
        self.rules = rules
        # At most this many trainings are claimed and not yet answered: claiming more would
        # only make them wait (and hold their lease).
        self._claim_size = claim_size
        self._write_batch = write_batch
        # A result waits at most a tenth of the interval to be written with others.
        self._write_linger = min(write_linger, rules.interval / 10)
        self._clock = clock
        self._rand = rand
        self._on_outbox = on_outbox or (lambda: None)
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._polls: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._observed: dict[tuple[str, str], Observation | None] = {}  # read by the claim
        self._results: asyncio.Queue[TrainingUpdate] = asyncio.Queue()
        self._learn_again = asyncio.Event()
        self._claims = FailureStreak(
            log,
            "polling is stopped: the database refuses to claim due trainings",
            "polling again: the database takes claims",
        )
        self._writes = FailureStreak(
            log,
            "poll results are not recorded: the database refuses writes",
            "poll results are recorded again",
        )
        self._idle = asyncio.Event()  # set while no poll is in flight
        self._idle.set()
        # Polls claimed whose result is not written yet (or that had nothing to write).
        self._unsettled = 0
        self._settled = asyncio.Event()
        self._settled.set()
        self.last_tick: float | None = None
        self.learned = outcome.NO_LEARNING
        """How long each stage of each kind of training took in finished runs (adaptive)."""
        self._finished_since_learning = 0

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the scheduler and the writer (and learn from finished runs first)."""
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._schedule(), name="tracker-scheduler"),
                asyncio.create_task(self._write(), name="tracker-writer"),
            ]
            if self.rules.policy is PollPolicy.ADAPTIVE:
                self._tasks.append(asyncio.create_task(self._learn(), name="tracker-learning"))

    async def _learn(self) -> None:
        """Learn how long each stage takes from the last finished runs, at start and then
        every few finished trainings (in a thread: it takes tens of milliseconds)."""
        while True:
            try:
                stored = await self._trainings.finished_observations(LEARN_FROM_RUNS)
                self.learned = await asyncio.to_thread(learn_from, stored)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("learning from finished trainings failed; keeping what was known")
            self._finished_since_learning = 0
            await self._learn_again.wait()
            self._learn_again.clear()

    async def stop(self) -> None:
        """Stop; polls in flight are abandoned (their training is due again at the time its
        claim planned, so a restart polls it then)."""
        tasks = [*self._tasks, *self._polls.values()]
        self._tasks, self._polls = [], {}
        for task in tasks:
            task.cancel()
        # gather: a cancellation of stop() itself is not swallowed with the tasks' own.
        await asyncio.gather(*tasks, return_exceptions=True)
        self._results = asyncio.Queue()
        self._idle.set()
        self._unsettled = 0
        self._settled.set()

    async def settled(self) -> None:
        """Wait until every poll claimed so far has been answered and its result written."""
        await self._settled.wait()

    def _done_with(self, polls: int) -> None:
        self._unsettled -= polls
        if self._unsettled <= 0:
            self._unsettled = 0
            self._settled.set()

    @property
    def problem(self) -> str | None:
        """Why polls are not recorded now (the database refuses writes), or None."""
        return self._claims.problem or self._writes.problem

    def wake(self) -> None:
        """Look for due trainings now (a subscription was added or a webhook arrived)."""
        self._wake.set()

    async def poll_soon(self, training_id: str) -> bool:
        """Make a followed training due now; False when nobody follows it."""
        followed = await self._trainings.poll_now(training_id, self._clock(), self.rules.interval)
        if followed:
            self.wake()
        return bool(followed)

    async def ingest(self, training_id: str, key_ref: str, status: TrainingStatus) -> None:
        """Record a status fetched outside the loop (by a command) as a poll's answer."""
        now = self._clock()
        row = await self._trainings.get(training_id, key_ref)
        update = outcome.after_status(
            row,
            (training_id, key_ref),
            status,
            now,
            self.rules,
            learned=self.learned,
            rand=self._rand,
        )
        if update is not None and await self._trainings.record([update], now):
            self._on_outbox()

    # -- the loops ---------------------------------------------------------------------------

    async def _schedule(self) -> None:
        while True:
            try:
                self._wake.clear()
                now = self._clock()
                self.last_tick = now
                if self._room() * 2 >= self._claim_size:
                    self._observed.clear()
                    claimed = await self._trainings.claim_due(now, self._room(), self._plan)
                    for row, planned_at in claimed:
                        self._start_poll(Claim(row, planned_at, self._observed.get(row.ref)))
                    self._observed.clear()
                next_at = await self._trainings.next_due_at()
                if self._room() * 2 < self._claim_size or next_at is None:
                    # Polls ending wake this loop when half the window is free again: the
                    # next trainings are claimed together, not one per freed slot.
                    delay = 5.0
                else:
                    delay = min(5.0, max(0.0, next_at - self._clock()))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await self._claims.failed(exc)
                continue
            self._claims.ended()
            await wait_event(self._wake, delay)

    def _room(self) -> int:
        """How many more trainings may be claimed (polls in flight count against the window)."""
        return self._claim_size - len(self._polls)

    def _plan(self, row: Training) -> tuple[float, str]:
        """When a training just claimed is due next if its answer changes nothing, and why."""
        now = self._clock()
        obs = outcome.observation_of(row, now, self.rules)
        self._observed[row.ref] = obs  # the answer is judged against it: read once
        plan = outcome.plan_after(obs, now, self.rules, self.learned, self._rand)
        return plan.at, plan.why

    def _start_poll(self, claim: Claim) -> None:
        row = claim.row
        if row.ref in self._polls:
            return  # still in flight from an earlier claim (its lease ran out): once is enough
        self._idle.clear()
        self._unsettled += 1
        self._settled.clear()
        self._polls[row.ref] = asyncio.create_task(self._poll(claim))

    async def _poll(self, claim: Claim) -> None:
        row = claim.row
        try:
            update = await self._answer(claim)
        except asyncio.CancelledError:
            raise
        except Exception:
            # One bad training never stops the others; it is polled again at its next time.
            log.exception("polling %s failed unexpectedly", row.training_id)
            update = None
        finally:
            self._polls.pop(row.ref, None)
            if not self._polls:
                self._idle.set()
            if len(self._polls) == self._claim_size // 2:
                # Half the window free: claim the next ones together (one claim per freed
                # slot would be a transaction per poll).
                self._wake.set()
        if update is None:
            self._done_with(1)
        else:
            self._results.put_nowait(update)

    async def _answer(self, claim: Claim) -> TrainingUpdate | None:
        """Poll one training; the update to record, or None when there is nothing to write."""
        row, planned_at = claim.row, claim.planned_at
        api_key = await self._keys.key_for(row.key_ref)
        if api_key is None:
            reason = self._keys.missing_reason(row.key_ref)
            paused = await self._subscriptions.pause_key_ref(row.key_ref, reason, self._clock())
            log.warning("no key for %s: paused %d subscriptions", row.key_ref, paused)
            return None
        started = time.monotonic()
        try:
            status = await self._client.attempt(row.training_id, api_key, api=Api(row.api))
        except SdApiError as exc:
            metrics.POLLS.labels(type(exc).__name__).inc()
            return outcome.after_error(
                row, exc, self._clock(), self.rules, planned_at=planned_at, rand=self._rand
            )
        finally:
            metrics.API_LATENCY.observe(time.monotonic() - started)
        metrics.POLLS.labels("ok").inc()
        return outcome.after_status(
            row,
            row.ref,
            status,
            self._clock(),
            self.rules,
            learned=self.learned,
            planned_at=planned_at,
            previous=claim.observation,
            rand=self._rand,
        )

    def _count_finished(self, batch: list[TrainingUpdate]) -> None:
        finished = sum(1 for u in batch if any(e.kind.terminal for e in u.events))
        self._finished_since_learning += finished
        if self._finished_since_learning >= LEARN_EVERY:
            self._learn_again.set()

    async def _write(self) -> None:
        while True:
            batch = [await self._results.get()]
            if not self._idle.is_set():
                # Let results gather a moment while polls are under way: a transaction costs
                # about the same for 50 rows as for 2,000. No wait once no poll is in flight.
                await wait_event(self._idle, self._write_linger)
            while len(batch) < self._write_batch and not self._results.empty():
                batch.append(self._results.get_nowait())
            try:
                recorded = await self._trainings.record_apart(batch, self._clock())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Dropped: those trainings are polled again at the time their claims planned.
                self._done_with(len(batch))
                await self._writes.failed(exc)
                continue
            self._writes.ended()
            self._done_with(len(batch))
            for update, refusal in recorded.refused:
                # Its values, not the database, are at fault: the others are recorded.
                log.error(
                    "the database refused the poll result of %s (%s: %s); it is polled again "
                    "at its next time",
                    update.training_id,
                    type(refusal).__name__,
                    refusal,
                )
            metrics.POLL_RESULTS_REFUSED.inc(len(recorded.refused))
            metrics.POLL_RESULTS_WRITTEN.inc(len(batch) - len(recorded.refused))
            self._count_finished(batch)
            if recorded.created:
                self._on_outbox()
