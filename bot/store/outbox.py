"""The outbox: one row per (subscription, event) to send, marked sent only after the send."""

from __future__ import annotations

import math
import os
import random
import secrets
import socket
from collections.abc import Sequence
from typing import Any

from bot.store.db import Database, Dialect, Tx, rows_param
from bot.store.event_rows import EVENT_COLUMNS, event_of
from bot.store.models import Delivery, Story, Style, SubscriptionKind
from bot.store.subscriptions import mention_of

# Deliveries of one subscription handed out per batch: one channel takes 5 messages per 5 s,
# so more would only wait in memory.
PER_SUBSCRIPTION = 25
# How long a subscription's messages stay with the instance that took them if it stops
# renewing (it died): then another instance sends them.
DEFAULT_LEASE_SECONDS = 60.0

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
# The subscriptions whose first pending delivery is due, each with whether another instance
# holds its lease (those it is free to take first). A subscription waiting out a backoff (its
# head not due) is passed over whole, so it neither fills the batch nor lets a later message
# overtake the head. The heads come from the deliveries_heads index, one entry per pending row,
# never pending rows compared pairwise. Parameters: this instance, now, now, how many.
_HEADS = """
WITH heads AS (
    SELECT subscription_id, MIN(seq) AS seq FROM deliveries WHERE status = 'pending'
    GROUP BY subscription_id
), due AS (
    SELECT h.subscription_id, CASE WHEN l.owner IS NOT NULL AND l.owner != ?
        AND l.expires_at > ? THEN 1 ELSE 0 END AS taken
    FROM heads h
    JOIN deliveries d ON d.subscription_id = h.subscription_id AND d.seq = h.seq
    JOIN subscriptions s ON s.id = h.subscription_id
    LEFT JOIN delivery_leases l ON l.subscription_id = h.subscription_id
    WHERE s.status = 'active' AND d.next_attempt_at <= ?
)
SELECT subscription_id, taken FROM due ORDER BY taken, subscription_id LIMIT ?
"""


def _statements(sql: Dialect) -> dict[str, str]:
    """The outbox's statements in this database's dialect."""
    ids = f"SELECT c0 FROM ({sql.json_rows('int')}) AS j"
    return {
        "enqueue": (
            "INSERT INTO deliveries (subscription_id, training_id, key_ref, seq, status, "
            "next_attempt_at, created_at) "
            "SELECT s.id, e.training_id, e.key_ref, e.seq, 'pending', "
            "CAST(? AS DOUBLE PRECISION), CAST(? AS DOUBLE PRECISION) "
            f"FROM ({sql.json_rows('text', 'text', 'int')}) AS j "
            "JOIN subscriptions s ON s.training_id = j.c0 AND s.key_ref = j.c1 "
            "JOIN events e ON e.training_id = s.training_id AND e.key_ref = s.key_ref "
            "AND e.seq >= j.c2 "
            "WHERE s.status = 'active' AND e.seq > s.baseline_seq "
            "AND ((s.kind = 'channel' AND s.style != 'final') OR e.kind != 'step') "
            "ON CONFLICT DO NOTHING"
        ),
        # A lease is taken where there is none, where it is ours, or where it ran out; a lease
        # another instance holds is left alone (its row is locked or its time is not up).
        # Parameters: owner, expires_at, the subscription ids, now.
        "lease": (
            "INSERT INTO delivery_leases (subscription_id, owner, expires_at) "
            "SELECT j.c0, CAST(? AS TEXT), CAST(? AS DOUBLE PRECISION) "
            f"FROM ({sql.json_rows('int')}) AS j JOIN subscriptions s ON s.id = j.c0 "
            "WHERE true ON CONFLICT (subscription_id) DO UPDATE SET owner = excluded.owner, "
            "expires_at = excluded.expires_at WHERE delivery_leases.owner = excluded.owner "
            "OR delivery_leases.expires_at <= ? RETURNING subscription_id"
        ),
        # The first pending deliveries of the leased subscriptions, in order. A live or thread
        # subscription's opening has no event (LEFT JOIN): it posts the message.
        # Parameters: the subscription ids, per subscription, how many in all.
        "batch": f"""
WITH batch AS (
    SELECT d.*, ROW_NUMBER() OVER (PARTITION BY d.subscription_id ORDER BY d.seq) AS rank
    FROM deliveries d WHERE d.status = 'pending' AND d.subscription_id IN ({ids})
)
SELECT {", ".join(f"{x} AS c{i}" for i, x in enumerate(_DELIVERY_COLUMNS))} FROM batch d
JOIN subscriptions s ON s.id = d.subscription_id
LEFT JOIN events e ON e.training_id = d.training_id AND e.key_ref = d.key_ref AND e.seq = d.seq
WHERE d.rank <= ? AND s.status = 'active' ORDER BY d.subscription_id, d.seq LIMIT ?
""",
        "renew": (
            "UPDATE delivery_leases SET expires_at = ? WHERE owner = ? "
            f"AND subscription_id IN ({ids})"
        ),
        "release": f"DELETE FROM delivery_leases WHERE owner = ? AND subscription_id IN ({ids})",
        "attempted": f"UPDATE deliveries SET attempted_at = ? WHERE id IN ({ids})",
    }


# When a subscription's next message may go: its due time, or the end of another instance's
# lease on it. Parameters: this instance.
_NEXT_DUE = (
    "SELECT MIN(CASE WHEN l.owner IS NOT NULL AND l.owner != ? "
    "AND l.expires_at > d.next_attempt_at THEN l.expires_at ELSE d.next_attempt_at END) "
    "FROM deliveries d JOIN subscriptions s ON s.id = d.subscription_id "
    "LEFT JOIN delivery_leases l ON l.subscription_id = d.subscription_id "
    "WHERE d.status = 'pending' AND s.status = 'active'"
)


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


def new_owner() -> str:
    """A name for this process's leases: unique per start, so a restarted instance does not
    take for its own what its previous life left unfinished."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(3)}"


class Outbox:
    """The ``deliveries`` table, and the leases that let one instance at a time send a
    subscription's messages.

    ``due`` leases the subscriptions it hands out to ``owner`` (this process) for ``lease``
    seconds; the deliverer renews them while it sends and releases them when done. An instance
    that dies leaves leases that run out, and another instance takes the messages over, with
    the same nonces (the deliveries' ids and the database's instance id).
    """

    def __init__(self, db: Database, *, owner: str | None = None) -> None:
        self._db = db
        self.owner = owner or new_owner()
        self._sql = _statements(db.sql)

    async def enqueue(self, tx: Tx, news: Sequence[tuple[str, str, int]], now: float) -> int:
        """Create the deliveries of new events, inside the transaction that recorded them.

        ``news`` holds ``(training_id, key_ref, first new seq)``; every active subscription of
        that training gets the events from there on that it wants (channels: every step past
        its baseline and the end, the end only for the ``final`` style; DMs: the end only; a
        live subscription's steps are edits of its message). Returns how many were created.
        """
        if not news:
            return 0
        return await tx.execute(self._sql["enqueue"], (now, now, rows_param(news)))

    async def due(
        self,
        now: float,
        *,
        limit: int,
        lease: float = DEFAULT_LEASE_SECONDS,
        share: float = 1.0,
    ) -> list[list[Delivery]]:
        """Pending deliveries grouped by subscription in event order, for the subscriptions
        whose first pending delivery is due (at most ``limit`` deliveries in all), each
        subscription leased to this instance until ``now + lease``.

        ``share`` is this instance's part of the sending (its part of Discord's budget): it
        leases about that part of the due subscriptions (those others hold counted in), picked
        at random among the free ones, and leaves the rest to the other instances (or to its
        own next batch) instead of taking every channel while it may only send at its share
        of the rate.
        """
        # As many subscriptions as can fill the batch, not more: what one instance leaves is
        # for the others (on a shared database) or for its next batch.
        subscriptions = max(1, -(-limit // PER_SUBSCRIPTION))
        async with self._db.transaction() as tx:
            heads = await tx.fetch(_HEADS, (self.owner, now, now, subscriptions))
            wanted = [int(h[0]) for h in heads if not h[1]]
            if share < 1.0:
                room = min(len(wanted), math.ceil(len(heads) * share))
                wanted = random.sample(wanted, room)
            if not wanted:
                return []
            leased = await tx.fetch(
                self._sql["lease"],
                (self.owner, now + lease, rows_param([(i,) for i in sorted(wanted)]), now),
            )
            if not leased:
                return []
            rows = await tx.select_json(
                _NAMES,
                self._sql["batch"],
                (rows_param([(int(r[0]),) for r in leased]), PER_SUBSCRIPTION, limit),
            )
        groups: list[list[Delivery]] = []
        for row in rows:
            delivery = _delivery(row)
            if groups and groups[-1][0].subscription_id == delivery.subscription_id:
                groups[-1].append(delivery)
            else:
                groups.append([delivery])
        # A head another instance put off (a retry) between the two reads waits for its time.
        return [g for g in groups if g[0].next_attempt_at <= now]

    async def renew(self, subscription_ids: Sequence[int], until: float) -> int:
        """Extend this instance's leases on these subscriptions; returns how many it holds."""
        if not subscription_ids:
            return 0
        async with self._db.transaction() as tx:
            return await tx.execute(
                self._sql["renew"],
                (until, self.owner, rows_param([(i,) for i in subscription_ids])),
            )

    async def release(self, subscription_ids: Sequence[int]) -> None:
        """Give back this instance's leases on these subscriptions (their sends are over)."""
        if not subscription_ids:
            return
        async with self._db.transaction() as tx:
            await tx.execute(
                self._sql["release"], (self.owner, rows_param([(i,) for i in subscription_ids]))
            )

    async def next_due_at(self) -> float | None:
        """When the earliest pending delivery of an active subscription may go (after its
        backoff, and after another instance's lease on it)."""
        rows = await self._db.fetch(_NEXT_DUE, (self.owner,))
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
                    self._sql["attempted"], (now, rows_param([(d.id,) for d in deliveries]))
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
