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
    CREATE_PUBLIC_THREADS,
    DISCORD_EPOCH_MS,
    EMBED_LINKS,
    EVERYONE_PERMISSIONS,
    GUILD_TEXT,
    NONCE_WINDOW,
    PUBLIC_THREAD,
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
        self.shards = 1  # what /gateway/bot recommends
        self.identified_shards: list[tuple[int, int] | None] = []
        self._session_shards: dict[str, tuple[int, int] | None] = {}
        self.resume_count = 0
        self.rate_limited_count = 0
        self.interactions: dict[int, Interaction] = {}
        self.guilds: dict[int, dict[str, Any]] = {}
        self.channels: dict[int, dict[str, Any]] = {}  # guild text channels and threads
        self.roles: dict[int, dict[str, Any]] = {}  # role id -> role (with its guild_id)
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
        # The bot's own (managed) role: what set_bot_permissions grants goes there.
        self.guilds[guild_id] = {"id": guild_id, "name": name, "bot_role": self.snowflake()}
        self.guilds[guild_id]["bot_allow"] = 0
        if any(s.ready for s in self._sessions):
            self._broadcast("GUILD_CREATE", self._guild_payload(guild_id))

    def add_role(
        self, guild_id: int, role_id: int, name: str = "role", *, mentionable: bool = False
    ) -> None:
        """A role members can hold; pinging it needs it mentionable, or Mention Everyone."""
        if guild_id not in self.guilds:
            self.add_guild(guild_id)
        position = 1 + sum(1 for r in self.roles.values() if r["guild_id"] == guild_id)
        self.roles[role_id] = {
            "id": role_id,
            "guild_id": guild_id,
            "name": name,
            "mentionable": mentionable,
            "position": position,
        }
        self._broadcast(
            "GUILD_ROLE_CREATE", {"guild_id": str(guild_id), "role": self.role_payload(role_id)}
        )

    def set_bot_permissions(self, guild_id: int, allow: int) -> None:
        """Grant the bot guild-wide permissions beyond @everyone's (its role's permissions),
        e.g. ``MENTION_EVERYONE``; announced as GUILD_ROLE_UPDATE."""
        guild = self.guilds[guild_id]
        guild["bot_allow"] = allow
        role = self._bot_role_payload(guild_id)
        self._broadcast("GUILD_ROLE_UPDATE", {"guild_id": str(guild_id), "role": role})

    def role_payload(self, role_id: int) -> dict[str, Any]:
        if role_id in self.guilds:  # the @everyone role has the guild's id
            return _role(role_id, "@everyone", 0, EVERYONE_PERMISSIONS)
        role = self.roles[role_id]
        return _role(role_id, role["name"], role["position"], 0, mentionable=role["mentionable"])

    def _bot_role_payload(self, guild_id: int) -> dict[str, Any]:
        guild = self.guilds[guild_id]
        return _role(guild["bot_role"], "tunewatch", 1, guild["bot_allow"], managed=True)

    def add_channel(
        self,
        guild_id: int,
        channel_id: int,
        name: str = "general",
        *,
        can_send: bool = True,
        embed_links: bool = True,
        read_history: bool = True,
        create_threads: bool = True,
        send_in_threads: bool = True,
    ) -> None:
        if guild_id not in self.guilds:
            self.add_guild(guild_id)
        position = sum(1 for c in self.channels.values() if c["guild_id"] == guild_id)
        self.channels[channel_id] = {
            "id": channel_id,
            "type": GUILD_TEXT,
            "guild_id": guild_id,
            "name": name,
            "position": position,
            "can_send": can_send,
            "embed_links": embed_links,
            "read_history": read_history,
            "create_threads": create_threads,
            "send_in_threads": send_in_threads,
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

    def add_thread(self, parent_id: int, thread_id: int, name: str, owner_id: int) -> None:
        """A public thread under a text channel (started from the message of the same id)."""
        parent = self.channels[parent_id]
        self.channels[thread_id] = {
            "id": thread_id,
            "type": PUBLIC_THREAD,
            "guild_id": parent["guild_id"],
            "parent_id": parent_id,
            "name": name,
            "owner_id": owner_id,
            "archived": False,
            "locked": False,
            "auto_archive_duration": 1440,
        }

    def archive_thread(self, thread_id: int, *, locked: bool = False) -> None:
        """Archive a thread (as Discord does after its inactivity period), or lock it."""
        self.channels[thread_id].update(archived=True, locked=locked)
        self._broadcast("THREAD_UPDATE", self._channel_payload(thread_id))

    def threads_of(self, parent_id: int) -> list[int]:
        """The ids of the threads under a channel, oldest first."""
        return [c for c, d in self.channels.items() if d.get("parent_id") == parent_id]

    def delete_message(self, message_id: int, *, announce: bool = True) -> None:
        """A member (or a moderator) deletes a message."""
        msg = next(m for m in self.messages if m.id == message_id)
        msg.deleted = True
        if announce:
            payload = {"id": str(msg.id), "channel_id": str(msg.channel_id)}
            if msg.guild_id is not None:
                payload["guild_id"] = str(msg.guild_id)
            self._broadcast("MESSAGE_DELETE", payload)

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
        """The bot's permissions in a channel (a thread has its parent's)."""
        channel = self.channels.get(channel_id)
        if channel is None:
            return EVERYONE_PERMISSIONS
        if channel["type"] == PUBLIC_THREAD:
            channel = self.channels[channel["parent_id"]]
        granted = EVERYONE_PERMISSIONS | self.guilds[channel["guild_id"]]["bot_allow"]
        return granted & ~self._denied(channel)

    @staticmethod
    def _denied(channel: dict[str, Any]) -> int:
        deny = 0 if channel["can_send"] else SEND_MESSAGES | SEND_MESSAGES_IN_THREADS
        deny |= 0 if channel.get("read_history", True) else READ_MESSAGE_HISTORY
        deny |= 0 if channel.get("create_threads", True) else CREATE_PUBLIC_THREADS
        deny |= 0 if channel.get("send_in_threads", True) else SEND_MESSAGES_IN_THREADS
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
        if channel["type"] == PUBLIC_THREAD:
            return self._thread_payload(channel)
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

    def _thread_payload(self, thread: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": str(thread["id"]),
            "type": PUBLIC_THREAD,
            "guild_id": str(thread["guild_id"]),
            "parent_id": str(thread["parent_id"]),
            "owner_id": str(thread["owner_id"]),
            "name": thread["name"],
            "last_message_id": None,
            "message_count": 0,
            "member_count": 1,
            "rate_limit_per_user": 0,
            "flags": 0,
            "total_message_sent": 0,
            "thread_metadata": {
                "archived": thread["archived"],
                "auto_archive_duration": thread["auto_archive_duration"],
                "archive_timestamp": "2024-01-01T00:00:00+00:00",
                "locked": thread["locked"],
                "create_timestamp": "2024-01-01T00:00:00+00:00",
            },
        }

    def _member_payload(
        self, user_id: int, permissions: int | None = None, guild_id: int | None = None
    ) -> dict[str, Any]:
        roles = []
        if user_id == BOT_USER_ID and guild_id is not None:
            roles = [str(self.guilds[guild_id]["bot_role"])]
        member: dict[str, Any] = {
            "user": self.user_payload(user_id),
            "roles": roles,
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
        mine = [d for d in self.channels.values() if d["guild_id"] == guild_id]
        channels = [self._channel_payload(d["id"]) for d in mine if d["type"] == GUILD_TEXT]
        threads = [
            self._channel_payload(d["id"])
            for d in mine
            if d["type"] == PUBLIC_THREAD and not d["archived"]
        ]
        roles = [
            _role(guild_id, "@everyone", 0, EVERYONE_PERMISSIONS),
            self._bot_role_payload(guild_id),
            *(self.role_payload(r) for r, d in self.roles.items() if d["guild_id"] == guild_id),
        ]
        return {
            "id": str(guild_id),
            "name": guild["name"],
            "icon": None,
            "owner_id": "1",
            "unavailable": False,
            "member_count": 2,
            "large": False,
            "features": [],
            "roles": roles,
            "emojis": [],
            "stickers": [],
            "channels": channels,
            "threads": threads,
            "members": [self._member_payload(BOT_USER_ID, guild_id=guild_id)],
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


def _role(
    role_id: int,
    name: str,
    position: int,
    permissions: int,
    *,
    mentionable: bool = False,
    managed: bool = False,
) -> dict[str, Any]:
    return {
        "id": str(role_id),
        "name": name,
        "permissions": str(permissions),
        "position": position,
        "color": 0,
        "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
        "hoist": False,
        "icon": None,
        "unicode_emoji": None,
        "managed": managed,
        "mentionable": mentionable,
        "flags": 0,
    }
