"""Bootstrap and normal-approximation intervals, paired differences, significance."""

from __future__ import annotations

import math
import random
import statistics
import time

import pytest

from promptsweep.core.stats import (
    NORMAL_APPROX_ABOVE,
    Estimate,
    is_significant,
    mean_interval,
    paired_difference,
)


def scores(n: int, seed: int = 7) -> list[float]:
    rng = random.Random(seed)
    return [rng.random() for _ in range(n)]


def test_empty_and_single() -> None:
    assert mean_interval([]) == Estimate(mean=0.0, low=0.0, high=0.0, n=0)
    assert mean_interval([0.4]) == Estimate(mean=0.4, low=0.4, high=0.4, n=1)


def test_constant_values_give_zero_width() -> None:
    assert mean_interval([0.5] * 20) == Estimate(mean=0.5, low=0.5, high=0.5, n=20)


def test_deterministic_for_same_seed_and_varies_with_seed() -> None:
    values = scores(50)
    assert mean_interval(values, seed=3) == mean_interval(values, seed=3)
    assert mean_interval(values, seed=3) != mean_interval(values, seed=4)


def test_interval_contains_mean() -> None:
    for n in (2, 3, 10, 100, 1000, 2000):
        estimate = mean_interval(scores(n))
        assert estimate.n == n
        assert estimate.mean == pytest.approx(statistics.fmean(scores(n)))
        assert estimate.low <= estimate.mean <= estimate.high
        assert estimate.low < estimate.high


def test_mean_inside_interval_even_with_one_resample() -> None:
    values = scores(30)
    for seed in range(5):
        estimate = mean_interval(values, seed=seed, resamples=1)
        assert estimate.low <= estimate.mean <= estimate.high


def test_skewed_small_sample_still_contains_mean() -> None:
    estimate = mean_interval([0.0, 0.0, 0.0, 1.0])
    assert estimate.low <= estimate.mean == 0.25 <= estimate.high


def test_interval_narrows_with_n() -> None:
    widths = [(lambda e: e.high - e.low)(mean_interval(scores(n))) for n in (10, 100, 1000, 5000)]
    assert widths == sorted(widths, reverse=True)
    assert widths[0] > 2 * widths[2]


def test_higher_confidence_is_wider() -> None:
    values = scores(80)
    narrow = mean_interval(values, confidence=0.8)
    wide = mean_interval(values, confidence=0.99)
    assert wide.low < narrow.low and narrow.high < wide.high


def test_bootstrap_roughly_matches_theory() -> None:
    # Uniform(0, 1): sd = 1/sqrt(12); a 95% half-width is about 1.96 * sd / sqrt(n).
    n = 400
    estimate = mean_interval(scores(n))
    expected_half = 1.96 / math.sqrt(12) / math.sqrt(n)
    assert (estimate.high - estimate.low) / 2 == pytest.approx(expected_half, rel=0.2)


def test_normal_approximation_for_large_n() -> None:
    values = scores(10_000)
    start = time.perf_counter()
    estimate = mean_interval(values, seed=1)
    elapsed = time.perf_counter() - start
    mean = statistics.fmean(values)
    half = 1.959963984540054 * statistics.stdev(values) / math.sqrt(len(values))
    assert estimate.mean == pytest.approx(mean)
    assert estimate.low == pytest.approx(mean - half)
    assert estimate.high == pytest.approx(mean + half)
    # The seed plays no part on this path.
    assert mean_interval(values, seed=2) == estimate
    assert elapsed < 0.5
    assert NORMAL_APPROX_ABOVE == 1000


def test_boundary_n_uses_bootstrap() -> None:
    values = scores(NORMAL_APPROX_ABOVE)
    assert mean_interval(values, seed=1, resamples=200) != mean_interval(values, seed=2, resamples=200)


def test_paired_difference_detects_clear_shift() -> None:
    rng = random.Random(11)
    baseline = [rng.random() * 0.6 for _ in range(40)]
    better = [min(1.0, value + 0.3 + rng.uniform(-0.05, 0.05)) for value in baseline]
    estimate = paired_difference(baseline, better)
    assert estimate.n == 40
    assert estimate.mean > 0.25
    assert estimate.low > 0
    assert is_significant(estimate)
    reverse = paired_difference(better, baseline)
    assert reverse.high < 0
    assert is_significant(reverse)


def test_paired_difference_noise_is_not_significant() -> None:
    rng = random.Random(5)
    a = [rng.random() for _ in range(40)]
    noise = [rng.gauss(0.0, 0.1) for _ in range(20)]
    b = [value + delta for value, delta in zip(a, noise + [-d for d in noise], strict=True)]
    estimate = paired_difference(a, b)
    assert estimate.mean == pytest.approx(0.0, abs=1e-12)
    assert estimate.low < 0 < estimate.high
    assert not is_significant(estimate)


def test_paired_difference_is_mean_of_b_minus_a() -> None:
    estimate = paired_difference([0.0, 0.5, 1.0], [1.0, 0.5, 1.0])
    assert estimate.mean == pytest.approx(1 / 3)


def test_paired_difference_requires_equal_lengths() -> None:
    with pytest.raises(ValueError, match="equal length"):
        paired_difference([0.1, 0.2], [0.3])


def test_is_significant_needs_two_samples() -> None:
    assert not is_significant(Estimate(mean=0.5, low=0.5, high=0.5, n=1))
    assert not is_significant(Estimate(mean=0.0, low=0.0, high=0.0, n=0))
    assert is_significant(Estimate(mean=0.2, low=0.1, high=0.3, n=5))
    assert not is_significant(Estimate(mean=0.2, low=0.0, high=0.3, n=5))


@pytest.mark.parametrize("kwargs", [{"confidence": 0.0}, {"confidence": 1.0}, {"resamples": 0}])
def test_invalid_parameters(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        mean_interval([0.1, 0.2], **kwargs)  # type: ignore[arg-type]


def test_non_finite_values_rejected() -> None:
    with pytest.raises(ValueError, match="finite"):
        mean_interval([0.1, float("nan")])
