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
explain.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from promptsweep.optimize.design import (
    Levels,
    balanced_design,
    fit_additive,
    neighbours,
    parameter_count,
    predict,
)

BASELINE = "baseline"
"""The suite's own template: evaluated wherever any candidate is, never pruned."""

Z95 = 1.959963984540054


@dataclass(frozen=True)
class Dimension:
    """One axis of the space and the labels of its values (e.g. ``few_shot``: none, retrieved4)."""

    name: str
    labels: tuple[str, ...]


@dataclass(frozen=True)
class SpaceShape:
    """What a strategy knows of a space: its dimensions and each candidate's value indices."""

    dimensions: tuple[Dimension, ...]
    candidates: Mapping[str, Levels]

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(len(d.labels) for d in self.dimensions)

    def id_of(self) -> dict[Levels, str]:
        return {levels: cid for cid, levels in self.candidates.items()}

    def describe(self, candidate: str) -> dict[str, str]:
        levels = self.candidates[candidate]
        return {d.name: d.labels[i] for d, i in zip(self.dimensions, levels, strict=True)}


@dataclass(frozen=True)
class Round:
    """Evaluate ``candidates`` on validation positions ``[0, samples)``."""

    index: int
    stage: str
    candidates: tuple[str, ...]
    samples: int

    @property
    def number(self) -> int:
        """1-based, as every report shows it."""
        return self.index + 1


@dataclass(frozen=True)
class Decision:
    """What a finished round decided: who goes on, who was dropped at which mean, and why."""

    round: int
    """1-based round number."""
    stage: str
    evaluated: tuple[str, ...]
    survivors: tuple[str, ...]
    pruned: Mapping[str, float]
    cutoff: float | None
    samples_seen: int
    noise_margin: float = 0.0
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "stage": self.stage,
            "evaluated": list(self.evaluated),
            "survivors": list(self.survivors),
            "pruned": dict(self.pruned),
            "cutoff": self.cutoff,
            "samples_seen": self.samples_seen,
            "noise_margin": self.noise_margin,
            "note": self.note,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Decision:
        return cls(
            round=int(data["round"]),
            stage=str(data.get("stage", "")),
            evaluated=tuple(data.get("evaluated", ())),
            survivors=tuple(data.get("survivors", ())),
            pruned={str(k): float(v) for k, v in dict(data.get("pruned", {})).items()},
            cutoff=data.get("cutoff"),
            samples_seen=int(data.get("samples_seen", 0)),
            noise_margin=float(data.get("noise_margin", 0.0)),
            note=str(data.get("note", "")),
        )


@dataclass
class Observations:
    """Scores seen so far: candidate → position in the paired order → the repeats' scores."""

    scores: dict[str, dict[int, list[float]]] = field(default_factory=dict)
    tokens: dict[str, list[float]] = field(default_factory=dict)
    noise_sd: float = 0.0
    """Standard deviation of one call's score between repeats of the same request (0 = none seen)."""

    def add(self, candidate: str, position: int, score: float, tokens: float | None = None) -> None:
        self.scores.setdefault(candidate, {}).setdefault(position, []).append(score)
        if tokens is not None:
            self.tokens.setdefault(candidate, []).append(tokens)

    def seen(self, candidate: str) -> int:
        """How long a prefix of the paired order this candidate has been scored on."""
        got = self.scores.get(candidate, {})
        n = 0
        while n in got:
            n += 1
        return n

    def has(self, candidate: str, position: int) -> bool:
        return position in self.scores.get(candidate, {})

    def prefix(self, candidate: str, n: int | None = None) -> list[float]:
        """Per-sample scores (mean over repeats) on the first ``n`` positions (default: all seen)."""
        got = self.scores.get(candidate, {})
        n = self.seen(candidate) if n is None else n
        return [math.fsum(got[p]) / len(got[p]) for p in range(n) if p in got]

    def mean(self, candidate: str, n: int | None = None) -> float:
        values = self.prefix(candidate, n)
        return math.fsum(values) / len(values) if values else 0.0

    def cost(self, candidate: str) -> float:
        """Mean prompt + completion tokens per call (what ties are broken on)."""
        got = self.tokens.get(candidate)
        return math.fsum(got) / len(got) if got else math.inf

    def margin(self, n: int) -> float:
        """The smallest difference of two means over ``n`` samples that the server's own noise
        does not explain at 95%: z·√2·sigma/√n (sigma = noise_sd)."""
        return Z95 * math.sqrt(2.0) * self.noise_sd / math.sqrt(n) if n and self.noise_sd > 0 else 0.0


@dataclass(frozen=True)
class Objective:
    """What is maximised: mean score - λ·tokens per call / 1000 (λ = ``--objective-token-weight``)."""

    token_weight: float = 0.0

    def __call__(self, obs: Observations, candidate: str, n: int | None = None) -> float:
        cost = obs.cost(candidate)
        penalty = 0.0 if self.token_weight == 0 or math.isinf(cost) else self.token_weight * cost / 1000.0
        return obs.mean(candidate, n) - penalty


@dataclass(frozen=True)
class Stage:
    """One planned round as the plan prints it: how many candidates on how many samples."""

    stage: str
    candidates: int
    samples: int
    new_samples: int

    @property
    def max_calls(self) -> int:
        return self.candidates * self.new_samples


class Strategy(Protocol):
    """A search strategy: an outline up front, then one round at a time and a decision after each."""

    @property
    def name(self) -> str: ...

    def start(self, shape: SpaceShape, n_samples: int, max_calls: int | None) -> list[Stage]:
        """Size the search for ``n_samples`` validation samples and at most ``max_calls`` calls
        (None: no limit); return the planned rounds (upper bounds, for the plan and estimate)."""
        ...

    def next_round(self, obs: Observations) -> Round | None:
        """The next round, or None when the search is done."""
        ...

    def decide(self, rnd: Round, obs: Observations) -> Decision:
        """After ``rnd`` ran: who goes on."""
        ...


def _keep_all(rnd: Round, note: str = "") -> Decision:
    return Decision(rnd.number, rnd.stage, rnd.candidates, rnd.candidates, {}, None, rnd.samples, note=note)


def _ranked(obs: Observations, objective: Objective, candidates: Sequence[str], n: int) -> list[str]:
    return sorted(candidates, key=lambda c: (-objective(obs, c, n), obs.cost(c), c))


def halve(
    rnd: Round, obs: Observations, objective: Objective, keep: int, *, stage_note: str = ""
) -> Decision:
    """Keep the best ``keep`` by objective, plus any candidate within the noise margin of the cut."""
    n = rnd.samples
    ranked = _ranked(obs, objective, rnd.candidates, n)
    keep = max(1, min(keep, len(ranked)))
    cutoff = objective(obs, ranked[keep - 1], n)
    margin = obs.margin(n)
    survivors = [c for i, c in enumerate(ranked) if i < keep or objective(obs, c, n) >= cutoff - margin]
    pruned = {c: obs.mean(c, n) for c in ranked if c not in survivors}
    note = stage_note
    kept_by_noise = len(survivors) - keep
    if kept_by_noise > 0:
        note = (note + "; " if note else "") + f"{kept_by_noise} kept: within the noise margin ±{margin:.3f}"
    order = {c: i for i, c in enumerate(rnd.candidates)}
    return Decision(
        rnd.number,
        rnd.stage,
        rnd.candidates,
        tuple(sorted(survivors, key=order.__getitem__)),
        pruned,
        cutoff,
        n,
        margin,
        note,
    )


def within_budget(
    ids: Sequence[str], max_calls: int | None, calls_for: Callable[[int], int], seed: int
) -> list[str]:
    """``ids`` or, when planning all of them would pass ``max_calls``, the largest seeded random
    subset whose plan fits (at least one): a budget is planned for, not cut off mid-round."""
    if max_calls is None or calls_for(len(ids)) <= max_calls:
        return list(ids)
    keep = len(ids)
    while keep > 1 and calls_for(keep) > max_calls:
        keep -= 1
    chosen = set(random.Random(f"budget:{seed}").sample(sorted(ids), keep))
    return [c for c in ids if c in chosen]


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

        return self.start_with(within_budget(ids, max_calls, calls_for, self.seed), n_samples)

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
        return stages

    def next_round(self, obs: Observations) -> Round | None:
        if self._round >= len(self._ends) or not self._alive:
            return None
        return Round(self._offset + self._round, self.stage, tuple(self._alive), self._ends[self._round])

    def decide(self, rnd: Round, obs: Observations) -> Decision:
        self._round += 1
        if self._round >= len(self._ends):
            return _keep_all(rnd, "final round")
        decision = halve(rnd, obs, self.objective, math.ceil(len(rnd.candidates) / self.eta))
        self._alive = list(decision.survivors)
        return decision


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
        return stages_for(size)

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
            decision = halve(rnd, obs, self.objective, math.ceil(len(rnd.candidates) / self.eta))
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
