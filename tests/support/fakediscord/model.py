"""The fake's plain data: constants, permission bits, and the records tests look at."""

from __future__ import annotations

import asyncio
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
USE_EXTERNAL_EMOJIS = 1 << 18
USE_APPLICATION_COMMANDS = 1 << 31
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
    | SEND_MESSAGES_IN_THREADS
)


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
