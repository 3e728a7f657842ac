"""The database: one SQLite file through aiosqlite, or PostgreSQL through asyncpg; migrations,
transactions and meta values.

The repositories (``trainings``, ``subscriptions``, ``outbox``, ``user_keys``) write their SQL
once, for both backends, against this small surface: ``fetch`` and ``transaction`` (whose ``Tx``
has ``fetch``, ``execute`` and ``executemany``), ``select_json``, and the fragments of
``db.sql`` (a ``Dialect``) where the two speak differently: ``json_rows`` carries thousands of
rows in one bound value, ``skip_locked`` lets several instances claim work without waiting on
each other. Placeholders are ``?`` in both (PostgreSQL's ``$n`` are numbered here), and values
written to typed positions are cast with names both understand (``CAST(? AS DOUBLE PRECISION)``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import re
import secrets
import socket
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

import aiosqlite
import orjson

if TYPE_CHECKING:
    import asyncpg

log = logging.getLogger(__name__)

# UPDATE ... FROM (3.33), RETURNING (3.35) and the JSON functions the batched statements use.
MIN_SQLITE = (3, 35, 0)
POSTGRES_SCHEMES = ("postgresql://", "postgres://")
# Two instances starting at once on an empty database: one migrates, the other waits for it.
_MIGRATION_LOCK = 0x74756E65  # "tune"
# How long opening a PostgreSQL connection may take (the first one tells unreachable at start).
CONNECT_TIMEOUT = 10.0

Row = tuple[Any, ...]


class DatabaseError(Exception):
    """The database cannot be used as it is; ``reason`` says why in plain words.

    ``path`` is the SQLite file, or the PostgreSQL URL with its password masked.
    """

    def __init__(
        self,
        path: Path | str,
        reason: str,
        *,
        not_a_database: bool = False,
        in_use: bool = False,
    ) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
        self.not_a_database = not_a_database
        self.in_use = in_use


class SchemaTooNew(DatabaseError):
    """The database was written by a newer tunewatch (a schema this code does not know)."""

    def __init__(self, path: Path | str, found: int, known: int) -> None:
        super().__init__(
            path, f"its schema is version {found}, newer than the {known} this tunewatch knows"
        )
        self.found = found
        self.known = known


class DatabaseUnreachable(DatabaseError):
    """No PostgreSQL server answers at that address (down, wrong host or port, firewall)."""


class DatabaseRefused(DatabaseError):
    """The server answered but refused: wrong password, unknown user or database, no rights."""


class MalformedDatabaseUrl(DatabaseError):
    """``DATABASE_URL`` is not a PostgreSQL URL that can be used."""


def is_postgres_url(target: str | Path) -> bool:
    """True when ``target`` names a PostgreSQL database rather than a SQLite file."""
    return isinstance(target, str) and target.startswith(POSTGRES_SCHEMES)


def masked_url(url: str) -> str:
    """The URL with its password replaced by ``***`` (for messages and logs)."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.rsplit("@", 1)[1]
        user = parts.username or ""
        return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))
    except ValueError:
        scheme = url.split("://", 1)[0] if "://" in url else "?"
        return f"{scheme}://(malformed)"


def rows_param(rows: Sequence[Sequence[Any]]) -> str:
    """Rows as ONE bound value (a JSON array of arrays) for a set-wise statement.

    Python's sqlite3 releases and takes back the GIL around every row it steps: with
    ``executemany`` and a busy event loop, the database thread waits for the loop at each row.
    One statement over one JSON value is one step, whatever the number of rows (see the
    ``store_contention`` benchmark). PostgreSQL likewise takes one value in one round trip.
    """
    return orjson.dumps(rows).decode()


class Dialect(ABC):
    """The SQL fragments that differ between the backends."""

    name: ClassVar[str]
    shared: ClassVar[bool]
    """Several tunewatch instances may use this database at once."""
    skip_locked: ClassVar[str]
    """Appended to a claim's SELECT: rows another transaction holds are left to it."""
    lock_rows: ClassVar[str]
    """Appended to a SELECT whose rows the transaction is about to update."""
    is_: ClassVar[str]
    """``a IS ?`` that also matches NULL with NULL."""
    greatest: ClassVar[str]
    """The larger of several values (a scalar function)."""
    # Column types of json_rows, by the names the repositories use.
    _TYPES: ClassVar[dict[str, str]]

    @abstractmethod
    def json_rows(self, *types: str) -> str:
        """``SELECT c0, c1, ... FROM <the rows of one rows_param() value>``; ``types`` names
        each column's type (``text``, ``int``, ``real``), in order."""

    def identity_follows(self, table: str, column: str) -> str | None:
        """A statement making the id counter of ``table`` go on after its largest ``column``
        (rows were inserted with their ids), or None where the database does that itself."""
        return None

    def check_types(self, types: Sequence[str]) -> None:
        """Refuse a type name json_rows does not know (a typo would be a silent text column)."""
        unknown = [t for t in types if t not in self._TYPES]
        if unknown:
            raise ValueError(f"unknown json_rows types {unknown}")


class SqliteDialect(Dialect):
    """SQLite's JSON1 functions; one instance per file."""

    name = "sqlite"
    shared = False
    skip_locked = ""
    lock_rows = ""
    is_ = "IS"
    greatest = "MAX"
    _TYPES: ClassVar[dict[str, str]] = {"text": "", "int": "", "real": ""}

    def json_rows(self, *types: str) -> str:
        self.check_types(types)
        columns = ", ".join(f"json_extract(j.value, '$[{i}]') AS c{i}" for i in range(len(types)))
        return f"SELECT {columns} FROM json_each(?) AS j"


class PostgresDialect(Dialect):
    """PostgreSQL's jsonb functions and row locks; shared by several instances."""

    name = "postgresql"
    shared = True
    skip_locked = " FOR UPDATE SKIP LOCKED"
    lock_rows = " FOR UPDATE"
    is_ = "IS NOT DISTINCT FROM"
    greatest = "GREATEST"
    _TYPES: ClassVar[dict[str, str]] = {
        "text": "text",
        "int": "bigint",
        "real": "double precision",
    }

    def json_rows(self, *types: str) -> str:
        self.check_types(types)
        columns = ", ".join(
            f"(j.value->>{i})::{self._TYPES[t]} AS c{i}" for i, t in enumerate(types)
        )
        return f"SELECT {columns} FROM jsonb_array_elements(CAST(? AS jsonb)) AS j(value)"

    def identity_follows(self, table: str, column: str) -> str | None:
        return (
            f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), "
            f"COALESCE(MAX({column}), 1), MAX({column}) IS NOT NULL) FROM {table}"
        )


class Tx(ABC):
    """A write transaction's connection: statements run inside the transaction."""

    @abstractmethod
    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        """Rows of a query."""

    @abstractmethod
    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        """Run one statement; returns the rows it changed."""

    @abstractmethod
    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement per row (small batches; big ones go through ``rows_param``)."""

    @abstractmethod
    async def select_json(self, columns: str, query: str, args: Sequence[Any] = ()) -> list[Any]:
        """The rows of ``query`` (which selects ``columns``), thousands in one step.

        SQLite fetches them as ONE JSON value (see ``rows_param``; REAL columns come back with
        15 significant digits, about 10 microseconds for a Unix time); PostgreSQL's binary
        protocol needs no such detour.
        """


class Database(ABC):
    """A tunewatch database; ``Database.open`` picks the backend from the target."""

    sql: Dialect
    path: Path | str
    """The SQLite file, or the PostgreSQL URL with its password masked."""

    @classmethod
    async def open(cls, target: str | Path) -> Database:
        """Open (creating if needed) the database and apply pending migrations.

        ``target`` is a SQLite file, or a ``postgresql://`` URL. Raises DatabaseError (or one
        of its kinds) with a plain reason when it cannot be used.
        """
        if is_postgres_url(target):
            return await PostgresDatabase.connect(str(target))
        return await SqliteDatabase.connect(Path(target))

    @abstractmethod
    async def close(self) -> None:
        """Release the connection(s)."""

    @abstractmethod
    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        """Rows of a read outside any transaction."""

    @abstractmethod
    async def select_json(self, columns: str, query: str, args: Sequence[Any] = ()) -> list[Any]:
        """``Tx.select_json`` outside any transaction."""

    @abstractmethod
    def transaction(self) -> contextlib.AbstractAsyncContextManager[Tx]:
        """A write transaction; rolled back on any exception."""

    async def ping(self) -> bool:
        """True when the database answers."""
        return bool(await self.fetch("SELECT 1"))

    def file_problem(self) -> str | None:
        """Why the database's file is no longer the one open (SQLite), or None."""
        return None

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
        """A random id of this database, so message nonces never collide across databases.

        Every tunewatch instance on one database reads the same id, so a message one instance
        sent and the next one sends again carries the same nonce.
        """
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
        self._write_lock = asyncio.Lock()
        self._lock = lock
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
            self._lock.release()

    def file_problem(self) -> str | None:
        """Why the file on disk is no longer the one open (deleted, or replaced), or None.

        Writes to a deleted file go on silently, and are gone at the next start.
        """
        return self._lock.problem()

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        return await self._reader.fetch(sql, args)

    async def select_json(self, columns: str, query: str, args: Sequence[Any] = ()) -> list[Any]:
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
                for statement in _split_sql(script):
                    await tx.execute(statement)
                await tx.execute(f"PRAGMA user_version = {version:d}")


def _check_location(path: Path) -> None:
    folder = path.resolve().parent
    if not folder.is_dir():
        raise DatabaseError(path, f"its directory {folder} does not exist")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise DatabaseError(path, "this user may not write there")


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
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
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


def migrations_of(backend: str) -> dict[int, str]:
    """The numbered ``.sql`` files of ``bot/store/migrations/<backend>``: version -> script."""
    folder = resources.files("bot.store").joinpath("migrations", backend)
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
