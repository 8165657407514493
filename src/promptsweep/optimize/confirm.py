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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from promptsweep.core.data.dataset import Sample
from promptsweep.core.data.suite import Suite
from promptsweep.core.measure.scoring import ConstantAnswer, Scorer
from promptsweep.core.measure.stats import Estimate, paired_difference
from promptsweep.core.neighbours.lookup import lookup_floor
from promptsweep.core.neighbours.nearest import Pool
from promptsweep.optimize.ledger import Ledger
from promptsweep.optimize.runner import Job, Runner
from promptsweep.optimize.strategies import BASELINE

MUST_BEAT_CHOICES = ("baseline", "lookup")
POWER = 0.8
"""The chance a real gain of the stated size is confirmed: what "the test can confirm" means."""
REALISTIC_GAIN = 0.15
"""A gain a prompt change plausibly brings; a test split that cannot confirm it is too small."""
PRIOR_SPREAD = 0.4
"""The stated prior sd of a per-sample paired score difference, before anything is measured
(0.3 to 0.5 on the suites measured here)."""


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


def confirmable_gain(
    n: int, spread: float | None, *, power: float = POWER, confidence: float = 0.95
) -> float:
    """The smallest mean paired gain a test of ``n`` samples confirms (interval above 0) with
    probability ``power``, for per-sample differences of standard deviation ``spread`` (the
    stated :data:`PRIOR_SPREAD` when nothing measured it): (t(1-a/2) + t(power)) x sd / sqrt(n),
    with n - 1 degrees of freedom. 1.96 x sd / sqrt(n), the old figure, is the gain confirmed
    half of the time. Fewer than six samples confirm nothing (the exact test cannot reject)."""
    if n < 6:
        return math.inf
    # Student's t quantiles from scipy.special (scipy.stats takes seconds to import).
    from scipy.special import stdtrit

    sd = spread if spread else PRIOR_SPREAD
    quantiles = stdtrit(n - 1, 1 - (1 - confidence) / 2) + stdtrit(n - 1, power)
    return float(quantiles * sd / math.sqrt(n))


def samples_for(
    gain: float, spread: float | None, *, power: float = POWER, limit: int = 10_000
) -> int | None:
    """How many test samples confirm ``gain`` with ``power`` (``None`` above ``limit`` or for no gain)."""
    if gain <= 0:
        return None
    n = 6
    while confirmable_gain(n, spread, power=power) > gain:
        n = n + max(1, n // 8)
        if n > limit:
            return None
    while n > 6 and confirmable_gain(n - 1, spread, power=power) <= gain:
        n -= 1
    return n


def difference_spread(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Standard deviation of the per-sample differences ``b - a`` (None below two pairs)."""
    if len(a) < 2 or len(a) != len(b):
        return None
    spread = statistics.stdev(y - x for x, y in zip(a, b, strict=True))
    return spread or None


@dataclass(frozen=True)
class Power:
    """What the test split can confirm, from a spread measured (or a stated prior)."""

    n_test: int
    spread: float
    measured_on: str
    """Where the spread came from: ``prior`` or e.g. ``winner - baseline on 35 validation samples``."""
    gain: float
    """The smallest gain the test split confirms with 80% power."""
    shown: float | None = None
    """The largest gain over the baseline the search has shown (on validation; optimistic)."""

    @property
    def needed(self) -> int | None:
        """Test samples that would confirm the gain shown, when the split is too small for it."""
        if self.shown is None or self.shown <= 0 or self.shown >= self.gain:
            return None
        return samples_for(self.shown, self.spread)

    def describe(self) -> str:
        gain = f"{self.gain:+.3f}" if math.isfinite(self.gain) else "no gain (fewer than 6 samples)"
        text = (
            f"with {POWER:.0%} power the {self.n_test} test samples confirm {gain} or more over the baseline "
            f"(spread {self.spread:.2f}: {self.measured_on})"
        )
        if self.shown is not None:
            text += f"; the best gain shown on validation is {self.shown:+.3f}"
            needed = self.needed
            if needed is not None:
                text += f", which the test split is unlikely to confirm: split.test: {needed} would"
        return text

    def to_json(self) -> dict[str, Any]:
        return {
            "power": POWER,
            "n_test": self.n_test,
            "spread": round(self.spread, 4),
            "spread_from": self.measured_on,
            "confirmable_gain": round(self.gain, 4) if math.isfinite(self.gain) else None,
            "best_gain_on_validation": None if self.shown is None else round(self.shown, 4),
            "test_samples_needed": self.needed,
        }


def labels_outside(
    allowed: Mapping[str, Sequence[str]], samples: Sequence[Sample], label_fields: Sequence[str]
) -> int:
    """How many ``samples`` have a label outside the label lists the search showed (train and
    validation's): no candidate can answer them right."""
    lists = {name: set(allowed[name]) for name in label_fields if name in allowed}
    return sum(
        1 for s in samples if any(s.expected.get(name) not in values for name, values in lists.items())
    )


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


@dataclass
class TestRound:
    """The test split's answers: the deciding pair's scores, the verdicts and whether the winner
    is written; or why the round could not say."""

    scores: dict[str, list[float]] = field(default_factory=dict)
    verdicts: dict[str, TestVerdict] = field(default_factory=dict)
    promoted: bool = False
    reason: str = ""
    stopped: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.stopped is None


class Confirmation:
    """The test split from start to end: what it can confirm (said before any call), and the
    winner, the baseline and each other family's best asked there once the winner is chosen."""

    def __init__(
        self,
        ledger: Ledger,
        *,
        min_gain: float,
        must_beat: Sequence[str],
        seed: int,
        line: Callable[[str], None],
    ) -> None:
        self.ledger = ledger
        self.min_gain = min_gain
        self.must_beat = tuple(must_beat)
        self.seed = seed
        self.line = line
        self.validation_floors: Floors | None = None
        self.test_floors: Floors | None = None
        self.power: Power | None = None
        """What the test split can confirm: a prior before the first call, measured after."""

    def measured_power(self, winner: str) -> Power | None:
        """After the rounds: the test split's confirmable gain from the spread of *winner -
        baseline* on the validation samples both answered, beside the best gain shown there."""
        ledger = self.ledger
        if not ledger.test:
            return None
        obs = ledger.obs
        depth = min(obs.seen(winner), obs.seen(BASELINE))
        base, mine = obs.prefix(BASELINE, depth), obs.prefix(winner, depth)
        spread = difference_spread(base, mine)
        measured_on = f"winner - baseline on {depth} validation samples"
        if spread is None:  # no pairs, or every difference alike: no spread to go on
            measured_on = f"a stated prior: the {depth} paired validation differences did not vary"
        gains = [
            obs.mean(c, d) - obs.mean(BASELINE, d)
            for c in ledger.candidates
            if (d := min(obs.seen(c), obs.seen(BASELINE)))
        ]
        self.power = Power(
            len(ledger.test),
            spread if spread is not None else PRIOR_SPREAD,
            measured_on,
            confirmable_gain(len(ledger.test), spread),
            max(gains) if gains else None,
        )
        return self.power

    def announce(self, notes: Sequence[str]) -> None:
        """Before any call: both floors on validation and test, what the test split can confirm,
        and what the plan had to change."""
        ledger = self.ledger
        for note in notes:
            self.line(f"note: {note}")
        scorer = ledger.evaluator(BASELINE).scorer
        pool = ledger.space.pool
        self.validation_floors = floors_for(scorer, ledger.suite, pool, ledger.order)
        self.test_floors = floors_for(scorer, ledger.suite, pool, ledger.test) if ledger.test else None
        if self.test_floors is None:
            return
        t = self.test_floors
        n_test = len(ledger.test)
        prior = Power(
            n_test, PRIOR_SPREAD, "a stated prior, nothing measured yet", confirmable_gain(n_test, None)
        )
        self.power = prior
        floors = f"constant answer {t.constant_mean:.3f}" + (
            f", lookup of the nearest train sample {t.lookup_mean:.3f}" if t.lookup_mean is not None else ""
        )
        self.line(f"test split: {n_test} samples no decision reads ({floors}); {prior.describe()}")
        if not math.isfinite(prior.gain) or prior.gain > REALISTIC_GAIN:
            needed = samples_for(REALISTIC_GAIN, PRIOR_SPREAD)
            self.line(
                f"warning: the test split is too small to confirm a realistic gain ({REALISTIC_GAIN:+.2f}), so no "
                f"winner is likely to be written; before spending calls on a search, raise split.test "
                f"(split.test: {needed} would, with as many samples again for train and validation)"
            )
        hidden = labels_outside(ledger.space.allowed_values, ledger.test, ledger.suite.label_fields)
        if hidden:
            self.line(
                f"{hidden} of {n_test} test samples have a label that no train or validation sample has: the label "
                "lists candidates see come from those only, so no candidate can answer them right"
            )
        unseen = labels_missing_from(ledger.space.train, ledger.test, ledger.suite.label_fields)
        if unseen:
            self.line(
                f"{unseen} of {n_test} test samples have a label no train sample has: retrieval "
                "cannot show them an example and a lookup cannot copy their answer"
            )

    def ask(
        self, runner: Runner, winner: str, others: Sequence[str], should_stop: Callable[[], str | None]
    ) -> TestRound:
        """Ask the winner and the baseline once on the test split (then each other family's best)
        and judge the winner there."""
        ledger = self.ledger
        n, n_test = len(ledger.order), len(ledger.test)
        jobs = [Job(BASELINE, n + i) for i in range(n_test)] + [Job(winner, n + i) for i in range(n_test)]
        # The other families' best (a gated lookup when the winner always calls, or the reverse)
        # are asked after the pair that decides, so the summary compares families on the same
        # unseen samples; the budget cutting them short leaves the verdict standing.
        extra = [Job(c, n + i) for c in others for i in range(n_test)]
        also = f"; then the best of each other family: {', '.join(others)}" if others else ""
        self.line(
            f"confirming {winner} on the {n_test} test samples no decision has seen "
            f"({len(jobs) + len(extra)} calls at most, with the baseline{also})"
        )
        result = TestRound()
        done = runner.run(jobs, ledger.on_result, should_stop=should_stop)
        if done.stopped or done.done < len(jobs):
            result.stopped = done.stopped or "the test round was cut short"
            result.reason = "the test split was not fully answered"
            return result
        if extra:
            more = runner.run(extra, ledger.on_result, should_stop=should_stop)
            if more.stopped or more.done < len(extra):
                result.notes.append(
                    f"the other families' test round was cut short ({more.stopped or 'incomplete'}); "
                    "those not fully answered show no test score"
                )
        # The verdict rests on the pair's answers: any that errored (validation or test) is asked
        # once more, and a comparison that still holds an errored call writes no winner.
        failed = sorted((j for j in ledger.errored if j.candidate in (BASELINE, winner)), key=repr)
        if failed:
            self.line(f"asking the {len(failed)} errored calls of {winner} and the baseline once more")
            runner.run(failed, ledger.on_retry, should_stop=should_stop)
        still = [j for j in ledger.errored if j.candidate in (BASELINE, winner)]
        base = ledger.test_obs.prefix(BASELINE, n_test)
        win = ledger.test_obs.prefix(winner, n_test)
        result.scores = {BASELINE: base, winner: win}
        verdicts = {"baseline": test_verdict("baseline", base, win, needs=self.min_gain, seed=self.seed)}
        floors = self.test_floors
        if floors is not None and floors.lookup is not None:
            verdicts["lookup"] = test_verdict("lookup", list(floors.lookup), win, needs=0.0, seed=self.seed)
        result.verdicts = verdicts
        result.promoted, result.reason = promotion(verdicts, self.must_beat)
        if still:
            result.promoted = False
            result.reason = (
                f"{len(still)} call(s) of {winner} or the baseline errored twice, so the comparison is not "
                "reliable; no winner is written from a comparison with errored calls"
            )
        return result
