"""Retries as an endpoint layer: transient failures are retried with backoff and jitter."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from promptsweep.core.answers.chat import ChatRequest, ChatResult, LLMError
from promptsweep.llm.client import EndpointInfo
from promptsweep.llm.endpoint import Layer, SendFn

DEFAULT_RETRIES = 3
DEFAULT_RETRY_TIME_S = 120.0
DEFAULT_BASE_DELAY_S = 0.5
MAX_DELAY_S = 30.0
LOADING_POLL_S = 0.5


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry: ``retries`` extra attempts within ``max_total_s``.

    Delays are exponential with full jitter (``uniform(0, min(cap, base * 2**n))``), so
    several xdist workers hitting a busy server do not retry in lockstep; a server's
    ``Retry-After`` replaces the computed delay.
    """

    retries: int = DEFAULT_RETRIES
    base_delay_s: float = DEFAULT_BASE_DELAY_S
    max_delay_s: float = MAX_DELAY_S
    max_total_s: float = DEFAULT_RETRY_TIME_S

    def backoff(self, failures: int, rng: random.Random) -> float:
        """The delay after the ``failures``-th failure (1-based)."""
        return rng.uniform(0.0, min(self.max_delay_s, self.base_delay_s * 2 ** (failures - 1)))


def is_loading(exc: LLMError) -> bool:
    """llama-server answers 503 "Loading model" while a (re)started server reads its model:
    a state that ends by itself, so waiting for it does not use up an attempt."""
    return exc.status == 503 and "loading model" in str(exc).lower()


def is_retryable(exc: LLMError) -> bool:
    """Connect errors, 408, 429, 5xx and torn bodies are worth another try; a 4xx or a
    request that timed out while the server worked on it is not (retrying a read timeout
    only adds load to a server that is already too slow)."""
    return exc.retryable


def retry_layer(
    policy: RetryPolicy,
    *,
    on_connection_error: Callable[[], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    rng: random.Random | None = None,
) -> Layer:
    """A ``Layer`` retrying ``LLMError``s that say they are retryable.

    ``on_connection_error`` runs when no HTTP status came back (the server may have died):
    the process owning a managed server restarts it there; it raises ``LLMError`` to stop
    retrying. After the last attempt the error names the endpoint, the last status and the
    number of attempts.
    """
    jitter = rng or random.Random()

    def layer(info: EndpointInfo, send: SendFn) -> SendFn:
        def send_with_retries(request: ChatRequest) -> ChatResult:
            started = clock()
            attempts = 0
            loading_waits = 0  # bounded by count too, so a fake clock cannot spin forever
            while True:
                attempts += 1
                try:
                    return send(request)
                except LLMError as exc:
                    if not is_retryable(exc):
                        if attempts == 1:
                            raise
                        raise _gave_up(info, exc, attempts, clock() - started) from exc
                    if exc.status is None and on_connection_error is not None:
                        on_connection_error()
                    if (
                        is_loading(exc)
                        and clock() - started + LOADING_POLL_S <= policy.max_total_s
                        and loading_waits * LOADING_POLL_S < policy.max_total_s
                    ):
                        loading_waits += 1
                        attempts -= 1
                        sleep(LOADING_POLL_S)
                        continue
                    if attempts > policy.retries:
                        raise _gave_up(info, exc, attempts, clock() - started) from exc
                    delay = (
                        exc.retry_after if exc.retry_after is not None else policy.backoff(attempts, jitter)
                    )
                    if clock() - started + delay > policy.max_total_s:
                        raise _gave_up(
                            info, exc, attempts, clock() - started, note=f"next try not before {delay:.1f}s"
                        ) from exc
                    sleep(delay)

        return send_with_retries

    return layer


def _gave_up(info: EndpointInfo, exc: LLMError, attempts: int, elapsed: float, note: str = "") -> LLMError:
    status = f"HTTP {exc.status}" if exc.status is not None else "no response"
    extra = f"; {note}, past the retry time limit" if note else ""
    return LLMError(
        f"{info.public_url}: gave up after {attempts} attempt{'s' if attempts != 1 else ''} "
        f"in {elapsed:.1f}s (last status: {status}{extra}): {exc}",
        status=exc.status,
        retryable=False,
    )


def describe(policy: RetryPolicy) -> dict[str, Any]:
    """For provenance and docs."""
    return {"retries": policy.retries, "base_delay_s": policy.base_delay_s, "max_total_s": policy.max_total_s}
