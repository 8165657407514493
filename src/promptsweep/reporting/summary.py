"""Human-readable reports of an aggregate: terminal tables and ``summary.md``."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from tabulate import tabulate

from promptsweep.core.aggregate import Aggregate
from promptsweep.core.redact import markdown_text, terminal_text
from promptsweep.core.stats import Estimate

Escape = Callable[[str], str]


def _ci(e: Estimate) -> str:
    return f"{e.low:.2f}-{e.high:.2f}"


def _short(text: str, width: int = 40) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


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


def render_terminal(
    agg: Aggregate,
    weights: dict[str, float],
    *,
    run_dir: str | None,
    gate_failures: Sequence[str],
    threshold: float | None,
    fmt: str = "simple",
    worst: int = 5,
) -> str:
    """The summary pytest prints after a run: fields, categories, worst samples, verdict."""
    parts = [
        f"suite {agg.suite}: {agg.n} samples, overall {agg.overall.mean:.3f} "
        f"(95% CI {_ci(agg.overall)})" + (f", threshold {threshold:.3f}" if threshold is not None else ""),
        tabulate(field_rows(agg, weights), headers=["field", "weight", "score", "95% CI"], tablefmt=fmt),
    ]
    if len(agg.categories) > 1:
        parts.append(tabulate(category_rows(agg), headers=["category", "n", "score", "95% CI"], tablefmt=fmt))
    worst_table = worst_rows(agg, worst)
    if worst_table:
        parts.append(
            "worst samples:\n"
            + tabulate(worst_table, headers=["sample", "score", "expected", "got"], tablefmt=fmt)
        )
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
) -> str:
    """``summary.md``: the same content as the terminal, for a PR comment or a CI artifact.

    It goes to ``$GITHUB_STEP_SUMMARY``, which renders Markdown and some HTML: every value that
    comes from data, a suite or a model is escaped with ``markdown_text``.
    """
    md = markdown_text
    lines = [f"# {md(title)}", ""]
    verdict = "FAILED" if gate_failures else "passed"
    lines.append(
        f"**Overall {agg.overall.mean:.3f}** (95% CI {_ci(agg.overall)}, n={agg.n})"
        + (f", threshold {threshold:.3f}: gate {verdict}" if threshold is not None or gate_failures else "")
    )
    lines.extend(f"- {md(failure)}" for failure in gate_failures)
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
        tabulate(
            field_rows(agg, weights, md), headers=["field", "weight", "score", "95% CI"], tablefmt="github"
        ),
    ]
    if agg.categories:
        lines += [
            "",
            "## Categories",
            "",
            tabulate(category_rows(agg, md), headers=["category", "n", "score", "95% CI"], tablefmt="github"),
        ]
    worst_table = worst_rows(agg, 10, md)
    if worst_table:
        lines += [
            "",
            "## Worst samples",
            "",
            tabulate(worst_table, headers=["sample", "score", "expected", "got"], tablefmt="github"),
        ]
    if agg.errored:
        lines += ["", "## Errored samples", ""]
        lines.extend(f"- {md(r.sample_id)}: {md(str(r.error))}" for r in agg.errored)
    return "\n".join(lines) + "\n"
