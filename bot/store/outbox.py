"""The outbox: one row per (subscription, event) to send, marked sent only after the send."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bot.store.db import Database, Tx, json_rows, rows_param
from bot.store.event_rows import EVENT_COLUMNS, event_of
from bot.store.models import Delivery, Story, Style, SubscriptionKind
from bot.store.subscriptions import mention_of

# Deliveries of one subscription handed out per batch: one channel takes 5 messages per 5 s,
# so more would only wait in memory.
PER_SUBSCRIPTION = 25

_DELIVERY_COLUMNS = [
    "d.id",
    "d.subscription_id",
    "s.kind",
    "s.guild_id",
    "s.channel_id",
    "s.user_id",
    "d.training_id",
    "d.attempts",
    "d.next_attempt_at",
    "d.created_at",
    "d.attempted_at",
    "d.key_ref",
    "s.style",
    "s.mention_kind",
    "s.mention_id",
    "s.mention_on",
    "s.live_message_id",
    "s.origin_channel_id",
    "s.origin_message_id",
    "s.baseline_seq",
    *(f"e.{column}" for column in EVENT_COLUMNS.split(", ")),
]
_EVENT_AT = len(_DELIVERY_COLUMNS) - len(EVENT_COLUMNS.split(", "))
# Numbered (c0, c1...) so that the outer select_json can name them: s.kind and e.kind clash.
_NAMES = ", ".join(f"c{i}" for i in range(len(_DELIVERY_COLUMNS)))
# The subscriptions whose first pending delivery is due, then their first pending deliveries
# in order. A subscription waiting out a backoff (its head not due) is passed over whole, so it
# neither fills the batch nor lets a later message overtake the head. The heads come from the
# deliveries_heads index, one entry per pending row, never pending rows compared pairwise.
# A live or thread subscription's opening has no event (LEFT JOIN): it posts the message.
_DUE = f"""
WITH heads AS (
    SELECT subscription_id, MIN(seq) AS seq FROM deliveries WHERE status = 'pending'
    GROUP BY subscription_id
), due AS (
    SELECT h.subscription_id FROM heads h
    JOIN deliveries d ON d.subscription_id = h.subscription_id AND d.seq = h.seq
    JOIN subscriptions s ON s.id = h.subscription_id
    WHERE s.status = 'active' AND d.next_attempt_at <= ?
    ORDER BY h.subscription_id LIMIT ?
), batch AS (
    SELECT d.*, ROW_NUMBER() OVER (PARTITION BY d.subscription_id ORDER BY d.seq) AS rank
    FROM deliveries d JOIN due ON due.subscription_id = d.subscription_id
    WHERE d.status = 'pending'
)
SELECT {", ".join(f"{x} AS c{i}" for i, x in enumerate(_DELIVERY_COLUMNS))} FROM batch d
JOIN subscriptions s ON s.id = d.subscription_id
LEFT JOIN events e ON e.training_id = d.training_id AND e.key_ref = d.key_ref AND e.seq = d.seq
WHERE d.rank <= ? ORDER BY d.subscription_id, d.seq LIMIT ?
"""


def _delivery(row: Sequence[Any]) -> Delivery:
    return Delivery(
        id=row[0],
        subscription_id=row[1],
        kind=SubscriptionKind(row[2]),
        guild_id=row[3],
        channel_id=row[4],
        user_id=row[5],
        training_id=row[6],
        attempts=row[7],
        next_attempt_at=row[8],
        created_at=row[9],
        attempted_at=row[10],
        key_ref=row[11],
        style=Style(row[12]),
        mention=mention_of(row[13], row[14], row[15]),
        live_message_id=row[16],
        origin_channel_id=row[17],
        origin_message_id=row[18],
        baseline_seq=row[19],
        event=None if row[_EVENT_AT] is None else event_of(row[_EVENT_AT:]),
    )


class Outbox:
    """The ``deliveries`` table."""

    def __init__(self, db: Database) -> None:
        self._db = db

    @staticmethod
    async def enqueue(tx: Tx, news: Sequence[tuple[str, str, int]], now: float) -> int:
        """Create the deliveries of new events, inside the transaction that recorded them.

        ``news`` holds ``(training_id, key_ref, first new seq)``; every active subscription of
        that training gets the events from there on that it wants (channels: every step past
        its baseline and the end, the end only for the ``final`` style; DMs: the end only; a
        live subscription's steps are edits of its message). Returns how many were created.
        """
        if not news:
            return 0
        return await tx.execute(
            "INSERT INTO deliveries (subscription_id, training_id, key_ref, seq, status, "
            "next_attempt_at, created_at) "
            "SELECT s.id, e.training_id, e.key_ref, e.seq, 'pending', ?, ? "
            f"FROM ({json_rows(3)}) AS j "
            "JOIN subscriptions s ON s.training_id = j.c0 AND s.key_ref = j.c1 "
            "JOIN events e ON e.training_id = s.training_id AND e.key_ref = s.key_ref "
            "AND e.seq >= j.c2 "
            "WHERE s.status = 'active' AND e.seq > s.baseline_seq "
            "AND ((s.kind = 'channel' AND s.style != 'final') OR e.kind != 'step') "
            "ON CONFLICT DO NOTHING",
            (now, now, rows_param(news)),
        )

    async def due(self, now: float, *, limit: int) -> list[list[Delivery]]:
        """Pending deliveries grouped by subscription in event order, for the subscriptions
        whose first pending delivery is due (at most ``limit`` deliveries in all)."""
        rows = await self._db.select_json(_NAMES, _DUE, (now, limit, PER_SUBSCRIPTION, limit))
        groups: list[list[Delivery]] = []
        for row in rows:
            delivery = _delivery(row)
            if groups and groups[-1][0].subscription_id == delivery.subscription_id:
                groups[-1].append(delivery)
            else:
                groups.append([delivery])
        return groups

    async def next_due_at(self) -> float | None:
        """When the earliest pending delivery of an active subscription is due."""
        rows = await self._db.fetch(
            "SELECT MIN(d.next_attempt_at) FROM deliveries d JOIN subscriptions s "
            "ON s.id = d.subscription_id WHERE d.status = 'pending' AND s.status = 'active'"
        )
        value = rows[0][0]
        return None if value is None else float(value)

    async def mark_sent(self, sent: Sequence[tuple[Delivery, int | None]], now: float) -> None:
        """Mark deliveries sent (after the send); a terminal one completes its subscription."""
        if not sent:
            return
        async with self._db.transaction() as tx:
            await tx.executemany(
                "UPDATE deliveries SET status = 'sent', message_id = ?, sent_at = ?, "
                "attempts = attempts + 1, last_error = NULL WHERE id = ?",
                [(message_id, now, d.id) for d, message_id in sent],
            )
            done = [(now, d.subscription_id) for d, _ in sent if d.terminal]
            if done:
                await tx.executemany(
                    "UPDATE subscriptions SET status = 'done', updated_at = ? "
                    "WHERE id = ? AND status = 'active'",
                    done,
                )

    async def story(self, training_id: str, key_ref: str, up_to_seq: int) -> Story:
        """The training's events up to ``up_to_seq`` with when each was observed, and when
        tunewatch first recorded it."""
        rows = await self._db.select_json(
            f"{EVENT_COLUMNS}, observed_at",
            f"SELECT {EVENT_COLUMNS}, observed_at FROM events "
            "WHERE training_id = ? AND key_ref = ? AND seq <= ? ORDER BY seq",
            (training_id, key_ref, up_to_seq),
        )
        found = await self._db.fetch(
            "SELECT created_at, state FROM trainings WHERE training_id = ? AND key_ref = ?",
            (training_id, key_ref),
        )
        return Story(
            training_id=training_id,
            first_seen_at=float(found[0][0]) if found else None,
            events=tuple((event_of(r[:-1]), float(r[-1])) for r in rows),
            state=found[0][1] if found else None,
        )

    async def mark_attempted(self, deliveries: Sequence[Delivery], now: float) -> None:
        """Stamp deliveries as being sent (before the sends: see ``Delivery.attempted_at``)."""
        if deliveries:
            async with self._db.transaction() as tx:
                await tx.execute(
                    f"UPDATE deliveries SET attempted_at = ? WHERE id IN (SELECT c0 FROM "
                    f"({json_rows(1)}))",
                    (now, rows_param([(d.id,) for d in deliveries])),
                )

    async def mark_retry(self, delivery: Delivery, error: str, next_attempt_at: float) -> None:
        """Record a failed attempt; the delivery stays pending until ``next_attempt_at``."""
        async with self._db.transaction() as tx:
            await tx.execute(
                "UPDATE deliveries SET attempts = attempts + 1, last_error = ?, "
                "next_attempt_at = ? WHERE id = ?",
                (error, next_attempt_at, delivery.id),
            )

    async def mark_failed(self, delivery: Delivery, error: str) -> None:
        """Give up on one delivery; later ones of its subscription go on."""
        async with self._db.transaction() as tx:
            await tx.execute(
                "UPDATE deliveries SET status = 'failed', attempts = attempts + 1, "
                "last_error = ? WHERE id = ?",
                (error, delivery.id),
            )
