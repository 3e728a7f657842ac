"""The fake's plain data: constants, permission bits, and the records tests look at."""

from __future__ import annotations

import asyncio
import copy
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

APP_ID = 900000000000000001
BOT_USER_ID = APP_ID
DISCORD_EPOCH_MS = 1420070400000
NONCE_WINDOW = 300.0

# Permission bits (https://discord.com/developers/docs/topics/permissions)
ADD_REACTIONS = 1 << 6
VIEW_CHANNEL = 1 << 10
SEND_MESSAGES = 1 << 11
EMBED_LINKS = 1 << 14
ATTACH_FILES = 1 << 15
READ_MESSAGE_HISTORY = 1 << 16
MENTION_EVERYONE = 1 << 17
USE_EXTERNAL_EMOJIS = 1 << 18
USE_APPLICATION_COMMANDS = 1 << 31
CREATE_PUBLIC_THREADS = 1 << 35
SEND_MESSAGES_IN_THREADS = 1 << 38
EVERYONE_PERMISSIONS = (
    ADD_REACTIONS
    | VIEW_CHANNEL
    | SEND_MESSAGES
    | EMBED_LINKS
    | ATTACH_FILES
    | READ_MESSAGE_HISTORY
    | USE_EXTERNAL_EMOJIS
    | USE_APPLICATION_COMMANDS
    | CREATE_PUBLIC_THREADS
    | SEND_MESSAGES_IN_THREADS
)

# Message flags (https://discord.com/developers/docs/resources/message#message-object-message-flags)
SUPPRESS_EMBEDS = 1 << 2
HAS_THREAD = 1 << 5
EPHEMERAL = 1 << 6
LOADING = 1 << 7
SUPPRESS_NOTIFICATIONS = 1 << 12
# The flags a message may be created with (ephemeral: interaction answers only).
SETTABLE_FLAGS = SUPPRESS_EMBEDS | EPHEMERAL | SUPPRESS_NOTIFICATIONS

# Channel types
GUILD_TEXT = 0
DM = 1
PUBLIC_THREAD = 11


def _as_bool(value: Any) -> bool:
    return value.strip().lower() in ("1", "true", "yes") if isinstance(value, str) else bool(value)


OPTION_CASTS: dict[int, Callable[[Any], Any]] = {3: str, 4: int, 5: _as_bool, 10: float}


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


def _json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    # Content-Type must be exactly application/json: discord.py compares the header verbatim.
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    return web.Response(status=status, body=json.dumps(data).encode(), headers=hdrs)


def _error(status: int, message: str, code: int = 0) -> web.Response:
    return _json_response({"message": message, "code": code}, status)


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    json: Any
    status: int = 0
    at: float = 0.0


@dataclass
class Message:
    id: int
    channel_id: int
    content: str
    embeds: list[dict[str, Any]]
    nonce: str | None
    author_id: int
    created_at: float
    recipient_id: int | None = None
    guild_id: int | None = None
    flags: int = 0
    interaction_id: int | None = None
    edits: list[dict[str, Any]] = field(default_factory=list)
    deleted: bool = False
    components: list[dict[str, Any]] = field(default_factory=list)
    allowed_mentions: dict[str, Any] | None = None
    """As sent: None when the request had none (Discord then parses every mention)."""
    message_reference: dict[str, Any] | None = None
    pinged_users: list[int] = field(default_factory=list)
    """Who Discord notified: the mentions in the content that ``allowed_mentions`` allowed."""
    pinged_roles: list[int] = field(default_factory=list)
    pinged_everyone: bool = False
    versions: list[dict[str, Any]] = field(default_factory=list)
    """What members saw: the content, embeds and components after the send and each edit."""

    @property
    def silent(self) -> bool:
        """Sent with SUPPRESS_NOTIFICATIONS: shown, but nobody's phone buzzes."""
        return bool(self.flags & SUPPRESS_NOTIFICATIONS)

    def snapshot(self) -> dict[str, Any]:
        """What a member sees of it now."""
        return {
            "content": self.content,
            "embeds": copy.deepcopy(self.embeds),
            "components": copy.deepcopy(self.components),
        }

    def visible_states(self) -> list[dict[str, Any]]:
        """The distinct states members saw, in order: an edit to the same state is none."""
        states: list[dict[str, Any]] = []
        for version in self.versions:
            if not states or states[-1] != version:
                states.append(version)
        return states

    def custom_ids(self) -> list[str]:
        """The custom ids of its buttons, in order."""
        return [
            c["custom_id"]
            for row in self.components
            for c in row.get("components", [])
            if "custom_id" in c
        ]

    def button(self, custom_id: str) -> dict[str, Any]:
        """One of its buttons, by custom id (KeyError: it has none such)."""
        for row in self.components:
            for c in row.get("components", []):
                if c.get("custom_id") == custom_id:
                    return dict(c)
        raise KeyError(custom_id)


@dataclass
class Hold:
    pattern: re.Pattern[str]
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    released: asyncio.Event = field(default_factory=asyncio.Event)

    def release(self) -> None:
        self.released.set()


@dataclass
class _Fault:
    pattern: re.Pattern[str]
    status: int
    code: int
    count: int
