"""TEMPORARY stand-in (the floors branch provides the real one)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from promptsweep.core.dataset import Sample
from promptsweep.core.retrieval import ExamplePool, examples_from_samples
from promptsweep.core.scoring import Scorer
from promptsweep.core.suite import Suite


@dataclass(frozen=True)
class LookupAnswer:
    source_id: str
    answer: Mapping[str, str]
    similarity: float


@dataclass(frozen=True)
class LookupFloor:
    score: float
    fields: Mapping[str, float]
    per_sample: Mapping[str, float]
    answers: Mapping[str, LookupAnswer]


def nearest_answers(
    suite: Suite, train: Sequence[Sample], samples: Sequence[Sample], *, by: Sequence[str] | None = None, k: int = 1
) -> dict[str, list[LookupAnswer]]:
    if not train:
        return {}
    template = suite.load_template()
    by = list(by or [*template.spec.inputs.required, *template.spec.inputs.optional])
    fields = list(suite.fields)
    pool = ExamplePool(examples_from_samples(train, suite.spec.inputs, fields), by)
    out: dict[str, list[LookupAnswer]] = {}
    for s in samples:
        got = pool.retrieve(suite.template_values(s), k, exclude_id=s.id)
        out[s.id] = [LookupAnswer(e.id, dict(e.answer), 0.0) for e in reversed(got)]
    return out


def lookup_floor(scorer: Scorer, samples: Sequence[Sample], answers: Mapping[str, LookupAnswer]) -> LookupFloor | None:
    scored = [s for s in samples if s.id in answers]
    if not scored:
        return None
    per = {s.id: scorer.score(s.expected, answers[s.id].answer) for s in scored}
    fields = {f: sum(p[f] for p in per.values()) / len(per) for f in scorer.weights}
    weighted = {i: scorer.weighted(p) for i, p in per.items()}
    return LookupFloor(sum(weighted.values()) / len(weighted), fields, weighted, {s.id: answers[s.id] for s in scored})
