"""``--experiment``: applies an experiment file (``promptsweep.core.data.experiment``) to a pytest run."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from promptsweep.config.options import EXPERIMENT
from promptsweep.config.settings import Settings, Sources, given
from promptsweep.core.answers.chat import ChatRequest, ChatResult
from promptsweep.core.data.experiment import EXPERIMENT_FILENAME, Experiment, find_experiment, load_experiment
from promptsweep.core.io.errors import ConfigError
from promptsweep.core.io.files import write_json_atomic
from promptsweep.llm.client import EndpointInfo
from promptsweep.llm.endpoint import Layer, SendFn


def apply_to_settings(settings: Settings, experiment: Experiment, given: Mapping[str, bool]) -> Settings:
    """The experiment fills what the command line did not set (an explicit flag still wins)."""
    spec = experiment.spec
    update: dict[str, Any] = {"run_name": experiment.id}
    if experiment.dataset_path and not given.get("golden"):
        update["golden"] = experiment.dataset_path
    if experiment.template_path and not given.get("template"):
        update["template"] = experiment.template_path
    if spec.model.endpoint and not given.get("llm_urls"):
        update["llm_urls"] = (spec.model.endpoint.rstrip("/"),)
    if spec.model.name and not given.get("model"):
        update["model"] = spec.model.name
    if spec.concurrency and not given.get("slots"):
        update["slots"] = spec.concurrency
    return settings.model_copy(update=update)


def params_layer(params: Mapping[str, Any]) -> Layer:
    """Overrides sampling parameters on every request (outermost, so a cache keys on them)."""
    fixed = dict(params)

    def layer(info: EndpointInfo, send: SendFn) -> SendFn:
        def with_params(request: ChatRequest) -> ChatResult:
            return send(dataclasses.replace(request, params={**request.params, **fixed}))

        return with_params

    return layer


experiment_key = pytest.StashKey[Experiment]()


def apply_experiment(config: pytest.Config, settings: Settings, sources: Sources) -> Settings:
    """Apply ``--experiment`` (if given) to the resolved settings; bad files are UsageErrors."""
    if not settings.experiment:
        return settings
    try:
        experiment = load_experiment(find_experiment(settings.experiment, config.rootpath), config.rootpath)
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[experiment_key] = experiment
    return apply_to_settings(
        settings, experiment, given(sources, "golden", "template", "llm_urls", "model", "slots")
    )


class ExperimentPlugin:
    """Adds the parameter layer and freezes ``experiment.json`` in each run directory."""

    def __init__(self, experiment: Experiment) -> None:
        self.experiment = experiment
        self._written: set[Path] = set()

    @pytest.hookimpl
    def pytest_promptsweep_result(self, config: pytest.Config, result: Any, run_dir: Path) -> None:
        if run_dir not in self._written:
            write_json_atomic(run_dir / EXPERIMENT_FILENAME, self.experiment.to_json())
            self._written.add(run_dir)


def register(config: pytest.Config, layers: list[Layer]) -> None:
    """Called from ``pytest_configure`` in every process (the layer runs where calls are made)."""
    experiment = config.stash.get(experiment_key, None)
    if experiment is None:
        return
    if experiment.spec.llm_config:
        layers.insert(0, params_layer(experiment.spec.llm_config))
    if not hasattr(config, "workerinput"):
        config.pluginmanager.register(ExperimentPlugin(experiment), "promptsweep-experiment")


def sets_workers(config: pytest.Config) -> bool:
    """Whether an experiment's ``concurrency`` may become xdist's ``-n``: ``--experiment`` is
    given, in the main process, with xdist installed and ``-n`` not given."""
    return bool(
        getattr(config.option, EXPERIMENT.dest, None)
        and not hasattr(config, "workerinput")
        and config.pluginmanager.hasplugin("xdist")
        and not getattr(config.option, "numprocesses", None)
    )


def apply_concurrency(config: pytest.Config) -> None:
    """``concurrency`` becomes ``-n`` (before xdist reads it). Call after the settings are
    resolved (``plugin.options.settings_for``), which loads the experiment."""
    experiment = config.stash.get(experiment_key, None)
    if experiment is not None and experiment.spec.concurrency and experiment.spec.concurrency > 1:
        config.option.numprocesses = experiment.spec.concurrency
