"""Which API key polls what: the operator's key (``default``) or a user's own (``user:<id>``)."""

from __future__ import annotations

from bot.config import Settings
from bot.store import DEFAULT_KEY_REF, Store


class NoKeyAvailable(Exception):
    """Neither the user nor the operator has a key; the message says what to do."""

    def __init__(self) -> None:
        super().__init__(
            "tunewatch needs a Stable Diffusion API key for that: set yours with "
            "`/training-key set`, or ask the bot's operator to set SD_API_KEY."
        )


class KeyRing:
    """Resolves key references to keys; keys never leave this object except to the client."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self._operator_key = settings.SD_API_KEY
        self._store = store

    async def key_for(self, key_ref: str) -> str | None:
        """The key a reference names, or None when it is not available."""
        if key_ref == DEFAULT_KEY_REF:
            return None if self._operator_key is None else self._operator_key.get_secret_value()
        return None

    async def key_for_user(self, user_id: int) -> tuple[str, str]:
        """(key_ref, key) to use for this user's requests; raises NoKeyAvailable."""
        if self._operator_key is not None:
            return DEFAULT_KEY_REF, self._operator_key.get_secret_value()
        raise NoKeyAvailable

    def missing_reason(self, key_ref: str) -> str:
        """Why a reference has no key, for /training-list."""
        if key_ref == DEFAULT_KEY_REF:
            return "The bot's operator API key (SD_API_KEY) is not set."
        return "The API key this subscription used was removed; subscribe again to resume."
