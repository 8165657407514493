"""``random``: a seeded subset of the candidates, each on every validation sample."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from promptsweep.optimize.strategies.base import (
    Decision,
    Observations,
    Round,
    SpaceShape,
    Stage,
    _keep_all,
)
from promptsweep.optimize.strategies.grid import GridSearch


@dataclass
class RandomSearch:
    """A seeded random subset of ``n`` candidates, each on every validation sample."""

    n: int
    seed: int = 0
    name: str = "random"
    _inner: GridSearch = field(default_factory=GridSearch)

    def start(self, shape: SpaceShape, n_samples: int, max_calls: int | None) -> list[Stage]:
        ids = sorted(shape.candidates)
        chosen = ids if self.n >= len(ids) else random.Random(self.seed).sample(ids, self.n)
        order = {c: i for i, c in enumerate(shape.candidates)}
        subset = SpaceShape(
            shape.dimensions, {c: shape.candidates[c] for c in sorted(chosen, key=order.__getitem__)}
        )
        stages = self._inner.start(subset, n_samples, max_calls)
        return [Stage("random", s.candidates, s.samples, s.new_samples) for s in stages]

    def next_round(self, obs: Observations) -> Round | None:
        rnd = self._inner.next_round(obs)
        return None if rnd is None else Round(rnd.index, "random", rnd.candidates, rnd.samples)

    def decide(self, rnd: Round, obs: Observations) -> Decision:
        return _keep_all(rnd)
