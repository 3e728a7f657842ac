"""What differs between the backends: PostgreSQL's migrations and the URLs it refuses, the
placeholders, and moving a SQLite database to PostgreSQL (tunewatch migrate-db)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bot.store import (
    Database,
    DatabaseRefused,
    DatabaseUnreachable,
    MalformedDatabaseUrl,
    SchemaTooNew,
    Store,
    SubscriptionKind,
    transfer,
)
from bot.store.db import masked_url, migrations_of
from bot.store.postgres import numbered
from tests.support.pg import PgServer, free_port
from tests.unit.store.helpers import NOW, READY, answer, step, subscribe


def test_both_backends_have_the_same_migrations() -> None:
    sqlite, postgresql = migrations_of("sqlite"), migrations_of("postgresql")
    assert sorted(sqlite) == sorted(postgresql) == list(range(1, len(sqlite) + 1))


def test_placeholders_are_numbered_outside_literals() -> None:
    sql = "SELECT '?', x FROM t WHERE a = ? AND b LIKE ? ESCAPE '\\' AND c = 'it''s?' AND d = ?"
    assert numbered(sql) == (
        "SELECT '?', x FROM t WHERE a = $1 AND b LIKE $2 ESCAPE '\\' AND c = 'it''s?' AND d = $3"
    )


def test_a_url_is_shown_without_its_password() -> None:
    assert masked_url("postgresql://bot:s3cret@db:5432/tw") == "postgresql://bot:***@db:5432/tw"
    assert masked_url("postgresql://db/tw") == "postgresql://db/tw"
    assert "s3cret" not in masked_url("postgresql://bot:s3cret@db:notaport/tw")


async def test_postgres_migrations_are_applied_once_even_by_two_instances_at_once(
    pg_url: str,
) -> None:
    first, second = await asyncio.gather(Database.open(pg_url), Database.open(pg_url))
    try:
        await first.set_meta("k", "v")
        assert await second.get_meta("k") == "v"
        assert await first.instance_id() == await second.instance_id()
        version = await first.fetch("SELECT version FROM tunewatch_schema")
        assert version == [(max(migrations_of("postgresql")),)]
    finally:
        await first.close()
        await second.close()


async def test_a_newer_postgres_schema_is_refused(pg_url: str) -> None:
    db = await Database.open(pg_url)
    async with db.transaction() as tx:
        await tx.execute("UPDATE tunewatch_schema SET version = 999")
    await db.close()
    with pytest.raises(SchemaTooNew) as caught:
        await Database.open(pg_url)
    assert (caught.value.found, caught.value.known) == (999, len(migrations_of("postgresql")))


async def test_a_wrong_password_is_refused_without_showing_it(pg_server: PgServer) -> None:
    with pytest.raises(DatabaseRefused) as caught:
        await Database.open(pg_server.url(password="not-the-password"))
    assert "not-the-password" not in str(caught.value)
    assert "***" in str(caught.value.path)


async def test_a_database_that_does_not_exist_is_refused(pg_server: PgServer) -> None:
    with pytest.raises(DatabaseRefused) as caught:
        await Database.open(pg_server.url("no_such_database"))
    assert "does not exist" in caught.value.reason


async def test_no_server_at_that_port_is_unreachable() -> None:
    with pytest.raises(DatabaseUnreachable) as caught:
        await Database.open(f"postgresql://u:p@127.0.0.1:{free_port()}/tw")
    assert "no server answers" in caught.value.reason


async def test_a_malformed_url_is_refused() -> None:
    with pytest.raises(MalformedDatabaseUrl):
        await Database.open("postgresql://u:p@127.0.0.1:port/tw")


async def a_busy_sqlite_database(path: Path) -> Store:
    store = await Store.open(path)
    await store.trainings.record([answer("T1", step(0))], NOW)
    await subscribe(store, "T1", channel=1)
    await subscribe(store, "T1", channel=None, user=5)
    await store.trainings.record([answer("T1", step(0), step(1), READY)], NOW)
    await store.user_keys.put(5, b"\x00\xffciphertext", now=NOW)
    await store.db.set_meta("commands_hash", "abc")
    await store.db.instance_id()
    return store


async def test_a_sqlite_database_moves_to_postgres_whole(tmp_path: Path, pg_url: str) -> None:
    source = await a_busy_sqlite_database(tmp_path / "old.db")
    target = await Store.open(pg_url)
    try:
        counts = await transfer.copy(source.db, target.db)
        assert counts == {
            "meta": 2,
            "trainings": 1,
            "events": 3,
            "subscriptions": 2,
            "deliveries": 3,
            "user_keys": 1,
        }
        for table in transfer.TABLES:
            assert [r async for r in transfer.dump(target.db, table)] == [
                r async for r in transfer.dump(source.db, table)
            ], table
        # The same nonces go on (the instance id came along), and new rows get new ids.
        assert await target.db.instance_id() == await source.db.instance_id()
        key = await target.user_keys.get(5)
        assert key is not None
        assert key.ciphertext == b"\x00\xffciphertext"
        new = await subscribe(target, "T1", channel=2)
        assert new.id == 3
        groups = await target.outbox.due(NOW, limit=100)
        assert [len(g) for g in groups] == [2, 1]  # step 1 and the end; the DM's end
        # A second copy finds data there and refuses, changing nothing.
        with pytest.raises(transfer.TargetNotEmpty):
            await transfer.copy(source.db, target.db)
        assert len(await target.subscriptions.of_guild(1)) == 2
    finally:
        await source.close()
        await target.close()


async def test_a_copy_that_fails_midway_leaves_the_target_empty(
    tmp_path: Path, pg_url: str
) -> None:
    source = await a_busy_sqlite_database(tmp_path / "old.db")
    async with source.db.transaction() as tx:  # a row PostgreSQL's schema refuses
        await tx.execute("UPDATE events SET number = 'not a number' WHERE seq = 1")
    target = await Store.open(pg_url)
    try:
        with pytest.raises(Exception, match="not a number"):
            await transfer.copy(source.db, target.db)
        assert await transfer.is_empty(target.db)
        assert await target.db.get_meta("commands_hash") is None
    finally:
        await source.close()
        await target.close()


async def test_channel_ids_beyond_32_bits_survive_both_backends(store: Store) -> None:
    big = 1_234_567_890_123_456_789
    sub, _ = await store.subscriptions.subscribe(
        kind=SubscriptionKind.CHANNEL,
        guild_id=big - 1,
        channel_id=big,
        user_id=big + 1,
        training_id="T1",
        key_ref="default",
        limit=10,
        now=NOW,
    )
    assert (sub.guild_id, sub.channel_id, sub.user_id) == (big - 1, big, big + 1)
    assert [s.id for s in await store.subscriptions.of_guild(big - 1)] == [sub.id]


async def test_migrate_db_knows_every_column_of_every_table(store: Store) -> None:
    # A column added by a migration must be added to transfer.TABLES and TYPES too, or
    # `tunewatch migrate-db` would silently leave it behind.
    if store.db.sql.name == "sqlite":
        query = "SELECT name FROM pragma_table_info(?)"
    else:
        query = "SELECT column_name FROM information_schema.columns WHERE table_name = ?"
    for table, columns in transfer.TABLES.items():
        found = {str(r[0]) for r in await store.db.fetch(query, (table,))}
        assert found == set(columns), table
        assert len(transfer.TYPES[table]) == len(columns), table
