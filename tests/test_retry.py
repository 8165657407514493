"""The retry layer and the managed-server guard, without a network."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from promptsweep.core.answers.chat import ChatRequest, ChatResult, LLMError
from promptsweep.llm.client import EndpointInfo, parse_retry_after
from promptsweep.llm.retry import RetryPolicy, retry_layer
from promptsweep.server.guard import ServerGuard

INFO = EndpointInfo(url="http://127.0.0.1:8080")
REQUEST = ChatRequest(messages=({"role": "user", "content": "hi"},))


class Script:
    """A send function that raises the scripted errors, then answers."""

    def __init__(self, *errors: LLMError) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self, request: ChatRequest) -> ChatResult:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return ChatResult(text="ok")


def run(script: Script, policy: RetryPolicy, **kwargs: object) -> tuple[ChatResult | LLMError, list[float]]:
    sleeps: list[float] = []
    send = retry_layer(policy, sleep=sleeps.append, rng=random.Random(0), **kwargs)(INFO, script)  # type: ignore[arg-type]
    try:
        return send(REQUEST), sleeps
    except LLMError as exc:
        return exc, sleeps


def e503(retry_after: float | None = None) -> LLMError:
    return LLMError(
        "http://x/v1/chat/completions: HTTP 503: loading", status=503, retryable=True, retry_after=retry_after
    )


def test_retries_then_succeeds_with_jittered_exponential_backoff() -> None:
    script = Script(e503(), e503(), e503())
    result, sleeps = run(script, RetryPolicy(retries=3, base_delay_s=1.0))
    assert isinstance(result, ChatResult) and script.calls == 4
    assert len(sleeps) == 3
    for n, delay in enumerate(sleeps):
        assert 0 <= delay <= 2**n  # full jitter within the doubling cap


def test_retry_after_replaces_the_backoff() -> None:
    result, sleeps = run(Script(e503(retry_after=7.0)), RetryPolicy(retries=3))
    assert isinstance(result, ChatResult)
    assert sleeps == [7.0]


def test_gives_up_after_the_last_try_naming_endpoint_status_and_attempts() -> None:
    script = Script(*(LLMError("http://x: HTTP 500: boom", status=500, retryable=True) for _ in range(5)))
    result, sleeps = run(script, RetryPolicy(retries=2, base_delay_s=0.01))
    assert isinstance(result, LLMError)
    assert script.calls == 3 and len(sleeps) == 2
    message = str(result)
    assert message.startswith("http://127.0.0.1:8080: gave up after 3 attempts in ")
    assert "(last status: HTTP 500): http://x: HTTP 500: boom" in message
    assert result.status == 500 and not result.retryable


def test_total_time_bound_stops_early() -> None:
    script = Script(e503(retry_after=100.0))
    result, sleeps = run(script, RetryPolicy(retries=5, max_total_s=10.0))
    assert isinstance(result, LLMError)
    assert sleeps == [] and script.calls == 1
    assert "gave up after 1 attempt in" in str(result)
    assert "next try not before 100.0s, past the retry time limit" in str(result)


def loading_model() -> LLMError:
    body = '{"error":{"message":"Loading model","type":"unavailable_error","code":503}}'
    return LLMError(f"http://x/v1/chat/completions: HTTP 503: {body}", status=503, retryable=True)


def test_a_server_still_loading_its_model_is_waited_for_without_using_up_attempts() -> None:
    """A restarted llama-server answers 503 "Loading model" for a while (CI saw a run give up
    after 4 attempts in 1.1 s); that wait is bounded by the retry time, not the attempt count."""
    script = Script(*(loading_model() for _ in range(10)))
    result, sleeps = run(script, RetryPolicy(retries=1, max_total_s=60.0))
    assert isinstance(result, ChatResult) and script.calls == 11
    assert sleeps == [0.5] * 10


def test_waiting_for_a_loading_model_ends_at_the_retry_time_limit() -> None:
    script = Script(*(loading_model() for _ in range(100)))
    result, sleeps = run(script, RetryPolicy(retries=1, base_delay_s=0.01, max_total_s=2.0))
    assert isinstance(result, LLMError) and "Loading model" in str(result)
    assert len(sleeps) == 4 + 1  # four half-second waits fill the 2 s, then one counted retry


def test_non_retryable_errors_pass_through_unchanged() -> None:
    error = LLMError("http://x: HTTP 400: bad", status=400, retryable=False)
    result, sleeps = run(Script(error), RetryPolicy())
    assert result is error and sleeps == []


def test_zero_retries_means_one_attempt() -> None:
    script = Script(e503())
    result, _ = run(script, RetryPolicy(retries=0))
    assert isinstance(result, LLMError) and script.calls == 1


def test_connection_errors_call_the_restart_hook() -> None:
    calls: list[int] = []
    script = Script(LLMError("http://x: cannot connect", retryable=True))
    result, _ = run(script, RetryPolicy(base_delay_s=0.01), on_connection_error=lambda: calls.append(1))
    assert isinstance(result, ChatResult) and calls == [1]


@pytest.mark.parametrize(
    ("header", "expected"), [("3", 3.0), ("0.5", 0.5), ("-1", 0.0), (None, None), ("soon", None)]
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header) == expected


def test_parse_retry_after_http_date() -> None:
    value = parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT")
    assert value == 0.0  # in the past


class FakeServer:
    def __init__(self, restart_ok: bool = True) -> None:
        self.alive = True
        self.restarts = 0
        self.restart_ok = restart_ok
        self.log_path = Path("/tmp/llama-server.log")
        self.url = "http://127.0.0.1:1"

    def is_alive(self) -> bool:
        return self.alive

    def restart(self) -> str:
        from promptsweep.server.managed import ServerStartError

        self.restarts += 1
        if not self.restart_ok:
            raise ServerStartError("llama-server exited with code 1 during startup", self.log_path)
        self.alive = True
        return self.url


class FakeManager:
    def __init__(self, server: FakeServer | None) -> None:
        self.server = server


def test_guard_restarts_a_dead_server_once_then_stops_naming_the_log() -> None:
    server = FakeServer()
    messages: list[str] = []
    guard = ServerGuard(FakeManager(server), progress=messages.append)  # type: ignore[arg-type]
    guard.check()
    assert server.restarts == 0  # alive: nothing to do
    server.alive = False
    guard.check()
    assert server.restarts == 1 and server.alive
    server.alive = False
    with pytest.raises(
        LLMError, match=r"died again after 1 restart\(s\); stopping. Its log: /tmp/llama-server.log"
    ):
        guard.check()
    assert guard.gave_up and server.restarts == 1
    assert any("restarting it on the same port" in m for m in messages)


def test_guard_reports_a_failed_restart() -> None:
    server = FakeServer(restart_ok=False)
    server.alive = False
    guard = ServerGuard(FakeManager(server), progress=lambda m: None)  # type: ignore[arg-type]
    with pytest.raises(LLMError, match="did not restart: llama-server exited with code 1"):
        guard.check()


def test_guard_does_nothing_without_an_owned_server() -> None:
    messages: list[str] = []
    guard = ServerGuard(FakeManager(None), progress=messages.append)  # type: ignore[arg-type]
    guard.check()
    assert (guard.gave_up, guard.restarts_done, guard.restarts_left) == (None, 0, 1)
    assert guard.events == [] and messages == []


def test_guard_leaves_a_server_alone_once_the_run_stopped_it() -> None:
    server = FakeServer()
    server.alive = False
    guard = ServerGuard(FakeManager(server), progress=lambda m: None)  # type: ignore[arg-type]
    guard.stopped = True
    guard.check()
    assert server.restarts == 0 and guard.events == [] and guard.gave_up is None
