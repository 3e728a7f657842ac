"""Pure parser of the training status body: ``(http status, body bytes) -> TrainingStatus``.

STUB: being implemented; the types below are the contract.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


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

    @property
    def terminal(self) -> bool:
        """True when the training will not change any more."""
        return self.finished or self.failed

    @property
    def total_steps(self) -> int | None:
        """Steps in all, when the last step line says how many are left."""
        if not self.steps or self.steps[-1].steps_to_go is None:
            return None
        return len(self.steps) + self.steps[-1].steps_to_go


def parse_status(http_status: int, body: bytes) -> TrainingStatus:
    """Parse one response; raises only ``SdApiError`` subclasses."""
    raise NotImplementedError
