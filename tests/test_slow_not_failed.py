"""Slow is not failed (issue 27 item 6): ``--llm-timeout`` measures silence, llama-server streams
its answers so a busy one keeps showing it works, every request has a total cap that follows the
measured speed, and a sample that times out is asked once more at the end of the run before it
counts as errored.

The fake servers here answer with short delays (a second or two) against a ``--llm-timeout`` of
one second; nothing asserts how long anything took.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from promptsweep.core.answers.chat import ChatRequest, LLMError
from promptsweep.llm.body import StreamedAnswer, StreamError, sse_data
from promptsweep.llm.client import (
    ASSUMED_ANSWER_TOKENS,
    CAP_PACE,
    CAP_TIMEOUTS,
    CHARS_PER_TOKEN,
    LLMClient,
    Pace,
)
from tests.fakeserver import FakeLLMServer, Reply, user_text
from tests.suitekit import make_suite, oracle
from tests.test_hostile_limits import completion, right_answer

PROPS = {"total_slots": 2, "model_path": "/models/llama-like.gguf", "build_info": "b1-test"}

Script = Callable[[BaseHTTPRequestHandler, dict[str, Any]], None]


class LlamaLikeServer:
    """Answers like llama-server: ``/props`` and ``/v1/models`` name it, and ``script(handler,
    body)`` writes each chat answer (streamed or not, at any pace)."""

    def __init__(self, script: Script) -> None:
        self.requests: list[dict[str, Any]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/props":
                    send(self, PROPS)
                elif path.rstrip("/").endswith("/models"):
                    send(self, {"object": "list", "data": [{"id": "llama-like.gguf"}]})
                else:
                    send(self, {"error": "not found"}, status=404)

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                server.requests.append(body)
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    script(self, body)  # the client may give up on a silent answer

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> LlamaLikeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def send(handler: BaseHTTPRequestHandler, payload: Any, status: int = 200) -> None:
    data = json.dumps(payload).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "object": "chat.completion.chunk",
        "model": "llama-like.gguf",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **extra,
    }


def stream(handler: BaseHTTPRequestHandler, text: str, *, pieces: int, pause_s: float) -> None:
    """llama-server's stream: headers when a slot starts, a progress chunk, a ping, then the
    answer in ``pieces`` with ``pause_s`` between them, the final chunk, usage, ``[DONE]``."""
    handler.send_response(200)
    handler.send_header("Content-Type", "text/event-stream")
    handler.end_headers()

    def event(data: str) -> None:
        handler.wfile.write(f"data: {data}\n\n".encode())
        handler.wfile.flush()

    event(
        json.dumps(
            chunk({"role": "assistant", "content": None}, prompt_progress={"total": 9, "processed": 9})
        )
    )
    handler.wfile.write(b":\n\n")  # a keep-alive ping
    size = max(1, -(-len(text) // pieces))
    for start in range(0, len(text), size):
        time.sleep(pause_s)
        event(json.dumps(chunk({"content": text[start : start + size]})))
    event(json.dumps(chunk({}, "stop")))
    event(json.dumps({"choices": [], "usage": {"prompt_tokens": 20, "completion_tokens": pieces},
                      "timings": {"prompt_n": 20, "predicted_n": pieces, "predicted_ms": 10.0}}))  # fmt: skip
    event("[DONE]")


def slow_but_streaming(handler: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
    """2.4 s per answer in all, never more than 0.3 s without a byte; without ``stream`` (as the
    old client asked) the same answer comes whole after 2.4 s of silence."""
    answer = right_answer(body)
    if body.get("stream"):
        stream(handler, answer, pieces=8, pause_s=0.3)
    else:
        time.sleep(2.4)
        send(handler, completion(answer))


def test_a_slow_answer_that_keeps_coming_is_not_a_timeout(pytester: pytest.Pytester) -> None:
    """The busy machine: calls slower in all than --llm-timeout failed (16 of 59 at 120 s). A
    streamed answer now only fails if the server falls silent for --llm-timeout."""
    make_suite(pytester, threshold=0.0)
    with LlamaLikeServer(slow_but_streaming) as server:
        result = pytester.runpytest_subprocess(
            "tiny.suite.yaml", "--llm-url", server.url, "--llm-timeout", "1", "--llm-cache=off",
            "-k", "k0 or k4", "-p", "no:cacheprovider",
        )  # fmt: skip
        bodies = list(server.requests)
    result.assert_outcomes(passed=2)
    assert len(bodies) == 2, "answered the first time: nothing timed out, nothing asked again"
    assert all(b["stream"] is True and b["return_progress"] is True for b in bodies)
    assert all(b["stream_options"] == {"include_usage": True} for b in bodies)
    run = sorted((pytester.path / ".promptsweep" / "runs").iterdir())[-1]
    lines = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    assert [r["score"] for r in lines] == [1.0, 1.0]
    assert {r["prompt_tokens"] for r in lines} == {20} and all(
        r["timings"]["predicted_n"] == 8 for r in lines
    )


def silent_then_fine(handler: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
    """Headers, then 2 s of silence, then the answer."""
    handler.send_response(200)
    handler.send_header("Content-Type", "text/event-stream")
    handler.end_headers()
    handler.wfile.flush()
    time.sleep(2.0)
    stream(handler, right_answer(body), pieces=1, pause_s=0.0)


def test_silence_past_llm_timeout_is_a_timeout_and_says_what_the_option_means(
    pytester: pytest.Pytester,
) -> None:
    make_suite(pytester, threshold=0.0)
    with LlamaLikeServer(silent_then_fine) as server:
        result = pytester.runpytest_subprocess(
            "tiny.suite.yaml", "--llm-url", server.url, "--llm-timeout", "1", "--llm-retries", "0",
            "--llm-cache=off", "-k", "k0", "-p", "no:cacheprovider",
        )  # fmt: skip
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*timed out: the server sent nothing for 1s (ReadTimeout; --llm-timeout is how long it may stay silent)*"
        ]
    )
    assert "asked again at the end of the run" not in result.stdout.str(), "--llm-retries 0: no second try"


def first_k0_call_hangs(calls: dict[str, int]) -> Callable[[dict[str, Any]], Reply]:
    right = oracle()
    lock = threading.Lock()

    def respond(body: dict[str, Any]) -> Reply:
        reply: Reply = right(body)
        if "LOG-0 " in user_text(body):
            with lock:
                calls["k0"] = calls.get("k0", 0) + 1
                first = calls["k0"] == 1
            if first:
                reply.delay_s = 2.5  # past --llm-timeout 1: this call times out
        return reply

    return respond


@pytest.mark.parametrize("workers", ["0", "2"])
def test_a_timed_out_sample_is_asked_again_at_the_end_and_counts_if_it_answers(
    pytester: pytest.Pytester, workers: str
) -> None:
    """README command 1 failed its gate beside a second run (11 of 32 samples timed out). A
    sample whose call times out is now set aside (RERUN), asked again once every other item has
    run, and scored if it answers; the summary says how many were retried and recovered."""
    make_suite(pytester, threshold=0.9)
    calls: dict[str, int] = {}
    with FakeLLMServer(first_k0_call_hangs(calls)) as fake:
        result = pytester.runpytest_subprocess(
            "tiny.suite.yaml", "--llm-url", fake.url, "--llm-timeout", "1", "--llm-cache=off",
            "-n", workers, "-p", "no:cacheprovider",
        )  # fmt: skip
        order = [user_text(body) for body in fake.requests]
    assert result.ret == 0, result.stdout.str()[-3000:]
    result.assert_outcomes(passed=6)
    assert result.parseoutcomes().get("rerun") == 1
    result.stdout.fnmatch_lines(["gate passed"])
    result.stdout.fnmatch_lines(
        ["*1 sample(s) timed out and were asked again at the end of the run: 1 answered, 0 errored*"]
    )
    assert calls["k0"] == 2
    if workers == "0":  # one process: the second try comes after every other sample
        assert "LOG-0 " in order[-1] and sum("LOG-0 " in text for text in order[:-1]) == 1
    run = sorted((pytester.path / ".promptsweep" / "runs").iterdir())[-1]
    lines = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    assert len(lines) == 6 and not any(r["error"] for r in lines), "one result per sample: the second try"


def test_a_stopping_run_still_records_what_was_set_aside(pytester: pytest.Pytester) -> None:
    """-x stops the run before the second pass asks anything: the sample set aside records its
    first (errored) result instead of going missing."""
    make_suite(pytester, threshold=0.0)

    def respond(body: dict[str, Any]) -> Reply:
        if "LOG-1 " in user_text(body):
            return Reply(status=400, body={"error": "bad request"})  # k1 fails: -x stops the run
        reply: Reply = oracle()(body)
        if "LOG-0 " in user_text(body):
            reply.delay_s = 2.5
        return reply

    with FakeLLMServer(respond) as fake:
        result = pytester.runpytest_subprocess(
            "tiny.suite.yaml", "--llm-url", fake.url, "--llm-timeout", "1", "--llm-cache=off", "-x",
            "-p", "no:cacheprovider",
        )  # fmt: skip
        k0_calls = sum("LOG-0 " in user_text(body) for body in fake.requests)
    assert k0_calls == 1
    run = sorted((pytester.path / ".promptsweep" / "runs").iterdir())[-1]
    lines = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    assert any(r["sample_id"].endswith("k0") and "timed out" in (r["error"] or "") for r in lines)
    assert result.ret == pytest.ExitCode.TESTS_FAILED


# ------------------------------------------------------------------------------ the total cap


def request(chars: int, max_tokens: int | None) -> ChatRequest:
    params = {"max_tokens": max_tokens} if max_tokens is not None else {}
    return ChatRequest(messages=({"role": "user", "content": "x" * chars},), params=params)


def test_the_total_cap_follows_the_speed_measured_and_the_requests_size() -> None:
    pace = Pace()
    assert pace.cap(120.0, request(3000, 64)) == CAP_TIMEOUTS * 120.0  # nothing measured yet
    pace.observe(latency_s=30.0, tokens=300)  # 0.1 s a token: a very busy machine
    pace.observe(latency_s=1.0, tokens=300)  # a quick one does not lower the cap: the slowest counts
    big = pace.cap(120.0, request(30_000, 256))
    assert big == pytest.approx(CAP_PACE * 0.1 * (30_000 / CHARS_PER_TOKEN + 256))
    assert big > CAP_TIMEOUTS * 120.0
    assert pace.cap(120.0, request(30_000, None)) > big  # no max_tokens: ASSUMED_ANSWER_TOKENS
    assert ASSUMED_ANSWER_TOKENS > 256
    assert pace.cap(120.0, request(300, 8)) == CAP_TIMEOUTS * 120.0  # small requests keep the floor


# ------------------------------------------------------------------------------ the stream parser


def events(*parts: bytes) -> list[str]:
    return list(sse_data(iter(parts)))


def test_the_stream_is_read_as_llama_server_writes_it() -> None:
    raw = (
        b'data: {"choices":[{"delta":{"role":"assistant","content":null}}],"prompt_progress":{"total":3}}\n\n'
        b":\n\n"
        b'data: {"model":"m","choices":[{"delta":{"content":"hel"}}]}\r\n\r\n'
        b'data: {"choices":[{"delta":{"content":"lo"},"finish_reason":null}]}\n\n'
        b'data: {"choices":[{"delta":{},"finish_reason":"length"}]}\n\n'
        b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2},"timings":{"cache_n":1}}\n\n'
        b"data: [DONE]\n\n"
    )
    answer = StreamedAnswer()
    for data in events(raw[:7], raw[7:50], raw[50:]):  # split anywhere, even inside a line
        answer.add(data)
    payload = answer.payload()
    assert payload["choices"][0] == {"message": {"content": "hello"}, "finish_reason": "length"}
    assert payload["usage"] == {"prompt_tokens": 3, "completion_tokens": 2} and payload["model"] == "m"
    assert payload["timings"] == {"cache_n": 1}


def test_a_torn_or_failed_stream_is_one_clear_error() -> None:
    torn = StreamedAnswer()
    torn.add('{"choices":[{"delta":{"content":"half"}}]}')
    with pytest.raises(StreamError, match="ended before the answer was complete") as info:
        torn.payload()
    assert info.value.torn
    failed = StreamedAnswer()
    with pytest.raises(StreamError, match="ended the stream with an error: context full") as info:
        failed.add('{"error": {"code": 400, "message": "context full"}}')
    assert not info.value.torn


def test_a_server_that_ignores_stream_is_read_as_before(tmp_path: Path) -> None:
    with FakeLLMServer(oracle(), props=PROPS) as fake, LLMClient(fake.url, stream=True) as client:
        result = client.chat(request(10, 8))
    assert result.text == "I cannot tell" and fake.requests[0]["stream"] is True


def test_an_error_event_in_the_stream_errors_the_sample_without_retrying() -> None:
    def fails(handler: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.end_headers()
        handler.wfile.write(b'data: {"error": {"message": "slot crashed"}}\n\n')

    error = "the server ended the stream with an error: slot crashed"
    with (
        LlamaLikeServer(fails) as s,
        LLMClient(s.url, stream=True) as client,
        pytest.raises(LLMError, match=error) as info,
    ):
        client.chat(request(10, 8))
    assert not info.value.retryable and not info.value.timed_out


@pytest.mark.real_server
def test_llama_server_streams_the_same_answer_it_would_send_whole(llama_server_url: str) -> None:
    """The streamed answer (with ``stream_options`` and ``return_progress``, a JSON schema and the
    prompt cache off) is the non-streamed answer: same text, finish reason, token counts and
    timings keys; the model name is the one ``/v1/models`` reports."""
    from promptsweep.core.answers.chat import json_schema_response_format
    from promptsweep.llm.endpoint import EndpointConfig, probe_url

    info = probe_url(llama_server_url, EndpointConfig())
    assert info.is_llama_server
    schema = {
        "type": "object",
        "properties": {"level": {"enum": ["info", "warn", "error"]}},
        "required": ["level"],
    }
    asked = ChatRequest(
        messages=(
            {"role": "system", "content": "Classify the log line's level."},
            {"role": "user", "content": "OOMKilled: container api exceeded its 512Mi memory limit"},
        ),
        params={"temperature": 0.0, "max_tokens": 24, "seed": 7, "cache_prompt": False},
        response_format=json_schema_response_format("answer", schema),
    )
    with LLMClient(llama_server_url) as whole, LLMClient(llama_server_url, stream=True) as streamed:
        plain, flowing = whole.chat(asked), streamed.chat(asked)
    assert flowing.text == plain.text and json.loads(flowing.text)["level"] in ("info", "warn", "error")
    assert (flowing.finish_reason, flowing.prompt_tokens, flowing.completion_tokens) == (
        plain.finish_reason,
        plain.prompt_tokens,
        plain.completion_tokens,
    )
    assert flowing.timings is not None and plain.timings is not None
    assert {"prompt_n", "predicted_n", "predicted_per_token_ms"} <= set(flowing.timings)
    assert flowing.model == plain.model == info.model_id
