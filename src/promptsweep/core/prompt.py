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

from promptsweep.core.answers.chat import ChatRequest, ChatResult, CopiedAnswer, json_schema_response_format
from promptsweep.core.answers.judge import Judge, JudgeError, JudgeRoute
from promptsweep.core.answers.metrics import MetricRegistry
from promptsweep.core.answers.parsing import ParsedAnswer, parse_answer
from promptsweep.core.answers.result import SampleResult
from promptsweep.core.data.dataset import Dataset, Sample
from promptsweep.core.data.suite import Suite
from promptsweep.core.io.errors import EndpointError
from promptsweep.core.measure.scoring import Scorer
from promptsweep.core.neighbours.lookup import vote_answer
from promptsweep.core.neighbours.nearest import Neighbour
from promptsweep.core.neighbours.retrieval import Retrieval, example_turns, format_answer, retrieval_for
from promptsweep.core.templates.template import MissingInputError, PromptTemplate


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
        return json_schema_response_format(
            suite.name, suite.json_schema(dataset, template.spec.output.values)
        )
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
        self.dataset = dataset
        self.response_format = response_format_for(suite, self.template, dataset)
        self._aliases = {name: spec.aliases for name, spec in suite.fields.items() if spec.aliases}
        self._synonyms = {name: spec.synonyms for name, spec in suite.fields.items() if spec.synonyms}

    @functools.cached_property
    def scorer(self) -> Scorer:
        """Metrics are resolved on first use, so rendering never needs project metrics."""
        return Scorer(self.suite, self.registry)

    def _values(self, inputs: Sample | Mapping[str, Any], extra: Mapping[str, Any] | None) -> dict[str, Any]:
        values = self.suite.template_values(inputs)
        values.update(extra or {})
        return values

    def _nearest(self, values: Mapping[str, Any], sample_id: str | None) -> list[Neighbour]:
        """The input's nearest pool samples, most similar first: ranked once per request, read by
        the examples shown, the gate and the choices (each takes its first ones)."""
        return self.retrieval.neighbours(values, sample_id=sample_id) if self.retrieval is not None else []

    def messages(
        self,
        inputs: Sample | Mapping[str, Any],
        *,
        sample_id: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> list[dict[str, str]]:
        """The chat messages for one sample's inputs (a record shaped like the dataset's, or
        the template's variables); ``extra`` variables (e.g. few-shot examples) win."""
        name = _sample_id(inputs, sample_id)
        values = self._values(inputs, extra)
        return self._messages(inputs, values, name, self._nearest(values, name))

    def _messages(
        self,
        inputs: Sample | Mapping[str, Any],
        values: Mapping[str, Any],
        name: str | None,
        nearest: list[Neighbour],
    ) -> list[dict[str, str]]:
        turns = example_turns(self.retrieval, nearest) if self.retrieval is not None else []
        try:
            return self.template.render(values, sample_id=name or "?", examples=turns)
        except MissingInputError as exc:
            if not isinstance(inputs, Sample):
                raise
            # The template knows its variables, the suite knows which data key feeds each.
            raise MissingInputError(
                self.suite.describe_missing_input(exc.variable, inputs), variable=exc.variable
            ) from None

    def lookup(
        self,
        inputs: Sample | Mapping[str, Any],
        *,
        sample_id: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> CopiedAnswer | None:
        """The gated lookup's answer for these inputs (``examples.copy_if_similar``), or ``None``
        when the model must be asked: no gate, no pool sample, or the nearest one less similar
        than the threshold. Similarity is the lookup floor's word overlap, so a threshold means
        the same on every dataset."""
        name = _sample_id(inputs, sample_id)
        values = self._values(inputs, extra)
        return self._copied(self._nearest(values, name))

    def _copied(self, nearest: list[Neighbour]) -> CopiedAnswer | None:
        retrieval = self.retrieval
        if retrieval is None or retrieval.copy_if_similar is None or not nearest:
            return None
        if nearest[0].similarity < retrieval.copy_if_similar:
            return None
        voters = nearest[: retrieval.vote]
        answer = vote_answer([n.example.answer for n in voters])
        return CopiedAnswer(
            text=format_answer(answer, retrieval.answer_fields, retrieval.answer_format),
            source_ids=tuple(n.example.id for n in voters),
            similarity=nearest[0].similarity,
        )

    def response_format_of(
        self,
        inputs: Sample | Mapping[str, Any],
        *,
        sample_id: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Mapping[str, Any] | None:
        """The ``response_format`` for these inputs: the template's, or under ``output.choices``
        a schema whose label enums are the labels of the input's nearest pool samples (plus
        every other label with ``plus_all``), nearest first."""
        name = _sample_id(inputs, sample_id)
        values = self._values(inputs, extra)
        return self._response_format(self._nearest(values, name))

    def _response_format(self, nearest: list[Neighbour]) -> Mapping[str, Any] | None:
        retrieval = self.retrieval
        choices = retrieval.choices if retrieval is not None else None
        if choices is None or self.template.spec.output.format != "json_schema":
            return self.response_format
        voters = nearest[: choices.neighbours]
        frozen = {k: list(v) for k, v in (self.template.spec.output.values or {}).items()}
        allowed = {**self.suite.allowed_values(self.dataset), **frozen}
        for field in self.suite.label_fields:
            labels = list(dict.fromkeys(n.example.answer[field] for n in voters if field in n.example.answer))
            if choices.plus_all or not labels:
                labels += [v for v in allowed.get(field, []) if v not in labels]
            if labels:
                frozen[field] = labels
        return json_schema_response_format(self.suite.name, self.suite.json_schema(self.dataset, frozen))

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

        Under a gated lookup (``examples.copy_if_similar``) a near-duplicate's answer rides along
        as ``request.copied``: ``Endpoint.send`` returns it without asking the server.
        """
        params = self.params
        if repeat and (params.get("temperature") or 0) > 0 and isinstance(params.get("seed"), int):
            params = {**params, "seed": params["seed"] + repeat}
        name = _sample_id(inputs, sample_id)
        values = self._values(inputs, extra)
        nearest = self._nearest(values, name)
        return ChatRequest(
            messages=tuple(self._messages(inputs, values, name, nearest)),
            params=params,
            response_format=self._response_format(nearest),
            model=self.model,
            repeat=repeat,
            copied=self._copied(nearest),
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

    @functools.cached_property
    def judges(self) -> dict[str, Judge]:
        """One judge per ``metric: judge`` field."""
        return {
            name: Judge(name, spec, description=self.suite.fields[name].description)
            for name, spec in self.suite.judged_fields.items()
        }

    def result(
        self,
        sample: Sample,
        answer: str | ChatResult,
        *,
        judge: JudgeRoute | None = None,
        repeat: int = 0,
    ) -> SampleResult:
        """Parse and score an answer for a sample; a ``ChatResult`` also brings its tokens,
        latency and whether it came from the cache.

        Judged fields (``metric: judge``) are asked through ``judge`` (which send function each
        judge uses) after parsing; their score replaces the reference metric's. A judge that
        fails makes the result errored, with the answer kept."""
        text = answer.text if isinstance(answer, ChatResult) else answer
        parsed = self.parse(text)
        unlisted = self.unlisted(sample, parsed.fields)
        # An answer outside its field's values is no label at all: scored as if missing (0).
        scores = self.scorer.score(
            sample.expected, {k: v for k, v in parsed.fields.items() if k not in unlisted}
        )
        judged: dict[str, dict[str, Any]] | None = None
        error: str | None = None
        if self.judges:
            if judge is None:
                raise JudgeError(
                    f"{self.suite.path}: fields {', '.join(self.judges)} are scored by a judge model: "
                    "pass judge= (a route to an endpoint) to score them"
                )
            try:
                judged = self._judge(sample, parsed.fields, scores, judge, repeat)
            except JudgeError as exc:
                error = str(exc)
        result = self.outcome(
            sample,
            got=dict(parsed.fields),
            scores=scores if error is None else {name: 0.0 for name in scores},
            score=self.scorer.weighted(scores) if error is None else 0.0,
            raw=text,
            parse_source=parsed.source,
            parse_error=parsed.error,
            error=error,
            judge=judged,
            unlisted=unlisted,
            repeat=repeat,
        )
        if isinstance(answer, ChatResult):
            result.latency_s = answer.latency_s
            result.prompt_tokens = answer.prompt_tokens
            result.completion_tokens = answer.completion_tokens
            result.cached_tokens = answer.cached_tokens
            result.from_cache = answer.from_cache
            result.finish_reason = answer.finish_reason
            result.truncated = answer.finish_reason == "length"
            result.cache_check = answer.cache_check
            result.timings = dict(answer.timings) if answer.timings else None
            result.answered_by = answer.answered_by
        return result

    @functools.cached_property
    def allowed_answers(self) -> dict[str, frozenset[str]]:
        """Per field with ``values:`` (or ``values: dataset``, or the template's ``output.values``),
        the answers it accepts, normalised as answers are."""
        frozen = {k: list(v) for k, v in (self.template.spec.output.values or {}).items()}
        allowed = self.suite.allowed_values(self.dataset)
        for name, values in frozen.items():
            allowed[name] = [*allowed.get(name, []), *values]
        return {
            name: frozenset(self.scorer.normalise_expected(name, v) for v in values)
            for name, values in allowed.items()
            if name in self.suite.fields
        }

    def unlisted(self, sample: Sample, got: Mapping[str, str]) -> list[str]:
        """Fields whose answer is none of their allowed values, e.g. a label read from an answer
        cut at max_tokens. The sample's own expected value is never unlisted (a label outside
        ``values:`` scored anyway under ``unlisted_values: warn``)."""
        outside = []
        for name, accepted in self.allowed_answers.items():
            value = got.get(name)
            if value is None or value in accepted:
                continue
            if value != self.scorer.normalise_expected(name, str(sample.expected.get(name, ""))):
                outside.append(name)
        return outside

    def _judge(
        self,
        sample: Sample,
        got: Mapping[str, str],
        scores: dict[str, float],
        route: JudgeRoute,
        repeat: int,
    ) -> dict[str, dict[str, Any]]:
        """Ask each field's judge; ``scores`` gets the judge's score over the reference metric's."""
        judged: dict[str, dict[str, Any]] = {}
        question = ""
        for name, field_judge in self.judges.items():
            reference_score = scores[name]
            value = got.get(name, "")
            if not value.strip():
                # Nothing to grade: no call, the field scores 0 like any missing field.
                scores[name] = 0.0
                judged[name] = {
                    "score": 0.0,
                    "raw": [],
                    "reference_metric": field_judge.spec.reference_metric,
                    "reference_score": reference_score,
                }
                continue
            if not question:
                messages = self.messages(sample)
                question = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
            try:
                send = route(field_judge.spec)
            except EndpointError as exc:  # e.g. judge.url unreachable: this sample errors, the run goes on
                raise JudgeError(f"the judge of field {name!r}: {exc}") from exc
            verdict = field_judge.ask(
                send,
                question=question,
                reference=self.scorer.normalise_expected(name, sample.expected.get(name, "")),
                answer=value,
                repeat=repeat,
            )
            scores[name] = verdict.score
            judged[name] = {
                "score": verdict.score,
                "raw": list(verdict.raw),
                "reference_metric": field_judge.spec.reference_metric,
                "reference_score": reference_score,
                "prompt_tokens": verdict.prompt_tokens,
                "completion_tokens": verdict.completion_tokens,
                "from_cache": verdict.from_cache,
            }
        return judged

    def score(
        self,
        answer: str | ChatResult,
        expected: Mapping[str, Any],
        *,
        sample_id: str = "-",
        judge: JudgeRoute | None = None,
    ) -> SampleResult:
        """Score an answer against a record with the expected labels (shaped like the dataset's);
        judged fields need ``judge`` (e.g. ``promptsweep.core.answers.judge.own_server_route(endpoint.send)``)."""
        return self.result(self.suite.sample_from(expected, sample_id=sample_id), answer, judge=judge)

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


def _sample_id(inputs: Sample | Mapping[str, Any], sample_id: str | None) -> str | None:
    """The id of the sample being scored, if any: its own neighbours are never its examples."""
    return sample_id or (inputs.id if isinstance(inputs, Sample) else None)
