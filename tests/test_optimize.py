"""End-to-end --optimize runs against the fake server: pruning, skips, the winner file, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from promptsweep.core.templates import load_template
from promptsweep.llm.client import EndpointInfo
from promptsweep.plugin.optimize import next_version_path, pruned_reason
from promptsweep.plugin.xdist import assign_endpoint
from tests.fakeserver import FakeLLMServer, Reply, chat_reply, user_text

LABELS = [("disk_full", "error"), ("oom_killed", "warn"), ("started", "info")]
SAMPLES: list[dict[str, Any]] = [
    {
        "key": f"k{i:02d}",
        "line": f"LOG-{i:02d} something happened",
        "label": LABELS[i % 3][0],
        "severity": LABELS[i % 3][1],
        "summary": f"summary of event {LABELS[i % 3][0]}",
    }
    for i in range(24)
]

TEMPLATE = """\
id: tiny
version: v1
model_defaults: {temperature: 0.0, max_tokens: 32}
output: {format: json_schema}
inputs: {required: [logs]}
system: |
  Classify the log line (baseline).
user: |
  Log: {{ logs }}
"""

SUITE = """\
name: tiny
dataset: data.json
template: prompt_templates/tiny_v1.yaml
id: "{label}-{key}"
category: label
inputs: {logs: line}
search_space: tiny.space.yaml
fields:
  label: {metric: exact, weight: 0.6, label: true, values: dataset}
  severity: {metric: exact, weight: 0.4, label: true, values: [info, warn, error]}
split: {train: 0.5, seed: 3}
thresholds: {overall: 0.1}
"""

SPACE = """\
base_template: prompt_templates/tiny_v1.yaml
tone: ["GOOD analyst.", "MEH analyst.", "BAD analyst."]
output: [json_schema, lines]
few_shot: {strategies: [none, positive_only], k: 2, seed: 1}
search: {strategy: halving, eta: 3, min_samples: 2}
"""


def answer(body: dict[str, Any]) -> Reply:
    system = body["messages"][0]["content"]
    text = user_text(body)
    for i, sample in enumerate(SAMPLES):
        if f"LOG-{i:02d} " in text:
            right = "GOOD" in system or ("MEH" in system and i % 2 == 0)
            got = {"label": sample["label"] if right else "nonsense", "severity": sample["severity"]}
            # Longer prompts cost more: few-shot candidates report more tokens.
            return chat_reply(json.dumps(got), prompt_tokens=len(system) // 4)
    return chat_reply("no idea")


def make_optimize_suite(pytester: pytest.Pytester) -> Path:
    (pytester.path / "prompt_templates").mkdir()
    (pytester.path / "prompt_templates" / "tiny_v1.yaml").write_text(TEMPLATE)
    (pytester.path / "data.json").write_text(json.dumps(SAMPLES))
    (pytester.path / "tiny.space.yaml").write_text(SPACE)
    suite = pytester.path / "tiny.suite.yaml"
    suite.write_text(SUITE)
    return suite


def run_dir_of(pytester: pytest.Pytester) -> Path:
    dirs = sorted((pytester.path / ".promptsweep" / "runs").glob("*-optimize"))
    return dirs[-1] / "tiny"


def test_optimize_prunes_skips_and_writes_the_winner(pytester: pytest.Pytester) -> None:
    make_optimize_suite(pytester)
    with FakeLLMServer(answer, props={"total_slots": 2}) as fake:
        result = pytester.runpytest_subprocess(
            "--optimize", "--llm-url", fake.url, "-n", "2", "-rs", "-p", "no:cacheprovider"
        )
        # 12 candidates + baseline; rounds see 2, 4, 12 of the 12 validation samples.
        assert result.ret == 0, result.stdout.str()
        outcomes = result.parseoutcomes()
        assert outcomes["passed"] + outcomes["skipped"] == 13 * 12
        assert outcomes["skipped"] > 0
        result.stdout.fnmatch_lines(["*promptsweep optimize: tiny*", "*wrote *tiny_v2.yaml*"])
        result.stdout.fnmatch_lines(["SKIPPED * pruned in round 1: 0.40 < cutoff 1.00 (after 2 samples)"])
        winner_path = pytester.path / "prompt_templates" / "tiny_v2.yaml"
        template = load_template(winner_path)
        opt = template.spec.optimization
        assert opt is not None
        assert opt["candidate"].startswith("t0-c0-")
        assert opt["candidate"].endswith("-none-direct"), "the tie goes to the cheaper prompt"
        assert opt["verdict"] == "significant"
        assert opt["score"]["mean"] == pytest.approx(1.0)
        assert opt["grid_calls"] == 12 * 12
        assert opt["calls_used"] < 13 * 12
        assert len(opt["dataset"]["sha256"]) == 64
        assert set(opt["dimensions"]) >= {"tone", "constraints", "output", "few_shot", "reasoning"}
        run_dir = run_dir_of(pytester)
        decisions = json.loads((run_dir / "decisions.json").read_text())
        assert [len(r["survivors"]) for r in decisions["rounds"]] == [4, 2]
        all_results = json.loads((run_dir / "all_results.json").read_text())
        assert all_results["winner"] == opt["candidate"]
        assert all_results["calls_used"] == opt["calls_used"]
        lines = (run_dir / "results.jsonl").read_text().splitlines()
        assert len(lines) == opt["calls_used"], "each result is recorded once"
        bad = next(c for c in all_results["candidates"] if c["candidate"].startswith("t2-"))
        assert bad["pruned_round"] == 1 and bad["samples_seen"] == 2

        # The winner is an ordinary template: a plain run with it passes.
        plain = pytester.runpytest_subprocess(
            "--llm-url", fake.url, "--prompt-template", str(winner_path), "-p", "no:cacheprovider"
        )
        assert plain.ret == 0, plain.stdout.str()

        # A second optimization never overwrites: it writes v3.
        again = pytester.runpytest_subprocess("--optimize", "--llm-url", fake.url, "-p", "no:cacheprovider")
        assert again.ret == 0, again.stdout.str()
    assert (pytester.path / "prompt_templates" / "tiny_v3.yaml").is_file()
    assert winner_path.read_text() != ""


def test_grid_strategy_runs_everything(pytester: pytest.Pytester) -> None:
    make_optimize_suite(pytester)
    with FakeLLMServer(answer) as fake:
        result = pytester.runpytest_subprocess(
            "--optimize", "--search-strategy", "grid", "--llm-url", fake.url, "-p", "no:cacheprovider"
        )
    result.assert_outcomes(passed=13 * 12)


def test_missing_search_space_is_a_usage_error(pytester: pytest.Pytester) -> None:
    make_optimize_suite(pytester)
    (pytester.path / "tiny.space.yaml").unlink()
    with FakeLLMServer(answer) as fake:
        result = pytester.runpytest_subprocess("--optimize", "--llm-url", fake.url, "-p", "no:cacheprovider")
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*search space not found:*tiny.space.yaml*"])


def test_ctrl_c_keeps_every_finished_result(pytester: pytest.Pytester) -> None:
    make_optimize_suite(pytester)
    seen = []

    def slow(body: dict[str, Any]) -> Reply:
        seen.append(1)
        reply = answer(body)
        reply.delay_s = 0.05
        return reply

    with FakeLLMServer(slow) as fake:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pytest",
                "--optimize",
                "--llm-url",
                fake.url,
                "-p",
                "no:cacheprovider",
                "--search-strategy",
                "grid",
            ],
            cwd=pytester.path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        deadline = time.monotonic() + 60
        while len(seen) < 20 and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
        calls = len(fake.requests)
    assert proc.returncode == 2, out.decode()
    results = [json.loads(line) for line in (run_dir_of(pytester) / "results.jsonl").read_text().splitlines()]
    assert len(results) >= 19  # the 20th call may still be in flight
    assert len(results) >= calls - 1  # at most the call in flight is lost
    assert not (pytester.path / "prompt_templates" / "tiny_v2.yaml").exists()
    summary = json.loads((run_dir_of(pytester) / "all_results.json").read_text())
    assert summary["complete"] is False


def test_next_version_never_reuses_a_name(tmp_path: Path) -> None:
    (tmp_path / "k8s_v1.yaml").write_text("x")
    (tmp_path / "k8s_v4.yaml").write_text("x")
    (tmp_path / "other_v9.yaml").write_text("x")
    path, n = next_version_path(tmp_path, "k8s", "v1")
    assert (path.name, n) == ("k8s_v5.yaml", 5)


def test_pruned_reason_names_round_and_cutoff() -> None:
    decided = [{"round": 0, "pruned": {"a": 0.41}, "cutoff": 0.55, "samples_seen": 4, "survivors": ["b"]}]
    assert pruned_reason(decided, "a") == "pruned in round 1: 0.41 < cutoff 0.55 (after 4 samples)"
    assert pruned_reason(decided, "b") is None


def test_workers_spread_over_endpoints_in_proportion_to_slots() -> None:
    infos = [EndpointInfo(url="http://a", total_slots=4), EndpointInfo(url="http://b", total_slots=2)]
    assigned = [0, 0]
    for _ in range(6):
        assigned[assign_endpoint(infos, assigned)] += 1
    assert assigned == [4, 2]


def test_auto_workers_follow_total_slots(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_one():\n    pass\n")
    with (
        FakeLLMServer(answer, props={"total_slots": 3}) as a,
        FakeLLMServer(answer, props={"total_slots": 2}) as b,
    ):
        result = pytester.runpytest_subprocess("--llm-url", a.url, "--llm-url", b.url, "-n", "auto")
    result.stdout.fnmatch_lines(["*5 workers*"])
    with FakeLLMServer(answer) as c:
        result = pytester.runpytest_subprocess("--llm-url", c.url, "-n", "auto")
    result.stderr.fnmatch_lines(["*reports no total_slots*CPU count*"])


@pytest.mark.real_server
def test_optimize_against_the_real_server(pytester: pytest.Pytester, llama_server_url: str) -> None:
    make_optimize_suite(pytester)
    (pytester.path / "tiny.space.yaml").write_text(
        SPACE.replace('["GOOD analyst.", "MEH analyst.", "BAD analyst."]', '["You label logs."]')
        .replace("[json_schema, lines]", "[json_schema]")
        .replace("[none, positive_only]", "[none, positive_only]")
    )
    (pytester.path / "tiny.suite.yaml").write_text(SUITE.replace("train: 0.5", "train: 20"))
    result = pytester.runpytest_subprocess(
        "--optimize", "--search-strategy", "grid", "--llm-url", llama_server_url, "-p", "no:cacheprovider"
    )
    assert result.ret == 0, result.stdout.str()
    assert (pytester.path / "prompt_templates" / "tiny_v2.yaml").is_file()
    data = yaml.safe_load((pytester.path / "prompt_templates" / "tiny_v2.yaml").read_text())
    assert data["optimization"]["model"]
