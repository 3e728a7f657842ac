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
    CREATE_PUBLIC_THREADS,
    DISCORD_EPOCH_MS,
    EMBED_LINKS,
    GUILD_TEXT,
    HAS_THREAD,
    MENTION_EVERYONE,
    PUBLIC_THREAD,
    READ_MESSAGE_HISTORY,
    SEND_MESSAGES,
    SEND_MESSAGES_IN_THREADS,
    SETTABLE_FLAGS,
    SUPPRESS_EMBEDS,
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
            ("POST", rf"/channels/{snow}/messages/{snow}/threads", self._start_thread),
            ("GET", rf"/guilds/{snow}/roles", self._guild_roles),
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
    def _message_payload(self, msg: Message, *, nested: bool = True) -> dict[str, Any]:
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
            "mention_everyone": msg.pinged_everyone,
            "mentions": [self.user_payload(u) for u in msg.pinged_users],
            "mention_roles": [str(r) for r in msg.pinged_roles],
            "attachments": [],
            "embeds": msg.embeds,
            "components": msg.components,
            "pinned": False,
            "type": 19 if msg.message_reference else 0,  # 19: a reply
            "flags": msg.flags,
        }
        if msg.guild_id is not None:
            payload["guild_id"] = str(msg.guild_id)
        if msg.nonce is not None:
            payload["nonce"] = msg.nonce
        if msg.interaction_id is not None:
            payload["webhook_id"] = str(APP_ID)
        if msg.message_reference is not None:
            payload["message_reference"] = msg.message_reference
            if nested:
                ref = self._find_message(int(msg.message_reference["message_id"]))
                payload["referenced_message"] = (
                    None if ref is None else self._message_payload(ref, nested=False)
                )
        if msg.channel_id in self.channels and msg.guild_id is not None:
            # Discord adds the author's member object to messages in a guild.
            member = self._member_payload(msg.author_id, guild_id=msg.guild_id)
            payload["member"] = {k: v for k, v in member.items() if k != "user"}
        return payload

    def _find_message(self, message_id: int) -> Message | None:
        return next((m for m in self.messages if m.id == message_id and not m.deleted), None)

    def _pings(
        self, channel_id: int, content: str, allowed: dict[str, Any] | None
    ) -> tuple[list[int], list[int], bool]:
        """Who a new message notifies: the users, roles and @everyone/@here its content
        mentions, as far as ``allowed_mentions`` allows (absent: Discord parses them all), and
        roles only when mentionable or the bot has Mention Everyone."""
        if allowed is None:
            parse, users, roles = {"users", "roles", "everyone"}, None, None
        else:
            parse = set(allowed.get("parse") or [])
            users, roles = allowed.get("users"), allowed.get("roles")
        guild_id = self.channels[channel_id]["guild_id"] if channel_id in self.channels else None
        may_everyone = bool(
            guild_id is not None and self.channel_permissions(channel_id) & MENTION_EVERYONE
        )
        pinged_users = [
            int(u)
            for u in dict.fromkeys(re.findall(r"<@!?(\d+)>", content))
            if "users" in parse or (users is not None and u in map(str, users))
        ]
        pinged_roles = [
            int(r)
            for r in dict.fromkeys(re.findall(r"<@&(\d+)>", content))
            if ("roles" in parse or (roles is not None and r in map(str, roles)))
            and int(r) in self.roles
            and self.roles[int(r)]["guild_id"] == guild_id
            and (self.roles[int(r)]["mentionable"] or may_everyone)
        ]
        everyone = bool(
            re.search(r"@(everyone|here)\b", content) and "everyone" in parse and may_everyone
        )
        return pinged_users, pinged_roles, everyone

    def _new_message(self, channel_id: int, body: dict[str, Any], **extra: Any) -> Message:
        guild_id = self.channels[channel_id]["guild_id"] if channel_id in self.channels else None
        embeds = list(body.get("embeds") or [])
        if channel_id in self.channels and not self.channel_permissions(channel_id) & EMBED_LINKS:
            embeds = []  # Discord silently drops rich embeds without Embed Links
        nonce = body.get("nonce")
        content = body.get("content") or ""
        allowed = body.get("allowed_mentions")
        pinged_users, pinged_roles, pinged_everyone = self._pings(channel_id, content, allowed)
        msg = Message(
            id=self.snowflake(),
            channel_id=channel_id,
            content=content,
            embeds=embeds,
            nonce=str(nonce) if nonce is not None else None,
            author_id=BOT_USER_ID,
            created_at=time.monotonic(),
            recipient_id=self.dm_channels.get(channel_id),
            guild_id=guild_id,
            flags=int(body.get("flags") or 0) & SETTABLE_FLAGS,
            components=copy.deepcopy(list(body.get("components") or [])),
            allowed_mentions=copy.deepcopy(allowed),
            message_reference=self._reference(channel_id, body.get("message_reference")),
            pinged_users=pinged_users,
            pinged_roles=pinged_roles,
            pinged_everyone=pinged_everyone,
            **extra,
        )
        msg.versions.append(msg.snapshot())
        self.messages.append(msg)
        return msg

    def _reference(self, channel_id: int, ref: dict[str, Any] | None) -> dict[str, Any] | None:
        """The reply's reference as Discord stores it; None when it is none or, with
        ``fail_if_not_exists: false``, when the message is gone."""
        if not ref or ref.get("message_id") is None:
            return None
        target = self._find_message(int(ref["message_id"]))
        if target is None:
            return None
        return {
            "type": 0,
            "message_id": str(target.id),
            "channel_id": str(target.channel_id),
            **({"guild_id": str(target.guild_id)} if target.guild_id is not None else {}),
        }

    def _bad_reference(self, body: dict[str, Any]) -> web.Response | None:
        """Discord refuses a reply to a missing message unless told not to fail."""
        ref = body.get("message_reference")
        if not ref or ref.get("message_id") is None:
            return None
        if self._find_message(int(ref["message_id"])) is not None:
            return None
        if ref.get("fail_if_not_exists", True) is False:
            return None
        return _json_response(
            {
                "message": "Invalid Form Body",
                "code": 50035,
                "errors": {
                    "message_reference": {
                        "_errors": [{"code": "MESSAGE_REFERENCE_UNKNOWN_MESSAGE",
                                     "message": "Unknown message"}]
                    }
                },
            },
            400,
        )  # fmt: skip

    @staticmethod
    def _bad_mentions(body: dict[str, Any]) -> web.Response | None:
        """Discord refuses ``parse`` naming a kind that is also listed by id."""
        allowed = body.get("allowed_mentions") or {}
        parse = set(allowed.get("parse") or [])
        for kind in ("users", "roles"):
            if kind in parse and allowed.get(kind):
                return _error(400, f"Invalid Form Body: parse:{kind} and {kind} conflict", 50035)
        return None

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
            channel = self.channels[channel_id]
            perms = self.channel_permissions(channel_id)
            if channel["type"] == PUBLIC_THREAD:
                if not perms & SEND_MESSAGES_IN_THREADS:
                    return _error(403, "Missing Permissions", 50013)
                if channel["archived"] and channel["locked"]:
                    return _error(400, "Thread is locked", 50083)
                if channel["archived"]:  # a message unarchives a thread that is not locked
                    channel["archived"] = False
                    self._broadcast("THREAD_UPDATE", self._channel_payload(channel_id))
            elif not perms & SEND_MESSAGES:
                return _error(403, "Missing Permissions", 50013)
        elif channel_id in self.dm_channels:
            if not self.users[self.dm_channels[channel_id]]["dms_open"]:
                return _error(403, "Cannot send messages to this user", 50007)
        else:
            return _error(404, "Unknown Channel", 10003)
        if not body.get("content") and not body.get("embeds") and not body.get("components"):
            return _error(400, "Cannot send an empty message", 50006)
        refused = self._bad_mentions(body) or self._bad_reference(body)
        if refused is not None:
            return refused
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
            if not self.channel_permissions(channel_id) & READ_MESSAGE_HISTORY:
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
            self._edit(msg, body)
        return _json_response(self._message_payload(msg))

    @staticmethod
    def _edit(msg: Message, body: dict[str, Any]) -> None:
        """An edit: what it names changes; it notifies nobody (mentions added by an edit do
        not ping)."""
        msg.edits.append(copy.deepcopy(body))
        if "content" in body:
            msg.content = body["content"] or ""
        if "embeds" in body:
            msg.embeds = list(body["embeds"] or [])
        if "components" in body:
            msg.components = copy.deepcopy(list(body["components"] or []))
        if "flags" in body and body["flags"] is not None:
            # Only SUPPRESS_EMBEDS can be changed by an edit.
            msg.flags = (msg.flags & ~SUPPRESS_EMBEDS) | (int(body["flags"]) & SUPPRESS_EMBEDS)
        msg.versions.append(msg.snapshot())

    async def _start_thread(self, record: Request, match: re.Match[str], _: Any) -> web.Response:
        """Start a public thread from a message: the thread gets the message's id."""
        channel_id, message_id = int(match[1]), int(match[2])
        channel = self.channels.get(channel_id)
        if channel is None:
            return _error(404, "Unknown Channel", 10003)
        if channel["type"] != GUILD_TEXT:
            return _error(400, "Cannot execute action on this channel type", 50024)
        if not self.channel_permissions(channel_id) & CREATE_PUBLIC_THREADS:
            return _error(403, "Missing Permissions", 50013)
        msg = self._find_message(message_id)
        if msg is None or msg.channel_id != channel_id:
            return _error(404, "Unknown Message", 10008)
        if message_id in self.channels:
            return _error(400, "A thread has already been created for this message", 160004)
        body = record.json or {}
        name = str(body.get("name") or "")
        if not 1 <= len(name) <= 100:
            return _error(400, "Invalid Form Body: name must be 1 to 100 characters", 50035)
        self.add_thread(channel_id, message_id, name, BOT_USER_ID)
        msg.flags |= HAS_THREAD
        duration = body.get("auto_archive_duration")
        if duration is not None:
            if int(duration) not in (60, 1440, 4320, 10080):
                return _error(400, "Invalid Form Body: auto_archive_duration", 50035)
            self.channels[message_id]["auto_archive_duration"] = int(duration)
        payload = self._channel_payload(message_id)
        self._broadcast("THREAD_CREATE", {**payload, "newly_created": True})
        return _json_response(payload, 201)

    async def _guild_roles(self, _record: Request, match: re.Match[str], _: Any) -> web.Response:
        guild_id = int(match[1])
        if guild_id not in self.guilds:
            return _error(404, "Unknown Guild", 10004)
        return _json_response(self._guild_payload(guild_id)["roles"])

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
