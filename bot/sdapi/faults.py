"""The simulator's faults: every error answer the service is known to give (see
the bodies and their sources in tests/unit/test_corpus.py), and a few a broken network gives;
which requests get them (``FaultQueue``) and the answers that hang or never end."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from aiohttp import web

# What Fault.HUGE announces and sends (unless the client leaves first).
HUGE_BODY_BYTES = 50 * 1024 * 1024
STREAM_CHUNK = b"x" * 65_536


class Fault(StrEnum):
    """What an injected fault makes the next matching request(s) answer."""

    SERVER_ERROR = "500"
    UNAVAILABLE = "503"
    HTML = "html"
    EMPTY = "empty"
    RATE_LIMIT_429 = "429"
    RATE_LIMIT_BODY = "rate_limit_body"
    HANG = "hang"
    INVALID_KEY = "invalid_key"
    """HTTP 200 with the documented invalid-key body."""
    INVALID_KEY_401 = "401"
    NOT_FOUND = "not_found"
    """HTTP 404 ``Training ID does not exist``."""
    MODEL_NOT_FOUND = "model_not_found"
    """HTTP 200 ``Model not found``, as the provider's test logs show for unknown ids."""
    NO_CREDITS = "402"
    EMPTY_ERROR = "empty_error"
    """``{"status": "error", "messege": ""}``, many times in the provider's test logs."""
    TRY_AGAIN = "try_again"
    """``{"status": "failed", "messege": "Failed, Try Again", ...}``."""
    PROCESSING = "processing"
    """``{"status": "processing", "eta": 21.88, ...}``: queued, ETA in seconds."""
    ENDLESS = "endless"
    """HTTP 200, chunked, never ending (until the client goes away)."""
    HUGE = "huge"
    """HTTP 200 with a Content-Length of 50 MiB, streamed."""
    GARBAGE = "garbage"


def json_bytes(value: dict[str, Any]) -> bytes:
    return json.dumps(value).encode()


INVALID_KEY_BODY = json_bytes(
    {
        "status": "error",
        "message": "Invalid Api Key",
        "tip": "1. Make sure you are passing Content-Type: application/json in header. "
        "2. Make sure you are doing POST request. 3. Make sure your API key is valid.",
    }
)
NOT_FOUND_BODY = json_bytes({"status": "error", "message": "Training ID does not exist"})
HTML_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    b"</body>\r\n</html>\r\n"
)
JSON = "application/json"
# Fixed answers: (HTTP status, body).
FIXED: dict[Fault, tuple[int, bytes]] = {
    Fault.SERVER_ERROR: (500, json_bytes({"status": "error", "message": "Internal Server Error"})),
    Fault.UNAVAILABLE: (503, json_bytes({"status": "error", "message": "Service Unavailable"})),
    Fault.HANG: (503, json_bytes({"status": "error", "message": "Service Unavailable"})),
    Fault.EMPTY: (200, b""),
    Fault.RATE_LIMIT_BODY: (
        200,
        json_bytes(
            {
                "status": "error",
                "messege": "Rate limit exceeded",
                "tips": "you are sending same request multiple times, spam filter is "
                "enabled, please wait for 30 seconds and try again",
            }
        ),
    ),
    Fault.INVALID_KEY: (200, INVALID_KEY_BODY),
    Fault.INVALID_KEY_401: (401, json_bytes({"status": "error", "message": "Invalid API key"})),
    Fault.NOT_FOUND: (404, NOT_FOUND_BODY),
    Fault.MODEL_NOT_FOUND: (200, json_bytes({"status": "error", "messege": "Model not found"})),
    Fault.NO_CREDITS: (
        402,
        json_bytes(
            {"status": "error", "message": "Insufficient credits. Please recharge your account."}
        ),
    ),
    Fault.EMPTY_ERROR: (200, json_bytes({"status": "error", "messege": ""})),
    Fault.TRY_AGAIN: (
        200,
        json_bytes({"status": "failed", "id": "", "messege": "Failed, Try Again", "output": ""}),
    ),
    Fault.PROCESSING: (
        200,
        json_bytes(
            {
                "status": "processing",
                "eta": 21.88,
                "messege": "Try to fetch request after given estimated time",
            }
        ),
    ),
    Fault.GARBAGE: (200, b"not json{"),
}


def fault_response(fault: Fault, retry_after: float) -> web.Response:
    """The answer a fixed fault gives (not a hang nor a stream: see ``FaultQueue.hang`` and
    ``stream``)."""
    if fault is Fault.HTML:
        return web.Response(status=502, body=HTML_502, content_type="text/html")
    if fault is Fault.RATE_LIMIT_429:
        seconds: float | int = retry_after
        if float(seconds).is_integer():
            seconds = int(seconds)
        body = json_bytes(
            {"status": "error", "message": "Rate limit exceeded", "retry_after": seconds}
        )
        headers = {"Retry-After": str(math.ceil(retry_after))}
        return web.Response(status=429, body=body, content_type=JSON, headers=headers)
    status, body = FIXED[fault]
    return web.Response(status=status, body=body, content_type=JSON)


@dataclass(slots=True)
class FaultRule:
    """A fault for the next ``remaining`` requests (None: until cleared) about
    ``training_id`` (None: any)."""

    fault: Fault
    remaining: int | None
    training_id: str | None
    hang_seconds: float


class FaultQueue:
    """The faults injected and not used up, matched in the order they were given."""

    def __init__(self) -> None:
        self._rules: list[FaultRule] = []
        self._release = asyncio.Event()

    def add(
        self, fault: Fault, count: int | None, training_id: str | None, hang_seconds: float
    ) -> None:
        if count is not None and count < 1:
            raise ValueError("count must be at least 1, or None")
        self._rules.append(FaultRule(Fault(fault), count, training_id, hang_seconds))

    def clear(self) -> None:
        self._rules.clear()

    def take(self, training_id: str) -> FaultRule | None:
        """The fault a request about ``training_id`` gets now, if any (and one use of it)."""
        for index, rule in enumerate(self._rules):
            if rule.training_id is None or rule.training_id == training_id:
                if rule.remaining is not None:
                    rule.remaining -= 1
                    if rule.remaining <= 0:
                        del self._rules[index]
                return rule
        return None

    async def hang(self, seconds: float) -> None:
        """Wait ``seconds``, or until ``release_hangs``."""
        release = self._release
        try:
            async with asyncio.timeout(seconds):
                await release.wait()
        except TimeoutError:
            pass

    def release_hangs(self) -> None:
        """Let the requests hanging now finish; later hangs hang again."""
        self._release.set()
        self._release = asyncio.Event()


async def stream(
    request: web.Request, fault: Fault, done: Callable[[int], Awaitable[None]]
) -> web.StreamResponse:
    """An answer that never ends (``ENDLESS``), or a huge one (``HUGE``), written as the client
    reads it (the server never holds more than one chunk); ``done`` gets how much went out."""
    response = web.StreamResponse(status=200, headers={"Content-Type": JSON})
    limit = HUGE_BODY_BYTES if fault is Fault.HUGE else None
    if limit is not None:
        response.content_length = limit
    else:
        response.enable_chunked_encoding()
    sent = 0
    try:
        await response.prepare(request)
        while limit is None or sent < limit:
            chunk = STREAM_CHUNK if limit is None else STREAM_CHUNK[: limit - sent]
            await response.write(chunk)
            sent += len(chunk)
        await response.write_eof()
    except (ConnectionError, OSError):
        pass  # the client went away: what it should do with such an answer
    finally:
        await done(sent)
    return response
