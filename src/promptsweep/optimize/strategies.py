"""Search strategies over prompt candidates: grid, seeded random subset, and successive halving.

Pure logic, no pytest: a strategy turns candidate ids and a validation size into a *plan*
(which candidates, and the cumulative sample counts of each round), and at the end of a
round decides who survives from the scores seen so far.  Every candidate sees the same
validation samples in the same order, so all comparisons are paired.

Successive halving follows the best-arm-identification view of prompt selection (TRIPLE,
arXiv 2402.09723) and Hyperband over validation items (HbBoPs, arXiv 2412.07820): spend few
samples on many candidates, keep the best ``1/eta``, spend more samples on fewer.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from promptsweep.core.stats import Estimate, is_significant, mean_interval, paired_difference

BASELINE = "baseline"
"""The suite's own template, evaluated on every round as one more (never pruned) candidate."""


@dataclass(frozen=True)
class Plan:
    """Which candidates run, and how many validation samples each round has seen by its end."""

    candidates: tuple[str, ...]
    round_ends: tuple[int, ...]

    @property
    def rounds(self) -> int:
        return len(self.round_ends)

    def round_slice(self, index: int) -> tuple[int, int]:
        """Positions ``[start, end)`` of the validation order that round ``index`` adds."""
        start = self.round_ends[index - 1] if index else 0
        return start, self.round_ends[index]

    def round_of(self, position: int) -> int:
        for index, end in enumerate(self.round_ends):
            if position < end:
                return index
        raise IndexError(f"sample position {position} is beyond the plan's {self.round_ends[-1]} samples")


@dataclass(frozen=True)
class Decision:
    """The outcome of one round: survivors, and the pruned with their score and the cutoff."""

    round: int
    survivors: tuple[str, ...]
    pruned: Mapping[str, float]
    cutoff: float | None
    samples_seen: int

    def to_json(self) -> dict[str, object]:
        return {
            "round": self.round,
            "survivors": list(self.survivors),
            "pruned": dict(self.pruned),
            "cutoff": self.cutoff,
            "samples_seen": self.samples_seen,
        }


class Strategy(Protocol):
    """A search strategy: a plan up front, then one decision per finished round."""

    @property
    def name(self) -> str: ...

    def plan(self, candidates: Sequence[str], n_samples: int) -> Plan: ...

    def decide(
        self,
        round_index: int,
        plan: Plan,
        alive: Sequence[str],
        scores: Mapping[str, Sequence[float]],
        costs: Mapping[str, float],
    ) -> Decision: ...


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values) if values else 0.0


def _keep_all(
    round_index: int, plan: Plan, alive: Sequence[str], scores: Mapping[str, Sequence[float]]
) -> Decision:
    return Decision(round_index, tuple(alive), {}, None, plan.round_ends[round_index])


@dataclass(frozen=True)
class GridSearch:
    """Every candidate on every validation sample: the reference the others are measured against."""

    name: str = "grid"

    def plan(self, candidates: Sequence[str], n_samples: int) -> Plan:
        return Plan(tuple(candidates), (n_samples,))

    def decide(
        self,
        round_index: int,
        plan: Plan,
        alive: Sequence[str],
        scores: Mapping[str, Sequence[float]],
        costs: Mapping[str, float],
    ) -> Decision:
        return _keep_all(round_index, plan, alive, scores)


@dataclass(frozen=True)
class RandomSearch:
    """A seeded random subset of ``n`` candidates, each on every validation sample."""

    n: int
    seed: int = 0
    name: str = "random"

    def plan(self, candidates: Sequence[str], n_samples: int) -> Plan:
        chosen = (
            sorted(candidates)
            if self.n >= len(candidates)
            else random.Random(self.seed).sample(sorted(candidates), self.n)
        )
        order = {c: i for i, c in enumerate(candidates)}
        return Plan(tuple(sorted(chosen, key=order.__getitem__)), (n_samples,))

    def decide(
        self,
        round_index: int,
        plan: Plan,
        alive: Sequence[str],
        scores: Mapping[str, Sequence[float]],
        costs: Mapping[str, float],
    ) -> Decision:
        return _keep_all(round_index, plan, alive, scores)


def halving_round_ends(n_candidates: int, n_samples: int, *, eta: float, min_samples: int) -> tuple[int, ...]:
    """Cumulative samples per round: the last round sees all ``n_samples``, each earlier round
    ``1/eta`` as many (at least ``min_samples``), with as many rounds as it takes ``eta``-fold
    pruning to get from ``n_candidates`` down to one."""
    if n_samples <= 0:
        return (0,)
    rounds = max(1, math.ceil(math.log(max(n_candidates, 1)) / math.log(eta) - 1e-9))
    ends: list[int] = []
    for r in range(rounds):
        size = max(min_samples, round(n_samples / eta ** (rounds - 1 - r)))
        size = min(size, n_samples)
        if not ends or size > ends[-1]:
            ends.append(size)
    if ends[-1] != n_samples:
        ends.append(n_samples)
    return tuple(ends)


@dataclass(frozen=True)
class SuccessiveHalving:
    """Rounds on growing subsets of the validation split; keep the best ``1/eta`` each round.

    ``budget`` optionally caps the candidates considered (a seeded random subset first).
    Ranking within a round is by mean over all samples seen so far, ties broken by the
    cheaper prompt and then by id, so a decision is reproducible.
    """

    eta: float = 3.0
    min_samples: int = 4
    budget: int | None = None
    seed: int = 0
    name: str = "halving"

    def plan(self, candidates: Sequence[str], n_samples: int) -> Plan:
        chosen = (
            RandomSearch(self.budget, self.seed).plan(candidates, n_samples).candidates
            if self.budget
            else tuple(candidates)
        )
        ends = halving_round_ends(len(chosen), n_samples, eta=self.eta, min_samples=self.min_samples)
        return Plan(chosen, ends)

    def decide(
        self,
        round_index: int,
        plan: Plan,
        alive: Sequence[str],
        scores: Mapping[str, Sequence[float]],
        costs: Mapping[str, float],
    ) -> Decision:
        seen = plan.round_ends[round_index]
        if round_index >= plan.rounds - 1:
            return _keep_all(round_index, plan, alive, scores)
        means = {c: _mean(scores.get(c, ())) for c in alive}
        ranked = sorted(alive, key=lambda c: (-means[c], costs.get(c, 0.0), c))
        keep = max(1, math.ceil(len(ranked) / self.eta))
        survivors = tuple(c for c in alive if c in set(ranked[:keep]))
        cutoff = means[ranked[keep - 1]]
        pruned = {c: means[c] for c in ranked[keep:]}
        return Decision(round_index, survivors, pruned, cutoff, seen)


def make_strategy(
    name: str, *, budget: int | None = None, seed: int = 0, eta: float = 3.0, min_samples: int = 4
) -> Strategy:
    """A strategy by its command-line name; ``ValueError`` names what is wrong."""
    if name == "grid":
        return GridSearch()
    if name == "random":
        if not budget:
            raise ValueError("random search needs a number of candidates (--search-budget N)")
        return RandomSearch(budget, seed)
    if name == "halving":
        if eta <= 1:
            raise ValueError(f"eta must be greater than 1, got {eta}")
        return SuccessiveHalving(eta=eta, min_samples=max(1, min_samples), budget=budget, seed=seed)
    raise ValueError(f"unknown search strategy {name!r}; use grid, random or halving")


def paired_order(ids: Sequence[str], categories: Mapping[str, str | None], seed: int) -> list[str]:
    """The validation order every candidate follows: categories interleaved (each shuffled with
    ``seed``), so early, small rounds already cover most categories."""
    rng = random.Random(f"order:{seed}")
    groups: dict[str, list[str]] = defaultdict(list)
    for sample_id in sorted(ids):
        groups[categories.get(sample_id) or ""].append(sample_id)
    names = sorted(groups)
    rng.shuffle(names)
    for name in names:
        rng.shuffle(groups[name])
    order: list[str] = []
    while any(groups.values()):
        for name in names:
            if groups[name]:
                order.append(groups[name].pop(0))
    return order


@dataclass(frozen=True)
class Ranked:
    """One candidate's standing at the end: its mean over what it saw, and how far it got."""

    candidate: str
    mean: float
    samples_seen: int
    cost: float
    pruned_round: int | None
    interval: Estimate | None = None


@dataclass(frozen=True)
class Selection:
    """The ranking, the winner (ties to the cheaper prompt) and the candidates tied with the best."""

    ranking: tuple[Ranked, ...]
    winner: str
    best: str
    tied: tuple[str, ...]
    notes: tuple[str, ...] = field(default=())


def select(
    scores: Mapping[str, Sequence[float]],
    costs: Mapping[str, float],
    pruned_round: Mapping[str, int],
    *,
    seed: int = 0,
    exclude: Sequence[str] = (BASELINE,),
) -> Selection:
    """Rank every candidate and pick the winner among those that saw the most samples.

    Scores are aligned: candidate lists are prefixes of the same paired order. The best is
    the highest mean; any finalist whose paired difference with the best is not significant
    is tied with it, and the tie goes to the cheapest (fewest prompt + completion tokens).
    """
    names = [c for c in scores if c not in exclude and scores[c]]
    if not names:
        raise ValueError("no candidate has any result")
    ranking = sorted(
        (
            Ranked(
                candidate=c,
                mean=_mean(scores[c]),
                samples_seen=len(scores[c]),
                cost=costs.get(c, 0.0),
                pruned_round=pruned_round.get(c),
            )
            for c in names
        ),
        key=lambda r: (-r.samples_seen, -r.mean, r.cost, r.candidate),
    )
    most = ranking[0].samples_seen
    ranking = [
        Ranked(
            r.candidate,
            r.mean,
            r.samples_seen,
            r.cost,
            r.pruned_round,
            mean_interval(scores[r.candidate], seed=seed),
        )
        if r.samples_seen == most
        else r
        for r in ranking
    ]
    finalists = [r for r in ranking if r.samples_seen == most]
    best = finalists[0]
    tied = [best.candidate]
    for other in finalists[1:]:
        diff = paired_difference(scores[best.candidate][:most], scores[other.candidate][:most], seed=seed)
        if not is_significant(diff):
            tied.append(other.candidate)
    winner = min(tied, key=lambda c: (costs.get(c, 0.0), -_mean(scores[c]), c))
    return Selection(tuple(ranking), winner, best.candidate, tuple(tied))


def simulate(
    strategy: Strategy, matrix: Mapping[str, Sequence[float]], costs: Mapping[str, float] | None = None
) -> tuple[Plan, dict[str, list[float]], dict[str, int], int]:
    """Run a strategy against a known score matrix (candidate → per-sample scores in the paired
    order): what it saw, who it pruned when, and how many calls it made. Used by the tests
    and the benchmark; the pytest glue follows the same steps with live results."""
    costs = dict(costs or {})
    n_samples = min(len(v) for v in matrix.values())
    plan = strategy.plan(list(matrix), n_samples)
    alive = list(plan.candidates)
    seen: dict[str, list[float]] = {c: [] for c in alive}
    pruned_round: dict[str, int] = {}
    calls = 0
    for r in range(plan.rounds):
        start, end = plan.round_slice(r)
        for c in alive:
            seen[c].extend(matrix[c][start:end])
            calls += end - start
        decision = strategy.decide(r, plan, alive, seen, costs)
        for c in decision.pruned:
            pruned_round[c] = r
        alive = list(decision.survivors)
    return plan, seen, pruned_round, calls
