"""The controller-only plugin: receives every sample's result (from xdist workers too), writes
the run artifacts as results arrive, and at the end aggregates, gates and reports."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from promptsweep import __version__
from promptsweep.core.aggregate import Aggregate, aggregate
from promptsweep.core.dataset import file_sha256
from promptsweep.core.evaluate import SampleResult, merge_params
from promptsweep.core.files import write_json_atomic, write_text_atomic
from promptsweep.core.gate import check_gate
from promptsweep.core.suite import Suite
from promptsweep.plugin.items import RESULT_PROPERTY
from promptsweep.plugin.options import redact_args
from promptsweep.plugin.state import PluginState
from promptsweep.reporting.artifacts import ResultsWriter, RunDirectory, git_commit
from promptsweep.reporting.summary import render_markdown, render_terminal


class SuiteRun:
    """The artifacts and results of one suite in this session (created on its first result)."""

    def __init__(self, config: pytest.Config, state: PluginState, suite: Suite) -> None:
        self.config = config
        self.state = state
        self.suite = suite
        self.results: list[SampleResult] = []
        self.aggregate: Aggregate | None = None
        self.failures: list[str] = []
        self.run_dir = RunDirectory.create(state.settings.base_dir, state.settings.run_name or suite.name)
        self.run_dir.write_config(self._config_json())
        self._writer = ResultsWriter(self.run_dir.results_path)

    def _config_json(self) -> dict[str, Any]:
        """Provenance: enough to tell two runs apart and to reproduce one. No secrets."""
        suite = self.suite
        template_data: dict[str, Any] = {"path": str(suite.template_path)}
        params: dict[str, Any] = dict(suite.spec.llm)
        try:
            template = suite.load_template()
            template_data.update(
                id=template.id,
                version=template.spec.version,
                sha256=template.sha256,
                output_format=template.spec.output.format,
            )
            params = merge_params(suite.spec.llm, template.spec.model_defaults)
        except Exception as exc:  # provenance must not stop a run that already produced results
            template_data["error"] = str(exc)
        endpoint = self.state.endpoints.primary
        return {
            "suite": suite.name,
            "suite_path": str(suite.path),
            "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "dataset": {"path": str(suite.dataset_path), "sha256": file_sha256(suite.dataset_path)},
            "template": template_data,
            "fields": {name: spec.model_dump() for name, spec in suite.fields.items()},
            "weights": suite.weights,
            "thresholds": suite.spec.thresholds.model_dump(),
            "min_score_option": self.state.settings.min_score,
            "split": suite.spec.split.model_dump(),
            "llm_params": params,
            "model": endpoint.to_json() if endpoint else None,
            "managed_server": self.state.endpoints.server is not None,
            "llama_server": self.state.endpoints.server_provenance(),
            "git_commit": git_commit(self.config.rootpath),
            "promptsweep_version": __version__,
            "pytest_args": redact_args(list(self.config.invocation_params.args)),
        }

    def record(self, result: SampleResult) -> None:
        self._writer.write(result.to_json())
        self.results.append(result)

    def finish(self) -> None:
        self._writer.close()
        agg = aggregate(self.suite.name, self.results, list(self.suite.fields))
        self.aggregate = agg
        self.failures = check_gate(agg, self.suite.spec.thresholds, min_score=self.state.settings.min_score)
        for extra in self.config.hook.pytest_promptsweep_gate(
            config=self.config, aggregate=agg, run_dir=self.run_dir.root
        ):
            self.failures.extend(extra)
        metrics = agg.to_json()
        metrics.update(
            run=self.run_dir.name,
            weights=self.suite.weights,
            threshold=self.threshold,
            gate={"passed": not self.failures, "failures": self.failures},
        )
        write_json_atomic(self.run_dir.metrics_path, metrics)
        write_text_atomic(
            self.run_dir.summary_path,
            render_markdown(
                agg,
                self.suite.weights,
                title=f"promptsweep: {self.suite.name} ({self.run_dir.name})",
                gate_failures=self.failures,
                threshold=self.threshold,
            ),
        )

    @property
    def threshold(self) -> float | None:
        override = self.state.settings.min_score
        return override if override is not None else self.suite.spec.thresholds.overall


class EvalController:
    """Registered only in the controller process (or the sole process without xdist)."""

    def __init__(self, config: pytest.Config, state: PluginState) -> None:
        self.config = config
        self.state = state
        self.runs: dict[str, SuiteRun] = {}

    def _run_for(self, suite_path: str) -> SuiteRun:
        if suite_path not in self.runs:
            self.runs[suite_path] = SuiteRun(self.config, self.state, self.state.load_suite(Path(suite_path)))
        return self.runs[suite_path]

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "call":  # the teardown report carries the same user_properties
            return
        for name, value in report.user_properties:
            if name != RESULT_PROPERTY:
                continue
            payload: dict[str, Any] = json.loads(value) if isinstance(value, str) else dict(value)  # type: ignore[call-overload]
            result = SampleResult.from_json(payload["result"])
            run = self._run_for(payload["suite_path"])
            run.record(result)
            self.config.hook.pytest_promptsweep_result(
                config=self.config, result=result, run_dir=run.run_dir.root
            )

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        failed = False
        for run in self.runs.values():
            run.finish()
            assert run.aggregate is not None
            failed = failed or bool(run.failures)
            self.config.hook.pytest_promptsweep_run_finished(
                config=self.config, aggregate=run.aggregate, run_dir=run.run_dir.root, failures=run.failures
            )
        if failed and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    @pytest.hookimpl
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        for run in self.runs.values():
            if run.aggregate is None:
                continue
            terminalreporter.write_sep("=", f"promptsweep: {run.suite.name}", bold=True)
            text = render_terminal(
                run.aggregate,
                run.suite.weights,
                run_dir=str(run.run_dir.root),
                gate_failures=run.failures,
                threshold=run.threshold,
                worst=self.state.settings.worst,
            )
            for line in text.splitlines():
                red = line.startswith(("GATE FAILED", "ERRORED"))
                terminalreporter.write_line(line, red=red, green=line == "gate passed")

    @pytest.hookimpl(trylast=True)
    def pytest_unconfigure(self) -> None:
        self.state.endpoints.close()


def warn(message: str) -> None:
    print(f"[promptsweep] {message}", file=sys.stderr, flush=True)
