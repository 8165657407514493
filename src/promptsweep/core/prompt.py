"""A suite's prompt as production code uses it: render a request, parse the answer, score it.

The eval items, the Python-route fixtures and the public API all build their requests here,
so a service that renders with :class:`Prompt` sends exactly the request a run scored:
the messages, the sampling parameters (suite ``llm:`` < template ``model_defaults:`` <
overrides) and, for ``output.format: json_schema``, the ``response_format`` with the schema.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from promptsweep.core.chat import ChatRequest, ChatResult, json_schema_response_format
from promptsweep.core.dataset import Dataset, Sample
from promptsweep.core.metrics import MetricRegistry
from promptsweep.core.parsing import ParsedAnswer, parse_answer
from promptsweep.core.result import SampleResult
from promptsweep.core.retrieval import Retrieval, render_messages, retrieval_for
from promptsweep.core.scoring import Scorer
from promptsweep.core.suite import Suite
from promptsweep.core.templates import MissingInputError, PromptTemplate


def merge_params(*layers: Mapping[str, Any] | None) -> dict[str, Any]:
    """Later layers win: suite llm < template model_defaults < candidate or command line.

    The template wins over the suite because a template (an --optimize winner above all)
    carries the budget it was chosen with, e.g. a larger max_tokens for reasoning.
    """
    merged: dict[str, Any] = {}
    for layer in layers:
        if layer:
            merged.update({k: v for k, v in layer.items() if v is not None})
    return merged


def response_format_for(
    suite: Suite, template: PromptTemplate, dataset: Dataset | None
) -> dict[str, Any] | None:
    """What ``output.format`` asks of the server: a JSON schema of the suite's fields, any JSON
    object, or nothing (free text)."""
    fmt = template.spec.output.format
    if fmt == "json_schema":
        return json_schema_response_format(suite.name, suite.json_schema(dataset))
    if fmt == "json":
        return {"type": "json_object"}
    return None


class Prompt:
    """A suite's template, ready to render requests and to parse and score answers.

    ``dataset`` is needed only for label enums taken from the data (``values: dataset``);
    ``registry`` only for scoring with project metrics. ``render`` takes a sample's inputs
    only: parameters, response format and examples come from the suite and the template.
    """

    def __init__(
        self,
        suite: Suite,
        template: PromptTemplate | None = None,
        *,
        dataset: Dataset | None = None,
        params: Mapping[str, Any] | None = None,
        model: str | None = None,
        registry: MetricRegistry | None = None,
        candidate: str | None = None,
        retrieval: Retrieval | None = None,
    ) -> None:
        self.suite = suite
        self.template = template if template is not None else suite.load_template()
        # Few-shot examples the template retrieves per input (``examples:``), else none.
        self.retrieval = retrieval if retrieval is not None else retrieval_for(self.template)
        self.model = model
        self.candidate = candidate
        self.registry = registry if registry is not None else MetricRegistry()
        self.params = merge_params(suite.spec.llm, self.template.spec.model_defaults, params)
        self.response_format = response_format_for(suite, self.template, dataset)
        self._aliases = {name: spec.aliases for name, spec in suite.fields.items() if spec.aliases}
        self._synonyms = {name: spec.synonyms for name, spec in suite.fields.items() if spec.synonyms}

    @functools.cached_property
    def scorer(self) -> Scorer:
        """Metrics are resolved on first use, so rendering never needs project metrics."""
        return Scorer(self.suite, self.registry)

    def messages(
        self,
        inputs: Sample | Mapping[str, Any],
        *,
        sample_id: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> list[dict[str, str]]:
        """The chat messages for one sample's inputs (a record shaped like the dataset's, or
        the template's variables); ``extra`` variables (e.g. few-shot examples) win."""
        name = sample_id or (inputs.id if isinstance(inputs, Sample) else None)
        values = self.suite.template_values(inputs)
        values.update(extra or {})
        try:
            return render_messages(self.template, values, retrieval=self.retrieval, sample_id=name)
        except MissingInputError as exc:
            if not isinstance(inputs, Sample):
                raise
            # The template knows its variables, the suite knows which data key feeds each.
            raise MissingInputError(
                self.suite.describe_missing_input(exc.variable, inputs), variable=exc.variable
            ) from None

    def check_inputs(self, sample: Sample) -> None:
        """``MissingInputError`` (worded as ``messages`` words it) when a required input has no
        value for ``sample``; renders nothing, so it is cheap for every sample at collection."""
        missing = self.template.missing_inputs(self.suite.template_values(sample))
        if missing:
            raise MissingInputError(
                self.suite.describe_missing_input(missing[0], sample), variable=missing[0]
            )

    def render(
        self,
        inputs: Sample | Mapping[str, Any],
        *,
        sample_id: str | None = None,
        extra: Mapping[str, Any] | None = None,
        repeat: int = 0,
    ) -> ChatRequest:
        """The whole request for one sample's inputs: what an eval run sends, byte for byte.

        ``repeat`` > 0 asks the same question again (its own cache entry). When sampling
        (temperature > 0) with a fixed ``seed``, repeat k sends ``seed + k``: the same seed
        would replay the same draw and the repeat would measure nothing. At temperature 0
        the body is the same for every repeat.
        """
        params = self.params
        if repeat and (params.get("temperature") or 0) > 0 and isinstance(params.get("seed"), int):
            params = {**params, "seed": params["seed"] + repeat}
        return ChatRequest(
            messages=tuple(self.messages(inputs, sample_id=sample_id, extra=extra)),
            params=params,
            response_format=self.response_format,
            model=self.model,
            repeat=repeat,
        )

    def parse(self, text: str) -> ParsedAnswer:
        """The answer's fields (labels normalised), how they were read, and what is missing."""
        return parse_answer(
            text,
            list(self.suite.fields),
            label_fields=self.suite.label_fields,
            synonyms=self._synonyms,
            aliases=self._aliases,
        )

    def result(self, sample: Sample, answer: str | ChatResult) -> SampleResult:
        """Parse and score an answer for a sample; a ``ChatResult`` also brings its tokens,
        latency and whether it came from the cache."""
        text = answer.text if isinstance(answer, ChatResult) else answer
        parsed = self.parse(text)
        scores = self.scorer.score(sample.expected, parsed.fields)
        result = self.outcome(
            sample,
            got=dict(parsed.fields),
            scores=scores,
            score=self.scorer.weighted(scores),
            raw=text,
            parse_source=parsed.source,
            parse_error=parsed.error,
        )
        if isinstance(answer, ChatResult):
            result.latency_s = answer.latency_s
            result.prompt_tokens = answer.prompt_tokens
            result.completion_tokens = answer.completion_tokens
            result.cached_tokens = answer.cached_tokens
            result.from_cache = answer.from_cache
            result.finish_reason = answer.finish_reason
            result.cache_check = answer.cache_check
            result.timings = dict(answer.timings) if answer.timings else None
        return result

    def score(
        self, answer: str | ChatResult, expected: Mapping[str, Any], *, sample_id: str = "-"
    ) -> SampleResult:
        """Score an answer against a record with the expected labels (shaped like the dataset's)."""
        return self.result(self.suite.sample_from(expected, sample_id=sample_id), answer)

    def outcome(self, sample: Sample, **outcome: Any) -> SampleResult:
        """A result carrying this sample's identity and normalised labels, plus ``outcome``."""
        return SampleResult(
            suite=self.suite.name,
            sample_id=sample.id,
            category=sample.category,
            template=self.template.label,
            candidate=self.candidate,
            expected={k: self.scorer.normalise_expected(k, v) for k, v in sample.expected.items()},
            **outcome,
        )
