"""The fake's gateway: HELLO, IDENTIFY, READY and GUILD_CREATE, RESUME, dispatches."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from typing import Any

from aiohttp import WSMsgType, web

from tests.support.fakediscord.interactions import Interaction
from tests.support.fakediscord.model import APP_ID


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


class Gateway:
    """The WebSocket side of the fake (a mixin of FakeDiscord)."""

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

        def receiver() -> _Session | None:
            return next((s for s in self._sessions if s.ready and s.holds(guild)), None)

        await self.wait_for(lambda _: receiver() is not None, 10.0, f"a session for {guild}")
        session = receiver()
        assert session is not None
        interaction = Interaction(self, payload)
        self.interactions[interaction.id] = interaction
        await session.dispatch("INTERACTION_CREATE", payload)
        return interaction
