"""A loopback fake of Discord's REST API v10 and Gateway for end-to-end tests.

The real, unmodified discord.py client talks to it over real HTTP and WebSocket on 127.0.0.1:
point ``discord.http.Route.BASE`` at :attr:`FakeDiscord.api_base` and
``discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY`` at :attr:`FakeDiscord.gateway_url`.
Everything the bot does is observable in :attr:`FakeDiscord.requests` and
:attr:`FakeDiscord.messages`; waits are event driven (:meth:`FakeDiscord.wait_for`).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import math
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import WSMsgType, web

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


class Interaction:
    """One INTERACTION_CREATE sent by :meth:`FakeDiscord.invoke` and what the bot answered."""

    def __init__(self, fake: FakeDiscord, payload: dict[str, Any]) -> None:
        self._fake = fake
        self.payload = payload
        self.id = int(payload["id"])
        self.token: str = payload["token"]
        self.channel_id = int(payload["channel"]["id"])
        self.guild_id = int(payload["guild_id"]) if payload.get("guild_id") else None
        self.created_at = time.monotonic()
        self.responses: list[dict[str, Any]] = []  # every initial callback payload the bot sent
        self.callback_statuses: list[int] = []  # HTTP status answered to each of them
        self.followups: list[dict[str, Any]] = []  # POST /webhooks/{app}/{token} payloads
        self.edits: list[dict[str, Any]] = []  # PATCH .../messages/@original payloads
        self._followup_at: list[float] = []
        self._edit_at: list[float] = []
        self.original: Message | None = None
        self._late = False

    @property
    def late(self) -> bool:
        return self._late

    @property
    def acknowledged(self) -> bool:
        return 200 in self.callback_statuses

    def _final(self) -> dict[str, Any] | None:
        if not self.responses:
            return None
        first = self.responses[0]
        if first.get("type") in (5, 6):
            firsts = [(t, p) for t, p in zip(self._followup_at, self.followups, strict=True)][:1]
            firsts += [(t, p) for t, p in zip(self._edit_at, self.edits, strict=True)][:1]
            return min(firsts, key=lambda e: e[0])[1] if firsts else None
        return first.get("data") or {}

    async def wait_response(self, timeout: float = 10.0) -> dict[str, Any]:
        await self._fake.wait_for(lambda _: bool(self.responses), timeout, f"callback for {self}")
        return self.responses[0]

    async def wait_final(self, timeout: float = 10.0) -> dict[str, Any]:
        await self._fake.wait_for(lambda _: self._final() is not None, timeout, f"final {self}")
        final = self._final()
        assert final is not None
        return final

    def ephemeral(self) -> bool:
        final = self._final()
        return bool(int((final or {}).get("flags") or 0) & 64)

    def __repr__(self) -> str:
        name = self.payload["data"].get("name") or self.payload["data"].get("custom_id")
        return f"<Interaction {name!r} id={self.id} responses={len(self.responses)}>"


class _Session:
    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.seq = 0
        self.session_id: str | None = None
        self.ready = False
        self.shard: tuple[int, int] | None = None  # (shard id, shard count) from IDENTIFY

    def holds(self, guild_id: int | None) -> bool:
        """Whether this session receives a guild's events (DMs: shard 0), as Discord routes
        them: shard = (guild_id >> 22) % shard_count."""
        if self.shard is None:
            return True
        shard_id, count = self.shard
        return (0 if guild_id is None else (guild_id >> 22) % count) == shard_id

    async def dispatch(self, event: str, data: Any) -> None:
        self.seq += 1
        payload = {"op": 0, "t": event, "s": self.seq, "d": data}
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.ws.send_str(json.dumps(payload))


Handler = Callable[[Request, re.Match[str], Any], Awaitable[web.Response]]


class FakeDiscord:
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

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/gateway", self._gateway)
        app.router.add_route("*", "/api/v10/{tail:.*}", self._rest)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.api_base = f"http://127.0.0.1:{port}/api/v10"
        self.gateway_url = f"ws://127.0.0.1:{port}/gateway"

    async def stop(self) -> None:
        for hold in self._holds:
            hold.release()
        for session in list(self._sessions):
            await session.ws.close()
        for task in list(self._tasks):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

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

    # ------------------------------------------------------------------ gateway
    def _broadcast(self, event: str, data: Any) -> None:
        guild = data.get("guild_id") or (data.get("id") if event.startswith("GUILD_") else None)
        for session in self._sessions:
            if session.ready and session.holds(None if guild is None else int(guild)):
                task = asyncio.get_running_loop().create_task(session.dispatch(event, data))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def drop_gateway(self) -> None:
        """Ask every connected session to reconnect (op 7 RECONNECT); discord.py resumes."""
        for session in list(self._sessions):
            with contextlib.suppress(ConnectionError, RuntimeError):
                await session.ws.send_str(json.dumps({"op": 7, "d": None}))

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        session = _Session(ws)
        self._sessions.append(session)
        try:
            await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": 41250}}))
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                await self._gateway_op(session, json.loads(msg.data))
        finally:
            self._sessions.remove(session)
            if session.session_id is not None:
                self._resumable[session.session_id] = session.seq
            await self._notify()
        return ws

    async def _gateway_op(self, session: _Session, msg: dict[str, Any]) -> None:
        op, data = msg.get("op"), msg.get("d")
        if op == 1:
            await session.ws.send_str(json.dumps({"op": 11}))
        elif op == 2:
            self.identify_count += 1
            session.session_id = secrets.token_hex(16)
            shard = data.get("shard")
            session.shard = (int(shard[0]), int(shard[1])) if shard else None
            self.identified_shards.append(session.shard)
            self._session_shards[session.session_id] = session.shard
            guilds = [g for g in self.guilds if session.holds(g)]
            ready = {
                "v": 10,
                "user": self.bot_user,
                "guilds": [{"id": str(g), "unavailable": True} for g in guilds],
                "session_id": session.session_id,
                "resume_gateway_url": self.gateway_url,
                "application": {"id": str(APP_ID), "flags": 0},
                "private_channels": [],
                "relationships": [],
            }
            if session.shard is not None:
                ready["shard"] = list(session.shard)
            await session.dispatch("READY", ready)
            for guild_id in guilds:
                await session.dispatch("GUILD_CREATE", self._guild_payload(guild_id))
            session.ready = True
            await self._notify()
        elif op == 6:
            session_id = data["session_id"]
            if session_id not in self._resumable:
                await session.ws.send_str(json.dumps({"op": 9, "d": False}))
                return
            session.session_id = session_id
            session.shard = self._session_shards.get(session_id)
            session.seq = max(self._resumable.pop(session_id), int(data.get("seq") or 0))
            self.resume_count += 1
            await session.dispatch("RESUMED", {})
            session.ready = True
            await self._notify()
        elif op == 8:
            chunk = {
                "guild_id": str(data["guild_id"]),
                "members": [],
                "chunk_index": 0,
                "chunk_count": 1,
                "not_found": [],
            }
            if data.get("nonce"):
                chunk["nonce"] = data["nonce"]
            await session.dispatch("GUILD_MEMBERS_CHUNK", chunk)

    async def _send_interaction(self, payload: dict[str, Any]) -> Interaction:
        # Discord sends an interaction to ONE session: the shard holding its guild (DMs: 0).
        guild = int(payload["guild_id"]) if payload.get("guild_id") else None

        def receiver(f: FakeDiscord) -> _Session | None:
            return next((s for s in f._sessions if s.ready and s.holds(guild)), None)

        await self.wait_for(lambda f: receiver(f) is not None, 10.0, f"a session for {guild}")
        session = receiver(self)
        assert session is not None
        interaction = Interaction(self, payload)
        self.interactions[interaction.id] = interaction
        await session.dispatch("INTERACTION_CREATE", payload)
        return interaction

    def _find_command(self, name: str, guild_id: int | None) -> tuple[dict[str, Any] | None, bool]:
        if guild_id is not None:
            for cmd in self.registered_commands.get(guild_id, []):
                if cmd["name"] == name:
                    return cmd, True
        for cmd in self.registered_commands.get(None, []):
            if cmd["name"] == name:
                return cmd, False
        return None, False

    def _base_interaction(
        self, type_: int, *, guild_id: int | None, channel_id: int, user_id: int, permissions: int
    ) -> dict[str, Any]:
        interaction_id = self.snowflake()
        payload: dict[str, Any] = {
            "id": str(interaction_id),
            "application_id": str(APP_ID),
            "type": type_,
            "token": f"itoken-{interaction_id}-{secrets.token_hex(8)}",
            "version": 1,
            "attachment_size_limit": 26214400,
            "locale": "en-US",
            "entitlements": [],
        }
        if guild_id is not None:
            if channel_id in self.channels:
                channel = self._channel_payload(channel_id)
            else:
                channel = {"id": str(channel_id), "type": 0, "guild_id": str(guild_id)}
                channel.update(name="unknown", position=0, permission_overwrites=[])
            payload.update(
                guild_id=str(guild_id),
                guild={"id": str(guild_id), "locale": "en-US", "features": []},
                guild_locale="en-US",
                channel_id=str(channel_id),
                channel=channel,
                member=self._member_payload(user_id, permissions),
                app_permissions=str(self.channel_permissions(channel_id)),
                authorizing_integration_owners={"0": str(guild_id)},
                context=0,
            )
        else:
            dm_id = self._dm_channel_for(user_id)
            payload.update(
                channel_id=str(dm_id),
                channel=self._channel_payload(dm_id),
                user=self.user_payload(user_id),
                app_permissions=str(EVERYONE_PERMISSIONS & ~(1 << 31)),
                authorizing_integration_owners={"0": str(user_id)},
                context=1,
            )
        return payload

    def _typed_options(
        self, schema: list[dict[str, Any]], options: dict[str, Any]
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        by_name = {o["name"]: o for o in schema}
        out: list[dict[str, Any]] = []
        resolved: dict[str, Any] = {}
        for name, value in options.items():
            opt_type = int(by_name.get(name, {}).get("type", 3))
            if opt_type in OPTION_CASTS:
                out.append({"name": name, "type": opt_type, "value": OPTION_CASTS[opt_type](value)})
                continue
            snowflake = str(getattr(value, "id", value))
            out.append({"name": name, "type": opt_type, "value": snowflake})
            if opt_type == 6:
                resolved.setdefault("users", {})[snowflake] = self.user_payload(int(snowflake))
            elif opt_type == 7 and int(snowflake) in self.channels:
                channel = self._channel_payload(int(snowflake))
                channel["permissions"] = str(EVERYONE_PERMISSIONS)
                resolved.setdefault("channels", {})[snowflake] = channel
        return out, resolved

    # ------------------------------------------------------------------ interactions
    async def invoke(
        self,
        name: str,
        options: dict[str, Any] | None = None,
        *,
        guild_id: int | None,
        channel_id: int,
        user_id: int,
        permissions: int = 0,
        app_permissions: int | None = None,
        subcommand: str | None = None,
    ) -> Interaction:
        """Send a slash command. ``subcommand`` may be ``"sub"`` or ``"group sub"``."""
        command, guild_synced = self._find_command(name, guild_id)
        payload = self._base_interaction(
            2, guild_id=guild_id, channel_id=channel_id, user_id=user_id, permissions=permissions
        )
        if app_permissions is not None:
            payload["app_permissions"] = str(app_permissions)
        schema = (command or {}).get("options", [])
        path = subcommand.split() if subcommand else []
        for part in path:
            schema = next((o for o in schema if o["name"] == part), {}).get("options", [])
        typed, resolved = self._typed_options(schema, options or {})
        for depth, part in reversed(list(enumerate(path))):
            kind = 2 if depth < len(path) - 1 else 1
            typed = [{"name": part, "type": kind, "options": typed}]
        data: dict[str, Any] = {
            "id": str(command["id"]) if command else str(self.snowflake()),
            "name": name,
            "type": 1,
            "options": typed,
        }
        if resolved:
            data["resolved"] = resolved
        if guild_synced and guild_id is not None:
            data["guild_id"] = str(guild_id)
        payload["data"] = data
        return await self._send_interaction(payload)

    async def autocomplete(
        self,
        name: str,
        options: dict[str, Any],
        *,
        focused: str,
        guild_id: int | None,
        channel_id: int,
        user_id: int,
        permissions: int = 0,
    ) -> Interaction:
        """Send an APPLICATION_COMMAND_AUTOCOMPLETE (type 4) while ``focused`` is being typed;
        the bot answers with callback type 8 and ``data.choices``."""
        command, guild_synced = self._find_command(name, guild_id)
        payload = self._base_interaction(
            4, guild_id=guild_id, channel_id=channel_id, user_id=user_id, permissions=permissions
        )
        typed, _ = self._typed_options((command or {}).get("options", []), options)
        for option in typed:
            if option["name"] == focused:
                option["focused"] = True
                option["value"] = str(option["value"])
        data: dict[str, Any] = {
            "id": str(command["id"]) if command else str(self.snowflake()),
            "name": name,
            "type": 1,
            "options": typed,
        }
        if guild_synced and guild_id is not None:
            data["guild_id"] = str(guild_id)
        payload["data"] = data
        return await self._send_interaction(payload)

    async def submit_modal(
        self,
        custom_id: str,
        values: dict[str, str],
        *,
        guild_id: int | None,
        channel_id: int,
        user_id: int,
        permissions: int = 0,
    ) -> Interaction:
        """Submit a modal; mirrors the layout (action rows or labels) the bot sent it with."""
        uses_labels = False
        for interaction in self.interactions.values():
            for response in interaction.responses:
                modal = response.get("data") or {}
                if response.get("type") == 9 and modal.get("custom_id") == custom_id:
                    uses_labels = any(c.get("type") == 18 for c in modal.get("components", []))
        components = []
        for key, value in values.items():
            text_input = {"type": 4, "id": len(components) + 2, "custom_id": key, "value": value}
            if uses_labels:
                components.append({"type": 18, "id": len(components) + 1, "component": text_input})
            else:
                components.append(
                    {"type": 1, "id": len(components) + 1, "components": [text_input]}
                )
        payload = self._base_interaction(
            5, guild_id=guild_id, channel_id=channel_id, user_id=user_id, permissions=permissions
        )
        payload["data"] = {"custom_id": custom_id, "components": components}
        return await self._send_interaction(payload)

    # ------------------------------------------------------------------ REST plumbing
    def _setup_routes(self) -> None:
        snow = r"(\d+)"
        hook_msg = rf"/webhooks/{snow}/([^/]+)/messages/(@original|\d+)"
        table: list[tuple[str, str, Handler]] = [
            ("GET", r"/users/@me", self._get_me),
            ("GET", r"/oauth2/applications/@me", self._get_app),
            ("GET", r"/gateway(?:/bot)?", self._get_gateway),
            ("PUT", rf"/applications/{snow}/commands", self._put_commands),
            ("PUT", rf"/applications/{snow}/guilds/{snow}/commands", self._put_commands),
            ("GET", rf"/applications/{snow}/commands", self._get_commands),
            ("GET", rf"/applications/{snow}/guilds/{snow}/commands", self._get_commands),
            ("POST", rf"/interactions/{snow}/([^/]+)/callback", self._callback),
            ("POST", rf"/webhooks/{snow}/([^/]+)", self._followup),
            *[(m, hook_msg, self._webhook_message) for m in ("GET", "PATCH", "DELETE")],
            ("POST", rf"/channels/{snow}/messages", self._create_message),
            ("GET", rf"/channels/{snow}/messages", self._history),
            ("GET", rf"/channels/{snow}/messages/{snow}", self._channel_message),
            ("PATCH", rf"/channels/{snow}/messages/{snow}", self._channel_message),
            ("DELETE", rf"/channels/{snow}/messages/{snow}", self._channel_message),
            ("POST", r"/users/@me/channels", self._create_dm),
            ("GET", rf"/channels/{snow}", self._get_channel),
        ]
        self._routes = [(m, re.compile(p + r"/?"), h) for m, p, h in table]

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        arrived = time.monotonic()
        path = "/" + request.match_info["tail"]
        body: Any = None
        if request.content_type == "multipart/form-data":
            form = await request.post()
            if "payload_json" in form:
                body = json.loads(str(form["payload_json"]))
        elif request.can_read_body:
            raw = await request.read()
            with contextlib.suppress(ValueError):
                body = json.loads(raw) if raw else None
        record = Request(request.method, path, dict(request.query), body, 0, arrived)
        try:
            response = await self._dispatch(request, record)
        except Exception as exc:  # pragma: no cover - a bug in the fake; make it visible
            response = _error(599, f"fakediscord crashed: {exc!r}")
        record.status = response.status
        self.requests.append(record)
        await self._notify()
        return response

    async def _dispatch(self, request: web.Request, record: Request) -> web.Response:
        if self.latency:
            await asyncio.sleep(self.latency)
        for hold in list(self._holds):
            if hold.pattern.search(record.path) and not hold.released.is_set():
                hold.arrived.set()
                await hold.released.wait()
                if hold in self._holds:
                    self._holds.remove(hold)
        for fault in self._faults:
            if fault.count > 0 and fault.pattern.search(record.path):
                fault.count -= 1
                return _error(fault.status, f"{fault.status}: injected failure", fault.code)
        is_interaction = record.path.startswith(("/interactions/", "/webhooks/"))
        if self.rate_limits and not is_interaction:
            limited = self._global_limit(record.at)
            if limited is not None:
                return limited
        for method, pattern, handler in self._routes:
            match = pattern.fullmatch(record.path)
            if match and method == record.method:
                return await handler(record, match, request)
        return _error(404, "404: Not Found")

    def _global_limit(self, now: float) -> web.Response | None:
        self._global_hits = [t for t in self._global_hits if now - t < 1.0]
        if len(self._global_hits) >= self.global_limit:
            self.rate_limited_count += 1
            retry = max(0.001, 1.0 - (now - self._global_hits[0]))
            body = {"message": "You are being rate limited.", "retry_after": retry, "global": True}
            headers = {
                "Retry-After": str(math.ceil(retry)),
                "X-RateLimit-Global": "true",
                "X-RateLimit-Scope": "global",
                "Via": "1.1 google",
            }
            return _json_response(body, 429, headers)
        self._global_hits.append(now)
        return None

    def _channel_limit(self, channel_id: int, now: float) -> tuple[dict[str, str], float | None]:
        reset, count = self._channel_windows.get(channel_id, (0.0, 0))
        if now >= reset:
            reset, count = now + self.channel_window, 0
        retry = None
        if count >= self.channel_limit:
            retry = reset - now
        else:
            count += 1
        self._channel_windows[channel_id] = (reset, count)
        reset_after = math.ceil((reset - now) * 1000) / 1000
        headers = {
            "X-RateLimit-Limit": str(self.channel_limit),
            "X-RateLimit-Remaining": str(self.channel_limit - count),
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": "fake-channel-messages",
        }
        return headers, retry

    # ------------------------------------------------------------------ messages
    def _message_payload(self, msg: Message) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "id": str(msg.id),
            "channel_id": str(msg.channel_id),
            "author": self.user_payload(msg.author_id),
            "content": msg.content,
            "timestamp": datetime.fromtimestamp(
                ((msg.id >> 22) + DISCORD_EPOCH_MS) / 1000, UTC
            ).isoformat(),
            "edited_timestamp": _now_iso() if msg.edits else None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [],
            "embeds": msg.embeds,
            "components": [],
            "pinned": False,
            "type": 0,
            "flags": msg.flags,
        }
        if msg.guild_id is not None:
            payload["guild_id"] = str(msg.guild_id)
        if msg.nonce is not None:
            payload["nonce"] = msg.nonce
        if msg.interaction_id is not None:
            payload["webhook_id"] = str(APP_ID)
        return payload

    def _new_message(self, channel_id: int, body: dict[str, Any], **extra: Any) -> Message:
        guild_id = self.channels[channel_id]["guild_id"] if channel_id in self.channels else None
        embeds = list(body.get("embeds") or [])
        if channel_id in self.channels and not self.channels[channel_id]["embed_links"]:
            embeds = []  # Discord silently drops rich embeds without Embed Links
        nonce = body.get("nonce")
        msg = Message(
            id=self.snowflake(),
            channel_id=channel_id,
            content=body.get("content") or "",
            embeds=embeds,
            nonce=str(nonce) if nonce is not None else None,
            author_id=BOT_USER_ID,
            created_at=time.monotonic(),
            recipient_id=self.dm_channels.get(channel_id),
            guild_id=guild_id,
            flags=int(body.get("flags") or 0) & 64,
            **extra,
        )
        self.messages.append(msg)
        return msg

    async def _create_message(self, record: Request, match: re.Match[str], _: Any) -> web.Response:
        channel_id = int(match[1])
        body = record.json or {}
        headers: dict[str, str] = {}
        if self.rate_limits:
            headers, retry = self._channel_limit(channel_id, record.at)
            if retry is not None:
                self.rate_limited_count += 1
                limited = {"message": "You are being rate limited.", "retry_after": retry}
                limited["global"] = False
                headers.update({"Retry-After": str(math.ceil(retry)), "Via": "1.1 google"})
                headers["X-RateLimit-Scope"] = "user"
                return _json_response(limited, 429, headers)
        if channel_id in self.channels:
            if not self.channels[channel_id]["can_send"]:
                return _error(403, "Missing Permissions", 50013)
        elif channel_id in self.dm_channels:
            if not self.users[self.dm_channels[channel_id]]["dms_open"]:
                return _error(403, "Cannot send messages to this user", 50007)
        else:
            return _error(404, "Unknown Channel", 10003)
        if not body.get("content") and not body.get("embeds") and not body.get("components"):
            return _error(400, "Cannot send an empty message", 50006)
        nonce = body.get("nonce")
        now = time.monotonic()
        self._nonces = {k: v for k, v in self._nonces.items() if now - v[0] < self.nonce_window}
        key = (BOT_USER_ID, str(nonce))
        if nonce is not None and body.get("enforce_nonce") and key in self._nonces:
            return _json_response(self._message_payload(self._nonces[key][1]), 200, headers)
        msg = self._new_message(channel_id, body)
        if nonce is not None:
            self._nonces[key] = (now, msg)
        return _json_response(self._message_payload(msg), 200, headers)

    async def _history(self, record: Request, match: re.Match[str], _: Any) -> web.Response:
        """The channel's latest messages, newest first (``limit``, ``before``, as Discord)."""
        channel_id = int(match[1])
        if channel_id in self.channels:
            if not self.channels[channel_id].get("read_history", True):
                return _error(403, "Missing Access", 50001)
        elif channel_id not in self.dm_channels:
            return _error(404, "Unknown Channel", 10003)
        limit = min(100, max(1, int(record.query.get("limit", 50))))
        before = int(record.query.get("before", 1 << 63))
        found = [
            m
            for m in reversed(self.messages)
            if m.channel_id == channel_id and not m.deleted and m.id < before
        ][:limit]
        # A fetched message has no nonce: only the answer to its own send carries it.
        return _json_response([{**self._message_payload(m), "nonce": None} for m in found])

    async def _channel_message(self, record: Request, match: re.Match[str], _: Any) -> web.Response:
        channel_id, message_id = int(match[1]), int(match[2])
        msg = next((m for m in self.messages if m.id == message_id and not m.deleted), None)
        if msg is None or msg.channel_id != channel_id:
            return _error(404, "Unknown Message", 10008)
        return self._apply_message_op(record, msg)

    def _apply_message_op(self, record: Request, msg: Message) -> web.Response:
        body = record.json or {}
        if record.method == "DELETE":
            msg.deleted = True
            return web.Response(status=204)
        if record.method == "PATCH":
            msg.edits.append(body)
            if "content" in body:
                msg.content = body["content"] or ""
            if "embeds" in body:
                msg.embeds = list(body["embeds"] or [])
        return _json_response(self._message_payload(msg))

    async def _create_dm(self, record: Request, _match: re.Match[str], _: Any) -> web.Response:
        try:
            user_id = int((record.json or {})["recipient_id"])
        except (KeyError, TypeError, ValueError):
            return _error(400, "Invalid Form Body", 50035)
        return _json_response(self._channel_payload(self._dm_channel_for(user_id)))

    async def _get_channel(self, _record: Request, match: re.Match[str], _: Any) -> web.Response:
        channel_id = int(match[1])
        if channel_id not in self.channels and channel_id not in self.dm_channels:
            return _error(404, "Unknown Channel", 10003)
        return _json_response(self._channel_payload(channel_id))

    # ------------------------------------------------------------------ identity & commands
    async def _get_me(self, _record: Request, _m: re.Match[str], request: Any) -> web.Response:
        if request.headers.get("Authorization") != f"Bot {self.token}":
            return _error(401, "401: Unauthorized")
        return _json_response(self.bot_user)

    async def _get_app(self, _record: Request, _m: re.Match[str], _: Any) -> web.Response:
        owner = self.user_payload(1)
        return _json_response(
            {
                "id": str(APP_ID),
                "name": "tunewatch",
                "description": "",
                "icon": None,
                "bot_public": True,
                "bot_require_code_grant": False,
                "owner": owner,
                "verify_key": "0" * 64,
                "flags": 0,
                "team": None,
                "bot": self.bot_user,
            }
        )

    async def _get_gateway(self, _record: Request, _m: re.Match[str], _: Any) -> web.Response:
        limit = {"total": 1000, "remaining": 1000, "reset_after": 0, "max_concurrency": 1}
        body = {"url": self.gateway_url, "shards": self.shards, "session_start_limit": limit}
        return _json_response(body)

    async def _put_commands(self, record: Request, match: re.Match[str], _: Any) -> web.Response:
        guild_id = int(match[2]) if match.lastindex and match.lastindex >= 2 else None
        given = list(record.json or [])
        self.command_syncs.append((guild_id, copy.deepcopy(given)))
        stored = []
        for cmd in given:
            key = (guild_id, cmd["name"])
            cmd_id = self._command_ids.setdefault(key, self.snowflake())
            full = {
                "type": 1,
                "description": "",
                "options": [],
                "default_member_permissions": None,
                "nsfw": False,
                **copy.deepcopy(cmd),
                "id": str(cmd_id),
                "application_id": str(APP_ID),
                "version": str(self.snowflake()),
            }
            if guild_id is not None:
                full["guild_id"] = str(guild_id)
            stored.append(full)
        self.registered_commands[guild_id] = stored
        return _json_response(stored)

    async def _get_commands(self, _record: Request, match: re.Match[str], _: Any) -> web.Response:
        guild_id = int(match[2]) if match.lastindex and match.lastindex >= 2 else None
        return _json_response(self.registered_commands.get(guild_id, []))

    # ------------------------------------------------------------------ interaction REST
    def _interaction_by_token(self, token: str) -> Interaction | None:
        return next((i for i in self.interactions.values() if i.token == token), None)

    async def _callback(self, record: Request, match: re.Match[str], _: Any) -> web.Response:
        interaction = self.interactions.get(int(match[1]))
        if interaction is None or interaction.token != match[2]:
            return _error(404, "Unknown interaction", 10062)
        body = record.json or {}
        interaction.responses.append(body)
        if record.at - interaction.created_at > self.interaction_deadline:
            interaction._late = True
            interaction.callback_statuses.append(404)
            return _error(404, "Unknown interaction", 10062)
        if interaction.acknowledged:
            interaction.callback_statuses.append(400)
            return _error(400, "Interaction has already been acknowledged.", 40060)
        interaction.callback_statuses.append(200)
        kind = int(body.get("type", 0))
        data = body.get("data") or {}
        flags = int(data.get("flags") or 0)
        info: dict[str, Any] = {
            "id": str(interaction.id),
            "type": interaction.payload["type"],
            "activity_instance_id": None,
            "response_message_id": None,
            "response_message_loading": kind == 5,
            "response_message_ephemeral": bool(flags & 64),
        }
        result: dict[str, Any] = {"interaction": info}
        if kind in (4, 5):
            if kind == 4:
                msg = self._new_message(interaction.channel_id, data, interaction_id=interaction.id)
                interaction.original = msg
            else:  # deferred: a "thinking" placeholder that is not recorded as a message
                msg = Message(
                    self.snowflake(), interaction.channel_id, "", [], None, BOT_USER_ID,
                    time.monotonic(), flags=(flags & 64) | 128, interaction_id=interaction.id,
                )  # fmt: skip
            info["response_message_id"] = str(msg.id)
            result["resource"] = {"type": kind, "message": self._message_payload(msg)}
        return _json_response(result)

    async def _followup(self, record: Request, match: re.Match[str], _: Any) -> web.Response:
        interaction = self._interaction_by_token(match[2])
        if interaction is None or not interaction.acknowledged:
            return _error(404, "Unknown Webhook", 10015)
        body = record.json or {}
        interaction.followups.append(body)
        interaction._followup_at.append(time.monotonic())
        msg = self._new_message(interaction.channel_id, body, interaction_id=interaction.id)
        if record.query.get("wait") in ("1", "true", "True"):
            return _json_response(self._message_payload(msg))
        return web.Response(status=204)

    async def _webhook_message(self, record: Request, match: re.Match[str], _: Any) -> web.Response:
        interaction = self._interaction_by_token(match[2])
        if interaction is None or not interaction.acknowledged:
            return _error(404, "Unknown Webhook", 10015)
        if match[3] != "@original":
            msg = next((m for m in self.messages if m.id == int(match[3])), None)
            if msg is None or msg.interaction_id != interaction.id or msg.deleted:
                return _error(404, "Unknown Message", 10008)
            return self._apply_message_op(record, msg)
        if record.method == "PATCH":
            interaction.edits.append(record.json or {})
            interaction._edit_at.append(time.monotonic())
            if interaction.original is None:  # first edit after a defer shows the message
                first = interaction.responses[0].get("data") or {}
                body = {**(record.json or {}), "flags": first.get("flags", 0)}
                interaction.original = self._new_message(
                    interaction.channel_id, body, interaction_id=interaction.id
                )
                return _json_response(self._message_payload(interaction.original))
        if interaction.original is None or interaction.original.deleted:
            return _error(404, "Unknown Message", 10008)
        return self._apply_message_op(record, interaction.original)
