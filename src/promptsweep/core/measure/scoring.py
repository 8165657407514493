"""Per-sample scoring: each field's metric on expected vs parsed values, and their weighted sum."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from promptsweep.core.answers.metrics import Metric, MetricRegistry
from promptsweep.core.answers.parsing import normalize_label
from promptsweep.core.data.suite import Suite


@dataclass(frozen=True)
class ConstantAnswer:
    """What answering every sample with each field's most frequent expected value would score:
    the floor a model has to beat before its score means anything."""

    score: float
    fields: Mapping[str, float]
    answer: Mapping[str, str]
    per_sample: tuple[float, ...] = ()
    """Each sample's weighted score under the constant answer, in the order they were given."""


class Scorer:
    """Scores parsed answers for one suite. Metrics are resolved once, at construction."""

    def __init__(self, suite: Suite, registry: MetricRegistry) -> None:
        self.weights = suite.weights
        self._label_fields = set(suite.label_fields)
        self._synonyms = {name: spec.synonyms for name, spec in suite.fields.items()}
        # A judged field scores its reference metric here; ``Prompt.result`` puts the judge's
        # score over it, and the constant-answer floor keeps it (a floor must not call a model).
        self._metrics: dict[str, Metric] = {
            name: registry.resolve(spec.scoring_metric, field=name) for name, spec in suite.fields.items()
        }

    def normalise_expected(self, field: str, value: str) -> str:
        """Labels in the dataset go through the same normalisation as the model's answers."""
        if field in self._label_fields:
            return normalize_label(value, self._synonyms.get(field))
        return value.strip()

    def score(self, expected: Mapping[str, str], got: Mapping[str, str]) -> dict[str, float]:
        """Each field's score in [0, 1]; a field the answer lacks scores 0."""
        scores: dict[str, float] = {}
        for field, metric in self._metrics.items():
            if field not in got:
                scores[field] = 0.0
                continue
            value = metric(self.normalise_expected(field, expected[field]), got[field])
            if not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"metric for field {field!r} returned {value!r}, outside [0, 1]")
            scores[field] = float(value)
        return scores

    def weighted(self, scores: Mapping[str, float]) -> float:
        return sum(self.weights[field] * scores.get(field, 0.0) for field in self.weights)

    def constant_values(self, expected: Sequence[Mapping[str, str]]) -> dict[str, str]:
        """Each field's most frequent expected value (ties: the smallest): the constant answer."""
        answer: dict[str, str] = {}
        for field in self._metrics:
            counts = Counter(self.normalise_expected(field, row[field]) for row in expected if field in row)
            if counts:
                answer[field] = min(counts, key=lambda value: (-counts[value], value))
        return answer

    def constant_answer(self, expected: Sequence[Mapping[str, str]]) -> ConstantAnswer | None:
        """The one constant-answer floor: each field's most frequent value among ``expected``
        (ties: the smallest) scored as every sample's answer, with each sample's score."""
        if not expected:
            return None
        answer = self.constant_values(expected)
        scores = [self.score(row, answer) for row in expected]
        fields = {f: sum(s[f] for s in scores) / len(scores) for f in self._metrics}
        per_sample = tuple(self.weighted(s) for s in scores)
        return ConstantAnswer(self.weighted(fields), fields, answer, per_sample)
