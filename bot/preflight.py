"""Start-up checks made before the bot connects to Discord, and the one line that explains each
way a start can fail (the operator reads it in a terminal or in the journal: what is wrong and
what to do, never a traceback)."""

from __future__ import annotations

import errno
import getpass
import os
import socket
import sqlite3
from pathlib import Path

from bot.config import Settings
from bot.store import (
    DatabaseError,
    DatabaseRefused,
    DatabaseUnreachable,
    MalformedDatabaseUrl,
    SchemaTooNew,
    Store,
    masked_url,
)

# Exit codes of every tunewatch command (the README lists them). This module imports discord.py
# and aiohttp only where it explains a failure: the one-shot commands import it for these.
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


class StartupError(Exception):
    """The bot cannot start; ``str()`` is one line saying what is wrong and what to do."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


async def preflight(settings: Settings) -> None:
    """Check what can be checked without Discord: the database, then the HTTP port."""
    target = settings.database
    if isinstance(target, Path):
        check_database_location(target)
    try:
        store = await Store.open(target)
    except Exception as exc:
        error = explain_database(exc, target)
        if error is None:
            raise
        raise error from None
    await store.close()
    if settings.HTTP_PORT:  # 0 picks a free port: nothing to check
        check_port(settings.HTTP_HOST, settings.HTTP_PORT)


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no name for this uid (a container's arbitrary uid)
        return "this user"


def check_database_location(path: Path) -> None:
    """The database's directory exists and this user may create files in it."""
    shown = path.absolute()
    folder = shown.parent
    if path.is_dir():
        raise StartupError(
            f"DATABASE_PATH {shown} is a directory: name a file in it, e.g. "
            f"DATABASE_PATH={shown / 'tunewatch.db'}.",
            EXIT_USAGE,
        )
    if not folder.is_dir():
        raise StartupError(
            f"DATABASE_PATH {shown}: the directory {folder} does not exist; create it "
            f"(mkdir -p {folder}) for the user running tunewatch, or set DATABASE_PATH to a file "
            "in an existing directory.",
            EXIT_USAGE,
        )
    user = _user()
    # SQLite creates the -wal and -shm files beside the database: the directory must be
    # writable, not only the file.
    if not os.access(folder, os.W_OK | os.X_OK):
        raise StartupError(
            f"DATABASE_PATH {shown}: the directory {folder} is not writable by {user}; give "
            f"that user the directory (chown {user} {folder}) or set DATABASE_PATH elsewhere."
        )
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise StartupError(
            f"DATABASE_PATH {shown} is not readable and writable by {user}; give that user "
            f"the file (chown {user} {shown}) or set DATABASE_PATH elsewhere."
        )


def explain_database(
    exc: BaseException, path: Path | str, *, name: str = "DATABASE_URL"
) -> StartupError | None:
    """The line for a database that cannot be opened or migrated; None if ``exc`` is not that.

    ``name`` is what the operator set the PostgreSQL URL as (a setting, a CLI option).
    """
    if isinstance(path, str):
        return explain_postgres(exc, f"{name} {masked_url(path)}")
    shown = path.absolute()
    if isinstance(exc, SchemaTooNew):
        return StartupError(
            f"DATABASE_PATH {shown} was written by a newer tunewatch (database schema "
            f"{exc.found}; this version knows up to {exc.known}): run that version or a newer "
            "one, or restore a backup made with this one."
        )
    if isinstance(exc, DatabaseError) and exc.in_use:
        return StartupError(
            f"DATABASE_PATH {shown} is in use by another tunewatch: stop that one first (a "
            "second bot on one SQLite file would poll every training twice), or give this one "
            "its own DATABASE_PATH."
        )
    if isinstance(exc, DatabaseError) and exc.not_a_database:
        return StartupError(
            f"DATABASE_PATH {shown} is not a tunewatch database ({exc.reason}): set "
            "DATABASE_PATH to tunewatch's database, or move this file away to start with an "
            "empty one."
        )
    if isinstance(exc, DatabaseError | sqlite3.Error):
        reason = exc.reason if isinstance(exc, DatabaseError) else f"SQLite: {exc}"
        return StartupError(
            f"DATABASE_PATH {shown} cannot be used ({reason}): check that the file and its "
            f"directory are writable by {_user()}, that the disk is not full, and that no other "
            "program holds the database."
        )
    return None


def explain_postgres(exc: BaseException, shown: str) -> StartupError | None:
    """The line for a PostgreSQL database (``shown``: the setting and its URL, password masked)
    that cannot be used; None if ``exc`` is not about it."""
    if isinstance(exc, MalformedDatabaseUrl):
        return StartupError(
            f"{shown} is malformed ({exc.reason}): the form is "
            "postgresql://user:password@host:5432/database.",
            EXIT_USAGE,
        )
    if isinstance(exc, DatabaseRefused):
        return StartupError(
            f"{shown}: {exc.reason}. Check the user and password in the URL, that the "
            "database exists (createdb), and that the user owns it.",
            EXIT_USAGE,
        )
    if isinstance(exc, DatabaseUnreachable):
        return StartupError(
            f"{shown}: {exc.reason}. Is PostgreSQL running there, and are the host and port right?",
            EXIT_UNREACHABLE,
        )
    if isinstance(exc, SchemaTooNew):
        return StartupError(
            f"{shown} was written by a newer tunewatch (database schema "
            f"{exc.found}; this version knows up to {exc.known}): run that version or a newer "
            "one on every instance."
        )
    if isinstance(exc, DatabaseError):
        return StartupError(f"{shown} cannot be used ({exc.reason}).")
    return None


def check_port(host: str, port: int) -> None:
    """Nothing listens on ``host:port`` yet, and this user may listen there."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StartupError(
            f"HTTP_HOST {host} is not an address of this machine ({exc.strerror}): use "
            "127.0.0.1 behind a reverse proxy, or 0.0.0.0 in a container.",
            EXIT_USAGE,
        ) from None
    for family, kind, proto, _name, address in dict.fromkeys(infos):
        with socket.socket(family, kind, proto) as probe:
            # As the HTTP server itself binds (asyncio's default on Unix): a port left in
            # TIME_WAIT by the previous run is free, a port something listens on is not.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                raise explain_port(exc, host, port) from None


def explain_port(exc: OSError, host: str, port: int) -> StartupError:
    """The line for an HTTP server that cannot listen on ``host:port``."""
    if exc.errno == errno.EADDRINUSE:
        return StartupError(
            f"HTTP_PORT {port} is already in use on {host}: stop the program using it "
            f"(ss -ltnp 'sport = :{port}' names it), choose another HTTP_PORT, or leave HTTP_PORT "
            "empty to run without the HTTP server."
        )
    if exc.errno == errno.EACCES:
        return StartupError(
            f"HTTP_PORT {port} on {host} needs privileges this user does not have: choose a "
            "port of 1024 or above.",
            EXIT_USAGE,
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return StartupError(
            f"HTTP_HOST {host} is not an address of this machine: use 127.0.0.1 behind a "
            "reverse proxy, or 0.0.0.0 in a container.",
            EXIT_USAGE,
        )
    return StartupError(
        f"The HTTP server cannot listen on {host}:{port} ({exc.strerror or exc}): check "
        "HTTP_HOST and HTTP_PORT."
    )


def _unreachable_reason(exc: BaseException) -> str:
    import aiohttp

    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(exc.os_error, socket.gaierror):
            return f"{exc.host} does not resolve: {exc.os_error.strerror}"
        code = exc.os_error.errno
        # asyncio's own message names the address, which the line gives already.
        return os.strerror(code) if code else type(exc.os_error).__name__
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return "no answer in time"
    return str(exc) or type(exc).__name__


def explain(exc: BaseException, settings: Settings) -> StartupError | None:
    """The line for a failure while the bot starts; None for an unexpected one (a bug, whose
    traceback is worth keeping)."""
    import aiohttp
    import discord

    if isinstance(exc, StartupError):
        return exc
    if isinstance(exc, discord.LoginFailure):
        return StartupError(
            "Discord refused DISCORD_TOKEN: check that it is the bot token from the Developer "
            "Portal (Bot -> Reset Token).",
            EXIT_USAGE,
        )
    database = explain_database(exc, settings.database)
    if database is not None:
        return database
    if isinstance(exc, aiohttp.ClientError | TimeoutError):
        # Before the gateway, only discord.py's REST calls (login, command sync) touch the
        # network: the API is not asked anything at start.
        return StartupError(
            f"Cannot reach Discord at {settings.DISCORD_API_BASE} "
            f"({_unreachable_reason(exc)}): check this machine's network and DNS, and "
            "DISCORD_API_BASE if you set it; then start tunewatch again.",
            EXIT_UNREACHABLE,
        )
    if isinstance(exc, discord.DiscordServerError):
        return StartupError(
            f"Discord is failing (HTTP {exc.status}): try again in a few minutes; "
            "https://discordstatus.com tells about outages.",
            EXIT_UNREACHABLE,
        )
    if isinstance(exc, discord.HTTPException):
        return StartupError(
            f"Discord refused a request at start (HTTP {exc.status}: {exc.text or 'no reason'}): "
            "check DISCORD_GUILD_ID if you set it, and that the bot was invited with the "
            "`bot` and `applications.commands` scopes."
        )
    if isinstance(exc, OSError) and exc.errno in (
        errno.EADDRINUSE,
        errno.EACCES,
        errno.EADDRNOTAVAIL,
    ):
        # The HTTP server starts after the login: the port was taken since the check.
        return explain_port(exc, settings.HTTP_HOST, settings.HTTP_PORT or 0)
    return None
