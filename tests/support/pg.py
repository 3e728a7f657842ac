"""A throwaway PostgreSQL server for the tests: Debian's ``postgresql`` package's binaries,
``initdb`` into a temporary directory, ``pg_ctl`` on a free port of 127.0.0.1, password logins
(scram-sha-256) so a wrong password is refused as on a real server. Started once per test
session; each test takes a database of its own (``PgServer.new_database``).

PostgreSQL refuses to run as root: as root (the CI), the server runs as the ``postgres`` system
user (created by the package) through ``runuser``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from tests.support.harness import free_port

USER = "tunewatch"
PASSWORD = "tunewatch-test-password"
SERVER_SETTINGS = ("listen_addresses=127.0.0.1", "unix_socket_directories=", "max_connections=300")
# A test server holds nothing worth a disk flush, unless a test crashes it on purpose.
FAST_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")
# The benchmarks' server: WAL flushed in the background, not at each commit, as SQLite's
# synchronous=NORMAL in WAL mode does (the figures compare the two).
BENCH_SETTINGS = ("synchronous_commit=off",)


class PgUnavailable(Exception):
    """No server can be started here; the message says why (the tests skip with it)."""


def find_bindir() -> Path:
    """The newest installed PostgreSQL's bin directory."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name)
    )
    for folder in reversed(candidates):
        if (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    raise PgUnavailable(
        "no PostgreSQL server binaries (pg_ctl) on this machine: `make postgres` installs "
        "Debian's postgresql package"
    )


class PgServer:
    """One server: ``start()``, ``url(database)``, ``stop()``; ``kill()`` and ``start()`` again
    keep its data (a database that goes away and comes back)."""

    def __init__(self, *, durable: bool = False, settings: tuple[str, ...] | None = None) -> None:
        self.settings = SERVER_SETTINGS + (settings or (() if durable else FAST_SETTINGS))
        self.bindir = find_bindir()
        self.port = free_port()
        self._root = Path(tempfile.mkdtemp(prefix="tunewatch-pg-"))
        self.datadir = self._root / "data"
        self._count = 0
        self._lock = threading.Lock()
        self._as: list[str] = []
        if os.geteuid() == 0:
            try:
                account = pwd.getpwnam("postgres")
            except KeyError:
                raise PgUnavailable(
                    "running as root and there is no `postgres` user to run the server as"
                ) from None
            os.chown(self._root, account.pw_uid, account.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        self._root.chmod(0o700)

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self._as, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=str(self._root),
            env={**os.environ, "PGPASSWORD": PASSWORD},
        )

    def init(self) -> None:
        """``initdb`` with a password login for USER."""
        pwfile = self._root / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if self._as:
            account = pwd.getpwnam("postgres")
            os.chown(pwfile, account.pw_uid, account.pw_gid)
        result = self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.datadir),
            "-U",
            USER,
            f"--pwfile={pwfile}",
            "--auth=scram-sha-256",
            "-E",
            "UTF8",
            "--no-locale",
            "--no-sync",
        )
        pwfile.unlink()
        if result.returncode != 0:
            raise PgUnavailable(f"initdb failed: {result.stderr.strip()[-500:]}")

    def start(self) -> None:
        options = f"-p {self.port} " + " ".join(f"-c {s}" for s in self.settings)
        result = self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.datadir),
            "-l",
            str(self._root / "server.log"),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
            timeout=90,
        )
        if result.returncode != 0:
            log = ""
            with contextlib.suppress(OSError):
                log = (self._root / "server.log").read_text()[-500:]
            raise PgUnavailable(f"pg_ctl start failed: {result.stderr.strip()[-300:]} {log}")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``immediate``: as a crash)."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "stop")

    def server_pids(self) -> list[int]:
        """The postmaster's pid (its children are the connections' backends)."""
        try:
            return [int((self.datadir / "postmaster.pid").read_text().split()[0])]
        except (OSError, ValueError, IndexError):
            return []

    def remove(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self._root, ignore_errors=True)

    def url(self, database: str = "postgres", *, password: str = PASSWORD) -> str:
        return f"postgresql://{USER}:{password}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A new empty database; returns its URL."""
        with self._lock:
            self._count += 1
            name = f"test_{self._count}"
        result = self._run(
            str(self.bindir / "psql"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            USER,
            "-d",
            "postgres",
            "-q",
            "-c",
            f"CREATE DATABASE {name}",
        )
        if result.returncode != 0:
            raise RuntimeError(f"CREATE DATABASE failed: {result.stderr.strip()}")
        return self.url(name)


def start_server(*, durable: bool = False, settings: tuple[str, ...] | None = None) -> PgServer:
    """A started server; raises PgUnavailable (with the reason) when none can be started.
    ``durable``: every commit reaches the disk (a crash loses nothing committed); ``settings``:
    these instead of the fast ones."""
    server = PgServer(durable=durable, settings=settings)
    try:
        server.init()
        server.start()
    except PgUnavailable:
        shutil.rmtree(server._root, ignore_errors=True)
        raise
    except (OSError, subprocess.SubprocessError) as exc:
        shutil.rmtree(server._root, ignore_errors=True)
        raise PgUnavailable(f"the server could not be started: {exc}") from None
    return server


@contextlib.contextmanager
def session_server() -> Iterator[PgServer | str]:
    """The session's server, or the reason none could be started (the tests skip with it)."""
    try:
        server = start_server()
    except PgUnavailable as exc:
        yield f"no PostgreSQL server for the tests: {exc}"
        return
    try:
        yield server
    finally:
        server.remove()
