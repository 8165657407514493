"""What a search leaves behind: ``all_results.json``, the winner file and the best candidate (the
terminal summary is :mod:`promptsweep.optimize.summary`).

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

from promptsweep.core.io.files import write_text_atomic, write_text_exclusive
from promptsweep.core.io.load import load_yaml_file
from promptsweep.optimize.confirm import Floors
from promptsweep.optimize.families import lookup_beat_every_prompt
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
    names = {c.id: c for c in (*space.candidates(), *space.knn_candidates())}
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
            "n": effect.n,
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
        "effects_note": outcome.effects_note or None,
        "power": outcome.power.to_json() if outcome.power is not None else None,
        "stability": outcome.stability.to_json() if outcome.stability is not None else None,
        "tokens": outcome.tokens.to_json(outcome.elapsed_s),
        "rounds": [
            {"round": d.round, "stage": d.stage, **tokens.to_json(seconds)}
            for d, (tokens, seconds) in zip(outcome.decisions, outcome.round_tokens, strict=False)
        ],
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
    candidate = space.candidate(sel.winner)
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
        "stability": outcome.stability.to_json() if outcome.stability is not None else None,
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
    levels = shape.candidates.get(candidate)
    if levels is None:  # a kNN vote: no dimension of the grid
        return {}
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


def mapping_of(path: Path) -> Mapping[str, Any]:
    return dict(load_yaml_file(path))  # the bounded loader, like every YAML the plugin reads
