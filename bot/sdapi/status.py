"""Pure parser of the training status body: ``(http status, body bytes, api) -> TrainingStatus``.

Everything the API's documents and its real answers disagree about is absorbed here (the
bodies and their sources are in tests/unit/test_corpus.py): ``messege`` vs ``message``, the
``" /n "`` vs newline log separator, the documentation's step wording vs the trainer's, errors
as HTTP 200 bodies or as 4xx/5xx, bodies that are not JSON at all, and the v6 trainer's shape.
Nothing downstream touches a raw dict, and nothing but an ``SdApiError`` leaves
:func:`parse_status`.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any
from urllib.parse import parse_qs

from bot.events import Event
from bot.sdapi import v6
from bot.sdapi.errors import SdApiError, UnexpectedResponse
from bot.sdapi.model import (
    UUID_RE,
    Api,
    ModelInfo,
    TrainingState,
    TrainingStatus,
    api_for,
)
from bot.sdapi.refusals import api_error, known_error, one_line, snippet, text, unreadable
from bot.sdapi.steplog import failure_in_log, parse_step_line, split_log

__all__ = [
    "UUID_RE",
    "Api",
    "ModelInfo",
    "TrainingState",
    "TrainingStatus",
    "api_for",
    "parse_status",
    "parse_step_line",
    "parse_webhook",
]

_STATES = TrainingState._value2member_map_
# v3 outcomes spelled otherwise than the documented states.
_FAILED_RAW = frozenset({"training_canceled", "cancelled", "canceled", "failed"})
# What counts as a training's state even in a body whose status is "error" or "failed"; not the
# bare words "failed" or "error", which such a body may well use for the request itself.
_TRAINING_TOKENS = frozenset(_STATES) | {"training_canceled"}
_STATE_TOKEN_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")
_REASON_CHARS = 1000


def parse_status(http_status: int, body: bytes, api: Api = Api.V3) -> TrainingStatus:
    """Parse one response of ``api``'s status endpoint; raises only ``SdApiError`` subclasses."""
    try:
        return _parse_status(http_status, body, api)
    except SdApiError:
        raise
    except Exception as exc:  # the contract: a surprise in here must still be a typed error
        raise UnexpectedResponse(
            detail=f"HTTP {http_status}: parser failed ({type(exc).__name__}): {snippet(body)}",
            http_status=http_status,
        ) from exc


def _parse_status(http_status: int, body: bytes, api: Api) -> TrainingStatus:
    obj = _load_object(body.decode("utf-8", errors="replace"))
    if obj is None:
        raise unreadable(http_status, body)
    message = text(obj.get("messege")) or text(obj.get("message"))
    status = obj.get("status")
    status = status.strip().lower() if isinstance(status, str) else None
    if not 200 <= http_status < 300:
        raise api_error(http_status, obj, message, body)
    data = obj.get("data")
    is_v6 = api is Api.V6 or (isinstance(data, dict) and "status" in data)
    state_text = v6.state_token(obj) if is_v6 else _state_text(obj)
    token = state_text.lower() if state_text is not None else None
    if status in ("error", "failed", "fail"):
        # A failure state reported with an error status is still a status, not a failed request.
        if token in _TRAINING_TOKENS:
            return _success(obj, state_text or "", is_v6, api)
        raise api_error(http_status, obj, message, body)
    if status == "processing":
        return _queued(obj, api)
    if state_text is None:
        raise api_error(http_status, obj, message, body)
    if token is not None and _STATE_TOKEN_RE.fullmatch(token):
        return _success(obj, state_text, is_v6, api)
    if status is not None:
        # A non-error status with free text where the state should be: an error in disguise,
        # else an unknown state shown raw (the docs: treat an unknown state as "still running").
        error = known_error(
            obj, message, detail=f"HTTP {http_status}: {snippet(body)}", http_status=http_status
        )
        if error is not None:
            raise error
        return _success(obj, state_text, is_v6, api)
    raise api_error(http_status, obj, message, body)


def _state_text(obj: dict[str, Any]) -> str | None:
    for name in ("messege", "training_status", "message"):
        value = obj.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def _success(obj: dict[str, Any], raw_state: str, is_v6: bool, api: Api) -> TrainingStatus:
    if is_v6:
        status = v6.parse_v6(obj, raw_state)
        return status if api is Api.V6 else dataclasses.replace(status, api=api)
    key = raw_state.lower()
    state = TrainingState.TRAINING_CANCELLED if key == "training_canceled" else _STATES.get(key)
    finished = state is TrainingState.MODEL_READY
    failed = (
        state in (TrainingState.TRAINING_FAILED, TrainingState.TRAINING_CANCELLED)
        or key in _FAILED_RAW
    )
    return _v3_status(
        obj, raw_state, state if isinstance(state, TrainingState) else None, finished, failed, api
    )


def _queued(obj: dict[str, Any], api: Api) -> TrainingStatus:
    """``{"status": "processing", "eta": 21.88, "messege": "Try to fetch request after ..."}``:
    queued, with its ETA in seconds."""
    status = _v3_status(obj, "processing", TrainingState.QUEUED, False, False, api)
    eta = v6.seconds(obj.get("eta"))
    if eta is None:
        return status
    return dataclasses.replace(status, eta_minutes=None, eta_seconds=eta)


def _v3_status(
    obj: dict[str, Any],
    raw_state: str,
    state: TrainingState | None,
    finished: bool,
    failed: bool,
    api: Api,
) -> TrainingStatus:
    data = obj.get("data") if "data" in obj else obj.get("logs")
    log_lines = split_log(data)
    steps: list[Event] = []
    unparsed: list[str] = []
    for seq, line in enumerate(log_lines):
        step = parse_step_line(line, seq)
        if step is None:
            unparsed.append(line)
        else:
            steps.append(step)
    eta = None
    if not (finished or failed):
        eta = next((s.eta_minutes for s in reversed(steps) if s.eta_minutes is not None), None)
    reason = stage = elapsed = None
    if failed:
        trainer, other = failure_in_log(log_lines)
        if trainer is not None:
            stage, elapsed = trainer.stage, trainer.elapsed_seconds
        reason = (trainer.reason if trainer else None) or _stated_reason(obj, raw_state) or other
    return TrainingStatus(
        state=state,
        raw_state=raw_state,
        finished=finished,
        failed=failed,
        steps=tuple(steps),
        eta_minutes=eta,
        unparsed=tuple(unparsed),
        log_lines=log_lines,
        failure_reason=one_line(v6.redact_text(reason), _REASON_CHARS) if reason else None,
        failure_stage=one_line(stage, 120) if stage else None,
        api=api,
        elapsed_seconds=elapsed,
    )


def _stated_reason(obj: dict[str, Any], raw_state: str) -> str | None:
    message = text(obj.get("message"))
    if message and message.lower() != raw_state.lower():
        return message
    for name in ("error", "reason"):
        said = text(obj.get(name))
        if said:
            return said
    return None


def parse_webhook(body: bytes, content_type: str) -> tuple[str, str | None]:
    """Read a creation webhook: ``(model_id, training_status or None)``; JSON or form-encoded."""
    raw = body.decode("utf-8", errors="replace")
    mime = content_type.split(";", 1)[0].strip().lower()
    fields: dict[str, Any] | None = None
    if mime == "application/x-www-form-urlencoded":
        fields = _form_fields(raw)
    else:
        fields = _load_object(raw)
        if fields is None:
            # The legacy example ends with a trailing comma: drop one before the closing brace.
            fields = _load_object(re.sub(r",\s*([}\]])\s*$", r"\1", raw.strip()))
        if fields is None and mime != "application/json":
            fields = _form_fields(raw)
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
            "a training webhook arrived without a training id",
            detail=f"webhook ({mime or 'no content type'}) without model_id: {snippet(body)}",
        )
    state = _scalar_text(fields.get("training_status")) or None
    if state is None:
        messege = _scalar_text(fields.get("messege"))
        if messege and _STATE_TOKEN_RE.fullmatch(messege.lower()):
            state = messege
    return training_id, state.lower() if state else None


def _form_fields(raw: str) -> dict[str, Any] | None:
    pairs = parse_qs(raw, keep_blank_values=True)
    return {name: values[-1] for name, values in pairs.items()} or None


def _load_object(raw: str) -> dict[str, Any] | None:
    """The JSON object in ``raw``, or None when it is not JSON or not an object."""
    if not raw.strip():
        return None
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if "\\u" in raw:  # only an escape can make such a character
        value = _storable(value)
    return value if isinstance(value, dict) else None


# Valid JSON escapes no database takes: a NUL (PostgreSQL's text refuses it) and a lone UTF-16
# surrogate (no UTF-8 encoder takes it). Recorded as is, one would roll back the whole batch of
# poll results. Shown as U+FFFD, like an undecodable byte.
_UNSTORABLE_RE = re.compile("[\x00\ud800-\udfff]")


def _storable(value: Any) -> Any:
    if isinstance(value, str):
        return _UNSTORABLE_RE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_storable(v) for v in value]
    if isinstance(value, dict):
        return {_storable(k): _storable(v) for k, v in value.items()}
    return value


def _scalar_text(value: Any) -> str:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return ""
