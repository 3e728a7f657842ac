"""What the PostgreSQL benchmarks share: a throwaway server and the CPU it spends."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import psutil

from tests.support.pg import BENCH_SETTINGS, PgServer, start_server


@contextlib.contextmanager
def pg_server() -> Iterator[PgServer]:
    """A server for one benchmark (synchronous_commit off, as SQLite's synchronous=NORMAL)."""
    server = start_server(settings=BENCH_SETTINGS)
    try:
        yield server
    finally:
        server.remove()


class ServerCpu:
    """CPU seconds the server's processes (the postmaster and every backend) spent since
    ``start()``: the database's share of the work, which SQLite does inside the bot."""

    def __init__(self, server: PgServer) -> None:
        self._server = server
        self._start: dict[int, float] = {}

    def _now(self) -> dict[int, float]:
        seen: dict[int, float] = {}
        for pid in self._server.server_pids():
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(pid)
                for process in [root, *root.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        times = process.cpu_times()
                        seen[process.pid] = times.user + times.system
        return seen

    def start(self) -> None:
        self._start = self._now()

    def seconds(self) -> float:
        return sum(cpu - self._start.get(pid, 0.0) for pid, cpu in self._now().items())
