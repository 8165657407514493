"""Before the first search call: measure the server's speed, price every kind of job, and size the
strategy's plan to the budget, all said before a call is spent on a candidate.

1. **Calibrate**: the baseline's first samples, one per slot, give the server's speed (the
   baseline is scored on every sample anyway, so nothing is wasted); answers the response
   cache gave measure nothing, so a cached baseline hands calibration to a candidate.
2. **Price**: a job costs its prompt length at the measured speed, and nothing at all when a
   gated lookup copies its answer (known before any call: the nearest train sample's
   similarity against the gate).
3. **Plan**: the strategy sizes itself to what the budget leaves after the baseline, the test
   round and the noise probe; the plan's call count is a bound the rounds keep.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from promptsweep.core.evaluate import SampleResult
from promptsweep.optimize.estimate import CallShape, CostModel, format_duration
from promptsweep.optimize.ledger import Ledger
from promptsweep.optimize.runner import Job, Runner
from promptsweep.optimize.space import Budget
from promptsweep.optimize.strategies import BASELINE, SpaceShape, Stage, Strategy

NOISE_SLACK = 0.5
"""How far beyond its planned calls a strategy may go to keep ties within the server's noise
when the budget does not bind (a binding budget is the bound itself)."""


class SearchError(Exception):
    """The search cannot go on (the server does not answer): one line for the user."""


@dataclass(frozen=True)
class Plan:
    """The stages a strategy will run, the calls they may make, and what it all should take."""

    stages: list[Stage]
    planned_calls: int
    """The candidate calls the strategy's stages make as planned."""
    candidate_calls: int
    """At most this many candidate calls: the budget's, which the strategy fills with ties within
    the server's noise it would otherwise cut (the rounds never exceed it)."""
    max_calls: int | None
    """The candidate calls the budget left for the strategy (None: no budget)."""
    test_calls: int
    """At most this many calls on the test split (the baseline and each family's best)."""
    estimated_s: float


class Planner:
    """Prices jobs from the measured speed and plans a search within its budget."""

    def __init__(self, ledger: Ledger, clock: Callable[[], float], line: Callable[[str], None]) -> None:
        self.ledger = ledger
        self.clock = clock
        self.line = line
        self.speed_unknown = False
        self.measured_on = "the baseline"
        self._shapes: dict[str, CallShape] = {}
        self._copied: dict[tuple[int, float, int], bool] = {}

    # -- calibration ------------------------------------------------------------------------

    def calibrate(self, runner: Runner) -> CostModel:
        """One baseline call alone, then one per slot at once; the speed model they give."""
        ledger = self.ledger
        n = len(ledger.order)
        self.line(f"calibrating: 1 baseline call alone, then {min(runner.workers, max(n - 1, 0))} at once")
        calibration: list[SampleResult] = []

        def on_calibration(job: Job, result: SampleResult) -> None:
            calibration.append(result)
            ledger.on_result(job, result)

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
        cost = CostModel.measure(
            alone, calibration[1:], batch_wall, self.call_shape(measured_on).prompt_chars, runner.workers
        )
        for result in calibration:
            cost.observe("direct", result)
        ledger.cost = cost
        return cost

    def _uncached_calibration(
        self, runner: Runner, calibration: list[SampleResult], batch_wall: float
    ) -> tuple[str, list[SampleResult], float]:
        """A speed measured on answers the response cache gave is no measurement (0 s per call):
        when every calibration answer came from the cache, calibrate on a candidate instead (its
        answers are cached too, so a later round that asks them again pays nothing)."""
        if any(not r.errored and not r.from_cache for r in calibration):
            return BASELINE, calibration, batch_wall
        ledger = self.ledger
        n = len(ledger.order)
        for name in sorted(ledger.grid)[:3]:
            probe: list[SampleResult] = []

            def on_probe(job: Job, result: SampleResult, probe: list[SampleResult] = probe) -> None:
                ledger.record(result)
                ledger.calls += 1
                ledger.probe_calls += 1
                probe.append(result)

            self.line(f"calibrating on {name}: the baseline's answers came from the response cache")
            runner.run([Job(name, 0)], on_probe)
            batch_started = self.clock()
            runner.run([Job(name, p) for p in range(1, min(runner.workers + 1, n))], on_probe)
            wall = self.clock() - batch_started
            if any(not r.errored and not r.from_cache for r in probe):
                return name, probe, wall
        self.speed_unknown = True
        return BASELINE, calibration, batch_wall

    # -- prices -----------------------------------------------------------------------------

    @property
    def cost(self) -> CostModel:
        assert self.ledger.cost is not None, "calibrate first"
        return self.ledger.cost

    def call_shape(self, name: str) -> CallShape:
        """Prompt length (from a few rendered samples) and the part every call shares (system text)."""
        if name not in self._shapes:
            evaluator = self.ledger.evaluator(name)
            probes = self.ledger.order[:3] or self.ledger.order
            total = shared = 0.0
            for sample in probes:
                messages = evaluator.messages(sample)
                total += sum(len(m["content"]) for m in messages)
                shared += len(messages[0]["content"]) if messages and messages[0]["role"] == "system" else 0
            count = max(1, len(probes))
            self._shapes[name] = CallShape(total / count, shared / count)
        return self._shapes[name]

    def call_seconds(self, name: str, samples: int) -> float:
        if name == BASELINE:
            return self.cost.call_seconds(self.call_shape(name), samples)
        candidate = self.ledger.candidates[name]
        budget = candidate.params(self.ledger.space).get("max_tokens")
        return self.cost.call_seconds(self.call_shape(name), samples, candidate.reasoning, budget)

    def copies(self, name: str, position: int) -> bool:
        """Whether this job's answer is a gated lookup's copy, which costs no call. Known before
        any call: the nearest pool sample's similarity against the gate. Candidates with the same
        pool and threshold copy the same samples, so each is worked out once."""
        evaluator = self.ledger.evaluator(name)
        retrieval = evaluator.retrieval
        gate = retrieval.copy_if_similar if retrieval is not None else None
        if retrieval is None or gate is None:
            return False
        key = (id(retrieval.pool), gate, position)
        if key not in self._copied:
            self._copied[key] = evaluator.prompt.lookup(self.ledger.sample_at(position)) is not None
        return self._copied[key]

    def calls_of(self, jobs: Sequence[Job]) -> int:
        """How many of these jobs ask the model (a gated lookup's copies do not)."""
        return sum(not self.copies(job.candidate, job.position) for job in jobs)

    def jobs_seconds(self, jobs: Sequence[Job]) -> float:
        """Wall time of these jobs: the calls among them (a gated lookup's copies cost none)."""
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

    def _test_seconds(self) -> float:
        """Wall time of the test round: the baseline and one member of each family on every test
        sample, each family priced by its own members (a gate copies some test answers too)."""
        ledger = self.ledger
        positions = range(len(ledger.order), len(ledger.order) + len(ledger.test))
        per_family: dict[str, list[str]] = {}
        for name, family in ledger.family.items():
            per_family.setdefault(family, []).append(name)
        seconds = [self._mean_job_seconds([BASELINE], positions) * len(ledger.test)]
        seconds += [
            self._mean_job_seconds(names, positions) * len(ledger.test) for names in per_family.values()
        ]
        return self.cost.batch_seconds(seconds)

    # -- the plan ---------------------------------------------------------------------------

    def plan(
        self,
        strategy: Strategy,
        shape: SpaceShape,
        budget: Budget | None,
        *,
        started: float,
        probe: bool,
    ) -> Plan:
        """The strategy's stages within what the budget leaves after the baseline, the test round
        and (``probe``) the noise probe's repeats of the baseline on the first round's samples."""
        ledger = self.ledger
        n = len(ledger.order)
        screen_n = max(1, math.ceil(n / 4))
        per_call = self.cost.correction * self._mean_job_seconds(ledger.grid, range(min(screen_n, n)))
        done = ledger.obs.seen(BASELINE)
        baseline_s = self.cost.batch_seconds([self.call_seconds(BASELINE, n) * max(0, n - done)])
        # The baseline and each family's best; a kNN vote's answers cost no call.
        families = {ledger.family[c] for c in ledger.grid}
        test_calls = (1 + len(families)) * len(ledger.test)
        test_s = self._test_seconds()
        max_calls: int | None = None
        if budget is not None and budget.calls is not None:
            max_calls = max(1, budget.calls - n - test_calls)
        elif budget is not None and budget.seconds is not None:
            left = budget.seconds - (self.clock() - started) - baseline_s - test_s
            max_calls = max(1, int(left / per_call)) if per_call > 0 else None
        stages = strategy.start(shape, n, max_calls)
        repeats = stages[0].samples if probe and stages else 0
        if max_calls is not None and repeats and sum(s.max_calls for s in stages) + repeats > max_calls:
            # The noise probe asks the baseline again on the first round's samples: plan for it too.
            max_calls = max(1, max_calls - repeats)
            stages = strategy.start(shape, n, max_calls)
        planned = sum(s.max_calls for s in stages)
        # Ties within the server's noise may outlive a cut while the bound allows: the budget's
        # calls when it binds, else half again the plan (a loose budget is no licence to grid).
        bound = min(max_calls, math.ceil(planned * (1 + NOISE_SLACK))) if max_calls is not None else planned
        bound = max(bound, planned)
        if bound != max_calls:
            stages = strategy.start(shape, n, bound)  # the same stages, with the bound to keep
        estimated = (self.clock() - started) + baseline_s + planned * per_call + test_s
        return Plan(stages, planned, bound, max_calls, test_calls, estimated)

    def report(
        self, plan: Plan, strategy: Strategy, shape: SpaceShape, budget: Budget | None, *, probe: bool
    ) -> None:
        ledger = self.ledger
        n = len(ledger.order)
        repeats = plan.stages[0].samples if probe and plan.stages else 0
        dims = " x ".join(f"{d.name} {len(d.labels)}" for d in shape.dimensions if len(d.labels) > 1)
        grid = len(ledger.grid) * n
        self.line(
            f"search space: {len(ledger.grid)} candidates ({dims or 'one'}), {n} validation samples; "
            f"the grid would be {grid} calls"
        )
        if self.speed_unknown:
            speed = (
                "unknown: every calibration answer came from the response cache (the plan assumes nothing)"
            )
        else:
            speed = self.cost.describe()
        self.line(f"speed measured on {self.measured_on}: {speed}")
        stages = ", ".join(f"{s.stage} {s.candidates}x{s.samples}" for s in plan.stages)
        self.line(
            f"plan ({strategy.name}{', budget ' + str(budget) if budget else ''}): {stages}; "
            f"at most {plan.candidate_calls} candidate calls ({plan.candidate_calls / max(grid, 1):.1%} of the grid"
            + (
                f"; {plan.planned_calls} planned, the rest for ties within the server's noise"
                if plan.candidate_calls > plan.planned_calls
                else ""
            )
            + f") + {n} baseline"
            + (f" + {repeats} baseline repeats (noise probe)" if repeats else "")
            + (f" + {plan.test_calls} on the test split" if ledger.test else "")
        )
        self.line(f"estimated time: {format_duration(plan.estimated_s)}")
