"""Rendering: progress bar, every state, Discord's length limits, API text kept inert."""

from __future__ import annotations

from datetime import UTC, datetime

import discord
import pytest

from bot import render
from bot.events import Event, EventKind
from bot.sdapi.status import TrainingState, parse_status
from bot.store import Subscription, SubscriptionKind, SubscriptionStatus

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def body(state: str, lines: list[str], **extra: str) -> bytes:
    import json

    return json.dumps(
        {"status": "success", "messege": state, "data": "\n".join(lines), **extra}
    ).encode()


@pytest.mark.parametrize(
    ("done", "total", "expected"),
    [
        (0, 6, "▱▱▱▱▱▱▱▱▱▱▱▱ 0/6 steps"),
        (3, 6, "▰▰▰▰▰▰▱▱▱▱▱▱ 3/6 steps"),
        (6, 6, "▰▰▰▰▰▰▰▰▰▰▰▰ 6/6 steps"),
        (9, 6, "▰▰▰▰▰▰▰▰▰▰▰▰ 6/6 steps"),
        (2, None, "2 steps done"),
        (1, 0, "1 step done"),
    ],
)
def test_progress_bar(done: int, total: int | None, expected: str) -> None:
    assert render.progress_bar(done, total) == expected


@pytest.mark.parametrize(
    ("minutes", "text"),
    [
        (None, "unknown"),
        (0, "any moment now"),
        (5, "about 5 min"),
        (90, "about 1 h 30 min"),
        (120, "about 2 h"),
    ],
)
def test_eta_text(minutes: int | None, text: str) -> None:
    assert render.eta_text(minutes) == text


@pytest.mark.parametrize("state", list(TrainingState))
def test_every_known_state_renders(state: TrainingState) -> None:
    status = parse_status(
        200, body(state.value, ["Step:1 Training Started, 5 Steps to go : ETA : 30 minutes"])
    )
    embed = render.status_embed("Abc", status, NOW)
    fields = {f.name: f.value for f in embed.fields}
    assert render.STATE_WORDS[state] in fields["State"]
    assert f"`{state.value}`" in fields["State"]
    expected_colour = {
        TrainingState.MODEL_READY: render.COLOUR_READY,
        TrainingState.TRAINING_FAILED: render.COLOUR_FAILED,
    }.get(state, render.COLOUR_RUNNING)
    assert embed.colour == expected_colour
    assert ("ETA" in fields) == (
        state not in (TrainingState.MODEL_READY, TrainingState.TRAINING_FAILED)
    )


def test_unknown_state_is_shown_raw_in_grey() -> None:
    status = parse_status(200, body("gpu_warming_up", []))
    embed = render.status_embed("Abc", status, NOW)
    state = embed.fields[0].value
    assert state is not None
    assert "gpu_warming_up" in state
    assert "unknown" in state
    assert embed.colour == render.COLOUR_UNKNOWN
    assert embed.description == "_(no log yet)_"


def test_huge_log_stays_within_discord_limits() -> None:
    lines = [f"Step:{i} " + "x" * 500 + f", 1 Steps to go : ETA : {i} minutes" for i in range(2000)]
    status = parse_status(200, body("training_started", lines))
    embed = render.status_embed("A" * 64, status, NOW)
    assert len(embed) <= render.EMBED_TOTAL_LIMIT
    assert embed.description is not None
    assert len(embed.description) <= render.DESCRIPTION_LIMIT
    assert "earlier lines hidden" in embed.description
    assert "Step:1999" in embed.description  # the latest lines are kept
    for field in embed.fields:
        assert field.value is not None
        assert len(field.value) <= render.FIELD_VALUE_LIMIT


def test_api_text_cannot_break_out_or_mention() -> None:
    status = parse_status(
        200,
        body("training_failed", ["```", "@everyone look"], message="@here ``` boom"),
    )
    embed = render.status_embed("Abc", status, NOW)
    assert embed.description is not None
    assert embed.description.count("```") == 2  # only our own fences
    assert "@everyone" not in embed.description
    reason = {f.name: f.value for f in embed.fields}["Reason"]
    assert reason is not None
    assert "@here" not in reason


def test_status_text_for_terminal() -> None:
    status = parse_status(
        200,
        body(
            "model_ready",
            ["Step:1 A, 1 Steps to go : ETA : 2 minutes", "Model loaded successfully"],
        ),
    )
    text = render.status_text("Abc", status, NOW)
    assert "Model ready (model_ready)" in text
    assert "2/2 steps" in text
    assert "  ETA:" not in text
    assert "Model loaded successfully" in text


@pytest.mark.parametrize(
    ("event", "title", "colour"),
    [
        (
            Event(
                seq=2,
                kind=EventKind.STEP,
                number=3,
                label="Model Uploading",
                steps_to_go=3,
                eta_minutes=10,
            ),
            "T1 · Step 3: Model Uploading",
            render.COLOUR_RUNNING,
        ),
        (Event(seq=10**9, kind=EventKind.READY), "T1 · Model ready", render.COLOUR_READY),
        (
            Event(seq=10**9, kind=EventKind.FAILED, detail="OOM"),
            "T1 · Training failed",
            render.COLOUR_FAILED,
        ),
        (Event(seq=10**9, kind=EventKind.UNKNOWN), "T1 · Training unknown", render.COLOUR_UNKNOWN),
    ],
)
def test_event_embeds(event: Event, title: str, colour: discord.Colour) -> None:
    embed = render.event_embed("T1", event)
    assert embed.title == title
    assert embed.colour == colour
    assert embed.footer.text is None


def test_step_embed_names_steps_left_and_eta_and_late() -> None:
    event = Event(
        seq=2,
        kind=EventKind.STEP,
        number=3,
        label="Upload",
        steps_to_go=3,
        eta_minutes=10,
        late=True,
    )
    embed = render.event_embed("T1", event)
    fields = {f.name: f.value for f in embed.fields}
    assert fields["Steps left"] == "3"
    assert fields["ETA"] == "about 10 min"
    assert "3/6 steps" in (fields["Progress"] or "")
    assert embed.footer.text is not None
    assert embed.footer.text.startswith("Late")


def test_failed_event_has_the_reason() -> None:
    embed = render.event_embed("T1", Event(seq=10**9, kind=EventKind.FAILED, detail="Disk full"))
    assert embed.description == "Reason: Disk full"


def test_subscription_line_shows_pause_reason() -> None:
    sub = Subscription(
        id=1,
        kind=SubscriptionKind.CHANNEL,
        guild_id=1,
        channel_id=99,
        user_id=5,
        training_id="T1",
        key_ref="user:5",
        status=SubscriptionStatus.PAUSED,
        reason="The channel was deleted.",
        baseline_seq=0,
        created_at=0.0,
        state="training_started",
    )
    line = render.subscription_line(sub)
    assert line == "`T1` → <#99> · training_started · **paused**: The channel was deleted."
    assert "user:5" not in line


def test_fit_lines_says_how_many_were_left_out() -> None:
    lines = [f"line {i:03d} " + "x" * 40 for i in range(100)]
    text = render.fit_lines(lines, "none", 500)
    assert len(text) <= 500
    kept = text.splitlines()
    assert kept[-1] == f"… and {100 - (len(kept) - 1)} more"
    assert kept[0] == lines[0]
    assert render.fit_lines([], "none") == "none"
    assert render.fit_lines(["a", "b"], "none") == "a\nb"
