"""Retries as an endpoint layer: transient failures are retried with backoff, and a managed
llama-server that died is restarted once."""

from __future__ import annotations

import random
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from promptsweep.core.errors import PromptsweepError
from promptsweep.llm.client import ChatRequest, ChatResult, EndpointInfo, LLMError
from promptsweep.llm.endpoint import EndpointManager, Layer, SendFn
from promptsweep.plugin.state import PluginState, get_state

DEFAULT_RETRIES = 3
DEFAULT_RETRY_TIME_S = 120.0
DEFAULT_BASE_DELAY_S = 0.5
MAX_DELAY_S = 30.0


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
        f"{info.url}: gave up after {attempts} attempt{'s' if attempts != 1 else ''} "
        f"in {elapsed:.1f}s (last status: {status}{extra}): {exc}",
        status=exc.status,
        retryable=False,
    )


class ServerGuard:
    """Restarts the managed llama-server once if it dies; the second death stops the run.

    Only the process that started the server owns it (``EndpointManager.server``); on xdist
    workers ``manager.server`` is None and this does nothing, their retries cover the
    restart window while the controller's watchdog restarts it.
    """

    def __init__(
        self,
        manager: EndpointManager,
        *,
        restarts: int = 1,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.manager = manager
        self.restarts_left = restarts
        self.restarts_done = 0
        self.gave_up: str | None = None
        self.stopped = False
        self.events: list[str] = []  # shown in the terminal summary: stderr is captured during items
        self._emit = progress or _stderr
        self._lock = threading.Lock()

    def _progress(self, message: str) -> None:
        self.events.append(message)
        self._emit(message)

    def check(self) -> None:
        """Restart the owned server if it is dead; raise ``LLMError`` if it cannot be."""
        with self._lock:
            server = self.manager.server
            if self.stopped or server is None:
                return
            if self.gave_up:
                raise LLMError(self.gave_up)
            if server.is_alive():
                return
            if self.restarts_left <= 0:
                self.gave_up = (
                    f"the managed llama-server died again after {self.restarts_done} restart(s); "
                    f"stopping. Its log: {server.log_path}"
                )
                self._progress(self.gave_up)
                raise LLMError(self.gave_up)
            self.restarts_left -= 1
            self._progress(
                f"the managed llama-server died; restarting it on the same port (log: {server.log_path})"
            )
            try:
                server.restart()
            except PromptsweepError as exc:
                self.gave_up = (
                    f"the managed llama-server died and did not restart: {exc}. Its log: {server.log_path}"
                )
                self._progress(self.gave_up)
                raise LLMError(self.gave_up) from exc
            self.restarts_done += 1
            self._progress(f"llama-server is back at {server.url}")


class ServerWatchdog:
    """Polls the owned server from the controller, so it is restarted even when only xdist
    workers (which cannot restart it) are making calls."""

    def __init__(self, guard: ServerGuard, interval_s: float = 0.5) -> None:
        self.guard = guard
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="promptsweep-server-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.guard.check()
            except LLMError:
                return


def _stderr(message: str) -> None:
    print(f"[promptsweep] {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- pytest glue


def _non_negative_int(flag: str) -> Callable[[str], int]:
    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise pytest.UsageError(f"{flag} expects a whole number, got {text!r}") from None
        if value < 0:
            raise pytest.UsageError(f"{flag} must be 0 or more, got {value}")
        return value

    return convert


def _positive_float(flag: str) -> Callable[[str], float]:
    def convert(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise pytest.UsageError(f"{flag} expects a number of seconds, got {text!r}") from None
        if value <= 0:
            raise pytest.UsageError(f"{flag} must be positive, got {value}")
        return value

    return convert


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("promptsweep")
    group.addoption(
        "--llm-retries",
        default=None,
        metavar="N",
        type=_non_negative_int("--llm-retries"),
        dest="promptsweep_retries",
        help="Retries of a failed LLM call (connect errors, 408, 429, 5xx), with exponential backoff "
        f"and jitter, honouring Retry-After; 0 disables. Default: {DEFAULT_RETRIES}.",
    )
    group.addoption(
        "--llm-retry-time",
        default=None,
        metavar="SECONDS",
        type=_positive_float("--llm-retry-time"),
        dest="promptsweep_retry_time",
        help=f"Give up retrying one call after this long. Default: {DEFAULT_RETRY_TIME_S:g}.",
    )
    group.addoption(
        "--llm-retry-delay",
        default=None,
        metavar="SECONDS",
        type=_positive_float("--llm-retry-delay"),
        dest="promptsweep_retry_delay",
        help=f"First backoff delay (doubles each retry, full jitter). Default: {DEFAULT_BASE_DELAY_S:g}.",
    )
    parser.addini("promptsweep_retries", default="", help="Default --llm-retries.")


def policy_from_options(config: pytest.Config) -> RetryPolicy:
    opt = config.option
    retries = getattr(opt, "promptsweep_retries", None)
    if retries is None:
        ini = config.getini("promptsweep_retries")
        retries = _non_negative_int("promptsweep_retries (ini)")(ini) if ini else DEFAULT_RETRIES
    return RetryPolicy(
        retries=retries,
        base_delay_s=getattr(opt, "promptsweep_retry_delay", None) or DEFAULT_BASE_DELAY_S,
        max_total_s=getattr(opt, "promptsweep_retry_time", None) or DEFAULT_RETRY_TIME_S,
    )


class RetryPlugin:
    """Controller side: watches the managed server, and stops the session when it is gone for good."""

    def __init__(self, guard: ServerGuard) -> None:
        self.guard = guard
        self.watchdog: ServerWatchdog | None = None
        self.session: pytest.Session | None = None

    @pytest.hookimpl(trylast=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self.session = session
        self.watchdog = ServerWatchdog(self.guard)
        self.watchdog.start()

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if self.guard.gave_up and self.session is not None:
            self.session.shouldstop = self.guard.gave_up

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        self.stop()

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        for event in self.guard.events:
            terminalreporter.write_line(f"promptsweep: {event}", yellow=True)

    def stop(self) -> None:
        # Before the endpoint manager stops the server: its exit must not look like a crash.
        self.guard.stopped = True
        if self.watchdog is not None:
            self.watchdog.stop()

    @pytest.hookimpl(tryfirst=True)
    def pytest_unconfigure(self) -> None:
        self.stop()


def configure(config: pytest.Config, state: PluginState | None = None) -> None:
    """Append the retry layer (inside the cache layer) in every process; watch the server on the controller."""
    state = state or get_state(config)
    guard = ServerGuard(state.endpoints)
    state.endpoints.layers.append(retry_layer(policy_from_options(config), on_connection_error=guard.check))
    if not hasattr(config, "workerinput"):
        config.pluginmanager.register(RetryPlugin(guard), "promptsweep-retry")


def describe(policy: RetryPolicy) -> dict[str, Any]:
    """For provenance and docs."""
    return {"retries": policy.retries, "base_delay_s": policy.base_delay_s, "max_total_s": policy.max_total_s}
