"""The endpoint a process talks to: a client plus the layers (cache, retries, spans) around its send path."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from promptsweep.core.chat import ChatRequest, ChatResult
from promptsweep.llm.client import EndpointInfo, LLMClient

SendFn = Callable[[ChatRequest], ChatResult]
Layer = Callable[[EndpointInfo, SendFn], SendFn]
"""Wraps the send path: ``layer(info, next_send) -> send``. The response cache, retries and
tracing are layers, registered on ``EndpointManager.layers`` at configure time; the first
registered is the outermost."""


@dataclass(frozen=True)
class EndpointConfig:
    """How to talk to an endpoint: bearer token, request timeout, model name to send."""

    api_key: str | None = None
    timeout: float = 120.0
    model: str | None = None

    def client(self, url: str) -> LLMClient:
        return LLMClient(url, api_key=self.api_key, timeout=self.timeout)


class Endpoint:
    """One process's view of the LLM: URL, what the server said about itself, and a client.

    This is also the ``endpoint`` fixture users get: ``endpoint.chat(messages, max_tokens=...)``.
    """

    def __init__(self, info: EndpointInfo, config: EndpointConfig, layers: Sequence[Layer] = ()) -> None:
        self.info = info
        self.url = info.url
        self.config = config
        self.client = config.client(info.url)
        send: SendFn = self.client.chat
        for layer in reversed(layers):
            send = layer(info, send)
        self._send = send

    def send(self, request: ChatRequest) -> ChatResult:
        """The single door for chat calls; the layers (cache, retries, spans) wrap it."""
        return self._send(request)

    def chat(self, messages: list[dict[str, str]], *, repeat: int = 0, **params: Any) -> ChatResult:
        """Send ``messages`` with sampling ``params``; ``repeat`` > 0 asks the same again as
        its own request (and cache entry), e.g. ``repeat=promptsweep_repeat``."""
        response_format = params.pop("response_format", None)
        return self.send(
            ChatRequest(
                messages=tuple(messages),
                params=params,
                response_format=response_format,
                model=self.config.model,
                repeat=repeat,
            )
        )

    def close(self) -> None:
        self.client.close()


def probe_url(url: str, config: EndpointConfig) -> EndpointInfo:
    """Reach the endpoint once; an unreachable URL is one clear error, not one per sample."""
    with config.client(url) as client:
        return client.probe()
