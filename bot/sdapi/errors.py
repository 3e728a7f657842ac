"""Typed errors of the Stable Diffusion API client and parser.

They carry data, not Discord sentences: ``reason`` is a short plain phrase (what the tracker keeps
as a training's last error), ``detail`` is for logs (key-redacted by the client), and each type
adds what only it knows (``retry_after``, ``http_status``, the API's own words). ``bot.render``
turns them into one sentence for Discord or for a terminal.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import ClassVar

API = "the Stable Diffusion API"


def sentence(phrase: str) -> str:
    """A phrase as a sentence: capital first letter, final dot."""
    phrase = phrase.strip()
    if not phrase:
        return ""
    return phrase[0].upper() + phrase[1:] + ("" if phrase.endswith((".", "!", "?")) else ".")


class SdApiError(Exception):
    """Base of every error the API client and parser raise."""

    transient: ClassVar[bool] = False
    default_reason: ClassVar[str] = f"{API} request failed"

    def __init__(
        self,
        reason: str | None = None,
        *,
        detail: str | None = None,
        http_status: int | None = None,
        api_message: str | None = None,
    ) -> None:
        self.reason = reason or self.default_reason
        """A short plain phrase (no markup, no final dot), fit to store as a last error."""
        self.detail = detail or self.reason
        """For logs: what was asked and answered, quoted short."""
        self.http_status = http_status
        """The HTTP status of the answer, when there was one."""
        self.api_message = api_message
        """The API's own words (one line, bounded), when it gave any."""
        super().__init__(self.detail)

    def __str__(self) -> str:
        return self.detail


class InvalidTrainingId(SdApiError):
    """The training id is malformed for its API; no request was made."""

    default_reason = "not a valid training id"

    def __init__(self, api: str, *, length: int) -> None:
        self.api = api
        """The API the id was checked for (``"v3"`` or ``"v6"``)."""
        super().__init__(
            f"not a valid {api} training id",
            detail=f"invalid {api} training id of length {length}",
        )


class InvalidApiKey(SdApiError):
    """The API refused the key."""

    default_reason = f"{API} rejected the API key"


class TrainingNotFound(SdApiError):
    """The API does not know this training id (for this key)."""

    default_reason = f"{API} does not know this training id"

    def __init__(
        self,
        reason: str | None = None,
        *,
        detail: str | None = None,
        http_status: int | None = None,
        api_message: str | None = None,
        training_id: str | None = None,
    ) -> None:
        self.training_id = training_id
        """The id asked about (set by the client, which knows it)."""
        super().__init__(reason, detail=detail, http_status=http_status, api_message=api_message)


class NoCredits(SdApiError):
    """The account behind the key has no credits left (HTTP 402).

    Not transient for a retry loop (asking again in seconds changes nothing); a tracker backs
    off to its longest interval and keeps the subscriptions, as the training itself is fine.
    """

    default_reason = "the API key has no credits left"


class RateLimited(SdApiError):
    """The API asked us to slow down; retry after ``retry_after`` seconds."""

    transient = True
    default_reason = f"{API} rate-limited the request"

    def __init__(
        self,
        retry_after: float,
        *,
        detail: str | None = None,
        now: datetime | None = None,
        http_status: int | None = None,
        api_message: str | None = None,
    ) -> None:
        self.retry_after = max(0.0, float(retry_after))
        self.retry_at = (now or datetime.now(UTC)) + timedelta(seconds=self.retry_after)
        super().__init__(
            None,
            detail=detail or f"rate limited, retry after {self.retry_after:g}s",
            http_status=http_status,
            api_message=api_message,
        )


class ApiUnavailable(SdApiError):
    """The API could not be reached, answered with a server error, or with a passing fault
    (an empty error, "Failed, Try Again"): asking again later is the cure."""

    transient = True
    default_reason = f"{API} could not be reached"


class ResponseTooLarge(ApiUnavailable):
    """The answer was larger than the client reads (a broken proxy, a captive portal)."""

    def __init__(self, limit: int, *, declared: int | None, bytes_read: int, detail: str) -> None:
        self.limit = limit
        """The cap, in bytes."""
        self.declared = declared
        """The Content-Length the server announced, if any."""
        self.bytes_read = bytes_read
        """How much of the body was read before refusing it (0 when refused by its header)."""
        super().__init__(f"{API} sent an answer larger than {_size(limit)}", detail=detail)


class UnexpectedResponse(SdApiError):
    """The API answered something we cannot read as a training status."""

    default_reason = f"{API} sent an answer tunewatch could not read"


def _size(n: int) -> str:
    if n >= 1 << 20 and n % (1 << 20) == 0:
        return f"{n >> 20} MiB"
    if n >= 1 << 10 and n % (1 << 10) == 0:
        return f"{n >> 10} KiB"
    return f"{n} bytes"
