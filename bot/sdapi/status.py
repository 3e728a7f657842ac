"""Pure parser of the training status body: ``(http status, body bytes) -> TrainingStatus``.

Everything the API's documentation disagrees about is absorbed here (see
``/work/shared/reference/sdapi.md``): ``messege`` vs ``message``, the ``" /n "`` vs newline log
separator, errors as HTTP 200 bodies or as 4xx/5xx, bodies that are not JSON at all. Nothing
downstream touches a raw dict.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import parse_qs

from bot.sdapi.errors import (
    ApiUnavailable,
    InvalidApiKey,
    RateLimited,
    SdApiError,
    TrainingNotFound,
    UnexpectedResponse,
)


class TrainingState(StrEnum):
    """The documented states, in order, plus the observed failure state."""

    DEPLOYING_GPU = "deploying_gpu"
    TRAINING_STARTED = "training_started"
    TRAINING_SUCCESS = "training_success"
    TRAINED_MODEL_COMPRESSING = "trained_model_compressing"
    TRAINED_MODEL_UPLOADING = "trained_model_uploading"
    TRAINED_MODEL_UPLOADED = "trained_model_uploaded"
    DEPLOYING_MODEL = "deploying_model"
    MODEL_READY = "model_ready"
    TRAINING_FAILED = "training_failed"


@dataclass(frozen=True, slots=True)
class Step:
    """One step line of the log. Its identity is ``seq``, its position in the log."""

    seq: int
    number: int | None
    label: str
    steps_to_go: int | None
    eta_minutes: int | None
    raw: str


@dataclass(frozen=True, slots=True)
class TrainingStatus:
    """What one status response says about a training."""

    state: TrainingState | None
    raw_state: str
    finished: bool
    failed: bool
    steps: tuple[Step, ...]
    eta_minutes: int | None
    unparsed: tuple[str, ...]
    log_lines: tuple[str, ...]
    failure_reason: str | None = None
    # Derived once, when the status is made: the tracker reads them at every poll, and the
    # client hands out one object per distinct body.
    terminal: bool = field(init=False, repr=False, compare=False)
    """True when the training will not change any more."""
    total_steps: int | None = field(init=False, repr=False, compare=False)
    """Steps in all: the last step's number plus the steps it says are left; None if unknown."""
    last_seq: int = field(init=False, repr=False, compare=False)
    """The last step's ``seq``; -1 without steps."""

    def __post_init__(self) -> None:
        last = self.steps[-1] if self.steps else None
        total_steps = None
        if last is not None and last.steps_to_go is not None:
            # A printed number beats the line count: repeated step lines would inflate it.
            done = last.number if last.number is not None else len(self.steps)
            total_steps = done + last.steps_to_go
        object.__setattr__(self, "terminal", self.finished or self.failed)
        object.__setattr__(self, "total_steps", total_steps)
        object.__setattr__(self, "last_seq", -1 if last is None else last.seq)

    @property
    def steps_done(self) -> int:
        """Distinct steps seen in the log, capped to ``total_steps``; all of them once finished."""
        total = self.total_steps
        if self.finished and total is not None:
            return total
        # Repeated step numbers (a step logged twice) count once; unnumbered lines count each.
        done = len({s.number if s.number is not None else -1 - s.seq for s in self.steps})
        return done if total is None else min(done, total)


# v6 trainer state names, folded onto the v3 outcome they mean.
_FINISHED_RAW = frozenset({"training_completed"})
_FAILED_RAW = frozenset(
    {"training_cancelled", "training_canceled", "cancelled", "canceled", "failed"}
)
_KNOWN_RAW = frozenset(s.value for s in TrainingState) | _FINISHED_RAW | _FAILED_RAW

_STATE_TOKEN_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")
_INVALID_KEY_RE = re.compile(r"invalid\s*api[\s_-]*key", re.IGNORECASE)
_RATE_LIMIT_RE = re.compile(r"rate[\s_-]*limit", re.IGNORECASE)
_NOT_FOUND_RE = re.compile(
    r"not\s+found|does\s*n[o']t\s+exist|invalid\s+training[\s_-]*id"
    r"|no\s+(?:such\s+)?training(?:\s+id)?\s*(?:found|exists?|with\b|$)",
    re.IGNORECASE,
)
_TRY_AGAIN_RE = re.compile(r"try\s+again", re.IGNORECASE)
_WAIT_RE = re.compile(
    r"wait\s+(?:for\s+)?(\d{1,6}(?:\.\d+)?)\s*(minutes?|mins?|seconds?|secs?|s)?\b", re.IGNORECASE
)

# Line separators: real newlines, and the legacy literal "/n" when a blank or a capital follows
# (" /n Step", " /nStep"), so a path like "/nfs/x" inside a log line is not cut in two.
_SLASH_N_RE = re.compile(r"/n(?=\s|$)|(?:(?<=\s)|^)/n(?=[A-Z])")
# Digits are bounded so int() never meets a number beyond CPython's conversion limit.
_STEP_RE = re.compile(r"step\s*[:#]?\s*(\d{1,9})(?!\d)", re.IGNORECASE)
_LABEL_END_RE = re.compile(
    r",|\s\|(?:\s|$)|\s*:\s*eta\b|\s\d{1,9}\s+steps?\s+to\s+go\b", re.IGNORECASE
)
_TO_GO_RE = re.compile(r"(?<!\d)(\d{1,9})\s+steps?\s+to\s+go\b", re.IGNORECASE)
_ETA_RE = re.compile(
    r"\beta\s*:?\s*(\d{1,9}(?:\.\d{1,6})?)\s*"
    r"(hours?|hrs?|h|minutes?|mins?|m|seconds?|secs?|s)\b",
    re.IGNORECASE,
)
_FAIL_LINE_RE = re.compile(r"fail|error", re.IGNORECASE)

_SNIPPET_CHARS = 200
_DEFAULT_RETRY_AFTER = 30.0
# A retry_after beyond a day is nonsense, and unbounded values overflow datetime arithmetic.
_MAX_RETRY_AFTER = 86_400.0
_API = "The Stable Diffusion API"
_UNREADABLE = f"{_API} sent a response tunewatch could not read."
_NOT_FOUND = f"{_API} does not know this training id."


def parse_status(http_status: int, body: bytes) -> TrainingStatus:
    """Parse one response; raises only ``SdApiError`` subclasses."""
    try:
        return _parse_status(http_status, body)
    except SdApiError:
        raise
    except Exception as exc:  # the contract: a surprise in here must still be a typed error
        raise UnexpectedResponse(
            _UNREADABLE,
            detail=f"HTTP {http_status}: parser failed ({type(exc).__name__}): {_snippet(body)}",
        ) from exc


def _parse_status(http_status: int, body: bytes) -> TrainingStatus:
    obj = _load_object(body.decode("utf-8", errors="replace"))
    if obj is None:
        raise _unreadable(http_status, body)
    message = _text(obj.get("messege")) or _text(obj.get("message"))
    status = obj.get("status")
    status = status.strip().lower() if isinstance(status, str) else None
    state_text = _state_text(obj)
    if not 200 <= http_status < 300:
        raise _api_error(http_status, obj, message, body)
    if status in ("error", "failed", "fail"):
        # A failure state reported with an error status is still a status, not a failed request.
        if state_text is not None and state_text.lower() in _KNOWN_RAW:
            return _success(obj, state_text)
        raise _api_error(http_status, obj, message, body)
    if state_text is not None and _STATE_TOKEN_RE.fullmatch(state_text.lower()):
        return _success(obj, state_text)
    if status is not None and state_text is not None:
        # A non-error status with free text where the state should be: an error in disguise,
        # else an unknown state shown raw (the docs: treat an unknown state as "still running").
        error = _known_error(obj, message, detail=f"HTTP {http_status}: {_snippet(body)}")
        if error is not None:
            raise error
        return _success(obj, state_text)
    raise _api_error(http_status, obj, message, body)


def parse_webhook(body: bytes, content_type: str) -> tuple[str, str | None]:
    """Read a creation webhook: ``(model_id, training_status or None)``; JSON or form-encoded."""
    text = body.decode("utf-8", errors="replace")
    mime = content_type.split(";", 1)[0].strip().lower()
    fields: dict[str, Any] | None = None
    if mime == "application/x-www-form-urlencoded":
        fields = _form_fields(text)
    else:
        fields = _load_object(text)
        if fields is None:
            # The legacy example ends with a trailing comma: drop one before the closing brace.
            fields = _load_object(re.sub(r",\s*([}\]])\s*$", r"\1", text.strip()))
        if fields is None and mime != "application/json":
            fields = _form_fields(text)
    if fields is None:
        fields = {}
    training_id = next(
        (
            value
            for name in ("model_id", "training_id", "id")
            if (value := _scalar_text(fields.get(name)))
        ),
        None,
    )
    if training_id is None:
        raise UnexpectedResponse(
            "A training webhook arrived without a training id.",
            detail=f"webhook ({mime or 'no content type'}) without model_id: {_snippet(body)}",
        )
    state = _scalar_text(fields.get("training_status")) or None
    if state is None:
        messege = _scalar_text(fields.get("messege"))
        if messege and _STATE_TOKEN_RE.fullmatch(messege.lower()):
            state = messege
    return training_id, state.lower() if state else None


def _form_fields(text: str) -> dict[str, Any] | None:
    pairs = parse_qs(text, keep_blank_values=True)
    return {name: values[-1] for name, values in pairs.items()} or None


def _load_object(text: str) -> dict[str, Any] | None:
    """The JSON object in ``text``, or None when it is not JSON or not an object."""
    if not text.strip():
        return None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _scalar_text(value: Any) -> str:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return ""


def _text(value: Any) -> str:
    """A message as one line: strings as is, lists joined, field -> errors flattened."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, list):
        return "; ".join(t for item in value if (t := _text(item)))
    if isinstance(value, dict):
        parts = []
        for name, errors in value.items():
            text = _text(errors)
            parts.append(f"{name}: {text}" if text else str(name))
        return "; ".join(parts)
    if isinstance(value, bool) or value is None:
        return ""
    if isinstance(value, int | float):
        return str(value)
    return ""


def _state_text(obj: dict[str, Any]) -> str | None:
    for name in ("messege", "training_status", "message"):
        value = obj.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def _success(obj: dict[str, Any], raw_state: str) -> TrainingStatus:
    key = raw_state.lower()
    state = TrainingState(key) if key in TrainingState._value2member_map_ else None
    finished = state is TrainingState.MODEL_READY or key in _FINISHED_RAW
    failed = state is TrainingState.TRAINING_FAILED or key in _FAILED_RAW
    log_lines = _log_lines(obj.get("data") if "data" in obj else obj.get("logs"))
    steps: list[Step] = []
    unparsed: list[str] = []
    for seq, line in enumerate(log_lines):
        step = _parse_step(seq, line)
        if step is None:
            unparsed.append(line)
        else:
            steps.append(step)
    eta = None
    if not (finished or failed):
        eta = next((s.eta_minutes for s in reversed(steps) if s.eta_minutes is not None), None)
    return TrainingStatus(
        state=state,
        raw_state=raw_state,
        finished=finished,
        failed=failed,
        steps=tuple(steps),
        eta_minutes=eta,
        unparsed=tuple(unparsed),
        log_lines=log_lines,
        failure_reason=_failure_reason(obj, raw_state, log_lines) if failed else None,
    )


def _log_lines(data: Any) -> tuple[str, ...]:
    if isinstance(data, list):
        data = "\n".join(item for item in data if isinstance(item, str))
    if not isinstance(data, str):
        return ()
    lines = []
    for physical in data.splitlines():
        for piece in _SLASH_N_RE.split(physical):
            line = piece.strip()
            if line:
                lines.append(line)
    return tuple(lines)


def _parse_step(seq: int, line: str) -> Step | None:
    match = _STEP_RE.match(line)
    if match is None:
        return None
    rest = line[match.end() :]
    end = _LABEL_END_RE.search(rest)
    label = (rest[: end.start()] if end else rest).strip().strip(":-.").strip()
    to_go = _TO_GO_RE.search(rest)
    return Step(
        seq=seq,
        number=int(match.group(1)),
        label=label,
        steps_to_go=int(to_go.group(1)) if to_go else None,
        eta_minutes=_eta_minutes(rest),
        raw=line,
    )


def _eta_minutes(text: str) -> int | None:
    match = _ETA_RE.search(text)
    if match is None:
        return None
    amount = float(match.group(1))
    unit = match.group(2).lower()
    if unit.startswith("h"):
        amount *= 60
    elif unit.startswith("s"):
        amount /= 60
    # Round up: "ETA 30 seconds" should not read as "0 minutes".
    return math.ceil(amount)


def _failure_reason(obj: dict[str, Any], raw_state: str, log_lines: tuple[str, ...]) -> str | None:
    message = _text(obj.get("message"))
    if message and message.lower() != raw_state.lower():
        return message
    for name in ("error", "reason"):
        text = _text(obj.get(name))
        if text:
            return text
    return next((line for line in reversed(log_lines) if _FAIL_LINE_RE.search(line)), None)


def _snippet(body: bytes | str) -> str:
    """A short printable excerpt of a body, for error details and logs."""
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    text = " ".join("".join(c if c.isprintable() else " " for c in text[:1000]).split())
    if len(text) > _SNIPPET_CHARS:
        text = text[: _SNIPPET_CHARS - 1] + "…"
    return repr(text)


def _for_user(text: str) -> str:
    """The API's message fit to quote in one sentence: one line, bounded, no final dot."""
    text = " ".join(text.split())
    if len(text) > _SNIPPET_CHARS:
        text = text[: _SNIPPET_CHARS - 1] + "…"
    return text.rstrip(".")


def _unreadable(http_status: int, body: bytes) -> SdApiError:
    detail = f"HTTP {http_status}, not a JSON object: {_snippet(body)}"
    if http_status >= 500:
        return ApiUnavailable(f"{_API} is having trouble (HTTP {http_status}).", detail=detail)
    if http_status == 429:
        return RateLimited(_DEFAULT_RETRY_AFTER, detail=detail)
    return UnexpectedResponse(_UNREADABLE, detail=detail)


def _retry_after(obj: dict[str, Any], text: str) -> float:
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
        match = _WAIT_RE.search(text)
        if match is None:
            return _DEFAULT_RETRY_AFTER
        seconds = float(match.group(1))
        if (match.group(2) or "s").lower().startswith("m"):
            seconds *= 60
    return min(max(seconds, 0.0), _MAX_RETRY_AFTER)


def _api_error(http_status: int, obj: dict[str, Any], message: str, body: bytes) -> SdApiError:
    """The typed error an error body (any HTTP status) stands for."""
    detail = f"HTTP {http_status}: {_snippet(body)}"
    quoted = _for_user(message or _tips(obj))
    if http_status == 401:
        return InvalidApiKey(
            f"{_API} rejected the API key: {quoted or 'Invalid API key'}.", detail=detail
        )
    if http_status == 429:
        return RateLimited(_retry_after(obj, f"{message} {_tips(obj)}"), detail=detail)
    if http_status == 404:
        return TrainingNotFound(_NOT_FOUND, detail=detail)
    if http_status >= 500:
        return ApiUnavailable(f"{_API} is having trouble (HTTP {http_status}).", detail=detail)
    known = _known_error(obj, message, detail=detail)
    if known is not None:
        return known
    if _TRY_AGAIN_RE.search(message):
        # The documented {"status": "failed", "message": "Failed, Try Again"}: transient.
        return ApiUnavailable(
            f"{_API} failed to answer ({quoted}); tunewatch will ask again.", detail=detail
        )
    status = obj.get("status")
    # A body that says "success" under an odd HTTP status refused nothing: it is unreadable.
    said_success = isinstance(status, str) and status.strip().lower() == "success"
    if quoted and not said_success:
        return UnexpectedResponse(f"{_API} refused the request: {quoted}.", detail=detail)
    if said_success or 200 <= http_status < 300:
        return UnexpectedResponse(_UNREADABLE, detail=detail)
    return UnexpectedResponse(f"{_API} refused the request (HTTP {http_status}).", detail=detail)


def _known_error(
    obj: dict[str, Any], message: str, *, detail: str | None = None
) -> SdApiError | None:
    """The error a message names whatever the HTTP status: bad key, rate limit, unknown id."""
    tips = _tips(obj)
    if _INVALID_KEY_RE.search(message):
        return InvalidApiKey(f"{_API} rejected the API key: {_for_user(message)}.", detail=detail)
    if _RATE_LIMIT_RE.search(message) or (not message and _RATE_LIMIT_RE.search(tips)):
        return RateLimited(_retry_after(obj, f"{message} {tips}"), detail=detail)
    if _NOT_FOUND_RE.search(message):
        return TrainingNotFound(_NOT_FOUND, detail=detail)
    return None


def _tips(obj: dict[str, Any]) -> str:
    return _text(obj.get("tip")) or _text(obj.get("tips"))
