"""Typed errors of the Stable Diffusion API client; each carries a sentence fit to show a user."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


class SdApiError(Exception):
    """Base of every error the API client and parser raise."""

    transient: bool = False

    def __init__(self, user_message: str, *, detail: str | None = None) -> None:
        super().__init__(detail or user_message)
        self.user_message = user_message
        self.detail = detail or user_message

    @property
    def reason(self) -> str:
        """Why, in a few plain words (stored as a training's last error)."""
        return self.user_message


class InvalidTrainingId(SdApiError):
    """The training id is malformed; no request was made."""


class InvalidApiKey(SdApiError):
    """The API refused the key."""


class TrainingNotFound(SdApiError):
    """The API does not know this training id (for this key)."""


class NoCredits(SdApiError):
    """The API key has no credits left (HTTP 402)."""


class RateLimited(SdApiError):
    """The API asked us to slow down; retry after ``retry_after`` seconds."""

    transient = True

    def __init__(
        self, retry_after: float, *, detail: str | None = None, now: datetime | None = None
    ) -> None:
        self.retry_after = max(0.0, float(retry_after))
        self.retry_at = (now or datetime.now(UTC)) + timedelta(seconds=self.retry_after)
        super().__init__(
            "The Stable Diffusion API is rate limiting requests; "
            f"try again <t:{int(self.retry_at.timestamp())}:R>.",
            detail=detail or f"rate limited, retry after {self.retry_after:g}s",
        )


class ApiUnavailable(SdApiError):
    """The API could not be reached or answered with a server error."""

    transient = True


class UnexpectedResponse(SdApiError):
    """The API answered something we cannot read as a training status."""
