"""The status parser's mechanics: step lines in both wordings, states, errors as typed data, v6,
the secrets it must never show, and arbitrary input (hypothesis). The corpus of real bodies with
their sources is tests/unit/test_corpus.py."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.events import step
from bot.sdapi.errors import (
    ApiUnavailable,
    InvalidApiKey,
    NoCredits,
    RateLimited,
    SdApiError,
    TrainingNotFound,
    UnexpectedResponse,
)
from bot.sdapi.status import (
    Api,
    ModelInfo,
    TrainingState,
    TrainingStatus,
    api_for,
    parse_status,
    parse_step_line,
    parse_webhook,
)
from bot.sdapi.timelines import DREAMBOOTH
from bot.sdapi.v6 import COMPLETED_STEP, STARTED_STEP

# -- documented bodies, verbatim ---------------------------------------------------------------

LEGACY_READY = b"""{
  "status": "success",
  "messege": "model_ready",
  "data": " /n Step:1 Training Started, 5 Steps to go : ETA : 30 minutes /n Step:2 Training Done, 4 Steps to go : ETA : 15 minutes /n Step:3 Model Uploading, 3 Steps to go : ETA : 10 minutes /n  /n Step:4 Model Uploaded, 2 Steps to go : ETA : 5 minutes /n Model loaded successfully"
}"""  # noqa: E501 -- verbatim from the docs

MODELSLAB_READY = b"""{
  "status": "success",
  "messege": "model_ready",
  "data": "Step:1 Training Started, 5 Steps to go : ETA : 30 minutes\\nStep:2 Training Done, 4 Steps to go : ETA : 15 minutes\\nStep:3 Model Uploading, 3 Steps to go : ETA : 10 minutes\\nStep:4 Model Uploaded, 2 Steps to go : ETA : 5 minutes\\nModel loaded successfully"
}"""  # noqa: E501 -- verbatim from the docs

CREATION = (
    b'{"status": "success", "messege": "deploying_gpu", "data": "it will take upto 25 minutes.", '
    b'"training_id": "F5jvdzGnYi"}'
)
INVALID_KEY = (
    b'{"status": "error", "message": "Invalid Api Key", "tip": "1. Make sure you are passing '
    b'Content-Type: application/json in header. ..."}'
)
RATE_LIMIT = (
    b'{"status": "error", "message": "Rate limit exceeded", "tips": "you are sending same request '
    b'multiple times, spam filter is enabled, please wait for 30 seconds and try again"}'
)
RATE_LIMIT_MESSEGE = RATE_LIMIT.replace(b'"message"', b'"messege"')
TRY_AGAIN = b'{"status": "failed", "id": "", "message": "Failed, Try Again", "output": ""}'
FIELD_ERRORS = b'{"status": "error", "message": {"prompt": ["The prompt field is required."]}}'

READY_STEPS = (
    step(
        0, 1, "Training Started", 5, 30, "Step:1 Training Started, 5 Steps to go : ETA : 30 minutes"
    ),
    step(1, 2, "Training Done", 4, 15, "Step:2 Training Done, 4 Steps to go : ETA : 15 minutes"),
    step(
        2, 3, "Model Uploading", 3, 10, "Step:3 Model Uploading, 3 Steps to go : ETA : 10 minutes"
    ),
    step(3, 4, "Model Uploaded", 2, 5, "Step:4 Model Uploaded, 2 Steps to go : ETA : 5 minutes"),
)
READY = TrainingStatus(
    state=TrainingState.MODEL_READY,
    raw_state="model_ready",
    finished=True,
    failed=False,
    steps=READY_STEPS,
    eta_minutes=None,
    unparsed=("Model loaded successfully",),
    log_lines=(*(s.raw for s in READY_STEPS), "Model loaded successfully"),
)


def body(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


def running(data: str, state: str = "training_started") -> bytes:
    return body(status="success", messege=state, data=data)


# -- successes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(LEGACY_READY, READY, id="legacy-slash-n"),
        pytest.param(MODELSLAB_READY, READY, id="modelslab-newline"),
        pytest.param(
            CREATION,
            TrainingStatus(
                state=TrainingState.DEPLOYING_GPU,
                raw_state="deploying_gpu",
                finished=False,
                failed=False,
                steps=(),
                eta_minutes=None,
                unparsed=("it will take upto 25 minutes.",),
                log_lines=("it will take upto 25 minutes.",),
            ),
            id="creation-deploying-gpu",
        ),
        pytest.param(
            body(status="success", message="Waiting in queue", data=""),
            TrainingStatus(
                state=None,
                raw_state="Waiting in queue",
                finished=False,
                failed=False,
                steps=(),
                eta_minutes=None,
                unparsed=(),
                log_lines=(),
            ),
            id="free-text-state-kept-raw",
        ),
        pytest.param(
            body(status="success", messege="Queued_On_Cluster", data=""),
            TrainingStatus(
                state=None,
                raw_state="Queued_On_Cluster",
                finished=False,
                failed=False,
                steps=(),
                eta_minutes=None,
                unparsed=(),
                log_lines=(),
            ),
            id="unknown-state-kept-raw",
        ),
        pytest.param(
            running(
                "Step:1 Training Started, 5 Steps to go : ETA : 30 minutes | node gpu-7\n"
                "Step:2 Training Done, 4 Steps to go : ETA : 15 minutes | retry 1 | ok",
                "training_success",
            ),
            TrainingStatus(
                state=TrainingState.TRAINING_SUCCESS,
                raw_state="training_success",
                finished=False,
                failed=False,
                steps=(
                    step(
                        0,
                        1,
                        "Training Started",
                        5,
                        30,
                        "Step:1 Training Started, 5 Steps to go : ETA : 30 minutes | node gpu-7",
                    ),
                    step(
                        1,
                        2,
                        "Training Done",
                        4,
                        15,
                        "Step:2 Training Done, 4 Steps to go : ETA : 15 minutes | retry 1 | ok",
                    ),
                ),
                eta_minutes=15,
                unparsed=(),
                log_lines=(
                    "Step:1 Training Started, 5 Steps to go : ETA : 30 minutes | node gpu-7",
                    "Step:2 Training Done, 4 Steps to go : ETA : 15 minutes | retry 1 | ok",
                ),
            ),
            id="pipe-extra-segments",
        ),
        pytest.param(
            running(
                "Step:1 Training Started, 5 Steps to go : ETA : 30 minutes\n"
                "Step:2 Training Done, 4 Steps to go : ETA : 15 minutes\n"
                "Step:2 Training Done, 4 Steps to go : ETA : 14 minutes",
                "training_success",
            ),
            TrainingStatus(
                state=TrainingState.TRAINING_SUCCESS,
                raw_state="training_success",
                finished=False,
                failed=False,
                steps=(
                    step(
                        0,
                        1,
                        "Training Started",
                        5,
                        30,
                        "Step:1 Training Started, 5 Steps to go : ETA : 30 minutes",
                    ),
                    step(
                        1,
                        2,
                        "Training Done",
                        4,
                        15,
                        "Step:2 Training Done, 4 Steps to go : ETA : 15 minutes",
                    ),
                    step(
                        2,
                        2,
                        "Training Done",
                        4,
                        14,
                        "Step:2 Training Done, 4 Steps to go : ETA : 14 minutes",
                    ),
                ),
                eta_minutes=14,
                unparsed=(),
                log_lines=(
                    "Step:1 Training Started, 5 Steps to go : ETA : 30 minutes",
                    "Step:2 Training Done, 4 Steps to go : ETA : 15 minutes",
                    "Step:2 Training Done, 4 Steps to go : ETA : 14 minutes",
                ),
            ),
            id="repeated-step-number",
        ),
        pytest.param(
            body(
                status="success",
                messege="training_failed",
                message="CUDA out of memory",
                data="Step:1 Training Started, 5 Steps to go : ETA : 30 minutes\n"
                "Training failed: CUDA out of memory",
            ),
            TrainingStatus(
                state=TrainingState.TRAINING_FAILED,
                raw_state="training_failed",
                finished=False,
                failed=True,
                steps=(
                    step(
                        0,
                        1,
                        "Training Started",
                        5,
                        30,
                        "Step:1 Training Started, 5 Steps to go : ETA : 30 minutes",
                    ),
                ),
                eta_minutes=None,
                unparsed=("Training failed: CUDA out of memory",),
                log_lines=(
                    "Step:1 Training Started, 5 Steps to go : ETA : 30 minutes",
                    "Training failed: CUDA out of memory",
                ),
                failure_reason="CUDA out of memory",
            ),
            id="training-failed-with-reason",
        ),
    ],
)
def test_documented_and_observed_successes(raw: bytes, expected: TrainingStatus) -> None:
    assert parse_status(200, raw) == expected


def test_ready_step_counts() -> None:
    status = parse_status(200, LEGACY_READY)
    assert status.terminal
    assert status.total_steps == 6  # "Step:4 ..., 2 Steps to go"
    assert status.steps_done == 6  # finished: all of them


def test_repeated_step_numbers_count_once() -> None:
    status = parse_status(
        200,
        running(
            "Step:1 a, 5 Steps to go\nStep:2 b, 4 Steps to go\nStep:2 b, 4 Steps to go",
            "training_success",
        ),
    )
    assert (status.total_steps, status.steps_done) == (6, 2)


@pytest.mark.parametrize(
    ("line", "number", "label", "to_go", "eta"),
    [
        ("Step:3 Model Uploading, 3 Steps to go : ETA : 10 minutes", 3, "Model Uploading", 3, 10),
        ("step 7 Warming up the sampler", 7, "Warming up the sampler", None, None),
        (
            "  STEP: 2 Training Done (epoch 4/10), 4 Steps to go",
            2,
            "Training Done (epoch 4/10)",
            4,
            None,
        ),
        ("Step:4 Model Uploaded, 1 Step to go : ETA : 1 hour", 4, "Model Uploaded", 1, 60),
        ("Step:5 Deploying, 1 Steps to go : ETA: 1.5 hours", 5, "Deploying", 1, 90),
        ("Step:6 Deploying Model, 0 Steps to go : ETA : 90 seconds", 6, "Deploying Model", 0, 2),
        ("Step:2 Training Done : ETA : 15 mins", 2, "Training Done", None, 15),
        ("Step:2 Training Done, ETA 12m | gpu=a100", 2, "Training Done", None, 12),
        ("Step:3 Uploading | shard 2 of 9", 3, "Uploading", None, None),
        ("Step 1: Training Started 5 Steps to go", 1, "Training Started", 5, None),
        ("Step:9", 9, "", None, None),
    ],
)
def test_step_line_shapes(
    line: str, number: int, label: str, to_go: int | None, eta: int | None
) -> None:
    status = parse_status(200, running(line))
    assert status.unparsed == ()
    assert status.steps == (step(0, number, label, to_go, eta, line.strip()),)


@pytest.mark.parametrize(
    "line",
    [
        "Model loaded successfully",
        "Steps are being prepared",
        "Step:: no number",
        "Stepping up: 3",
        "Step:" + "9" * 40 + " huge number",
        "🙂 Step:1 not at the start",
        "ETA : 30 minutes",
    ],
)
def test_unknown_line_shapes_are_kept_verbatim(line: str) -> None:
    status = parse_status(200, running(f"Step:1 Training Started\n  {line}  \n"))
    assert status.unparsed == (line,)
    assert [s.seq for s in status.steps] == [0]
    assert status.log_lines == ("Step:1 Training Started", line)


def test_slash_n_inside_a_word_is_not_a_separator() -> None:
    status = parse_status(200, running(" /n Step:1 cached at /nfs/models/x /n done"))
    assert status.log_lines == ("Step:1 cached at /nfs/models/x", "done")


@pytest.mark.parametrize(
    ("raw", "finished", "failed", "reason"),
    [
        (body(status="success", messege="training_cancelled"), False, True, None),
        (
            body(status="success", message="cancelled", reason="user request"),
            False,
            True,
            "user request",
        ),
        (body(status="success", messege="failed", error="disk full"), False, True, "disk full"),
        (
            body(
                status="success",
                messege="training_failed",
                data="Step:1 x\nOOM error on gpu 0\nbye",
            ),
            False,
            True,
            "OOM error on gpu 0",
        ),
        (body(status="success", messege="training_failed"), False, True, None),
        (
            body(status="failed", messege="training_failed", message="NaN loss"),
            False,
            True,
            "NaN loss",
        ),
    ],
)
def test_terminal_states(raw: bytes, finished: bool, failed: bool, reason: str | None) -> None:
    status = parse_status(200, raw)
    assert (status.finished, status.failed, status.failure_reason) == (finished, failed, reason)
    assert status.terminal
    assert status.eta_minutes is None


@pytest.mark.parametrize(
    "raw",
    [
        body(messege="training_started", data="Step:1 a"),
        body(message="training_started", data="Step:1 a"),
        body(status="success", messege="TRAINING_STARTED ", logs="Step:1 a"),
        body(status="success", messege="training_started", data=["Step:1 a"]),
    ],
)
def test_alternative_body_shapes(raw: bytes) -> None:
    status = parse_status(200, raw)
    assert status.state is TrainingState.TRAINING_STARTED
    assert [s.number for s in status.steps] == [1]


def test_non_string_log_is_no_log() -> None:
    status = parse_status(200, body(status="success", messege="training_started", data={"a": 1}))
    assert status.log_lines == ()


# -- errors ------------------------------------------------------------------------------------

HTML_502 = b"<html><head><title>502 Bad Gateway</title></head><body><h1>502</h1></body></html>"


API = "the Stable Diffusion API"
UNREADABLE = f"{API} sent an answer tunewatch could not read"


@pytest.mark.parametrize(
    ("http_status", "raw", "error", "reason", "api_message"),
    [
        (
            200,
            INVALID_KEY,
            InvalidApiKey,
            f"{API} rejected the API key (Invalid Api Key)",
            "Invalid Api Key",
        ),
        (
            401,
            body(status="error", message="Invalid API key"),
            InvalidApiKey,
            f"{API} rejected the API key (Invalid API key)",
            "Invalid API key",
        ),
        (401, b"{}", InvalidApiKey, f"{API} rejected the API key", None),
        (401, b"Unauthorized", InvalidApiKey, f"{API} rejected the API key", None),
        (
            200,
            TRY_AGAIN,
            ApiUnavailable,
            f"{API} failed to answer (Failed, Try Again)",
            "Failed, Try Again",
        ),
        (
            200,
            body(status="error", messege=""),
            ApiUnavailable,
            f"{API} answered with an error and no message",
            "",
        ),
        (
            200,
            body(status="failed"),
            ApiUnavailable,
            f"{API} answered with an error and no message",
            "",
        ),
        (
            200,
            body(status="error"),
            ApiUnavailable,
            f"{API} answered with an error and no message",
            "",
        ),
        (
            200,
            FIELD_ERRORS,
            UnexpectedResponse,
            f"{API} refused the request (prompt: The prompt field is required)",
            "prompt: The prompt field is required",
        ),
        (
            200,
            body(status="error", message={"a": ["x", "y"], "b": ["z"]}),
            UnexpectedResponse,
            f"{API} refused the request (a: x; y; b: z)",
            "a: x; y; b: z",
        ),
        (
            400,
            body(status="error", message="Bad request"),
            UnexpectedResponse,
            f"{API} refused the request (Bad request)",
            "Bad request",
        ),
        (
            402,
            body(status="error", message="Insufficient credits..."),
            NoCredits,
            "the API key has no credits left",
            "Insufficient credits",
        ),
        (402, b"", NoCredits, "the API key has no credits left", None),
        (
            200,
            body(status="error", message="You have insufficient credits"),
            NoCredits,
            "the API key has no credits left",
            "You have insufficient credits",
        ),
        (
            403,
            body(status="error", message="Forbidden."),
            UnexpectedResponse,
            f"{API} refused the request (Forbidden)",
            "Forbidden",
        ),
        (403, b"{}", UnexpectedResponse, f"{API} refused the request (HTTP 403)", None),
        (
            404,
            body(status="error", message="Training ID does not exist"),
            TrainingNotFound,
            f"{API} does not know this training id",
            "Training ID does not exist",
        ),
        (
            200,
            body(status="error", message="Training ID does not exist"),
            TrainingNotFound,
            f"{API} does not know this training id",
            "Training ID does not exist",
        ),
        (
            200,
            body(status="error", messege="Model not found"),
            TrainingNotFound,
            f"{API} does not know this training id",
            "Model not found",
        ),
        (
            200,
            body(status="error", messege="Invalid training id"),
            TrainingNotFound,
            f"{API} does not know this training id",
            "Invalid training id",
        ),
        (
            200,
            body(status="success", messege="No training found with this id"),
            TrainingNotFound,
            f"{API} does not know this training id",
            "No training found with this id",
        ),
        (
            500,
            body(status="error", message="Internal Server Error"),
            ApiUnavailable,
            f"{API} is having trouble (HTTP 500)",
            None,
        ),
        (
            503,
            body(status="error", message="Service Unavailable"),
            ApiUnavailable,
            f"{API} is having trouble (HTTP 503)",
            None,
        ),
        (502, HTML_502, ApiUnavailable, f"{API} is having trouble (HTTP 502)", None),
        (504, b"", ApiUnavailable, f"{API} is having trouble (HTTP 504)", None),
        (200, b"", UnexpectedResponse, UNREADABLE, None),
        (200, b"not json{", UnexpectedResponse, UNREADABLE, None),
        (200, b"\xff\xfe\x00garbage", UnexpectedResponse, UNREADABLE, None),
        (
            200,
            b'[{"status": "success", "messege": "model_ready"}]',
            UnexpectedResponse,
            UNREADABLE,
            None,
        ),
        (200, HTML_502, UnexpectedResponse, UNREADABLE, None),
        (404, HTML_502, UnexpectedResponse, UNREADABLE, None),
        (200, body(status="success", data="Step:1 a"), UnexpectedResponse, UNREADABLE, None),
        (302, body(status="success", messege="model_ready"), UnexpectedResponse, UNREADABLE, None),
    ],
)
def test_errors(
    http_status: int,
    raw: bytes,
    error: type[SdApiError],
    reason: str,
    api_message: str | None,
) -> None:
    with pytest.raises(error) as info:
        parse_status(http_status, raw)
    exc = info.value
    assert type(exc) is error
    assert exc.reason == reason
    assert exc.api_message == api_message
    assert exc.http_status == http_status
    assert f"HTTP {http_status}" in exc.detail
    # Data, not Discord sentences: no markup, no command names, no final dot.
    assert not any(mark in exc.reason for mark in ("<t:", "`", "/training", "**"))
    assert not exc.reason.endswith(".")


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (ApiUnavailable, True),
        (RateLimited, True),
        (InvalidApiKey, False),
        (TrainingNotFound, False),
        (NoCredits, False),
        (UnexpectedResponse, False),
    ],
)
def test_which_errors_are_transient(error: type[SdApiError], transient: bool) -> None:
    assert error.transient is transient


@pytest.mark.parametrize(
    ("http_status", "raw", "retry_after"),
    [
        (200, RATE_LIMIT, 30.0),
        (200, RATE_LIMIT_MESSEGE, 30.0),
        (429, body(status="error", message="Rate limit exceeded", retry_after=30), 30.0),
        (429, body(status="error", message="Too many requests", retry_after="12.5"), 12.5),
        (429, body(status="error", message="slow down", retry_after=-5), 0.0),
        (429, body(status="error", message="slow down", retry_after=1e300), 86_400.0),
        (429, body(status="error", message="slow down", retry_after="soon"), 30.0),
        (429, body(status="error", message="Rate limit exceeded, wait for 7 seconds"), 7.0),
        (429, b"<html>Too Many Requests</html>", 30.0),
        (429, b"", 30.0),
        (
            200,
            body(status="error", messege="rate limited", tips="please wait for 2 minutes"),
            120.0,
        ),
        (200, body(status="error", tips="Rate limit: please wait for 45 seconds"), 45.0),
        (
            200,
            b'{"status": "error", "message": "Rate limit exceeded", "retry_after": Infinity}',
            30.0,
        ),
    ],
)
def test_rate_limits(http_status: int, raw: bytes, retry_after: float) -> None:
    with pytest.raises(RateLimited) as info:
        parse_status(http_status, raw)
    assert info.value.retry_after == retry_after


def test_error_detail_snippet_is_short_and_printable() -> None:
    raw = b"<html>\n\x00" + b"x" * 5000 + b"</html>"
    with pytest.raises(UnexpectedResponse) as info:
        parse_status(418, raw)
    detail = info.value.detail
    assert "HTTP 418" in detail
    assert len(detail) < 300
    assert "\n" not in detail
    assert "\x00" not in detail


def test_long_api_message_is_bounded() -> None:
    with pytest.raises(UnexpectedResponse) as info:
        parse_status(400, body(status="error", message="no " * 500))
    assert len(info.value.reason) < 300
    assert info.value.api_message is not None
    assert len(info.value.api_message) <= 200


# -- the trainer's own wording ------------------------------------------------------------------

# The trainer's own wording (the simulator's Dreambooth run, which the corpus test holds to it).
DREAMBOOTH_LINES = [stage.line for stage in DREAMBOOTH.stages if stage.line is not None]


@pytest.mark.parametrize(
    ("line", "number", "label", "to_go", "eta", "elapsed"),
    [
        (DREAMBOOTH_LINES[0], 1, "Training Started", 5, 60, 41.27361178398132),
        (DREAMBOOTH_LINES[3], 3, "Model Uploading", 2, 20, 1237.9148209095001),
        (DREAMBOOTH_LINES[4], 4, "Model Uploaded", 1, 10, 1502.6389410495758),
        ("Step:2 Done | Time Elapsed : 12 seconds", 2, "Done", None, None, 12.0),
        ("Step:2 Done Time Elapsed: 3.5 minutes", 2, "Done", None, None, 210.0),
        ("Step:5 x, 1 more step to go | time elapsed : 7", 5, "x", 1, None, 7.0),
        (
            "Step:1 Training Started, 5 More Steps to go : ETA : 60 minutes | Time Elapsed : "
            "41." + "1" * 80 + " seconds",
            1,
            "Training Started",
            5,
            60,
            float("41." + "1" * 80),
        ),
    ],
)
def test_trainer_step_lines(
    line: str, number: int, label: str, to_go: int | None, eta: int | None, elapsed: float
) -> None:
    parsed = parse_step_line(line)
    assert parsed == step(0, number, label, to_go, eta, line, elapsed)
    assert parsed is not None
    assert parsed.label is not None
    assert "|" not in parsed.label
    assert "Elapsed" not in parsed.label


@pytest.mark.parametrize("separator", [" /n ", "\n", " /n  /n "])
def test_dreambooth_in_the_trainers_wording_counts_sensibly(separator: str) -> None:
    """Totals drift 6, 6, 6, 5, 5 and Step:3 comes twice: the latest line's total and number
    keep done/total from ever going back."""
    seen = []
    for n in range(1, len(DREAMBOOTH_LINES) + 1):
        status = parse_status(200, running(separator.join(DREAMBOOTH_LINES[:n])))
        assert [s.seq for s in status.steps] == list(range(n))
        seen.append((status.steps_done, status.total_steps, status.eta_minutes))
        assert status.elapsed_seconds == status.steps[-1].elapsed_seconds
    assert seen == [(1, 6, 60), (2, 6, 15), (3, 6, 25), (3, 5, 20), (4, 5, 10)]
    fractions = [done / total for done, total, _ in seen]
    assert fractions == sorted(fractions)
    ready = parse_status(200, running(separator.join(DREAMBOOTH_LINES), "model_ready"))
    assert (ready.steps_done, ready.total_steps, ready.eta_minutes) == (5, 5, None)


def test_the_latest_stated_total_counts_when_the_last_line_states_none() -> None:
    status = parse_status(200, running("Step:1 a, 5 Steps to go\nStep:2 b"))
    assert (status.steps_done, status.total_steps) == (2, 6)


@pytest.mark.parametrize(
    ("fields", "reason", "stage", "elapsed"),
    [
        pytest.param(
            {
                "data": f"{DREAMBOOTH_LINES[0]} /n 1. [Training model] | Time Elapsed : 812.44 | "
                "CUDA out of memory. Tried to allocate 20.00 MiB"
            },
            "CUDA out of memory. Tried to allocate 20.00 MiB",
            "Training model",
            812.44,
            id="trainer-line",
        ),
        pytest.param(
            {"data": "1. [Training model] | Time Elapsed : 812.44 |", "message": "OOM"},
            "OOM",
            "Training model",
            812.44,
            id="stage-in-log-reason-in-message",
        ),
        pytest.param(
            {"data": "2) [Uploading]"}, None, "Uploading", None, id="trainer-line-no-reason"
        ),
        pytest.param(
            {"data": "1. [Training model] | Time Elapsed : 5 | a | b", "message": "other"},
            "a | b",
            "Training model",
            5.0,
            id="trainer-line-beats-message",
        ),
        pytest.param({"data": ""}, None, None, None, id="no-reason-anywhere"),
        pytest.param(
            {"data": "Training failed: x", "message": "training_failed"},
            "Training failed: x",
            None,
            None,
            id="a-failure-word-in-the-log",
        ),
    ],
)
def test_failure_reason_and_stage(
    fields: dict[str, str], reason: str | None, stage: str | None, elapsed: float | None
) -> None:
    status = parse_status(200, body(status="success", messege="training_failed", **fields))
    assert status.failed
    assert (status.failure_reason, status.failure_stage) == (reason, stage)
    assert status.elapsed_seconds == (elapsed or status.elapsed_seconds)
    if reason and stage:
        assert status.failure_text == f"{reason} (during {stage})"


def test_a_nul_or_a_lone_surrogate_in_any_text_becomes_a_replacement_character() -> None:
    # PostgreSQL's text refuses NUL, and no UTF-8 encoder takes a lone surrogate: neither may
    # reach the store.
    raw = json.dumps(
        {
            "status": "success",
            "messege": "training_started",
            "data": "Step:1 Training\u0000 Started, 5 More Steps to go : ETA : 30 minutes",
        }
    ).encode()
    assert b"\\u0000" in raw
    status = parse_status(200, raw)
    assert status.steps[0].label == "Training\ufffd Started"
    failed = parse_status(
        200, body(status="success", messege="training_failed", message="CUDA\u0000 out")
    )
    assert failed.failure_reason is not None
    assert "\x00" not in failed.failure_reason
    lone = b'{"status": "error", "messege": "bad \\udc00 key"}'
    with pytest.raises(SdApiError) as raised:
        parse_status(200, lone)
    assert "\udc00" not in raised.value.reason
    raised.value.reason.encode()  # UTF-8 takes it


def test_failure_reason_never_shows_a_key() -> None:
    status = parse_status(
        200,
        body(
            status="success",
            messege="training_failed",
            message='request {"key": "sk-abc123", "prompt": "x"} failed, api_key=sk-abc123',
        ),
    )
    assert status.failure_reason is not None
    assert "sk-abc123" not in status.failure_reason


# -- queued ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "eta_seconds", "eta_minutes"),
    [
        (
            body(
                status="processing",
                eta=21.88,
                messege="Try to fetch request after given estimated time",
            ),
            21.88,
            1,
        ),
        (body(status="processing", eta="90"), 90.0, 2),
        (body(status="processing", eta=-1), None, None),
        (body(status="processing", eta=True), None, None),
        (b'{"status": "processing", "eta": Infinity}', None, None),
        (body(status="processing", message="Waiting in queue"), None, None),
        (body(status="success", messege="queued"), None, None),
    ],
)
def test_queued(raw: bytes, eta_seconds: float | None, eta_minutes: int | None) -> None:
    status = parse_status(200, raw)
    assert status.state is TrainingState.QUEUED
    assert not status.terminal
    assert (status.eta_seconds, status.eta_minutes) == (eta_seconds, eta_minutes)


def test_v3_training_completed_is_not_terminal() -> None:
    status = parse_status(200, body(status="success", messege="training_completed"))
    assert status.state is TrainingState.TRAINING_COMPLETED
    assert not status.terminal


# -- v6 ----------------------------------------------------------------------------------------

RUN = "9b2f6c1e-4d3a-4f8e-a1b2-3c4d5e6f7a8b"
KEY = "sk-live-0123456789abcdef"


def v6(message: str, **data: Any) -> bytes:
    return body(status="success", message=message, data={"id": RUN, "status": message, **data})


def test_api_for() -> None:
    assert api_for(RUN) is Api.V6
    assert api_for(f"  {RUN.upper()} ") is Api.V6
    assert api_for("F5jvdzGnYi") is Api.V3
    assert api_for(RUN + "0") is Api.V3
    assert api_for(RUN.replace("-", "")) is Api.V3
    assert api_for("F5jvdzGnYi", Api.V6) is Api.V6
    assert api_for(RUN, Api.V3) is Api.V3


def test_v6_run_posts_started_completed_ready_with_stable_seqs() -> None:
    started = parse_status(200, v6("training_started"), Api.V6)
    completed = parse_status(200, v6("training_completed"), Api.V6)
    preparing = parse_status(200, v6("training_completed", inference={"status": "pending"}), Api.V6)
    ready = parse_status(
        200,
        v6(
            "training_completed",
            inference={"status": "ready", "request": {"lora_model": "my-lora", "prompt": "x"}},
        ),
        Api.V6,
    )
    assert [s.state for s in (started, completed, preparing, ready)] == [
        TrainingState.TRAINING_STARTED,
        TrainingState.TRAINING_COMPLETED,
        TrainingState.TRAINING_COMPLETED,
        TrainingState.MODEL_READY,
    ]
    assert started.steps == (STARTED_STEP,)
    assert completed.steps == preparing.steps == ready.steps == (STARTED_STEP, COMPLETED_STEP)
    assert [s.seq for s in ready.steps] == [0, 1]
    assert [(s.steps_done, s.total_steps) for s in (started, completed, ready)] == [
        (1, 3),
        (2, 3),
        (3, 3),
    ]
    assert not completed.terminal
    assert not preparing.terminal
    assert ready.finished
    assert ready.terminal
    assert preparing.raw_state == "training_completed (inference: pending)"
    assert ready.model == ModelInfo("my-lora", None, (("lora_model", "my-lora"), ("prompt", "x")))
    assert all(s.api is Api.V6 for s in (started, completed, preparing, ready))
    assert started == parse_status(200, v6("training_started"), Api.V6)  # same at every poll


@pytest.mark.parametrize(
    ("dump", "reason"),
    [
        ("  CUDA out of memory  ", "CUDA out of memory"),
        ({"error": "NaN loss", "key": KEY}, "error: NaN loss"),
        ('{"detail": {"msg": "bad images"}, "api_key": "' + KEY + '"}', "detail: msg: bad images"),
        ("x" * 5000, "x" * 499 + "…"),
        (None, None),
    ],
)
def test_v6_cancelled_says_why(dump: Any, reason: str | None) -> None:
    status = parse_status(200, v6("training_cancelled", response_dump=dump), Api.V6)
    assert status.failed
    assert status.terminal
    assert status.state is TrainingState.TRAINING_CANCELLED
    assert status.failure_reason == reason
    assert status.steps == (STARTED_STEP,)


def test_v6_shapes_and_unknown_states() -> None:
    # the message alone, no data
    bare = parse_status(200, body(status="success", message="training_started"), Api.V6)
    assert bare.state is TrainingState.TRAINING_STARTED
    unknown = parse_status(200, v6("gpu_warming"), Api.V6)
    assert (unknown.state, unknown.raw_state, unknown.terminal) == (None, "gpu_warming", False)
    queued = parse_status(200, v6("queued", eta=120), Api.V6)
    assert (queued.state, queued.eta_seconds, queued.steps) == (TrainingState.QUEUED, 120.0, ())
    # A v6-shaped answer on the v3 route is read as v6 but says which API answered.
    forced = parse_status(200, v6("training_started"), Api.V3)
    assert (forced.state, forced.api) == (TrainingState.TRAINING_STARTED, Api.V3)
    with pytest.raises(TrainingNotFound):
        parse_status(404, body(status="error", message="Training ID does not exist"), Api.V6)
    with pytest.raises(UnexpectedResponse):
        parse_status(200, body(status="success", data={"id": RUN}), Api.V6)
    with pytest.raises(ApiUnavailable):
        parse_status(200, body(status="error", message="", data={"id": RUN}), Api.V6)
    # An error status does not make a cancelled run an API error.
    cancelled = parse_status(200, body(status="error", data={"status": "training_cancelled"}))
    assert cancelled.failed


def test_v6_model_info_never_holds_the_key() -> None:
    """The API may echo the key: under its own name, other names, nested, in a URL, in text."""
    raw = v6(
        "training_completed",
        model_id="lora-77",
        inference={
            "status": "ready",
            "endpoint": f"https://modelslab.com/api/v6/images/text2img?key={KEY}",
            "api_key": KEY,
            "request": {
                "key": KEY,
                "apiKey": KEY,
                "hf_token": KEY,
                "prompt": "a photo of tw_subject",
                "extra": {"key": KEY, "nested": [{"token": KEY, "keep": 1}]},
                "curl": f'curl -d \'{{"key": "{KEY}", "prompt": "x"}}\'',
                "lora_strength": 0.8,
                "webhook": None,
                "enhance": False,
            },
        },
    )
    status = parse_status(200, raw, Api.V6)
    assert status.model is not None
    assert KEY not in repr(status.model)
    assert KEY not in status.model.to_json()
    assert status.model.model_id == "lora-77"
    fields = dict(status.model.request)
    assert fields["prompt"] == "a photo of tw_subject"
    assert fields["lora_strength"] == "0.8"
    assert fields["enhance"] == "false"
    assert "webhook" not in fields
    assert {"key", "apiKey", "hf_token"}.isdisjoint(fields)
    assert fields["extra"] == '{"nested":[{"keep":1}]}'
    assert "[redacted]" in fields["curl"]
    assert status.model.endpoint is not None
    assert status.model.endpoint.endswith("key=[redacted]")


def test_v6_model_info_is_bounded() -> None:
    request = {f"field{i}": "v" * 1000 for i in range(100)}
    raw = v6("training_completed", inference={"status": "ready", "request": request})
    model = parse_status(200, raw, Api.V6).model
    assert model is not None
    assert len(model.request) == 20
    assert all(len(value) <= 300 for _, value in model.request)


def test_v6_model_info_from_a_request_as_text_or_flat() -> None:
    text_request = v6(
        "training_completed",
        inference={"status": "ready", "request": json.dumps({"lora_model": "L1", "key": KEY})},
    )
    model = parse_status(200, text_request, Api.V6).model
    assert model == ModelInfo("L1", None, (("lora_model", "L1"),))
    flat = v6("training_completed", inference={"status": "ready", "lora_model": "L2", "steps": 20})
    model = parse_status(200, flat, Api.V6).model
    assert model == ModelInfo("L2", None, (("lora_model", "L2"), ("steps", "20")))


def test_model_info_json_round_trip() -> None:
    model = ModelInfo("m", "https://x", (("prompt", "a"), ("n", "1")))
    assert ModelInfo.from_json(model.to_json()) == model
    assert ModelInfo.from_json(ModelInfo(None).to_json()) == ModelInfo(None)
    for junk in (None, "", "CUDA out of memory", "{", "[]", '{"model_id": 1}', '{"a": 1}'):
        assert ModelInfo.from_json(junk) is None
    bad_pairs = '{"model_id": null, "endpoint": null, "request": [["a"]]}'
    assert ModelInfo.from_json(bad_pairs) is None


# -- webhook -----------------------------------------------------------------------------------

WEBHOOK = (
    b'{"status": "success", "training_status": "deploying_gpu", '
    b'"logs": "it will take upto 25 minutes", "model_id": "F5jvdzGnYi"}'
)


@pytest.mark.parametrize(
    ("raw", "content_type", "expected"),
    [
        (WEBHOOK, "application/json", ("F5jvdzGnYi", "deploying_gpu")),
        (WEBHOOK, "application/json; charset=utf-8", ("F5jvdzGnYi", "deploying_gpu")),
        (WEBHOOK[:-1] + b",\n}", "application/json", ("F5jvdzGnYi", "deploying_gpu")),
        (WEBHOOK, "", ("F5jvdzGnYi", "deploying_gpu")),
        (
            b"status=success&training_status=model_ready&logs=done&model_id=F5jvdzGnYi",
            "application/x-www-form-urlencoded",
            ("F5jvdzGnYi", "model_ready"),
        ),
        (b"model_id=F5jvdzGnYi", "text/plain", ("F5jvdzGnYi", None)),
        (
            b'{"training_id": "abc", "messege": "Model_Ready"}',
            "application/json",
            ("abc", "model_ready"),
        ),
        (b'{"id": 12345}', "application/json", ("12345", None)),
    ],
)
def test_parse_webhook(raw: bytes, content_type: str, expected: tuple[str, str | None]) -> None:
    assert parse_webhook(raw, content_type) == expected


@pytest.mark.parametrize(
    ("raw", "content_type"),
    [
        (b"", "application/json"),
        (b'{"status": "success", "model_id": ""}', "application/json"),
        (b"not json", "application/json"),
        (b"[1, 2]", "application/json"),
        (b"status=success", "application/x-www-form-urlencoded"),
    ],
)
def test_parse_webhook_without_id(raw: bytes, content_type: str) -> None:
    with pytest.raises(UnexpectedResponse):
        parse_webhook(raw, content_type)


# -- properties --------------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
log_text = st.lists(
    st.sampled_from(
        [
            "Step:1 Training Started, 5 Steps to go : ETA : 30 minutes",
            "Step:2 x | y",
            "Step 3",
            "step:99999999999 big",
            " /n ",
            "\n",
            "/n",
            "ETA : 4 hours",
            "Model loaded successfully",
        ]
    )
    | st.text(max_size=20),
    max_size=8,
).map("".join)
api_like = st.fixed_dictionaries(
    {},
    optional={
        "status": st.sampled_from(["success", "error", "failed", "processing"]) | json_values,
        "messege": st.sampled_from([s.value for s in TrainingState]) | json_values,
        "message": st.sampled_from(["Invalid Api Key", "Rate limit exceeded", "x"]) | json_values,
        "data": log_text | json_values,
        "logs": log_text,
        "retry_after": json_values,
        "tips": json_values,
        "error": json_values,
    },
)
http_statuses = st.integers(min_value=100, max_value=599)


v6_states = st.sampled_from(
    ["training_started", "training_completed", "training_cancelled", "queued", "failed"]
)
v6_like = st.fixed_dictionaries(
    {},
    optional={
        "status": st.sampled_from(["success", "error", "failed", "processing"]) | json_values,
        "message": v6_states | json_values,
        "data": st.fixed_dictionaries(
            {},
            optional={
                "id": json_values,
                "status": v6_states | json_values,
                "eta": json_values,
                "response_dump": json_values,
                "model_id": json_values,
                "inference": st.fixed_dictionaries(
                    {},
                    optional={
                        "status": st.sampled_from(["ready", "pending"]) | json_values,
                        "request": json_values,
                        "endpoint": json_values,
                        "model_id": json_values,
                    },
                )
                | json_values,
            },
        )
        | json_values,
    },
)
apis = st.sampled_from(list(Api))


def check_result(http_status: int, raw: bytes, api: Api = Api.V3) -> None:
    try:
        status = parse_status(http_status, raw, api)
    except SdApiError as exc:
        error: SdApiError | None = exc
    else:
        error = None
    if error is not None:
        assert error.reason
        assert isinstance(error.detail, str)
        return
    assert status.api is api
    assert status.steps_done >= 0
    if status.total_steps is not None:
        assert status.steps_done <= status.total_steps
    if status.eta_seconds is not None:
        assert status.eta_seconds >= 0
    if status.model is not None:
        assert ModelInfo.from_json(status.model.to_json()) == status.model
    if not status.log_lines:
        # v6 milestones, or nothing: always a prefix of (started, completed).
        assert status.steps in ((), (STARTED_STEP,), (STARTED_STEP, COMPLETED_STEP))
        return
    seqs = [step.seq for step in status.steps]
    assert seqs == sorted(set(seqs))
    raws = {step.seq: step.raw for step in status.steps}
    unparsed = iter(status.unparsed)
    for seq, line in enumerate(status.log_lines):
        assert line == (raws[seq] if seq in raws else next(unparsed))
    assert next(unparsed, None) is None


@settings(max_examples=300, deadline=None)
@given(http_statuses, st.binary(max_size=300), apis)
def test_arbitrary_bytes_never_escape(http_status: int, raw: bytes, api: Api) -> None:
    check_result(http_status, raw, api)


@settings(max_examples=300, deadline=None)
@given(http_statuses | st.just(200), json_values | api_like | v6_like, apis)
def test_arbitrary_json_never_escapes(http_status: int, value: Any, api: Api) -> None:
    check_result(http_status, json.dumps(value).encode(), api)


@settings(max_examples=300, deadline=None)
@given(api_like, apis)
def test_arbitrary_api_bodies_with_200(value: dict[str, Any], api: Api) -> None:
    check_result(200, json.dumps(value).encode(), api)


@settings(max_examples=300, deadline=None)
@given(v6_like, apis)
def test_arbitrary_v6_bodies_with_200(value: dict[str, Any], api: Api) -> None:
    check_result(200, json.dumps(value).encode(), api)


SECRET = "sk-9f8e7d6c5b4a"
secret_names = st.sampled_from(
    ["key", "api_key", "apiKey", "API_KEY", "token", "hf_token", "secret"]
)


@st.composite
def requests_hiding_the_key(draw: st.DrawFn) -> dict[str, Any]:
    """A generation request with the key under secret names at any depth, or in text."""
    request = draw(st.dictionaries(st.text(max_size=8), json_values, max_size=6))
    target: dict[str, Any] = request
    for _ in range(draw(st.integers(0, 3))):
        child: dict[str, Any] = {}
        target[draw(st.text(min_size=1, max_size=6))] = child
        target = child
    target[draw(secret_names)] = SECRET
    if draw(st.booleans()):
        request[draw(st.text(max_size=6))] = f"key={SECRET}&x=1"
    if draw(st.booleans()):
        request["curl"] = '{"key": "' + SECRET + '"}'
    return request


@settings(max_examples=300, deadline=None)
@given(requests_hiding_the_key(), secret_names)
def test_v6_model_info_never_shows_a_key_under_a_secret_name(
    request: dict[str, Any], name: str
) -> None:
    inference = {"status": "ready", "request": request, name: SECRET}
    raw = json.dumps(
        {"status": "success", "message": "training_completed", "data": {"inference": inference}}
    )
    status = parse_status(200, raw.encode(), Api.V6)
    assert status.model is not None
    assert SECRET not in status.model.to_json()


@settings(max_examples=300, deadline=None)
@given(
    st.integers(0, 10**9 - 1),
    st.text(
        st.characters(blacklist_characters=",|:\n\r", blacklist_categories=("Cs",)), max_size=30
    ),
    st.integers(0, 10**6),
    st.integers(0, 10**6),
    st.floats(0.01, 1e7),
    st.booleans(),
    st.booleans(),
)
def test_trainer_step_line_round_trip(
    number: int, label: str, to_go: int, eta: int, elapsed: float, more: bool, unit: bool
) -> None:
    label = " ".join(label.split())
    assume = label.lower()
    if any(word in assume for word in ("eta", "step", "time elapsed")):
        return
    line = (
        f"Step:{number} {label}, {to_go} {'More ' if more else ''}Steps to go : ETA : {eta} "
        f"minutes | Time Elapsed : {elapsed!r}{' seconds' if unit else ''}"
    )
    step = parse_step_line(line)
    assert step is not None
    assert (step.number, step.steps_to_go, step.eta_minutes) == (number, to_go, eta)
    assert step.label == label.strip(":-.").strip()
    assert step.elapsed_seconds == pytest.approx(elapsed)
