"""Retries in a pytest run: ``--llm-retries`` options, the retry layer in every process, the
end-of-run retry of timed-out samples, and the managed server's watchdog on the controller.

**Slow is not failed.** A call that times out (the server stayed silent past ``--llm-timeout``,
or ran past the request's total cap) is not retried at once: a server that is slow because the
machine is busy only gets busier. Its item is set aside instead (reported as ``RERUN``, with no
result) and asked once more when the process has run every other item, when the load from this
run is lowest; only if that fails too does the sample count as errored. The controller says
how many were asked again and how many answered. ``--llm-retries 0`` turns this off as well.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

import pytest

from promptsweep.core.answers.chat import ChatFn, ChatRequest, ChatResult, LLMError
from promptsweep.core.answers.judge import JudgeRoute, JudgeSpec
from promptsweep.core.answers.result import SampleResult
from promptsweep.llm.retry import retry_layer
from promptsweep.plugin import messages
from promptsweep.plugin.state import PluginState, get_state
from promptsweep.server.guard import ServerGuard, ServerWatchdog

RERUN = "rerun"
"""The outcome of an item set aside for the end-of-run retry (as pytest-rerunfailures names it)."""

at_end_key = pytest.StashKey["RetryAtEnd"]()


class AskedAgainLater(Exception):
    """An item's call timed out; the item is run again at the end of the run."""


class RetryAtEnd:
    """Every process: sets timed-out items aside and runs them again after its last item.

    In the second pass an item asks again and its result stands, whatever it is. When the run
    is stopping (``-x``, a server gone for good) the second pass asks nothing: each item set
    aside records the result it first had, so no sample silently goes missing."""

    def __init__(self) -> None:
        self.held: dict[str, SampleResult] = {}
        self.items: list[pytest.Item] = []
        self.phase = "first"  # then "again" (ask once more) or "replay" (record what was held)

    def hold(self, item: pytest.Item, result: SampleResult) -> None:
        """Set a timed-out item aside (``AskedAgainLater``); in the second pass, do nothing."""
        if self.phase != "first" or item.nodeid in self.held:
            return
        self.held[item.nodeid] = result
        self.items.append(item)
        raise AskedAgainLater(
            f"sample {result.sample_id} timed out; it is asked again at the end of the run ({result.error})"
        )

    def replayed(self, item: pytest.Item) -> SampleResult | None:
        """In a replay pass, the result the item had before it was set aside."""
        return self.held.pop(item.nodeid, None) if self.phase == "replay" else None

    @pytest.hookimpl(wrapper=True)
    def pytest_runtestloop(self, session: pytest.Session) -> Generator[None, object, object]:
        try:
            outcome = yield
        except KeyboardInterrupt:
            raise  # interrupted: the run is partial, and a resumed run asks these again
        except BaseException:
            self._second_pass(replay=True)
            raise
        self._second_pass(replay=bool(session.shouldfail or session.shouldstop))
        return outcome

    def _second_pass(self, *, replay: bool) -> None:
        self.phase = "replay" if replay else "again"
        items, self.items = self.items, []
        for item in items:
            _point_xdist_worker_at(item)
            item.ihook.pytest_runtest_protocol(item=item, nextitem=None)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        if call.excinfo is not None and isinstance(call.excinfo.value, AskedAgainLater):
            report.outcome = RERUN  # type: ignore[assignment]
            report.longrepr = str(call.excinfo.value)
        return report


def _point_xdist_worker_at(item: pytest.Item) -> None:
    """An xdist worker checks every report against the item it last ran (and tells the
    controller its index): point it at the item run again. xdist has no public way to run an
    item outside its schedule; its worker keeps that index in ``WorkerInteractor.item_index``."""
    for plugin in item.config.pluginmanager.get_plugins():
        if type(plugin).__name__ == "WorkerInteractor" and hasattr(plugin, "item_index"):
            plugin.item_index = item.session.items.index(item)


def report_rerun_status(report: pytest.TestReport) -> tuple[str, str, tuple[str, dict[str, bool]]] | None:
    if report.outcome == RERUN:
        return RERUN, "R", ("RERUN", {"yellow": True})
    return None


class RerunStatus:
    """Every process: how a set-aside item shows in the terminal (``R``, ``RERUN``, "1 rerun")."""

    @pytest.hookimpl(tryfirst=True)
    def pytest_report_teststatus(self, report: pytest.TestReport) -> Any:
        return report_rerun_status(report)


def answer(
    item: pytest.Item,
    evaluate: Callable[[ChatFn, JudgeRoute], SampleResult],
    chat: ChatFn,
    judge: JudgeRoute,
) -> SampleResult:
    """An eval item's result: ``evaluate(chat, judge)``, with a timed-out call setting the item
    aside for the end of the run (``RetryAtEnd``) when that is on."""
    at_end = item.config.stash.get(at_end_key, None)
    if at_end is not None:
        held = at_end.replayed(item)
        if held is not None:
            return held
    timed_out: list[LLMError] = []

    def watched(send: ChatFn) -> ChatFn:
        def send_watched(request: ChatRequest) -> ChatResult:
            try:
                return send(request)
            except LLMError as exc:
                if exc.timed_out:
                    timed_out.append(exc)
                raise

        return send_watched

    def judge_watched(spec: JudgeSpec) -> ChatFn:
        return watched(judge(spec))

    result = evaluate(watched(chat), judge_watched)
    if at_end is not None and timed_out:
        at_end.hold(item, result)
    return result


class RetryPlugin:
    """Controller side: watches the managed server, stops the session when it is gone for good,
    and counts the samples asked again at the end of the run."""

    def __init__(self, guard: ServerGuard) -> None:
        self.guard = guard
        self.watchdog: ServerWatchdog | None = None
        self.session: pytest.Session | None = None
        self.asked_again: set[str] = set()
        self.answered: set[str] = set()

    @pytest.hookimpl(trylast=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self.session = session
        self.watchdog = ServerWatchdog(self.guard)
        self.watchdog.start()

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if self.guard.gave_up and self.session is not None:
            self.session.shouldstop = self.guard.gave_up
        if report.when != "call":
            return
        if report.outcome == RERUN:
            self.asked_again.add(report.nodeid)
        elif report.nodeid in self.asked_again:
            message = messages.from_report(report)
            if message is not None and message.result is not None and not message.result.errored:
                self.answered.add(report.nodeid)

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        self.stop()

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        for event in self.guard.events:
            terminalreporter.write_line(f"promptsweep: {event}", yellow=True)
        if self.asked_again:
            again, answered = len(self.asked_again), len(self.answered)
            terminalreporter.write_line(
                f"promptsweep: {again} sample(s) timed out and were asked again at the end of the run: "
                f"{answered} answered, {again - answered} errored",
                yellow=True,
            )

    def stop(self) -> None:
        # Before the endpoint manager stops the server: its exit must not look like a crash.
        self.guard.stopped = True
        if self.watchdog is not None:
            self.watchdog.stop()

    @pytest.hookimpl(tryfirst=True)
    def pytest_unconfigure(self) -> None:
        self.stop()


def configure(config: pytest.Config, state: PluginState | None = None) -> None:
    """Append the retry layer (inside the cache layer) in every process; set timed-out items
    aside for the end of the run (unless ``--llm-retries 0``); watch the server on the controller."""
    state = state or get_state(config)
    guard = ServerGuard(state.endpoints)
    state.endpoints.layers.append(retry_layer(state.settings.retry_policy, on_connection_error=guard.check))
    config.pluginmanager.register(RerunStatus(), "promptsweep-rerun-status")
    if state.settings.retries > 0:
        at_end = RetryAtEnd()
        config.stash[at_end_key] = at_end
        config.pluginmanager.register(at_end, "promptsweep-retry-at-end")
    if not hasattr(config, "workerinput"):
        config.pluginmanager.register(RetryPlugin(guard), "promptsweep-retry")
