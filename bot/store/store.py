"""The only place with SQL: an aiosqlite connection, migrations, and the repositories."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import aiosqlite
import orjson

from bot.store.models import (
    TERMINAL_SEQ,
    Delivery,
    Event,
    EventKind,
    Subscription,
    SubscriptionKind,
    SubscriptionStatus,
    Training,
    TrainingUpdate,
)

log = logging.getLogger(__name__)

_TRAINING_COLUMNS = (
    "training_id, key_ref, state, last_seq, eta_minutes, total_steps, terminal, failure_reason, "
    "next_poll_at, consecutive_errors, last_error, not_found_count, first_not_found_at, last_ok_at"
)
_SUBSCRIPTION_COLUMNS = (
    "s.id, s.kind, s.guild_id, s.channel_id, s.user_id, s.training_id, s.key_ref, s.status, "
    "s.reason, s.baseline_seq, s.created_at, t.state, t.terminal, t.last_error"
)
# A training is polled while it is not finished and some active subscription needs it.
_NEEDS_POLL = (
    "t.terminal IS NULL AND EXISTS (SELECT 1 FROM subscriptions s WHERE s.training_id = "
    "t.training_id AND s.key_ref = t.key_ref AND s.status = 'active')"
)


# UPDATE ... FROM (3.33) and the JSON functions the batched statements use.
MIN_SQLITE = (3, 35, 0)


def _json_col(i: int) -> str:
    """Column ``i`` of one row of a JSON parameter read through ``json_each(?) AS j``."""
    return f"json_extract(j.value, '$[{i}]')"


def _row_columns(n: int) -> str:
    """The first ``n`` columns of one row of a JSON parameter (see ``_json_col``)."""
    return ", ".join(_json_col(i) for i in range(n))


def _update_trainings(assignments: Sequence[str], extra: str = "") -> str:
    """UPDATE of many trainings from one JSON parameter of rows ``[training_id, key_ref, *values]``.

    Each assignment is a column name (set to its value) or a template with ``{}`` where the
    value goes; ``extra`` holds assignments that are the same for every row.
    """
    sets = []
    for i, assignment in enumerate(assignments, start=2):
        value = _json_col(i)
        sets.append(assignment.format(value) if "{}" in assignment else f"{assignment} = {value}")
    if extra:
        sets.append(extra)
    return (
        f"UPDATE trainings SET {', '.join(sets)} FROM json_each(?) AS j "
        f"WHERE trainings.training_id = {_json_col(0)} AND trainings.key_ref = {_json_col(1)}"
    )


# A successful poll: the row's new state; the error and "not found" counts start over.
# Parameters: last_ok_at, then the rows.
_UPDATE_OK = _update_trainings(
    [
        "state",
        "last_seq",
        "eta_minutes",
        "total_steps = COALESCE({}, trainings.total_steps)",
        "terminal",
        "failure_reason",
        "next_poll_at",
        "finished_at",
    ],
    "consecutive_errors = 0, last_error = NULL, not_found_count = 0, "
    "first_not_found_at = NULL, last_ok_at = ?",
)
# The schedule the tracker kept in memory. Parameters: the rows.
_UPDATE_NEXT_POLL = _update_trainings(["next_poll_at"])
# A failed poll: when to try again and why; the last good state stays.
_UPDATE_FAILED = _update_trainings(
    [
        "next_poll_at",
        "consecutive_errors",
        "last_error",
        "not_found_count",
        "first_not_found_at",
        "terminal",
        "failure_reason",
        "finished_at",
    ]
)


def _rows_param(rows: Sequence[Sequence[Any]]) -> str:
    """Rows as ONE bound parameter (a JSON array of arrays) for a set-wise statement.

    The hot paths pass their rows this way instead of ``executemany``, and read many rows back
    as one ``json_group_array`` value: Python's sqlite3 releases and takes back the GIL around
    every row it steps, and while the event loop holds it, the database thread waits for each
    row. One statement is one step, whatever the number of rows. (orjson: the standard
    library's encoder and decoder cost more than the statements at thousands of rows.)
    """
    return orjson.dumps(rows).decode()


async def _select_rows(
    db: aiosqlite.Connection, columns: str, query: str, params: Sequence[Any]
) -> list[list[Any]]:
    """The rows of ``query`` (which selects ``columns``), fetched as one JSON value.

    REAL columns come back with 15 significant digits (about 10 microseconds for a Unix
    time), which is all a schedule needs.
    """
    rows = await db.execute_fetchall(
        f"SELECT json_group_array(json_array({columns})) FROM ({query})", params
    )
    result: list[list[Any]] = orjson.loads(next(iter(rows))[0])
    return result


class SchemaTooNew(Exception):
    """The database was migrated by a newer tunewatch than this one."""

    def __init__(self, found: int, known: int) -> None:
        super().__init__(f"database schema version {found} is newer than this code's {known}")
        self.found = found
        self.known = known


class LimitReached(Exception):
    """A per-guild or per-user subscription limit would be exceeded."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"limit of {limit} reached")
        self.limit = limit


def _training(row: Sequence[Any]) -> Training:
    """A Training from the columns of ``_TRAINING_COLUMNS``, in that order."""
    if row[6] is None:
        return Training._make(row)
    return Training._make((*row[:6], EventKind(row[6]), *row[7:]))


def _event(row: Sequence[Any]) -> Event:
    """An Event from columns seq, kind, number, label, steps_to_go, eta_minutes, raw, detail,
    late, in that order."""
    return Event(
        seq=row[0],
        kind=EventKind(row[1]),
        number=row[2],
        label=row[3],
        steps_to_go=row[4],
        eta_minutes=row[5],
        raw=row[6],
        detail=row[7],
        late=bool(row[8]),
    )


def _subscription(row: aiosqlite.Row) -> Subscription:
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
    )


class Store:
    """Repositories over one SQLite file. Writes are serialised in explicit transactions."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db
        self._write_lock = asyncio.Lock()
        # Counts the writes that may change which trainings are polled, or when: the tracker,
        # which keeps its schedule in memory, reads the followed trainings again when it moves.
        self.follow_changes = 0

    def _followers_changed(self) -> None:
        self.follow_changes += 1

    @classmethod
    async def open(cls, path: str | Path) -> Store:
        """Open (creating if needed) the database and apply pending migrations."""
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            raise RuntimeError(
                f"tunewatch needs SQLite {'.'.join(map(str, MIN_SQLITE))} or newer (UPDATE ... "
                f"FROM, JSON functions); this Python has SQLite {sqlite3.sqlite_version}."
            )
        db = await aiosqlite.connect(str(path), isolation_level=None)
        try:
            await db.execute("PRAGMA journal_mode = WAL")
            await db.execute("PRAGMA synchronous = NORMAL")
            await db.execute("PRAGMA foreign_keys = ON")
            await db.execute("PRAGMA busy_timeout = 5000")
            # Up to 64 MiB of pages cached (SQLite's default is 2 MiB): a poll cycle updates
            # rows all over the trainings table, and pages evicted between two batches cost a
            # read each time. The cache only grows as pages are used.
            await db.execute("PRAGMA cache_size = -65536")
            store = cls(db)
            await store._migrate()
        except BaseException:
            await db.close()
            raise
        return store

    async def close(self) -> None:
        """Close the connection."""
        await self._db.close()

    @property
    def db(self) -> aiosqlite.Connection:
        """The connection, for reads by repositories in this package."""
        return self._db

    def transaction(self) -> contextlib.AbstractAsyncContextManager[aiosqlite.Connection]:
        """A write transaction (BEGIN IMMEDIATE ... COMMIT), serialised with every other."""
        return self._transaction()

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._write_lock:
            try:
                await self._begin()
            except asyncio.CancelledError:
                # The database thread runs the BEGIN anyway (it was queued): end that
                # transaction before the lock goes, or the next one finds it open.
                with contextlib.suppress(sqlite3.OperationalError):
                    await self._db.execute("ROLLBACK")
                raise
            try:
                yield self._db
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise
            await self._db.execute("COMMIT")

    async def _begin(self) -> None:
        try:
            await self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            # A task cancelled while its BEGIN was on the way left a transaction open (the
            # database thread runs the statement anyway). We hold the write lock, so that
            # transaction has no owner any more: roll it back, then begin ours.
            if not self._db.in_transaction:
                raise
            log.warning("rolling back a transaction left open by a cancelled task")
            await self._db.execute("ROLLBACK")
            await self._db.execute("BEGIN IMMEDIATE")

    async def _migrate(self) -> None:
        async with self._db.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        current = int(row[0]) if row else 0
        files = sorted(
            (f for f in resources.files("bot.store").joinpath("migrations").iterdir()),
            key=lambda f: f.name,
        )
        known = max(int(f.name.split("_", 1)[0]) for f in files if f.name.endswith(".sql"))
        if current > known:
            # Its tables may mean something this code does not know: refuse rather than guess.
            raise SchemaTooNew(current, known)
        for file in files:
            if not file.name.endswith(".sql"):
                continue
            version = int(file.name.split("_", 1)[0])
            if version <= current:
                continue
            log.info("applying database migration %s", file.name)
            async with self._transaction() as db:
                # executescript would commit on its own; run statements inside our transaction.
                for statement in _split_sql(file.read_text(encoding="utf-8")):
                    await db.execute(statement)
                await db.execute(f"PRAGMA user_version = {version:d}")

    # -- meta -------------------------------------------------------------------------------

    async def get_meta(self, key: str) -> str | None:
        """A value of the meta table."""
        async with self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)) as cur:
            row = await cur.fetchone()
        return None if row is None else str(row[0])

    async def set_meta(self, key: str, value: str) -> None:
        """Set a value of the meta table."""
        async with self._transaction() as db:
            await db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    async def instance_id(self) -> str:
        """A random id of this database, so message nonces never collide across databases."""
        value = await self.get_meta("instance_id")
        if value is None:
            value = secrets.token_hex(4)
            async with self._transaction() as db:
                await db.execute(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES ('instance_id', ?)", (value,)
                )
            value = await self.get_meta("instance_id") or value
        return value

    async def ping(self) -> bool:
        """True when the database answers."""
        async with self._db.execute("SELECT 1") as cur:
            return (await cur.fetchone()) is not None

    # -- trainings ---------------------------------------------------------------------------

    async def get_training(self, training_id: str, key_ref: str) -> Training | None:
        """One training, or None."""
        async with self._db.execute(
            f"SELECT {_TRAINING_COLUMNS} FROM trainings WHERE training_id = ? AND key_ref = ?",
            (training_id, key_ref),
        ) as cur:
            row = await cur.fetchone()
        return None if row is None else _training(row)

    async def followed_trainings(self, soonest: int | None = None) -> list[Training]:
        """Every unfinished training someone follows (what the tracker polls), or only the
        ``soonest`` ones due first."""
        query = f"SELECT {_TRAINING_COLUMNS} FROM trainings t WHERE {_NEEDS_POLL}"
        params: tuple[int, ...] = ()
        if soonest is not None:
            query += " ORDER BY next_poll_at LIMIT ?"
            params = (soonest,)
        rows = await _select_rows(self._db, _TRAINING_COLUMNS, query, params)
        return [_training(r) for r in rows]

    async def trainings(self, keys: Sequence[tuple[str, str]]) -> list[Training]:
        """The rows of these (training_id, key_ref) pairs that exist."""
        if not keys:
            return []
        rows = await _select_rows(
            self._db,
            _TRAINING_COLUMNS,
            f"SELECT {_TRAINING_COLUMNS} FROM trainings WHERE (training_id, key_ref) IN "
            f"(SELECT {_row_columns(2)} FROM json_each(?) AS j)",
            (_rows_param(keys),),
        )
        return [_training(r) for r in rows]

    async def save_next_polls(self, rows: Sequence[tuple[str, str, float]]) -> None:
        """Record when each (training_id, key_ref) is next due (the tracker keeps its schedule
        in memory, and writes it here when it stops)."""
        if rows:
            async with self._transaction() as db:
                await db.execute(_UPDATE_NEXT_POLL, (_rows_param(rows),))

    async def poll_now(self, training_id: str, now: float) -> list[str]:
        """Make this training due now where someone follows it; returns the key_refs of the
        followed rows (one per key that polls it)."""
        async with self._transaction() as db:
            rows = await db.execute_fetchall(
                f"SELECT t.key_ref FROM trainings t WHERE t.training_id = ? AND {_NEEDS_POLL}",
                (training_id,),
            )
            key_refs = [r[0] for r in rows]
            await db.executemany(
                "UPDATE trainings SET next_poll_at = ? WHERE training_id = ? AND key_ref = ? "
                "AND next_poll_at > ?",
                [(now, training_id, key_ref, now) for key_ref in key_refs],
            )
        self._followers_changed()
        return key_refs

    async def count_active_trainings(self) -> int:
        """Trainings currently polled."""
        rows = await self._db.execute_fetchall(
            f"SELECT COUNT(*) FROM trainings t WHERE {_NEEDS_POLL}"
        )
        return int(next(iter(rows))[0])

    async def apply_updates(self, updates: Sequence[TrainingUpdate], now: float) -> int:
        """Record polls: training rows, new events and their deliveries in ONE transaction.

        The batch costs a handful of statements whatever its size (one lookup, one insert of
        events, one update of trainings, one insert of deliveries, each over every update):
        at thousands of polls a second, a round trip to the database thread per poll and per
        statement was most of the engine's cost. Returns the number of deliveries created.
        """
        created = 0
        async with self._transaction() as db:
            for chunk in _unique_chunks(updates):
                created += await self._apply_chunk(db, chunk, now)
        return created

    async def _apply_chunk(
        self, db: aiosqlite.Connection, updates: Sequence[TrainingUpdate], now: float
    ) -> int:
        """Apply updates of distinct trainings (their statements do not interact).

        Each statement takes all its rows as one JSON parameter (see ``_rows_param``).
        """
        known: dict[tuple[str, str], tuple[int, str | None]] = {
            (r[0], r[1]): (int(r[2]), r[3])
            for r in await _select_rows(
                db,
                "training_id, key_ref, last_seq, terminal",
                "SELECT training_id, key_ref, last_seq, terminal FROM trainings "
                "WHERE training_id IN (SELECT value FROM json_each(?))",
                (_rows_param(sorted({u.training_id for u in updates})),),
            )
        }
        missing = [u for u in updates if (u.training_id, u.key_ref) not in known]
        if missing:
            await db.execute(
                "INSERT INTO trainings (training_id, key_ref, next_poll_at, created_at) "
                f"SELECT {_row_columns(3)}, ? FROM json_each(?) AS j",
                (now, _rows_param([(u.training_id, u.key_ref, u.next_poll_at) for u in missing])),
            )
        event_rows: list[tuple[Any, ...]] = []
        ok_rows: list[tuple[Any, ...]] = []
        failed_rows: list[tuple[Any, ...]] = []
        delivery_rows: list[tuple[Any, ...]] = []
        revived: list[tuple[str, str]] = []
        for update in updates:
            key = (update.training_id, update.key_ref)
            last_seq, terminal = known.get(key, (-1, None))
            if terminal == EventKind.UNKNOWN.value and update.ok:
                # Declared unknown after repeated "not found", yet the API answers for it
                # again (created late, or an API hiccup): follow it anew.
                revived.append(key)
            elif terminal is not None:
                # Nothing is recorded after the terminal event.
                continue
            events = [e for e in update.events if e.seq > last_seq]
            new_terminal = next((e for e in events if e.kind.terminal), None)
            if events:
                event_rows.extend(
                    (
                        *key,
                        e.seq,
                        e.kind.value,
                        e.number,
                        e.label,
                        e.steps_to_go,
                        e.eta_minutes,
                        e.raw,
                        e.detail,
                        int(e.late),
                    )
                    for e in events
                )
                step_seqs = [e.seq for e in events if not e.kind.terminal]
                if step_seqs:
                    last_seq = max(last_seq, *step_seqs)
                delivery_rows.append((*key, min(e.seq for e in events)))
            terminal_kind = new_terminal.kind.value if new_terminal else None
            terminal_detail = new_terminal.detail if new_terminal else None
            finished_at = now if new_terminal else None
            if update.ok:
                ok_rows.append(
                    (
                        *key,
                        update.state,
                        last_seq,
                        update.eta_minutes,
                        update.total_steps,
                        terminal_kind,
                        terminal_detail,
                        update.next_poll_at,
                        finished_at,
                    )
                )
            else:
                failed_rows.append(
                    (
                        *key,
                        update.next_poll_at,
                        update.consecutive_errors,
                        update.last_error,
                        update.not_found_count,
                        update.first_not_found_at,
                        terminal_kind,
                        terminal_detail,
                        finished_at,
                    )
                )
        if revived:
            self._followers_changed()  # polled again
            # The terminal slot must be free for the real outcome (and its deliveries).
            for table in ("deliveries", "events"):
                await db.execute(
                    f"DELETE FROM {table} WHERE seq = ? AND (training_id, key_ref) IN "
                    f"(SELECT {_row_columns(2)} FROM json_each(?) AS j)",
                    (TERMINAL_SEQ, _rows_param(revived)),
                )
        if event_rows:
            await db.execute(
                "INSERT OR IGNORE INTO events (training_id, key_ref, seq, kind, number, label, "
                "steps_to_go, eta_minutes, raw, detail, late, observed_at) "
                f"SELECT {_row_columns(11)}, ? FROM json_each(?) AS j",
                (now, _rows_param(event_rows)),
            )
        if ok_rows:
            await db.execute(_UPDATE_OK, (now, _rows_param(ok_rows)))
        if failed_rows:
            await db.execute(_UPDATE_FAILED, (_rows_param(failed_rows),))
        if not delivery_rows:
            return 0
        cur = await db.execute(
            "INSERT OR IGNORE INTO deliveries (subscription_id, training_id, key_ref, seq, status, "
            "next_attempt_at, created_at) "
            "SELECT s.id, e.training_id, e.key_ref, e.seq, 'pending', ?, ? "
            "FROM json_each(?) AS j "
            f"JOIN subscriptions s ON s.training_id = {_json_col(0)} "
            f"AND s.key_ref = {_json_col(1)} "
            "JOIN events e ON e.training_id = s.training_id AND e.key_ref = s.key_ref "
            f"AND e.seq >= {_json_col(2)} "
            "WHERE s.status = 'active' AND e.seq > s.baseline_seq "
            "AND (s.kind = 'channel' OR e.kind != 'step')",
            (now, now, _rows_param(delivery_rows)),
        )
        return max(cur.rowcount, 0)

    # -- subscriptions -----------------------------------------------------------------------

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
    ) -> tuple[Subscription, bool]:
        """Create or re-activate a subscription; returns it and whether it was already active.

        Its baseline is what the database already knows of the training, so old steps are not
        sent again. Raises LimitReached past ``limit`` active subscriptions of the guild (channel)
        or the user (DM).
        """
        if kind is SubscriptionKind.CHANNEL:
            match_sql = "kind = 'channel' AND training_id = ? AND channel_id = ?"
            match_args: tuple[Any, ...] = (training_id, channel_id)
            count_sql = "kind = 'channel' AND guild_id IS ? AND status = 'active'"
            count_args: tuple[Any, ...] = (guild_id,)
        else:
            match_sql = "kind = 'dm' AND training_id = ? AND user_id = ?"
            match_args = (training_id, user_id)
            count_sql = "kind = 'dm' AND user_id = ? AND status = 'active'"
            count_args = (user_id,)
        async with self._transaction() as db:
            async with db.execute(
                f"SELECT id, status, key_ref FROM subscriptions WHERE {match_sql}",
                match_args,
            ) as cur:
                existing = await cur.fetchone()
            if existing is not None and existing[1] == "active" and existing[2] == key_ref:
                sub_id, already = int(existing[0]), True
            else:
                async with db.execute(
                    f"SELECT COUNT(*) FROM subscriptions WHERE {count_sql}",
                    count_args,
                ) as cur:
                    row = await cur.fetchone()
                active = int(row[0]) if row else 0
                if existing is not None and existing[1] == "active":
                    active -= 1
                if active >= limit:
                    raise LimitReached(limit)
                async with db.execute(
                    "SELECT last_seq FROM trainings WHERE training_id = ? AND key_ref = ?",
                    (training_id, key_ref),
                ) as cur:
                    row = await cur.fetchone()
                baseline = int(row[0]) if row else -1
                if existing is None:
                    cur = await db.execute(
                        "INSERT INTO subscriptions (kind, guild_id, channel_id, user_id, "
                        "training_id, key_ref, status, baseline_seq, created_at, updated_at) "
                        "VALUES (?, ?, ?, ?, ?, ?, 'active', ?, ?, ?)",
                        (
                            kind.value,
                            guild_id,
                            channel_id,
                            user_id,
                            training_id,
                            key_ref,
                            baseline,
                            now,
                            now,
                        ),
                    )
                    sub_id = int(cur.lastrowid or 0)
                else:
                    sub_id = int(existing[0])
                    await db.execute(
                        "UPDATE subscriptions SET status = 'active', reason = NULL, user_id = ?, "
                        "guild_id = ?, key_ref = ?, baseline_seq = ?, updated_at = ? WHERE id = ?",
                        (user_id, guild_id, key_ref, baseline, now, sub_id),
                    )
                    await db.execute(
                        "DELETE FROM deliveries WHERE subscription_id = ? AND status != 'sent'",
                        (sub_id,),
                    )
                already = False
        self._followers_changed()
        sub = await self.get_subscription(sub_id)
        if sub is None:  # pragma: no cover - written just above
            raise LookupError(sub_id)
        return sub, already

    async def _subscriptions(self, where: str, args: tuple[Any, ...]) -> list[Subscription]:
        """Subscriptions matching ``where`` with their training's state, newest first."""
        rows = await self._db.execute_fetchall(
            f"SELECT {_SUBSCRIPTION_COLUMNS} FROM subscriptions s LEFT JOIN trainings t "
            f"ON t.training_id = s.training_id AND t.key_ref = s.key_ref WHERE {where} "
            "ORDER BY s.created_at DESC, s.id DESC",
            args,
        )
        return [_subscription(r) for r in rows]

    async def get_subscription(self, sub_id: int) -> Subscription | None:
        """One subscription with its training's state."""
        return next(iter(await self._subscriptions("s.id = ?", (sub_id,))), None)

    async def find_subscription(
        self, kind: SubscriptionKind, training_id: str, *, channel_id: int | None, user_id: int
    ) -> Subscription | None:
        """The subscription of a channel (or user's DM alert) to a training."""
        if kind is SubscriptionKind.CHANNEL:
            where, target = (
                "s.kind = 'channel' AND s.training_id = ? AND s.channel_id = ?",
                channel_id,
            )
        else:
            where, target = "s.kind = 'dm' AND s.training_id = ? AND s.user_id = ?", user_id
        return next(iter(await self._subscriptions(where, (training_id, target))), None)

    async def known_training_ids(
        self, *, guild_id: int | None, user_id: int, prefix: str, limit: int
    ) -> list[str]:
        """Training ids this guild's channels or this user follow(ed), newest first, starting
        with ``prefix`` (for autocomplete)."""
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        rows = await self._db.execute_fetchall(
            "SELECT training_id FROM subscriptions "
            "WHERE ((kind = 'channel' AND guild_id IS ?) OR user_id = ?) "
            "AND training_id LIKE ? ESCAPE '\\' "
            "GROUP BY training_id ORDER BY MAX(created_at) DESC LIMIT ?",
            (guild_id, user_id, f"{escaped}%", limit),
        )
        return [str(r[0]) for r in rows]

    async def remove_subscription(self, sub_id: int) -> None:
        """Delete a subscription and its undelivered messages."""
        async with self._transaction() as db:
            await db.execute("DELETE FROM subscriptions WHERE id = ?", (sub_id,))
        self._followers_changed()

    async def guild_subscriptions(self, guild_id: int) -> list[Subscription]:
        """A guild's channel subscriptions, newest first."""
        return await self._subscriptions("s.kind = 'channel' AND s.guild_id = ?", (guild_id,))

    async def user_alerts(self, user_id: int) -> list[Subscription]:
        """A user's DM alerts, newest first."""
        return await self._subscriptions("s.kind = 'dm' AND s.user_id = ?", (user_id,))

    async def pause_subscription(self, sub_id: int, reason: str, now: float) -> None:
        """Pause one subscription with a reason its users can see; drop what it had pending."""
        async with self._transaction() as db:
            await self._pause(db, "id = ?", (sub_id,), reason, now)
        self._followers_changed()

    async def pause_key_ref(self, key_ref: str, reason: str, now: float) -> int:
        """Pause every active subscription polled with this key; returns how many."""
        async with self._transaction() as db:
            paused = await self._pause(
                db, "key_ref = ? AND status = 'active'", (key_ref,), reason, now
            )
        self._followers_changed()
        return paused

    @staticmethod
    async def _pause(
        db: aiosqlite.Connection, where: str, args: tuple[Any, ...], reason: str, now: float
    ) -> int:
        # Drop pending messages first: the WHERE clause may match on status = 'active'.
        await db.execute(
            "UPDATE deliveries SET status = 'dropped', last_error = ? WHERE status = 'pending' "
            f"AND subscription_id IN (SELECT id FROM subscriptions WHERE {where})",
            (reason, *args),
        )
        cur = await db.execute(
            f"UPDATE subscriptions SET status = 'paused', reason = ?, updated_at = ? WHERE {where}",
            (reason, now, *args),
        )
        return cur.rowcount

    async def count_subscriptions(self) -> dict[str, int]:
        """Subscriptions by status (for metrics)."""
        rows = await self._db.execute_fetchall(
            "SELECT kind || ':' || status, COUNT(*) FROM subscriptions GROUP BY kind, status"
        )
        return {str(k): int(n) for k, n in rows}

    # -- deliveries --------------------------------------------------------------------------

    async def pending_deliveries(self, now: float, *, limit: int) -> list[list[Delivery]]:
        """Pending deliveries grouped by subscription in event order, for subscriptions whose
        first pending delivery is due. Later ones wait behind it so order is kept."""
        rows = await self._db.execute_fetchall(
            "SELECT d.id, d.subscription_id, s.kind, s.guild_id, s.channel_id, s.user_id, "
            "d.training_id, d.attempts, d.next_attempt_at, d.created_at, e.seq, e.kind, e.number, "
            "e.label, e.steps_to_go, e.eta_minutes, e.raw, e.detail, e.late "
            "FROM deliveries d JOIN subscriptions s ON s.id = d.subscription_id "
            "JOIN events e ON e.training_id = d.training_id AND e.key_ref = d.key_ref "
            "AND e.seq = d.seq "
            "WHERE d.status = 'pending' AND s.status = 'active' "
            # A subscription waiting out a backoff must not fill the batch and starve others.
            "AND NOT EXISTS (SELECT 1 FROM deliveries h WHERE h.subscription_id = "
            "d.subscription_id AND h.status = 'pending' AND h.next_attempt_at > ?) "
            "ORDER BY d.subscription_id, d.seq LIMIT ?",
            (now, limit),
        )
        groups: list[list[Delivery]] = []
        current: list[Delivery] = []
        for r in rows:
            delivery = Delivery(
                id=r[0],
                subscription_id=r[1],
                kind=SubscriptionKind(r[2]),
                guild_id=r[3],
                channel_id=r[4],
                user_id=r[5],
                training_id=r[6],
                attempts=r[7],
                next_attempt_at=r[8],
                created_at=r[9],
                event=_event(r[10:19]),
            )
            if current and current[0].subscription_id != delivery.subscription_id:
                groups.append(current)
                current = []
            current.append(delivery)
        if current:
            groups.append(current)
        return [g for g in groups if g[0].next_attempt_at <= now]

    async def next_delivery_at(self) -> float | None:
        """When the earliest pending delivery is due."""
        rows = await self._db.execute_fetchall(
            "SELECT MIN(d.next_attempt_at) FROM deliveries d JOIN subscriptions s "
            "ON s.id = d.subscription_id WHERE d.status = 'pending' AND s.status = 'active'"
        )
        value = next(iter(rows))[0]
        return None if value is None else float(value)

    async def mark_sent(self, sent: Sequence[tuple[Delivery, int | None]], now: float) -> None:
        """Mark deliveries sent (after the send); a terminal one completes its subscription."""
        if not sent:
            return
        async with self._transaction() as db:
            await db.executemany(
                "UPDATE deliveries SET status = 'sent', message_id = ?, sent_at = ?, "
                "attempts = attempts + 1, last_error = NULL WHERE id = ?",
                [(message_id, now, d.id) for d, message_id in sent],
            )
            done = [(now, d.subscription_id) for d, _ in sent if d.event.kind.terminal]
            if done:
                await db.executemany(
                    "UPDATE subscriptions SET status = 'done', updated_at = ? "
                    "WHERE id = ? AND status = 'active'",
                    done,
                )

    async def mark_retry(self, delivery: Delivery, error: str, next_attempt_at: float) -> None:
        """Record a failed attempt; the delivery stays pending until ``next_attempt_at``."""
        async with self._transaction() as db:
            await db.execute(
                "UPDATE deliveries SET attempts = attempts + 1, last_error = ?, "
                "next_attempt_at = ? WHERE id = ?",
                (error, next_attempt_at, delivery.id),
            )

    async def mark_failed(self, delivery: Delivery, error: str) -> None:
        """Give up on one delivery; later ones of its subscription go on."""
        async with self._transaction() as db:
            await db.execute(
                "UPDATE deliveries SET status = 'failed', attempts = attempts + 1, last_error = ? "
                "WHERE id = ?",
                (error, delivery.id),
            )

    async def delivery_counts(self) -> dict[str, int]:
        """Deliveries by status."""
        rows = await self._db.execute_fetchall(
            "SELECT status, COUNT(*) FROM deliveries GROUP BY status"
        )
        return {str(k): int(n) for k, n in rows}


def _unique_chunks(updates: Sequence[TrainingUpdate]) -> list[list[TrainingUpdate]]:
    """Consecutive runs of updates with distinct trainings: a training polled twice in one
    batch (a forced poll while one was in flight) is applied in order, one chunk after another.
    """
    chunks: list[list[TrainingUpdate]] = []
    current: list[TrainingUpdate] = []
    seen: set[tuple[str, str]] = set()
    for update in updates:
        key = (update.training_id, update.key_ref)
        if key in seen:
            chunks.append(current)
            current, seen = [], set()
        seen.add(key)
        current.append(update)
    if current:
        chunks.append(current)
    return chunks


def _split_sql(script: str) -> list[str]:
    """Split a migration into statements (our migrations hold no ';' inside literals)."""
    lines = [line for line in script.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


__all__ = ["TERMINAL_SEQ", "LimitReached", "Store"]
