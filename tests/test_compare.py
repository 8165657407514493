"""promptsweep compare and --baseline: paired deltas, flips, markdown, exit codes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from promptsweep.cli.main import main
from promptsweep.core.evaluate import SampleResult
from promptsweep.core.io.errors import PromptsweepError
from promptsweep.reporting.compare import RunData, compare_results, render, resolve_run
from tests.runkit import run_once
from tests.suitekit import MORE_SAMPLES, on_v1, sample_result


def result(sample_id: str, score: float, category: str = "c", **scores: float) -> SampleResult:
    return sample_result(sample_id, score, category=category, **scores)


def run(name: str, results: list[SampleResult]) -> RunData:
    return RunData(root=Path(name), config={"suite": "s", "fields": {"a": {}}}, metrics=None, results=results)


def test_paired_deltas_flips_and_unpaired_samples() -> None:
    a = run(
        "A", [result(f"s{i}", 1.0, "odd" if i % 2 else "even") for i in range(10)] + [result("only-a", 1.0)]
    )
    b = run(
        "B",
        [result(f"s{i}", 0.0 if i < 6 else 1.0, "odd" if i % 2 else "even") for i in range(10)]
        + [result("only-b", 0.0)],
    )
    c = compare_results(a, b)
    assert c.overall.diff.n == 10
    assert c.overall.diff.mean == pytest.approx(-0.6)
    assert c.regressed and c.overall.verdict == "WORSE"
    assert [f.sample_id for f in c.regressions] == [f"s{i}" for i in range(6)]
    assert c.regressions[0].fields == ("a",)
    assert not c.fixes
    assert [d.name for d in c.categories] == ["even", "odd"]
    assert c.only_a == ["only-a"] and c.only_b == ["only-b"]
    assert "1 sample(s) only in A and 1 only in B are left out" in c.notes()
    reverse = compare_results(b, a)
    assert not reverse.regressed and len(reverse.fixes) == 6


def test_no_significant_change_is_not_a_regression() -> None:
    a = run("A", [result(f"s{i}", 1.0 if i % 2 else 0.0) for i in range(10)])
    b = run("B", [result(f"s{i}", 0.0 if i in (1,) else (1.0 if i % 2 else 0.0)) for i in range(10)])
    c = compare_results(a, b)
    assert not c.regressed  # one flip in ten: the interval includes 0
    assert len(c.regressions) == 1


def test_resolve_run_by_path_name_and_experiment(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    for name in ("20260101T000000Z-exp", "20260102T000000Z-exp", "20260103T000000Z-other"):
        (runs / name).mkdir(parents=True)
        (runs / name / "results.jsonl").write_text("")
    assert resolve_run("exp", tmp_path).name == "20260102T000000Z-exp"
    assert resolve_run("20260101T000000Z-exp", tmp_path).name == "20260101T000000Z-exp"
    assert resolve_run(str(runs / "20260103T000000Z-other"), tmp_path).name == "20260103T000000Z-other"
    with pytest.raises(PromptsweepError, match="no run 'missing'"):
        resolve_run("missing", tmp_path)


def test_compare_cli_end_to_end(pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]) -> None:
    _, good = run_once(pytester, set(), samples=MORE_SAMPLES)
    _, bad = run_once(pytester, {0, 1, 2, 3, 4}, samples=MORE_SAMPLES)
    md = pytester.path / "compare.md"
    base = pytester.path / ".promptsweep"
    code = main(
        ["compare", good.name, bad.name, "--dir", str(base), "--markdown", str(md), "--fail-on-regression"]
    )
    out = capsys.readouterr().out
    assert code == 1
    assert "Right → wrong (5)" in out
    assert "REGRESSION: overall" in out
    assert "latency p50" in out and "tokens/sample" in out
    text = md.read_text()
    assert text.startswith("# compare: A = ")
    assert "## Categories" in text and "| disk\\_full" in text  # escaped: names come from data
    assert main(["compare", bad.name, good.name, "--dir", str(base), "--fail-on-regression"]) == 0
    assert "Wrong → right (5)" in capsys.readouterr().out
    assert main(["compare", good.name, "nope", "--dir", str(base)]) == 2


def test_baseline_gate_fails_a_pytest_run_on_a_significant_drop(pytester: pytest.Pytester) -> None:
    _, good = run_once(pytester, set(), samples=MORE_SAMPLES)
    ok, _ = run_once(pytester, set(), "--baseline", good.name, samples=MORE_SAMPLES)
    assert ok.ret == 0
    dropped, dropped_dir = run_once(pytester, {0, 1, 2, 3, 4}, "--baseline", str(good), samples=MORE_SAMPLES)
    assert dropped.ret == pytest.ExitCode.TESTS_FAILED
    dropped.stdout.fnmatch_lines(
        ["GATE FAILED: score dropped vs baseline *: 1.000 → * 5 sample(s) right → wrong)"]
    )
    metrics = json.loads((dropped_dir / "metrics.json").read_text())
    assert not metrics["gate"]["passed"]
    missing = pytester.runpytest_subprocess("tiny.suite.yaml", "--baseline", "nope")
    assert missing.ret == pytest.ExitCode.USAGE_ERROR
    missing.stderr.fnmatch_lines(["*--baseline: no run 'nope'*"])


@pytest.mark.real_server
def test_two_real_runs_with_different_templates_compared(
    pytester: pytest.Pytester, llama_server_url: str
) -> None:
    """Two real runs on 8 samples: A, the shipped json_schema template (48 tokens, enough for the fields
    before the free text); B, the same prompt as plain text cut at one token, which no parser
    can read, so B scores 0 on every sample. The CLI must call that a regression and exit 1;
    its table must show both runs' overall scores as their metrics.json recorded them."""
    root = Path(__file__).resolve().parents[1]
    # Short answers keep this real-server test quick; the template's params win over the suite's.
    source = (root / "prompt_templates" / "k8s_log_analysis_v1.yaml").read_text()
    pytester.path.joinpath("schema.yaml").write_text(re.sub(r"max_tokens: \d+", "max_tokens: 48", source))
    pytester.path.joinpath("text.yaml").write_text(
        re.sub(r"max_tokens: \d+", "max_tokens: 1", source)
        .replace("format: json_schema", "format: text")
        .replace("id: k8s_log_analysis\n", "id: k8s_text\n")
    )
    samples = json.loads((root / "evals" / "data" / "k8s_triage_samples.json").read_text())
    pytester.path.joinpath("data.json").write_text(
        json.dumps(samples[:8] if isinstance(samples, list) else samples)
    )
    suite = on_v1((root / "evals" / "k8s_triage.suite.yaml").read_text())
    suite = suite.replace("dataset: data/k8s_triage_samples.json", "dataset: data.json")
    suite = suite.replace("template: ../prompt_templates/k8s_log_analysis_v1.yaml", "template: schema.yaml")
    suite = suite.replace("search_space: k8s_triage.space.yaml\n", "").replace(
        "max_tokens: 160", "max_tokens: 64"
    )
    pytester.path.joinpath("k8s.suite.yaml").write_text(suite)
    base = pytester.path / ".promptsweep"
    common = (
        "k8s.suite.yaml",
        "--llm-url",
        llama_server_url,
        "--min-score",
        "0",
        "--llm-timeout",
        "600",
        "-p",
        "no:cacheprovider",
    )
    first = pytester.runpytest_subprocess(*common)
    second = pytester.runpytest_subprocess(*common, "--prompt-template", "text.yaml")
    assert first.ret == 0 and second.ret == 0, (first.stdout.str()[-2000:], second.stdout.str()[-2000:])
    runs = sorted((base / "runs").iterdir())
    assert len(runs) == 2
    cmd = [
        sys.executable,
        "-m",
        "promptsweep.cli.main",
        "compare",
        runs[0].name,
        runs[1].name,
        "--dir",
        str(base),
        "--markdown",
        str(pytester.path / "compare.md"),
        "--fail-on-regression",
    ]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env=dict(os.environ), cwd=pytester.path, check=False
    )
    print(proc.stdout)
    a, b = (json.loads((run / "metrics.json").read_text())["overall"]["mean"] for run in runs)
    right = [json.loads(line)["score"] > 0 for line in (runs[0] / "results.jsonl").read_text().splitlines()]
    assert b == 0.0, "a one-token answer scored"
    # A paired drop is significant under the exact test once at least 6 samples dropped (p = 2/2^6):
    # fewer cannot confirm anything, however large the drop.
    assert sum(right) >= 6, f"the json_schema run scored on {sum(right)} of 8 samples: {proc.stdout}"
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "(k8s_log_analysis@v1)  vs  B = " in proc.stdout and "(k8s_text@v1)" in proc.stdout
    assert "Overall and fields" in proc.stdout and "latency p50" in proc.stdout
    assert f"REGRESSION: overall {a:.3f} → 0.000" in proc.stdout


def test_different_datasets_warn_and_compare_only_shared_samples(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    _, first = run_once(pytester, set())
    data = json.loads((pytester.path / "data.json").read_text())
    data[0]["severity"] = "warn"  # same id, another label: not the same sample any more
    data.append({**data[1], "key": "k99", "line": "LOG-99 new"})
    other = pytester.path / "other.json"
    other.write_text(json.dumps(data))
    _, second = run_once(pytester, set(), "--golden", str(other))
    base = pytester.path / ".promptsweep"
    capsys.readouterr()
    assert main(["compare", first.name, second.name, "--dir", str(base)]) == 0
    captured = capsys.readouterr()
    assert "warning: the datasets differ (sha256" in captured.err
    assert "only the 5 shared sample(s) (same id, same labels) are compared" in captured.err
    assert "suite tiny: 5 paired samples" in captured.out
    assert "1 sample(s) share an id but not their expected labels and are left out" in captured.out
    assert "0 sample(s) only in A and 1 only in B are left out" in captured.out


def test_a_category_of_one_sample_has_no_interval() -> None:
    a = run("A", [result("s1", 1.0, "solo"), *[result(f"m{i}", 1.0, "many") for i in range(4)]])
    b = run("B", [result("s1", 0.0, "solo"), *[result(f"m{i}", 0.5, "many") for i in range(4)]])
    lines = render(compare_results(a, b)).splitlines()
    solo = next(line for line in lines if line.startswith("solo"))
    assert "—" in solo and "~" in solo, solo


def timed(sample_id: str, latency_s: float, *, from_cache: bool = False) -> SampleResult:
    r = result(sample_id, 1.0)
    r.latency_s, r.from_cache = latency_s, from_cache
    return r


def test_latency_says_how_many_answers_it_rests_on() -> None:
    """Issue 28: compare reported run B's latency from its 2 uncached answers as if from all 140."""
    a = run("A", [timed(f"s{i:02}", 1.0 + i / 100) for i in range(30)])
    b = run("B", [timed(f"s{i:02}", 2.0, from_cache=i >= 2) for i in range(30)])
    comparison = compare_results(a, b)
    text = render(comparison)
    rows = {line.split()[0]: line.split() for line in text.splitlines() if line.startswith(("A ", "B "))}
    assert rows["A"][3] == "30" and rows["B"][3] == "2"  # the "timed answers" column
    assert (
        "note: B's latency rests on 2 timed answer(s) of 30 (28 came from the response cache or a lookup, "
        "untimed): too few for a p95 (needs 20); rerun it with --llm-cache off to time it"
    ) in text
    assert "note: A's latency" not in text
    assert comparison.to_json()["cost"]["timed_answers"] == {"a": 30, "b": 2}
    assert "B's latency rests on 2 timed answer(s)" in render(comparison, fmt="github")
