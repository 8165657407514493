"""Confidence intervals for mean scores and paired score differences.

Eval suites are small and scores are bounded and skewed, so the interval is a percentile
bootstrap seeded explicitly: the same values in the same order give the same interval on
every run.  Callers sort values by sample id so arrival order (xdist) does not matter.
Large samples use the normal approximation, which is accurate there and much faster.
Below :data:`EXACT_BELOW` samples a bootstrap has too few distinct resamples to mean
anything (four values allow 35), so the interval is exact instead: the shifts a sign-flip
test does not reject (Fisher's randomization test, every one of the 2^n sign patterns).
Fewer than six values can never exclude a shift at 95%: such an interval is unbounded, and
nothing rests on it.

A run may ask each sample several times (``repeats``): llama-server does not give the same
answer to the same request even at temperature 0. Those runs use the hierarchical
functions, which take one group of repeat scores per sample and resample both levels, so
the interval covers which samples were drawn *and* the model's answers changing; with one
answer per sample they return exactly what the flat functions return.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

__all__ = [
    "EXACT_BELOW",
    "NORMAL_APPROX_ABOVE",
    "NO_INTERVAL",
    "Estimate",
    "NoiseSummary",
    "difference_p",
    "estimate_interval",
    "hierarchical_interval",
    "holm",
    "interval_text",
    "is_significant",
    "mean_interval",
    "noise_summary",
    "paired_difference",
    "paired_hierarchical_difference",
    "paired_quantile_difference",
    "quantile",
    "sign_flip_interval",
    "sign_flip_p",
]

NORMAL_APPROX_ABOVE = 1000
"""Samples above this size use mean ± z·sd/√n instead of the bootstrap."""
SCORES = (0.0, 1.0)
"""What a score can be: where an interval the data cannot bound stops (mean intervals)."""
DIFFERENCES = (-1.0, 1.0)
"""What a difference of two scores can be (paired intervals)."""
EXACT_BELOW = 10
"""Samples below this size get the exact sign-flip interval instead of the bootstrap."""


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
    bounds: tuple[float, float] = SCORES,
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

    def draw(choices: Any) -> float:
        return float(sum(choices(data, k=n))) / n

    low, high = _interval(mean, data, confidence, seed, resamples, draw, bounds)
    return Estimate(mean=mean, low=min(low, mean), high=max(high, mean), n=n)


def sign_flip_p(values: Sequence[float], shift: float = 0.0) -> float:
    """Two-sided p-value of "the mean is ``shift``" by the sign-flip test: the share of the 2^n
    sign patterns whose signed sum of ``values - shift`` is at least as far from 0 as the
    observed one (exact; meant for n below :data:`EXACT_BELOW`, 2^n patterns)."""
    x = np.asarray(values, dtype=np.float64) - shift
    n = len(x)
    signs = 1 - 2 * ((np.arange(2**n)[:, None] >> np.arange(n)) & 1)
    sums = np.abs(signs @ x)
    observed = abs(float(x.sum()))
    return float(np.count_nonzero(sums >= observed - 1e-12 * max(1.0, observed))) / len(sums)


def sign_flip_interval(values: Sequence[float], confidence: float) -> tuple[float, float]:
    """The shifts the sign-flip test does not reject at ``1 - confidence``: an exact interval for
    small samples (unbounded, ±inf, where no pattern is extreme enough to reject anything).
    Found by bisection on each side of the mean, to 1e-9, and rounded to 1e-6."""
    data = [float(v) for v in values]
    n = len(data)
    alpha = 1.0 - confidence
    if 2.0 / 2**n >= alpha:  # even all signs alike is not rare enough to reject
        return -math.inf, math.inf
    mean = math.fsum(data) / n
    span = max(data) - min(data) + 1.0

    def bound(direction: float) -> float:
        inside, outside = mean, mean + direction * span
        while sign_flip_p(data, outside) >= alpha:  # far enough out that it is rejected
            outside = mean + 2 * (outside - mean)
        while abs(outside - inside) > 1e-9:
            middle = (inside + outside) / 2
            if sign_flip_p(data, middle) >= alpha:
                inside = middle
            else:
                outside = middle
        return inside

    return round(bound(-1.0), 6), round(bound(1.0), 6)


def paired_difference(
    a: Sequence[float],
    b: Sequence[float],
    *,
    confidence: float = 0.95,
    seed: int = 0,
    resamples: int = 2000,
    bounds: tuple[float, float] = DIFFERENCES,
) -> Estimate:
    """Mean of ``b[i] - a[i]`` with an interval, bootstrapping over pairs.

    Pairing (same samples scored twice, e.g. baseline ``a`` vs candidate ``b``) removes the
    per-sample difficulty from the comparison.  Positive means ``b`` scores higher.
    """
    if len(a) != len(b):
        raise ValueError(f"paired samples must have equal length, got {len(a)} and {len(b)}")
    differences = [float(right) - float(left) for left, right in zip(a, b, strict=True)]
    return mean_interval(differences, confidence=confidence, seed=seed, resamples=resamples, bounds=bounds)


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


def _groups(groups: Sequence[Sequence[float]], name: str = "groups") -> list[list[float]]:
    data = [[float(value) for value in group] for group in groups]
    for index, group in enumerate(data):
        if not group:
            raise ValueError(f"{name}[{index}] is empty: every sample needs at least one score")
        if not all(math.isfinite(value) for value in group):
            raise ValueError("values must be finite numbers (got NaN or infinity)")
    return data


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


def _stage_two(data: list[list[float]]) -> list[float | list[float]]:
    """Each sample as its value when every repeat agrees (a resample cannot change it, so
    the loop skips the draw: most samples agree), else its list of repeat scores."""
    return [group[0] if len(set(group)) == 1 else group for group in data]


def _resampled_mean(group: float | list[float], choices: Any) -> float:
    """The mean of one bootstrap draw of a sample's repeats (the second stage)."""
    if isinstance(group, float):
        return group
    m = len(group)
    return float(sum(choices(group, k=m))) / m


def _normal_interval(center: float, per_sample: list[float], confidence: float) -> tuple[float, float]:
    n = len(per_sample)
    variance = math.fsum((v - center) ** 2 for v in per_sample) / (n - 1)
    half_width = NormalDist().inv_cdf(1.0 - (1.0 - confidence) / 2) * math.sqrt(variance / n)
    return center - half_width, center + half_width


def _interval(
    center: float,
    per_sample: list[float],
    confidence: float,
    seed: int,
    resamples: int,
    draw: Callable[[Any], float],
    bounds: tuple[float, float],
) -> tuple[float, float]:
    """The one rule for an interval from per-sample values: exact below :data:`EXACT_BELOW`,
    the normal approximation above :data:`NORMAL_APPROX_ABOVE`, else a percentile bootstrap of
    ``draw`` (one resampled statistic from ``random.Random(seed).choices``)."""
    n = len(per_sample)
    if n < EXACT_BELOW:
        low, high = sign_flip_interval(per_sample, confidence)
        # What the data cannot bound stops where the measure does (a score's range, a difference's).
        return max(low, bounds[0]), min(high, bounds[1])
    if n > NORMAL_APPROX_ABOVE:
        return _normal_interval(center, per_sample, confidence)
    choices = random.Random(seed).choices
    alpha = 1.0 - confidence
    draws = sorted(draw(choices) for _ in range(resamples))
    return _percentile(draws, alpha / 2), _percentile(draws, 1.0 - alpha / 2)


def hierarchical_interval(
    groups: Sequence[Sequence[float]],
    *,
    confidence: float = 0.95,
    seed: int = 0,
    resamples: int = 2000,
    bounds: tuple[float, float] = SCORES,
) -> Estimate:
    """Mean score over samples, ``groups[i]`` holding the repeat scores of sample ``i``.

    The estimate is the mean of the per-sample means (every sample weighs the same, however
    many of its repeats answered). The interval is a two-stage percentile bootstrap: draw
    samples with replacement, then each drawn sample's repeats with replacement. Resampling
    the repeats too makes it slightly conservative (the within-sample noise enters the
    spread about twice, Davison & Hinkley 1997, sect. 3.8), the safe side for a gate. With
    exactly one score per sample it *is* :func:`mean_interval` (same seed, same numbers).
    Above :data:`NORMAL_APPROX_ABOVE` samples: normal approximation over the sample means.
    ``Estimate.n`` counts samples, not answers.
    """
    _check(confidence, resamples)
    data = _groups(groups)
    if all(len(group) == 1 for group in data):
        return mean_interval(
            [group[0] for group in data], confidence=confidence, seed=seed, resamples=resamples, bounds=bounds
        )
    n = len(data)
    means = [_mean(group) for group in data]
    mean = math.fsum(means) / n
    stage = _stage_two(data)

    def draw(choices: Any) -> float:
        return sum(_resampled_mean(group, choices) for group in choices(stage, k=n)) / n

    low, high = _interval(mean, means, confidence, seed, resamples, draw, bounds)
    return Estimate(mean=mean, low=min(low, mean), high=max(high, mean), n=n)


def paired_hierarchical_difference(
    a: Sequence[Sequence[float]],
    b: Sequence[Sequence[float]],
    *,
    confidence: float = 0.95,
    seed: int = 0,
    resamples: int = 2000,
    bounds: tuple[float, float] = DIFFERENCES,
) -> Estimate:
    """Mean over samples of ``mean(b[i]) - mean(a[i])``, pairing the two runs by sample index.

    The bootstrap draws samples with replacement, then the repeats of ``a[i]`` and of
    ``b[i]`` independently within each drawn sample (the two runs' answers are separate
    requests). With exactly one score per sample on both sides it *is*
    :func:`paired_difference` (same seed, same numbers). Positive means ``b`` scores higher.
    """
    _check(confidence, resamples)
    if len(a) != len(b):
        raise ValueError(f"paired samples must have equal length, got {len(a)} and {len(b)}")
    data_a, data_b = _groups(a, "a"), _groups(b, "b")
    if all(len(group) == 1 for group in data_a) and all(len(group) == 1 for group in data_b):
        return paired_difference(
            [group[0] for group in data_a],
            [group[0] for group in data_b],
            confidence=confidence,
            seed=seed,
            resamples=resamples,
            bounds=bounds,
        )
    n = len(data_a)
    differences = [_mean(right) - _mean(left) for left, right in zip(data_a, data_b, strict=True)]
    mean = math.fsum(differences) / n
    pairs = list(zip(_stage_two(data_a), _stage_two(data_b), strict=True))

    def draw(choices: Any) -> float:
        total = 0.0
        for left, right in choices(pairs, k=n):
            total += _resampled_mean(right, choices) - _resampled_mean(left, choices)
        return total / n

    low, high = _interval(mean, differences, confidence, seed, resamples, draw, bounds)
    return Estimate(mean=mean, low=min(low, mean), high=max(high, mean), n=n)


def quantile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank quantile (``q`` in [0, 1]) of ``values``; None for no values. The latency
    p50/p95 of every report use it."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q * len(ordered) + 0.5) - 1))
    return ordered[rank]


def paired_quantile_difference(
    a: Sequence[Sequence[float]],
    b: Sequence[Sequence[float]],
    *,
    q: float = 0.95,
    confidence: float = 0.95,
    seed: int = 0,
    resamples: int = 2000,
) -> Estimate:
    """``quantile(b) - quantile(a)`` over the values of paired samples (e.g. each sample's
    latencies, one per repeat), with a percentile bootstrap that draws samples with their
    values, so a p95 latency rise is judged like a score drop. Pairs where either side has
    no value are left out; ``n`` counts the pairs used."""
    _check(confidence, resamples)
    if len(a) != len(b):
        raise ValueError(f"paired samples must have equal length, got {len(a)} and {len(b)}")
    pairs = [(list(x), list(y)) for x, y in zip(a, b, strict=True) if x and y]
    n = len(pairs)

    def difference(chosen: Sequence[tuple[list[float], list[float]]]) -> float:
        left = quantile([v for x, _ in chosen for v in x], q)
        right = quantile([v for _, y in chosen for v in y], q)
        return (right or 0.0) - (left or 0.0)

    if n == 0:
        return Estimate(mean=0.0, low=0.0, high=0.0, n=0)
    point = difference(pairs)
    if n == 1:
        return Estimate(mean=point, low=point, high=point, n=1)
    rng = random.Random(seed)
    draws = sorted(difference(rng.choices(pairs, k=n)) for _ in range(resamples))
    alpha = 1.0 - confidence
    low, high = _percentile(draws, alpha / 2), _percentile(draws, 1.0 - alpha / 2)
    return Estimate(mean=point, low=min(low, point), high=max(high, point), n=n)


@dataclass(frozen=True)
class NoiseSummary:
    """How much a run's answers change when the same request is sent again.

    Variance components of one answer's score (one-way random effects, method of moments):
    ``within_variance`` is prediction noise (the same sample, asked again) and
    ``between_variance`` the sample draw (which samples the suite happens to hold).
    """

    samples: int
    """Samples in the run."""
    repeated: int
    """Samples with more than one answer (only these say anything about noise)."""
    agree: int
    """Of ``repeated``, those whose answers all agree (the raw text when given, else the score)."""
    answers: int
    """All answers (samples times repeats)."""
    within_variance: float
    between_variance: float
    noise_share: float
    """``within / (within + between)``: the share of one answer's score variance that is
    prediction noise rather than sample draw (0 when nothing varies)."""
    detectable: float
    """The smallest difference this run can tell from noise: the half-width of the
    ``confidence`` interval for the difference between this run and an identical re-run on
    the same samples, ``z·sqrt(2·within_variance/answers)``. 0 when no answer changed."""

    @property
    def measured(self) -> bool:
        return self.repeated > 0

    def to_json(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "repeated": self.repeated,
            "agree": self.agree,
            "answers": self.answers,
            "within_variance": self.within_variance,
            "between_variance": self.between_variance,
            "noise_share": self.noise_share,
            "detectable": self.detectable,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NoiseSummary:
        return cls(**{name: data[name] for name in cls.__dataclass_fields__})


def noise_summary(
    groups: Sequence[Sequence[float]],
    answers: Sequence[Sequence[str]] | None = None,
    *,
    confidence: float = 0.95,
) -> NoiseSummary:
    """Agreement and variance components of a run with repeats (``groups[i]``: sample i's scores).

    ``answers[i]``, when given, holds the raw answers in the same order: agreement is then
    judged on the text (two different answers can score the same).
    """
    data = _groups(groups)
    if answers is not None and [len(x) for x in answers] != [len(g) for g in data]:
        raise ValueError("answers must have the same shape as groups")
    k = len(data)
    total = sum(len(group) for group in data)
    repeated = [i for i, group in enumerate(data) if len(group) > 1]
    agree = sum(1 for i in repeated if len(set(answers[i] if answers is not None else data[i])) == 1)
    means = [_mean(group) for group in data]
    ss_within = math.fsum((v - means[i]) ** 2 for i in repeated for v in data[i])
    df_within = sum(len(data[i]) - 1 for i in repeated)
    within = ss_within / df_within if df_within else 0.0
    between = 0.0
    if k > 1:
        grand = math.fsum(v for group in data for v in group) / total
        ms_between = math.fsum(len(g) * (m - grand) ** 2 for g, m in zip(data, means, strict=True)) / (k - 1)
        m0 = (total - sum(len(g) ** 2 for g in data) / total) / (k - 1)
        between = max(0.0, (ms_between - within) / m0) if df_within else ms_between / m0
    spread = within + between
    z = NormalDist().inv_cdf(1.0 - (1.0 - confidence) / 2)
    return NoiseSummary(
        samples=k,
        repeated=len(repeated),
        agree=agree,
        answers=total,
        within_variance=within,
        between_variance=between,
        noise_share=within / spread if spread > 0 else 0.0,
        detectable=z * math.sqrt(2 * within / total) if total else 0.0,
    )


def is_significant(e: Estimate) -> bool:
    """True when the interval excludes 0; never for fewer than two samples."""
    return e.n >= 2 and (e.low > 0.0 or e.high < 0.0)


def difference_p(differences: Sequence[float]) -> float:
    """Two-sided p-value of "the mean difference is 0", by the same rule as the intervals: the
    exact sign-flip test below :data:`EXACT_BELOW` pairs, Student's t-test above (scipy)."""
    data = [float(d) for d in differences]
    n = len(data)
    if n < 2:
        return 1.0
    if n < EXACT_BELOW:
        return sign_flip_p(data)
    mean = math.fsum(data) / n
    sd = math.sqrt(math.fsum((d - mean) ** 2 for d in data) / (n - 1))
    if sd == 0:
        return 1.0 if mean == 0 else 0.0
    # Student's t from scipy.special (scipy.stats takes seconds to import, a search's budget).
    from scipy.special import stdtr

    statistic = mean / (sd / math.sqrt(n))
    return float(2 * stdtr(n - 1, -abs(statistic)))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of several p-values (family-wise error at the nominal level):
    the k-th smallest is multiplied by (m - k + 1), kept monotone, capped at 1. Written here
    because scipy has no Holm and statsmodels is a large dependency for eight lines."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted
