"""The quality gate: compares an aggregate with the suite's thresholds and says why it fails."""

from __future__ import annotations

from promptsweep.core.aggregate import Aggregate
from promptsweep.core.stats import Estimate, estimate_interval
from promptsweep.core.suite import Thresholds


def _with_interval(e: Estimate) -> str:
    return f"{e.mean:.3f} (95% CI {estimate_interval(e)}, n={e.n})"


def check_gate(agg: Aggregate, thresholds: Thresholds, *, min_score: float | None = None) -> list[str]:
    """Reasons the run fails the gate; empty means it passes.

    ``min_score`` (from ``--min-score``) overrides the suite's overall threshold.
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
    return failures


def describe(agg: Aggregate) -> str:
    return f"{agg.suite}: overall {_with_interval(agg.overall)}"
