"""The endpoint a process talks to: a client plus the layers (cache, retries, spans) around its send path."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import httpx

from promptsweep.core.answers.chat import ChatRequest, ChatResult, answer_without_call
from promptsweep.llm.client import DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_TIMEOUT_S, EndpointInfo, LLMClient

SendFn = Callable[[ChatRequest], ChatResult]
Layer = Callable[[EndpointInfo, SendFn], SendFn]
"""Wraps the send path: ``layer(info, next_send) -> send``. The response cache, retries and
tracing are layers, registered on ``EndpointManager.layers`` at configure time; the first
registered is the outermost."""


@dataclass(frozen=True)
class EndpointConfig:
    """How to talk to an endpoint: bearer token, request timeout, model name to send, and an
    optional ``httpx`` transport (``httpx.MockTransport`` in tests)."""

    api_key: str | None = None
    timeout: float = DEFAULT_TIMEOUT_S
    model: str | None = None
    transport: httpx.BaseTransport | None = None
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES

    def client(self, url: str, *, stream: bool = False, slots: int | None = None) -> LLMClient:
        return LLMClient(
            url,
            api_key=self.api_key,
            timeout=self.timeout,
            transport=self.transport,
            max_response_bytes=self.max_response_bytes,
            stream=stream,
            slots=slots,
        )

    def client_for(self, info: EndpointInfo) -> LLMClient:
        """A client for a probed endpoint: llama-server is asked to stream its answers, so a
        busy server shows it is working (see ``LLMClient``)."""
        return self.client(
            info.url, stream=info.is_llama_server, slots=info.total_slots if info.is_llama_server else None
        )


class Endpoint:
    """One process's view of the LLM: URL, what the server said about itself, and a client.

    This is also the ``endpoint`` fixture users get: ``endpoint.chat(messages, max_tokens=...)``.
    """

    def __init__(
        self,
        info: EndpointInfo,
        config: EndpointConfig,
        layers: Sequence[Layer] = (),
        *,
        base: SendFn | None = None,
    ) -> None:
        """``base`` replaces the HTTP call at the core of the send path (a managed server that
        starts on the first call that misses the cache)."""
        self.info = info
        self.url = info.url
        self.config = config
        self.client: LLMClient | None = None
        send: SendFn
        if base is None:
            self.client = config.client_for(info)
            send = self.client.chat
        else:
            send = base
        for layer in reversed(layers):
            send = layer(info, send)
        self._send = send

    def send(self, request: ChatRequest) -> ChatResult:
        """The single door for chat calls; the layers (cache, retries, spans) wrap it.

        A request a gated lookup answered (``request.copied``) returns that answer here, before
        any layer: no call, no cache entry, no span, 0 tokens."""
        copied = answer_without_call(request)
        if copied is not None:
            return copied
        return self._send(request)

    def chat(
        self,
        prompt: ChatRequest | Sequence[Mapping[str, str]],
        *,
        repeat: int | None = None,
        **params: Any,
    ) -> ChatResult:
        """Send a rendered prompt as it is (its messages, the template's parameters and
        ``response_format``: what the eval run sends), or bare messages; keyword arguments
        override parameters, e.g. ``endpoint.chat(prompt, max_tokens=64)``. ``repeat`` > 0
        asks the same again as its own request and cache entry (``repeat=promptsweep_repeat``)."""
        if isinstance(prompt, ChatRequest):
            request = prompt.with_params(**params)
        else:
            request = ChatRequest(messages=tuple(prompt)).with_params(**params)
        if request.model is None and self.config.model:
            request = replace(request, model=self.config.model)
        if repeat is not None:
            request = replace(request, repeat=repeat)
        return self.send(request)

    def __enter__(self) -> Endpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


def probe_url(url: str, config: EndpointConfig) -> EndpointInfo:
    """Reach the endpoint once; an unreachable URL is one clear error, not one per sample."""
    with config.client(url) as client:
        return client.probe()
