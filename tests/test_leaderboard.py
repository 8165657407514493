"""leaderboard.json: one entry per finished run, ranked best first with history."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from promptsweep.cli.main import main
from promptsweep.reporting.leaderboard import append_entry, multi_objective, rank, read_leaderboard, render
from tests.runkit import run_once


def entry(
    run: str,
    score: float,
    date: str,
    *,
    suite: str = "s",
    experiment: str | None = None,
    tokens: float = 100.0,
) -> dict[str, Any]:
    return {
        "run": run,
        "suite": suite,
        "experiment": experiment,
        "template": {"id": "t", "version": "v1", "sha256": "ab" * 32},
        "model": {"name": "m.gguf"},
        "score": {"mean": score, "low": score - 0.1, "high": score + 0.1},
        "categories": {},
        "latency_s": {"p50": 0.1, "p95": 0.2},
        "tokens": {"per_sample": tokens},
        "date": date,
    }


def test_runs_append_entries_with_provenance(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    _, good = run_once(pytester, set())
    _, bad = run_once(pytester, {0, 1, 2})
    base = pytester.path / ".promptsweep"
    summary = (good / "summary.md").read_text()
    assert "latency p50" in summary and "tokens: prompt 60" in summary
    data = json.loads((base / "leaderboard.json").read_text())
    assert data["schema_version"] == 1
    entries = data["entries"]
    assert [e["run"] for e in entries] == [good.name, bad.name]
    first = entries[0]
    assert first["suite"] == "tiny"
    assert first["template"]["id"] == "tiny" and len(first["template"]["sha256"]) == 64
    assert len(first["dataset"]["sha256"]) == 64
    assert first["model"]["name"] == "fake-model"
    assert first["score"]["mean"] == 1.0 and first["score"]["low"] <= 1.0
    assert set(first["fields"]) == {"label", "severity", "summary"}
    assert set(first["categories"]) == {"disk_full", "oom_killed", "started"}
    assert first["latency_s"]["p50"] is not None and first["latency_s"]["p95"] is not None
    assert first["tokens"] == {"prompt": 60, "completion": 30, "cached": 0, "per_sample": 15.0}
    assert first["config"].startswith("tiny@v1#")
    assert {row["category"] for row in data["category_scores"]} == {"disk_full", "oom_killed", "started"}
    assert len(data["category_scores"]) == 6
    assert entries[1]["score"]["mean"] < 1.0

    assert main(["leaderboard", "--dir", str(base)]) == 0
    out = capsys.readouterr().out
    assert "tiny@v1#" in out and "1.00 → 0." in out  # history, oldest first
    assert main(["leaderboard", "--dir", str(base), "--format", "json"]) == 0
    ranked = json.loads(capsys.readouterr().out)["entries"]
    assert len(ranked) == 1 and [h["run"] for h in ranked[0]["history"]] == [good.name, bad.name]
    assert main(["leaderboard", "--dir", str(base), "--format", "markdown", "--suite", "nope"]) == 0
    assert "empty" in capsys.readouterr().out
    (base / "leaderboard.json").unlink()
    assert main(["leaderboard", "--dir", str(base), "--rebuild"]) == 0
    assert len(read_leaderboard(base)) == 2


def test_rank_best_first_latest_per_configuration() -> None:
    entries = [
        entry("r1", 0.5, "2026-01-01", experiment="a"),
        entry("r2", 0.9, "2026-01-02", experiment="b"),
        entry("r3", 0.7, "2026-01-03", experiment="a"),
        entry("r4", 0.2, "2026-01-04", experiment="c", suite="other"),
    ]
    ranked = rank(entries)
    assert [(e["run"], [h["run"] for h in hist]) for e, hist in ranked] == [
        ("r2", ["r2"]),
        ("r3", ["r1", "r3"]),
        ("r4", ["r4"]),
    ]
    assert [e["run"] for e, _ in rank(entries, suite="s")] == ["r2", "r3"]
    table = render(entries, fmt="markdown")
    assert table.splitlines()[0].startswith("|")
    assert "0.50 → 0.70" in table


def test_multi_objective_trades_score_for_tokens() -> None:
    assert multi_objective(0.8, 1000, 0.0) == 0.8
    assert multi_objective(0.8, 1000, 0.05) == pytest.approx(0.75)
    with pytest.raises(ValueError, match=">= 0"):
        multi_objective(0.8, 10, -1)
    cheap, costly = (
        entry("cheap", 0.78, "d1", experiment="x", tokens=200),
        entry("costly", 0.8, "d2", experiment="y", tokens=2000),
    )
    assert [e["run"] for e, _ in rank([cheap, costly])] == ["costly", "cheap"]
    assert [e["run"] for e, _ in rank([cheap, costly], token_weight=0.05)] == ["cheap", "costly"]
    assert "objective (λ=0.05)" in render([cheap, costly], token_weight=0.05)


def test_concurrent_appends_keep_every_entry(tmp_path: Path) -> None:
    threads = [
        threading.Thread(target=append_entry, args=(tmp_path, entry(f"r{i}", 0.5, f"d{i}")))
        for i in range(12)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(e["run"] for e in read_leaderboard(tmp_path)) == sorted(f"r{i}" for i in range(12))
    assert not list(tmp_path.glob(".leaderboard.json.*.tmp"))
