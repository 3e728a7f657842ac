"""Error answers, whatever their HTTP status, as typed errors carrying data.

The API reports errors as 4xx/5xx with a JSON body, as HTTP 200 with ``status: "error"`` or
``"failed"``, and as pages that are not JSON at all; the same meaning comes spelled several ways
(``messege``/``message``, ``tip``/``tips``, a message that is an object of field -> errors).
"""

from __future__ import annotations

import math
import re
from typing import Any

from bot.sdapi.errors import (
    API,
    ApiUnavailable,
    InvalidApiKey,
    NoCredits,
    RateLimited,
    SdApiError,
    TrainingNotFound,
    UnexpectedResponse,
)

_INVALID_KEY_RE = re.compile(r"invalid\s*api[\s_-]*key", re.IGNORECASE)
_RATE_LIMIT_RE = re.compile(r"rate[\s_-]*limit", re.IGNORECASE)
_NOT_FOUND_RE = re.compile(
    r"not\s+found|does\s*n[o']t\s+exist|invalid\s+training[\s_-]*id"
    r"|no\s+(?:such\s+)?training(?:\s+id)?\s*(?:found|exists?|with\b|$)",
    re.IGNORECASE,
)
_NO_CREDITS_RE = re.compile(
    r"\b(?:insufficient|not\s+enough|no|zero|out\s+of)\s+(?:api\s+)?(?:credits?|balance|funds)\b"
    r"|\bcredits?\s+(?:exhausted|are\s+over|finished|used\s+up)\b",
    re.IGNORECASE,
)
_TRY_AGAIN_RE = re.compile(r"try\s+again", re.IGNORECASE)
_WAIT_RE = re.compile(
    r"wait\s+(?:for\s+)?(\d{1,6}(?:\.\d+)?)\s*(minutes?|mins?|seconds?|secs?|s)?\b", re.IGNORECASE
)

SNIPPET_CHARS = 200
DEFAULT_RETRY_AFTER = 30.0
# A retry_after beyond a day is nonsense, and unbounded values overflow datetime arithmetic.
MAX_RETRY_AFTER = 86_400.0


def text(value: Any) -> str:
    """A message as one line: strings as is, lists joined, field -> errors flattened."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, list):
        return "; ".join(t for item in value if (t := text(item)))
    if isinstance(value, dict):
        parts = []
        for name, errors in value.items():
            said = text(errors)
            parts.append(f"{name}: {said}" if said else str(name))
        return "; ".join(parts)
    if isinstance(value, bool) or value is None:
        return ""
    if isinstance(value, int | float):
        return str(value)
    return ""


def snippet(body: bytes | str) -> str:
    """A short printable excerpt of a body, for error details and logs."""
    raw = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    raw = " ".join("".join(c if c.isprintable() else " " for c in raw[:1000]).split())
    if len(raw) > SNIPPET_CHARS:
        raw = raw[: SNIPPET_CHARS - 1] + "…"
    return repr(raw)


def one_line(said: str, limit: int = SNIPPET_CHARS) -> str:
    """The API's words fit to quote: one line, bounded, no final dot."""
    said = " ".join(said.split())
    if len(said) > limit:
        said = said[: limit - 1] + "…"
    return said.rstrip(".")


def tips(obj: dict[str, Any]) -> str:
    """The ``tip`` or ``tips`` of an error body."""
    return text(obj.get("tip")) or text(obj.get("tips"))


def unreadable(http_status: int, body: bytes) -> SdApiError:
    """The error for a body that is not a JSON object."""
    detail = f"HTTP {http_status}, not a JSON object: {snippet(body)}"
    if http_status >= 500:
        return _trouble(http_status, detail)
    if http_status == 429:
        return RateLimited(DEFAULT_RETRY_AFTER, detail=detail, http_status=429)
    if http_status == 401:
        return InvalidApiKey(detail=detail, http_status=401)
    if http_status == 402:
        return NoCredits(detail=detail, http_status=402)
    return UnexpectedResponse(detail=detail, http_status=http_status)


def retry_after(obj: dict[str, Any], said: str) -> float:
    """Seconds to wait from ``retry_after``, else from "wait for N seconds" in the text."""
    value = obj.get("retry_after")
    seconds: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        try:
            seconds = float(value.strip())
        except ValueError:
            seconds = None
    if seconds is None or not math.isfinite(seconds):
        match = _WAIT_RE.search(said)
        if match is None:
            return DEFAULT_RETRY_AFTER
        seconds = float(match.group(1))
        if (match.group(2) or "s").lower().startswith("m"):
            seconds *= 60
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def api_error(http_status: int, obj: dict[str, Any], message: str, body: bytes) -> SdApiError:
    """The typed error an error body (any HTTP status) stands for."""
    detail = f"HTTP {http_status}: {snippet(body)}"
    quoted = one_line(message or tips(obj))
    by_status = _by_http_status(http_status, obj, message, detail, quoted)
    if by_status is not None:
        return by_status
    known = known_error(obj, message, detail=detail, http_status=http_status)
    if known is not None:
        return known
    status = obj.get("status")
    status = status.strip().lower() if isinstance(status, str) else None
    if _TRY_AGAIN_RE.search(message):
        # {"status": "failed", "messege": "Failed, Try Again"}: a passing fault.
        return ApiUnavailable(
            f"{API} failed to answer ({quoted})",
            detail=detail,
            http_status=http_status,
            api_message=quoted,
        )
    if 200 <= http_status < 300 and status in ("error", "failed", "fail") and not quoted:
        # {"status": "error", "messege": ""}, seen many times in the provider's own test logs:
        # a passing fault, to be asked again, not an answer nobody can read.
        return ApiUnavailable(
            f"{API} answered with an error and no message",
            detail=detail,
            http_status=http_status,
            api_message="",
        )
    # A body that says "success" under an odd HTTP status refused nothing: it is unreadable.
    if quoted and status != "success":
        return UnexpectedResponse(
            f"{API} refused the request ({quoted})",
            detail=detail,
            http_status=http_status,
            api_message=quoted,
        )
    if status == "success" or 200 <= http_status < 300:
        return UnexpectedResponse(detail=detail, http_status=http_status)
    return UnexpectedResponse(
        f"{API} refused the request (HTTP {http_status})", detail=detail, http_status=http_status
    )


def _by_http_status(
    http_status: int, obj: dict[str, Any], message: str, detail: str, quoted: str
) -> SdApiError | None:
    """The error an HTTP status says by itself (401, 402, 404, 429, 5xx), else None."""
    if http_status == 401:
        return _invalid_key(detail, 401, quoted)
    if http_status == 402:
        return NoCredits(detail=detail, http_status=402, api_message=quoted or None)
    if http_status == 429:
        return RateLimited(
            retry_after(obj, f"{message} {tips(obj)}"),
            detail=detail,
            http_status=429,
            api_message=quoted or None,
        )
    if http_status == 404:
        return TrainingNotFound(detail=detail, http_status=404, api_message=quoted or None)
    if http_status >= 500:
        return _trouble(http_status, detail)
    return None


def known_error(
    obj: dict[str, Any], message: str, *, detail: str, http_status: int
) -> SdApiError | None:
    """The error a message names whatever the HTTP status: bad key, no credits, rate limit,
    unknown id."""
    said = tips(obj)
    quoted = one_line(message) or None
    if _INVALID_KEY_RE.search(message):
        return _invalid_key(detail, http_status, quoted)
    if _NO_CREDITS_RE.search(message):
        return NoCredits(detail=detail, http_status=http_status, api_message=quoted)
    if _RATE_LIMIT_RE.search(message) or (not message and _RATE_LIMIT_RE.search(said)):
        return RateLimited(
            retry_after(obj, f"{message} {said}"),
            detail=detail,
            http_status=http_status,
            api_message=quoted,
        )
    if _NOT_FOUND_RE.search(message):
        return TrainingNotFound(detail=detail, http_status=http_status, api_message=quoted)
    return None


def _invalid_key(detail: str, http_status: int, quoted: str | None) -> InvalidApiKey:
    return InvalidApiKey(
        f"{API} rejected the API key ({quoted})" if quoted else None,
        detail=detail,
        http_status=http_status,
        api_message=quoted or None,
    )


def _trouble(http_status: int, detail: str) -> ApiUnavailable:
    return ApiUnavailable(
        f"{API} is having trouble (HTTP {http_status})", detail=detail, http_status=http_status
    )
