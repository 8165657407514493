"""How far a judge can be trusted: its scores ranked against a reference metric over a run's samples.

A judge that ranks answers the way ROUGE-L against the labelled reference does is at least
looking at the same thing; one that does not might be grading length, tone or nothing. The
number is Spearman's rank correlation over the samples the run judged (each sample's mean
over repeats), with its n and an approximate 95% interval, so a small run reads as such.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from promptsweep.core.answers.judge import spearman, spearman_interval
from promptsweep.core.answers.result import SampleResult

#: Fewer judged samples than this: the verdict says the run is too small to tell.
MIN_SAMPLES = 10


@dataclass(frozen=True)
class FieldAgreement:
    """One judged field: the judge's and the reference metric's mean scores and their rank correlation."""

    field: str
    reference_metric: str
    n: int
    judge_mean: float | None
    reference_mean: float | None
    rho: float | None
    interval: tuple[float, float] | None

    @property
    def verdict(self) -> str:
        if self.rho is None:
            return (
                "no ranking to compare (fewer than 3 samples, or one side gave every sample the same score)"
            )
        if self.n < MIN_SAMPLES:
            return f"too few samples to tell (n={self.n} < {MIN_SAMPLES})"
        low = self.interval[0] if self.interval else self.rho
        if low >= 0.5:
            return "agrees: the judge ranks answers as the reference metric does"
        if low > 0:
            return "agrees weakly: read the judge's scores next to the reference metric"
        return "does not agree: do not trust the judge's scores without reading its answers"

    def to_json(self) -> dict[str, Any]:
        return {
            "field": self.field,
            "reference_metric": self.reference_metric,
            "n": self.n,
            "judge_mean": self.judge_mean,
            "reference_mean": self.reference_mean,
            "spearman": self.rho,
            "ci95": list(self.interval) if self.interval else None,
            "verdict": self.verdict,
        }


def judge_agreement(results: Sequence[SampleResult]) -> list[FieldAgreement]:
    """Per judged field, over the samples whose answer was judged (not errored, field answered)."""
    pairs: dict[str, dict[str, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    metric: dict[str, str] = {}
    for result in results:
        if result.errored or not result.judge:
            continue
        for name, judged in result.judge.items():
            if not judged.get("raw"):
                continue  # nothing was asked (empty answer): no judgement to compare
            pairs[name][result.sample_id].append((float(judged["score"]), float(judged["reference_score"])))
            metric[name] = str(judged.get("reference_metric", "reference"))
    report: list[FieldAgreement] = []
    for name, by_sample in pairs.items():
        judge_scores = [sum(p[0] for p in v) / len(v) for v in by_sample.values()]
        reference_scores = [sum(p[1] for p in v) / len(v) for v in by_sample.values()]
        n = len(judge_scores)
        rho = spearman(judge_scores, reference_scores)
        report.append(
            FieldAgreement(
                field=name,
                reference_metric=metric[name],
                n=n,
                judge_mean=sum(judge_scores) / n if n else None,
                reference_mean=sum(reference_scores) / n if n else None,
                rho=rho,
                interval=spearman_interval(rho, n) if rho is not None else None,
            )
        )
    return report


def render(agreements: Sequence[FieldAgreement]) -> str:
    if not agreements:
        return "no judged fields in this run (fields with metric: judge)\n"
    lines = []
    for a in agreements:
        rho = "—" if a.rho is None else f"{a.rho:+.3f}"
        ci = f" (95% CI {a.interval[0]:+.2f}..{a.interval[1]:+.2f})" if a.interval else ""
        means = (
            f"; mean judge {a.judge_mean:.3f}, mean {a.reference_metric} {a.reference_mean:.3f}"
            if a.judge_mean is not None and a.reference_mean is not None
            else ""
        )
        lines.append(
            f"{a.field}: Spearman rho {rho}{ci} between judge and {a.reference_metric} vs the label, "
            f"n={a.n}{means}\n  {a.verdict}"
        )
    return "\n".join(lines) + "\n"


def judge_line(results: Sequence[SampleResult]) -> str | None:
    """One line for run summaries: each judged field's mean judge score beside its reference metric."""
    parts = []
    for a in judge_agreement(results):
        if a.judge_mean is None or a.reference_mean is None:
            continue
        rho = "" if a.rho is None else f", Spearman {a.rho:+.2f}"
        parts.append(
            f"{a.field} judge {a.judge_mean:.3f} beside {a.reference_metric} {a.reference_mean:.3f} (n={a.n}{rho})"
        )
    return "; ".join(parts) or None
