"""Retries in a pytest run: ``--llm-retries`` options, the retry layer in every process, and the
managed server's watchdog on the controller."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from promptsweep.llm.retry import (
    DEFAULT_BASE_DELAY_S,
    DEFAULT_RETRIES,
    DEFAULT_RETRY_TIME_S,
    RetryPolicy,
    retry_layer,
)
from promptsweep.plugin.state import PluginState, get_state
from promptsweep.server.guard import ServerGuard, ServerWatchdog


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
