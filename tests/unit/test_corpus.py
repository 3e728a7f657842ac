"""The corpus: every status body the service is known to answer, with where it comes from (see
/work/shared/reference/sdapi.md), through the parser, with what tunewatch must make of it.

A body that is an assumption (a field nobody has documented) says so in its source.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from bot.sdapi.errors import (
    ApiUnavailable,
    InvalidApiKey,
    NoCredits,
    RateLimited,
    SdApiError,
    TrainingNotFound,
    UnexpectedResponse,
)
from bot.sdapi.status import Api, TrainingState, TrainingStatus, parse_status

DOCS_LEGACY = "stablediffusionapi.com docs, train-model/finetune-status (2023), verbatim"
DOCS_OPENAPI = "ModelsLab docs (docs-v2 OpenAPI) example of fine_tune_status, verbatim"
DOCS_CREATE = "stablediffusionapi.com docs, the creation answer (the log before any step)"
DOCS_ERRORS = "stablediffusionapi.com docs, error examples, verbatim"
DOCS_CODES = "docs.modelslab.com, documented HTTP error codes (401, 402, 404, 429)"
TRAINER = "the provider's GPU trainer source (2024): its own step wording"
TEST_LOGS = "the provider's published API test logs (2023)"
PLAYGROUND = "the provider's playground: long calls answer status processing, eta in seconds"
V6_DOCS = "docs.modelslab.com train-model/training-status (v6 trainer)"
V6_ASSUMED = V6_DOCS + "; fields beyond data.status and data.inference.status are ASSUMED"

RUN = "9b2f6c1e-4d3a-4f8e-a1b2-3c4d5e6f7a8b"
KEY = "sk-corpus-5e6f7a8b9c0d"

TRAINER_LINES = (
    "Step:1 Training Started, 5 More Steps to go : ETA : 60 minutes | "
    "Time Elapsed : 41.27361178398132 seconds",
    "Step:2 Training Done, 4 More Steps to go : ETA : 15 minutes | "
    "Time Elapsed : 1103.5561985969543 seconds",
    "Step:3 Model Compressing, 3 More Steps to go : ETA : 25 minutes | "
    "Time Elapsed : 1190.0820829868317 seconds",
    "Step:3 Model Uploading, 2 More Steps to go : ETA : 20 minutes | "
    "Time Elapsed : 1237.9148209095001 seconds",
    "Step:4 Model Uploaded, 1 More Steps to go : ETA : 10 minutes | "
    "Time Elapsed : 1502.6389410495758",
)
# LoRA's lines in the trainer's wording; its Time Elapsed figures are illustrative (the
# reference gives figures for one Dreambooth run only).
LORA_LINES = (
    "Step:1 Training Started, 5 More Steps to go : ETA : 60 minutes | "
    "Time Elapsed : 38.91522526741028 seconds",
    "Step:2 Training Done, 4 More Steps to go : ETA : 15 minutes | "
    "Time Elapsed : 1012.3361902236938 seconds",
    "Step:3 Model Uploading, 2 More Steps to go : ETA : 20 minutes | "
    "Time Elapsed : 1090.6637845039368 seconds",
    "Step:4 Model Uploaded, 1 More Steps to go : ETA : 10 minutes | "
    "Time Elapsed : 1355.2071137428284",
)


def js(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


def slash_n(lines: tuple[str, ...]) -> str:
    """The API's legacy join: " /n " before each line, an empty segment before the fourth."""
    return "".join(f"{' /n ' if i == 3 else ''} /n {line}" for i, line in enumerate(lines))


@dataclass(frozen=True)
class Seen:
    """What the parser must make of a body (only the fields given are checked)."""

    state: TrainingState | None
    raw_state: str | None = None
    terminal: bool = False
    steps: tuple[tuple[int | None, str], ...] | None = None
    progress: tuple[int, int | None] | None = None  # (done, total)
    eta_minutes: int | None = None
    eta_seconds: float | None = None
    elapsed: float | None = None
    reason: str | None = None
    stage: str | None = None
    model_id: str | None = None


@dataclass(frozen=True)
class Refused:
    """The typed error a body must give, with its reason."""

    error: type[SdApiError]
    reason: str


@dataclass(frozen=True)
class Case:
    name: str
    source: str
    http_status: int
    body: bytes
    expected: Seen | Refused
    api: Api = Api.V3


API = "the Stable Diffusion API"
CORPUS: tuple[Case, ...] = (
    # -- v3, the documentation's wording -----------------------------------------------------
    Case(
        "docs-ready-slash-n",
        DOCS_LEGACY,
        200,
        js(
            status="success",
            messege="model_ready",
            data=" /n Step:1 Training Started, 5 Steps to go : ETA : 30 minutes /n Step:2 Training"
            " Done, 4 Steps to go : ETA : 15 minutes /n Step:3 Model Uploading, 3 Steps to go :"
            " ETA : 10 minutes /n  /n Step:4 Model Uploaded, 2 Steps to go : ETA : 5 minutes /n"
            " Model loaded successfully",
        ),
        Seen(
            TrainingState.MODEL_READY,
            terminal=True,
            steps=(
                (1, "Training Started"),
                (2, "Training Done"),
                (3, "Model Uploading"),
                (4, "Model Uploaded"),
            ),
            progress=(6, 6),
        ),
    ),
    Case(
        "docs-ready-newline",
        DOCS_OPENAPI,
        200,
        js(
            status="success",
            messege="model_ready",
            data="Step:1 Training Started, 5 Steps to go : ETA : 30 minutes\nStep:2 Training Done,"
            " 4 Steps to go : ETA : 15 minutes\nStep:3 Model Uploading, 3 Steps to go : ETA : 10"
            " minutes\nStep:4 Model Uploaded, 2 Steps to go : ETA : 5 minutes\nModel loaded"
            " successfully",
        ),
        Seen(TrainingState.MODEL_READY, terminal=True, progress=(6, 6)),
    ),
    Case(
        "docs-running",
        DOCS_LEGACY + " (its lines, while running)",
        200,
        js(
            status="success",
            messege="trained_model_uploading",
            data=" /n Step:1 Training Started, 5 Steps to go : ETA : 30 minutes /n Step:2 Training"
            " Done, 4 Steps to go : ETA : 15 minutes /n Step:3 Model Uploading, 3 Steps to go :"
            " ETA : 10 minutes",
        ),
        Seen(TrainingState.TRAINED_MODEL_UPLOADING, progress=(3, 6), eta_minutes=10),
    ),
    Case(
        "docs-creation",
        DOCS_CREATE,
        200,
        js(
            status="success",
            messege="deploying_gpu",
            data="it will take upto 25 minutes.",
            training_id="F5jvdzGnYi",
        ),
        Seen(TrainingState.DEPLOYING_GPU, steps=(), progress=(0, None)),
    ),
    # -- v3, the trainer's own wording -------------------------------------------------------
    Case(
        "trainer-dreambooth-first-step",
        TRAINER,
        200,
        js(status="success", messege="training_started", data=slash_n(TRAINER_LINES[:1])),
        Seen(
            TrainingState.TRAINING_STARTED,
            progress=(1, 6),
            eta_minutes=60,
            elapsed=41.27361178398132,
        ),
    ),
    Case(
        "trainer-dreambooth-compressing",
        TRAINER,
        200,
        js(
            status="success",
            messege="trained_model_compressing",
            data=slash_n(TRAINER_LINES[:3]),
        ),
        Seen(TrainingState.TRAINED_MODEL_COMPRESSING, progress=(3, 6), eta_minutes=25),
    ),
    Case(
        "trainer-dreambooth-step-3-twice",
        TRAINER,
        200,
        js(status="success", messege="trained_model_uploading", data=slash_n(TRAINER_LINES[:4])),
        Seen(
            TrainingState.TRAINED_MODEL_UPLOADING,
            steps=(
                (1, "Training Started"),
                (2, "Training Done"),
                (3, "Model Compressing"),
                (3, "Model Uploading"),
            ),
            progress=(3, 5),
            eta_minutes=20,
            elapsed=1237.9148209095001,
        ),
    ),
    Case(
        "trainer-dreambooth-last-line-without-seconds",
        TRAINER,
        200,
        js(status="success", messege="trained_model_uploaded", data=slash_n(TRAINER_LINES)),
        Seen(
            TrainingState.TRAINED_MODEL_UPLOADED,
            progress=(4, 5),
            eta_minutes=10,
            elapsed=1502.6389410495758,
        ),
    ),
    Case(
        "trainer-dreambooth-ready",
        TRAINER,
        200,
        js(status="success", messege="model_ready", data="\n".join(TRAINER_LINES)),
        Seen(TrainingState.MODEL_READY, terminal=True, progress=(5, 5)),
    ),
    Case(
        "trainer-lora-no-compressing",
        TRAINER,
        200,
        js(status="success", messege="trained_model_uploaded", data=slash_n(LORA_LINES)),
        Seen(
            TrainingState.TRAINED_MODEL_UPLOADED,
            steps=(
                (1, "Training Started"),
                (2, "Training Done"),
                (3, "Model Uploading"),
                (4, "Model Uploaded"),
            ),
            progress=(4, 5),
        ),
    ),
    Case(
        "trainer-failure-line",
        TRAINER,
        200,
        js(
            status="success",
            messege="training_failed",
            data=slash_n(
                (
                    TRAINER_LINES[0],
                    "1. [Training model] | Time Elapsed : 812.44 | CUDA out of memory. Tried to "
                    "allocate 20.00 MiB",
                )
            ),
        ),
        Seen(
            TrainingState.TRAINING_FAILED,
            terminal=True,
            progress=(1, 6),
            elapsed=812.44,
            reason="CUDA out of memory. Tried to allocate 20.00 MiB",
            stage="Training model",
        ),
    ),
    Case(
        "failure-reason-in-message",
        TEST_LOGS + " / reference: the reason may be in message",
        200,
        js(status="success", messege="training_failed", message="NaN loss", data=""),
        Seen(TrainingState.TRAINING_FAILED, terminal=True, reason="NaN loss"),
    ),
    Case(
        "failure-without-reason",
        TEST_LOGS + " / reference: the reason may be absent",
        200,
        js(status="success", messege="training_failed"),
        Seen(TrainingState.TRAINING_FAILED, terminal=True, reason=None),
    ),
    # -- other bodies the service answers ----------------------------------------------------
    Case(
        "empty-error",
        TEST_LOGS,
        200,
        js(status="error", messege=""),
        Refused(ApiUnavailable, f"{API} answered with an error and no message"),
    ),
    Case(
        "failed-try-again",
        TEST_LOGS,
        200,
        js(status="failed", messege="Failed, Try Again", id="", output=""),
        Refused(ApiUnavailable, f"{API} failed to answer (Failed, Try Again)"),
    ),
    Case(
        "failed-try-again-docs",
        DOCS_ERRORS,
        200,
        js(status="failed", id="", message="Failed, Try Again", output=""),
        Refused(ApiUnavailable, f"{API} failed to answer (Failed, Try Again)"),
    ),
    Case(
        "model-not-found",
        TEST_LOGS,
        200,
        js(status="error", messege="Model not found"),
        Refused(TrainingNotFound, f"{API} does not know this training id"),
    ),
    Case(
        "processing-with-eta",
        PLAYGROUND,
        200,
        js(
            status="processing",
            eta=21.88,
            messege="Try to fetch request after given estimated time",
        ),
        Seen(TrainingState.QUEUED, raw_state="processing", eta_seconds=21.88, eta_minutes=1),
    ),
    Case(
        "queued-state",
        TRAINER + ": a queued state upstream of deploying_gpu",
        200,
        js(status="success", messege="queued", data=""),
        Seen(TrainingState.QUEUED, raw_state="queued"),
    ),
    Case(
        "invalid-key-body",
        DOCS_ERRORS,
        200,
        js(
            status="error",
            message="Invalid Api Key",
            tip="1. Make sure you are passing Content-Type: application/json in header. ...",
        ),
        Refused(InvalidApiKey, f"{API} rejected the API key (Invalid Api Key)"),
    ),
    Case(
        "rate-limit-body",
        DOCS_ERRORS,
        200,
        js(
            status="error",
            message="Rate limit exceeded",
            tips="you are sending same request multiple times, spam filter is enabled, please "
            "wait for 30 seconds and try again",
        ),
        Refused(RateLimited, f"{API} rate-limited the request"),
    ),
    Case(
        "field-errors",
        DOCS_ERRORS,
        200,
        js(status="error", message={"prompt": ["The prompt field is required."]}),
        Refused(
            UnexpectedResponse, f"{API} refused the request (prompt: The prompt field is required)"
        ),
    ),
    Case(
        "http-401",
        DOCS_CODES,
        401,
        js(status="error", message="Invalid API key"),
        Refused(InvalidApiKey, f"{API} rejected the API key (Invalid API key)"),
    ),
    Case(
        "http-402",
        DOCS_CODES,
        402,
        js(status="error", message="Insufficient credits to perform this request"),
        Refused(NoCredits, "the API key has no credits left"),
    ),
    Case(
        "http-404",
        DOCS_CODES,
        404,
        js(status="error", message="Training ID does not exist"),
        Refused(TrainingNotFound, f"{API} does not know this training id"),
    ),
    Case(
        "http-429-retry-after",
        DOCS_CODES,
        429,
        js(status="error", message="Rate limit exceeded", retry_after=30),
        Refused(RateLimited, f"{API} rate-limited the request"),
    ),
    Case(
        "http-502-html",
        "a proxy in front of the API (reference: bodies that are not JSON at all)",
        502,
        b"<html><head><title>502 Bad Gateway</title></head></html>",
        Refused(ApiUnavailable, f"{API} is having trouble (HTTP 502)"),
    ),
    Case(
        "unknown-state",
        DOCS_LEGACY + ": an unknown state is 'still running', shown raw",
        200,
        js(status="success", messege="gpu_warming_up", data=""),
        Seen(None, raw_state="gpu_warming_up"),
    ),
    # -- v6 trainer ---------------------------------------------------------------------------
    Case(
        "v6-training-started",
        V6_DOCS + ", example while training, verbatim",
        200,
        js(
            status="success",
            message="training_started",
            data={"id": RUN, "status": "training_started"},
        ),
        Seen(
            TrainingState.TRAINING_STARTED,
            raw_state="training_started",
            steps=((1, "Training started"),),
            progress=(1, 3),
        ),
        Api.V6,
    ),
    Case(
        "v6-training-completed-not-ready",
        V6_DOCS + ": after training_completed, poll until inference is ready",
        200,
        js(
            status="success",
            message="training_completed",
            data={"id": RUN, "status": "training_completed"},
        ),
        Seen(
            TrainingState.TRAINING_COMPLETED,
            steps=((1, "Training started"), (2, "Training completed: preparing the model for use")),
            progress=(2, 3),
        ),
        Api.V6,
    ),
    Case(
        "v6-ready",
        V6_ASSUMED,
        200,
        js(
            status="success",
            message="training_completed",
            data={
                "id": RUN,
                "status": "training_completed",
                "inference": {
                    "status": "ready",
                    "request": {"key": KEY, "model_id": "flux", "lora_model": "tw-lora-9b2f"},
                },
            },
        ),
        Seen(
            TrainingState.MODEL_READY,
            raw_state="training_completed (inference: ready)",
            terminal=True,
            progress=(3, 3),
            model_id="tw-lora-9b2f",
        ),
        Api.V6,
    ),
    Case(
        "v6-cancelled",
        V6_DOCS + ": training_cancelled, the reason in data.response_dump",
        200,
        js(
            status="success",
            message="training_cancelled",
            data={
                "id": RUN,
                "status": "training_cancelled",
                "response_dump": "  Not enough images: at least 5 are needed  ",
            },
        ),
        Seen(
            TrainingState.TRAINING_CANCELLED,
            terminal=True,
            reason="Not enough images: at least 5 are needed",
        ),
        Api.V6,
    ),
    Case(
        "v6-unknown-id",
        DOCS_CODES,
        404,
        js(status="error", message="Training ID does not exist"),
        Refused(TrainingNotFound, f"{API} does not know this training id"),
        Api.V6,
    ),
)


def check(status: TrainingStatus, seen: Seen) -> None:
    assert status.state is seen.state
    if seen.raw_state is not None:
        assert status.raw_state == seen.raw_state
    assert status.terminal is seen.terminal
    if seen.steps is not None:
        assert tuple((s.number, s.label) for s in status.steps) == seen.steps
    if seen.progress is not None:
        assert (status.steps_done, status.total_steps) == seen.progress
    if seen.eta_minutes is not None:
        assert status.eta_minutes == seen.eta_minutes
    if seen.eta_seconds is not None:
        assert status.eta_seconds == seen.eta_seconds
    if seen.elapsed is not None:
        assert status.elapsed_seconds == seen.elapsed
    assert status.failure_reason == seen.reason
    assert status.failure_stage == seen.stage
    if seen.model_id is not None:
        assert status.model is not None
        assert status.model.model_id == seen.model_id
        assert KEY not in status.model.to_json()
    for step in status.steps:
        assert "|" not in step.label
        assert "Elapsed" not in step.label


@pytest.mark.parametrize("case", CORPUS, ids=[case.name for case in CORPUS])
def test_corpus(case: Case) -> None:
    assert case.source
    if isinstance(case.expected, Refused):
        with pytest.raises(case.expected.error) as info:
            parse_status(case.http_status, case.body, case.api)
        assert type(info.value) is case.expected.error
        assert info.value.reason == case.expected.reason
        return
    status = parse_status(case.http_status, case.body, case.api)
    assert status.api is case.api
    check(status, case.expected)


def test_corpus_names_are_unique_and_every_source_is_used() -> None:
    assert len({case.name for case in CORPUS}) == len(CORPUS)
    sources = " ".join(case.source for case in CORPUS)
    for source in (
        DOCS_LEGACY,
        DOCS_OPENAPI,
        DOCS_CREATE,
        DOCS_ERRORS,
        DOCS_CODES,
        TRAINER,
        TEST_LOGS,
        PLAYGROUND,
        V6_DOCS,
    ):
        assert source in sources


def test_the_simulator_speaks_the_corpus() -> None:
    """The simulator's documented and trainer timelines give the corpus's own bodies."""
    from bot.sdapi.timelines import SimTraining

    documented = SimTraining("A", dialect="slash_n", stage=7).body()
    assert json.dumps(documented).encode() == CORPUS[0].body
    dreambooth = SimTraining("B", dialect="slash_n", stage=5, timeline="dreambooth").body()
    assert dreambooth["data"] == slash_n(TRAINER_LINES)
    lora = SimTraining("C", dialect="slash_n", stage=4, timeline="lora").body()
    assert lora["data"] == slash_n(LORA_LINES)
