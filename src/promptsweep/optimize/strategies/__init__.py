"""Search strategies: which candidates to evaluate on how many validation samples, round by round.

Pure logic, no pytest and no I/O. A strategy sees the space as dimensions and candidates
(each a tuple of value indices), proposes a :class:`Round` (candidates x a prefix of the
paired validation order), and after the round decides who goes on from what was observed.
Every candidate sees the same samples in the same order, so all comparisons are paired;
a candidate asked for a prefix it has partly seen only pays for the samples it has not.

- ``grid``: every candidate on every sample (the reference, and fine for small spaces).
- ``random``: a seeded subset, each on every sample.
- ``halving``: successive halving (best-arm identification: TRIPLE, arXiv 2402.09723; Hyperband
  over validation items, arXiv 2412.07820) — many candidates on few samples, the best half on
  more.
- ``screen`` (default): cost grows with the *sum* of the dimensions' sizes, not their product.
  A balanced screening design estimates each value's main effect; a short hill climb from the
  model's best combination checks one-dimension changes (interactions show up there); the best
  few then race by successive halving to the full validation split.

No strategy prunes on a difference smaller than the server's own noise: ``noise_sd`` (the
spread of repeated answers to the same request) widens every cut by what it alone could
explain. One strategy per file behind the :class:`~.base.Strategy` protocol (as pytest-xdist
keeps one scheduler per file); :func:`make_strategy` picks one by its command-line name.
"""

from __future__ import annotations

from promptsweep.optimize.strategies.base import (
    BASELINE,
    Decision,
    Dimension,
    Objective,
    Observations,
    Round,
    SpaceShape,
    Stage,
    Strategy,
    halve,
    paired_order,
    within_budget,
)
from promptsweep.optimize.strategies.grid import GridSearch
from promptsweep.optimize.strategies.halving import SuccessiveHalving, halving_round_ends
from promptsweep.optimize.strategies.random_subset import RandomSearch
from promptsweep.optimize.strategies.screen import ScreenThenRace

__all__ = [
    "BASELINE",
    "Decision",
    "Dimension",
    "GridSearch",
    "Objective",
    "Observations",
    "RandomSearch",
    "Round",
    "ScreenThenRace",
    "SpaceShape",
    "Stage",
    "Strategy",
    "SuccessiveHalving",
    "halve",
    "halving_round_ends",
    "make_strategy",
    "paired_order",
    "within_budget",
]


def make_strategy(
    name: str,
    *,
    budget: int | None = None,
    seed: int = 0,
    eta: float = 3.0,
    min_samples: int = 4,
    token_weight: float = 0.0,
) -> Strategy:
    """A strategy by its command-line name; ``ValueError`` names what is wrong."""
    objective = Objective(token_weight)
    if name == "grid":
        return GridSearch(seed=seed)
    if name == "random":
        if not budget:
            raise ValueError("random search needs a number of candidates (--search-budget N)")
        return RandomSearch(budget, seed)
    if eta <= 1:
        raise ValueError(f"eta must be greater than 1, got {eta}")
    if name == "halving":
        return SuccessiveHalving(
            eta=eta, min_samples=max(1, min_samples), budget=budget, seed=seed, objective=objective
        )
    if name == "screen":
        return ScreenThenRace(seed=seed, min_samples=max(1, min_samples), objective=objective)
    raise ValueError(f"unknown search strategy {name!r}; use screen, halving, grid or random")
