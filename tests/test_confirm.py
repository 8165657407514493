"""The test-split verdict's words: better, worse, or neither, as its interval says."""

from __future__ import annotations

from promptsweep.core.measure.stats import Estimate
from promptsweep.optimize.confirm import TestVerdict as Verdict  # not a test class


def test_a_verdict_below_zero_says_significantly_worse_not_merely_not_significant() -> None:
    worse = Verdict("baseline", Estimate(-0.041, -0.106, -0.001, 16))
    unclear = Verdict("baseline", Estimate(0.017, -0.019, 0.078, 16))
    better = Verdict("baseline", Estimate(0.265, 0.132, 0.418, 30))
    assert worse.describe().endswith("): significantly worse than the baseline")
    assert not worse.significant
    assert unclear.describe().endswith("): not significant")
    assert better.describe().endswith("): significant") and better.significant


def test_the_confirmable_gain_is_confirmed_with_80_percent_power() -> None:
    """The gain the plan says the test split confirms: simulated paired differences with that mean
    and spread come out significant about 80% of the time (1.96 sd/sqrt(n), the old figure, gave 50%)."""
    import random

    from promptsweep.core.measure.stats import difference_p
    from promptsweep.optimize.confirm import confirmable_gain, samples_for

    n, spread = 16, 0.36
    gain = confirmable_gain(n, spread)
    assert 0.26 < gain < 0.28, "the example's 16 test samples need about +0.27, not +0.19"
    rng = random.Random(5)
    confirmed = sum(difference_p([rng.gauss(gain, spread) for _ in range(n)]) < 0.05 for _ in range(2000))
    assert 0.76 < confirmed / 2000 < 0.84
    old = 1.959963984540054 * spread / n**0.5
    halves = sum(difference_p([rng.gauss(old, spread) for _ in range(n)]) < 0.05 for _ in range(2000))
    assert halves / 2000 < 0.6
    assert confirmable_gain(5, spread) == float("inf"), "five samples confirm nothing"
    needed = samples_for(0.1, 0.4)
    assert needed is not None and confirmable_gain(needed, 0.4) <= 0.1 < confirmable_gain(needed - 1, 0.4)


def test_the_t_test_is_scipys() -> None:
    scipy_stats = __import__("pytest").importorskip("scipy.stats")
    from promptsweep.core.measure.stats import difference_p

    d = [0.3, -0.1, 0.3, 0.0, 0.3, 0.0, 0.2, -0.1, 0.3, 0.0, 0.1, 0.1]
    assert abs(difference_p(d) - scipy_stats.ttest_1samp(d, 0.0).pvalue) < 1e-9
