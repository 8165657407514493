"""Hooks that projects implement in ``conftest.py`` (or a plugin) to extend promptsweep.

Written as pytest writes its own (``_pytest/hookspec.py``): each says when it is called,
in which process, what its arguments are, and whether a ``conftest.py`` can use it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pluggy
import pytest

if TYPE_CHECKING:
    from promptsweep.core.answers.metrics import MetricRegistry
    from promptsweep.core.answers.result import SampleResult
    from promptsweep.core.measure.aggregate import Aggregate
    from promptsweep.optimize.space import SearchSpace
    from promptsweep.optimize.strategies import Strategy

hookspec = pluggy.HookspecMarker("pytest")


@hookspec(historic=True)
def pytest_promptsweep_register_metrics(registry: MetricRegistry) -> None:
    """Add project metrics, usable by name in a suite's ``fields.<name>.metric``.

    A metric takes ``(expected, got)`` strings and returns a score in [0, 1]::

        def pytest_promptsweep_register_metrics(registry):  # in conftest.py
            registry.register("starts_same", lambda e, g: float(e[:1] == g[:1]))

    :param registry: The run's metric registry; ``registry.register(name, fn)`` adds one.

    Called once per process (the controller and every xdist worker) at configure time. The
    hook is *historic*: a plugin or ``conftest.py`` registered later (a conftest in a
    subdirectory, loaded during collection) is called with the same registry as soon as it is
    registered, before the suites next to it are collected.

    Use in conftest plugins
    =======================

    Any conftest file can implement this hook.
    """


@hookspec
def pytest_promptsweep_result(config: pytest.Config, result: SampleResult, run_dir: Path) -> None:
    """A sample's result reached the controller and was written to ``results.jsonl``.

    Called once per sample on the controller only, as results arrive::

        def pytest_promptsweep_result(config, result, run_dir):
            if result.errored:
                print("errored:", result.sample_id)

    :param config: The pytest config object.
    :param result: The sample's result: ids, expected and parsed fields, per-field scores,
        the weighted ``score``, tokens, latency and ``error`` if the call failed.
    :param run_dir: The run directory (``<promptsweep-dir>/runs/<stamp>-<suite>``).

    Use in conftest plugins
    =======================

    Any conftest file can implement this hook; it sees the results of the suites it covers
    and of every other suite in the run.
    """


@hookspec
def pytest_promptsweep_gate(config: pytest.Config, aggregate: Aggregate, run_dir: Path) -> list[str]:
    """Extra reasons to fail a suite's gate, checked after the thresholds (e.g. ``--baseline``).

    Return a list of one-line reasons (empty to pass); every implementation's reasons are
    added to the gate failures, shown in the summary and make the exit code 1. Controller only::

        def pytest_promptsweep_gate(config, aggregate, run_dir):
            return [] if aggregate.n >= 10 else [f"only {aggregate.n} samples scored"]

    :param config: The pytest config object.
    :param aggregate: The suite's totals: ``overall``, ``fields`` and ``categories`` (each an
        ``Estimate`` with mean, 95% interval and n), ``errored``, tokens and latency.
    :param run_dir: The run directory; ``config.json`` and ``results.jsonl`` are written.

    Use in conftest plugins
    =======================

    Any conftest file can implement this hook.
    """
    return []


@hookspec
def pytest_promptsweep_run_finished(
    config: pytest.Config, aggregate: Aggregate, run_dir: Path, failures: list[str]
) -> None:
    """A suite's run is aggregated and gated; ``metrics.json`` and ``summary.md`` are written.

    Controller only::

        def pytest_promptsweep_run_finished(config, aggregate, run_dir, failures):
            post_to_chat(f"{aggregate.suite}: {aggregate.overall.mean:.3f}")

    :param config: The pytest config object.
    :param aggregate: The suite's totals (see :func:`pytest_promptsweep_gate`).
    :param run_dir: The run directory, now with ``metrics.json`` and ``summary.md``.
    :param failures: Why the gate failed, one line each; empty when it passed.

    Use in conftest plugins
    =======================

    Any conftest file can implement this hook.
    """


@hookspec(firstresult=True)
def pytest_promptsweep_make_strategy(
    config: pytest.Config, name: str, space: SearchSpace, seed: int
) -> Strategy | None:
    """Return the search strategy for ``--optimize``, or None to use a built-in one.

    The first implementation that returns a strategy wins (like xdist's
    ``pytest_xdist_make_scheduler``). A strategy follows
    :class:`promptsweep.optimize.strategies.Strategy`: ``start``, ``next_round``, ``decide``.

    :param config: the pytest config.
    :param name: the strategy asked for (``--search-strategy`` or the space file's ``search.strategy``).
    :param space: the loaded search space (``space.shape()`` gives its dimensions and candidates).
    :param seed: the search seed.

    Use in conftest plugins::

        def pytest_promptsweep_make_strategy(config, name, space, seed):
            if name == "grid":
                return MyExhaustiveStrategy()
            return None

    Controller only.
    """
    return None
