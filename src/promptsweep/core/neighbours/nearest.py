"""The nearest train samples: one ranking, one similarity, one exclusion rule.

Everything that needs "the labelled sample most like this input" asks :meth:`Pool.nearest`:
retrieved few-shot examples, the lookup floor and the kNN vote, the gated lookup, neighbour
choice (``output.choices``) and harvest's coverage. So a candidate and the floor printed beside
it always mean the same neighbour.

- **Document**: the text of the template variables named in ``by``, one per line.
- **Words**: :func:`tokenize`, bm25s's word pattern (two or more word characters, lower-cased);
  stop words are kept, since in log lines ``not`` and ``no`` matter.
- **Ranking**: BM25 of the query's words against the pool (``bm25s``, a maintained BM25);
  equal scores go to the smaller example id, so the choice is the same on every machine.
- **Similarity**: :func:`similarity`, the Jaccard overlap of two documents' distinct words, in
  [0, 1]. BM25 scores grow with the query's length and the pool's statistics, so they mean
  nothing across inputs or datasets; a gate's threshold (``copy_if_similar``) and harvest's
  coverage threshold are read on this overlap instead.
- **Exclusion**: never the sample being scored (same id), nor a pool sample of its split group
  when the split is grouped (``split.group_by``): a sample must not copy its own near-duplicate,
  a score no unseen input could get. An input with no id (production) excludes nothing.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import bm25s  # type: ignore[import-untyped]
import numpy as np

from promptsweep.core.data.dataset import Sample, _as_text
from promptsweep.core.data.suite import template_values
from promptsweep.core.io.errors import ConfigError
from promptsweep.core.templates.template import PromptTemplate

TOKEN_PATTERN = r"(?u)\b\w\w+\b"
"""bm25s's default word pattern; stop words are kept."""
CACHED_QUERIES = 8192
"""Rankings a pool remembers: a search asks the same samples of one pool for every candidate."""


def tokenize(texts: Sequence[str]) -> list[list[str]]:
    """The words of each text, as the pool indexes them (the one tokeniser of neighbours)."""
    tokenized = bm25s.tokenize(
        list(texts), stopwords=None, token_pattern=TOKEN_PATTERN, return_ids=False, show_progress=False
    )
    return [list(words) for words in tokenized]


def document(values: Mapping[str, Any], by: Sequence[str]) -> str:
    """One input's document: the variables in ``by``, one per line (missing ones empty)."""
    return "\n".join(str(values.get(name) or "") for name in by)


def similarity(a: Iterable[str], b: Iterable[str]) -> float:
    """The Jaccard overlap of two documents' distinct words: 1 when they use the same words, 0
    when they share none (or either has none)."""
    left, right = set(a), set(b)
    union = left | right
    return len(left & right) / len(union) if union else 0.0


def group_of(record: Mapping[str, Any], group_by: str | None) -> str | None:
    """A record's split group: the value of ``group_by``, read as the split reads it."""
    if group_by is None:
        return None
    value = record.get(group_by)
    return None if value is None else _as_text(value)


@dataclass(frozen=True)
class Example:
    """One labelled pool sample: its template variables, its answer and its split group."""

    id: str
    inputs: Mapping[str, Any]
    answer: Mapping[str, str]
    group: str | None = None


@dataclass(frozen=True)
class Neighbour:
    """A pool example and how much its document shares with the query's (:func:`similarity`)."""

    example: Example
    similarity: float


def examples_from_samples(
    samples: Sequence[Sample],
    inputs: Mapping[str, str],
    answer: Sequence[str],
    *,
    group_by: str | None = None,
) -> list[Example]:
    """Pool examples from golden samples: template variables via the suite's ``inputs`` mapping,
    the fields in ``answer``, and the group ``group_by`` puts each in."""
    return [
        Example(
            id=s.id,
            inputs=template_values(s.data, inputs),
            answer={f: s.expected[f] for f in answer},
            group=group_of(s.data, group_by),
        )
        for s in samples
    ]


class Pool:
    """Labelled examples with a BM25 index over the variables in ``by``.

    ``group_by`` is the key whose groups the split kept on one side (``None`` when the split is
    not grouped, or could not group): a query that is a known sample never gets a neighbour of
    its own group. Rankings are cached per query, so many candidates asking the same samples
    rank each once.
    """

    def __init__(
        self, examples: Sequence[Example], by: Sequence[str], *, group_by: str | None = None
    ) -> None:
        if not examples:
            raise ConfigError("the pool of train samples is empty")
        if not by:
            raise ConfigError("the pool compares no input (by is empty)")
        self.examples = tuple(sorted(examples, key=lambda e: e.id))
        self.by = tuple(by)
        self.group_by = group_by
        self.ids = frozenset(e.id for e in self.examples)
        corpus = tokenize([document(e.inputs, self.by) for e in self.examples])
        self.words = [frozenset(words) for words in corpus]
        self._index = bm25s.BM25()
        # An example with no word at all still gets a (never matching) placeholder document.
        self._index.index([words or ["\x00"] for words in corpus], show_progress=False)
        self._vocab = set(self._index.vocab_dict)
        self._cache: OrderedDict[tuple[str, str | None, str | None], tuple[int, list[Neighbour]]] = (
            OrderedDict()
        )
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.examples)

    def nearest(
        self,
        values: Mapping[str, Any],
        k: int,
        *,
        sample_id: str | None = None,
        among: frozenset[str] | None = None,
    ) -> list[Neighbour]:
        """The ``k`` pool examples nearest ``values`` (a record's template variables), most
        similar FIRST, each with its similarity.

        ``sample_id`` names the sample being scored: it and (when the pool is grouped) every
        example of its group are left out. ``among`` limits the answer to those example ids
        (harvest asks "the nearest of the inputs kept so far").
        """
        if k < 1:
            return []
        text = document(values, self.by)
        group = group_of(values, self.group_by) if sample_id is not None else None
        if among is not None:  # a changing subset: nothing to reuse
            return self._rank(text, k, sample_id, group, among)
        key = (text, sample_id, group)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
        if cached is not None and (cached[0] >= k or len(cached[1]) < cached[0]):
            return cached[1][:k]
        found = self._rank(text, k, sample_id, group, among)
        with self._lock:
            self._cache[key] = (k, found)
            if len(self._cache) > CACHED_QUERIES:
                self._cache.popitem(last=False)
        return found

    def _rank(
        self, text: str, k: int, sample_id: str | None, group: str | None, among: frozenset[str] | None
    ) -> list[Neighbour]:
        words = tokenize([text])[0]
        query = [w for w in words if w in self._vocab]
        scores = self._index.get_scores(query) if query else np.zeros(len(self.examples))
        # Examples are sorted by id, so a stable sort on the score alone breaks ties by id.
        ranked = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
        mine = set(words)
        found: list[Neighbour] = []
        for i in ranked.tolist():
            example = self.examples[i]
            if example.id == sample_id or (group is not None and example.group == group):
                continue
            if among is not None and example.id not in among:
                continue
            found.append(Neighbour(example, similarity(mine, self.words[i])))
            if len(found) == k:
                break
        return found


def compared_inputs(
    template: PromptTemplate, suite_inputs: Mapping[str, str], override: Sequence[str] | None = None
) -> list[str]:
    """The template variables neighbours are compared on, one rule for every use: ``override``
    (a search space's ``few_shot.retrieve_by``, for everything its candidates do and the floors
    they are read against), else the template's own ``examples.retrieve.by``, else the variables
    it declares, else the suite's ``inputs:`` mapping."""
    if override:
        return list(override)
    if template.spec.examples is not None:
        return list(template.spec.examples.retrieve.by)
    by = template.declared_inputs or list(suite_inputs)
    if not by:
        raise ConfigError(
            f"template {template.id!r} declares no input and the suite maps none (inputs:): "
            "there is nothing to compare neighbours on"
        )
    return by
