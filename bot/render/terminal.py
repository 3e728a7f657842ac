"""Terminal text for the CLI: no Discord markup, and no control characters from the API (a log
line cannot move the cursor or recolour the terminal)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from bot.render.status import model_lines
from bot.render.text import (
    duration_text,
    eta_text,
    plain_state_words,
    progress_bar,
)
from bot.sdapi.status import Api, TrainingStatus

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def plain(text: str) -> str:
    """Text from the API, safe to print: control characters (escape sequences) shown as �."""
    return _CONTROL.sub("\ufffd", text)


def status_text(training_id: str, status: TrainingStatus, checked_at: datetime) -> str:
    """The same status for a terminal (no Discord markup)."""
    lines = [
        f"Training {plain(training_id)} ({status.api} API)",
        f"  state:    {plain_state_words(status)} ({plain(status.raw_state or 'none')})",
        f"  progress: {progress_bar(status.steps_done, status.total_steps)}",
    ]
    if not status.terminal:
        lines.append(f"  ETA:      {eta_text(status.eta_minutes, status.eta_seconds)}")
    if status.elapsed_seconds is not None:
        lines.append(f"  elapsed:  {duration_text(status.elapsed_seconds)}")
    if status.failed:
        reason = status.failure_text or "the API gave no reason"
        lines.append(f"  reason:   {plain(reason)}")
    if status.finished and status.model is not None:
        lines.append(f"  model:    {plain(status.model.model_id or 'not named')}")
        lines.extend(f"    {plain(line)}" for line in model_lines(status.model))
    lines.append(f"  checked:  {checked_at.isoformat(timespec='seconds')}")
    if status.api is Api.V3 or status.log_lines:
        lines.append("  log:")
        lines.extend(f"    {plain(line)}" for line in status.log_lines or ("(no log yet)",))
    return "\n".join(lines)


def watch_line(training_id: str, status: TrainingStatus, checked_at: datetime) -> str:
    """One line of ``tunewatch status --watch``: progress, state, ETA, when it was checked."""
    parts = [
        plain(training_id),
        progress_bar(status.steps_done, status.total_steps),
        plain_state_words(status),
    ]
    if status.failed:
        parts.append(plain(status.failure_text or "the API gave no reason"))
    elif not status.terminal:
        parts.append(f"ETA {eta_text(status.eta_minutes, status.eta_seconds)}")
    parts.append(f"checked {checked_at.astimezone().strftime('%H:%M:%S')}")
    return " · ".join(parts)


def status_json(training_id: str, status: TrainingStatus) -> dict[str, Any]:
    """The parsed status as JSON values (``tunewatch status --json``): what the parser read,
    nothing more; the API's text as it came."""
    model = status.model
    return {
        "training_id": training_id,
        "api": status.api.value,
        "state": status.state.value if status.state is not None else None,
        "raw_state": status.raw_state,
        "state_words": plain_state_words(status),
        "finished": status.finished,
        "failed": status.failed,
        "steps_done": status.steps_done,
        "total_steps": status.total_steps,
        "eta_minutes": status.eta_minutes,
        "eta_seconds": status.eta_seconds,
        "elapsed_seconds": status.elapsed_seconds,
        "failure_reason": status.failure_reason,
        "failure_stage": status.failure_stage,
        "steps": [
            {
                "seq": step.seq,
                "number": step.number,
                "label": step.label,
                "steps_to_go": step.steps_to_go,
                "eta_minutes": step.eta_minutes,
                "elapsed_seconds": step.elapsed_seconds,
                "line": step.raw,
            }
            for step in status.steps
        ],
        "model": None
        if model is None
        else {
            "model_id": model.model_id,
            "endpoint": model.endpoint,
            "request": dict(model.request),
        },
        "log_lines": list(status.log_lines),
        "unparsed": list(status.unparsed),
    }
