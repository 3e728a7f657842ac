"""The status parser against every body documented in reference/sdapi.md, and arbitrary input."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.sdapi.errors import (
    ApiUnavailable,
    InvalidApiKey,
    RateLimited,
    SdApiError,
    TrainingNotFound,
    UnexpectedResponse,
)
from bot.sdapi.status import (
    Step,
    TrainingState,
    TrainingStatus,
    parse_status,
    parse_webhook,
)

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
    Step(
        0, 1, "Training Started", 5, 30, "Step:1 Training Started, 5 Steps to go : ETA : 30 minutes"
    ),
    Step(1, 2, "Training Done", 4, 15, "Step:2 Training Done, 4 Steps to go : ETA : 15 minutes"),
    Step(
        2, 3, "Model Uploading", 3, 10, "Step:3 Model Uploading, 3 Steps to go : ETA : 10 minutes"
    ),
    Step(3, 4, "Model Uploaded", 2, 5, "Step:4 Model Uploaded, 2 Steps to go : ETA : 5 minutes"),
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
            body(status="processing", message="Waiting in queue", data=""),
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
                    Step(
                        0,
                        1,
                        "Training Started",
                        5,
                        30,
                        "Step:1 Training Started, 5 Steps to go : ETA : 30 minutes | node gpu-7",
                    ),
                    Step(
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
                    Step(
                        0,
                        1,
                        "Training Started",
                        5,
                        30,
                        "Step:1 Training Started, 5 Steps to go : ETA : 30 minutes",
                    ),
                    Step(
                        1,
                        2,
                        "Training Done",
                        4,
                        15,
                        "Step:2 Training Done, 4 Steps to go : ETA : 15 minutes",
                    ),
                    Step(
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
                    Step(
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
    assert status.steps == (Step(0, number, label, to_go, eta, line.strip()),)


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
        (body(status="success", messege="training_completed"), True, False, None),
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


@pytest.mark.parametrize(
    ("http_status", "raw", "error", "user_message"),
    [
        (
            200,
            INVALID_KEY,
            InvalidApiKey,
            "The Stable Diffusion API rejected the API key: Invalid Api Key.",
        ),
        (
            401,
            body(status="error", message="Invalid API key"),
            InvalidApiKey,
            "The Stable Diffusion API rejected the API key: Invalid API key.",
        ),
        (
            401,
            b"{}",
            InvalidApiKey,
            "The Stable Diffusion API rejected the API key: Invalid API key.",
        ),
        (
            200,
            TRY_AGAIN,
            ApiUnavailable,
            "The Stable Diffusion API failed to answer (Failed, Try Again); "
            "tunewatch will ask again.",
        ),
        (
            200,
            FIELD_ERRORS,
            UnexpectedResponse,
            "The Stable Diffusion API refused the request: prompt: The prompt field is required.",
        ),
        (
            200,
            body(status="error", message={"a": ["x", "y"], "b": ["z"]}),
            UnexpectedResponse,
            "The Stable Diffusion API refused the request: a: x; y; b: z.",
        ),
        (
            400,
            body(status="error", message="Bad request"),
            UnexpectedResponse,
            "The Stable Diffusion API refused the request: Bad request.",
        ),
        (
            402,
            body(status="error", message="insufficient credits"),
            UnexpectedResponse,
            "The Stable Diffusion API refused the request: insufficient credits.",
        ),
        (
            403,
            body(status="error", message="Forbidden."),
            UnexpectedResponse,
            "The Stable Diffusion API refused the request: Forbidden.",
        ),
        (
            403,
            b"{}",
            UnexpectedResponse,
            "The Stable Diffusion API refused the request (HTTP 403).",
        ),
        (
            404,
            body(status="error", message="Training ID does not exist"),
            TrainingNotFound,
            "The Stable Diffusion API does not know this training id.",
        ),
        (
            200,
            body(status="error", message="Training ID does not exist"),
            TrainingNotFound,
            "The Stable Diffusion API does not know this training id.",
        ),
        (
            200,
            body(status="error", messege="Invalid training id"),
            TrainingNotFound,
            "The Stable Diffusion API does not know this training id.",
        ),
        (
            200,
            body(status="success", messege="No training found with this id"),
            TrainingNotFound,
            "The Stable Diffusion API does not know this training id.",
        ),
        (
            500,
            body(status="error", message="Internal Server Error"),
            ApiUnavailable,
            "The Stable Diffusion API is having trouble (HTTP 500).",
        ),
        (
            503,
            body(status="error", message="Service Unavailable"),
            ApiUnavailable,
            "The Stable Diffusion API is having trouble (HTTP 503).",
        ),
        (502, HTML_502, ApiUnavailable, "The Stable Diffusion API is having trouble (HTTP 502)."),
        (504, b"", ApiUnavailable, "The Stable Diffusion API is having trouble (HTTP 504)."),
        (
            200,
            b"",
            UnexpectedResponse,
            "The Stable Diffusion API sent a response tunewatch could not read.",
        ),
        (
            200,
            b"not json{",
            UnexpectedResponse,
            "The Stable Diffusion API sent a response tunewatch could not read.",
        ),
        (
            200,
            b"\xff\xfe\x00garbage",
            UnexpectedResponse,
            "The Stable Diffusion API sent a response tunewatch could not read.",
        ),
        (
            200,
            b'[{"status": "success", "messege": "model_ready"}]',
            UnexpectedResponse,
            "The Stable Diffusion API sent a response tunewatch could not read.",
        ),
        (
            200,
            HTML_502,
            UnexpectedResponse,
            "The Stable Diffusion API sent a response tunewatch could not read.",
        ),
        (
            404,
            HTML_502,
            UnexpectedResponse,
            "The Stable Diffusion API sent a response tunewatch could not read.",
        ),
        (
            200,
            body(status="success", data="Step:1 a"),
            UnexpectedResponse,
            "The Stable Diffusion API sent a response tunewatch could not read.",
        ),
        (
            200,
            body(status="error"),
            UnexpectedResponse,
            "The Stable Diffusion API sent a response tunewatch could not read.",
        ),
        (
            302,
            body(status="success", messege="model_ready"),
            UnexpectedResponse,
            "The Stable Diffusion API sent a response tunewatch could not read.",
        ),
    ],
)
def test_errors(http_status: int, raw: bytes, error: type[SdApiError], user_message: str) -> None:
    with pytest.raises(error) as info:
        parse_status(http_status, raw)
    assert type(info.value) is error
    assert info.value.user_message == user_message
    assert f"HTTP {http_status}" in info.value.detail


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


def test_long_api_message_is_bounded_for_users() -> None:
    with pytest.raises(UnexpectedResponse) as info:
        parse_status(400, body(status="error", message="no " * 500))
    assert len(info.value.user_message) < 300


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


def check_result(http_status: int, raw: bytes) -> None:
    try:
        status = parse_status(http_status, raw)
    except SdApiError:
        return
    seqs = [step.seq for step in status.steps]
    assert seqs == sorted(set(seqs))
    raws = {step.seq: step.raw for step in status.steps}
    unparsed = iter(status.unparsed)
    for seq, line in enumerate(status.log_lines):
        assert line == (raws[seq] if seq in raws else next(unparsed))
    assert next(unparsed, None) is None
    assert status.steps_done >= 0


@settings(max_examples=300, deadline=None)
@given(http_statuses, st.binary(max_size=300))
def test_arbitrary_bytes_never_escape(http_status: int, raw: bytes) -> None:
    check_result(http_status, raw)


@settings(max_examples=300, deadline=None)
@given(http_statuses | st.just(200), json_values | api_like)
def test_arbitrary_json_never_escapes(http_status: int, value: Any) -> None:
    check_result(http_status, json.dumps(value).encode())


@settings(max_examples=300, deadline=None)
@given(api_like)
def test_arbitrary_api_bodies_with_200(value: dict[str, Any]) -> None:
    check_result(200, json.dumps(value).encode())
