"""The HTTP server: webhooks nudge the tracker, health and metrics; /training-webhook."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from bot.app import TunewatchBot
from bot.sdapi.simulator import Simulator
from bot.store import Store
from bot.web import OpsDeps, OpsServer
from tests.support.fakediscord import FakeDiscord
from tests.support.harness import (
    CHANNEL,
    GUILD,
    USER,
    running_bot,
    settings_for,
    step_messages,
    subscribe,
)

pytestmark = pytest.mark.timeout(60)
SECRET = "hook-secret-for-tests-0123"
MANAGE_GUILD = 1 << 5


@pytest.fixture
async def bot(fake: FakeDiscord, sim: Simulator, db_path: Path) -> AsyncIterator[TunewatchBot]:
    env = settings_for(
        fake,
        sim,
        db_path,
        POLL_INTERVAL_SECONDS="1",
        HTTP_PORT="0",
        WEBHOOK_SECRET=SECRET,
        PUBLIC_URL="https://tunewatch.example.org",
    )
    async with running_bot(env) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def url(bot: TunewatchBot, path: str) -> str:
    assert bot.ops_server is not None
    return f"http://127.0.0.1:{bot.ops_server.port}{path}"


async def test_webhook_delivers_the_step_at_the_shortest_gap(
    bot: TunewatchBot, fake: FakeDiscord, sim: Simulator, http: aiohttp.ClientSession
) -> None:
    # The webhook makes the training due at once, but never within the shortest gap of its
    # last poll (the API's spam filter counts repeated requests); tests/integration/
    # test_tracker.py shows it bringing a poll minutes away to that gap.
    training = sim.add_training("Hooked0001", stage=1)
    assert "Subscribed" in (await subscribe(fake, "Hooked0001"))["content"]
    polled = sim.requests[-1].at
    training.advance()
    payload = {
        "status": "success",
        "training_status": "training_success",
        "logs": "Step:2 ...",
        "model_id": "Hooked0001",
    }
    started = time.monotonic()
    async with http.post(url(bot, f"/webhooks/sdapi/{SECRET}"), json=payload) as response:
        assert response.status == 202
        assert (await response.json())["followed"] is True
    await fake.wait_for(lambda f: len(step_messages(f, CHANNEL)) == 1, timeout=5)
    assert time.monotonic() - started < 5
    assert sim.requests[-1].at - polled >= 1  # not within the shortest gap of the last poll
    assert (
        step_messages(fake, CHANNEL)[0].embeds[0]["title"] == "Hooked0001 · Step 2: Training Done"
    )


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (
            b'{"status": "success", "training_status": "deploying_gpu", "model_id": "Fmt0000001"}',
            "application/json",
        ),
        (
            b"status=success&training_status=deploying_gpu&model_id=Fmt0000001",
            "application/x-www-form-urlencoded",
        ),
        (
            b'{"status": "success", "training_status": "deploying_gpu", "logs": "it will take upto '
            b'25 minutes", "model_id": "Fmt0000001",}',
            "application/json",
        ),
    ],
    ids=["json", "form", "legacy-trailing-comma"],
)
async def test_webhook_body_formats(
    bot: TunewatchBot, sim: Simulator, http: aiohttp.ClientSession, body: bytes, content_type: str
) -> None:
    async with http.post(
        url(bot, f"/webhooks/sdapi/{SECRET}"), data=body, headers={"Content-Type": content_type}
    ) as response:
        assert response.status == 202
        answer = await response.json()
    assert answer["training_id"] == "Fmt0000001"
    assert answer["followed"] is False  # nobody follows it: nothing is polled
    assert sim.request_count() == 0


async def test_webhook_refusals(bot: TunewatchBot, http: aiohttp.ClientSession) -> None:
    good = {"model_id": "Refuse0001", "training_status": "deploying_gpu"}
    async with http.post(url(bot, "/webhooks/sdapi/wrong-secret"), json=good) as response:
        assert response.status == 404
    async with http.post(url(bot, f"/webhooks/sdapi/{SECRET}"), json={"x": 1}) as response:
        assert response.status == 400
        assert "without a training id" in (await response.json())["error"]
    bad_id = {"model_id": "../../etc", "training_status": "x"}
    async with http.post(url(bot, f"/webhooks/sdapi/{SECRET}"), json=bad_id) as response:
        assert response.status == 400
    huge = json.dumps({"model_id": "Big0000001", "logs": "x" * 70_000}).encode()
    async with http.post(
        url(bot, f"/webhooks/sdapi/{SECRET}"),
        data=huge,
        headers={"Content-Type": "application/json"},
    ) as response:
        assert response.status == 413


async def test_duplicate_webhooks_poll_once(
    bot: TunewatchBot, fake: FakeDiscord, sim: Simulator, http: aiohttp.ClientSession
) -> None:
    training = sim.add_training("Twice00001", stage=1)
    assert "Subscribed" in (await subscribe(fake, "Twice00001"))["content"]
    before = sim.request_count("Twice00001")
    training.advance()
    payload = {"model_id": "Twice00001", "training_status": "training_success"}
    answers = []
    for _ in range(5):
        async with http.post(url(bot, f"/webhooks/sdapi/{SECRET}"), json=payload) as response:
            assert response.status == 202
            answers.append(await response.json())
    assert sum(1 for a in answers if a.get("duplicate")) == 4
    await fake.wait_for(lambda f: len(step_messages(f, CHANNEL)) == 1)
    assert sim.request_count("Twice00001") == before + 1
    assert len(step_messages(fake, CHANNEL)) == 1


async def test_healthz_ok_and_metrics(
    bot: TunewatchBot, fake: FakeDiscord, sim: Simulator, http: aiohttp.ClientSession
) -> None:
    sim.add_training("Metric0001", stage=1)
    assert "Subscribed" in (await subscribe(fake, "Metric0001"))["content"]
    async with http.get(url(bot, "/healthz")) as response:
        assert response.status == 200
        body = await response.json()
    assert body["ok"] is True
    assert body["problems"] == []
    async with http.get(url(bot, "/metrics")) as response:
        assert response.status == 200
        assert response.content_type == "text/plain"
        text = await response.text()
    for name in (
        "tunewatch_polls_total",
        "tunewatch_api_latency_seconds_bucket",
        "tunewatch_deliveries_total",
        "tunewatch_delivery_delay_seconds_bucket",
        "tunewatch_active_trainings 1.0",
        'tunewatch_subscriptions{kind="channel",status="active"} 1.0',
        "tunewatch_tracker_last_tick_age_seconds",
        'tunewatch_training_next_poll_timestamp_seconds{key_ref="default",reason="fixed",'
        'training_id="Metric0001"}',
    ):
        assert name in text, name


async def test_healthz_names_what_is_wrong(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    store = await Store.open(tmp_path / "h.db")

    class StuckTracker:
        last_tick = time.time() - 3600

        async def poll_soon(self, training_id: str) -> bool:
            return False

    server = OpsServer(
        OpsDeps(
            store=store,
            tracker=StuckTracker(),  # type: ignore[arg-type]
            gateway_connected=lambda: False,
            webhook_secret=None,
        )
    )
    await server.start("127.0.0.1", 0)
    try:
        async with http.get(f"http://127.0.0.1:{server.port}/healthz") as response:
            assert response.status == 503
            body = await response.json()
        assert body["problems"] == ["gateway not connected", "tracker has not ticked recently"]
        await store.close()
        async with http.get(f"http://127.0.0.1:{server.port}/healthz") as response:
            assert response.status == 503
            assert "database error" in " ".join((await response.json())["problems"])
        # No secret configured: the webhook path does not exist.
        async with http.post(
            f"http://127.0.0.1:{server.port}/webhooks/sdapi/anything", json={}
        ) as response:
            assert response.status == 404
    finally:
        await server.stop()


async def test_training_webhook_command(bot: TunewatchBot, fake: FakeDiscord) -> None:
    interaction = await fake.invoke(
        "training-webhook",
        guild_id=GUILD,
        channel_id=CHANNEL,
        user_id=USER,
        permissions=MANAGE_GUILD,
    )
    final = await interaction.wait_final()
    assert interaction.ephemeral()
    assert f"https://tunewatch.example.org/webhooks/sdapi/{SECRET}" in final["content"]
    command = next(c for c in fake.registered_commands[None] if c["name"] == "training-webhook")
    assert int(command["default_member_permissions"]) == MANAGE_GUILD


async def test_training_webhook_unconfigured(
    fake: FakeDiscord, sim: Simulator, db_path: Path
) -> None:
    async with running_bot(settings_for(fake, sim, db_path)):
        interaction = await fake.invoke(
            "training-webhook", guild_id=GUILD, channel_id=CHANNEL, user_id=USER
        )
        final = await interaction.wait_final()
    assert interaction.ephemeral()
    text = final["embeds"][0]["description"]
    assert "HTTP_PORT, PUBLIC_URL, WEBHOOK_SECRET" in text


async def test_no_http_server_without_port(
    fake: FakeDiscord, sim: Simulator, db_path: Path
) -> None:
    async with running_bot(settings_for(fake, sim, db_path)) as running:
        assert running.ops_server is None
    await asyncio.sleep(0)
