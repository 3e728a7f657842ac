"""Slow HTTP clients (slowloris): connections that never finish their request."""

from __future__ import annotations

import asyncio
import contextlib

# Only a guard against a hang: a wait on a connection being closed ends on that event.
HANG = 20.0


class Slow:
    """A client that never finishes its request, trickling a byte now and then to look alive."""

    def __init__(self, port: int, kind: str, secret: str | None = None) -> None:
        """``kind``: "header" (never finished), "body" (a webhook body never finished) or
        "silent" (connects, sends nothing)."""
        self.port = port
        self.kind = kind
        self.secret = secret or "guess"
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.received = b""
        self._trickle: asyncio.Task[None] | None = None

    async def open(self, *, trickle: float | None = 0.05) -> Slow:
        """Connect and send the start of the request; then a byte every ``trickle`` seconds."""
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        if self.kind == "header":
            self.writer.write(b"GET /healthz HTTP/1.1\r\nHost: bot\r\nX-Slow: ")
        elif self.kind == "body":
            self.writer.write(
                f"POST /webhooks/sdapi/{self.secret} HTTP/1.1\r\nHost: bot\r\n"
                "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{".encode()
            )
        if trickle is not None and self.kind != "silent":
            self._trickle = asyncio.create_task(self._dribble(trickle))
        return self

    async def _dribble(self, every: float) -> None:
        assert self.writer is not None
        with contextlib.suppress(OSError):
            while not self.writer.is_closing():
                self.writer.write(b"a")
                await asyncio.sleep(every)

    async def closed(self) -> bytes:
        """Wait for the server to close the connection; what it sent before, if anything."""
        assert self.reader is not None
        with contextlib.suppress(ConnectionError):
            while chunk := await asyncio.wait_for(self.reader.read(4096), HANG):
                self.received += chunk
        return self.received

    def is_open(self) -> bool:
        return self.reader is not None and not self.reader.at_eof()

    async def close(self) -> None:
        if self._trickle is not None:
            self._trickle.cancel()
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
