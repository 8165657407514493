"""Human-readable reports of an aggregate: terminal tables and ``summary.md``."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from tabulate import tabulate

from promptsweep.core.aggregate import Aggregate
from promptsweep.core.redact import markdown_text, terminal_text
from promptsweep.core.stats import Estimate, NoiseSummary, estimate_interval
from promptsweep.reporting.agreement import judge_line

Escape = Callable[[str], str]


def _ci(e: Estimate) -> str:
    return estimate_interval(e)


def _short(text: str, width: int = 40) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


FIELD_HEADERS = ["field", "weight", "score", "95% CI"]
CATEGORY_HEADERS = ["category", "n", "score", "95% CI"]
WORST_HEADERS = ["sample", "score", "expected", "got"]


def _table(rows: list[list[object]], headers: list[str], fmt: str) -> str:
    """Numbers as formatted (``1.000`` stays ``1.000``), right-aligned; text left-aligned."""
    align = ["right" if i and headers[i] in ("weight", "n", "score") else "left" for i in range(len(headers))]
    return tabulate(rows, headers=headers, tablefmt=fmt, disable_numparse=True, colalign=align)


def noise_line(noise: NoiseSummary | None, *, repeats: int = 1, deterministic: bool = False) -> str | None:
    """The run's noise in one sentence, when it asked samples more than once or ran in the
    deterministic mode; None otherwise (a single answer per sample says nothing about noise).

    e.g. ``answers reproduce in 41 of 64 samples (3 answers each); prediction noise is 12% of
    the score variance; the smallest difference this run can detect is ±0.031``.
    """
    mode = "deterministic mode: " if deterministic else ""
    if noise is not None and noise.measured:
        each = f"{repeats} answers each" if noise.repeated == noise.samples else f"up to {repeats} answers"
        return (
            f"{mode}answers reproduce in {noise.agree} of {noise.repeated} samples ({each}); "
            f"prediction noise is {noise.noise_share:.0%} of the score variance; "
            f"the smallest difference this run can detect is ±{noise.detectable:.3f}"
        )
    if deterministic:
        return (
            f"{mode}cache_prompt off, one request at a time, so the same request gives the same answer; "
            "noise not measured (add --llm-repeats 2 to check)"
        )
    return None


def field_rows(agg: Aggregate, weights: dict[str, float], esc: Escape = terminal_text) -> list[list[object]]:
    rows: list[list[object]] = [
        [esc(name), f"{weights.get(name, 0.0):.2f}", f"{e.mean:.3f}", _ci(e)]
        for name, e in agg.fields.items()
    ]
    rows.append(["overall", "1.00", f"{agg.overall.mean:.3f}", _ci(agg.overall)])
    return rows


def category_rows(agg: Aggregate, esc: Escape = terminal_text) -> list[list[object]]:
    return [[esc(name), e.n, f"{e.mean:.3f}", _ci(e)] for name, e in agg.categories.items()]


def worst_rows(agg: Aggregate, k: int = 5, esc: Escape = terminal_text) -> list[list[object]]:
    """The worst samples; values from data and model answers pass through ``esc`` (control
    characters out for a terminal, Markdown and HTML made inert for ``summary.md``)."""
    rows: list[list[object]] = []
    for r in agg.worst(k):
        wrong = [f for f, s in r.scores.items() if s < 1.0]
        expected = "; ".join(f"{f}={r.expected.get(f, '')}" for f in wrong[:3])
        got = "; ".join(f"{f}={r.got.get(f, '∅')}" for f in wrong[:3])
        rows.append(
            [esc(r.sample_id), f"{r.score:.2f}", esc(_short(expected)), esc(_short(got or _short(r.raw, 30)))]
        )
    return rows


def unstable_rows(agg: Aggregate, k: int | None = None) -> list[list[object]]:
    """Samples whose repeats answered differently: each repeat's score, and how many distinct answers."""
    rows: list[list[object]] = []
    for group in agg.unstable()[:k]:
        scores = " / ".join("error" if r.errored else f"{r.score:.2f}" for r in group)
        rows.append([group[0].sample_id, scores, len({r.raw for r in group if not r.errored})])
    return rows


def constant_line(constant: float | None, n: int) -> str | None:
    """The floor a score should be read against: what answering every sample with each
    field's most frequent label would score (a model below it has learned nothing usable)."""
    if constant is None:
        return None
    return f"a constant answer (each field's most frequent value) would score {constant:.3f} on these {n} samples"


def render_terminal(
    agg: Aggregate,
    weights: dict[str, float],
    *,
    run_dir: str | None,
    gate_failures: Sequence[str],
    threshold: float | None,
    fmt: str = "simple",
    worst: int = 5,
    deterministic: bool = False,
    label: str | None = None,
    constant: float | None = None,
) -> str:
    """The summary pytest prints after a run: fields, categories, worst samples, noise, verdict."""
    answers = f", {agg.repeats} answers each" if agg.repeats > 1 else ""
    parts = [
        f"suite {label or agg.suite}: {agg.n} samples{answers}, overall {agg.overall.mean:.3f} "
        f"(95% CI {_ci(agg.overall)})" + (f", threshold {threshold:.3f}" if threshold is not None else ""),
        _table(field_rows(agg, weights), FIELD_HEADERS, fmt),
    ]
    if len(agg.categories) > 1:
        parts.append(_table(category_rows(agg), CATEGORY_HEADERS, fmt))
    worst_table = worst_rows(agg, worst)
    if worst_table:
        parts.append("worst samples:\n" + _table(worst_table, WORST_HEADERS, fmt))
    extras = (
        [f"latency p50 {agg.latency_p50:.2f}s p95 {agg.latency_p95:.2f}s"]
        if agg.latency_p50 is not None
        else []
    )
    extras.append(
        f"tokens prompt {agg.prompt_tokens} (cached {agg.cached_tokens}) completion {agg.completion_tokens}"
    )
    if agg.from_cache:
        extras.append(f"{agg.from_cache} answers from the response cache")
    if agg.unparsed:
        extras.append(f"{agg.unparsed} answers could not be parsed")
    parts.append(", ".join(extras))
    floor = constant_line(constant, agg.n)
    if floor:
        parts.append(floor)
    judged = judge_line(agg.results)
    if judged:
        parts.append(f"judged: {terminal_text(judged)}")
    noise = noise_line(agg.noise, repeats=agg.repeats, deterministic=deterministic)
    if noise:
        parts.append(f"noise: {noise}")
    unstable = unstable_rows(agg, worst)
    if unstable:
        parts.append(
            "answers that changed between repeats:\n"
            + tabulate(unstable, headers=["sample", "scores", "distinct answers"], tablefmt=fmt)
        )
    for r in agg.errored[:5]:
        parts.append(f"ERRORED {terminal_text(r.sample_id)}: {terminal_text(str(r.error))}")
    if run_dir:
        parts.append(f"artifacts: {run_dir}")
    if gate_failures:
        parts.append("GATE FAILED: " + terminal_text("; ".join(gate_failures)))
    elif threshold is not None:
        parts.append("gate passed")
    return "\n\n".join(parts)


def render_markdown(
    agg: Aggregate,
    weights: dict[str, float],
    *,
    title: str,
    gate_failures: Sequence[str],
    threshold: float | None,
    deterministic: bool = False,
    constant: float | None = None,
) -> str:
    """``summary.md``: the same content as the terminal, for a PR comment or a CI artifact.

    It goes to ``$GITHUB_STEP_SUMMARY``, which renders Markdown and some HTML: every value that
    comes from data, a suite or a model is escaped with ``markdown_text``.
    """
    md = markdown_text
    lines = [f"# {md(title)}", ""]
    verdict = "FAILED" if gate_failures else "passed"
    answers = f", {agg.repeats} answers each" if agg.repeats > 1 else ""
    lines.append(
        f"**Overall {agg.overall.mean:.3f}** (95% CI {_ci(agg.overall)}, n={agg.n}{answers})"
        + (f", threshold {threshold:.3f}: gate {verdict}" if threshold is not None or gate_failures else "")
    )
    lines.extend(f"- {md(failure)}" for failure in gate_failures)
    floor = constant_line(constant, agg.n)
    if floor:
        lines += ["", f"For reference, {floor}."]
    judged = judge_line(agg.results)
    if judged:
        lines += ["", f"Judged: {md(judged)}"]
    noise = noise_line(agg.noise, repeats=agg.repeats, deterministic=deterministic)
    if noise:
        lines += ["", f"Noise: {noise}"]
    latency = (
        f"latency p50 {agg.latency_p50:.2f}s, p95 {agg.latency_p95:.2f}s; "
        if agg.latency_p50 is not None and agg.latency_p95 is not None
        else ""
    )
    lines += [
        "",
        f"{latency}tokens: prompt {agg.prompt_tokens} (cached {agg.cached_tokens}), completion {agg.completion_tokens}",
        "",
        "## Fields",
        "",
        _table(field_rows(agg, weights, md), FIELD_HEADERS, "github"),
    ]
    if agg.categories:
        lines += [
            "",
            "## Categories",
            "",
            _table(category_rows(agg, md), CATEGORY_HEADERS, "github"),
        ]
    worst_table = worst_rows(agg, 10, md)
    if worst_table:
        lines += [
            "",
            "## Worst samples",
            "",
            _table(worst_table, WORST_HEADERS, "github"),
        ]
    unstable = unstable_rows(agg)
    if unstable:
        lines += [
            "",
            "## Answers that changed between repeats",
            "",
            tabulate(unstable, headers=["sample", "scores", "distinct answers"], tablefmt="github"),
        ]
    if agg.errored:
        lines += ["", "## Errored samples", ""]
        lines.extend(f"- {md(r.sample_id)}: {md(str(r.error))}" for r in agg.errored)
    return "\n".join(lines) + "\n"
