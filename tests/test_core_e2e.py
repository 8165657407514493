"""End-to-end runs of the plugin with pytester: items, xdist aggregation, gate, artifacts, junitxml."""

from __future__ import annotations

import html
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.fakeserver import FakeLLMServer
from tests.suitekit import SAMPLES, make_suite, on_v1, oracle

ROOT = Path(__file__).resolve().parents[1]


def _run_dir(pytester: pytest.Pytester) -> Path:
    runs = sorted((pytester.path / ".promptsweep" / "runs").iterdir())
    assert runs, "no run directory was written"
    return runs[-1]


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["n0", "n2"])
def test_scores_identical_with_and_without_xdist(pytester: pytest.Pytester, workers: list[str]) -> None:
    make_suite(pytester, threshold=0.5)
    with FakeLLMServer(oracle({1, 3})) as server:
        result = pytester.runpytest_subprocess("--llm-url", server.url, *workers, "-p", "no:cacheprovider")
    result.assert_outcomes(passed=6)
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        ["*suite tiny: 6 samples, overall 0.667 (95% CI 0.00-1.00), threshold 0.500*", "*gate passed*"]
    )
    metrics = json.loads((_run_dir(pytester) / "metrics.json").read_text())
    assert metrics["schema_version"] == 1
    assert metrics["overall"]["mean"] == pytest.approx(2 / 3)
    # the interval (exact at 6 samples) is computed over id-sorted results: the same numbers in both modes
    assert (metrics["overall"]["low"], metrics["overall"]["high"]) == pytest.approx((0.0, 1.0))
    assert metrics["categories"]["started"]["mean"] == 1.0


def test_gate_fails_with_exit_code_one_and_says_why(pytester: pytest.Pytester) -> None:
    make_suite(pytester, threshold=0.9)
    with FakeLLMServer(oracle({1, 3})) as server:
        result = pytester.runpytest_subprocess("--llm-url", server.url, "-n", "2", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=6)
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*GATE FAILED: overall 0.667 < 0.900 (95% CI 0.00-1.00)*"])
    run = _run_dir(pytester)
    summary = (run / "summary.md").read_text()
    assert "gate FAILED" in summary and "overall 0.667 < 0.900" in summary
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["gate"] == {"passed": False, "failures": [metrics["gate"]["failures"][0]]}
    # The floor to read the score against, the same number in every report.
    constant = metrics["constant_answer"]["score"]
    assert 0.0 < constant < 1.0 and set(metrics["constant_answer"]["fields"]) == {
        "label",
        "severity",
        "summary",
    }
    line = (
        f"a constant answer (each field's most frequent value) would score {constant:.3f} on these 6 samples"
    )
    assert line in result.stdout.str() and line in summary
    assert html.escape(line) in (run / "report.html").read_text()


def test_min_score_option_overrides_and_is_validated(pytester: pytest.Pytester) -> None:
    make_suite(pytester, threshold=0.9)
    with FakeLLMServer(oracle({1, 3})) as server:
        ok = pytester.runpytest_subprocess(
            "--llm-url", server.url, "--min-score", "0.6", "-p", "no:cacheprovider"
        )
        assert ok.ret == 0
        bad = pytester.runpytest_subprocess("--llm-url", server.url, "--min-score", "1.2")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["*--min-score must be within [[]0, 1[]], got 1.2*"])


def test_artifacts_results_config_and_junitxml(pytester: pytest.Pytester) -> None:
    make_suite(pytester)
    with FakeLLMServer(oracle({0})) as server:
        result = pytester.runpytest_subprocess(
            "--llm-url", server.url, "-n", "2", "--junitxml=junit.xml", "-p", "no:cacheprovider"
        )
    assert result.ret == 0
    run = _run_dir(pytester)
    assert run.name.endswith("-tiny")
    lines = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    assert sorted(r["sample_id"] for r in lines) == sorted(f"{s['label']}-{s['key']}" for s in SAMPLES)
    wrong = next(r for r in lines if r["sample_id"] == "disk_full-k0")
    assert wrong["got"]["label"] == "nonsense" and wrong["scores"]["label"] == 0.0 and wrong["raw"]
    assert wrong["prompt_tokens"] == 10 and wrong["latency_s"] > 0
    config = json.loads((run / "config.json").read_text())
    assert config["schema_version"] == 1
    assert len(config["template"]["sha256"]) == 64 and len(config["dataset"]["sha256"]) == 64
    assert config["model"]["model_id"] == "fake-model"
    assert config["llm_params"]["max_tokens"] == 64
    cases = ET.parse(pytester.path / "junit.xml").getroot().iter("testcase")
    props = {c.get("name"): {p.get("name"): p.get("value") for p in c.iter("property")} for c in cases}
    assert props["tiny[disk_full-k0]"]["score.label"] == "0.0"
    assert props["tiny[started-k4]"]["score"] == "1.0"


def test_items_are_selectable_by_keyword(pytester: pytest.Pytester) -> None:
    make_suite(pytester)
    with FakeLLMServer(oracle()) as server:
        result = pytester.runpytest_subprocess(
            "--llm-url", server.url, "-k", "oom_killed", "-p", "no:cacheprovider"
        )
        assert len(server.requests) == 2
    result.assert_outcomes(passed=2)


def test_errored_sample_fails_its_item_and_the_gate(pytester: pytest.Pytester) -> None:
    from tests.fakeserver import Reply, user_text

    make_suite(pytester, threshold=0.1)
    good = oracle()

    def respond(body: dict) -> Reply:  # type: ignore[type-arg]
        return Reply(status=400, body={"error": "bad"}) if "LOG-2 " in user_text(body) else good(body)

    with FakeLLMServer(respond) as server:
        result = pytester.runpytest_subprocess(
            "--llm-url", server.url, "--llm-retries", "0", "-p", "no:cacheprovider"
        )
    result.assert_outcomes(passed=5, failed=1)
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        ["*sample oom_killed-k2 errored: *HTTP 400*", "*1 sample(s) errored (allowed: 0)*"]
    )


def test_golden_swaps_the_dataset(pytester: pytest.Pytester) -> None:
    make_suite(pytester)
    other = [dict(s, key=f"g{i}") for i, s in enumerate(SAMPLES[:3])]
    (pytester.path / "other.json").write_text(json.dumps(other))
    with FakeLLMServer(oracle()) as server:
        result = pytester.runpytest_subprocess(
            "--llm-url", server.url, "--golden", str(pytester.path / "other.json"), "--collect-only", "-q"
        )
    result.stdout.fnmatch_lines(["*tiny.suite.yaml::tiny[[]disk_full-g0[]]*", "3 tests collected*"])


def test_unreachable_url_is_one_clear_error(pytester: pytest.Pytester) -> None:
    make_suite(pytester)
    result = pytester.runpytest_subprocess("--llm-url", "http://127.0.0.1:9", "-n", "2")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*LLM endpoint http://127.0.0.1:9 is unreachable*"])
    assert "errored" not in result.stdout.str()


def test_python_route_fixtures_and_custom_metric_hook(pytester: pytest.Pytester) -> None:
    make_suite(pytester, threshold=0.5)
    pytester.makeconftest(
        """
        def pytest_promptsweep_register_metrics(registry):
            registry.register("first_letter", lambda e, g: float(e[:1] == g[:1]))
        """
    )
    suite = pytester.path / "tiny.suite.yaml"
    suite.write_text(suite.read_text().replace("summary: {metric: rouge_l", "summary: {metric: first_letter"))
    pytester.makepyfile(
        test_route="""
        import pytest

        @pytest.mark.promptsweep(suite="tiny.suite.yaml")
        def test_sample(sample, prompt, endpoint, promptsweep_score):
            assert prompt.messages[-1]["role"] == "user" and sample.data["line"] in prompt.messages[-1]["content"]
            result = promptsweep_score(endpoint.chat(prompt, max_tokens=32))
            assert set(result.scores) == {"label", "severity", "summary"}
        """
    )
    with FakeLLMServer(oracle({5})) as server:
        result = pytester.runpytest_subprocess(
            "--llm-url", server.url, "test_route.py", "-n", "2", "-p", "no:cacheprovider"
        )
    result.assert_outcomes(passed=6)
    # the Python-route test is a run of its own, named after the test
    result.stdout.fnmatch_lines(
        ["*suite tiny (test_route.py::test_sample): 6 samples, overall 0.8* threshold 0.500*"]
    )


@pytest.mark.real_server
def test_example_suite_on_real_llama_server(pytester: pytest.Pytester, llama_server_url: str) -> None:
    """The shipped suite and template against the real llama-server: constrained JSON parses."""
    pytester.syspathinsert(ROOT)
    (pytester.path / "evals").mkdir()
    for sub in (
        "evals/k8s_triage.suite.yaml",
        "evals/data/k8s_triage_samples.json",
        "prompt_templates/k8s_log_analysis_v1.yaml",
    ):
        target = pytester.path / sub
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(on_v1((ROOT / sub).read_text()))
    result = pytester.runpytest_subprocess(
        "evals",
        "--llm-url",
        llama_server_url,
        "-n",
        "2",
        "-k",  # one sample of each of two root causes, one per worker: answers of the full 160 tokens
        "oom_killed-6d6368fc or certificate_expired-3686a95f",
        "--min-score",
        "0",
        "--llm-cache",
        "off",
        "--llm-timeout",
        "600",
        "-p",
        "no:cacheprovider",
    )
    result.assert_outcomes(passed=2)
    lines = [json.loads(x) for x in (_run_dir(pytester) / "results.jsonl").read_text().splitlines()]
    assert len(lines) == 2
    # constrained decoding keeps the answer in the schema; one cut at max_tokens parses line by line
    assert all(r["parse_source"] in ("json", "lines") and not r["error"] for r in lines)
    assert all(r["got"]["severity"] in {"info", "warn", "error", "critical"} for r in lines)
    config = json.loads((_run_dir(pytester) / "config.json").read_text())
    assert config["model"]["is_llama_server"] and config["model"]["total_slots"] == 4


def test_a_conftest_found_during_collection_still_registers_its_metrics(pytester: pytest.Pytester) -> None:
    """The metrics hook is historic: a conftest in a subdirectory is loaded only when pytest
    collects that directory, after configure, and must still reach the registry."""
    make_suite(pytester, threshold=0.0)
    sub = pytester.path / "sub"
    sub.mkdir()
    for name in ("template.yaml", "data.json"):
        (pytester.path / name).rename(sub / name)
    suite = (pytester.path / "tiny.suite.yaml").read_text()
    (sub / "tiny.suite.yaml").write_text(
        suite.replace("summary: {metric: rouge_l", "summary: {metric: first_letter")
    )
    (pytester.path / "tiny.suite.yaml").unlink()
    (sub / "conftest.py").write_text(
        "def pytest_promptsweep_register_metrics(registry):\n"
        "    registry.register('first_letter', lambda e, g: float(e[:1] == g[:1]))\n"
    )
    with FakeLLMServer(oracle()) as server:
        result = pytester.runpytest_subprocess("--llm-url", server.url, "-p", "no:cacheprovider")
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines(["summary *0.2*1*"])
