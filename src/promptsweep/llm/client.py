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
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

import httpx

from promptsweep.core.chat import ChatRequest, ChatResult, LLMError
from promptsweep.core.errors import EndpointError
from promptsweep.core.redact import redact_text, redact_url, url_origin, url_secrets

DEFAULT_TIMEOUT_S = 120.0
"""Seconds one request may take (``--llm-timeout``)."""


@dataclass(frozen=True)
class EndpointInfo:
    """What the endpoint says about itself. llama-server fills more of it than others.

    ``url`` is the URL as given, credentials included (the transport needs them); whatever
    is shown or written uses ``public_url`` / ``to_json()``, where they are redacted.
    """

    url: str
    model_id: str | None = None
    model_path: str | None = None
    build_info: str | None = None
    total_slots: int | None = None
    is_llama_server: bool = False

    @property
    def public_url(self) -> str:
        """The URL with userinfo and secret query parameters redacted."""
        return redact_url(self.url)

    @property
    def origin(self) -> str:
        """``scheme://host:port``: where the endpoint is, without credentials or path."""
        return url_origin(self.url)

    @property
    def model_identity(self) -> str:
        """Stable identity for provenance and cache keys, never carrying credentials.

        llama-server names its model file and build (``/props``): those identify the answers
        wherever the server runs (the managed server gets a new port every run, and its cache
        entries must still match). Other servers: ``scheme://host:port`` plus the model id they
        report, or the origin alone; never the URL's credentials or path.
        """
        if self.model_path or self.build_info:
            return "|".join(p for p in (self.model_path or self.model_id, self.build_info) if p)
        return "|".join(p for p in (self.origin, self.model_id) if p)

    def to_json(self) -> dict[str, Any]:
        """For artifacts: the URL redacted."""
        return {**self.to_private_json(), "url": self.public_url}

    def to_private_json(self) -> dict[str, Any]:
        """For xdist workers only (``workerinput``), which must reach the same URL."""
        return {
            "url": self.url,
            "model_id": self.model_id,
            "model_path": self.model_path,
            "build_info": self.build_info,
            "total_slots": self.total_slots,
            "is_llama_server": self.is_llama_server,
        }


def parse_chat_response(url: str, payload: Any, latency_s: float) -> ChatResult:
    """Read an OpenAI chat completion, plus llama-server's ``timings`` when present.

    ``url`` only names the endpoint in messages: callers pass a redacted one."""
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
        self.url = base_url.rstrip("/")
        self.timeout = timeout
        # Credentials in the URL still work (userinfo as basic auth, query parameters on every
        # request), but the client's base URL and every message carry neither.
        parts = urlsplit(self.url)
        self.base_url = urlunsplit((parts.scheme, _hostport(parts), parts.path.rstrip("/"), "", ""))
        self.display_url = redact_url(self.url)
        # Request URLs in messages: userinfo masked, the query (sent on every request) left off.
        self._display_base = redact_url(
            urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
        )
        self._secrets = [*url_secrets(self.url), api_key]
        auth = None
        if not api_key and (parts.username is not None or parts.password is not None):  # an explicit key wins
            auth = httpx.BasicAuth(unquote(parts.username or ""), unquote(parts.password or ""))
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(
            base_url=self.base_url,
            params=list(parse_qsl(parts.query, keep_blank_values=True)),
            headers=headers,
            auth=auth,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            transport=transport,
        )

    def _safe(self, text: str) -> str:
        """Text for a message: URLs redacted, this endpoint's secrets scrubbed (a server may echo them)."""
        return redact_text(text, self._secrets)

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
        url = f"{self._display_base}{self._api_root}/chat/completions"
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
            raise LLMError(f"{url}: cannot connect: {self._safe(str(exc))}", retryable=True) from exc
        latency = time.perf_counter() - started
        if response.status_code != 200:
            raise LLMError(
                f"{url}: HTTP {response.status_code}: {self._safe(response.text[:300])}",
                status=response.status_code,
                retryable=response.status_code in (408, 429, 502, 503, 504) or response.status_code >= 500,
                retry_after=parse_retry_after(response.headers.get("retry-after")),
            )
        try:
            payload = response.json()
        except ValueError as exc:
            raise LLMError(
                f"{url}: response body is not JSON (truncated?): {self._safe(repr(response.text[:200]))}",
                status=response.status_code,
                retryable=True,
            ) from exc
        try:
            return parse_chat_response(url, payload, latency)
        except LLMError as exc:
            raise LLMError(self._safe(str(exc))) from None

    def _get_json(self, path: str) -> Any | None:
        # llama-server's own endpoints (/props) live at the server root, also when the URL
        # given ends in /v1.
        root = self.base_url[: -len("/v1")] if self.base_url.endswith("/v1") else self.base_url
        try:
            response = self._http.get(f"{root}{path}")
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
                f"LLM endpoint {self.display_url} is unreachable: {self._safe(str(exc))}. "
                "Start llama-server there, fix --llm-url, or leave --llm-url out to use the managed server."
            ) from exc
        if response.status_code in (401, 403):
            raise EndpointError(
                f"LLM endpoint {self.display_url} refused the request (HTTP {response.status_code}): "
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
            return EndpointInfo(url=self.url, model_id=model_id)
        slots = props.get("total_slots")
        return EndpointInfo(
            url=self.url,
            model_id=model_id or props.get("model_alias"),
            model_path=props.get("model_path"),
            build_info=str(props["build_info"]) if props.get("build_info") else None,
            total_slots=int(slots) if isinstance(slots, int) else None,
            is_llama_server=True,
        )


def _hostport(parts: Any) -> str:
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    try:
        port = parts.port
    except ValueError:
        raise EndpointError(
            f"LLM endpoint {redact_url(urlunsplit(parts))}: the port is not a number in 0-65535"
        ) from None
    return f"{host}:{port}" if port is not None else host


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
