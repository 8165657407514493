"""A judge metric: a model grades a free-text field against a rubric, on a fixed integer scale.

Metrics are pure functions of ``(expected, got)``; a judge needs a model, so it runs as its own
step after the answer is parsed and before the weighted score is taken (``Prompt.result``).
The request it sends is an ordinary :class:`~promptsweep.core.answers.chat.ChatRequest` with the score
constrained by a JSON schema, sent through whatever ``ChatFn`` the caller routes it to (the
run's endpoint by default), so the response cache, retries and spans treat it like any call.

Alongside the judge's score, every judged field keeps the score of a reference metric
(``rouge_l`` by default) against the labelled value: ``promptsweep judge-agreement`` ranks the
two against each other to tell whether the judge can be trusted.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from promptsweep.core.answers.chat import ChatFn, ChatRequest, LLMError, json_schema_response_format
from promptsweep.core.io.errors import PromptsweepError

JUDGE_METRIC = "judge"
"""The metric name that makes a field judged: ``fields.summary: {metric: judge, judge: {...}}``."""

DEFAULT_JUDGE_PARAMS: dict[str, Any] = {"temperature": 0.0, "max_tokens": 16}


class JudgeSpec(BaseModel):
    """``fields.<name>.judge``: how a model grades the field."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    rubric: str = Field(min_length=1)
    """What a good answer does, in plain words; the judge scores against it."""
    scale: tuple[int, int] = (1, 5)
    """Lowest and highest score the judge may give (`1-5` or `[1, 5]`); normalised to 0..1."""
    url: str | None = None
    """Any OpenAI-compatible server to ask (default: the run's own server)."""
    model: str | None = None
    """Model name sent in judge requests (servers hosting several models need it)."""
    api_key_env: str | None = None
    """Environment variable holding the bearer token for `url` (never written down)."""
    repeats: int = Field(default=1, ge=1, le=20)
    """Judge each answer this many times (its own request and cache entry each); the mean counts."""
    reference: bool = True
    """Show the judge the labelled value as a reference answer."""
    reference_metric: str = "rouge_l"
    """Scored beside the judge (and by `promptsweep judge-agreement`); also the constant-answer floor."""
    llm: dict[str, Any] = Field(default_factory=lambda: dict(DEFAULT_JUDGE_PARAMS))
    """Request parameters of judge calls (temperature, max_tokens, seed, …)."""
    max_input_chars: int = Field(default=2000, gt=0)
    """The question shown to the judge (the sample's last user message) is cut to this length."""

    @field_validator("scale", mode="before")
    @classmethod
    def _scale_text(cls, value: Any) -> Any:
        if isinstance(value, str):
            match = re.fullmatch(r"\s*(-?\d+)\s*(?:-|\.\.|to)\s*(-?\d+)\s*", value)
            if not match:
                raise ValueError(f"scale must look like 1-5 or [1, 5], got {value!r}")
            return (int(match.group(1)), int(match.group(2)))
        return value

    @field_validator("scale")
    @classmethod
    def _scale_order(cls, value: tuple[int, int]) -> tuple[int, int]:
        low, high = value
        if not low < high or high - low > 100:
            raise ValueError(f"scale needs low < high and at most 101 steps, got {low}-{high}")
        return value

    @field_validator("url")
    @classmethod
    def _http(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {value!r}")
        return value.rstrip("/") if value else value

    @model_validator(mode="after")
    def _params(self) -> JudgeSpec:
        if "response_format" in self.llm:
            raise ValueError("llm.response_format: the judge's answer format is fixed (a score schema)")
        return self


class JudgeError(PromptsweepError):
    """The judge could not give a score (its call failed, or its answer holds no score)."""


JudgeRoute = Callable[[JudgeSpec], ChatFn]
"""Given a field's judge, the send function to ask it with (the run's endpoint when ``url`` is None)."""


def own_server_route(chat: ChatFn) -> JudgeRoute:
    """Judges without ``url`` ask the same server the answer came from; one with a ``url`` needs a
    route from the transport (the pytest plugin and ``promptsweep.evaluate`` give one)."""

    def route(spec: JudgeSpec) -> ChatFn:
        if spec.url is not None:
            raise JudgeError(
                f"judge.url {spec.url} needs an endpoint this caller does not have; "
                "run it under pytest or promptsweep.evaluate, or leave judge.url out"
            )
        return chat

    return route


@dataclass(frozen=True)
class Verdict:
    """A judged field: the normalised mean score, each raw score, and what the calls cost."""

    score: float
    raw: tuple[int, ...]
    prompt_tokens: int = 0
    completion_tokens: int = 0
    from_cache: int = 0


@dataclass(frozen=True)
class Judge:
    """One field's judge: builds its requests, reads its answers, normalises its scores."""

    field: str
    spec: JudgeSpec
    description: str | None = None
    schema_name: str = "judge_score"

    @property
    def low(self) -> int:
        return self.spec.scale[0]

    @property
    def high(self) -> int:
        return self.spec.scale[1]

    def response_format(self) -> dict[str, Any]:
        """Constrained decoding: an object with one integer ``score`` within the scale."""
        schema = {
            "type": "object",
            "properties": {"score": {"type": "integer", "enum": list(range(self.low, self.high + 1))}},
            "required": ["score"],
            "additionalProperties": False,
        }
        return json_schema_response_format(self.schema_name, schema)

    def messages(self, *, question: str, reference: str, answer: str) -> list[dict[str, str]]:
        what = f" ({self.description})" if self.description else ""
        system = (
            f"You are a strict grader. You grade the field {self.field!r}{what} of an answer against a rubric. "
            f'Reply with JSON only: {{"score": N}}, N an integer from {self.low} (fails the rubric) '
            f"to {self.high} (fully meets it)."
        )
        parts = [f"Rubric: {self.spec.rubric.strip()}"]
        if question.strip():
            parts.append(f"Question:\n{_cut(question, self.spec.max_input_chars)}")
        if self.spec.reference:
            parts.append(f"Reference answer:\n{reference.strip()}")
        parts.append(f"Answer to grade:\n{answer.strip()}")
        parts.append(f"Score from {self.low} to {self.high}:")
        return [{"role": "system", "content": system}, {"role": "user", "content": "\n\n".join(parts)}]

    def request(self, *, question: str, reference: str, answer: str, repeat: int = 0) -> ChatRequest:
        params = {**DEFAULT_JUDGE_PARAMS, **self.spec.llm}
        if repeat and (params.get("temperature") or 0) > 0 and isinstance(params.get("seed"), int):
            params["seed"] += repeat  # as Prompt.render: the same seed would replay the same draw
        return ChatRequest(
            messages=tuple(self.messages(question=question, reference=reference, answer=answer)),
            params=params,
            response_format=self.response_format(),
            model=self.spec.model,
            repeat=repeat,
        )

    def parse(self, text: str) -> int:
        """The score in a judge's answer: ``{"score": N}`` (also in a code fence), else the first
        integer within the scale; ``JudgeError`` when there is none."""
        stripped = re.sub(r"^```(?:json)?\s*|\s*```$", "", text.strip())
        value: Any = None
        try:
            data = json.loads(stripped)
        except ValueError:
            data = None
        if isinstance(data, Mapping):
            value = data.get("score")
        elif isinstance(data, (int, float)) and not isinstance(data, bool):
            value = data
        if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
            value = int(value)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool) and self.low <= value <= self.high:
            return value
        for match in re.finditer(r"-?\d+", text):
            number = int(match.group())
            if self.low <= number <= self.high:
                return number
        raise JudgeError(
            f"the judge of field {self.field!r} gave no score in {self.low}-{self.high}: {text[:120]!r}"
        )

    def normalise(self, raw: int) -> float:
        return (raw - self.low) / (self.high - self.low)

    def ask(self, send: ChatFn, *, question: str, reference: str, answer: str, repeat: int = 0) -> Verdict:
        """Ask ``repeats`` times; the sample's own repeat ``r`` uses judge repeats
        ``r*repeats .. r*repeats+repeats-1``, so every judgement is its own cache entry."""
        raw: list[int] = []
        prompt_tokens = completion_tokens = cached = 0
        for k in range(self.spec.repeats):
            request = self.request(
                question=question, reference=reference, answer=answer, repeat=repeat * self.spec.repeats + k
            )
            try:
                result = send(request)
            except LLMError as exc:
                raise JudgeError(f"the judge of field {self.field!r} failed: {exc}") from exc
            raw.append(self.parse(result.text))
            prompt_tokens += result.prompt_tokens or 0
            completion_tokens += result.completion_tokens or 0
            cached += int(result.from_cache)
        score = sum(self.normalise(r) for r in raw) / len(raw)
        return Verdict(score, tuple(raw), prompt_tokens, completion_tokens, cached)


def _cut(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ------------------------------------------------------------------------------ agreement


def ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ties sharing their mean rank (what Spearman's rho needs)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    result = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        mean_rank = (i + j) / 2 + 1
        for k in range(i, j + 1):
            result[order[k]] = mean_rank
        i = j + 1
    return result


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rank correlation (Pearson's r of the ranks, so ties are handled); None when
    fewer than 3 pairs or either side is constant (no ranking to agree with)."""
    if len(x) != len(y):
        raise ValueError("spearman needs pairs")
    if len(x) < 3:
        return None
    rx, ry = ranks(x), ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    sxx = sum((a - mx) ** 2 for a in rx)
    syy = sum((b - my) ** 2 for b in ry)
    if sxx == 0 or syy == 0:
        return None
    return sxy / math.sqrt(sxx * syy)


def spearman_interval(rho: float, n: int) -> tuple[float, float] | None:
    """An approximate 95% interval via Fisher's z with the Fieller et al. standard error
    ``sqrt(1.06 / (n - 3))``; None below 4 pairs."""
    if n < 4:
        return None
    clipped = max(-0.999999, min(0.999999, rho))
    z = math.atanh(clipped)
    half = 1.96 * math.sqrt(1.06 / (n - 3))
    return math.tanh(z - half), math.tanh(z + half)
