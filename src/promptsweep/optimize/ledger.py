"""Everything a search has asked and heard: one evaluator per candidate, and every answer kept
where it belongs.

Validation answers feed the observations every decision reads; test answers are kept apart
(:attr:`Ledger.test_obs`), so no strategy, noise estimate or ranking ever reads them. The plan,
the rounds, the confirmation and the family table all ask and record through one ledger, so a
call is counted once, in one place.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from promptsweep.core.answers.chat import ChatFn, ChatRequest, ChatResult
from promptsweep.core.answers.judge import JudgeRoute
from promptsweep.core.answers.metrics import MetricRegistry
from promptsweep.core.data.dataset import Sample
from promptsweep.core.data.suite import Suite
from promptsweep.core.evaluate import Evaluator, SampleResult
from promptsweep.optimize.estimate import CostModel
from promptsweep.optimize.runner import Job
from promptsweep.optimize.space import Candidate, SearchSpace
from promptsweep.optimize.strategies import BASELINE, Observations


@dataclass
class CandidateStats:
    """What a candidate cost: tokens per call and latency."""

    prompt_tokens: list[int] = field(default_factory=list)
    completion_tokens: list[int] = field(default_factory=list)
    cached_tokens: list[int] = field(default_factory=list)
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


@dataclass
class Tokens:
    """Tokens the server was asked to read and write, and how much of the reading its prompt
    cache spared: where a search's time goes."""

    calls: int = 0
    prompt: int = 0
    cached: int = 0
    generated: int = 0

    def add(self, result: SampleResult) -> None:
        self.calls += 1
        self.prompt += result.prompt_tokens or 0
        self.cached += result.cached_tokens or 0
        self.generated += result.completion_tokens or 0

    @property
    def cached_share(self) -> float | None:
        return self.cached / self.prompt if self.prompt else None

    def describe(self, seconds: float | None = None) -> str:
        share = self.cached_share
        text = f"tokens prompt {self.prompt} (cached {self.cached}" + (
            f", {share:.0%})" if share is not None else ")"
        )
        text += f", generated {self.generated}"
        if seconds is not None and seconds > 0 and self.calls:
            text += f"; {self.calls / (seconds / 60):.1f} calls/min"
        return text

    def to_json(self, seconds: float | None = None) -> dict[str, float | int | None]:
        share = self.cached_share
        per_minute = self.calls / (seconds / 60) if seconds and seconds > 0 else None
        return {
            "calls": self.calls,
            "prompt_tokens": self.prompt,
            "cached_prompt_tokens": self.cached,
            "cached_share": None if share is None else round(share, 4),
            "generated_tokens": self.generated,
            "calls_per_minute": None if per_minute is None else round(per_minute, 2),
        }


class Ledger:
    """One suite's candidates, their evaluators, and every answer the search has recorded."""

    def __init__(
        self,
        suite: Suite,
        space: SearchSpace,
        order: Sequence[Sample],
        test: Sequence[Sample],
        registry: MetricRegistry,
        sends: Sequence[ChatFn],
        *,
        model: str | None,
        record: Callable[[SampleResult], None],
        judge: Callable[[ChatFn], JudgeRoute] | None = None,
    ) -> None:
        """``judge`` gives the judge route for a worker's send function (judged fields with
        their own ``judge.url``); by default judges ask the worker's own endpoint."""
        self.suite = suite
        self.space = space
        self.order = list(order)
        """The validation samples in the paired order every candidate follows."""
        self.test = list(test)
        """The test split: asked only after the winner is chosen, read by no decision."""
        self.registry = registry
        self.sends = list(sends)
        self._slots = [
            sum(1 for other in self.sends[:i] if other is send) for i, send in enumerate(self.sends)
        ]
        """Each worker's slot on its endpoint: its rank among the workers sharing that endpoint."""
        self.model = model
        self.record = record
        self.judge = judge
        self.grid: list[str] = [c.id for c in space.candidates()]
        """The candidates a strategy searches (the space's grid)."""
        self.knn: list[str] = [c.id for c in space.knn_candidates()]
        """The kNN votes, which compete beside the grid at no call."""
        self.candidates: dict[str, Candidate] = {
            c.id: c for c in (*space.candidates(), *space.knn_candidates())
        }
        self.family: dict[str, str] = {c: cand.family for c, cand in self.candidates.items()}
        """Each candidate's family (prompt-only, gated lookup, neighbour choice)."""
        self.obs = Observations()
        self.test_obs = Observations()
        self.stats: dict[str, CandidateStats] = {}
        self.tokens = Tokens()
        """Every call's tokens, validation and test, for the run's totals."""
        self.calls = 0
        self.baseline_calls = 0
        self.test_calls = 0
        self.test_lookups: dict[str, int] = {}
        self.probe_calls = 0
        self.cost: CostModel | None = None
        """The server's speed, once calibrated; it learns each reasoning style's answer length."""
        self._noise: dict[int, dict[int, float]] = {}
        self.errored: set[Job] = set()
        """Jobs whose answer errored (a timeout, a server error) and was not answered since."""
        self._evaluators: dict[str, Evaluator] = {}

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
                dataset=self.space.visible,  # label lists from train + validation only
                params=params,
                model=self.model,
                candidate=name,
                retrieval=retrieval,
            )
        return self._evaluators[name]

    def sample_at(self, position: int) -> Sample:
        """Positions past the validation order are the test split's samples."""
        n = len(self.order)
        return self.order[position] if position < n else self.test[position - n]

    def is_test(self, job: Job) -> bool:
        return job.position >= len(self.order)

    def run_job(self, job: Job, worker: int) -> SampleResult:
        """Ask one job on a worker's endpoint and its own slot there (what the
        :class:`~.runner.Runner` calls): the worker's samples keep their prefix in that slot."""
        index = worker % len(self.sends)
        endpoint, slot = self.sends[index], self._slots[index]

        def send(request: ChatRequest) -> ChatResult:
            return endpoint(dataclasses.replace(request, slot=slot))

        route = self.judge(send) if self.judge is not None else None
        return self.evaluator(job.candidate).evaluate(
            self.sample_at(job.position), send, repeat=job.repeat, judge=route
        )

    def prefix(self, job: Job) -> tuple[Any, ...]:
        """What the job's prompt begins with, as far as the scheduler can group it: under
        ``shared_first`` candidates with as many retrieved examples share the task, the examples
        and the sample; under ``instructions_first`` those with the same opening words share more."""
        candidate = self.candidates.get(job.candidate)
        if candidate is None:
            return ("",)
        if candidate.layout == "shared_first":
            return (candidate.layout, candidate.k if candidate.few_shot == "retrieved" else 0)
        # Instructions first: the prompt begins with the tone, the rules and the output wording.
        return (candidate.layout, candidate.tone, candidate.constraints, candidate.output, candidate.shots)

    def on_result(self, job: Job, result: SampleResult) -> None:
        """Record one answer where it belongs (validation or test) and count what it cost."""
        self.record(result)
        if result.errored:
            self.errored.add(job)
        # A gated lookup's answer cost no call: it counts as an answer, not against the budget.
        called = result.answered_by != "lookup"
        if called and not result.errored and not result.from_cache:
            self.tokens.add(result)
        if self.is_test(job):
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
            stats.cached_tokens.append(result.cached_tokens or 0)
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

    def on_retry(self, job: Job, result: SampleResult) -> None:
        """An errored job asked again: a good answer replaces the errored one's 0 wherever it was
        counted; one that errors again stays an error."""
        self.record(result)
        if result.errored:
            return
        self.errored.discard(job)
        if result.answered_by != "lookup" and not result.from_cache:
            self.tokens.add(result)
        if self.is_test(job):
            self.test_obs.replace(job.candidate, job.position - len(self.order), result.score)
            return
        stats = self.stats.get(job.candidate)
        if stats is not None and stats.errored:
            stats.errored -= 1
            stats.prompt_tokens.append(result.prompt_tokens or 0)
            stats.completion_tokens.append(result.completion_tokens or 0)
        if job.repeat == 0:
            self.obs.replace(job.candidate, job.position, result.score)

    def update_noise(self) -> tuple[int, int]:
        """Baseline answers asked twice: how many agree, and the score's spread between repeats."""
        pairs = [(v[0], v[1]) for v in self._noise.values() if 0 in v and 1 in v]
        if not pairs:
            return 0, 0
        squared = [(a - b) ** 2 for a, b in pairs]
        self.obs.noise_sd = math.sqrt(sum(squared) / (2 * len(pairs)))
        return len(pairs), sum(1 for a, b in pairs if a == b)
