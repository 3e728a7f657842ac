"""Shared fixtures: the API simulator, the fake Discord, and a check that nothing logged ERROR."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bot.config import Settings
from bot.sdapi.simulator import Simulator
from bot.store import Store
from tests.support.disk import tiny_disk  # noqa: F401 - a fixture for every test
from tests.support.fakediscord import FakeDiscord
from tests.support.harness import CHANNEL, GUILD


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "allow_errors: the test expects ERROR log records")


@pytest.fixture(autouse=True)
def _no_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's exported DISCORD_TOKEN or LOG_LEVEL must not change what a test sees."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator() as simulator:
        yield simulator


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    discord_fake = FakeDiscord()
    discord_fake.add_guild(GUILD, "Trainers")
    discord_fake.add_channel(GUILD, CHANNEL, "training-log")
    await discord_fake.start()
    try:
        yield discord_fake
    finally:
        await discord_fake.stop()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "tunewatch.db"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    """A store on a real SQLite file of the test's own."""
    opened = await Store.open(tmp_path / "store.db")
    yield opened
    await opened.close()


@pytest.fixture(autouse=True)
def _no_error_logs(
    request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> Iterator[None]:
    """Command callbacks and background loops log their exceptions instead of raising: fail the
    test when anything logged ERROR, unless the test expects it."""
    caplog.set_level(logging.INFO)
    yield
    if request.node.get_closest_marker("allow_errors"):
        return
    errors = [r for r in caplog.get_records("call") if r.levelno >= logging.ERROR]
    assert not errors, "ERROR logged: " + "; ".join(f"{r.name}: {r.getMessage()}" for r in errors)
