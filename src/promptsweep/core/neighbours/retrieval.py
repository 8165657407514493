"""Few-shot examples retrieved per input, and the pool a template pins for them.

A small model answers far better when it sees labelled examples *like the input at hand* than a
fixed set: the pool is the train part of a labelled dataset, and an input's ``k`` nearest pool
samples (:meth:`~promptsweep.core.neighbours.nearest.Pool.nearest`, the one ranking the lookup
floor, the gate and neighbour choice use too) are shown to the model as earlier chat turns,
most similar last (nearest the question).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from promptsweep.core.data.dataset import Sample, file_sha256, load_dataset, samples_sha256, stratified_split
from promptsweep.core.io.errors import ConfigError
from promptsweep.core.io.paths import contained
from promptsweep.core.neighbours.nearest import Neighbour, Pool, examples_from_samples
from promptsweep.core.templates.template import ChoicesSpec, PromptTemplate

AnswerFormat = Literal["json", "lines"]


def format_answer(answer: Mapping[str, str], fields: Sequence[str], fmt: AnswerFormat) -> str:
    """An example's expected answer the way the model is asked to write one."""
    if fmt == "lines":
        return "\n".join(f"{name}: {answer[name]}" for name in fields)
    return json.dumps({name: answer[name] for name in fields}, ensure_ascii=False)


def load_pool_samples(
    dataset: Path,
    *,
    sha256: str | None,
    train_sha256: str | None = None,
    answer: Sequence[str],
    id_format: str | None,
    id_field: str | None,
    expected_key: str | None,
    category: str | None,
    train: float | int,
    seed: int,
    group_by: str | None,
    where: str,
) -> tuple[list[Sample], str | None]:
    """The train part of a dataset's split, exactly as a suite with these settings splits it, and
    the key it was grouped by (``None`` when it was not, or could not be).

    ``train_sha256`` pins the train part (its ids and content), ``sha256`` (older winners) the
    whole file: a pool that changed since the prompt was chosen is an error, not a silently
    different prompt.
    """
    if not dataset.is_file():
        raise ConfigError(f"{where}: examples.pool.dataset: file not found: {dataset}")
    if sha256 is not None and train_sha256 is None:
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
    pool = [s for s in data.samples if s.id in keep]
    if train_sha256 is not None:
        got = samples_sha256(pool)
        if got != train_sha256:
            raise ConfigError(
                f"{where}: examples.pool.train_sha256: the train part of {dataset} changed since this prompt "
                f"was written (a train sample edited, added or removed; expected {train_sha256[:12]}…, got "
                f"{got[:12]}…); re-run --optimize or update the pin"
            )
    return pool, split.grouped_by


@dataclass(frozen=True)
class Retrieval:
    """A pool with how many examples to take and how to write their answers."""

    pool: Pool
    k: int
    answer_fields: tuple[str, ...]
    answer_format: AnswerFormat = "json"
    copy_if_similar: float | None = None
    """Gated lookup threshold (``examples.copy_if_similar``); ``None``: always ask the model."""
    vote: int = 1
    """How many nearest pool samples vote on a copied answer (``examples.vote``)."""
    choices: ChoicesSpec | None = None
    """Per-input label enums from the nearest pool samples (``output.choices``)."""
    nearest_last: bool = True
    """The most similar example next to the question (``examples.nearest: last``), else first."""

    @property
    def depth(self) -> int:
        """How many neighbours one request reads: the examples shown, the gate's voters and the
        neighbours whose labels make the choices; ranked once, each takes its first ones."""
        return max(
            self.k,
            self.vote if self.copy_if_similar is not None else 0,
            self.choices.neighbours if self.choices is not None else 0,
        )

    def neighbours(self, values: Mapping[str, Any], *, sample_id: str | None = None) -> list[Neighbour]:
        """The input's nearest pool samples, most similar FIRST, as many as :attr:`depth`."""
        return self.pool.nearest(values, self.depth, sample_id=sample_id)


_POOLS: dict[tuple[str, str], Pool] = {}


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
        samples, grouped_by = load_pool_samples(
            dataset,
            sha256=pool_spec.sha256,
            train_sha256=pool_spec.train_sha256,
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
        examples = examples_from_samples(samples, pool_spec.inputs, pool_spec.answer, group_by=grouped_by)
        _POOLS[key] = Pool(examples, spec.retrieve.by, group_by=grouped_by)
    return Retrieval(
        _POOLS[key],
        spec.retrieve.k,
        tuple(pool_spec.answer),
        spec.answer_format,
        copy_if_similar=spec.copy_if_similar,
        vote=spec.vote,
        choices=template.spec.output.choices,
        nearest_last=spec.nearest == "last",
    )


def example_turns(
    retrieval: Retrieval, nearest_first: Sequence[Neighbour]
) -> list[tuple[Mapping[str, Any], str]]:
    """The ``k`` examples a prompt shows, as (inputs, answer text) turns, most similar last (nearest
    the question) or, with ``examples.nearest: first``, first."""
    shown = list(nearest_first[: retrieval.k])
    if retrieval.nearest_last:
        shown.reverse()
    return [
        (n.example.inputs, format_answer(n.example.answer, retrieval.answer_fields, retrieval.answer_format))
        for n in shown
    ]
