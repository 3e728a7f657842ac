"""The database: one SQLite file through aiosqlite, its migrations, transactions and meta values.

The repositories (``trainings``, ``subscriptions``, ``outbox``, ``user_keys``) write their SQL
against this small surface: ``fetch`` and ``transaction`` (whose ``Tx`` has ``fetch``,
``execute`` and ``executemany``), plus two fragments for set-wise statements (``json_rows`` and
``select_json``) that carry thousands of rows in one bound value.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import secrets
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import aiosqlite
import orjson

log = logging.getLogger(__name__)

# UPDATE ... FROM (3.33), RETURNING (3.35) and the JSON functions the batched statements use.
MIN_SQLITE = (3, 35, 0)

Row = tuple[Any, ...]


class DatabaseError(Exception):
    """The database cannot be used as it is; ``reason`` says why in plain words."""

    def __init__(
        self, path: Path, reason: str, *, not_a_database: bool = False, in_use: bool = False
    ) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
        self.not_a_database = not_a_database
        self.in_use = in_use


class SchemaTooNew(DatabaseError):
    """The file was written by a newer tunewatch (a schema this code does not know)."""

    def __init__(self, path: Path, found: int, known: int) -> None:
        super().__init__(
            path, f"its schema is version {found}, newer than the {known} this tunewatch knows"
        )
        self.found = found
        self.known = known


def rows_param(rows: Sequence[Sequence[Any]]) -> str:
    """Rows as ONE bound value (a JSON array of arrays) for a set-wise statement.

    Python's sqlite3 releases and takes back the GIL around every row it steps: with
    ``executemany`` and a busy event loop, the database thread waits for the loop at each row.
    One statement over one JSON value is one step, whatever the number of rows (see the
    ``store_contention`` benchmark).
    """
    return orjson.dumps(rows).decode()


def json_rows(n: int) -> str:
    """``SELECT c0, c1, ... FROM <the rows of one rows_param() value>``, with ``n`` columns."""
    columns = ", ".join(f"json_extract(j.value, '$[{i}]') AS c{i}" for i in range(n))
    return f"SELECT {columns} FROM json_each(?) AS j"


class Tx:
    """A write transaction's connection: statements run inside the transaction."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        """Rows of a query."""
        return [tuple(r) for r in await self._conn.execute_fetchall(sql, args)]

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        """Run one statement; returns the rows it changed."""
        cursor = await self._conn.execute(sql, args)
        count = cursor.rowcount
        await cursor.close()
        return max(count, 0)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement per row (small batches; big ones go through ``rows_param``)."""
        await self._conn.executemany(sql, rows)

    async def select_json(self, columns: str, query: str, args: Sequence[Any] = ()) -> list[Any]:
        """The rows of ``query`` (which selects ``columns``) fetched as ONE JSON value.

        Thousands of rows come back in one step (see ``rows_param``). REAL columns come back
        with 15 significant digits (about 10 microseconds for a Unix time).
        """
        rows = await self._conn.execute_fetchall(
            f"SELECT json_group_array(json_array({columns})) FROM ({query})", args
        )
        result: list[Any] = orjson.loads(next(iter(rows))[0])
        return result


class Database:
    """One SQLite file. Writes are serialised in explicit transactions (BEGIN IMMEDIATE)."""

    def __init__(self, conn: aiosqlite.Connection, path: Path, lock: _FileLock) -> None:
        self._conn = conn
        self._reader = Tx(conn)
        self._write_lock = asyncio.Lock()
        self._lock = lock
        self.path = path

    @classmethod
    async def open(cls, path: str | Path) -> Database:
        """Open (creating if needed) the database and apply pending migrations.

        Raises DatabaseError (or SchemaTooNew) with a plain reason when the file cannot be used.
        """
        path = Path(path)
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            raise DatabaseError(
                path,
                f"tunewatch needs SQLite {'.'.join(map(str, MIN_SQLITE))} or newer; this Python "
                f"has SQLite {sqlite3.sqlite_version}",
            )
        folder = path.resolve().parent
        if not folder.is_dir():
            raise DatabaseError(path, f"its directory {folder} does not exist")
        if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
            raise DatabaseError(path, "this user may not write there")
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
            self._lock.release()

    def file_problem(self) -> str | None:
        """Why the file on disk is no longer the one open (deleted, or replaced), or None.

        Writes to a deleted file go on silently, and are gone at the next start.
        """
        return self._lock.problem()

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        """Rows of a read outside any transaction."""
        return await self._reader.fetch(sql, args)

    async def select_json(self, columns: str, query: str, args: Sequence[Any] = ()) -> list[Any]:
        """``Tx.select_json`` outside any transaction."""
        return await self._reader.select_json(columns, query, args)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        """A write transaction, serialised with every other; rolled back on any exception."""
        async with self._write_lock:
            try:
                await self._begin()
            except asyncio.CancelledError:
                # The database thread runs the BEGIN anyway (it was queued): end that
                # transaction before the lock goes, or the next one finds it open.
                with contextlib.suppress(sqlite3.OperationalError):
                    await self._conn.execute("ROLLBACK")
                raise
            try:
                yield Tx(self._conn)
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
        migrations = _migrations()
        known = max(migrations, default=0)
        if current > known:
            raise SchemaTooNew(self.path, current, known)
        pending = sorted((v, script) for v, script in migrations.items() if v > current)
        if pending:
            log.info("updating the database schema from version %d to %d", current, pending[-1][0])
        for version, script in pending:
            async with self.transaction() as tx:
                # executescript would commit on its own: run the statements inside ours.
                for statement in _split_sql(script):
                    await tx.execute(statement)
                await tx.execute(f"PRAGMA user_version = {version:d}")

    # -- meta -------------------------------------------------------------------------------

    async def get_meta(self, key: str) -> str | None:
        """A value of the meta table."""
        rows = await self.fetch("SELECT value FROM meta WHERE key = ?", (key,))
        return None if not rows else str(rows[0][0])

    async def set_meta(self, key: str, value: str) -> None:
        """Set a value of the meta table."""
        async with self.transaction() as tx:
            await tx.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    async def instance_id(self) -> str:
        """A random id of this database, so message nonces never collide across databases."""
        async with self.transaction() as tx:
            await tx.execute(
                "INSERT INTO meta (key, value) VALUES ('instance_id', ?) "
                "ON CONFLICT (key) DO NOTHING",
                (secrets.token_hex(4),),
            )
        value = await self.get_meta("instance_id")
        if value is None:  # pragma: no cover - written just above
            raise LookupError("instance_id")
        return value

    async def ping(self) -> bool:
        """True when the database answers."""
        return bool(await self.fetch("SELECT 1"))


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


def _migrations() -> dict[int, str]:
    """The numbered ``.sql`` files of ``bot/store/migrations``: version -> script."""
    folder = resources.files("bot.store").joinpath("migrations")
    return {
        int(f.name.split("_", 1)[0]): f.read_text(encoding="utf-8")
        for f in folder.iterdir()
        if f.name.endswith(".sql")
    }


def _split_sql(script: str) -> list[str]:
    """Split a migration into statements (our migrations hold no ';' inside literals)."""
    lines = [line for line in script.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def _explain(exc: sqlite3.Error) -> str:
    text = str(exc)
    if "not a database" in text or "malformed" in text:
        return "SQLite: file is not a database, or it is damaged"
    if "readonly" in text or "read-only" in text:
        return "it is read-only for this user"
    if "unable to open" in text:
        return "it cannot be opened: does its directory exist, and may this user write there?"
    return text
