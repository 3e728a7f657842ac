"""`python -m bot` against what its host can do to it (issue 14): a full disk when a "sent" mark
is written, the database file deleted while it runs, a second bot on the same file."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from bot.sdapi.simulator import Simulator
from tests.support.disk import TinyDisk
from tests.support.fakediscord import FakeDiscord
from tests.support.harness import (
    CHANNEL,
    GUILD,
    USER,
    BotProcess,
    free_port,
    health,
    running_bot,
    settings_for,
    step_messages,
    subscribe,
    titles,
    wait_until,
)

pytestmark = pytest.mark.timeout(120)


async def started(env: dict[str, str], fake: FakeDiscord, sessions: int) -> BotProcess:
    bot = BotProcess(env)
    await bot.start()
    await fake.wait_for(lambda f: f.identify_count >= sessions, timeout=30, what="READY")
    return bot


async def problems(port: int) -> list[str]:
    answer = await health(port)
    return [] if answer is None else list(answer[1].get("problems", []))


async def test_a_full_disk_at_the_sent_mark_sends_nothing_twice(
    fake: FakeDiscord, sim: Simulator, tiny_disk: TinyDisk
) -> None:
    # Seen before: 1,366 POSTs of the same message in 30 s, without backoff.
    port = free_port()
    env = settings_for(fake, sim, tiny_disk.path / "tunewatch.db", HTTP_PORT=port)
    training = sim.add_training("DiskFull01", stage=1)
    bot = await started(env, fake, 1)
    try:
        assert "Subscribed" in (await subscribe(fake, "DiskFull01"))["content"]
        hold = fake.hold(rf"^/channels/{CHANNEL}/messages$")
        training.advance()
        await asyncio.wait_for(hold.arrived.wait(), timeout=20)
        tiny_disk.fill()  # the message is on its way; its mark will not fit
        hold.release()
        await wait_until(
            lambda: _mentions(problems(port), "delivering is stopped"), 30, "/healthz to say it"
        )
        path = f"/channels/{CHANNEL}/messages"
        posts = [r for r in fake.requests if r.path == path and r.method == "POST"]
        assert len(posts) == 1  # sent once; not again while its mark cannot be written
        tiny_disk.free()
        await wait_until(lambda: _healthy(port), 30, "/healthz healthy again")
        training.advance(6)
        await fake.wait_for(
            lambda f: any("Model ready" in t for t in titles(step_messages(f, CHANNEL))),
            timeout=30,
        )
    finally:
        await bot.kill()
    shown = titles(step_messages(fake, CHANNEL))
    assert len(shown) == len(set(shown))  # every message once
    assert bot.log.count("delivering is stopped") == 1  # said once, not at every retry


async def _mentions(found: object, words: str) -> bool:
    return any(words in problem for problem in await found)  # type: ignore[misc]


async def _healthy(port: int) -> bool:
    answer = await health(port)
    return answer is not None and answer[0] == 200


@pytest.mark.parametrize("how", ["deleted", "replaced"])
async def test_the_database_file_gone_stops_the_bot_from_losing_more(
    fake: FakeDiscord, sim: Simulator, db_path: Path, how: str
) -> None:
    # Seen before: deliveries went on into the unlinked file, and after a restart the
    # subscriptions were gone, without a word.
    port = free_port()
    env = settings_for(fake, sim, db_path, HTTP_PORT=port)
    training = sim.add_training("Vanish0001", stage=1)
    bot = await started(env, fake, 1)
    try:
        assert "Subscribed" in (await subscribe(fake, "Vanish0001"))["content"]
        db_path.unlink()
        if how == "replaced":
            db_path.write_bytes(b"")
        await wait_until(lambda: _mentions(problems(port), how), 30, f"/healthz: file {how}")
        polls = sim.request_count("Vanish0001")
        training.advance(2)
        await wait_until(lambda: _mentions(problems(port), how), 5, "/healthz asked again")
        assert sim.request_count("Vanish0001") == polls  # stopped: nothing polled, nothing sent
        assert step_messages(fake, CHANNEL) == []
    finally:
        await bot.kill()
    assert f"was {how} while tunewatch had it open" in bot.log
    assert "polling and delivering are stopped" in bot.log


async def test_a_second_bot_on_the_same_file_refuses_to_start(
    fake: FakeDiscord, sim: Simulator, db_path: Path
) -> None:
    # Seen before: two bots on one file ran side by side, polling every training twice.
    env = settings_for(fake, sim, db_path)
    first = await started(env, fake, 1)
    try:
        second = BotProcess(env)
        await second.start()
        code = await second.wait()
    finally:
        await first.kill()
    assert code == 1
    told = [line for line in second.log.splitlines() if line.startswith("tunewatch: ")]
    assert len(told) == 1, second.log
    assert "in use by another tunewatch" in told[0]
    assert str(db_path) in told[0]
    assert "Traceback" not in second.log
    assert fake.identify_count == 1  # the second never reached Discord


async def test_a_flood_of_step_lines_is_one_folded_message_and_commands_still_answer(
    fake: FakeDiscord, sim: Simulator, db_path: Path
) -> None:
    # Seen before: 100,000 step lines in one answer made 100,000 pending deliveries, no
    # message in 60 s, and /training-list unanswered (the outbox query took 52.6 s). Here as
    # many bare step lines as the 1 MiB cap on an answer lets through.
    lines = [f"Step:{n}" for n in range(1, 80_001)]
    flood = {"status": "success", "messege": "training_started", "data": "\n".join(lines)}
    small = {"status": "success", "messege": "training_started", "data": lines[0]}
    answer = [small]
    sim.add_scripted("Flood00001", lambda: json.dumps(answer[0]).encode())
    async with running_bot(settings_for(fake, sim, db_path)) as bot:
        assert "Subscribed" in (await subscribe(fake, "Flood00001"))["content"]
        answer[0] = flood
        await fake.wait_for(
            lambda f: any("Folded" in str(m.embeds) for m in step_messages(f, CHANNEL)),
            timeout=30,
            what="the folded message",
        )
        listed = await fake.invoke(
            "training-list", {}, guild_id=GUILD, channel_id=CHANNEL, user_id=USER
        )
        assert "Flood00001" in str(await listed.wait_final(timeout=10))
        assert not listed.late  # answered within Discord's 3 seconds
        assert bot.deliverer is not None
    shown = step_messages(fake, CHANNEL)
    assert len(shown) == 10  # STEP_MESSAGES_PER_POLL: nine steps and one for the rest
    fields = {f["name"]: f["value"] for f in shown[-1].embeds[0]["fields"]}
    assert fields["Folded"].startswith("79,989 earlier steps")  # and its own
