"""Evaluating one sample: render the prompt, ask the model, parse the answer, score it.

Pure logic with no pytest in it, shared by the eval items, the Python-route fixtures, the
optimizer and :func:`promptsweep.evaluate`. Rendering (with retrieved examples), parsing and
scoring are the :class:`~promptsweep.core.prompt.Prompt`'s; this adds the call and turns
failures into results.
"""

from __future__ import annotations

import traceback
from collections.abc import Mapping
from typing import Any

from promptsweep.core.answers.chat import ChatFn, ChatRequest, ChatResult, LLMError, answer_without_call
from promptsweep.core.answers.judge import JudgeRoute, own_server_route
from promptsweep.core.answers.metrics import MetricRegistry
from promptsweep.core.answers.parsing import ParsedAnswer
from promptsweep.core.answers.result import RESULT_SCHEMA_VERSION, SampleResult, repeat_suffix
from promptsweep.core.data.dataset import Dataset, Sample
from promptsweep.core.data.suite import Suite
from promptsweep.core.io.redact import redact_text
from promptsweep.core.neighbours.retrieval import Retrieval
from promptsweep.core.prompt import Prompt, merge_params
from promptsweep.core.templates.template import PromptTemplate

__all__ = [
    "RESULT_SCHEMA_VERSION",
    "ChatFn",
    "Evaluator",
    "SampleResult",
    "error_text",
    "merge_params",
    "repeat_suffix",
]


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
        self.candidate = candidate
        self.model = model
        self.prompt = Prompt(
            suite,
            template,
            dataset=dataset,
            params=params,
            model=model,
            registry=registry,
            candidate=candidate,
            retrieval=retrieval,
        )
        self.retrieval = self.prompt.retrieval
        self.scorer = self.prompt.scorer
        self.params = self.prompt.params
        self.response_format = self.prompt.response_format

    def messages(self, sample: Sample, extra: Mapping[str, Any] | None = None) -> list[dict[str, str]]:
        return self.prompt.messages(sample, extra=extra)

    def request(
        self, sample: Sample, extra: Mapping[str, Any] | None = None, *, repeat: int = 0
    ) -> ChatRequest:
        return self.prompt.render(sample, extra=extra, repeat=repeat)

    def parse(self, text: str) -> ParsedAnswer:
        return self.prompt.parse(text)

    def score_text(
        self, sample: Sample, text: str | ChatResult, *, judge: JudgeRoute | None = None, repeat: int = 0
    ) -> SampleResult:
        """Parse and score an answer; used directly by the Python route."""
        return self.prompt.result(sample, text, judge=judge, repeat=repeat)

    def evaluate(
        self,
        sample: Sample,
        chat: ChatFn,
        extra: Mapping[str, Any] | None = None,
        *,
        repeat: int = 0,
        judge: JudgeRoute | None = None,
    ) -> SampleResult:
        """Ask, parse, score. A failed call becomes an errored result, never an exception,
        so one bad sample cannot stop a run; the caller decides how the item reports it.

        Judged fields (``metric: judge``) ask their judge through ``judge``; by default the
        same ``chat`` as the answer (a judge with its own ``url`` needs a route)."""
        request = self.request(sample, extra, repeat=repeat)
        # A gated lookup's answer never reaches ``chat``, whatever send function it is.
        copied = answer_without_call(request)
        try:
            answer = copied if copied is not None else chat(request)
        except Exception as exc:  # a bug or a broken transport must not lose the other samples
            return self.errored(sample, error_text(exc), repeat=repeat)
        return self.prompt.result(
            sample, answer, judge=judge if judge is not None else own_server_route(chat), repeat=repeat
        )

    def errored(self, sample: Sample, message: str, *, repeat: int = 0) -> SampleResult:
        """The result of a sample whose call (or item) failed: every field scores 0."""
        return self.prompt.outcome(
            sample, scores={name: 0.0 for name in self.suite.fields}, error=message, repeat=repeat
        )


def error_text(exc: BaseException) -> str:
    """What an errored result says: the transport's own message (it names the endpoint and is
    scrubbed already), or the exception's first line, scrubbed of credentials."""
    if isinstance(exc, LLMError):
        return str(exc)
    return redact_text("".join(traceback.format_exception_only(exc)).strip())
