"""Terminal text for the CLI: no Discord markup."""

from __future__ import annotations

from datetime import datetime

from bot.render.status import model_lines
from bot.render.text import (
    duration_text,
    eta_text,
    plain_state_words,
    progress_bar,
)
from bot.sdapi.status import Api, TrainingStatus


def status_text(training_id: str, status: TrainingStatus, checked_at: datetime) -> str:
    """The same status for a terminal (no Discord markup)."""
    lines = [
        f"Training {training_id} ({status.api} API)",
        f"  state:    {plain_state_words(status)} ({status.raw_state or 'none'})",
        f"  progress: {progress_bar(status.steps_done, status.total_steps)}",
    ]
    if not status.terminal:
        lines.append(f"  ETA:      {eta_text(status.eta_minutes, status.eta_seconds)}")
    if status.elapsed_seconds is not None:
        lines.append(f"  elapsed:  {duration_text(status.elapsed_seconds)}")
    if status.failed:
        reason = status.failure_text or "the API gave no reason"
        lines.append(f"  reason:   {reason}")
    if status.finished and status.model is not None:
        lines.append(f"  model:    {status.model.model_id or 'not named'}")
        lines.extend(f"    {line}" for line in model_lines(status.model))
    lines.append(f"  checked:  {checked_at.isoformat(timespec='seconds')}")
    if status.api is Api.V3 or status.log_lines:
        lines.append("  log:")
        lines.extend(f"    {line}" for line in status.log_lines or ("(no log yet)",))
    return "\n".join(lines)
