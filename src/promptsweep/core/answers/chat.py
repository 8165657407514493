"""What the eval core sends to a model and gets back: one request type, one result type.

The transport (``promptsweep.llm``) implements sending them; the core only needs a
``ChatFn`` to call, so scoring, the optimizer and tests can run without any HTTP client.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from promptsweep.core.io.errors import EndpointError

# Sampling parameters we forward; anything else in model_defaults is ignored, so a
# template written for another tool cannot send fields llama-server rejects.
FORWARDED_PARAMS = (
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "max_tokens",
    "seed",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "repeat_penalty",
    # llama-server only: false makes it evaluate the whole prompt on every request instead
    # of reusing a cached prefix, one of the two switches of the deterministic mode.
    "cache_prompt",
)


MAX_TOKEN_COUNT = 100_000_000
"""The largest token count a server may report for one request; no context comes near it, and a
larger (or negative, or fractional) count is a broken or hostile server, not a measurement."""

TOKEN_COUNT_KEYS = ("prompt_tokens", "completion_tokens", "cached_tokens")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "..."


def token_count(value: Any, name: str) -> int | None:
    """A reported token count checked: None, or a whole number in [0, ``MAX_TOKEN_COUNT``].

    Raises ``ValueError`` naming ``name`` and the value otherwise: a count of ``-2e12`` or
    ``1e308`` would otherwise reach the totals (and ``int(inf)`` ends a run in a traceback)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TOKEN_COUNT:
        raise ValueError(
            f"{name} is {_shown(value)}; a token count must be a whole number from 0 to {MAX_TOKEN_COUNT}"
        )
    return value


def token_count_or_none(value: Any) -> int | None:
    """``token_count`` for files read back (cache, results.jsonl): a bad count is dropped, so
    one damaged line cannot stop a report."""
    try:
        return token_count(value, "count")
    except ValueError:
        return None


# llama-server's ``timings`` per key suffix: counts are token counts; the rest are durations or
# rates, bounded so that no estimate built on them can run to 300 digits (a token that takes
# 100 s, a call of a day, ten million tokens a second: past those a server is not measuring).
_TIMING_BOUNDS = (("_per_token_ms", 1e5), ("_per_second", 1e7), ("_ms", 1e8))
_TIMING_OTHER_BOUND = 1e12
_MAX_TIMING_KEYS = 64


def clean_timings(value: Any) -> tuple[dict[str, int | float] | None, list[str]]:
    """llama-server's ``timings`` checked like token counts: ``*_n`` are token counts,
    ``*_ms``, ``*_per_token_ms`` and ``*_per_second`` finite numbers from 0 to a bound; anything
    else (``"abc"``, ``[1]``, ``1e308``, a negative) is dropped. Returns the timings kept (None
    when nothing is left) and one note per value dropped, so a bad value costs its number and
    a line, never the answer or a run that estimates from it (``--optimize``)."""
    if value is None:
        return None, []
    if not isinstance(value, Mapping):
        return None, [f"timings is {_shown(value)}, not an object; dropped"]
    kept: dict[str, int | float] = {}
    notes: list[str] = []
    for name, raw in list(value.items())[:_MAX_TIMING_KEYS]:
        key = str(name)[:64]
        if key.endswith("_n"):
            try:
                count = token_count(raw, f"timings.{key}")
            except ValueError as exc:
                notes.append(f"{exc}; dropped")
                continue
            if count is not None:
                kept[key] = count
            continue
        bound = next((b for suffix, b in _TIMING_BOUNDS if key.endswith(suffix)), _TIMING_OTHER_BOUND)
        number = raw if isinstance(raw, (int, float)) and not isinstance(raw, bool) else None
        if number is None or not math.isfinite(number) or not 0 <= number <= bound:
            notes.append(
                f"timings.{key} is {_shown(raw)}; dropped (a number from 0 to {bound:g} was expected)"
            )
            continue
        kept[key] = number
    if len(value) > _MAX_TIMING_KEYS:
        notes.append(f"timings has {len(value)} keys; only the first {_MAX_TIMING_KEYS} were read")
    return (kept or None), notes


class LLMError(EndpointError):
    """A chat request failed; the message names the endpoint and what came back."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
        timed_out: bool = False,
    ):
        super().__init__(message)
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after  # seconds from the server's Retry-After header, if any
        self.timed_out = timed_out
        """The request ran out of time (silent past ``--llm-timeout``, or past its total cap):
        not retried at once, but asked again at the end of a run (``plugin.retry``)."""


@dataclass(frozen=True)
class CopiedAnswer:
    """An answer taken from the example pool instead of the model (a gated lookup)."""

    text: str
    """The answer written as the model is asked to write one, so it is parsed like a model's."""
    source_ids: tuple[str, ...]
    """The pool samples it comes from, most similar first (one unless ``vote`` > 1)."""
    similarity: float
    """Token overlap of the input with its nearest pool sample, in [0, 1]."""


@dataclass(frozen=True)
class ChatRequest:
    """What is sent: messages, sampling parameters and an optional ``response_format``.

    ``repeat`` is which answer to the same request this is (0 = the first). It is not
    sent; it only keeps each repeat its own cache entry, so asking again really asks.
    """

    messages: tuple[Mapping[str, str], ...]
    params: Mapping[str, Any] = field(default_factory=dict)
    response_format: Mapping[str, Any] | None = None
    model: str | None = None
    repeat: int = 0
    """Which repetition of the same request this is (not sent): each has its own cache entry."""
    copied: CopiedAnswer | None = None
    """Set by a gated lookup (``examples.copy_if_similar``): the answer of a near-duplicate pool
    sample. Not sent; :func:`answer_without_call` returns it and no server is asked."""
    slot: int | None = None
    """Which of the server's slots should answer (affinity: a worker that asks about one sample
    again and again keeps that sample's prompt in its slot's cache). Sent as llama-server's
    ``id_slot`` only to llama-server; never part of the answer's identity (its cache key)."""

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"messages": [dict(m) for m in self.messages]}
        if self.model:
            body["model"] = self.model
        for name in FORWARDED_PARAMS:
            if name in self.params and self.params[name] is not None:
                body[name] = self.params[name]
        if self.response_format is not None:
            body["response_format"] = dict(self.response_format)
        return body

    def with_params(self, **params: Any) -> ChatRequest:
        """The same request with some parameters replaced; ``response_format=`` replaces that."""
        if not params:
            return self
        response_format = params.pop("response_format", self.response_format)
        return replace(self, params={**self.params, **params}, response_format=response_format)

    def cache_key(self, model_identity: str, repetition: int | None = None) -> str:
        """sha256 of the model identity, the canonical body and the repetition.

        The repetition (``repeat`` unless given) is in the key whenever it is above 0, and
        at 0 only when sampling (temperature > 0): keys of repeat 0 are the keys caches
        were written with before repeats existed, so old caches stay valid.
        """
        repetition = self.repeat if repetition is None else repetition
        payload: dict[str, Any] = {"model": model_identity, "body": self.body()}
        if repetition > 0 or (self.params.get("temperature") or 0) > 0:
            payload["repetition"] = repetition
        canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class ChatResult:
    """What came back, with the token counts and timings the reports need."""

    text: str
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    latency_s: float = 0.0
    model: str | None = None
    timings: Mapping[str, Any] | None = None
    from_cache: bool = False
    cache_check: str | None = None
    """Set by ``--llm-cache check``: ``same`` or ``different`` from the stored answer, or
    ``missing`` when none was stored."""
    answered_by: str = "model"
    """``model``, or ``lookup`` for a copied answer that cost no call (0 tokens, 0 latency)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "finish_reason": self.finish_reason,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cached_tokens": self.cached_tokens,
            "latency_s": self.latency_s,
            "model": self.model,
            "timings": dict(self.timings) if self.timings else None,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, from_cache: bool = False) -> ChatResult:
        return cls(
            text=str(data.get("text", "")),
            finish_reason=data.get("finish_reason") if isinstance(data.get("finish_reason"), str) else None,
            prompt_tokens=token_count_or_none(data.get("prompt_tokens")),
            completion_tokens=token_count_or_none(data.get("completion_tokens")),
            cached_tokens=token_count_or_none(data.get("cached_tokens")),
            latency_s=_latency(data.get("latency_s")),
            model=data.get("model") if isinstance(data.get("model"), str) else None,
            timings=clean_timings(data.get("timings"))[0],
            from_cache=from_cache,
        )


def _latency(value: Any) -> float:
    """A stored latency read back: a finite number of seconds, else 0 (a damaged or forged
    cache entry must not stop the run that reads it)."""
    if (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    ):
        return float(value)
    return 0.0


def answer_without_call(request: ChatRequest) -> ChatResult | None:
    """The result of a request a gated lookup already answered, else ``None`` (ask the model).

    Every send path checks this first (``Endpoint.send``, ``Evaluator.evaluate``), so a copied
    answer costs no call, no cache entry and no tokens wherever the prompt runs.
    """
    if request.copied is None:
        return None
    return ChatResult(
        text=request.copied.text,
        finish_reason="lookup",
        prompt_tokens=0,
        completion_tokens=0,
        cached_tokens=0,
        latency_s=0.0,
        answered_by="lookup",
    )


def json_schema_response_format(name: str, schema: Mapping[str, Any]) -> dict[str, Any]:
    """llama-server's constrained decoding.

    The long form with ``json_schema.schema`` is the one this llama-server build
    enforces; the short ``{"type": "json_schema", "schema": ...}`` was ignored.
    """
    return {"type": "json_schema", "json_schema": {"name": name, "strict": True, "schema": dict(schema)}}


def messages_tuple(messages: Sequence[Mapping[str, str]]) -> tuple[Mapping[str, str], ...]:
    return tuple(dict(m) for m in messages)


ChatFn = Callable[[ChatRequest], ChatResult]
"""Sends one request and returns its result; raises ``LLMError`` on failure."""
