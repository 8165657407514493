"""Retries in a pytest run: ``--llm-retries`` options, the retry layer in every process, and the
managed server's watchdog on the controller."""

from __future__ import annotations

from typing import Any

import pytest

from promptsweep.llm.retry import retry_layer
from promptsweep.plugin.state import PluginState, get_state
from promptsweep.server.guard import ServerGuard, ServerWatchdog


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
    state.endpoints.layers.append(retry_layer(state.settings.retry_policy, on_connection_error=guard.check))
    if not hasattr(config, "workerinput"):
        config.pluginmanager.register(RetryPlugin(guard), "promptsweep-retry")
