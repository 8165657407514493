"""End-to-end --optimize runs: the plan before the first call, budgets, significant-only winners,
config errors under xdist, Ctrl-C, and a real llama-server run with its estimate checked."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from promptsweep.core.templates.template import load_template
from promptsweep.llm.client import EndpointInfo
from promptsweep.optimize.winner import next_version_path
from promptsweep.plugin.xdist import assign_endpoint
from tests.fakeserver import FakeLLMServer, Reply, chat_reply, question

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

  - label: what happened, in one word
  - severity: how bad it is
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
    """GOOD prompts answer right, MEH ones on even samples, the rest (and the baseline) wrong."""
    system = body["messages"][0]["content"]
    text = question(body)
    for i, sample in enumerate(SAMPLES):
        if f"LOG-{i:02d} " in text:
            right = "GOOD" in system or ("MEH" in system and i % 2 == 0)
            got = {"label": sample["label"] if right else "nonsense", "severity": sample["severity"]}
            # Longer prompts cost more: few-shot candidates report more tokens.
            return chat_reply(json.dumps(got), prompt_tokens=len(system) // 4)
    return chat_reply("no idea")


def same_for_all(body: dict[str, Any]) -> Reply:
    """Every prompt, the baseline included, gets the same answers: nothing can win."""
    text = question(body)
    for i, sample in enumerate(SAMPLES):
        if f"LOG-{i:02d} " in text:
            got = {"label": sample["label"] if i % 2 else "nonsense", "severity": sample["severity"]}
            return chat_reply(json.dumps(got))
    return chat_reply("no idea")


def make_optimize_suite(pytester: pytest.Pytester, space: str = SPACE) -> Path:
    (pytester.path / "prompt_templates").mkdir()
    (pytester.path / "prompt_templates" / "tiny_v1.yaml").write_text(TEMPLATE)
    (pytester.path / "data.json").write_text(json.dumps(SAMPLES))
    (pytester.path / "tiny.space.yaml").write_text(space)
    suite = pytester.path / "tiny.suite.yaml"
    suite.write_text(SUITE)
    return suite


def run_dir_of(pytester: pytest.Pytester) -> Path:
    dirs = sorted((pytester.path / ".promptsweep" / "runs").glob("*-optimize"))
    return dirs[-1]


def test_optimize_plans_then_searches_and_writes_a_significant_winner(pytester: pytest.Pytester) -> None:
    make_optimize_suite(pytester)
    with FakeLLMServer(answer, props={"total_slots": 2}) as fake:
        result = pytester.runpytest_subprocess(
            "--optimize", "--llm-url", fake.url, "-n", "2", "-p", "no:cacheprovider"
        )
        assert result.ret == 0, result.stdout.str()
        result.assert_outcomes(passed=1)
        out = result.stdout.str()
        # The plan and its estimate come before the first round's calls.
        assert (
            out.index("search space: 12 candidates")
            < out.index("plan (halving")
            < out.index("estimated time:")
        )
        assert out.index("estimated time:") < out.index("round 1 (halving)")
        assert "then 2 at once" in out, "-n 2 sets the concurrent calls, no xdist workers"
        result.stdout.fnmatch_lines(["*promptsweep optimize: tiny*", "*wrote prompt_templates/tiny_v2.yaml*"])
        result.stdout.fnmatch_lines(["*score it: pytest . --prompt-template prompt_templates/tiny_v2.yaml*"])
        # The table: finalists first with their n, the pruned below with the round they fell in.
        table = out[out.index("candidate  ") :]
        assert table.index("winner") < table.index("pruned in round 1")
        winner_path = pytester.path / "prompt_templates" / "tiny_v2.yaml"
        template = load_template(winner_path)
        opt = template.spec.optimization
        assert opt is not None
        assert opt["candidate"].startswith("t0-c0-")
        assert opt["candidate"].endswith("-none-direct"), "the tie goes to the cheaper prompt"
        against_baseline = opt["verdict"].split(";")[0]
        assert against_baseline.endswith("significant") and "not significant" not in against_baseline
        # The score is the test split's (6 samples no decision read); the selection score beside it.
        assert opt["score_samples"] == "test"
        assert opt["score"]["mean"] == pytest.approx(1.0) and opt["score"]["n"] == 6
        assert opt["selection_score"]["n"] == 6 and "validation" in opt["selection_score"]["samples"]
        assert opt["difference_vs_baseline"]["low"] > 0
        assert opt["floors"]["test"]["constant"] is not None and opt["floors"]["test"]["lookup"] is not None
        assert opt["search"]["grid_calls"] == 12 * 6
        assert opt["cost"]["tokens_per_call"] > 0
        # Two screening samples are too few to attribute effects to dimension values: none printed.
        assert opt["why"]["all_effects"] == {}
        result.stdout.fnmatch_lines(["*effects: too few samples to attribute effects*2 samples (10 needed)*"])
        # Power from the winner - baseline spread on validation, how stable the choice is, and
        # a last line that names what to ship.
        result.stdout.fnmatch_lines(["power: with 80% power the 6 test samples confirm*6 *validation *"])
        result.stdout.fnmatch_lines(
            ["stability: t0-c0-*chosen again in *% of 1000 resamples of its 6 validation samples*"]
        )
        assert opt["stability"]["resamples"] == 1000 and 0 < opt["stability"]["winner_share"] <= 1
        ship = [line for line in out.splitlines() if line.startswith("ship: ")]
        assert ship and ship[-1].startswith(
            f"ship: prompt_templates/tiny_v2.yaml ({opt['candidate']}) at 1.00 calls per answer: it beats tiny@v1 on 6 test samples"
        )
        assert set(opt["dimensions"]) >= {"tone", "constraints", "output", "few_shot", "reasoning"}
        # The user's field descriptions survive into the candidate.
        assert "- label: what happened, in one word" in template.spec.system
        # No machine path in a file meant for review.
        text = winner_path.read_text()
        assert str(pytester.path) not in text and not opt["run_dir"].startswith("/")
        run_dir = run_dir_of(pytester)
        all_results = json.loads((run_dir / "all_results.json").read_text())
        assert all_results["winner"] == opt["candidate"]
        assert all_results["winner_file"] == "prompt_templates/tiny_v2.yaml"
        assert all_results["candidate_calls"] == opt["search"]["candidate_calls"]
        decisions = all_results["decisions"]
        assert [d["round"] for d in decisions] == [1, 2]
        bad = next(c for c in all_results["candidates"] if c["candidate"].startswith("t2-"))
        assert bad["pruned_round"] == 1 and bad["n"] == 2 and bad["finalist"] is False
        lines = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
        test_calls = all_results["test"]["calls"]
        assert test_calls == 2 * 6, "the winner and the baseline, once on each test sample"
        asked = [r for r in lines if r["answered_by"] == "model"]
        assert len(asked) == all_results["candidate_calls"] + all_results["baseline_calls"] + test_calls
        # The kNN votes answer without a call: every validation sample the race reached, and the
        # best of them (the kNN family's) on every test sample.
        copied = [r for r in lines if r["answered_by"] == "lookup"]
        assert len(copied) == 3 * 6 + 6 and {r["candidate"] for r in copied} <= {"knn1", "knn3", "knn5"}
        # The plan says what the test split can confirm before the first call.
        assert out.index("test split: 6 samples no decision reads") < out.index("calibrating:")

        # The winner is an ordinary template: a plain run with it passes.
        plain = pytester.runpytest_subprocess(
            "--llm-url", fake.url, "--prompt-template", str(winner_path), "-p", "no:cacheprovider"
        )
        assert plain.ret == 0, plain.stdout.str()

        # A second optimization never overwrites: it writes v3.
        again = pytester.runpytest_subprocess("--optimize", "--llm-url", fake.url, "-p", "no:cacheprovider")
        assert again.ret == 0, again.stdout.str()
    assert (pytester.path / "prompt_templates" / "tiny_v3.yaml").is_file()


def test_deterministic_optimize_sends_cache_prompt_off_and_skips_the_noise_probe(
    pytester: pytest.Pytester,
) -> None:
    """``--llm-deterministic`` reaches the optimizer: every request has ``cache_prompt: false``,
    no baseline answer is asked twice (the probe would measure nothing), and the outputs say so."""
    make_optimize_suite(pytester)
    with FakeLLMServer(answer, props={"total_slots": 2}) as fake:
        result = pytester.runpytest_subprocess(
            "--optimize", "--llm-deterministic", "--llm-url", fake.url, "-p", "no:cacheprovider"
        )
        bodies = [r for r in fake.requests if "messages" in r]
    assert result.ret == 0, result.stdout.str()
    assert bodies and all(body.get("cache_prompt") is False for body in bodies)
    all_results = json.loads((run_dir_of(pytester) / "all_results.json").read_text())
    assert all_results["noise"]["deterministic"] is True and all_results["noise"]["repeated"] == 0
    assert (
        len(bodies)
        == all_results["candidate_calls"] + all_results["baseline_calls"] + all_results["test"]["calls"]
    )
    result.stdout.fnmatch_lines(["*deterministic mode (cache_prompt off, one request at a time)*"])


def test_no_significant_improvement_writes_no_template(pytester: pytest.Pytester) -> None:
    make_optimize_suite(pytester)
    with FakeLLMServer(same_for_all) as fake:
        result = pytester.runpytest_subprocess("--optimize", "--llm-url", fake.url, "-p", "no:cacheprovider")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["*not written: it does not beat the baseline on the test split*"])
    assert not (pytester.path / "prompt_templates" / "tiny_v2.yaml").exists()
    best = run_dir_of(pytester) / "best_candidate.yaml"
    assert "not promoted" in best.read_text()
    summary = json.loads((run_dir_of(pytester) / "all_results.json").read_text())
    assert summary["significant"] is False and summary["winner_file"] is None


def test_min_gain_raises_the_bar(pytester: pytest.Pytester) -> None:
    make_optimize_suite(pytester)
    with FakeLLMServer(answer) as fake:
        result = pytester.runpytest_subprocess(
            "--optimize", "--llm-url", fake.url, "--optimize-min-gain", "0.9", "-p", "no:cacheprovider"
        )
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["*not significant (needs > +0.900)*"])
    assert not (pytester.path / "prompt_templates" / "tiny_v2.yaml").exists()


def test_call_budget_is_kept(pytester: pytest.Pytester) -> None:
    """grid plans within the budget (a seeded subset of candidates) instead of being cut off
    mid-round: the whole plan, the baseline and the test round fit in 40 calls."""
    make_optimize_suite(pytester)
    with FakeLLMServer(answer) as fake:
        result = pytester.runpytest_subprocess(
            "--optimize", "--search-strategy", "grid", "--llm-url", fake.url, "--optimize-budget", "40",
            "-p", "no:cacheprovider",
        )  # fmt: skip
        assert result.ret == 0, result.stdout.str()
        calls = [r for r in fake.requests if "messages" in r]
        assert len(calls) <= 40
    result.stdout.fnmatch_lines(["*plan (grid, budget 40 calls): grid 2x6*"])
    summary = json.loads((run_dir_of(pytester) / "all_results.json").read_text())
    assert summary["complete"] is True and summary["stopped"] is None
    assert summary["test"]["calls"] == 12
    lines = [json.loads(line) for line in (run_dir_of(pytester) / "results.jsonl").read_text().splitlines()]
    # Every request has its result; the kNN votes' answers are copies (no request), recorded too.
    assert len([r for r in lines if r["answered_by"] == "model"]) == len(calls)
    assert {r["candidate"] for r in lines if r["answered_by"] == "lookup"} == {"knn1", "knn3", "knn5"}


def test_time_budget_holds_when_the_estimate_is_wrong(pytester: pytest.Pytester) -> None:
    """The server turns slow after calibration, so the plan fits the budget on paper; the round
    that crosses the budget is stopped there, and a stopped search writes no winner file but
    keeps its record (all_results.json, best_candidate.yaml)."""
    make_optimize_suite(pytester)
    answered: list[int] = []

    def slow(body: dict[str, Any]) -> Reply:
        answered.append(1)
        reply = answer(body)
        reply.delay_s = 0.0 if len(answered) <= 3 else 0.25
        return reply

    with FakeLLMServer(slow, props={"total_slots": 2}) as fake:
        result = pytester.runpytest_subprocess(
            "--optimize", "--search-strategy", "grid", "--llm-url", fake.url, "--optimize-budget", "2s",
            "-p", "no:cacheprovider",
        )  # fmt: skip
        calls = len(fake.requests)
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["*stopped early: time budget of 2 s reached mid-round*"])
    summary = json.loads((run_dir_of(pytester) / "all_results.json").read_text())
    # The plan fit the budget on the fast calibration; the slow round was cut short at the budget
    # (counted in calls, not seconds, which a busy machine stretches).
    assert calls and summary["candidate_calls"] < sum(stage["max_calls"] for stage in summary["plan"])
    summary = json.loads((run_dir_of(pytester) / "all_results.json").read_text())
    assert summary["complete"] is False and summary["stopped"].startswith("time budget")
    assert summary["winner_file"] is None
    assert not (pytester.path / "prompt_templates" / "tiny_v2.yaml").exists()
    assert (run_dir_of(pytester) / "best_candidate.yaml").is_file()


def test_search_space_errors_are_one_usage_error_under_xdist(pytester: pytest.Pytester) -> None:
    make_optimize_suite(
        pytester,
        SPACE.replace("few_shot: {strategies: [none, positive_only]", "few_shot: {strategies: [mixed]"),
    )
    with FakeLLMServer(answer) as fake:
        result = pytester.runpytest_subprocess(
            "--optimize", "--llm-url", fake.url, "-n", "2", "-p", "no:cacheprovider"
        )
        assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str() + result.stderr.str()
        result.stderr.fnmatch_lines(["*tiny.space.yaml:4: few_shot: strategies mixed need few_shot.benign*"])
        assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
        (pytester.path / "tiny.space.yaml").unlink()
        missing = pytester.runpytest_subprocess(
            "--optimize", "--llm-url", fake.url, "-n", "2", "-p", "no:cacheprovider"
        )
    assert missing.ret == pytest.ExitCode.USAGE_ERROR
    missing.stderr.fnmatch_lines(["*search space not found:*tiny.space.yaml*"])
    runs = pytester.path / ".promptsweep" / "runs"
    assert not runs.exists() or not list(runs.glob("*-optimize")), "a failed start leaves no empty run dir"


def test_ctrl_c_keeps_every_finished_result(pytester: pytest.Pytester) -> None:
    make_optimize_suite(pytester)
    seen = []
    twenty = threading.Event()  # waited for, not timed: a slow start on a busy machine is fine

    def slow(body: dict[str, Any]) -> Reply:
        seen.append(1)
        if len(seen) >= 20:
            twenty.set()
        reply = answer(body)
        reply.delay_s = 0.05
        return reply

    with FakeLLMServer(slow) as fake:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pytest", "--optimize", "--llm-url", fake.url, "-p", "no:cacheprovider",
             "--search-strategy", "grid", "-n", "2"],
            cwd=pytester.path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )  # fmt: skip
        if not twenty.wait(600):  # a bound only a broken run reaches
            proc.kill()
            pytest.fail(f"no 20 calls within 600s: {proc.communicate()[0].decode()[-3000:]}")
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=600)
        calls = len(fake.requests)
    assert proc.returncode == 2, out.decode()
    results = [json.loads(line) for line in (run_dir_of(pytester) / "results.jsonl").read_text().splitlines()]
    # Two calls at a time: at most the two in flight when Ctrl-C came are lost.
    assert len(results) >= 18
    assert len(results) >= calls - 2
    assert not (pytester.path / "prompt_templates" / "tiny_v2.yaml").exists()


def test_next_version_never_reuses_a_name(tmp_path: Path) -> None:
    (tmp_path / "k8s_v1.yaml").write_text("x")
    (tmp_path / "k8s_v4.yaml").write_text("x")
    (tmp_path / "other_v9.yaml").write_text("x")
    path, n = next_version_path(tmp_path, "k8s", "v1")
    assert (path.name, n) == ("k8s_v5.yaml", 5)


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


REAL_SPACE = """\
base_template: prompt_templates/tiny_v1.yaml
tone: ["You label log lines."]
output: [json_schema]
few_shot: {strategies: [none, retrieved], k: 2, seed: 1}
search: {strategy: grid, limit: 10m}
"""


@pytest.mark.real_server
def test_optimize_against_the_real_server(pytester: pytest.Pytester, llama_server_url: str) -> None:
    """Retrieval on the real server: two candidates and the baseline on 4 validation samples, then
    the best and the baseline on 4 test samples,
    with an estimate recorded beside the time taken (how close it comes is measured in
    benchmarks/, not here: tests share the CPU with each other)."""
    make_optimize_suite(pytester, REAL_SPACE)
    (pytester.path / "tiny.suite.yaml").write_text(SUITE.replace("train: 0.5", "train: 16"))
    result = pytester.runpytest_subprocess(
        "--optimize", "--llm-url", llama_server_url, "-p", "no:cacheprovider", "--llm-cache", "off"
    )
    assert result.ret == 0, result.stdout.str()
    summary = json.loads((run_dir_of(pytester) / "all_results.json").read_text())
    assert summary["complete"] is True
    assert {c["candidate"] for c in summary["candidates"]} >= {
        "t0-c0-json_schema-retrieved2-direct",
        "baseline",
    }
    assert summary["estimated_s"] > 0 and summary["elapsed_s"] > 0, summary
    assert summary["candidate_calls"] == 2 * 4, "two candidates on the 4 validation samples"
    # Confirmed on the 4 test samples, beside both floors, whatever the verdict.
    assert summary["test"]["n"] == 4 and summary["test"]["calls"] == 8, summary["test"]
    assert set(summary["test"]["verdicts"]) == {"baseline", "lookup"}
    assert (
        summary["test"]["floors"]["constant"] is not None and summary["test"]["floors"]["lookup"] is not None
    )
    result.stdout.fnmatch_lines(["*test split (4 samples no decision read): constant answer*lookup*"])
    if summary["significant"]:
        data = yaml.safe_load((pytester.path / summary["winner_file"]).read_text())
        assert data["optimization"]["model"]


def test_test_split_labels_change_no_decision(pytester: pytest.Pytester) -> None:
    """The test split only confirms: with its labels changed (severity: the category decides the
    split), every round, every pruning and the winner are the same; only the test scores move."""
    from promptsweep.core.data.suite import load_suite

    suite_path = make_optimize_suite(pytester)
    suite = load_suite(suite_path)
    split = suite.split(suite.load_dataset())
    assert split.test and not set(split.test) & set(split.validation)

    def run() -> dict[str, Any]:
        with FakeLLMServer(answer, props={"total_slots": 2}) as fake:
            result = pytester.runpytest_subprocess(
                "--optimize", "--llm-url", fake.url, "--llm-cache", "off", "-p", "no:cacheprovider"
            )
        assert result.ret == 0, result.stdout.str()
        data: dict[str, Any] = json.loads((run_dir_of(pytester) / "all_results.json").read_text())
        return data

    first = run()
    flipped = {"info": "error", "warn": "info", "error": "warn"}
    changed = [
        {**s, "severity": flipped[s["severity"]]} if f"{s['label']}-{s['key']}" in split.test else s
        for s in SAMPLES
    ]
    (pytester.path / "data.json").write_text(json.dumps(changed))
    assert load_suite(suite_path).split(load_suite(suite_path).load_dataset()).test == split.test
    second = run()
    assert first["decisions"] == second["decisions"]
    assert first["winner"] == second["winner"]
    assert [c["mean"] for c in first["candidates"]] == [c["mean"] for c in second["candidates"]]
    # ...while the test scores did see the new labels: severity (weight 0.4) is now wrong there.
    assert first["test"]["scores"][first["winner"]]["mean"] == pytest.approx(1.0)
    assert second["test"]["scores"][second["winner"]]["mean"] == pytest.approx(0.6)


@pytest.mark.parametrize(
    ("args", "space_extra", "expected"),
    [
        (
            ["--search-strategy", "grid", "--search-budget", "3"],
            "",
            "*--search-budget does not apply to --search-strategy=grid*",
        ),
        (["--llm-repeats", "3"], "", "*--optimize does not use repeats*"),
        (
            ["--search-strategy", "screen"],
            "search: {strategy: screen, budget: 5}\n",
            "*tiny.space.yaml:*search.budget (5)*screen would ignore it*",
        ),
    ],
    ids=["search-budget-on-grid", "repeats", "space-budget-on-screen"],
)
def test_options_a_search_cannot_honour_are_refused_in_one_line(
    pytester: pytest.Pytester, args: list[str], space_extra: str, expected: str
) -> None:
    space = (
        SPACE.replace("search: {strategy: halving, eta: 3, min_samples: 2}\n", space_extra)
        if space_extra
        else SPACE
    )
    make_optimize_suite(pytester, space)
    with FakeLLMServer(answer) as fake:
        result = pytester.runpytest_subprocess(
            "--optimize", "--llm-url", fake.url, *args, "-p", "no:cacheprovider"
        )
        assert not [r for r in fake.requests if "messages" in r], "refused before any call"
    out = result.stdout.str() + result.stderr.str()
    assert result.ret in (pytest.ExitCode.USAGE_ERROR, pytest.ExitCode.INTERRUPTED), out
    assert "Traceback" not in out and "INTERNALERROR" not in out
    from fnmatch import fnmatch

    assert any(fnmatch(line, expected) for line in out.splitlines()), out


@pytest.mark.parametrize("recovers", [True, False], ids=["recovers-when-asked-again", "errors-twice"])
def test_no_winner_is_written_from_a_comparison_with_errored_calls(
    pytester: pytest.Pytester, recovers: bool
) -> None:
    """A busy machine's timeouts: the baseline's answers to test samples error. Asked once more
    before the verdict, they count when they come back; when they error again, nothing is written
    and the summary says why (the busy-machine search wrote a winner from 2 errored baseline calls)."""
    make_optimize_suite(pytester)
    failures: dict[str, int] = {}
    test_logs = {f"LOG-{i:02d} " for i in range(12, 24)}

    def flaky(body: dict[str, Any]) -> Reply:
        text = question(body)
        baseline = "(baseline)" in body["messages"][0]["content"]
        key = text
        if baseline and any(log in text for log in test_logs) and "LOG-2" in text:
            failures[key] = failures.get(key, 0) + 1
            if not recovers or failures[key] == 1:
                return Reply(status=503, body={"error": {"message": "busy"}})
        return answer(body)

    with FakeLLMServer(flaky, props={"total_slots": 2}) as fake:
        result = pytester.runpytest_subprocess(
            "--optimize",
            "--llm-url",
            fake.url,
            "--llm-retries",
            "0",
            "--llm-cache",
            "off",
            "-p",
            "no:cacheprovider",
        )
    out = result.stdout.str()
    assert failures, "the test split's baseline calls did fail"
    summary = json.loads((run_dir_of(pytester) / "all_results.json").read_text())
    if recovers:
        assert result.ret == 0, out
        assert "errored calls of" in out and "once more" in out
        assert summary["winner_file"] == "prompt_templates/tiny_v2.yaml"
    else:
        assert result.ret == 1, out
        assert (
            summary["winner_file"] is None
            and not (pytester.path / "prompt_templates" / "tiny_v2.yaml").exists()
        )
        assert "no winner is written from a comparison with errored calls" in summary["promotion"]
        assert "stayed errored when asked again" in out
