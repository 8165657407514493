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
