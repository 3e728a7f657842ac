"""Per-user API keys end to end: the modal, the key check, secrecy, precedence, ownership."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from bot.app import TunewatchBot
from bot.keys import user_ref
from bot.sdapi.simulator import DEFAULT_KEY, Fault, Simulator
from bot.store import DEFAULT_KEY_REF, SubscriptionKind, SubscriptionStatus
from tests.support.fakediscord import FakeDiscord, Interaction
from tests.support.harness import (
    CHANNEL,
    GUILD,
    MANAGE_CHANNELS,
    USER,
    running_bot,
    settings_for,
    step_messages,
    wait_until,
)

pytestmark = pytest.mark.timeout(60)

SECRET = Fernet.generate_key().decode()
USER_KEY = "user-own-key-9fT2kLq8Xw4Rb7Np"
OTHER_KEY = "someone-else-key-3Vd8Hs1Mz6Qc"
BAD_KEY = "bad-key-never-valid-Jp5Wn2"
OTHER_USER = USER + 1


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(keys=[DEFAULT_KEY, USER_KEY, OTHER_KEY]) as simulator:
        yield simulator


@pytest.fixture
async def bot(fake: FakeDiscord, sim: Simulator, db_path: Path) -> AsyncIterator[TunewatchBot]:
    env = settings_for(fake, sim, db_path, TUNEWATCH_SECRET=SECRET, MAX_BACKOFF_SECONDS="0.5")
    async with running_bot(env) as running:
        yield running


def decrypted_rows(db: Path) -> list[tuple[int, str]]:
    """The user_keys table, decrypted with the bot's secret: the key is there, encrypted."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT user_id, ciphertext FROM user_keys").fetchall()
    return [(u, Fernet(SECRET.encode()).decrypt(c).decode()) for u, c in rows]


def raw_database(db: Path) -> bytes:
    """Every byte SQLite wrote: the database and its WAL and shared-memory files."""
    return b"".join(
        Path(f"{db}{suffix}").read_bytes()
        for suffix in ("", "-wal", "-shm")
        if Path(f"{db}{suffix}").exists()
    )


def assert_never_revealed(
    secret: str, fake: FakeDiscord, caplog: pytest.LogCaptureFixture, db: Path
) -> None:
    """Not in any payload the bot sent Discord, any message, any log line, the database."""
    needles = (secret, secret[:12])
    for request in fake.requests:
        body = json.dumps(request.json)
        assert not any(n in body for n in needles), f"{request.method} {request.path}"
    for message in fake.messages:
        shown = message.content + json.dumps(message.embeds) + json.dumps(message.edits)
        assert not any(n in shown for n in needles)
    for record in caplog.records:
        text = record.getMessage() + (caplog.text if record.exc_info else "")
        assert not any(n in text for n in needles), record.name
    assert not any(n in caplog.text for n in needles)
    blob = raw_database(db)
    assert not any(n.encode() in blob for n in needles)


async def key_command(fake: FakeDiscord, sub: str, user_id: int = USER) -> Interaction:
    return await fake.invoke(
        "training-key",
        subcommand=sub,
        guild_id=GUILD,
        channel_id=CHANNEL,
        user_id=user_id,
    )


async def set_key(fake: FakeDiscord, key: str, user_id: int = USER) -> tuple[dict, Interaction]:
    """/training-key set, then type ``key`` into the modal the bot opened."""
    opened = await key_command(fake, "set", user_id)
    response = await opened.wait_response()
    assert response["type"] == 9, response  # MODAL
    modal = response["data"]
    submitted = await fake.submit_modal(
        modal["custom_id"], {"api_key": key}, guild_id=GUILD, channel_id=CHANNEL, user_id=user_id
    )
    final = await submitted.wait_final(timeout=20)
    assert not submitted.late
    assert submitted.ephemeral()
    return final, submitted


def text_of(final: dict) -> str:
    return (final.get("content") or "") + json.dumps(final.get("embeds") or [])


async def invoke_final(fake: FakeDiscord, name: str, options: dict, user_id: int = USER) -> dict:
    interaction = await fake.invoke(
        name,
        options,
        guild_id=GUILD,
        channel_id=CHANNEL,
        user_id=user_id,
        permissions=MANAGE_CHANNELS,
    )
    return await interaction.wait_final(timeout=20)


async def test_set_key_through_the_modal_then_it_is_used(
    bot: TunewatchBot,
    fake: FakeDiscord,
    sim: Simulator,
    db_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sim.add_training("Mine000001", key=USER_KEY, stage=3)
    opened = await key_command(fake, "set")
    modal = (await opened.wait_response())["data"]
    (label,) = modal["components"]
    text_input = label["component"]
    assert label["type"] == 18
    assert "only you" in label["label"]
    assert text_input["type"] == 4
    assert text_input["style"] == 1  # short, single line
    assert text_input["custom_id"] == "api_key"
    assert text_input["min_length"] >= 8
    assert text_input["max_length"] <= 200
    assert "value" not in text_input

    final, _ = await set_key(fake, USER_KEY)
    assert f"ending in `{USER_KEY[-4:]}`" in final["content"]
    checks = [r for r in sim.requests if r.key == USER_KEY]
    assert [r.training_id for r in checks] == ["tunewatch-key-check"]
    assert decrypted_rows(db_path) == [(USER, USER_KEY)]
    assert_never_revealed(USER_KEY, fake, caplog, db_path)  # while the bot runs

    # The user's key finds their training; another user (operator key) does not.
    mine = await invoke_final(fake, "training-status", {"training_id": "Mine000001"})
    assert mine["embeds"][0]["title"] == "Training Mine000001"
    theirs = await invoke_final(
        fake, "training-status", {"training_id": "Mine000001"}, user_id=OTHER_USER
    )
    assert "does not know training" in theirs["embeds"][0]["description"]
    assert [r.key for r in sim.requests if r.training_id == "Mine000001"] == [
        USER_KEY,
        DEFAULT_KEY,
    ]

    show = await key_command(fake, "show")
    shown = await show.wait_final()
    assert show.ephemeral()
    assert f"ending in `{USER_KEY[-4:]}`" in shown["content"]
    other = await key_command(fake, "show", OTHER_USER)
    assert "no API key set" in (await other.wait_final())["content"]
    assert_never_revealed(USER_KEY, fake, caplog, db_path)


async def test_secrets_absent_after_close(
    fake: FakeDiscord, sim: Simulator, db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    env = settings_for(fake, sim, db_path, TUNEWATCH_SECRET=SECRET)
    async with running_bot(env):
        sim.add_training("Closed0001", key=USER_KEY, stage=1)
        await set_key(fake, USER_KEY)
        await invoke_final(fake, "training-subscribe", {"training_id": "Closed0001"})
        await invoke_final(fake, "training-list", {})
    assert_never_revealed(USER_KEY, fake, caplog, db_path)
    assert_never_revealed(SECRET, fake, caplog, db_path)
    assert_never_revealed(DEFAULT_KEY, fake, caplog, db_path)


async def test_invalid_key_is_refused_with_the_api_reason(
    bot: TunewatchBot,
    fake: FakeDiscord,
    sim: Simulator,
    db_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    final, _ = await set_key(fake, BAD_KEY)
    description = final["embeds"][0]["description"]
    assert "not saved" in description
    assert "Invalid Api Key" in description
    assert not await bot.keys.has_stored_key(USER)
    assert [r.key for r in sim.requests] == [BAD_KEY]
    assert_never_revealed(BAD_KEY, fake, caplog, db_path)


async def test_a_slow_api_defers_the_modal_answer(
    bot: TunewatchBot, fake: FakeDiscord, sim: Simulator
) -> None:
    sim.inject(Fault.HANG, count=1)
    opened = await key_command(fake, "set")
    modal = (await opened.wait_response())["data"]
    submitted = await fake.submit_modal(
        modal["custom_id"], {"api_key": USER_KEY}, guild_id=GUILD, channel_id=CHANNEL, user_id=USER
    )
    deferred = await submitted.wait_response()
    assert deferred["type"] == 5  # "thinking…", within Discord's 3 seconds
    assert int(deferred["data"]["flags"]) & 64  # and private
    sim.release_hangs()  # the held check fails with a 503; the client retries
    final = await submitted.wait_final(timeout=20)
    assert not submitted.late
    assert submitted.ephemeral()
    assert "Saved your API key" in final["content"]
    assert await bot.keys.has_stored_key(USER)


async def test_short_or_spaced_key_is_refused_without_asking_the_api(
    bot: TunewatchBot, fake: FakeDiscord, sim: Simulator
) -> None:
    final, _ = await set_key(fake, "has spaces in it")
    assert "does not look like an API key" in final["embeds"][0]["description"]
    assert sim.request_count() == 0


async def test_disabled_without_tunewatch_secret(
    fake: FakeDiscord, sim: Simulator, db_path: Path
) -> None:
    async with running_bot(settings_for(fake, sim, db_path)):
        opened = await key_command(fake, "set")
        final = await opened.wait_final()
        assert opened.responses[0]["type"] == 4  # an answer, not a modal
        assert opened.ephemeral()
        text = final["embeds"][0]["description"]
        assert "TUNEWATCH_SECRET" in text
        assert "operator's key" in text
        show = await key_command(fake, "show")
        assert "TUNEWATCH_SECRET" in text_of(await show.wait_final())


async def test_precedence_without_operator_key(
    fake: FakeDiscord, sim: Simulator, db_path: Path
) -> None:
    env = settings_for(fake, sim, db_path, TUNEWATCH_SECRET=SECRET, SD_API_KEY="")
    async with running_bot(env):
        sim.add_training("Solo000001", key=USER_KEY, stage=2)
        # Neither key: the clear message, and the API is not asked.
        nothing = await invoke_final(fake, "training-status", {"training_id": "Solo000001"})
        assert "needs a Stable Diffusion API key" in nothing["embeds"][0]["description"]
        assert "/training-key set" in nothing["embeds"][0]["description"]
        assert sim.request_count() == 0
        show = await key_command(fake, "show")
        assert "Use `/training-key set` to add yours" in (await show.wait_final())["content"]
        # The user's key only.
        await set_key(fake, USER_KEY)
        mine = await invoke_final(fake, "training-status", {"training_id": "Solo000001"})
        assert mine["embeds"][0]["title"] == "Training Solo000001"
        other = await invoke_final(
            fake, "training-status", {"training_id": "Solo000001"}, user_id=OTHER_USER
        )
        assert "needs a Stable Diffusion API key" in other["embeds"][0]["description"]


async def test_subscriptions_record_whose_key_and_clearing_pauses_them(
    bot: TunewatchBot,
    fake: FakeDiscord,
    sim: Simulator,
    db_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    mine = sim.add_training("Pause00001", key=USER_KEY, stage=1)
    sim.add_training("Operat0001", stage=1)
    await set_key(fake, USER_KEY)
    await invoke_final(fake, "training-subscribe", {"training_id": "Pause00001"})
    notify = await fake.invoke(
        "training-notify",
        {"training_id": "Pause00001"},
        guild_id=GUILD,
        channel_id=CHANNEL,
        user_id=USER,
    )
    await notify.wait_final()
    # Another member, no key of their own: the operator's key.
    await invoke_final(fake, "training-subscribe", {"training_id": "Operat0001"}, OTHER_USER)
    subs = {s.training_id: s for s in await bot.store.subscriptions.of_guild(GUILD)}
    assert subs["Pause00001"].key_ref == user_ref(USER) == f"user:{USER}"
    assert subs["Operat0001"].key_ref == DEFAULT_KEY_REF

    mine.advance()
    await fake.wait_for(lambda f: len(step_messages(f, CHANNEL)) == 1)
    assert {r.key for r in sim.requests if r.training_id == "Pause00001"} == {USER_KEY}

    cleared = await key_command(fake, "clear")
    text = (await cleared.wait_final())["content"]
    assert cleared.ephemeral()
    assert "Removed your API key" in text
    assert "2 subscription(s)" in text
    assert await bot.keys.key_for(user_ref(USER)) is None

    listing = await fake.invoke("training-list", guild_id=GUILD, channel_id=CHANNEL, user_id=USER)
    listed = json.dumps((await listing.wait_final())["embeds"][0])
    assert listing.ephemeral()
    assert listed.count("The API key this subscription used was removed") == 2
    assert "user:" not in listed
    subs = {s.training_id: s for s in await bot.store.subscriptions.of_guild(GUILD)}
    assert subs["Pause00001"].status is SubscriptionStatus.PAUSED
    assert subs["Operat0001"].status is SubscriptionStatus.ACTIVE

    # Nothing more is polled with the removed key, nor posted for it.
    polls = sim.request_count("Pause00001")
    mine.advance(6)
    for _ in range(3):
        before = bot.tracker.last_tick
        bot.tracker.wake()
        await wait_until(lambda b=before: bot.tracker.last_tick != b, what="a tracker tick")
    assert sim.request_count("Pause00001") == polls
    assert len(step_messages(fake, CHANNEL)) == 1
    assert fake.dms_to(USER) == []
    again = await key_command(fake, "clear")
    assert "nothing changed" in (await again.wait_final())["content"]
    assert_never_revealed(USER_KEY, fake, caplog, db_path)


async def test_only_the_subscriber_or_manage_channels_may_unsubscribe(
    bot: TunewatchBot, fake: FakeDiscord, sim: Simulator
) -> None:
    sim.add_training("Owner00001", stage=1)
    creator, bystander, moderator = USER, USER + 2, USER + 3
    await invoke_final(fake, "training-subscribe", {"training_id": "Owner00001"}, creator)

    async def unsubscribe(user_id: int, permissions: int) -> dict:
        interaction = await fake.invoke(
            "training-unsubscribe",
            {"training_id": "Owner00001"},
            guild_id=GUILD,
            channel_id=CHANNEL,
            user_id=user_id,
            permissions=permissions,
        )
        final = await interaction.wait_final()
        return final

    async def still_there() -> bool:
        sub = await bot.store.subscriptions.find(
            SubscriptionKind.CHANNEL, "Owner00001", channel_id=CHANNEL, user_id=creator
        )
        return sub is not None

    refused = await unsubscribe(bystander, 0)
    assert "Only the person who subscribed" in refused["embeds"][0]["description"]
    assert await still_there()
    # The creator may, even without Manage Channels.
    assert "no longer follows" in (await unsubscribe(creator, 0))["content"]
    assert not await still_there()
    # Someone else's subscription: a member with Manage Channels may remove it.
    await invoke_final(fake, "training-subscribe", {"training_id": "Owner00001"}, creator)
    assert "no longer follows" in (await unsubscribe(moderator, MANAGE_CHANNELS))["content"]
    assert not await still_there()


async def test_key_commands_are_registered_as_one_group(
    bot: TunewatchBot, fake: FakeDiscord
) -> None:
    commands = {c["name"]: c for c in fake.registered_commands[None]}
    group = commands["training-key"]
    assert {o["name"] for o in group["options"]} == {"set", "clear", "show"}
    assert all(o["type"] == 1 and not o.get("options") for o in group["options"])
    assert group["default_member_permissions"] is None


async def test_debug_logging_of_the_process_never_shows_a_typed_key(
    fake: FakeDiscord, sim: Simulator, db_path: Path
) -> None:
    """`python -m bot` with LOG_LEVEL=DEBUG: discord.py's raw DEBUG payloads would carry the
    modal's contents, so they stay off."""
    from tests.support.harness import BotProcess

    env = settings_for(fake, sim, db_path, TUNEWATCH_SECRET=SECRET, LOG_LEVEL="DEBUG")
    process = BotProcess(env)
    await process.start()
    try:
        await fake.wait_for(lambda f: f.identify_count == 1, timeout=30, what="READY")
        final, _ = await set_key(fake, USER_KEY)
        assert "Saved your API key" in text_of(final)
    finally:
        await process.kill()
    assert "DEBUG" in process.log  # tunewatch's own modules did log at DEBUG
    assert USER_KEY not in process.log
    assert USER_KEY[:12] not in process.log
    assert DEFAULT_KEY not in process.log
