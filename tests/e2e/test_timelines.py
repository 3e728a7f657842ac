"""Whole trainings as the service answers them today (issue 12), through the real bot and the
fake Discord: the trainer's own wording for Dreambooth and LoRA, the documented wording, and a
v6 trainer run across a SIGKILL and restart."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from bot.sdapi.simulator import Simulator
from bot.sdapi.status import Api
from bot.store import SubscriptionStatus
from tests.support.fakediscord import FakeDiscord, Message
from tests.support.harness import (
    CHANNEL,
    GUILD,
    USER,
    BotProcess,
    running_bot,
    settings_for,
    step_messages,
    subscribe,
    titles,
    wait_until,
)

pytestmark = pytest.mark.timeout(120)


def progress(message: Message) -> str:
    fields = {f["name"]: f["value"] for f in message.embeds[0].get("fields", [])}
    return fields.get("Progress", "")


async def follow_to_the_end(fake: FakeDiscord, sim: Simulator, training_id: str) -> list[Message]:
    """Subscribe, then let the training run to its end; the messages the channel got."""
    training = sim.trainings[training_id]
    assert "Subscribed" in (await subscribe(fake, training_id))["content"]
    while not training.terminal:
        shown = len(step_messages(fake, CHANNEL))
        polls = sim.request_count(training_id)
        training.advance()
        # The bot polls the new stage (and posts whatever it shows) before the next one.
        await sim.wait_for_requests(polls + 1, training_id=training_id, timeout=20)
        await fake.wait_for(
            lambda f, n=shown: len(step_messages(f, CHANNEL)) >= n or training.terminal,
            timeout=20,
        )
    await fake.wait_for(
        lambda f: any("Model ready" in t for t in titles(step_messages(f, CHANNEL))),
        timeout=20,
        what="the final message",
    )
    return step_messages(fake, CHANNEL)


@pytest.mark.parametrize(
    ("timeline", "expected"),
    [
        (
            "dreambooth",
            [
                ("Step 2: Training Done", "2/6"),
                ("Step 3: Model Compressing", "3/6"),
                ("Step 3: Model Uploading", "3/5"),
                ("Step 4: Model Uploaded", "4/5"),
            ],
        ),
        (
            "lora",
            [
                ("Step 2: Training Done", "2/6"),
                ("Step 3: Model Uploading", "3/5"),
                ("Step 4: Model Uploaded", "4/5"),
            ],
        ),
        (
            "documented",
            [
                ("Step 2: Training Done", "2/6"),
                ("Step 3: Model Uploading", "3/6"),
                ("Step 4: Model Uploaded", "4/6"),
            ],
        ),
    ],
)
async def test_one_message_per_step_with_its_progress_then_ready_and_nothing_else(
    fake: FakeDiscord,
    sim: Simulator,
    db_path: Path,
    timeline: str,
    expected: list[tuple[str, str]],
) -> None:
    training_id = f"Run{timeline.title()[:7]:0<7}"
    sim.add_training(training_id, stage=1, timeline=timeline)  # type: ignore[arg-type]
    async with running_bot(settings_for(fake, sim, db_path)) as bot:
        messages = await follow_to_the_end(fake, sim, training_id)

        async def done() -> bool:  # the final message marked sent: nothing left to send
            (sub,) = await bot.store.subscriptions.of_guild(GUILD)
            return sub.status is SubscriptionStatus.DONE

        await wait_until(done, what="the subscription done")
    assert len(step_messages(fake, CHANNEL)) == len(messages)
    assert titles(messages) == [f"{training_id} · {title}" for title, _ in expected] + [
        f"{training_id} · Model ready"
    ]
    for message, (_, fraction) in zip(messages, expected, strict=False):
        assert fraction in progress(message), (message.embeds[0]["title"], progress(message))
    if timeline != "documented":  # the trainer stamps the time since training started
        step_two = {f["name"]: f["value"] for f in messages[0].embeds[0]["fields"]}
        assert "Elapsed" in step_two


async def test_a_v6_run_posts_started_completed_ready_once_each_across_a_kill(
    fake: FakeDiscord, sim: Simulator, db_path: Path
) -> None:
    run_id = str(uuid.UUID(int=0x6F1D2C3B0A9E4D8CB7A65E4F3D2C1B0A))
    training = sim.add_training(run_id, stage=0, timeline="v6")
    env = settings_for(fake, sim, db_path)
    fake.add_user(USER + 1, "alice")

    first = BotProcess(env)
    await first.start()
    try:
        await fake.wait_for(lambda f: f.identify_count == 1, timeout=30, what="READY")
        # No `api` option: the UUID is enough to follow it through the v6 trainer.
        assert "Subscribed" in (await subscribe(fake, run_id))["content"]
        notify = await fake.invoke(
            "training-notify",
            {"training_id": run_id},
            guild_id=GUILD,
            channel_id=CHANNEL,
            user_id=USER + 1,
        )
        assert "DM you" in (await notify.wait_final(timeout=20))["content"]
        training.advance()  # training_completed: preparing the model
        await fake.wait_for(lambda f: len(step_messages(f, CHANNEL)) == 1, timeout=20)
    finally:
        await first.kill()

    training.advance()  # inference not ready yet, while no bot runs
    second = BotProcess(env)
    await second.start()
    try:
        await fake.wait_for(lambda f: f.identify_count == 2, timeout=30, what="READY again")
        training.advance()  # inference ready
        await fake.wait_for(
            lambda f: len(step_messages(f, CHANNEL)) == 2 and len(f.dms_to(USER + 1)) == 1,
            timeout=30,
            what="the ready message and the DM",
        )
    finally:
        await second.kill()
    # "Training started" was the state when the channel subscribed: its baseline.
    assert titles(step_messages(fake, CHANNEL)) == [
        f"{run_id} · Training completed: preparing the model for use",
        f"{run_id} · Model ready",
    ]
    (dm,) = fake.dms_to(USER + 1)
    text = str(dm.embeds[0])
    assert run_id in dm.embeds[0]["title"]
    assert "tw-lora-" in text  # what the response says is needed to use the LoRA
    assert "sim-key" not in text  # the key the API echoed is never shown
    asked = [r for r in sim.requests if r.training_id == run_id]
    assert asked
    assert all(r.api is Api.V6 for r in asked)  # every request went to the v6 trainer route
