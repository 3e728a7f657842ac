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

import contextlib
import logging
import secrets
from abc import ABC, abstractmethod
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

import orjson

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

# UPDATE ... FROM (3.33), RETURNING (3.35) and the JSON functions the batched statements use.
MIN_SQLITE = (3, 35, 0)
POSTGRES_SCHEMES = ("postgresql://", "postgres://")
# Two instances starting at once on an empty database: one migrates, the other waits for it.
MIGRATION_LOCK = 0x74756E65  # "tune"
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
            from bot.store.postgres import PostgresDatabase

            return await PostgresDatabase.connect(str(target))
        from bot.store.sqlite import SqliteDatabase

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

    def refused_data(self, exc: BaseException) -> bool:
        """True when ``exc`` says the values written were refused (they cannot be encoded, or
        break a constraint or a type), so the same write fails however often it is tried;
        False for anything else (an outage, a lock, a closed connection)."""
        # Encoding the rows as JSON (``rows_param``) fails before the database sees them.
        return isinstance(exc, TypeError | UnicodeError | OverflowError)

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


def migrations_of(backend: str) -> dict[int, str]:
    """The numbered ``.sql`` files of ``bot/store/migrations/<backend>``: version -> script."""
    folder = resources.files("bot.store").joinpath("migrations", backend)
    return {
        int(f.name.split("_", 1)[0]): f.read_text(encoding="utf-8")
        for f in folder.iterdir()
        if f.name.endswith(".sql")
    }


def split_sql(script: str) -> list[str]:
    """Split a migration into statements (our migrations hold no ';' inside literals)."""
    lines = [line for line in script.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
