"""The store on a real SQLite file: migrations, transactions that survive cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import pytest

from bot.store import Store


async def test_migrations_are_applied_once(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    store = await Store.open(path)
    await store.set_meta("k", "v")
    await store.close()
    again = await Store.open(path)  # re-opening applies nothing twice
    assert await again.get_meta("k") == "v"
    await again.close()
    with sqlite3.connect(path) as db:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert version >= 3
    assert {"trainings", "events", "subscriptions", "deliveries", "meta"} <= tables


async def test_a_write_cancelled_mid_transaction_leaves_none_open(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = await Store.open(tmp_path / "c.db")
    try:
        for _ in range(3):
            task = asyncio.create_task(store.set_meta("lost", "1"))
            await asyncio.sleep(0)  # it takes the lock and sends BEGIN to the database thread
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await store.set_meta("kept", "2")  # must not find a transaction left open
        assert await store.get_meta("kept") == "2"
        # Closed by the cancelled write itself, not found open by the next one (which warns).
        assert not [r for r in caplog.records if "left open" in r.getMessage()]
    finally:
        await store.close()


async def test_instance_id_is_stable(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "i.db")
    first = await store.instance_id()
    assert first == await store.instance_id()
    assert len(first) == 8
    await store.close()
