"""The LLM client: OpenAI-compatible chat completions over httpx, with llama-server extras.

One request type in, one result type out, so the response cache, retries and tracing
can wrap ``LLMClient.chat`` without knowing about each other. The client takes an
``httpx`` transport, so edge cases are tested with ``httpx.MockTransport``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

import httpcore
import httpx

from promptsweep.core.answers.chat import ChatRequest, ChatResult, LLMError, token_count
from promptsweep.core.io.errors import EndpointError
from promptsweep.core.io.redact import redact_text, redact_url, url_origin, url_secrets

DEFAULT_TIMEOUT_S = 120.0
"""Seconds one request may take in all, connect and every read (``--llm-timeout``)."""
DEFAULT_MAX_RESPONSE_BYTES = 16 * 1024 * 1024
"""Largest response body, counted after gzip/deflate/br decoding (``--llm-max-response-bytes``)."""
_MAX_NAME = 256  # model ids and paths a server reports: names, not payloads
_ERROR_BODY_BYTES = 64 * 1024  # an error body is only quoted (300 characters): read no more


class ResponseTooLarge(Exception):
    """The decoded body passed the byte limit; reading stopped there."""


class DeadlinePassed(Exception):
    """The request's total deadline passed while its body was still arriving."""


# ------------------------------------------------------------------------------ the deadline
#
# httpx's timeouts bound each operation (connect, one read), not the request: a server that
# sends a byte a second never trips a read timeout. The network streams below cap every
# connect, read and write at the time left before the request's deadline (kept per thread,
# as requests on one client run in several threads under --optimize), so headers and body
# together end by it. Chose a wrapped httpcore backend (a public interface) over a timer
# thread that closes sockets under a running request.

_deadline = threading.local()


def _time_left(timeout: float | None) -> float | None:
    deadline: float | None = getattr(_deadline, "at", None)
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise httpcore.ReadTimeout("the request's total deadline passed")
    return left if timeout is None else min(timeout, left)


@contextmanager
def _request_deadline(seconds: float) -> Iterator[float]:
    previous = getattr(_deadline, "at", None)
    _deadline.at = time.monotonic() + seconds
    try:
        yield _deadline.at
    finally:
        _deadline.at = previous


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _time_left(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _time_left(timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, _time_left(timeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        stream = self._inner.connect_tcp(host, port, _time_left(timeout), local_address, socket_options)
        return _DeadlineStream(stream)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.NetworkStream:
        return _DeadlineStream(self._inner.connect_unix_socket(path, _time_left(timeout), socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def _deadline_transport() -> httpx.BaseTransport:
    """httpx's own transport with its connection pool on the deadline backend. httpx does not
    take a backend as an argument; where its pool is not the one expected, the body loop's own
    deadline check still holds (only slow headers would then go unchecked)."""
    transport = httpx.HTTPTransport()
    pool = getattr(transport, "_pool", None)
    backend = getattr(pool, "_network_backend", None)
    if isinstance(backend, httpcore.NetworkBackend):
        pool._network_backend = _DeadlineBackend(backend)  # type: ignore[union-attr]
    return transport


def read_bounded(response: httpx.Response, limit: int, deadline: float | None = None) -> bytes:
    """The decoded body (gzip, deflate, br undone) read chunk by chunk, at most ``limit`` bytes:
    ``ResponseTooLarge`` past it, ``DeadlinePassed`` past ``deadline`` (``time.monotonic``).
    A gzip bomb inflates one network chunk at a time, so memory stays near ``limit``."""
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > limit:
            raise ResponseTooLarge
        chunks.append(chunk)
        if deadline is not None and time.monotonic() > deadline:
            raise DeadlinePassed
    return b"".join(chunks)


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
    if not isinstance(usage, Mapping):
        raise LLMError(f"{url}: usage in the response is not an object: {str(usage)[:80]}")
    timings = payload.get("timings") if isinstance(payload.get("timings"), Mapping) else None
    details = usage.get("prompt_tokens_details")
    try:
        prompt_tokens = token_count(usage.get("prompt_tokens"), "usage.prompt_tokens")
        completion_tokens = token_count(usage.get("completion_tokens"), "usage.completion_tokens")
        cached = None
        if isinstance(details, Mapping) and details.get("cached_tokens") is not None:
            cached = token_count(details["cached_tokens"], "usage.prompt_tokens_details.cached_tokens")
        elif timings and timings.get("cache_n") is not None:
            cached = token_count(timings["cache_n"], "timings.cache_n")
    except ValueError as exc:
        raise LLMError(f"{url}: the server reported an impossible token count: {exc}") from None
    return ChatResult(
        text=str(text or ""),
        finish_reason=choice.get("finish_reason"),
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
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
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        self.url = base_url.rstrip("/")
        self.timeout = timeout
        self.max_response_bytes = max_response_bytes
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
            transport=transport if transport is not None else _deadline_transport(),
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
        """Send one chat completion; raise ``LLMError`` naming the endpoint on any failure.

        The whole request (connect, headers, body) ends within ``timeout`` seconds, and the
        decoded body may not exceed ``max_response_bytes``: a server that trickles, stalls or
        sends a bomb costs one errored sample, not the run."""
        url = f"{self._display_base}{self._api_root}/chat/completions"
        started = time.perf_counter()
        try:
            with (
                _request_deadline(self.timeout) as deadline,
                self._http.stream(
                    "POST", f"{self._api_root}/chat/completions", json=request.body()
                ) as response,
            ):
                ok = response.status_code == 200
                limit = self.max_response_bytes if ok else min(self.max_response_bytes, _ERROR_BODY_BYTES)
                try:
                    body = read_bounded(response, limit, deadline)
                except ResponseTooLarge:
                    if ok:
                        raise LLMError(
                            f"{url}: response body is over {self.max_response_bytes} bytes (decoded); "
                            "see --llm-max-response-bytes",
                            status=response.status_code,
                        ) from None
                    body = b""
        except (httpx.TimeoutException, DeadlinePassed) as exc:
            # A read timeout means the server is working on it: retrying only adds load.
            raise LLMError(
                f"{url}: timed out after {self.timeout:g}s ({type(exc).__name__}); --llm-timeout "
                "bounds the whole request (connect, headers and body)",
                retryable=not isinstance(exc, (httpx.ReadTimeout, DeadlinePassed)),
            ) from None
        except httpx.TransportError as exc:
            raise LLMError(f"{url}: cannot connect: {self._safe(str(exc))}", retryable=True) from exc
        except httpx.DecodingError as exc:
            raise LLMError(
                f"{url}: response body cannot be decoded: {self._safe(str(exc))[:200]}", retryable=True
            ) from None
        latency = time.perf_counter() - started
        text = body.decode(response.encoding or "utf-8", errors="replace")
        if not ok:
            raise LLMError(
                f"{url}: HTTP {response.status_code}: {self._safe(text[:300])}",
                status=response.status_code,
                retryable=response.status_code in (408, 429, 502, 503, 504) or response.status_code >= 500,
                retry_after=parse_retry_after(response.headers.get("retry-after")),
            )
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise LLMError(
                f"{url}: response body is not JSON (truncated?): {self._safe(repr(text[:200]))}",
                status=response.status_code,
                retryable=True,
            ) from exc
        try:
            return parse_chat_response(url, payload, latency)
        except LLMError as exc:
            raise LLMError(self._safe(str(exc))) from None

    def _get(self, path: str, *, timeout: float | None = None) -> tuple[int, Any]:
        """GET within the same bounds as ``chat``: (status, parsed JSON or None)."""
        seconds = self.timeout if timeout is None else min(timeout, self.timeout)
        with (
            _request_deadline(seconds) as deadline,
            self._http.stream("GET", path, timeout=seconds) as response,
        ):
            try:
                body = read_bounded(response, self.max_response_bytes, deadline)
            except (ResponseTooLarge, DeadlinePassed, httpx.DecodingError):
                return response.status_code, None
        try:
            return response.status_code, json.loads(body)
        except (ValueError, RecursionError):
            return response.status_code, None

    def _get_json(self, path: str) -> Any | None:
        # llama-server's own endpoints (/props) live at the server root, also when the URL
        # given ends in /v1.
        root = self.base_url[: -len("/v1")] if self.base_url.endswith("/v1") else self.base_url
        try:
            status, data = self._get(f"{root}{path}")
        except httpx.HTTPError:
            return None
        return data if status == 200 else None

    def probe(self) -> EndpointInfo:
        """Check the endpoint answers and learn what it is; raise ``EndpointError`` if unreachable."""
        try:
            status, models = self._get(f"{self._api_root}/models", timeout=10.0)
        except httpx.HTTPError as exc:
            raise EndpointError(
                f"LLM endpoint {self.display_url} is unreachable: {self._safe(str(exc))}. "
                "Start llama-server there, fix --llm-url, or leave --llm-url out to use the managed server."
            ) from exc
        if status in (401, 403):
            raise EndpointError(
                f"LLM endpoint {self.display_url} refused the request (HTTP {status}): "
                "set PROMPTSWEEP_API_KEY or --llm-api-key"
            )
        model_id = None
        if status == 200:
            try:
                data = models.get("data") or []
                if data and isinstance(data[0].get("id"), str):
                    model_id = data[0]["id"][:_MAX_NAME]
            except (AttributeError, IndexError, KeyError, TypeError):
                pass
        props = self._get_json("/props")
        if not isinstance(props, Mapping):
            return EndpointInfo(url=self.url, model_id=model_id)
        slots = props.get("total_slots")

        def name(value: Any) -> str | None:
            return str(value)[:_MAX_NAME] if isinstance(value, (str, int, float)) and value != "" else None

        return EndpointInfo(
            url=self.url,
            model_id=model_id or name(props.get("model_alias")),
            model_path=name(props.get("model_path")),
            build_info=name(props.get("build_info")),
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
