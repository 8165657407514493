"""The response cache in a pytest run: ``--llm-cache`` options, the layer in every process, and
on the controller the hit/miss line, what the cache could not vouch for, and the refusal to gate
on an untrusted cache under ``CI=true``."""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from promptsweep.core.answers.result import SampleResult
from promptsweep.llm.cache import (
    CacheError,
    CacheMode,
    ResponseCache,
    cache_layer,
)
from promptsweep.plugin.state import PluginState, get_state

COUNTS_PROPERTY = "promptsweep.cache_counts"


def _stderr(message: str) -> None:
    print(f"[promptsweep] {message}", file=sys.stderr, flush=True)


@dataclass
class CacheCounts:
    """What a process's cache saw: failures, untrusted hits, answers from another model."""

    problems: int = 0
    problem: str | None = None
    untrusted: int = 0
    untrusted_reason: str | None = None
    mismatches: int = 0
    mismatch: str | None = None

    @classmethod
    def of(cls, cache: ResponseCache) -> CacheCounts:
        return cls(
            cache.problems,
            cache.first_problem,
            cache.untrusted_hits,
            cache.untrusted_reason,
            cache.model_mismatches,
            cache.mismatch_example,
        )

    def minus(self, other: CacheCounts) -> CacheCounts:
        return CacheCounts(
            self.problems - other.problems,
            self.problem,
            self.untrusted - other.untrusted,
            self.untrusted_reason,
            self.mismatches - other.mismatches,
            self.mismatch,
        )

    def add(self, other: CacheCounts) -> None:
        self.problems += other.problems
        self.problem = self.problem or other.problem
        self.untrusted += other.untrusted
        self.untrusted_reason = self.untrusted_reason or other.untrusted_reason
        self.mismatches += other.mismatches
        self.mismatch = self.mismatch or other.mismatch

    def any(self) -> bool:
        return bool(self.problems or self.untrusted or self.mismatches)


class CacheCountsReporter:
    """xdist workers: an item during which the cache failed, answered untrusted entries or saw
    another model carries the counts on its report, so the controller can say so in the summary
    (a worker's stderr warning is captured and lost)."""

    def __init__(self, cache: ResponseCache) -> None:
        self.cache = cache
        self.reported = CacheCounts()

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Generator[None, None, None]:
        try:
            return (yield)
        finally:
            now = CacheCounts.of(self.cache)
            new = now.minus(self.reported)
            if new.any():
                self.reported = now
                item.user_properties.append((COUNTS_PROPERTY, json.dumps(new.__dict__)))


class CachePlugin:
    """Controller side: hits and misses (read from the results, so xdist workers count too);
    the counts of its own cache plus what workers reported; and, under ``CI=true`` without
    ``--llm-cache-trust``, a failed run when any answer came from an untrusted entry."""

    def __init__(self, cache: ResponseCache, mode: CacheMode, state: PluginState) -> None:
        self.cache = cache
        self.mode = mode
        self.settings = state.settings
        self.workers = CacheCounts()

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "call":
            return
        for name, value in report.user_properties:
            if name == COUNTS_PROPERTY and isinstance(value, str):
                try:
                    self.workers.add(CacheCounts(**json.loads(value)))
                except (TypeError, ValueError):
                    continue

    def counts(self) -> CacheCounts:
        total = CacheCounts.of(self.cache)  # this process: items without xdist, and --optimize's calls
        total.add(self.workers)
        return total

    @property
    def refuses(self) -> bool:
        """Under CI=true an answer no model gave here cannot pass a gate, unless trusted by hand."""
        return self.settings.ci and not self.settings.cache_trust and self.counts().untrusted > 0

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.refuses and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter: Any, config: pytest.Config) -> None:
        controller = config.pluginmanager.get_plugin("promptsweep-controller")
        runs = getattr(controller, "runs", {}) or {}
        if self.mode == "check":
            for run in runs.values():
                terminalreporter.write_line(check_line(run.results, self.cache.path))
        else:
            line = hits_line([r for run in runs.values() for r in run.results], self.mode, self.cache.path)
            if line:
                terminalreporter.write_line(line)
        counts = self.counts()
        if counts.untrusted:
            red = self.refuses
            terminalreporter.write_line(
                untrusted_line(counts, self.cache, ci_refuses=red), red=red, yellow=not red
            )
        if counts.mismatches:
            terminalreporter.write_line(
                f"promptsweep: {counts.mismatches} answer(s) named another model than the one this run's "
                f"cache is keyed on ({counts.mismatch}); they were scored but not cached",
                yellow=True,
            )
        if counts.problems:
            terminalreporter.write_line(
                f"promptsweep: the response cache {self.cache.path} failed {counts.problems} time(s) "
                f"({counts.problem}); those calls were made without it. If it is damaged, run "
                "`promptsweep cache clear`",
                red=True,
            )

    @pytest.hookimpl(trylast=True)
    def pytest_unconfigure(self) -> None:
        self.cache.close()


def hits_line(results: Sequence[SampleResult], mode: str, path: Any) -> str | None:
    """Hits, misses and the answers a gated lookup copied (no call, so neither)."""
    hits = misses = copied = 0
    for result in results:
        if result.errored:
            continue
        if result.answered_by == "lookup":
            copied += 1
        elif result.from_cache:
            hits += 1
        else:
            misses += 1
    if not (hits or misses or copied):
        return None
    lookup = f", {copied} answered by the lookup without a call" if copied else ""
    return f"promptsweep response cache ({mode}, {path}): {hits} hits, {misses} misses{lookup}"


def untrusted_line(counts: CacheCounts, cache: ResponseCache, *, ci_refuses: bool) -> str:
    """One line: how many answers no model gave on this machine, why, and what to do."""
    head = (
        f"promptsweep: {counts.untrusted} answer(s) came from response-cache entries this machine did "
        f"not write ({counts.untrusted_reason}; {cache.path})"
    )
    if ci_refuses:
        return (
            f"{head}. CI=true: refusing to gate on answers no model gave here; run with --llm-cache off "
            "to ask the model, or --llm-cache-trust if you know where this cache came from"
        )
    if cache.trust:
        return f"{head}; accepted (--llm-cache-trust)"
    return (
        f"{head}; the scores rest on them. --llm-cache-trust accepts them (and signs them as this "
        "machine's), --llm-cache-clear asks the model again; under CI=true such a run fails"
    )


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
    cache = state.settings.response_cache()
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
    if controller:
        config.pluginmanager.register(CachePlugin(cache, mode, state), "promptsweep-cache")
    else:
        config.pluginmanager.register(CacheCountsReporter(cache), "promptsweep-cache-counts")
    return cache
