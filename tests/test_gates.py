"""Flaky samples over repeats and the cost gates (tokens per sample, p95 latency), in pytest
runs and in ``promptsweep compare``.

The fake server plays a noisy or a wordy llama-server here; the last test asks the real one
at temperature 1.0 and checks only that what is reported matches the recorded answers.
"""

from __future__ import annotations

import json
import re
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from promptsweep.cli.main import main
from promptsweep.core.answers.result import SampleResult
from promptsweep.core.data.suite import Thresholds
from promptsweep.core.measure.aggregate import aggregate, stability
from promptsweep.core.measure.gate import check_gate, cost_line
from promptsweep.core.measure.stats import paired_quantile_difference
from promptsweep.reporting.compare import RunData, compare_results, render
from tests.fakeserver import FakeLLMServer, Reply, chat_reply, user_text
from tests.suitekit import SAMPLES, make_suite
from tests.test_noise import flaky


def result(
    sample_id: str,
    score: float = 1.0,
    repeat: int = 0,
    *,
    label: str = "x",
    error: str | None = None,
    tokens: int | None = 15,
    latency_s: float | None = 0.1,
    raw: str | None = None,
) -> SampleResult:
    return SampleResult(
        suite="s",
        sample_id=sample_id,
        category="c",
        template="t@v1",
        expected={"a": "x"},
        got={"a": label},
        scores={"a": score},
        score=score,
        raw=raw if raw is not None else f"a: {label}",
        error=error,
        repeat=repeat,
        prompt_tokens=None if tokens is None else 10,
        completion_tokens=None if tokens is None else tokens - 10,
        latency_s=latency_s,
    )


# ------------------------------------------------------------------------------ flaky: the rule


def test_stability_is_decided_by_parsed_answers_pass_fail_and_errors() -> None:
    same = [result("a", raw="a: x"), result("a", 1, raw="A:  x")]  # other wording, same parsed answer
    assert stability(same) == "stable"
    assert stability([result("a", label="x"), result("a", 1, label="y")]) == "flaky"
    # same parsed fields, but one answer passes and one fails (a graded metric, say)
    assert stability([result("a", 0.6), result("a", 0.4, 1)]) == "flaky"
    assert stability([result("a", 0.6), result("a", 0.4, 1)], right_at=0.3) == "stable"
    assert stability([result("a"), result("a", 0.0, 1, error="timeout")]) == "errored"
    assert stability([result("a")]) == "stable"


def test_flaky_samples_fail_the_gate_only_when_asked() -> None:
    results = [
        result("a"),
        result("a", 1.0, 1),
        result("b"),
        result("b", 0.0, 1, label="y"),
        result("c", 0.0),
        result("c", 0.0, 1, label="z"),
    ]
    agg = aggregate("s", results, ["a"])
    assert agg.stability() == {"a": "stable", "b": "flaky", "c": "flaky"}
    assert agg.to_json()["stability"] == {
        "right_at": 0.5,
        "stable": 1,
        "flaky": 2,
        "errored": 0,
        "flaky_samples": ["b", "c"],
    }
    assert check_gate(agg, Thresholds(), flaky="warn") == []
    assert check_gate(agg, Thresholds(), flaky="ignore") == []
    assert check_gate(agg, Thresholds(), flaky="fail") == [
        "2 flaky samples (parsed answers or pass/fail changed between repeats): b, c"
    ]
    assert aggregate("s", results[:1], ["a"]).to_json()["stability"] is None  # no repeats, no verdict


# ------------------------------------------------------------------------------ cost: the rule


def test_cost_gate_messages_and_line() -> None:
    agg = aggregate("s", [result(f"s{i}", tokens=412, latency_s=0.812) for i in range(4)], ["a"])
    assert agg.tokens_per_sample == 412
    tight = Thresholds(max_tokens_per_sample=300, max_latency_p95_ms=600)
    assert check_gate(agg, tight) == ["412 tokens per sample > 300", "p95 latency 812 ms > 600 ms"]
    assert cost_line(agg, tight) == "cost: 412 tokens per sample (max 300); p95 latency 812 ms (max 600 ms)"
    assert check_gate(agg, Thresholds(max_tokens_per_sample=412, max_latency_p95_ms=812)) == []
    assert cost_line(agg, Thresholds()) is None
    silent = aggregate("s", [result("s0", tokens=None)], ["a"])
    assert check_gate(silent, Thresholds(max_tokens_per_sample=300)) == [
        "tokens per sample unknown (the server reported no usage) for thresholds.max_tokens_per_sample 300"
    ]
    cached = aggregate("s", [SampleResult(**{**result("s0").to_json(), "from_cache": True})], ["a"])
    assert check_gate(cached, Thresholds(max_latency_p95_ms=1)) == []  # nothing was timed
    assert "p95 latency not measured" in (cost_line(cached, Thresholds(max_latency_p95_ms=1)) or "")


def test_bad_cost_thresholds_name_the_key(pytester: pytest.Pytester) -> None:
    suite = make_suite(pytester)
    suite.write_text(suite.read_text() + "  max_tokens_per_sample: 0\n")
    result_ = pytester.runpytest("--llm-server=off")
    assert result_.ret != 0
    result_.stdout.fnmatch_lines(
        ["*tiny.suite.yaml:*thresholds.max_tokens_per_sample*greater than or equal to 1*"]
    )


def test_paired_p95_difference() -> None:
    slow = [[100.0 + i, 110.0 + i] for i in range(10)]
    fast = [[50.0 + i, 55.0 + i] for i in range(10)]
    rise = paired_quantile_difference(fast, slow, q=0.95)
    assert rise.n == 10 and rise.mean == pytest.approx(119 - 64)
    assert rise.low > 0
    same = paired_quantile_difference(fast, fast, q=0.95)
    assert same.mean == same.low == same.high == 0.0
    assert paired_quantile_difference([[1.0], []], [[2.0], [3.0]]).n == 1  # a side with no value is left out


def _run(name: str, results: list[SampleResult]) -> RunData:
    return RunData(root=Path(name), config={"suite": "s", "fields": {"a": {}}}, metrics=None, results=results)


def test_compare_finds_a_token_rise_that_scores_do_not_show() -> None:
    a = _run("A", [result(f"s{i}", tokens=100 + i % 3) for i in range(8)])
    b = _run("B", [result(f"s{i}", tokens=400 + i % 5) for i in range(8)])
    c = compare_results(a, b)
    assert not c.regressed and c.overall.diff.mean == 0
    assert c.tokens is not None and c.tokens.diff.low > 0
    assert c.cost_regressed and c.cost_rises() == [c.tokens]
    text = render(c)
    assert re.search(r"tokens per sample 101 → 402, delta \+301 \(95% CI \+\d+\.\.\+\d+, n=8\): RISE", text)
    assert "COST REGRESSION: tokens per sample 101 → 402" in text
    assert c.to_json()["cost_regressed"] is True
    back = compare_results(b, a)
    assert not back.cost_regressed and "): lower" in render(back)
    assert not compare_results(a, a).cost_regressed


def test_compare_counts_a_latency_rise_only_beyond_its_tolerance() -> None:
    a = _run("A", [result(f"s{i}", latency_s=0.400 + i / 1000) for i in range(8)])
    slower = _run("B", [result(f"s{i}", latency_s=0.440 + i / 1000) for i in range(8)])  # +40 ms, +10%
    much_slower = _run("C", [result(f"s{i}", latency_s=0.800 + i / 1000) for i in range(8)])
    within = compare_results(a, slower)
    assert within.latency_p95 is not None and within.latency_p95.significant
    assert not within.cost_regressed and "~ within tolerance (81 ms)" in render(within)
    beyond = compare_results(a, much_slower)
    assert beyond.cost_rises() == [beyond.latency_p95]
    assert "COST REGRESSION: p95 latency 407 ms → 807 ms, delta +400 ms" in render(beyond)
    assert compare_results(a, slower, latency_tolerance=0.0).cost_regressed is False  # still under 50 ms
    assert compare_results(a, much_slower, latency_tolerance=2.0).cost_regressed is False


# ------------------------------------------------------------------------------ pytest runs


def _testcases(path: Path) -> dict[str, dict[str, str]]:
    """Each testcase's name and its properties."""
    out: dict[str, dict[str, str]] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        out[case.get("name", "")] = {p.get("name", ""): p.get("value", "") for p in case.iter("property")}
    return out


def _run_dir(pytester: pytest.Pytester) -> Path:
    return sorted((pytester.path / ".promptsweep" / "runs").iterdir())[-1]


def test_flaky_samples_are_listed_everywhere_and_in_junitxml(pytester: pytest.Pytester) -> None:
    make_suite(pytester, threshold=0.1)
    with FakeLLMServer(flaky({1, 4})) as fake:
        warn = pytester.runpytest_subprocess(
            "--llm-url", fake.url, "--llm-repeats", "3", "-n", "2", "--junitxml=junit.xml"
        )
    assert warn.ret == 0  # the default, warn: listed, but the gate passes
    flaky_ids = {"disk_full-k1", "started-k4"}
    warn.stdout.fnmatch_lines(
        [
            "flaky samples: 2 of 6 (parsed answers or pass/fail at 0.5 changed between repeats; "
            "--promptsweep-flaky fail would fail the gate): disk_full-k1, started-k4",
            "gate passed",
        ]
    )
    run = _run_dir(pytester)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["stability"]["flaky_samples"] == ["disk_full-k1", "started-k4"]
    assert metrics["flaky_policy"] == "warn"
    summary = (run / "summary.md").read_text()
    assert "## Flaky samples (2 of 6)" in summary and "- disk\\_full-k1: " in summary
    html = (run / "report.html").read_text()
    assert 'id="flaky"' in html and 'data-sample="started-k4"' in html
    cases = _testcases(pytester.path / "junit.xml")
    assert len(cases) == 18
    for sample in [f"{s['label']}-{s['key']}" for s in SAMPLES]:
        marked = [
            props for name, props in cases.items() if name.startswith(f"tiny[{sample}") and "flaky" in props
        ]
        assert marked, sample  # the item that completed the sample carries the verdict
        expected = "true" if sample in flaky_ids else "false"
        assert {p["flaky"] for p in marked} == {expected}
        assert {p["stability"] for p in marked} == {"flaky" if expected == "true" else "stable"}
    suite_props = {
        p.get("name"): p.get("value")
        for p in ET.parse(pytester.path / "junit.xml").getroot().findall("./testsuite/properties/property")
    }
    assert suite_props == {"promptsweep.flaky.tiny": "disk_full-k1,started-k4"}


@pytest.mark.parametrize("where", ["flag", "ini", "env"])
def test_flaky_fail_fails_the_gate(
    pytester: pytest.Pytester, where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_suite(pytester, threshold=0.1)
    args = ["--llm-repeats", "2", "-p", "no:cacheprovider"]
    if where == "flag":
        args += ["--promptsweep-flaky", "fail"]
    elif where == "ini":
        pytester.makeini("[pytest]\npromptsweep_flaky = fail\n")
    else:
        monkeypatch.setenv("PROMPTSWEEP_FLAKY", "fail")
    with FakeLLMServer(flaky({2})) as fake:
        failed = pytester.runpytest_subprocess("--llm-url", fake.url, *args)
        ignored = pytester.runpytest_subprocess("--llm-url", fake.url, *args, "--promptsweep-flaky", "ignore")
    assert failed.ret == pytest.ExitCode.TESTS_FAILED
    failed.stdout.fnmatch_lines(
        ["GATE FAILED: 1 flaky sample (parsed answers or pass/fail changed between repeats): oom_killed-k2"]
    )
    assert ignored.ret == 0 and "flaky samples:" not in ignored.stdout.str()  # the flag wins over ini/env


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("flag", "*--promptsweep-flaky*invalid choice*'maybe'*"),
        ("ini", "ERROR: promptsweep_flaky (ini) must be one of fail, warn, ignore, got 'maybe'"),
    ],
)
def test_bad_flaky_policy_is_one_clear_error(pytester: pytest.Pytester, where: str, message: str) -> None:
    make_suite(pytester)
    args = ["--llm-server=off"]
    if where == "flag":
        args += ["--promptsweep-flaky", "maybe"]
    else:
        pytester.makeini("[pytest]\npromptsweep_flaky = maybe\n")
    result_ = pytester.runpytest(*args)
    assert result_.ret == pytest.ExitCode.USAGE_ERROR
    result_.stderr.fnmatch_lines([message])


def wordy(body: dict[str, Any]) -> Reply:
    """Right answers whose completion uses every token it may: usage grows with max_tokens,
    the answers do not."""
    text = user_text(body)
    sample = next(s for i, s in enumerate(SAMPLES) if f"LOG-{i} " in text)
    answer = {k: sample[k] for k in ("label", "severity", "summary")}
    return chat_reply(json.dumps(answer), prompt_tokens=40, completion_tokens=int(body["max_tokens"]))


def test_cost_gate_fails_a_run_only_its_tokens_tell_apart(pytester: pytest.Pytester) -> None:
    suite = make_suite(pytester, threshold=0.5)
    suite.write_text(suite.read_text() + "  max_tokens_per_sample: 300\n")
    template = pytester.path / "template.yaml"
    with FakeLLMServer(wordy) as fake:
        small = pytester.runpytest_subprocess("--llm-url", fake.url, "-p", "no:cacheprovider")
        small_dir = _run_dir(pytester)
        template.write_text(template.read_text().replace("max_tokens: 64", "max_tokens: 400"))
        large = pytester.runpytest_subprocess("--llm-url", fake.url, "-p", "no:cacheprovider")
        large_dir = _run_dir(pytester)
    small.assert_outcomes(passed=6)
    assert small.ret == 0
    small.stdout.fnmatch_lines(["cost: 104 tokens per sample (max 300)", "gate passed"])
    large.assert_outcomes(passed=6)  # every item passes: only the gate sees the cost
    assert large.ret == pytest.ExitCode.TESTS_FAILED
    large.stdout.fnmatch_lines(["GATE FAILED: 440 tokens per sample > 300", "*1 gate FAILED*"])
    small_metrics = json.loads((small_dir / "metrics.json").read_text())
    large_metrics = json.loads((large_dir / "metrics.json").read_text())
    assert small_metrics["overall"]["mean"] == large_metrics["overall"]["mean"]
    assert large_metrics["cost"]["tokens_per_sample"] == 440
    assert large_metrics["cost"]["max_tokens_per_sample"] == 300
    assert large_metrics["gate"]["failures"] == ["440 tokens per sample > 300"]
    summary = (large_dir / "summary.md").read_text()
    assert "- 440 tokens per sample > 300" in summary and "cost: 440 tokens per sample (max 300)" in summary
    base = str(pytester.path / ".promptsweep")
    assert main(["compare", small_dir.name, large_dir.name, "--dir", base, "--fail-on-regression"]) == 0
    assert main(["compare", small_dir.name, large_dir.name, "--dir", base, "--fail-on-cost-regression"]) == 1
    assert main(["compare", large_dir.name, small_dir.name, "--dir", base, "--fail-on-cost-regression"]) == 0


def test_latency_gate_fails_a_slow_server(pytester: pytest.Pytester) -> None:
    suite = make_suite(pytester, threshold=0.1)
    suite.write_text(suite.read_text() + "  max_latency_p95_ms: 100\n")

    def slow(body: dict[str, Any]) -> Reply:
        time.sleep(0.25)  # every answer takes at least 250 ms, so p95 is above 100 ms
        reply: Reply = flaky(set())(body)
        return reply

    with FakeLLMServer(slow) as fake:
        result_ = pytester.runpytest_subprocess("--llm-url", fake.url, "--llm-cache", "off")
    assert result_.ret == pytest.ExitCode.TESTS_FAILED
    result_.stdout.fnmatch_lines(["GATE FAILED: p95 latency * ms > 100 ms"])
    latency = json.loads((_run_dir(pytester) / "metrics.json").read_text())["cost"]["latency_p95_ms"]
    assert latency >= 250


# ------------------------------------------------------------------------------ the real server


@pytest.mark.real_server
@pytest.mark.xdist_group("real_server")
def test_flaky_verdicts_match_the_real_servers_answers(
    pytester: pytest.Pytester, llama_server_url: str
) -> None:
    """Temperature 1.0, short answers, three repeats of three samples: whatever the model
    answers, every sample's reported stability follows from its recorded answers, and the
    junitxml and the terminal say the same."""
    from tests.test_noise_real import example_suite

    example_suite(pytester, samples=3, max_tokens=40)
    template = pytester.path / "template.yaml"
    template.write_text(re.sub(r"temperature: [\d.]+", "temperature: 1.0", template.read_text()))
    run = pytester.runpytest_subprocess(
        "k8s.suite.yaml",
        "--llm-url",
        llama_server_url,
        "--llm-repeats",
        "3",
        "--llm-cache",
        "off",
        "--min-score",
        "0",
        "--llm-timeout",
        "600",
        "--junitxml=junit.xml",
        "-p",
        "no:cacheprovider",
    )
    assert run.ret == 0, run.stdout.str()[-3000:]
    run_dir = _run_dir(pytester)
    groups: dict[str, list[dict[str, Any]]] = {}
    for line in (run_dir / "results.jsonl").read_text().splitlines():
        r = json.loads(line)
        groups.setdefault(r["sample_id"], []).append(r)
    assert len(groups) == 3 and all(len(g) == 3 for g in groups.values())
    config = json.loads((run_dir / "config.json").read_text())
    assert config["llm_params"]["temperature"] == 1.0 and config["repeats"] == 3
    expected: dict[str, str] = {}
    for sample, group in groups.items():
        if any(r["error"] for r in group):
            expected[sample] = "errored"
        elif (
            len({json.dumps(r["got"], sort_keys=True) for r in group}) > 1
            or len({r["score"] >= 0.5 for r in group}) > 1
        ):
            expected[sample] = "flaky"
        else:
            expected[sample] = "stable"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    flaky_ids = sorted(s for s, v in expected.items() if v == "flaky")
    assert metrics["stability"]["flaky_samples"] == flaky_ids
    assert metrics["stability"]["stable"] == sum(v == "stable" for v in expected.values())
    cases = _testcases(pytester.path / "junit.xml")
    for sample, verdict in expected.items():
        marked = [
            p for name, p in cases.items() if name.startswith(f"k8s_triage[{sample}") and "stability" in p
        ]
        assert marked and {p["stability"] for p in marked} == {verdict}, (sample, marked)
    if flaky_ids:
        run.stdout.fnmatch_lines([f"flaky samples: {len(flaky_ids)} of 3 *: {', '.join(flaky_ids)}"])
    else:
        assert "flaky samples:" not in run.stdout.str()
