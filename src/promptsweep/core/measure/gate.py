"""The quality gate: compares an aggregate with the suite's thresholds and says why it fails.

Besides the scores it checks the cost (tokens per sample, p95 latency) and, with repeats,
what flaky samples do to the gate (``--promptsweep-flaky``).
"""

from __future__ import annotations

from typing import Literal

from promptsweep.core.data.suite import Thresholds
from promptsweep.core.measure.aggregate import Aggregate
from promptsweep.core.measure.stats import Estimate, estimate_interval

FlakyPolicy = Literal["fail", "warn", "ignore"]
FLAKY_POLICIES: tuple[FlakyPolicy, ...] = ("fail", "warn", "ignore")
FLAKY_LISTED = 5
"""Flaky sample ids named in a gate failure; the summary lists them all."""


def _number(value: float) -> str:
    """``412`` for 412.0, ``300.4`` for 300.43: never ``300 > 300``."""
    return f"{round(value, 1):g}"


def cost_failures(agg: Aggregate, thresholds: Thresholds) -> list[str]:
    """The cost gate: tokens per sample and p95 latency against their maxima."""
    failures: list[str] = []
    most_tokens = thresholds.max_tokens_per_sample
    if most_tokens is not None:
        if agg.tokens_per_sample is None:
            failures.append(
                f"tokens per sample unknown (the server reported no usage) for thresholds.max_tokens_per_sample "
                f"{most_tokens}"
            )
        elif agg.tokens_per_sample > most_tokens:
            failures.append(f"{_number(agg.tokens_per_sample)} tokens per sample > {most_tokens}")
    most_ms = thresholds.max_latency_p95_ms
    if most_ms is not None and agg.latency_p95 is not None and agg.latency_p95 * 1000 > most_ms:
        failures.append(f"p95 latency {agg.latency_p95 * 1000:.0f} ms > {_number(most_ms)} ms")
    return failures


def cost_line(agg: Aggregate, thresholds: Thresholds) -> str | None:
    """What the cost gate measured against its maxima, for the summaries; None without one."""
    parts: list[str] = []
    if thresholds.max_tokens_per_sample is not None:
        got = "unknown" if agg.tokens_per_sample is None else _number(agg.tokens_per_sample)
        parts.append(f"{got} tokens per sample (max {thresholds.max_tokens_per_sample})")
    if thresholds.max_latency_p95_ms is not None:
        most = _number(thresholds.max_latency_p95_ms)
        if agg.latency_p95 is None:
            parts.append(
                f"p95 latency not measured, every answer came from the response cache (max {most} ms not checked)"
            )
        else:
            parts.append(f"p95 latency {agg.latency_p95 * 1000:.0f} ms (max {most} ms)")
    return "cost: " + "; ".join(parts) if parts else None


def flaky_failure(agg: Aggregate) -> str | None:
    """One reason naming the flaky samples, or None when there are none."""
    flaky = [group[0].sample_id for group in agg.flaky()]
    if not flaky:
        return None
    shown = ", ".join(flaky[:FLAKY_LISTED]) + (
        f" and {len(flaky) - FLAKY_LISTED} more" if len(flaky) > FLAKY_LISTED else ""
    )
    plural = "s" if len(flaky) != 1 else ""
    return f"{len(flaky)} flaky sample{plural} (parsed answers or pass/fail changed between repeats): {shown}"


def _with_interval(e: Estimate) -> str:
    return f"{e.mean:.3f} (95% CI {estimate_interval(e)}, n={e.n})"


def check_gate(
    agg: Aggregate,
    thresholds: Thresholds,
    *,
    min_score: float | None = None,
    flaky: FlakyPolicy = "warn",
) -> list[str]:
    """Reasons the run fails the gate; empty means it passes.

    ``min_score`` (from ``--min-score``) overrides the suite's overall threshold; ``flaky``
    (``--promptsweep-flaky``) set to ``fail`` makes flaky samples a reason.
    """
    failures: list[str] = []
    overall_min = min_score if min_score is not None else thresholds.overall
    if agg.n == 0:
        return ["no samples were scored"] if overall_min is not None else []
    if overall_min is not None and agg.overall.mean < overall_min:
        failures.append(
            f"overall {agg.overall.mean:.3f} < {overall_min:.3f} (95% CI {estimate_interval(agg.overall)})"
        )
    for name, minimum in thresholds.fields.items():
        estimate = agg.fields.get(name)
        if estimate is not None and estimate.mean < minimum:
            failures.append(
                f"field {name} {estimate.mean:.3f} < {minimum:.3f} (95% CI {estimate_interval(estimate)})"
            )
    if len(agg.errored) > thresholds.max_errors:
        first = agg.errored[0]
        failures.append(
            f"{len(agg.errored)} sample(s) errored (allowed: {thresholds.max_errors}); "
            f"first: {first.sample_id}: {first.error}"
        )
    failures.extend(cost_failures(agg, thresholds))
    if flaky == "fail":
        reason = flaky_failure(agg)
        if reason:
            failures.append(reason)
    return failures


def describe(agg: Aggregate) -> str:
    return f"{agg.suite}: overall {_with_interval(agg.overall)}"
