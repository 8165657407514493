"""``grid``: every candidate on every validation sample (the reference, and fine for small spaces)."""

from __future__ import annotations

from dataclasses import dataclass

from promptsweep.optimize.strategies.base import (
    Decision,
    Observations,
    Round,
    SpaceShape,
    Stage,
    _keep_all,
    within_budget,
)


@dataclass
class GridSearch:
    """Every candidate on every validation sample (a seeded subset when the budget cannot pay for all)."""

    name: str = "grid"
    seed: int = 0
    _candidates: tuple[str, ...] = ()
    _n: int = 0
    _done: bool = False

    def start(self, shape: SpaceShape, n_samples: int, max_calls: int | None) -> list[Stage]:
        ids = within_budget(list(shape.candidates), max_calls, lambda k: k * n_samples, self.seed)
        self._candidates, self._n, self._done = tuple(ids), n_samples, False
        return [Stage("grid", len(self._candidates), n_samples, n_samples)]

    def next_round(self, obs: Observations) -> Round | None:
        if self._done:
            return None
        self._done = True
        return Round(0, "grid", self._candidates, self._n)

    def decide(self, rnd: Round, obs: Observations) -> Decision:
        return _keep_all(rnd)
