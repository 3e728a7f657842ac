"""The SQLite backend: one file through aiosqlite, locked against a second bot and watched for
being deleted or replaced."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite
import orjson

from bot.store.db import (
    MIN_SQLITE,
    Database,
    DatabaseError,
    Row,
    SchemaTooNew,
    SqliteDialect,
    Tx,
    migrations_of,
    split_sql,
)

log = logging.getLogger(__name__)

# -- SQLite ---------------------------------------------------------------------------------


class _SqliteTx(Tx):
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        return [tuple(r) for r in await self._conn.execute_fetchall(sql, args)]

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        cursor = await self._conn.execute(sql, args)
        count = cursor.rowcount
        await cursor.close()
        return max(count, 0)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self._conn.executemany(sql, rows)

    async def select_json(self, columns: str, query: str, args: Sequence[Any] = ()) -> list[Any]:
        rows = await self._conn.execute_fetchall(
            f"SELECT json_group_array(json_array({columns})) FROM ({query})", args
        )
        result: list[Any] = orjson.loads(next(iter(rows))[0])
        return result


class SqliteDatabase(Database):
    """One SQLite file. Writes are serialised in explicit transactions (BEGIN IMMEDIATE)."""

    def __init__(self, conn: aiosqlite.Connection, path: Path, lock: _FileLock) -> None:
        self._conn = conn
        self._reader = _SqliteTx(conn)
        # One statement or transaction at a time on the one connection.
        self._serial = asyncio.Lock()
        self._file_lock = lock
        self.path = path
        self.sql = SqliteDialect()

    @classmethod
    async def connect(cls, path: Path) -> SqliteDatabase:
        """Open the file (see ``Database.open``)."""
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            raise DatabaseError(
                path,
                f"tunewatch needs SQLite {'.'.join(map(str, MIN_SQLITE))} or newer; this Python "
                f"has SQLite {sqlite3.sqlite_version}",
            )
        _check_location(path)
        lock = _FileLock.take(path)
        try:
            conn = await aiosqlite.connect(str(path), isolation_level=None)
        except sqlite3.Error as exc:
            lock.release()
            raise DatabaseError(path, _explain(exc)) from None
        db = cls(conn, path, lock)
        try:
            await db._configure()
            await db._migrate()
        except sqlite3.DatabaseError as exc:
            await db.close()
            garbage = "not a database" in str(exc) or "malformed" in str(exc)
            raise DatabaseError(path, _explain(exc), not_a_database=garbage) from None
        except BaseException:
            await db.close()
            raise
        return db

    async def _configure(self) -> None:
        for pragma in (
            "journal_mode = WAL",
            "synchronous = NORMAL",
            "foreign_keys = ON",
            "busy_timeout = 5000",
            # Up to 64 MiB of pages cached (SQLite's default is 2 MiB): a poll cycle touches rows
            # all over the trainings table. The cache only grows as pages are used.
            "cache_size = -65536",
        ):
            await self._conn.execute(f"PRAGMA {pragma}")

    async def close(self) -> None:
        """Close the connection (its thread ends with it) and let another process open it."""
        try:
            await self._conn.close()
        finally:
            self._file_lock.release()

    def refused_data(self, exc: BaseException) -> bool:
        """Besides encoding errors: a constraint broken, or a value too big to store."""
        if isinstance(exc, sqlite3.IntegrityError | sqlite3.DataError):
            return True
        return super().refused_data(exc)

    def file_problem(self) -> str | None:
        """Why the file on disk is no longer the one open (deleted, or replaced), or None.

        Writes to a deleted file go on silently, and are gone at the next start.
        """
        return self._file_lock.problem()

    # Reads wait for a write transaction under way: on the one connection they would read its
    # rows before it commits, and it may still roll back (a stop cancels it).
    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        async with self._serial:
            return await self._reader.fetch(sql, args)

    async def select_json(self, columns: str, query: str, args: Sequence[Any] = ()) -> list[Any]:
        async with self._serial:
            return await self._reader.select_json(columns, query, args)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        """A write transaction, serialised with every other; rolled back on any exception."""
        async with self._serial:
            try:
                await self._begin()
            except asyncio.CancelledError:
                # The database thread runs the BEGIN anyway (it was queued): end that
                # transaction before the lock goes, or the next one finds it open.
                with contextlib.suppress(sqlite3.OperationalError):
                    await self._conn.execute("ROLLBACK")
                raise
            try:
                yield _SqliteTx(self._conn)
            except BaseException:
                await self._conn.execute("ROLLBACK")
                raise
            await self._conn.execute("COMMIT")

    async def _begin(self) -> None:
        try:
            await self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            # A task cancelled while its BEGIN was on the way left a transaction open. We hold
            # the write lock, so it has no owner any more: roll it back, then begin ours.
            if not self._conn.in_transaction:
                raise
            log.warning("rolling back a transaction left open by a cancelled task")
            await self._conn.execute("ROLLBACK")
            await self._conn.execute("BEGIN IMMEDIATE")

    async def _migrate(self) -> None:
        current = int((await self.fetch("PRAGMA user_version"))[0][0])
        migrations = migrations_of(self.sql.name)
        known = max(migrations, default=0)
        if current > known:
            raise SchemaTooNew(self.path, current, known)
        pending = sorted((v, script) for v, script in migrations.items() if v > current)
        if pending:
            log.info("updating the database schema from version %d to %d", current, pending[-1][0])
        for version, script in pending:
            async with self.transaction() as tx:
                # executescript would commit on its own: run the statements inside ours.
                for statement in split_sql(script):
                    await tx.execute(statement)
                await tx.execute(f"PRAGMA user_version = {version:d}")


def _check_location(path: Path) -> None:
    folder = path.resolve().parent
    if not folder.is_dir():
        raise DatabaseError(path, f"its directory {folder} does not exist")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise DatabaseError(path, "this user may not write there")


class _FileLock:
    """An exclusive lock on the database file for the process that has it open, and the
    file's identity, to notice it deleted or replaced while open.

    ``flock`` is independent of SQLite's own (fcntl) locks, and it goes with the process: a
    killed bot leaves nothing to clean up.
    """

    def __init__(self, path: Path, fd: int, identity: tuple[int, int]) -> None:
        self._path = path
        self._fd: int | None = fd
        self._identity = identity

    @classmethod
    def take(cls, path: Path) -> _FileLock:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise DatabaseError(path, f"cannot be opened ({exc.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise DatabaseError(path, "another tunewatch has it open", in_use=True) from None
        stat = os.fstat(fd)
        return cls(path, fd, (stat.st_dev, stat.st_ino))

    def problem(self) -> str | None:
        try:
            stat = os.stat(self._path)
        except FileNotFoundError:
            return f"the database file {self._path} was deleted while tunewatch had it open"
        except OSError as exc:
            return f"the database file {self._path} cannot be checked ({exc.strerror})"
        if (stat.st_dev, stat.st_ino) != self._identity:
            return f"the database file {self._path} was replaced while tunewatch had it open"
        return None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the lock
            self._fd = None


# -- migrations -----------------------------------------------------------------------------


def _explain(exc: sqlite3.Error) -> str:
    text = str(exc)
    if "not a database" in text or "malformed" in text:
        return "SQLite: file is not a database, or it is damaged"
    if "readonly" in text or "read-only" in text:
        return "it is read-only for this user"
    if "unable to open" in text:
        return "it cannot be opened: does its directory exist, and may this user write there?"
    return text
