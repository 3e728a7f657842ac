"""What a status answer says, for both APIs: the types the parser returns and nothing else."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from bot.events import Event

# The v6 trainer's run ids; the v3 ids are 10 alphanumerics in the docs (F5jvdzGnYi).
UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


class Api(StrEnum):
    """Which status endpoint answers for a training."""

    V3 = "v3"
    """``POST {root}/fine_tune_status/{id}``: Dreambooth and LoRA fine-tunes, with a step log."""
    V6 = "v6"
    """``POST {v6 root}/trainer/status/{uuid}``: the v6 trainer (Flux, SDXL LoRA), no step log."""


def api_for(training_id: str, forced: Api | None = None) -> Api:
    """The API a training id belongs to: a UUID goes to v6, anything else to v3, unless forced."""
    if forced is not None:
        return forced
    return Api.V6 if UUID_RE.fullmatch(training_id.strip()) else Api.V3


class TrainingState(StrEnum):
    """The known states: v3's documented ones in order, then the observed and v6 ones."""

    QUEUED = "queued"
    """Waiting for a worker (a ``status: "processing"`` answer, or the trainer's ``queued``)."""
    DEPLOYING_GPU = "deploying_gpu"
    TRAINING_STARTED = "training_started"
    TRAINING_SUCCESS = "training_success"
    TRAINED_MODEL_COMPRESSING = "trained_model_compressing"
    TRAINED_MODEL_UPLOADING = "trained_model_uploading"
    TRAINED_MODEL_UPLOADED = "trained_model_uploaded"
    DEPLOYING_MODEL = "deploying_model"
    MODEL_READY = "model_ready"
    TRAINING_COMPLETED = "training_completed"
    """v6: trained, the model is being prepared for use; not finished until inference is ready."""
    TRAINING_FAILED = "training_failed"
    TRAINING_CANCELLED = "training_cancelled"
    """v6: the run failed (the reason is in ``data.response_dump``)."""


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What a finished v6 run says is needed to use the LoRA. Never holds the API key."""

    model_id: str | None
    endpoint: str | None = None
    """Where to send the generation request, when the answer names it."""
    request: tuple[tuple[str, str], ...] = ()
    """The generation request's fields as ``(name, value)`` text, trimmed, secrets left out."""

    def to_json(self) -> str:
        """A compact JSON form, for storing with an event."""
        return json.dumps(
            {"model_id": self.model_id, "endpoint": self.endpoint, "request": self.request},
            ensure_ascii=False,
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | None) -> ModelInfo | None:
        """Read :meth:`to_json` back; None for anything else (never raises)."""
        if not text or not text.startswith("{"):
            return None
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):
            return None
        if not isinstance(value, dict) or set(value) != {"model_id", "endpoint", "request"}:
            return None
        model_id, endpoint, request = value["model_id"], value["endpoint"], value["request"]
        if not isinstance(model_id, str | None) or not isinstance(endpoint, str | None):
            return None
        if not isinstance(request, list) or not all(_is_pair(item) for item in request):
            return None
        return cls(model_id, endpoint, tuple((name, val) for name, val in request))


def _is_pair(item: Any) -> bool:
    return (
        isinstance(item, list)
        and len(item) == 2
        and isinstance(item[0], str)
        and isinstance(item[1], str)
    )


@dataclass(frozen=True, slots=True)
class TrainingStatus:
    """What one status response says about a training, whichever API answered."""

    state: TrainingState | None
    raw_state: str
    finished: bool
    failed: bool
    steps: tuple[Event, ...]
    eta_minutes: int | None
    unparsed: tuple[str, ...]
    log_lines: tuple[str, ...]
    failure_reason: str | None = None
    failure_stage: str | None = None
    """The trainer's stage at the failure (``Training model``), when its log names it."""
    api: Api = Api.V3
    elapsed_seconds: float | None = None
    """The latest ``Time Elapsed`` in the log (default: the last step's), in seconds."""
    eta_seconds: float | None = None
    """The ETA in seconds (default: from ``eta_minutes``); ``eta_minutes`` follows it if unset."""
    model: ModelInfo | None = None
    """v6, once ready: what is needed to use the model."""
    # Derived once, when the status is made: the tracker reads them at every poll, and the
    # client hands out one object per distinct body.
    terminal: bool = field(init=False, repr=False, compare=False)
    """True when the training will not change any more."""
    total_steps: int | None = field(init=False, repr=False, compare=False)
    """Steps in all, as the latest step line that states it says (its number plus the steps it
    says are left); None if unknown.

    The trainer's stated totals drift within a run (6, 6, 6, 5, 5 for Dreambooth, whose
    ``Event:3`` comes twice). The latest statement is the trainer's current view, and with the
    done count below it keeps ``done/total`` from going backwards in the real runs (1/6, 2/6,
    3/6, 3/5, 4/5); the largest total ever stated would instead leave a finished run at 4/6
    until the final answer."""
    last_seq: int = field(init=False, repr=False, compare=False)
    """The last step's ``seq``; -1 without steps."""

    def __post_init__(self) -> None:
        last = self.steps[-1] if self.steps else None
        object.__setattr__(self, "terminal", self.finished or self.failed)
        total = next((t for s in reversed(self.steps) if (t := s.total_steps) is not None), None)
        object.__setattr__(self, "total_steps", total)
        object.__setattr__(self, "last_seq", -1 if last is None else last.seq)
        if self.eta_seconds is None and self.eta_minutes is not None:
            object.__setattr__(self, "eta_seconds", float(self.eta_minutes) * 60.0)
        elif self.eta_minutes is None and self.eta_seconds is not None:
            object.__setattr__(self, "eta_minutes", math.ceil(self.eta_seconds / 60.0))
        if self.elapsed_seconds is None:
            elapsed = next(
                (s.elapsed_seconds for s in reversed(self.steps) if s.elapsed_seconds is not None),
                None,
            )
            object.__setattr__(self, "elapsed_seconds", elapsed)

    @property
    def steps_done(self) -> int:
        """Steps done: all of them once finished; else the latest step's number when the total
        is known (a repeated number counts once), else the distinct numbers seen."""
        total = self.total_steps
        if self.finished and total is not None:
            return total
        last = self.steps[-1] if self.steps else None
        if total is not None and last is not None and last.number is not None:
            return max(0, min(last.number, total))
        # Repeated step numbers (a step logged twice) count once; unnumbered lines count each.
        done = len({s.number if s.number is not None else -1 - s.seq for s in self.steps})
        return done if total is None else min(done, total)

    @property
    def failure_text(self) -> str | None:
        """The reason with the stage it happened in, for a failed training's final message."""
        if self.failure_stage and self.failure_reason:
            return f"{self.failure_reason} (during {self.failure_stage})"
        if self.failure_stage:
            return f"failed during {self.failure_stage}"
        return self.failure_reason
