"""The end of a search: rank what was seen, pick the winner, and simulate strategies on known grids."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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


@dataclass(frozen=True)
class Stability:
    """How often the winner stays first when the validation samples that chose it are redrawn."""

    winner: str
    share: float
    """The share of resamples in which :func:`best` picks the winner again."""
    runner_up: str | None
    runner_up_share: float
    resamples: int
    n: int
    """The validation samples resampled (those every finalist answered)."""

    def describe(self) -> str:
        text = f"{self.winner} chosen again in {self.share:.0%} of {self.resamples} resamples of its {self.n} validation samples"
        if self.runner_up is not None:
            text += f"; runner-up {self.runner_up} {self.runner_up_share:.0%}"
        if self.share < 0.5:
            text += " (an unstable choice: a rerun on other samples would likely pick another prompt)"
        return text

    def to_json(self) -> dict[str, Any]:
        return {
            "winner_share": round(self.share, 3),
            "runner_up": self.runner_up,
            "runner_up_share": round(self.runner_up_share, 3),
            "resamples": self.resamples,
            "n": self.n,
        }


def stability(
    obs: Observations,
    objective: Objective,
    selection: Selection,
    *,
    seed: int = 0,
    resamples: int = 1000,
) -> Stability | None:
    """After the final race: redraw the validation samples the finalists share (with
    replacement) and apply the one rule for best (:func:`best`: objective, the server's noise
    margin, ties to the cheaper) each time; how often each finalist comes first."""
    finalists = [r.candidate for r in selection.ranking if r.finalist]
    if len(finalists) < 2:
        return None
    n = min(obs.seen(c) for c in finalists)
    if n < 2:
        return None
    scores = {c: obs.prefix(c, n) for c in finalists}
    penalty = {c: obs.mean(c, n) - objective(obs, c, n) for c in finalists}
    margin = obs.margin(n)
    rng = random.Random(f"stability:{seed}")
    wins: dict[str, int] = dict.fromkeys(finalists, 0)
    for _ in range(resamples):
        picks = [rng.randrange(n) for _ in range(n)]
        means = {c: math.fsum(scores[c][p] for p in picks) / n - penalty[c] for c in finalists}
        wins[best(finalists, score=means.__getitem__, cost=obs.cost, margin=margin)] += 1
    others = sorted((c for c in finalists if c != selection.winner), key=lambda c: (-wins[c], c))
    runner_up = others[0] if others and wins[others[0]] else None
    return Stability(
        selection.winner,
        wins[selection.winner] / resamples,
        runner_up,
        wins[runner_up] / resamples if runner_up else 0.0,
        resamples,
        n,
    )
