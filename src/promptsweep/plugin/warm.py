"""A warm re-run costs what it does: the calls a run will make, counted before xdist starts.

``-n auto`` asks :func:`pending_calls` how many of the run's requests are not in the response
cache and starts no more workers than that: none when every answer is cached, so a warm run
does not pay for worker processes that have nothing to ask. An explicit ``-n N`` keeps its N
workers while there is anything to ask, and starts none when there is nothing
(:func:`drop_idle_workers`); either way the managed llama-server then starts only on a miss.
Requests a gated lookup answers (``request.copied``) cost no call and are not counted. It renders each suite's requests
exactly as the items will (``Prompt.render``, plus an experiment's ``llm_config``) and keys
them on the endpoint's model identity; for the managed server that identity is the one it
reported last time (``promptsweep.server.identity``), so no server is started to find out.
When the count cannot be known (Python test files among the arguments, ``--optimize``, no
cache reads), the answer is None and ``-n auto`` keeps its usual size.
"""

from __future__ import annotations

import fnmatch
import sqlite3
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from promptsweep.config.settings import Settings
from promptsweep.core.answers.chat import ChatRequest, answer_without_call
from promptsweep.core.data.suite import is_suite_file, load_suite
from promptsweep.core.io.errors import PromptsweepError
from promptsweep.core.prompt import Prompt
from promptsweep.llm.cache import CacheError, ResponseCache, cache_path
from promptsweep.llm.client import EndpointInfo
from promptsweep.llm.endpoint import probe_url
from promptsweep.plugin.experiments import experiment_key
from promptsweep.server.endpoints import EndpointManager

_SKIP_DIRS = {".git", ".venv", "venv", "node_modules", "__pycache__", ".promptsweep", ".tox", ".nox"}


@dataclass(frozen=True)
class Targets:
    """What the command line points at: suite files, and whether any Python test file too."""

    suites: tuple[Path, ...]
    python_tests: bool


def _files(args: list[str], rootpath: Path) -> Iterator[Path]:
    for arg in args or ["."]:
        path = Path(arg.split("::", 1)[0])
        if not path.is_absolute():
            path = rootpath / path
        if path.is_file():
            yield path
            continue
        stack = [path] if path.is_dir() else []
        while stack:
            try:
                entries = sorted(stack.pop().iterdir())
            except OSError:
                continue
            for entry in entries:
                if entry.is_dir():
                    if entry.name not in _SKIP_DIRS and not entry.name.startswith("."):
                        stack.append(entry)
                else:
                    yield entry


def find_targets(config: pytest.Config, *, first_suite_only: bool = False) -> Targets:
    """The suite files (and Python test files) under the command line's paths."""
    patterns = list(config.getini("python_files") or ["test_*.py", "*_test.py"])
    suites: list[Path] = []
    python_tests = False
    for path in _files(list(config.args), config.invocation_params.dir):
        if is_suite_file(path):
            suites.append(path.resolve())
            if first_suite_only:
                break
        elif path.suffix == ".py" and any(fnmatch.fnmatch(path.name, p) for p in patterns):
            python_tests = True
    return Targets(tuple(suites), python_tests)


def _identity(settings: Settings) -> EndpointInfo | None:
    """The model identity the run's calls will be cached under, without starting a server."""
    if settings.llm_urls:
        try:
            return probe_url(settings.llm_urls[0], settings.endpoint_config)
        except PromptsweepError:
            return None
    return EndpointManager(settings.server_config, settings.endpoint_config).predict_managed()


class _TooSlow(Exception):
    """Rendering every request to count them took longer than it is worth."""


def run_requests(
    settings: Settings, suites: tuple[Path, ...], params: dict[str, object], *, deadline: float | None = None
) -> list[ChatRequest]:
    """Every request the eval items of these suites will send, rendered as the items render them.
    Past ``deadline`` (``time.monotonic``) it gives up with ``_TooSlow``: a slow template must
    not be rendered once for every sample before collection (where -k is not yet applied)."""
    requests: list[ChatRequest] = []
    for path in suites:
        suite = settings.apply_to(load_suite(path))
        dataset = suite.load_dataset()
        prompt = Prompt(suite, suite.load_template(), dataset=dataset, model=settings.model)
        for sample in suite.samples_to_evaluate(dataset):
            if deadline is not None and time.monotonic() > deadline:
                raise _TooSlow
            request = prompt.render(sample)
            if answer_without_call(request) is not None:
                continue  # the gated lookup answers it: no call, whatever the cache holds
            requests.append(replace(request, params={**request.params, **params}) if params else request)
    return requests


def run_params(config: pytest.Config) -> dict[str, object]:
    """Parameters every request of the run gets on top of its template's: an experiment's
    ``llm_config`` (known once the settings are resolved)."""
    experiment = config.stash.get(experiment_key, None)
    return dict(experiment.spec.llm_config) if experiment is not None else {}


def pending_calls(config: pytest.Config, settings: Settings, params: dict[str, object]) -> int | None:
    """How many of the run's LLM calls the response cache cannot answer; None if unknowable."""
    if settings.cache not in ("read", "read-write") or settings.cache_clear:
        return None
    if getattr(config.option, "promptsweep_optimize", False):
        return None
    targets = find_targets(config)
    if targets.python_tests or not targets.suites:
        return None
    try:
        # At most one --template-timeout for the lot (ordinary suites take milliseconds).
        requests = run_requests(
            settings, targets.suites, params, deadline=time.monotonic() + settings.template_timeout
        )
    except (PromptsweepError, _TooSlow):
        return None  # collection will report a bad template, once, with its message
    info = _identity(settings)
    if info is None:
        return None
    path = cache_path(settings.base_dir)
    if not requests:
        return 0
    if not path.is_file():
        return len(requests)
    keys = [request.cache_key(info.model_identity) for request in requests]
    cache = ResponseCache(path)
    try:
        return len(keys) - cache.count(keys)
    except (sqlite3.Error, CacheError):  # a busy or broken cache: the run finds out and says so
        return None
    finally:
        cache.close()


def drop_idle_workers(config: pytest.Config, settings: Settings) -> None:
    """``-n N`` (a number; ``-n auto`` is sized in ``pytest_xdist_auto_num_workers``): when the
    response cache answers every call the run will make, run without xdist workers, so a warm
    re-run starts neither workers nor (on a miss only) the managed server. Called before xdist
    reads ``-n``."""
    workers = getattr(config.option, "numprocesses", None)
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        return
    if getattr(config.option, "collectonly", False):
        return
    if pending_calls(config, settings, run_params(config)) == 0:
        print(
            f"[promptsweep] -n {workers}: every call is in the response cache; running without xdist workers",
            file=sys.stderr,
            flush=True,
        )
        config.option.numprocesses = 0
