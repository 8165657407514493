"""``halving``: successive halving (best-arm identification: TRIPLE, arXiv 2402.09723; Hyperband
over validation items, arXiv 2412.07820): many candidates on few samples, the best part on more."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from promptsweep.optimize.strategies.base import (
    Decision,
    Objective,
    Observations,
    Round,
    SpaceShape,
    Stage,
    _keep_all,
    affordable_extras,
    calls_spent,
    halve,
    halving_cost,
    within_budget,
)


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


@dataclass
class SuccessiveHalving:
    """Rounds on growing prefixes of the validation order; keep the best ``1/eta`` each round.

    ``budget`` optionally caps the candidates considered (a seeded random subset first).
    """

    eta: float = 3.0
    min_samples: int = 4
    budget: int | None = None
    seed: int = 0
    objective: Objective = field(default_factory=Objective)
    name: str = "halving"
    stage: str = "halving"
    _alive: list[str] = field(default_factory=list)
    _ends: tuple[int, ...] = ()
    _round: int = 0
    _offset: int = 0
    _stages: list[Stage] = field(default_factory=list)
    _shape: SpaceShape | None = None
    max_calls: int | None = None
    """The candidate calls this race may make in all (for a race inside ``screen``: the whole
    search's, counted over every candidate); set by ``start`` to the budget or its own plan."""

    def start(self, shape: SpaceShape, n_samples: int, max_calls: int | None) -> list[Stage]:
        ids = list(shape.candidates)
        if self.budget and self.budget < len(ids):
            chosen = set(random.Random(self.seed).sample(sorted(ids), self.budget))
            ids = [c for c in ids if c in chosen]

        def calls_for(k: int) -> int:
            ends = halving_round_ends(k, n_samples, eta=self.eta, min_samples=self.min_samples)
            alive, previous, total = k, 0, 0
            for end in ends:
                total += alive * (end - previous)
                previous, alive = end, max(1, math.ceil(alive / self.eta))
            return total

        self._shape = shape
        stages = self.start_with(within_budget(ids, max_calls, calls_for, self.seed), n_samples)
        self.max_calls = max_calls if max_calls is not None else sum(s.max_calls for s in stages)
        return stages

    def start_with(
        self, candidates: Sequence[str], n_samples: int, *, ends: Sequence[int] | None = None, offset: int = 0
    ) -> list[Stage]:
        """Race ``candidates`` over the cumulative sample counts ``ends`` (default: halving's own
        schedule); round numbers start at ``offset`` (``screen`` races after its other stages)."""
        self._alive = list(candidates)
        self._round = 0
        self._offset = offset
        self._ends = (
            tuple(ends)
            if ends
            else halving_round_ends(len(self._alive), n_samples, eta=self.eta, min_samples=self.min_samples)
        )
        stages: list[Stage] = []
        alive, previous = len(self._alive), 0
        for end in self._ends:
            stages.append(Stage(self.stage, alive, end, end - previous))
            previous = end
            alive = max(1, math.ceil(alive / self.eta))
        self._stages = stages
        return stages

    def next_round(self, obs: Observations) -> Round | None:
        if self._round >= len(self._ends) or not self._alive:
            return None
        return Round(self._offset + self._round, self.stage, tuple(self._alive), self._ends[self._round])

    def decide(self, rnd: Round, obs: Observations) -> Decision:
        self._round += 1
        if self._round >= len(self._ends):
            return _keep_all(rnd, "final round")
        keep = math.ceil(len(rnd.candidates) / self.eta)
        extras = None
        if self.max_calls is not None and self._shape is not None:
            room = self.max_calls - calls_spent(obs, self._shape)
            rest = self._ends[self._round :]
            extras = affordable_extras(keep, room, lambda k: halving_cost(k, rest, rnd.samples, self.eta))
        decision = halve(rnd, obs, self.objective, keep, extras=extras)
        self._alive = list(decision.survivors)
        return decision
