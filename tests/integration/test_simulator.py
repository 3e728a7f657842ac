"""The simulator on loopback, through a real aiohttp client and the real parser: every timeline
(documented, the trainer's wording, v6), every fault, the clocks, the demo."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
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
from bot.sdapi.simulator import (
    DEFAULT_KEY,
    HUGE_BODY_BYTES,
    STAGES,
    TERMINAL_STAGE,
    Dialect,
    Fault,
    RequestRecord,
    SimTraining,
    Simulator,
)
from bot.sdapi.status import Api, TrainingState, TrainingStatus, parse_status
from bot.sdapi.timelines import TIMELINES, TimelineName
from tests.support.harness import free_port


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator() as simulator:
        yield simulator


async def post(
    session: aiohttp.ClientSession,
    sim: Simulator,
    training_id: str,
    key: str | None = DEFAULT_KEY,
) -> tuple[int, bytes, dict[str, str]]:
    assert sim.base_url is not None
    payload = {} if key is None else {"key": key}
    url = f"{sim.base_url}/fine_tune_status/{training_id}"
    async with session.post(url, json=payload) as response:
        return response.status, await response.read(), dict(response.headers)


async def status_of(
    session: aiohttp.ClientSession, sim: Simulator, training_id: str, key: str = DEFAULT_KEY
) -> TrainingStatus:
    code, raw, _ = await post(session, sim, training_id, key)
    return parse_status(code, raw)


async def test_base_url_is_loopback_v3(sim: Simulator) -> None:
    assert sim.base_url is not None
    assert sim.base_url.startswith("http://127.0.0.1:")
    assert sim.base_url.endswith("/api/v3")
    assert not sim.base_url.endswith(":0/api/v3")


# Per stage of the documented timeline: (step numbers, done, total, ETA minutes).
DOCUMENTED_WALK = [
    ([], 0, None, None),
    ([1], 1, 6, 30),
    ([1, 2], 2, 6, 15),
    ([1, 2], 2, 6, 15),  # compressing: the documented log has no line for it
    ([1, 2, 3], 3, 6, 10),
    ([1, 2, 3, 4], 4, 6, 5),
    ([1, 2, 3, 4], 4, 6, 5),  # deploying_model: no line either
    ([1, 2, 3, 4], 6, 6, None),
]


@pytest.mark.parametrize("dialect", ["newline", "slash_n"])
async def test_training_walks_every_stage_to_model_ready(
    session: aiohttp.ClientSession, sim: Simulator, dialect: Dialect
) -> None:
    training = sim.add_training("Walk000001", dialect=dialect)
    seen = []
    for stage in range(TERMINAL_STAGE + 1):
        assert training.stage == stage
        status = await status_of(session, sim, "Walk000001")
        seen.append(status.raw_state)
        assert status.state is TrainingState(STAGES[stage][0])
        numbers, done, total, eta = DOCUMENTED_WALK[stage]
        assert [s.number for s in status.steps] == numbers
        assert (status.steps_done, status.total_steps, status.eta_minutes) == (done, total, eta)
        assert status.finished is (stage == TERMINAL_STAGE)
        training.advance()
    assert seen == [state for state, _ in STAGES]
    assert training.terminal
    training.advance(5)  # clamped
    assert training.stage == TERMINAL_STAGE
    final = await status_of(session, sim, "Walk000001")
    assert final.unparsed == ("Model loaded successfully",)
    assert final.steps_done == 6


# Per stage: (state, (number, label) of the steps, done, total, ETA, elapsed seconds).
DREAMBOOTH_WALK = [
    ("deploying_gpu", [], 0, None, None, None),
    ("training_started", [(1, "Training Started")], 1, 6, 60, 41.27361178398132),
    ("training_success", [(2, "Training Done")], 2, 6, 15, 1103.5561985969543),
    ("trained_model_compressing", [(3, "Model Compressing")], 3, 6, 25, 1190.0820829868317),
    ("trained_model_uploading", [(3, "Model Uploading")], 3, 5, 20, 1237.9148209095001),
    ("trained_model_uploaded", [(4, "Model Uploaded")], 4, 5, 10, 1502.6389410495758),
    ("deploying_model", [], 4, 5, 10, 1502.6389410495758),
    ("model_ready", [], 5, 5, None, 1502.6389410495758),
]
LORA_WALK = [
    ("deploying_gpu", [], 0, None, None, None),
    ("training_started", [(1, "Training Started")], 1, 6, 60, 38.91522526741028),
    ("training_success", [(2, "Training Done")], 2, 6, 15, 1012.3361902236938),
    ("trained_model_uploading", [(3, "Model Uploading")], 3, 5, 20, 1090.6637845039368),
    ("trained_model_uploaded", [(4, "Model Uploaded")], 4, 5, 10, 1355.2071137428284),
    ("deploying_model", [], 4, 5, 10, 1355.2071137428284),
    ("model_ready", [], 5, 5, None, 1355.2071137428284),
]


@pytest.mark.parametrize("dialect", ["newline", "slash_n"])
@pytest.mark.parametrize(
    ("timeline", "walk"), [("dreambooth", DREAMBOOTH_WALK), ("lora", LORA_WALK)]
)
async def test_the_trainers_wording_walks_to_ready(
    session: aiohttp.ClientSession,
    sim: Simulator,
    dialect: Dialect,
    timeline: TimelineName,
    walk: list[Any],
) -> None:
    training = sim.add_training("Trainer001", dialect=dialect, timeline=timeline)
    fractions = []
    steps: list[tuple[int | None, str]] = []
    for stage, (state, new, done, total, eta, elapsed) in enumerate(walk):
        assert training.stage == stage
        status = await status_of(session, sim, "Trainer001")
        steps += new
        assert status.raw_state == state
        assert [(s.number, s.label) for s in status.steps] == steps
        assert (status.steps_done, status.total_steps) == (done, total)
        assert (status.eta_minutes, status.elapsed_seconds) == (eta, elapsed)
        if total:
            fractions.append(done / total)
        training.advance()
    assert status.finished
    assert fractions == sorted(fractions)  # never backwards, though the totals drift
    code, raw, _ = await post(session, sim, "Trainer001")
    assert code == 200
    log = json.loads(raw)["data"]
    assert "Time Elapsed : 1" in log
    assert not log.rstrip().endswith("seconds")  # the trainer's last line lacks the unit
    if dialect == "slash_n":
        assert " /n  /n " in log


def test_dialects_render_the_documented_separators() -> None:
    newline = SimTraining("A", dialect="newline", stage=2)
    slash = SimTraining("B", dialect="slash_n", stage=2)
    step1, step2 = STAGES[1][1], STAGES[2][1]
    assert STAGES[6] == ("deploying_model", None)  # no invented "Step:6 Deploying Model" line
    assert newline.body() == {
        "status": "success",
        "messege": "training_success",
        "data": f"{step1}\n{step2}",
    }
    assert slash.body()["data"] == f" /n {step1} /n {step2}"
    assert SimTraining("C").body()["data"] == "it will take upto 25 minutes."
    assert newline.body_bytes() == json.dumps(newline.body()).encode()


def test_training_rejects_bad_scripts() -> None:
    with pytest.raises(ValueError, match="fail_at"):
        SimTraining("A", fail_at=TERMINAL_STAGE + 1)
    with pytest.raises(ValueError, match="dialect"):
        SimTraining("A", dialect="crlf")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeline"):
        SimTraining("A", timeline="guess")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="fail_at"):
        SimTraining("A", timeline="v6", fail_at=4)
    assert SimTraining("A", stage=99).stage == TERMINAL_STAGE
    assert SimTraining("A", stage=6, fail_at=3).stage == 3


@pytest.mark.parametrize("dialect", ["newline", "slash_n"])
async def test_failing_training(
    session: aiohttp.ClientSession, sim: Simulator, dialect: Dialect
) -> None:
    training = sim.add_training(
        "Fail000001",
        dialect=dialect,
        fail_at=3,
        failure_reason="NaN loss",
        stage=2,
    )
    assert not training.terminal
    training.advance()
    assert (training.state, training.terminal) == ("training_failed", True)
    training.advance()
    assert training.stage == 3
    status = await status_of(session, sim, "Fail000001")
    assert status.state is TrainingState.TRAINING_FAILED
    assert status.failed
    assert status.failure_reason == "NaN loss"
    assert [s.number for s in status.steps] == [1, 2]
    assert status.unparsed == ()  # the documented wording has no failure line: message only


async def test_failing_in_the_trainers_wording(
    session: aiohttp.ClientSession, sim: Simulator
) -> None:
    sim.add_training("Fail000002", timeline="dreambooth", fail_at=2, stage=2)
    status = await status_of(session, sim, "Fail000002")
    assert status.failed
    assert (status.failure_reason, status.failure_stage) == ("CUDA out of memory", "Training model")
    assert status.elapsed_seconds == 812.44
    assert status.unparsed == ("1. [Training model] | Time Elapsed : 812.44 | CUDA out of memory",)
    sim.add_training("Fail000003", timeline="lora", fail_at=1, failure_reason=None, stage=1)
    status = await status_of(session, sim, "Fail000003")
    assert (status.failure_reason, status.failure_stage) == (None, "Training model")
    assert "message" not in json.loads((await post(session, sim, "Fail000003"))[1])


async def test_wrong_missing_and_unknown_keys(session: aiohttp.ClientSession) -> None:
    async with Simulator(keys=["other-key"]) as sim:
        sim.add_training("Mine000001", key="mine-key")
        for key in (None, "nobody", ""):
            code, raw, _ = await post(session, sim, "Mine000001", key)
            assert code == 200
            with pytest.raises(InvalidApiKey):
                parse_status(code, raw)
        # A valid key of another account: the training does not exist for it.
        code, raw, _ = await post(session, sim, "Mine000001", "other-key")
        assert code == 404
        with pytest.raises(TrainingNotFound):
            parse_status(code, raw)
        assert (await status_of(session, sim, "Mine000001", "mine-key")).state is (
            TrainingState.DEPLOYING_GPU
        )
        assert [r.key for r in sim.requests] == [None, "nobody", "", "other-key", "mine-key"]


async def test_body_that_is_not_json_is_an_invalid_key(
    session: aiohttp.ClientSession, sim: Simulator
) -> None:
    sim.add_training("Body000001")
    assert sim.base_url is not None
    url = f"{sim.base_url}/fine_tune_status/Body000001"
    async with session.post(url, data=b"key=sim-key-0000") as response:
        assert response.status == 200
        with pytest.raises(InvalidApiKey):
            parse_status(response.status, await response.read())


async def test_unknown_training_id(session: aiohttp.ClientSession, sim: Simulator) -> None:
    code, raw, _ = await post(session, sim, "Nope000001")
    assert code == 404
    assert json.loads(raw) == {"status": "error", "message": "Training ID does not exist"}
    with pytest.raises(TrainingNotFound):
        parse_status(code, raw)
    assert sim.requests == [
        RequestRecord(
            "Nope000001",
            DEFAULT_KEY,
            404,
            sim.requests[0].at,
            "application/json",
            path="/api/v3/fine_tune_status/Nope000001",
        )
    ]


async def test_any_api_root_is_accepted(session: aiohttp.ClientSession, sim: Simulator) -> None:
    sim.add_training("Root000001")
    assert sim.base_url is not None
    origin = sim.base_url.removesuffix("/api/v3")
    for root in ("/api/v3", "/api/sandbox/v3", ""):
        url = f"{origin}{root}/fine_tune_status/Root000001"
        async with session.post(url, json={"key": DEFAULT_KEY}) as response:
            assert response.status == 200
    assert sim.request_count("Root000001") == 3


FAULT_CASES = [
    (Fault.SERVER_ERROR, 500, ApiUnavailable),
    (Fault.UNAVAILABLE, 503, ApiUnavailable),
    (Fault.HTML, 502, ApiUnavailable),
    (Fault.EMPTY, 200, UnexpectedResponse),
    (Fault.RATE_LIMIT_429, 429, RateLimited),
    (Fault.RATE_LIMIT_BODY, 200, RateLimited),
    (Fault.INVALID_KEY, 200, InvalidApiKey),
    (Fault.INVALID_KEY_401, 401, InvalidApiKey),
    (Fault.NOT_FOUND, 404, TrainingNotFound),
    (Fault.MODEL_NOT_FOUND, 200, TrainingNotFound),
    (Fault.NO_CREDITS, 402, NoCredits),
    (Fault.EMPTY_ERROR, 200, ApiUnavailable),
    (Fault.TRY_AGAIN, 200, ApiUnavailable),
    (Fault.GARBAGE, 200, UnexpectedResponse),
]


@pytest.mark.parametrize(("fault", "code", "error"), FAULT_CASES)
async def test_each_fault_once_then_normal(
    session: aiohttp.ClientSession,
    sim: Simulator,
    fault: Fault,
    code: int,
    error: type[SdApiError],
) -> None:
    sim.add_training("Flt0000001", stage=1)
    sim.inject(fault)
    got, raw, _ = await post(session, sim, "Flt0000001")
    assert got == code
    with pytest.raises(error) as info:
        parse_status(got, raw)
    assert type(info.value) is error
    assert (await status_of(session, sim, "Flt0000001")).state is TrainingState.TRAINING_STARTED
    assert [r.status for r in sim.requests] == [code, 200]
    assert sim.request_count() == sim.request_count("Flt0000001") == 2


async def test_fault_bodies_are_the_documented_shapes(session: aiohttp.ClientSession) -> None:
    async with Simulator(retry_after=12) as sim:
        sim.inject(Fault.RATE_LIMIT_429)
        code, raw, headers = await post(session, sim, "Any0000001")
        assert (code, headers["Retry-After"]) == (429, "12")
        assert json.loads(raw) == {
            "status": "error",
            "message": "Rate limit exceeded",
            "retry_after": 12,
        }
        with pytest.raises(RateLimited) as info:
            parse_status(code, raw)
        assert info.value.retry_after == 12

        sim.inject(Fault.RATE_LIMIT_BODY)
        code, raw, _ = await post(session, sim, "Any0000001")
        assert json.loads(raw)["messege"] == "Rate limit exceeded"
        with pytest.raises(RateLimited) as info:
            parse_status(code, raw)
        assert info.value.retry_after == 30

        sim.inject(Fault.HTML)
        code, raw, headers = await post(session, sim, "Any0000001")
        assert headers["Content-Type"].startswith("text/html")
        assert b"502 Bad Gateway" in raw

        sim.inject(Fault.EMPTY)
        assert (await post(session, sim, "Any0000001"))[:2] == (200, b"")
        sim.inject(Fault.GARBAGE)
        assert (await post(session, sim, "Any0000001"))[:2] == (200, b"not json{")


async def test_fault_count_target_and_clear(session: aiohttp.ClientSession, sim: Simulator) -> None:
    sim.add_training("Aaa0000001")
    sim.add_training("Bbb0000001")
    sim.inject(Fault.SERVER_ERROR, count=2, training_id="Bbb0000001")
    assert (await post(session, sim, "Aaa0000001"))[0] == 200
    assert (await post(session, sim, "Bbb0000001"))[0] == 500
    assert (await post(session, sim, "Bbb0000001"))[0] == 500
    assert (await post(session, sim, "Bbb0000001"))[0] == 200

    sim.inject(Fault.UNAVAILABLE, count=None)
    for _ in range(3):
        assert (await post(session, sim, "Aaa0000001"))[0] == 503
    sim.clear_faults()
    assert (await post(session, sim, "Aaa0000001"))[0] == 200
    assert sim.request_count("Aaa0000001") == 5
    assert sim.request_count("Bbb0000001") == 3
    with pytest.raises(ValueError, match="count"):
        sim.inject(Fault.EMPTY, count=0)


async def test_hang_is_recorded_on_arrival_and_released(
    session: aiohttp.ClientSession, sim: Simulator
) -> None:
    sim.add_training("Hang000001")
    sim.inject(Fault.HANG)
    hanging = asyncio.create_task(post(session, sim, "Hang000001"))
    await sim.wait_for_requests(1, training_id="Hang000001")
    assert not hanging.done()
    assert sim.requests[0].status == 503
    # Requests that are not hung go on being answered meanwhile.
    assert (await post(session, sim, "Hang000001"))[0] == 200
    sim.release_hangs()
    code, raw, _ = await hanging
    assert code == 503
    with pytest.raises(ApiUnavailable):
        parse_status(code, raw)


async def test_hang_ends_after_hang_seconds(session: aiohttp.ClientSession, sim: Simulator) -> None:
    sim.inject(Fault.HANG, hang_seconds=0)
    assert (await post(session, sim, "Hang000002"))[0] == 503


async def test_stop_releases_hanging_requests(session: aiohttp.ClientSession) -> None:
    sim = Simulator()
    await sim.start()
    sim.inject(Fault.HANG)
    hanging = asyncio.create_task(post(session, sim, "Hang000003"))
    await sim.wait_for_requests(1)
    await sim.stop()
    assert (await hanging)[0] == 503


async def test_wait_for_requests(session: aiohttp.ClientSession, sim: Simulator) -> None:
    sim.add_training("Wait000001")
    waiter = asyncio.create_task(sim.wait_for_requests(3, training_id="Wait000001"))
    await post(session, sim, "Other00001")
    await post(session, sim, "Wait000001")
    await post(session, sim, "Wait000001")
    assert not waiter.done()
    await post(session, sim, "Wait000001")
    await asyncio.wait_for(waiter, 5)
    await sim.wait_for_requests(4)  # already satisfied: returns at once
    with pytest.raises(TimeoutError):
        await sim.wait_for_requests(5, timeout=0.01)


async def test_advance_every_follows_the_injected_clock(session: aiohttp.ClientSession) -> None:
    clock = FakeClock()
    async with Simulator(advance_every=10.0, clock=clock) as sim:
        sim.add_training("Time000001")
        sim.add_training("Time000002", stage=2)
        assert (await status_of(session, sim, "Time000001")).state is TrainingState.DEPLOYING_GPU
        clock.now += 9.9
        assert (await status_of(session, sim, "Time000001")).state is TrainingState.DEPLOYING_GPU
        clock.now += 0.1
        assert (await status_of(session, sim, "Time000001")).state is (
            TrainingState.TRAINING_STARTED
        )
        # An explicit advance adds to the timed ones.
        sim.trainings["Time000001"].advance()
        clock.now += 20
        assert (await status_of(session, sim, "Time000001")).state is (
            TrainingState.TRAINED_MODEL_UPLOADING
        )
        # Time000002 was never asked: it catches up in one go (30s = 3 stages from stage 2).
        assert sim.trainings["Time000002"].stage == 2
        assert (await status_of(session, sim, "Time000002")).state is (
            TrainingState.TRAINED_MODEL_UPLOADED
        )
        clock.now += 1000
        status = await status_of(session, sim, "Time000001")
        assert status.finished
        assert sim.requests[-1].at == clock.now


def test_advance_every_must_be_positive() -> None:
    with pytest.raises(ValueError, match="advance_every"):
        Simulator(advance_every=0)


async def test_start_twice_is_refused(sim: Simulator) -> None:
    with pytest.raises(RuntimeError):
        await sim.start()


async def test_fine_tune_creates_a_training_to_follow() -> None:
    import aiohttp

    from bot.sdapi.simulator import DEFAULT_KEY, Simulator
    from bot.sdapi.status import parse_status

    async with Simulator() as sim, aiohttp.ClientSession() as http:
        async with http.post(f"{sim.base_url}/lora_fine_tune", json={"key": DEFAULT_KEY}) as r:
            created = await r.json()
        async with http.post(f"{sim.base_url}/fine_tune", json={"key": "wrong"}) as r:
            refused = await r.json()
        training_id = created["training_id"]
        async with http.post(
            f"{sim.base_url}/fine_tune_status/{training_id}", json={"key": DEFAULT_KEY}
        ) as r:
            status = parse_status(r.status, await r.read())
    assert created["messege"] == "deploying_gpu"
    assert created["data"] == "it will take upto 30 minutes."
    assert len(training_id) == 10
    assert training_id.isalnum()
    assert refused["message"] == "Invalid Api Key"
    assert status.raw_state == "deploying_gpu"


# -- v6 ----------------------------------------------------------------------------------------

RUN = "9b2f6c1e-4d3a-4f8e-a1b2-3c4d5e6f7a8b"


async def post_v6(
    session: aiohttp.ClientSession, sim: Simulator, training_id: str, key: str = DEFAULT_KEY
) -> tuple[int, dict[str, Any]]:
    assert sim.v6_base_url is not None
    url = f"{sim.v6_base_url}/trainer/status/{training_id}"
    async with session.post(url, json={"key": key}) as response:
        return response.status, await response.json(content_type=None)


async def test_v6_run_states_and_the_inference_wait(
    session: aiohttp.ClientSession, sim: Simulator
) -> None:
    assert sim.v6_base_url is not None
    assert sim.v6_base_url.endswith("/api/v6")
    run = sim.add_training(RUN, timeline="v6")
    answers = []
    for _ in range(run.terminal_stage + 1):
        code, answer = await post_v6(session, sim, RUN)
        assert code == 200
        answers.append(answer)
        run.advance()
    assert [a["message"] for a in answers] == [
        "training_started",
        "training_completed",
        "training_completed",
        "training_completed",
    ]
    assert [a["data"].get("inference", {}).get("status") for a in answers] == [
        None,
        None,
        "processing",
        "ready",
    ]
    assert all(a["data"]["id"] == RUN for a in answers)
    request = answers[-1]["data"]["inference"]["request"]
    assert request["key"] == DEFAULT_KEY  # echoed, as a copy-paste request would
    statuses = [parse_status(200, json.dumps(a).encode(), Api.V6) for a in answers]
    assert [s.state for s in statuses] == [
        TrainingState.TRAINING_STARTED,
        TrainingState.TRAINING_COMPLETED,
        TrainingState.TRAINING_COMPLETED,
        TrainingState.MODEL_READY,
    ]
    assert DEFAULT_KEY not in repr(statuses[-1].model)


async def test_v6_cancelled_and_routes_kept_apart(
    session: aiohttp.ClientSession, sim: Simulator
) -> None:
    sim.add_training(RUN, timeline="v6", fail_at=1, stage=1, failure_reason="Not enough images")
    code, answer = await post_v6(session, sim, RUN)
    assert code == 200
    assert answer["message"] == "training_cancelled"
    assert answer["data"]["response_dump"] == "Not enough images"
    # A v6 run is unknown to the v3 route, and a v3 training to the v6 route.
    assert (await post(session, sim, RUN))[0] == 404
    sim.add_training("V3only0001")
    assert (await post_v6(session, sim, "V3only0001"))[0] == 404
    assert [r.api for r in sim.requests] == [Api.V6, Api.V3, Api.V6]


async def test_creating_trainings_of_each_kind(
    session: aiohttp.ClientSession, sim: Simulator
) -> None:
    assert sim.base_url is not None
    origin = sim.base_url.removesuffix("/api/v3")
    async with session.post(f"{origin}/api/v6/trainer/train", json={"key": DEFAULT_KEY}) as r:
        created = await r.json()
    run = created["data"]["id"]
    assert sim.trainings[run].timeline == "v6"
    assert (await post_v6(session, sim, run))[1]["message"] == "training_started"
    async with session.post(f"{origin}/api/v6/trainer/train", json={"key": "nope"}) as r:
        assert r.status == 401
    async with session.post(f"{sim.base_url}/fine_tune", json={"key": DEFAULT_KEY}) as r:
        dreambooth = (await r.json())["training_id"]
    assert sim.trainings[dreambooth].timeline == "dreambooth"


# -- the other bodies, endless and huge answers --------------------------------------------------


async def test_the_bodies_of_the_newer_faults(
    session: aiohttp.ClientSession, sim: Simulator
) -> None:
    expected = {
        Fault.EMPTY_ERROR: (200, {"status": "error", "messege": ""}),
        Fault.TRY_AGAIN: (
            200,
            {"status": "failed", "id": "", "messege": "Failed, Try Again", "output": ""},
        ),
        Fault.PROCESSING: (
            200,
            {
                "status": "processing",
                "eta": 21.88,
                "messege": "Try to fetch request after given estimated time",
            },
        ),
        Fault.INVALID_KEY_401: (401, {"status": "error", "message": "Invalid API key"}),
        Fault.MODEL_NOT_FOUND: (200, {"status": "error", "messege": "Model not found"}),
    }
    for fault, (code, answer) in expected.items():
        sim.inject(fault)
        got, raw, _ = await post(session, sim, "Bodies0001")
        assert (got, json.loads(raw)) == (code, answer)
    sim.inject(Fault.NO_CREDITS)
    got, raw, _ = await post(session, sim, "Bodies0001")
    assert got == 402
    assert json.loads(raw)["message"].startswith("Insufficient credits")
    queued = parse_status(200, json.dumps(expected[Fault.PROCESSING][1]).encode())
    assert (queued.state, queued.eta_seconds) == (TrainingState.QUEUED, 21.88)


async def test_endless_and_huge_answers_stream_until_the_client_leaves(
    session: aiohttp.ClientSession, sim: Simulator
) -> None:
    assert sim.base_url is not None
    url = f"{sim.base_url}/fine_tune_status/Stream0001"
    sim.inject(Fault.ENDLESS)
    async with session.post(url, json={"key": DEFAULT_KEY}) as response:
        assert response.status == 200
        assert response.content_length is None  # chunked, no end announced
        got = 0
        while got < 3 * 65_536:
            got += len(await response.content.readany())
        response.close()
    sim.inject(Fault.HUGE)
    async with session.post(url, json={"key": DEFAULT_KEY}) as response:
        assert response.content_length == HUGE_BODY_BYTES
        response.close()
    await sim.wait_for_streams(2)
    assert sim.streamed[0] >= 3 * 65_536
    assert all(sent < HUGE_BODY_BYTES for sent in sim.streamed)
    assert [r.status for r in sim.requests] == [200, 200]


# -- clocks and the demo -----------------------------------------------------------------------


async def test_a_clock_that_starts_at_the_first_request(session: aiohttp.ClientSession) -> None:
    clock = FakeClock()
    async with Simulator(advance_every=60.0, clock=clock, clock_from="first_request") as sim:
        sim.add_training("Lazy000001")
        clock.now += 3600  # nobody asked: nothing moves
        assert (await status_of(session, sim, "Lazy000001")).state is TrainingState.DEPLOYING_GPU
        clock.now += 59
        assert (await status_of(session, sim, "Lazy000001")).state is TrainingState.DEPLOYING_GPU
        clock.now += 1
        assert (await status_of(session, sim, "Lazy000001")).state is (
            TrainingState.TRAINING_STARTED
        )


def test_demo_has_one_training_of_each_kind() -> None:
    from bot.cli import demo_guide as guide
    from bot.sdapi.demo import DEMO_TRAININGS, DEMO_V6_ID, demo_simulator

    sim = demo_simulator(120.0)
    kinds = {sim.trainings[d.training_id].timeline for d in DEMO_TRAININGS}
    assert kinds == {"documented", "dreambooth", "lora", "v6"}
    assert any(sim.trainings[d.training_id].fail_at is not None for d in DEMO_TRAININGS)
    assert sim.trainings[DEMO_V6_ID].api is Api.V6
    assert sim.clock_from == "first_request"
    text = guide("http://127.0.0.1:8765/api/v3", "http://127.0.0.1:8765/api/v6", 120.0)
    for demo in DEMO_TRAININGS:
        assert demo.training_id in text
    assert "every 2 min" in text
    assert "SD_API_V6_BASE_URL=http://127.0.0.1:8765/api/v6" in text
    assert f"python -m bot status {DEMO_V6_ID}" in text
    assert "every 3 s" in guide("a", "b", 3.0)
    assert set(TIMELINES) >= kinds


async def test_simulate_prints_the_demo_ids_and_commands() -> None:
    import sys

    from bot.sdapi.demo import DEMO_TRAININGS, DEMO_V6_ID

    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "simulate",
        "--port",
        str(port),
        "--fast",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        while not any(line.startswith("  a fresh training") for line in lines):
            line = await asyncio.wait_for(proc.stdout.readline(), timeout=30)
            assert line, "simulator exited"
            lines.append(line.decode())
        text = "".join(lines)
        for demo in DEMO_TRAININGS:
            assert demo.training_id in text
        assert "every 3 s" in text
        v3 = f"http://127.0.0.1:{port}/api/v3"
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"{v3}/fine_tune_status/DemoReady01", json={"key": DEFAULT_KEY}
            ) as response:
                assert (await response.json())["messege"] == "model_ready"
            async with http.post(
                f"http://127.0.0.1:{port}/api/v6/trainer/status/{DEMO_V6_ID}",
                json={"key": DEFAULT_KEY},
            ) as response:
                assert (await response.json())["message"] == "training_started"
    finally:
        proc.terminate()
        await proc.wait()
