"""Confidence intervals for mean scores and paired score differences.

Eval suites are small and scores are bounded and skewed, so the interval is a percentile
bootstrap seeded explicitly: the same values in the same order give the same interval on
every run.  Callers sort values by sample id so arrival order (xdist) does not matter.
Large samples use the normal approximation, which is accurate there and much faster.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

__all__ = [
    "NORMAL_APPROX_ABOVE",
    "NO_INTERVAL",
    "Estimate",
    "estimate_interval",
    "interval_text",
    "is_significant",
    "mean_interval",
    "paired_difference",
]

NORMAL_APPROX_ABOVE = 1000
"""Samples above this size use mean ± z·sd/√n instead of the bootstrap."""


@dataclass(frozen=True)
class Estimate:
    """A mean with a confidence interval; ``low <= mean <= high`` always holds."""

    mean: float
    low: float
    high: float
    n: int


def _check(confidence: float, resamples: int) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1 (exclusive), got {confidence!r}")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples!r}")


def _percentile(ordered: Sequence[float], q: float) -> float:
    """Linear interpolation between order statistics (numpy's default method)."""
    position = q * (len(ordered) - 1)
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    fraction = position - below
    return ordered[below] + (ordered[above] - ordered[below]) * fraction


def mean_interval(
    values: Sequence[float],
    *,
    confidence: float = 0.95,
    seed: int = 0,
    resamples: int = 2000,
) -> Estimate:
    """Mean of ``values`` with a two-sided ``confidence`` interval.

    n == 0 gives all zeros with n=0; n == 1 a zero-width interval; n up to
    :data:`NORMAL_APPROX_ABOVE` a percentile bootstrap with ``random.Random(seed)``; larger
    n the normal approximation.  Non-finite values raise ``ValueError``.
    """
    _check(confidence, resamples)
    data = [float(value) for value in values]
    if not all(math.isfinite(value) for value in data):
        raise ValueError("values must be finite numbers (got NaN or infinity)")
    n = len(data)
    if n == 0:
        return Estimate(mean=0.0, low=0.0, high=0.0, n=0)
    mean = math.fsum(data) / n
    if n == 1:
        return Estimate(mean=mean, low=mean, high=mean, n=1)
    alpha = 1.0 - confidence
    if n > NORMAL_APPROX_ABOVE:
        variance = math.fsum((value - mean) ** 2 for value in data) / (n - 1)
        half_width = NormalDist().inv_cdf(1.0 - alpha / 2) * math.sqrt(variance / n)
        low, high = mean - half_width, mean + half_width
    else:
        rng = random.Random(seed)
        choices = rng.choices
        means = sorted(sum(choices(data, k=n)) / n for _ in range(resamples))
        low, high = _percentile(means, alpha / 2), _percentile(means, 1.0 - alpha / 2)
    return Estimate(mean=mean, low=min(low, mean), high=max(high, mean), n=n)


def paired_difference(
    a: Sequence[float],
    b: Sequence[float],
    *,
    confidence: float = 0.95,
    seed: int = 0,
    resamples: int = 2000,
) -> Estimate:
    """Mean of ``b[i] - a[i]`` with an interval, bootstrapping over pairs.

    Pairing (same samples scored twice, e.g. baseline ``a`` vs candidate ``b``) removes the
    per-sample difficulty from the comparison.  Positive means ``b`` scores higher.
    """
    if len(a) != len(b):
        raise ValueError(f"paired samples must have equal length, got {len(a)} and {len(b)}")
    differences = [float(right) - float(left) for left, right in zip(a, b, strict=True)]
    return mean_interval(differences, confidence=confidence, seed=seed, resamples=resamples)


NO_INTERVAL = "—"
"""How an interval prints when fewer than two values make it meaningless (n=1 gives 0.22-0.22)."""


def interval_text(
    low: float | None,
    high: float | None,
    n: int | None,
    *,
    digits: int = 2,
    sep: str = "-",
    signed: bool = False,
) -> str:
    """``0.08-0.15``; :data:`NO_INTERVAL` for n < 2 or a missing bound. Every report prints
    intervals through this, so an interval of one sample reads the same everywhere."""
    if n is None or n < 2 or low is None or high is None:
        return NO_INTERVAL
    spec = f"{'+' if signed else ''}.{digits}f"
    return f"{low:{spec}}{sep}{high:{spec}}"


def estimate_interval(e: Estimate, *, digits: int = 2, sep: str = "-", signed: bool = False) -> str:
    return interval_text(e.low, e.high, e.n, digits=digits, sep=sep, signed=signed)


def is_significant(e: Estimate) -> bool:
    """True when the interval excludes 0; never for fewer than two samples."""
    return e.n >= 2 and (e.low > 0.0 or e.high < 0.0)
