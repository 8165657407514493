"""What a search leaves behind: ``all_results.json``, the terminal summary, and the winner file.

A winner becomes ``prompt_templates/<id>_vN.yaml`` only when the search completed and, on the
test split no decision read, it beats what ``search.must_beat`` names (the baseline, and the
no-call lookup if listed) with a paired 95% interval above 0 (or above ``--optimize-min-gain``);
otherwise the best candidate is kept in the run directory and the summary says why. Every
score is shown beside the constant-answer and lookup floors. Every path in
a winner file is relative (the pool's dataset to the file itself, the run directory to the
project), so the file means the same on every machine.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from tabulate import tabulate

from promptsweep.core.io.files import write_text_atomic, write_text_exclusive
from promptsweep.core.io.load import load_yaml_file
from promptsweep.optimize.confirm import Floors
from promptsweep.optimize.families import beat_lookup_sentence, family_rows, lookup_beat_every_prompt
from promptsweep.optimize.search import SearchOutcome
from promptsweep.optimize.space import SearchSpace
from promptsweep.optimize.strategies import BASELINE

ALL_RESULTS_SCHEMA_VERSION = 2
_VERSION_FILE = re.compile(r"^(?P<id>.+)_v(?P<n>\d+)\.ya?ml$")


@dataclass(frozen=True)
class SearchContext:
    """Where the search ran: for provenance lines and paths relative to the project."""

    suite_name: str
    project_root: Path
    invocation_dir: Path
    run_dir: Path
    model: str | None
    strategy: str
    seed: int
    budget: str | None
    split_sha256: str
    suite_path: Path
    deterministic: bool = False
    """``--llm-deterministic``: answers repeat exactly, so no noise probe ran."""
    must_beat: tuple[str, ...] = ("baseline",)


def relative(path: Path, start: Path) -> str:
    """``path`` relative to ``start`` when it can be (always POSIX separators), else as given."""
    try:
        return Path(os.path.relpath(path.resolve(), start.resolve())).as_posix()
    except ValueError:
        return str(path)


def shown(path: Path, start: Path) -> str:
    """How a path is printed: relative to where the user is when below it, else as it is."""
    rel = relative(path, start)
    return str(path) if rel.startswith("..") else rel


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, digits)


def candidate_rows(outcome: SearchOutcome, space: SearchSpace, seed: int) -> list[dict[str, Any]]:
    """One row per candidate seen (finalists first), plus the baseline last."""
    from promptsweep.core.measure.stats import mean_interval

    rows: list[dict[str, Any]] = []
    ranking = outcome.selection.ranking if outcome.selection else ()
    names = {c.id: c for c in space.candidates()}
    for r in ranking:
        stats = outcome.stats.get(r.candidate)
        rows.append(
            {
                "candidate": r.candidate,
                "finalist": r.finalist,
                "pruned_round": r.pruned_round,
                "n": r.samples_seen,
                "mean": _round(r.mean),
                "ci95": [_round(r.interval.low), _round(r.interval.high)] if r.interval else None,
                "tokens_per_call": _round(stats.tokens_per_call, 1) if stats else None,
                "latency_p50_s": _round(stats.latency_p50, 2) if stats else None,
                "errored": stats.errored if stats else 0,
                "dimensions": names[r.candidate].dimensions(space) if r.candidate in names else None,
            }
        )
    base = outcome.observations.prefix(BASELINE)
    if base:
        stats = outcome.stats.get(BASELINE)
        interval = mean_interval(base, seed=seed)
        rows.append(
            {
                "candidate": BASELINE,
                "finalist": None,
                "pruned_round": None,
                "n": len(base),
                "mean": _round(interval.mean),
                "ci95": [_round(interval.low), _round(interval.high)],
                "tokens_per_call": _round(stats.tokens_per_call, 1) if stats else None,
                "latency_p50_s": _round(stats.latency_p50, 2) if stats else None,
                "errored": stats.errored if stats else 0,
                "dimensions": {"template": space.baseline.label},
            }
        )
    return rows


def why_sentence(outcome: SearchOutcome, space: SearchSpace) -> str | None:
    """ "v2 scores higher mostly because of few_shot=retrieved4 (+0.52, 0.44..0.60)": the winner's
    chosen values whose effect interval excludes 0, largest first."""
    sel = outcome.selection
    if sel is None or not outcome.effects:
        return None
    chosen = _chosen_labels(space, sel.winner)
    helped = [
        (name, e)
        for name, e in outcome.effects
        if chosen.get(name.split("=", 1)[0]) == name.split("=", 1)[1] and (e.low > 0 or e.high < 0)
    ]
    if not helped:
        return f"{sel.winner}: no single chosen value has an effect whose interval excludes 0 in the screening round"
    helped.sort(key=lambda item: -abs(item[1].mean))
    parts = [f"{name} ({e.mean:+.2f}, {e.low:+.2f}..{e.high:+.2f})" for name, e in helped[:3]]
    return f"{sel.winner} scores as it does mostly because of " + ", ".join(parts)


def effects_json(outcome: SearchOutcome, space: SearchSpace) -> dict[str, Any]:
    shape = space.shape()
    out: dict[str, Any] = {}
    for name, effect in outcome.effects:
        dim = shape.dimensions[effect.dimension]
        out[name] = {
            "effect": _round(effect.mean),
            "ci95": [_round(effect.low), _round(effect.high)],
            "versus": f"{dim.name}={dim.labels[0]}",
        }
    return out


def all_results_json(
    outcome: SearchOutcome,
    space: SearchSpace,
    ctx: SearchContext,
    winner_file: Path | None,
    best_file: Path | None,
) -> dict[str, Any]:
    grid = len(space.candidates()) * len(space.dataset.samples)
    n = outcome.observations.seen(BASELINE)
    sel = outcome.selection
    return {
        "schema_version": ALL_RESULTS_SCHEMA_VERSION,
        "suite": ctx.suite_name,
        "complete": outcome.complete,
        "stopped": outcome.stopped,
        "strategy": ctx.strategy,
        "seed": ctx.seed,
        "budget": ctx.budget,
        "plan": [
            {"stage": s.stage, "candidates": s.candidates, "samples": s.samples, "max_calls": s.max_calls}
            for s in outcome.plan
        ],
        "estimated_s": _round(outcome.estimated_s, 1),
        "elapsed_s": _round(outcome.elapsed_s, 1),
        "candidate_calls": outcome.calls - outcome.baseline_calls,
        "baseline_calls": outcome.baseline_calls,
        "grid_calls": len(space.candidates()) * max(n, 1) if n else grid,
        "noise": {
            "deterministic": ctx.deterministic,
            "repeated": outcome.noise_pairs,
            "same_score": outcome.noise_agree,
            "per_call_sd": _round(outcome.observations.noise_sd),
        },
        "decisions": [d.to_json() for d in outcome.decisions],
        "winner": sel.winner if sel else None,
        "best": sel.best if sel else None,
        "tied_with_best": list(sel.tied) if sel else [],
        # The verdict is the test split's; the selection's (validation, optimistic) is kept beside it.
        "verdict": (
            outcome.test_verdicts["baseline"].describe() if "baseline" in outcome.test_verdicts else None
        ),
        "significant": bool(
            "baseline" in outcome.test_verdicts and outcome.test_verdicts["baseline"].significant
        ),
        "selection_verdict": outcome.verdict.describe() if outcome.verdict else None,
        "winner_file": relative(winner_file, ctx.project_root) if winner_file else None,
        "best_candidate_file": relative(best_file, ctx.project_root) if best_file else None,
        "effects": effects_json(outcome, space),
        "why": why_sentence(outcome, space),
        "constant_answer": _round(outcome.constant.score) if outcome.constant else None,
        "test": test_json(outcome),
        "selection": {
            "samples": "validation",
            "note": "the winner's validation score is the best of every candidate ranked there: optimistic",
        },
        "promoted": outcome.promoted,
        "promotion": outcome.promotion_reason,
        "must_beat": list(ctx.must_beat),
        "notes": list(outcome.notes),
        "families": [f.to_json() for f in outcome.families],
        "lookup_beat_every_prompt": _lookup_beat(outcome),
        "candidates": candidate_rows(outcome, space, ctx.seed),
    }


def _lookup_beat(outcome: SearchOutcome) -> bool:
    """Whether the best kNN vote (no call) scored significantly above every prompt family's best
    on the test split (:func:`lookup_beat_every_prompt`)."""
    return lookup_beat_every_prompt(outcome.families)


def _floors_json(floors: Floors | None) -> dict[str, Any] | None:
    if floors is None:
        return None
    return {"constant": _round(floors.constant_mean), "lookup": _round(floors.lookup_mean)}


def test_json(outcome: SearchOutcome) -> dict[str, Any]:
    """The test split: its floors, the winner's and baseline's scores there, and the verdicts."""
    from promptsweep.core.measure.stats import mean_interval

    scores: dict[str, Any] = {}
    for name, values in outcome.test_scores.items():
        est = mean_interval(values)
        scores[name] = _estimate(est.mean, est.low, est.high, est.n)
    return {
        "n": outcome.test_n,
        "calls": outcome.test_calls,
        "floors": _floors_json(outcome.test_floors),
        "validation_floors": _floors_json(outcome.validation_floors),
        "scores": scores,
        "verdicts": {
            name: {
                **_estimate(v.difference.mean, v.difference.low, v.difference.high, v.difference.n),
                "significant": v.significant,
            }
            for name, v in outcome.test_verdicts.items()
        },
        "samples_with_labels_no_train_sample_has": outcome.unseen_labels,
    }


def next_version_path(
    folder: Path, template_id: str, current_version: str, *, after: int = 0
) -> tuple[Path, int]:
    """``<folder>/<id>_v<N+1>.yaml``, N the highest version seen for this id (and at least
    ``after``); never an existing file. Only a hint: ``claim_next_version`` makes it atomic."""
    highest = after
    match = re.fullmatch(r"v(\d+)", current_version)
    if match:
        highest = int(match.group(1))
    for entry in folder.iterdir() if folder.is_dir() else ():
        m = _VERSION_FILE.match(entry.name)
        if m and m.group("id") == template_id:
            highest = max(highest, int(m.group("n")))
    n = highest + 1
    while (folder / f"{template_id}_v{n}.yaml").exists():
        n += 1
    return folder / f"{template_id}_v{n}.yaml", n


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings as ``|`` blocks, so a winner file reads well in a pull request."""


def _str_representer(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_BlockDumper.add_representer(str, _str_representer)


def _estimate(mean: float | None, low: float | None, high: float | None, n: int) -> dict[str, Any]:
    return {"mean": _round(mean), "low": _round(low), "high": _round(high), "n": n}


def template_text(
    outcome: SearchOutcome, space: SearchSpace, ctx: SearchContext, path: Path, version: str, *, header: str
) -> str:
    """The winner (or best candidate) as a reviewable template file at ``path``."""
    from promptsweep.core.measure.stats import mean_interval

    sel = outcome.selection
    assert sel is not None
    candidate = next(c for c in space.candidates() if c.id == sel.winner)
    mapping = space.to_mapping(candidate, pool_spec=space.pool_spec(path.parent))
    scores = outcome.observations.prefix(sel.winner)
    base_scores = outcome.observations.prefix(BASELINE, len(scores))
    score = mean_interval(scores, seed=ctx.seed)
    base = mean_interval(base_scores, seed=ctx.seed)
    stats = outcome.stats.get(sel.winner)
    base_stats = outcome.stats.get(BASELINE)
    verdict = outcome.verdict
    winner_effects = {
        name: value
        for name, value in effects_json(outcome, space).items()
        if name.split("=", 1)[0] in _chosen_labels(space, candidate.id)
        and name.split("=", 1)[1] == _chosen_labels(space, candidate.id)[name.split("=", 1)[0]]
    }
    test = test_json(outcome)
    test_verdicts = outcome.test_verdicts
    optimization: dict[str, Any] = {
        "suite": ctx.suite_name,
        "candidate": sel.winner,
        "dimensions": candidate.dimensions(space),
        # The score is the test split's: samples no decision of the search read.
        "score": test["scores"].get(sel.winner),
        "score_samples": "test",
        "selection_score": {
            **_estimate(score.mean, score.low, score.high, score.n),
            "samples": "validation (chose the winner among every candidate: optimistic)",
        },
        "baseline": {
            "template": space.baseline.label,
            "score": test["scores"].get(BASELINE),
            "selection_score": _estimate(base.mean, base.low, base.high, base.n),
        },
        "floors": {"test": test["floors"], "validation": test["validation_floors"]},
        "difference_vs_baseline": test["verdicts"].get("baseline"),
        "difference_vs_lookup": test["verdicts"].get("lookup"),
        "selection_difference_vs_baseline": (
            _estimate(
                verdict.difference.mean, verdict.difference.low, verdict.difference.high, verdict.difference.n
            )
            if verdict
            else None
        ),
        "verdict": (
            "; ".join(f"vs {name} on test: {v.describe()}" for name, v in test_verdicts.items())
            if test_verdicts
            else "not confirmed on the test split"
        ),
        "promotion": outcome.promotion_reason,
        "why": {
            "summary": why_sentence(outcome, space),
            "effects_of_chosen_values": winner_effects,
            "all_effects": effects_json(outcome, space),
        },
        "cost": {
            "tokens_per_call": _round(stats.tokens_per_call, 1) if stats else None,
            "latency_p50_s": _round(stats.latency_p50, 2) if stats else None,
            "baseline_tokens_per_call": _round(base_stats.tokens_per_call, 1) if base_stats else None,
            "baseline_latency_p50_s": _round(base_stats.latency_p50, 2) if base_stats else None,
        },
        "tied_with_best": list(sel.tied),
        "noise": {
            "deterministic": ctx.deterministic,
            "repeated": outcome.noise_pairs,
            "same_score": outcome.noise_agree,
            "per_call_sd": _round(outcome.observations.noise_sd),
        },
        "dataset": {"path": relative(space.dataset.path, path.parent), "sha256": space.dataset.sha256},
        "split": {"sha256": ctx.split_sha256, "validation_samples": len(space.validation_ids)},
        "model": ctx.model,
        "search": {
            "strategy": ctx.strategy,
            "seed": ctx.seed,
            "budget": ctx.budget,
            "space": relative(space.path, path.parent),
            "candidate_calls": outcome.calls - outcome.baseline_calls,
            "baseline_calls": outcome.baseline_calls,
            "grid_calls": len(space.candidates()) * len(space.validation_ids),
            "elapsed_s": _round(outcome.elapsed_s, 1),
            "complete": outcome.complete,
        },
        "run_dir": relative(ctx.run_dir, ctx.project_root),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    mapping.update(
        version=version,
        description=f"Found by pytest --optimize ({ctx.strategy}) from {space.base.label}: candidate {sel.winner}.",
        optimization=optimization,
    )
    return header + yaml.dump(mapping, Dumper=_BlockDumper, sort_keys=False, allow_unicode=True, width=100)


def _chosen_labels(space: SearchSpace, candidate: str) -> dict[str, str]:
    shape = space.shape()
    levels = shape.candidates[candidate]
    return {d.name: d.labels[i] for d, i in zip(shape.dimensions, levels, strict=True)}


def _where(ctx: SearchContext) -> str:
    here = relative(ctx.invocation_dir, ctx.project_root)
    return "the project root" if here == "." else f"{here}/ in the project"


def validate_command(ctx: SearchContext, template: Path) -> str:
    """A command that scores the written template, runnable where the user ran pytest."""
    suite_dir = relative(ctx.suite_path.parent, ctx.invocation_dir)
    target = "." if suite_dir == "." else f"{suite_dir}/"
    return f"pytest {target} --prompt-template {relative(template, ctx.invocation_dir)}"


def claim_next_version(
    folder: Path, template_id: str, current_version: str, text_for: Callable[[Path, int], str]
) -> Path:
    """Write ``text_for(path, n)`` to the next free ``<id>_v<n>.yaml``, atomically: the file
    appears complete and only if no other run created that name first (``O_EXCL`` semantics,
    through a hard link). Two ``--optimize`` runs at once get two numbers; the one that loses
    the race takes the next."""
    n = 0
    for _ in range(1000):
        path, n = next_version_path(folder, template_id, current_version, after=n)
        try:
            write_text_exclusive(path, text_for(path, n))
        except FileExistsError:
            continue  # another run claimed v<n> between the look and the write
        return path
    raise FileExistsError(f"no free {template_id}_vN.yaml in {folder} after 1000 tries")


def write_results(
    outcome: SearchOutcome, space: SearchSpace, ctx: SearchContext
) -> tuple[Path | None, Path | None]:
    """Write the best candidate into the run directory, then the winner (only if significant
    and the search completed) as the next free ``<id>_vN.yaml``, then ``all_results.json``;
    returns (winner file, best-candidate file). The run directory keeps its
    ``best_candidate.yaml`` and ``all_results.json`` whatever happens to the winner file."""
    sel = outcome.selection
    winner_path: Path | None = None
    best_path: Path | None = None
    try:
        if sel is not None:
            best_path = _write_best(outcome, space, ctx)
            winner_path = _write_winner(outcome, space, ctx)
    finally:
        from promptsweep.core.io.files import write_json_atomic

        write_json_atomic(
            ctx.run_dir / "all_results.json", all_results_json(outcome, space, ctx, winner_path, best_path)
        )
    return winner_path, best_path


def _write_winner(outcome: SearchOutcome, space: SearchSpace, ctx: SearchContext) -> Path | None:
    if not (outcome.complete and outcome.promoted):
        return None
    base = space.base
    folder = (base.path or ctx.suite_path).parent

    def text_for(path: Path, n: int) -> str:
        header = (
            f"# Written by pytest --optimize. Score it (from {_where(ctx)}):\n"
            f"#   {validate_command(ctx, path)}\n"
        )
        return template_text(outcome, space, ctx, path, f"v{n}", header=header)

    return claim_next_version(folder, base.id, base.spec.version, text_for)


def _write_best(outcome: SearchOutcome, space: SearchSpace, ctx: SearchContext) -> Path:
    sel = outcome.selection
    assert sel is not None
    # Written as the winner only from a complete search whose winner beat must_beat on the test split.
    significant = outcome.complete and outcome.promoted
    best_path = ctx.run_dir / "best_candidate.yaml"
    header = (
        "# The best candidate of this search"
        + (
            ""
            if significant
            else f": not promoted ({outcome.promotion_reason or 'the search did not complete'})"
        )
        + ".\n"
    )
    write_text_atomic(best_path, template_text(outcome, space, ctx, best_path, sel.winner, header=header))
    return best_path


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
    if outcome.effects:
        biggest = sorted(outcome.effects, key=lambda item: -abs(item[1].mean))[:8]
        lines.append(
            "effects (screening round, vs each dimension's first value): "
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
    return lines


def family_lines(outcome: SearchOutcome, winner: str) -> list[str]:
    """The family table (each family's best, chosen on validation, on the test split, with its
    calls per answer) and, when a no-call kNN vote scored above the winner there, that sentence."""
    if not outcome.families:
        return []
    table = tabulate(
        family_rows(outcome.families),
        headers=[
            "family", "best member", "validation", f"test (n={outcome.test_n})", "- lookup (test, 95% CI)", "calls/answer",
        ],
        disable_numparse=True,
    )  # fmt: skip
    lines = [f"candidate families (best of each chosen on validation):\n{table}"]
    sentence = beat_lookup_sentence(outcome.families)
    if sentence:
        lines.append(sentence)
    d = outcome.knn_vs_winner
    knn = next((f for f in outcome.families if f.member.startswith("knn")), None)
    if knn is not None and knn.test_mean is not None and d is not None and d.n > 0 and d.mean > 0:
        # "beat" only when the interval says so, and "every prompt" only when every family's best
        # was beaten too (another family may score above the lookup while the winner does not).
        significant = d.n >= 2 and d.low > 0
        word = "significant" if significant else "not significant"
        if lookup_beat_every_prompt(outcome.families):
            lead = "a lookup beat every prompt"
        elif significant:
            lead = "a lookup beat the winner"
        else:
            lead = "a lookup scored above the winner, within noise"
        lines.append(
            f"{lead}: the {knn.member[3:]}-nearest vote (no call) scores {knn.test_mean:.3f} "
            f"on the test split, {d.mean:+.3f} over {winner} (95% CI {d.low:+.3f} to {d.high:+.3f}, {word})"
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


def mapping_of(path: Path) -> Mapping[str, Any]:
    return dict(load_yaml_file(path))  # the bounded loader, like every YAML the plugin reads
