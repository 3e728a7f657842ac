"""The bot's HTTP server alone, in a process of its own (so a test can lower its file limit):

    python -m tests.support.opsproc DB [--max-connections N] [--read-timeout S]
                                       [--secret S] [--spare-files N]

prints ``PORT <n>`` once it listens on 127.0.0.1, logs to stderr as ``python -m bot`` does, and
serves until stdin closes. The real OpsServer and Store; the tracker and the gateway are stand-ins
that are always healthy. ``--spare-files N`` opens files until only N descriptors are left, as if
the rest of the bot held them, so that accepting a connection can fail for want of one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import time
from pathlib import Path

from bot.store import Store
from bot.web import HttpLimits, OpsDeps, OpsServer


class HealthyTracker:
    """Ticks whenever asked; nobody is followed."""

    @property
    def last_tick(self) -> float:
        return time.time()

    async def poll_soon(self, training_id: str) -> bool:
        return False


def hold_all_files_but(spare: int) -> list[int]:
    """Open /dev/null until the file limit, then give ``spare`` descriptors back."""
    held = []
    with contextlib.suppress(OSError):
        while True:
            held.append(os.open(os.devnull, os.O_RDONLY))
    for fd in held[len(held) - spare :]:
        os.close(fd)
    return held[: len(held) - spare]


async def serve(args: argparse.Namespace) -> None:
    store = await Store.open(Path(args.db))
    server = OpsServer(
        OpsDeps(
            store=store,
            tracker=HealthyTracker(),  # type: ignore[arg-type]
            gateway_connected=lambda: True,
            webhook_secret=args.secret,
        ),
        limits=HttpLimits(args.max_connections, args.read_timeout),
    )
    await server.start("127.0.0.1", 0)
    held = hold_all_files_but(args.spare_files) if args.spare_files is not None else []
    sys.stdout.write(f"PORT {server.port}\n")
    sys.stdout.flush()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        await reader.read()  # until the parent closes our stdin
    finally:
        for fd in held:
            os.close(fd)
        await server.stop()
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.support.opsproc")
    parser.add_argument("db")
    parser.add_argument("--max-connections", type=int, default=128)
    parser.add_argument("--read-timeout", type=float, default=10.0)
    parser.add_argument("--secret", default=None)
    parser.add_argument("--spare-files", type=int, default=None)
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
