"""What one answer changes (bot/tracking/outcome.py): pure, tested without I/O."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.events import TERMINAL_SEQ, EventKind
from bot.sdapi.errors import ApiUnavailable, NoCredits, RateLimited, TrainingNotFound
from bot.sdapi.status import TrainingStatus, parse_status
from bot.sdapi.timelines import DREAMBOOTH
from bot.store import DEFAULT_KEY_REF, Training
from bot.tracking import outcome
from bot.tracking.outcome import Rules
from bot.tracking.policy import Observation, PollPolicy, TrainingKind, observe

NOW = 1_000_000.0
RULES = Rules(interval=60, max_backoff=900, jitter=0.1, not_found_window=300)
LINES = [f"Step:{n} Stage {n}, {6 - n} Steps to go : ETA : {30 - n} minutes" for n in range(1, 6)]


def middle() -> float:
    return 0.5  # no jitter


def status(lines: int, state: str = "training_started", **extra: object) -> TrainingStatus:
    body = {"status": "success", "messege": state, "data": "\n".join(LINES[:lines]), **extra}
    return parse_status(200, json.dumps(body).encode())


def row(**fields: object) -> Training:
    base = {
        "training_id": "T1",
        "key_ref": DEFAULT_KEY_REF,
        "api": "v3",
        "state": "training_started",
        "last_seq": 1,
        "eta_minutes": 28,
        "total_steps": 6,
        "terminal": None,
        "failure_reason": None,
        "next_poll_at": NOW,
        "consecutive_errors": 0,
        "last_error": None,
        "not_found_count": 0,
        "first_not_found_at": None,
        "last_ok_at": NOW - 60,
        "failing_since": None,
    }
    base.update(fields)
    return Training(**base)  # type: ignore[arg-type]


def answer(training: Training | None, seen: TrainingStatus, now: float = NOW, **kw: object):
    return outcome.after_status(
        training,
        ("T1", DEFAULT_KEY_REF),
        seen,
        now,
        RULES,
        rand=middle,
        **kw,  # type: ignore[arg-type]
    )


def test_an_answer_the_row_already_records_writes_nothing() -> None:
    assert answer(row(), status(2)) is None


@pytest.mark.parametrize(
    "changed",
    [
        {"state": "deploying_gpu"},
        {"eta_minutes": 20},
        {"consecutive_errors": 2},
        {"not_found_count": 1},
        {"total_steps": 5},
    ],
)
def test_any_difference_is_written(changed: dict[str, object]) -> None:
    update = answer(row(**changed), status(2))
    assert update is not None
    assert update.answered
    assert update.events == []  # no new step: only the row changes


def test_new_steps_and_the_end_are_events() -> None:
    update = answer(row(), status(5, "model_ready"), planned_at=NOW + 60)
    assert update is not None
    assert [(e.seq, e.kind) for e in update.events] == [
        (2, EventKind.STEP),
        (3, EventKind.STEP),
        (4, EventKind.STEP),
        (TERMINAL_SEQ, EventKind.READY),
    ]
    assert update.events[0].number == 3
    assert update.next_poll_at == NOW + 63  # the interval, with half of the (upward) jitter
    assert update.planned_at == NOW + 60
    assert not any(e.late for e in update.events)


def test_a_failure_carries_its_reason() -> None:
    update = answer(row(), status(2, "training_failed", message="CUDA out of memory"))
    assert update is not None
    (end,) = update.events
    assert (end.kind, end.detail) == (EventKind.FAILED, "CUDA out of memory")


def test_a_training_not_recorded_yet_shows_everything() -> None:
    update = answer(None, status(3))
    assert update is not None
    assert [e.seq for e in update.events] == [0, 1, 2]


@pytest.mark.parametrize(
    ("fields", "late"),
    [
        ({}, False),
        ({"next_poll_at": NOW - 200}, True),  # the poll was long overdue: the bot was down
        ({"failing_since": NOW - 200, "consecutive_errors": 3}, True),  # the API was down
        ({"failing_since": NOW - 20, "consecutive_errors": 1}, False),  # a short hiccup
    ],
)
def test_steps_after_a_gap_are_late(fields: dict[str, object], late: bool) -> None:
    update = answer(row(**fields), status(3))
    assert update is not None
    assert [e.late for e in update.events] == [late]


def test_a_flood_of_steps_is_folded_into_one_message() -> None:
    lines = [f"Step:{n} Stage, 1 Steps to go" for n in range(1, 100_001)]
    body = {"status": "success", "messege": "training_started", "data": "\n".join(lines)}
    update = answer(None, parse_status(200, json.dumps(body).encode()))
    assert update is not None
    assert len(update.events) == RULES.steps_per_poll
    *kept, folded = update.events
    assert [e.folded for e in kept] == [0] * (RULES.steps_per_poll - 1)
    assert folded.seq == 99_999  # the latest step, standing for the rest
    assert folded.folded == 100_000 - RULES.steps_per_poll


def test_past_the_training_cap_each_answer_makes_one_message() -> None:
    lines = [f"Step:{n} Stage, 1 Steps to go" for n in range(1, 71)]
    body = {"status": "success", "messege": "training_started", "data": "\n".join(lines)}
    update = answer(row(last_seq=59), parse_status(200, json.dumps(body).encode()))
    assert update is not None
    assert [(e.seq, e.folded) for e in update.events] == [(69, 9)]


def test_errors_back_off_doubling_up_to_the_cap() -> None:
    delays = []
    training = row()
    for _ in range(6):
        update = outcome.after_error(training, ApiUnavailable("x"), NOW, RULES, rand=lambda: 0.0)
        delays.append(update.next_poll_at - NOW)
        training = training._replace(consecutive_errors=update.consecutive_errors)
    assert delays == [60, 120, 240, 480, 900, 900]


def test_an_error_keeps_when_the_failing_started() -> None:
    first = outcome.after_error(row(), ApiUnavailable("x"), NOW, RULES, rand=middle)
    assert first.failing_since == NOW
    later = outcome.after_error(
        row(consecutive_errors=1, failing_since=NOW), ApiUnavailable("x"), NOW + 60, RULES
    )
    assert later.failing_since == NOW
    assert later.last_error == ApiUnavailable("x").reason


def test_rate_limits_wait_at_least_what_the_api_asks() -> None:
    update = outcome.after_error(row(), RateLimited(600.0), NOW, RULES, rand=middle)
    assert update.next_poll_at >= NOW + 600


def test_no_credits_waits_the_longest_and_keeps_the_training() -> None:
    update = outcome.after_error(row(), NoCredits("no credits"), NOW, RULES, rand=middle)
    assert update.next_poll_at == NOW + RULES.max_backoff
    assert update.events == ()


def test_not_found_ends_the_training_only_after_repeating_long_enough() -> None:
    missing = TrainingNotFound("unknown")
    first = outcome.after_error(row(), missing, NOW, RULES)
    assert (first.not_found_count, first.first_not_found_at, first.events) == (1, NOW, ())
    third_too_soon = outcome.after_error(
        row(not_found_count=2, first_not_found_at=NOW), missing, NOW + 100, RULES
    )
    assert third_too_soon.events == ()
    third = outcome.after_error(
        row(not_found_count=2, first_not_found_at=NOW), missing, NOW + 300, RULES
    )
    assert [e.kind for e in third.events] == [EventKind.UNKNOWN]


@given(errors=st.integers(0, 10_000), rand=st.floats(0, 1))
def test_backoff_stays_within_its_bounds(errors: int, rand: float) -> None:
    at = outcome.backoff(errors, NOW, RULES, lambda: rand)
    assert NOW + RULES.interval * 0.9 <= at <= NOW + RULES.max_backoff * 1.1


# The provider's trainer wording up to uploading (the simulator's Dreambooth run, which the
# corpus test holds to the trainer's own lines).
TRAINER_LINES = [stage.line for stage in DREAMBOOTH.stages if stage.line is not None][:4]


@pytest.mark.parametrize(
    ("lines", "kind"),
    [
        (TRAINER_LINES, TrainingKind.DREAMBOOTH),
        ([line for line in TRAINER_LINES if "Compressing" not in line], TrainingKind.LORA),
    ],
)
def test_the_kind_comes_from_every_line_of_the_log_not_only_the_stages_polls_saw(
    lines: list[str], kind: TrainingKind
) -> None:
    # The polls saw "training started", then (compressing fell between two polls) "uploading":
    # the log still has the compressing line, and that makes the run a Dreambooth one.
    adaptive = Rules(interval=30, policy=PollPolicy.ADAPTIVE)
    before = observe(None, NOW - 1200, stage="training started", polled_before=None)
    body = {"status": "success", "messege": "trained_model_uploading", "data": " /n ".join(lines)}
    update = outcome.after_status(
        row(last_polled_at=NOW - 150),
        ("T1", DEFAULT_KEY_REF),
        parse_status(200, json.dumps(body).encode()),
        NOW,
        adaptive,
        previous=before,
        rand=middle,
    )
    assert update is not None
    assert update.observation is not None
    after = Observation.from_dict(json.loads(update.observation))
    assert after.current.stage == "model uploading"
    assert after.kind is kind
