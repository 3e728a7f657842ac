"""A store for each test, on each backend: a real SQLite file, and a real PostgreSQL database
(a server started once per session, a new database per test)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.store import Store


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str | Path:
    """Where the test's database is: a SQLite file, or a PostgreSQL URL."""
    if request.param == "postgresql":
        url: str = request.getfixturevalue("pg_url")
        return url
    return tmp_path / "store.db"


@pytest.fixture
async def store(target: str | Path) -> AsyncIterator[Store]:
    opened = await Store.open(target)
    yield opened
    await opened.close()
