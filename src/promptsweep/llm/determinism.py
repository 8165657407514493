"""The deterministic mode: send requests so that the same request gives the same bytes.

llama-server does not return the same answer to the same request even at temperature 0
with a fixed seed, for two known reasons (measured in benchmarks/RESULTS.md):

- a prompt-cache hit evaluates only the new suffix of a prompt, a different computation
  from evaluating the whole prompt (llama.cpp #4902), so ``cache_prompt`` is switched off;
- several requests in flight are batched together, and the batch changes the arithmetic
  (llama.cpp #7052, #6950), so requests go to each server one at a time.

One at a time is enforced by a lock file per endpoint URL under the system temp directory,
held around each call: xdist workers and other pytest processes on this machine that talk
to the same server wait for each other. Clients on other machines are not covered; give
such a server to one run at a time (or start it with ``-np 1``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from promptsweep.core.answers.chat import ChatRequest, ChatResult
from promptsweep.llm.client import EndpointInfo
from promptsweep.llm.endpoint import Layer, SendFn

try:  # POSIX; elsewhere only the threads of one process are serialised
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

DETERMINISTIC = "deterministic"
DEFAULT = "default"
DETERMINISTIC_PARAMS = {"cache_prompt": False}
"""What the deterministic mode adds to every llama-server request body."""


def lock_dir() -> Path:
    """Where the per-endpoint lock files live: one directory per user in the temp dir."""
    user = os.getuid() if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
    return Path(tempfile.gettempdir()) / f"promptsweep-{user}" / "endpoint-locks"


def lock_path(url: str, directory: Path | None = None) -> Path:
    digest = hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:16]
    return (directory or lock_dir()) / f"{digest}.lock"


class EndpointLock:
    """A mutex for one endpoint URL across processes (``flock`` on a lock file) and across
    this process's threads (a thread lock taken first: an ``flock`` belongs to the open
    file, so two threads opening it would not exclude each other)."""

    def __init__(self, url: str, directory: Path | None = None) -> None:
        self.path = lock_path(url, directory)
        self._thread_lock = threading.Lock()

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        with self._thread_lock:
            if fcntl is None:  # pragma: no cover
                yield
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)


def not_llama_server_warning(url: str) -> str:
    return (
        f"--llm-deterministic: {url} is not llama-server (no /props); requests go one at a time, "
        "but its own prompt cache cannot be switched off"
    )


def deterministic_layer(*, directory: Path | None = None) -> Layer:
    """A ``Layer`` for the deterministic mode; register it outermost.

    Outermost, so the response cache keys on the body with ``cache_prompt: false``
    (deterministic answers never mix with default-mode ones in the cache) and a cache hit
    costs only an uncontended lock. Servers that are not llama-server (no ``/props``) get
    the body unchanged (they may reject unknown fields): only the one-at-a-time part
    applies there (the plugin says so with :func:`not_llama_server_warning`).
    """

    def layer(info: EndpointInfo, send: SendFn) -> SendFn:
        lock = EndpointLock(info.url, directory)

        def deterministic_send(request: ChatRequest) -> ChatResult:
            if info.is_llama_server:
                request = dataclasses.replace(request, params={**request.params, **DETERMINISTIC_PARAMS})
            with lock.held():
                return send(request)

        return deterministic_send

    return layer


def mode_json(deterministic: bool, *, managed_slots: int | None) -> dict[str, Any]:
    """The ``determinism`` block of ``config.json``: runs are compared only within one mode."""
    if not deterministic:
        return {"mode": DEFAULT}
    return {
        "mode": DETERMINISTIC,
        "request_params": dict(DETERMINISTIC_PARAMS),
        "one_request_at_a_time": True,
        "managed_slots": managed_slots,
    }
