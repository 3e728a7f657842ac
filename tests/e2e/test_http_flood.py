"""`python -m bot` with a low file limit and its HTTP port flooded with slow connections (issue
14, finding 3): /healthz answers, /training-status is acknowledged, and the log stays short."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from bot.sdapi.simulator import Simulator
from tests.support.fakediscord import FakeDiscord
from tests.support.harness import (
    CHANNEL,
    GUILD,
    USER,
    BotProcess,
    free_port,
    settings_for,
    wait_until,
)
from tests.support.slow import HANG, Slow

pytestmark = pytest.mark.timeout(120)
FILES = 128  # the bot's RLIMIT_NOFILE: its HTTP server holds at most half
FLOOD = 300


async def healthz(port: int) -> int | None:
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HANG)) as session,
            session.get(f"http://127.0.0.1:{port}/healthz") as response,
        ):
            return response.status
    except (aiohttp.ClientError, OSError):
        return None


async def test_a_flood_of_slow_connections_does_not_take_the_bot_down(
    fake: FakeDiscord, sim: Simulator, db_path: Path
) -> None:
    sim.add_training("Flood00001", stage=2)
    port = free_port()
    env = settings_for(fake, sim, db_path, HTTP_PORT=port, WEBHOOK_SECRET="x" * 32)
    bot = BotProcess(env, nofile=FILES)
    clients: list[Slow] = []
    await bot.start()
    try:

        async def healthy() -> bool:
            return await healthz(port) == 200

        await wait_until(healthy, 60, "the bot's /healthz", 0.2)
        before = len(bot.output)

        kinds = ("header", "body", "silent")
        clients += await asyncio.gather(
            *(Slow(port, kinds[i % 3]).open(trickle=0.5) for i in range(FLOOD))
        )
        # Past the cap the server closes the slow connections that have waited longest.
        for closed, done in enumerate(asyncio.as_completed([c.closed() for c in clients]), 1):
            await done
            if closed == FLOOD - FILES // 2:
                break

        # While the rest of the flood holds its connections:
        assert await healthz(port) == 200
        interaction = await fake.invoke(
            "training-status",
            {"training_id": "Flood00001"},
            guild_id=GUILD,
            channel_id=CHANNEL,
            user_id=USER,
        )
        final = await interaction.wait_final(timeout=20)
        assert interaction.acknowledged
        assert not interaction.late
        assert "Flood00001" in final["embeds"][0]["title"]
        during = bot.output[before:].decode(errors="replace").splitlines()
    finally:
        await asyncio.gather(*(c.close() for c in clients))
        await bot.kill()
    assert "HTTP_MAX_CONNECTIONS=128 lowered to 64" in bot.log
    assert not [line for line in during if "Traceback" in line or "ERROR" in line]
    assert len([line for line in during if "HTTP server" in line]) <= 2, during
