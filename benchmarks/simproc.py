"""The API simulator in its own process, so its CPU is not the engine's.

    python -m benchmarks.simproc --trainings 10000 --port 0 [--stage 2] [--advance-every 30]

prints ``PORT <n>`` once it listens on 127.0.0.1, then serves until stdin closes (the parent
went away) or SIGTERM. ``GET /_bench/stats`` answers the request count and the monotonic times
of the first and last request (CLOCK_MONOTONIC is shared by every process of the machine);
``POST /_bench/reset`` forgets those times.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time

from aiohttp import web

from bot.sdapi.simulator import DEFAULT_KEY, Simulator
from bot.sdapi.timelines import TIMELINES


def training_id(i: int) -> str:
    """The id of the i-th benchmark training."""
    return f"bench{i:06d}"


def build(args: argparse.Namespace) -> Simulator:
    sim = Simulator(
        advance_every=args.advance_every, record=False, keys=(DEFAULT_KEY,), retry_after=1.0
    )
    for i in range(args.trainings):
        added_at = None
        if args.base is not None:
            # Spread the trainings' timed advances evenly over one period.
            added_at = args.base + (args.advance_every or 0.0) * i / max(1, args.trainings)
        sim.add_training(
            training_id(i), stage=args.stage, added_at=added_at, timeline=args.timeline
        )
    return sim


async def serve(args: argparse.Namespace) -> None:
    sim = build(args)
    app = sim.make_app()

    async def stats(_: web.Request) -> web.Response:
        return web.json_response(
            {
                "requests": sim.request_count(),
                "first_at": sim.first_request_at,
                "last_at": sim.last_request_at,
                "now": time.monotonic(),
            }
        )

    async def reset(_: web.Request) -> web.Response:
        sim.first_request_at = sim.last_request_at = None
        return web.json_response({})

    app.router.add_get("/_bench/stats", stats)
    app.router.add_post("/_bench/reset", reset)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", args.port, backlog=1024)
    await site.start()
    port = runner.addresses[0][1]
    print(f"PORT {port}", flush=True)

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    # Stop when the parent closes our stdin (or dies).
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    eof = asyncio.create_task(reader.read())
    waiter = asyncio.create_task(stop.wait())
    await asyncio.wait({eof, waiter}, return_when=asyncio.FIRST_COMPLETED)
    for task in (eof, waiter):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.simproc")
    parser.add_argument("--trainings", type=int, required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--stage", type=int, default=2)
    parser.add_argument("--advance-every", type=float, default=None)
    # The benchmarks' arithmetic wants one new, increasingly numbered step line per stage: only
    # the simulator's "invented" timeline has that (see bot/sdapi/timelines.py).
    parser.add_argument("--timeline", default="invented", choices=sorted(TIMELINES))
    parser.add_argument(
        "--base", type=float, default=None, help="monotonic time the staggered advances start"
    )
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
