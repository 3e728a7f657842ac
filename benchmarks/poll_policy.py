"""8. Poll policy: 1,000 training timelines replayed in simulated time against the adaptive poll
policy at its defaults (interval 30 s, max 150 s) and against fixed 60 s polling (the first
round's default, +-10 %); API requests per training and step-to-message delay p50 and p95.

The timelines are built from the facts of issue 18 (one Dreambooth run of the provider's
trainer): time elapsed at each step 41 s, 1,103 s, 1,190 s, 1,237 s, 1,502 s, then deploying and
ready; ETAs 60, 15, 25, 20, 10 minutes on those lines. ``make_timelines`` draws durations around
them (see its docstring for the model); a fifth of the runs are LoRA-shaped (no compressing) and
a tenth run far off their ETA. The replay needs no tracker: a discrete event loop asks the
policy for each next poll and looks up what the API would say at that moment. The timelines are
plain data (``status_body`` renders the API's answer at any moment), for a replay through the
real tracker and simulator.

The step-to-message delay here is the time from a step appearing to the poll that sees it (the
engine's own latency is the ``latency`` benchmark's). Runs are created every 60 s on one clock;
each run plans with what was learned from the runs finished before it started (the latest 200),
so the first runs of a kind start cold, as a new bot does (in ``--quick``'s 200 runs the cold
start weighs more).

The "floor" figure polls every training every 30 s, twice fixed 60 s's requests: its p95 is
about 0.95 x 30 s. With gaps of at least 30 s a policy beats that only on the changes it can
predict to a few seconds; every other change it sees up to 30 s late, so its p95 lies just under
30 s at best. Through the tracker, whose fixed policy jitters upwards only (gaps of 60-66 s),
half of fixed polling's p95 is about 29.7 s, and the adaptive policy meets it as long as fewer
than 5 % of the changes are seen more than 30 s late (those of the runs far off their ETA, a
tenth of the runs, mostly are). In this pure replay the baseline is the first round's 60 s
+-10 %, whose p95 is lower (about 56.7 s): half of it, 28.4 s, is under that 30 s band, and no
policy with 30 s gaps reaches it without predicting most changes to a few seconds.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from benchmarks.common import Figure
from bot.tracking.policy import (
    Bounds,
    Learned,
    Observation,
    PollPolicy,
    RunRecord,
    Tuning,
    infer_kind,
    learn_stage_lengths,
    observe,
    plan_next_poll,
    stage_key,
)

TIMELINES = 1_000
QUICK_TIMELINES = 200
SEED = 18
CREATED_EVERY = 60.0  # seconds between two runs' creation: about 28 running at once
LEARN_WINDOW = 200  # finished runs learned from
FIXED_INTERVAL = 60.0
FIXED_JITTER = 0.1
MAX_POLLS = 10_000  # per run: a policy that never finishes a run fails the benchmark


# -- the timelines ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TimelineEvent:
    """A change of a training, ``at`` seconds after its creation."""

    at: float
    state: str
    label: str | None  # the step line's label; None: a state change without a line
    number: int | None = None
    steps_to_go: int | None = None
    eta_minutes: int | None = None
    elapsed_seconds: float | None = None
    message: bool = True  # the bot posts a message for it (step lines and the end)
    terminal: bool = False


@dataclass(frozen=True, slots=True)
class Timeline:
    """One training from its creation (``events[0]``, at 0) to ready."""

    training_id: str
    kind: str  # "dreambooth", "lora" or "v6"
    off_eta: bool
    events: tuple[TimelineEvent, ...]

    def at(self, t: float) -> int:
        """Index of the last event at or before ``t`` (seconds after creation)."""
        return max(0, bisect.bisect_right([e.at for e in self.events], t) - 1)


# The observed Dreambooth run: (label, state, seconds since the previous change, ETA, step
# number, steps to go). Deploying and ready are not in the facts: 60 s and 120 s are assumed.
_DREAMBOOTH: tuple[tuple[str | None, str, float, int | None, int | None, int | None], ...] = (
    ("Training Started", "training_started", 41.0, 60, 1, 5),
    ("Training Done", "training_success", 1_062.0, 15, 2, 4),
    ("Model Compressing", "trained_model_compressing", 87.0, 25, 3, 3),
    ("Model Uploading", "trained_model_uploading", 47.0, 20, 3, 2),
    ("Model Uploaded", "trained_model_uploaded", 265.0, 10, 4, 1),
    (None, "deploying_model", 60.0, None, None, None),
    (None, "model_ready", 120.0, None, None, None),
)
_TRAINING_STAGE = 1  # index of the line that ends the training proper (its length varies most)
LORA_TRAINING_SHARE = 0.55  # "LoRA runs are shorter": their training stage, against Dreambooth's
V6_TRAINING = 1_650.0  # "trainings take about 25-30 minutes"; no step log, no ETA
V6_INFERENCE = 120.0


def _base_remaining() -> list[float]:
    gaps = [row[2] for row in _DREAMBOOTH]
    return [sum(gaps[i + 1 :]) for i in range(len(gaps))]


def make_timelines(
    count: int,
    seed: int = SEED,
    *,
    lora_share: float = 0.2,
    off_eta_share: float = 0.1,
    v6_share: float = 0.0,
    job_spread: float = 0.25,
    stage_spread: float = 0.1,
    eta_noise: float = 0.05,
) -> list[Timeline]:
    """``count`` timelines drawn around the observed run, deterministic for a seed.

    The model: each run's training stage is the observed one times a job size (lognormal,
    ``job_spread``: how many images and steps were asked for); every stage also varies on its
    own (lognormal, ``stage_spread``). The trainer's ETA on each line keeps the ratio to the
    real remaining time that the observed run shows (60 minutes printed for 27 left: ETAs are
    generous, each line in its own way), give or take ``eta_noise``, rounded to whole minutes.
    A run "far off its ETA" then runs 2-3 times slower or faster than its ETAs say, from its
    training stage on. LoRA runs skip compressing and train for 55 % as long. v6 runs have
    one long stage (25-30 minutes) without a log or an ETA, then a couple of minutes to ready.
    The trainer's clock starts 0-10 s after creation (its "Time Elapsed" stamps).
    """
    rng = random.Random(seed)
    n_lora = round(count * lora_share)
    n_v6 = round(count * v6_share)
    kinds = ["lora"] * n_lora + ["v6"] * n_v6 + ["dreambooth"] * (count - n_lora - n_v6)
    rng.shuffle(kinds)
    off = set(rng.sample(range(count), round(count * off_eta_share)))
    base_remaining = _base_remaining()
    timelines = []
    for i, kind in enumerate(kinds):
        job = math.exp(rng.gauss(0.0, job_spread))
        factor = math.exp(rng.choice((-1, 1)) * rng.uniform(math.log(2), math.log(3)))
        if kind == "v6":
            events = _v6_events(rng, job, stage_spread, factor if i in off else 1.0)
            timelines.append(Timeline(_uuid(rng), kind, i in off, events))
            continue
        rows = [r for r in _DREAMBOOTH if not (kind == "lora" and r[0] == "Model Compressing")]
        gaps = []
        for row in rows:
            gap = row[2] * math.exp(rng.gauss(0.0, stage_spread))
            if row[0] == "Training Done":
                gap *= job * (LORA_TRAINING_SHARE if kind == "lora" else 1.0)
            gaps.append(gap)
        remaining = [sum(gaps[j + 1 :]) for j in range(len(gaps))]
        etas: list[int | None] = []
        for row, left in zip(rows, remaining, strict=True):
            if row[3] is None:
                etas.append(None)
                continue
            base = base_remaining[_DREAMBOOTH.index(row)]
            seconds = row[3] * 60.0 / base * left * math.exp(rng.gauss(0.0, eta_noise))
            etas.append(max(1, round(seconds / 60.0)))
        if i in off:
            gaps = [gaps[0]] + [g * factor for g in gaps[1:]]
        zero = rng.uniform(0.0, 10.0)
        t = 0.0
        events_list = [TimelineEvent(0.0, "deploying_gpu", None, message=False)]
        for row, gap, eta in zip(rows, gaps, etas, strict=True):
            t += gap
            label, state, _, _, number, to_go = row
            terminal = state == "model_ready"
            events_list.append(
                TimelineEvent(
                    t,
                    state,
                    label,
                    number,
                    to_go,
                    eta,
                    t - zero if label is not None else None,
                    message=label is not None or terminal,
                    terminal=terminal,
                )
            )
        timelines.append(Timeline(_v3_id(rng), kind, i in off, tuple(events_list)))
    return timelines


def _v6_events(
    rng: random.Random, job: float, stage_spread: float, factor: float
) -> tuple[TimelineEvent, ...]:
    done = V6_TRAINING * job * math.exp(rng.gauss(0.0, stage_spread)) * factor
    ready = done + V6_INFERENCE * math.exp(rng.gauss(0.0, stage_spread)) * factor
    return (
        TimelineEvent(0.0, "training_started", None, message=False),
        TimelineEvent(done, "training_completed", None),
        TimelineEvent(ready, "ready", None, terminal=True),
    )


_ALPHANUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def _v3_id(rng: random.Random) -> str:
    return "".join(rng.choice(_ALPHANUM) for _ in range(10))


def _uuid(rng: random.Random) -> str:
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def status_body(timeline: Timeline, t: float) -> dict[str, Any]:
    """What the API answers about ``timeline`` ``t`` seconds after its creation, as its
    provider's trainer writes it (v3 ``fine_tune_status``; the v6 trainer's shape for v6)."""
    events = timeline.events[: timeline.at(t) + 1]
    state = events[-1].state
    if timeline.kind == "v6":
        data: dict[str, Any] = {"id": timeline.training_id, "status": state}
        if state == "ready":
            data = {
                "id": timeline.training_id,
                "status": "training_completed",
                "inference": {"status": "ready"},
            }
            state = "training_completed"
        return {"status": "success", "message": state, "data": data}
    lines = [
        f"Step:{e.number} {e.label}, {e.steps_to_go} More Steps to go : ETA : "
        f"{e.eta_minutes} minutes | Time Elapsed : {e.elapsed_seconds} seconds"
        for e in events
        if e.label is not None
    ]
    if events[-1].terminal:
        lines.append("Model loaded successfully")
    return {"status": "success", "messege": state, "data": " /n ".join(lines)}


# -- the replay ------------------------------------------------------------------------------------

Planner = Callable[[Observation, float, Learned, random.Random], float]
"""(what is known, now, what was learned, random source) -> when to poll next."""


@dataclass
class Replay:
    """One run replayed: the requests it cost and each message's delay."""

    requests: int
    delays: list[float]
    record: RunRecord
    ended_at: float  # seconds after creation the end was seen


def replay_one(
    timeline: Timeline, planner: Planner, learned: Learned, rng: random.Random
) -> Replay:
    """Poll ``timeline`` from its creation until its end is seen, as ``planner`` says."""
    obs: Observation | None = None
    before: float | None = None
    t = 0.0
    seen = 0  # events[:seen] have been shown by a poll
    delays: list[float] = []
    for requests in range(1, MAX_POLLS + 1):
        index = timeline.at(t)
        for event in timeline.events[seen : index + 1]:
            if event.message:
                delays.append(t - event.at)
        seen = index + 1
        event = timeline.events[index]
        line = next((e for e in reversed(timeline.events[: index + 1]) if e.label), None)
        stage = stage_key(line.label if line else None, event.state)
        stages = [] if obs is None else [s.stage for s in obs.stages]
        obs = observe(
            obs,
            t,
            stage=stage,
            polled_before=before,
            eta_minutes=line.eta_minutes if line else None,
            elapsed_seconds=line.elapsed_seconds if line else None,
            finished=event.terminal,
            kind=infer_kind(
                timeline.training_id,
                [*stages, *(stage_key(e.label, None) for e in timeline.events[: index + 1])],
            ),
            learned=learned,
        )
        record = obs.run_record()
        if record is not None:
            return Replay(requests, delays, record, t)
        before, t = t, planner(obs, t, learned, rng)
    raise RuntimeError(f"{timeline.training_id}: not finished after {MAX_POLLS} polls")


@dataclass(frozen=True, slots=True)
class Figures:
    """Requests per training and step-to-message delay percentiles (seconds)."""

    requests: float
    p50: float
    p95: float

    def __str__(self) -> str:
        return f"{self.requests:.1f} req, p50 {self.p50:.1f} s, p95 {self.p95:.1f} s"


@dataclass(frozen=True, slots=True)
class Result:
    """A policy's figures over all the timelines, and per group of them."""

    all: Figures
    groups: dict[str, Figures]  # per kind, and "on ETA" / "off ETA"


def replay_all(
    timelines: Sequence[Timeline], planner: Planner, seed: int = SEED, *, warm_up: int = 0
) -> Result:
    """Replay every timeline, each created ``CREATED_EVERY`` after the one before and
    planned with what the runs finished by its creation taught; the first ``warm_up`` runs
    only teach (they are left out of the figures)."""
    rng = random.Random(seed)
    finished: list[tuple[float, int, RunRecord]] = []  # heap by end time on the shared clock
    known: list[RunRecord] = []
    learned = Learned()
    learned_from = 0
    runs: list[tuple[Timeline, Replay]] = []
    for i, timeline in enumerate(timelines):
        created = i * CREATED_EVERY
        while finished and finished[0][0] <= created:
            known.append(heapq.heappop(finished)[2])
        if len(known) >= learned_from + max(1, learned_from // 10):
            learned = learn_stage_lengths(known[-LEARN_WINDOW:])
            learned_from = len(known)
        run = replay_one(timeline, planner, learned, rng)
        heapq.heappush(finished, (created + run.ended_at, i, run.record))
        runs.append((timeline, run))
    runs = runs[warm_up:]
    groups: dict[str, list[Replay]] = {}
    for timeline, run in runs:
        groups.setdefault(timeline.kind, []).append(run)
        groups.setdefault("off ETA" if timeline.off_eta else "on ETA", []).append(run)
    return Result(
        _figures([run for _, run in runs]),
        {name: _figures(group) for name, group in sorted(groups.items())},
    )


def _figures(runs: Sequence[Replay]) -> Figures:
    delays = [d for run in runs for d in run.delays]
    cuts = statistics.quantiles(delays, n=100, method="inclusive")
    return Figures(statistics.fmean(run.requests for run in runs), cuts[49], cuts[94])


def first_round(interval: float = FIXED_INTERVAL, jitter: float = FIXED_JITTER) -> Planner:
    """The first round's schedule: every ``interval`` +-``jitter``, whatever happens."""

    def planner(obs: Observation, now: float, learned: Learned, rng: random.Random) -> float:
        return now + interval * rng.uniform(1 - jitter, 1 + jitter)

    return planner


def policy_planner(
    bounds: Bounds, policy: PollPolicy = PollPolicy.ADAPTIVE, tuning: Tuning | None = None
) -> Planner:
    """``plan_next_poll`` with these settings."""
    extra = {} if tuning is None else {"tuning": tuning}

    def planner(obs: Observation, now: float, learned: Learned, rng: random.Random) -> float:
        return plan_next_poll(obs, now, bounds, policy, learned, rng.random, **extra).at

    return planner


# -- the figures -----------------------------------------------------------------------------------

SWEEP_INTERVALS = (30.0, 40.0, 50.0, 60.0, 75.0, 90.0, 120.0)


async def through_the_tracker(timelines: Sequence[Timeline]) -> list[Figure]:
    """The same timelines through the real tracker, store, client and simulator."""
    from benchmarks.common import temp_dir
    from benchmarks.poll_policy_tracker import replay
    from bot.tracking.outcome import Rules

    runs = list(timelines)
    async with temp_dir() as folder:
        fixed = await replay(
            runs, Rules(interval=FIXED_INTERVAL, jitter=FIXED_JITTER), CREATED_EVERY, folder
        )
        adaptive = await replay(
            runs, Rules(interval=30.0, policy=PollPolicy.ADAPTIVE), CREATED_EVERY, folder
        )
    note = f"{len(runs):,} timelines through the real tracker and the simulator"
    return [
        Figure("poll_policy tracker fixed 60s", fixed.requests, "req/training", note=note),
        Figure("poll_policy tracker fixed 60s delay p50", fixed.p50, "s"),
        Figure("poll_policy tracker fixed 60s delay p95", fixed.p95, "s"),
        Figure(
            "poll_policy tracker adaptive",
            adaptive.requests,
            "req/training",
            f"<= {fixed.requests:.1f}",
            adaptive.requests <= fixed.requests,
            note,
        ),
        Figure(
            "poll_policy tracker adaptive p50",
            adaptive.p50,
            "s",
            f"<= {fixed.p50 / 2:.1f}",
            adaptive.p50 <= fixed.p50 / 2,
        ),
        Figure(
            "poll_policy tracker adaptive p95",
            adaptive.p95,
            "s",
            f"<= {fixed.p95 / 2:.1f}",
            adaptive.p95 <= fixed.p95 / 2,
        ),
    ]


def equal_p95(points: Sequence[tuple[float, float, float]], p95: float) -> tuple[float, float]:
    """(requests, interval) where the sweep's p95 reaches ``p95``, interpolated between the
    two intervals around it; ``points`` are (interval, requests, p95), by interval."""
    for (i0, r0, d0), (i1, r1, d1) in itertools.pairwise(points):
        if d0 <= p95 <= d1:
            w = 0.0 if d1 == d0 else (p95 - d0) / (d1 - d0)
            return r0 + w * (r1 - r0), i0 + w * (i1 - i0)
    best = min(points, key=lambda p: abs(p[2] - p95))
    return best[1], best[0]


async def run(quick: bool) -> list[Figure]:
    count = QUICK_TIMELINES if quick else TIMELINES
    timelines = make_timelines(count)
    fixed = replay_all(timelines, first_round()).all
    result = replay_all(timelines, policy_planner(Bounds.from_settings(30.0)))
    adaptive = result.all
    # The floor for what cannot be predicted to a few seconds: every training every 30 s.
    floor = replay_all(timelines, first_round(30.0, 0.0)).all
    sweep = [
        (interval, r.requests, r.p95)
        for interval in (SWEEP_INTERVALS[::2] if quick else SWEEP_INTERVALS)
        for r in [replay_all(timelines, policy_planner(Bounds.from_settings(interval))).all]
    ]
    cheap, at_interval = equal_p95(sweep, fixed.p95)
    v6 = make_timelines(count // 5, lora_share=0.0, v6_share=1.0)
    v6_fixed = replay_all(v6, first_round()).all
    v6_adaptive = replay_all(v6, policy_planner(Bounds.from_settings(30.0))).all
    # The runs started before any finished are polled at the interval: a fifth of these.
    v6_warm = replay_all(v6, policy_planner(Bounds.from_settings(30.0)), warm_up=len(v6) // 5).all
    v6_warm_fixed = replay_all(v6, first_round(), warm_up=len(v6) // 5).all
    groups = "; ".join(f"{name}: {figures}" for name, figures in result.groups.items())
    tracked = await through_the_tracker(timelines)
    return [
        *tracked,
        Figure(
            "poll_policy fixed 60s requests",
            fixed.requests,
            "req/training",
            note=f"{count:,} timelines",
        ),
        Figure("poll_policy fixed 60s delay p50", fixed.p50, "s"),
        Figure("poll_policy fixed 60s delay p95", fixed.p95, "s"),
        Figure(
            "poll_policy adaptive requests",
            adaptive.requests,
            "req/training",
            f"<= {fixed.requests:.1f}",
            adaptive.requests <= fixed.requests,
            groups,
        ),
        Figure(
            "poll_policy adaptive delay p50",
            adaptive.p50,
            "s",
            f"<= {fixed.p50 / 2:.1f}",
            adaptive.p50 <= fixed.p50 / 2,
        ),
        Figure(
            "poll_policy adaptive delay p95",
            adaptive.p95,
            "s",
            f"<= {fixed.p95 / 2:.1f}",
            adaptive.p95 <= fixed.p95 / 2,
            f"floor: polling every training every 30 s costs {floor.requests:.1f} req "
            f"for p95 {floor.p95:.1f} s",
        ),
        Figure(
            "poll_policy equal-p95 requests",
            cheap,
            "req/training",
            f"< {fixed.requests:.1f}",
            cheap < fixed.requests,
            f"adaptive at interval {at_interval:.0f} s matches fixed p95 {fixed.p95:.1f} s; "
            + ", ".join(f"{i:.0f} s: {r:.1f} req p95 {d:.1f}" for i, r, d in sweep),
        ),
        Figure(
            "poll_policy v6 adaptive requests",
            v6_adaptive.requests,
            "req/training",
            note=f"{len(v6)} v6 runs (no log, no ETA): adaptive {v6_adaptive}; fixed {v6_fixed}; "
            f"after the first {len(v6) // 5}: adaptive {v6_warm}, fixed {v6_warm_fixed}",
        ),
    ]
