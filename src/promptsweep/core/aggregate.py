"""Aggregation of per-sample results into overall, per-field and per-category scores with intervals.

Results are keyed and sorted by (sample id, repeat) before any statistic is computed, so
the numbers are identical whatever order xdist workers finished in. A sample asked several
times (``repeats``) counts once, with the mean of its answers, and its intervals come from
the hierarchical bootstrap (samples, then repeats).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from promptsweep.core.result import SampleResult
from promptsweep.core.stats import Estimate, NoiseSummary, hierarchical_interval, noise_summary

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
    """The scores of one suite run. Errored samples count as 0 and are listed apart.

    ``n`` counts samples; ``answers`` counts results (samples times repeats). ``noise`` is set
    when at least one sample was asked more than once.
    """

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
    answers: int = 0
    repeats: int = 1
    noise: NoiseSummary | None = None
    lookup_answers: int = 0
    """Answers a gated lookup copied from the pool with no call (``answered_by: lookup``)."""

    def worst(self, k: int = 5) -> list[SampleResult]:
        """The k lowest-scoring imperfect answers (ties by id; a sample's worst repeat), for the report."""
        lowest: dict[str, SampleResult] = {}
        for r in self.results:
            if r.errored or r.score >= 1.0:
                continue
            if r.sample_id not in lowest or r.score < lowest[r.sample_id].score:
                lowest[r.sample_id] = r
        return sorted(lowest.values(), key=lambda r: (r.score, r.sample_id))[:k]

    def unstable(self) -> list[list[SampleResult]]:
        """Samples whose repeats did not all give the same answer, most spread in score first."""
        groups: dict[str, list[SampleResult]] = {}
        for r in self.results:
            groups.setdefault(r.sample_id, []).append(r)
        changed = [g for g in groups.values() if len(g) > 1 and not answers_agree(g)]
        return sorted(
            changed, key=lambda g: (-(max(r.score for r in g) - min(r.score for r in g)), g[0].sample_id)
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": METRICS_SCHEMA_VERSION,
            "suite": self.suite,
            "n": self.n,
            "answers": self.answers,
            "repeats": self.repeats,
            "noise": self.noise.to_json() if self.noise else None,
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
            "answered_by": {"lookup": self.lookup_answers, "model": self.answers - self.lookup_answers},
        }


def latest_by_sample(results: Iterable[SampleResult]) -> list[SampleResult]:
    """One result per sample (a rerun or resume overrides earlier lines), sorted by id.

    Drops all but the last repeat of a sample: use :func:`latest_results` for runs with repeats.
    """
    by_id: dict[str, SampleResult] = {}
    for result in results:
        by_id[result.sample_id] = result
    return [by_id[key] for key in sorted(by_id)]


def latest_results(results: Iterable[SampleResult]) -> list[SampleResult]:
    """One result per (sample, repeat), a rerun or resume overriding earlier lines, sorted
    by sample id then repeat: every repeat is kept."""
    by_key: dict[tuple[str, int], SampleResult] = {}
    for result in results:
        by_key[(result.sample_id, result.repeat)] = result
    return [by_key[key] for key in sorted(by_key)]


def group_by_sample(results: Iterable[SampleResult]) -> list[list[SampleResult]]:
    """Each sample's results (its repeats, in repeat order), samples sorted by id."""
    groups: dict[str, list[SampleResult]] = {}
    for result in latest_results(results):
        groups.setdefault(result.sample_id, []).append(result)
    return list(groups.values())


def answers_agree(group: Sequence[SampleResult]) -> bool:
    """Whether a sample's repeats gave the very same answer text (an error never agrees)."""
    return not any(r.errored for r in group) and len({r.raw for r in group}) == 1


def run_noise(groups: Sequence[Sequence[SampleResult]]) -> NoiseSummary | None:
    """Agreement and variance components when some sample has several answers, else None.

    Answers agree when their raw text is the same (an errored repeat never agrees).
    """
    if not any(len(group) > 1 for group in groups):
        return None
    # The answer "text" of an errored repeat is unique, so it never agrees, as answers_agree says.
    return noise_summary(
        [[r.score for r in group] for group in groups],
        [[r.raw if not r.errored else f"\0error {r.repeat}" for r in group] for group in groups],
    )


def aggregate(
    suite: str, results: Iterable[SampleResult], fields: Sequence[str], *, seed: int = 0
) -> Aggregate:
    """Totals for one suite run (one candidate); intervals are seeded (hierarchical) bootstraps."""
    groups = group_by_sample(results)
    ordered = [r for group in groups for r in group]
    overall = hierarchical_interval([[r.score for r in g] for g in groups], seed=seed)
    per_field = {
        f: hierarchical_interval([[r.scores.get(f, 0.0) for r in g] for g in groups], seed=seed)
        for f in fields
    }
    by_category: dict[str, list[list[float]]] = defaultdict(list)
    for g in groups:
        by_category[g[0].category or "-"].append([r.score for r in g])
    categories = {c: hierarchical_interval(v, seed=seed) for c, v in sorted(by_category.items())}
    answered = [r for r in ordered if not r.errored]
    # Latency is the calls' latency: a cached answer or a copied one (no call) says nothing of it.
    latencies = [
        r.latency_s
        for r in answered
        if r.latency_s is not None and not r.from_cache and r.answered_by != "lookup"
    ]
    return Aggregate(
        suite=suite,
        n=len(groups),
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
        answers=len(ordered),
        repeats=max((len(g) for g in groups), default=1),
        noise=run_noise(groups),
        lookup_answers=sum(1 for r in ordered if r.answered_by == "lookup"),
    )
