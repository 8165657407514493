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
        ("r4", ["r4"]),  # suites are never ranked against each other: one block per suite
        ("r2", ["r2"]),
        ("r3", ["r1", "r3"]),
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


def test_like_with_like_groups_by_dataset_and_samples_and_leaves_partial_runs_out() -> None:
    def run(
        name: str, score: float, date: str, data: str, *, partial: bool = False, n: int = 64
    ) -> dict[str, Any]:
        e = entry(name, score, date, experiment="base")
        e.update(
            dataset={"path": f"/x/{data}.json", "sha256": data * 8},
            sample_set=f"{data}-{n}",
            n=n,
            samples_expected=64 if partial else n,
            partial=partial,
        )
        return e

    entries = [
        run("a1", 0.13, "d1", "aaaa"),
        run("b1", 0.20, "d2", "bbbb", n=115),
        run("a2", 0.12, "d3", "aaaa"),
        run("k1", 0.90, "d4", "aaaa", partial=True, n=5),
        run("b2", 0.22, "d5", "bbbb", n=115),
    ]
    ranked = rank(entries)
    assert [(e["run"], [h["run"] for h in hist]) for e, hist in ranked] == [
        ("b2", ["b1", "b2"]),  # the group with the most recent run first
        ("a2", ["a1", "a2"]),
    ], "one row per dataset with its own trend; the -k run is in neither"
    table = render(entries)
    assert "0.20 → 0.22" in table and "0.13 → 0.12" in table and "0.90" not in table.split("not ranked")[0]
    assert "bbbb.json n=115" in table and "aaaa.json n=64" in table
    assert "not ranked: 1 partial run(s)" in table and "k1 (5 of 64)" in table
    rows = [line.split()[0] for line in table.splitlines()[2:4]]
    assert rows == ["1", "1"], "each group is ranked on its own"
    assert json.loads(render(entries, fmt="json"))["partial_runs"] == [{"run": "k1", "suite": "s", "n": 5}]


def test_runs_on_two_datasets_and_a_k_run_leave_two_rows(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    run_once(pytester, set())
    other = pytester.path / "other.json"
    other.write_text(
        (pytester.path / "data.json").read_text().replace("something happened", "something else")
    )
    run_once(pytester, {1}, "--golden", str(other))
    narrowed, partial_dir = run_once(pytester, {0}, "-k", "k0 or k1")
    narrowed.stdout.fnmatch_lines(["*partial run: 2 of 6 samples scored*"])
    assert json.loads((partial_dir / "metrics.json").read_text())["samples"]["partial"] is True
    run_once(pytester, {2})
    run_once(pytester, {3}, "--golden", str(other))
    base = pytester.path / ".promptsweep"
    entries = read_leaderboard(base)
    assert [e["partial"] for e in entries] == [False, False, True, False, False]
    ranked = rank(entries)
    assert len(ranked) == 2
    for _, history in ranked:
        assert len(history) == 2 and not any(h["partial"] for h in history)
        assert len({h["dataset"]["sha256"] for h in history}) == 1
    assert main(["leaderboard", "--dir", str(base)]) == 0
    assert "not ranked: 1 partial run(s)" in capsys.readouterr().out
