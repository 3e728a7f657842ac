"""Learning from finished runs how long each stage of each kind of training takes."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from bot.tracking.policy.model import DEFAULT_TUNING, RunRecord, Sighting, TrainingKind
from bot.tracking.policy.stats import MIN_SPREAD, finite, flat_moments, truncated


@dataclass(frozen=True, slots=True)
class StageStats:
    """What past runs say about one stage of one kind of training."""

    samples: int
    length: float
    """Mean length, seconds..."""
    spread: float
    """...and its standard deviation."""
    eta_samples: int = 0
    eta_slope: float | None = None
    """The stage lasts ``eta_slope`` seconds per minute of the ETA on its line, plus
    ``eta_intercept`` (ETAs count to the end of the whole run, and generously)..."""
    eta_intercept: float | None = None
    eta_spread: float | None = None
    """...give or take this (the standard deviation of that prediction's error)."""


@dataclass(frozen=True, slots=True)
class Learned:
    """Stage statistics per (kind, stage); ``UNKNOWN`` pools every kind."""

    stats: Mapping[tuple[TrainingKind, str], StageStats] = field(default_factory=dict)

    def get(self, kind: TrainingKind, stage: str, min_samples: int = 3) -> StageStats | None:
        """The stage's figures for that kind, else pooled over every kind, if enough runs."""
        for key in ((kind, stage), (TrainingKind.UNKNOWN, stage)):
            stats = self.stats.get(key)
            if stats is not None and stats.samples >= min_samples:
                return stats
        return None


_MAD_TO_SD = 1.4826
# No stage of a training lasts a month: a longer "length" comes from a clock that jumped.
MAX_STAGE = 30 * 86_400.0
_OUTLIER_SPREADS = 4.0
_EM_ROUNDS = 40


def learn_stage_lengths(runs: Iterable[RunRecord]) -> Learned:
    """Per kind of training and per stage: the length's mean and spread, and how the ETA on
    the stage's line predicts it, from finished runs.

    A run shows a stage's length only roughly: the stage began between the poll that first
    showed it and the poll before (narrowed by the trainer's elapsed stamps, which all the
    run's stamped lines pin down together), and ended likewise; between two stamped lines the
    stamps' difference is exact. The figures are the maximum-likelihood fit of a normal law
    to what the polls show (by expectation-maximisation over those intervals), so where the
    polls happened to fall does not bias them. Outliers (beyond four robust spreads of the
    median, such as a run stalled for an hour, or far off its ETA) do not count, nor do
    impossible samples (lengths not positive or not finite, from a clock that jumped). A stage
    already there at the first poll counts from that poll (a training is mostly followed from
    its creation; one followed later shortens the fit a little, which polls early rather than
    late).
    """
    samples, eta_samples = _samples(runs)
    stats: dict[_Key, StageStats] = {}
    for key, found in samples.items():
        fit = _fit(found, regress=False)
        if fit is not None:
            n, _, mean, sd = fit
            stats[key] = StageStats(n, mean, sd)
    for key, found in eta_samples.items():
        fit = _fit(found, regress=True)
        if key in stats and fit is not None:
            n, slope, intercept, sd = fit
            stats[key] = replace(
                stats[key], eta_samples=n, eta_slope=slope, eta_intercept=intercept, eta_spread=sd
            )
    return Learned(stats)


_Key = tuple[TrainingKind, str]


def _samples(
    runs: Iterable[RunRecord],
) -> tuple[dict[_Key, list[_Sample]], dict[_Key, list[_Sample]]]:
    """The length samples of every stage, per (kind, stage) and pooled over kinds; and the
    same with the ETA on the stage's line, for the regression."""
    samples: dict[_Key, list[_Sample]] = {}
    eta_samples: dict[_Key, list[_Sample]] = {}
    for run in runs:
        marks = [*run.stages, run.ended]
        windows = _windows(marks)
        for i, sighting in enumerate(run.stages):
            sample = _length_sample(marks[i], marks[i + 1], windows[i], windows[i + 1])
            if sample is None:
                continue
            keys = [(TrainingKind.UNKNOWN, sighting.stage)]
            if run.kind is not TrainingKind.UNKNOWN:
                keys.append((run.kind, sighting.stage))
            eta = sighting.eta_minutes
            for key in keys:
                samples.setdefault(key, []).append(sample)
                if eta is not None and 0 < eta <= DEFAULT_TUNING.eta_max_minutes:
                    eta_samples.setdefault(key, []).append((eta, *sample[1:]))
    return samples, eta_samples


# (x, lo, hi, v): a length known to lie in [lo, hi] give or take a normal error of variance v
# (where its start was), and x, the ETA it is regressed on.
_Sample = tuple[float, float, float, float]


def _length_sample(
    start: Sighting,
    end: Sighting,
    start_window: tuple[float, float],
    end_window: tuple[float, float],
) -> _Sample | None:
    a, b = start.elapsed_seconds, end.elapsed_seconds
    if a is not None and b is not None and 0 < b - a <= MAX_STAGE:
        return 0.0, b - a, b - a, 0.0
    # The start's uncertainty is taken as noise (a uniform's variance), the end's as the bounds.
    width = start_window[1] - start_window[0]
    middle = (start_window[0] + start_window[1]) / 2
    lo, hi = end_window[0] - middle, end_window[1] - middle
    if not (0 <= width <= MAX_STAGE and 0 < hi <= MAX_STAGE and 0 <= hi - lo <= MAX_STAGE):
        return None
    noise = width * width / 12
    # A length is positive: less a few spreads of the start's noise at most.
    lo = max(lo, -4 * math.sqrt(noise))
    return 0.0, lo, hi, noise


def _windows(marks: Sequence[Sighting]) -> list[tuple[float, float]]:
    """For each sighting, the interval in which its change happened, from the polls alone
    (not from what was expected: learning from expectations would confirm them)."""
    raw = []
    for s in marks:
        lo = s.unseen_at if s.unseen_at is not None and s.unseen_at < s.seen_at else s.seen_at
        raw.append((lo, s.seen_at))
    # Each stamped line bounds when the trainer's clock read zero; the newest that agree pin it.
    z_lo, z_hi = -math.inf, math.inf
    for (lo, hi), s in zip(reversed(raw), reversed(marks), strict=True):
        if s.elapsed_seconds is None or not lo < hi or not finite(lo + hi + s.elapsed_seconds):
            continue
        a, b = lo - s.elapsed_seconds, hi - s.elapsed_seconds
        if max(a, z_lo) > min(b, z_hi):
            break
        z_lo, z_hi = max(a, z_lo), min(b, z_hi)
    windows = []
    for (lo, hi), s in zip(raw, marks, strict=True):
        if s.elapsed_seconds is not None and finite(z_lo + z_hi + s.elapsed_seconds):
            a, b = max(lo, z_lo + s.elapsed_seconds), min(hi, z_hi + s.elapsed_seconds)
            if a <= b:
                lo, hi = a, b
        windows.append((lo, hi))
    return windows


def _fit(samples: Sequence[_Sample], *, regress: bool) -> tuple[int, float, float, float] | None:
    """(samples kept, slope, intercept, sd) of the maximum-likelihood normal law of the
    lengths (around ``slope * x + intercept`` when ``regress``, else around the mean), by
    expectation-maximisation, once outliers are dropped; None with too little to go on."""
    if not samples or (regress and (len(samples) < 3 or _flat(samples))):
        return None
    slope, intercept = _line(samples, [(lo + hi) / 2 for _, lo, hi, _ in samples], regress)
    samples = _screen(samples, slope, intercept)
    if regress and (len(samples) < 3 or _flat(samples)):
        return None
    mids = [(lo + hi) / 2 for _, lo, hi, _ in samples]
    slope, intercept = _line(samples, mids, regress)
    residuals = [m - slope * s[0] - intercept for s, m in zip(samples, mids, strict=True)]
    sd = max(statistics.pstdev(residuals), MIN_SPREAD)
    for _ in range(_EM_ROUNDS):
        # Per sample: its prediction, and the expected length and squared error given what
        # the polls showed (a normal law with the start's noise on top, cut to the bounds).
        guesses = []
        for x, lo, hi, noise in samples:
            p = slope * x + intercept
            guesses.append((p, *_expected_length(p, sd, lo, hi, noise)))
        new_slope, new_intercept = _line(samples, [g[1] for g in guesses], regress)
        residual = 0.0
        for (x, *_), (p, mean, square) in zip(samples, guesses, strict=True):
            shift = p - (new_slope * x + new_intercept)
            residual += square + 2 * shift * (mean - p) + shift * shift
        new_sd = max(math.sqrt(max(residual / len(samples), 0.0)), MIN_SPREAD / 10)
        done = abs(new_sd - sd) < 0.01 and abs(new_intercept - intercept) < 0.01
        slope, intercept, sd = new_slope, new_intercept, new_sd
        if done:
            break
    if not (finite(slope) and finite(intercept) and finite(sd)) or (not regress and intercept < 0):
        return None
    return len(samples), slope, intercept, sd


def _expected_length(
    predicted: float, sd: float, lo: float, hi: float, noise: float
) -> tuple[float, float]:
    """E[length] and E[(length - predicted)^2] when length ~ N(predicted, sd) and length plus
    a N(0, noise) error was seen in [lo, hi]."""
    total = sd * sd + noise
    gain = sd * sd / total
    m, var = truncated(predicted, math.sqrt(total), lo, hi) or flat_moments(lo, hi)
    error = m - predicted
    return predicted + gain * error, gain * gain * (var + error * error) + sd * sd * noise / total


def _flat(samples: Sequence[_Sample]) -> bool:
    """All the ETAs alike: nothing to regress on."""
    return statistics.pvariance([x for x, *_ in samples]) < 1e-9


def _line(samples: Sequence[_Sample], ys: Sequence[float], regress: bool) -> tuple[float, float]:
    if not regress:
        return 0.0, statistics.fmean(ys)
    slope, intercept = statistics.linear_regression([x for x, *_ in samples], ys)
    return slope, intercept


def _screen(samples: Sequence[_Sample], slope: float, intercept: float) -> list[_Sample]:
    """The samples that come within four spreads of the median residual. The spread is robust,
    and at least what the samples' own uncertainty makes of it: when most intervals are alike
    (polls aimed alike) their midpoints' spread is no measure."""
    residuals = [(lo + hi) / 2 - slope * x - intercept for x, lo, hi, _ in samples]
    center = statistics.median(residuals)
    blur = statistics.median(math.sqrt(flat_moments(lo, hi)[1] + v) for _, lo, hi, v in samples)
    limit = _OUTLIER_SPREADS * max(_robust_sd(residuals, center), blur)
    return [
        sample
        for sample, r in zip(samples, residuals, strict=True)
        if abs(r - center) - (sample[2] - sample[1]) / 2 <= limit
    ]


def start_of(sighting: Sighting) -> float:
    began = sighting.began_at
    return began if began is not None and finite(began) else sighting.seen_at


def _robust_sd(values: Sequence[float], center: float) -> float:
    return _MAD_TO_SD * statistics.median(abs(v - center) for v in values)
