"""Encryption of per-user API keys at rest (Fernet), and ``python -m bot rotate-secret``.

``TUNEWATCH_SECRET`` holds one Fernet key, or several separated by commas, newest first: new
keys are encrypted with the first, and any of them decrypts. That lets an operator roll a new
secret in (``"new,old"``) before every stored key has been re-encrypted.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from bot.config import ConfigError, Settings
from bot.store import DatabaseError, Store

GENERATE_HINT = (
    'python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"'
)


class SecretError(ConfigError):
    """A secret setting is missing or is not a Fernet key; the message says how to fix it."""


class UnreadableKey(Exception):
    """A stored key cannot be decrypted with the configured secret(s)."""


class KeyCipher:
    """Encrypts and decrypts API keys; the secret never leaves this object."""

    def __init__(self, fernets: Sequence[Fernet]) -> None:
        if not fernets:
            raise ValueError("at least one Fernet key is needed")
        self._multi = MultiFernet(list(fernets))

    @classmethod
    def from_secret(cls, value: str, *, name: str = "TUNEWATCH_SECRET") -> KeyCipher:
        """Parse a comma-separated list of Fernet keys, newest first; raises SecretError."""
        entries = [part.strip() for part in value.split(",")]
        if not any(entries):
            raise SecretError(f"{name} is empty. Generate a secret with: {GENERATE_HINT}")
        fernets = []
        for index, entry in enumerate(entries, start=1):
            try:
                fernets.append(Fernet(entry.encode()))
            except ValueError:
                # Say which entry, never what it holds.
                where = f"entry {index} of {len(entries)} of {name}" if len(entries) > 1 else name
                raise SecretError(
                    f"{where} is not a valid Fernet key (32 url-safe base64-encoded bytes). "
                    f"Generate one with: {GENERATE_HINT}"
                ) from None
        return cls(fernets)

    def encrypt(self, plaintext: str) -> bytes:
        """Ciphertext of ``plaintext`` under the newest secret."""
        return self._multi.encrypt(plaintext.encode())

    def decrypt(self, ciphertext: bytes) -> str:
        """The plaintext; raises UnreadableKey when no configured secret opens it."""
        try:
            return self._multi.decrypt(ciphertext).decode()
        except (InvalidToken, UnicodeDecodeError):
            raise UnreadableKey("a stored API key cannot be decrypted with the secret") from None


def cipher_from_settings(settings: Settings) -> KeyCipher | None:
    """The cipher TUNEWATCH_SECRET configures, or None when it is not set (per-user keys off)."""
    if settings.TUNEWATCH_SECRET is None:
        return None
    return KeyCipher.from_secret(settings.TUNEWATCH_SECRET.get_secret_value())


class RotationFailed(Exception):
    """Some stored keys could not be decrypted with the old secret; nothing was changed."""

    def __init__(self, user_ids: list[int]) -> None:
        super().__init__(f"{len(user_ids)} stored keys cannot be decrypted with the old secret")
        self.user_ids = user_ids


async def rotate_secret(store: Store, old: KeyCipher, new: KeyCipher, now: float) -> int:
    """Re-encrypt every stored key from ``old`` to ``new`` in one transaction; returns how many.

    Raises RotationFailed (and changes nothing) when any key does not decrypt with ``old``.
    """

    def reencrypt(rows: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
        out: list[tuple[int, bytes]] = []
        failed: list[int] = []
        for user_id, ciphertext in rows:
            try:
                out.append((user_id, new.encrypt(old.decrypt(ciphertext))))
            except UnreadableKey:
                failed.append(user_id)
        if failed:
            raise RotationFailed(failed)
        return out

    return await store.user_keys.rewrite_all(reencrypt, now=now)


def rotate_secret_cli(settings: Settings, new_secret_env: str) -> int:
    """``python -m bot rotate-secret``: re-encrypt stored keys to the secret in ``new_secret_env``.

    Prints what happened; exits non-zero (changing nothing) when a secret is missing or
    malformed, or when a stored key does not decrypt with TUNEWATCH_SECRET.
    """
    try:
        old = cipher_from_settings(settings)
        if old is None:
            raise SecretError(
                "TUNEWATCH_SECRET is not set: it must hold the secret the keys are stored with now."
            )
        raw_new = os.environ.get(new_secret_env, "")
        if not raw_new.strip():
            raise SecretError(
                f"{new_secret_env} is not set: put the new secret there. "
                f"Generate one with: {GENERATE_HINT}"
            )
        new = KeyCipher.from_secret(raw_new, name=new_secret_env)
    except SecretError as exc:
        _say(f"rotate-secret: {exc}", error=True)
        return 2
    target = settings.database
    if isinstance(target, Path) and not target.exists():
        _say(f"rotate-secret: no database at {target}; there are no stored keys to re-encrypt.")
        return 0
    try:
        count = asyncio.run(_rotate_file(target, old, new))
    except DatabaseError as exc:
        from bot.preflight import explain_database  # (it imports discord.py to explain)

        error = explain_database(exc, target)
        _say(f"rotate-secret: {error or exc.reason}", error=True)
        return error.exit_code if error else 1
    except RotationFailed as exc:
        ids = ", ".join(str(u) for u in exc.user_ids[:20])
        more = f" and {len(exc.user_ids) - 20} more" if len(exc.user_ids) > 20 else ""
        _say(
            f"rotate-secret: {len(exc.user_ids)} stored key(s) cannot be decrypted with "
            f"TUNEWATCH_SECRET (Discord user ids {ids}{more}). Nothing was changed. Is "
            "TUNEWATCH_SECRET the secret the bot ran with? If it was changed before, list the "
            "older secret after it: TUNEWATCH_SECRET=current,older.",
            error=True,
        )
        return 1
    _say(
        f"rotate-secret: re-encrypted {count} stored API key(s) with {new_secret_env}. Now set "
        f"TUNEWATCH_SECRET to that value (and restart the bot)."
    )
    return 0


async def _rotate_file(target: Path | str, old: KeyCipher, new: KeyCipher) -> int:
    store = await Store.open(target)
    try:
        return await rotate_secret(store, old, new, time.time())
    finally:
        await store.close()


def _say(message: str, *, error: bool = False) -> None:
    # A CLI's answer to the operator, not a log line.
    print(message, file=sys.stderr if error else sys.stdout)
