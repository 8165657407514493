"""How long calls take: a cost model measured on the server before the search, refined as it runs.

On llama-server a request costs about (uncached prompt tokens x prompt rate) + (generated
tokens x generation rate), both read from the ``timings`` it returns; with S slots busy
the wall time of a batch is the sum of those latencies over S, times a measured
straggler factor. Prompt length comes from the rendered prompt (characters per token are
measured too); the length of an answer from what the baseline and each reasoning style
actually generated so far (before any is seen: the baseline's, or most of the reasoning
budget). Servers without ``timings`` fall back to the measured mean latency per call.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from promptsweep.core.evaluate import SampleResult

REASONING_SHARE = 0.85
"""Before a reasoning answer is seen, assume it uses this share of its token budget (measured:
248-289 of 320 on the 135M model)."""


@dataclass(frozen=True)
class CallShape:
    """What one call of a candidate looks like before it is made."""

    prompt_chars: float
    shared_chars: float
    """Characters of the prefix the server's prompt cache already holds (the system text)."""
    completion_tokens: float | None
    """Expected answer length, None to use the measured default."""


@dataclass
class CostModel:
    """Per-token rates and the concurrency factor, from measured calls."""

    slots: int
    prompt_ms_per_token: float = 0.0
    gen_ms_per_token: float = 0.0
    chars_per_token: float = 4.0
    default_completion: float = 64.0
    straggler: float = 1.0
    fallback_call_s: float | None = None
    completions: dict[str, list[float]] = field(default_factory=dict)

    @classmethod
    def measure(
        cls, results: Sequence[SampleResult], prompt_chars: Sequence[int], wall_s: float, slots: int
    ) -> CostModel:
        """Rates from a batch of calls made ``slots`` at a time (``prompt_chars[i]`` is call i's
        rendered prompt length), taking ``wall_s`` seconds in all."""
        model = cls(slots=max(1, slots))
        answered = [
            (r, c) for r, c in zip(results, prompt_chars, strict=True) if not r.errored and not r.from_cache
        ]
        if not answered:
            return model
        tokens = sum(r.prompt_tokens or 0 for r, _ in answered)
        chars = sum(c for _, c in answered)
        if tokens:
            model.chars_per_token = chars / tokens
        completions = [float(r.completion_tokens or 0) for r, _ in answered]
        model.default_completion = max(1.0, sum(completions) / len(completions))
        prompt_ms = prompt_n = gen_ms = gen_n = 0.0
        for result, _ in answered:
            timings = result.timings or {}
            prompt_ms += float(timings.get("prompt_ms") or 0.0)
            prompt_n += float(timings.get("prompt_n") or 0.0)
            gen_ms += float(timings.get("predicted_ms") or 0.0)
            gen_n += float(timings.get("predicted_n") or 0.0)
        latencies = [r.latency_s or 0.0 for r, _ in answered]
        if prompt_n and gen_n:
            model.prompt_ms_per_token = prompt_ms / prompt_n
            model.gen_ms_per_token = gen_ms / gen_n
        else:
            model.fallback_call_s = sum(latencies) / len(latencies)
        ideal = sum(latencies) / model.slots
        model.straggler = max(1.0, wall_s / ideal) if ideal > 0 else 1.0
        return model

    def observe(self, style: str, result: SampleResult) -> None:
        """Learn how long a style's answers are (``style``: the reasoning strategy)."""
        if not result.errored and result.completion_tokens is not None:
            self.completions.setdefault(style, []).append(float(result.completion_tokens))

    def completion(self, style: str, budget: int | None) -> float:
        seen = self.completions.get(style)
        if seen:
            return sum(seen) / len(seen)
        if style != "direct" and budget:
            return REASONING_SHARE * budget
        return self.default_completion

    def call_seconds(self, shape: CallShape, style: str = "direct", budget: int | None = None) -> float:
        """Expected latency of one call while all slots are busy."""
        completion = (
            shape.completion_tokens if shape.completion_tokens is not None else self.completion(style, budget)
        )
        if self.fallback_call_s is not None:
            return self.fallback_call_s * max(0.25, completion / max(self.default_completion, 1.0))
        uncached = max(0.0, shape.prompt_chars - shape.shared_chars) / self.chars_per_token
        return (uncached * self.prompt_ms_per_token + completion * self.gen_ms_per_token) / 1000.0

    def batch_seconds(self, seconds: Sequence[float]) -> float:
        """Wall time of a batch of calls run ``slots`` at a time."""
        if not seconds:
            return 0.0
        return self.straggler * max(sum(seconds) / self.slots, max(seconds))

    def describe(self) -> str:
        if self.fallback_call_s is not None:
            return f"{self.fallback_call_s:.1f} s per call with {self.slots} at once"
        return (
            f"prompt {self.prompt_ms_per_token:.1f} ms/token, generation {self.gen_ms_per_token:.0f} ms/token "
            f"with {self.slots} slots busy, {self.chars_per_token:.1f} characters/token"
        )


def format_duration(seconds: float) -> str:
    """``42 s``, ``7 min``, ``1 h 05 min``."""
    if not math.isfinite(seconds):
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"
