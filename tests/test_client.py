"""The LLM client and endpoint against ``httpx.MockTransport``: every HTTP edge case, no server."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from promptsweep import connect
from promptsweep.core.answers.chat import ChatRequest, LLMError
from promptsweep.core.io.errors import EndpointError
from promptsweep.llm.client import EndpointInfo, LLMClient
from promptsweep.llm.endpoint import Endpoint, EndpointConfig

Handler = Callable[[httpx.Request], httpx.Response]


def completion(text: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": "m",
        "choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3},
        **extra,
    }


def client(handler: Handler, url: str = "http://llm.test") -> LLMClient:
    return LLMClient(url, timeout=5.0, transport=httpx.MockTransport(handler))


REQUEST = ChatRequest(messages=({"role": "user", "content": "hi"},), params={"max_tokens": 8})


def test_chat_posts_the_body_and_reads_usage_and_llama_timings() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=completion("hello", timings={"cache_n": 5}))

    result = client(handler).chat(REQUEST)
    assert seen[0].url.path == "/v1/chat/completions"
    assert json.loads(seen[0].content) == {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
    assert (result.text, result.prompt_tokens, result.completion_tokens) == ("hello", 7, 3)
    assert result.cached_tokens == 5 and result.finish_reason == "stop"


def test_a_v1_base_url_is_not_doubled() -> None:
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        return httpx.Response(200, json=completion("x"))

    client(handler, "http://llm.test/v1").chat(REQUEST)
    assert paths == ["/v1/chat/completions"]


@pytest.mark.parametrize(
    ("status", "headers", "retryable", "retry_after"),
    [
        (429, {"Retry-After": "3"}, True, 3.0),
        (503, {}, True, None),
        (500, {}, True, None),
        (400, {}, False, None),
        (404, {}, False, None),
    ],
)
def test_http_errors_say_whether_to_retry(
    status: int, headers: dict[str, str], retryable: bool, retry_after: float | None
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, headers=headers, text="busy")

    with pytest.raises(LLMError, match=rf"http://llm.test/v1/chat/completions: HTTP {status}: busy") as info:
        client(handler).chat(REQUEST)
    assert (info.value.status, info.value.retryable, info.value.retry_after) == (
        status,
        retryable,
        retry_after,
    )


def test_a_torn_body_is_a_retryable_error_naming_the_endpoint() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text='{"choices": [')

    with pytest.raises(LLMError, match="response body is not JSON") as info:
        client(handler).chat(REQUEST)
    assert info.value.retryable


def test_a_body_that_is_not_a_chat_completion_is_an_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"hello": "world"})

    with pytest.raises(LLMError, match="not an OpenAI chat completion"):
        client(handler).chat(REQUEST)


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (httpx.ReadTimeout("slow"), False),
        (httpx.ConnectTimeout("no"), True),
        (httpx.ConnectError("refused"), True),
    ],
)
def test_transport_failures(error: Exception, retryable: bool) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise error

    with pytest.raises(LLMError) as info:
        client(handler).chat(REQUEST)
    assert info.value.retryable is retryable and info.value.status is None


def test_probe_reads_llama_server_props() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "smol"}]})
        assert request.url.path == "/props"
        return httpx.Response(200, json={"total_slots": 3, "model_path": "/m.gguf", "build_info": "b1-abc"})

    info = client(handler).probe()
    assert (info.model_id, info.total_slots, info.is_llama_server) == ("smol", 3, True)
    assert info.model_identity == "/m.gguf|b1-abc"


def test_probe_of_a_server_without_props_is_not_llama_server() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "gpt"}]})
        return httpx.Response(404)

    info = client(handler).probe()
    assert (info.model_id, info.total_slots, info.is_llama_server) == ("gpt", None, False)
    # Another server's "gpt" is another model: the origin is part of the identity (no credentials).
    assert info.model_identity == "http://llm.test:80|gpt"


def test_probe_refused_asks_for_the_api_key() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401)

    with pytest.raises(EndpointError, match="set PROMPTSWEEP_API_KEY or --llm-api-key"):
        client(handler).probe()


def test_the_api_key_is_sent_as_a_bearer_token() -> None:
    headers: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        headers.append(request.headers.get("authorization"))
        return httpx.Response(200, json=completion("x"))

    LLMClient("http://llm.test", api_key="s3cret", transport=httpx.MockTransport(handler)).chat(REQUEST)
    assert headers == ["Bearer s3cret"]


def test_endpoint_chat_sends_a_rendered_prompt_as_is_and_kwargs_override() -> None:
    bodies: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(200, json=completion("x"))

    config = EndpointConfig(transport=httpx.MockTransport(handler))
    endpoint = Endpoint(EndpointInfo(url="http://llm.test", model_id="m"), config)
    schema = {"type": "json_schema", "json_schema": {"name": "s", "strict": True, "schema": {}}}
    prompt = ChatRequest(
        messages=({"role": "user", "content": "hi"},),
        params={"temperature": 0.0, "max_tokens": 96},
        response_format=schema,
    )
    endpoint.chat(prompt)
    endpoint.chat(prompt, max_tokens=64)
    endpoint.chat([{"role": "user", "content": "bare"}], max_tokens=5)
    assert bodies[0] == prompt.body()
    assert bodies[0]["response_format"] == schema and bodies[0]["max_tokens"] == 96
    assert bodies[1]["max_tokens"] == 64 and bodies[1]["response_format"] == schema
    assert bodies[2] == {"messages": [{"role": "user", "content": "bare"}], "max_tokens": 5}


def test_connect_puts_the_cache_outside_the_retries(tmp_path: Path) -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, json={"data": [{"id": "m"}]})
        calls.append(1)
        if len(calls) == 1:
            return httpx.Response(503, headers={"Retry-After": "0"})
        return httpx.Response(200, json=completion("cached answer"))

    transport = httpx.MockTransport(handler)
    with connect("http://llm.test", cache=tmp_path, transport=transport) as endpoint:
        first = endpoint.send(REQUEST)
        second = endpoint.send(REQUEST)
    assert first.text == second.text == "cached answer"
    assert (first.from_cache, second.from_cache) == (False, True)
    assert len(calls) == 2, "one 503 retried, then the answer; the repeat came from the cache"
    assert (tmp_path / "cache.sqlite3").is_file()
