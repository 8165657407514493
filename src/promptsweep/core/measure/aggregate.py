"""Aggregation of per-sample results into overall, per-field and per-category scores with intervals.

Results are keyed and sorted by (sample id, repeat) before any statistic is computed, so
the numbers are identical whatever order xdist workers finished in. A sample asked several
times (``repeats``) counts once, with the mean of its answers, and its intervals come from
the hierarchical bootstrap (samples, then repeats).

With repeats, each sample is also classified ``stable``, ``flaky`` (its parsed answers or
its pass/fail differ between repeats) or ``errored`` (a repeat errored): see :func:`stability`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from promptsweep.core.answers.result import SampleResult
from promptsweep.core.measure.stats import (
    Estimate,
    NoiseSummary,
    hierarchical_interval,
    noise_summary,
    quantile,
)

METRICS_SCHEMA_VERSION = 1

RIGHT_AT = 0.5
"""A sample is *right* (passes) when its weighted score reaches this, unless the suite sets
``thresholds.sample``; ``promptsweep compare`` uses the same convention (``--right-at``)."""

Stability = Literal["stable", "flaky", "errored"]


def _estimate_json(e: Estimate) -> dict[str, Any]:
    return {"mean": e.mean, "low": e.low, "high": e.high, "n": e.n}


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in [0, 100]); ``None`` for no values."""
    return quantile(values, q / 100)


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
    right_at: float = RIGHT_AT
    """Pass/fail of one answer for :func:`stability`: ``thresholds.sample``, else :data:`RIGHT_AT`."""
    tokens_per_sample: float | None = None
    """Prompt + completion tokens per answer that reported usage; None when none did."""
    lookup_answers: int = 0
    """Answers a gated lookup copied from the pool with no call (``answered_by: lookup``)."""
    truncated: int = 0
    """Answers cut at ``max_tokens`` (``finish_reason: length``)."""
    unlisted: int = 0
    """Answers with a field outside its allowed values (scored 0 on that field)."""

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

    def stability(self) -> dict[str, Stability]:
        """Each sample's classification over its repeats, by sample id."""
        groups: dict[str, list[SampleResult]] = {}
        for r in self.results:
            groups.setdefault(r.sample_id, []).append(r)
        return {sample: stability(group, self.right_at) for sample, group in groups.items()}

    def flaky(self) -> list[list[SampleResult]]:
        """The flaky samples' results (every repeat), samples sorted by id."""
        groups: dict[str, list[SampleResult]] = {}
        for r in self.results:
            groups.setdefault(r.sample_id, []).append(r)
        return [g for _, g in sorted(groups.items()) if stability(g, self.right_at) == "flaky"]

    def stability_json(self) -> dict[str, Any] | None:
        """``metrics.json``'s ``stability``: counts and the flaky ids; None without repeats."""
        if self.repeats < 2:
            return None
        classes = self.stability()
        return {
            "right_at": self.right_at,
            "stable": sum(1 for c in classes.values() if c == "stable"),
            "flaky": sum(1 for c in classes.values() if c == "flaky"),
            "errored": sum(1 for c in classes.values() if c == "errored"),
            "flaky_samples": sorted(s for s, c in classes.items() if c == "flaky"),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": METRICS_SCHEMA_VERSION,
            "suite": self.suite,
            "n": self.n,
            "answers": self.answers,
            "repeats": self.repeats,
            "noise": self.noise.to_json() if self.noise else None,
            "stability": self.stability_json(),
            "overall": _estimate_json(self.overall),
            "fields": {k: _estimate_json(v) for k, v in self.fields.items()},
            "categories": {k: _estimate_json(v) for k, v in self.categories.items()},
            "errored": [{"sample_id": r.sample_id, "error": r.error} for r in self.errored],
            "unparsed": self.unparsed,
            "truncated": self.truncated,
            "unlisted": self.unlisted,
            "latency_s": {"p50": self.latency_p50, "p95": self.latency_p95},
            "tokens": {
                "prompt": self.prompt_tokens,
                "completion": self.completion_tokens,
                "cached": self.cached_tokens,
                "per_sample": self.tokens_per_sample,
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


def _answer_key(result: SampleResult) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(result.got.items()))


def stability(group: Sequence[SampleResult], right_at: float = RIGHT_AT) -> Stability:
    """``errored`` when a repeat errored; ``flaky`` when the parsed answers (every field, after
    normalisation) or the pass/fail (score >= ``right_at``) differ between repeats; else
    ``stable``. Answers whose raw text differs but parse to the same fields are stable: what
    is scored did not change. One answer is trivially stable."""
    if any(r.errored for r in group):
        return "errored"
    if len({_answer_key(r) for r in group}) > 1 or len({r.score >= right_at for r in group}) > 1:
        return "flaky"
    return "stable"


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
    suite: str,
    results: Iterable[SampleResult],
    fields: Sequence[str],
    *,
    seed: int = 0,
    right_at: float = RIGHT_AT,
) -> Aggregate:
    """Totals for one suite run (one candidate); intervals are seeded (hierarchical) bootstraps.

    ``right_at`` is what one answer must score to pass, for the flaky classification."""
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
    with_usage = [r for r in answered if r.prompt_tokens is not None or r.completion_tokens is not None]
    tokens_per_sample = (
        sum((r.prompt_tokens or 0) + (r.completion_tokens or 0) for r in with_usage) / len(with_usage)
        if with_usage
        else None
    )
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
        right_at=right_at,
        tokens_per_sample=tokens_per_sample,
        lookup_answers=sum(1 for r in ordered if r.answered_by == "lookup"),
        truncated=sum(1 for r in answered if r.truncated),
        unlisted=sum(1 for r in answered if r.unlisted),
    )
