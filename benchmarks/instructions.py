"""Instructions per poll of the tracking engine, counted by valgrind's callgrind.

    python -m benchmarks.instructions [--polls 3000] [--bare]

Wall time on a shared 2-core machine moves by 20 % from one run to the next; instruction counts
do not (the same binary, inputs and environment give the same count within a fraction of a
percent, whatever else the machine does). This is the measure used to decide whether a
micro-optimisation pays its way: run it on the code with and without the change.

The simulator runs in its own process, outside valgrind. The engine process runs under
callgrind with instrumentation off; it switches counting on for the poll cycle alone (the
tracker started until every training was polled and recorded once) with ``callgrind_control``,
so setup and teardown are not counted. Every thread of the engine process counts (the database
thread too). Not part of ``make bench`` (about two minutes under valgrind).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import BEHIND_EVERY, ROOT, SimProcess, seed
from benchmarks.poll_cycle import stage2_layout

SUMMARY_RE = re.compile(r"^(?:summary|totals):\s+(\d+)", re.MULTILINE)


async def inner(port: int, db: Path, trainings: int, bare: bool) -> None:
    """The counted process: one poll cycle of the real tracker (or, with ``bare``, the bare
    aiohttp loop poll_cycle compares it with), counting on around it."""
    import aiohttp

    from benchmarks.poll_cycle import CONCURRENCY, RULES, OneKey, bare_loop, polls_and_writes
    from bot.sdapi.client import SdApiClient
    from bot.store import Store
    from bot.tracking.tracker import Tracker
    from tests.support.harness import wait_until

    base_url = f"http://127.0.0.1:{port}/api/v3"
    if bare:
        toggle("on")
        await bare_loop(base_url, trainings)
        toggle("off")
        return
    store = await Store.open(db)
    async with aiohttp.ClientSession() as session:
        client = SdApiClient(
            session,
            base_url,
            max_concurrency=CONCURRENCY,
            max_concurrency_per_key=CONCURRENCY,
        )
        tracker = Tracker(store, client, OneKey(), RULES)
        news = len(range(0, trainings, BEHIND_EVERY))
        toggle("on")
        tracker.start()
        await wait_until(
            lambda: polls_and_writes() >= (trainings, news), 600, "the poll cycle", every=0.05
        )
        await tracker.stop()
        toggle("off")
    await store.close()


def toggle(state: str) -> None:
    """Switch callgrind's counting on or off for this process (a no-op outside valgrind)."""
    if os.environ.get("TUNEWATCH_UNDER_CALLGRIND"):
        subprocess.run(
            ["callgrind_control", "-i", state, str(os.getpid())],
            check=True,
            capture_output=True,
        )


async def outer(polls: int, bare: bool) -> int:
    if shutil.which("valgrind") is None:
        print("valgrind is not installed: apt-get install valgrind")
        return 1
    with tempfile.TemporaryDirectory(prefix="tunewatch-instr-") as name:
        tmp = Path(name)
        db = tmp / "tunewatch.db"
        await seed(db, polls, **stage2_layout(polls))  # as poll_cycle: a bot following them
        out = tmp / "callgrind.out"
        async with SimProcess(polls, stage=2) as sim:
            command = [
                "valgrind",
                "--tool=callgrind",
                "--instr-atstart=no",
                f"--callgrind-out-file={out}",
                sys.executable,
                "-m",
                "benchmarks.instructions",
                "--inner",
                "--port",
                str(sim.port),
                "--db",
                str(db),
                "--trainings",
                str(polls),
                *(["--bare"] if bare else []),
            ]
            env = {**os.environ, "TUNEWATCH_UNDER_CALLGRIND": "1", "PYTHONHASHSEED": "0"}
            process = await asyncio.create_subprocess_exec(
                *command, cwd=str(ROOT), env=env, stderr=asyncio.subprocess.PIPE
            )
            _, stderr = await process.communicate()
        if os.environ.get("TUNEWATCH_CALLGRIND_KEEP"):
            shutil.copy(out, os.environ["TUNEWATCH_CALLGRIND_KEEP"])
        text = out.read_text() if out.exists() else ""
        counts = [int(m) for m in SUMMARY_RE.findall(text)]
        if process.returncode or not counts:
            print(stderr.decode(errors="replace")[-2000:])
            return 1
        total = max(counts)
        what = "request of the bare loop" if bare else "poll"
        print(f"instructions per {what}: {total / polls:,.0f} ({total:,} for {polls})")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.instructions", description=__doc__)
    parser.add_argument("--polls", "--trainings", dest="polls", type=int, default=3000)
    parser.add_argument(
        "--bare", action="store_true", help="count poll_cycle's bare aiohttp loop instead"
    )
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        asyncio.run(inner(args.port, args.db, args.polls, args.bare))
        return 0
    return asyncio.run(outer(args.polls, args.bare))


if __name__ == "__main__":
    sys.exit(main())
