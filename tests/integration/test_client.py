"""The real aiohttp client against the simulator on loopback: faults, bounded retries, secrecy."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from bot.sdapi.client import SdApiClient, validate_training_id
from bot.sdapi.errors import (
    ApiUnavailable,
    InvalidApiKey,
    InvalidTrainingId,
    RateLimited,
    TrainingNotFound,
    UnexpectedResponse,
)
from bot.sdapi.simulator import DEFAULT_KEY, Fault, Simulator

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


async def test_url_quotes_the_id(session, sim) -> None:
    client = make_client(session, sim)
    assert client.status_url("abc-_9").endswith("/fine_tune_status/abc-_9")


@pytest.mark.parametrize("root", ["", "/", "/api/v3", "/api/v3/"])
async def test_request_shape_under_any_root(session, sim, root: str) -> None:
    """The status URL keeps the root's path; the body is JSON and says so (the API asks for
    ``Content-Type: application/json``)."""
    sim.add_training("Client0003", stage=2, key=SECRET_KEY)
    client = SdApiClient(session, sim.base_url + root)
    status = await client.fine_tune_status("Client0003", SECRET_KEY, retries=False)
    assert status.steps
    assert [(r.training_id, r.key, r.content_type) for r in sim.requests] == [
        ("Client0003", SECRET_KEY, "application/json")
    ]
    assert client.status_url("Client0003") == (
        f"{sim.base_url}{root.rstrip('/')}/fine_tune_status/Client0003"
    )


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
    assert info.value.user_message.endswith(".")
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
        assert "<t:" in info.value.user_message
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
    assert "Invalid Api Key" in info.value.user_message
    with pytest.raises(TrainingNotFound) as missing:
        await client.fine_tune_status("Mine000001", DEFAULT_KEY)  # another valid key
    assert "`Mine000001`" in missing.value.user_message


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
    tasks = [
        asyncio.create_task(client.fine_tune_status(f"Conc{i:06d}", DEFAULT_KEY, retries=False))
        for i in range(12)
    ]
    await sim.wait_for_requests(3)
    # A request with another key is not held back, and reaches the server after any request
    # the first key could have sent by now.
    await client.fine_tune_status("Other00001", SECRET_KEY)
    assert sim.request_count() == 4
    sim.clear_faults()
    sim.release_hangs()
    await asyncio.gather(*tasks, return_exceptions=True)
