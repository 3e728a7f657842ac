"""``python -m benchmarks [NAME ...] [--quick]``: run the benchmarks, print one line per figure.

Each benchmark runs in a fresh process (no state, memory or loop carried over from another);
the API simulator runs in a process of its own; everything binds 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import subprocess
import sys

from benchmarks.common import ROOT, emit, machine_line

BENCHMARKS = {
    "poll_cycle": "benchmarks.poll_cycle",
    "memory": "benchmarks.memory",
    "outbox": "benchmarks.outbox",
    "discord_pacing": "benchmarks.discord_pacing",
    "latency": "benchmarks.latency",
    "restart": "benchmarks.restart",
    "pg_cycle": "benchmarks.pg_cycle",
    "pg_outbox": "benchmarks.pg_outbox",
    "takeover": "benchmarks.takeover",
    "pg_pacing": "benchmarks.pg_pacing",
    "http_flood": "benchmarks.http_flood",
    "poll_policy": "benchmarks.poll_policy",
}


def run_one(name: str, quick: bool) -> int:
    module = importlib.import_module(BENCHMARKS[name])
    try:
        figures = asyncio.run(module.run(quick))
    except Exception as exc:
        logging.getLogger("benchmarks").exception("benchmark %s failed", name)
        print(f"{name:<34} FAILED: {exc!r}", flush=True)
        return 1
    emit(figures)
    return 0 if all(f.ok is not False for f in figures) else 3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("names", nargs="*", choices=[[], *BENCHMARKS], metavar="NAME")
    parser.add_argument("--quick", action="store_true", help="scaled-down loads (smoke test)")
    parser.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("discord.client").setLevel(logging.ERROR)  # voice extras not installed
    names = args.names or list(BENCHMARKS)
    if args.in_process:
        return max(run_one(name, args.quick) for name in names)
    print(machine_line(), flush=True)
    failed = 0
    for name in names:
        command = [sys.executable, "-m", "benchmarks", name, "--in-process"]
        if args.quick:
            command.append("--quick")
        code = subprocess.run(command, cwd=str(ROOT), check=False).returncode
        failed = max(failed, code)
    # 3: some target missed; 1: a benchmark failed to run.
    return 1 if failed == 1 else failed


if __name__ == "__main__":
    sys.exit(main())
