"""PostgreSQL as an operator meets it: DATABASE_URL at start (malformed, unreachable, a refused
password: one line each, never a traceback), `tunewatch migrate-db`, and a database that goes
away while the bot runs and comes back."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import aiohttp
import pytest

from bot.sdapi.simulator import Simulator
from bot.store import Store
from tests.e2e.test_config_cli import run_cli
from tests.e2e.test_service import LOG_RECORD, assert_one_line, start_failure
from tests.support.fakediscord import FakeDiscord
from tests.support.harness import (
    CHANNEL,
    USER,
    running_bot,
    settings_for,
    step_messages,
    subscribe,
    wait_until,
)
from tests.support.pg import PgServer, PgUnavailable, free_port, start_server
from tests.unit.store.helpers import NOW, READY, answer, step
from tests.unit.store.helpers import subscribe as store_subscribe

pytestmark = pytest.mark.timeout(120)


async def test_a_malformed_database_url_stops_the_start(
    fake: FakeDiscord, sim: Simulator, db_path: Path
) -> None:
    env = settings_for(fake, sim, db_path, DATABASE_URL="postgresql://bot:s3cret@db:port/tw")
    code, log, _ = await start_failure(env, db_path.parent)
    assert code == 2
    assert "DATABASE_URL" in log
    assert "malformed" in log
    assert "s3cret" not in log
    assert "Traceback" not in log


async def test_no_postgres_server_there_is_one_line(
    fake: FakeDiscord, sim: Simulator, db_path: Path
) -> None:
    url = f"postgresql://bot:s3cret@127.0.0.1:{free_port()}/tw"
    env = settings_for(fake, sim, db_path, DATABASE_URL=url)
    code, log, told = await start_failure(env, db_path.parent)
    line = assert_one_line(code, log, told, 3, "DATABASE_URL", "no server answers", "***")
    assert "s3cret" not in log
    assert "Is PostgreSQL running there" in line


async def test_a_refused_password_is_one_line(
    fake: FakeDiscord, sim: Simulator, db_path: Path, pg_server: PgServer
) -> None:
    url = pg_server.url(password="wrong-password")
    env = settings_for(fake, sim, db_path, DATABASE_URL=url)
    code, log, told = await start_failure(env, db_path.parent)
    assert_one_line(code, log, told, 2, "DATABASE_URL", "refused the login", "password")
    assert "wrong-password" not in log


async def busy_sqlite(path: Path) -> None:
    store = await Store.open(path)
    try:
        await store.trainings.record([answer("T1", step(0))], NOW)
        await store_subscribe(store, "T1", channel=1)
        await store_subscribe(store, "T1", channel=None, user=5)
        await store.trainings.record([answer("T1", step(0), step(1), READY)], NOW)
        await store.user_keys.put(5, b"ciphertext", now=NOW)
    finally:
        await store.close()


async def test_migrate_db_copies_once_and_refuses_to_overwrite(tmp_path: Path, pg_url: str) -> None:
    db = tmp_path / "tunewatch.db"
    await busy_sqlite(db)
    done = await asyncio.to_thread(run_cli, "migrate-db", "--to", pg_url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "2 subscriptions" in done.stdout
    assert "1 user_keys" in done.stdout
    assert "tunewatch-test-password" not in done.stdout + done.stderr
    copied = await Store.open(pg_url)
    try:
        assert len(await copied.subscriptions.of_guild(1)) == 1
        key = await copied.user_keys.get(5)
        assert key is not None
        assert key.ciphertext == b"ciphertext"
    finally:
        await copied.close()

    again = await asyncio.to_thread(run_cli, "migrate-db", "--to", pg_url, cwd=tmp_path)
    assert again.returncode == 1
    told = [line for line in again.stderr.splitlines() if line and not LOG_RECORD.match(line)]
    assert len(told) == 1, again.stderr
    assert "already holds tunewatch data" in told[0]
    assert "Nothing was changed" in told[0]


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (("--to", "mysql://x"), 2, "must be a PostgreSQL URL"),
        (("--to", "postgresql://u:p@127.0.0.1:1/x", "--from", "missing.db"), 2, "no SQLite"),
        (("--to", "postgresql://u:p@127.0.0.1:1/x"), 3, "no server answers"),
    ],
)
def test_migrate_db_failures_are_one_line(
    tmp_path: Path, args: tuple[str, ...], code: int, words: str
) -> None:
    sqlite3.connect(tmp_path / "tunewatch.db").close()
    result = run_cli("migrate-db", *args, cwd=tmp_path)
    assert result.returncode == code, result.stderr
    told = [line for line in result.stderr.splitlines() if line and not LOG_RECORD.match(line)]
    assert len(told) == 1, result.stderr
    assert words in told[0]
    assert "Traceback" not in result.stderr


@pytest.fixture
def own_server() -> PgServer:
    """A server of this test's own, which it stops and starts again."""
    try:
        # Durable (the session's server is not): a crash must keep what was committed.
        server = start_server(durable=True)
    except PgUnavailable as exc:
        pytest.skip(f"no PostgreSQL server for the tests: {exc}")
    yield server  # type: ignore[misc]
    server.remove()


async def healthz(port: int) -> tuple[int, dict[str, object]]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/healthz") as response,
    ):
        return response.status, await response.json()


@pytest.mark.allow_errors  # the loops log the failures while the database is away
async def test_a_database_that_goes_away_is_reported_and_the_bot_resumes(
    fake: FakeDiscord, sim: Simulator, db_path: Path, own_server: PgServer
) -> None:
    url = own_server.new_database()
    env = settings_for(fake, sim, db_path, DATABASE_URL=url, HTTP_PORT="0")
    training = sim.add_training("Away000001", stage=1)
    async with running_bot(env) as bot:
        assert bot.ops_server is not None
        port = bot.ops_server.port
        assert port is not None
        assert "Subscribed" in (await subscribe(fake, "Away000001"))["content"]
        await wait_until(lambda: healthz_ok(port), 15, "healthy")

        await asyncio.to_thread(own_server.stop, "immediate")
        status, body = await healthz(port)
        assert status == 503
        assert any("database" in str(p) for p in body["problems"]), body  # type: ignore[union-attr]
        # A step completes while the database is away (the schedule is in the database: no
        # poll until it is back).
        training.advance()
        await wait_until(lambda: bot.tracker.last_tick is not None, what="a tick")

        await asyncio.to_thread(own_server.start)
        await wait_until(lambda: healthz_ok(port), 30, "healthy again")
        await fake.wait_for(lambda f: len(step_messages(f, CHANNEL)) == 1, timeout=30)
        training.advance(5)
        await fake.wait_for(lambda f: len(step_messages(f, CHANNEL)) == 4, timeout=30)
    titles = [m.embeds[0]["title"] for m in step_messages(fake, CHANNEL)]
    assert titles[0] == "Away000001 · Step 2: Training Done"
    assert titles[-1] == "Away000001 · Model ready"
    assert len(titles) == len(set(titles)) == 4
    assert not fake.dms_to(USER)


async def healthz_ok(port: int) -> bool:
    status, _ = await healthz(port)
    return status == 200
