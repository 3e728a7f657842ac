"""The small amount of probability the poll policy needs: normal laws cut to an interval."""

from __future__ import annotations

import math
from collections.abc import Sequence

# Spreads and times beyond this (about three years) are as good as none.
FAR = 1e8
MIN_SPREAD = 0.5
SQRT2 = math.sqrt(2)
SQRT3 = math.sqrt(3)
SQRT12 = math.sqrt(12)


def posterior(lo: float, hi: float, factors: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """Mean and standard deviation of a time known to lie in [lo, hi], with normal beliefs
    (mean, sd) about it; beliefs the interval rules out give way to a flat one."""
    factors = [(m, max(s, MIN_SPREAD)) for m, s in factors if finite(m) and 0 <= s <= FAR]
    if factors:
        precision = sum(1 / (s * s) for _, s in factors)
        mean = sum(m / (s * s) for m, s in factors) / precision
        moments = truncated(mean, 1 / math.sqrt(precision), lo, hi)
        if moments is not None:
            return moments[0], math.sqrt(moments[1])
    return (lo + hi) / 2, (hi - lo) / 2 / SQRT3


def truncated(mean: float, sd: float, lo: float, hi: float) -> tuple[float, float] | None:
    """Mean and variance of a normal (mean, sd > 0) restricted to [lo, hi]; None when that
    interval is too far in its tails to say."""
    if lo == hi:
        return lo, 0.0
    a, b = (lo - mean) / sd, (hi - mean) / sd
    mass = cdf(b) - cdf(a)
    if not mass > 1e-6:
        return None
    pa, pb = pdf(a), pdf(b)
    shift = (pa - pb) / mass
    var = 1 + ((a * pa if finite(a) else 0) - (b * pb if finite(b) else 0)) / mass - shift**2
    return min(max(mean + sd * shift, lo), hi), sd * sd * max(var, 0.0)


def cdf(z: float) -> float:
    return 0.5 * (1 + math.erf(z / SQRT2))


def pdf(z: float) -> float:
    return math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi) if abs(z) < 40 else 0.0


def flat_moments(lo: float, hi: float) -> tuple[float, float]:
    """Mean and variance of a uniform law on [lo, hi]."""
    return (lo + hi) / 2, (hi - lo) * (hi - lo) / 12


def finite(value: float) -> bool:
    """Not infinite, not NaN."""
    return math.isfinite(value)
