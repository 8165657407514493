"""One suite's optimization from start to finish, without pytest: calibrate, plan, run the
strategy's rounds, measure the server's noise, and pick and explain the winner.

1. **Calibrate**: the baseline's first samples, one per slot, give the server's speed (the
   baseline is scored on every sample anyway, so nothing is wasted).
2. **Plan**: the strategy sizes itself to the budget (calls, or minutes converted with the
   measured speed); the plan and its estimated time are reported before any search call.
3. **Rounds**: each round's new calls run as many at once as the server has slots; the
   baseline follows wherever the candidates go (paired), and on the first round it is asked a
   second time on the screening samples, which measures how often the server's answers
   change (skipped in deterministic mode). A round starts only while the time budget allows.
4. **Result**: the finalist with the best objective (ties within the server's noise go to the
   cheaper prompt) and each dimension value's effect with a simultaneous interval, from the
   screening round.
5. **Confirm**: the winner and the baseline are asked once on the test split, which no decision
   read; that paired difference (and the one against the no-call lookup floor) is the verdict.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from promptsweep.core.answers.chat import ChatFn
from promptsweep.core.answers.judge import JudgeRoute
from promptsweep.core.answers.metrics import MetricRegistry
from promptsweep.core.data.dataset import Sample
from promptsweep.core.data.suite import Suite
from promptsweep.core.evaluate import SampleResult
from promptsweep.core.measure.scoring import ConstantAnswer
from promptsweep.core.measure.stats import EXACT_BELOW, Estimate, mean_interval, paired_difference
from promptsweep.optimize.confirm import Confirmation, Floors, Power, TestVerdict, labels_missing_from
from promptsweep.optimize.design import Effect, main_effects
from promptsweep.optimize.families import (
    FamilyBest,
    family_bests,
    family_table,
    lookup_beats_prompts,
    unreached_members,
)
from promptsweep.optimize.ledger import CandidateStats, Ledger, Tokens
from promptsweep.optimize.plan import Plan, Planner, SearchError
from promptsweep.optimize.rounds import Rounds, RoundsResult, past_budget
from promptsweep.optimize.runner import Job, Runner
from promptsweep.optimize.selection import Selection, Stability, pruned_rounds, select, stability
from promptsweep.optimize.space import KNN, Budget, SearchSpace
from promptsweep.optimize.strategies import (
    BASELINE,
    Decision,
    Objective,
    Observations,
    SpaceShape,
    Stage,
    Strategy,
)

MIN_ATTRIBUTION_SAMPLES = EXACT_BELOW
"""Effects are attributed only from a screening round with at least this many samples."""

__all__ = ["BASELINE", "Job", "Search", "SearchError", "SearchOutcome", "SearchSettings"]


class Reporter(Protocol):
    """Where progress goes (the terminal in a pytest run)."""

    def line(self, text: str) -> None: ...


@dataclass(frozen=True)
class SearchSettings:
    """Everything about a search that is not the space itself."""

    strategy: Strategy
    seed: int
    budget: Budget | None
    min_gain: float = 0.0
    deterministic: bool = False
    token_weight: float = 0.0
    model: str | None = None
    must_beat: tuple[str, ...] = ("baseline",)
    """What the winner must beat on the test split to be written: the baseline, and the lookup if asked."""


@dataclass(frozen=True)
class Verdict:
    """The winner against the baseline on the same samples."""

    difference: Estimate
    min_gain: float

    @property
    def significant(self) -> bool:
        return self.difference.n >= 2 and self.difference.low > self.min_gain

    def describe(self) -> str:
        d = self.difference
        floor = f" (needs > {self.min_gain:+.3f})" if self.min_gain else ""
        word = "significant" if self.significant else "not significant"
        return f"{d.mean:+.3f} (95% CI {d.low:+.3f} to {d.high:+.3f}, n={d.n}): {word}{floor}"


@dataclass
class SearchOutcome:
    """What a search found, for the reports and the winner file."""

    observations: Observations
    decisions: list[Decision]
    selection: Selection | None
    verdict: Verdict | None
    effects: list[tuple[str, Effect]]
    """Each dimension value's effect from the screening round, when it had the samples to say."""
    stats: dict[str, CandidateStats]
    plan: list[Stage]
    calls: int
    baseline_calls: int
    max_calls: int | None
    estimated_s: float
    elapsed_s: float
    stopped: str | None
    noise_pairs: int
    noise_agree: int
    complete: bool
    constant: ConstantAnswer | None = None
    """The score of answering every validation sample with each field's most frequent value."""
    validation_floors: Floors | None = None
    test_floors: Floors | None = None
    test_n: int = 0
    test_scores: dict[str, list[float]] = field(default_factory=dict)
    """Per-sample test scores of the winner and the baseline (test order), once confirmed."""
    test_verdicts: dict[str, TestVerdict] = field(default_factory=dict)
    """The winner against ``baseline`` and ``lookup`` on the test split."""
    test_calls: int = 0
    promoted: bool = False
    promotion_reason: str = ""
    notes: list[str] = field(default_factory=list)
    """What the plan had to drop or change, in words."""
    unseen_labels: int = 0
    """Test samples with a label no train sample has."""
    families: list[FamilyBest] = field(default_factory=list)
    """Each candidate family's best member (chosen on validation) on the test split."""
    knn_vs_winner: Estimate | None = None
    """*best kNN vote - the winner* paired over the test split (no-call answers against the prompt);
    when the vote itself won, against the best prompt on test (:attr:`knn_reference`)."""
    knn_reference: str | None = None
    stability: Stability | None = None
    """How often the winner stays first when its validation samples are redrawn."""
    power: Power | None = None
    """What the test split can confirm, from the winner - baseline spread measured on validation."""
    effects_note: str = ""
    """Why no effects are attributed (too few samples), when none are."""
    tokens: Tokens = field(default_factory=Tokens)
    """Every call's prompt, cached and generated tokens, validation and test together."""
    still_errored: dict[str, int] = field(default_factory=dict)
    """Candidate (or baseline) → its calls that errored and were not answered since."""
    round_tokens: list[tuple[Tokens, float]] = field(default_factory=list)
    """Each decided round's tokens and its wall time in seconds."""

    @property
    def selection_verdict(self) -> Verdict | None:
        """The winner against the baseline on the validation samples that chose it (optimistic)."""
        return self.verdict


class Search:
    """Runs one suite's optimization against ``sends`` (one send function per worker): the
    ledger records, the planner prices, the rounds race, the confirmation judges on test."""

    def __init__(
        self,
        suite: Suite,
        space: SearchSpace,
        order: Sequence[Sample],
        settings: SearchSettings,
        registry: MetricRegistry,
        sends: Sequence[ChatFn],
        *,
        record: Callable[[SampleResult], None],
        reporter: Reporter,
        clock: Callable[[], float] = time.monotonic,
        test: Sequence[Sample] = (),
        notes: Sequence[str] = (),
        judge: Callable[[ChatFn], JudgeRoute] | None = None,
    ) -> None:
        """``judge`` gives the judge route for a worker's send function (judged fields with
        their own ``judge.url``); by default judges ask the worker's own endpoint."""
        self.suite = suite
        self.space = space
        self.settings = settings
        self.reporter = reporter
        self.clock = clock
        self.notes = list(notes)
        self.ledger = Ledger(
            suite, space, order, test, registry, sends, model=settings.model, record=record, judge=judge
        )
        self.planner = Planner(self.ledger, clock, reporter.line)
        self.confirmation = Confirmation(
            self.ledger,
            min_gain=settings.min_gain,
            must_beat=settings.must_beat,
            seed=settings.seed,
            line=reporter.line,
        )
        self.shape: SpaceShape = space.shape()
        self.objective = Objective(settings.token_weight)

    def run_job(self, job: Job, worker: int) -> SampleResult:
        """What the :class:`~.runner.Runner`'s workers call: one job on a worker's endpoint."""
        return self.ledger.run_job(job, worker)

    def run(self, runner: Runner) -> SearchOutcome:
        started = self.clock()
        settings = self.settings
        probe = not settings.deterministic
        self.confirmation.announce(self.notes)
        self.planner.calibrate(runner)
        plan = self.planner.plan(settings.strategy, self.shape, settings.budget, started=started, probe=probe)
        self.planner.report(plan, settings.strategy, self.shape, settings.budget, probe=probe)
        rounds = Rounds(
            self.ledger,
            self.planner,
            settings.strategy,
            settings.budget,
            deterministic=settings.deterministic,
            clock=self.clock,
            line=self.reporter.line,
        ).run(runner, plan, started)
        self._vote(runner, rounds.decisions)
        outcome = self._finish(plan, rounds, started)
        if outcome.selection is not None:
            outcome.stability = stability(
                self.ledger.obs, self.objective, outcome.selection, seed=self.settings.seed
            )
            if outcome.stability is not None:
                self.reporter.line(f"stability: {outcome.stability.describe()}")
            outcome.power = self.confirmation.measured_power(outcome.selection.winner)
            if outcome.power is not None:
                self.reporter.line(f"power: {outcome.power.describe()}")
        if outcome.complete and outcome.selection is not None and self.ledger.test:
            self._confirm(runner, outcome, rounds.decisions, started)
        if outcome.selection is not None:
            self._families(outcome, rounds.decisions)
        outcome.calls = self.ledger.calls
        outcome.test_calls = self.ledger.test_calls
        outcome.tokens = self.ledger.tokens
        for job in self.ledger.errored:
            outcome.still_errored[job.candidate] = outcome.still_errored.get(job.candidate, 0) + 1
        outcome.elapsed_s = self.clock() - started
        self.reporter.line(f"search: {self.ledger.tokens.describe(outcome.elapsed_s)}")
        return outcome

    def _vote(self, runner: Runner, decisions: Sequence[Decision]) -> None:
        """The kNN votes compete like any candidate: scored (no call) on every validation sample
        the race's finalists reached, so the selection compares them on the same samples."""
        ledger = self.ledger
        if not ledger.knn:
            return
        pruned = pruned_rounds(decisions)
        alive = [ledger.obs.seen(c) for c in ledger.grid if c not in pruned and ledger.obs.seen(c)]
        depth = max(alive, default=max((ledger.obs.seen(c) for c in ledger.grid), default=0))
        if not depth:
            return
        runner.run([Job(name, p) for name in ledger.knn for p in range(depth)], ledger.on_result)
        scores = ", ".join(f"{name} {ledger.obs.mean(name, depth):.3f}" for name in ledger.knn)
        self.reporter.line(
            f"kNN votes (no call) on the {depth} validation samples the race reached: {scores}"
        )

    # -- the result -------------------------------------------------------------------------

    def _finish(self, plan: Plan, rounds: RoundsResult, started: float) -> SearchOutcome:
        ledger = self.ledger
        obs = ledger.obs
        selection: Selection | None = None
        verdict: Verdict | None = None
        if any(obs.seen(c) for c in ledger.grid):
            selection = select(obs, self.objective, rounds.decisions, seed=self.settings.seed)
            winner = selection.winner
            depth = min(obs.seen(winner), obs.seen(BASELINE))
            if depth:
                diff = paired_difference(
                    obs.prefix(BASELINE, depth), obs.prefix(winner, depth), seed=self.settings.seed
                )
                verdict = Verdict(diff, self.settings.min_gain)
        validation_floors = self.confirmation.validation_floors
        effects, effects_note = self.effects(rounds.decisions)
        return SearchOutcome(
            observations=obs,
            decisions=rounds.decisions,
            selection=selection,
            verdict=verdict,
            effects=effects,
            effects_note=effects_note,
            stats=ledger.stats,
            plan=plan.stages,
            calls=ledger.calls,
            baseline_calls=ledger.baseline_calls,
            max_calls=plan.max_calls,
            estimated_s=plan.estimated_s,
            elapsed_s=self.clock() - started,
            stopped=rounds.stopped,
            noise_pairs=rounds.noise_pairs,
            noise_agree=rounds.noise_agree,
            round_tokens=list(rounds.tokens),
            complete=rounds.stopped is None,
            constant=validation_floors.answer if validation_floors is not None else None,
            validation_floors=validation_floors,
            test_floors=self.confirmation.test_floors,
            test_n=len(ledger.test),
            notes=list(self.notes),
            unseen_labels=labels_missing_from(self.space.train, ledger.test, self.suite.label_fields),
        )

    def _confirm(
        self, runner: Runner, outcome: SearchOutcome, decisions: Sequence[Decision], started: float
    ) -> None:
        """The test round: the deciding pair, each other family's best, then the families the
        search drew no member of (nothing there reaches a decision: the winner is judged already)."""
        assert outcome.selection is not None
        winner = outcome.selection.winner
        bests = family_bests(self.ledger, self.objective, decisions, winner, seed=self.settings.seed)
        others = [c for c in bests.values() if c != winner]
        should_stop = past_budget(self.settings.budget, started, self.clock)
        test = self.confirmation.ask(runner, winner, others, should_stop)
        outcome.notes.extend(test.notes)
        if not test.complete:
            outcome.stopped = test.stopped
            outcome.complete = False
            outcome.promotion_reason = test.reason
            return
        # The anchor of the reach step is a prompt of the grid: the winner, or (a kNN vote won) the best prompt.
        anchor = (
            winner
            if winner in self.shape.candidates
            else select(
                self.ledger.obs, self.objective, decisions, seed=self.settings.seed, among=self.ledger.grid
            ).winner
        )
        self._reach_families(runner, outcome, bests, anchor, should_stop)
        outcome.test_scores = test.scores
        outcome.test_verdicts = test.verdicts
        outcome.promoted, outcome.promotion_reason = test.promoted, test.reason

    def _reach_families(
        self,
        runner: Runner,
        outcome: SearchOutcome,
        bests: Mapping[str, str],
        winner: str,
        should_stop: Callable[[], str | None],
    ) -> None:
        """A family of the space the search drew no member of gets one after the verdict: its
        member nearest the winner, asked on the winner's validation samples and then on test,
        so the family table compares like with like and no family is silently missing."""
        ledger = self.ledger
        added = unreached_members(ledger, self.shape, bests, winner)
        if not added:
            return
        depth = ledger.obs.seen(winner)
        n = len(ledger.order)
        validation = [Job(c, p) for c in added for p in range(depth)]
        test = [Job(c, n + i) for c in added for i in range(len(ledger.test))]
        budget = self.settings.budget
        if budget is not None and budget.calls is not None and ledger.calls + len(validation) > budget.calls:
            families = ", ".join(ledger.family[c] for c in added)
            outcome.notes.append(
                f"no member of {families} was drawn, and the call budget leaves no room to ask the nearest one"
            )
            return
        self.reporter.line(
            f"the search drew no member of {len(added)} famil{'y' if len(added) == 1 else 'ies'}: asking the one "
            f"nearest the winner ({', '.join(added)}) on its {depth} validation and the {len(ledger.test)} test samples"
        )
        for jobs in (validation, test):
            done = runner.run(jobs, ledger.on_result, should_stop=should_stop)
            if done.stopped or done.done < len(jobs):
                outcome.notes.append(
                    f"the nearest members of the families the search did not reach were cut short "
                    f"({done.stopped or 'incomplete'}); those show no test score"
                )
                return

    def _families(self, outcome: SearchOutcome, decisions: Sequence[Decision]) -> None:
        """Each family's best on the test split, and the free kNN members scored directly."""
        assert outcome.selection is not None
        winner = outcome.selection.winner
        seed = self.settings.seed
        bests = family_bests(self.ledger, self.objective, decisions, winner, seed=seed)
        floors = outcome.test_floors
        lookup = floors.lookup if floors is not None else None
        outcome.families = family_table(self.ledger, bests, test_lookup=lookup, seed=seed)
        knn = next((f for f in outcome.families if f.family == KNN), None)
        prompts = [f for f in outcome.families if f.family != KNN and f.test]
        if knn is None or not prompts:
            return
        # The vote against the winner, or (the vote won) against the best prompt on test.
        reference = next((f for f in prompts if f.member == winner), None) or max(
            prompts, key=lambda f: (f.test_mean or 0.0, f.member)
        )
        outcome.knn_reference = reference.member
        outcome.knn_vs_winner = lookup_beats_prompts(knn, reference.test, seed=seed)

    def effects(self, decisions: Sequence[Decision]) -> tuple[list[tuple[str, Effect]], str]:
        """Each dimension value's effect against the dimension's first value, with a simultaneous
        interval, from the first round that scored many candidates on the same samples (the
        screen); none, and the reason, when that round had too few samples to attribute effects
        (a few samples allow a few distinct resamples: an interval would be an artefact)."""
        if not decisions:
            return [], ""
        obs = self.ledger.obs
        first = max(decisions[:2], key=lambda d: len(d.evaluated))
        names = [
            c for c in first.evaluated if c in self.ledger.candidates and obs.seen(c) >= first.samples_seen
        ]
        if len(names) < 3:
            return [], ""
        if first.samples_seen < MIN_ATTRIBUTION_SAMPLES:
            return [], (
                f"too few samples to attribute effects: the screening round scored {len(names)} candidates on "
                f"{first.samples_seen} samples ({MIN_ATTRIBUTION_SAMPLES} needed)"
            )
        points = [self.shape.candidates[c] for c in names]
        scores = [obs.prefix(c, first.samples_seen) for c in names]
        # Simultaneous intervals (Bonferroni over every value screened): the "why" sentence may
        # cite an effect only when it survives the number of effects it was picked from.
        tested = max(1, sum(size - 1 for size in self.shape.sizes))
        effects = main_effects(
            points, scores, self.shape.sizes, seed=self.settings.seed, confidence=1 - 0.05 / tested
        )
        out: list[tuple[str, Effect]] = []
        for effect in effects:
            dim = self.shape.dimensions[effect.dimension]
            out.append((f"{dim.name}={dim.labels[effect.level]}", effect))
        return out, ""

    def describe_candidate(self, name: str) -> Mapping[str, Any]:
        candidates = self.ledger.candidates
        return candidates[name].dimensions(self.space) if name in candidates else {}

    def interval(self, name: str) -> Estimate:
        return mean_interval(self.ledger.obs.prefix(name), seed=self.settings.seed)
