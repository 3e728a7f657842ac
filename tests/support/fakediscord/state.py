"""The fake's world: guilds, channels, users and messages, what tests wait on, and faults."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from tests.support.fakediscord.model import (
    BOT_USER_ID,
    DISCORD_EPOCH_MS,
    EMBED_LINKS,
    EVERYONE_PERMISSIONS,
    NONCE_WINDOW,
    READ_MESSAGE_HISTORY,
    SEND_MESSAGES,
    SEND_MESSAGES_IN_THREADS,
    Hold,
    Message,
    Request,
    _Fault,
)

if TYPE_CHECKING:
    from tests.support.fakediscord import FakeDiscord
    from tests.support.fakediscord.gateway import _Session
    from tests.support.fakediscord.interactions import Interaction
    from tests.support.fakediscord.rest import Handler


class World:
    """Discord's state as the fake keeps it; the mixins beside it serve it over REST and the
    gateway."""

    token: str = "fake-token.for-tests"

    def __init__(
        self,
        *,
        rate_limits: bool = False,
        latency: float = 0.0,
        interaction_deadline: float = 3.0,
        global_limit: int = 50,
        channel_limit: int = 5,
        channel_window: float = 5.0,
        nonce_window: float = NONCE_WINDOW,
    ) -> None:
        self.rate_limits = rate_limits
        self.latency = latency
        self.interaction_deadline = interaction_deadline
        self.global_limit = global_limit
        self.channel_limit = channel_limit
        self.channel_window = channel_window
        # How long Discord returns the first message for a repeated nonce ("a few minutes").
        self.nonce_window = nonce_window
        self.api_base = ""
        self.gateway_url = ""
        self.requests: list[Request] = []
        self.messages: list[Message] = []
        self.registered_commands: dict[int | None, list[dict[str, Any]]] = {}
        self.command_syncs: list[tuple[int | None, list[dict[str, Any]]]] = []
        self.identify_count = 0
        self.resume_count = 0
        self.rate_limited_count = 0
        self.interactions: dict[int, Interaction] = {}
        self.guilds: dict[int, dict[str, Any]] = {}
        self.channels: dict[int, dict[str, Any]] = {}  # guild text channels
        self.users: dict[int, dict[str, Any]] = {}
        self.dm_channels: dict[int, int] = {}  # DM channel id -> user id
        self._dm_by_user: dict[int, int] = {}
        self._sessions: list[_Session] = []
        self._resumable: dict[str, int] = {}  # session_id -> last seq
        self._cond = asyncio.Condition()
        self._faults: list[_Fault] = []
        self._holds: list[Hold] = []
        self._nonces: dict[tuple[int, str], tuple[float, Message]] = {}
        self._global_hits: list[float] = []
        self._channel_windows: dict[int, tuple[float, int]] = {}  # channel -> (reset, count)
        self._command_ids: dict[tuple[int | None, str], int] = {}
        self._last_snowflake = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self._setup_routes()
        self.bot_user = {
            "id": str(BOT_USER_ID),
            "username": "tunewatch",
            "discriminator": "0",
            "global_name": None,
            "avatar": None,
            "bot": True,
            "verified": True,
            "mfa_enabled": False,
            "flags": 0,
            "public_flags": 0,
        }

    # ------------------------------------------------------------------ world
    def snowflake(self) -> int:
        candidate = (int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22
        self._last_snowflake = max(candidate, self._last_snowflake + 1)
        return self._last_snowflake

    def add_guild(self, guild_id: int, name: str = "Guild") -> None:
        self.guilds[guild_id] = {"id": guild_id, "name": name}
        if any(s.ready for s in self._sessions):
            self._broadcast("GUILD_CREATE", self._guild_payload(guild_id))

    def add_channel(
        self,
        guild_id: int,
        channel_id: int,
        name: str = "general",
        *,
        can_send: bool = True,
        embed_links: bool = True,
        read_history: bool = True,
    ) -> None:
        if guild_id not in self.guilds:
            self.add_guild(guild_id)
        position = sum(1 for c in self.channels.values() if c["guild_id"] == guild_id)
        self.channels[channel_id] = {
            "id": channel_id,
            "guild_id": guild_id,
            "name": name,
            "position": position,
            "can_send": can_send,
            "embed_links": embed_links,
            "read_history": read_history,
        }
        if any(s.ready for s in self._sessions):
            self._broadcast("CHANNEL_CREATE", self._channel_payload(channel_id))

    def set_channel_access(
        self, channel_id: int, *, can_send: bool, embed_links: bool = True, announce: bool = True
    ) -> None:
        """Change the bot's permissions in a channel (as a member permission overwrite).

        With ``announce`` the bot's cache learns it via CHANNEL_UPDATE, as with real Discord;
        ``announce=False`` leaves the bot's cache stale so that it discovers it by a 403.
        """
        channel = self.channels[channel_id]
        channel.update(can_send=can_send, embed_links=embed_links)
        if announce:
            self._broadcast("CHANNEL_UPDATE", self._channel_payload(channel_id))

    def delete_channel(self, channel_id: int, *, announce: bool = True) -> None:
        payload = self._channel_payload(channel_id)
        del self.channels[channel_id]
        if announce:
            self._broadcast("CHANNEL_DELETE", payload)

    def add_user(self, user_id: int, name: str = "user", *, dms_open: bool = True) -> None:
        self.users[user_id] = {"id": user_id, "name": name, "dms_open": dms_open}

    def _ensure_user(self, user_id: int) -> dict[str, Any]:
        if user_id not in self.users:
            self.add_user(user_id, f"user{user_id}")
        return self.users[user_id]

    def user_payload(self, user_id: int) -> dict[str, Any]:
        if user_id == BOT_USER_ID:
            return dict(self.bot_user)
        user = self._ensure_user(user_id)
        return {
            "id": str(user_id),
            "username": user["name"],
            "discriminator": "0",
            "global_name": user["name"],
            "avatar": None,
            "bot": False,
            "public_flags": 0,
        }

    def channel_permissions(self, channel_id: int) -> int:
        channel = self.channels.get(channel_id)
        if channel is None:
            return EVERYONE_PERMISSIONS
        return EVERYONE_PERMISSIONS & ~self._denied(channel)

    @staticmethod
    def _denied(channel: dict[str, Any]) -> int:
        deny = 0 if channel["can_send"] else SEND_MESSAGES | SEND_MESSAGES_IN_THREADS
        deny |= 0 if channel.get("read_history", True) else READ_MESSAGE_HISTORY
        return deny | (0 if channel["embed_links"] else EMBED_LINKS)

    def _channel_payload(self, channel_id: int) -> dict[str, Any]:
        if channel_id in self.dm_channels:
            user_id = self.dm_channels[channel_id]
            return {
                "id": str(channel_id),
                "type": 1,
                "last_message_id": None,
                "flags": 0,
                "recipients": [self.user_payload(user_id)],
            }
        channel = self.channels[channel_id]
        deny = self._denied(channel)
        overwrites = []
        if deny:
            overwrites.append({"id": str(BOT_USER_ID), "type": 1, "allow": "0", "deny": str(deny)})
        return {
            "id": str(channel_id),
            "type": 0,
            "guild_id": str(channel["guild_id"]),
            "name": channel["name"],
            "position": channel["position"],
            "permission_overwrites": overwrites,
            "parent_id": None,
            "topic": None,
            "nsfw": False,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "flags": 0,
        }

    def _member_payload(self, user_id: int, permissions: int | None = None) -> dict[str, Any]:
        member: dict[str, Any] = {
            "user": self.user_payload(user_id),
            "roles": [],
            "joined_at": "2024-01-01T00:00:00+00:00",
            "nick": None,
            "avatar": None,
            "deaf": False,
            "mute": False,
            "pending": False,
            "flags": 0,
        }
        if permissions is not None:
            member["permissions"] = str(permissions)
        return member

    def _guild_payload(self, guild_id: int) -> dict[str, Any]:
        guild = self.guilds[guild_id]
        channels = [
            self._channel_payload(c) for c, d in self.channels.items() if d["guild_id"] == guild_id
        ]
        everyone = {
            "id": str(guild_id),
            "name": "@everyone",
            "permissions": str(EVERYONE_PERMISSIONS),
            "position": 0,
            "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
            "hoist": False,
            "managed": False,
            "mentionable": False,
            "flags": 0,
        }
        return {
            "id": str(guild_id),
            "name": guild["name"],
            "icon": None,
            "owner_id": "1",
            "unavailable": False,
            "member_count": 2,
            "large": False,
            "features": [],
            "roles": [everyone],
            "emojis": [],
            "stickers": [],
            "channels": channels,
            "threads": [],
            "members": [self._member_payload(BOT_USER_ID)],
            "presences": [],
            "voice_states": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "joined_at": "2024-01-01T00:00:00+00:00",
            "preferred_locale": "en-US",
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "premium_tier": 0,
            "system_channel_flags": 0,
        }

    def _dm_channel_for(self, user_id: int) -> int:
        self._ensure_user(user_id)
        if user_id not in self._dm_by_user:
            channel_id = self.snowflake()
            self._dm_by_user[user_id] = channel_id
            self.dm_channels[channel_id] = user_id
        return self._dm_by_user[user_id]

    # ------------------------------------------------------------------ observation
    def messages_in(self, channel_id: int) -> list[Message]:
        return [m for m in self.messages if m.channel_id == channel_id]

    def dms_to(self, user_id: int) -> list[Message]:
        return [m for m in self.messages if m.recipient_id == user_id]

    async def _notify(self) -> None:
        async with self._cond:
            self._cond.notify_all()

    async def wait_for(
        self,
        predicate: Callable[[FakeDiscord], bool],
        timeout: float = 10.0,
        what: str | None = None,
    ) -> None:
        try:
            async with asyncio.timeout(timeout), self._cond:
                await self._cond.wait_for(lambda: predicate(self))
        except TimeoutError:
            recent = "\n".join(
                f"  {r.method} {r.path} -> {r.status} {json.dumps(r.json)[:200]}"
                for r in self.requests[-15:]
            )
            desc = what or getattr(predicate, "__name__", repr(predicate))
            raise TimeoutError(
                f"FakeDiscord: condition {desc} not met within {timeout}s; "
                f"{len(self.requests)} requests, {len(self.messages)} messages, "
                f"{len(self._sessions)} gateway sessions. Last requests:\n{recent}"
            ) from None

    async def wait_ready(self, timeout: float = 10.0) -> None:
        await self.wait_for(lambda f: any(s.ready for s in f._sessions), timeout, "bot READY")

    # ------------------------------------------------------------------ fault injection
    def fail_next(self, path_regex: str, status: int, *, code: int = 0, count: int = 1) -> None:
        self._faults.append(_Fault(re.compile(path_regex), status, code, count))

    def hold(self, path_regex: str) -> Hold:
        hold = Hold(re.compile(path_regex))
        self._holds.append(hold)
        return hold
