"""Evaluating one sample: render the prompt, ask the model, parse the answer, score it.

Pure logic with no pytest in it, shared by the eval items, the Python-route fixtures
and the optimizer.
"""

from __future__ import annotations

import dataclasses
import traceback
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from promptsweep.core.chat import ChatRequest, ChatResult, LLMError, json_schema_response_format
from promptsweep.core.dataset import Dataset, Sample
from promptsweep.core.metrics import MetricRegistry
from promptsweep.core.parsing import ParsedAnswer, parse_answer
from promptsweep.core.redact import redact_text
from promptsweep.core.retrieval import Retrieval, render_messages, retrieval_for
from promptsweep.core.scoring import Scorer
from promptsweep.core.suite import Suite
from promptsweep.core.templates import PromptTemplate

RESULT_SCHEMA_VERSION = 1
ChatFn = Callable[[ChatRequest], ChatResult]


@dataclass
class SampleResult:
    """One line of ``results.jsonl``: everything needed to aggregate, report and resume."""

    suite: str
    sample_id: str
    category: str | None
    template: str
    expected: dict[str, str]
    got: dict[str, str] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)
    score: float = 0.0
    raw: str = ""
    parse_source: str = "none"
    parse_error: str | None = None
    error: str | None = None
    candidate: str | None = None
    latency_s: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    from_cache: bool = False
    finish_reason: str | None = None
    repeat: int = 0
    timings: dict[str, Any] | None = None
    """llama-server's own timings of the call (prompt_n, prompt_ms, predicted_n, predicted_ms, ...)."""
    schema_version: int = RESULT_SCHEMA_VERSION

    @property
    def errored(self) -> bool:
        return self.error is not None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SampleResult:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


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


class Evaluator:
    """Evaluates samples of one suite with one template; built once per run or candidate."""

    def __init__(
        self,
        suite: Suite,
        template: PromptTemplate,
        registry: MetricRegistry,
        *,
        dataset: Dataset | None = None,
        params: Mapping[str, Any] | None = None,
        model: str | None = None,
        candidate: str | None = None,
        retrieval: Retrieval | None = None,
    ) -> None:
        self.suite = suite
        self.template = template
        self.retrieval = retrieval if retrieval is not None else retrieval_for(template)
        self.scorer = Scorer(suite, registry)
        self.candidate = candidate
        self.model = model
        self.params = merge_params(suite.spec.llm, template.spec.model_defaults, params)
        self.response_format = self._response_format(dataset)
        self._aliases = {name: spec.aliases for name, spec in suite.fields.items() if spec.aliases}
        self._synonyms = {name: spec.synonyms for name, spec in suite.fields.items() if spec.synonyms}

    def _response_format(self, dataset: Dataset | None) -> dict[str, Any] | None:
        fmt = self.template.spec.output.format
        if fmt == "json_schema":
            return json_schema_response_format(self.suite.name, self.suite.json_schema(dataset))
        if fmt == "json":
            return {"type": "json_object"}
        return None

    def messages(self, sample: Sample, extra: Mapping[str, Any] | None = None) -> list[dict[str, str]]:
        values = self.suite.template_values(sample)
        if extra:
            values.update(extra)
        return render_messages(self.template, values, retrieval=self.retrieval, sample_id=sample.id)

    def request(self, sample: Sample, extra: Mapping[str, Any] | None = None) -> ChatRequest:
        return ChatRequest(
            messages=tuple(self.messages(sample, extra)),
            params=self.params,
            response_format=self.response_format,
            model=self.model,
        )

    def parse(self, text: str) -> ParsedAnswer:
        return parse_answer(
            text,
            list(self.suite.fields),
            label_fields=self.suite.label_fields,
            synonyms=self._synonyms,
            aliases=self._aliases,
        )

    def score_text(self, sample: Sample, text: str) -> SampleResult:
        """Parse and score an answer; used directly by the Python route."""
        parsed = self.parse(text)
        scores = self.scorer.score(sample.expected, parsed.fields)
        return self._result(
            sample,
            got=dict(parsed.fields),
            scores=scores,
            score=self.scorer.weighted(scores),
            raw=text,
            parse_source=parsed.source,
            parse_error=parsed.error,
        )

    def evaluate(
        self, sample: Sample, chat: ChatFn, extra: Mapping[str, Any] | None = None, *, repeat: int = 0
    ) -> SampleResult:
        """Ask, parse, score. A failed call becomes an errored result, never an exception,
        so one bad sample cannot stop a run; the caller decides how the item reports it.
        ``repeat`` > 0 asks the same request again (its own cache entry), to measure noise."""
        request = dataclasses.replace(self.request(sample, extra), repeat=repeat)
        try:
            answer = chat(request)
        except LLMError as exc:
            return dataclasses.replace(self._errored(sample, str(exc)), repeat=repeat)
        except Exception as exc:  # a bug or a broken transport must not lose the other samples
            failed = self._errored(sample, redact_text("".join(traceback.format_exception_only(exc)).strip()))
            return dataclasses.replace(failed, repeat=repeat)
        result = self.score_text(sample, answer.text)
        result.repeat = repeat
        result.latency_s = answer.latency_s
        result.prompt_tokens = answer.prompt_tokens
        result.completion_tokens = answer.completion_tokens
        result.cached_tokens = answer.cached_tokens
        result.from_cache = answer.from_cache
        result.finish_reason = answer.finish_reason
        result.timings = dict(answer.timings) if answer.timings else None
        return result

    def _errored(self, sample: Sample, message: str) -> SampleResult:
        return self._result(sample, scores={name: 0.0 for name in self.suite.fields}, error=message)

    def _result(self, sample: Sample, **outcome: Any) -> SampleResult:
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
