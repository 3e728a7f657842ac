"""Issue 14, finding 3: a flood of slow connections on the bot's HTTP port.

``python -m bot`` runs between the loopback fakes with a file limit like systemd's default
(1,024) and its HTTP server on. A flood process (the attacker, on a loop of its own) holds many
connections that never finish their request: half a header, or a webhook body that never ends,
each trickled a line every few seconds so it looks alive; a connection the server closes is
opened again on the next round of trickles, as slowloris.py does (``--churn``: at once). While it
lasts, this process (the operator's monitor and the members) checks ``/healthz`` once a second
and ``/training-status`` every few seconds, counts the polls reaching the API, the bot's open
files and what the bot writes on stderr.

    python -m benchmarks http_flood [--quick]
    python -m benchmarks.http_flood [--seconds 60] [--connections 1100] [--nofile 1024]
                                    [--churn] [--bot-root PATH]

``--bot-root`` runs the bot from another checkout (e.g. ``git archive`` of the commit before the
fix) with the same fakes and the same flood: the before/after figures of the issue.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp

from benchmarks.common import ROOT, Figure, emit, temp_dir
from bot.config import Settings
from bot.sdapi.simulator import DEFAULT_KEY, Simulator
from tests.support.fakediscord import FakeDiscord
from tests.support.harness import CHANNEL, GUILD, USER, free_port, subscribe, wait_until

SECRET = "flood-bench-webhook-secret-0123456789"  # noqa: S105 (the benchmark's own)
TRICKLE_SECONDS = 5.0
PROBE_EVERY = 1.0
PROBE_TIMEOUT = 3.0
STATUS_EVERY = 5.0
POLL_INTERVAL = 1.0


@dataclass
class FloodStats:
    """What the flood process saw."""

    opened: int = 0
    closed_by_server: int = 0
    connect_failed: int = 0
    open_now: int = 0
    max_open: int = 0


@dataclass
class ProbeStats:
    """What the monitor and the members saw."""

    healthz_sent: int = 0
    healthz_answered: int = 0
    healthz_failed: dict[str, int] = field(default_factory=dict)
    status_sent: int = 0
    status_acknowledged: int = 0
    max_fds: int = 0


# ---------------------------------------------------------------------------- the flood process


async def slow_client(
    port: int, body: bool, churn: bool, stop: asyncio.Event, stats: FloodStats
) -> None:
    """One slowloris slot: a request that never ends, reopened when the server closes it."""
    if body:
        # A webhook whose body never ends (a wrong secret: the flood does not know it).
        start = (
            b"POST /webhooks/sdapi/guess HTTP/1.1\r\nHost: bot\r\n"
            b"Content-Type: application/json\r\nContent-Length: 60000\r\n\r\n{"
        )
        more = b" "
    else:
        start = b"GET /healthz HTTP/1.1\r\nHost: bot\r\n"
        more = b"X-Pad: 1\r\n"
    while not stop.is_set():
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port), timeout=5
            )
        except (OSError, TimeoutError):
            stats.connect_failed += 1
            await asyncio.sleep(0.5)
            continue
        stats.opened += 1
        stats.open_now += 1
        stats.max_open = max(stats.max_open, stats.open_now)
        try:
            writer.write(start)
            while not stop.is_set():
                try:
                    data = await asyncio.wait_for(reader.read(4096), TRICKLE_SECONDS)
                except TimeoutError:
                    writer.write(more)
                    continue
                if not data:
                    stats.closed_by_server += 1
                    break
        except OSError:
            stats.closed_by_server += 1
        finally:
            stats.open_now -= 1
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        if not churn:
            # As slowloris.py does: dead sockets are opened again on the next round of trickles.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), TRICKLE_SECONDS)


async def flood(port: int, connections: int, churn: bool, seconds: float) -> FloodStats:
    """``connections`` slow clients for ``seconds``; a quarter of them send a body."""
    stats = FloodStats()
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(slow_client(port, i % 4 == 0, churn, stop, stats))
        for i in range(connections)
    ]
    await asyncio.sleep(seconds)
    stop.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return stats


async def flood_process(port: int, connections: int, churn: bool, seconds: float) -> FloodStats:
    """The flood in a process of its own, as an attacker is not the operator's monitor."""
    command = [sys.executable, "-m", "benchmarks.http_flood", "--flood", str(port)]
    command += ["--connections", str(connections), "--seconds", str(seconds)]
    if churn:
        command.append("--churn")
    proc = await asyncio.create_subprocess_exec(
        *command, cwd=str(ROOT), stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    return FloodStats(**json.loads(out.decode().strip().splitlines()[-1]))


# ------------------------------------------------------------------------------ the monitor side


async def probe_healthz(port: int, stop: asyncio.Event, stats: ProbeStats) -> None:
    """GET /healthz once a second, as a load balancer's health check would."""
    while not stop.is_set():
        stats.healthz_sent += 1
        deadline = time.monotonic() + PROBE_TIMEOUT
        stage = "connect"
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port), timeout=PROBE_TIMEOUT
            )
            try:
                stage = "answer"
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: bot\r\nConnection: close\r\n\r\n")
                answer = await asyncio.wait_for(reader.read(), deadline - time.monotonic())
            finally:
                writer.close()
            if answer.startswith(b"HTTP/1.1 "):
                stats.healthz_answered += 1
            else:
                stats.healthz_failed["closed"] = stats.healthz_failed.get("closed", 0) + 1
        except (OSError, TimeoutError):
            stats.healthz_failed[stage] = stats.healthz_failed.get(stage, 0) + 1
        await asyncio.sleep(PROBE_EVERY)


async def probe_status(fake: FakeDiscord, stop: asyncio.Event, stats: ProbeStats) -> None:
    """/training-status every few seconds: acknowledged within Discord's 3 s?"""
    while not stop.is_set():
        stats.status_sent += 1
        interaction = await fake.invoke(
            "training-status",
            {"training_id": "Flood00001"},
            guild_id=GUILD,
            channel_id=CHANNEL,
            user_id=USER,
        )
        with contextlib.suppress(TimeoutError):
            await fake.wait_for(lambda _, i=interaction: i.acknowledged, timeout=5)
        if interaction.acknowledged and not interaction.late:
            stats.status_acknowledged += 1
        await asyncio.sleep(STATUS_EVERY)


async def sample_fds(pid: int, stop: asyncio.Event, stats: ProbeStats) -> None:
    while not stop.is_set():
        with contextlib.suppress(OSError):
            stats.max_fds = max(stats.max_fds, len(os.listdir(f"/proc/{pid}/fd")))
        await asyncio.sleep(0.5)


async def healthz_ok(port: int) -> bool:
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT)) as session,
            session.get(f"http://127.0.0.1:{port}/healthz") as response,
        ):
            return response.status == 200
    except (aiohttp.ClientError, TimeoutError, OSError):
        return False


async def measure(
    seconds: float, connections: int, nofile: int, bot_root: Path, churn: bool
) -> tuple[FloodStats, ProbeStats, dict[str, float]]:
    probes = ProbeStats()
    async with temp_dir() as tmp, Simulator() as sim:
        sim.add_training("Flood00001", stage=1)
        fake = FakeDiscord()
        fake.add_guild(GUILD, "Trainers")
        fake.add_channel(GUILD, CHANNEL, "training-log")
        await fake.start()
        port = free_port()
        env = {k: v for k, v in os.environ.items() if k not in Settings.model_fields}
        env.update(
            {
                "DISCORD_TOKEN": fake.token,
                "SD_API_KEY": DEFAULT_KEY,
                "SD_API_BASE_URL": sim.base_url,
                "DATABASE_PATH": str(tmp / "tunewatch.db"),
                "POLL_INTERVAL_SECONDS": str(POLL_INTERVAL),
                "DISCORD_API_BASE": fake.api_base,
                "DISCORD_GATEWAY_URL": fake.gateway_url,
                "LOG_LEVEL": "INFO",
                "HTTP_PORT": str(port),
                "WEBHOOK_SECRET": SECRET,
                "PYTHONPATH": str(bot_root),
            }
        )
        stderr_path = tmp / "stderr"
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]

        def limit_files() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard))

        with stderr_path.open("wb") as stderr_file:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bot",
                cwd=str(tmp),
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=stderr_file,
                preexec_fn=limit_files,
            )
        try:
            await wait_until(lambda: healthz_ok(port), 60, "the bot's /healthz", 0.2)
            await subscribe(fake, "Flood00001")
            polls_before = sim.request_count("Flood00001")
            size_before = stderr_path.stat().st_size
            stop = asyncio.Event()
            flooding = asyncio.create_task(flood_process(port, connections, churn, seconds))
            # Let the flood connect before the first probe.
            await asyncio.sleep(1)
            tasks = [
                asyncio.create_task(probe_healthz(port, stop, probes)),
                asyncio.create_task(probe_status(fake, stop, probes)),
                asyncio.create_task(sample_fds(proc.pid, stop, probes)),
            ]
            started = time.monotonic()
            await asyncio.wait([flooding], timeout=seconds - 1)
            stop.set()
            flood_seconds = time.monotonic() - started + 1
            polls = sim.request_count("Flood00001") - polls_before
            size_flood = stderr_path.stat().st_size - size_before
            with stderr_path.open("rb") as f:
                f.seek(size_before)
                during = f.read(size_flood)
            await asyncio.gather(*tasks)
            stats = await flooding
            recovered = False
            with contextlib.suppress(TimeoutError):
                await wait_until(lambda: healthz_ok(port), 30, "/healthz after the flood", 0.5)
                recovered = True
            alive = proc.returncode is None
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
            await fake.stop()
    return (
        stats,
        probes,
        {
            "seconds": flood_seconds,
            "stderr_bytes": size_flood,
            "stderr_lines": during.count(b"\n"),
            "tracebacks": during.count(b"Traceback (most recent call last)"),
            "polls": polls,
            "recovered": float(recovered),
            "alive": float(alive),
        },
    )


async def run(
    quick: bool,
    *,
    seconds: float | None = None,
    connections: int | None = None,
    nofile: int | None = None,
    bot_root: Path = ROOT,
    churn: bool = False,
) -> list[Figure]:
    seconds = seconds if seconds is not None else (15.0 if quick else 60.0)
    connections = connections if connections is not None else (300 if quick else 1_100)
    nofile = nofile if nofile is not None else (256 if quick else 1_024)
    stats, probes, f = await measure(seconds, connections, nofile, bot_root, churn)
    flood_line = f"{connections} slow connections, {nofile} open files, {f['seconds']:.0f} s"
    if churn:
        flood_line += ", each reopened at once"
    expected_polls = f["seconds"] / POLL_INTERVAL
    answered = probes.healthz_answered / max(1, probes.healthz_sent)
    return [
        Figure(
            "http_flood.stderr_bytes",
            f["stderr_bytes"],
            "B",
            "< 100,000",
            f["stderr_bytes"] < 100_000,
            f"{f['stderr_lines']:.0f} lines, {f['tracebacks']:.0f} tracebacks; {flood_line}",
        ),
        Figure(
            "http_flood.healthz_answered",
            answered,
            "ratio",
            "> 0.9",
            answered > 0.9,
            f"{probes.healthz_answered} of {probes.healthz_sent} probes answered within "
            f"{PROBE_TIMEOUT:g} s; failed at: {probes.healthz_failed or 'none'}",
        ),
        Figure(
            "http_flood.status_acknowledged",
            probes.status_acknowledged / max(1, probes.status_sent),
            "ratio",
            "1",
            probes.status_acknowledged == probes.status_sent,
            f"{probes.status_acknowledged} of {probes.status_sent} /training-status in time",
        ),
        Figure(
            "http_flood.polls",
            f["polls"],
            "polls",
            f"> {expected_polls / 2:.0f}",
            f["polls"] > expected_polls / 2,
            f"API polls of a followed training during the flood, one due every {POLL_INTERVAL} s",
        ),
        Figure(
            "http_flood.max_fds",
            probes.max_fds,
            "fds",
            f"< {nofile}",
            probes.max_fds < nofile,
            f"the bot's open files at most; {stats.opened} flood connections opened, "
            f"{stats.closed_by_server} closed by the server, {stats.connect_failed} failed to "
            f"connect; /healthz after the flood: {bool(f['recovered'])}, "
            f"alive: {bool(f['alive'])}",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.http_flood", description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--connections", type=int, default=1_100)
    parser.add_argument("--nofile", type=int, default=1_024)
    parser.add_argument("--bot-root", type=Path, default=ROOT)
    parser.add_argument(
        "--churn",
        action="store_true",
        help="open a closed connection again at once (a connection-rate flood)",
    )
    parser.add_argument("--flood", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.flood is not None:
        stats = asyncio.run(flood(args.flood, args.connections, args.churn, args.seconds))
        print(json.dumps(asdict(stats)), flush=True)
        return
    figures = asyncio.run(
        run(
            False,
            seconds=args.seconds,
            connections=args.connections,
            nofile=args.nofile,
            bot_root=args.bot_root.resolve(),
            churn=args.churn,
        )
    )
    emit(figures)


if __name__ == "__main__":
    main()
