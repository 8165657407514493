"""The vocabulary every strategy speaks: the space as dimensions, rounds and decisions, what
was observed, the objective, and the :class:`Strategy` protocol; plus the halving step and the
paired validation order they share."""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from promptsweep.optimize.design import (
    Levels,
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

    def replace(self, candidate: str, position: int, score: float) -> None:
        """A position's answer asked again (it had errored): its score instead of the old one."""
        self.scores.setdefault(candidate, {})[position] = [score]

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


def calls_spent(obs: Observations, shape: SpaceShape) -> int:
    """Candidate answers recorded so far (each a call, or a gated lookup's copy)."""
    return sum(obs.seen(c) for c in shape.candidates)


def halving_cost(survivors: int, ends: Sequence[int], start: int, eta: float) -> int:
    """Calls the rest of a halving schedule makes: ``survivors`` candidates from ``start``
    samples to each of ``ends`` in turn, ``1/eta`` of them going on each time."""
    total, alive, previous = 0, survivors, start
    for end in ends:
        total += alive * max(0, end - previous)
        previous, alive = end, max(1, math.ceil(alive / eta))
    return total


def affordable_extras(keep: int, room: int, cost: Callable[[int], int]) -> int:
    """How many candidates beyond the ``keep`` best the plan can still afford: the most whose
    rest of the schedule (``cost`` of that many survivors) fits in ``room`` calls."""
    extras = 0
    while cost(keep + extras + 1) <= room:
        extras += 1
        if extras > 10_000:
            break
    return extras


def halve(
    rnd: Round,
    obs: Observations,
    objective: Objective,
    keep: int,
    *,
    stage_note: str = "",
    extras: int | None = None,
) -> Decision:
    """Keep the best ``keep`` by objective, plus candidates within the noise margin of the cut
    (a difference the server's noise could explain), as many as ``extras`` allows (the calls
    the plan has left; ``None``: all of them), the better first."""
    n = rnd.samples
    ranked = _ranked(obs, objective, rnd.candidates, n)
    keep = max(1, min(keep, len(ranked)))
    cutoff = objective(obs, ranked[keep - 1], n)
    margin = obs.margin(n)
    tied = [c for c in ranked[keep:] if objective(obs, c, n) >= cutoff - margin]
    allowed = tied if extras is None else tied[:extras]
    survivors = [*ranked[:keep], *allowed]
    pruned = {c: obs.mean(c, n) for c in ranked if c not in survivors}
    note = stage_note
    if allowed:
        note = (note + "; " if note else "") + f"{len(allowed)} kept: within the noise margin ±{margin:.3f}"
    if len(tied) > len(allowed):
        note = (note + "; " if note else "") + (
            f"{len(tied) - len(allowed)} within the noise margin dropped: the plan has no calls left for them"
        )
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
