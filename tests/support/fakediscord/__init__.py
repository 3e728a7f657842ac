"""A loopback fake of Discord's REST API v10 and Gateway for end-to-end tests.

The real, unmodified discord.py client talks to it over real HTTP and WebSocket on 127.0.0.1:
point ``discord.http.Route.BASE`` at :attr:`FakeDiscord.api_base` and
``discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY`` at :attr:`FakeDiscord.gateway_url`.
Everything the bot does is observable in :attr:`FakeDiscord.requests` and
:attr:`FakeDiscord.messages`; waits are event driven (:meth:`FakeDiscord.wait_for`).

The fake is a small package: ``model`` (constants and records), ``state`` (the world),
``rest``, ``gateway`` and ``interactions``; ``FakeDiscord`` puts them together.
"""

from __future__ import annotations

from aiohttp import web

from tests.support.fakediscord.gateway import Gateway
from tests.support.fakediscord.interactions import Interaction, Interactions
from tests.support.fakediscord.model import *  # noqa: F403 - the constants tests import
from tests.support.fakediscord.model import Hold, Message, Request
from tests.support.fakediscord.rest import Rest
from tests.support.fakediscord.state import World


class FakeDiscord(Rest, Interactions, Gateway, World):
    """Discord's REST API v10 and Gateway on 127.0.0.1, for the real discord.py client."""

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


__all__ = ["FakeDiscord", "Hold", "Interaction", "Message", "Request"]
