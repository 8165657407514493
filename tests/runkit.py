"""Finished runs made with the fake server, shared by the compare, leaderboard and report tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.fakeserver import FakeLLMServer, Reply, Responder, chat_reply, user_text
from tests.suitekit import SAMPLES, make_suite, oracle

XSS = '<script>alert("pwned")</script><img src=x onerror=alert(1)>'


def hostile_oracle(wrong: set[int], samples: list[dict[str, Any]] | None = None) -> Responder:
    """Like ``oracle`` but a wrong answer carries markup, to prove reports escape model text."""
    right = oracle(samples=samples)

    def respond(body: dict[str, Any]) -> Reply:
        text = user_text(body)
        for i in wrong:
            if f"LOG-{i} " in text:
                return chat_reply(json.dumps({"label": XSS, "severity": "info", "summary": "no idea"}))
        reply: Reply = right(body)
        return reply

    return respond


def run_once(
    pytester: pytest.Pytester, wrong: set[int], *args: str, samples: list[dict[str, Any]] | None = None
) -> tuple[pytest.RunResult, Path]:
    """One eval run of the tiny suite (threshold 0) on ``samples`` (default: the six); returns the
    result and the new run directory."""
    if not (pytester.path / "tiny.suite.yaml").exists():
        make_suite(pytester, threshold=0.0, samples=samples)
    runs = pytester.path / ".promptsweep" / "runs"
    before = set(runs.iterdir()) if runs.exists() else set()
    with FakeLLMServer(hostile_oracle(wrong, samples)) as fake:
        result = pytester.runpytest_subprocess(
            "tiny.suite.yaml", "--llm-url", fake.url, "--llm-cache=off", *args
        )
    (run_dir,) = set(runs.iterdir()) - before
    return result, run_dir


__all__ = ["SAMPLES", "XSS", "run_once"]
