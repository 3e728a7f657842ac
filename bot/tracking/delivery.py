"""Drains the outbox: sends pending deliveries in order per subscription, classifies failures,
and writes the "sent" mark only after the send."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import Protocol

from bot import metrics
from bot.store import Delivery, Store
from bot.tracking.loops import wait_event

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
    """Sends one delivery; returns the message id. The only code that talks to Discord."""

    async def send(self, delivery: Delivery, nonce: str) -> int | None:
        """Send it with this nonce (Discord drops a repeat of the same nonce)."""


def make_nonce(instance_id: str, delivery_id: int) -> str:
    """A deterministic nonce of at most 25 characters for a delivery row."""
    return f"tw{instance_id}{delivery_id:x}"[:25]


class Deliverer:
    """Sends what the tracker wrote to the outbox.

    ``concurrency`` is how many subscriptions send at once, each strictly in order. Discord
    allows only 5 messages per 5 s in one channel, so throughput comes from many channels in
    parallel; the notifier paces the total to Discord's global limit, so a waiting subscription
    costs a parked coroutine, nothing more. With fewer slots than busy channels, the last
    subscriptions of a batch run alone at one channel's pace (8 slots: 8 messages/s).
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
        lease_seconds: float = 60.0,
        idle_seconds: float = 30.0,
        share: float = 1.0,
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
        # The subscriptions of a batch are leased to this instance (so no other instance sends
        # them meanwhile) for lease_seconds, renewed while the batch is sent. Without renewal
        # (the database is gone, the process stalls) sending stops when the lease ends, as
        # another instance may take over then.
        self._lease = lease_seconds
        self._leased_until = 0.0
        # Longest sleep with nothing due: another instance may write deliveries (and die).
        self._idle = idle_seconds
        # This instance's part of the sending: it takes that part of the due subscriptions.
        self._share = share
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
        """Stop; marks already taken are flushed first."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            # gather: a cancellation of stop() itself is not swallowed with the task's own.
            await asyncio.gather(task, return_exceptions=True)
        await self._flush_now()

    def wake(self) -> None:
        """New deliveries were written."""
        self._wake.set()

    async def _run(self) -> None:
        while True:
            try:
                self._wake.clear()
                if await self.drain_once():
                    continue
                next_at = await self._outbox.next_due_at()
                idle = self._idle
                delay = idle if next_at is None else min(idle, max(0.0, next_at - self._clock()))
                await wait_event(self._wake, delay)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("delivery loop failed; retrying in 1s")
                await asyncio.sleep(1.0)

    async def drain_once(self) -> int:
        """Send every delivery due now; returns how many were attempted."""
        now = self._clock()
        groups = await self._outbox.due(
            now, limit=self._batch_size, lease=self._lease, share=self._share
        )
        if not groups:
            return 0
        self._leased_until = now + self._lease
        semaphore = asyncio.Semaphore(self._concurrency)

        async def run(group: list[Delivery]) -> int:
            async with semaphore:
                return await self._send_in_order(group)

        leased = [g[0].subscription_id for g in groups]
        renewer = asyncio.create_task(self._renew(leased))
        try:
            attempted = sum(await asyncio.gather(*(run(g) for g in groups)))
            await self._flush_now()
        finally:
            renewer.cancel()
            await asyncio.gather(renewer, return_exceptions=True)
        try:
            await self._outbox.release(leased)
        except Exception:
            log.warning("could not give back %d delivery leases; they run out", len(leased))
        return attempted

    async def _renew(self, subscription_ids: list[int]) -> None:
        """Keep this batch's leases while it is sent (every third of a lease)."""
        while True:
            await asyncio.sleep(self._lease / 3)
            until = self._clock() + self._lease
            try:
                held = await self._outbox.renew(subscription_ids, until)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("could not renew %d delivery leases", len(subscription_ids))
                continue
            if held:
                self._leased_until = until

    async def _send_in_order(self, group: list[Delivery]) -> int:
        attempted = 0
        for delivery in group:
            if self._clock() >= self._leased_until:
                # The lease ran out unrenewed: another instance may be sending these now.
                break
            attempted += 1
            try:
                ok = await self._send_one(delivery)
            except Exception:
                # Never let one item kill the loop; its row stays pending and is retried.
                log.exception("delivery %d failed unexpectedly", delivery.id)
                ok = False
            if not ok:
                break  # later messages of this subscription wait, so order is kept
        return attempted

    async def _send_one(self, delivery: Delivery) -> bool:
        try:
            message_id = await self._notifier.send(
                delivery, make_nonce(self._instance_id, delivery.id)
            )
        except PermanentDeliveryError as exc:
            metrics.DELIVERIES.labels("paused").inc()
            log.warning("subscription %d paused: %s", delivery.subscription_id, exc.reason)
            await self._subscriptions.pause(delivery.subscription_id, exc.reason, self._clock())
            return False
        except TransientDeliveryError as exc:
            attempts = delivery.attempts + 1
            if attempts >= self._max_attempts:
                metrics.DELIVERIES.labels("failed").inc()
                log.error("delivery %d gave up after %d attempts: %s", delivery.id, attempts, exc)
                await self._outbox.mark_failed(delivery, str(exc))
                return True
            metrics.DELIVERIES.labels("retry").inc()
            delay = min(self._max_backoff, self._base_backoff * 2.0**attempts)
            delay *= random.uniform(0.5, 1.0)
            if exc.retry_after is not None:
                delay = max(delay, exc.retry_after)
            log.info("delivery %d failed (%s); retry in %.1fs", delivery.id, exc, delay)
            await self._outbox.mark_retry(delivery, str(exc), self._clock() + delay)
            return False
        except DeliveryError as exc:
            # Neither retryable nor about the target (e.g. Discord refused this payload):
            # give up on this message, keep the subscription and its later messages.
            metrics.DELIVERIES.labels("failed").inc()
            log.error("delivery %d refused: %s", delivery.id, exc)
            await self._outbox.mark_failed(delivery, str(exc))
            return True
        now = self._clock()
        metrics.DELIVERIES.labels("sent").inc()
        metrics.DELIVERY_DELAY.observe(max(0.0, now - delivery.created_at))
        self._marks.append((delivery, message_id))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_marks())
        return True

    async def _flush_marks(self) -> None:
        # Group commit: marks taken while a write runs go into the next write.
        while self._marks:
            marks, self._marks = self._marks, []
            try:
                await self._outbox.mark_sent(marks, self._clock())
            except Exception:
                log.exception("writing %d sent marks failed; nonces dedupe the resend", len(marks))

    async def _flush_now(self) -> None:
        if self._flusher is not None:
            # Shielded: cancelling the loop must not lose marks of messages already sent.
            await asyncio.shield(self._flusher)
        await self._flush_marks()
