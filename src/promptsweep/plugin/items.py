"""Collection: a ``*.suite.yaml`` file becomes one test item per golden sample."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _pytest._code.code import ExceptionInfo, TerminalRepr

from promptsweep.core.answers.result import SampleResult, repeat_suffix
from promptsweep.core.data.dataset import Sample
from promptsweep.core.data.suite import is_suite_file
from promptsweep.core.io.errors import ConfigError
from promptsweep.plugin import messages, retry
from promptsweep.plugin.state import SuiteRuntime, get_state


class SampleFailure(Exception):
    """An item failed for a reason the user should read as one line (no traceback)."""


def route_of(item: pytest.Item) -> str:
    """The Python-route test an item belongs to, without its ``[sample]`` part:
    ``test_route.py::test_triage``. Each such test is a run of its own, next to the YAML items."""
    return item.nodeid.split("[", 1)[0]


def record_result(
    item: pytest.Item, suite_path: Path, result: SampleResult, *, route: str | None = None
) -> None:
    """Attach a result to the item's report: the controller aggregates it (also from xdist
    workers), and junitxml shows the scores as properties. ``route`` names the Python-route
    test (``None`` for the suite's own items), so the two routes over one suite are totalled
    apart instead of one overwriting the other's samples."""
    messages.attach(item, messages.ResultMessage(suite_path=str(suite_path), result=result, route=route))


def check_result(result: SampleResult, minimum: float | None) -> None:
    """Items pass unless the call errored or a per-sample minimum is configured and missed."""
    if result.errored:
        raise SampleFailure(f"sample {result.sample_id} errored: {result.error}")
    if minimum is not None and result.score < minimum:
        wrong = [f for f, s in result.scores.items() if s < 1.0]
        detail = "; ".join(
            f"{f}: expected {result.expected.get(f)!r}, got {result.got.get(f)!r}" for f in wrong
        )
        raise SampleFailure(f"score {result.score:.3f} < sample minimum {minimum:.3f}: {detail}")


class SuiteFile(pytest.File):
    """A suite file; collecting it loads the dataset and yields its samples (once per repeat)."""

    def collect(self) -> Iterator[pytest.Item]:
        state = get_state(self.config)
        try:
            runtime = state.runtime(self.path)
        except ConfigError as exc:
            raise self.CollectError(str(exc)) from exc
        # Repeat by repeat, like whole runs one after another: a repeat sent right after the
        # same request would find its prompt in the server's cache, which is not what a
        # later run sees.
        for repeat in range(state.settings.repeats_for(runtime.suite.spec.repeats)):
            for sample in runtime.samples:
                yield SampleItem.from_parent(
                    self,
                    name=f"{runtime.suite.name}[{sample.id}{repeat_suffix(repeat)}]",
                    sample=sample,
                    runtime=runtime,
                    repeat=repeat,
                )


class SampleItem(pytest.Item):
    """One golden sample (one repeat of it): ask the model, score the answer, record the result."""

    def __init__(self, *, sample: Sample, runtime: SuiteRuntime, repeat: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sample = sample
        self.runtime = runtime
        self.repeat = repeat
        if sample.category:
            self.add_marker(pytest.mark.promptsweep_category(sample.category))

    def runtest(self) -> None:
        state = get_state(self.config)
        endpoint = state.endpoints.endpoint()
        result = retry.answer(  # a timed-out call sets the item aside for the end of the run
            self,
            lambda chat, judge: self.runtime.evaluator.evaluate(
                self.sample, chat, repeat=self.repeat, judge=judge
            ),
            endpoint.send,
            state.endpoints.judge_route(endpoint.send),
        )
        record_result(self, self.runtime.suite.path, result)
        check_result(result, self.runtime.suite.spec.thresholds.sample)

    def repr_failure(self, excinfo: ExceptionInfo[BaseException], style: Any = None) -> str | TerminalRepr:
        if isinstance(excinfo.value, (SampleFailure, ConfigError)):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"{self.name} ({self.sample.where})"


def collect_file(file_path: Path, parent: pytest.Collector) -> SuiteFile | None:
    if is_suite_file(file_path):
        return SuiteFile.from_parent(parent, path=file_path)
    return None
