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

import math
import random
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from promptsweep.core.answers.chat import ChatFn
from promptsweep.core.answers.judge import JudgeRoute
from promptsweep.core.answers.metrics import MetricRegistry
from promptsweep.core.data.dataset import Sample
from promptsweep.core.data.suite import Suite
from promptsweep.core.evaluate import Evaluator, SampleResult
from promptsweep.core.measure.scoring import ConstantAnswer
from promptsweep.core.measure.stats import Estimate, mean_interval, paired_difference
from promptsweep.optimize.confirm import (
    Floors,
    TestVerdict,
    confirmable_gain,
    difference_spread,
    floors_for,
    labels_missing_from,
    promotion,
    test_verdict,
)
from promptsweep.optimize.design import Effect, main_effects
from promptsweep.optimize.estimate import CallShape, CostModel, format_duration
from promptsweep.optimize.families import FAMILIES, FamilyBest, best_knn, family_of, lookup_beats_prompts
from promptsweep.optimize.runner import Job, Runner
from promptsweep.optimize.selection import Selection, best, select
from promptsweep.optimize.space import Budget, Candidate, SearchSpace
from promptsweep.optimize.strategies import (
    BASELINE,
    Decision,
    Objective,
    Observations,
    Round,
    SpaceShape,
    Stage,
    Strategy,
)


class SearchError(Exception):
    """The search cannot go on (the server does not answer): one line for the user."""


MAX_ERROR_SHARE = 0.5
"""A round in which more calls than this failed stops the search: its scores would be noise."""


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


@dataclass
class CandidateStats:
    """What a candidate cost: tokens per call and latency."""

    prompt_tokens: list[int] = field(default_factory=list)
    completion_tokens: list[int] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    errored: int = 0
    lookups: int = 0
    """Answers a gated lookup gave with no call (0 tokens; counted in ``tokens_per_call``)."""

    @property
    def answers(self) -> int:
        return len(self.prompt_tokens) + self.errored

    @property
    def calls_per_answer(self) -> float | None:
        """Model calls per answer: 1 for a prompt, less for a gated lookup, 0 for a kNN vote."""
        return (self.answers - self.lookups) / self.answers if self.answers else None

    @property
    def tokens_per_call(self) -> float | None:
        if not self.prompt_tokens:
            return None
        return (sum(self.prompt_tokens) + sum(self.completion_tokens)) / len(self.prompt_tokens)

    @property
    def latency_p50(self) -> float | None:
        return statistics.median(self.latencies) if self.latencies else None


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
    """*best kNN vote - winner* paired over the test split (no-call answers against the prompt)."""

    @property
    def selection_verdict(self) -> Verdict | None:
        """The winner against the baseline on the validation samples that chose it (optimistic)."""
        return self.verdict


class Search:
    """Runs one suite's optimization against ``sends`` (one send function per worker)."""

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
        self.judge = judge
        self.suite = suite
        self.space = space
        self.order = list(order)
        self.test = list(test)
        """The test split: asked only after the winner is chosen, read by no decision."""
        self.notes = list(notes)
        self.test_obs = Observations()
        self.test_calls = 0
        self.test_calls_planned = 2 * len(self.test)
        self.test_lookups: dict[str, int] = {}
        self.probe_calls = 0
        self.speed_unknown = False
        self.measured_on = "the baseline"
        self._validation_floors: Floors | None = None
        self._test_floors: Floors | None = None
        self.settings = settings
        self.registry = registry
        self.sends = list(sends)
        self.record = record
        self.reporter = reporter
        self.clock = clock
        self.candidates: dict[str, Candidate] = {c.id: c for c in space.candidates()}
        self.family: dict[str, str] = {
            c: family_of(cand.copy, cand.choices) for c, cand in self.candidates.items()
        }
        """Each candidate's family (prompt-only, gated lookup, neighbour choice)."""
        self.shape: SpaceShape = space.shape()
        self.objective = Objective(settings.token_weight)
        self.obs = Observations()
        self.stats: dict[str, CandidateStats] = {}
        self.decisions: list[Decision] = []
        self.calls = 0
        self.baseline_calls = 0
        self._evaluators: dict[str, Evaluator] = {}
        self._shapes: dict[str, CallShape] = {}
        self._copied: dict[tuple[int, float, int], bool] = {}
        self._noise: dict[int, dict[int, float]] = {}
        self.cost: CostModel | None = None

    # -- evaluation -------------------------------------------------------------------------

    def evaluator(self, name: str) -> Evaluator:
        """The evaluator of a candidate (or of the baseline: the suite's template as it is, with
        its own retrieved examples if it has any)."""
        if name not in self._evaluators:
            if name == BASELINE:
                template, params, retrieval = self.space.baseline, {}, None
            else:
                candidate = self.candidates[name]
                template = self.space.to_template(candidate)
                params = candidate.params(self.space)
                retrieval = self.space.retrieval(candidate)
            self._evaluators[name] = Evaluator(
                self.suite,
                template,
                self.registry,
                dataset=self.space.dataset,
                params=params,
                model=self.settings.model,
                candidate=name,
                retrieval=retrieval,
            )
        return self._evaluators[name]

    def _sample_at(self, position: int) -> Sample:
        """Positions past the validation order are the test split's samples."""
        n = len(self.order)
        return self.order[position] if position < n else self.test[position - n]

    def _run_job(self, job: Job, worker: int) -> SampleResult:
        send = self.sends[worker % len(self.sends)]
        route = self.judge(send) if self.judge is not None else None
        return self.evaluator(job.candidate).evaluate(
            self._sample_at(job.position), send, repeat=job.repeat, judge=route
        )

    def _on_result(self, job: Job, result: SampleResult) -> None:
        self.record(result)
        # A gated lookup's answer cost no call: it counts as an answer, not against the budget.
        called = result.answered_by != "lookup"
        if job.position >= len(self.order):
            # A test answer: kept apart, so no strategy, noise estimate or ranking ever reads it.
            self.test_calls += called
            self.test_lookups[job.candidate] = self.test_lookups.get(job.candidate, 0) + (not called)
            self.test_obs.add(job.candidate, job.position - len(self.order), result.score)
            return
        self.calls += called
        if job.candidate == BASELINE:
            self.baseline_calls += 1
        stats = self.stats.setdefault(job.candidate, CandidateStats())
        stats.lookups += not called
        if result.errored:
            stats.errored += 1
        else:
            stats.prompt_tokens.append(result.prompt_tokens or 0)
            stats.completion_tokens.append(result.completion_tokens or 0)
            if result.latency_s is not None and not result.from_cache and called:
                stats.latencies.append(result.latency_s)
        tokens = (result.prompt_tokens or 0) + (result.completion_tokens or 0) if not result.errored else None
        if job.repeat == 0:
            self.obs.add(job.candidate, job.position, result.score, tokens)
        if job.candidate == BASELINE and not result.errored:
            self._noise.setdefault(job.position, {})[job.repeat] = result.score
        if self.cost is not None and called:
            style = "direct" if job.candidate == BASELINE else self.candidates[job.candidate].reasoning
            self.cost.observe(style, result)

    # -- cost -------------------------------------------------------------------------------

    def call_shape(self, name: str) -> CallShape:
        """Prompt length (from a few rendered samples) and the part every call shares (system text)."""
        if name not in self._shapes:
            evaluator = self.evaluator(name)
            probes = self.order[:3] or self.order
            total = shared = 0.0
            for sample in probes:
                messages = evaluator.messages(sample)
                total += sum(len(m["content"]) for m in messages)
                shared += len(messages[0]["content"]) if messages and messages[0]["role"] == "system" else 0
            count = max(1, len(probes))
            self._shapes[name] = CallShape(total / count, shared / count)
        return self._shapes[name]

    def call_seconds(self, name: str, samples: int) -> float:
        assert self.cost is not None
        if name == BASELINE:
            return self.cost.call_seconds(self.call_shape(name), samples)
        candidate = self.candidates[name]
        budget = candidate.params(self.space).get("max_tokens")
        return self.cost.call_seconds(self.call_shape(name), samples, candidate.reasoning, budget)

    def copies(self, name: str, position: int) -> bool:
        """Whether this job's answer is a gated lookup's copy, which costs no call. Known before
        any call: the nearest pool sample's similarity against the gate. Candidates with the same
        pool and threshold copy the same samples, so each is worked out once."""
        retrieval = self.evaluator(name).retrieval
        gate = retrieval.copy_if_similar if retrieval is not None else None
        if retrieval is None or gate is None:
            return False
        key = (id(retrieval.pool), gate, position)
        if key not in self._copied:
            sample = self._sample_at(position)
            self._copied[key] = self.evaluator(name).prompt.lookup(sample) is not None
        return self._copied[key]

    def jobs_seconds(self, jobs: Sequence[Job]) -> float:
        """Wall time of these jobs: the calls among them (a gated lookup's copies cost none)."""
        assert self.cost is not None
        per_candidate: dict[str, int] = {}
        for job in jobs:
            if not self.copies(job.candidate, job.position):
                per_candidate[job.candidate] = per_candidate.get(job.candidate, 0) + 1
        return self.cost.batch_seconds(
            [self.call_seconds(name, count) * count for name, count in per_candidate.items()]
        )

    def _mean_job_seconds(self, names: Sequence[str], positions: Sequence[int]) -> float:
        """Seconds one job costs on ``positions``, on average over a spread of ``names`` (at most
        40): a gated lookup's copies cost none."""
        if not names or not positions:
            return 0.0
        # A seeded random sample, not every n-th name: sorted ids alternate along the grid's last
        # dimension (x, x-copy0.5, ...), so a fixed step drew only candidates without a gate.
        ordered = sorted(names)
        sampled = random.Random(0).sample(ordered, min(40, len(ordered)))
        total = 0.0
        for name in sampled:
            asked = sum(not self.copies(name, p) for p in positions) / len(positions)
            total += self.call_seconds(name, len(positions)) * asked
        return total / len(sampled)

    def _mean_candidate_seconds(self, samples: int) -> float:
        """Seconds one job of the search costs, on average over the space, on the first
        ``samples`` validation samples (the first round's)."""
        return self._mean_job_seconds(list(self.candidates), range(min(samples, len(self.order))))

    def _test_seconds(self) -> float:
        """Wall time of the test round: the baseline and one member of each family on every test
        sample, each family priced by its own members (a gate copies some test answers too)."""
        assert self.cost is not None
        positions = range(len(self.order), len(self.order) + len(self.test))
        per_family: dict[str, list[str]] = {}
        for name, family in self.family.items():
            per_family.setdefault(family, []).append(name)
        seconds = [self._mean_job_seconds([BASELINE], positions) * len(self.test)]
        seconds += [
            self._mean_job_seconds(names, positions) * len(self.test) for names in per_family.values()
        ]
        return self.cost.batch_seconds(seconds)

    # -- the search -------------------------------------------------------------------------

    def _jobs_for(self, rnd: Round, first: bool) -> list[Job]:
        jobs = [Job(c, p) for c in rnd.candidates for p in range(rnd.samples) if not self.obs.has(c, p)]
        baseline = [Job(BASELINE, p) for p in range(rnd.samples) if not self.obs.has(BASELINE, p)]
        repeats: list[Job] = []
        if first and not self.settings.deterministic:
            repeats = [Job(BASELINE, p, 1) for p in range(rnd.samples)]
        return baseline + jobs + repeats

    def _update_noise(self) -> tuple[int, int]:
        """Baseline answers asked twice: how many agree, and the score's spread between repeats."""
        pairs = [(v[0], v[1]) for v in self._noise.values() if 0 in v and 1 in v]
        if not pairs:
            return 0, 0
        squared = [(a - b) ** 2 for a, b in pairs]
        self.obs.noise_sd = math.sqrt(sum(squared) / (2 * len(pairs)))
        return len(pairs), sum(1 for a, b in pairs if a == b)

    def _announce_test_split(self) -> None:
        """Before any call: what the test split can confirm, and what the plan had to change."""
        for note in self.notes:
            self.reporter.line(f"note: {note}")
        scorer = self.evaluator(BASELINE).scorer
        pool = self.space.pool
        self._validation_floors = floors_for(scorer, self.suite, pool, self.order)
        self._test_floors = floors_for(scorer, self.suite, pool, self.test) if self.test else None
        if self._test_floors is None:
            return
        t = self._test_floors
        spread = difference_spread(list(t.constant), list(t.lookup)) if t.lookup else None
        gain = confirmable_gain(len(self.test), spread)
        floors = f"constant answer {t.constant_mean:.3f}" + (
            f", lookup of the nearest train sample {t.lookup_mean:.3f}" if t.lookup_mean is not None else ""
        )
        self.reporter.line(
            f"test split: {len(self.test)} samples no decision reads ({floors}); it can confirm a gain of "
            f"about {gain:+.3f} or more over the baseline"
            if math.isfinite(gain)
            else f"test split: {len(self.test)} sample(s) ({floors}): too few to confirm any gain"
        )
        if not math.isfinite(gain) or gain > 0.25:
            self.reporter.line(
                "warning: the test split is too small to confirm a realistic gain, so no winner is likely to "
                "be written; raise split.test (or add samples) before spending calls on a search"
            )
        unseen = labels_missing_from(self.space.train, self.test, self.suite.label_fields)
        if unseen:
            self.reporter.line(
                f"{unseen} of {len(self.test)} test samples have a label no train sample has: retrieval "
                "cannot show them an example and a lookup cannot copy their answer"
            )

    def run(self, runner: Runner) -> SearchOutcome:
        started = self.clock()
        n = len(self.order)
        budget = self.settings.budget
        self._announce_test_split()
        # 1. calibrate on the baseline: one call alone, then one per slot at once
        self.reporter.line(
            f"calibrating: 1 baseline call alone, then {min(runner.workers, max(n - 1, 0))} at once"
        )
        calibration: list[SampleResult] = []

        def on_calibration(job: Job, result: SampleResult) -> None:
            calibration.append(result)
            self._on_result(job, result)

        runner.run([Job(BASELINE, 0)], on_calibration)
        batch_jobs = [Job(BASELINE, p) for p in range(1, min(runner.workers + 1, n))]
        batch_started = self.clock()
        runner.run(batch_jobs, on_calibration)
        batch_wall = self.clock() - batch_started
        failed = [r for r in calibration if r.errored]
        if calibration and len(failed) == len(calibration):
            raise SearchError(
                f"the server answered none of the {len(calibration)} calibration calls: {failed[0].error}"
            )
        measured_on, calibration, batch_wall = self._uncached_calibration(runner, calibration, batch_wall)
        self.measured_on = "the baseline" if measured_on == BASELINE else measured_on
        alone = calibration[0] if calibration else None
        self.cost = CostModel.measure(
            alone, calibration[1:], batch_wall, self.call_shape(measured_on).prompt_chars, runner.workers
        )
        for result in calibration:
            self.cost.observe("direct", result)
        # 2. plan
        screen_n = max(1, math.ceil(n / 4))
        per_call = self.cost.correction * self._mean_candidate_seconds(screen_n)
        done = self.obs.seen(BASELINE)
        baseline_s = self.cost.batch_seconds([self.call_seconds(BASELINE, n) * max(0, n - done)])
        # The test split is asked after the search: the baseline and each family's best (the
        # winner among them) on every test sample.
        families = set(self.family.values())
        test_calls = (1 + len(families)) * len(self.test)
        self.test_calls_planned = test_calls
        test_s = self._test_seconds()
        max_calls: int | None = None
        if budget is not None and budget.calls is not None:
            max_calls = max(1, budget.calls - n - test_calls)
        elif budget is not None and budget.seconds is not None:
            left = budget.seconds - (self.clock() - started) - baseline_s - test_s
            max_calls = max(1, int(left / per_call)) if per_call > 0 else None
        plan = self.settings.strategy.start(self.shape, n, max_calls)
        probe = 0 if self.settings.deterministic or not plan else plan[0].samples
        if max_calls is not None and probe and sum(s.max_calls for s in plan) + probe > max_calls:
            # The noise probe asks the baseline again on the first round's samples: plan for it too.
            max_calls = max(1, max_calls - probe)
            plan = self.settings.strategy.start(self.shape, n, max_calls)
        planned_calls = sum(s.max_calls for s in plan)
        estimated = (self.clock() - started) + baseline_s + planned_calls * per_call + test_s
        self._report_plan(plan, planned_calls, estimated, max_calls)
        # 3. rounds
        stopped: str | None = None
        first_round = True
        noise_pairs = noise_agree = 0
        while (rnd := self.settings.strategy.next_round(self.obs)) is not None:
            jobs = self._jobs_for(rnd, first_round)
            trimmed = False
            if budget is not None and budget.calls is not None and self.calls + len(jobs) > budget.calls:
                room = budget.calls - self.calls
                if room <= 0:
                    stopped = f"call budget of {budget.calls} spent before round {rnd.number}"
                    break
                jobs, trimmed = jobs[:room], True
            expected = self.jobs_seconds(jobs)
            elapsed = self.clock() - started
            if budget is not None and budget.seconds is not None and elapsed + expected / 2 > budget.seconds:
                stopped = (
                    f"time budget of {format_duration(budget.seconds)} reached after {format_duration(elapsed)}: "
                    f"round {rnd.number} ({rnd.stage}, about {format_duration(expected)}) not started"
                )
                break
            self.reporter.line(
                f"round {rnd.number} ({rnd.stage}): {len(rnd.candidates)} candidate(s) on {rnd.samples} "
                f"samples, {len(jobs)} new calls, about {format_duration(expected)}"
            )
            round_started = self.clock()
            total = len(jobs)

            def tick(
                done: int, rnd: Round = rnd, total: int = total, round_started: float = round_started
            ) -> None:
                rate = done / max(1e-9, self.clock() - round_started)
                leader = self._leader(rnd)
                left = (total - done) / rate if rate > 0 else math.inf
                self.reporter.line(
                    f"  round {rnd.number}: {done}/{total} calls, {rate:.2f} calls/s, ~{format_duration(left)} left"
                    + (f"; leading: {leader}" if leader else "")
                )

            errors_before = sum(s.errored for s in self.stats.values())
            outcome = runner.run(jobs, self._on_result, tick=tick, should_stop=self._past_budget(started))
            errored = sum(s.errored for s in self.stats.values()) - errors_before
            if self.cost is not None and outcome.done == len(jobs):
                self.cost.correct(expected, self.clock() - round_started)
            if first_round:
                noise_pairs, noise_agree = self._update_noise()
                if noise_pairs:
                    self.reporter.line(
                        f"  server noise: {noise_agree} of {noise_pairs} repeated baseline answers scored the "
                        f"same; per-call spread {self.obs.noise_sd:.3f} (no candidate is pruned on less than "
                        f"±{self.obs.margin(rnd.samples):.3f} at {rnd.samples} samples)"
                    )
            first_round = False
            if outcome.stopped or outcome.done < len(jobs):
                stopped = outcome.stopped or "round cut short"
                break
            if jobs and errored > MAX_ERROR_SHARE * len(jobs):
                stopped = f"{errored} of {len(jobs)} calls of round {rnd.number} failed; see results.jsonl for the errors"
                break
            if trimmed:
                stopped = f"call budget of {budget.calls if budget else 0} spent in round {rnd.number} ({rnd.stage})"
                break
            decision = self.settings.strategy.decide(rnd, self.obs)
            self.decisions.append(decision)
            self.reporter.line(self._decision_line(decision, self.clock() - round_started))
        outcome_ = self._finish(
            plan, planned_calls, max_calls, estimated, started, stopped, noise_pairs, noise_agree
        )
        if outcome_.complete and outcome_.selection is not None and self.test:
            self._confirm(runner, outcome_, started)
        if outcome_.selection is not None:
            self._families(outcome_)
        outcome_.elapsed_s = self.clock() - started
        return outcome_

    def _past_budget(self, started: float) -> Callable[[], str | None]:
        """Stops a round at the time budget even when the estimate was wrong."""
        budget = self.settings.budget

        def check() -> str | None:
            if budget is None or budget.seconds is None:
                return None
            elapsed = self.clock() - started
            if elapsed > budget.seconds:
                return f"time budget of {format_duration(budget.seconds)} reached mid-round after {format_duration(elapsed)}"
            return None

        return check

    def _uncached_calibration(
        self, runner: Runner, calibration: list[SampleResult], batch_wall: float
    ) -> tuple[str, list[SampleResult], float]:
        """A speed measured on answers the response cache gave is no measurement (0 s per call):
        when every calibration answer came from the cache, calibrate on a candidate instead (its
        answers are cached too, so a later round that asks them again pays nothing)."""
        if any(not r.errored and not r.from_cache for r in calibration):
            return BASELINE, calibration, batch_wall
        n = len(self.order)
        for name in sorted(self.candidates)[:3]:
            probe: list[SampleResult] = []

            def on_probe(job: Job, result: SampleResult, probe: list[SampleResult] = probe) -> None:
                self.record(result)
                self.calls += 1
                self.probe_calls += 1
                probe.append(result)

            self.reporter.line(f"calibrating on {name}: the baseline's answers came from the response cache")
            runner.run([Job(name, 0)], on_probe)
            batch_started = self.clock()
            runner.run([Job(name, p) for p in range(1, min(runner.workers + 1, n))], on_probe)
            wall = self.clock() - batch_started
            if any(not r.errored and not r.from_cache for r in probe):
                return name, probe, wall
        self.speed_unknown = True
        return BASELINE, calibration, batch_wall

    def _confirm(self, runner: Runner, outcome: SearchOutcome, started: float) -> None:
        """Ask the winner and the baseline once on the test split and judge the winner there."""
        assert outcome.selection is not None
        winner = outcome.selection.winner
        n = len(self.order)
        jobs = [Job(BASELINE, n + i) for i in range(len(self.test))] + [
            Job(winner, n + i) for i in range(len(self.test))
        ]
        # The other families' best (a gated lookup when the winner always calls, or the reverse)
        # are asked after the pair that decides, so the summary compares families on the same
        # unseen samples; the budget cutting them short leaves the verdict standing.
        others = [c for c in self._family_bests(winner).values() if c != winner]
        extra = [Job(c, n + i) for c in others for i in range(len(self.test))]
        also = f"; then the best of each other family: {', '.join(others)}" if others else ""
        self.reporter.line(
            f"confirming {winner} on the {len(self.test)} test samples no decision has seen "
            f"({len(jobs) + len(extra)} calls at most, with the baseline{also})"
        )
        done = runner.run(jobs, self._on_result, should_stop=self._past_budget(started))
        if extra and not done.stopped and done.done == len(jobs):
            more = runner.run(extra, self._on_result, should_stop=self._past_budget(started))
            if more.stopped or more.done < len(extra):
                outcome.notes.append(
                    f"the other families' test round was cut short ({more.stopped or 'incomplete'}); "
                    "those not fully answered show no test score"
                )
        if not done.stopped and done.done == len(jobs):
            self._reach_families(runner, outcome, winner, started)
            outcome.calls = self.calls
        outcome.test_calls = self.test_calls
        if done.stopped or done.done < len(jobs):
            outcome.stopped = done.stopped or "the test round was cut short"
            outcome.complete = False
            outcome.promotion_reason = "the test split was not fully answered"
            return
        seed = self.settings.seed
        base = self.test_obs.prefix(BASELINE, len(self.test))
        win = self.test_obs.prefix(winner, len(self.test))
        outcome.test_scores = {BASELINE: base, winner: win}
        verdicts = {"baseline": test_verdict("baseline", base, win, needs=self.settings.min_gain, seed=seed)}
        floors = outcome.test_floors
        if floors is not None and floors.lookup is not None:
            verdicts["lookup"] = test_verdict("lookup", list(floors.lookup), win, needs=0.0, seed=seed)
        outcome.test_verdicts = verdicts
        outcome.promoted, outcome.promotion_reason = promotion(verdicts, self.settings.must_beat)

    def _reach_families(self, runner: Runner, outcome: SearchOutcome, winner: str, started: float) -> None:
        """A family of the space the search drew no member of (a screen's design is random) gets
        one after the verdict: its member nearest the winner (fewest dimensions changed, ties to
        the id), asked on the winner's validation samples and then on test. The family table then
        compares like with like (the winner without its gate, without its choices) and no family
        of the space is silently missing. Nothing here reaches a decision: the winner is chosen
        and judged already."""
        reached = self._family_bests(winner)
        here = self.shape.candidates[winner]

        def changes(candidate: str) -> int:
            return sum(a != b for a, b in zip(self.shape.candidates[candidate], here, strict=True))

        added: list[str] = []
        for family in FAMILIES:
            members = [c for c in self.candidates if self.family[c] == family]
            if family not in reached and members:
                # Nothing of these was measured: closeness to the winner stands in for the score.
                added.append(best(members, score=lambda c: -changes(c), cost=lambda c: 0.0))
        if not added:
            return
        depth = self.obs.seen(winner)
        n = len(self.order)
        validation = [Job(c, p) for c in added for p in range(depth)]
        test = [Job(c, n + i) for c in added for i in range(len(self.test))]
        budget = self.settings.budget
        if budget is not None and budget.calls is not None and self.calls + len(validation) > budget.calls:
            families = ", ".join(self.family[c] for c in added)
            outcome.notes.append(
                f"no member of {families} was drawn, and the call budget leaves no room to ask the nearest one"
            )
            return
        self.reporter.line(
            f"the search drew no member of {len(added)} famil{'y' if len(added) == 1 else 'ies'}: asking the one "
            f"nearest the winner ({', '.join(added)}) on its {depth} validation and the {len(self.test)} test samples"
        )
        for jobs in (validation, test):
            done = runner.run(jobs, self._on_result, should_stop=self._past_budget(started))
            if done.stopped or done.done < len(jobs):
                outcome.notes.append(
                    f"the nearest members of the families the search did not reach were cut short "
                    f"({done.stopped or 'incomplete'}); those show no test score"
                )
                return

    def _family_bests(self, winner: str) -> dict[str, str]:
        """The best candidate of each family that has one: the winner for its own family, the
        selection's own rule (:func:`select`, restricted to the family) for the others."""
        bests: dict[str, str] = {}
        for family in FAMILIES:
            members = [c for c in self.candidates if self.family[c] == family and self.obs.seen(c)]
            if winner in members:
                bests[family] = winner
            elif members:
                bests[family] = select(
                    self.obs, self.objective, self.decisions, seed=self.settings.seed, among=members
                ).winner
        return bests

    def _families(self, outcome: SearchOutcome) -> None:
        """Each family's best on the test split, and the free kNN members scored directly."""
        assert outcome.selection is not None
        winner = outcome.selection.winner
        n_test = len(self.test)
        families: list[FamilyBest] = []
        for family, name in self._family_bests(winner).items():
            test = self.test_obs.prefix(name, n_test) if n_test else []
            if len(test) < n_test:
                test = []
            stats = self.stats.get(name)
            if test:
                per_answer: float | None = 1.0 - self.test_lookups.get(name, 0) / n_test
            else:
                per_answer = stats.calls_per_answer if stats else None
            families.append(FamilyBest(family, name, self.obs.mean(name), tuple(test), per_answer))
        scorer = self.evaluator(BASELINE).scorer
        # The search's one pool: the 1-nearest vote is exactly the lookup floor, and "a lookup beat
        # every prompt" and "the prompt does not beat the lookup" speak of one lookup.
        knn = best_knn(scorer, self.suite, self.space.pool, self.order, self.test)
        if knn is not None:
            families.append(knn)
            outcome.knn_vs_winner = lookup_beats_prompts(
                knn, outcome.test_scores.get(winner, []), seed=self.settings.seed
            )
        floors = outcome.test_floors
        lookup = floors.lookup if floors is not None else None
        outcome.families = [f.against(lookup, seed=self.settings.seed) for f in families]

    def _leader(self, rnd: Round) -> str:
        seen = [(self.obs.seen(c), c) for c in rnd.candidates if self.obs.seen(c)]
        if not seen:
            return ""
        depth = max(s for s, _ in seen)
        best = max((c for s, c in seen if s == depth), key=lambda c: self.obs.mean(c, depth))
        return f"{best} {self.obs.mean(best, depth):.3f} (n={depth})"

    def _decision_line(self, d: Decision, took: float) -> str:
        moved = f"{len(d.survivors)} go on" if d.survivors != d.evaluated else "all go on"
        dropped = f", {len(d.pruned)} dropped" if d.pruned else ""
        note = f"; {d.note}" if d.note else ""
        return f"  round {d.round} done in {format_duration(took)}: {moved}{dropped}{note}"

    def _report_plan(
        self, plan: Sequence[Stage], planned: int, estimated: float, max_calls: int | None
    ) -> None:
        n = len(self.order)
        probe = 0 if self.settings.deterministic or not plan else plan[0].samples
        dims = " x ".join(f"{d.name} {len(d.labels)}" for d in self.shape.dimensions if len(d.labels) > 1)
        grid = len(self.candidates) * n
        budget = self.settings.budget
        self.reporter.line(
            f"search space: {len(self.candidates)} candidates ({dims or 'one'}), {n} validation samples; "
            f"the grid would be {grid} calls"
        )
        if self.speed_unknown:
            speed = (
                "unknown: every calibration answer came from the response cache (the plan assumes nothing)"
            )
        else:
            speed = self.cost.describe() if self.cost else "?"
        self.reporter.line(f"speed measured on {self.measured_on}: {speed}")
        stages = ", ".join(f"{s.stage} {s.candidates}x{s.samples}" for s in plan)
        self.reporter.line(
            f"plan ({self.settings.strategy.name}{', budget ' + str(budget) if budget else ''}): {stages}; "
            f"at most {planned} candidate calls ({planned / max(grid, 1):.1%} of the grid) + {n} baseline"
            + (f" + {probe} baseline repeats (noise probe)" if probe else "")
            + (f" + {self.test_calls_planned} on the test split" if self.test else "")
        )
        self.reporter.line(f"estimated time: {format_duration(estimated)}")

    # -- the result -------------------------------------------------------------------------

    def _finish(
        self,
        plan: list[Stage],
        planned: int,
        max_calls: int | None,
        estimated: float,
        started: float,
        stopped: str | None,
        noise_pairs: int,
        noise_agree: int,
    ) -> SearchOutcome:
        selection: Selection | None = None
        verdict: Verdict | None = None
        if any(self.obs.seen(c) for c in self.candidates):
            selection = select(self.obs, self.objective, self.decisions, seed=self.settings.seed)
            winner = selection.winner
            depth = min(self.obs.seen(winner), self.obs.seen(BASELINE))
            if depth:
                diff = paired_difference(
                    self.obs.prefix(BASELINE, depth), self.obs.prefix(winner, depth), seed=self.settings.seed
                )
                verdict = Verdict(diff, self.settings.min_gain)
        return SearchOutcome(
            observations=self.obs,
            decisions=self.decisions,
            selection=selection,
            verdict=verdict,
            effects=self.effects(),
            stats=self.stats,
            plan=plan,
            calls=self.calls,
            baseline_calls=self.baseline_calls,
            max_calls=max_calls,
            estimated_s=estimated,
            elapsed_s=self.clock() - started,
            stopped=stopped,
            noise_pairs=noise_pairs,
            noise_agree=noise_agree,
            complete=stopped is None,
            constant=self._validation_floors.answer if self._validation_floors is not None else None,
            validation_floors=self._validation_floors,
            test_floors=self._test_floors,
            test_n=len(self.test),
            notes=list(self.notes),
            unseen_labels=labels_missing_from(self.space.train, self.test, self.suite.label_fields),
        )

    def effects(self) -> list[tuple[str, Effect]]:
        """Each dimension value's effect against the dimension's first value, with an interval,
        from the first round that scored many candidates on the same samples (the screen)."""
        if not self.decisions:
            return []
        first = max(self.decisions[:2], key=lambda d: len(d.evaluated))
        names = [
            c for c in first.evaluated if c in self.candidates and self.obs.seen(c) >= first.samples_seen
        ]
        if len(names) < 3:
            return []
        points = [self.shape.candidates[c] for c in names]
        scores = [self.obs.prefix(c, first.samples_seen) for c in names]
        # Simultaneous intervals (Bonferroni over every value screened): the "why" sentence may
        # cite an effect only when it survives the number of effects it was picked from.
        tested = max(1, sum(size - 1 for size in self.shape.sizes))
        effects = main_effects(
            points, scores, self.shape.sizes, seed=self.settings.seed, confidence=1 - 0.05 / tested
        )
        out: list[tuple[str, Effect]] = []
        for effect in effects:
            dim = self.shape.dimensions[effect.dimension]
            out.append((f"{dim.name}={self._label(dim.name, dim.labels[effect.level])}", effect))
        return out

    def _label(self, dimension: str, label: str) -> str:
        return label

    def describe_candidate(self, name: str) -> Mapping[str, Any]:
        return self.candidates[name].dimensions(self.space) if name in self.candidates else {}

    def interval(self, name: str) -> Estimate:
        return mean_interval(self.obs.prefix(name), seed=self.settings.seed)
