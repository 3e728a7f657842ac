"""Rendering of the styles' messages, mentions, buttons, lists and terminal text, by tables of
cases: the live message as a function of the story, the final and DM messages, who may be
pinged, custom ids, /training-list pages, and the CLI's lines."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import UTC, datetime

import discord
import pytest

from bot import render
from bot.events import TERMINAL_SEQ, Event, EventKind
from bot.render import components, replies
from bot.render.live import STEP_LINES_SHOWN, Origin, training_duration
from bot.render.text import raw_state_words
from bot.sdapi.status import Api, ModelInfo, parse_status
from bot.store import (
    Mention,
    MentionKind,
    MentionOn,
    Story,
    Style,
    Subscription,
    SubscriptionKind,
    SubscriptionStatus,
)

T0 = 1_800_000_000.0
HOSTILE = "@everyone <@&123456789012345678> [link](https://evil.example) **bold** `tick`"


def step(n: int, *, eta: int | None = 10, elapsed: float | None = None, label: str = "") -> Event:
    return Event(
        seq=n - 1,
        kind=EventKind.STEP,
        number=n,
        label=label or f"Label {n}",
        steps_to_go=6 - n,
        eta_minutes=eta,
        raw=f"Step:{n} Label {n}, {6 - n} Steps to go : ETA : {eta} minutes",
        elapsed_seconds=elapsed,
    )


READY = Event(seq=TERMINAL_SEQ, kind=EventKind.READY)
FAILED = Event(seq=TERMINAL_SEQ, kind=EventKind.FAILED, detail="Disk full")
UNKNOWN = Event(seq=TERMINAL_SEQ, kind=EventKind.UNKNOWN)


def story(*events: Event, every: float = 60.0, state: str | None = None, tid: str = "T1") -> Story:
    return Story(
        training_id=tid,
        first_seen_at=T0,
        events=tuple((e, T0 + every * i) for i, e in enumerate(events)),
        state=state,
    )


def lines_of(embed: discord.Embed) -> list[str]:
    return (embed.description or "").splitlines()


# -- the live message --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("the_story", "title", "colour", "first_line"),
    [
        (
            story(state="deploying_gpu"),
            "Training T1",
            render.COLOUR_RUNNING,
            "Waiting for the first step (Getting a GPU ready).",
        ),
        (
            story(step(1), step(2, eta=15)),
            "Training T1",
            render.COLOUR_RUNNING,
            f"▰▰▰▰▱▱▱▱▱▱▱▱ 2/6 steps · ETA <t:{int(T0 + 60 + 15 * 60)}:R>",
        ),
        (
            story(step(1), step(2), READY),
            "Training T1 · Model ready",
            render.COLOUR_READY,
            "▰▰▰▰▰▰▰▰▰▰▰▰ 6/6 steps",
        ),
        (
            story(step(1), FAILED),
            "Training T1 · Training failed",
            render.COLOUR_FAILED,
            "▰▰▱▱▱▱▱▱▱▱▱▱ 1/6 steps",
        ),
        (
            story(UNKNOWN),
            "Training T1 · Training unknown",
            render.COLOUR_UNKNOWN,
            "No step was recorded.",
        ),
    ],
)
def test_live_message_by_story(
    the_story: Story, title: str, colour: discord.Colour, first_line: str
) -> None:
    embed = render.live_embed(the_story)
    assert embed.title == title
    assert embed.colour == colour
    assert lines_of(embed)[0] == first_line
    assert embed.footer.text == "Updated"
    # The same story renders the same message: an edit done twice shows one state.
    assert render.live_embed(the_story).to_dict() == embed.to_dict()


def test_live_message_lists_each_step_with_its_time() -> None:
    embed = render.live_embed(story(step(1), step(2), step(3)))
    assert lines_of(embed)[2:] == [
        f"<t:{int(T0)}:t> Step 1: Label 1",
        f"<t:{int(T0 + 60)}:t> Step 2: Label 2",
        f"<t:{int(T0 + 120)}:t> Step 3: Label 3",
    ]
    assert embed.timestamp == datetime.fromtimestamp(T0 + 120, UTC)


def test_live_message_final_form_says_how_long_the_model_and_what_next() -> None:
    embed = render.live_embed(story(step(1, elapsed=40.0), step(2, elapsed=1100.0), READY))
    text = lines_of(embed)
    # The trainer's clock: 1,100 s at step 2 (seen at T0+60), the end seen at T0+120.
    assert text[-2:] == ["Took about 19 min.", "Next: generate images with model_id `T1`."]
    failed = lines_of(render.live_embed(story(step(1), FAILED)))
    assert failed[-3:] == [
        "Reason: Disk full",
        "Took at least 1 min (since tunewatch first saw it).",
        "Next: fix the cause, then start a new training; /training-status `T1` shows its log.",
    ]


def test_thread_summary_points_at_its_thread_until_the_end() -> None:
    running = render.live_embed(story(step(1)), thread=True)
    assert lines_of(running)[-1] == "Each step is posted in the thread under this message."
    ended = render.live_embed(story(step(1), READY), thread=True)
    assert "thread" not in (ended.description or "")


def test_live_message_keeps_the_latest_steps_and_api_text_inert() -> None:
    steps = [replace(step(1, label=HOSTILE), seq=i, number=1) for i in range(STEP_LINES_SHOWN + 5)]
    embed = render.live_embed(story(*steps, FAILED, tid="T1"))
    text = embed.description or ""
    assert lines_of(embed)[2] == "… 5 earlier steps"
    assert text.count(" Step 1: ") == STEP_LINES_SHOWN
    assert "@everyone" not in text
    assert "<@&123456789012345678>" not in text
    assert "\\[link](https://evil.example)" in text  # shown as typed, not a link
    assert len(text) <= render.DESCRIPTION_LIMIT


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        ((), None),
        ((step(1),), (0.0, False)),
        ((step(1), step(2), READY), (120.0, False)),  # since tunewatch first saw it
        ((step(1, elapsed=50.0), READY), (110.0, True)),  # the trainer's clock, then the wait
        ((step(1, elapsed=50.0), step(2), READY), (170.0, True)),  # its last stated time
    ],
)
def test_training_duration(events: tuple[Event, ...], expected: tuple[float, bool] | None) -> None:
    assert training_duration(story(*events)) == expected


# -- final messages and the DM -----------------------------------------------------------------


def test_final_message_full_and_short() -> None:
    full = render.final_embed(story(step(1), READY))
    assert full.title == "T1 · Model ready"
    assert lines_of(full) == [
        "The training finished and the model is ready to use.",
        "Took at least 1 min (since tunewatch first saw it).",
        "Next: generate images with model_id `T1`.",
    ]
    short = render.final_embed(story(step(1), FAILED), short=True)
    assert short.title == "T1 · Training failed"
    assert lines_of(short)[0] == "Reason: Disk full"
    assert short.fields == []
    with pytest.raises(ValueError, match="not ended"):
        render.final_embed(story(step(1)))


def test_final_message_of_a_v6_run_names_its_model_once() -> None:
    model = ModelInfo("lora-abc", "https://modelslab.com/api/v6/images/text2img", (("a", "b"),))
    ready = replace(READY, detail=model.to_json())
    v6 = "9b2f6c1e-4d3a-4f8e-a1b2-3c4d5e6f7a8b"
    full = render.final_embed(story(ready, tid=v6))
    assert [f.name for f in full.fields] == ["Model", "Generate with it"]
    assert lines_of(full)[-1] == "Next: generate images with model_id `lora-abc`."
    plain_v6 = render.final_embed(story(READY, tid=v6))
    assert lines_of(plain_v6)[-1] == "Next: generate images with the new model."


@pytest.mark.parametrize(
    ("origin", "first_line"),
    [
        (None, "From your DM alert (/training-notify)."),
        (Origin(1, 2), "From a channel in a server."),
        (Origin(1, 2, None, "Trainers", "training-log"), "From #training-log in **Trainers**."),
        (
            Origin(1, 2, 3, "Trainers", "training-log"),
            "From #training-log in **Trainers** · "
            "[the live message](https://discord.com/channels/1/2/3).",
        ),
        (
            Origin(1, 2, None, HOSTILE, "x"),
            "From #x in **"
            + discord.utils.escape_mentions(discord.utils.escape_markdown(HOSTILE))
            + "**.",
        ),
    ],
)
def test_dm_names_where_it_came_from(origin: Origin | None, first_line: str) -> None:
    embed = render.dm_embed(story(step(1), READY), origin)
    assert lines_of(embed)[0] == first_line
    assert embed.title == "T1 · Model ready"
    assert "Took" in (embed.description or "")


# -- who may be pinged -------------------------------------------------------------------------

ROLE = Mention(MentionKind.ROLE, 555, MentionOn.READY)
MEMBER = Mention(MentionKind.USER, 777, MentionOn.BOTH)


@pytest.mark.parametrize(
    ("mention", "outcome", "content", "allowed"),
    [
        (None, EventKind.READY, None, {"parse": []}),
        (ROLE, None, None, {"parse": []}),  # not a final message
        (ROLE, EventKind.READY, "<@&555>", {"parse": [], "roles": [555]}),
        (ROLE, EventKind.FAILED, None, {"parse": []}),
        (MEMBER, EventKind.FAILED, "<@777>", {"parse": [], "users": [777]}),
        (MEMBER, EventKind.UNKNOWN, "<@777>", {"parse": [], "users": [777]}),
    ],
)
def test_exactly_who_may_be_pinged(
    mention: Mention | None,
    outcome: EventKind | None,
    content: str | None,
    allowed: dict[str, object],
) -> None:
    assert render.ping_content(mention, outcome) == content
    assert render.allowed_mentions(mention, outcome).to_dict() == allowed


# -- buttons -----------------------------------------------------------------------------------


def test_custom_ids_carry_what_a_click_needs() -> None:
    long_id = "x" * 64
    for action in ("refresh", "dm", "unsub"):
        custom_id = components.sub_custom_id(action, 2**63 - 1)
        match = components.matches(components.SUB_ID, custom_id)
        assert match is not None
        assert (match["action"], match["sub"]) == (action, str(2**63 - 1))
    for action in ("refresh", "follow", "dm"):
        custom_id = components.training_custom_id(action, long_id, Api.V6)
        assert len(custom_id) <= 100
        match = components.matches(components.TRAINING_ID, custom_id)
        assert match is not None
        assert (match["api"], match["training"]) == ("v6", long_id)
    assert components.matches(components.SUB_ID, "tw:refresh:s:1x") is None
    assert components.matches(components.TRAINING_ID, "tw:refresh:t:v3:a b") is None


def test_button_rows() -> None:
    row = components.subscription_buttons(7)
    assert [(b.label, b.custom_id) for b in row.children] == [  # type: ignore[attr-defined]
        ("Refresh", "tw:refresh:s:7"),
        ("DM me when ready", "tw:dm:s:7"),
        ("Unsubscribe", "tw:unsub:s:7"),
    ]
    assert not row.is_dispatchable()  # discord.py keeps no view per message sent
    assert row.is_finished()
    in_dm = components.status_buttons("T1", Api.V3, in_guild=False)
    assert [b.label for b in in_dm.children] == ["Refresh", "DM me when ready"]  # type: ignore[attr-defined]
    assert components.list_buttons(1, 1, False) is None
    pages = components.list_buttons(2, 3, True)
    assert pages is not None
    assert [b.custom_id for b in pages.children] == ["tw:list:1:1", "tw:list:3:1"]  # type: ignore[attr-defined]
    assert components.disabled([]).children == []


# -- /training-list ----------------------------------------------------------------------------


def sub(n: int, **changes: object) -> Subscription:
    base = Subscription(
        id=n,
        kind=SubscriptionKind.CHANNEL,
        guild_id=1,
        channel_id=100 + n,
        user_id=5,
        training_id=f"T{n}",
        key_ref="default",
        status=SubscriptionStatus.ACTIVE,
        reason=None,
        baseline_seq=0,
        created_at=0.0,
        state="training_started",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("subscription", "line"),
    [
        (sub(1), "`T1` → <#101> · Training"),
        (
            sub(2, style=Style.LIVE, mention=ROLE),
            "`T2` → <#102> · Training · live message · pings <@&555> when ready",
        ),
        (
            sub(3, style=Style.THREAD, state="odd_state"),
            "`T3` → <#103> · state `odd_state` · thread",
        ),
        (
            sub(4, terminal=EventKind.FAILED, status=SubscriptionStatus.DONE),
            "`T4` → <#104> · Training failed · done",
        ),
        (
            sub(5, kind=SubscriptionKind.DM, channel_id=None, style=Style.LIVE, state=None),
            "`T5` → your DMs · not checked yet",
        ),
    ],
)
def test_subscription_lines_in_words(subscription: Subscription, line: str) -> None:
    assert render.subscription_line(subscription) == line


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (None, "not checked yet"),
        ("deploying_gpu", "Getting a GPU ready"),
        ("MODEL_READY", "Model ready"),
        ("training_canceled", "Training cancelled"),
        ("something_new", "state `something_new`"),
        ("`@everyone`", "state `\u02cb@\u200beveryone\u02cb`"),
    ],
)
def test_raw_states_in_words(raw: str | None, words: str) -> None:
    assert raw_state_words(raw) == words


def test_list_pages() -> None:
    listing = render.Listing(server=[sub(i) for i in range(1, 16)], alerts=[sub(99)], hidden=2)
    assert render.list_pages(listing) == 2
    first, page = render.list_embed(listing, 1)
    assert page == 1
    text = first.description or ""
    assert text.startswith("**This server** (15 active)\n`T1` →")
    assert "**Your DM alerts**" not in text
    assert text.endswith(
        "_2 finished more than 24 hours ago are hidden: show_finished: True shows them._"
    )
    assert first.footer.text == "Page 1 of 2"
    last, page = render.list_embed(listing, 99)  # clamped
    assert page == 2
    assert (last.description or "").startswith("**This server** (15 active)\n`T11` →")
    assert "**Your DM alerts**\n`T99` →" in (last.description or "")
    empty, _ = render.list_embed(render.Listing(server=None, alerts=[]), 1)
    assert empty.description == "**Your DM alerts**\nNo DM alerts."
    assert empty.footer.text is None


# -- replies -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("style", "mention", "expected"),
    [
        (Style.STEPS, None, "a message will be posted here as each step completes (silently"),
        (
            Style.LIVE,
            ROLE,
            "kept up to date as each step completes, and a short message follows it when the "
            "training ends, pinging <@&555> when the model is ready.",
        ),
        (
            Style.THREAD,
            MEMBER,
            "a thread under the message below gets a message as each step completes, and the "
            "result is posted in this channel, pinging <@777> when the training ends.",
        ),
        (
            Style.FINAL,
            None,
            "one message will be posted here when the model is ready or the training fails.",
        ),
    ],
)
def test_subscribed_text_promises_what_the_style_does(
    style: Style, mention: Mention | None, expected: str
) -> None:
    text = replies.subscribed_text("T1", style, mention)
    assert text.startswith("Subscribed this channel to `T1`: ")
    assert expected in text
    assert text.endswith("Current status:")


def test_limits_say_how_to_free_a_slot() -> None:
    assert "/training-unsubscribe in its channel" in replies.guild_limit_text(50)
    assert "/training-notify and its id with off: True" in replies.dm_limit_text(25)
    assert replies.thread_permissions_text(["A", "B"]).startswith(
        "The thread style needs tunewatch to have A and B in this channel: grant them"
    )


# -- the terminal ------------------------------------------------------------------------------


def terminal_status(state: str, lines: list[str], **extra: str):  # type: ignore[no-untyped-def]
    body = json.dumps({"status": "success", "messege": state, "data": "\n".join(lines), **extra})
    return parse_status(200, body.encode())


def test_watch_line_and_json_have_no_discord_markup() -> None:
    status = terminal_status(
        "training_failed",
        ["Step:1 Training Started, 5 Steps to go : ETA : 30 minutes"],
        message="\x1b[31mboom `x` <t:1:R>",
    )
    checked = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    line = render.watch_line("T1", status, checked)
    assert line.startswith("T1 · ▰▰▱▱▱▱▱▱▱▱▱▱ 1/6 steps · Training failed · \ufffd[31mboom")
    assert "\x1b" not in line
    as_json = render.status_json("T1", status)
    assert json.loads(json.dumps(as_json)) == as_json
    assert as_json["failed"] is True
    assert as_json["steps"][0]["line"].startswith("Step:1 Training Started")
    assert re.search(r"\x1b", json.dumps(as_json)) is None  # JSON escapes it
