"""The simulator on loopback, through a real aiohttp client and the real parser."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest

from bot.sdapi.errors import (
    ApiUnavailable,
    InvalidApiKey,
    RateLimited,
    SdApiError,
    TrainingNotFound,
    UnexpectedResponse,
)
from bot.sdapi.simulator import (
    DEFAULT_KEY,
    STAGES,
    TERMINAL_STAGE,
    Dialect,
    Fault,
    RequestRecord,
    SimTraining,
    Simulator,
)
from bot.sdapi.status import TrainingState, TrainingStatus, parse_status


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
        assert len(status.steps) == min(stage, 6)
        assert [s.number for s in status.steps] == list(range(1, min(stage, 6) + 1))
        assert status.finished is (stage == TERMINAL_STAGE)
        if stage >= 1:
            assert status.total_steps == 6
            assert status.steps_done == min(stage, 6)
        if 1 <= stage < TERMINAL_STAGE:
            assert status.eta_minutes == [30, 15, 12, 10, 5, 2][stage - 1]
        training.advance()
    assert seen == [state for state, _ in STAGES]
    assert training.terminal
    training.advance(5)  # clamped
    assert training.stage == TERMINAL_STAGE
    final = await status_of(session, sim, "Walk000001")
    assert final.unparsed == ("Model loaded successfully",)
    assert final.steps_done == 6


def test_dialects_render_the_documented_separators() -> None:
    newline = SimTraining("A", dialect="newline", stage=2)
    slash = SimTraining("B", dialect="slash_n", stage=2)
    step1, step2 = STAGES[1][1], STAGES[2][1]
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
    assert status.unparsed == ("Training failed: NaN loss",)


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
        RequestRecord("Nope000001", DEFAULT_KEY, 404, sim.requests[0].at, "application/json")
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
    (Fault.NOT_FOUND, 404, TrainingNotFound),
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
