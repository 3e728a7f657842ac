"""Whole tables in and out: moving a database to another (``tunewatch migrate-db``) and loading
prepared rows in bulk (the benchmarks' seeds).

Rows are plain tuples in the column order of ``TABLES``; tables are loaded parents first, so
foreign keys hold at every step. ``copy`` moves a whole database in one transaction of the
target: all of it arrives, or nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from bot.store.db import Database, Dialect, Tx, rows_param

# Every table with its columns, in the order a copy must load them.
TABLES: dict[str, tuple[str, ...]] = {
    "meta": ("key", "value"),
    "trainings": (
        "training_id",
        "key_ref",
        "api",
        "state",
        "last_seq",
        "eta_minutes",
        "total_steps",
        "terminal",
        "failure_reason",
        "next_poll_at",
        "consecutive_errors",
        "last_error",
        "not_found_count",
        "first_not_found_at",
        "last_ok_at",
        "failing_since",
        "created_at",
        "finished_at",
        "observation",
        "last_polled_at",
        "poll_reason",
    ),
    "events": (
        "training_id",
        "key_ref",
        "seq",
        "kind",
        "number",
        "label",
        "steps_to_go",
        "eta_minutes",
        "raw",
        "detail",
        "late",
        "folded",
        "elapsed_seconds",
        "observed_at",
    ),
    "subscriptions": (
        "id",
        "kind",
        "guild_id",
        "channel_id",
        "user_id",
        "training_id",
        "key_ref",
        "status",
        "reason",
        "baseline_seq",
        "created_at",
        "updated_at",
        "style",
        "mention_kind",
        "mention_id",
        "mention_on",
        "live_message_id",
        "origin_channel_id",
        "origin_message_id",
    ),
    "deliveries": (
        "id",
        "subscription_id",
        "training_id",
        "key_ref",
        "seq",
        "status",
        "attempts",
        "next_attempt_at",
        "last_error",
        "message_id",
        "created_at",
        "sent_at",
        "attempted_at",
    ),
    "user_keys": ("user_id", "ciphertext", "created_at", "updated_at"),
}
# Each column's type for json_rows ("blob": bytes, loaded row by row), in TABLES' order.
TYPES: dict[str, tuple[str, ...]] = {
    "meta": ("text", "text"),
    "trainings": (
        "text", "text", "text", "text", "int", "int", "int", "text", "text", "real", "int",
        "text", "int", "real", "real", "real", "real", "real", "text", "real", "text",
    ),
    "events": (
        "text", "text", "int", "text", "int", "text", "int", "int", "text", "text", "int",
        "int", "real", "real",
    ),
    "subscriptions": (
        "int", "text", "int", "int", "int", "text", "text", "text", "text", "int", "real",
        "real", "text", "text", "int", "text", "int", "int", "int",
    ),
    "deliveries": (
        "int", "int", "text", "text", "int", "text", "int", "real", "text", "int", "real",
        "real", "real",
    ),
    "user_keys": ("int", "blob", "real", "real"),
}  # fmt: skip
# Tables whose id a new row takes from a counter: after rows arrive with their ids, the counter
# must go on from the largest.
_IDENTITIES = {"subscriptions": "id", "deliveries": "id"}
_CHUNK = 5000


class TargetNotEmpty(Exception):
    """The target database already holds tunewatch data; ``copy`` never overwrites it."""

    def __init__(self, table: str) -> None:
        super().__init__(f"the target already has rows in {table}")
        self.table = table


async def dump(db: Database, table: str) -> AsyncIterator[list[tuple[Any, ...]]]:
    """The rows of one table, a chunk at a time, in primary-key order."""
    columns = TABLES[table]
    offset = 0
    while True:
        rows = await db.fetch(
            f"SELECT {', '.join(columns)} FROM {table} ORDER BY {columns[0]}, {columns[1]} "
            "LIMIT ? OFFSET ?",
            (_CHUNK, offset),
        )
        if not rows:
            return
        offset += len(rows)
        yield rows


async def load(db: Database, table: str, rows: Sequence[Sequence[Any]]) -> None:
    """Insert rows (in ``TABLES`` column order) into one table, in one transaction."""
    if not rows:
        return
    async with db.transaction() as tx:
        await _load(tx, db.sql, table, rows)
        await _follow_identity(tx, db.sql, table)


async def _load(tx: Tx, sql: Dialect, table: str, rows: Sequence[Sequence[Any]]) -> None:
    columns = ", ".join(TABLES[table])
    types = TYPES[table]
    conflict = " ON CONFLICT (key) DO UPDATE SET value = excluded.value" if table == "meta" else ""
    # Binary values (the encrypted keys) do not travel through JSON: one statement per row.
    if "blob" in types:
        marks = ", ".join("?" * len(types))
        await tx.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks}){conflict}", rows)
        return
    for start in range(0, len(rows), _CHUNK):
        await tx.execute(
            f"INSERT INTO {table} ({columns}) SELECT * FROM ({sql.json_rows(*types)}) AS j "
            f"WHERE true{conflict}",
            (rows_param(rows[start : start + _CHUNK]),),
        )


async def _follow_identity(tx: Tx, sql: Dialect, table: str) -> None:
    column = _IDENTITIES.get(table)
    statement = None if column is None else sql.identity_follows(table, column)
    if statement is not None:
        await tx.execute(statement)


async def is_empty(db: Database) -> bool:
    """True when no table holds a row (meta aside: a new database writes its own there)."""
    return await _first_table_with_rows(db) is None


async def _first_table_with_rows(db: Database) -> str | None:
    for table in TABLES:
        if table != "meta" and await db.fetch(f"SELECT 1 FROM {table} LIMIT 1"):
            return table
    return None


async def copy(source: Database, target: Database) -> dict[str, int]:
    """Copy every table of ``source`` into ``target`` in ONE transaction of the target, and
    return the rows copied per table. Raises TargetNotEmpty when the target holds data (meta
    values aside: the source's replace the target's, so message nonces go on unchanged)."""
    table = await _first_table_with_rows(target)
    if table is not None:
        raise TargetNotEmpty(table)
    counts: dict[str, int] = {}
    async with target.transaction() as tx:
        for table in TABLES:
            counts[table] = 0
            async for rows in dump(source, table):
                await _load(tx, target.sql, table, rows)
                counts[table] += len(rows)
            await _follow_identity(tx, target.sql, table)
    return counts
