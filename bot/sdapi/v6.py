"""The v6 trainer's status answer: ``{"status": "success", "message": <state>, "data": {...}}``.

``message`` / ``data.status`` is ``training_started`` (queued or training),
``training_completed`` (trained; the model is prepared for use until ``data.inference.status``
is ``ready``, and that answer holds the request to generate with the LoRA) or
``training_cancelled`` (failed; the reason in ``data.response_dump``). The fields of the ready
answer are not fully documented: whatever is there is read, whatever is not is tolerated.

There is no step log, so a v6 run gets fixed milestones as steps, the same at every poll:
``seq`` 0 once training started, ``seq`` 1 once it completed, then the terminal answer.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from bot.events import Event, step
from bot.sdapi.model import Api, ModelInfo, TrainingState, TrainingStatus
from bot.sdapi.refusals import one_line, text

STARTED_STEP = step(0, 1, "Training started", 2, None, "training_started")
COMPLETED_STEP = step(
    1, 2, "Training completed: preparing the model for use", 1, None, "training_completed"
)
MILESTONES: dict[str, Event] = {
    milestone.raw: milestone
    for milestone in (STARTED_STEP, COMPLETED_STEP)
    if milestone.raw is not None
}
"""The v6 milestone steps by their ``raw`` (what an event stores), for rendering."""

_STARTED = frozenset({"training_started", "started", "training", "running", "in_progress"})
_COMPLETED = frozenset({"training_completed", "completed", "training_success", "trained"})
_QUEUED = frozenset({"queued", "processing", "pending", "waiting"})
_FAILED = frozenset(
    {
        "training_cancelled",
        "training_canceled",
        "cancelled",
        "canceled",
        "training_failed",
        "failed",
    }
)

# Field names whose values are secrets, wherever they appear (key, api_key, apiKey, hf_token).
_SECRET_NAME_RE = re.compile(
    r"(?:^|[_.-])(?:key|api[_-]?key|apikey|token|secret|password|passwd|auth|authorization"
    r"|credentials?)(?:$|[_.-])",
    re.IGNORECASE,
)
# A secret written inside text: "key=...", '"key": "..."', "Authorization: Bearer ...".
_SECRET_IN_TEXT_RE = re.compile(
    r"""(["']?\b(?:api[_-]?key|apikey|key|token|secret|password|authorization)\b["']?"""
    r"""\s*[:=]\s*["']?(?:bearer\s+)?)[^"'&\s,;}]+""",
    re.IGNORECASE,
)
REDACTED = "[redacted]"
MAX_FIELDS = 20
VALUE_CHARS = 300
REASON_CHARS = 500


def is_secret_name(name: str) -> bool:
    """Whether a field of this name holds a secret (its value is never shown)."""
    return bool(_SECRET_NAME_RE.search(name))


def redact_text(said: str) -> str:
    """``said`` with secrets written as ``name=value`` or ``"name": "value"`` masked."""
    return _SECRET_IN_TEXT_RE.sub(lambda m: m.group(1) + REDACTED, said)


def state_token(obj: dict[str, Any]) -> str | None:
    """The state a v6 answer names: ``data.status``, else ``message`` / ``messege``."""
    data = obj.get("data")
    candidates = [data.get("status") if isinstance(data, dict) else None]
    candidates += [obj.get("message"), obj.get("messege")]
    for value in candidates:
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def parse_v6(obj: dict[str, Any], raw_state: str) -> TrainingStatus:
    """A v6 answer whose state is ``raw_state`` (a token) as a status with milestone steps."""
    data = obj.get("data")
    data = data if isinstance(data, dict) else {}
    token = raw_state.lower()
    inference = data.get("inference")
    inference_status = _inference_status(inference)
    shown = f"{raw_state} (inference: {inference_status})" if inference_status else raw_state
    failed = token in _FAILED
    finished = not failed and inference_status == "ready"
    model = None
    if finished:
        state: TrainingState | None = TrainingState.MODEL_READY
        steps: tuple[Event, ...] = (STARTED_STEP, COMPLETED_STEP)
        model = model_info(data, inference if isinstance(inference, dict) else {})
    elif failed:
        state = (
            TrainingState.TRAINING_FAILED
            if token in ("training_failed", "failed")
            else TrainingState.TRAINING_CANCELLED
        )
        steps = (STARTED_STEP,)
    elif token in _COMPLETED:
        state, steps = TrainingState.TRAINING_COMPLETED, (STARTED_STEP, COMPLETED_STEP)
    elif token in _STARTED:
        state, steps = TrainingState.TRAINING_STARTED, (STARTED_STEP,)
    elif token in _QUEUED:
        state, steps = TrainingState.QUEUED, ()
    else:
        state, steps = None, ()  # unknown: still running, shown raw
    return TrainingStatus(
        state=state,
        raw_state=shown,
        finished=finished,
        failed=failed,
        steps=steps,
        eta_minutes=None,
        unparsed=(),
        log_lines=(),
        failure_reason=_failure_reason(obj, data, raw_state) if failed else None,
        api=Api.V6,
        eta_seconds=None if finished or failed else seconds(data.get("eta")),
        model=model,
    )


def seconds(value: Any) -> float | None:
    """A duration in seconds from a number or numeric text; None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        return None
    return min(float(value), 7 * 86_400.0)


def model_info(data: dict[str, Any], inference: dict[str, Any]) -> ModelInfo:
    """The model id and the generation request's essentials, secrets left out."""
    request = _request_of(inference)
    endpoint = _first_text(inference, ("endpoint", "url", "api_url", "request_url", "api"))
    endpoint = endpoint or _first_text(request, ("endpoint", "url"))
    model_id = (
        _first_text(inference, ("model_id", "lora_model", "lora_id"))
        or _first_text(data, ("model_id", "lora_model", "lora_id"))
        or _first_text(request, ("lora_model", "lora", "lora_id", "model_id"))
    )
    fields: list[tuple[str, str]] = []
    for name, value in request.items():
        if len(fields) >= MAX_FIELDS:
            break
        if not isinstance(name, str) or is_secret_name(name) or name in ("endpoint", "url"):
            continue
        shown = _value_text(value)
        if shown:
            fields.append((one_line(name, 64), shown))
    return ModelInfo(
        model_id=one_line(redact_text(model_id), 200) if model_id else None,
        endpoint=one_line(redact_text(endpoint), VALUE_CHARS) if endpoint else None,
        request=tuple(fields),
    )


def scrub(value: Any, depth: int = 0) -> Any:
    """``value`` with secret-named fields removed at any depth (bounded)."""
    if depth > 20:
        return None
    if isinstance(value, dict):
        return {
            name: scrub(item, depth + 1)
            for name, item in value.items()
            if not (isinstance(name, str) and is_secret_name(name))
        }
    if isinstance(value, list):
        return [scrub(item, depth + 1) for item in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


def _inference_status(inference: Any) -> str | None:
    if isinstance(inference, dict):
        inference = inference.get("status")
    if isinstance(inference, str) and inference.strip():
        return one_line(inference, 40).lower()
    return None


def _request_of(inference: dict[str, Any]) -> dict[str, Any]:
    for name in ("request", "payload", "body", "params", "parameters", "example_request"):
        value = inference.get(name)
        if isinstance(value, str) and value.lstrip().startswith("{"):
            value = _json_object(value)
        if isinstance(value, dict):
            return value
    return {name: value for name, value in inference.items() if name != "status"}


def _json_object(raw: str) -> dict[str, Any] | None:
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _first_text(obj: dict[str, Any], names: tuple[str, ...]) -> str | None:
    for name in names:
        value = obj.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
    return None


def _value_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value) if math.isfinite(value) else ""
    if isinstance(value, str):
        return one_line(redact_text(value), VALUE_CHARS)
    try:
        dumped = json.dumps(scrub(value), ensure_ascii=False, separators=(",", ":"))
    except (ValueError, TypeError, RecursionError):
        return ""
    return one_line(dumped, VALUE_CHARS)


def _failure_reason(obj: dict[str, Any], data: dict[str, Any], raw_state: str) -> str | None:
    for value in (data.get("response_dump"), data.get("error"), data.get("reason")):
        if isinstance(value, str) and value.lstrip().startswith("{"):
            value = _json_object(value) or value
        said = text(scrub(value))
        if said:
            return one_line(said, REASON_CHARS)
    for name in ("message", "messege", "error"):
        said = text(obj.get(name))
        if said and said.lower() != raw_state.lower():
            return one_line(redact_text(said), REASON_CHARS)
    return None
