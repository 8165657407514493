"""The lookup floor: what copying the labels of the most similar train sample would score.

A constant answer is a low bar. A much higher one costs no model call either: answer each
sample with every expected value (free text included) of its nearest train sample, found by
the same BM25 retriever that picks retrieved few-shot examples. A prompt that does not beat
this lookup adds nothing a table lookup would not; reports show the two side by side, with
the paired difference *prompt - lookup* over the same samples.

The neighbour is never the sample itself, nor a train sample sharing its ``split.group_by``
value (leave one group out): a train sample scored in a plain run would otherwise copy its own
near-duplicate, a score no unseen input could get.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from promptsweep.core.data.dataset import Dataset, Sample, _as_text
from promptsweep.core.data.suite import Suite
from promptsweep.core.io.errors import ConfigError
from promptsweep.core.measure.scoring import Scorer
from promptsweep.core.measure.stats import Estimate, paired_difference
from promptsweep.core.neighbours.retrieval import Example, ExamplePool, document_tokens, examples_from_samples

__all__ = [
    "LookupAnswer",
    "LookupFloor",
    "beats_lookup",
    "lookup_difference",
    "lookup_floor",
    "nearest_answers",
    "suite_lookup_floor",
    "token_similarity",
    "vote_answer",
]


@dataclass(frozen=True)
class LookupAnswer:
    """The answer a lookup gives one sample: the labels of its nearest train sample."""

    source_id: str
    """The train sample whose labels are copied."""
    answer: Mapping[str, str]
    """Its expected values, every scored field including free text, as the dataset has them."""
    similarity: float
    """How much the two inputs share, in [0, 1]: :func:`token_similarity` of their BM25 documents."""


@dataclass(frozen=True)
class LookupFloor:
    """What the lookup scores on a set of samples, with the same metrics and weights as a run."""

    score: float
    """Mean weighted score over the samples."""
    fields: Mapping[str, float]
    """Mean score of each field."""
    per_sample: Mapping[str, float]
    """Sample id → weighted score of its copied answer (0 for a sample with nothing to copy)."""
    answers: Mapping[str, LookupAnswer]


def token_similarity(a: Sequence[str], b: Sequence[str]) -> float:
    """The Jaccard overlap of two documents' distinct words: 1 when they use the same words,
    0 when they share none (or either has none).

    BM25 ranks the neighbours, but its scores grow with the query's length and the pool's word
    statistics, so they mean nothing across datasets; this overlap, on the very words BM25
    indexed, means the same thing on every dataset.
    """
    left, right = set(a), set(b)
    union = left | right
    return len(left & right) / len(union) if union else 0.0


def vote_answer(answers: Sequence[Mapping[str, str]]) -> dict[str, str]:
    """Each field's most frequent value among neighbours' answers given most similar FIRST; a
    tie goes to the value of the nearer neighbour. One answer is copied as it is."""
    if not answers:
        return {}
    voted: dict[str, str] = {}
    for name in answers[0]:
        values = [a[name] for a in answers if name in a]
        counts: dict[str, int] = {}
        for value in values:
            counts[value] = counts.get(value, 0) + 1
        # max() keeps the first of equal counts, and values are in nearness order.
        voted[name] = max(counts, key=lambda v: counts[v])
    return voted


def _group(sample: Sample, group_by: str | None) -> str | None:
    # The split's own reading of the key (dataset._split_units), so "same group" means the same here.
    if group_by is None:
        return None
    value = sample.data.get(group_by)
    return None if value is None else _as_text(value)


def _member_of(ids: frozenset[str]) -> Callable[[Example], bool]:
    return lambda example: example.id in ids


def default_by(suite: Suite) -> list[str]:
    """The suite template's declared inputs (required, then optional), else the suite's ``inputs:``.

    The declared inputs, not a prompt's own ``retrieve.by``: the floor belongs to the suite and its
    data, so every prompt of the suite is read against the same one.
    """
    template = suite.load_template()
    declared = [*template.spec.inputs.required, *template.spec.inputs.optional]
    by = declared or list(suite.spec.inputs)
    if not by:
        raise ConfigError(
            f"{suite.path}: the lookup floor compares inputs, but template {template.id!r} declares none "
            "and the suite maps none (inputs:)"
        )
    return by


def nearest_answers(
    suite: Suite,
    train: Sequence[Sample],
    samples: Sequence[Sample],
    *,
    by: Sequence[str] | None = None,
    k: int = 1,
    group_by: str | Literal["suite"] | None = "suite",
) -> dict[str, list[LookupAnswer]]:
    """Each sample's ``k`` nearest train samples, most similar FIRST, under the suite's retriever.

    The BM25 pool is the one retrieved few-shot uses (documents of the suite's template variables
    in ``by``, default :func:`default_by`; ties to the smaller id). Never the sample itself nor a
    train sample of its ``split.group_by`` group. A sample whose every train sample is excluded
    gets an empty list; with no train samples every list is empty.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if not train:
        return {s.id: [] for s in samples}
    by = list(by) if by is not None else default_by(suite)
    fields = list(suite.fields)
    pool = ExamplePool(examples_from_samples(train, suite.spec.inputs, fields), by)
    words = {e.id: document_tokens(e.inputs, by) for e in pool.examples}
    if group_by == "suite":
        group_by = suite.spec.split.group_by
    members: dict[str, set[str]] = {}
    for s in train:
        key = _group(s, group_by)
        if key is not None:
            members.setdefault(key, set()).add(s.id)
    found: dict[str, list[LookupAnswer]] = {}
    for sample in samples:
        group = _group(sample, group_by)
        values = suite.template_values(sample)
        query = document_tokens(values, by)
        same_group = frozenset(members.get(group, ())) if group is not None else frozenset()
        chosen = pool.retrieve(values, k, exclude_id=sample.id, same_question=_member_of(same_group))
        found[sample.id] = [
            LookupAnswer(
                source_id=e.id, answer=dict(e.answer), similarity=token_similarity(query, words[e.id])
            )
            for e in reversed(chosen)  # retrieve() puts the most similar last, nearest the question
        ]
    return found


def lookup_floor(
    scorer: Scorer, samples: Sequence[Sample], answers: Mapping[str, LookupAnswer]
) -> LookupFloor | None:
    """Score each sample's copied answer as if the model had given it; ``None`` without answers.

    The copied values go through the normalisation a model's answer gets (labels to snake_case
    and synonyms, free text stripped). A sample with no answer scores 0 on every field, so the
    floor is always over the same samples as the run.
    """
    if not samples or not answers:
        return None
    per_sample: dict[str, float] = {}
    totals: dict[str, float] = dict.fromkeys(scorer.weights, 0.0)
    for sample in samples:
        copied = answers.get(sample.id)
        got = {} if copied is None else {f: scorer.normalise_expected(f, v) for f, v in copied.answer.items()}
        scores = scorer.score(sample.expected, got)
        per_sample[sample.id] = scorer.weighted(scores)
        for name, value in scores.items():
            totals[name] += value
    n = len(samples)
    return LookupFloor(
        score=math.fsum(per_sample.values()) / n,
        fields={name: total / n for name, total in totals.items()},
        per_sample=per_sample,
        answers={s.id: answers[s.id] for s in samples if s.id in answers},
    )


def suite_lookup_floor(
    suite: Suite, dataset: Dataset, samples: Sequence[Sample], scorer: Scorer
) -> LookupFloor | None:
    """The lookup floor of ``samples`` with the suite's own split as the train side; ``None``
    when the split has no train samples (``split.train: 0``)."""
    split = suite.split(dataset)
    keep = set(split.train)
    train = [s for s in dataset.samples if s.id in keep]
    if not train:
        return None
    # A split that could not group by its key (one value for every sample) did not either.
    grouped = suite.spec.split.group_by if not split.notes else None
    nearest = nearest_answers(suite, train, samples, group_by=grouped)
    return lookup_floor(scorer, samples, {sid: found[0] for sid, found in nearest.items() if found})


def lookup_difference(floor: LookupFloor, prompt: Mapping[str, float], *, seed: int = 0) -> Estimate:
    """*prompt - lookup* over the floor's samples (sorted by id), with a 95% paired bootstrap
    interval. ``prompt`` maps sample id → the prompt's score (the mean of its repeats)."""
    ids = sorted(floor.per_sample)
    missing = [sid for sid in ids if sid not in prompt]
    if missing:
        raise ValueError(
            f"no prompt score for {len(missing)} sample(s) of the lookup floor, e.g. {missing[0]!r}"
        )
    return paired_difference([floor.per_sample[sid] for sid in ids], [prompt[sid] for sid in ids], seed=seed)


def beats_lookup(difference: Estimate) -> bool:
    """Whether the prompt beats the lookup: the interval of *prompt - lookup* lies wholly above 0."""
    return difference.n >= 2 and difference.low > 0.0
