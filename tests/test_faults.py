"""Faults during a run: after each, every finished sample is in results.jsonl and metrics.json
is whole (or absent), never half-written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from promptsweep.server.provision import default_model_path, find_llama_server
from tests.fakeserver import FakeLLMServer, Reply, chat_reply, user_text
from tests.suitekit import SAMPLES, SUITE, make_suite, oracle

FAST_RETRIES = ("--llm-retry-delay", "0.01")
# Resolved at import: pytester points $HOME at its temporary directory.
REAL_BINARY = find_llama_server()
REAL_MODEL = default_model_path()


def sample_index(body: dict[str, Any]) -> int:
    text = user_text(body)
    for i in range(len(SAMPLES)):
        if f"LOG-{i} " in text:
            return i
    raise AssertionError(f"no sample in {text!r}")


def run_dirs(root: Path) -> list[Path]:
    return sorted((root / ".promptsweep" / "runs").iterdir())


def check_artifacts(root: Path, expected_lines: int | None = None) -> list[dict[str, Any]]:
    """Every results line parses; metrics.json is whole or absent; no temp files left behind."""
    (run,) = run_dirs(root)
    lines = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines() if line.strip()]
    if expected_lines is not None:
        assert len(lines) == expected_lines
        assert len({line["sample_id"] for line in lines}) == expected_lines
    metrics = run / "metrics.json"
    if metrics.exists():
        json.loads(metrics.read_text())
    assert not list(run.glob(".*.tmp"))
    return lines


def metrics(root: Path) -> dict[str, Any]:
    (run,) = run_dirs(root)
    data: dict[str, Any] = json.loads((run / "metrics.json").read_text())
    return data


def test_503_then_200_is_retried_and_passes(pytester: pytest.Pytester) -> None:
    make_suite(pytester)
    seen: Counter[int] = Counter()
    answer = oracle()

    def respond(body: dict[str, Any]) -> Reply:
        i = sample_index(body)
        seen[i] += 1
        if seen[i] == 1:
            return Reply(status=503, body={"error": "Loading model"}, headers={"Retry-After": "0"})
        return answer(body)

    with FakeLLMServer(respond) as fake:
        result = pytester.runpytest("--llm-url", fake.url, *FAST_RETRIES)
    result.assert_outcomes(passed=6)
    assert len(fake.requests) == 12
    assert all(count == 2 for count in seen.values())
    check_artifacts(pytester.path, 6)
    assert metrics(pytester.path)["gate"]["passed"] is True


def test_429_retry_after_is_honoured(pytester: pytest.Pytester) -> None:
    make_suite(pytester, samples=SAMPLES[:1])
    times: list[float] = []

    def respond(body: dict[str, Any]) -> Reply:
        times.append(time.monotonic())
        if len(times) == 1:
            return Reply(status=429, body={"error": "busy"}, headers={"Retry-After": "1"})
        return oracle()(body)

    with FakeLLMServer(respond) as fake:
        result = pytester.runpytest("--llm-url", fake.url, *FAST_RETRIES)
    result.assert_outcomes(passed=1)
    assert times[1] - times[0] >= 0.95


def test_500_is_retried_then_errors_and_fails_the_gate(pytester: pytest.Pytester) -> None:
    make_suite(pytester)

    def respond(body: dict[str, Any]) -> Reply:
        return Reply(status=500, body={"error": "boom"})

    with FakeLLMServer(respond) as fake:
        result = pytester.runpytest("--llm-url", fake.url, "--llm-retries", "2", *FAST_RETRIES)
        url = fake.url
    result.assert_outcomes(failed=6)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert len(fake.requests) == 18  # 1 try + 2 retries per sample
    result.stdout.fnmatch_lines(
        [
            f"*sample disk_full-k0 errored: {url}: gave up after 3 attempts in *s (last status: HTTP 500): "
            f"{url}/v1/chat/completions: HTTP 500: *boom*"
        ]
    )
    lines = check_artifacts(pytester.path, 6)
    assert all(line["error"] for line in lines)
    data = metrics(pytester.path)
    assert data["gate"]["passed"] is False
    assert len(data["errored"]) == 6


def test_400_is_not_retried(pytester: pytest.Pytester) -> None:
    make_suite(pytester, samples=SAMPLES[:2])
    with FakeLLMServer(lambda body: Reply(status=400, body={"error": "bad schema"})) as fake:
        result = pytester.runpytest("--llm-url", fake.url, *FAST_RETRIES)
    result.assert_outcomes(failed=2)
    assert len(fake.requests) == 2
    result.stdout.fnmatch_lines(["*errored: *HTTP 400: *bad schema*"])
    check_artifacts(pytester.path, 2)


def test_timeout_errors_the_sample_only(pytester: pytest.Pytester) -> None:
    make_suite(pytester)
    answer = oracle()

    def respond(body: dict[str, Any]) -> Reply:
        reply = answer(body)
        if sample_index(body) == 0:
            reply.delay_s = 2.0
        return reply

    with FakeLLMServer(respond) as fake:
        # A subprocess: in-process pytester re-imports httpcore, and httpx then cannot map its timeouts.
        result = pytester.runpytest_subprocess("--llm-url", fake.url, "--llm-timeout", "0.5", *FAST_RETRIES)
        url = fake.url
        slow_calls = sum(1 for body in fake.requests if sample_index(body) == 0)
    result.assert_outcomes(passed=5, failed=1)
    result.stdout.fnmatch_lines(
        [
            f"*sample disk_full-k0 errored: {url}/v1/chat/completions: timed out: the server sent nothing "
            "for 0.5s (ReadTimeout; --llm-timeout is how long it may stay silent)*",
            "*1 sample(s) timed out and were asked again at the end of the run: 0 answered, 1 errored*",
        ]
    )
    # a timeout is not retried at once (the server is busy or hung: another call only adds load),
    # but asked once more at the end of the run: two calls, not 1 + retries
    assert slow_calls == 2
    lines = check_artifacts(pytester.path, 6)
    assert sum(1 for line in lines if line["error"]) == 1
    assert metrics(pytester.path)["gate"]["passed"] is False  # max_errors defaults to 0


def test_truncated_json_body(pytester: pytest.Pytester) -> None:
    make_suite(pytester)
    answer = oracle()

    def respond(body: dict[str, Any]) -> Reply:
        if sample_index(body) == 1:
            return Reply(body='{"choices": [{"message": {"content": "{\\"label\\": \\"dis')
        return answer(body)

    with FakeLLMServer(respond) as fake:
        result = pytester.runpytest("--llm-url", fake.url, "--llm-retries", "1", *FAST_RETRIES)
    result.assert_outcomes(passed=5, failed=1)
    result.stdout.fnmatch_lines(
        ["*disk_full-k1 errored: *gave up after 2 attempts*response body is not JSON (truncated?)*"]
    )
    check_artifacts(pytester.path, 6)


def test_garbage_model_text_scores_zero_and_keeps_raw(pytester: pytest.Pytester) -> None:
    make_suite(pytester, threshold=0.0)
    answer = oracle()
    garbage = "}}{{ <|im_end|> lorem ipsum \x00 ]]"

    def respond(body: dict[str, Any]) -> Reply:
        return chat_reply(garbage) if sample_index(body) == 2 else answer(body)

    with FakeLLMServer(respond) as fake:
        result = pytester.runpytest("--llm-url", fake.url)
    result.assert_outcomes(passed=6)
    lines = {line["sample_id"]: line for line in check_artifacts(pytester.path, 6)}
    bad = lines["oom_killed-k2"]
    assert bad["score"] == 0.0
    assert bad["raw"] == garbage
    assert bad["error"] is None
    assert bad["parse_source"] == "none"


def _wait_for_lines(path_glob: Any, count: int, timeout: float, proc: subprocess.Popen[bytes]) -> Path:
    """The results file once it has ``count`` lines; returns as soon as it does, so ``timeout``
    is only how long a broken run takes to fail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in path_glob():
            if len(path.read_text().splitlines()) >= count:
                return Path(path)
        if proc.poll() is not None:
            raise AssertionError(f"pytest exited early ({proc.returncode})")
        time.sleep(0.05)
    raise AssertionError(f"no {count} results within {timeout}s")


def test_interrupted_run_resumes_with_no_repeated_calls(pytester: pytest.Pytester) -> None:
    """Kill -9 a run after 3 answers; the re-run asks only for what was not answered."""
    make_suite(pytester)
    answer = oracle()
    release = threading.Event()
    answered: list[int] = []
    lock = threading.Lock()

    def respond(body: dict[str, Any]) -> Reply:
        with lock:
            if len(answered) >= 3 and not release.is_set():
                blocked = True
            else:
                answered.append(sample_index(body))
                blocked = False
        if blocked:
            release.wait(30)
            return Reply(status=503, body={"error": "gone"})
        return answer(body)

    with FakeLLMServer(respond) as fake:
        cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--llm-url", fake.url]
        proc = subprocess.Popen(cmd, cwd=pytester.path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_for_lines(lambda: pytester.path.glob(".promptsweep/runs/*/results.jsonl"), 3, 600, proc)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
            release.set()
        first = list(answered)
        first_requests = len(fake.requests)
        assert len(first) == 3
        check_artifacts(pytester.path, 3)  # the killed run kept its 3 lines, no metrics.json
        result = pytester.runpytest("--llm-url", fake.url)
        second = [sample_index(body) for body in fake.requests[first_requests:]]
    result.assert_outcomes(passed=6)
    assert not set(first) & set(second), "an answered sample was asked again"
    assert sorted(first + second) == list(range(6))
    result.stdout.fnmatch_lines(["*response cache (read-write, *): 3 hits, 3 misses"])


@pytest.mark.real_server
def test_managed_server_killed_mid_run_is_restarted_once(pytester: pytest.Pytester) -> None:
    """SIGKILL the managed llama-server after 2 results: it is restarted and the run finishes."""
    if os.environ.get("PROMPTSWEEP_SKIP_REAL_SERVER") == "1":
        pytest.skip("real llama-server disabled by PROMPTSWEEP_SKIP_REAL_SERVER=1")
    if REAL_BINARY is None or not REAL_MODEL.is_file():
        pytest.fail("no llama-server or model: run `promptsweep server ensure`", pytrace=False)
    # Plain text output and 8 tokens: constrained decoding is slow on a busy 2-core machine.
    make_suite(pytester, fmt="text", suite_text=SUITE.format(threshold=0.0) + "llm:\n  max_tokens: 8\n")
    # the template's model_defaults win over the suite's llm block: keep answers short there
    template = pytester.path / "template.yaml"
    template.write_text(template.read_text().replace("max_tokens: 64", "max_tokens: 8"))
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "--llm-server",
        "managed",
        "--llm-slots",
        "1",
        "--llm-cache",
        "off",
    ]
    env = {**os.environ, "PROMPTSWEEP_LLAMA_SERVER": str(REAL_BINARY), "PROMPTSWEEP_MODEL": str(REAL_MODEL)}
    started = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=pytester.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    try:
        results = _wait_for_lines(
            lambda: pytester.path.glob(".promptsweep/runs/*/results.jsonl"), 2, 600, proc
        )
        # Stopped, the run cannot finish its last samples between this check and the kill:
        # whatever it has not answered yet meets the dead server, however fast the machine.
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            answered = results.read_text().count("\n")
            assert answered < 6, "the run answered every sample before the kill: nothing to restart for"
            children = _children_named(proc.pid, "llama-server")
            assert children, "no llama-server child found"
            for pid in children:
                os.kill(pid, signal.SIGKILL)
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        # Patience from this run's own pace: a restart and the other samples take about as
        # long as starting and answering the first two did; ten times that, at least 3 minutes.
        out, _ = proc.communicate(timeout=max(180.0, 10 * (time.monotonic() - started)))
    finally:
        if proc.poll() is None:
            proc.kill()
    text = out.decode(errors="replace")
    assert "the managed llama-server died; restarting it on the same port" in text, text
    assert "llama-server is back at" in text
    assert proc.returncode == 0, text
    lines = check_artifacts(pytester.path, 6)
    assert not [line for line in lines if line["error"]]


def _children_named(ppid: int, name: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == ppid and name in cmdline:
            found.append(int(entry.name))
    return found
