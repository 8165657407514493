"""Repeats, the deterministic mode and the noise they measure: items, artifacts, reports, compare.

The fake server plays a noisy llama-server here; tests/test_noise_real.py runs the same
capabilities against the real one.
"""

from __future__ import annotations

import fnmatch
import json
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from promptsweep.core.answers.metrics import MetricRegistry
from promptsweep.core.data.suite import load_suite
from promptsweep.core.evaluate import Evaluator, SampleResult
from promptsweep.core.measure.aggregate import aggregate, latest_results
from promptsweep.reporting.compare import RunData, baseline_failures, compare_results, render
from promptsweep.reporting.leaderboard import config_key
from tests.fakeserver import FakeLLMServer, Reply, chat_reply, user_text
from tests.suitekit import SAMPLES, make_suite
from tests.suitekit import sample_result as result

LLAMA_PROPS = {"total_slots": 4, "model_path": "/m/fake.gguf", "build_info": "b1"}


def flaky(unstable: set[int]) -> Any:
    """Right answers, except that samples in ``unstable`` alternate between right and wrong
    from one request to the next (a noisy server at temperature 0)."""
    calls: Counter[int] = Counter()
    lock = threading.Lock()

    def respond(body: dict[str, Any]) -> Reply:
        text = user_text(body)
        index = next(i for i in range(len(SAMPLES)) if f"LOG-{i} " in text)
        with lock:
            calls[index] += 1
            odd = calls[index] % 2 == 0
        sample = SAMPLES[index]
        answer = {k: sample[k] for k in ("label", "severity", "summary")}
        if index in unstable and odd:
            answer["label"] = "something_else"
        return chat_reply(json.dumps(answer))

    return respond


def run_dir(pytester: pytest.Pytester) -> Path:
    return sorted((pytester.path / ".promptsweep" / "runs").iterdir())[-1]


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ------------------------------------------------------------------------------ repeats


def test_repeats_are_items_requests_and_cache_entries(pytester: pytest.Pytester) -> None:
    make_suite(pytester, threshold=0.1)
    with FakeLLMServer(flaky({1, 4})) as fake:
        cold = pytester.runpytest_subprocess("--llm-url", fake.url, "--llm-repeats", "3", "-n", "2", "-v")
        assert len(fake.requests) == 18
        warm = pytester.runpytest_subprocess("--llm-url", fake.url, "--llm-repeats", "3")
        assert len(fake.requests) == 18  # every repeat was its own cache entry: all 18 hit
    cold.assert_outcomes(passed=18)
    for item in ("tiny[disk_full-k0]", "tiny[disk_full-k0@r1]", "tiny[disk_full-k0@r2]"):
        assert f"PASSED tiny.suite.yaml::{item}" in cold.stdout.str()
    cold.stdout.fnmatch_lines(
        [
            "*suite tiny: 6 samples, 3 answers each, overall *",
            "noise: answers reproduce in 4 of 6 samples (3 answers each); prediction noise is *% of the "
            "score variance; the smallest difference this run can detect is ±0.*",
            "answers that changed between repeats:",
        ]
    )
    warm.stdout.fnmatch_lines(["*: 18 hits, 0 misses"])
    results = lines(run_dir(pytester) / "results.jsonl")
    assert Counter(r["repeat"] for r in results) == {0: 6, 1: 6, 2: 6}
    metrics = json.loads((run_dir(pytester) / "metrics.json").read_text())
    assert (metrics["n"], metrics["answers"], metrics["repeats"]) == (6, 18, 3)
    assert metrics["noise"]["agree"] == 4 and metrics["noise"]["repeated"] == 6
    assert metrics["noise"]["detectable"] > 0
    config = json.loads((run_dir(pytester) / "config.json").read_text())
    assert config["repeats"] == 3 and config["determinism"] == {"mode": "default"}
    summary = (run_dir(pytester) / "summary.md").read_text()
    assert "Noise: answers reproduce in 4 of 6 samples" in summary
    assert "## Answers that changed between repeats" in summary
    assert 'id="noise"' in (run_dir(pytester) / "report.html").read_text()


def test_suite_key_sets_repeats_and_the_flag_overrides_it(pytester: pytest.Pytester) -> None:
    suite = make_suite(pytester, threshold=0.1)
    suite.write_text(suite.read_text() + "repeats: 2\n")
    with FakeLLMServer(flaky(set())) as fake:
        two = pytester.runpytest_subprocess("--llm-url", fake.url, "--llm-cache", "off")
        one = pytester.runpytest_subprocess("--llm-url", fake.url, "--llm-cache", "off", "--llm-repeats", "1")
    two.assert_outcomes(passed=12)
    two.stdout.fnmatch_lines(["noise: answers reproduce in 6 of 6 samples (2 answers each)*±0.000"])
    one.assert_outcomes(passed=6)
    assert "noise:" not in one.stdout.str()  # one answer per sample says nothing about noise


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("flag", "ERROR: --llm-repeats must be at least 1, got 0"),
        ("ini", "ERROR: promptsweep_repeats (ini) expects a whole number, got 'many'"),
        ("suite", "*tiny.suite.yaml:*: repeats: Input should be greater than or equal to 1*"),
    ],
)
def test_bad_repeats_are_one_clear_error(pytester: pytest.Pytester, where: str, message: str) -> None:
    suite = make_suite(pytester)
    args: list[str] = ["--llm-server=off"]
    if where == "flag":
        args += ["--llm-repeats", "0"]
    elif where == "ini":
        pytester.makeini("[pytest]\npromptsweep_repeats = many\n")
    else:
        suite.write_text(suite.read_text() + "repeats: 0\n")
    result = pytester.runpytest(*args)
    output = result.stdout.str() + result.stderr.str()
    assert result.ret != 0
    pattern = message.replace("[", "[[]")
    assert any(fnmatch.fnmatch(line, f"*{pattern}*") for line in output.splitlines()), output


def test_python_route_gets_a_repeat_index(pytester: pytest.Pytester) -> None:
    make_suite(pytester, threshold=0.1)
    pytester.makepyfile(
        test_route="""
        import pytest

        @pytest.mark.promptsweep(suite="tiny.suite.yaml")
        def test_triage(sample, prompt, endpoint, promptsweep_score, promptsweep_repeat):
            promptsweep_score(endpoint.chat(prompt, repeat=promptsweep_repeat, max_tokens=16))
        """
    )
    with FakeLLMServer(flaky({0})) as fake:
        result = pytester.runpytest_subprocess(
            "test_route.py", "--llm-url", fake.url, "--llm-repeats", "2", "-v"
        )
        assert len(fake.requests) == 12  # the repeat index made each its own cache entry
    result.assert_outcomes(passed=12)
    result.stdout.fnmatch_lines(["*test_triage[[]disk_full-k0@r1[]] PASSED*"])
    result.stdout.fnmatch_lines(["noise: answers reproduce in 5 of 6 samples (2 answers each)*"])


# ------------------------------------------------------------------------------ deterministic mode


def concurrency_probe(wait_for_company: bool = False) -> tuple[Any, dict[str, int]]:
    """A slow responder that records the most requests it ever had in flight at once.

    ``wait_for_company``: until a second request has arrived, a request is held (up to 120 s)
    rather than 0.15 s, so a client that sends concurrently is always seen doing so, however
    late a busy machine starts one of its workers."""
    state = {"now": 0, "most": 0}
    changed = threading.Condition()
    right = flaky(set())

    def respond(body: dict[str, Any]) -> Reply:
        with changed:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
            changed.notify_all()
            if wait_for_company:
                changed.wait_for(lambda: state["most"] > 1, timeout=120)
        time.sleep(0.15)
        with changed:
            state["now"] -= 1
        reply: Reply = right(body)
        return reply

    return respond, state


@pytest.mark.parametrize("deterministic", [False, True], ids=["default", "deterministic"])
def test_deterministic_mode_sends_one_request_at_a_time_without_prompt_cache(
    pytester: pytest.Pytester, deterministic: bool
) -> None:
    make_suite(pytester, threshold=0.1)
    respond, state = concurrency_probe(wait_for_company=not deterministic)
    flag = ["--llm-deterministic"] if deterministic else []
    with FakeLLMServer(respond, props=LLAMA_PROPS) as fake:
        result = pytester.runpytest_subprocess("--llm-url", fake.url, "-n", "3", "--llm-cache", "off", *flag)
        bodies = list(fake.requests)
    result.assert_outcomes(passed=6)
    if deterministic:
        assert state["most"] == 1  # three workers, one lock per endpoint: never two in flight
        assert all(body.get("cache_prompt") is False for body in bodies)
        result.stdout.fnmatch_lines(["noise: deterministic mode: cache_prompt off, one request at a time*"])
    else:
        assert state["most"] > 1  # the probe can see concurrency, so the check above means something
        assert all("cache_prompt" not in body for body in bodies)
        assert "noise:" not in result.stdout.str()
    config = json.loads((run_dir(pytester) / "config.json").read_text())
    assert config["determinism"]["mode"] == ("deterministic" if deterministic else "default")
    assert (
        json.loads((run_dir(pytester) / "metrics.json").read_text())["determinism"]
        == config["determinism"]["mode"]
    )


def test_deterministic_ini_option_and_auto_workers(pytester: pytest.Pytester) -> None:
    make_suite(pytester, threshold=0.1)
    pytester.makeini("[pytest]\npromptsweep_deterministic = true\n")
    with FakeLLMServer(flaky(set()), props=LLAMA_PROPS) as fake:
        result = pytester.runpytest_subprocess("--llm-url", fake.url, "-n", "auto", "--llm-cache", "off")
        assert all(body.get("cache_prompt") is False for body in fake.requests)
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines(["*1 worker*"])  # one server, one request at a time: one worker


def test_deterministic_mode_uses_every_given_server_one_request_at_a_time(pytester: pytest.Pytester) -> None:
    make_suite(pytester, threshold=0.1)
    (first, first_seen), (second, second_seen) = concurrency_probe(), concurrency_probe()
    with (
        FakeLLMServer(first, props={**LLAMA_PROPS, "total_slots": 4}) as big,
        FakeLLMServer(second, props={**LLAMA_PROPS, "total_slots": 1}) as small,
    ):
        args = (
            "--llm-url",
            big.url,
            "--llm-url",
            small.url,
            "-n",
            "auto",
            "--llm-deterministic",
            "--llm-cache",
            "off",
        )
        result = pytester.runpytest_subprocess(*args)
        counts = len(big.requests), len(small.requests)
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines(["*2 workers*"])  # one per server, not one per slot
    assert min(counts) > 0, counts  # spread evenly, not by slots (4:1 would starve the small one)
    assert first_seen["most"] == second_seen["most"] == 1


def test_deterministic_mode_on_a_server_that_is_not_llama_server(pytester: pytest.Pytester) -> None:
    make_suite(pytester, threshold=0.1)
    with FakeLLMServer(flaky(set())) as fake:  # no /props
        result = pytester.runpytest_subprocess(
            "--llm-url", fake.url, "--llm-deterministic", "--llm-cache", "off"
        )
        assert all("cache_prompt" not in body for body in fake.requests)  # it may reject unknown fields
    result.assert_outcomes(passed=6)
    result.stderr.fnmatch_lines(
        ["*--llm-deterministic: * is not llama-server (no /props); requests go one at a time*"]
    )


def test_deterministic_mode_refuses_several_slots(pytester: pytest.Pytester) -> None:
    make_suite(pytester)
    result = pytester.runpytest("--llm-deterministic", "--llm-slots", "4", "--llm-server=off")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: --llm-deterministic runs the managed llama-server with 1 slot, but --llm-slots 4 asks for 4: drop one*"
        ]
    )


def test_deterministic_answers_have_their_own_cache_entries(pytester: pytest.Pytester) -> None:
    """cache_prompt is part of the body, so default-mode answers never stand in for deterministic ones."""
    make_suite(pytester, threshold=0.1)
    with FakeLLMServer(flaky(set()), props=LLAMA_PROPS) as fake:
        pytester.runpytest_subprocess("--llm-url", fake.url).assert_outcomes(passed=6)
        pytester.runpytest_subprocess("--llm-url", fake.url, "--llm-deterministic").assert_outcomes(passed=6)
        assert len(fake.requests) == 12
        pytester.runpytest_subprocess("--llm-url", fake.url, "--llm-deterministic").assert_outcomes(passed=6)
        assert len(fake.requests) == 12


def test_help_shows_the_noise_options(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(["*or check (ask the server*"])
    result.stdout.fnmatch_lines(["*--llm-repeats=N*", "*--llm-deterministic*", "*Default: off.*"])
    result.stdout.fnmatch_lines(["*promptsweep_repeats (string):*", "*promptsweep_deterministic (bool):*"])


def test_repeats_resend_the_same_body_at_temperature_0_and_a_new_seed_when_sampling() -> None:
    root = Path(__file__).resolve().parents[1]
    suite = load_suite(root / "evals" / "k8s_triage.suite.yaml")
    dataset = suite.load_dataset()
    sample = dataset.samples[0]
    greedy = Evaluator(suite, suite.load_template(), MetricRegistry(), dataset=dataset)
    assert greedy.params["temperature"] == 0.0 and greedy.params["seed"] == 42
    assert greedy.request(sample, repeat=3).body() == greedy.request(sample).body()
    assert greedy.request(sample, repeat=3).repeat == 3
    sampling = Evaluator(
        suite, suite.load_template(), MetricRegistry(), dataset=dataset, params={"temperature": 0.7}
    )
    assert [sampling.request(sample, repeat=r).body()["seed"] for r in range(3)] == [42, 43, 44]


# ------------------------------------------------------------------------------ aggregation


def test_aggregation_keeps_every_repeat_and_the_latest_line_of_each() -> None:
    lines_in = [
        result("b", 0.0, 0),
        result("a", 1.0, 1),
        result("a", 1.0, 0),
        result("a", 0.0, 1),  # a rerun of repeat 1 replaces the earlier line
        result("b", 0.0, 1),
    ]
    kept = latest_results(lines_in)
    assert [(r.sample_id, r.repeat, r.score) for r in kept] == [
        ("a", 0, 1.0),
        ("a", 1, 0.0),
        ("b", 0, 0.0),
        ("b", 1, 0.0),
    ]
    agg = aggregate("s", lines_in, ["a"])
    assert (agg.n, agg.answers, agg.repeats) == (2, 4, 2)
    assert agg.overall.mean == 0.25  # sample a: 0.5, sample b: 0.0
    assert agg.noise is not None and (agg.noise.agree, agg.noise.repeated) == (1, 2)
    assert [[r.repeat for r in g] for g in agg.unstable()] == [[0, 1]]
    assert agg.to_json()["noise"]["agree"] == 1
    single = aggregate("s", [result("a", 1.0), result("b", 0.0)], ["a"])
    assert single.noise is None and single.repeats == 1


# ------------------------------------------------------------------------------ compare and leaderboard


def run(name: str, results: list[SampleResult], mode: str = "default") -> RunData:
    config = {"suite": "s", "fields": {"a": {}}, "determinism": {"mode": mode}}
    return RunData(root=Path(name), config=config, metrics=None, results=results)


def noisy_run(name: str, shift: float, flaky_every: int = 2, n: int = 200) -> RunData:
    """n samples x 3 repeats; every other sample's repeats disagree by 0.5."""
    results = []
    for i in range(n):
        base = 0.4 + shift + 0.2 * ((i * 7) % 3) / 2
        for r in range(3):
            wobble = 0.5 * (r % 2) if i % flaky_every == 0 else 0.0
            results.append(result(f"s{i:03}", base + wobble, r, raw=f"{i}-{wobble}"))
    return run(name, results)


def test_a_difference_smaller_than_the_noise_is_reported_as_noise() -> None:
    a, b = noisy_run("A", 0.0), noisy_run("B", 0.02)
    c = compare_results(a, b)
    assert c.overall.significant  # the interval alone would call it better ...
    assert c.overall.noise > abs(c.overall.diff.mean)  # ... but either run's noise can produce it
    assert c.overall.within_noise and c.overall.verdict == "~ within noise"
    assert not c.regressed and not compare_results(b, a).regressed
    text = render(c)
    assert "within noise: overall delta +0.020" in text
    assert "noise A: answers reproduce in 100 of 200 samples (3 answers each)" in text
    assert c.to_json()["overall"]["within_noise"] is True
    big = compare_results(a, noisy_run("C", -0.2))
    assert big.regressed and big.overall.verdict == "WORSE"


def test_runs_in_different_modes_are_not_like_for_like() -> None:
    a = run("A", [result(f"s{i}", 1.0) for i in range(10)])
    b = run("B", [result(f"s{i}", 0.0) for i in range(10)], mode="deterministic")
    c = compare_results(a, b)
    assert not c.like_for_like
    assert any(note.startswith("different modes: A default, B deterministic") for note in c.notes())
    assert "[not like for like: A default, B deterministic]" in render(c)
    (reason,) = baseline_failures(a, b)
    assert "ran in default mode and this run in deterministic mode: not like for like" in reason
    assert baseline_failures(a, run("B2", [result(f"s{i}", 1.0) for i in range(10)])) == []


def test_leaderboard_keeps_the_two_modes_apart() -> None:
    entry: dict[str, Any] = {"template": {"id": "t", "version": "v1", "sha256": "ab" * 32}}
    assert config_key(entry) == "t@v1#abababab"
    assert config_key({**entry, "mode": "deterministic"}) == "t@v1#abababab [deterministic]"
    assert config_key({"experiment": "e", "mode": "deterministic"}) == "e [deterministic]"
