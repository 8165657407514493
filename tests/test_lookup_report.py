"""The lookup floor on plain runs: the terminal, summary.md, report.html, metrics.json and the
leaderboard show it beside the constant floor, and say when the prompt does not beat it."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

import pytest

from promptsweep.core.measure.stats import Estimate
from promptsweep.reporting.summary import lookup_line
from tests.fakeserver import FakeLLMServer, Reply, chat_reply
from tests.suitekit import make_suite, on_v1

ROOT = Path(__file__).resolve().parents[1]

# Three pairs of near-identical log lines, one label each; the split (stratified by label) puts one
# of each pair on each side, so a validation sample's nearest train sample is its twin.
PAIRS = [
    ("disk_full", "error", "the disk is full", "no space left on device /var/lib/data"),
    ("oom_killed", "error", "killed for memory", "container web OOMKilled exit code 137"),
    ("started", "info", "service started", "server listening on port 8080 ready"),
]
SAMPLES: list[dict[str, Any]] = [
    {"key": f"k{2 * i + j}", "line": f"{line} {tail}", "label": label, "severity": sev, "summary": summary}
    for i, (label, sev, summary, line) in enumerate(PAIRS)
    for j, tail in enumerate(["first", "again"])
]

SUITE = """\
name: tiny
dataset: data.json
template: template.yaml
id: "{{label}}-{{key}}"
category: label
inputs:
  logs: line
fields:
  label: {{metric: exact, weight: 0.5, label: true, values: dataset}}
  severity: {{metric: exact, weight: 0.3, label: true, values: [info, warn, error]}}
  summary: {{metric: rouge_l, weight: 0.2}}
split:
  train: {train}
  test: 0   # no held-out test part: this plain run scores all of validation
  evaluate: {evaluate}
"""


def wrong(body: dict[str, Any]) -> Reply:
    """A model that always answers the same wrong label: only `started` gets its severity right."""
    return chat_reply(json.dumps({"label": "disk_full", "severity": "info", "summary": "no idea"}))


def run(pytester: pytest.Pytester, *, train: float, evaluate: str) -> tuple[Any, Path]:
    make_suite(pytester, samples=SAMPLES, suite_text=SUITE.format(train=train, evaluate=evaluate))
    with FakeLLMServer(wrong) as server:
        result = pytester.runpytest_subprocess(
            "--llm-url", server.url, "--min-score", "0", "-p", "no:cacheprovider"
        )
    assert result.ret == 0, result.stdout.str()[-2000:]
    runs = sorted((pytester.path / ".promptsweep" / "runs").iterdir())
    return result, runs[-1]


def test_lookup_floor_beside_the_constant_one_in_every_report(pytester: pytest.Pytester) -> None:
    result, run_dir = run(pytester, train=0.5, evaluate="validation")
    result.assert_outcomes(passed=3)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    lookup = metrics["lookup_answer"]
    # Each validation sample copies its twin: every field right. The model gets the label (0.5) of
    # the disk_full sample, the severity (0.3) of the started one, nothing of the oom_killed one.
    assert lookup["score"] == pytest.approx(1.0)
    assert lookup["fields"] == pytest.approx({"label": 1.0, "severity": 1.0, "summary": 1.0})
    assert metrics["overall"]["mean"] == pytest.approx((0.5 + 0.0 + 0.3) / 3)
    difference = lookup["difference"]
    assert difference["n"] == 3 and difference["mean"] == pytest.approx((0.5 + 0.0 + 0.3) / 3 - 1.0)
    # Three pairs cannot bound a difference (no sign pattern of 3 is rare enough at 95%): the
    # interval spans every difference two scores can have, and the line still says the lookup wins.
    assert (difference["low"], difference["high"]) == (-1.0, 1.0)
    line = (
        "copying the nearest train sample's labels (no model call) scores 1.000 on these 3 samples; "
        f"this prompt 0.267: -0.733 (95% CI {difference['low']:+.2f}..{difference['high']:+.2f}): "
        "the prompt does not beat the lookup"
    )
    stdout = result.stdout.str()
    assert line in stdout
    assert "a constant answer (each field's most frequent value) would score" in stdout
    assert stdout.count("the prompt does not beat the lookup") == 1, "one line says it"
    summary = (run_dir / "summary.md").read_text()
    assert f"For reference, {line}." in summary
    assert html.escape(line) in (run_dir / "report.html").read_text()
    board = json.loads((pytester.path / ".promptsweep" / "leaderboard.json").read_text())
    entry = board["entries"][-1]
    assert entry["lookup"]["score"] == pytest.approx(1.0)
    assert entry["lookup"]["difference"]["n"] == 3


def test_without_a_train_split_only_the_constant_floor(pytester: pytest.Pytester) -> None:
    result, run_dir = run(pytester, train=0, evaluate="all")
    result.assert_outcomes(passed=6)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert "lookup_answer" not in metrics and "constant_answer" in metrics
    stdout = result.stdout.str()
    assert "a constant answer (each field's most frequent value)" in stdout
    assert "copying the nearest train sample" not in stdout
    assert "copying the nearest train sample" not in (run_dir / "summary.md").read_text()
    board = json.loads((pytester.path / ".promptsweep" / "leaderboard.json").read_text())
    assert board["entries"][-1]["lookup"] is None


def test_line_says_when_the_prompt_beats_the_lookup() -> None:
    beaten = lookup_line(0.4, 0.7, 64, Estimate(mean=0.3, low=0.21, high=0.39, n=64))
    assert beaten == (
        "copying the nearest train sample's labels (no model call) scores 0.400 on these 64 samples; "
        "this prompt 0.700: +0.300 (95% CI +0.21..+0.39): the prompt beats the lookup"
    )
    tied = lookup_line(0.4, 0.45, 64, Estimate(mean=0.05, low=-0.01, high=0.11, n=64))
    assert tied is not None and tied.endswith("the prompt does not beat the lookup")
    assert lookup_line(None, 0.4, 64, None) is None


@pytest.mark.xdist_group("real_server")
def test_real_run_prints_both_floors(pytester: pytest.Pytester, llama_server_url: str) -> None:
    """The example suite on 12 of its samples, scoring the 6 of the validation side with short
    answers: the terminal summary shows the constant floor and the lookup floor with the difference."""
    template = (ROOT / "prompt_templates" / "k8s_log_analysis_v1.yaml").read_text()
    pytester.path.joinpath("template.yaml").write_text(re.sub(r"max_tokens: \d+", "max_tokens: 48", template))
    data = json.loads((ROOT / "evals" / "data" / "k8s_triage_samples.json").read_text())
    pytester.path.joinpath("data.json").write_text(json.dumps(data[:12]))
    suite = on_v1((ROOT / "evals" / "k8s_triage.suite.yaml").read_text())
    suite = suite.replace("dataset: data/k8s_triage_samples.json", "dataset: data.json")
    suite = suite.replace("template: ../prompt_templates/k8s_log_analysis_v1.yaml", "template: template.yaml")
    suite = suite.replace("search_space: k8s_triage.space.yaml\n", "")
    suite = suite.replace("evaluate: all", "test: 0\n  evaluate: validation").replace(
        "max_tokens: 160", "max_tokens: 48"
    )
    pytester.path.joinpath("k8s.suite.yaml").write_text(suite)
    result = pytester.runpytest_subprocess(
        "k8s.suite.yaml",
        "--llm-url",
        llama_server_url,
        "--min-score",
        "0",
        "--llm-cache",
        "off",
        "--llm-timeout",
        "600",
        "-p",
        "no:cacheprovider",
    )
    assert result.ret == 0, result.stdout.str()[-3000:]
    metrics = json.loads(
        sorted((pytester.path / ".promptsweep" / "runs").iterdir())[-1].joinpath("metrics.json").read_text()
    )
    n = metrics["n"]
    assert 4 <= n <= 8 and metrics["lookup_answer"]["difference"]["n"] == n
    result.stdout.fnmatch_lines(
        [
            f"*a constant answer (each field's most frequent value) would score *.* on these {n} samples*",
            f"*copying the nearest train sample's labels (no model call) scores *.* on these {n} samples; "
            "this prompt *.*: *.* (95% CI *..*): the prompt * the lookup",
        ]
    )
