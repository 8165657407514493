"""The search's rounds: each round's new calls, as many at once as the server has slots, until the
strategy is done, the plan's calls are spent or the time budget is reached.

The baseline follows wherever the candidates go (paired), and on the first round it is asked a
second time on the screening samples, which measures how often the server's answers change
(skipped in deterministic mode). A round starts only while the time budget allows, and never
makes more candidate calls than the plan said it would.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from promptsweep.core.evaluate import SampleResult
from promptsweep.optimize.estimate import format_duration
from promptsweep.optimize.ledger import Ledger, Tokens
from promptsweep.optimize.plan import Plan, Planner
from promptsweep.optimize.runner import Job, Runner
from promptsweep.optimize.space import Budget
from promptsweep.optimize.strategies import BASELINE, Decision, Round, Strategy

MAX_ERROR_SHARE = 0.5
"""A round in which more calls than this failed stops the search: its scores would be noise."""


@dataclass
class RoundsResult:
    """How the rounds ended, and the server noise the first one measured."""

    decisions: list[Decision]
    stopped: str | None = None
    tokens: list[tuple[Tokens, float]] = field(default_factory=list)
    """Each decided round's tokens and its wall time in seconds."""
    noise_pairs: int = 0
    noise_agree: int = 0


def past_budget(
    budget: Budget | None, started: float, clock: Callable[[], float]
) -> Callable[[], str | None]:
    """Stops a batch of calls at the time budget even when the estimate was wrong."""

    def check() -> str | None:
        if budget is None or budget.seconds is None:
            return None
        elapsed = clock() - started
        if elapsed > budget.seconds:
            return f"time budget of {format_duration(budget.seconds)} reached mid-round after {format_duration(elapsed)}"
        return None

    return check


class Rounds:
    """Runs a strategy's rounds against the ledger within the plan and the budget."""

    def __init__(
        self,
        ledger: Ledger,
        planner: Planner,
        strategy: Strategy,
        budget: Budget | None,
        *,
        deterministic: bool,
        clock: Callable[[], float],
        line: Callable[[str], None],
    ) -> None:
        self.ledger = ledger
        self.planner = planner
        self.strategy = strategy
        self.budget = budget
        self.deterministic = deterministic
        self.clock = clock
        self.line = line

    def jobs_for(self, rnd: Round, first: bool) -> list[Job]:
        obs = self.ledger.obs
        jobs = [Job(c, p) for c in rnd.candidates for p in range(rnd.samples) if not obs.has(c, p)]
        baseline = [Job(BASELINE, p) for p in range(rnd.samples) if not obs.has(BASELINE, p)]
        repeats: list[Job] = []
        if first and not self.deterministic:
            repeats = [Job(BASELINE, p, 1) for p in range(rnd.samples)]
        return baseline + jobs + repeats

    def _within_plan(self, jobs: list[Job], spent: int, plan: Plan) -> tuple[list[Job], bool]:
        """The round's jobs, cut so the candidate calls stay within the plan: whole candidates
        while they fit (a candidate half asked would be compared on fewer samples)."""
        room = plan.candidate_calls - spent
        candidate_jobs = [j for j in jobs if j.candidate != BASELINE]
        if self.planner.calls_of(candidate_jobs) <= room:
            return jobs, False
        kept: list[Job] = [j for j in jobs if j.candidate == BASELINE]
        used = 0
        for name in dict.fromkeys(j.candidate for j in candidate_jobs):
            mine = [j for j in candidate_jobs if j.candidate == name]
            cost = self.planner.calls_of(mine)
            if used + cost > room:
                break
            kept.extend(mine)
            used += cost
        return kept, True

    def run(self, runner: Runner, plan: Plan, started: float) -> RoundsResult:
        ledger = self.ledger
        budget = self.budget
        result = RoundsResult(decisions=[])
        first_round = True
        spent = 0  # the strategy's candidate calls so far: what the plan bounds
        while (rnd := self.strategy.next_round(ledger.obs)) is not None:
            jobs = self.jobs_for(rnd, first_round)
            jobs, trimmed = self._within_plan(jobs, spent, plan)
            if trimmed and not any(j.candidate != BASELINE for j in jobs):
                result.stopped = (
                    f"the plan's {plan.candidate_calls} candidate calls are spent before round {rnd.number}"
                )
                break
            if budget is not None and budget.calls is not None and ledger.calls + len(jobs) > budget.calls:
                room = budget.calls - ledger.calls
                if room <= 0:
                    result.stopped = f"call budget of {budget.calls} spent before round {rnd.number}"
                    break
                jobs, trimmed = jobs[:room], True
            expected = self.planner.jobs_seconds(jobs)
            elapsed = self.clock() - started
            if budget is not None and budget.seconds is not None and elapsed + expected / 2 > budget.seconds:
                result.stopped = (
                    f"time budget of {format_duration(budget.seconds)} reached after {format_duration(elapsed)}: "
                    f"round {rnd.number} ({rnd.stage}, about {format_duration(expected)}) not started"
                )
                break
            self.line(
                f"round {rnd.number} ({rnd.stage}): {len(rnd.candidates)} candidate(s) on {rnd.samples} "
                f"samples, {self.planner.calls_of(jobs)} new calls, about {format_duration(expected)}"
            )
            spent += self.planner.calls_of([j for j in jobs if j.candidate != BASELINE])
            round_started = self.clock()
            round_tokens = Tokens()

            def on_result(job: Job, answer: SampleResult, tokens: Tokens = round_tokens) -> None:
                if answer.answered_by != "lookup" and not answer.errored and not answer.from_cache:
                    tokens.add(answer)
                ledger.on_result(job, answer)

            total = len(jobs)

            def tick(
                done: int, rnd: Round = rnd, total: int = total, round_started: float = round_started
            ) -> None:
                rate = done / max(1e-9, self.clock() - round_started)
                leader = self._leader(rnd)
                left = (total - done) / rate if rate > 0 else math.inf
                self.line(
                    f"  round {rnd.number}: {done}/{total} calls, {rate:.2f} calls/s, ~{format_duration(left)} left"
                    + (f"; leading: {leader}" if leader else "")
                )

            errors_before = sum(s.errored for s in ledger.stats.values())
            outcome = runner.run(
                jobs, on_result, tick=tick, should_stop=past_budget(budget, started, self.clock)
            )
            errored = sum(s.errored for s in ledger.stats.values()) - errors_before
            took = self.clock() - round_started
            if ledger.cost is not None and outcome.done == len(jobs):
                ledger.cost.correct(expected, took)
            if first_round:
                result.noise_pairs, result.noise_agree = ledger.update_noise()
                if result.noise_pairs:
                    self.line(
                        f"  server noise: {result.noise_agree} of {result.noise_pairs} repeated baseline answers "
                        f"scored the same; per-call spread {ledger.obs.noise_sd:.3f} (no candidate is pruned on "
                        f"less than ±{ledger.obs.margin(rnd.samples):.3f} at {rnd.samples} samples)"
                    )
            first_round = False
            if outcome.stopped or outcome.done < len(jobs):
                result.stopped = outcome.stopped or "round cut short"
                break
            if jobs and errored > MAX_ERROR_SHARE * len(jobs):
                result.stopped = f"{errored} of {len(jobs)} calls of round {rnd.number} failed; see results.jsonl for the errors"
                break
            if trimmed:
                result.stopped = f"the planned calls were spent in round {rnd.number} ({rnd.stage})"
                break
            decision = self.strategy.decide(rnd, ledger.obs)
            result.decisions.append(decision)
            result.tokens.append((round_tokens, took))
            self.line(self._decision_line(decision, took, round_tokens))
        return result

    def _leader(self, rnd: Round) -> str:
        obs = self.ledger.obs
        seen = [(obs.seen(c), c) for c in rnd.candidates if obs.seen(c)]
        if not seen:
            return ""
        depth = max(s for s, _ in seen)
        best = max((c for s, c in seen if s == depth), key=lambda c: obs.mean(c, depth))
        return f"{best} {obs.mean(best, depth):.3f} (n={depth})"

    @staticmethod
    def _decision_line(d: Decision, took: float, tokens: Tokens) -> str:
        moved = f"{len(d.survivors)} go on" if d.survivors != d.evaluated else "all go on"
        dropped = f", {len(d.pruned)} dropped" if d.pruned else ""
        note = f"; {d.note}" if d.note else ""
        return (
            f"  round {d.round} done in {format_duration(took)}: {moved}{dropped}{note}; "
            f"{tokens.describe(took)}"
        )
