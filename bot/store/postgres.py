"""The PostgreSQL backend: a pool of asyncpg connections, shared by several instances."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from bot.store.db import (
    CONNECT_TIMEOUT,
    MIGRATION_LOCK,
    Database,
    DatabaseError,
    DatabaseRefused,
    DatabaseUnreachable,
    MalformedDatabaseUrl,
    PostgresDialect,
    Row,
    SchemaTooNew,
    Tx,
    masked_url,
    migrations_of,
)

if TYPE_CHECKING:
    import asyncpg

log = logging.getLogger(__name__)

# -- PostgreSQL -----------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"'(?:[^']|'')*'|\?")


def numbered(sql: str) -> str:
    """``?`` placeholders as PostgreSQL's ``$1, $2...`` (a ``?`` inside a literal stays)."""
    count = 0

    def number(match: re.Match[str]) -> str:
        nonlocal count
        if match[0] != "?":
            return match[0]
        count += 1
        return f"${count}"

    return _PLACEHOLDER.sub(number, sql)


class _PgTx(Tx):
    def __init__(self, conn: asyncpg.Connection, db: PostgresDatabase) -> None:
        self._conn = conn
        self._db = db

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        return [tuple(r) for r in await self._conn.fetch(self._db.text(sql), *args)]

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        status: str = await self._conn.execute(self._db.text(sql), *args)
        last = status.rsplit(" ", 1)[-1]
        return int(last) if last.isdigit() else 0

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            await self._conn.executemany(self._db.text(sql), rows)

    async def select_json(self, columns: str, query: str, args: Sequence[Any] = ()) -> list[Any]:
        return await self.fetch(query, args)


class PostgresDatabase(Database):
    """A PostgreSQL database through a pool of asyncpg connections, shared with other
    instances: transactions run side by side, row locks keep them apart."""

    POOL_SIZE = 8

    def __init__(self, pool: asyncpg.Pool, where: str) -> None:
        self._pool = pool
        self._texts: dict[str, str] = {}
        self.path = where
        self.sql = PostgresDialect()

    def text(self, sql: str) -> str:
        """The statement with numbered placeholders (computed once per statement)."""
        text = self._texts.get(sql)
        if text is None:
            text = self._texts[sql] = numbered(sql)
        return text

    @classmethod
    async def connect(cls, url: str) -> PostgresDatabase:
        """Connect (see ``Database.open``)."""
        import asyncpg

        where = masked_url(url)
        try:
            pool = await asyncpg.create_pool(
                url,
                min_size=1,
                max_size=cls.POOL_SIZE,
                timeout=CONNECT_TIMEOUT,
                # Statements are few and reused: asyncpg prepares and caches each.
                command_timeout=60,
            )
        except Exception as exc:
            raise _explain_pg(exc, where) from None
        db = cls(pool, where)
        try:
            await db._migrate()
        except DatabaseError:
            await pool.close()
            raise
        except Exception as exc:
            await pool.close()
            raise _explain_pg(exc, where) from None
        except BaseException:
            pool.terminate()
            raise
        return db

    async def close(self) -> None:
        """Close the pool; a connection stuck on a dead server is dropped after a moment."""
        try:
            async with asyncio.timeout(5):
                await self._pool.close()
        except TimeoutError:
            self._pool.terminate()

    def refused_data(self, exc: BaseException) -> bool:
        """Besides encoding errors: PostgreSQL's data exceptions (SQLSTATE class 22: a NUL in
        text, a number out of range...) and integrity violations (class 23)."""
        import asyncpg

        data_errors = asyncpg.DataError | asyncpg.IntegrityConstraintViolationError
        return isinstance(exc, data_errors) or super().refused_data(exc)

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        return [tuple(r) for r in await self._pool.fetch(self.text(sql), *args)]

    async def select_json(self, columns: str, query: str, args: Sequence[Any] = ()) -> list[Any]:
        return await self.fetch(query, args)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        """A transaction on a connection of its own (READ COMMITTED: each statement sees what
        others committed before it; row locks order concurrent writers)."""
        async with self._pool.acquire() as conn, conn.transaction():
            yield _PgTx(conn, self)

    async def _migrate(self) -> None:
        migrations = migrations_of(self.sql.name)
        known = max(migrations, default=0)
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS tunewatch_schema (version INTEGER NOT NULL)"
            )
            current = await conn.fetchval("SELECT MAX(version) FROM tunewatch_schema") or 0
            if current > known:
                raise SchemaTooNew(self.path, current, known)
            pending = sorted((v, script) for v, script in migrations.items() if v > current)
            if pending:
                log.info(
                    "updating the database schema from version %d to %d", current, pending[-1][0]
                )
            for _version, script in pending:
                await conn.execute(script)
            if known > current:
                await conn.execute("DELETE FROM tunewatch_schema")
                await conn.execute("INSERT INTO tunewatch_schema (version) VALUES ($1)", known)


def _explain_pg(exc: BaseException, where: str) -> DatabaseError:
    """The typed error for a PostgreSQL connection or statement that failed at open."""
    import asyncpg

    if isinstance(exc, DatabaseError):
        return exc
    # The first kind of failure that matches, and its words (checked in this order: an auth
    # error is a PostgresError too, and a gaierror or a timeout an OSError).
    refused, unreachable = DatabaseRefused, DatabaseUnreachable
    kinds: list[tuple[Any, type[DatabaseError], str]] = [
        (ValueError | asyncpg.ClientConfigurationError, MalformedDatabaseUrl, "malformed URL"),
        # Wrong password, or a user the server does not know: the server says which.
        (asyncpg.InvalidAuthorizationSpecificationError, refused, "the server refused the login"),
        (asyncpg.InvalidCatalogNameError, refused, "the database does not exist"),
        (asyncpg.InsufficientPrivilegeError, refused, "this user may not create tables there"),
        (socket.gaierror, unreachable, "its host does not resolve"),
        (TimeoutError, unreachable, "the server did not answer in time"),
        (asyncpg.CannotConnectNowError, unreachable, "the server is starting or stopping"),
        (OSError, unreachable, "no server answers there"),
        (asyncpg.PostgresError | asyncpg.InterfaceError, DatabaseError, "PostgreSQL"),
    ]  # fmt: skip
    for types, kind, words in kinds:
        if isinstance(exc, types):
            return kind(where, f"{words} ({_detail(exc)})")
    return DatabaseError(where, f"{type(exc).__name__}: {exc}")


def _detail(exc: BaseException) -> str:
    if isinstance(exc, socket.gaierror):
        return str(exc.strerror)
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)
    return str(exc) or type(exc).__name__
