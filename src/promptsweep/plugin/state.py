"""Per-process plugin state kept in ``config.stash``: settings, metrics, endpoint, loaded suites."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from promptsweep.config.settings import Settings
from promptsweep.core.answers.metrics import MetricRegistry
from promptsweep.core.data.dataset import Dataset, Sample
from promptsweep.core.data.suite import Suite, load_suite
from promptsweep.core.evaluate import Evaluator
from promptsweep.core.templates.template import PromptTemplate
from promptsweep.optimize.space import load_search_space, space_path_for
from promptsweep.server.endpoints import EndpointManager


class PromptsweepWarning(pytest.PytestWarning):
    """A problem in a suite or its data that the run can go on with; shown in pytest's warnings summary."""


@dataclass
class SuiteRuntime:
    """A suite loaded for running: its dataset, template, the samples to score and an evaluator."""

    suite: Suite
    dataset: Dataset
    template: PromptTemplate
    samples: list[Sample]
    evaluator: Evaluator


@dataclass
class PluginState:
    settings: Settings
    registry: MetricRegistry
    endpoints: EndpointManager
    runtimes: dict[Path, SuiteRuntime] = field(default_factory=dict)
    check_space: bool = True
    """Load each suite's search space at collection; ``--optimize`` loads it itself (one usage error)."""

    def load_suite(self, path: Path) -> Suite:
        """The suite at ``path`` with ``--golden``, ``--prompt-template`` and ``--split-evaluate`` applied."""
        return self.settings.apply_to(load_suite(path))

    def runtime(self, path: Path) -> SuiteRuntime:
        """Load (once per process) everything needed to run a suite; ``ConfigError`` on bad input."""
        path = path.resolve()
        if path not in self.runtimes:
            suite = self.load_suite(path)
            suite.check_metrics(self.registry)
            dataset = suite.load_dataset()
            template = suite.load_template()
            suite.check_template_inputs(template, dataset)
            if suite.spec.search_space and self.check_space:
                # A typo in the space is found by the plain run, not first by --optimize.
                load_search_space(space_path_for(suite, None), suite, dataset)  # the project's path rule
            evaluator = Evaluator(suite, template, self.registry, dataset=dataset, model=self.settings.model)
            samples = suite.samples_to_evaluate(dataset)
            # A missing input is one collection error naming the template, the variable and
            # the sample, not one failure per sample: every sample is checked, without rendering.
            # One prompt is rendered now (a template that cannot render is one error too); the
            # others render when their item runs, so -k and deselected samples cost nothing.
            for sample in samples:
                evaluator.prompt.check_inputs(sample)
            if samples:
                evaluator.messages(samples[0])
            for message in dataset.warnings:
                warnings.warn(PromptsweepWarning(message), stacklevel=2)
            for note in suite.split(dataset).notes:
                warnings.warn(PromptsweepWarning(f"{suite.path}: {note}"), stacklevel=2)
            frozen = template.spec.output.values
            outside = suite.unanswerable(dataset, frozen) if frozen else {}
            for name, count in outside.items():
                assert frozen is not None
                warnings.warn(
                    PromptsweepWarning(
                        f"{template.label} lists {len(frozen[name])} values for {name} (frozen when it was "
                        f"written); {count} of {len(dataset.samples)} samples in {dataset.path.name} have a "
                        f"{name} outside that set, so it cannot answer them right"
                    ),
                    stacklevel=2,
                )
            self.runtimes[path] = SuiteRuntime(suite, dataset, template, samples, evaluator)
        return self.runtimes[path]


state_key = pytest.StashKey[PluginState]()


def get_state(config: pytest.Config) -> PluginState:
    return config.stash[state_key]
