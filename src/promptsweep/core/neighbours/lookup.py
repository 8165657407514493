"""The lookup floor: what copying the labels of the nearest train sample would score.

A constant answer is a low bar. A much higher one costs no model call either: answer each
sample with every expected value (free text included) of its nearest train sample
(:meth:`~promptsweep.core.neighbours.nearest.Pool.nearest`, the ranking retrieved few-shot, the
gate and neighbour choice use). A prompt that does not beat this lookup adds nothing a table
lookup would not; reports show the two side by side, with the paired difference *prompt -
lookup* over the same samples. With ``k`` > 1 the same assembly is the kNN vote: each field's
most frequent value among the ``k`` nearest (k = 1 is exactly the floor).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from promptsweep.core.data.dataset import Dataset, Sample
from promptsweep.core.data.suite import Suite
from promptsweep.core.measure.scoring import Scorer
from promptsweep.core.measure.stats import Estimate, paired_difference
from promptsweep.core.neighbours.nearest import Pool, compared_inputs, examples_from_samples
from promptsweep.core.neighbours.retrieval import retrieval_for
from promptsweep.core.templates.template import PromptTemplate

__all__ = [
    "LookupAnswer",
    "LookupFloor",
    "beats_lookup",
    "lookup_answers",
    "lookup_difference",
    "lookup_floor",
    "suite_lookup_floor",
    "suite_pool",
    "vote_answer",
]


@dataclass(frozen=True)
class LookupAnswer:
    """The answer a lookup gives one sample: the (voted) labels of its nearest train samples."""

    source_id: str
    """The nearest train sample (the first voter)."""
    answer: Mapping[str, str]
    """Its expected values, every scored field including free text, as the dataset has them."""
    similarity: float
    """How much the two inputs share, in [0, 1] (:func:`~promptsweep.core.neighbours.nearest.similarity`)."""


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
    k: int = 1
    """How many nearest train samples voted (1: the lookup floor; more: a kNN vote)."""

    def scores(self, samples: Sequence[Sample]) -> tuple[float, ...]:
        """Per-sample scores in the order of ``samples``."""
        return tuple(self.per_sample.get(s.id, 0.0) for s in samples)


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


def suite_pool(
    suite: Suite, dataset: Dataset, template: PromptTemplate | None = None, *, by: Sequence[str] | None = None
) -> Pool | None:
    """The pool the lookup floor copies from: the one ``template`` (default: the suite's) retrieves
    its examples from when it has one (a winner's pinned pool: the floor beside a prompt is its own
    neighbours, whatever data it is scored on), else the suite's train split, compared on
    :func:`~promptsweep.core.neighbours.nearest.compared_inputs` unless ``by`` says. ``None`` when
    there is nothing to copy from (``split.train: 0`` and no pool)."""
    template = template if template is not None else suite.load_template()
    if template.spec.examples is not None and not by:
        retrieval = retrieval_for(template)
        if retrieval is not None and set(suite.fields) <= set(retrieval.answer_fields):
            return retrieval.pool
    split = suite.split(dataset)
    keep = set(split.train)
    train = [s for s in dataset.samples if s.id in keep]
    if not train:
        return None
    by = list(by) if by else compared_inputs(template, suite.spec.inputs)
    examples = examples_from_samples(train, suite.spec.inputs, list(suite.fields), group_by=split.grouped_by)
    return Pool(examples, by, group_by=split.grouped_by)


def lookup_answers(
    pool: Pool, suite: Suite, samples: Sequence[Sample], *, k: int = 1
) -> dict[str, LookupAnswer]:
    """Each sample's lookup answer: each field's vote among its ``k`` nearest pool samples
    (:func:`vote_answer`; k = 1 copies the nearest). A sample every pool sample is excluded
    from (its own group) gets none."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    found: dict[str, LookupAnswer] = {}
    for sample in samples:
        nearest = pool.nearest(suite.template_values(sample), k, sample_id=sample.id)
        if nearest:
            voted = vote_answer([n.example.answer for n in nearest])
            found[sample.id] = LookupAnswer(nearest[0].example.id, voted, nearest[0].similarity)
    return found


def lookup_floor(
    scorer: Scorer, suite: Suite, pool: Pool | None, samples: Sequence[Sample], *, k: int = 1
) -> LookupFloor | None:
    """The one assembly of the lookup floor (and, with ``k`` > 1, of the kNN vote): each sample's
    lookup answer scored as if the model had given it; ``None`` without a pool or samples.

    The copied values go through the normalisation a model's answer gets (labels to snake_case
    and synonyms, free text stripped). A sample with no answer scores 0 on every field, so the
    floor is always over the same samples as the run.
    """
    if pool is None or not samples:
        return None
    answers = lookup_answers(pool, suite, samples, k=k)
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
        answers=answers,
        k=k,
    )


def suite_lookup_floor(
    suite: Suite,
    dataset: Dataset,
    samples: Sequence[Sample],
    scorer: Scorer,
    template: PromptTemplate | None = None,
) -> LookupFloor | None:
    """The lookup floor of ``samples`` with the suite's own split as the train side, compared on
    the inputs ``template`` (default: the suite's) compares its neighbours on."""
    return lookup_floor(scorer, suite, suite_pool(suite, dataset, template), samples)


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
