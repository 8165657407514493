"""The LLM client: OpenAI-compatible chat completions over httpx, with llama-server extras.

One request type in, one result type out, so the response cache, retries and tracing
can wrap ``LLMClient.chat`` without knowing about each other. The client takes an
``httpx`` transport, so edge cases are tested with ``httpx.MockTransport``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from promptsweep.core.chat import ChatRequest, ChatResult, LLMError
from promptsweep.core.errors import EndpointError

DEFAULT_TIMEOUT_S = 120.0
"""Seconds one request may take (``--llm-timeout``)."""


@dataclass(frozen=True)
class EndpointInfo:
    """What the endpoint says about itself. llama-server fills more of it than others."""

    url: str
    model_id: str | None = None
    model_path: str | None = None
    build_info: str | None = None
    total_slots: int | None = None
    is_llama_server: bool = False

    @property
    def model_identity(self) -> str:
        """Stable identity for provenance and cache keys: model path and build, else the model id."""
        parts = [p for p in (self.model_path or self.model_id, self.build_info) if p]
        return "|".join(parts) or self.url

    def to_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "model_id": self.model_id,
            "model_path": self.model_path,
            "build_info": self.build_info,
            "total_slots": self.total_slots,
            "is_llama_server": self.is_llama_server,
        }


def parse_chat_response(url: str, payload: Any, latency_s: float) -> ChatResult:
    """Read an OpenAI chat completion, plus llama-server's ``timings`` when present."""
    try:
        choice = payload["choices"][0]
        message = choice.get("message") or {}
        text = message.get("content")
        if text is None:
            text = choice.get("text", "")
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        raise LLMError(f"{url}: response is not an OpenAI chat completion: {str(payload)[:200]}") from exc
    usage = payload.get("usage") or {}
    timings = payload.get("timings") if isinstance(payload.get("timings"), Mapping) else None
    cached = None
    details = usage.get("prompt_tokens_details")
    if isinstance(details, Mapping) and details.get("cached_tokens") is not None:
        cached = int(details["cached_tokens"])
    elif timings and timings.get("cache_n") is not None:
        cached = int(timings["cache_n"])
    return ChatResult(
        text=str(text or ""),
        finish_reason=choice.get("finish_reason"),
        prompt_tokens=usage.get("prompt_tokens"),
        completion_tokens=usage.get("completion_tokens"),
        cached_tokens=cached,
        latency_s=latency_s,
        model=payload.get("model"),
        timings=timings,
    )


class LLMClient:
    """A synchronous client for one OpenAI-compatible endpoint.

    Synchronous on purpose: each pytest item makes one call, and concurrency comes
    from xdist workers, one per server slot.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            transport=transport,
        )

    @property
    def _api_root(self) -> str:
        # Accept both http://host:port and http://host:port/v1 as the URL users give.
        return "" if self.base_url.endswith("/v1") else "/v1"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> LLMClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def chat(self, request: ChatRequest) -> ChatResult:
        """Send one chat completion; raise ``LLMError`` naming the endpoint on any failure."""
        url = f"{self.base_url}{self._api_root}/chat/completions"
        started = time.perf_counter()
        try:
            response = self._http.post(f"{self._api_root}/chat/completions", json=request.body())
        except httpx.TimeoutException as exc:
            # A read timeout means the server is working on it: retrying only adds load.
            raise LLMError(
                f"{url}: timed out after {self.timeout:g}s ({type(exc).__name__}); see --llm-timeout",
                retryable=not isinstance(exc, httpx.ReadTimeout),
            ) from exc
        except httpx.TransportError as exc:
            raise LLMError(f"{url}: cannot connect: {exc}", retryable=True) from exc
        latency = time.perf_counter() - started
        if response.status_code != 200:
            raise LLMError(
                f"{url}: HTTP {response.status_code}: {response.text[:300]}",
                status=response.status_code,
                retryable=response.status_code in (408, 429, 502, 503, 504) or response.status_code >= 500,
                retry_after=parse_retry_after(response.headers.get("retry-after")),
            )
        try:
            payload = response.json()
        except ValueError as exc:
            raise LLMError(
                f"{url}: response body is not JSON (truncated?): {response.text[:200]!r}",
                status=response.status_code,
                retryable=True,
            ) from exc
        return parse_chat_response(url, payload, latency)

    def _get_json(self, path: str) -> Any | None:
        try:
            response = self._http.get(path)
        except httpx.HTTPError:
            return None
        if response.status_code != 200:
            return None
        try:
            return response.json()
        except ValueError:
            return None

    def probe(self) -> EndpointInfo:
        """Check the endpoint answers and learn what it is; raise ``EndpointError`` if unreachable."""
        try:
            response = self._http.get(f"{self._api_root}/models", timeout=10.0)
        except httpx.HTTPError as exc:
            raise EndpointError(
                f"LLM endpoint {self.base_url} is unreachable: {exc}. "
                "Start llama-server there, fix --llm-url, or leave --llm-url out to use the managed server."
            ) from exc
        if response.status_code in (401, 403):
            raise EndpointError(
                f"LLM endpoint {self.base_url} refused the request (HTTP {response.status_code}): "
                "set PROMPTSWEEP_API_KEY or --llm-api-key"
            )
        model_id = None
        if response.status_code == 200:
            try:
                data = response.json().get("data") or []
                if data:
                    model_id = data[0].get("id")
            except (ValueError, AttributeError):
                pass
        props = self._get_json("/props")
        if not isinstance(props, Mapping):
            return EndpointInfo(url=self.base_url, model_id=model_id)
        slots = props.get("total_slots")
        return EndpointInfo(
            url=self.base_url,
            model_id=model_id or props.get("model_alias"),
            model_path=props.get("model_path"),
            build_info=str(props["build_info"]) if props.get("build_info") else None,
            total_slots=int(slots) if isinstance(slots, int) else None,
            is_llama_server=True,
        )


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds: a number, or an HTTP date (RFC 9110); None when absent or bad."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    from datetime import datetime, timezone

    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())
