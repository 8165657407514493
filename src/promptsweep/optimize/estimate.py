"""How long calls take: a cost model measured on the server before the search, corrected as it runs.

A llama-server on a CPU spends its time on two things: reading prompt tokens that are not in
its prompt cache (compute-bound: several slots do not make it faster) and generating answer
tokens (batched across busy slots, so each costs less when several answers are written at
once). The model is therefore

    wall time of a batch = uncached prompt tokens x P + generated tokens x G

with P read from one call made alone (llama-server's ``timings.prompt_per_token_ms``) and G
from a batch of calls made all slots at once (the rest of the batch's wall time, per generated
token). Measured on this 2-core machine these are about 5.5 ms and 7 ms; a GPU box has other
numbers, which is why they are measured, not assumed. Prompt length comes from the rendered
prompt (characters per token are measured too); the share of it already cached from the
shared system text; the length of an answer from what each reasoning style actually wrote so
far (before any is seen: the baseline's length, or most of the reasoning budget). After each
round the ratio of measured to predicted wall time corrects later estimates. Servers that
return no timings fall back to the measured wall time per call.
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
    """Characters of the prefix every call of this candidate shares (its system text)."""


@dataclass
class CostModel:
    """Server seconds per uncached prompt token and per generated token, from measured calls."""

    slots: int
    prompt_s: float = 0.0
    gen_s: float = 0.0
    chars_per_token: float = 4.0
    default_completion: float = 64.0
    fallback_call_s: float | None = None
    correction: float = 1.0
    completions: dict[str, list[float]] = field(default_factory=dict)

    @classmethod
    def measure(
        cls,
        alone: SampleResult | None,
        batch: Sequence[SampleResult],
        batch_wall_s: float,
        prompt_chars: float,
        slots: int,
    ) -> CostModel:
        """Rates from one call made alone and a batch made ``slots`` at a time in ``batch_wall_s``."""
        model = cls(slots=max(1, slots))
        answered = [r for r in (alone, *batch) if r is not None and not r.errored and not r.from_cache]
        if not answered:
            return model
        tokens = sum(r.prompt_tokens or 0 for r in answered)
        if tokens:
            model.chars_per_token = max(1.0, prompt_chars * len(answered) / tokens)
        model.default_completion = max(
            1.0, sum(float(r.completion_tokens or 0) for r in answered) / len(answered)
        )
        single = alone.timings if alone is not None and alone.timings else None
        if not single or not single.get("predicted_per_token_ms"):
            ok = [r for r in batch if not r.errored and not r.from_cache]
            model.fallback_call_s = (
                batch_wall_s / max(1, len(ok)) if ok else (alone.latency_s if alone else None)
            )
            return model
        model.prompt_s = float(single.get("prompt_per_token_ms") or 0.0) / 1000.0
        alone_gen = float(single["predicted_per_token_ms"]) / 1000.0
        ok = [r for r in batch if not r.errored and not r.from_cache and r.timings]
        uncached = sum(float((r.timings or {}).get("prompt_n") or 0.0) for r in ok)
        generated = sum(float((r.timings or {}).get("predicted_n") or 0.0) for r in ok)
        if generated > 0:
            rest = batch_wall_s - uncached * model.prompt_s
            # Batched generation costs at most what one answer alone costs, at least 1/slots of it.
            model.gen_s = min(alone_gen, max(alone_gen / model.slots, rest / generated))
        else:
            model.gen_s = alone_gen / model.slots
        return model

    def observe(self, style: str, result: SampleResult) -> None:
        """Learn how long a style's answers are (``style``: the reasoning strategy)."""
        if not result.errored and result.completion_tokens is not None and not result.from_cache:
            self.completions.setdefault(style, []).append(float(result.completion_tokens))

    def completion(self, style: str, budget: int | None) -> float:
        seen = self.completions.get(style)
        if seen:
            return sum(seen) / len(seen)
        if style != "direct" and budget:
            return REASONING_SHARE * budget
        return self.default_completion

    def call_seconds(
        self, shape: CallShape, samples: int, style: str = "direct", budget: int | None = None
    ) -> float:
        """Server seconds one call costs, on average over a candidate's ``samples`` calls (the
        shared system text is read once per slot, then comes from the prompt cache)."""
        completion = self.completion(style, budget)
        if self.fallback_call_s is not None:
            return (
                self.fallback_call_s * max(0.25, completion / max(self.default_completion, 1.0)) / self.slots
            )
        cached_share = max(0, samples - self.slots) / samples if samples else 0.0
        uncached_chars = shape.prompt_chars - shape.shared_chars * cached_share
        return uncached_chars / self.chars_per_token * self.prompt_s + completion * self.gen_s

    def batch_seconds(self, call_seconds: Sequence[float]) -> float:
        """Wall time of a batch of calls (server seconds add up; corrected by what was measured)."""
        return self.correction * sum(call_seconds)

    def correct(self, predicted_s: float, measured_s: float) -> None:
        """After a round: later estimates move toward what the server really took."""
        if predicted_s > 0 and measured_s > 0:
            # Half way (geometrically) to the measured ratio: one odd round does not swing it.
            self.correction *= math.sqrt(measured_s / predicted_s)

    def describe(self) -> str:
        if self.fallback_call_s is not None:
            return f"{self.fallback_call_s:.1f} s per call with {self.slots} at once (no server timings)"
        return (
            f"{self.prompt_s * 1000:.1f} ms per uncached prompt token, {self.gen_s * 1000:.1f} ms per generated "
            f"token with {self.slots} slots busy, {self.chars_per_token:.1f} characters/token"
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
