"""The pytest entry point: options, hookspecs, and the feature plugins it registers."""

from __future__ import annotations

import sys
from collections.abc import Generator
from pathlib import Path

import pytest

from promptsweep.config.options import DEFAULT_DIR
from promptsweep.core.answers.metrics import MetricRegistry
from promptsweep.core.io.errors import EndpointError, PromptsweepError
from promptsweep.core.io.paths import set_path_policy
from promptsweep.core.templates.sandbox import DEFAULT_LIMITS
from promptsweep.core.templates.template import set_render_limits
from promptsweep.llm.determinism import deterministic_layer, not_llama_server_warning
from promptsweep.plugin import cache as response_cache
from promptsweep.plugin import experiments, fixtures, hookspecs, optimize, retry
from promptsweep.plugin import outputs as observe
from promptsweep.plugin.controller import EvalController
from promptsweep.plugin.items import collect_file
from promptsweep.plugin.options import add_options, settings_for
from promptsweep.plugin.state import PluginState, get_state, state_key
from promptsweep.plugin.warm import drop_idle_workers, find_targets
from promptsweep.plugin.xdist import XdistHooks, adopt_endpoint
from promptsweep.plugin.xdist import pytest_xdist_auto_num_workers as pytest_xdist_auto_num_workers
from promptsweep.reporting.artifacts import ArtifactDirError, check_base_dir
from promptsweep.server.endpoints import EndpointManager


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)
    optimize.add_options(parser)


@pytest.hookimpl(wrapper=True)
def pytest_cmdline_main(config: pytest.Config) -> Generator[None, object, object]:
    """Before xdist reads ``-n``: an experiment's ``concurrency`` becomes ``-n``, and under
    ``--optimize`` ``-n`` becomes the number of concurrent calls instead of workers."""
    if experiments.sets_workers(config):
        settings_for(config)  # resolves the settings, which loads the experiment
        experiments.apply_concurrency(config)
    optimize.resolve_workers(config)
    if not is_worker(config) and isinstance(getattr(config.option, "numprocesses", None), int):
        drop_idle_workers(config, settings_for(config))  # -n N with nothing to ask: no workers
    return (yield)


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)


def is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def uses_xdist(config: pytest.Config) -> bool:
    return bool(getattr(config.option, "numprocesses", None)) and getattr(config.option, "dist", "no") != "no"


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "promptsweep(suite): parametrize the test's `sample` over a suite's golden samples"
    )
    config.addinivalue_line("markers", "promptsweep_category(name): the sample's category label")
    settings = settings_for(config)
    set_render_limits(settings.render_limits)
    registry = MetricRegistry()
    # historic: a conftest.py found later during collection still registers its metrics
    config.hook.pytest_promptsweep_register_metrics.call_historic(kwargs={"registry": registry})
    state = PluginState(
        settings=settings,
        registry=registry,
        endpoints=EndpointManager(settings.server_config, settings.endpoint_config),
    )
    config.stash[state_key] = state
    config.pluginmanager.register(fixtures, "promptsweep-fixtures")
    if is_worker(config):
        adopt_endpoint(config, state)
    else:
        # Known from the last start: answers in the cache need no server (it starts on a miss).
        state.endpoints.predicted = state.endpoints.predict_managed()
        config.pluginmanager.register(EvalController(config, state), "promptsweep-controller")
        if config.pluginmanager.hasplugin("xdist"):
            config.pluginmanager.register(XdistHooks(state), "promptsweep-xdist")
    optimize.configure(config, state)
    if settings.deterministic:  # outermost: the cache keys on cache_prompt, the lock covers the call
        state.endpoints.layers.insert(0, deterministic_layer())
    experiments.register(config, state.endpoints.layers)
    response_cache.configure(config, state)  # outer: a hit skips the retries
    retry.configure(config, state)
    observe.configure(config, state)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """Reach the endpoint before anything runs: an unreachable URL is one clear error.

    Under xdist the managed server starts here, before xdist's own sessionstart
    (``trylast``) spawns the workers, so all of them share it.
    """
    config = session.config
    if is_worker(config):
        return
    state = get_state(config)
    settings = state.settings
    if config.option.collectonly:
        return  # nothing will be asked: no server, nothing on disk
    check_artifact_dir(config, settings.base_dir)
    try:
        if settings.llm_urls:
            state.endpoints.probe_given_urls()
            if settings.deterministic:
                for info in state.endpoints.infos:
                    if not info.is_llama_server:
                        print(
                            f"[promptsweep] {not_llama_server_warning(info.url)}", file=sys.stderr, flush=True
                        )
        elif settings.server == "managed" or (
            settings.server == "auto"
            and uses_xdist(config)
            and find_targets(config, first_suite_only=True).suites
        ):
            state.endpoints.start_managed()
    except (EndpointError, PromptsweepError) as exc:
        raise pytest.UsageError(str(exc)) from exc


def check_artifact_dir(config: pytest.Config, base: Path) -> None:
    """An unwritable or linked promptsweep directory is one usage error before anything runs
    (not a traceback after the first answer). Checked where promptsweep will write: suites
    among the arguments, or a directory that earlier runs made; nothing is created here."""
    if not (base.exists() or base.is_symlink() or find_targets(config, first_suite_only=True).suites):
        return
    default = (config.rootpath / DEFAULT_DIR).absolute()
    try:
        check_base_dir(base, base_may_be_link=base.absolute() != default)
    except ArtifactDirError as exc:
        raise pytest.UsageError(str(exc)) from None


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    return collect_file(file_path, parent)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    fixtures.generate_tests(metafunc)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    if state_key in config.stash:
        config.stash[state_key].endpoints.close()
    set_render_limits(DEFAULT_LIMITS)  # an in-process pytest run must not leave its limits behind
    set_path_policy(None)
