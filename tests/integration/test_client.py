"""The real aiohttp client against the simulator on loopback: both APIs, faults, bounded retries,
bounded bodies, the key check, secrecy."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import time
import tracemalloc
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aiohttp
import pytest
from aiohttp import web

from bot.sdapi.client import MAX_BODY_BYTES, KeyCheck, SdApiClient, validate_training_id
from bot.sdapi.errors import (
    ApiUnavailable,
    InvalidApiKey,
    InvalidTrainingId,
    NoCredits,
    RateLimited,
    ResponseTooLarge,
    TrainingNotFound,
    UnexpectedResponse,
)
from bot.sdapi.simulator import DEFAULT_KEY, HUGE_BODY_BYTES, Fault, Simulator
from bot.sdapi.status import Api, TrainingState

SECRET_KEY = "sk-live-abcdef0123456789-this-is-secret"


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(keys=[DEFAULT_KEY, SECRET_KEY], retry_after=0.05) as simulator:
        yield simulator


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as http:
        yield http


def make_client(session: aiohttp.ClientSession, sim: Simulator, **kw) -> SdApiClient:
    kw.setdefault("backoff_initial", 0.01)
    kw.setdefault("backoff_max", 0.05)
    kw.setdefault("v6_base_url", sim.v6_base_url)
    return SdApiClient(session, sim.base_url, **kw)


async def test_status_of_a_running_training(session, sim) -> None:
    sim.add_training("Client0001", stage=2, key=SECRET_KEY)
    status = await make_client(session, sim).fine_tune_status("Client0001", SECRET_KEY)
    assert status.raw_state == "training_success"
    assert [s.number for s in status.steps] == [1, 2]
    assert sim.request_count("Client0001") == 1


async def test_key_is_sent_in_the_body_and_never_logged(session, sim, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    sim.add_training("Client0002", stage=1, key=SECRET_KEY)
    sim.inject(Fault.SERVER_ERROR, count=2)
    client = make_client(session, sim)
    await client.fine_tune_status("Client0002", SECRET_KEY)
    assert [r.key for r in sim.requests] == [SECRET_KEY] * 3  # the key travels in the JSON body
    assert all(SECRET_KEY not in r.getMessage() for r in caplog.records)
    assert SECRET_KEY not in caplog.text


@pytest.mark.parametrize("root", ["", "/", "/api/v3", "/api/v3/"])
async def test_request_shape_under_any_root(session, sim, root: str) -> None:
    """The status URL keeps the root's path; the body is JSON and says so (the API asks for
    ``Content-Type: application/json``)."""
    sim.add_training("Client0003", stage=2, key=SECRET_KEY)
    client = SdApiClient(session, sim.base_url + root)
    status = await client.attempt("Client0003", SECRET_KEY)
    assert status.steps
    assert [(r.training_id, r.key, r.content_type) for r in sim.requests] == [
        ("Client0003", SECRET_KEY, "application/json")
    ]
    assert sim.requests[0].path == f"/api/v3{root.rstrip('/')}/fine_tune_status/Client0003"


@pytest.mark.parametrize("raw", ["", " ", "a/b", "a%2Fb", "..", "x" * 65, "a\nb", "é"])
async def test_invalid_ids_make_no_request(session, sim, raw: str) -> None:
    with pytest.raises(InvalidTrainingId):
        await make_client(session, sim).fine_tune_status(raw, DEFAULT_KEY)
    assert sim.request_count() == 0


def test_valid_ids() -> None:
    assert validate_training_id("  F5jvdzGnYi ") == "F5jvdzGnYi"
    assert validate_training_id("x" * 64) == "x" * 64


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (Fault.SERVER_ERROR, ApiUnavailable),
        (Fault.UNAVAILABLE, ApiUnavailable),
        (Fault.HTML, ApiUnavailable),
        (Fault.RATE_LIMIT_429, RateLimited),
        (Fault.RATE_LIMIT_BODY, RateLimited),
    ],
)
async def test_transient_faults_are_retried_then_succeed(session, sim, fault, error) -> None:
    sim.add_training("Retry00001", stage=3)
    sim.inject(fault, count=2)
    client = make_client(session, sim, max_attempts=4)
    if fault is Fault.RATE_LIMIT_BODY:
        # the body says "wait for 30 seconds": more than this call's budget, so it gives up
        with pytest.raises(error):
            await client.fine_tune_status("Retry00001", DEFAULT_KEY, budget=2)
        assert sim.request_count() == 1
        return
    status = await client.fine_tune_status("Retry00001", DEFAULT_KEY)
    assert status.raw_state == "trained_model_compressing"
    assert sim.request_count() == 3


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (Fault.SERVER_ERROR, ApiUnavailable),
        (Fault.EMPTY, UnexpectedResponse),
        (Fault.GARBAGE, UnexpectedResponse),
        (Fault.INVALID_KEY, InvalidApiKey),
        (Fault.NOT_FOUND, TrainingNotFound),
    ],
)
async def test_persistent_faults_raise_typed_errors_with_bounded_retries(
    session, sim, fault, error
) -> None:
    sim.add_training("Persist001", stage=3)
    sim.inject(fault, count=None)
    client = make_client(session, sim, max_attempts=3)
    with pytest.raises(error) as info:
        await client.fine_tune_status("Persist001", DEFAULT_KEY)
    assert info.value.reason
    transient = error is ApiUnavailable
    assert sim.request_count() == (3 if transient else 1)


async def test_429_honours_retry_after(session, sim) -> None:
    sim.add_training("Wait000001", stage=3)
    sim.inject(Fault.RATE_LIMIT_429, count=1)
    client = make_client(session, sim)
    await client.fine_tune_status("Wait000001", DEFAULT_KEY)
    first, second = sim.requests
    assert second.at - first.at >= 0.05


async def test_rate_limit_longer_than_the_budget_gives_up_at_once(session, sim) -> None:
    async with Simulator(retry_after=30) as slow:
        slow.add_training("Budget0001", stage=3)
        slow.inject(Fault.RATE_LIMIT_429, count=None)
        client = make_client(session, slow)
        started = time.monotonic()
        with pytest.raises(RateLimited) as info:
            await client.fine_tune_status("Budget0001", DEFAULT_KEY, budget=5)
        assert time.monotonic() - started < 5
        assert info.value.retry_after == pytest.approx(30, abs=1)
        assert info.value.retry_at > datetime.now(UTC)
        assert "<t:" not in info.value.reason  # data, not Discord text
        assert slow.request_count() == 1


async def test_hang_times_out_within_budget(session, sim) -> None:
    sim.add_training("Hang000001", stage=3)
    sim.inject(Fault.HANG, count=None)
    client = make_client(session, sim, timeout=0.2, max_attempts=10)
    started = time.monotonic()
    with pytest.raises(ApiUnavailable):
        await client.fine_tune_status("Hang000001", DEFAULT_KEY, budget=1.0)
    assert time.monotonic() - started < 2.0
    sim.release_hangs()


async def test_wrong_key_and_unknown_training(session, sim) -> None:
    sim.add_training("Mine000001", stage=3, key=SECRET_KEY)
    client = make_client(session, sim)
    with pytest.raises(InvalidApiKey) as info:
        await client.fine_tune_status("Mine000001", "nope")
    assert info.value.api_message == "Invalid Api Key"
    with pytest.raises(TrainingNotFound) as missing:
        await client.fine_tune_status("Mine000001", DEFAULT_KEY)  # another valid key
    assert missing.value.training_id == "Mine000001"


async def test_connection_refused_is_unavailable(session) -> None:
    client = SdApiClient(session, "http://127.0.0.1:9/api/v3", backoff_initial=0.01)
    with pytest.raises(ApiUnavailable):
        await client.fine_tune_status("Nobody0001", DEFAULT_KEY, budget=1)


async def test_per_key_concurrency_is_bounded(session, sim) -> None:
    for i in range(12):
        sim.add_training(f"Conc{i:06d}", stage=1)
        sim.inject(Fault.HANG, count=None, training_id=f"Conc{i:06d}")
    sim.add_training("Other00001", stage=1, key=SECRET_KEY)
    client = make_client(session, sim, max_concurrency=8, max_concurrency_per_key=3)
    tasks = [asyncio.create_task(client.attempt(f"Conc{i:06d}", DEFAULT_KEY)) for i in range(12)]
    await sim.wait_for_requests(3)
    # A request with another key is not held back, and reaches the server after any request
    # the first key could have sent by now.
    await client.fine_tune_status("Other00001", SECRET_KEY)
    assert sim.request_count() == 4
    sim.clear_faults()
    sim.release_hangs()
    await asyncio.gather(*tasks, return_exceptions=True)


# -- both APIs ---------------------------------------------------------------------------------

RUN = "9b2f6c1e-4d3a-4f8e-a1b2-3c4d5e6f7a8b"


async def test_a_uuid_goes_to_the_v6_trainer_route(session, sim) -> None:
    run = sim.add_training(RUN, key=SECRET_KEY, timeline="v6")
    client = make_client(session, sim)
    seen = []
    for _ in range(4):
        status = await client.fine_tune_status(RUN, SECRET_KEY)
        seen.append((status.state, [s.seq for s in status.steps], status.api))
        run.advance()
    assert seen == [
        (TrainingState.TRAINING_STARTED, [0], Api.V6),
        (TrainingState.TRAINING_COMPLETED, [0, 1], Api.V6),
        (TrainingState.TRAINING_COMPLETED, [0, 1], Api.V6),
        (TrainingState.MODEL_READY, [0, 1], Api.V6),
    ]
    assert [(r.training_id, r.key, r.api) for r in sim.requests] == [(RUN, SECRET_KEY, Api.V6)] * 4
    assert {r.path for r in sim.requests} == {f"/api/v6/trainer/status/{RUN}"}


async def test_the_ready_v6_answer_never_gives_back_the_key(session, sim) -> None:
    sim.add_training(RUN, key=SECRET_KEY, timeline="v6", stage=3)
    status = await make_client(session, sim).fine_tune_status(RUN, SECRET_KEY)
    assert status.finished
    assert status.model is not None
    assert status.model.model_id == "tw-lora-9b2f6c1e"
    assert SECRET_KEY not in repr(status)


async def test_forcing_an_api(session, sim) -> None:
    sim.add_training(RUN, timeline="v6")
    client = make_client(session, sim)
    # A UUID forced to v3 asks the v3 route, which does not know the v6 run.
    with pytest.raises(TrainingNotFound):
        await client.fine_tune_status(RUN, DEFAULT_KEY, api=Api.V3)
    assert sim.requests[-1].api is Api.V3
    # A v3 id forced to v6 is refused before any request.
    with pytest.raises(InvalidTrainingId) as info:
        await client.fine_tune_status("F5jvdzGnYi", DEFAULT_KEY, api=Api.V6)
    assert info.value.api == "v6"
    assert sim.request_count() == 1


@pytest.mark.parametrize(
    ("raw", "api", "valid"),
    [
        (RUN, None, True),
        (f" {RUN.upper()} ", None, True),
        (RUN, Api.V6, True),
        (RUN, Api.V3, True),  # a UUID is also a well-formed v3 id
        ("F5jvdzGnYi", Api.V6, False),
        (RUN[:-1] + "g", Api.V6, False),
        (RUN + "/x", None, False),
        ("F5jvdzGnYi", None, True),
    ],
)
def test_ids_are_validated_per_api(raw: str, api: Api | None, valid: bool) -> None:
    if valid:
        assert validate_training_id(raw, api) == raw.strip()
    else:
        with pytest.raises(InvalidTrainingId):
            validate_training_id(raw, api)


# -- the bodies the service answers ------------------------------------------------------------


@pytest.mark.parametrize("fault", [Fault.EMPTY_ERROR, Fault.TRY_AGAIN])
async def test_passing_faults_are_retried(session, sim, fault: Fault) -> None:
    sim.add_training("Pass000001", stage=2)
    sim.inject(fault, count=2)
    status = await make_client(session, sim, max_attempts=4).fine_tune_status(
        "Pass000001", DEFAULT_KEY
    )
    assert status.state is TrainingState.TRAINING_SUCCESS
    assert sim.request_count() == 3


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (Fault.NO_CREDITS, NoCredits),
        (Fault.INVALID_KEY_401, InvalidApiKey),
        (Fault.MODEL_NOT_FOUND, TrainingNotFound),
    ],
)
async def test_refusals_are_not_retried(session, sim, fault: Fault, error: type) -> None:
    sim.add_training("Refuse0001", stage=2)
    sim.inject(fault, count=None)
    with pytest.raises(error):
        await make_client(session, sim, max_attempts=4).fine_tune_status("Refuse0001", DEFAULT_KEY)
    assert sim.request_count() == 1


async def test_processing_is_a_queued_status(session, sim) -> None:
    sim.add_training("Queue00001", stage=2)
    sim.inject(Fault.PROCESSING)
    status = await make_client(session, sim).fine_tune_status("Queue00001", DEFAULT_KEY)
    assert (status.state, status.eta_seconds) == (TrainingState.QUEUED, 21.88)


async def test_parsed_answers_are_shared_per_body_and_api(session, sim) -> None:
    sim.add_training("Memo000001", stage=2)
    client = make_client(session, sim)
    first = await client.fine_tune_status("Memo000001", DEFAULT_KEY)
    again = await client.fine_tune_status("Memo000001", DEFAULT_KEY)
    assert again is first


# -- an echoed key, wherever it is ----------------------------------------------------------------

ODD_KEY = "sk/odd+key=\u00e9-0123456789"


async def echo_app(request: web.Request) -> web.Response:
    """Answers with the key it was sent, in the log, the reason, an error, escaped or not."""
    key = json.loads(await request.read())["key"]
    training_id = request.match_info["training_id"]
    if training_id == "Errors0001":
        body = {"status": "error", "message": f"Forbidden for {key}"}
        return web.json_response(body, status=403)
    body = {
        "status": "success",
        "messege": "training_failed",
        "message": f"the key {key} has failed",
        "data": f"Step:1 Training Started, 5 Steps to go | {key}\nnote: {key}",
    }
    text = json.dumps(body)  # escapes é as \u00e9
    text = text.replace("sk/", "sk\\/")  # and / as \/, as PHP's json_encode does
    return web.Response(text=text, content_type="application/json")


@pytest.fixture
async def echo_server() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/api/v3/fine_tune_status/{training_id}", echo_app)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/api/v3"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("key", [SECRET_KEY, ODD_KEY])
async def test_an_echoed_key_is_masked_before_anything_reads_it(
    session, echo_server: str, key: str, caplog
) -> None:
    client = SdApiClient(session, echo_server)
    status = await client.fine_tune_status("Echoes0001", key)
    assert status.failed
    assert status.failure_reason == "the key [key] has failed"
    assert all(key not in line for line in status.log_lines)
    assert "[key]" in status.log_lines[-1]
    with pytest.raises(UnexpectedResponse) as info:
        await client.fine_tune_status("Errors0001", key)
    for text in (info.value.detail, info.value.reason, info.value.api_message or ""):
        assert key not in text
        assert json.dumps(key)[1:-1] not in text
    assert key not in caplog.text


# -- bodies read with a cap ----------------------------------------------------------------------


async def test_an_endless_answer_is_not_read_to_its_end(session, sim) -> None:
    sim.add_training("Endless001", stage=2)
    sim.inject(Fault.ENDLESS)
    client = make_client(session, sim)
    tracemalloc.start()
    try:
        with pytest.raises(ResponseTooLarge) as info:
            await client.attempt("Endless001", DEFAULT_KEY)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    exc = info.value
    assert exc.declared is None
    # Refused as soon as the cap was passed: at most one buffer's worth beyond it.
    assert MAX_BODY_BYTES < exc.bytes_read <= MAX_BODY_BYTES + 256 * 1024
    assert peak < 4 * MAX_BODY_BYTES
    assert exc.transient
    # The client dropped the connection: the endless answer stopped being sent.
    await sim.wait_for_streams(1)
    assert sim.streamed[0] < 64 * MAX_BODY_BYTES
    # And the next request works as usual.
    status = await client.fine_tune_status("Endless001", DEFAULT_KEY)
    assert status.state is TrainingState.TRAINING_SUCCESS


async def test_a_huge_answer_is_refused_by_its_length(session, sim) -> None:
    sim.add_training("Huge000001", stage=2)
    sim.inject(Fault.HUGE, count=2)
    with pytest.raises(ResponseTooLarge) as info:
        await make_client(session, sim, max_attempts=2).fine_tune_status("Huge000001", DEFAULT_KEY)
    assert (info.value.declared, info.value.bytes_read) == (HUGE_BODY_BYTES, 0)
    assert sim.request_count() == 2  # transient: retried within the attempts
    await sim.wait_for_streams(2)
    assert all(sent < HUGE_BODY_BYTES // 2 for sent in sim.streamed)


async def test_the_cap_applies_to_what_a_compressed_answer_inflates_to(session) -> None:
    inflated = json.dumps(
        {"status": "success", "messege": "training_started", "data": "x" * (2 * MAX_BODY_BYTES)}
    ).encode()
    packed = gzip.compress(inflated)
    assert len(packed) < 64 * 1024

    async def handler(_: web.Request) -> web.Response:
        return web.Response(
            body=packed, headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}
        )

    app = web.Application()
    app.router.add_post("/api/v3/fine_tune_status/{training_id}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        client = SdApiClient(session, f"http://127.0.0.1:{runner.addresses[0][1]}/api/v3")
        with pytest.raises(ResponseTooLarge) as info:
            await client.attempt("Bomb000001", DEFAULT_KEY)
    finally:
        await runner.cleanup()
    assert info.value.declared == len(packed)
    assert MAX_BODY_BYTES < info.value.bytes_read < 2 * MAX_BODY_BYTES


async def test_a_smaller_cap_refuses_a_normal_answer_by_its_length(session, sim) -> None:
    sim.add_training("Small00001", stage=5)
    client = make_client(session, sim, max_body_bytes=64)
    with pytest.raises(ResponseTooLarge) as info:
        await client.attempt("Small00001", DEFAULT_KEY)
    assert info.value.bytes_read == 0
    assert info.value.declared is not None
    assert info.value.declared > 64


# -- the key check ---------------------------------------------------------------------------------


async def test_check_key_valid_and_invalid(session, sim) -> None:
    client = make_client(session, sim, max_attempts=2)
    assert await client.check_key(DEFAULT_KEY, budget=5) is KeyCheck.VALID  # "not found"
    with pytest.raises(InvalidApiKey):
        await client.check_key("not-a-key-at-all", budget=5)  # the invalid-key body
    sim.inject(Fault.INVALID_KEY_401)
    with pytest.raises(InvalidApiKey):
        await client.check_key(DEFAULT_KEY, budget=5)
    sim.inject(Fault.NO_CREDITS)
    assert await client.check_key(DEFAULT_KEY, budget=5) is KeyCheck.VALID


@pytest.mark.parametrize(
    "fault",
    [
        Fault.UNAVAILABLE,
        Fault.EMPTY_ERROR,
        Fault.TRY_AGAIN,
        Fault.RATE_LIMIT_429,
        Fault.GARBAGE,
        Fault.EMPTY,
        Fault.ENDLESS,
    ],
)
async def test_check_key_unverified_when_the_answer_proves_nothing(
    session, sim, fault: Fault
) -> None:
    sim.inject(fault, count=None)
    client = make_client(session, sim, max_attempts=2)
    assert await client.check_key(DEFAULT_KEY, budget=2) is KeyCheck.UNVERIFIED
    assert 1 <= sim.request_count() <= 2
