"""Response bodies read within a byte limit: content encodings undone one layer at a time, and
llama-server's streamed answers (server-sent events) put back together.

httpx decodes ``Content-Encoding`` itself, but each layer inflates a whole network chunk at
once: ``gzip, gzip`` turns a 13 KB body into gigabytes inside one call, before any limit is
checked. Here every layer hands the next one at most ``STEP`` bytes at a time and counts what
it has produced, so the first layer to pass the limit stops the read with ``ResponseTooLarge``
and memory stays near the limit whatever the stack.

Only the encodings the client asks for (``ACCEPT_ENCODING``: gzip and deflate, which the
standard library decodes with an output bound) are decoded. httpx would also ask for ``br`` or
``zstd`` when those packages happen to be installed; their decoders take no output bound here,
so the client does not ask for them and a body that uses them anyway is refused with one line.

The event-stream parser is written here rather than taken from ``httpx-sse``: that package
reads through httpx's own decoders (the unbounded ones above), and the subset llama-server
sends (``data:`` lines, ``:`` pings, blank-line separators) is a few lines.
"""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

ACCEPT_ENCODING = "gzip, deflate"
"""What the client asks servers for: the encodings ``BoundedDecoder`` can undo within a limit."""
MAX_ENCODINGS = 4
"""Content encodings stacked on one body beyond this are refused (a real server uses one)."""
STEP = 64 * 1024
"""Bytes one layer hands the next at a time."""


class ResponseTooLarge(Exception):
    """The decoded body (or one layer of it) passed the byte limit; reading stopped there."""


class DeadlinePassed(Exception):
    """The request's total deadline passed while its body was still arriving."""


class UndecodableBody(Exception):
    """The body's ``Content-Encoding`` is not one promptsweep decodes, or its data is broken
    (``retryable``: a torn body may come whole next time; an unknown encoding will not)."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class _Layer(Protocol):
    def push(self, data: bytes) -> None: ...

    def pull(self, size: int) -> bytes: ...

    def finish(self) -> bytes: ...


class _Identity:
    def __init__(self) -> None:
        self._pending = b""

    def push(self, data: bytes) -> None:
        self._pending += data

    def pull(self, size: int) -> bytes:
        out, self._pending = self._pending[:size], self._pending[size:]
        return out

    def finish(self) -> bytes:
        return b""


class _Inflate:
    """gzip or deflate (zlib-wrapped, or raw as some servers send it), ``size`` bytes at a time."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        self._raw_deflate_tried = encoding != "deflate"
        self._started = False
        self._inflater = zlib.decompressobj(31 if encoding in ("gzip", "x-gzip") else zlib.MAX_WBITS)
        self._pending = b""

    def push(self, data: bytes) -> None:
        self._pending += data

    def pull(self, size: int) -> bytes:
        if not self._pending and not self._started:
            return b""
        try:
            out = self._inflater.decompress(self._pending, size)
        except zlib.error as exc:
            if not self._started and not self._raw_deflate_tried:
                # "deflate" without the zlib header (as httpx also accepts): the header is the
                # first thing read, so nothing was consumed yet; start over raw.
                self._raw_deflate_tried = True
                self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
                return self.pull(size)
            raise UndecodableBody(f"{self.encoding} data is broken: {exc}", retryable=True) from None
        self._started = True
        self._pending = self._inflater.unconsumed_tail
        return out

    def finish(self) -> bytes:
        # Only what zlib still holds once every byte was pulled through: at most one window.
        try:
            return self._inflater.flush(STEP)
        except zlib.error as exc:
            raise UndecodableBody(f"{self.encoding} data is broken: {exc}", retryable=True) from None


def _layer(encoding: str) -> _Layer:
    if encoding in ("gzip", "x-gzip", "deflate"):
        return _Inflate(encoding)
    if encoding == "identity":
        return _Identity()
    raise UndecodableBody(
        f"the body uses Content-Encoding {encoding!r}, which promptsweep does not decode "
        f"(it asks for {ACCEPT_ENCODING})"
    )


def encodings(response: httpx.Response) -> list[str]:
    """The body's content encodings in the order they were applied (empty: none)."""
    found: list[str] = []
    for header in response.headers.get_list("content-encoding"):
        found.extend(token.strip().lower() for token in header.split(",") if token.strip())
    return found


class BoundedDecoder:
    """Undo a body's content encodings, outermost first, each layer producing at most ``limit``
    bytes in all and handing the next at most ``STEP`` bytes at a time."""

    def __init__(self, applied: list[str], limit: int) -> None:
        if len(applied) > MAX_ENCODINGS:
            raise UndecodableBody(
                f"the body stacks {len(applied)} content encodings; promptsweep decodes at most {MAX_ENCODINGS}"
            )
        self.limit = limit
        # Applied first = innermost: decode from the last one named.
        self._layers = [_layer(encoding) for encoding in reversed(applied)]
        self._produced = [0] * len(self._layers)

    def _count(self, index: int, size: int) -> None:
        self._produced[index] += size
        if self._produced[index] > self.limit:
            raise ResponseTooLarge

    def _through(self, index: int, data: bytes) -> Iterator[bytes]:
        """``data`` into layer ``index`` and on down; yields decoded pieces of the last layer."""
        if index == len(self._layers):
            yield data
            return
        layer = self._layers[index]
        layer.push(data)
        while True:
            out = layer.pull(STEP)
            if not out:
                return
            self._count(index, len(out))
            yield from self._through(index + 1, out)

    def feed(self, raw: bytes) -> Iterator[bytes]:
        """Decoded pieces of one raw network chunk."""
        yield from self._through(0, raw)

    def close(self) -> Iterator[bytes]:
        """What the layers still hold once the raw body has ended."""
        for index, layer in enumerate(self._layers):
            rest = layer.finish()
            if rest:
                self._count(index, len(rest))
                yield from self._through(index + 1, rest)


def iter_decoded(response: httpx.Response, limit: int, deadline: float | None = None) -> Iterator[bytes]:
    """The decoded body in pieces, at most ``limit`` bytes in all (``ResponseTooLarge``), ending
    by ``deadline`` (``time.monotonic``; ``DeadlinePassed``)."""
    if response.is_stream_consumed:
        # Built in memory (httpx.MockTransport): httpx decoded it when it was made; only count it.
        content = response.content
        if len(content) > limit:
            raise ResponseTooLarge
        for start in range(0, len(content), STEP):
            yield content[start : start + STEP]
        return
    decoder = BoundedDecoder(encodings(response), limit)
    size = 0
    for raw in response.iter_raw():
        for piece in decoder.feed(raw):
            size += len(piece)
            if size > limit:
                raise ResponseTooLarge
            yield piece
        if deadline is not None and time.monotonic() > deadline:
            raise DeadlinePassed
    for piece in decoder.close():
        size += len(piece)
        if size > limit:
            raise ResponseTooLarge
        yield piece


def read_bounded(response: httpx.Response, limit: int, deadline: float | None = None) -> bytes:
    """The whole decoded body, at most ``limit`` bytes (see ``iter_decoded``)."""
    return b"".join(iter_decoded(response, limit, deadline))


def read_prefix(response: httpx.Response, limit: int, deadline: float | None = None) -> tuple[bytes, bool]:
    """At most ``limit`` decoded bytes of the body and whether it went on past them (an error
    body is only quoted: its start is enough). A body that cannot be decoded reads as empty."""
    pieces: list[bytes] = []
    size = 0
    try:
        for piece in iter_decoded(response, limit, deadline):
            pieces.append(piece)
            size += len(piece)
    except ResponseTooLarge:
        return b"".join(pieces)[:limit], True
    except (UndecodableBody, httpx.DecodingError):
        return b"", False
    return b"".join(pieces), False


# ------------------------------------------------------------------------------ event streams


def sse_data(pieces: Iterator[bytes]) -> Iterator[str]:
    """The ``data`` of each server-sent event (multi-line data joined by newlines); comments
    (llama-server's ``:`` keep-alive pings) and other fields are skipped."""
    buffer = b""
    lines: list[str] = []
    for piece in pieces:
        buffer += piece
        *complete, buffer = buffer.split(b"\n")
        for raw_line in complete:
            line = raw_line.rstrip(b"\r").decode("utf-8", errors="replace")
            if not line:
                if lines:
                    yield "\n".join(lines)
                    lines = []
            elif line.startswith("data:"):
                lines.append(line[5:].removeprefix(" "))
    tail = buffer.rstrip(b"\r").decode("utf-8", errors="replace")
    if tail.startswith("data:"):
        lines.append(tail[5:].removeprefix(" "))
    if lines:
        yield "\n".join(lines)


class StreamError(Exception):
    """The stream said it failed (an ``error`` event), or ended before the answer did."""

    def __init__(self, message: str, *, torn: bool = False) -> None:
        super().__init__(message)
        self.torn = torn


@dataclass
class StreamedAnswer:
    """A chat completion put back together from ``chat.completion.chunk`` events, shaped as the
    non-streamed response so one parser reads both."""

    parts: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    model: Any = None
    usage: Any = None
    timings: Any = None
    chunks: int = 0
    done: bool = False

    def add(self, data: str) -> None:
        if data.strip() == "[DONE]":
            self.done = True
            return
        try:
            chunk = json.loads(data)
        except (ValueError, RecursionError):
            raise StreamError(f"an event of the stream is not JSON: {data}", torn=True) from None
        if not isinstance(chunk, dict):
            raise StreamError(f"an event of the stream is not a JSON object: {data}")
        if chunk.get("error") is not None:
            error = chunk["error"]
            message = error.get("message") if isinstance(error, dict) else error
            raise StreamError(f"the server ended the stream with an error: {message}")
        self.chunks += 1
        if self.model is None and chunk.get("model"):
            self.model = chunk["model"]
        if chunk.get("usage") is not None:
            self.usage = chunk["usage"]
        if chunk.get("timings") is not None:
            self.timings = chunk["timings"]
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return  # the usage chunk, or a prompt_progress chunk
        choice = choices[0]
        delta = choice.get("delta")
        if isinstance(delta, dict) and isinstance(delta.get("content"), str):
            self.parts.append(delta["content"])
        if choice.get("finish_reason") is not None:
            self.finish_reason = choice["finish_reason"]

    def payload(self) -> dict[str, Any]:
        """The answer as a non-streamed chat completion; ``StreamError`` if the stream was torn."""
        if self.finish_reason is None and not self.done:
            raise StreamError("the stream ended before the answer was complete", torn=True)
        if not self.chunks:
            raise StreamError("the stream held no chat completion chunk")
        payload: dict[str, Any] = {
            "choices": [{"message": {"content": "".join(self.parts)}, "finish_reason": self.finish_reason}],
            "model": self.model,
        }
        if self.usage is not None:
            payload["usage"] = self.usage
        if self.timings is not None:
            payload["timings"] = self.timings
        return payload


def is_event_stream(response: httpx.Response) -> bool:
    content_type = str(response.headers.get("content-type", ""))
    return content_type.split(";", 1)[0].strip().lower() == "text/event-stream"
