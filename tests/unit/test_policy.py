"""The poll policy (issue 18): pure, so tables of cases and properties over bad input."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.tracking.policy import (
    Bounds,
    Clamp,
    Learned,
    Observation,
    PollPlan,
    PollPolicy,
    Reason,
    RunRecord,
    Sighting,
    StageStats,
    TrainingKind,
    expect_stage_end,
    infer_kind,
    learn_stage_lengths,
    observe,
    plan_next_poll,
    stage_key,
)

BOUNDS = Bounds()  # 30 s to 150 s, 10 % jitter
T0 = 1_700_000_000.0  # a Unix time

# The observed Dreambooth run (issue 18): stage, length, ETA on its line.
DREAMBOOTH = (
    ("deploying_gpu", 41.0, None),
    ("training started", 1062.0, 60),
    ("training done", 87.0, 15),
    ("model compressing", 47.0, 25),
    ("model uploading", 265.0, 20),
    ("model uploaded", 180.0, 10),
)
LORA = (
    ("deploying_gpu", 41.0, None),
    ("training started", 585.0, 40),
    ("training done", 47.0, 12),
    ("model uploading", 265.0, 20),
    ("model uploaded", 180.0, 10),
)
V6 = (("training_started", 1650.0, None), ("training_completed", 120.0, None))


def half() -> float:
    return 0.5


def run_record(
    kind: TrainingKind,
    shape: Sequence[tuple[str, float, int | None]],
    rng: random.Random,
    *,
    spread: float = 0.1,
    poll: float = 30.0,
    stamps: bool = True,
    job: float = 0.0,
) -> RunRecord:
    """A finished run as the polls saw it: each change seen by the first poll after it (polls
    every ``poll`` seconds at a random phase), lines stamped with the trainer's elapsed time.
    Each stage varies by ``spread``; the training proper also by the job's size (``job``),
    which its ETA follows."""
    phase = rng.uniform(0, poll)
    zero = T0 + rng.uniform(0, 10)
    size = math.exp(rng.gauss(0, job))
    t = T0
    changes = []
    for stage, length, eta in shape:
        scale = size if stage in ("training started", "training_started") else 1.0
        changes.append((stage, t, None if eta is None else round(eta * scale)))
        t += length * scale * math.exp(rng.gauss(0, spread))
    sightings = []
    for i, (stage, at, eta) in enumerate(changes):
        if i == 0:
            sightings.append(Sighting(stage, at, None, eta, at, None, at, None))
            continue
        seen = T0 + phase + math.ceil((at - T0 - phase) / poll) * poll
        elapsed = at - zero if stamps and stage != "deploying_gpu" else None
        sightings.append(Sighting(stage, seen, seen - poll, eta, seen, elapsed))
    seen = T0 + phase + math.ceil((t - T0 - phase) / poll) * poll
    return RunRecord(kind, sightings, Sighting("ready", seen, seen - poll, None, None, None))


def learned_from(*shapes: tuple[TrainingKind, Sequence[tuple[str, float, int | None]]]) -> Learned:
    rng = random.Random(18)
    return learn_stage_lengths(
        run_record(kind, shape, rng, job=0.25) for kind, shape in shapes for _ in range(60)
    )


LEARNED = learned_from(
    (TrainingKind.DREAMBOOTH, DREAMBOOTH), (TrainingKind.LORA, LORA), (TrainingKind.V6, V6)
)


def obs_in(
    stage: str,
    began: float,
    *,
    kind: TrainingKind = TrainingKind.DREAMBOOTH,
    eta: float | None = None,
    spread: float | None = 1.0,
) -> Observation:
    """A training in ``stage`` since ``began``, seen a second later."""
    current = Sighting(stage, began + 1, began - 29, eta, began + 1, None, began, spread)
    first = Sighting("deploying_gpu", T0 - 100, None, None, None, None, T0 - 100, None)
    return Observation(kind, T0 - 100, (first, current))


def gap(plan: PollPlan, now: float) -> float:
    return plan.at - now


# -- settings --------------------------------------------------------------------------------------


def test_bounds_from_settings_default_the_longest_gap_to_five_intervals() -> None:
    assert Bounds.from_settings(30.0) == Bounds(30.0, 150.0, 0.1)
    assert Bounds.from_settings(10.0, 600.0, 0.0) == Bounds(10.0, 600.0, 0.0)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ((0.0, 150.0), "shortest"),
        ((-5.0, 150.0), "shortest"),
        ((math.nan, 150.0), "shortest"),
        ((30.0, 20.0), "longest"),
        ((30.0, math.inf), "longest"),
        ((30.0, 2e9), "longest"),
        ((30.0, 150.0, 1.0), "jitter"),
        ((30.0, 150.0, -0.1), "jitter"),
    ],
)
def test_bounds_refuse_impossible_settings_with_a_clear_error(
    args: tuple[float, ...], words: str
) -> None:
    with pytest.raises(ValueError, match=words):
        Bounds(*args)


# -- what is known of a training ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("label", "state", "key"),
    [
        ("Training  Started ", "training_started", "training started"),
        (None, "deploying_gpu", "deploying_gpu"),
        ("", "Deploying_GPU", "deploying_gpu"),
        ("   ", None, "unknown"),
        (None, None, "unknown"),
    ],
)
def test_stage_key_is_the_last_label_else_the_state(
    label: str | None, state: str | None, key: str
) -> None:
    assert stage_key(label, state) == key


@pytest.mark.parametrize(
    ("training_id", "stages", "kind"),
    [
        ("F5jvdzGnYi", ["deploying_gpu", "training started"], TrainingKind.UNKNOWN),
        ("F5jvdzGnYi", ["training done", "model compressing"], TrainingKind.DREAMBOOTH),
        ("F5jvdzGnYi", ["training done", "model uploading"], TrainingKind.LORA),
        ("F5jvdzGnYi", ["model compressing", "model uploading"], TrainingKind.DREAMBOOTH),
        ("3f0c2a8e-1b2c-4d5e-8f90-a1b2c3d4e5f6", ["training_started"], TrainingKind.V6),
        ("3F0C2A8E1B2C4D5E8F90A1B2C3D4E5F6", [], TrainingKind.V6),
    ],
)
def test_infer_kind(training_id: str, stages: list[str], kind: TrainingKind) -> None:
    assert infer_kind(training_id, stages) is kind


def test_observe_keeps_the_same_object_while_nothing_changes() -> None:
    first = observe(None, T0, stage="deploying_gpu", polled_before=None)
    assert first.current == Sighting("deploying_gpu", T0, None, None, None, None, T0, None)
    assert first.first_seen_at == T0
    again = observe(first, T0 + 30, stage="deploying_gpu", polled_before=T0, learned=LEARNED)
    assert again is first


def test_observe_places_a_new_stage_between_the_two_polls() -> None:
    obs = observe(None, T0, stage="deploying_gpu", polled_before=None)
    obs = observe(
        obs,
        T0 + 60,
        stage="training started",
        polled_before=T0 + 30,
        eta_minutes=60,
        elapsed_seconds=35.0,
        kind=TrainingKind.UNKNOWN,
        learned=LEARNED,
    )
    current = obs.current
    assert [s.stage for s in obs.stages] == ["deploying_gpu", "training started"]
    assert (current.seen_at, current.unseen_at, current.eta_minutes) == (T0 + 60, T0 + 30, 60)
    assert current.began_at is not None
    assert current.began_spread is not None
    assert T0 + 30 <= current.began_at <= T0 + 60
    # The learned ~41 s from the first poll is where it most likely happened.
    assert current.began_at == pytest.approx(T0 + 41, abs=4)


def test_the_trainers_stamps_pin_when_a_stage_began() -> None:
    # The trainer's clock read 0 at T0 + 5; lines at elapsed 36 and 1098 (our T0+41, T0+1103).
    obs = observe(None, T0, stage="deploying_gpu", polled_before=None)
    obs = observe(obs, T0 + 42, stage="a", polled_before=T0 + 30, elapsed_seconds=36.0)
    assert obs.current.began_at == pytest.approx(T0 + 36, abs=6.1)
    # Seen 29 s after it happened; no learned figures: the stamps alone narrow the window.
    obs = observe(obs, T0 + 1132, stage="b", polled_before=T0 + 1072, elapsed_seconds=1098.0)
    current = obs.current
    assert current.began_spread is not None
    assert current.began_spread < 10  # against 17 for the bare 60 s window
    assert current.began_at == pytest.approx(T0 + 1103, abs=6.1)


def test_observe_follows_eta_kind_and_the_end() -> None:
    obs = observe(None, T0, stage="a", polled_before=None, kind=TrainingKind.LORA)
    obs = observe(obs, T0 + 30, stage="a", polled_before=T0, eta_minutes=20)
    assert (obs.current.eta_minutes, obs.current.eta_seen_at) == (20, T0 + 30)
    assert obs.kind is TrainingKind.LORA  # not forgotten for an UNKNOWN
    obs = observe(obs, T0 + 60, stage="a", polled_before=T0 + 30, eta_minutes=math.nan)
    assert obs.current.eta_minutes is None
    assert not obs.finished
    assert obs.run_record() is None
    done = observe(obs, T0 + 90, stage="a", polled_before=T0 + 60, finished=True)
    assert done.finished
    assert done.ended is not None
    assert (done.ended.seen_at, done.ended.unseen_at) == (T0 + 90, T0 + 60)
    record = done.run_record()
    assert record is not None
    assert record.ended == done.ended
    assert observe(done, T0 + 120, stage="a", polled_before=T0 + 90, finished=True) is done


def test_a_stage_and_the_end_seen_at_once_are_both_kept() -> None:
    obs = observe(None, T0, stage="model uploading", polled_before=None)
    obs = observe(
        obs, T0 + 150, stage="model uploaded", polled_before=T0, elapsed_seconds=90.0, finished=True
    )
    assert [s.stage for s in obs.stages] == ["model uploading", "model uploaded"]
    assert obs.ended is not None
    assert obs.ended.elapsed_seconds is None  # the stamp is the line's, not the end's


def test_an_observation_survives_the_store() -> None:
    obs = observe(None, T0, stage="deploying_gpu", polled_before=None)
    obs = observe(obs, T0 + 45, stage="training started", polled_before=T0, eta_minutes=60)
    obs = observe(obs, T0 + 60, stage="training started", polled_before=T0 + 45, finished=True)
    data = json.loads(json.dumps(obs.to_dict()))
    assert Observation.from_dict(data) == obs


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"v": 2},
        {"v": 1, "kind": "dreambooth", "first_seen_at": 1.0, "stages": [], "ended": None},
        {"v": 1, "kind": "nope", "first_seen_at": 1.0, "stages": [], "ended": None},
        {"v": 1, "kind": "lora", "first_seen_at": "x", "stages": [], "ended": None},
        {"v": 1, "kind": "lora", "first_seen_at": 1.0, "stages": [[1, 2]], "ended": None},
        {"v": 1, "kind": "lora", "first_seen_at": 1.0, "stages": "ab", "ended": None},
    ],
)
def test_a_damaged_stored_observation_is_a_clear_error(data: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="not a stored poll observation"):
        Observation.from_dict(data)


# -- learning --------------------------------------------------------------------------------------


def test_learning_recovers_each_stage_per_kind() -> None:
    for kind, shape in ((TrainingKind.DREAMBOOTH, DREAMBOOTH), (TrainingKind.LORA, LORA)):
        for stage, length, _ in shape:
            stats = LEARNED.get(kind, stage)
            assert stats is not None, (kind, stage)
            if stage == "training started":  # the job's size varies it by a quarter more
                assert stats.length == pytest.approx(length, rel=0.1), kind
                assert stats.spread == pytest.approx(0.27 * length, rel=0.35), kind
                continue
            # 10 % spread around the length, 60 runs: the fit lands within a few percent.
            assert stats.length == pytest.approx(length, rel=0.05, abs=3), (kind, stage)
            assert stats.spread == pytest.approx(0.1 * length, rel=0.35), (kind, stage)
    assert LEARNED.get(TrainingKind.V6, "training_started") is not None
    # Pooled over every kind, for a run whose kind does not show yet.
    pooled = LEARNED.stats[(TrainingKind.UNKNOWN, "training started")]
    assert pooled.samples == 120
    assert 585 < pooled.length < 1062


def test_learning_from_the_poll_windows_alone_is_not_biased_by_where_polls_fell() -> None:
    rng = random.Random(5)
    runs = [
        run_record(TrainingKind.LORA, LORA, rng, stamps=False, poll=rng.choice((30.0, 60.0)))
        for _ in range(200)
    ]
    stats = learn_stage_lengths(runs).get(TrainingKind.LORA, "model uploading")
    assert stats is not None
    assert stats.length == pytest.approx(265, abs=6)
    assert stats.spread == pytest.approx(26.5, rel=0.3)


def test_outliers_and_impossible_lengths_do_not_count() -> None:
    rng = random.Random(7)
    runs = [run_record(TrainingKind.LORA, LORA, rng) for _ in range(50)]
    clean = learn_stage_lengths(runs).get(TrainingKind.LORA, "model uploading")
    stalled = run_record(TrainingKind.LORA, (*LORA[:3], ("model uploading", 3600.0, 20)), rng)
    backwards = run_record(TrainingKind.LORA, (*LORA[:3], ("model uploading", -500.0, 20)), rng)
    runs += [stalled, backwards]
    dirty = learn_stage_lengths(runs).get(TrainingKind.LORA, "model uploading")
    assert clean is not None
    assert dirty is not None
    assert dirty.samples == clean.samples  # both dropped
    assert dirty.length == pytest.approx(clean.length, abs=1)


def test_learning_relates_the_eta_to_the_stage_length() -> None:
    rng = random.Random(9)
    runs = []
    for _ in range(80):
        eta = rng.randint(30, 90)
        shape = (("deploying_gpu", 41.0, None), ("training started", 20.0 * eta - 300, eta))
        runs.append(run_record(TrainingKind.DREAMBOOTH, shape, rng, spread=0.02))
    stats = learn_stage_lengths(runs).get(TrainingKind.DREAMBOOTH, "training started")
    assert stats is not None
    assert stats.eta_slope == pytest.approx(20, rel=0.1)
    assert stats.eta_intercept == pytest.approx(-300, abs=150)
    assert stats.eta_spread is not None
    assert stats.eta_spread < stats.spread / 5


def test_too_few_runs_teach_nothing() -> None:
    learned = learn_stage_lengths(
        [run_record(TrainingKind.LORA, LORA, random.Random(i)) for i in range(2)]
    )
    assert learned.get(TrainingKind.LORA, "model uploading") is None
    assert learned.get(TrainingKind.LORA, "model uploading", min_samples=2) is not None


# -- planning: the normal cases --------------------------------------------------------------------


def test_fixed_polls_at_the_interval_plus_jitter_never_below_it() -> None:
    obs = obs_in("training started", T0, eta=60)
    gaps = [
        gap(plan_next_poll(obs, T0 + 10, BOUNDS, PollPolicy.FIXED, LEARNED, lambda v=v: v), T0 + 10)
        for v in (0.0, 0.25, 0.5, 0.75, 0.999)
    ]
    assert all(30.0 <= g <= 33.0 for g in gaps)
    assert gaps[-1] > 32.9
    plan = plan_next_poll(obs, T0 + 10, BOUNDS, PollPolicy.FIXED, LEARNED, half)
    assert plan.reason is Reason.FIXED
    assert plan.why == "fixed"


def test_with_nothing_learned_it_polls_at_the_interval_with_jitter_upwards() -> None:
    # The first runs of a new bot teach it; until then every change is seen within the
    # interval (30 s at the defaults), never sooner.
    obs = obs_in("training started", T0, eta=60)
    gaps = [
        gap(plan_next_poll(obs, T0, BOUNDS, PollPolicy.ADAPTIVE, Learned(), lambda v=v: v), T0)
        for v in (0.0, 0.5, 0.999)
    ]
    assert gaps[0] == 30.0
    assert gaps[1] == pytest.approx(31.5)
    assert 32.9 < gaps[2] <= 33.0
    plan = plan_next_poll(obs, T0, BOUNDS, PollPolicy.ADAPTIVE, Learned(), half)
    assert plan.reason is Reason.FALLBACK
    assert plan.why == "fallback"
    assert plan.expected_end is None


def test_inside_the_dense_window_no_gap_is_longer_than_the_interval() -> None:
    # Between two polls the expectation can move (the bot learned from a few more runs, the
    # ETA changed): the grid through the new aim may then be up to two intervals away. Inside
    # the window the next poll is one interval away instead, wherever the grid fell.
    obs = obs_in("training started", T0, eta=60)
    expected = expect_stage_end(obs, T0, LEARNED)
    assert expected is not None
    window = [
        expected.end + offset
        for offset in range(int(-2 * expected.spread), int(2 * expected.spread), 7)
    ]
    gaps = [
        gap(plan_next_poll(obs, now, BOUNDS, PollPolicy.ADAPTIVE, LEARNED, half), now)
        for now in window
    ]
    assert gaps == [pytest.approx(30.0)] * len(gaps)


def test_dreambooth_training_is_polled_sparsely_then_densely_around_its_eta() -> None:
    # Training started at T0 with ETA 60 minutes: it should end about 1,062 s later.
    obs = obs_in("training started", T0, eta=60)
    expected = expect_stage_end(obs, T0, LEARNED)
    assert expected is not None
    assert expected.source is Reason.ETA
    assert expected.end == pytest.approx(T0 + 1062, abs=40)
    # A bigger job says so in its ETA, and is expected to last longer.
    bigger = expect_stage_end(obs_in("training started", T0, eta=90), T0, LEARNED)
    assert bigger is not None
    assert bigger.end == pytest.approx(T0 + 1.5 * 1062, rel=0.05)
    early = plan_next_poll(obs, T0 + 1, BOUNDS, PollPolicy.ADAPTIVE, LEARNED, half)
    assert early.reason is Reason.ETA
    assert gap(early, T0 + 1) > 130  # nothing can change for a quarter of an hour
    assert early.expected_end == expected.end
    near = expected.end - 20
    close = plan_next_poll(obs, near, BOUNDS, PollPolicy.ADAPTIVE, LEARNED, half)
    # Every 30 s now, on a grid through a moment just after the expected end.
    assert 30.0 <= gap(close, near) < 60.0
    after = plan_next_poll(obs, close.at, BOUNDS, PollPolicy.ADAPTIVE, LEARNED, half)
    assert gap(after, close.at) == pytest.approx(30.0)
    assert close.clamped is Clamp.MIN
    assert close.why == "ETA, clamped to minimum"


def test_a_short_well_known_stage_gets_one_poll_just_after_its_expected_end() -> None:
    # Compressing lasts 47 s give or take 5: one poll a few seconds after, not 30 s later.
    obs = obs_in("model compressing", T0, eta=25)
    expected = expect_stage_end(obs, T0, LEARNED)
    assert expected is not None
    assert expected.end == pytest.approx(T0 + 47, abs=4)
    plan = plan_next_poll(obs, T0 + 1, BOUNDS, PollPolicy.ADAPTIVE, LEARNED, half)
    assert 0 < plan.at - expected.end <= 2 * expected.spread


def test_lora_stages_use_what_lora_runs_taught() -> None:
    dreambooth = expect_stage_end(obs_in("training started", T0), T0, LEARNED)
    lora = expect_stage_end(obs_in("training started", T0, kind=TrainingKind.LORA), T0, LEARNED)
    assert dreambooth is not None
    assert lora is not None
    assert lora.end == pytest.approx(T0 + 585, rel=0.1)
    assert dreambooth.end == pytest.approx(T0 + 1062, rel=0.1)


def test_v6_without_eta_polls_from_learned_lengths_and_no_faster_than_today_when_vague() -> None:
    obs = Observation(
        TrainingKind.V6,
        T0,
        (Sighting("training_started", T0, None, None, None, None, T0, None),),
    )
    expected = expect_stage_end(obs, T0, LEARNED)
    assert expected is not None
    assert expected.source is Reason.LEARNED
    early = plan_next_poll(obs, T0, BOUNDS, PollPolicy.ADAPTIVE, LEARNED, half)
    assert gap(early, T0) > 130
    # 1,650 s give or take 450: dense polling would last long; the first round's 60 s it is.
    near = expected.end - 60
    plan = plan_next_poll(obs, near, BOUNDS, PollPolicy.ADAPTIVE, LEARNED, half)
    assert plan.reason is Reason.LEARNED
    assert gap(plan, near) == pytest.approx(60.0)


def test_after_the_expected_end_it_stays_dense_then_backs_off_to_the_longest_gap() -> None:
    obs = obs_in("model compressing", T0, eta=25)
    expected = expect_stage_end(obs, T0, LEARNED)
    assert expected is not None
    gaps = []
    for late in (5.0, 60.0, 300.0, 1000.0, 10_000.0):
        now = expected.end + late
        plan = plan_next_poll(obs, now, BOUNDS, PollPolicy.ADAPTIVE, LEARNED, half)
        gaps.append(gap(plan, now))
    assert gaps[0] == pytest.approx(30.0)
    assert gaps == sorted(gaps)
    assert gaps[-1] == 150.0
    late_plan = plan_next_poll(obs, expected.end + 600, BOUNDS, PollPolicy.ADAPTIVE, LEARNED, half)
    assert late_plan.reason is Reason.OVERDUE


def test_a_run_far_slower_than_its_eta_is_planned_at_its_own_pace() -> None:
    # Training took 2.5 times what its ETA said; its next stage is expected 2.5 times longer.
    slow = 2.5 * 1062
    stages = (
        Sighting("deploying_gpu", T0, None, None, None, None, T0, None),
        Sighting("training started", T0 + 42, T0 + 12, 60, T0 + 42, None, T0 + 41, 1.0),
        Sighting(
            "training done", T0 + 42 + slow, T0 + 12 + slow, 15, None, None, T0 + 41 + slow, 1.0
        ),
    )
    obs = Observation(TrainingKind.DREAMBOOTH, T0, stages)
    expected = expect_stage_end(obs, T0 + 42 + slow, LEARNED)
    assert expected is not None
    assert expected.source is Reason.LEARNED  # its ETA is not believed
    assert expected.end - (T0 + 41 + slow) == pytest.approx(2.5 * 87, rel=0.1)


@pytest.mark.parametrize("eta", [0, -5, 10_000, math.nan, math.inf, 1])
def test_an_implausible_eta_falls_back_to_the_learned_length(eta: float) -> None:
    expected = expect_stage_end(obs_in("training started", T0, eta=eta), T0, LEARNED)
    assert expected is not None
    assert expected.source is Reason.LEARNED
    assert expected.end == pytest.approx(T0 + 1062, rel=0.1)


def test_a_finished_training_says_so() -> None:
    obs = observe(None, T0, stage="a", polled_before=None, finished=True)
    plan = plan_next_poll(obs, T0, BOUNDS, PollPolicy.ADAPTIVE, LEARNED, half)
    assert plan.reason is Reason.FINISHED
    assert gap(plan, T0) == 150.0


def test_a_clock_that_reads_nonsense_is_refused() -> None:
    obs = obs_in("a", T0)
    for now in (math.nan, math.inf, 1e15):
        with pytest.raises(ValueError, match="clock"):
            plan_next_poll(obs, now, BOUNDS, PollPolicy.ADAPTIVE, LEARNED, half)


# -- bad input: properties -------------------------------------------------------------------------

ANY_FLOAT = st.floats(allow_nan=True, allow_infinity=True)
TIMES = st.one_of(
    st.floats(min_value=T0 - 1e6, max_value=T0 + 1e6),  # plausible
    st.floats(min_value=-1e11, max_value=1e11),  # a clock that jumped
    st.just(math.nan),
    st.just(math.inf),
)
MAYBE = st.one_of(st.none(), ANY_FLOAT, TIMES)
ETAS = st.one_of(st.none(), st.sampled_from([0, -1, -60, 10_000, 1e12]), ANY_FLOAT)
STAGES = st.sampled_from([s for s, _, _ in DREAMBOOTH] + ["training_started", "odd"])
KINDS = st.sampled_from(list(TrainingKind))
SIGHTINGS = st.builds(Sighting, STAGES, TIMES, MAYBE, ETAS, MAYBE, MAYBE, MAYBE, MAYBE)
OBSERVATIONS = st.builds(
    Observation,
    KINDS,
    TIMES,
    st.lists(SIGHTINGS, min_size=1, max_size=6).map(tuple),
    st.one_of(st.none(), SIGHTINGS),
)
STATS = st.builds(
    StageStats,
    st.integers(0, 500),
    ANY_FLOAT,
    ANY_FLOAT,
    st.integers(0, 500),
    st.one_of(st.none(), ANY_FLOAT),
    st.one_of(st.none(), ANY_FLOAT),
    st.one_of(st.none(), ANY_FLOAT),
)
ODD_LEARNED = st.dictionaries(st.tuples(KINDS, STAGES), STATS, max_size=8).map(Learned)
SOME_LEARNED = st.one_of(st.just(LEARNED), st.just(Learned()), ODD_LEARNED)
BOUNDS_ANY = st.builds(
    Bounds.from_settings,
    st.floats(min_value=0.01, max_value=3600),
    st.one_of(st.none(), st.floats(min_value=3600, max_value=86_400)),
    st.floats(min_value=0, max_value=0.5),
)
NOW = st.floats(min_value=-1e11, max_value=1e11)
RANDS = st.one_of(st.floats(min_value=0, max_value=1, exclude_max=True), ANY_FLOAT)


def assert_within(plan: PollPlan, now: float, bounds: Bounds) -> None:
    assert math.isfinite(plan.at)
    assert plan.at - now >= bounds.min_gap
    # At most one tick of the clock's resolution over (the shortest gap always holds).
    assert plan.at - now <= bounds.max_gap + 2 * math.ulp(plan.at)
    assert plan.expected_end is None or math.isfinite(plan.expected_end)
    assert plan.why


@settings(max_examples=400, deadline=None)
@given(OBSERVATIONS, NOW, BOUNDS_ANY, st.sampled_from(list(PollPolicy)), SOME_LEARNED, RANDS)
def test_any_observation_gets_a_finite_poll_within_the_bounds(
    obs: Observation,
    now: float,
    bounds: Bounds,
    policy: PollPolicy,
    learned: Learned,
    r: float,
) -> None:
    plan = plan_next_poll(obs, now, bounds, policy, learned, lambda: r)
    assert_within(plan, now, bounds)
    assert (plan.reason is Reason.FINISHED) == obs.finished


ANSWERS = st.lists(
    st.tuples(
        st.one_of(  # how far the clock moved since the poll before
            st.floats(min_value=0, max_value=600),
            st.floats(min_value=-86_400, max_value=0),  # went back
            st.floats(min_value=0, max_value=1e8),  # jumped far ahead
        ),
        STAGES,
        ETAS,
        st.one_of(st.none(), ANY_FLOAT),  # elapsed stamp
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=200, deadline=None)
@given(ANSWERS, SOME_LEARNED, BOUNDS_ANY)
def test_an_unfinished_training_is_never_given_up_whatever_the_api_and_clock_say(
    answers: list[tuple[float, str, float | None, float | None]],
    learned: Learned,
    bounds: Bounds,
) -> None:
    obs: Observation | None = None
    before: float | None = None
    now = T0
    rng = random.Random(1)
    for step, stage, eta, elapsed in answers:
        now += step
        obs = observe(
            obs,
            now,
            stage=stage,
            polled_before=before,
            eta_minutes=eta,
            elapsed_seconds=elapsed,
            learned=learned,
        )
        plan = plan_next_poll(obs, now, bounds, PollPolicy.ADAPTIVE, learned, rng.random)
        assert_within(plan, now, bounds)
        assert plan.reason is not Reason.FINISHED
        before = now


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(KINDS, st.lists(SIGHTINGS, min_size=1, max_size=6), SIGHTINGS)))
def test_learning_from_any_runs_gives_finite_figures(
    runs: list[tuple[TrainingKind, list[Sighting], Sighting]],
) -> None:
    learned = learn_stage_lengths(RunRecord(k, stages, end) for k, stages, end in runs)
    for stats in learned.stats.values():
        assert stats.samples >= 1
        assert math.isfinite(stats.length)
        assert stats.length >= 0
        assert math.isfinite(stats.spread)
        assert stats.spread >= 0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(STAGES, st.floats(0, 600), st.one_of(st.none(), st.integers(0, 90)))))
def test_the_same_answer_twice_changes_nothing(
    answers: list[tuple[str, float, int | None]],
) -> None:
    obs = observe(None, T0, stage="deploying_gpu", polled_before=None)
    now = T0
    for stage, step, eta in answers:
        before, now = now, now + step
        obs = observe(obs, now, stage=stage, polled_before=before, eta_minutes=eta)
        again = observe(
            obs, now + 30, stage=stage, polled_before=now, eta_minutes=eta, learned=LEARNED
        )
        assert again is obs


# -- the benchmark's timelines (reused for a replay through the real tracker) ----------------------


def test_the_benchmark_timelines_follow_the_facts_and_speak_the_apis_dialect() -> None:
    from benchmarks.policy_timelines import make_timelines, status_body
    from bot.sdapi.status import parse_status

    timelines = make_timelines(100)
    assert timelines == make_timelines(100)  # plain data, the same for a seed
    assert sum(t.kind == "lora" for t in timelines) == 20
    assert sum(t.off_eta for t in timelines) == 10
    dreambooth = next(t for t in timelines if t.kind == "dreambooth" and not t.off_eta)
    labels = [e.label for e in dreambooth.events if e.label]
    assert labels == [
        "Training Started",
        "Training Done",
        "Model Compressing",
        "Model Uploading",
        "Model Uploaded",
    ]
    assert [e.at for e in dreambooth.events] == sorted(e.at for e in dreambooth.events)
    assert dreambooth.events[-1].terminal
    lora = next(t for t in timelines if t.kind == "lora")
    assert "Model Compressing" not in [e.label for e in lora.events]
    for event in dreambooth.events:
        status = parse_status(200, json.dumps(status_body(dreambooth, event.at)).encode())
        assert status.raw_state == event.state
        assert status.finished == event.terminal
        if event.label:
            assert (status.steps[-1].label, status.steps[-1].eta_minutes) == (
                event.label,
                event.eta_minutes,
            )
    v6 = make_timelines(5, lora_share=0.0, v6_share=1.0)
    assert all(infer_kind(t.training_id, []) is TrainingKind.V6 for t in v6)
    end = v6[0].events[-1].at
    assert parse_status(200, json.dumps(status_body(v6[0], end)).encode()).finished


def test_in_replay_the_adaptive_policy_is_cheaper_and_faster_than_fixed_polling() -> None:
    from benchmarks.policy_timelines import make_timelines
    from benchmarks.poll_policy import first_round, policy_planner, replay_all

    # Once it has learned from the first runs (those polled at the interval, having nothing
    # to go on, teach and are left out).
    timelines = make_timelines(150, seed=3)
    fixed = replay_all(timelines, first_round(), warm_up=50).all
    adaptive = replay_all(timelines, policy_planner(BOUNDS), warm_up=50).all
    # The README's promise: fewer requests, under half the median delay, about half the p95.
    assert adaptive.requests < fixed.requests
    assert adaptive.p50 < 0.5 * fixed.p50
    assert adaptive.p95 < 0.55 * fixed.p95
