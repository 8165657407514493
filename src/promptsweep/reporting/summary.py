"""Human-readable reports of an aggregate: terminal tables and ``summary.md``."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tabulate import tabulate

from promptsweep.core.answers.result import SampleResult, repeat_suffix
from promptsweep.core.io.redact import markdown_text, terminal_text
from promptsweep.core.measure.aggregate import Aggregate
from promptsweep.core.measure.stats import Estimate, NoiseSummary, estimate_interval
from promptsweep.core.neighbours.lookup import beats_lookup
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


UNSTABLE_HEADERS = ["sample", "scores", "distinct answers", "stability"]


def unstable_rows(agg: Aggregate, k: int | None = None, esc: Escape = terminal_text) -> list[list[object]]:
    """Samples whose repeats answered differently: each repeat's score, how many distinct
    answer texts, and the sample's stability (``stable`` when only the wording changed)."""
    rows: list[list[object]] = []
    classes = agg.stability()
    for group in agg.unstable()[:k]:
        scores = " / ".join("error" if r.errored else f"{r.score:.2f}" for r in group)
        sample = group[0].sample_id
        rows.append([esc(sample), scores, len({r.raw for r in group if not r.errored}), classes[sample]])
    return rows


def flaky_line(agg: Aggregate, policy: str = "warn") -> str | None:
    """``flaky samples: 2 of 6 (...)``: every flaky sample by id; None without repeats, without
    flaky samples, or when ``--promptsweep-flaky ignore``."""
    flaky = [group[0].sample_id for group in agg.flaky()]
    if agg.repeats < 2 or not flaky or policy == "ignore":
        return None
    effect = "they fail the gate" if policy == "fail" else "--promptsweep-flaky fail would fail the gate"
    return (
        f"flaky samples: {len(flaky)} of {agg.n} (parsed answers or pass/fail at {agg.right_at:g} changed "
        f"between repeats; {effect}): {', '.join(flaky)}"
    )


ANSWER_PROBLEMS = ("unparsed:", "truncated:", "outside the allowed values:")
"""How the lines of :func:`answer_problem_lines` start (the terminal colours them)."""


def _listed(results: Sequence[SampleResult], detail: Callable[[SampleResult], str] | None = None) -> str:
    shown = [f"{r.sample_id}{repeat_suffix(r.repeat)}" + (detail(r) if detail else "") for r in results[:5]]
    more = f" and {len(results) - 5} more" if len(results) > 5 else ""
    return ", ".join(shown) + more


def answer_problem_lines(agg: Aggregate) -> list[str]:
    """Answers that were not clean, counted and listed by sample: unparsed, cut at max_tokens
    (``finish_reason: length``), or with a field outside its allowed values (scored 0 there).
    A truncated answer is scored on what it said before the cut, so it must be visible."""
    answered = [r for r in agg.results if not r.errored]
    lines = []
    unparsed = [r for r in answered if r.parse_source == "none"]
    if unparsed:
        lines.append(
            f"unparsed: {len(unparsed)} of {agg.answers} answers could not be parsed: {_listed(unparsed)}"
        )
    cut = [r for r in answered if r.truncated]
    if cut:
        lines.append(
            f"truncated: {len(cut)} of {agg.answers} answers were cut at max_tokens (finish_reason: length); "
            f"raise max_tokens (the suite's llm: or the template's model_defaults:): {_listed(cut)}"
        )
    unlisted = [r for r in answered if r.unlisted]
    if unlisted:
        which = _listed(unlisted, lambda r: " (" + ", ".join(r.unlisted) + ")")
        lines.append(
            f"outside the allowed values: {len(unlisted)} of {agg.answers} answers gave a field none of its "
            f"values, scored 0 there: {which}"
        )
    return lines


def constant_line(constant: float | None, n: int) -> str | None:
    """The floor a score should be read against: what answering every sample with each
    field's most frequent label would score (a model below it has learned nothing usable)."""
    if constant is None:
        return None
    return f"a constant answer (each field's most frequent value) would score {constant:.3f} on these {n} samples"


LOOKUP_NOT_BEATEN = "the prompt does not beat the lookup"


def lookup_line(lookup: float | None, prompt: float, n: int, difference: Estimate | None) -> str | None:
    """The higher floor, in one line: what copying each sample's nearest train sample's labels
    scores, the prompt's score, and their paired difference *prompt - lookup* with its 95% CI.
    A prompt whose interval is not wholly above 0 is said, in that line, not to beat the lookup.

    e.g. ``copying the nearest train sample's labels (no model call) scores 0.640 on these 64
    samples; this prompt 0.145: -0.495 (95% CI -0.58..-0.41): the prompt does not beat the lookup``
    """
    if lookup is None or difference is None:
        return None
    verdict = "the prompt beats the lookup" if beats_lookup(difference) else LOOKUP_NOT_BEATEN
    interval = estimate_interval(difference, sep="..", signed=True)
    return (
        f"copying the nearest train sample's labels (no model call) scores {lookup:.3f} on these {n} samples; "
        f"this prompt {prompt:.3f}: {difference.mean:+.3f} (95% CI {interval}): {verdict}"
    )


def calls_saved_line(agg: Aggregate) -> str | None:
    """How many answers a gated lookup gave without a call, e.g. ``answered 39 of 48 without a call``."""
    if not agg.lookup_answers:
        return None
    return f"answered {agg.lookup_answers} of {agg.answers} without a call (copied from the example pool)"


def floor_warning(
    threshold: float | None, constant: float | None, overall: Estimate | None = None
) -> str | None:
    """A gate at or below the constant floor passes a prompt that has learned nothing usable:
    say so next to the verdict, and propose a threshold from this run when it supports one."""
    if threshold is None or constant is None or threshold > constant:
        return None
    text = (
        f"warning: the gate's threshold {threshold:.3f} is at or below the constant answer's "
        f"{constant:.3f}, so it passes a prompt no better than answering the same thing every time"
    )
    if overall is None:
        return f"{text}; raise thresholds.overall (or --min-score) above {constant:.3f}"
    proposed = math.floor(overall.low * 100) / 100
    if proposed > constant:
        return (
            f"{text}; this run's 95% interval starts at {overall.low:.3f}, above the floor: "
            f"thresholds.overall: {proposed:.2f} would gate on what this prompt reliably scores"
        )
    if overall.mean > constant:
        return (
            f"{text}; this run's score {overall.mean:.3f} is above the floor but its interval reaches "
            f"{overall.low:.3f}: more samples would let a gate above {constant:.3f} hold"
        )
    return (
        f"{text}; this run's score {overall.mean:.3f} is not above it either: improve the prompt "
        "(--optimize) before raising the gate"
    )


@dataclass(frozen=True)
class RunFacts:
    """What a run's summary says beside its scores: the same facts for the terminal and for
    summary.md (one object, so the two cannot be handed different ones)."""

    gate_failures: Sequence[str] = ()
    threshold: float | None = None
    deterministic: bool = False
    constant: float | None = None
    """The constant answer's score on the same samples."""
    cost: str | None = None
    """The cost gate's line (:func:`promptsweep.core.measure.gate.cost_line`)."""
    flaky: str = "warn"
    """The ``--promptsweep-flaky`` policy (``ignore`` leaves the flaky samples out)."""
    lookup: float | None = None
    """The lookup floor's score on the same samples."""
    lookup_difference: Estimate | None = None
    elapsed_s: float | None = None
    """The run's wall time, for its calls per minute."""


def _calls(agg: Aggregate) -> int:
    return sum(1 for r in agg.results if not r.errored and not r.from_cache and r.answered_by == "model")


def server_json(agg: Aggregate, elapsed_s: float | None) -> dict[str, Any]:
    """metrics.json's account of the server's work: calls made, the prompt cache's share, pace."""
    calls = _calls(agg)
    return {
        "calls": calls,
        "cached_share": round(agg.cached_tokens / agg.prompt_tokens, 4) if agg.prompt_tokens else None,
        "elapsed_s": None if elapsed_s is None else round(elapsed_s, 1),
        "calls_per_minute": round(calls / (elapsed_s / 60), 2) if elapsed_s and calls else None,
    }


def tokens_line(agg: Aggregate, elapsed_s: float | None) -> str:
    """Where the server's time went: prompt tokens and how many its cache spared, generated
    tokens, and the calls made per minute of the run."""
    share = f", {agg.cached_tokens / agg.prompt_tokens:.0%}" if agg.prompt_tokens else ""
    text = f"tokens prompt {agg.prompt_tokens} (cached {agg.cached_tokens}{share}) completion {agg.completion_tokens}"
    calls = _calls(agg)
    if elapsed_s and calls:
        text += f"; {calls / (elapsed_s / 60):.1f} calls/min"
    return text


def render_terminal(
    agg: Aggregate,
    weights: dict[str, float],
    facts: RunFacts,
    *,
    run_dir: str | None,
    fmt: str = "simple",
    worst: int = 5,
    label: str | None = None,
) -> str:
    """The summary pytest prints after a run: fields, categories, worst samples, noise, verdict.

    ``facts`` are what the run found beside its scores (:class:`RunFacts`)."""
    gate_failures, threshold, constant, cost = (
        facts.gate_failures,
        facts.threshold,
        facts.constant,
        facts.cost,
    )
    lookup, lookup_difference, flaky, deterministic = (
        facts.lookup,
        facts.lookup_difference,
        facts.flaky,
        facts.deterministic,
    )
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
    extras.append(tokens_line(agg, facts.elapsed_s))
    if agg.from_cache:
        extras.append(f"{agg.from_cache} answers from the response cache")
    saved = calls_saved_line(agg)
    if saved:
        extras.append(saved)
    parts.append(", ".join(extras))
    parts.extend(terminal_text(line) for line in answer_problem_lines(agg))
    if cost:
        parts.append(cost)
    floor = constant_line(constant, agg.n)
    if floor:
        parts.append(floor)
    copied = lookup_line(lookup, agg.overall.mean, agg.n, lookup_difference)
    if copied:
        parts.append(copied)
    below_floor = floor_warning(threshold, constant, agg.overall)
    if below_floor:
        parts.append(below_floor)
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
            + tabulate(unstable, headers=UNSTABLE_HEADERS, tablefmt=fmt)
        )
    flaky_text = flaky_line(agg, flaky)
    if flaky_text:
        parts.append(terminal_text(flaky_text))
    for r in agg.errored[:5]:
        parts.append(f"ERRORED {terminal_text(r.sample_id)}: {terminal_text(str(r.error))}")
    if run_dir:
        parts.append(f"artifacts: {run_dir}")
    if gate_failures:
        parts.append("GATE FAILED: " + terminal_text("; ".join(gate_failures)))
    elif threshold is not None:
        parts.append("gate passed")
    return "\n\n".join(parts)


def render_markdown(agg: Aggregate, weights: dict[str, float], facts: RunFacts, *, title: str) -> str:
    """``summary.md``: the same content as the terminal, for a PR comment or a CI artifact.

    It goes to ``$GITHUB_STEP_SUMMARY``, which renders Markdown and some HTML: every value that
    comes from data, a suite or a model is escaped with ``markdown_text``.
    """
    md = markdown_text
    gate_failures, threshold, constant, cost = (
        facts.gate_failures,
        facts.threshold,
        facts.constant,
        facts.cost,
    )
    lookup, lookup_difference, flaky, deterministic = (
        facts.lookup,
        facts.lookup_difference,
        facts.flaky,
        facts.deterministic,
    )
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
    copied = lookup_line(lookup, agg.overall.mean, agg.n, lookup_difference)
    if copied:
        lines += ["", f"For reference, {copied}."]
    below_floor = floor_warning(threshold, constant, agg.overall)
    if below_floor:
        lines += ["", f"**Warning**: {md(below_floor.removeprefix('warning: '))}"]
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
        f"{latency}tokens: prompt {agg.prompt_tokens} (cached {agg.cached_tokens}), completion {agg.completion_tokens}"
        + (f"; {calls_saved_line(agg)}" if agg.lookup_answers else ""),
        *(["", md(cost)] if cost else []),
        *(line for problem in answer_problem_lines(agg) for line in ("", md(problem))),
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
    unstable = unstable_rows(agg, esc=md)
    if unstable:
        lines += [
            "",
            "## Answers that changed between repeats",
            "",
            tabulate(unstable, headers=UNSTABLE_HEADERS, tablefmt="github"),
        ]
    flaky_groups = agg.flaky() if agg.repeats > 1 else []
    if flaky_groups:
        effect = {"fail": "they fail the gate", "warn": "a warning", "ignore": "ignored"}.get(flaky, flaky)
        lines += [
            "",
            f"## Flaky samples ({len(flaky_groups)} of {agg.n})",
            "",
            f"Parsed answers or pass/fail (score >= {agg.right_at:g}) changed between repeats; "
            f"--promptsweep-flaky {md(flaky)}: {effect}.",
            "",
        ]
        lines.extend(
            f"- {md(g[0].sample_id)}: " + " / ".join("error" if r.errored else f"{r.score:.2f}" for r in g)
            for g in flaky_groups
        )
    if agg.errored:
        lines += ["", "## Errored samples", ""]
        lines.extend(f"- {md(r.sample_id)}: {md(str(r.error))}" for r in agg.errored)
    return "\n".join(lines) + "\n"
