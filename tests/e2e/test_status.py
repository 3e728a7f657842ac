"""/training-status end to end: the real bot, the fake Discord, the API simulator."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.app import TunewatchBot
from bot.sdapi.simulator import Fault, Simulator
from tests.support.fakediscord import FakeDiscord
from tests.support.harness import CHANNEL, GUILD, USER, running_bot, settings_for

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def bot(fake: FakeDiscord, sim: Simulator, db_path: Path) -> AsyncIterator[TunewatchBot]:
    async with running_bot(settings_for(fake, sim, db_path)) as running:
        yield running


async def status_of(fake: FakeDiscord, training_id: str) -> tuple[dict, bool, bool]:
    interaction = await fake.invoke(
        "training-status",
        {"training_id": training_id},
        guild_id=GUILD,
        channel_id=CHANNEL,
        user_id=USER,
    )
    final = await interaction.wait_final(timeout=20)
    return final, interaction.ephemeral(), interaction.late


def fields(embed: dict) -> dict[str, str]:
    return {f["name"]: f["value"] for f in embed.get("fields", [])}


async def test_running_training(bot: TunewatchBot, fake: FakeDiscord, sim: Simulator) -> None:
    sim.add_training("RunAbc1234", stage=3, timeline="dreambooth")
    final, ephemeral, late = await status_of(fake, "RunAbc1234")
    assert not late
    assert not ephemeral
    embed = final["embeds"][0]
    assert embed["title"] == "Training RunAbc1234"
    values = fields(embed)
    assert "Compressing the model" in values["State"]
    assert "`trained_model_compressing`" in values["State"]
    assert "3/6 steps" in values["Progress"]
    assert values["ETA"] == "about 25 min"
    assert "Step:3 Model Compressing" in embed["description"]
    assert embed["color"] == 0x5865F2
    assert "timestamp" in embed
    assert sim.request_count("RunAbc1234") == 1


async def test_ready_training(bot: TunewatchBot, fake: FakeDiscord, sim: Simulator) -> None:
    sim.add_training("ReadyOne01", stage=7, dialect="slash_n")
    final, _, late = await status_of(fake, "ReadyOne01")
    assert not late
    embed = final["embeds"][0]
    values = fields(embed)
    assert "Model ready" in values["State"]
    assert "6/6 steps" in values["Progress"]
    assert "ETA" not in values
    assert embed["color"] == 0x2ECC71
    assert "Model loaded successfully" in embed["description"]


async def test_failed_training(bot: TunewatchBot, fake: FakeDiscord, sim: Simulator) -> None:
    sim.add_training("FailOne001", stage=4, fail_at=4, failure_reason="CUDA out of memory")
    final, _, _ = await status_of(fake, "FailOne001")
    embed = final["embeds"][0]
    values = fields(embed)
    assert "Training failed" in values["State"]
    assert "CUDA out of memory" in values["Reason"]
    assert embed["color"] == 0xE74C3C


async def test_unknown_training(bot: TunewatchBot, fake: FakeDiscord, sim: Simulator) -> None:
    final, ephemeral, late = await status_of(fake, "NoSuchOne1")
    assert ephemeral
    assert not late
    assert "does not know training `NoSuchOne1`" in final["embeds"][0]["description"]


@pytest.mark.parametrize("bad_id", ["../etc/passwd", "a b", "x" * 65, "id?key=1", "ünï"])
async def test_bad_id_is_answered_at_once_without_a_request(
    bot: TunewatchBot, fake: FakeDiscord, sim: Simulator, bad_id: str
) -> None:
    final, ephemeral, late = await status_of(fake, bad_id)
    assert ephemeral
    assert not late
    assert "not a valid training id" in final["embeds"][0]["description"]
    assert sim.request_count() == 0


async def test_api_outage_answers_within_three_seconds(
    bot: TunewatchBot, fake: FakeDiscord, sim: Simulator
) -> None:
    sim.add_training("Outage0001", stage=2)
    sim.inject(Fault.HANG, count=None)
    final, ephemeral, late = await status_of(fake, "Outage0001")
    sim.release_hangs()
    assert not late, "the fake enforces Discord's 3-second rule"
    assert ephemeral
    assert "could not be reached" in final["embeds"][0]["description"]
    # deferred first, then the private answer replaced the public "thinking" message
    interaction = next(iter(fake.interactions.values()))
    assert interaction.responses[0]["type"] == 5


async def test_rate_limited_says_when_to_retry(
    bot: TunewatchBot, fake: FakeDiscord, sim: Simulator
) -> None:
    sim.add_training("Limited001", stage=2)
    sim.inject(Fault.RATE_LIMIT_429, count=None)
    final, ephemeral, _ = await status_of(fake, "Limited001")
    assert ephemeral
    text = final["embeds"][0]["description"]
    assert "rate limiting" in text
    assert "<t:" in text


async def test_wrong_key(fake: FakeDiscord, sim: Simulator, db_path: Path) -> None:
    sim.add_training("KeyTest001", stage=2)
    env = settings_for(fake, sim, db_path, SD_API_KEY="not-the-right-key")
    async with running_bot(env):
        final, ephemeral, _ = await status_of(fake, "KeyTest001")
    assert ephemeral
    assert "rejected the API key" in final["embeds"][0]["description"]
    assert "not-the-right-key" not in str(fake.requests)


async def test_a_member_asking_very_often_shares_requests_and_is_slowed(
    bot: TunewatchBot, fake: FakeDiscord, sim: Simulator
) -> None:
    # 30 asks in a burst from one member: the first asks share one API request, and past the
    # member's rate the answer is a private "slow down" with when to retry, no request at all.
    sim.add_training("Flood00001", stage=2)
    sim.add_training("Flood00002", stage=2)
    answers = await asyncio.gather(
        *(status_of(fake, "Flood00001" if i % 2 else "Flood00002") for i in range(30))
    )
    slowed = [final for final, ephemeral, _ in answers if ephemeral]
    shown = [final for final, ephemeral, _ in answers if not ephemeral]
    assert len(shown) == 10  # the member's rate: 10 asks a minute
    assert all("very often" in final["embeds"][0]["description"] for final in slowed)
    assert all("<t:" in final["embeds"][0]["description"] for final in slowed)
    assert sim.request_count("Flood00001") + sim.request_count("Flood00002") == 2
    assert not any(late for _, _, late in answers)
