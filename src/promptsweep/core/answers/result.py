"""The result of one sample: what ``results.jsonl`` holds a line of, and what reports read back."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from promptsweep.core.answers.chat import TOKEN_COUNT_KEYS, token_count_or_none

RESULT_SCHEMA_VERSION = 1


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
    truncated: bool = False
    """The answer was cut at ``max_tokens`` (``finish_reason: length``): what was read before the
    cut is scored; the summary counts and lists these answers."""
    unlisted: list[str] = field(default_factory=list)
    """Fields whose answer is none of their allowed values (``values:``, e.g. a label read from a
    truncated answer): kept in ``got``, scored 0, never as a label."""
    repeat: int = 0
    """Which answer to the same request this is (0 = the first; ``repeats:`` asks more)."""
    cache_check: str | None = None
    """``--llm-cache check`` only: ``same``/``different`` from the stored answer, or ``missing``."""
    timings: dict[str, Any] | None = None
    """llama-server's own timings of the call (prompt_n, prompt_ms, predicted_n, predicted_ms, ...)."""
    answered_by: str = "model"
    """``model`` (a call), or ``lookup``: a gated lookup copied a near-duplicate pool sample's
    answer with no call (0 tokens, 0 latency)."""
    judge: dict[str, dict[str, Any]] | None = None
    """Judged fields (``metric: judge``): per field the judge's normalised ``score`` (also in
    ``scores``), its ``raw`` scores, the ``reference_metric`` and its ``reference_score`` against
    the label, and the judge calls' tokens."""
    schema_version: int = RESULT_SCHEMA_VERSION

    @property
    def errored(self) -> bool:
        return self.error is not None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SampleResult:
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in data.items() if k in known}
        for key in TOKEN_COUNT_KEYS:  # a damaged or hostile line must not break every report
            if key in values:
                values[key] = token_count_or_none(values[key])
        values["truncated"] = values.get("truncated") is True or values.get("finish_reason") == "length"
        unlisted = values.get("unlisted")
        values["unlisted"] = [str(f) for f in unlisted] if isinstance(unlisted, list) else []
        return cls(**values)


def repeat_suffix(repeat: int) -> str:
    """What marks a repeat in item ids and reports: ``k8s_triage[<id>]`` is repeat 0,
    ``k8s_triage[<id>@r2]`` repeat 2."""
    return f"@r{repeat}" if repeat else ""
