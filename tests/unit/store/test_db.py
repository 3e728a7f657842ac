"""The database on a real SQLite file: migrations, transactions that survive cancellation,
meta values, and files that cannot be used."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import pytest

from bot.store import Database, DatabaseError, SchemaTooNew


async def test_migrations_are_applied_once(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    db = await Database.open(path)
    await db.set_meta("k", "v")
    await db.close()
    again = await Database.open(path)  # re-opening applies nothing twice
    assert await again.get_meta("k") == "v"
    await again.close()
    with sqlite3.connect(path) as conn:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert version >= 4
    assert {"trainings", "events", "subscriptions", "deliveries", "meta", "user_keys"} <= tables


async def test_a_write_cancelled_mid_transaction_leaves_none_open(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = await Database.open(tmp_path / "c.db")
    try:
        for _ in range(3):
            task = asyncio.create_task(db.set_meta("lost", "1"))
            await asyncio.sleep(0)  # it takes the lock and sends BEGIN to the database thread
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await db.set_meta("kept", "2")  # must not find a transaction left open
        assert await db.get_meta("kept") == "2"
        # Closed by the cancelled write itself, not found open by the next one (which warns).
        assert not [r for r in caplog.records if "left open" in r.getMessage()]
    finally:
        await db.close()


async def test_a_failed_transaction_changes_nothing(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "r.db")

    async def half_a_write() -> None:
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO meta (key, value) VALUES ('half', 'done')")
            raise RuntimeError("crash in the middle")

    try:
        with pytest.raises(RuntimeError):
            await half_a_write()
        assert await db.get_meta("half") is None
    finally:
        await db.close()


async def test_instance_id_is_stable(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "i.db")
    first = await db.instance_id()
    assert first == await db.instance_id()
    assert len(first) == 8
    await db.close()


async def test_a_file_that_is_not_a_database_is_refused_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not SQLite" * 100)
    with pytest.raises(DatabaseError) as caught:
        await Database.open(path)
    assert caught.value.path == path
    assert caught.value.not_a_database


async def test_a_directory_that_does_not_exist_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DatabaseError) as caught:
        await Database.open(tmp_path / "missing" / "t.db")
    assert "directory" in caught.value.reason


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    await (await Database.open(path)).close()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 999")
    with pytest.raises(SchemaTooNew) as caught:
        await Database.open(path)
    assert caught.value.found == 999
    assert caught.value.known < 999
