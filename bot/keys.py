"""Which API key polls what: the operator's key (``default``) or a user's own (``user:<id>``)."""

from __future__ import annotations

import logging
import time

from bot.config import Settings
from bot.reasons import PauseReason
from bot.secrets import KeyCipher, UnreadableKey, cipher_from_settings
from bot.store import DEFAULT_KEY_REF, Store

log = logging.getLogger(__name__)

USER_REF_PREFIX = "user:"


class NoKeyAvailable(Exception):
    """Neither the user nor the operator has a key."""


class UserKeysDisabled(Exception):
    """Per-user keys are off because TUNEWATCH_SECRET is not set."""


def user_ref(user_id: int) -> str:
    """The key_ref naming a user's own key (never the key itself)."""
    return f"{USER_REF_PREFIX}{user_id}"


def _user_of(key_ref: str) -> int | None:
    if not key_ref.startswith(USER_REF_PREFIX):
        return None
    try:
        return int(key_ref.removeprefix(USER_REF_PREFIX))
    except ValueError:
        return None


class KeyRing:
    """Resolves key references to keys; keys never leave this object except to the client."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        cipher: KeyCipher | None = None,
    ) -> None:
        self._operator_key = settings.SD_API_KEY
        self._subscriptions = store.subscriptions
        self._user_keys = store.user_keys
        # Raises SecretError (a ConfigError) at startup when TUNEWATCH_SECRET is malformed.
        self._cipher = cipher if cipher is not None else cipher_from_settings(settings)
        # Decrypted keys of users, so a poll does not decrypt every time; only this object writes
        # the table, so the cache cannot go stale (a rotation keeps the plaintexts).
        self._cache: dict[int, str] = {}
        self._unreadable: set[int] = set()

    @property
    def user_keys_enabled(self) -> bool:
        """True when TUNEWATCH_SECRET is set, so users can store their own keys."""
        return self._cipher is not None

    @property
    def has_operator_key(self) -> bool:
        """True when the operator's SD_API_KEY is set."""
        return self._operator_key is not None

    async def key_for(self, key_ref: str) -> str | None:
        """The key a reference names, or None when it is not available."""
        if key_ref == DEFAULT_KEY_REF:
            return None if self._operator_key is None else self._operator_key.get_secret_value()
        user_id = _user_of(key_ref)
        return None if user_id is None else await self._user_key(user_id)

    async def key_for_user(self, user_id: int) -> tuple[str, str]:
        """(key_ref, key) to use for this user's requests: theirs, else the operator's.

        Raises NoKeyAvailable when neither is set.
        """
        own = await self._user_key(user_id)
        if own is not None:
            return user_ref(user_id), own
        if self._operator_key is not None:
            return DEFAULT_KEY_REF, self._operator_key.get_secret_value()
        raise NoKeyAvailable

    async def set_user_key(self, user_id: int, key: str) -> None:
        """Store a user's key encrypted (check it with the API first); raises UserKeysDisabled."""
        if self._cipher is None:
            raise UserKeysDisabled
        await self._user_keys.put(user_id, self._cipher.encrypt(key), now=time.time())
        self._cache[user_id] = key
        self._unreadable.discard(user_id)

    async def clear_user_key(self, user_id: int) -> tuple[bool, int]:
        """Forget a user's key and pause the subscriptions polled with it.

        Returns (whether a key was stored, how many subscriptions were paused).
        """
        self._cache.pop(user_id, None)
        self._unreadable.discard(user_id)
        removed = await self._user_keys.delete(user_id)
        ref = user_ref(user_id)
        paused = await self._subscriptions.pause_key_ref(ref, self.missing_reason(ref), time.time())
        return removed, paused

    async def user_key_hint(self, user_id: int) -> str | None:
        """The last 4 characters of the user's key, or None when they have no usable key."""
        key = await self._user_key(user_id)
        return None if key is None else key[-4:]

    async def has_stored_key(self, user_id: int) -> bool:
        """True when a key is stored for the user, readable or not."""
        return await self._user_keys.get(user_id) is not None

    def missing_reason(self, key_ref: str) -> str:
        """Why a reference has no key, as a stored pause reason (see bot.reasons)."""
        if key_ref == DEFAULT_KEY_REF:
            return PauseReason.OPERATOR_KEY_MISSING.value
        if self._cipher is None:
            return PauseReason.USER_KEYS_OFF.value
        if _user_of(key_ref) in self._unreadable:
            return PauseReason.KEY_UNREADABLE.value
        return PauseReason.KEY_REMOVED.value

    async def _user_key(self, user_id: int) -> str | None:
        if self._cipher is None:
            return None
        cached = self._cache.get(user_id)
        if cached is not None:
            return cached
        stored = await self._user_keys.get(user_id)
        if stored is None:
            return None
        try:
            key = self._cipher.decrypt(stored.ciphertext)
        except UnreadableKey:
            if user_id not in self._unreadable:
                log.warning(
                    "the stored API key of user %d does not decrypt with TUNEWATCH_SECRET; "
                    "treating it as unset",
                    user_id,
                )
            self._unreadable.add(user_id)
            return None
        self._unreadable.discard(user_id)
        self._cache[user_id] = key
        return key
