"""The numbers a search is judged by: the floors every score is read against, and the test split.

A search picks its winner on the validation split, so the winner's validation score is the best
of many and flatters it. Its score, and whether it is written, come from the test split instead:
samples that played no part in any decision. Beside every score stand two floors that need no
model call: a constant answer (each field's most frequent value) and a lookup (the labels of the
most similar train sample, found by the suite's retriever).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from promptsweep.core.data.dataset import Sample
from promptsweep.core.data.suite import Suite
from promptsweep.core.measure.scoring import ConstantAnswer, Scorer
from promptsweep.core.measure.stats import Estimate, paired_difference
from promptsweep.core.neighbours.lookup import lookup_floor
from promptsweep.core.neighbours.nearest import Pool

Z95 = 1.959963984540054
MUST_BEAT_CHOICES = ("baseline", "lookup")
UNKNOWN_SPREAD = 0.5
"""Assumed sd of a paired per-sample difference when nothing measured it: half the width of [0, 1]."""


@dataclass(frozen=True)
class Floors:
    """Per-sample scores of the two no-call answers on some samples, in the samples' order."""

    constant: tuple[float, ...]
    lookup: tuple[float, ...] | None
    """None when the suite has no train split to look answers up in."""
    answer: ConstantAnswer | None = None
    """The constant answer itself (its values and per-field scores), for the reports."""

    @property
    def constant_mean(self) -> float | None:
        return math.fsum(self.constant) / len(self.constant) if self.constant else None

    @property
    def lookup_mean(self) -> float | None:
        return math.fsum(self.lookup) / len(self.lookup) if self.lookup else None


def floors_for(scorer: Scorer, suite: Suite, pool: Pool | None, samples: Sequence[Sample]) -> Floors:
    """Both floors on ``samples``, each from its one assembly: :meth:`Scorer.constant_answer` and
    :func:`~promptsweep.core.neighbours.lookup.lookup_floor` over ``pool`` (the search's train
    split, compared on what its candidates compare)."""
    constant = scorer.constant_answer([s.expected for s in samples])
    lookup = lookup_floor(scorer, suite, pool, samples)
    return Floors(
        constant.per_sample if constant is not None else (),
        lookup.scores(samples) if lookup is not None else None,
        constant,
    )


def confirmable_gain(n: int, spread: float | None) -> float:
    """The smallest mean paired gain a 95% interval over ``n`` samples can put above 0, for a
    per-sample difference with standard deviation ``spread`` (normal approximation)."""
    if n < 2:
        return math.inf
    return Z95 * (spread if spread else UNKNOWN_SPREAD) / math.sqrt(n)


def difference_spread(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Standard deviation of the per-sample differences ``b - a`` (None below two pairs)."""
    if len(a) < 2 or len(a) != len(b):
        return None
    spread = statistics.stdev(y - x for x, y in zip(a, b, strict=True))
    return spread or None


def labels_missing_from(
    train: Sequence[Sample], samples: Sequence[Sample], label_fields: Sequence[str]
) -> int:
    """How many ``samples`` have a label (in any label field) that no train sample has: retrieval
    can show them no example and a lookup can never copy their answer."""
    seen = {name: {s.expected.get(name) for s in train} for name in label_fields}
    return sum(1 for s in samples if any(s.expected.get(name) not in seen[name] for name in label_fields))


@dataclass(frozen=True)
class TestVerdict:
    """A paired difference on the test split and whether it clears ``needs``."""

    against: str
    difference: Estimate
    needs: float = 0.0

    @property
    def significant(self) -> bool:
        return self.difference.n >= 2 and self.difference.low > self.needs

    def describe(self) -> str:
        d = self.difference
        floor = f" (needs > {self.needs:+.3f})" if self.needs else ""
        if self.significant:
            word = "significant"
        elif d.n >= 2 and d.high < 0:
            word = f"significantly worse than the {self.against}"
        else:
            word = "not significant"
        return f"{d.mean:+.3f} (95% CI {d.low:+.3f} to {d.high:+.3f}, n={d.n}): {word}{floor}"


def test_verdict(
    against: str, reference: Sequence[float], winner: Sequence[float], *, needs: float, seed: int
) -> TestVerdict:
    return TestVerdict(against, paired_difference(reference, winner, seed=seed), needs)


def promotion(verdicts: Mapping[str, TestVerdict], must_beat: Sequence[str]) -> tuple[bool, str]:
    """Whether the winner is written, and a sentence that says why (not)."""
    missing = [name for name in must_beat if name not in verdicts]
    if missing:
        return False, f"no test-split comparison against the {', '.join(missing)}"
    failed = [name for name in must_beat if not verdicts[name].significant]
    if failed:
        return False, "it does not beat the " + " and the ".join(failed) + " on the test split"
    return True, "it beats the " + " and the ".join(must_beat) + " on the test split"
