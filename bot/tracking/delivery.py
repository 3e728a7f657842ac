"""Drains the outbox: sends pending deliveries in order per subscription, classifies failures,
and writes the "sent" mark only after the send.

Exactly once, as Discord shows it: before a batch is sent, its rows are stamped as attempted,
so after a crash between a send and its mark the deliverer knows which messages may already be
on Discord, and looks for each in the channel's recent history before sending it again. The
nonce each message carries (derived from its delivery row) covers the rest: Discord returns the
first message instead of posting a second one when the same nonce comes back within its
de-duplication window ("a few minutes", undocumented: the history is not left to it).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import Protocol

from bot import metrics
from bot.store import Delivery, Store
from bot.tracking.loops import FailureStreak, wait_event

log = logging.getLogger(__name__)


class DeliveryError(Exception):
    """A send failed."""


class TransientDeliveryError(DeliveryError):
    """Worth retrying later (network, 5xx, 429)."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentDeliveryError(DeliveryError):
    """The target cannot receive (no access, deleted channel, DMs closed): pause it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Notifier(Protocol):
    """Sends deliveries; the only code that talks to Discord."""

    async def send(self, delivery: Delivery, nonce: str) -> int | None:
        """Send it with this nonce (Discord drops a repeat of the same nonce); the message id."""

    async def find_sent(self, delivery: Delivery) -> int | None:
        """The id of this delivery's message if the channel's recent history shows it."""


def make_nonce(instance_id: str, delivery_id: int) -> str:
    """A deterministic nonce of at most 25 characters for a delivery row."""
    return f"tw{instance_id}{delivery_id:x}"[:25]


class Deliverer:
    """Sends what the tracker wrote to the outbox.

    ``concurrency`` is how many subscriptions send at once, each strictly in order. Discord
    allows only 5 messages per 5 s in one channel, so throughput comes from many channels in
    parallel; the notifier paces the total to Discord's global limit.

    While the database refuses writes (a full disk), nothing is sent: a message whose "sent"
    mark cannot be written would be sent again. The marks already taken are kept and written
    again with a backoff; ``problem`` says what is wrong, for /healthz.
    """

    def __init__(
        self,
        store: Store,
        notifier: Notifier,
        *,
        instance_id: str,
        concurrency: int = 256,
        batch_size: int = 5000,
        base_backoff: float = 2.0,
        max_backoff: float = 900.0,
        max_attempts: int = 40,
        store_backoff_max: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._outbox = store.outbox
        self._subscriptions = store.subscriptions
        self._notifier = notifier
        self._instance_id = instance_id
        self._concurrency = concurrency
        self._batch_size = batch_size
        self._base_backoff = base_backoff
        self._max_backoff = max_backoff
        self._max_attempts = max_attempts
        self._store = FailureStreak(
            log,
            "delivering is stopped: the database refuses writes",
            "delivering again: the database takes writes",
            longest=store_backoff_max,
        )
        self._clock = clock
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._marks: list[tuple[Delivery, int | None]] = []
        self._flusher: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start draining in the background."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="deliverer")

    async def stop(self) -> None:
        """Stop; marks already taken are written first (if the database takes them)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            # gather: a cancellation of stop() itself is not swallowed with the task's own.
            await asyncio.gather(task, return_exceptions=True)
        if self._flusher is not None and not self._flusher.done():
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
        if self._marks:
            try:
                await self._write_marks()
            except Exception:
                # Sent again after the restart, with the same nonce (or found in the channel).
                log.exception("%d sent marks could not be written at stop", len(self._marks))

    def wake(self) -> None:
        """New deliveries were written."""
        self._wake.set()

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                sent = await self.drain_once()
                next_at = None if sent else await self._outbox.next_due_at()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await self._store.failed(exc)
                continue
            if not self._marks:
                self._store.ended()
            if sent:
                continue
            delay = 30.0 if next_at is None else min(30.0, max(0.0, next_at - self._clock()))
            await wait_event(self._wake, delay)

    async def drain_once(self) -> int:
        """Send every delivery due now; returns how many were attempted."""
        if self._marks:
            return 0  # marks the database refused are written first (by the flusher)
        groups = await self._outbox.due(self._clock(), limit=self._batch_size)
        if not groups:
            return 0
        # Written before the sends: after a crash, these rows are the messages that may be on
        # Discord already. No send without it.
        await self._outbox.mark_attempted([d for g in groups for d in g], self._clock())
        semaphore = asyncio.Semaphore(self._concurrency)

        async def run(group: list[Delivery]) -> int:
            async with semaphore:
                return await self._send_in_order(group)

        attempted = sum(await asyncio.gather(*(run(g) for g in groups)))
        await self._flush_now()
        return attempted

    async def _send_in_order(self, group: list[Delivery]) -> int:
        attempted = 0
        for delivery in group:
            attempted += 1
            try:
                ok = await self._deliver(delivery)
            except asyncio.CancelledError:
                raise
            except Exception:
                # Never let one item kill the loop; its row stays pending and is retried.
                log.exception("delivery %d failed unexpectedly", delivery.id)
                ok = False
            if not ok:
                break  # later messages of this subscription wait, so order is kept
        return attempted

    async def _deliver(self, delivery: Delivery) -> bool:
        """Send one delivery (unless it is on Discord already); False to stop its group."""
        if delivery.attempted_at is not None:
            found = await self._notifier.find_sent(delivery)
            if found is not None:
                log.info(
                    "delivery %d was sent before a restart: marked, not sent again", delivery.id
                )
                self._marked(delivery, found)
                return True
        try:
            message_id = await self._notifier.send(
                delivery, make_nonce(self._instance_id, delivery.id)
            )
        except DeliveryError as exc:
            return await self._failed(delivery, exc)
        metrics.DELIVERIES.labels("sent").inc()
        metrics.DELIVERY_DELAY.observe(max(0.0, self._clock() - delivery.created_at))
        self._marked(delivery, message_id)
        return True

    async def _failed(self, delivery: Delivery, exc: DeliveryError) -> bool:
        """Record a failed send; True when later messages of the subscription may go on."""
        if isinstance(exc, PermanentDeliveryError):
            metrics.DELIVERIES.labels("paused").inc()
            log.warning("subscription %d paused: %s", delivery.subscription_id, exc.reason)
            await self._subscriptions.pause(delivery.subscription_id, exc.reason, self._clock())
            return False
        if isinstance(exc, TransientDeliveryError):
            attempts = delivery.attempts + 1
            if attempts < self._max_attempts:
                metrics.DELIVERIES.labels("retry").inc()
                delay = min(self._max_backoff, self._base_backoff * 2.0 ** min(attempts, 64))
                delay *= random.uniform(0.5, 1.0)
                if exc.retry_after is not None:
                    delay = max(delay, exc.retry_after)
                log.info("delivery %d failed (%s); retry in %.1fs", delivery.id, exc, delay)
                await self._outbox.mark_retry(delivery, str(exc), self._clock() + delay)
                return False
            log.error("delivery %d gave up after %d attempts: %s", delivery.id, attempts, exc)
        else:
            # Neither retryable nor about the target (Discord refused this payload): give up
            # on this message, keep the subscription and its later messages.
            log.error("delivery %d refused: %s", delivery.id, exc)
        metrics.DELIVERIES.labels("failed").inc()
        await self._outbox.mark_failed(delivery, str(exc))
        return True

    # -- sent marks ----------------------------------------------------------------------

    def _marked(self, delivery: Delivery, message_id: int | None) -> None:
        self._marks.append((delivery, message_id))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_marks(), name="deliverer-marks")

    async def _flush_marks(self) -> None:
        # Group commit: marks taken while a write runs go into the next write. Marks the
        # database refuses stay here and are written again after a backoff.
        while self._marks:
            try:
                await self._write_marks()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await self._store.failed(exc)
            else:
                self._store.ended()
        self.wake()

    async def _write_marks(self) -> None:
        marks, self._marks = self._marks, []
        try:
            await self._outbox.mark_sent(marks, self._clock())
        except BaseException:
            self._marks[:0] = marks
            raise

    async def _flush_now(self) -> None:
        if self._flusher is not None:
            # Shielded: cancelling the loop must not lose marks of messages already sent.
            await asyncio.shield(self._flusher)

    @property
    def problem(self) -> str | None:
        """Why nothing is being sent now (the database refuses writes), or None."""
        return self._store.problem
