"""The leaderboard: ``<base_dir>/leaderboard.json``, one entry per finished run, ranked and printed."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tabulate import tabulate

from promptsweep.core.data.dataset import ids_sha256
from promptsweep.core.io.files import locked_file, write_json_atomic
from promptsweep.core.io.redact import markdown_text, redact_text, redact_url, terminal_text
from promptsweep.core.measure.stats import interval_text
from promptsweep.reporting.artifacts import read_results

LEADERBOARD_FILENAME = "leaderboard.json"
LEADERBOARD_SCHEMA_VERSION = 1


def multi_objective(score: float, tokens: float, weight: float) -> float:
    """Quality against cost: ``score - weight * tokens / 1000``.

    ``tokens`` is tokens per sample (prompt + completion); ``weight`` (λ,
    ``--objective-token-weight``) is the score a candidate gives up per 1000 tokens, so
    with λ=0.05 a prompt 1000 tokens longer must score 0.05 higher to rank the same.
    λ=0 ranks by quality alone.
    """
    if weight < 0:
        raise ValueError(f"the token weight must be >= 0, got {weight}")
    return score - weight * tokens / 1000.0


def leaderboard_path(base_dir: Path) -> Path:
    return base_dir / LEADERBOARD_FILENAME


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def model_identity(model: dict[str, Any] | None) -> dict[str, Any]:
    """A short model name for tables plus the full identity (path and build) for provenance."""
    model = model or {}
    path = model.get("model_path")
    # Redacted again: run directories written before URLs were redacted may still carry keys.
    url = redact_url(str(model["url"])) if model.get("url") else None
    name = Path(path).name if path else (model.get("model_id") or url or "unknown")
    identity = "|".join(str(p) for p in (path or model.get("model_id"), model.get("build_info")) if p)
    return {"name": name, "identity": identity or name, "url": url}


def entry_from_run_dir(run_dir: Path) -> dict[str, Any]:
    """One leaderboard entry from a finished run's ``config.json``, ``metrics.json`` and
    ``experiment.json`` (so it can be rebuilt from the run directories at any time)."""
    config = _read_json(run_dir / "config.json") or {}
    metrics = _read_json(run_dir / "metrics.json")
    if metrics is None:
        raise ValueError(f"{run_dir}: no metrics.json (the run did not finish)")
    experiment = _read_json(run_dir / "experiment.json")
    template = config.get("template") or {}
    tokens = metrics.get("tokens") or {}
    n = int(metrics.get("n") or 0)
    answered = max(1, n - len(metrics.get("errored") or []))
    per_sample = (int(tokens.get("prompt") or 0) + int(tokens.get("completion") or 0)) / answered
    overall = metrics.get("overall") or {}
    finished = datetime.fromtimestamp((run_dir / "metrics.json").stat().st_mtime, timezone.utc)
    samples = metrics.get("samples") or {}
    sample_set = samples.get("ids_sha256") or ids_sha256(
        r.sample_id for r in read_results(run_dir / "results.jsonl")
    )
    return {
        "run": run_dir.name,
        "run_dir": str(run_dir),
        "suite": metrics.get("suite") or config.get("suite"),
        "experiment": experiment.get("experiment_id") if experiment else None,
        "template": {
            "id": template.get("id"),
            "version": template.get("version"),
            "sha256": template.get("sha256"),
            "path": template.get("path"),
        },
        "model": model_identity(config.get("model")),
        "dataset": {
            "path": (config.get("dataset") or {}).get("path"),
            "sha256": (config.get("dataset") or {}).get("sha256"),
        },
        "llm_params": config.get("llm_params") or {},
        "mode": (config.get("determinism") or {}).get("mode") or "default",
        "n": n,
        "samples_expected": samples.get("expected"),
        "sample_set": sample_set,
        "partial": bool(samples.get("partial")),
        "errored": len(metrics.get("errored") or []),
        "score": {k: overall.get(k) for k in ("mean", "low", "high")},
        "lookup": _lookup_entry(metrics.get("lookup_answer")),
        "fields": {k: v.get("mean") for k, v in (metrics.get("fields") or {}).items()},
        "categories": {k: v.get("mean") for k, v in (metrics.get("categories") or {}).items()},
        "latency_s": metrics.get("latency_s") or {"p50": None, "p95": None},
        "tokens": {
            "prompt": int(tokens.get("prompt") or 0),
            "completion": int(tokens.get("completion") or 0),
            "cached": int(tokens.get("cached") or 0),
            "per_sample": round(per_sample, 1),
        },
        "gate_passed": bool((metrics.get("gate") or {}).get("passed", True)),
        "git_commit": config.get("git_commit"),
        "started_at": config.get("started_at"),
        "date": finished.isoformat(timespec="seconds"),
    }


def _lookup_entry(lookup: Any) -> dict[str, Any] | None:
    """The lookup floor of a run (``metrics.json`` ``lookup_answer``): its score and *prompt -
    lookup* with the 95% CI; ``None`` for suites without a train split and older runs."""
    if not isinstance(lookup, dict) or not isinstance(lookup.get("score"), (int, float)):
        return None
    difference = lookup.get("difference")
    if not isinstance(difference, dict):
        difference = {}
    return {
        "score": lookup["score"],
        "difference": {k: difference.get(k) for k in ("mean", "low", "high", "n")},
    }


def read_leaderboard(base_dir: Path) -> list[dict[str, Any]]:
    """The entries, oldest first; a missing or unreadable file is an empty leaderboard."""
    data = _read_json(leaderboard_path(base_dir))
    if not data:
        return []
    entries = data.get("entries")
    return (
        [_without_credentials(e) for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []
    )


def _without_credentials(entry: dict[str, Any]) -> dict[str, Any]:
    """Entries written by older versions may carry an endpoint URL with credentials in
    ``model``; they are redacted as they are read, so a rewrite drops them for good."""
    model = entry.get("model")
    if not isinstance(model, dict):
        return entry
    clean = {k: redact_text(v) if isinstance(v, str) else v for k, v in model.items()}
    return {**entry, "model": clean}


@contextlib.contextmanager
def _locked(base_dir: Path) -> Iterator[None]:
    """Serialise concurrent appends from two runs finishing at once (no-follow, no-truncate lock)."""
    with locked_file(base_dir / f".{LEADERBOARD_FILENAME}.lock"):
        yield


def append_entry(base_dir: Path, entry: dict[str, Any]) -> list[dict[str, Any]]:
    """Add (or replace, by run name) one entry; the file is rewritten atomically under a lock."""
    with _locked(base_dir):
        entries = [e for e in read_leaderboard(base_dir) if e.get("run") != entry.get("run")]
        entries.append({**entry, "config": config_key(entry)})
        write_json_atomic(
            leaderboard_path(base_dir),
            {
                "schema_version": LEADERBOARD_SCHEMA_VERSION,
                "updated_at": entry.get("date"),
                "entries": entries,
                "category_scores": category_scores(entries),
            },
        )
    return entries


def category_scores(entries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Flat (run, category, score) rows: what a dashboard heatmap reads without reshaping."""
    return [
        {
            "run": e.get("run"),
            "suite": e.get("suite"),
            "data": data_label(e),
            "partial": bool(e.get("partial")),
            "config": config_key(e),
            "date": e.get("date"),
            "category": category,
            "score": score,
        }
        for e in entries
        for category, score in sorted((e.get("categories") or {}).items())
    ]


def record_run(base_dir: Path, run_dir: Path) -> list[dict[str, Any]]:
    return append_entry(base_dir, entry_from_run_dir(run_dir))


def comparable_key(entry: dict[str, Any]) -> tuple[str, str, str]:
    """Runs are compared like with like: the same suite, the same dataset file (sha256) and the
    same set of sample ids. Scores of different groups are never ranked or trended together."""
    dataset = (entry.get("dataset") or {}).get("sha256") or "?"
    return str(entry.get("suite")), str(dataset), str(entry.get("sample_set") or f"n={entry.get('n')}")


def data_label(entry: dict[str, Any]) -> str:
    """``k8s_triage_samples.json n=64 #1a2b3c``: which samples a leaderboard row scored."""
    dataset = entry.get("dataset") or {}
    name = Path(str(dataset.get("path"))).name if dataset.get("path") else "?"
    sample_set = str(entry.get("sample_set") or "")[:6]
    return f"{name} n={entry.get('n', '?')}" + (f" #{sample_set}" if sample_set else "")


def partial_runs(entries: Sequence[dict[str, Any]], *, suite: str | None = None) -> list[dict[str, Any]]:
    """Runs narrowed by -k, --lf or deselection (or interrupted): listed, never ranked."""
    return [e for e in entries if e.get("partial") and (not suite or e.get("suite") == suite)]


def config_key(entry: dict[str, Any]) -> str:
    """What a leaderboard row follows over time: the experiment, else template id + version;
    a ``[deterministic]`` suffix keeps runs of the two decoding modes apart (not like for like)."""
    mode = entry.get("mode") or "default"
    suffix = "" if mode == "default" else f" [{mode}]"
    if entry.get("experiment"):
        return str(entry["experiment"]) + suffix
    template = entry.get("template") or {}
    sha = (template.get("sha256") or "")[:8]
    return (
        f"{template.get('id') or '?'}@{template.get('version') or '?'}" + (f"#{sha}" if sha else "") + suffix
    )


def _score(entry: dict[str, Any]) -> float:
    mean = (entry.get("score") or {}).get("mean")
    return float(mean) if isinstance(mean, (int, float)) else 0.0


def ranking_score(entry: dict[str, Any], token_weight: float = 0.0) -> float:
    return multi_objective(
        _score(entry), float((entry.get("tokens") or {}).get("per_sample") or 0.0), token_weight
    )


def rank(
    entries: Sequence[dict[str, Any]], *, suite: str | None = None, token_weight: float = 0.0
) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """The latest complete run of each configuration with its history (oldest first), grouped
    like with like (:func:`comparable_key`): groups by suite and most recent run, best first
    inside a group. Partial runs take no part."""
    groups: dict[tuple[tuple[str, str, str], str], list[dict[str, Any]]] = {}
    for entry in sorted(entries, key=lambda e: str(e.get("date") or "")):
        if (suite and entry.get("suite") != suite) or entry.get("partial"):
            continue
        groups.setdefault((comparable_key(entry), config_key(entry)), []).append(entry)
    latest: dict[tuple[str, str, str], str] = {}
    for (like, _), history in groups.items():
        latest[like] = max(latest.get(like, ""), str(history[-1].get("date") or ""))
    order = sorted(latest, key=lambda like: latest[like], reverse=True)  # most recent group first,
    order.sort(key=lambda like: like[0])  # within each suite (a stable sort keeps that order)
    rows = [(history[-1], history) for history in groups.values()]
    rows.sort(
        key=lambda row: (
            order.index(comparable_key(row[0])),
            -ranking_score(row[0], token_weight),
            str(row[0].get("run")),
        )
    )
    return rows


def _fmt(value: Any, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "-"


def table_rows(
    entries: Sequence[dict[str, Any]], *, suite: str | None = None, token_weight: float = 0.0
) -> tuple[list[str], list[list[str]]]:
    headers = [
        "#",
        "suite",
        "data",
        "experiment / template",
        "model",
        "score",
        "95% CI",
        "lookup",
        "trend",
        "p50 s",
        "p95 s",
        "tokens/sample",
        "runs",
        "date",
    ]
    if token_weight:
        headers.insert(7, f"objective (λ={token_weight:g})")
    rows: list[list[str]] = []
    position, group = 0, None
    for entry, history in rank(entries, suite=suite, token_weight=token_weight):
        like = comparable_key(entry)
        position = position + 1 if like == group else 1  # ranks count within a like-for-like group
        group = like
        score = entry.get("score") or {}
        latency = entry.get("latency_s") or {}
        row = [
            str(position),
            str(entry.get("suite")),
            data_label(entry),
            config_key(entry),
            str((entry.get("model") or {}).get("name")),
            _fmt(score.get("mean")),
            interval_text(score.get("low"), score.get("high"), entry.get("n")),
            _fmt((entry.get("lookup") or {}).get("score")),
            " → ".join(_fmt(_score(h), 2) for h in history[-5:]),
            _fmt(latency.get("p50"), 2),
            _fmt(latency.get("p95"), 2),
            _fmt((entry.get("tokens") or {}).get("per_sample"), 0),
            str(len(history)),
            str(entry.get("date") or "")[:16],
        ]
        if token_weight:
            row.insert(7, _fmt(ranking_score(entry, token_weight)))
        rows.append(row)
    return headers, rows


def render(
    entries: Sequence[dict[str, Any]],
    *,
    fmt: str = "table",
    suite: str | None = None,
    token_weight: float = 0.0,
) -> str:
    """``table`` (terminal), ``markdown`` (GitHub) or ``json`` (ranked, with history)."""
    if fmt == "json":
        ranked = [
            {
                **entry,
                "rank": i,
                "history": [{"run": h["run"], "date": h.get("date"), "score": h.get("score")} for h in hist],
            }
            for i, (entry, hist) in enumerate(rank(entries, suite=suite, token_weight=token_weight), 1)
        ]
        partial = [
            {"run": e.get("run"), "suite": e.get("suite"), "n": e.get("n")} for e in partial_runs(entries)
        ]
        return json.dumps(
            {"schema_version": LEADERBOARD_SCHEMA_VERSION, "entries": ranked, "partial_runs": partial},
            indent=2,
        )
    headers, rows = table_rows(entries, suite=suite, token_weight=token_weight)
    partial = partial_runs(entries, suite=suite)
    if not rows and not partial:
        return "leaderboard is empty: run an eval first (pytest evals/)"
    # Model ids, suite and template names come from files and servers: no HTML or Markdown in
    # a Markdown table, no escape sequences (ANSI, OSC title/clipboard) on a terminal.
    clean = markdown_text if fmt == "markdown" else terminal_text
    rows = [[clean(cell) for cell in row] for row in rows]
    table = tabulate(
        rows, headers=headers, tablefmt="github" if fmt == "markdown" else "simple", disable_numparse=True
    )
    if partial:
        runs = ", ".join(
            clean(f"{e.get('run')} ({e.get('n')} of {e.get('samples_expected') or '?'})") for e in partial
        )
        table += (
            f"\n\nnot ranked: {len(partial)} partial run(s) (-k, --lf, deselected or interrupted): {runs}"
        )
    return table
