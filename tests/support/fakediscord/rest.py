"""The fake's REST API: routing, rate limits, messages, channels, identity and commands."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import math
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from tests.support.fakediscord.model import (
    APP_ID,
    BOT_USER_ID,
    DISCORD_EPOCH_MS,
    Message,
    Request,
    _error,
    _json_response,
    _now_iso,
)

Handler = Callable[[Request, re.Match[str], Any], Awaitable[web.Response]]


class Rest:
    """The HTTP side of the fake (a mixin of FakeDiscord)."""

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
        return _json_response({"url": self.gateway_url, "shards": 1, "session_start_limit": limit})

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
