"""The HTTP server under slow and many connections (issue 14, finding 3): a deadline for a whole
request, a cap on connections that slow clients cannot hold against a quick one, and logs of a
line or two per burst, also in a process out of file descriptors."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from bot.config import Settings
from bot.http_guard import connection_cap
from bot.store import Store
from bot.web import DEFAULT_LIMITS, HttpLimits, OpsDeps, OpsServer
from tests.support.harness import ROOT, wait_until
from tests.support.slow import HANG, Slow

pytestmark = pytest.mark.timeout(60)
SECRET = "hook-secret-for-hardening-tests"


class Tracker:
    """Always ticking; ``poll_soon`` waits on ``release`` when ``hold`` is set."""

    def __init__(self) -> None:
        self.hold = False
        self.release = asyncio.Event()
        self.waiting = 0

    @property
    def last_tick(self) -> float:
        return time.time()

    async def poll_soon(self, training_id: str) -> bool:
        if self.hold:
            self.waiting += 1
            await self.release.wait()
        return False


@contextlib.asynccontextmanager
async def ops_server(
    tmp_path: Path, limits: HttpLimits, tracker: Tracker | None = None, store: Store | None = None
) -> AsyncIterator[OpsServer]:
    owned = store is None
    store = store or await Store.open(tmp_path / "web.db")
    server = OpsServer(
        OpsDeps(
            store=store,
            tracker=tracker or Tracker(),  # type: ignore[arg-type]
            gateway_connected=lambda: True,
            webhook_secret=SECRET,
        ),
        limits=limits,
    )
    await server.start("127.0.0.1", 0)
    try:
        yield server
    finally:
        await server.stop()
        if owned:
            await store.close()


@pytest.fixture
async def clients() -> AsyncIterator[list[Slow]]:
    opened: list[Slow] = []
    yield opened
    await asyncio.gather(*(c.close() for c in opened))


async def healthz(port: int) -> int:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HANG)) as session,
        session.get(f"http://127.0.0.1:{port}/healthz") as response,
    ):
        return response.status


async def quick_healthz(port: int) -> bytes:
    """GET /healthz in one write, on a connection the server closes after answering."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: bot\r\nConnection: close\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), HANG)
    writer.close()
    return answer[:12]


def messages(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


def test_settings_and_defaults_agree() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert HttpLimits.from_settings(settings) == DEFAULT_LIMITS
    assert settings.HTTP_MAX_CONNECTIONS < 1024 // 2
    env = (ROOT / ".env.example").read_text()
    assert f"HTTP_MAX_CONNECTIONS={settings.HTTP_MAX_CONNECTIONS}\n" in env
    assert f"HTTP_READ_TIMEOUT_SECONDS={settings.HTTP_READ_TIMEOUT_SECONDS:g}\n" in env


def test_the_cap_leaves_half_the_file_limit_to_the_bot() -> None:
    assert connection_cap(128, None) == 128
    assert connection_cap(128, 1024) == 128
    assert connection_cap(128, 64) == 32
    assert connection_cap(128, 1) == 1


async def test_slow_requests_are_closed_after_the_read_timeout(
    tmp_path: Path, clients: list[Slow], caplog: pytest.LogCaptureFixture
) -> None:
    limits = HttpLimits(max_connections=100, read_timeout=0.3)
    async with ops_server(tmp_path, limits) as server:
        assert server.port is not None
        kinds = ["header"] * 15 + ["body"] * 15 + ["silent"] * 10
        clients += [await Slow(server.port, kind, SECRET).open() for kind in kinds]
        # A byte every 50 ms does not buy time: the deadline is for the whole request.
        await asyncio.gather(*(c.closed() for c in clients))
        await wait_until(lambda: server.connections == 0, HANG, "no connection left")
        # A request sent at once is answered as before.
        assert await healthz(server.port) == 200
        answered = [c for c in clients if c.received]
        # Slow webhook bodies may be told 408 as they are closed; nothing else is answered.
        assert all(c.kind == "body" and c.received.startswith(b"HTTP/1.1 408") for c in answered)
    lines = messages(caplog, "sent no complete request within 0.3 s")
    assert lines[0] == "HTTP server closed a connection that sent no complete request within 0.3 s"
    assert len(lines) == 2
    assert "(39 more like it in" in lines[1]


async def test_an_idle_keep_alive_connection_closes_quietly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with ops_server(tmp_path, HttpLimits(max_connections=10, read_timeout=0.2)) as server:
        assert server.port is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: bot\r\n\r\n")
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        with contextlib.suppress(ConnectionError):
            while await asyncio.wait_for(reader.read(4096), HANG):
                pass
        writer.close()
        await wait_until(lambda: server.connections == 0, HANG, "no connection left")
    assert messages(caplog, "sent no complete request") == []


async def test_past_the_cap_the_longest_waiting_slow_connection_makes_room(
    tmp_path: Path, clients: list[Slow], caplog: pytest.LogCaptureFixture
) -> None:
    # A long deadline: here connections close only to make room.
    async with ops_server(tmp_path, HttpLimits(max_connections=10, read_timeout=60)) as server:
        assert server.port is not None
        for n in range(1, 11):
            clients.append(await Slow(server.port, "header").open(trickle=None))
            # One at a time, so that "longest waiting" is the order they were opened in.
            await wait_until(lambda n=n: server.connection_states()["stalled"] == n, HANG)
        first, rest = clients[:10], []
        for _ in range(5):
            rest.append(await Slow(server.port, "header").open(trickle=None))
            clients.append(rest[-1])
        await asyncio.gather(*(c.closed() for c in first[:5]))
        await wait_until(lambda: server.connection_states()["stalled"] == 10, HANG)
        assert server.connections == 10

        # /healthz is answered while the flood holds every slot: it pushes out the next oldest.
        assert await healthz(server.port) == 200
        await first[5].closed()
        assert not first[5].received
        assert server.connections <= 10
    warnings = messages(caplog, "at its cap of 10 connections")
    assert warnings[0].startswith("HTTP server at its cap of 10 connections: closing the ones")
    assert len(warnings) == 2  # the first, and the sum at the end
    assert "(5 more like it in" in warnings[1]


async def test_at_the_cap_stalled_connections_go_before_fresh_ones(
    tmp_path: Path, clients: list[Slow]
) -> None:
    async with ops_server(tmp_path, HttpLimits(max_connections=4, read_timeout=60)) as server:
        assert server.port is not None
        for kind in ("header", "header", "silent", "silent"):
            clients.append(await Slow(server.port, kind).open(trickle=None))
            await wait_until(lambda: server.connections == len(clients), HANG)
        await wait_until(lambda: server.connection_states()["stalled"] == 2, HANG)
        slow = list(clients)
        # Each quick request makes room: first by closing a client that sent part of a request
        # (longest waiting first), then one that has sent nothing yet, whose request could be
        # on its way. A silent filler keeps the server at its cap between rounds.
        for n, victim in enumerate(slow):
            if server.connections < 4:
                clients.append(await Slow(server.port, "silent").open())
                await wait_until(lambda: server.connections == 4, HANG, "back at the cap")
            assert await quick_healthz(server.port) == b"HTTP/1.1 200"
            assert await victim.closed() == b""
            assert all(c.is_open() for c in slow[n + 1 :])


async def test_when_every_connection_is_busy_new_ones_are_closed_at_once(
    tmp_path: Path,
) -> None:
    tracker = Tracker()
    tracker.hold = True
    limits = HttpLimits(max_connections=3, read_timeout=60)
    async with (
        ops_server(tmp_path, limits, tracker) as server,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HANG)) as http,
    ):
        assert server.port is not None
        url = f"http://127.0.0.1:{server.port}/webhooks/sdapi/{SECRET}"

        async def webhook(n: int) -> int:
            payload = {"model_id": f"Busy00000{n}", "training_status": "training_success"}
            async with http.post(url, json=payload) as response:
                return response.status

        held = [asyncio.create_task(webhook(n)) for n in range(3)]
        try:
            await wait_until(lambda: tracker.waiting == 3, HANG, "three webhooks in a handler")
            assert server.connection_states()["busy"] == 3

            late = await Slow(server.port, "silent").open()
            assert await late.closed() == b""  # no answer: closed as soon as accepted
            await late.close()
            assert server.connections == 3
        finally:
            # The flood is cut: the held requests are answered, and /healthz again.
            tracker.release.set()
        assert await asyncio.gather(*held) == [202, 202, 202]
        assert await healthz(server.port) == 200


async def test_a_malformed_request_is_one_warning_line_without_the_secret(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with ops_server(tmp_path, HttpLimits(max_connections=50, read_timeout=5)) as server:
        assert server.port is not None
        for _ in range(20):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            # A header line without a colon: aiohttp answers 400 and logs it at ERROR itself.
            writer.write(f"POST /webhooks/sdapi/{SECRET} HTTP/1.1\r\nbroken\r\n\r\n".encode())
            assert b" 400 Bad Request" in await asyncio.wait_for(reader.read(), HANG)
            writer.close()
    records = [r for r in caplog.records if r.name == "bot.web.server"]
    assert [r.levelno for r in records] == [logging.WARNING, logging.WARNING]
    assert all(r.exc_info is None and "\n" not in r.getMessage() for r in records)
    assert "(19 more like it in" in records[1].getMessage()
    assert not any(SECRET in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------- a process short of file descriptors


async def opsproc(
    tmp_path: Path, nofile: int, *args: str
) -> tuple[asyncio.subprocess.Process, int]:
    """tests/support/opsproc.py (the real server alone) under a limit of ``nofile`` files."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]

    def limit_files() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard))

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.support.opsproc",
        str(tmp_path / "ops.db"),
        *args,
        cwd=str(ROOT),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=limit_files,
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), HANG)
    assert line.startswith(b"PORT "), line
    return proc, int(line.split()[1])


async def stop(proc: asyncio.subprocess.Process) -> list[str]:
    """Close its stdin (it stops serving) and return what it wrote on stderr."""
    assert proc.stdin is not None
    proc.stdin.close()
    _out, err = await asyncio.wait_for(proc.communicate(), HANG)
    assert proc.returncode == 0, err.decode(errors="replace")
    return err.decode(errors="replace").splitlines()


async def test_a_flood_past_a_low_file_limit_costs_a_few_log_lines(
    tmp_path: Path, clients: list[Slow]
) -> None:
    proc, port = await opsproc(tmp_path, 64)
    try:
        clients += await asyncio.gather(
            *(Slow(port, ("header", "body", "silent")[i % 3]).open() for i in range(200))
        )
        # A cap of 32 (half of 64 files): the 168 connections past it push out older ones.
        for closed, done in enumerate(asyncio.as_completed([c.closed() for c in clients]), 1):
            await done
            if closed == 200 - 32:
                break
        assert await healthz(port) == 200
    finally:
        await asyncio.gather(*(c.close() for c in clients))
        lines = await stop(proc)
    assert not [line for line in lines if "Traceback" in line]
    assert any("HTTP_MAX_CONNECTIONS=128 lowered to 32" in line for line in lines)
    cap_lines = [line for line in lines if "at its cap of 32" in line]
    assert 1 <= len(cap_lines) <= 2, lines
    assert len(lines) <= 10, lines


async def test_out_of_file_descriptors_accepting_waits_and_says_so_once(
    tmp_path: Path, clients: list[Slow]
) -> None:
    # The process holds all its files but 6 (as if the bot's own connections had them):
    # accept() fails for want of a descriptor until slow connections time out and free some.
    proc, port = await opsproc(tmp_path, 128, "--read-timeout", "0.3", "--spare-files", "6")
    try:
        clients += await asyncio.gather(*(Slow(port, "header").open() for _ in range(20)))
        await asyncio.gather(*(c.closed() for c in clients))
    finally:
        await asyncio.gather(*(c.close() for c in clients))
        lines = await stop(proc)
    assert not [line for line in lines if "Traceback" in line]
    starved = [line for line in lines if "cannot accept connections: Too many open files" in line]
    assert 1 <= len(starved) <= 2, lines
    assert len(lines) <= 10, lines


@pytest.mark.allow_errors
async def test_a_failing_handler_logs_its_traceback_once_per_burst(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = await Store.open(tmp_path / "web.db")
    limits = HttpLimits(max_connections=10, read_timeout=5)
    async with ops_server(tmp_path, limits, store=store) as server:
        assert server.port is not None
        await store.close()  # /metrics now fails in its handler: a 500
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HANG)) as http:
            for _ in range(5):
                async with http.get(f"http://127.0.0.1:{server.port}/metrics") as response:
                    assert response.status == 500
    errors = [r for r in caplog.records if r.name == "bot.web.server"]
    assert [r.levelno for r in errors] == [logging.ERROR, logging.ERROR]
    assert "Traceback (most recent call last)" in errors[0].getMessage()
    assert "(4 more like it in" in errors[1].getMessage()
