"""The end of a search: rank what was seen, pick the winner, and simulate strategies on known grids."""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

from promptsweep.core.measure.stats import Estimate, mean_interval
from promptsweep.optimize.strategies import (
    BASELINE,
    Decision,
    Objective,
    Observations,
    SpaceShape,
    Strategy,
)


@dataclass(frozen=True)
class Ranked:
    """One candidate's standing: its mean over the samples it saw, its cost, how far it got."""

    candidate: str
    mean: float
    samples_seen: int
    cost: float
    objective: float
    pruned_round: int | None
    interval: Estimate | None = None

    @property
    def finalist(self) -> bool:
        return self.pruned_round is None


@dataclass(frozen=True)
class Selection:
    """Finalists first (best objective first), then the pruned by how far they got."""

    ranking: tuple[Ranked, ...]
    winner: str
    best: str
    tied: tuple[str, ...]
    margin: float


def best(
    names: Sequence[str],
    *,
    score: Callable[[str], float],
    cost: Callable[[str], float],
    margin: float = 0.0,
) -> str:
    """The one rule for "best", used by the selection, the family table, the kNN vote and the
    reach step: the highest ``score`` leads; every other within ``margin`` of it (the server's
    noise at that depth, a difference it cannot tell apart; 0 where answers do not vary) ties
    with it, and a tie goes to the cheapest (``cost``: tokens per call for a prompt, k for a kNN
    vote), then to the higher score, then to the smallest id."""
    if not names:
        raise ValueError("no candidate to choose from")
    top = max(score(n) for n in names)
    tied = [n for n in names if top - score(n) <= margin + 1e-12]
    return min(tied, key=lambda n: (cost(n), -score(n), n))


def pruned_rounds(decisions: Sequence[Decision]) -> dict[str, int]:
    """Candidate → the (1-based) round it was dropped in."""
    out: dict[str, int] = {}
    for decision in decisions:
        for candidate in decision.pruned:
            out.setdefault(candidate, decision.round)
    return out


def select(
    obs: Observations,
    objective: Objective,
    decisions: Sequence[Decision],
    *,
    seed: int = 0,
    exclude: Sequence[str] = (BASELINE,),
    among: Collection[str] | None = None,
) -> Selection:
    """Rank every candidate (or those ``among``); the winner is :func:`best` of the finalists by
    objective, within the server's noise at their depth, ties to the fewest tokens per call.

    Finalists are the candidates that saw the most samples and were never pruned; pruned
    candidates are listed after them, whatever their mean on fewer samples.
    """
    pruned = pruned_rounds(decisions)
    names = [c for c in obs.scores if c not in exclude and obs.seen(c) and (among is None or c in among)]
    if not names:
        raise ValueError("no candidate has any result")
    most = (
        max(obs.seen(c) for c in names if c not in pruned)
        if any(c not in pruned for c in names)
        else max(obs.seen(c) for c in names)
    )

    def ranked(c: str) -> Ranked:
        seen = obs.seen(c)
        interval = mean_interval(obs.prefix(c), seed=seed) if seen == most and c not in pruned else None
        return Ranked(c, obs.mean(c), seen, obs.cost(c), objective(obs, c), pruned.get(c), interval)

    rows = [ranked(c) for c in names]
    finalists = sorted(
        (r for r in rows if r.finalist and r.samples_seen == most),
        key=lambda r: (-r.objective, r.cost, r.candidate),
    )
    if not finalists:  # everyone was pruned (an interrupted race): rank by how far they got
        finalists = sorted(rows, key=lambda r: (-r.samples_seen, -r.objective, r.cost, r.candidate))[:1]
    others = sorted(
        (r for r in rows if r not in finalists),
        key=lambda r: (-(r.pruned_round or 0), -r.samples_seen, -r.objective, r.candidate),
    )
    leader = finalists[0]
    margin = obs.margin(leader.samples_seen)
    tied = [r.candidate for r in finalists if leader.objective - r.objective <= margin + 1e-12]
    winner = best(
        [r.candidate for r in finalists], score=lambda c: objective(obs, c), cost=obs.cost, margin=margin
    )
    return Selection((*finalists, *others), winner, leader.candidate, tuple(tied), margin)


@dataclass(frozen=True)
class SimulatedSearch:
    """What a strategy did on a known score matrix."""

    observations: Observations
    decisions: tuple[Decision, ...]
    calls: int
    selection: Selection


def simulate(
    strategy: Strategy,
    shape: SpaceShape,
    matrix: Mapping[str, Sequence[float]],
    *,
    costs: Mapping[str, float] | None = None,
    noise_sd: float = 0.0,
    max_calls: int | None = None,
    objective: Objective | None = None,
    seed: int = 0,
) -> SimulatedSearch:
    """Run ``strategy`` against a known matrix (candidate → per-sample scores in the paired
    order), counting one call per (candidate, sample) first seen. The live runner follows the
    same steps with real answers; the tests and ``benchmarks/bench_search.py`` use this."""
    n = min(len(v) for v in matrix.values())
    obs = Observations(noise_sd=noise_sd)
    strategy.start(shape, n, max_calls)
    decisions: list[Decision] = []
    calls = 0
    while (rnd := strategy.next_round(obs)) is not None:
        for candidate in rnd.candidates:
            for position in range(rnd.samples):
                if not obs.has(candidate, position):
                    if max_calls is not None and calls >= max_calls:
                        break
                    tokens = (costs or {}).get(candidate)
                    obs.add(candidate, position, float(matrix[candidate][position]), tokens)
                    calls += 1
        decisions.append(strategy.decide(rnd, obs))
        if max_calls is not None and calls >= max_calls:
            break
    selection = select(obs, objective or Objective(), decisions, seed=seed, exclude=())
    return SimulatedSearch(obs, tuple(decisions), calls, selection)


def grid_best(matrix: Mapping[str, Sequence[float]]) -> tuple[str, dict[str, float]]:
    """The candidate an exhaustive grid would pick (highest mean over every sample)."""
    means = {c: math.fsum(v) / len(v) for c, v in matrix.items()}
    return max(means, key=lambda c: (means[c], c)), means
