"""What the terminal says of a search: the ranking, the floors and the verdicts on the test split,
the candidate families, and what was written (or why nothing was)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tabulate import tabulate

from promptsweep.optimize.families import beat_lookup_sentence, family_rows, lookup_beat_every_prompt
from promptsweep.optimize.search import SearchOutcome
from promptsweep.optimize.space import SearchSpace
from promptsweep.optimize.strategies import BASELINE
from promptsweep.optimize.winner import SearchContext, relative, shown, validate_command, why_sentence


def summary_lines(
    outcome: SearchOutcome, space: SearchSpace, ctx: SearchContext, winner_path: Path | None, top: int = 8
) -> list[str]:
    """The terminal summary: the ranking (finalists apart from the pruned, n on every row), the
    dimension effects, the verdict against the baseline, and what was written."""
    lines = [f"run dir: {shown(ctx.run_dir, ctx.invocation_dir)}"]
    grid = len(space.candidates()) * len(space.validation_ids)
    cand_calls = outcome.calls - outcome.baseline_calls
    lines.append(
        f"{ctx.strategy}: {cand_calls} candidate calls of a {grid}-call grid ({cand_calls / max(grid, 1):.1%}), "
        f"+ {outcome.baseline_calls} baseline calls (its noise-probe repeats included) + {outcome.test_calls} on the "
        f"test split; took {outcome.elapsed_s / 60:.1f} min "
        f"(estimated {outcome.estimated_s / 60:.1f} min)"
    )
    lines.append(f"server: {outcome.tokens.describe(outcome.elapsed_s)}")
    if outcome.stopped:
        lines.append(f"stopped early: {outcome.stopped}")
    errored = {name: s.errored for name, s in outcome.stats.items() if s.errored}
    if errored:
        worst = ", ".join(
            f"{name} ({count})" for name, count in sorted(errored.items(), key=lambda i: -i[1])[:3]
        )
        lines.append(f"{sum(errored.values())} calls errored and scored 0 (results.jsonl has why): {worst}")
    sel = outcome.selection
    if sel is None:
        return [*lines, "no candidate finished a call"]
    rows: list[list[Any]] = []
    finalists = [r for r in sel.ranking if r.finalist]
    pruned = [r for r in sel.ranking if not r.finalist]
    for label, group, limit in (("finalist", finalists, top), ("pruned", pruned, max(3, top // 2))):
        for r in group[:limit]:
            stats = outcome.stats.get(r.candidate)
            interval = (
                f"{r.interval.low:.3f}-{r.interval.high:.3f}" if r.interval and r.interval.n >= 2 else "—"
            )
            # "winner" only for a candidate that beat the bar; the best of a search that did not is "best".
            best_mark = "winner" if outcome.promoted else "best"
            mark = best_mark if r.candidate == sel.winner else ("tie" if r.candidate in sel.tied else "")
            status = mark or (f"pruned in round {r.pruned_round}" if r.pruned_round else label)
            tokens = stats.tokens_per_call if stats else None
            p50 = stats.latency_p50 if stats else None
            rows.append([r.candidate, f"{r.mean:.3f}", interval, r.samples_seen,
                         "" if tokens is None else f"{tokens:.0f}", "" if p50 is None else f"{p50:.1f}", status])  # fmt: skip
        if len(group) > limit:
            more = "finalists" if label == "finalist" else "pruned"
            rows.append([f"... {len(group) - limit} more {more}", "", "", "", "", "", ""])
    base = outcome.observations.prefix(BASELINE)
    if base:
        stats = outcome.stats.get(BASELINE)
        tokens = stats.tokens_per_call if stats else None
        p50 = stats.latency_p50 if stats else None
        rows.append([f"{BASELINE} ({space.baseline.label})", f"{sum(base) / len(base):.3f}", "", len(base),
                     "" if tokens is None else f"{tokens:.0f}", "" if p50 is None else f"{p50:.1f}", "reference"])  # fmt: skip
    lines.append(tabulate(rows, headers=["candidate", "mean", "95% CI", "n", "tokens/call", "p50 s", ""]))
    if outcome.effects_note:
        lines.append(f"effects: {outcome.effects_note}")
    if outcome.effects:
        biggest = sorted(outcome.effects, key=lambda item: -abs(item[1].mean))[:8]
        lines.append(
            f"effects (screening round, n={outcome.effects[0][1].n} samples, vs each dimension's first value; "
            "simultaneous intervals): "
            + ", ".join(f"{name}: {e.mean:+.2f} ({e.low:+.2f}..{e.high:+.2f})" for name, e in biggest)
        )
    why = why_sentence(outcome, space)
    if why:
        lines.append(f"why: {why}")
    if ctx.deterministic:
        lines.append(
            "deterministic mode (cache_prompt off, one request at a time): no noise probe, exact ties only"
        )
    elif outcome.noise_pairs:
        lines.append(
            f"server noise: {outcome.noise_agree} of {outcome.noise_pairs} repeated baseline answers scored the same "
            f"(per-call sd {outcome.observations.noise_sd:.3f}); ties within ±{sel.margin:.3f} go to the cheaper prompt"
        )
    lines.extend(_floor_lines(outcome, space, sel.winner, written=winner_path is not None))
    if outcome.stability is not None:
        lines.append(f"stability: {outcome.stability.describe()}")
    if outcome.power is not None:
        lines.append(f"power: {outcome.power.describe()}")
    if outcome.verdict:
        lines.append(
            f"selection (validation, where {sel.winner} was chosen; optimistic): "
            f"vs baseline {outcome.verdict.describe()}"
        )
    lines.extend(family_lines(outcome, sel.winner))
    lookup = outcome.test_verdicts.get("lookup")
    if lookup is not None and lookup.difference.high < 0:
        lines.append(
            f"{sel.winner} is significantly worse than the lookup: copying the nearest train sample's labels "
            f"(no model call) scores higher on the test split ({-lookup.difference.mean:+.3f})"
        )
    elif lookup is not None and not lookup.significant:
        lines.append(
            f"{sel.winner} does not beat the lookup (the nearest train sample's labels, no model call) on the "
            f"test split: {lookup.difference.mean:+.3f}, interval includes 0"
        )
    if winner_path:
        lines.append(f"wrote {relative(winner_path, ctx.invocation_dir)} ({outcome.promotion_reason})")
        lines.append(f"score it: {validate_command(ctx, winner_path)}")
    elif not outcome.complete:
        lines.append(
            "search incomplete: no winner file written; the best candidate is in "
            f"{shown(ctx.run_dir / 'best_candidate.yaml', ctx.invocation_dir)}"
        )
    else:
        lines.append(f"not written: {outcome.promotion_reason or 'no test-split comparison'}; "
                     f"the best candidate is in {shown(ctx.run_dir / 'best_candidate.yaml', ctx.invocation_dir)}")  # fmt: skip
    lines.append(ship_sentence(outcome, space, ctx, winner_path))
    return lines


def ship_sentence(
    outcome: SearchOutcome, space: SearchSpace, ctx: SearchContext, winner_path: Path | None
) -> str:
    """The summary's last line: what to ship and why, in one sentence."""
    baseline = space.baseline.label
    sel = outcome.selection
    if sel is None or not outcome.complete:
        return (
            f"ship: keep {baseline}; the search did not finish ({outcome.stopped or 'no candidate answered'})"
        )
    verdict = outcome.test_verdicts.get("baseline")
    if winner_path is not None and verdict is not None:
        d = verdict.difference
        calls = next((f.calls_per_answer for f in outcome.families if f.member == sel.winner), None)
        cost = (
            "with no model call"
            if calls == 0
            else f"at {calls:.2f} calls per answer"
            if calls is not None
            else ""
        )
        stable = f", chosen in {outcome.stability.share:.0%} of resamples" if outcome.stability else ""
        return (
            f"ship: {relative(winner_path, ctx.invocation_dir)} ({sel.winner}) {cost}: it beats {baseline} on "
            f"{d.n} test samples no decision read by {d.mean:+.3f} (95% CI {d.low:+.3f} to {d.high:+.3f}){stable}"
        )
    return f"ship: keep {baseline}; {outcome.promotion_reason or 'no test-split comparison was made'}"


def family_lines(outcome: SearchOutcome, winner: str) -> list[str]:
    """The family table (each family's best, chosen on validation, on the test split, with its
    calls per answer) and, when a no-call kNN vote scored above the winner there, that sentence."""
    if not outcome.families:
        return []
    table = tabulate(
        family_rows(outcome.families),
        headers=[
            "family", "best member", "validation", f"test (n={outcome.test_n})", "- lookup (test, 95% CI)", "Holm p", "calls/answer",
        ],
        disable_numparse=True,
    )  # fmt: skip
    lines = [f"candidate families (best of each chosen on validation):\n{table}"]
    sentence = beat_lookup_sentence(outcome.families)
    if sentence:
        lines.append(sentence)
    d = outcome.knn_vs_winner
    reference = outcome.knn_reference or winner
    knn = next((f for f in outcome.families if f.member.startswith("knn")), None)
    if knn is not None and knn.test_mean is not None and d is not None and d.n > 0 and d.mean > 0:
        # "beat" only when the interval says so, and "every prompt" only when every family's best
        # was beaten too (another family may score above the lookup while the winner does not).
        significant = d.n >= 2 and d.low > 0
        word = "significant" if significant else "not significant"
        if lookup_beat_every_prompt(outcome.families):
            lead = "a lookup beat every prompt"
        elif significant:
            lead = f"a lookup beat {'the winner' if reference == winner else 'the best prompt'}"
        else:
            lead = f"a lookup scored above {'the winner' if reference == winner else 'the best prompt'}, within noise"
        lines.append(
            f"{lead}: the {knn.member[3:]}-nearest vote (no call) scores {knn.test_mean:.3f} "
            f"on the test split, {d.mean:+.3f} over {reference} (95% CI {d.low:+.3f} to {d.high:+.3f}, {word})"
        )
    return lines


def _floor_lines(outcome: SearchOutcome, space: SearchSpace, winner: str, *, written: bool) -> list[str]:
    """Scores on the test split beside both floors, then the verdicts there. The search's best is
    called the winner only when it was written; otherwise it is the best candidate."""
    role = "winner" if written else "best candidate"
    lines: list[str] = []
    floors = outcome.validation_floors
    if floors is not None and floors.constant_mean is not None:
        lookup = f", lookup {floors.lookup_mean:.3f}" if floors.lookup_mean is not None else ""
        lines.append(
            f"floors on the {len(floors.constant)} validation samples: constant answer {floors.constant_mean:.3f}{lookup}"
        )
    test = outcome.test_floors
    if test is None:
        return lines
    scores = {name: sum(v) / len(v) for name, v in outcome.test_scores.items() if v}
    parts = [f"constant answer {test.constant_mean:.3f}"]
    if test.lookup_mean is not None:
        parts.append(f"lookup (nearest train sample's labels, no call) {test.lookup_mean:.3f}")
    if BASELINE in scores:
        parts.append(f"baseline {space.baseline.label} {scores[BASELINE]:.3f}")
    if winner in scores:
        parts.append(f"{role} {winner} {scores[winner]:.3f}")
    lines.append(f"test split ({outcome.test_n} samples no decision read): " + ", ".join(parts))
    for name, verdict in outcome.test_verdicts.items():
        lines.append(f"{role} vs {name} on the test split: {verdict.describe()}")
    if outcome.unseen_labels:
        lines.append(f"{outcome.unseen_labels} test samples have a label no train sample has")
    return lines
