"""Few-shot examples retrieved per input: the most similar labelled examples of a pool, by BM25.

A small model answers far better when it sees labelled examples *like the input at hand*
than a fixed set: the pool is the train part of a labelled dataset, each example's chosen
input variables form a BM25 document, and an input's ``k`` best matches are shown to the
model as earlier chat turns, most similar last (nearest the question).

Ranking is delegated to ``bm25s`` (a maintained BM25 implementation); this module only
builds the documents, breaks ties deterministically (by example id) and refuses to show an
input its own labelled answer (same id, or an identical rendered question).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import bm25s  # type: ignore[import-untyped]

from promptsweep.core.data.dataset import Sample, file_sha256, load_dataset, stratified_split
from promptsweep.core.data.suite import template_values
from promptsweep.core.io.errors import ConfigError
from promptsweep.core.io.paths import contained
from promptsweep.core.templates.template import ChoicesSpec, PromptTemplate

AnswerFormat = Literal["json", "lines"]
TOKEN_PATTERN = r"(?u)\b\w\w+\b"
"""bm25s's default word pattern; log lines keep their stop words (``not``, ``no`` matter there)."""


@dataclass(frozen=True)
class Example:
    """One labelled example: the template variables of its input and its expected answer."""

    id: str
    inputs: Mapping[str, Any]
    answer: Mapping[str, str]


def format_answer(answer: Mapping[str, str], fields: Sequence[str], fmt: AnswerFormat) -> str:
    """An example's expected answer the way the model is asked to write one."""
    if fmt == "lines":
        return "\n".join(f"{name}: {answer[name]}" for name in fields)
    return json.dumps({name: answer[name] for name in fields}, ensure_ascii=False)


def _document(inputs: Mapping[str, Any], by: Sequence[str]) -> str:
    return "\n".join(str(inputs.get(name) or "") for name in by)


def document_tokens(inputs: Mapping[str, Any], by: Sequence[str]) -> list[str]:
    """The words BM25 indexes for one input: the variables in ``by``, tokenised as the pool does."""
    return _tokens([_document(inputs, by)])[0]


def _tokens(texts: list[str]) -> list[list[str]]:
    tokenized = bm25s.tokenize(
        texts, stopwords=None, token_pattern=TOKEN_PATTERN, return_ids=False, show_progress=False
    )
    return [list(tokens) for tokens in tokenized]


class ExamplePool:
    """Labelled examples with a BM25 index over the input variables named in ``by``."""

    def __init__(self, examples: Sequence[Example], by: Sequence[str]) -> None:
        if not examples:
            raise ConfigError("the few-shot example pool is empty")
        self.examples = tuple(sorted(examples, key=lambda e: e.id))
        self.by = tuple(by)
        self._index = bm25s.BM25()
        corpus = _tokens([_document(e.inputs, self.by) for e in self.examples])
        # An example with no word at all still gets a (never matching) placeholder document.
        self._index.index([tokens or ["\x00"] for tokens in corpus], show_progress=False)
        self._vocab = set(self._index.vocab_dict)

    def __len__(self) -> int:
        return len(self.examples)

    def retrieve(
        self,
        inputs: Mapping[str, Any],
        k: int,
        *,
        exclude_id: str | None = None,
        same_question: Callable[[Example], bool] | None = None,
    ) -> list[Example]:
        """The ``k`` examples most similar to ``inputs``, most similar LAST.

        Never the input itself: an example with ``exclude_id`` or for which ``same_question``
        says the model would see the identical question is skipped. Ties (equal BM25 score)
        go to the smaller example id, so the choice is the same on every machine.
        """
        query = [t for t in _tokens([_document(inputs, self.by)])[0] if t in self._vocab]
        scores = self._index.get_scores(query) if query else [0.0] * len(self.examples)
        ranked = sorted(range(len(self.examples)), key=lambda i: (-float(scores[i]), self.examples[i].id))
        chosen: list[Example] = []
        for i in ranked:
            example = self.examples[i]
            if example.id == exclude_id or (same_question is not None and same_question(example)):
                continue
            chosen.append(example)
            if len(chosen) == k:
                break
        return list(reversed(chosen))


def examples_from_samples(
    samples: Sequence[Sample], inputs: Mapping[str, str], answer: Sequence[str]
) -> list[Example]:
    """Pool examples from golden samples: template variables via the suite's ``inputs`` mapping."""
    return [
        Example(id=s.id, inputs=template_values(s.data, inputs), answer={f: s.expected[f] for f in answer})
        for s in samples
    ]


def load_pool_samples(
    dataset: Path,
    *,
    sha256: str | None,
    answer: Sequence[str],
    id_format: str | None,
    id_field: str | None,
    expected_key: str | None,
    category: str | None,
    train: float | int,
    seed: int,
    group_by: str | None,
    where: str,
) -> list[Sample]:
    """The train part of a dataset's split, exactly as a suite with these settings splits it.

    ``sha256`` pins the file: a pool that changed since the prompt was chosen is an error,
    not a silently different prompt.
    """
    if not dataset.is_file():
        raise ConfigError(f"{where}: examples.pool.dataset: file not found: {dataset}")
    if sha256 is not None:
        got = file_sha256(dataset)
        if got != sha256:
            raise ConfigError(
                f"{where}: examples.pool.sha256: {dataset} changed since this prompt was written "
                f"(expected sha256 {sha256[:12]}…, got {got[:12]}…); re-run --optimize or update the pin"
            )
    data = load_dataset(
        dataset,
        fields=list(answer),
        expected_key=expected_key,
        id_field=id_field,
        id_format=id_format,
        category_field=category,
    )
    split = stratified_split(data.samples, train=train, seed=seed, group_by=group_by)
    keep = set(split.train)
    return [s for s in data.samples if s.id in keep]


@dataclass(frozen=True)
class Retrieval:
    """A pool with how many examples to take and how to write their answers."""

    pool: ExamplePool
    k: int
    answer_fields: tuple[str, ...]
    answer_format: AnswerFormat = "json"
    copy_if_similar: float | None = None
    """Gated lookup threshold (``examples.copy_if_similar``); ``None``: always ask the model."""
    vote: int = 1
    """How many nearest pool samples vote on a copied answer (``examples.vote``)."""
    choices: ChoicesSpec | None = None
    """Per-input label enums from the nearest pool samples (``output.choices``)."""


_POOLS: dict[tuple[str, str], ExamplePool] = {}


def retrieval_for(template: PromptTemplate) -> Retrieval | None:
    """The retrieval a template declares (``examples:``), its pool loaded once per process."""
    spec = template.spec.examples
    if spec is None:
        return None
    if template.path is None:
        raise ConfigError(
            f"template {template.id!r}: examples.pool needs a template file (its dataset path is relative to it)"
        )
    pool_spec = spec.pool
    dataset = contained(
        template.path.parent / pool_spec.dataset,
        key="examples.pool.dataset",
        where=template.path,
        value=pool_spec.dataset,
    )
    key = (str(dataset), pool_spec.model_dump_json() + json.dumps(spec.retrieve.by))
    if key not in _POOLS:
        samples = load_pool_samples(
            dataset,
            sha256=pool_spec.sha256,
            answer=pool_spec.answer,
            id_format=pool_spec.id,
            id_field=pool_spec.id_field,
            expected_key=pool_spec.expected_key,
            category=pool_spec.category,
            train=pool_spec.split.train,
            seed=pool_spec.split.seed,
            group_by=pool_spec.split.group_by,
            where=str(template.path),
        )
        _POOLS[key] = ExamplePool(
            examples_from_samples(samples, pool_spec.inputs, pool_spec.answer), spec.retrieve.by
        )
    return Retrieval(
        _POOLS[key],
        spec.retrieve.k,
        tuple(pool_spec.answer),
        spec.answer_format,
        copy_if_similar=spec.copy_if_similar,
        vote=spec.vote,
        choices=template.spec.output.choices,
    )


def neighbours(
    template: PromptTemplate,
    retrieval: Retrieval,
    values: Mapping[str, Any],
    k: int,
    *,
    sample_id: str | None = None,
) -> list[Example]:
    """An input's ``k`` nearest pool examples, most similar LAST: the ones its prompt shows and
    the ones a gated lookup copies from, picked the same way (never the input itself, by id or
    by an identical rendered question)."""
    if k < 1:
        return []
    question = template.render_user(values, sample_id=sample_id or "?")

    def same_question(example: Example) -> bool:
        return template.render_user(example.inputs, sample_id=example.id) == question

    return retrieval.pool.retrieve(values, k, exclude_id=sample_id, same_question=same_question)


def render_messages(
    template: PromptTemplate,
    values: Mapping[str, Any],
    *,
    retrieval: Retrieval | None = None,
    sample_id: str | None = None,
) -> list[dict[str, str]]:
    """Chat messages for one input, with its retrieved examples when the prompt uses them.

    The one rendering path shared by eval items, the optimizer and production callers, so a
    prompt sends the same bytes wherever it runs.
    """
    where = sample_id or "?"
    if retrieval is None or retrieval.k == 0:
        return template.render(values, sample_id=where)
    examples = neighbours(template, retrieval, values, retrieval.k, sample_id=sample_id)
    turns = [
        (e.inputs, format_answer(e.answer, retrieval.answer_fields, retrieval.answer_format))
        for e in examples
    ]
    return template.render(values, sample_id=where, examples=turns)
