"""Subscriptions: a channel following a training, or a member's DM alert."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bot.events import EventKind
from bot.store.db import Database, Tx
from bot.store.models import (
    OPENING_SEQ,
    Mention,
    MentionKind,
    MentionOn,
    Style,
    Subscription,
    SubscriptionKind,
    SubscriptionStatus,
)

_COLUMNS = (
    "s.id, s.kind, s.guild_id, s.channel_id, s.user_id, s.training_id, s.key_ref, s.status, "
    "s.reason, s.baseline_seq, s.created_at, t.state, t.terminal, t.last_error, "
    "s.style, s.mention_kind, s.mention_id, s.mention_on, s.live_message_id, "
    "s.origin_channel_id, s.origin_message_id, s.updated_at, "
    "t.next_poll_at, t.poll_reason"
)


class LimitReached(Exception):
    """A per-guild or per-user subscription limit would be exceeded."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"limit of {limit} reached")
        self.limit = limit


def _subscription(row: Sequence[Any]) -> Subscription:
    return Subscription(
        id=row[0],
        kind=SubscriptionKind(row[1]),
        guild_id=row[2],
        channel_id=row[3],
        user_id=row[4],
        training_id=row[5],
        key_ref=row[6],
        status=SubscriptionStatus(row[7]),
        reason=row[8],
        baseline_seq=row[9],
        created_at=row[10],
        state=row[11],
        terminal=EventKind(row[12]) if row[12] else None,
        last_error=row[13],
        style=Style(row[14]),
        mention=mention_of(row[15], row[16], row[17]),
        live_message_id=row[18],
        origin_channel_id=row[19],
        origin_message_id=row[20],
        updated_at=row[21],
        next_poll_at=row[22],
        poll_reason=row[23],
    )


def mention_of(kind: str | None, mention_id: int | None, on: str | None) -> Mention | None:
    """A stored mention (its three columns), or None."""
    if kind is None or mention_id is None:
        return None
    return Mention(MentionKind(kind), int(mention_id), MentionOn(on or MentionOn.BOTH.value))


@dataclass(frozen=True, slots=True)
class Following:
    """How a subscription follows, beyond its target: what ``subscribe`` compares to tell a
    repeat (nothing changes) from a change (the subscription starts over)."""

    style: Style = Style.STEPS
    mention: Mention | None = None
    origin_channel_id: int | None = None
    origin_message_id: int | None = None

    def columns(self) -> tuple[Any, ...]:
        """style, mention_kind, mention_id, mention_on, origin_channel_id, origin_message_id."""
        mention = self.mention
        return (
            self.style.value,
            None if mention is None else mention.kind.value,
            None if mention is None else mention.id,
            MentionOn.BOTH.value if mention is None else mention.on.value,
            self.origin_channel_id,
            self.origin_message_id,
        )


@dataclass(frozen=True, slots=True)
class _Target:
    """Where a subscription sends, as the SQL that finds it and counts its neighbours."""

    kind: SubscriptionKind
    guild_id: int | None
    channel_id: int | None
    user_id: int
    training_id: str

    def match(self, table: str = "") -> tuple[str, tuple[Any, ...]]:
        """The subscription of this target to this training (there is at most one); columns
        prefixed with ``table``."""
        t = f"{table}." if table else ""
        if self.kind is SubscriptionKind.CHANNEL:
            where = f"{t}kind = 'channel' AND {t}training_id = ? AND {t}channel_id = ?"
            return where, (self.training_id, self.channel_id)
        where = f"{t}kind = 'dm' AND {t}training_id = ? AND {t}user_id = ?"
        return where, (self.training_id, self.user_id)

    def neighbours(self, is_: str) -> tuple[str, tuple[Any, ...]]:
        """The active subscriptions the limit counts: the guild's channels, or the user's DMs
        (``is_``: the dialect's null-safe equality)."""
        if self.kind is SubscriptionKind.CHANNEL:
            return f"kind = 'channel' AND guild_id {is_} ? AND status = 'active'", (self.guild_id,)
        return "kind = 'dm' AND user_id = ? AND status = 'active'", (self.user_id,)


class Subscriptions:
    """The ``subscriptions`` table."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def subscribe(
        self,
        *,
        kind: SubscriptionKind,
        guild_id: int | None,
        channel_id: int | None,
        user_id: int,
        training_id: str,
        key_ref: str,
        limit: int,
        now: float,
        following: Following | None = None,
    ) -> tuple[Subscription, bool]:
        """Create or re-activate a subscription; returns it and whether it was already active
        (with the same key, style and mention: nothing changed).

        Its baseline is what the database already knows of the training, so old steps are not
        sent again; a live or thread subscription gets its opening delivery (the message it
        keeps up to date is posted first). Raises LimitReached past ``limit`` active
        subscriptions of the guild (channel) or the user (DM).
        """
        following = following or Following()
        target = _Target(kind, guild_id, channel_id, user_id, training_id)
        async with self._db.transaction() as tx:
            where, args = target.match()
            found = await tx.fetch(
                "SELECT id, status, key_ref, style, mention_kind, mention_id, mention_on, "
                f"origin_channel_id, origin_message_id FROM subscriptions WHERE {where}",
                args,
            )
            sub_id = int(found[0][0]) if found else None
            active = bool(found) and found[0][1] == SubscriptionStatus.ACTIVE.value
            same = bool(found) and tuple(found[0][3:]) == following.columns()
            already = active and found[0][2] == key_ref and same
            if not already:
                await _check_limit(tx, target, self._db.sql.is_, active_already=active, limit=limit)
                sub_id = await _activate(tx, target, sub_id, key_ref, following, now)
        sub = None if sub_id is None else await self.get(sub_id)
        if sub is None:  # pragma: no cover - found, or written just above
            raise LookupError(target)
        return sub, already

    async def _select(self, where: str, args: Sequence[Any]) -> list[Subscription]:
        """Subscriptions matching ``where`` with their training's state, newest first."""
        rows = await self._db.fetch(
            f"SELECT {_COLUMNS} FROM subscriptions s LEFT JOIN trainings t "
            f"ON t.training_id = s.training_id AND t.key_ref = s.key_ref WHERE {where} "
            "ORDER BY s.created_at DESC, s.id DESC",
            args,
        )
        return [_subscription(r) for r in rows]

    async def get(self, sub_id: int) -> Subscription | None:
        """One subscription with its training's state."""
        return next(iter(await self._select("s.id = ?", (sub_id,))), None)

    async def find(
        self, kind: SubscriptionKind, training_id: str, *, channel_id: int | None, user_id: int
    ) -> Subscription | None:
        """The subscription of a channel (or a user's DM alert) to a training."""
        where, args = _Target(kind, None, channel_id, user_id, training_id).match("s")
        return next(iter(await self._select(where, args)), None)

    async def of_guild(
        self, guild_id: int, *, finished_since: float | None = None
    ) -> list[Subscription]:
        """A guild's channel subscriptions, newest first; with ``finished_since``, those done
        before then are left out."""
        where, args = _finished(
            "s.kind = 'channel' AND s.guild_id = ?", (guild_id,), finished_since
        )
        return await self._select(where, args)

    async def alerts_of(
        self, user_id: int, *, finished_since: float | None = None
    ) -> list[Subscription]:
        """A user's DM alerts, newest first; ``finished_since`` as for ``of_guild``."""
        where, args = _finished("s.kind = 'dm' AND s.user_id = ?", (user_id,), finished_since)
        return await self._select(where, args)

    async def count_finished_before(
        self, *, guild_id: int | None, user_id: int, before: float
    ) -> int:
        """How many of a guild's channel subscriptions and a user's DM alerts were done before
        ``before`` (what a list leaves out)."""
        rows = await self._db.fetch(
            "SELECT COUNT(*) FROM subscriptions WHERE status = 'done' AND updated_at < ? AND "
            "((kind = 'channel' AND guild_id = ?) OR (kind = 'dm' AND user_id = ?))",
            (before, guild_id, user_id),
        )
        return int(rows[0][0])

    async def known_training_ids(
        self, *, guild_id: int | None, user_id: int, prefix: str, limit: int
    ) -> list[str]:
        """Training ids this guild's channels or this user follow(ed), newest first, starting
        with ``prefix`` (for autocomplete)."""
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        rows = await self._db.fetch(
            "SELECT training_id FROM subscriptions "
            f"WHERE ((kind = 'channel' AND guild_id {self._db.sql.is_} ?) OR user_id = ?) "
            "AND training_id LIKE ? ESCAPE '\\' "
            "GROUP BY training_id ORDER BY MAX(created_at) DESC LIMIT ?",
            (guild_id, user_id, f"{escaped}%", limit),
        )
        return [str(r[0]) for r in rows]

    async def set_live_message(self, sub_id: int, message_id: int) -> None:
        """Remember the message a live or thread subscription keeps up to date (written as
        soon as it is posted, before any edit of it)."""
        async with self._db.transaction() as tx:
            await tx.execute(
                "UPDATE subscriptions SET live_message_id = ? WHERE id = ?", (message_id, sub_id)
            )

    async def live_message_of(self, sub_id: int) -> int | None:
        """The message a live or thread subscription keeps up to date, as stored now."""
        rows = await self._db.fetch(
            "SELECT live_message_id FROM subscriptions WHERE id = ?", (sub_id,)
        )
        return int(rows[0][0]) if rows and rows[0][0] is not None else None

    async def remove(self, sub_id: int) -> None:
        """Delete a subscription and its undelivered messages."""
        async with self._db.transaction() as tx:
            await tx.execute("DELETE FROM subscriptions WHERE id = ?", (sub_id,))

    async def pause(self, sub_id: int, reason: str, now: float) -> None:
        """Pause one subscription with a reason its users can see; drop what it had pending."""
        async with self._db.transaction() as tx:
            await _pause(tx, "id = ?", (sub_id,), reason, now)

    async def pause_key_ref(self, key_ref: str, reason: str, now: float) -> int:
        """Pause every active subscription polled with this key; returns how many."""
        async with self._db.transaction() as tx:
            return await _pause(tx, "key_ref = ? AND status = 'active'", (key_ref,), reason, now)

    async def count_by_status(self) -> dict[tuple[str, str], int]:
        """Subscriptions by (kind, status), for metrics."""
        rows = await self._db.fetch(
            "SELECT kind, status, COUNT(*) FROM subscriptions GROUP BY kind, status"
        )
        return {(str(kind), str(status)): int(n) for kind, status, n in rows}


async def _check_limit(
    tx: Tx, target: _Target, is_: str, *, active_already: bool, limit: int
) -> None:
    where, args = target.neighbours(is_)
    rows = await tx.fetch(f"SELECT COUNT(*) FROM subscriptions WHERE {where}", args)
    if int(rows[0][0]) - int(active_already) >= limit:
        raise LimitReached(limit)


def _finished(
    where: str, args: tuple[Any, ...], since: float | None
) -> tuple[str, tuple[Any, ...]]:
    if since is None:
        return where, args
    return f"{where} AND (s.status != 'done' OR s.updated_at >= ?)", (*args, since)


async def _activate(
    tx: Tx,
    target: _Target,
    sub_id: int | None,
    key_ref: str,
    following: Following,
    now: float,
) -> int:
    """Insert the subscription, or make the existing one active again from what the database
    knows of the training now (a new live message too); returns its id."""
    rows = await tx.fetch(
        "SELECT last_seq FROM trainings WHERE training_id = ? AND key_ref = ?",
        (target.training_id, key_ref),
    )
    baseline = int(rows[0][0]) if rows else -1
    if sub_id is None:
        inserted = await tx.fetch(
            "INSERT INTO subscriptions (kind, guild_id, channel_id, user_id, training_id, "
            "key_ref, status, baseline_seq, created_at, updated_at, style, mention_kind, "
            "mention_id, mention_on, origin_channel_id, origin_message_id) "
            "VALUES (?, ?, ?, ?, ?, ?, 'active', ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (
                target.kind.value,
                target.guild_id,
                target.channel_id,
                target.user_id,
                target.training_id,
                key_ref,
                baseline,
                now,
                now,
                *following.columns(),
            ),
        )
        sub_id = int(inserted[0][0])
    else:
        await tx.execute(
            "UPDATE subscriptions SET status = 'active', reason = NULL, user_id = ?, "
            "guild_id = ?, key_ref = ?, baseline_seq = ?, updated_at = ?, style = ?, "
            "mention_kind = ?, mention_id = ?, mention_on = ?, origin_channel_id = ?, "
            "origin_message_id = ?, live_message_id = NULL WHERE id = ?",
            (
                target.user_id,
                target.guild_id,
                key_ref,
                baseline,
                now,
                *following.columns(),
                sub_id,
            ),
        )
        # What was not sent is dropped, and the old opening too: the subscription starts over.
        await tx.execute(
            "DELETE FROM deliveries WHERE subscription_id = ? AND (status != 'sent' OR seq = ?)",
            (sub_id, OPENING_SEQ),
        )
    if target.kind is SubscriptionKind.CHANNEL and following.style.keeps_a_message:
        await tx.execute(
            "INSERT INTO deliveries (subscription_id, training_id, key_ref, seq, status, "
            "next_attempt_at, created_at) VALUES (?, ?, ?, ?, 'pending', ?, ?)",
            (sub_id, target.training_id, key_ref, OPENING_SEQ, now, now),
        )
    return sub_id


async def _pause(tx: Tx, where: str, args: tuple[Any, ...], reason: str, now: float) -> int:
    # Drop pending messages first: the WHERE clause may match on status = 'active'.
    await tx.execute(
        "UPDATE deliveries SET status = 'dropped', last_error = ? WHERE status = 'pending' "
        f"AND subscription_id IN (SELECT id FROM subscriptions WHERE {where})",
        (reason, *args),
    )
    return await tx.execute(
        f"UPDATE subscriptions SET status = 'paused', reason = ?, updated_at = ? WHERE {where}",
        (reason, now, *args),
    )
