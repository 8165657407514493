"""Which production inputs the golden set does not cover yet, most unlike it first.

Coverage is the similarity of an input to its nearest golden sample over the template's input
variables; inputs at or above the threshold are covered, repeats among the inputs themselves
are dropped, and what is left is written for a person to label (:mod:`.merge`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import bm25s  # type: ignore[import-untyped]
import numpy as np

from promptsweep.core.data.suite import Suite, template_values
from promptsweep.core.harvest.spans import Candidate, input_variables
from promptsweep.core.neighbours.retrieval import TOKEN_PATTERN
from promptsweep.core.templates.template import PromptTemplate

DEFAULT_THRESHOLD = 0.8


def _tokens(texts: Sequence[str]) -> list[list[str]]:
    tokenized = bm25s.tokenize(
        list(texts), stopwords=None, token_pattern=TOKEN_PATTERN, return_ids=False, show_progress=False
    )
    return [list(tokens) for tokens in tokenized]


def _normalised(forward: np.ndarray, backward: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        values = np.where(denominator > 0, (forward + backward) / denominator, 0.0)
    return np.clip(values, 0.0, 1.0)


class Similarity:
    """Normalised BM25 similarity between documents of one corpus (golden + candidates):
    ``(bm25(a→b) + bm25(b→a)) / (bm25(a→a) + bm25(b→b))``, symmetric, 1 for identical
    documents and 0 for documents that share no word. ``row(i)`` is one BM25 query: document
    ``i``'s scores against the whole corpus."""

    def __init__(self, documents: Sequence[str]) -> None:
        self.tokens = [t or ["\x00"] for t in _tokens(documents)]
        self._index = bm25s.BM25()
        self._index.index(self.tokens, show_progress=False)

    def row(self, i: int) -> np.ndarray:
        return np.asarray(self._index.get_scores(self.tokens[i]), dtype=np.float64)

    def __call__(self, a: int, b: int) -> float:
        row_a, row_b = self.row(a), self.row(b)
        return float(_normalised(row_a[[b]], row_b[[a]], np.asarray([row_a[a] + row_b[b]]))[0])


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


def _document(suite: Suite, variables: Sequence[str], record: Mapping[str, Any]) -> str:
    values = template_values(record, suite.spec.inputs)
    return "\n".join(str(values.get(name) or "") for name in variables)


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
    variables = input_variables(template)
    result = HarvestResult(kept=[])
    usable: list[Candidate] = []
    seen: set[str] = set()
    for candidate in candidates:
        document = _document(suite, variables, candidate.record)
        if not document.strip():
            result.empty += 1
            continue
        if document in seen:
            result.duplicates += 1
            continue
        seen.add(document)
        usable.append(candidate)
    docs = [_document(suite, variables, record) for _, record in golden]
    docs += [_document(suite, variables, c.record) for c in usable]
    if not usable:
        return result
    similarity = Similarity(docs)
    offset = len(golden)
    golden_rows = np.stack([similarity.row(i) for i in range(offset)]) if offset else np.zeros((0, len(docs)))
    golden_self = np.diagonal(golden_rows[:, :offset]) if offset else np.zeros(0)
    scored: list[tuple[Harvested, int]] = []
    for j, candidate in enumerate(usable):
        index = offset + j
        mine = similarity.row(index)
        values = _normalised(mine[:offset], golden_rows[:, index], mine[index] + golden_self)
        nearest = int(np.argmax(values)) if len(values) else None  # ties: the first in file order
        best = float(values[nearest]) if nearest is not None else 0.0
        if best >= threshold:
            result.covered += 1
            continue
        scored.append(
            (Harvested(candidate, best, golden[nearest][0] if nearest is not None else None), offset + j)
        )
    scored.sort(key=lambda pair: (pair[0].similarity, pair[0].candidate.where))
    # Repeats among the inputs themselves: compare each with those kept so far. Their score
    # rows (kept x corpus) fill a matrix that doubles when full.
    rows = np.empty((min(len(scored), 64), len(docs)))
    kept_index: list[int] = []
    kept_self: list[float] = []
    for item, index in scored:
        mine = similarity.row(index)
        count = len(kept_index)
        if count:
            others = np.asarray(kept_index)
            denominator = mine[index] + np.asarray(kept_self)
            if float(_normalised(mine[others], rows[:count, index], denominator).max()) >= threshold:
                result.duplicates += 1
                continue
        if count == len(rows):
            rows = np.concatenate([rows, np.empty_like(rows)])
        rows[count] = mine
        kept_index.append(index)
        kept_self.append(float(mine[index]))
        result.kept.append(item)
    return result
