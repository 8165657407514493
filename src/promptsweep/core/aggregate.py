"""Aggregation of per-sample results into overall, per-field and per-category scores with intervals.

Results are keyed and sorted by sample id before any statistic is computed, so the
numbers are identical whatever order xdist workers finished in.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from promptsweep.core.result import SampleResult
from promptsweep.core.stats import Estimate, mean_interval

METRICS_SCHEMA_VERSION = 1


def _estimate_json(e: Estimate) -> dict[str, Any]:
    return {"mean": e.mean, "low": e.low, "high": e.high, "n": e.n}


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile; ``None`` for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


@dataclass(frozen=True)
class Aggregate:
    """The scores of one suite run. Errored samples count as 0 and are listed apart."""

    suite: str
    n: int
    overall: Estimate
    fields: dict[str, Estimate]
    categories: dict[str, Estimate]
    errored: tuple[SampleResult, ...]
    unparsed: int
    latency_p50: float | None
    latency_p95: float | None
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    from_cache: int
    results: tuple[SampleResult, ...] = field(repr=False)

    def worst(self, k: int = 5) -> list[SampleResult]:
        """The k lowest-scoring imperfect answers (ties by id), for the report."""
        answered = [r for r in self.results if not r.errored and r.score < 1.0]
        return sorted(answered, key=lambda r: (r.score, r.sample_id))[:k]

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": METRICS_SCHEMA_VERSION,
            "suite": self.suite,
            "n": self.n,
            "overall": _estimate_json(self.overall),
            "fields": {k: _estimate_json(v) for k, v in self.fields.items()},
            "categories": {k: _estimate_json(v) for k, v in self.categories.items()},
            "errored": [{"sample_id": r.sample_id, "error": r.error} for r in self.errored],
            "unparsed": self.unparsed,
            "latency_s": {"p50": self.latency_p50, "p95": self.latency_p95},
            "tokens": {
                "prompt": self.prompt_tokens,
                "completion": self.completion_tokens,
                "cached": self.cached_tokens,
            },
            "from_cache": self.from_cache,
        }


def latest_by_sample(results: Iterable[SampleResult]) -> list[SampleResult]:
    """One result per sample (a rerun or resume overrides earlier lines), sorted by id."""
    by_id: dict[str, SampleResult] = {}
    for result in results:
        by_id[result.sample_id] = result
    return [by_id[key] for key in sorted(by_id)]


def aggregate(
    suite: str, results: Iterable[SampleResult], fields: Sequence[str], *, seed: int = 0
) -> Aggregate:
    """Totals for one suite run (one candidate); intervals are seeded bootstraps."""
    ordered = latest_by_sample(results)
    overall = mean_interval([r.score for r in ordered], seed=seed)
    per_field = {f: mean_interval([r.scores.get(f, 0.0) for r in ordered], seed=seed) for f in fields}
    by_category: dict[str, list[float]] = defaultdict(list)
    for r in ordered:
        by_category[r.category or "-"].append(r.score)
    categories = {c: mean_interval(v, seed=seed) for c, v in sorted(by_category.items())}
    answered = [r for r in ordered if not r.errored]
    latencies = [r.latency_s for r in answered if r.latency_s is not None and not r.from_cache]
    return Aggregate(
        suite=suite,
        n=len(ordered),
        overall=overall,
        fields=per_field,
        categories=categories,
        errored=tuple(r for r in ordered if r.errored),
        unparsed=sum(1 for r in answered if r.parse_source == "none"),
        latency_p50=percentile(latencies, 50),
        latency_p95=percentile(latencies, 95),
        prompt_tokens=sum(r.prompt_tokens or 0 for r in answered),
        completion_tokens=sum(r.completion_tokens or 0 for r in answered),
        cached_tokens=sum(r.cached_tokens or 0 for r in answered),
        from_cache=sum(1 for r in answered if r.from_cache),
        results=tuple(ordered),
    )
