"""The training timelines the ``poll_policy`` benchmark replays, drawn around the facts of
issue 18 (one Dreambooth run of the provider's trainer: time elapsed at each step 41 s,
1,103 s, 1,190 s, 1,237 s, 1,502 s, then deploying and ready; ETAs 60, 15, 25, 20, 10 minutes
on those lines), and the API's answer about one at any moment (``status_body``)."""

from __future__ import annotations

import bisect
import math
import random
from dataclasses import dataclass
from typing import Any

SEED = 18


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
