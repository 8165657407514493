"""Bootstrap and normal-approximation intervals, paired differences, significance."""

from __future__ import annotations

import math
import random
import statistics

import pytest

from promptsweep.core.measure import stats as stats_module
from promptsweep.core.measure.stats import (
    NORMAL_APPROX_ABOVE,
    Estimate,
    NoiseSummary,
    hierarchical_interval,
    is_significant,
    mean_interval,
    noise_summary,
    paired_difference,
    paired_hierarchical_difference,
    sign_flip_p,
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


def test_intervals_cover_the_true_mean_about_as_often_as_they_say() -> None:
    """Coverage, simulated: 400 samples of Beta(2, 5) scores (true mean 2/7) at each size, exact
    below 10 samples and bootstrapped above; a rule that was too narrow (or too wide) shows here."""
    truth = 2 / 7
    for n in (6, 8, 12, 30):
        rng = random.Random(n)
        covered = 0
        for trial in range(400):
            values = [rng.betavariate(2, 5) for _ in range(n)]
            e = mean_interval(values, seed=trial, resamples=400)
            covered += e.low <= truth <= e.high
        assert 0.88 <= covered / 400 <= 0.995, f"n={n}: {covered / 400:.3f} of 95% intervals covered the mean"


def test_below_ten_samples_the_interval_is_the_exact_sign_flip_one() -> None:
    """[-1, -1, -1, 0] at n = 4 was 'significant' by the percentile bootstrap (35 distinct
    resamples); no sign pattern of 4 values is rare enough to reject anything at 95% (2/16)."""
    small = paired_difference([1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 1.0])
    # Unbounded by the data: it spans every difference two scores can have.
    assert small.mean == -0.75 and (small.low, small.high) == (-1.0, 1.0)
    assert mean_interval([0.2, 0.5, 0.3]) == Estimate(mean=pytest.approx(1 / 3), low=0.0, high=1.0, n=3)
    assert not is_significant(small)
    values = [0.1, 0.3, 0.2, 0.5, 0.4, 0.9, 0.2, 0.3]
    scipy_stats = pytest.importorskip("scipy.stats")
    for shift in (0.0, 0.2, 0.25, 0.6):
        expected = scipy_stats.permutation_test(
            ([v - shift for v in values],), statistic=lambda x: x.sum(), permutation_type="samples",
            n_resamples=math.inf, alternative="two-sided",
        ).pvalue  # fmt: skip
        assert sign_flip_p(values, shift) == pytest.approx(expected)
    e = mean_interval(values)
    # The bounds are where the test starts to reject: just inside accepted, just outside rejected.
    assert sign_flip_p(values, e.low + 1e-4) >= 0.05 > sign_flip_p(values, e.low - 1e-3)
    assert sign_flip_p(values, e.high - 1e-4) >= 0.05 > sign_flip_p(values, e.high + 1e-3)


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


def test_normal_approximation_for_large_n(monkeypatch: pytest.MonkeyPatch) -> None:
    values = scores(10_000)

    class NoResampling(random.Random):
        def __init__(self, *args: object) -> None:
            raise AssertionError("a bootstrap ran above NORMAL_APPROX_ABOVE")

    # No resampling at all on this path (checked, not timed: a busy machine is slow at anything)
    monkeypatch.setattr(stats_module.random, "Random", NoResampling)
    estimate = mean_interval(values, seed=1)
    mean = statistics.fmean(values)
    half = 1.959963984540054 * statistics.stdev(values) / math.sqrt(len(values))
    assert estimate.mean == pytest.approx(mean)
    assert estimate.low == pytest.approx(mean - half)
    assert estimate.high == pytest.approx(mean + half)
    # The seed plays no part on this path.
    assert mean_interval(values, seed=2) == estimate
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


# ------------------------------------------------------------------ repeats: hierarchical intervals


def groups_of(n: int, repeats: int, seed: int = 3) -> list[list[float]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        base = rng.random()
        out.append([base if rng.random() < 0.7 else rng.random() for _ in range(repeats)])
    return out


@pytest.mark.parametrize("n", [0, 1, 2, 17, 300, NORMAL_APPROX_ABOVE + 5])
def test_one_answer_per_sample_gives_exactly_the_flat_interval(n: int) -> None:
    values = scores(n, seed=n)
    for seed in (0, 9):
        assert hierarchical_interval([[v] for v in values], seed=seed) == mean_interval(values, seed=seed)
    other = scores(n, seed=n + 1)
    assert paired_hierarchical_difference([[v] for v in values], [[v] for v in other], seed=4) == (
        paired_difference(values, other, seed=4)
    )


def test_hierarchical_mean_weighs_every_sample_the_same() -> None:
    estimate = hierarchical_interval([[1.0, 1.0, 1.0, 1.0], [0.0]])
    assert estimate.mean == 0.5 and estimate.n == 2
    diff = paired_hierarchical_difference([[0.0, 1.0], [0.5]], [[1.0], [0.5, 0.5, 0.5]])
    assert diff.mean == pytest.approx(0.25) and diff.n == 2


def test_hierarchical_interval_is_seeded_and_contains_the_mean() -> None:
    data = groups_of(40, 3)
    first = hierarchical_interval(data, seed=1)
    assert first == hierarchical_interval(data, seed=1)
    assert first != hierarchical_interval(data, seed=2)
    assert first.low < first.mean < first.high


def test_noise_within_samples_widens_the_interval() -> None:
    """Same sample means, but one run's repeats disagree: its interval must be wider."""
    rng = random.Random(8)
    means = [rng.random() for _ in range(40)]
    steady = [[m, m, m] for m in means]
    noisy = [[m - 0.5, m, m + 0.5] for m in means]
    a, b = hierarchical_interval(steady, seed=1), hierarchical_interval(noisy, seed=1)
    assert a.mean == pytest.approx(b.mean)
    assert b.high - b.low > 1.15 * (a.high - a.low)
    # the paired version resamples each side's repeats: a run against its own noisy twin
    # is not significant, while a steady run against itself has a zero-width interval
    assert not is_significant(paired_hierarchical_difference(noisy, noisy, seed=2))
    assert paired_hierarchical_difference(steady, steady) == Estimate(0.0, 0.0, 0.0, 40)


def test_large_runs_use_the_normal_approximation_over_sample_means() -> None:
    data = groups_of(NORMAL_APPROX_ABOVE + 1, 2)
    means = [statistics.fmean(g) for g in data]
    estimate = hierarchical_interval(data, seed=1)
    half = 1.959963984540054 * statistics.stdev(means) / math.sqrt(len(means))
    assert estimate.low == pytest.approx(statistics.fmean(means) - half)
    assert hierarchical_interval(data, seed=2) == estimate


def test_hierarchical_rejects_empty_groups_and_unequal_pairs() -> None:
    with pytest.raises(ValueError, match=r"groups\[1\] is empty"):
        hierarchical_interval([[0.1], []])
    with pytest.raises(ValueError, match="equal length"):
        paired_hierarchical_difference([[0.1]], [[0.1], [0.2]])
    with pytest.raises(ValueError, match="finite"):
        hierarchical_interval([[0.1, float("inf")]])


def test_noise_summary_agreement_variance_components_and_detectable_difference() -> None:
    groups = [[1.0, 1.0, 1.0], [0.0, 1.0, 0.0], [0.5, 0.5, 0.5], [0.2]]
    answers = [["x", "x", "x"], ["a", "b", "a"], ["p", "q", "p"], ["z"]]  # sample 3 scores the same twice
    noise = noise_summary(groups, answers)
    assert (noise.samples, noise.repeated, noise.agree, noise.answers) == (4, 3, 1, 10)
    assert noise_summary(groups).agree == 2  # without the text, equal scores agree
    # pooled within variance: only sample 2 varies, var([0,1,0]) = 1/3 with 2 degrees of freedom of 6
    assert noise.within_variance == pytest.approx((2 / 3) / 6)
    assert noise.between_variance > 0
    assert noise.noise_share == pytest.approx(
        noise.within_variance / (noise.within_variance + noise.between_variance)
    )
    assert noise.detectable == pytest.approx(1.959963984540054 * math.sqrt(2 * noise.within_variance / 10))
    assert NoiseSummary.from_json(noise.to_json()) == noise


def test_noise_summary_of_a_deterministic_run_is_zero_noise() -> None:
    noise = noise_summary([[0.2, 0.2], [0.9, 0.9], [0.4, 0.4]])
    assert noise.agree == noise.repeated == 3
    assert noise.within_variance == 0.0 and noise.noise_share == 0.0 and noise.detectable == 0.0
    assert noise.between_variance > 0
    single = noise_summary([[0.2], [0.9]])
    assert not single.measured and single.detectable == 0.0


def simulated_run(rng: random.Random, samples: int, repeats: int) -> list[list[float]]:
    """A noisy server: each sample has its usual answer (kept with probability 0.6-1) and
    three others; answer scores are Beta(0.6, 3), so the true expected score is 0.6/3.6."""
    groups = []
    for _ in range(samples):
        answers = [rng.betavariate(0.6, 3.0) for _ in range(4)]
        stable = 1.0 if rng.random() < 0.5 else rng.uniform(0.6, 1.0)
        groups.append(
            [answers[0] if rng.random() < stable else rng.choice(answers[1:]) for _ in range(repeats)]
        )
    return groups


def test_hierarchical_intervals_keep_their_coverage_where_flat_ones_do_not() -> None:
    """Over simulated runs of a noisy server, the hierarchical interval covers the true score
    about 95% of the time; counting each repeat as its own sample is far too narrow.
    (benchmarks/bench_noise.py coverage runs the same with 400 runs.)"""
    truth, runs = 0.6 / 3.6, 150
    rng = random.Random(2024)
    nested = flat = 0
    for run in range(runs):
        groups = simulated_run(rng, 30, 3)
        e = hierarchical_interval(groups, seed=run, resamples=300)
        f = mean_interval([v for g in groups for v in g], seed=run, resamples=300)
        nested += e.low <= truth <= e.high
        flat += f.low <= truth <= f.high
    assert nested / runs >= 0.85  # 95% nominal; small skewed samples cost the percentile bootstrap a little
    assert flat / runs <= nested / runs - 0.1
