"""The usual order, a plain run then ``--optimize``: the baseline's answers now come from the
response cache, which is no measurement of the server's speed. The search calibrates on a
candidate's uncached calls instead of estimating 0 s."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.fakeserver import FakeLLMServer, Reply
from tests.test_optimize import answer, make_optimize_suite, run_dir_of


def timed(body: dict[str, Any]) -> Reply:
    """The fake answers with llama-server's timings: 2 ms per prompt token, 10 ms per generated one."""
    reply = answer(body)
    usage = reply.body["usage"]
    reply.body["timings"] = {
        "prompt_n": usage["prompt_tokens"],
        "prompt_per_token_ms": 2.0,
        "predicted_n": usage["completion_tokens"],
        "predicted_per_token_ms": 10.0,
    }
    return reply


def test_optimize_after_a_cached_plain_run_measures_uncached_calls(pytester: pytest.Pytester) -> None:
    make_optimize_suite(pytester)
    with FakeLLMServer(timed, props={"total_slots": 2}) as fake:
        plain = pytester.runpytest_subprocess("--llm-url", fake.url, "-p", "no:cacheprovider")
        assert plain.ret == 0, plain.stdout.str()
        result = pytester.runpytest_subprocess(
            "--optimize", "--llm-url", fake.url, "-n", "2", "-p", "no:cacheprovider"
        )
    out = result.stdout.str()
    assert result.ret == 0, out
    assert "calibrating on t0-c0-" in out and "the baseline's answers came from the response cache" in out
    speed = next(line for line in out.splitlines() if "speed measured on t0-c0-" in line)
    assert "2.0 ms per uncached prompt token" in speed, speed
    estimate = next(line for line in out.splitlines() if "estimated time:" in line)
    assert "estimated time: 0 s" not in estimate, estimate
    summary = json.loads((run_dir_of(pytester) / "all_results.json").read_text())
    assert summary["complete"] is True
