"""Candidate families: prompts that always call, gated lookups, and kNN answers that never call.

A search ranks prompts, but whoever pays for every call also wants to know whether a call was
needed at all. Each family's best member (chosen on validation, like the winner) is scored on
the test split beside the winner:

- ``prompt-only``: candidates that ask the model about every sample (one call per answer);
- ``gated lookup``: candidates with ``few_shot.copy_if_similar``, which copy near-duplicates'
  answers and ask about the rest (fewer calls per answer);
- ``neighbour choice``: candidates with ``choices``, whose label enums are, per sample, the
  labels of its nearest train samples (one call per answer);
- ``kNN vote``: each field's majority among the k nearest train samples (k = 1, 3, 5), no call
  at all. These are free, so every member is scored on every validation sample the race reached
  and competes for the win like any prompt; the one best on validation stands for the family.

When the best kNN member scores significantly above every family's best on the test split, the
summary says that a lookup beat every prompt; above the winner alone, it says so of the winner.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from promptsweep.core.measure.stats import Estimate, difference_p, holm, paired_difference
from promptsweep.optimize.ledger import Ledger
from promptsweep.optimize.selection import best, select
from promptsweep.optimize.space import FAMILIES, KNN
from promptsweep.optimize.strategies import Decision, Objective, SpaceShape

ALPHA = 0.05
"""The family-wise error rate of the table's comparisons with the lookup floor."""


@dataclass(frozen=True)
class FamilyBest:
    """One family's best member: chosen on validation, scored on the test split."""

    family: str
    member: str
    """A candidate id, or ``knn<k>`` for a kNN vote."""
    validation: float | None
    test: tuple[float, ...]
    """Per-sample test scores (test order); empty when the member was not asked there."""
    calls_per_answer: float | None
    """Model calls per test answer (validation's when the test split was not answered)."""
    vs_lookup: Estimate | None = None
    """*member - lookup floor*, paired over the test split, when both were scored there."""
    lookup_p: float | None = None
    """That difference's p-value, Holm-adjusted over every family compared with the lookup."""

    @property
    def test_mean(self) -> float | None:
        return math.fsum(self.test) / len(self.test) if self.test else None

    def to_json(self) -> dict[str, Any]:
        mean = self.test_mean
        return {
            "family": self.family,
            "member": self.member,
            "validation": None if self.validation is None else round(self.validation, 4),
            "test": None if mean is None else round(mean, 4),
            "test_n": len(self.test),
            "calls_per_answer": None if self.calls_per_answer is None else round(self.calls_per_answer, 4),
            "minus_lookup": None
            if self.vs_lookup is None
            else {
                "mean": round(self.vs_lookup.mean, 4),
                "low": round(self.vs_lookup.low, 4),
                "high": round(self.vs_lookup.high, 4),
                "n": self.vs_lookup.n,
                "holm_p": None if self.lookup_p is None else round(self.lookup_p, 4),
            },
        }

    def against(self, lookup: Sequence[float] | None, *, seed: int = 0) -> FamilyBest:
        """This member with its paired difference to the lookup floor's per-sample test scores
        (and that difference's raw p-value, until :func:`against_lookup` adjusts it)."""
        if not lookup or len(lookup) != len(self.test):
            return self
        differences = [b - a for a, b in zip(lookup, self.test, strict=True)]
        return replace(
            self,
            vs_lookup=paired_difference(list(lookup), list(self.test), seed=seed),
            lookup_p=difference_p(differences),
        )


def against_lookup(
    families: Sequence[FamilyBest], lookup: Sequence[float] | None, *, seed: int
) -> list[FamilyBest]:
    """Every family's best against the lookup floor on the test split, the p-values Holm-adjusted
    over the comparisons made: the table asks up to four questions of one floor, and "a family
    beat the lookup" must hold for the family of questions, not one at a time."""
    compared = [f.against(lookup, seed=seed) for f in families]
    raw = [f.lookup_p for f in compared if f.lookup_p is not None]
    adjusted = iter(holm(raw))
    return [replace(f, lookup_p=next(adjusted)) if f.lookup_p is not None else f for f in compared]


def lookup_beats_prompts(
    knn: FamilyBest | None, winner: Sequence[float], *, seed: int = 0
) -> Estimate | None:
    """*kNN - winner* paired over the test split, when both were scored there."""
    if knn is None or not knn.test or len(knn.test) != len(winner):
        return None
    return paired_difference(list(winner), list(knn.test), seed=seed)


def lookup_beat_every_prompt(families: Sequence[FamilyBest], *, seed: int = 0) -> bool:
    """Whether the best kNN vote (no call) scored significantly above the best of every prompt
    family scored on the test split (paired intervals above 0), not only above the winner."""
    knn = next((f for f in families if f.family == KNN), None)
    prompts = [f for f in families if f.family != KNN and f.test]
    if knn is None or not prompts:
        return False
    for family in prompts:
        d = lookup_beats_prompts(knn, family.test, seed=seed)
        if d is None or d.n < 2 or d.low <= 0:
            return False
    return True


def family_rows(families: Sequence[FamilyBest]) -> list[list[Any]]:
    """Rows of the summary's family table: family, best member, validation, test, the paired
    difference to the lookup floor on test, calls/answer."""
    rows: list[list[Any]] = []
    for f in families:
        mean = f.test_mean
        d = f.vs_lookup
        rows.append([
            f.family, f.member,
            "" if f.validation is None else f"{f.validation:.3f}",
            "not asked" if mean is None else f"{mean:.3f}",
            "" if d is None else f"{d.mean:+.3f} ({d.low:+.3f}..{d.high:+.3f})",
            "" if f.lookup_p is None else f"{f.lookup_p:.3g}",
            "" if f.calls_per_answer is None else f"{f.calls_per_answer:.2f}",
        ])  # fmt: skip
    return rows


def beat_lookup_sentence(families: Sequence[FamilyBest]) -> str | None:
    """One plain line on whether any family's best beat the lookup floor on the test split."""
    compared = [f for f in families if f.vs_lookup is not None and f.vs_lookup.n > 0]
    if not compared:
        return None
    beat = [
        f
        for f in compared
        if f.vs_lookup is not None and f.vs_lookup.mean > 0 and f.lookup_p is not None and f.lookup_p < ALPHA
    ]
    if beat:
        names = ", ".join(
            f"{f.family} ({f.member}, {f.vs_lookup.mean:+.3f}, p={f.lookup_p:.3g})"
            for f in beat
            if f.vs_lookup and f.lookup_p is not None
        )
        return f"beat the lookup floor on the test split (Holm over {len(compared)} comparisons, p < {ALPHA}): {names}"
    above = [f for f in compared if f.vs_lookup is not None and f.vs_lookup.mean > 0]
    if above:
        names = ", ".join(f.family for f in above)
        return (
            f"no family beat the lookup floor significantly on the test split ({names} above it, within noise "
            f"after Holm over {len(compared)} comparisons)"
        )
    return "no family beat the lookup floor on the test split"


def by_family(families: Sequence[FamilyBest]) -> Mapping[str, FamilyBest]:
    return {f.family: f for f in families}


def family_bests(
    ledger: Ledger, objective: Objective, decisions: Sequence[Decision], winner: str, *, seed: int
) -> dict[str, str]:
    """The best candidate of each family that has one: the winner for its own family, the
    selection's own rule (:func:`~promptsweep.optimize.selection.select`, restricted to the
    family) for the others."""
    bests: dict[str, str] = {}
    for family in FAMILIES:
        members = [c for c in ledger.candidates if ledger.family[c] == family and ledger.obs.seen(c)]
        if winner in members:
            bests[family] = winner
        elif members:
            bests[family] = select(ledger.obs, objective, decisions, seed=seed, among=members).winner
    return bests


def unreached_members(
    ledger: Ledger, shape: SpaceShape, reached: Mapping[str, str], winner: str
) -> list[str]:
    """For each family of the space the search drew no member of (a screen's design is random),
    its member nearest the winner (fewest dimensions changed: closeness stands in for a score
    nothing measured, ties by :func:`~promptsweep.optimize.selection.best`'s rule)."""
    here = shape.candidates[winner]

    def changes(candidate: str) -> int:
        return sum(a != b for a, b in zip(shape.candidates[candidate], here, strict=True))

    added: list[str] = []
    for family in FAMILIES:
        members = [c for c in ledger.grid if ledger.family[c] == family]
        if family not in reached and members:
            added.append(best(members, score=lambda c: -changes(c), cost=lambda c: 0.0))
    return added


def family_table(
    ledger: Ledger, bests: Mapping[str, str], *, test_lookup: Sequence[float] | None, seed: int
) -> list[FamilyBest]:
    """Each family's best on the test split (with its paired difference to the lookup floor)."""
    n_test = len(ledger.test)
    families: list[FamilyBest] = []
    for family, name in bests.items():
        test = ledger.test_obs.prefix(name, n_test) if n_test else []
        if len(test) < n_test:
            test = []
        stats = ledger.stats.get(name)
        if test:
            per_answer: float | None = 1.0 - ledger.test_lookups.get(name, 0) / n_test
        else:
            per_answer = stats.calls_per_answer if stats else None
        families.append(FamilyBest(family, name, ledger.obs.mean(name), tuple(test), per_answer))
    return against_lookup(families, test_lookup, seed=seed)
