"""Why a subscription was paused, as stored: a code the Discord and terminal edges put in words.

A stored reason is ``code`` or ``code:detail`` (a channel id, Discord's status and error code);
``render.pause_reason_text`` turns it into a sentence. Text that is no code (written by an
older tunewatch) is shown as it is.
"""

from __future__ import annotations

from enum import StrEnum


class PauseReason(StrEnum):
    """Why deliveries to a subscription stopped until someone acts."""

    CHANNEL_DELETED = "channel_deleted"
    NO_ACCESS = "no_access"  # Discord 50001 Missing Access; detail: the channel id
    MISSING_PERMISSIONS = "missing_permissions"  # 50013; detail: the channel id
    DMS_CLOSED = "dms_closed"  # 50007
    USER_UNKNOWN = "user_unknown"  # 10013
    THREAD_ARCHIVED = "thread_archived"  # 50083
    THREAD_DELETED = "thread_deleted"  # a thread style's thread is gone (10003)
    NO_THREAD_PERMISSIONS = "no_thread_permissions"  # 50013 on a thread; detail: the channel id
    DISCORD_REFUSED = "discord_refused"  # detail: what Discord answered
    OPERATOR_KEY_MISSING = "operator_key_missing"  # SD_API_KEY is not set
    USER_KEYS_OFF = "user_keys_off"  # TUNEWATCH_SECRET is not set
    KEY_UNREADABLE = "key_unreadable"  # the stored key no longer decrypts
    KEY_REMOVED = "key_removed"

    def with_detail(self, detail: object) -> str:
        """The stored form with a detail."""
        return f"{self.value}:{detail}"


def parse_reason(stored: str) -> tuple[PauseReason | None, str]:
    """``(code, detail)`` of a stored reason; ``(None, text)`` for text that is no code."""
    code, _, detail = stored.partition(":")
    try:
        return PauseReason(code), detail
    except ValueError:
        return None, stored
