"""The LLM client: OpenAI-compatible chat completions over httpx, with llama-server extras.

One request type in, one result type out, so the response cache, retries and tracing
can wrap ``LLMClient.chat`` without knowing about each other. The client takes an
``httpx`` transport, so edge cases are tested with ``httpx.MockTransport``.
"""

from __future__ import annotations

import json
import math
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

import httpcore
import httpx

from promptsweep.core.answers.chat import ChatRequest, ChatResult, LLMError, clean_timings, token_count
from promptsweep.core.io.errors import EndpointError
from promptsweep.core.io.redact import redact_text, redact_url, url_origin, url_secrets
from promptsweep.llm.body import (
    ACCEPT_ENCODING,
    DeadlinePassed,
    ResponseTooLarge,
    StreamedAnswer,
    StreamError,
    UndecodableBody,
    is_event_stream,
    iter_decoded,
    read_bounded,
    read_prefix,
    sse_data,
)

DEFAULT_TIMEOUT_S = 120.0
"""Seconds a server may send nothing (no header, no byte, no streamed token) before a request
counts as hung (``--llm-timeout``); connecting may take at most 10 of them."""
CAP_TIMEOUTS = 4.0
"""A request's total cap is at least this many ``--llm-timeout``s ..."""
CAP_PACE = 10.0
"""... or this many times what the request should take at the slowest speed measured lately."""
PACE_WINDOW = 16
"""Answers the measured speed is taken over (the slowest of them counts)."""
CHARS_PER_TOKEN = 3.0
"""Prompt characters per token when sizing a request's cap: fewer than most text has, so the
cap errs long."""
ASSUMED_ANSWER_TOKENS = 512
"""Answer tokens assumed for a cap when a request sets no ``max_tokens``."""
DEFAULT_MAX_RESPONSE_BYTES = 16 * 1024 * 1024
"""Largest response body, counted after gzip/deflate decoding (``--llm-max-response-bytes``)."""
ERROR_TEXT_CHARS = 300
"""How much of a server's error body a message quotes (after scrubbing: never a secret's prefix)."""
_MAX_NAME = 256  # model ids and paths a server reports: names, not payloads
_ERROR_BODY_BYTES = 64 * 1024  # an error body is only quoted: read no more


# ------------------------------------------------------------------------------ the deadline
#
# httpx's timeouts bound each operation (connect, one read), not the request: a server that
# sends a byte a second never trips a read timeout. That per-read bound is what
# ``--llm-timeout`` is (silence, not slowness: a busy llama-server streaming its answer a token
# at a time is working, not hung). The total cap on top is enforced by the network streams
# below, which cap every connect, read and write at the time left before the request's deadline
# (kept per thread, as requests on one client run in several threads under --optimize), so
# headers and body together end by it. Chose a wrapped httpcore backend (a public interface)
# over a timer thread that closes sockets under a running request.

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


class Pace:
    """How fast this client's answers came lately, to size each request's total cap.

    ``--llm-timeout`` catches a server that stops sending; the cap catches one that never stops
    (a trickle, endless keep-alives). It must not catch a busy one, so it follows the speed
    measured on this run's own answers (the slowest of the last ``PACE_WINDOW``, in seconds per
    prompt-or-answer token) times the request's size, ``CAP_PACE`` times over, and is never
    shorter than ``CAP_TIMEOUTS`` silences."""

    def __init__(self) -> None:
        self._seconds_per_token: deque[float] = deque(maxlen=PACE_WINDOW)
        self._lock = threading.Lock()

    def observe(self, latency_s: float, tokens: int) -> None:
        if tokens > 0 and math.isfinite(latency_s) and latency_s > 0:
            with self._lock:
                self._seconds_per_token.append(latency_s / tokens)

    def cap(self, silence_s: float, request: ChatRequest) -> float:
        """The total time ``request`` may take."""
        floor = CAP_TIMEOUTS * silence_s
        with self._lock:
            slowest = max(self._seconds_per_token, default=0.0)
        if not slowest:
            return floor
        chars = sum(len(str(m.get("content") or "")) for m in request.messages)
        answer = request.params.get("max_tokens")
        answer_tokens = answer if isinstance(answer, int) and answer > 0 else ASSUMED_ANSWER_TOKENS
        return max(floor, CAP_PACE * slowest * (chars / CHARS_PER_TOKEN + answer_tokens))


class ServerDataWarning(UserWarning):
    """Something a server sent was impossible and was dropped (the answer itself was kept)."""


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


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


def parse_chat_response(
    url: str,
    payload: Any,
    latency_s: float,
    *,
    quote: Callable[[str, int], str] = _cut,
    note: Callable[[str], None] | None = None,
) -> ChatResult:
    """Read an OpenAI chat completion, plus llama-server's ``timings`` when present.

    ``url`` only names the endpoint in messages: callers pass a redacted one. ``quote(text,
    chars)`` makes server text fit for a message (the client scrubs secrets, then cuts);
    ``note`` hears about timings that were dropped as impossible."""
    try:
        choice = payload["choices"][0]
        message = choice.get("message") or {}
        text = message.get("content")
        if text is None:
            text = choice.get("text", "")
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        raise LLMError(
            f"{url}: response is not an OpenAI chat completion: {quote(str(payload), 200)}"
        ) from exc
    usage = payload.get("usage") or {}
    if not isinstance(usage, Mapping):
        raise LLMError(f"{url}: usage in the response is not an object: {quote(str(usage), 80)}")
    timings, dropped = clean_timings(payload.get("timings"))
    if dropped and note is not None:
        note(f"{url}: {quote('; '.join(dropped), 1500)}")
    details = usage.get("prompt_tokens_details")
    try:
        prompt_tokens = token_count(usage.get("prompt_tokens"), "usage.prompt_tokens")
        completion_tokens = token_count(usage.get("completion_tokens"), "usage.completion_tokens")
        cached = None
        if isinstance(details, Mapping) and details.get("cached_tokens") is not None:
            cached = token_count(details["cached_tokens"], "usage.prompt_tokens_details.cached_tokens")
        elif timings and timings.get("cache_n") is not None:
            cached = int(timings["cache_n"])
    except ValueError as exc:
        raise LLMError(f"{url}: the server reported an impossible token count: {exc}") from None
    model = payload.get("model")
    finish_reason = choice.get("finish_reason")
    return ChatResult(
        text=str(text or ""),
        finish_reason=finish_reason if isinstance(finish_reason, str) else None,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cached_tokens=cached,
        latency_s=latency_s,
        model=model[:_MAX_NAME] if isinstance(model, str) else None,
        timings=timings,
    )


class LLMClient:
    """A synchronous client for one OpenAI-compatible endpoint.

    Synchronous on purpose: each pytest item makes one call, and concurrency comes
    from xdist workers, one per server slot.

    ``stream=True`` (for llama-server, which the endpoint's probe recognises) asks for the
    answer as a stream of tokens: llama-server then sends its headers once a slot takes the
    request, prompt-reading progress (``return_progress``) and keep-alive pings while it reads
    the prompt, and each token as it is written, so ``--llm-timeout`` measures silence and a
    slow answer on a busy machine is never mistaken for a hung one. Servers that ignore
    ``stream`` answer as usual and are read as usual.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        transport: httpx.BaseTransport | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        stream: bool = False,
        slots: int | None = None,
    ) -> None:
        self.url = base_url.rstrip("/")
        self.timeout = timeout
        self.max_response_bytes = max_response_bytes
        self.stream = stream
        self.slots = slots
        """llama-server's slot count: a request's ``slot`` is sent as ``id_slot`` (modulo it)."""
        self.pace = Pace()
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
        self._noted: set[str] = set()
        auth = None
        if not api_key and (parts.username is not None or parts.password is not None):  # an explicit key wins
            auth = httpx.BasicAuth(unquote(parts.username or ""), unquote(parts.password or ""))
        # Only the encodings the bounded decoder undoes (httpx would add br/zstd when installed).
        headers = {"Accept-Encoding": ACCEPT_ENCODING}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
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

    def _quote(self, text: str, chars: int) -> str:
        """Server text for a message: scrubbed whole first, then cut, so a secret that crosses
        the cut is masked rather than shown up to it."""
        return _cut(self._safe(text), chars)

    def _note(self, message: str) -> None:
        """Say once per client what was dropped from its answers (e.g. impossible timings): as a
        warning, which pytest shows in its summary, from any worker."""
        if message not in self._noted and len(self._noted) < 20:
            self._noted.add(message)
            warnings.warn(message, ServerDataWarning, stacklevel=2)

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

    def _body(self, request: ChatRequest) -> dict[str, Any]:
        body = request.body()
        if self.stream:
            # Not part of the request's identity (its cache key is built from request.body()).
            body.update(stream=True, stream_options={"include_usage": True}, return_progress=True)
        if self.slots and request.slot is not None:
            body["id_slot"] = request.slot % self.slots  # llama-server only; see ChatRequest.slot
        return body

    def chat(self, request: ChatRequest) -> ChatResult:
        """Send one chat completion; raise ``LLMError`` naming the endpoint on any failure.

        A request fails as hung when the server sends nothing for ``timeout`` seconds, and is
        cut off at its total cap (``Pace.cap``); the decoded body may not exceed
        ``max_response_bytes``. A server that stalls, trickles or sends a bomb costs one errored
        sample, not the run; one that is only slow costs time."""
        url = f"{self._display_base}{self._api_root}/chat/completions"
        cap = self.pace.cap(self.timeout, request)
        started = time.perf_counter()
        deadline = time.monotonic() + cap
        payload: Any = None
        body = b""
        try:
            with (
                _request_deadline(cap) as deadline,
                self._http.stream(
                    "POST", f"{self._api_root}/chat/completions", json=self._body(request)
                ) as response,
            ):
                if response.status_code != 200:
                    self._raise_for_status(url, response, deadline)
                if is_event_stream(response):
                    streamed = StreamedAnswer()
                    for data in sse_data(iter_decoded(response, self.max_response_bytes, deadline)):
                        streamed.add(data)
                    payload = streamed.payload()
                else:
                    body = read_bounded(response, self.max_response_bytes, deadline)
                    encoding = response.encoding or "utf-8"
        except ResponseTooLarge:
            raise LLMError(
                f"{url}: response body is over {self.max_response_bytes} bytes (decoded); "
                "see --llm-max-response-bytes",
                status=200,
            ) from None
        except (httpx.TimeoutException, DeadlinePassed) as exc:
            raise self._timed_out(url, exc, cap, deadline) from None
        except httpx.TransportError as exc:
            raise LLMError(f"{url}: cannot connect: {self._safe(str(exc))}", retryable=True) from exc
        except (httpx.DecodingError, UndecodableBody) as exc:
            raise LLMError(
                f"{url}: response body cannot be decoded: {self._quote(str(exc), 200)}",
                retryable=isinstance(exc, httpx.DecodingError) or exc.retryable,
            ) from None
        except StreamError as exc:
            raise LLMError(f"{url}: {self._quote(str(exc), 400)}", status=200, retryable=exc.torn) from None
        if payload is None:
            try:
                payload = json.loads(body)
            except (ValueError, RecursionError) as exc:
                text = body.decode(encoding, errors="replace")
                raise LLMError(
                    f"{url}: response body is not JSON (truncated?): {self._quote(repr(text), 200)}",
                    status=200,
                    retryable=True,
                ) from exc
        latency = time.perf_counter() - started
        result = parse_chat_response(url, payload, latency, quote=self._quote, note=self._note)
        self.pace.observe(latency, (result.prompt_tokens or 0) + (result.completion_tokens or 0))
        return result

    def _raise_for_status(self, url: str, response: httpx.Response, deadline: float) -> None:
        """An HTTP error as ``LLMError``, quoting what the server said (scrubbed, then cut)."""
        body, cut = read_prefix(response, min(self.max_response_bytes, _ERROR_BODY_BYTES), deadline)
        text = body.decode(response.encoding or "utf-8", errors="replace")
        if cut:
            # The read stopped mid-body: whatever ends there may be a secret's first half, which
            # no rule recognises; drop as much as the longest known secret could show.
            longest = max((len(s) for s in self._secrets if s), default=0)
            text = text[: max(0, len(text) - 2 * longest - 8)]
        status = response.status_code
        raise LLMError(
            f"{url}: HTTP {status}: {self._quote(text, ERROR_TEXT_CHARS)}",
            status=status,
            retryable=status in (408, 429) or status >= 500,
            retry_after=parse_retry_after(response.headers.get("retry-after")),
        )

    def _timed_out(self, url: str, exc: Exception, cap: float, deadline: float) -> LLMError:
        if isinstance(exc, httpx.ConnectTimeout):
            # Nothing accepted the connection: worth another try (the retry layer's).
            return LLMError(
                f"{url}: timed out connecting ({min(self.timeout, 10.0):g}s)", retryable=True, timed_out=False
            )
        if isinstance(exc, DeadlinePassed) or time.monotonic() >= deadline - 0.05:
            return LLMError(
                f"{url}: timed out after {cap:.0f}s, the request's total cap ({CAP_TIMEOUTS:g} x "
                "--llm-timeout, or more at the speed measured so far) while the server was still sending",
                timed_out=True,
            )
        # Not retried at once (a silent server is busy or hung: another request only adds load);
        # a pytest run asks it again at its end.
        return LLMError(
            f"{url}: timed out: the server sent nothing for {self.timeout:g}s ({type(exc).__name__}; "
            "--llm-timeout is how long it may stay silent)",
            timed_out=True,
        )

    def _get(self, path: str, *, timeout: float | None = None) -> tuple[int, Any]:
        """GET within the same bounds as ``chat``: (status, parsed JSON or None)."""
        seconds = self.timeout if timeout is None else min(timeout, self.timeout)
        with (
            _request_deadline(seconds) as deadline,
            self._http.stream("GET", path, timeout=seconds) as response,
        ):
            try:
                body = read_bounded(response, self.max_response_bytes, deadline)
            except (ResponseTooLarge, DeadlinePassed, UndecodableBody, httpx.DecodingError):
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
