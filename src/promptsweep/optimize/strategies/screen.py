"""``screen`` (the default): cost grows with the *sum* of the dimensions' sizes, not their product.
A balanced screening design estimates each value's main effect; a short hill climb from the
model's best combination checks one-dimension changes; the best few race to the whole split."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from promptsweep.optimize.design import (
    Levels,
    balanced_design,
    fit_additive,
    neighbours,
    parameter_count,
    predict,
)
from promptsweep.optimize.strategies.base import (
    Decision,
    Objective,
    Observations,
    Round,
    SpaceShape,
    Stage,
    _keep_all,
    _ranked,
    affordable_extras,
    calls_spent,
    halve,
    halving_cost,
)
from promptsweep.optimize.strategies.halving import SuccessiveHalving


@dataclass
class ScreenThenRace:
    """Screen dimension values with a balanced design, sweep each dimension from the best
    combination so far, then race the best few to the whole validation split.

    1. **screen**: a balanced design (each value of each dimension about equally often), each
       candidate on ``screen_samples`` (a quarter of the split, at least ``min_samples``); an
       additive model fitted to it names the best combination.
    2. **sweep** (``sweeps`` times): from that combination, every dimension's values are raced
       at once, each with the other dimensions held at the current best (successive halving
       over growing prefixes, up to half the split). Holding the others fixed is what exposes
       interactions a main-effects model misses; a second sweep starts from the combination
       the first one found.
    3. **race**: the ``finalists`` best candidates seen so far race to the whole split.

    The number of calls grows with the sum of the dimensions' sizes; ``start`` sizes the
    stages to ``max_calls``.
    """

    seed: int = 0
    min_samples: int = 4
    sweeps: int = 1
    finalists: int = 24
    eta: float = 2.0
    objective: Objective = field(default_factory=Objective)
    name: str = "screen"
    _shape: SpaceShape | None = None
    _n: int = 0
    _screen_rows: int = 0
    _screen_n: int = 0
    _sweep_ends: tuple[int, ...] = ()
    _race_ends: tuple[int, ...] = ()
    _finalists: int = 0
    _phase: str = "screen"
    _round: int = 0
    _sweeps_left: int = 0
    _sweep_round: int = 0
    _incumbent: Levels | None = None
    _sweep_alive: list[str] = field(default_factory=list)
    _race: SuccessiveHalving | None = None
    _small: SuccessiveHalving | None = None
    _planned: list[Stage] = field(default_factory=list)
    _max_calls: int = 0

    # -- sizing ---------------------------------------------------------------------------

    @staticmethod
    def _doubling(start: int, stop: int) -> tuple[int, ...]:
        ends = [start]
        while ends[-1] < stop:
            ends.append(min(stop, ends[-1] * 2))
        return tuple(ends)

    def _stages(
        self, sizes: Sequence[int], n: int, rows: int, screen_n: int, sweeps: int, finalists: int
    ) -> list[Stage]:
        """The planned rounds (upper bounds on calls, ignoring what earlier rounds already paid for)."""
        stages = [Stage("screen", rows, screen_n, screen_n)]
        sweep_ends = self._doubling(screen_n, max(screen_n, math.ceil(n / 2)))
        for _ in range(sweeps):
            alive, previous = 2 + sum(size - 1 for size in sizes), 0
            for end in sweep_ends:
                stages.append(Stage("sweep", alive, end, end - previous))
                previous, alive = end, max(1, math.ceil(alive / self.eta))
        alive, previous = finalists, 0
        for end in self._doubling(screen_n, n):
            stages.append(Stage("race", alive, end, end - previous))
            previous, alive = end, max(1, math.ceil(alive / self.eta))
        return stages

    def start(self, shape: SpaceShape, n_samples: int, max_calls: int | None) -> list[Stage]:
        self._shape, self._n, self._round = shape, n_samples, 0
        sizes = shape.sizes
        total = len(shape.candidates)
        params = parameter_count(sizes)
        size = {
            "rows": min(total, 2 * max(max(sizes, default=1), params + 4)),
            "screen_n": min(n_samples, max(self.min_samples, math.ceil(n_samples / 4))),
            "sweeps": self.sweeps,
            "finalists": min(self.finalists, total),
        }

        def stages_for(s: Mapping[str, int]) -> list[Stage]:
            return self._stages(sizes, n_samples, s["rows"], s["screen_n"], s["sweeps"], s["finalists"])

        def calls(s: Mapping[str, int]) -> int:
            return sum(stage.max_calls for stage in stages_for(s))

        # A space whose grid costs no more than screening it is simply raced by halving.
        if total * size["screen_n"] <= size["rows"] * size["screen_n"] * 2:
            self._small = SuccessiveHalving(eta=3.0, min_samples=self.min_samples, objective=self.objective)
            self._phase = "small"
            return self._small.start(shape, n_samples, max_calls)
        if max_calls is not None:
            # Shrink to the budget (the race first keeps its best few, the design its minimum)...
            floors = {
                "finalists": 4,
                "sweeps": 0,
                "rows": min(total, params + 2),
                "screen_n": min(n_samples, 2),
            }
            for option in ("finalists", "sweeps", "rows", "finalists", "screen_n"):
                if option == "finalists" and size["sweeps"] == 0:
                    floors["finalists"] = 2
                while calls(size) > max_calls and size[option] > floors[option]:
                    size[option] -= 1
            # ...or grow into a generous one.
            ceilings = {
                "finalists": min(total, 32),
                "rows": min(total, 3 * params),
                "sweeps": 2,
                "screen_n": max(size["screen_n"], math.ceil(n_samples / 3)),
            }
            grew = True
            while grew:
                grew = False
                for option in ("finalists", "rows", "sweeps", "screen_n"):
                    if size[option] < ceilings[option]:
                        trial = dict(size, **{option: size[option] + 1})
                        if calls(trial) <= max_calls:
                            size, grew = trial, True
        self._screen_rows, self._screen_n = size["rows"], size["screen_n"]
        self._sweeps_left, self._finalists = size["sweeps"], size["finalists"]
        self._sweep_ends = self._doubling(self._screen_n, max(self._screen_n, math.ceil(n_samples / 2)))
        self._race_ends = self._doubling(self._screen_n, n_samples)
        self._phase = "screen"
        self._planned = stages_for(size)
        self._max_calls = max_calls if max_calls is not None else sum(s.max_calls for s in self._planned)
        return self._planned

    # -- rounds ---------------------------------------------------------------------------

    def _sweep_candidates(self) -> tuple[str, ...]:
        return tuple(self._sweep_alive)

    def next_round(self, obs: Observations) -> Round | None:
        shape = self._shape
        assert shape is not None, "start() first"
        if self._phase == "small":
            assert self._small is not None
            return self._small.next_round(obs)
        ids = shape.id_of()
        if self._phase == "screen":
            design = balanced_design(shape.sizes, self._screen_rows, seed=self.seed, allowed=set(ids))
            return Round(self._round, "screen", tuple(ids[p] for p in design), self._screen_n)
        if self._phase == "sweep":
            return Round(self._round, "sweep", self._sweep_candidates(), self._sweep_ends[self._sweep_round])
        if self._phase == "race":
            assert self._race is not None
            return self._race.next_round(obs)
        return None

    def _model_ranking(self, obs: Observations) -> list[Levels]:
        """Every combination, best first, as an additive model fitted to the candidates seen on
        the screening samples rates them."""
        shape = self._shape
        assert shape is not None
        seen = [c for c in shape.candidates if obs.seen(c) >= self._screen_n]
        points = [shape.candidates[c] for c in seen]
        means = [self.objective(obs, c, self._screen_n) for c in seen]
        coef = fit_additive(points, means, shape.sizes)
        everything = list(shape.candidates.values())
        predicted = predict(coef, everything, shape.sizes)
        order = sorted(range(len(everything)), key=lambda i: (-float(predicted[i]), i))
        return [everything[i] for i in order]

    def _model_best(self, obs: Observations) -> Levels:
        return self._model_ranking(obs)[0]

    def _begin_sweep(self, obs: Observations) -> None:
        """Race the incumbent, its one-dimension neighbours and the combination of each
        dimension's best value (by the screening model) from here."""
        shape = self._shape
        assert shape is not None and self._incumbent is not None
        ids = shape.id_of()
        points = [self._incumbent, *neighbours(self._incumbent, shape.sizes)]
        combined = self._model_best(obs)
        if combined not in points:
            points.append(combined)
        self._sweep_alive = [ids[p] for p in points if p in ids]
        self._sweep_round = 0
        self._phase = "sweep"

    def decide(self, rnd: Round, obs: Observations) -> Decision:
        shape = self._shape
        assert shape is not None
        self._round += 1
        if self._phase == "small":
            assert self._small is not None
            return self._small.decide(rnd, obs)
        if self._phase == "race":
            assert self._race is not None
            return self._race.decide(rnd, obs)
        ids = shape.id_of()
        if self._phase == "screen":
            self._incumbent = self._model_best(obs)
            note = f"model's best: {ids[self._incumbent]}"
            if self._sweeps_left > 0:
                self._begin_sweep(obs)
                return _keep_all(rnd, note)
            return self._begin_race(rnd, obs, note)
        return self._decide_sweep(rnd, obs)

    def _decide_sweep(self, rnd: Round, obs: Observations) -> Decision:
        """Halve the neighbourhood over growing prefixes; at the end of the schedule the best
        becomes the incumbent, and another sweep starts from it while it keeps improving."""
        shape = self._shape
        assert shape is not None and self._incumbent is not None
        ids = shape.id_of()
        last = self._sweep_round >= len(self._sweep_ends) - 1
        self._sweep_round += 1
        if not last:
            keep = math.ceil(len(rnd.candidates) / self.eta)
            # After this sweep: the sweeps still planned and the race, as planned.
            one_sweep = [s for s in self._planned if s.stage == "sweep"][: len(self._sweep_ends)]
            after = sum(s.max_calls for s in self._planned if s.stage == "race") + (
                self._sweeps_left - 1
            ) * sum(s.max_calls for s in one_sweep)
            room = self._max_calls - calls_spent(obs, shape) - after
            rest = self._sweep_ends[self._sweep_round :]
            extras = affordable_extras(keep, room, lambda k: halving_cost(k, rest, rnd.samples, self.eta))
            decision = halve(rnd, obs, self.objective, keep, extras=extras)
            self._sweep_alive = list(decision.survivors)
            if len(self._sweep_alive) > 1:
                return decision
        n = rnd.samples
        ranked = _ranked(obs, self.objective, list(rnd.candidates), n)
        previous = ids[self._incumbent]
        best = ranked[0]
        gain = (
            self.objective(obs, best, n) - self.objective(obs, previous, n)
            if obs.seen(previous) >= n
            else math.inf
        )
        self._sweeps_left -= 1
        moved = best != previous and gain > obs.margin(n)
        if moved:
            self._incumbent = shape.candidates[best]
        note = f"sweep: {previous} -> {ids[self._incumbent]}" + (
            f" ({gain:+.3f})" if moved and math.isfinite(gain) else ""
        )
        if moved and self._sweeps_left > 0:
            self._begin_sweep(obs)
            return Decision(
                rnd.number,
                rnd.stage,
                rnd.candidates,
                self._sweep_candidates(),
                {},
                None,
                n,
                obs.margin(n),
                note,
            )
        return self._begin_race(rnd, obs, note)

    def _begin_race(
        self, rnd: Round, obs: Observations, note: str, pruned: dict[str, float] | None = None
    ) -> Decision:
        """Race the current best combination, the model's top predictions and the best seen."""
        shape = self._shape
        assert shape is not None and self._incumbent is not None
        ids = shape.id_of()
        depth = rnd.samples
        seen = [c for c in shape.candidates if obs.seen(c) >= self._screen_n]
        observed = _ranked(obs, self.objective, seen, self._screen_n)
        predicted = [ids[p] for p in self._model_ranking(obs)]
        shortlist = [ids[self._incumbent]]
        for pool, share in ((observed, self._finalists // 2), (predicted, self._finalists)):
            for c in pool:
                if len(shortlist) >= self._finalists or sum(1 for x in shortlist if x in pool) >= share:
                    break
                if c not in shortlist:
                    shortlist.append(c)
        self._race = SuccessiveHalving(
            eta=self.eta, min_samples=self.min_samples, objective=self.objective, stage="race"
        )
        self._race.start_with(shortlist, self._n, ends=self._race_ends, offset=self._round)
        self._race._shape, self._race.max_calls = shape, self._max_calls
        self._phase = "race"
        dropped = dict(pruned or {})
        dropped.update({c: obs.mean(c, depth) for c in rnd.candidates if c not in shortlist})
        return Decision(
            rnd.number,
            rnd.stage,
            rnd.candidates,
            tuple(shortlist),
            dropped,
            None,
            depth,
            obs.margin(depth),
            (note + "; " if note else "") + f"racing {len(shortlist)} to {self._n} samples",
        )
