"""Scripted trainings for the simulator: what the API answers at each stage of a run.

Each timeline says where its words come from (tests/unit/test_corpus.py has the sources):

- ``documented``: the status page's own example (``Step:N <Label>, K Steps to go : ETA : M
  minutes``, four step lines, then ``Model loaded successfully``), stage by documented state;
- ``dreambooth`` and ``lora``: the provider's GPU trainer's wording (``K More Steps to go``,
  ``| Time Elapsed : S seconds``, Dreambooth's ``Step:3`` twice, LoRA without compressing,
  drifting totals, ETAs that rise and fall, the last line without `` seconds``);
- ``v6``: the v6 trainer's three states, with the wait for inference after ``training_completed``;
- ``invented``: the first simulator's timeline, which has lines NO source has. Opt-in only.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from bot.sdapi.model import Api

DEFAULT_KEY = "sim-key-0000"
Dialect = Literal["slash_n", "newline"]
TimelineName = Literal["documented", "dreambooth", "lora", "v6", "invented"]
FAILED_STATE = "training_failed"
CANCELLED_STATE = "training_cancelled"
# The trainer's failure line: a numbered stage, the time elapsed, the exception text.
TRAINER_FAILURE = "1. [Training model] | Time Elapsed : 812.44"


@dataclass(frozen=True, slots=True)
class Stage:
    """One stage of a run: the state the API reports and the log line it appends (v3), or the
    inference status it shows (v6)."""

    state: str
    line: str | None = None
    inference: str | None = None


@dataclass(frozen=True, slots=True)
class Timeline:
    """A run from its first answer to its last; the last stage is the finished one."""

    name: str
    api: Api
    stages: tuple[Stage, ...]
    creation_note: str | None = None
    """The log before the first step (the creation answer's ``data``)."""
    trainer_wording: bool = False
    """A failure is written as the trainer's numbered failure line."""

    @property
    def terminal_stage(self) -> int:
        """The index of the finished stage."""
        return len(self.stages) - 1


DOCUMENTED = Timeline(
    "documented",
    Api.V3,
    (
        Stage("deploying_gpu"),
        Stage("training_started", "Step:1 Training Started, 5 Steps to go : ETA : 30 minutes"),
        Stage("training_success", "Step:2 Training Done, 4 Steps to go : ETA : 15 minutes"),
        # The documented log has no line for compressing.
        Stage("trained_model_compressing"),
        Stage(
            "trained_model_uploading", "Step:3 Model Uploading, 3 Steps to go : ETA : 10 minutes"
        ),
        Stage("trained_model_uploaded", "Step:4 Model Uploaded, 2 Steps to go : ETA : 5 minutes"),
        Stage("deploying_model"),
        Stage("model_ready", "Model loaded successfully"),
    ),
    creation_note="it will take upto 25 minutes.",
)
DREAMBOOTH = Timeline(
    "dreambooth",
    Api.V3,
    (
        Stage("deploying_gpu"),
        Stage(
            "training_started",
            "Step:1 Training Started, 5 More Steps to go : ETA : 60 minutes | "
            "Time Elapsed : 41.27361178398132 seconds",
        ),
        Stage(
            "training_success",
            "Step:2 Training Done, 4 More Steps to go : ETA : 15 minutes | "
            "Time Elapsed : 1103.5561985969543 seconds",
        ),
        Stage(
            "trained_model_compressing",
            "Step:3 Model Compressing, 3 More Steps to go : ETA : 25 minutes | "
            "Time Elapsed : 1190.0820829868317 seconds",
        ),
        Stage(
            "trained_model_uploading",
            "Step:3 Model Uploading, 2 More Steps to go : ETA : 20 minutes | "
            "Time Elapsed : 1237.9148209095001 seconds",
        ),
        # The trainer's last line lacks the trailing " seconds".
        Stage(
            "trained_model_uploaded",
            "Step:4 Model Uploaded, 1 More Steps to go : ETA : 10 minutes | "
            "Time Elapsed : 1502.6389410495758",
        ),
        Stage("deploying_model"),
        Stage("model_ready"),
    ),
    creation_note="it will take upto 25 minutes.",
    trainer_wording=True,
)
LORA = Timeline(
    "lora",
    Api.V3,
    (
        Stage("deploying_gpu"),
        Stage(
            "training_started",
            "Step:1 Training Started, 5 More Steps to go : ETA : 60 minutes | "
            "Time Elapsed : 38.91522526741028 seconds",
        ),
        Stage(
            "training_success",
            "Step:2 Training Done, 4 More Steps to go : ETA : 15 minutes | "
            "Time Elapsed : 1012.3361902236938 seconds",
        ),
        Stage(
            "trained_model_uploading",
            "Step:3 Model Uploading, 2 More Steps to go : ETA : 20 minutes | "
            "Time Elapsed : 1090.6637845039368 seconds",
        ),
        Stage(
            "trained_model_uploaded",
            "Step:4 Model Uploaded, 1 More Steps to go : ETA : 10 minutes | "
            "Time Elapsed : 1355.2071137428284",
        ),
        Stage("deploying_model"),
        Stage("model_ready"),
    ),
    creation_note="it will take upto 30 minutes.",
    trainer_wording=True,
)
V6 = Timeline(
    "v6",
    Api.V6,
    (
        Stage("training_started"),
        # Trained, the model not usable yet: first without an inference field, then with one
        # that is not ready, then ready (the documented "keep polling until ready").
        Stage("training_completed"),
        Stage("training_completed", inference="processing"),
        Stage("training_completed", inference="ready"),
    ),
)
# INVENTED: the first simulator's timeline. No source has its "Step:3 Model Compressing, 3 Steps
# to go" numbering or its "Step:6 Deploying Model, 0 Steps to go" line. Kept, opt-in, for the
# benchmarks, whose arithmetic wants one new, increasingly numbered step line per stage.
INVENTED = Timeline(
    "invented",
    Api.V3,
    (
        Stage("deploying_gpu"),
        Stage("training_started", "Step:1 Training Started, 5 Steps to go : ETA : 30 minutes"),
        Stage("training_success", "Step:2 Training Done, 4 Steps to go : ETA : 15 minutes"),
        Stage(
            "trained_model_compressing",
            "Step:3 Model Compressing, 3 Steps to go : ETA : 12 minutes",
        ),
        Stage(
            "trained_model_uploading", "Step:4 Model Uploading, 2 Steps to go : ETA : 10 minutes"
        ),
        Stage("trained_model_uploaded", "Step:5 Model Uploaded, 1 Steps to go : ETA : 5 minutes"),
        Stage("deploying_model", "Step:6 Deploying Model, 0 Steps to go : ETA : 2 minutes"),
        Stage("model_ready", "Model loaded successfully"),
    ),
    creation_note="it will take upto 25 minutes.",
)
TIMELINES: dict[str, Timeline] = {t.name: t for t in (DOCUMENTED, DREAMBOOTH, LORA, V6, INVENTED)}

# The documented timeline as (state, line) pairs, the shape the first simulator exported.
STAGES: tuple[tuple[str, str | None], ...] = tuple((s.state, s.line) for s in DOCUMENTED.stages)
TERMINAL_STAGE = DOCUMENTED.terminal_stage


def new_v6_id() -> str:
    """A fresh v6 run id (a UUID, as the v6 trainer gives)."""
    return str(uuid.uuid4())


@dataclass
class SimTraining:
    """One scripted training: its stage in its timeline, or a failure at ``fail_at``."""

    training_id: str
    key: str = DEFAULT_KEY
    dialect: Dialect = "newline"
    stage: int = 0
    fail_at: int | None = None
    failure_reason: str | None = "CUDA out of memory"
    """None: the API gives no reason (it may not)."""
    timeline: TimelineName = "documented"
    # Serialized bodies: a body is a pure function of these fields, and requests repeat a lot.
    _bodies: dict[tuple[Any, ...], bytes] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.timeline not in TIMELINES:
            raise ValueError(f"unknown timeline {self.timeline!r}")
        if self.dialect not in ("slash_n", "newline"):
            raise ValueError(f"unknown dialect {self.dialect!r}")
        if self.fail_at is not None and not 0 <= self.fail_at <= self.script.terminal_stage:
            raise ValueError(f"fail_at must be within 0..{self.script.terminal_stage}")
        self.stage = min(max(self.stage, 0), self.terminal_stage)

    @property
    def script(self) -> Timeline:
        """The timeline this training follows."""
        return TIMELINES[self.timeline]

    @property
    def api(self) -> Api:
        """Which status route answers for it."""
        return self.script.api

    @property
    def terminal_stage(self) -> int:
        """The stage this training stops at: its failure, or its finished stage."""
        return self.script.terminal_stage if self.fail_at is None else self.fail_at

    def advance(self, n: int = 1) -> None:
        """Move forward ``n`` stages, stopping at the terminal stage."""
        self.stage = min(max(self.stage + n, 0), self.terminal_stage)

    @property
    def failed(self) -> bool:
        """True once the training reached its failure stage."""
        return self.fail_at is not None and self.stage >= self.fail_at

    @property
    def state(self) -> str:
        """The state the API would report now."""
        if self.failed:
            return CANCELLED_STATE if self.api is Api.V6 else FAILED_STATE
        return self.script.stages[self.stage].state

    @property
    def terminal(self) -> bool:
        """True when the training will not change any more."""
        return self.stage >= self.terminal_stage

    def body(self) -> dict[str, Any]:
        """The JSON body the API would return now."""
        return self._v6_body() if self.api is Api.V6 else self._v3_body()

    def body_bytes(self) -> bytes:
        """:meth:`body` serialized, cached per stage."""
        cache_key = (self.stage, self.dialect, self.fail_at, self.failure_reason, self.timeline)
        cached = self._bodies.get(cache_key)
        if cached is None:
            cached = self._bodies[cache_key] = json.dumps(self.body()).encode()
        return cached

    def _v3_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"status": "success", "messege": self.state, "data": self._log()}
        if self.failed and self.failure_reason:
            body["message"] = self.failure_reason
        return body

    def _log(self) -> str:
        script = self.script
        if self.stage == 0 and not self.failed:
            return script.creation_note or ""
        last = self.stage - 1 if self.failed else self.stage
        lines = [s.line for s in script.stages[1 : last + 1] if s.line is not None]
        if self.failed and script.trainer_wording:
            reason = f" | {self.failure_reason}" if self.failure_reason else ""
            lines.append(TRAINER_FAILURE + reason)
        if self.dialect == "newline":
            return "\n".join(lines)
        # The documented legacy example: " /n " before each line, and one empty segment
        # (" /n  /n ") before the fourth.
        return "".join(f"{' /n ' if i == 3 else ''} /n {line}" for i, line in enumerate(lines))

    def _v6_body(self) -> dict[str, Any]:
        state = self.state
        data: dict[str, Any] = {"id": self.training_id, "status": state}
        if self.failed:
            if self.failure_reason:
                data["response_dump"] = self.failure_reason
        else:
            inference = self.script.stages[self.stage].inference
            if inference == "ready":
                data["inference"] = self._ready_inference()
            elif inference is not None:
                data["inference"] = {"status": inference}
        return {"status": "success", "message": state, "data": data}

    def _ready_inference(self) -> dict[str, Any]:
        """ASSUMED SHAPE: the docs say the ready answer "contains the exact request to generate
        with your LoRA" without showing it. These names are a guess the parser does not rely
        on; the request echoes the key, as a copy-paste request would."""
        lora = f"tw-lora-{self.training_id[:8]}"
        return {
            "status": "ready",
            "endpoint": "https://modelslab.com/api/v6/images/text2img",
            "request": {
                "key": self.key,
                "model_id": "flux",
                "lora_model": lora,
                "prompt": "a photo of tw_subject",
                "negative_prompt": "",
                "lora_strength": 1,
                "width": 1024,
                "height": 1024,
                "samples": 1,
                "num_inference_steps": 30,
                "webhook": None,
            },
        }
