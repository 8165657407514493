"""Comparing two runs: paired score deltas with intervals, and the samples that flipped.

A sample is **right** when its weighted score (the mean over its repeats) is at least
``RIGHT_AT`` (0.5); a field is right when its score is 1.0 (an exact match after
normalisation; for graded metrics such as rouge_l a perfect score). Deltas are ``B - A``
over the samples present in both runs, sorted by id, with a seeded paired hierarchical
bootstrap interval (samples, then each run's repeats); a drop is *significant* when the
interval excludes 0. A significant delta smaller than either run's measured noise (the
smallest difference it can detect, from its repeats) is reported as noise, not as better
or worse. Runs made in different decoding modes (default vs ``--llm-deterministic``) are
not like for like: the comparison says so, and ``--baseline`` refuses them.

Cost is compared too: tokens per sample (prompt + completion per answer) with the same paired
interval, and the p95 latency of the answers the server gave (not the cached ones) with a
paired bootstrap of the p95 difference. A *cost regression* (``--fail-on-cost-regression``)
is a rise whose interval lies wholly above 0 for tokens, and wholly above the latency
tolerance for p95 latency (the larger of ``--latency-tolerance`` times A's p95 and 50 ms:
latency also moves with the machine's load, which no resampling of one run can see).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tabulate import tabulate

from promptsweep.core.answers.result import SampleResult
from promptsweep.core.io.errors import PromptsweepError
from promptsweep.core.io.files import refuse_links
from promptsweep.core.io.redact import markdown_text, terminal_text
from promptsweep.core.measure.aggregate import RIGHT_AT as RIGHT_AT  # re-exported: --right-at's default
from promptsweep.core.measure.aggregate import (
    Stability,
    group_by_sample,
    latest_results,
    percentile,
    run_noise,
    stability,
)
from promptsweep.core.measure.stats import (
    Estimate,
    NoiseSummary,
    estimate_interval,
    is_significant,
    noise_summary,
    paired_hierarchical_difference,
    paired_quantile_difference,
)
from promptsweep.reporting.artifacts import RUNS_DIRNAME, read_results
from promptsweep.reporting.summary import noise_line

COMPARE_SCHEMA_VERSION = 1
LATENCY_TOLERANCE = 0.2
"""A p95 latency rise counts when its interval lies above this share of A's p95 ..."""
LATENCY_FLOOR_MS = 50.0
"""... and above this many milliseconds."""
MIN_TIMED = 20
"""Timed answers a run's latency needs: with fewer, its nearest-rank p95 is simply its slowest."""
_STAMP = re.compile(r"^\d{8}T\d{6}Z-")


@dataclass
class RunData:
    """A run directory read back: provenance, metrics (if it finished) and one result per
    sample and repeat."""

    root: Path
    config: dict[str, Any]
    metrics: dict[str, Any] | None
    results: list[SampleResult]
    experiment: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def suite(self) -> str:
        return str(self.config.get("suite") or (self.results[0].suite if self.results else "?"))

    @property
    def fields(self) -> list[str]:
        names = list((self.config.get("fields") or {}).keys())
        if not names:
            for r in self.results:
                names.extend(f for f in r.scores if f not in names)
        return names

    @property
    def label(self) -> str:
        template = self.config.get("template") or {}
        return f"{self.name} ({template.get('id', '?')}@{template.get('version', '?')})"

    @property
    def mode(self) -> str:
        """``default`` or ``deterministic`` (runs from before the mode existed are ``default``)."""
        return str((self.config.get("determinism") or {}).get("mode") or "default")

    @property
    def by_sample(self) -> dict[str, list[SampleResult]]:
        """Each sample's results, one per repeat."""
        return {group[0].sample_id: group for group in group_by_sample(self.results)}

    @property
    def noise(self) -> NoiseSummary | None:
        """Agreement and noise of the overall score, when some sample was asked more than once."""
        return run_noise(list(self.by_sample.values()))

    @property
    def right_at(self) -> float:
        """What one answer had to score to pass in this run: ``thresholds.sample``, else 0.5."""
        sample = (self.config.get("thresholds") or {}).get("sample")
        return float(sample) if isinstance(sample, (int, float)) else RIGHT_AT

    def stability(self) -> dict[str, Stability]:
        """Each sample's stability over its repeats (every sample is stable without repeats)."""
        return {sample: stability(group, self.right_at) for sample, group in self.by_sample.items()}

    def noise_line(self) -> str | None:
        repeats = max((len(g) for g in self.by_sample.values()), default=1)
        return noise_line(self.noise, repeats=repeats, deterministic=self.mode == "deterministic")

    def timed(self) -> list[float]:
        """The latency of each answer the server gave in this run: a cached answer, or one a
        gated lookup copied with no call, was not timed."""
        return [
            r.latency_s
            for r in self.results
            if r.latency_s is not None and not r.errored and not r.from_cache and r.answered_by != "lookup"
        ]

    def latency(self) -> tuple[float | None, float | None]:
        values = self.timed()
        return percentile(values, 50), percentile(values, 95)

    def latency_note(self, side: str) -> str | None:
        """Said when this run's latency rests on too few timed answers to mean much."""
        timed, answered = len(self.timed()), sum(1 for r in self.results if not r.errored)
        if timed >= MIN_TIMED or not answered:
            return None
        others = answered - timed
        why = f" ({others} came from the response cache or a lookup, untimed)" if others else ""
        return (
            f"{side}'s latency rests on {timed} timed answer(s) of {answered}{why}: too few for a p95 "
            f"(needs {MIN_TIMED}); rerun it with --llm-cache off to time it"
        )

    def tokens_per_sample(self) -> float:
        answered = [r for r in self.results if not r.errored]
        total = sum((r.prompt_tokens or 0) + (r.completion_tokens or 0) for r in answered)
        return total / len(answered) if answered else 0.0


def _json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def resolve_run(ref: str, base_dir: Path) -> Path:
    """A run directory path, a run name under ``<base_dir>/runs``, or an experiment id / suite
    name (the latest run whose name ends with ``-<ref>``).

    Run directories never follow links: a symbolic link at the run directory (or at ``runs/``
    on the way to it) is refused with ``UnsafePathError``, so a checkout cannot point a
    report writer at a file outside the project."""
    given = Path(ref).expanduser()
    if (given / "results.jsonl").is_file():
        return _unlinked(given, base_dir)
    runs = base_dir / RUNS_DIRNAME
    if (runs / ref / "results.jsonl").is_file():
        return _unlinked(runs / ref, base_dir)
    if runs.is_dir():
        matches = sorted(
            p for p in runs.iterdir() if (p / "results.jsonl").is_file() and _STAMP.sub("", p.name) == ref
        )
        if matches:
            return _unlinked(matches[-1], base_dir)
    raise PromptsweepError(
        f"no run {ref!r}: give a run directory, a run name under {runs}, or an experiment id / suite name"
    )


def _unlinked(run_dir: Path, base_dir: Path) -> Path:
    """``run_dir`` made absolute once no link lies between ``base_dir`` and it (the directory
    itself included)."""
    refuse_links(run_dir.absolute(), within=base_dir.absolute())
    return run_dir.resolve()


def load_run(ref: str | Path, base_dir: Path) -> RunData:
    root = resolve_run(str(ref), base_dir)
    return RunData(
        root=root,
        config=_json(root / "config.json") or {},
        metrics=_json(root / "metrics.json"),
        results=latest_results(read_results(root / "results.jsonl")),
        experiment=_json(root / "experiment.json"),
    )


def is_right(result: SampleResult, threshold: float = RIGHT_AT) -> bool:
    return not result.errored and result.score >= threshold


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def group_right(group: Sequence[SampleResult], threshold: float = RIGHT_AT) -> bool:
    """A sample is right when the mean score of its repeats reaches ``threshold`` (errors score 0)."""
    return not all(r.errored for r in group) and _mean([r.score for r in group]) >= threshold


@dataclass(frozen=True)
class Delta:
    """One compared quantity: A's and B's means over the paired samples and B - A."""

    name: str
    a: float
    b: float
    diff: Estimate
    noise: float = 0.0
    """The larger of the two runs' smallest detectable differences (0 when neither measured it)."""

    @property
    def significant(self) -> bool:
        return is_significant(self.diff)

    @property
    def within_noise(self) -> bool:
        """Significant, but smaller than what either run's own noise can produce."""
        return self.significant and abs(self.diff.mean) < self.noise

    @property
    def verdict(self) -> str:
        if not self.significant:
            return "~"
        if self.within_noise:
            return "~ within noise"
        return "better" if self.diff.mean > 0 else "WORSE"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "a": self.a,
            "b": self.b,
            "delta": self.diff.mean,
            "low": self.diff.low,
            "high": self.diff.high,
            "n": self.diff.n,
            "significant": self.significant,
            "noise": self.noise,
            "within_noise": self.within_noise,
        }


@dataclass(frozen=True)
class Flip:
    sample_id: str
    category: str | None
    score_a: float
    score_b: float
    fields: tuple[str, ...]  # fields whose rightness changed the same way
    expected: dict[str, str]
    got_a: dict[str, str]
    got_b: dict[str, str]


@dataclass
class Comparison:
    a: RunData
    b: RunData
    overall: Delta
    fields: list[Delta]
    categories: list[Delta]
    regressions: list[Flip] = field(default_factory=list)  # right in A, wrong in B
    fixes: list[Flip] = field(default_factory=list)  # wrong in A, right in B
    only_a: list[str] = field(default_factory=list)
    only_b: list[str] = field(default_factory=list)
    relabelled: list[str] = field(default_factory=list)  # same id, other expected labels: not paired
    right_at: float = RIGHT_AT
    tokens: Delta | None = None
    """Tokens per sample (prompt + completion per answer), B - A over paired samples with usage."""
    latency_p95: Delta | None = None
    """p95 latency in ms of the answers the server gave, B - A (bootstrap of the p95 difference)."""

    def cost_rises(self) -> list[Delta]:
        """Tokens per sample and p95 latency where B is higher beyond doubt: the interval lies
        wholly above the measure's tolerance (``noise``: 0 for tokens)."""
        return [d for d in (self.tokens, self.latency_p95) if d is not None and cost_rose(d)]

    @property
    def cost_regressed(self) -> bool:
        """What ``--fail-on-cost-regression`` checks: a significant rise in tokens or p95 latency."""
        return bool(self.cost_rises())

    @property
    def regressed(self) -> bool:
        """A significant drop of the overall score beyond both runs' noise (what
        ``--fail-on-regression`` checks)."""
        return self.overall.significant and self.overall.diff.mean < 0 and not self.overall.within_noise

    @property
    def like_for_like(self) -> bool:
        """Whether both runs used the same decoding mode (default or deterministic)."""
        return self.a.mode == self.b.mode

    def warnings(self) -> list[str]:
        """What makes the two runs unlike: said on stderr by ``promptsweep compare``."""
        warnings: list[str] = []
        if self.a.suite != self.b.suite:
            warnings.append(f"different suites: {self.a.suite} vs {self.b.suite}")
        if not self.like_for_like:
            warnings.append(
                f"different modes: A {self.a.mode}, B {self.b.mode}; the answers come from different "
                "request paths, so the numbers are not like for like"
            )
        sha_a = (self.a.config.get("dataset") or {}).get("sha256")
        sha_b = (self.b.config.get("dataset") or {}).get("sha256")
        if sha_a and sha_b and sha_a != sha_b:
            warnings.append(
                f"the datasets differ (sha256 {sha_a[:12]} vs {sha_b[:12]}); only the "
                f"{self.overall.diff.n} shared sample(s) (same id, same labels) are compared"
            )
        return warnings

    def notes(self) -> list[str]:
        notes = self.warnings()
        if self.only_a or self.only_b:
            notes.append(
                f"{len(self.only_a)} sample(s) only in A and {len(self.only_b)} only in B are left out"
            )
        if self.relabelled:
            notes.append(
                f"{len(self.relabelled)} sample(s) share an id but not their expected labels and are left out"
            )
        return notes

    def to_json(self) -> dict[str, Any]:
        def flip(f: Flip) -> dict[str, Any]:
            return {
                "sample_id": f.sample_id,
                "category": f.category,
                "score_a": f.score_a,
                "score_b": f.score_b,
                "fields": list(f.fields),
            }

        noise_a, noise_b = self.a.noise, self.b.noise
        return {
            "schema_version": COMPARE_SCHEMA_VERSION,
            "a": self.a.name,
            "b": self.b.name,
            "modes": {"a": self.a.mode, "b": self.b.mode},
            "noise": {
                "a": noise_a.to_json() if noise_a else None,
                "b": noise_b.to_json() if noise_b else None,
            },
            "right_at": self.right_at,
            "overall": self.overall.to_json(),
            "fields": [d.to_json() for d in self.fields],
            "categories": [d.to_json() for d in self.categories],
            "regressions": [flip(f) for f in self.regressions],
            "fixes": [flip(f) for f in self.fixes],
            "regressed": self.regressed,
            "cost": {
                "tokens_per_sample": self.tokens.to_json() if self.tokens else None,
                "latency_p95_ms": self.latency_p95.to_json() if self.latency_p95 else None,
                "timed_answers": {"a": len(self.a.timed()), "b": len(self.b.timed())},
            },
            "cost_regressed": self.cost_regressed,
        }


def _detectable(groups: Sequence[Sequence[float]]) -> float:
    """A run's smallest detectable difference for one quantity; 0 when it has no repeats."""
    if not any(len(group) > 1 for group in groups):
        return 0.0
    return noise_summary(groups).detectable


def _delta(name: str, a: Sequence[Sequence[float]], b: Sequence[Sequence[float]], seed: int) -> Delta:
    """B - A over paired samples, each side a list of repeat scores per sample."""
    return Delta(
        name=name,
        a=_mean([_mean(group) for group in a]),
        b=_mean([_mean(group) for group in b]),
        diff=paired_hierarchical_difference(a, b, seed=seed),
        noise=max(_detectable(a), _detectable(b)),
    )


Pair = tuple[list[SampleResult], list[SampleResult]]


def _scores(pairs: Sequence[Pair], side: int, field: str | None = None) -> list[list[float]]:
    return [[r.score if field is None else r.scores.get(field, 0.0) for r in pair[side]] for pair in pairs]


def cost_rose(d: Delta) -> bool:
    """A cost measure rose: its interval (over at least two samples) lies above its tolerance."""
    return d.diff.n >= 2 and d.diff.low > max(d.noise, 0.0)


def _answered(group: Sequence[SampleResult]) -> list[SampleResult]:
    return [r for r in group if not r.errored]


def _tokens(group: Sequence[SampleResult]) -> list[float]:
    """Prompt + completion tokens of each answer that reported usage."""
    return [
        float((r.prompt_tokens or 0) + (r.completion_tokens or 0))
        for r in _answered(group)
        if r.prompt_tokens is not None or r.completion_tokens is not None
    ]


def _latencies_ms(group: Sequence[SampleResult]) -> list[float]:
    """Latency of each answer the server gave in that run (a cached or copied answer was not timed)."""
    return [
        r.latency_s * 1000
        for r in _answered(group)
        if r.latency_s is not None and not r.from_cache and r.answered_by != "lookup"
    ]


def cost_deltas(
    pairs: Sequence[Pair], seed: int = 0, latency_tolerance: float = LATENCY_TOLERANCE
) -> tuple[Delta | None, Delta | None]:
    """Tokens per sample and p95 latency, B - A over the paired samples that have them on
    both sides; None when no pair has them. The latency delta's ``noise`` is its tolerance."""
    token_pairs = [(_tokens(x), _tokens(y)) for x, y in pairs]
    token_pairs = [(x, y) for x, y in token_pairs if x and y]
    tokens = None
    if token_pairs:
        left, right = [x for x, _ in token_pairs], [y for _, y in token_pairs]
        tokens = Delta(
            "tokens per sample",
            _mean([_mean(x) for x in left]),
            _mean([_mean(y) for y in right]),
            paired_hierarchical_difference(left, right, seed=seed),
        )
    lat_a = [_latencies_ms(x) for x, _ in pairs]
    lat_b = [_latencies_ms(y) for _, y in pairs]
    both = [(x, y) for x, y in zip(lat_a, lat_b, strict=True) if x and y]
    latency = None
    if both:
        diff = paired_quantile_difference(lat_a, lat_b, q=0.95, seed=seed)
        p95_a = percentile([v for x, _ in both for v in x], 95) or 0.0
        p95_b = percentile([v for _, y in both for v in y], 95) or 0.0
        latency = Delta(
            "p95 latency (ms)", p95_a, p95_b, diff, noise=max(latency_tolerance * p95_a, LATENCY_FLOOR_MS)
        )
    return tokens, latency


def compare_results(
    a: RunData,
    b: RunData,
    *,
    right_at: float = RIGHT_AT,
    seed: int = 0,
    latency_tolerance: float = LATENCY_TOLERANCE,
) -> Comparison:
    """Pair the two runs' results by sample id and compute every delta and flip."""
    by_a, by_b = a.by_sample, b.by_sample
    same_id = sorted(set(by_a) & set(by_b))
    # Like with like: a sample is shared when its id and its labels agree (datasets may differ).
    common = [i for i in same_id if by_a[i][0].expected == by_b[i][0].expected]
    pairs: list[Pair] = [(by_a[i], by_b[i]) for i in common]
    overall = _delta("overall", _scores(pairs, 0), _scores(pairs, 1), seed)
    field_names = a.fields + [f for f in b.fields if f not in a.fields]
    fields = [_delta(f, _scores(pairs, 0, f), _scores(pairs, 1, f), seed) for f in field_names]
    by_category: dict[str, list[Pair]] = {}
    for x, y in pairs:
        by_category.setdefault(x[0].category or y[0].category or "-", []).append((x, y))
    categories = [_delta(c, _scores(ps, 0), _scores(ps, 1), seed) for c, ps in sorted(by_category.items())]
    comparison = Comparison(
        a=a,
        b=b,
        overall=overall,
        fields=fields,
        categories=categories,
        right_at=right_at,
        only_a=sorted(set(by_a) - set(by_b)),
        only_b=sorted(set(by_b) - set(by_a)),
        relabelled=[i for i in same_id if by_a[i][0].expected != by_b[i][0].expected],
    )
    comparison.tokens, comparison.latency_p95 = cost_deltas(pairs, seed, latency_tolerance)
    for x, y in pairs:
        right_x, right_y = group_right(x, right_at), group_right(y, right_at)
        if right_x == right_y:
            continue

        def field_right(group: list[SampleResult], f: str) -> bool:
            return _mean([r.scores.get(f, 0.0) for r in group]) >= 1.0

        changed = tuple(
            f for f in field_names if field_right(x, f) == right_x and field_right(y, f) == right_y
        )
        first_x, first_y = x[0], y[0]
        flip = Flip(
            first_x.sample_id,
            first_x.category,
            _mean([r.score for r in x]),
            _mean([r.score for r in y]),
            changed,
            first_x.expected,
            first_x.got,
            first_y.got,
        )
        (comparison.regressions if right_x else comparison.fixes).append(flip)
    return comparison


def compare_runs(
    ref_a: str | Path,
    ref_b: str | Path,
    base_dir: Path,
    *,
    right_at: float = RIGHT_AT,
    latency_tolerance: float = LATENCY_TOLERANCE,
) -> Comparison:
    return compare_results(
        load_run(ref_a, base_dir),
        load_run(ref_b, base_dir),
        right_at=right_at,
        latency_tolerance=latency_tolerance,
    )


def _ci(d: Delta) -> str:
    return estimate_interval(d.diff, digits=3, sep="..", signed=True)


def _rows(deltas: Sequence[Delta], with_n: bool = False, clean: Any = str) -> list[list[object]]:
    rows: list[list[object]] = []
    for d in deltas:
        row: list[object] = [
            clean(d.name),
            f"{d.a:.3f}",
            f"{d.b:.3f}",
            f"{d.diff.mean:+.3f}",
            _ci(d),
            d.verdict,
        ]
        if with_n:
            row.insert(1, d.diff.n)
        rows.append(row)
    return rows


def _flip_rows(flips: Sequence[Flip], clean: Any = str) -> list[list[object]]:
    rows: list[list[object]] = []
    for f in flips:
        shown = f.fields[:3]
        detail = "; ".join(
            f"{name}: {f.got_a.get(name, '∅')!s:.24} → {f.got_b.get(name, '∅')!s:.24} (want {f.expected.get(name, '')!s:.24})"
            for name in shown
        )
        rows.append(
            [
                clean(f.sample_id),
                clean(f.category or "-"),
                f"{f.score_a:.2f} → {f.score_b:.2f}",
                clean(detail),
            ]
        )
    return rows


def _fmt_s(value: float | None) -> str:
    return f"{value:.2f}s" if value is not None else "-"


def render(comparison: Comparison, *, fmt: str = "simple") -> str:
    """The comparison as text tables; ``fmt="github"`` gives markdown.

    Names, labels, sample ids and answers come from files, servers and models: in Markdown they
    are escaped (no HTML, no links or emphasis), on a terminal control characters (ANSI and OSC
    sequences) are replaced."""
    c = comparison
    md = fmt == "github"
    clean = markdown_text if md else terminal_text
    head = "## " if md else ""
    lat_a, lat_b = c.a.latency(), c.b.latency()
    lines = [
        f"{'# ' if md else ''}compare: A = {clean(c.a.label)}  vs  B = {clean(c.b.label)}",
        "",
        f"suite {clean(c.b.suite)}: {c.overall.diff.n} paired samples; delta = B - A with a paired 95% CI; "
        f"right = score >= {c.right_at:g}",
    ]
    lines.extend(f"note: {clean(n)}" for n in c.notes())
    for side, run in (("A", c.a), ("B", c.b)):
        line = run.noise_line()
        if line:
            lines.append(f"noise {side}: {clean(line)}")
    headers = ["", "A", "B", "delta", "95% CI", "verdict"]
    lines += [
        "",
        f"{head}Overall and fields",
        "",
        tabulate(
            _rows([c.overall, *c.fields], clean=clean), headers=headers, tablefmt=fmt, disable_numparse=True
        ),
    ]
    if c.categories:
        lines += [
            "",
            f"{head}Categories",
            "",
            tabulate(
                _rows(c.categories, with_n=True, clean=clean),
                headers=["category", "n", *headers[1:]],
                tablefmt=fmt,
                disable_numparse=True,
            ),
        ]
    cost = [
        [side, _fmt_s(lat[0]), _fmt_s(lat[1]), len(run.timed()), f"{run.tokens_per_sample():.0f}"]
        for side, run, lat in (("A", c.a, lat_a), ("B", c.b, lat_b))
    ]
    lines += [
        "",
        f"{head}Latency and tokens",
        "",
        tabulate(
            cost,
            headers=["run", "latency p50", "latency p95", "timed answers", "tokens/sample"],
            tablefmt=fmt,
            disable_numparse=True,
        ),
    ]
    lines.extend(
        f"note: {note}" for side, run in (("A", c.a), ("B", c.b)) if (note := run.latency_note(side))
    )
    cost_text = cost_lines(c)
    if cost_text:
        lines += ["", *cost_text]
    flip_headers = ["sample", "category", "score A → B", "fields (A → B)"]
    lines += ["", f"{head}Right → wrong ({len(c.regressions)})", ""]
    lines.append(
        tabulate(_flip_rows(c.regressions, clean), headers=flip_headers, tablefmt=fmt, disable_numparse=True)
        if c.regressions
        else "none"
    )
    lines += ["", f"{head}Wrong → right ({len(c.fixes)})", ""]
    lines.append(
        tabulate(_flip_rows(c.fixes, clean), headers=flip_headers, tablefmt=fmt, disable_numparse=True)
        if c.fixes
        else "none"
    )
    lines += ["", clean(verdict_line(c)) if md else verdict_line(c)]
    lines.extend(clean(line) if md else line for line in cost_verdict_lines(c))
    text = "\n".join(lines) + "\n"
    return text if md else terminal_text(text)


def _cost_text(d: Delta) -> str:
    unit = " ms" if "latency" in d.name else ""
    return (
        f"{d.name.replace(' (ms)', '')} {d.a:.0f}{unit} → {d.b:.0f}{unit}, delta {d.diff.mean:+.0f}{unit} "
        f"(95% CI {estimate_interval(d.diff, digits=0, sep='..', signed=True)}, n={d.diff.n})"
    )


def cost_lines(c: Comparison) -> list[str]:
    """One line per cost measure over the paired samples, with its verdict: ``RISE`` when B is
    higher beyond its tolerance, ``lower`` when significantly lower, ``~ within tolerance`` for a
    significant latency rise smaller than the tolerance, ``~`` otherwise."""
    lines = []
    for d in (c.tokens, c.latency_p95):
        if d is None:
            continue
        if cost_rose(d):
            verdict = "RISE"
        elif d.significant:
            verdict = "lower" if d.diff.mean < 0 else f"~ within tolerance ({d.noise:.0f} ms)"
        else:
            verdict = "~"
        lines.append(f"{_cost_text(d)}: {verdict}")
    return lines


def cost_verdict_lines(c: Comparison) -> list[str]:
    """``COST REGRESSION: ...`` for each significant rise (``--fail-on-cost-regression`` exits 1 on them)."""
    return [f"COST REGRESSION: {_cost_text(d)}" for d in c.cost_rises()]


def verdict_line(c: Comparison) -> str:
    d = c.overall
    unlike = "" if c.like_for_like else f" [not like for like: A {c.a.mode}, B {c.b.mode}]"
    if c.regressed:
        return f"REGRESSION: overall {d.a:.3f} → {d.b:.3f}, delta {d.diff.mean:+.3f} (95% CI {_ci(d)}, n={d.diff.n}){unlike}"
    if d.within_noise:
        return (
            f"within noise: overall delta {d.diff.mean:+.3f} (95% CI {_ci(d)}, n={d.diff.n}) is smaller than "
            f"the runs' own noise (±{d.noise:.3f}){unlike}"
        )
    if d.significant:
        return f"improvement: overall {d.a:.3f} → {d.b:.3f}, delta {d.diff.mean:+.3f} (95% CI {_ci(d)}, n={d.diff.n}){unlike}"
    return f"no significant change: overall delta {d.diff.mean:+.3f} (95% CI {_ci(d)}, n={d.diff.n}){unlike}"


def baseline_failures(baseline: RunData, current: RunData) -> list[str]:
    """The ``--baseline`` gate: one reason when the overall score dropped significantly (and
    beyond the runs' noise), or when the two runs' modes differ and cannot be compared."""
    if baseline.suite != current.suite:
        return []
    if baseline.mode != current.mode:
        return [
            f"baseline {baseline.name} ran in {baseline.mode} mode and this run in {current.mode} mode: "
            "not like for like; make a new baseline in the same mode (--llm-deterministic on both or neither)"
        ]
    c = compare_results(baseline, current)
    if c.overall.diff.n == 0:
        return [f"baseline {baseline.name}: no samples in common with this run"]
    if not c.regressed:
        return []
    return [
        f"score dropped vs baseline {baseline.name}: {c.overall.a:.3f} → {c.overall.b:.3f} "
        f"(delta {c.overall.diff.mean:+.3f}, 95% CI {_ci(c.overall)}, n={c.overall.diff.n}; "
        f"{len(c.regressions)} sample(s) right → wrong)"
    ]
