"""API errors, pause reasons and other refusals, in words."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
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


_API = "The Stable Diffusion API"


@dataclass(frozen=True, slots=True)
class _Words:
    """How API text and identifiers are written: inert and in code spans for Discord, as they
    are for a terminal."""

    markup: bool
    now: datetime | None

    def quote(self, text: str) -> str:
        return inert(text) if self.markup else text

    def code(self, text: str) -> str:
        return _code(text) if self.markup else text


def _error_sentence(exc: SdApiError, *, markup: bool, now: datetime | None) -> str:
    words = _Words(markup, now)
    for kind in type(exc).__mro__:  # the most specific sentence first
        say = _SENTENCES.get(kind)
        if say is not None:
            return say(exc, words)
    return sentence(exc.reason)


def _invalid_id(exc: SdApiError, w: _Words) -> str:
    if isinstance(exc, InvalidTrainingId) and exc.api == Api.V6:
        return (
            "That is not a valid training id for the v6 trainer: its ids are UUIDs, like "
            f"{w.code(V6_ID_EXAMPLE)}."
        )
    return (
        "That is not a valid training id: use the id the API returned when the training "
        f"was created (letters, digits, {w.code('-')} and {w.code('_')}, 1 to 64 characters)."
    )


def _invalid_key(exc: SdApiError, w: _Words) -> str:
    return f"{_API} rejected the API key: {w.quote(exc.api_message or 'Invalid API key')}."


def _not_found(exc: SdApiError, w: _Words) -> str:
    training_id = getattr(exc, "training_id", None)
    if training_id:
        return (
            f"{_API} does not know training {w.code(training_id)}; check the id and that "
            "the training was created with this API key."
        )
    return f"{_API} does not know this training id."


def _no_credits(exc: SdApiError, w: _Words) -> str:
    return "The API key has no credits left: add credits to its Stable Diffusion API account."


def _rate_limited(exc: SdApiError, w: _Words) -> str:
    assert isinstance(exc, RateLimited)  # noqa: S101 - registered for RateLimited only
    if w.markup:
        when = f"<t:{int(exc.retry_at.timestamp())}:R>"
    else:
        left = (exc.retry_at - (w.now or datetime.now(UTC))).total_seconds()
        when = f"in {duration_text(max(0.0, left))}"
    return f"{_API} is rate limiting requests; try again {when}."


def _too_large(exc: SdApiError, w: _Words) -> str:
    return f"{sentence(exc.reason)[:-1]}, which tunewatch does not read; try again later."


def _unavailable(exc: SdApiError, w: _Words) -> str:
    if exc.http_status is not None and exc.http_status >= 500:
        return sentence(exc.reason)
    if exc.api_message:
        return f"{_API} failed to answer ({w.quote(exc.api_message)}); try again in a moment."
    if exc.api_message is not None:
        return f"{_API} answered with an error and no message; try again in a moment."
    return f"{_API} could not be reached; try again in a few minutes."


def _unexpected(exc: SdApiError, w: _Words) -> str:
    if exc.api_message:
        return f"{_API} refused the request: {w.quote(exc.api_message)}."
    if exc.reason != UnexpectedResponse.default_reason:
        return sentence(exc.reason)
    return f"{_API} sent a response tunewatch could not read."


_SENTENCES: dict[type[SdApiError], Callable[[SdApiError, _Words], str]] = {
    InvalidTrainingId: _invalid_id,
    InvalidApiKey: _invalid_key,
    TrainingNotFound: _not_found,
    NoCredits: _no_credits,
    RateLimited: _rate_limited,
    ResponseTooLarge: _too_large,
    ApiUnavailable: _unavailable,
    UnexpectedResponse: _unexpected,
}


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
