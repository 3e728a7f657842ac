"""Rendering: progress in both wordings, every state, v6 messages, API errors in words, Discord's
length limits, and API text kept inert everywhere (titles, fields, footers, descriptions)."""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import UTC, datetime

import discord
import pytest

from bot import render
from bot.events import Event, EventKind
from bot.sdapi.errors import (
    ApiUnavailable,
    InvalidApiKey,
    InvalidTrainingId,
    NoCredits,
    RateLimited,
    ResponseTooLarge,
    SdApiError,
    TrainingNotFound,
    UnexpectedResponse,
)
from bot.sdapi.status import Api, ModelInfo, TrainingState, parse_status, parse_step_line
from bot.store import Subscription, SubscriptionKind, SubscriptionStatus

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def body(state: str, lines: list[str], **extra: str) -> bytes:
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
    terminal = (
        TrainingState.MODEL_READY,
        TrainingState.TRAINING_FAILED,
        TrainingState.TRAINING_CANCELLED,
    )
    expected_colour = {
        TrainingState.MODEL_READY: render.COLOUR_READY,
        TrainingState.TRAINING_FAILED: render.COLOUR_FAILED,
        TrainingState.TRAINING_CANCELLED: render.COLOUR_FAILED,
    }.get(state, render.COLOUR_RUNNING)
    assert embed.colour == expected_colour
    assert ("ETA" in fields) == (state not in terminal)
    done = 6 if state is TrainingState.MODEL_READY else 1
    assert f"{done}/6 steps" in (fields["Progress"] or "")


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
    assert line == "`T1` → <#99> · Training · **paused**: The channel was deleted."
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


# -- both wordings, v6, and the time elapsed ---------------------------------------------------

TRAINER_LINE = (
    "Step:3 Model Uploading, 2 More Steps to go : ETA : 20 minutes | "
    "Time Elapsed : 1237.9148209095001 seconds"
)
DOC_LINE = "Step:3 Model Uploading, 3 Steps to go : ETA : 10 minutes"


def event_of(line: str, seq: int = 3) -> Event:
    """The event the tracker records for a step line (what the store keeps today)."""
    step = parse_step_line(line, seq)
    assert step is not None
    return Event(
        seq=step.seq,
        kind=EventKind.STEP,
        number=step.number,
        label=step.label,
        steps_to_go=step.steps_to_go,
        eta_minutes=step.eta_minutes,
        raw=step.raw,
    )


@pytest.mark.parametrize(
    ("line", "progress", "left", "eta", "elapsed"),
    [
        (TRAINER_LINE, "3/5 steps", "2", "about 20 min", "21 min"),
        (DOC_LINE, "3/6 steps", "3", "about 10 min", None),
    ],
)
def test_step_message_shows_n_of_total_in_both_wordings(
    line: str, progress: str, left: str, eta: str, elapsed: str | None
) -> None:
    embed = render.event_embed("T1", event_of(line))
    fields = {f.name: f.value for f in embed.fields}
    assert embed.title == "T1 · Step 3: Model Uploading"
    assert progress in (fields["Progress"] or "")
    assert "▰" in (fields["Progress"] or "")
    assert fields["Steps left"] == left
    assert fields["ETA"] == eta
    # Time Elapsed, read back from the stored line, never in the label.
    assert fields.get("Elapsed") == elapsed
    assert "Time Elapsed" not in (embed.title or "")


def test_step_message_shows_the_stored_progress_and_elapsed_time() -> None:
    event = Event(
        seq=2,
        kind=EventKind.STEP,
        number=3,
        label="Model Uploading",
        steps_to_go=4,
        elapsed_seconds=59.6,
    )
    embed = render.event_embed("T1", event)
    fields = {f.name: f.value for f in embed.fields}
    assert "3/7 steps" in (fields["Progress"] or "")
    assert fields["Elapsed"] == "1 min"
    assert "Folded" not in fields


def test_a_folded_step_says_how_many_it_stands_for() -> None:
    event = Event(seq=9, kind=EventKind.STEP, number=10, label="Stage", folded=1234)
    fields = {f.name: f.value for f in render.event_embed("T1", event).fields}
    assert fields["Folded"] == "1,234 earlier steps of this answer, not posted one by one"


def test_status_embed_in_the_trainers_wording() -> None:
    lines = [
        "Step:1 Training Started, 5 More Steps to go : ETA : 60 minutes | "
        "Time Elapsed : 41.2 seconds",
        "Step:2 Training Done, 4 More Steps to go : ETA : 15 minutes | "
        "Time Elapsed : 1103.5 seconds",
    ]
    status = parse_status(200, body("training_success", lines))
    fields = {f.name: f.value for f in render.status_embed("T1", status, NOW).fields}
    assert "2/6 steps" in (fields["Progress"] or "")
    assert fields["ETA"] == "about 15 min"
    assert fields["Elapsed"] == "18 min"
    text = render.status_text("T1", status, NOW)
    assert "2/6 steps" in text
    assert "elapsed:  18 min" in text


def test_queued_shows_its_eta_in_seconds() -> None:
    raw = json.dumps({"status": "processing", "eta": 21.88, "messege": "Try to fetch..."})
    status = parse_status(200, raw.encode())
    embed = render.status_embed("T1", status, NOW)
    fields = {f.name: f.value for f in embed.fields}
    assert "Queued" in (fields["State"] or "")
    assert fields["ETA"] == "about 22 s"
    assert "ETA:      about 22 s" in render.status_text("T1", status, NOW)


RUN = "9b2f6c1e-4d3a-4f8e-a1b2-3c4d5e6f7a8b"
KEY = "sk-render-0123456789"


def v6_body(state: str, **data: object) -> bytes:
    return json.dumps(
        {"status": "success", "message": state, "data": {"id": RUN, "status": state, **data}}
    ).encode()


READY_V6 = v6_body(
    "training_completed",
    inference={
        "status": "ready",
        "endpoint": "https://modelslab.com/api/v6/images/text2img",
        "request": {"key": KEY, "model_id": "flux", "lora_model": "tw-lora", "prompt": "a cat"},
    },
)


def test_v6_step_messages() -> None:
    started = render.event_embed(
        RUN,
        Event(
            seq=0,
            kind=EventKind.STEP,
            number=1,
            label="Training started",
            steps_to_go=2,
            raw="training_started",
        ),
    )
    completed = render.event_embed(
        RUN,
        Event(
            seq=1,
            kind=EventKind.STEP,
            number=2,
            label="Training completed: preparing the model for use",
            steps_to_go=1,
            raw="training_completed",
        ),
    )
    assert started.title == f"{RUN} · Training started"
    assert completed.title == f"{RUN} · Training completed: preparing the model for use"
    for embed, progress in ((started, "1/3 steps"), (completed, "2/3 steps")):
        fields = {f.name: f.value for f in embed.fields}
        assert progress in (fields["Progress"] or "")
        assert "ETA" not in fields
        assert "Steps left" not in fields
        assert embed.description
    assert "prepared for use" in (completed.description or "")


def test_v6_statuses() -> None:
    started = render.status_embed(RUN, parse_status(200, v6_body("training_started"), Api.V6), NOW)
    fields = {f.name: f.value for f in started.fields}
    assert "1/3 steps" in (fields["Progress"] or "")
    assert "ETA" not in fields  # v6 has none
    assert started.description == render.V6_WORDS[TrainingState.TRAINING_STARTED]

    ready_status = parse_status(200, READY_V6, Api.V6)
    ready = render.status_embed(RUN, ready_status, NOW)
    fields = {f.name: f.value for f in ready.fields}
    assert "Model ready" in (fields["State"] or "")
    assert fields["Model"] == "`tw-lora`"
    usage = fields["Generate with it"] or ""
    assert "POST https://modelslab.com/api/v6/images/text2img" in usage
    assert "lora_model: tw-lora" in usage
    assert KEY not in str(ready.to_dict())
    text = render.status_text(RUN, ready_status, NOW)
    assert "model:    tw-lora" in text
    assert KEY not in text
    assert "log:" not in text

    cancelled = parse_status(200, v6_body("training_cancelled", response_dump="bad images"), Api.V6)
    embed = render.status_embed(RUN, cancelled, NOW)
    fields = {f.name: f.value for f in embed.fields}
    assert "Training cancelled" in (fields["State"] or "")
    assert fields["Reason"] == "bad images"


def test_ready_message_shows_the_model_when_the_event_has_it() -> None:
    status = parse_status(200, READY_V6, Api.V6)
    assert status.model is not None
    plain = render.event_embed(RUN, Event(seq=10**9, kind=EventKind.READY))
    assert [f.name for f in plain.fields] == []
    stored = Event(seq=10**9, kind=EventKind.READY, detail=status.model.to_json())
    embed = render.event_embed(RUN, stored)
    fields = {f.name: f.value for f in embed.fields}
    assert fields["Model"] == "`tw-lora`"
    assert "prompt: a cat" in (fields["Generate with it"] or "")
    assert KEY not in str(embed.to_dict())


def test_a_huge_model_request_stays_within_limits() -> None:
    model = ModelInfo(
        "m" * 500, "https://x/" + "y" * 500, tuple((f"f{i}", "v" * 300) for i in range(20))
    )
    embed = render.event_embed(RUN, Event(seq=10**9, kind=EventKind.READY, detail=model.to_json()))
    assert len(embed) <= render.EMBED_TOTAL_LIMIT
    for field in embed.fields:
        assert len(field.value or "") <= render.FIELD_VALUE_LIMIT
    assert "more" in ({f.name: f.value for f in embed.fields}["Generate with it"] or "")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.4, "0 s"),
        (41.27, "41 s"),
        (1103.55, "18 min"),
        (3900, "1 h 5 min"),
        (7200, "2 h"),
        (float("nan"), "unknown"),
        (-3, "unknown"),
    ],
)
def test_duration_text(seconds: float, text: str) -> None:
    assert render.duration_text(seconds) == text


@pytest.mark.parametrize(
    ("seconds", "text"), [(21.88, "about 22 s"), (0, "any moment now"), (90, "about 2 min")]
)
def test_eta_text_in_seconds(seconds: float, text: str) -> None:
    assert render.eta_text(None, seconds) == text


# -- API text is inert everywhere --------------------------------------------------------------

HOSTILE = "@everyone <@&123456789012345678> [link](https://evil.example) **bold** `x`"


def all_text(embed: discord.Embed) -> list[str]:
    texts = [embed.title or "", embed.description or "", embed.footer.text or ""]
    for field in embed.fields:
        texts += [field.name or "", field.value or ""]
    return texts


CODE_RE = re.compile(r"```.*?```|`[^`]*`", re.DOTALL)
LIVE_LINK_RE = re.compile(r"(?<!\\)\[[^\]]*\]\(")


def assert_text_inert(text: str) -> None:
    """No mention that pings; no markdown link that renders (outside code, where none does)."""
    assert "@everyone" not in text, text
    assert "<@&1" not in text, text
    assert not LIVE_LINK_RE.search(CODE_RE.sub("", text)), text


def assert_inert(embed: discord.Embed) -> None:
    for text in all_text(embed):
        assert_text_inert(text)


def test_hostile_api_text_is_inert_everywhere() -> None:
    step_line = f"Step:2 {HOSTILE}, 4 More Steps to go : ETA : 5 minutes"
    embeds = [
        render.status_embed(
            "T1", parse_status(200, body(HOSTILE.replace(" ", "_"), [step_line])), NOW
        ),
        render.status_embed("T1", parse_status(200, body("gpu @everyone", [])), NOW),
        render.status_embed(
            "T1", parse_status(200, body("training_failed", [step_line], message=HOSTILE)), NOW
        ),
        render.status_embed(
            RUN,
            parse_status(200, v6_body("training_cancelled", response_dump=HOSTILE), Api.V6),
            NOW,
        ),
        render.status_embed(
            RUN,
            parse_status(
                200,
                v6_body(
                    "training_completed",
                    model_id=HOSTILE,
                    inference={"status": "ready", "request": {HOSTILE: HOSTILE}},
                ),
                Api.V6,
            ),
            NOW,
        ),
        render.event_embed("T1", event_of(step_line, 1)),
        render.event_embed(
            "T1", Event(seq=1, kind=EventKind.STEP, number=2, label=HOSTILE, raw=HOSTILE)
        ),
        render.event_embed("T1", Event(seq=10**9, kind=EventKind.FAILED, detail=HOSTILE)),
        render.event_embed("T1", Event(seq=10**9, kind=EventKind.UNKNOWN, detail=HOSTILE)),
        render.event_embed(
            "T1",
            Event(
                seq=10**9,
                kind=EventKind.READY,
                detail=ModelInfo(HOSTILE, HOSTILE, ((HOSTILE, HOSTILE),)).to_json(),
            ),
        ),
    ]
    for embed in embeds:
        assert_inert(embed)
    step = render.event_embed("T1", event_of(step_line, 1))
    assert step.title is not None
    assert "\\[link\\]" in step.title or "\\[link]" in step.title  # shown as typed, not a link


def test_subscription_line_keeps_api_text_inert() -> None:
    sub = Subscription(
        id=1,
        kind=SubscriptionKind.CHANNEL,
        guild_id=1,
        channel_id=99,
        user_id=5,
        training_id="T1",
        key_ref="default",
        status=SubscriptionStatus.ACTIVE,
        reason=None,
        baseline_seq=0,
        created_at=0.0,
        state=HOSTILE,
        last_error=HOSTILE,
    )
    assert_text_inert(render.subscription_line(sub))


# -- API errors in words -----------------------------------------------------------------------

NOT_FOUND = TrainingNotFound(training_id="Mine000001")
ERRORS: list[tuple[SdApiError, str, str]] = [
    (
        InvalidTrainingId("v3", length=3),
        "That is not a valid training id: use the id the API returned",
        "letters, digits, - and _",
    ),
    (
        InvalidTrainingId("v6", length=3),
        "its ids are UUIDs, like `9b2f",
        "its ids are UUIDs, like 9b2f",
    ),
    (
        InvalidApiKey(api_message="Invalid Api Key"),
        "rejected the API key: Invalid Api Key.",
        "rejected the API key: Invalid Api Key.",
    ),
    (NOT_FOUND, "does not know training `Mine000001`;", "does not know training Mine000001;"),
    (TrainingNotFound(), "does not know this training id.", "does not know this training id."),
    (NoCredits(), "The API key has no credits left", "The API key has no credits left"),
    (ApiUnavailable(), "could not be reached", "could not be reached"),
    (
        ApiUnavailable("x (HTTP 503)", http_status=503),
        "X (HTTP 503).",
        "X (HTTP 503).",
    ),
    (
        ApiUnavailable("y", http_status=200, api_message="Failed, Try Again"),
        "failed to answer (Failed, Try Again); try again in a moment.",
        "failed to answer (Failed, Try Again); try again in a moment.",
    ),
    (
        ApiUnavailable("z", http_status=200, api_message=""),
        "answered with an error and no message",
        "answered with an error and no message",
    ),
    (
        ResponseTooLarge(1 << 20, declared=None, bytes_read=2 << 20, detail="d"),
        "larger than 1 MiB, which tunewatch does not read",
        "larger than 1 MiB, which tunewatch does not read",
    ),
    (
        UnexpectedResponse(api_message="Forbidden"),
        "refused the request: Forbidden.",
        "refused the request: Forbidden.",
    ),
    (UnexpectedResponse(), "could not read.", "could not read."),
]


@pytest.mark.parametrize(("exc", "discord_text", "plain_text"), ERRORS)
def test_api_errors_in_words(exc: SdApiError, discord_text: str, plain_text: str) -> None:
    text = render.api_error_text(exc)
    plain = render.api_error_plain(exc)
    assert discord_text in text
    assert plain_text in plain
    assert text.endswith(".")
    assert plain.endswith(".")
    assert "`" not in plain
    assert "<t:" not in plain


def test_rate_limit_in_words() -> None:
    exc = RateLimited(30, now=NOW)
    when = int(NOW.timestamp()) + 30
    assert render.api_error_text(exc) == (
        f"The Stable Diffusion API is rate limiting requests; try again <t:{when}:R>."
    )
    assert render.api_error_plain(exc, now=NOW) == (
        "The Stable Diffusion API is rate limiting requests; try again in 30 s."
    )


def test_api_words_in_an_error_are_inert_on_discord() -> None:
    assert_text_inert(render.api_error_text(UnexpectedResponse(api_message=HOSTILE)))
    assert HOSTILE in render.api_error_plain(UnexpectedResponse(api_message=HOSTILE))


def test_subscription_line_says_when_the_training_is_checked_next_and_why() -> None:
    sub = Subscription(
        id=1,
        kind=SubscriptionKind.CHANNEL,
        guild_id=1,
        channel_id=2,
        user_id=3,
        training_id="T1",
        key_ref="default",
        status=SubscriptionStatus.ACTIVE,
        reason=None,
        baseline_seq=-1,
        created_at=0.0,
        state="training_started",
        next_poll_at=1_900_000_000.5,
        poll_reason="ETA, clamped to minimum",
    )
    assert "next check <t:1900000000:R> (ETA, clamped to minimum)" in render.subscription_line(sub)
    done = dataclasses.replace(sub, status=SubscriptionStatus.DONE)
    assert "next check" not in render.subscription_line(done)
