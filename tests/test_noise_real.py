"""The deterministic mode, repeats and the cache check against the real llama-server.

A few samples of the example suite with short answers keep this quick;
benchmarks/bench_noise.py and bench_gate_stability.py measure the whole suite.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.suitekit import on_v1

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = 2


def example_suite(pytester: pytest.Pytester, samples: int = SAMPLES, max_tokens: int = 32) -> None:
    """The example suite on its first ``samples`` samples, with a short ``max_tokens``."""
    template = (ROOT / "prompt_templates" / "k8s_log_analysis_v1.yaml").read_text()
    pytester.path.joinpath("template.yaml").write_text(
        re.sub(r"max_tokens: \d+", f"max_tokens: {max_tokens}", template)
    )
    data = json.loads((ROOT / "evals" / "data" / "k8s_triage_samples.json").read_text())
    pytester.path.joinpath("data.json").write_text(json.dumps(data[:samples]))
    suite = on_v1((ROOT / "evals" / "k8s_triage.suite.yaml").read_text())
    suite = suite.replace("dataset: data/k8s_triage_samples.json", "dataset: data.json")
    suite = suite.replace("template: ../prompt_templates/k8s_log_analysis_v1.yaml", "template: template.yaml")
    suite = suite.replace("search_space: k8s_triage.space.yaml\n", "")
    pytester.path.joinpath("k8s.suite.yaml").write_text(suite)


def results(run_dir: Path) -> dict[tuple[str, int], tuple[str, float]]:
    out: dict[tuple[str, int], tuple[str, float]] = {}
    for line in (run_dir / "results.jsonl").read_text().splitlines():
        r: dict[str, Any] = json.loads(line)
        assert r["error"] is None, r["error"]
        out[(r["sample_id"], r["repeat"])] = (r["raw"], r["score"])
    return out


def test_deterministic_cold_runs_give_the_same_answers_and_the_cache_check_agrees(
    pytester: pytest.Pytester, llama_server_url: str
) -> None:
    """Two cold runs in the deterministic mode (run 1 only writes the cache, run 2 only checks
    it; neither reads an answer from it), each asking every sample twice: every answer of
    every repeat and run is the same, and the cache check finds all of them reproduced."""
    example_suite(pytester)
    common = ("k8s.suite.yaml", "--llm-url", llama_server_url, "--llm-deterministic", "--llm-repeats", "2")
    common += ("--min-score", "0", "--llm-timeout", "600", "-p", "no:cacheprovider")
    first = pytester.runpytest_subprocess(*common, "--llm-cache", "write")
    second = pytester.runpytest_subprocess(*common, "--llm-cache", "check")
    assert first.ret == 0 and second.ret == 0, (first.stdout.str()[-3000:], second.stdout.str()[-3000:])
    runs = sorted((pytester.path / ".promptsweep" / "runs").iterdir())
    one, two = results(runs[0]), results(runs[1])
    assert len(one) == 2 * SAMPLES
    assert one == two  # identical answers and scores, run 1 vs run 2
    for sample in {key[0] for key in one}:
        assert one[(sample, 0)] == one[(sample, 1)]  # and repeat 0 vs repeat 1 within a run
    first.stdout.fnmatch_lines(
        [
            f"noise: deterministic mode: answers reproduce in {SAMPLES} of {SAMPLES} samples (2 answers each)*±0.000"
        ]
    )
    second.stdout.fnmatch_lines(
        [f"*response cache check (*): {2 * SAMPLES} of {2 * SAMPLES} stored answers reproduced (100%)*"]
    )
    config = json.loads((runs[0] / "config.json").read_text())
    assert config["determinism"]["mode"] == "deterministic" and config["repeats"] == 2
