"""Whole tables in and out: moving a database to another (``tunewatch migrate-db``) and loading
prepared rows in bulk (the benchmarks' seeds).

Rows are plain tuples in the column order of ``TABLES``; tables are loaded parents first, so
foreign keys hold at every step.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from bot.store.db import Database, json_rows, rows_param

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
_CHUNK = 5000


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
    columns = TABLES[table]
    # Binary values (the encrypted keys) do not travel through JSON: one statement per row.
    if any(isinstance(v, bytes) for row in rows for v in row):
        async with db.transaction() as tx:
            marks = ", ".join("?" * len(columns))
            await tx.executemany(
                f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows
            )
        return
    async with db.transaction() as tx:
        for start in range(0, len(rows), _CHUNK):
            await tx.execute(
                f"INSERT INTO {table} ({', '.join(columns)}) "
                f"SELECT * FROM ({json_rows(len(columns))})",
                (rows_param(rows[start : start + _CHUNK]),),
            )


async def is_empty(db: Database) -> bool:
    """True when no table holds a row (meta aside: a new database writes its own there)."""
    for table in TABLES:
        if table != "meta" and await db.fetch(f"SELECT 1 FROM {table} LIMIT 1"):
            return False
    return True
