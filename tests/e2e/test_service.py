"""`python -m bot` as a service manager runs it: a signal stops it cleanly in every state (and a
restart on the same database shows every step once), a second signal stops it at once, and
every failure at start is one line saying what to do, with a non-zero exit code."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest

from bot.config import Settings
from bot.sdapi.simulator import Fault, Simulator
from bot.store import Store
from tests.support.fakediscord import FakeDiscord
from tests.support.harness import (
    CHANNEL,
    GUILD,
    ROOT,
    USER,
    BotProcess,
    free_port,
    settings_for,
    step_messages,
    subscribe,
    titles,
    wait_until,
)

pytestmark = pytest.mark.timeout(120)

TID = "StopTrain01"
EXPECTED = [
    f"{TID} · Step 2: Training Done",
    f"{TID} · Step 3: Model Compressing",
    f"{TID} · Step 4: Model Uploading",
    f"{TID} · Step 5: Model Uploaded",
    f"{TID} · Step 6: Deploying Model",
    f"{TID} · Model ready",
]
LOG_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (\w+) ")


def wal_of(db: Path) -> Path:
    return db.with_name(db.name + "-wal")


def assert_closed_cleanly(bot: BotProcess, code: int, db: Path) -> None:
    """Exit 0 after the whole close: the database and every HTTP session closed."""
    assert code == 0, bot.log
    assert "stopped cleanly" in bot.log
    assert "Traceback" not in bot.log, bot.log
    # aiohttp complains about a session or connector never closed when the process ends.
    assert "Unclosed" not in bot.log, bot.log
    # SQLite removes the write-ahead log when the last connection to the database closes.
    assert not wal_of(db).exists()


async def started(env: dict[str, str], fake: FakeDiscord, sessions: int) -> BotProcess:
    bot = BotProcess(env)
    await bot.start()
    await fake.wait_for(lambda f: f.identify_count == sessions, timeout=30, what="READY")
    return bot


@pytest.fixture
async def processes() -> AsyncIterator[list[BotProcess]]:
    """Bot processes a test started: killed at the end whatever happened."""
    started: list[BotProcess] = []
    yield started
    for bot in started:
        await bot.kill()


async def step_posted(fake: FakeDiscord, count: int) -> None:
    await fake.wait_for(
        lambda f: len(step_messages(f, CHANNEL)) == count, timeout=30, what=f"{count} steps"
    )


async def idle(fake: FakeDiscord, sim: Simulator) -> Callable[[], None]:
    """Ready, following nothing."""
    await fake.wait_for(lambda f: len(f.command_syncs) == 1, what="commands synced")
    return lambda: None


async def polling(fake: FakeDiscord, sim: Simulator) -> Callable[[], None]:
    """Following a training between two polls."""
    await subscribe(fake, TID)
    sim.trainings[TID].advance()
    await step_posted(fake, 1)
    await sim.wait_for_requests(sim.request_count(TID) + 1, training_id=TID, timeout=30)
    return lambda: None


async def mid_delivery(fake: FakeDiscord, sim: Simulator) -> Callable[[], None]:
    """Discord has received a step's message but not answered: no "sent" mark yet."""
    await subscribe(fake, TID)
    hold = fake.hold(rf"^/channels/{CHANNEL}/messages$")
    sim.trainings[TID].advance()
    await asyncio.wait_for(hold.arrived.wait(), timeout=30)
    return hold.release


async def api_hanging(fake: FakeDiscord, sim: Simulator) -> Callable[[], None]:
    """A poll waits on an API that never answers."""
    await subscribe(fake, TID)
    sim.trainings[TID].advance()
    await step_posted(fake, 1)
    sim.inject(Fault.HANG, count=None, training_id=TID)
    await sim.wait_for_requests(sim.request_count(TID) + 1, training_id=TID, timeout=30)

    def recover() -> None:
        sim.clear_faults()
        sim.release_hangs()

    return recover


async def discord_slow(fake: FakeDiscord, sim: Simulator) -> Callable[[], None]:
    """Discord answers nothing: a member's command and a step's message both wait on it."""
    await subscribe(fake, TID)
    answers = fake.hold(r"^/interactions/")
    messages = fake.hold(rf"^/channels/{CHANNEL}/messages$")
    await fake.invoke(
        "training-status", {"training_id": TID}, guild_id=GUILD, channel_id=CHANNEL, user_id=USER
    )
    sim.trainings[TID].advance()
    await asyncio.wait_for(answers.arrived.wait(), timeout=30)
    await asyncio.wait_for(messages.arrived.wait(), timeout=30)

    def recover() -> None:
        answers.release()
        messages.release()

    return recover


STATES = {
    "idle": idle,
    "polling": polling,
    "mid_delivery": mid_delivery,
    "api_hanging": api_hanging,
    "discord_slow": discord_slow,
}


@pytest.mark.parametrize(
    ("state", "signum"),
    [
        ("idle", signal.SIGTERM),
        ("idle", signal.SIGINT),
        ("polling", signal.SIGTERM),
        ("mid_delivery", signal.SIGTERM),
        ("mid_delivery", signal.SIGINT),
        ("api_hanging", signal.SIGTERM),
        ("discord_slow", signal.SIGTERM),
    ],
)
async def test_signal_stops_cleanly_and_a_restart_shows_every_step_once(
    state: str,
    signum: signal.Signals,
    fake: FakeDiscord,
    sim: Simulator,
    db_path: Path,
    processes: list[BotProcess],
) -> None:
    training = sim.add_training(TID, stage=1, timeline="invented")  # six steps to stop between
    env = settings_for(fake, sim, db_path)
    first = await started(env, fake, 1)
    processes.append(first)
    recover = await STATES[state](fake, sim)

    first.signal(signum)
    assert_closed_cleanly(first, await first.wait(), db_path)
    assert f"{signum.name}: stopping" in first.log
    # The voice libraries are not installed, and the bot does not ask for them.
    assert "voice will NOT be supported" not in first.log
    # The harness polls every second: the operator is warned once.
    assert first.log.count("POLL_INTERVAL_SECONDS=1 is below 30") == 1

    recover()
    followed = state != "idle"
    if state in ("mid_delivery", "discord_slow"):
        # Discord took the message before the bot stopped; the bot never heard back.
        await step_posted(fake, 1)
    if followed:
        training.advance()  # step 3 completes while no bot runs

    second = await started(env, fake, 2)
    processes.append(second)
    if not followed:
        await subscribe(fake, TID)
        training.advance(2)
    await step_posted(fake, 2)
    training.advance(4)
    await step_posted(fake, 6)
    second.signal(signal.SIGTERM)
    assert_closed_cleanly(second, await second.wait(), db_path)

    assert titles(step_messages(fake, CHANNEL)) == EXPECTED
    if state == "mid_delivery":
        # The message Discord took before the stop was found in the channel after the
        # restart and marked sent, not posted again.
        nonce = step_messages(fake, CHANNEL)[0].nonce
        path = f"/channels/{CHANNEL}/messages"
        posts = [r for r in fake.requests if r.path == path and r.method == "POST"]
        assert sum(1 for r in posts if r.json["nonce"] == nonce) == 1


async def test_a_second_signal_stops_at_once(
    fake: FakeDiscord, sim: Simulator, db_path: Path, processes: list[BotProcess]
) -> None:
    training = sim.add_training(TID, stage=1, timeline="invented")  # six steps to stop between
    env = settings_for(fake, sim, db_path)
    first = await started(env, fake, 1)
    processes.append(first)
    release = await mid_delivery(fake, sim)

    # Both signals arrive together: the process handles them one after the other, before any
    # step of the close has run.
    assert first.proc is not None
    first.signal(signal.SIGSTOP)
    first.signal(signal.SIGINT)
    first.signal(signal.SIGTERM)
    first.signal(signal.SIGCONT)
    code = await first.wait()
    assert code in (128 + signal.SIGINT, 128 + signal.SIGTERM), first.log
    assert "again: stopping at once" in first.log
    assert "stopped cleanly" not in first.log
    assert wal_of(db_path).exists()  # left open: SQLite recovers it at the next start

    release()
    await step_posted(fake, 1)
    second = await started(env, fake, 2)
    processes.append(second)
    training.advance(5)
    await step_posted(fake, 6)
    second.signal(signal.SIGTERM)
    assert_closed_cleanly(second, await second.wait(), db_path)
    assert titles(step_messages(fake, CHANNEL)) == EXPECTED


async def test_a_signal_during_a_slow_login_stops_cleanly(
    fake: FakeDiscord, sim: Simulator, db_path: Path, processes: list[BotProcess]
) -> None:
    hold = fake.hold(r"^/users/@me$")
    bot = BotProcess(settings_for(fake, sim, db_path))
    processes.append(bot)
    await bot.start()
    await asyncio.wait_for(hold.arrived.wait(), timeout=30)
    bot.signal(signal.SIGTERM)
    try:
        code = await bot.wait()
    finally:
        hold.release()
    assert code == 0, bot.log
    assert "Traceback" not in bot.log, bot.log
    assert "Unclosed" not in bot.log, bot.log
    assert fake.identify_count == 0


# -- start or explain --------------------------------------------------------------------------


async def start_failure(env: dict[str, str], cwd: Path) -> tuple[int, str, list[str]]:
    """Run `python -m bot` until it gives up; its exit code, its output, and the lines that are
    not log records (what the operator is told)."""
    names = set(Settings.model_fields)
    environ = {k: v for k, v in os.environ.items() if k not in names}
    environ.update(env, PYTHONPATH=str(ROOT))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        cwd=str(cwd),
        env=environ,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    log = out.decode(errors="replace")
    told = [line for line in log.splitlines() if line and not LOG_RECORD.match(line)]
    assert proc.returncode is not None
    return proc.returncode, log, told


def assert_one_line(code: int, log: str, told: list[str], expected_code: int, *words: str) -> str:
    assert code == expected_code, log
    assert len(told) == 1, log
    assert "Traceback" not in log
    levels = {m.group(1) for m in map(LOG_RECORD.match, log.splitlines()) if m}
    assert not levels & {"ERROR", "CRITICAL"}, log
    line = told[0]
    assert line.startswith("tunewatch: ")
    for word in words:
        assert word in line, line
    return line


async def test_discord_unreachable(fake: FakeDiscord, sim: Simulator, db_path: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}/api/v10"
    env = settings_for(fake, sim, db_path, DISCORD_API_BASE=closed)
    code, log, told = await start_failure(env, db_path.parent)
    assert_one_line(code, log, told, 3, "Cannot reach Discord", closed, "Connection refused")


async def test_discord_refuses_the_token(fake: FakeDiscord, sim: Simulator, db_path: Path) -> None:
    env = settings_for(fake, sim, db_path, DISCORD_TOKEN="not-the-token")
    code, log, told = await start_failure(env, db_path.parent)
    assert_one_line(code, log, told, 2, "Discord refused DISCORD_TOKEN", "Reset Token")
    assert "not-the-token" not in log


async def test_database_directory_missing(
    fake: FakeDiscord, sim: Simulator, tmp_path: Path
) -> None:
    db = tmp_path / "nowhere" / "tunewatch.db"
    code, log, told = await start_failure(settings_for(fake, sim, db), tmp_path)
    assert_one_line(code, log, told, 2, "does not exist", f"mkdir -p {db.parent}")
    assert not fake.requests  # checked before Discord is asked anything


def unwritable_directory(tmp_path: Path) -> Path:
    folder = tmp_path / "readonly"
    folder.mkdir()
    folder.chmod(0o500)
    if not os.access(folder, os.W_OK):
        return folder
    # root writes anywhere that is not mounted read-only
    for candidate in (Path("/proc/sys"), Path("/sys")):
        if candidate.is_dir() and not os.access(candidate, os.W_OK):
            return candidate
    pytest.skip("no directory here is read-only for this user (root, no read-only mount)")


async def test_database_directory_not_writable(
    fake: FakeDiscord, sim: Simulator, tmp_path: Path
) -> None:
    folder = unwritable_directory(tmp_path)
    db = folder / "tunewatch.db"
    env = settings_for(fake, sim, db)
    code, log, told = await start_failure(env, tmp_path)
    assert_one_line(code, log, told, 1, "not writable", "chown")
    assert not fake.requests


def write_garbage(path: Path) -> None:
    path.write_bytes(b"these are not the pages you are looking for\n" * 200)


def set_user_version(path: Path, version: int | None = None) -> int:
    """Set the schema version SQLite keeps in the file's header; returns it."""
    db = sqlite3.connect(path)
    try:
        if version is not None:
            db.execute(f"PRAGMA user_version = {version:d}")
        value: int = db.execute("PRAGMA user_version").fetchone()[0]
        return value
    finally:
        db.close()


async def test_database_file_is_not_a_database(
    fake: FakeDiscord, sim: Simulator, db_path: Path
) -> None:
    write_garbage(db_path)
    code, log, told = await start_failure(settings_for(fake, sim, db_path), db_path.parent)
    assert_one_line(code, log, told, 1, "is not a tunewatch database", str(db_path))
    assert not fake.requests


async def test_database_schema_newer_than_the_code(
    fake: FakeDiscord, sim: Simulator, db_path: Path
) -> None:
    store = await Store.open(db_path)
    await store.close()
    set_user_version(db_path, 999)
    code, log, told = await start_failure(settings_for(fake, sim, db_path), db_path.parent)
    assert_one_line(code, log, told, 1, "newer tunewatch", "database schema 999")
    assert not fake.requests
    assert set_user_version(db_path) == 999  # left as it was


async def test_http_port_taken(fake: FakeDiscord, sim: Simulator, db_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = settings_for(fake, sim, db_path, HTTP_PORT=str(port))
        code, log, told = await start_failure(env, db_path.parent)
    assert_one_line(code, log, told, 1, f"HTTP_PORT {port} is already in use")
    assert not fake.requests


async def test_health_command_answers_for_a_running_bot(
    fake: FakeDiscord, sim: Simulator, db_path: Path, processes: list[BotProcess]
) -> None:
    port = free_port()
    env = settings_for(fake, sim, db_path, HTTP_PORT=str(port))
    bot = await started(env, fake, 1)
    processes.append(bot)

    async def healthy() -> bool:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/healthz") as r,
        ):
            return r.status == 200

    await wait_until(healthy, timeout=30, what="/healthz 200")
    names = set(Settings.model_fields)
    environ = {k: v for k, v in os.environ.items() if k not in names}
    environ.update(env, PYTHONPATH=str(ROOT))
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "bot", "health"],
        cwd=db_path.parent,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["ok"] is True
    bot.signal(signal.SIGTERM)
    assert_closed_cleanly(bot, await bot.wait(), db_path)


def test_the_voice_warnings_are_discord_py_s_and_silenced() -> None:
    """discord.py warns at every client it builds without PyNaCl and davey; tunewatch, which
    never joins a voice channel, turns those two warnings off (the state tests check its log)."""
    script = (
        "import logging, sys\n"
        "logging.basicConfig(stream=sys.stderr)\n"
        "import discord\n"
        "if sys.argv[1] == 'quiet':\n"
        "    from bot.app import quiet_voice_warnings\n"
        "    quiet_voice_warnings()\n"
        "discord.Client(intents=discord.Intents.none())\n"
    )

    def client(mode: str) -> str:
        result = subprocess.run(
            [sys.executable, "-c", script, mode],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        return result.stderr

    loud = client("loud")
    assert "PyNaCl is not installed, voice will NOT be supported" in loud
    assert "davey is not installed, voice will NOT be supported" in loud
    assert "voice" not in client("quiet")
