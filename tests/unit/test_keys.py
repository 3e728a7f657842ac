"""Per-user API keys below the bot: the cipher, the repository, rotation, KeyRing precedence."""

from __future__ import annotations

import asyncio
import base64
import socket
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from cryptography.fernet import Fernet

from bot import render
from bot.config import ConfigError, Settings, load_settings
from bot.keys import KeyRing, NoKeyAvailable, UserKeysDisabled, user_ref
from bot.sdapi.client import KEY_CHECK_TRAINING_ID, SdApiClient
from bot.sdapi.errors import InvalidApiKey, TrainingNotFound
from bot.sdapi.simulator import Simulator
from bot.secrets import (
    GENERATE_HINT,
    KeyCipher,
    RotationFailed,
    SecretError,
    UnreadableKey,
    rotate_secret,
    rotate_secret_cli,
)
from bot.store import DEFAULT_KEY_REF, Store, SubscriptionKind, SubscriptionStatus

# Fixed (and plainly fake) secrets: test ids stay the same in every process.
OLD = base64.urlsafe_b64encode(b"tunewatch-tests-old-secret-32-by").decode()
NEW = base64.urlsafe_b64encode(b"tunewatch-tests-new-secret-32-by").decode()
OPERATOR_KEY = "operator-key-Q7w8E9r0"
ALICE, BOB = 111, 222
ALICE_KEY = "alice-secret-key-Zk3Lm9Pq2Rs7"
BOB_KEY = "bob-secret-key-Hy6Tg5Fr4De3"


def settings(db: Path, **env: str | None) -> Settings:
    values: dict[str, object] = {"DATABASE_PATH": str(db)}
    values.update({k: v for k, v in env.items() if v is not None})
    return Settings(_env_file=None, **values)  # type: ignore[call-arg, arg-type]


def raw_database(db: Path) -> bytes:
    """Every byte SQLite wrote: the database and its WAL and shared-memory files."""
    blob = b""
    for suffix in ("", "-wal", "-shm"):
        path = Path(f"{db}{suffix}")
        if path.exists():
            blob += path.read_bytes()
    return blob


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(db_path)
    try:
        yield opened
    finally:
        await opened.close()


# -- the cipher ---------------------------------------------------------------------------------


def test_cipher_round_trip_hides_the_plaintext() -> None:
    cipher = KeyCipher.from_secret(OLD)
    token = cipher.encrypt(ALICE_KEY)
    assert ALICE_KEY.encode() not in token
    assert cipher.decrypt(token) == ALICE_KEY
    assert cipher.encrypt(ALICE_KEY) != token  # fresh IV every time


@pytest.mark.parametrize("value", ["", " , ", "not-a-fernet-key", f"{NEW},short", "A" * 44])
def test_malformed_secret_says_how_to_generate_one(value: str) -> None:
    with pytest.raises(SecretError) as caught:
        KeyCipher.from_secret(value)
    message = str(caught.value)
    assert GENERATE_HINT in message
    assert "TUNEWATCH_SECRET" in message
    assert isinstance(caught.value, ConfigError)
    for part in value.split(","):
        if len(part.strip()) > 4:
            assert part.strip() not in message


def test_malformed_secret_is_refused_at_startup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNEWATCH_SECRET", "definitely-not-fernet")
    with pytest.raises(ConfigError) as caught:
        load_settings(env_file=None)
    assert "TUNEWATCH_SECRET" in str(caught.value)
    assert "Fernet.generate_key" in str(caught.value)
    assert "definitely-not-fernet" not in str(caught.value)
    monkeypatch.setenv("TUNEWATCH_SECRET", f"{NEW}, {OLD}")
    assert load_settings(env_file=None).TUNEWATCH_SECRET is not None


def test_multifernet_new_then_old_reads_both_and_writes_new() -> None:
    old_token = KeyCipher.from_secret(OLD).encrypt(ALICE_KEY)
    both = KeyCipher.from_secret(f"{NEW},{OLD}")
    assert both.decrypt(old_token) == ALICE_KEY
    fresh = both.encrypt(BOB_KEY)
    assert KeyCipher.from_secret(NEW).decrypt(fresh) == BOB_KEY
    with pytest.raises(UnreadableKey):
        KeyCipher.from_secret(OLD).decrypt(fresh)


def test_wrong_secret_error_does_not_quote_anything() -> None:
    token = KeyCipher.from_secret(OLD).encrypt(ALICE_KEY)
    with pytest.raises(UnreadableKey) as caught:
        KeyCipher.from_secret(NEW).decrypt(token)
    assert ALICE_KEY not in str(caught.value)
    assert token.decode() not in str(caught.value)


# -- the repository -----------------------------------------------------------------------------


def stored_keys(db_path: Path) -> int:
    """Rows of the user_keys table, read with a connection of the test's own."""
    with sqlite3.connect(db_path) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM user_keys").fetchone()[0])


async def test_repository_put_get_delete(store: Store, db_path: Path) -> None:
    repo = store.user_keys
    assert await repo.get(ALICE) is None
    await repo.put(ALICE, b"first", now=100.0)
    await repo.put(ALICE, b"second", now=200.0)
    await repo.put(BOB, b"bob", now=300.0)
    stored = await repo.get(ALICE)
    assert stored is not None
    assert (stored.ciphertext, stored.created_at, stored.updated_at) == (b"second", 100.0, 200.0)
    assert stored_keys(db_path) == 2
    assert await repo.delete(ALICE) is True
    assert await repo.delete(ALICE) is False
    assert await repo.get(ALICE) is None
    assert stored_keys(db_path) == 1
    with sqlite3.connect(db_path) as conn:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(user_keys)")]
    assert columns == ["user_id", "ciphertext", "created_at", "updated_at"]


async def test_rewrite_all_is_all_or_nothing(store: Store) -> None:
    repo = store.user_keys
    await repo.put(ALICE, b"a", now=1.0)
    await repo.put(BOB, b"b", now=1.0)

    def half_then_fail(rows: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
        raise RotationFailed([BOB])

    with pytest.raises(RotationFailed):
        await repo.rewrite_all(half_then_fail, now=2.0)
    assert [(await repo.get(u)).ciphertext for u in (ALICE, BOB)] == [b"a", b"b"]  # type: ignore[union-attr]
    count = await repo.rewrite_all(lambda rows: [(u, c + b"!") for u, c in rows], now=3.0)
    assert count == 2
    assert (await repo.get(BOB)).ciphertext == b"b!"  # type: ignore[union-attr]


# -- KeyRing ------------------------------------------------------------------------------------


async def test_precedence_user_key_over_operator_key(store: Store, db_path: Path) -> None:
    ring = KeyRing(settings(db_path, SD_API_KEY=OPERATOR_KEY, TUNEWATCH_SECRET=OLD), store)
    assert ring.user_keys_enabled
    assert await ring.key_for_user(ALICE) == (DEFAULT_KEY_REF, OPERATOR_KEY)
    await ring.set_user_key(ALICE, ALICE_KEY)
    assert await ring.key_for_user(ALICE) == ("user:111", ALICE_KEY)
    assert await ring.key_for_user(BOB) == (DEFAULT_KEY_REF, OPERATOR_KEY)
    assert await ring.key_for(user_ref(ALICE)) == ALICE_KEY
    assert await ring.key_for(DEFAULT_KEY_REF) == OPERATOR_KEY
    assert await ring.key_for("user:not-a-number") is None
    assert await ring.user_key_hint(ALICE) == ALICE_KEY[-4:]
    assert await ring.user_key_hint(BOB) is None


async def test_user_key_without_operator_key(store: Store, db_path: Path) -> None:
    ring = KeyRing(settings(db_path, TUNEWATCH_SECRET=OLD), store)
    with pytest.raises(NoKeyAvailable):
        await ring.key_for_user(ALICE)
    assert "/training-key set" in render.NO_KEY_TEXT
    assert "SD_API_KEY" in render.NO_KEY_TEXT
    await ring.set_user_key(ALICE, ALICE_KEY)
    assert await ring.key_for_user(ALICE) == ("user:111", ALICE_KEY)
    with pytest.raises(NoKeyAvailable):
        await ring.key_for_user(BOB)
    assert await ring.key_for(DEFAULT_KEY_REF) is None


async def test_neither_key_nor_secret(store: Store, db_path: Path) -> None:
    ring = KeyRing(settings(db_path), store)
    assert not ring.user_keys_enabled
    with pytest.raises(NoKeyAvailable):
        await ring.key_for_user(ALICE)
    with pytest.raises(UserKeysDisabled):
        await ring.set_user_key(ALICE, ALICE_KEY)
    assert stored_keys(db_path) == 0
    assert "TUNEWATCH_SECRET" in render.pause_reason_text(ring.missing_reason(user_ref(ALICE)))


async def test_keys_persist_encrypted_and_a_new_ring_reads_them(
    store: Store, db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    env = settings(db_path, TUNEWATCH_SECRET=OLD)
    await KeyRing(env, store).set_user_key(ALICE, ALICE_KEY)
    assert ALICE_KEY.encode() not in raw_database(db_path)  # while open: WAL included
    fresh = KeyRing(env, store)
    assert await fresh.key_for(user_ref(ALICE)) == ALICE_KEY
    await store.close()
    blob = raw_database(db_path)
    assert ALICE_KEY.encode() not in blob
    assert ALICE_KEY[:12].encode() not in blob
    assert all(ALICE_KEY not in r.getMessage() for r in caplog.records)


async def test_clear_pauses_that_users_subscriptions(store: Store, db_path: Path) -> None:
    ring = KeyRing(settings(db_path, SD_API_KEY=OPERATOR_KEY, TUNEWATCH_SECRET=OLD), store)
    await ring.set_user_key(ALICE, ALICE_KEY)
    for user, ref in ((ALICE, user_ref(ALICE)), (BOB, DEFAULT_KEY_REF)):
        await store.subscriptions.subscribe(
            kind=SubscriptionKind.DM,
            guild_id=None,
            channel_id=None,
            user_id=user,
            training_id="Train00001",
            key_ref=ref,
            limit=10,
            now=1.0,
        )
    assert await ring.clear_user_key(ALICE) == (True, 1)
    assert await ring.clear_user_key(ALICE) == (False, 0)
    assert await ring.key_for(user_ref(ALICE)) is None
    assert await ring.key_for_user(ALICE) == (DEFAULT_KEY_REF, OPERATOR_KEY)
    (alice_sub,) = await store.subscriptions.alerts_of(ALICE)
    (bob_sub,) = await store.subscriptions.alerts_of(BOB)
    assert alice_sub.status is SubscriptionStatus.PAUSED
    assert alice_sub.reason is not None
    assert (
        render.pause_reason_text(alice_sub.reason)
        == "The API key this subscription used was removed; subscribe again to resume."
    )
    assert bob_sub.status is SubscriptionStatus.ACTIVE


async def test_a_changed_secret_makes_keys_unreadable_not_fatal(
    store: Store, db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await KeyRing(settings(db_path, TUNEWATCH_SECRET=OLD), store).set_user_key(ALICE, ALICE_KEY)
    ring = KeyRing(settings(db_path, SD_API_KEY=OPERATOR_KEY, TUNEWATCH_SECRET=NEW), store)
    assert await ring.key_for(user_ref(ALICE)) is None
    assert await ring.key_for_user(ALICE) == (DEFAULT_KEY_REF, OPERATOR_KEY)
    assert await ring.has_stored_key(ALICE)
    assert "secret changed" in render.pause_reason_text(ring.missing_reason(user_ref(ALICE)))
    assert any("does not decrypt" in r.getMessage() for r in caplog.records)
    assert all(ALICE_KEY not in r.getMessage() for r in caplog.records)
    # Listing the old secret after the new one reads it again.
    both = KeyRing(settings(db_path, TUNEWATCH_SECRET=f"{NEW},{OLD}"), store)
    assert await both.key_for(user_ref(ALICE)) == ALICE_KEY


# -- rotation -----------------------------------------------------------------------------------


async def test_rotate_secret_reencrypts_everything(store: Store) -> None:
    old, new = KeyCipher.from_secret(OLD), KeyCipher.from_secret(NEW)
    repo = store.user_keys
    await repo.put(ALICE, old.encrypt(ALICE_KEY), now=1.0)
    await repo.put(BOB, old.encrypt(BOB_KEY), now=1.0)
    assert await rotate_secret(store, old, new, now=2.0) == 2
    for user, key in ((ALICE, ALICE_KEY), (BOB, BOB_KEY)):
        stored = await repo.get(user)
        assert stored is not None
        assert new.decrypt(stored.ciphertext) == key
        with pytest.raises(UnreadableKey):
            old.decrypt(stored.ciphertext)


async def test_rotate_secret_changes_nothing_when_one_key_is_unreadable(store: Store) -> None:
    old, new, other = (KeyCipher.from_secret(s) for s in (OLD, NEW, Fernet.generate_key().decode()))
    repo = store.user_keys
    await repo.put(ALICE, old.encrypt(ALICE_KEY), now=1.0)
    await repo.put(BOB, other.encrypt(BOB_KEY), now=1.0)
    before = [(await repo.get(u)).ciphertext for u in (ALICE, BOB)]  # type: ignore[union-attr]
    with pytest.raises(RotationFailed) as caught:
        await rotate_secret(store, old, new, now=2.0)
    assert caught.value.user_ids == [BOB]
    assert [(await repo.get(u)).ciphertext for u in (ALICE, BOB)] == before  # type: ignore[union-attr]


async def _seed(db_path: Path, entries: list[tuple[int, str, str]]) -> None:
    store = await Store.open(db_path)
    try:
        for user, key, secret in entries:
            cipher = KeyCipher.from_secret(secret)
            await store.user_keys.put(user, cipher.encrypt(key), now=1.0)
    finally:
        await store.close()


async def _read(db_path: Path, secret: str) -> dict[int, str]:
    store = await Store.open(db_path)
    try:
        ring = KeyRing(settings(db_path, TUNEWATCH_SECRET=secret), store)
        return {u: k for u in (ALICE, BOB) if (k := await ring.key_for(user_ref(u))) is not None}
    finally:
        await store.close()


def test_rotate_cli_success(
    db_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(_seed(db_path, [(ALICE, ALICE_KEY, OLD), (BOB, BOB_KEY, OLD)]))
    monkeypatch.setenv("TUNEWATCH_NEW_SECRET", NEW)
    code = rotate_secret_cli(settings(db_path, TUNEWATCH_SECRET=OLD), "TUNEWATCH_NEW_SECRET")
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "re-encrypted 2 stored API key(s)" in out.out
    assert NEW not in out.out + out.err
    assert OLD not in out.out + out.err
    assert asyncio.run(_read(db_path, NEW)) == {ALICE: ALICE_KEY, BOB: BOB_KEY}
    assert asyncio.run(_read(db_path, OLD)) == {}


def test_rotate_cli_reads_keys_under_an_older_listed_secret(
    db_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    older = Fernet.generate_key().decode()
    asyncio.run(_seed(db_path, [(ALICE, ALICE_KEY, OLD), (BOB, BOB_KEY, older)]))
    monkeypatch.setenv("TUNEWATCH_NEW_SECRET", NEW)
    env = settings(db_path, TUNEWATCH_SECRET=f"{OLD},{older}")
    assert rotate_secret_cli(env, "TUNEWATCH_NEW_SECRET") == 0
    assert asyncio.run(_read(db_path, NEW)) == {ALICE: ALICE_KEY, BOB: BOB_KEY}


def test_rotate_cli_refuses_and_changes_nothing_on_an_unreadable_key(
    db_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stranger = Fernet.generate_key().decode()
    asyncio.run(_seed(db_path, [(ALICE, ALICE_KEY, OLD), (BOB, BOB_KEY, stranger)]))
    monkeypatch.setenv("TUNEWATCH_NEW_SECRET", NEW)
    code = rotate_secret_cli(settings(db_path, TUNEWATCH_SECRET=OLD), "TUNEWATCH_NEW_SECRET")
    err = capsys.readouterr().err
    assert code == 1
    assert "cannot be decrypted" in err
    assert str(BOB) in err
    assert "Nothing was changed" in err
    assert asyncio.run(_read(db_path, OLD)) == {ALICE: ALICE_KEY}  # still under the old secret


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (None, NEW, "TUNEWATCH_SECRET is not set"),
        (OLD, None, "TUNEWATCH_NEW_SECRET is not set"),
        (OLD, "   ", "TUNEWATCH_NEW_SECRET is not set"),
        (OLD, "not-a-fernet-key", "TUNEWATCH_NEW_SECRET is not a valid Fernet key"),
    ],
)
def test_rotate_cli_missing_or_malformed_secrets(
    db_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    old: str | None,
    new: str | None,
    expected: str,
) -> None:
    if new is None:
        monkeypatch.delenv("TUNEWATCH_NEW_SECRET", raising=False)
    else:
        monkeypatch.setenv("TUNEWATCH_NEW_SECRET", new)
    code = rotate_secret_cli(settings(db_path, TUNEWATCH_SECRET=old), "TUNEWATCH_NEW_SECRET")
    err = capsys.readouterr().err
    assert code == 2
    assert expected in err
    assert not db_path.exists()


def test_rotate_cli_without_a_database(
    db_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TUNEWATCH_NEW_SECRET", NEW)
    assert rotate_secret_cli(settings(db_path, TUNEWATCH_SECRET=OLD), "TUNEWATCH_NEW_SECRET") == 0
    assert "no stored keys" in capsys.readouterr().out
    assert not db_path.exists()


def test_rotate_cli_explains_a_database_it_cannot_use_in_one_line(
    db_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TUNEWATCH_NEW_SECRET", NEW)
    db_path.write_bytes(b"not a database, " * 100)
    code = rotate_secret_cli(settings(db_path, TUNEWATCH_SECRET=OLD), "TUNEWATCH_NEW_SECRET")
    err = capsys.readouterr().err
    assert code == 1
    assert "is not a tunewatch database" in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there
    url = f"postgresql://tw:pw@127.0.0.1:{port}/tw"
    env = settings(db_path, TUNEWATCH_SECRET=OLD, DATABASE_URL=url)
    code = rotate_secret_cli(env, "TUNEWATCH_NEW_SECRET")
    err = capsys.readouterr().err
    assert code == 3
    assert "Is PostgreSQL running there" in err
    assert "pw@" not in err  # the password masked
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_rotate_cli_through_main(
    db_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bot.__main__ import main

    asyncio.run(_seed(db_path, [(ALICE, ALICE_KEY, OLD)]))
    monkeypatch.chdir(db_path.parent)  # no stray .env
    monkeypatch.setenv("DATABASE_PATH", str(db_path))
    monkeypatch.setenv("TUNEWATCH_SECRET", OLD)
    monkeypatch.setenv("ROTATE_TO", NEW)
    assert main(["rotate-secret", "--new-secret-env", "ROTATE_TO"]) == 0
    assert asyncio.run(_read(db_path, NEW)) == {ALICE: ALICE_KEY}


# -- checking a key with the API ----------------------------------------------------------------


async def test_check_key_against_the_simulator() -> None:
    async with (
        Simulator(keys=["valid-key-one", "valid-key-two"]) as sim,
        aiohttp.ClientSession() as s,
    ):
        assert sim.base_url is not None
        sim.add_training("Owned00001", key="valid-key-one")
        client = SdApiClient(s, sim.base_url, max_attempts=1)
        await client.check_key("valid-key-two", budget=5)
        with pytest.raises(InvalidApiKey) as caught:
            await client.check_key("wrong-key-xyz", budget=5)
        said = render.api_error_text(caught.value)
        assert "Invalid Api Key" in said
        assert "wrong-key-xyz" not in str(caught.value) + said
        # A training asked with another valid key answers not-found.
        with pytest.raises(TrainingNotFound):
            await client.fine_tune_status("Owned00001", "valid-key-two")
        status = await client.fine_tune_status("Owned00001", "valid-key-one")
        assert status.state == "deploying_gpu"
        assert [r.training_id for r in sim.requests][:2] == [KEY_CHECK_TRAINING_ID] * 2
