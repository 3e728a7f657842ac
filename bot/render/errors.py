"""API errors, pause reasons and other refusals, in words."""

from __future__ import annotations

from datetime import UTC, datetime

from bot.reasons import PauseReason, parse_reason
from bot.render.text import (
    V6_ID_EXAMPLE,
    _code,
    _plain,
    duration_text,
    inert,
)
from bot.sdapi.errors import (
    ApiUnavailable,
    InvalidApiKey,
    InvalidTrainingId,
    NoCredits,
    RateLimited,
    ResponseTooLarge,
    SdApiError,
    TrainingNotFound,
    UnexpectedResponse,
    sentence,
)
from bot.sdapi.status import Api


def api_error_text(exc: SdApiError) -> str:
    """One Discord sentence for an API error (may hold a relative timestamp and code spans)."""
    return _error_sentence(exc, markup=True, now=None)


def api_error_plain(exc: SdApiError, now: datetime | None = None) -> str:
    """The same sentence for a terminal or a JSON answer: no Discord markup."""
    return _error_sentence(exc, markup=False, now=now)


def _error_sentence(exc: SdApiError, *, markup: bool, now: datetime | None) -> str:
    api = "The Stable Diffusion API"

    def quote(text: str) -> str:
        return inert(text) if markup else text

    def code(text: str) -> str:
        return _code(text) if markup else text

    if isinstance(exc, InvalidTrainingId):
        if exc.api == Api.V6:
            return (
                "That is not a valid training id for the v6 trainer: its ids are UUIDs, like "
                f"{code(V6_ID_EXAMPLE)}."
            )
        return (
            "That is not a valid training id: use the id the API returned when the training "
            f"was created (letters, digits, {code('-')} and {code('_')}, 1 to 64 characters)."
        )
    if isinstance(exc, InvalidApiKey):
        return f"{api} rejected the API key: {quote(exc.api_message or 'Invalid API key')}."
    if isinstance(exc, TrainingNotFound):
        if exc.training_id:
            return (
                f"{api} does not know training {code(exc.training_id)}; check the id and that "
                "the training was created with this API key."
            )
        return f"{api} does not know this training id."
    if isinstance(exc, NoCredits):
        return "The API key has no credits left: add credits to its Stable Diffusion API account."
    if isinstance(exc, RateLimited):
        if markup:
            when = f"<t:{int(exc.retry_at.timestamp())}:R>"
        else:
            left = (exc.retry_at - (now or datetime.now(UTC))).total_seconds()
            when = f"in {duration_text(max(0.0, left))}"
        return f"{api} is rate limiting requests; try again {when}."
    if isinstance(exc, ResponseTooLarge):
        return f"{sentence(exc.reason)[:-1]}, which tunewatch does not read; try again later."
    if isinstance(exc, ApiUnavailable):
        if exc.http_status is not None and exc.http_status >= 500:
            return sentence(exc.reason)
        if exc.api_message:
            return f"{api} failed to answer ({quote(exc.api_message)}); try again in a moment."
        if exc.api_message is not None:
            return f"{api} answered with an error and no message; try again in a moment."
        return f"{api} could not be reached; try again in a few minutes."
    if isinstance(exc, UnexpectedResponse):
        if exc.api_message:
            return f"{api} refused the request: {quote(exc.api_message)}."
        if exc.reason != UnexpectedResponse.default_reason:
            return sentence(exc.reason)
        return f"{api} sent a response tunewatch could not read."
    return sentence(exc.reason)


_PAUSE_TEXT: dict[PauseReason, str] = {
    PauseReason.CHANNEL_DELETED: "The channel was deleted.",
    PauseReason.NO_ACCESS: (
        "tunewatch lost access to <#{detail}> (Missing Access); fix the channel's permissions, "
        "then subscribe again."
    ),
    PauseReason.MISSING_PERMISSIONS: (
        "tunewatch lost permission to post in <#{detail}> (Missing Permissions); fix the "
        "channel's permissions, then subscribe again."
    ),
    PauseReason.DMS_CLOSED: (
        "Your DMs are closed to tunewatch: allow direct messages from this server's members, "
        "then run /training-notify again."
    ),
    PauseReason.USER_UNKNOWN: "Discord does not know this user any more.",
    PauseReason.THREAD_ARCHIVED: "The thread is archived; unarchive it, then subscribe again.",
    PauseReason.THREAD_DELETED: (
        "The thread of its step messages was deleted; subscribe again for a new one."
    ),
    PauseReason.NO_THREAD_PERMISSIONS: (
        "tunewatch lost permission to start threads or post in them in <#{detail}> (Create "
        "Public Threads, Send Messages in Threads); fix the channel's permissions, then "
        "subscribe again."
    ),
    PauseReason.DISCORD_REFUSED: "Discord refused the message ({detail}).",
    PauseReason.OPERATOR_KEY_MISSING: "The bot's operator API key (SD_API_KEY) is not set.",
    PauseReason.USER_KEYS_OFF: (
        "Personal API keys are turned off on this bot (TUNEWATCH_SECRET is not set); "
        "subscribe again to use the operator's key."
    ),
    PauseReason.KEY_UNREADABLE: (
        "tunewatch can no longer read the API key this subscription used (the bot's secret "
        "changed); set it again with /training-key set, then subscribe again."
    ),
    PauseReason.KEY_REMOVED: (
        "The API key this subscription used was removed; subscribe again to resume."
    ),
}


def pause_reason_text(stored: str) -> str:
    """A stored pause reason (see bot.reasons) as one sentence for Discord."""
    code, detail = parse_reason(stored)
    if code is None:
        return _plain(detail)  # written by an older tunewatch: shown as it is
    return _PAUSE_TEXT[code].format(detail=_plain(detail))


NO_KEY_TEXT = (
    "tunewatch needs a Stable Diffusion API key for that: set yours with `/training-key set`, "
    "or ask the bot's operator to set SD_API_KEY."
)


USER_KEYS_DISABLED_TEXT = (
    "Personal API keys are turned off on this bot: its operator has not set TUNEWATCH_SECRET, "
    "which tunewatch needs to store keys encrypted."
)


def slow_down_text(retry_after: float) -> str:
    """A member asked too often: when they may ask again."""
    at = int(datetime.now(UTC).timestamp() + max(1.0, retry_after))
    return f"You are asking tunewatch very often; try again <t:{at}:R>."
