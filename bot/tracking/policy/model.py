"""What the poll policy knows and is told: its settings, and what the polls saw of a training."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class PollPolicy(StrEnum):
    """``POLL_POLICY``: follow the training, or poll at the interval as the first round did."""

    ADAPTIVE = "adaptive"
    FIXED = "fixed"


class TrainingKind(StrEnum):
    """What kind of training a run is; its stages and their lengths depend on it."""

    DREAMBOOTH = "dreambooth"
    LORA = "lora"
    V6 = "v6"
    UNKNOWN = "unknown"


class Reason(StrEnum):
    """Why a poll was planned when it was; the value is the phrase users see."""

    ETA = "ETA"
    LEARNED = "learned stage length"
    OVERDUE = "stage overdue, backing off"
    FALLBACK = "fallback"
    FIXED = "fixed"
    FINISHED = "finished"


class Clamp(StrEnum):
    """The gap wanted lay outside the bounds and was brought back to one of them."""

    MIN = "clamped to minimum"
    MAX = "clamped to maximum"


# A gap longer than about 30 years is a typo; refusing it keeps every sum of times finite.
_MAX_GAP = 1e9


@dataclass(frozen=True, slots=True)
class Bounds:
    """The operator's settings: the shortest and longest gap between two polls of one training
    (jitter included) and the jitter, a fraction of the gap."""

    min_gap: float = 30.0
    max_gap: float = 150.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if not (math.isfinite(self.min_gap) and self.min_gap > 0):
            raise ValueError(f"the shortest poll gap must be a positive number, not {self.min_gap}")
        if not (self.min_gap <= self.max_gap <= _MAX_GAP):
            raise ValueError(
                f"the longest poll gap ({self.max_gap}) must be a number at least the shortest "
                f"({self.min_gap}) and at most {_MAX_GAP:.0e} seconds"
            )
        if not (math.isfinite(self.jitter) and 0 <= self.jitter < 1):
            raise ValueError(f"the poll jitter must be in [0, 1), not {self.jitter}")

    @classmethod
    def from_settings(
        cls, interval: float, max_seconds: float | None = None, jitter: float = 0.1
    ) -> Bounds:
        """``POLL_INTERVAL_SECONDS`` and ``POLL_MAX_SECONDS`` (default: five times the interval)."""
        return cls(interval, 5 * interval if max_seconds is None else max_seconds, jitter)


@dataclass(frozen=True, slots=True)
class Tuning:
    """The adaptive policy's constants. The defaults are the ones ``benchmarks/poll_policy``
    measured; the benchmark varies them, the bot does not."""

    lead: float = 2.5
    """Dense polling starts this many spreads before the expected end of the stage."""
    aim: float = 1.0
    """One dense poll lands this many spreads after the expected end, the others every
    ``min_gap`` before and after it: a well-predicted change is seen soon after it happens
    instead of anywhere in a gap."""
    linger: float = 2.5
    """Dense polling lasts this many spreads after the expected end..."""
    backoff: float = 0.25
    """...then each gap grows by this share of the time since, up to ``max_gap``."""
    dense_polls: float = 14.0
    """At most this many polls from the start of dense polling to its end: a vague
    expectation narrows the window instead; twice as vague, and it polls every ``fallback``
    there instead."""
    fallback: float = 2.0
    """Where a vague expectation says little, the gap is this many ``min_gap`` (60 s at the
    defaults, the first round's interval)."""
    cold: float = 1.0
    """With nothing learned of the stage yet (the first runs of a kind, a stage never seen
    finish), the gap is this many ``min_gap``, jitter upwards: a new bot polls at the interval
    until a few runs have finished, then as they taught it."""
    min_samples: int = 3
    """Learned figures from fewer runs than this are not used."""
    spread_floor: float = 2.0
    """Seconds: no prediction is trusted to better than this."""
    eta_max_minutes: float = 24 * 60.0
    """An ETA above this (or at most 0) is not believed."""
    eta_agreement: float = 3.0
    """An ETA-based prediction further than this many spreads from the learned length's is not
    believed either."""
    pace_trigger: float = 1.3
    """A run whose finished stages took this many times longer (or shorter) than predicted,
    beyond the prediction's spread, is off pace: its ETA is not believed and its learned
    lengths are scaled by its pace."""


DEFAULT_TUNING = Tuning()


# -- what is known of a training ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sighting:
    """One stage of a training (or its end) as the polls saw it."""

    stage: str
    seen_at: float
    """The first poll that showed this stage."""
    unseen_at: float | None
    """The poll before it, which did not; None when the stage was there at the first poll."""
    eta_minutes: float | None = None
    """The ETA on the stage's line (the last one given, if it changed)."""
    eta_seen_at: float | None = None
    elapsed_seconds: float | None = None
    """The trainer's "Time Elapsed" stamp on the stage's line."""
    began_at: float | None = None
    """When the stage most likely began on our clock (see ``observe``)..."""
    began_spread: float | None = None
    """...give or take this (a standard deviation); None: only known to be before ``seen_at``."""


MAX_SIGHTINGS = 32


@dataclass(frozen=True, slots=True)
class Observation:
    """What is known of one training when its next poll is planned. Made and kept up to date
    by ``observe``; plain data (``to_dict``/``from_dict``) so the store can keep it."""

    kind: TrainingKind
    first_seen_at: float
    stages: tuple[Sighting, ...]
    """Oldest first, the last is the current stage; never empty (at most the last 32)."""
    ended: Sighting | None = None
    """The training's end (ready, failed, cancelled) as the polls saw it; None while it runs."""

    def __post_init__(self) -> None:
        if not self.stages:
            raise ValueError("an observation has at least its current stage")

    @property
    def current(self) -> Sighting:
        """The current stage."""
        return self.stages[-1]

    @property
    def finished(self) -> bool:
        """The training will not change any more."""
        return self.ended is not None

    def run_record(self) -> RunRecord | None:
        """The finished run, for ``learn_stage_lengths``; None while it runs."""
        return None if self.ended is None else RunRecord(self.kind, self.stages, self.ended)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data; ``from_dict`` reads it back."""
        return {
            "v": 1,
            "kind": self.kind.value,
            "first_seen_at": self.first_seen_at,
            "stages": [_sighting_row(s) for s in self.stages],
            "ended": None if self.ended is None else _sighting_row(self.ended),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Observation:
        """Read ``to_dict``'s data; ``ValueError`` saying what is wrong when it is not that."""
        try:
            if data.get("v") != 1:
                raise ValueError(f"unknown version {data.get('v')!r}")
            ended = data["ended"]
            return cls(
                TrainingKind(data["kind"]),
                float(data["first_seen_at"]),
                tuple(_sighting_of(row) for row in data["stages"]),
                None if ended is None else _sighting_of(ended),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a stored poll observation: {exc}") from exc


def _sighting_row(s: Sighting) -> list[Any]:
    return [
        s.stage,
        s.seen_at,
        s.unseen_at,
        s.eta_minutes,
        s.eta_seen_at,
        s.elapsed_seconds,
        s.began_at,
        s.began_spread,
    ]


def _sighting_of(row: Any) -> Sighting:
    stage, seen, *rest = row
    if not isinstance(stage, str) or len(rest) != 6:
        raise ValueError(f"not a stage row: {row!r}")
    unseen, eta, eta_at, elapsed, began, spread = (None if v is None else float(v) for v in rest)
    return Sighting(stage, float(seen), unseen, eta, eta_at, elapsed, began, spread)


_SPACES_RE = re.compile(r"\s+")
_UUID_RE = re.compile(
    r"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}", re.IGNORECASE
)


def stage_key(label: str | None, state: str | None) -> str:
    """The name of the stage a training is in: its last step line's label, else its state."""
    for text in (label, state):
        if text:
            key = _SPACES_RE.sub(" ", text).strip().lower()
            if key:
                return key
    return "unknown"


def infer_kind(training_id: str, stages: Iterable[str]) -> TrainingKind:
    """The kind of a training from its id and the stages seen so far (``stage_key`` names).

    v6 runs have UUID ids; a Dreambooth run compresses its model, a LoRA run uploads it
    without compressing; until either shows, the kind is unknown.
    """
    if _UUID_RE.fullmatch(training_id.strip()):
        return TrainingKind.V6
    for stage in stages:
        if "compress" in stage:
            return TrainingKind.DREAMBOOTH
        if "upload" in stage:
            return TrainingKind.LORA
    return TrainingKind.UNKNOWN


@dataclass(frozen=True, slots=True)
class RunRecord:
    """A finished run: its kind, its stages and its end as the polls saw them
    (``Observation.run_record``)."""

    kind: TrainingKind
    stages: Sequence[Sighting]
    ended: Sighting
