"""Issue 28 item 6: a newcomer's first run says early how long it will take (samples x measured
seconds per call / calls in flight), once the first answers are in."""

from __future__ import annotations

import pytest

from promptsweep.core.answers.result import SampleResult
from promptsweep.plugin import controller
from tests.fakeserver import FakeLLMServer, Reply
from tests.suitekit import make_suite, oracle


def answer(latency_s: float | None, **extra: object) -> SampleResult:
    return SampleResult(
        suite="s", sample_id="x", category=None, template="t", expected={}, latency_s=latency_s, **extra
    )  # type: ignore[arg-type]


def test_the_estimate_is_samples_times_seconds_per_call_over_calls_in_flight() -> None:
    from promptsweep.plugin.controller import RunEstimate  # new with the line

    estimate = RunEstimate(parallel=4)
    estimate.plan([f"evals/x.suite.yaml::x[s{i}]" for i in range(140)])
    assert estimate.add(answer(None, from_cache=True)) is None  # a cached answer says nothing of speed
    assert estimate.add(answer(0.0, answered_by="lookup")) is None
    assert estimate.add(answer(30.0, error="timed out")) is None
    for latency in (19.0, 20.6, 25.0):
        assert estimate.add(answer(latency)) is None
    line = estimate.add(answer(20.0))  # the fourth timed answer: one per call in flight
    assert line == (
        "promptsweep: about 12 min for 140 samples (20.3 s a call, 4 at a time, measured on the first 4 answers)"
    )
    assert estimate.add(answer(20.0)) is None  # said once


def test_a_short_run_gets_no_estimate() -> None:
    from promptsweep.plugin.controller import RunEstimate

    quick = RunEstimate(parallel=1)
    quick.plan([f"x.suite.yaml::x[s{i}@r{r}]" for i in range(10) for r in range(2)])
    assert [quick.add(answer(0.5)) for _ in range(3)] == [None, None, None]  # 20 x 0.5 s: 10 s
    slow = RunEstimate(parallel=1)
    slow.plan([f"x.suite.yaml::x[s{i}@r{r}]" for i in range(10) for r in range(2)])
    lines = [slow.add(answer(5.0)) for _ in range(3)]
    assert (
        lines[-1]
        == "promptsweep: about 2 min for 20 answers (5.0 s a call, 1 at a time, measured on the first 3 answers)"
    )


def slow_oracle(body: dict[str, object]) -> Reply:
    reply: Reply = oracle()(body)
    reply.delay_s = 0.05
    return reply


@pytest.mark.parametrize("jobs", ["0", "2"])
def test_the_first_run_says_how_long_it_will_take(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, jobs: str
) -> None:
    """In-process, so the line can be asked of a run of a few seconds (the controller is here)."""
    make_suite(pytester, threshold=0.0)
    monkeypatch.setattr(controller, "ESTIMATE_FROM_S", 0.0, raising=False)
    with FakeLLMServer(slow_oracle) as fake:
        result = pytester.runpytest(
            "tiny.suite.yaml", "--llm-url", fake.url, "--llm-cache=off", "-p", "no:cacheprovider", "-n", jobs
        )
    assert result.ret == 0, result.stdout.str()
    parallel = 2 if jobs == "2" else 1
    result.stdout.fnmatch_lines(
        [
            f"promptsweep: about * s for 6 samples (0.* s a call, {parallel} at a time, measured on the first 3 answers)"
        ]
    )
    assert result.stdout.str().count("promptsweep: about") == 1
