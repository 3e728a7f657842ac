"""What keeps the optional HTTP server from being held open, starved of files or made to flood
the log: its own accept loop with a cap on connections, a deadline to send a whole request, and
logs that cost a few lines per burst.

Why not aiohttp's ``TCPSite`` with settings: it serves through asyncio's ``create_server``, and
that has no limit on connections, while aiohttp has no deadline for a request's header or body
(``keepalive_timeout`` only closes idle connections, and an idle one before its first request only
since aiohttp 3.14; ``read_bufsize`` and the header limits bound memory, not time). Past the
process's file limit, asyncio's accept path on Python 3.11 logs a traceback for every failed
``accept()`` and reschedules itself once per failure (CPython issue gh-151615): 1,100 slow
connections under a limit of 1,024 files wrote 60,000 tracebacks (27 MB) to stderr in 60 s, and
420,000 (188 MB) when each closed connection came back at once (benchmarks/http_flood.py). So the
guard accepts itself (``loop.sock_accept``), hands each socket to aiohttp's own request handler
(``loop.connect_accepted_socket``), and keeps the books around it:

- at most ``max_connections`` at once, lowered to half the process's file limit so the bot's own
  connections (API polls, Discord, the database) always find a descriptor;
- at the cap, a connection waiting for a request is closed to make room for the new one (see
  ``_EVICTION_ORDER``): slow clients push out slow clients, and a quick ``/healthz`` gets through;
  if every connection is busy with a request, the new one is closed at once;
- a connection has ``read_timeout`` seconds to send its whole request (header and body), from
  when it was accepted or its previous answer was written; past that it is closed;
- when no descriptor is left, accepting pauses for a second and says so once.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import cast

from aiohttp import web
from aiohttp.typedefs import Middleware
from aiohttp.web_protocol import RequestHandler, RequestPayloadError

from bot.burst_log import BurstLog

try:
    import resource
except ImportError:  # not on Windows; there the configured cap is used as it is
    resource = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

# accept() failing with these means no descriptor (or no kernel memory) is left for a socket.
_OUT_OF_FILES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
ACCEPT_RETRY_SECONDS = 1.0
ACCEPT_ERROR_PAUSE_SECONDS = 0.05

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def file_limit() -> int | None:
    """The process's soft limit on open files, or None when there is none to read."""
    if resource is None:
        return None
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


def connection_cap(configured: int, limit: int | None) -> int:
    """The cap actually used: never more than half the file limit, the rest is the bot's."""
    if limit is None:
        return configured
    return max(1, min(configured, limit // 2))


# Where a connection stands. The first three wait for a request and can be closed to make room,
# in this order: "stalled" (part of a request sent, or idle after an answer) before "fresh"
# (nothing sent yet: its request is often still on its way when it is accepted) before "arrived"
# (a whole header is in, aiohttp is about to hand the request to its handler). A slow client has
# had its chance; a quick request is not pushed out by a flood in the moment before it is served.
STALLED, FRESH, ARRIVED, BUSY, CLOSED = "stalled", "fresh", "arrived", "busy", "closed"
_EVICTION_ORDER = (STALLED, FRESH, ARRIVED)
_HEADER_END = b"\r\n\r\n"


class _Connection(asyncio.Protocol):
    """One accepted connection: aiohttp's request handler inside, the guard's books around it."""

    def __init__(self, guard: GuardedListener, handler: RequestHandler) -> None:
        self.handler = handler
        self.transport: asyncio.Transport | None = None
        self.state = FRESH
        self.answered = 0  # requests answered on this connection
        self.partial = False  # bytes arrived since it started waiting for a request
        self.timer: asyncio.TimerHandle | None = None
        self._tail = b""  # the last bytes of a header not yet complete
        self._guard = guard

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self._guard._opened(self)
        self.handler.connection_made(self.transport)

    def data_received(self, data: bytes) -> None:
        self.partial = True
        if self.state in (FRESH, STALLED):
            # The end of the header (CRLF CRLF), perhaps split across reads, is all the guard
            # reads of HTTP; aiohttp parses the request.
            if _HEADER_END in data or _HEADER_END in self._tail + data[:3]:
                self._tail = b""
                self._guard._move(self, ARRIVED)
            else:
                self._tail = (self._tail + data)[-3:]
                self._guard._move(self, STALLED)
        self.handler.data_received(data)

    def eof_received(self) -> None:
        self.handler.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._guard._forget(self)
        self.handler.connection_lost(exc)

    def pause_writing(self) -> None:
        self.handler.pause_writing()

    def resume_writing(self) -> None:
        self.handler.resume_writing()

    def abort(self) -> None:
        """Close now: no goodbye owed to a client that did not finish its request."""
        if self.transport is not None:
            self.transport.abort()


class GuardedListener:
    """The HTTP server's listening sockets and accept loop (see the module's docstring)."""

    def __init__(self, *, max_connections: int, read_timeout: float, max_body: int) -> None:
        self.max_connections = max_connections
        self.read_timeout = read_timeout
        self._max_body = max_body
        self._events = BurstLog(log)
        self._by_handler: dict[RequestHandler, _Connection] = {}
        # The connections waiting for a request, by state, longest waiting first.
        self._shelves: dict[str, OrderedDict[_Connection, None]] = {
            state: OrderedDict() for state in _EVICTION_ORDER
        }
        self._sockets: list[socket.socket] = []
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def connections(self) -> int:
        """Connections open now."""
        return len(self._by_handler)

    def states(self) -> dict[str, int]:
        """Connections open now by where they stand (stalled, fresh, arrived, busy)."""
        counts = {state: len(shelf) for state, shelf in self._shelves.items()}
        counts[BUSY] = len(self._by_handler) - sum(counts.values())
        return counts

    @property
    def middleware(self) -> Middleware:
        """The aiohttp middleware that tells the guard when a request is in and when answered."""

        @web.middleware
        async def guard_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
            connection = self._by_handler.get(request.protocol)
            if connection is None:  # not accepted by this guard (a test client)
                return await handler(request)
            # A request is in once its body is: a body that never ends holds a connection as
            # long as a header that never ends, and the same deadline covers both. Bodies over the
            # limit are left to the handler, which refuses them unread.
            if request.content_length is None or request.content_length <= self._max_body:
                if not request.content.is_eof():
                    self._move(connection, STALLED)  # the body is still on its way
                try:
                    await request.read()
                except ConnectionError:
                    # Closed at its deadline or to make room: nobody is left to answer.
                    return web.Response(status=408)
                except RequestPayloadError:
                    return web.Response(status=400, text="malformed request body")
            self._move(connection, BUSY)
            try:
                return await handler(request)
            finally:
                connection.answered += 1
                connection.partial = False
                if self._by_handler.get(connection.handler) is connection:  # still open
                    self._move(connection, STALLED, deadline=True)

        return guard_requests

    async def start(
        self, factory: Callable[[], RequestHandler], host: str, port: int, *, backlog: int = 128
    ) -> int:
        """Listen on host:port (port 0 picks a free one); returns the port."""
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        try:
            for family, kind, proto, _name, address in dict.fromkeys(infos):
                sock = socket.socket(family, kind, proto)
                self._sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    # One socket per family, as asyncio does, rather than a dual-stack one.
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(address)
                sock.listen(backlog)
                sock.setblocking(False)
        except OSError:
            self._close_sockets()
            raise
        for sock in self._sockets:
            task = asyncio.create_task(self._serve(sock, factory), name="http-accept")
            task.add_done_callback(_report_end)
            self._tasks.append(task)
        bound: int = self._sockets[0].getsockname()[1]
        return bound

    async def close(self) -> None:
        """Stop accepting; close the connections waiting for a request (busy ones are left to
        aiohttp's graceful shutdown)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        self._close_sockets()
        for shelf in self._shelves.values():
            for connection in list(shelf):
                self._drop(connection)
        self._events.close()

    def _close_sockets(self) -> None:
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()

    async def _serve(self, listener: socket.socket, factory: Callable[[], RequestHandler]) -> None:
        loop = asyncio.get_running_loop()

        def protocol() -> _Connection:
            return _Connection(self, factory())

        while True:
            try:
                sock, _address = await loop.sock_accept(listener)
            except ConnectionError:
                continue  # the client gave up before it was accepted (ECONNABORTED)
            except OSError as exc:
                if exc.errno in _OUT_OF_FILES:
                    self._events.note(
                        "out of files",
                        logging.WARNING,
                        f"HTTP server cannot accept connections: {exc.strerror}; retrying each "
                        "second, the bot's own connections come first",
                    )
                    await asyncio.sleep(ACCEPT_RETRY_SECONDS)
                else:
                    # Linux reports some network errors of the pending connection here; a short
                    # pause keeps an error that repeats from spinning the loop.
                    self._events.note(
                        "accept failed", logging.WARNING, f"HTTP server accept() failed: {exc!r}"
                    )
                    await asyncio.sleep(ACCEPT_ERROR_PAUSE_SECONDS)
                continue
            if not self._make_room():
                sock.close()
                self._events.note(
                    "all busy",
                    logging.WARNING,
                    f"HTTP server at its cap of {self.max_connections} connections, all busy "
                    "with requests: closing new ones at once",
                )
                continue
            try:
                await loop.connect_accepted_socket(protocol, sock)
            except OSError:
                sock.close()

    def _make_room(self) -> bool:
        """Below the cap, or brought below it; False when every connection is busy."""
        if len(self._by_handler) < self.max_connections:
            return True
        shelf = next((self._shelves[s] for s in _EVICTION_ORDER if self._shelves[s]), None)
        if shelf is None:
            return False
        self._drop(next(iter(shelf)))
        self._events.note(
            "at the cap",
            logging.WARNING,
            f"HTTP server at its cap of {self.max_connections} connections: closing the ones "
            "that have waited longest without sending a complete request",
        )
        return True

    def _opened(self, connection: _Connection) -> None:
        self._by_handler[connection.handler] = connection
        self._move(connection, FRESH, deadline=True)

    def _move(self, connection: _Connection, state: str, *, deadline: bool = False) -> None:
        """Put the connection in ``state``; ``deadline``: it starts waiting for a (next) request
        and has ``read_timeout`` to send it. Busy connections have no deadline."""
        if connection.state == state and not deadline:
            return
        self._unshelve(connection)
        connection.state = state
        if state != BUSY:
            self._shelves[state][connection] = None
        if (deadline or state == BUSY) and connection.timer is not None:
            connection.timer.cancel()
            connection.timer = None
        if deadline:
            connection.timer = asyncio.get_running_loop().call_later(
                self.read_timeout, self._expire, connection
            )

    def _expire(self, connection: _Connection) -> None:
        connection.timer = None
        if connection.state == BUSY or connection.handler not in self._by_handler:
            return
        if connection.partial or connection.answered == 0:
            # An idle keep-alive connection closing is routine; one that never sent a whole
            # request is a slow or broken client.
            self._events.note(
                "slow request",
                logging.INFO,
                f"HTTP server closed a connection that sent no complete request within "
                f"{self.read_timeout:g} s",
            )
        self._drop(connection)

    def _unshelve(self, connection: _Connection) -> None:
        shelf = self._shelves.get(connection.state)
        if shelf is not None:
            shelf.pop(connection, None)

    def _drop(self, connection: _Connection) -> None:
        connection.abort()
        self._forget(connection)

    def _forget(self, connection: _Connection) -> None:
        self._by_handler.pop(connection.handler, None)
        self._unshelve(connection)
        connection.state = CLOSED
        if connection.timer is not None:
            connection.timer.cancel()
            connection.timer = None


def _report_end(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("HTTP server stopped accepting", exc_info=task.exception())
