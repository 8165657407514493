"""The response cache in a pytest run: ``--llm-cache`` options, the layer in every process, and
the hit/miss line on the controller."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest

from promptsweep.core.result import SampleResult
from promptsweep.llm.cache import CacheError, CacheMode, ResponseCache, cache_layer, cache_path
from promptsweep.plugin.state import PluginState, get_state


def _stderr(message: str) -> None:
    print(f"[promptsweep] {message}", file=sys.stderr, flush=True)


class CachePlugin:
    """Controller side: reports hits and misses (read from the results, so xdist workers count too)."""

    def __init__(self, cache: ResponseCache, mode: CacheMode) -> None:
        self.cache = cache
        self.mode = mode

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
            cache.open()
            if clear:
                removed = cache.clear()
                _stderr(f"response cache cleared ({removed} entries): {cache.path}")
        except CacheError as exc:
            raise pytest.UsageError(str(exc)) from None
    if mode == "off":
        return None
    state.endpoints.layers.append(cache_layer(cache, mode))
    if controller:
        config.pluginmanager.register(CachePlugin(cache, mode), "promptsweep-cache")
    return cache
