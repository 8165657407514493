"""The response cache in a pytest run: ``--llm-cache`` options, the layer in every process, and
the hit/miss line on the controller."""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Generator, Sequence
from typing import Any

import pytest

from promptsweep.core.answers.result import SampleResult
from promptsweep.llm.cache import CacheError, CacheMode, ResponseCache, cache_layer, cache_path
from promptsweep.plugin.state import PluginState, get_state

PROBLEM_PROPERTY = "promptsweep.cache_problem"


def _stderr(message: str) -> None:
    print(f"[promptsweep] {message}", file=sys.stderr, flush=True)


class CacheProblemReporter:
    """Every process: an item during which the cache failed carries that on its report, so the
    controller can say so in the summary (a worker's stderr warning is captured and lost)."""

    def __init__(self, cache: ResponseCache) -> None:
        self.cache = cache
        self.reported = 0

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Generator[None, None, None]:
        try:
            return (yield)
        finally:
            new = self.cache.problems - self.reported
            if new > 0:
                self.reported = self.cache.problems
                payload = {"count": new, "error": self.cache.first_problem}
                item.user_properties.append((PROBLEM_PROPERTY, json.dumps(payload)))


class CachePlugin:
    """Controller side: reports hits and misses (read from the results, so xdist workers count too)
    and a damaged cache (from any process's reports)."""

    def __init__(self, cache: ResponseCache, mode: CacheMode) -> None:
        self.cache = cache
        self.mode = mode
        self.problems = 0
        self.first_problem: str | None = None

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "call":
            return
        for name, value in report.user_properties:
            if name == PROBLEM_PROPERTY and isinstance(value, str):
                payload = json.loads(value)
                self.problems += int(payload.get("count") or 0)
                self.first_problem = self.first_problem or payload.get("error")

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter: Any, config: pytest.Config) -> None:
        controller = config.pluginmanager.get_plugin("promptsweep-controller")
        runs = getattr(controller, "runs", {}) or {}
        if self.mode == "check":
            for run in runs.values():
                terminalreporter.write_line(check_line(run.results, self.cache.path))
            return
        hits = misses = 0
        for run in runs.values():
            for result in run.results:
                if result.errored:
                    continue
                if result.from_cache:
                    hits += 1
                else:
                    misses += 1
        if hits or misses:
            terminalreporter.write_line(
                f"promptsweep response cache ({self.mode}, {self.cache.path}): {hits} hits, {misses} misses"
            )
        if self.problems:
            terminalreporter.write_line(
                f"promptsweep: the response cache {self.cache.path} failed {self.problems} time(s) "
                f"({self.first_problem}); those calls were made without it. If it is damaged, run "
                "`promptsweep cache clear`",
                red=True,
            )

    @pytest.hookimpl(trylast=True)
    def pytest_unconfigure(self) -> None:
        self.cache.close()


def check_line(results: Sequence[SampleResult], path: Any) -> str:
    """``--llm-cache check``'s verdict: how many stored answers the server gave again."""
    counts = Counter(r.cache_check for r in results if not r.errored)
    stored = counts["same"] + counts["different"]
    rate = f" ({counts['same'] / stored:.0%})" if stored else ""
    return (
        f"promptsweep response cache check ({path}): {counts['same']} of {stored} stored answers "
        f"reproduced{rate}; {counts['different']} differ, {counts['missing']} not in the cache "
        "(nothing was written)"
    )


def configure(config: pytest.Config, state: PluginState | None = None) -> ResponseCache | None:
    """Append the cache layer (outside the retry layer) in every process; clear it on the
    controller when ``--llm-cache-clear`` is given.

    The file is created on the first answer, not here: a plugin installed for every pytest
    run must leave nothing behind in projects (or ``pytest --help``) that never call a model.
    An existing file is opened now, so a corrupt cache is one usage error before anything runs.
    """
    state = state or get_state(config)
    mode = state.settings.cache
    clear = state.settings.cache_clear
    cache = ResponseCache(cache_path(state.settings.base_dir))
    controller = not hasattr(config, "workerinput")
    if controller and (clear or mode != "off") and cache.path.exists():
        try:
            if clear:  # first: a cache too damaged to open is removed instead
                removed, damaged = cache.clear_or_remove()
                if damaged:
                    _stderr(f"response cache removed (it could not be used: {damaged}): {cache.path}")
                else:
                    _stderr(f"response cache cleared ({removed} entries): {cache.path}")
            if mode != "off":
                cache.open()
        except CacheError as exc:
            raise pytest.UsageError(str(exc)) from None
    if mode == "off":
        return None
    state.endpoints.layers.append(cache_layer(cache, mode))
    config.pluginmanager.register(CacheProblemReporter(cache), "promptsweep-cache-problems")
    if controller:
        config.pluginmanager.register(CachePlugin(cache, mode), "promptsweep-cache")
    return cache
