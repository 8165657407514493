"""Which production inputs the golden set does not cover yet, most unlike it first.

An input is covered when its nearest golden sample (:meth:`~promptsweep.core.neighbours.nearest.Pool.nearest`,
the ranking every neighbour of the project comes from, on the inputs the template compares) is at
least ``threshold`` similar (the same word overlap a gate's ``copy_if_similar`` reads: 1 for the
same words, 0 for none shared). Repeats among the inputs themselves are dropped the same way,
and what is left is written for a person to label (:mod:`.merge`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from promptsweep.core.data.suite import Suite, template_values
from promptsweep.core.harvest.spans import Candidate
from promptsweep.core.neighbours.nearest import Example, Pool, compared_inputs, document
from promptsweep.core.templates.template import PromptTemplate

DEFAULT_THRESHOLD = 0.5
"""Covered at half the words shared: the same near-duplicate the shipped gate (copy_if_similar: 0.5) copies."""


@dataclass(frozen=True)
class Harvested:
    candidate: Candidate
    similarity: float
    nearest: str | None


@dataclass
class HarvestResult:
    kept: list[Harvested]
    covered: int = 0
    duplicates: int = 0
    empty: int = 0


def harvest(
    suite: Suite,
    template: PromptTemplate,
    golden: Sequence[tuple[str, Mapping[str, Any]]],
    candidates: Sequence[Candidate],
    *,
    threshold: float = DEFAULT_THRESHOLD,
) -> HarvestResult:
    """Candidates whose nearest golden sample is less similar than ``threshold``, and that are
    not (near-)repeats of one already kept, most unlike the golden set first."""
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"--threshold must be within [0, 1], got {threshold}")
    by = compared_inputs(template, suite.spec.inputs)
    result = HarvestResult(kept=[])
    usable: list[tuple[Candidate, dict[str, Any]]] = []
    seen: set[str] = set()
    for candidate in candidates:
        values = template_values(candidate.record, suite.spec.inputs)
        text = document(values, by)
        if not text.strip():
            result.empty += 1
            continue
        if text in seen:
            result.duplicates += 1
            continue
        seen.add(text)
        usable.append((candidate, values))
    if not usable:
        return result
    pool = (
        Pool([Example(sid, template_values(record, suite.spec.inputs), {}) for sid, record in golden], by)
        if golden
        else None
    )
    scored: list[tuple[Harvested, int]] = []
    for index, (candidate, values) in enumerate(usable):
        nearest = pool.nearest(values, 1) if pool is not None else []
        best = nearest[0].similarity if nearest else 0.0
        if best >= threshold:
            result.covered += 1
            continue
        scored.append((Harvested(candidate, best, nearest[0].example.id if nearest else None), index))
    scored.sort(key=lambda pair: (pair[0].similarity, pair[0].candidate.where))
    # Repeats among the inputs themselves: each against the nearest of those kept so far.
    inputs = Pool([Example(str(i), values, {}) for i, (_, values) in enumerate(usable)], by)
    kept: set[str] = set()
    for item, index in scored:
        if kept:
            nearest = inputs.nearest(usable[index][1], 1, sample_id=str(index), among=frozenset(kept))
            if nearest and nearest[0].similarity >= threshold:
                result.duplicates += 1
                continue
        kept.add(str(index))
        result.kept.append(item)
    return result
