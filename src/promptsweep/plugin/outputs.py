"""The pytest glue for what a run leaves behind: leaderboard entry, HTML report, ``--baseline``
gate, and OpenTelemetry spans (the logic lives in leaderboard, html_report, compare, telemetry)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Generator, Mapping
from pathlib import Path
from typing import Any

import pytest

from promptsweep.core.harvest.spans import (
    SPAN_INPUT_ATTRIBUTE,
    SPAN_INPUT_TRUNCATED,
    input_record,
    span_input,
)
from promptsweep.core.io.errors import PromptsweepError
from promptsweep.core.io.files import os_error_line, write_text_atomic
from promptsweep.core.measure.aggregate import Aggregate
from promptsweep.plugin import messages
from promptsweep.plugin.options import redact_args
from promptsweep.plugin.state import PluginState
from promptsweep.reporting import html as html_report
from promptsweep.reporting import leaderboard
from promptsweep.reporting.artifacts import REPORT_FILENAME, RunDirectory
from promptsweep.reporting.compare import RunData, baseline_failures, load_run

LEADERBOARD_HTML = "leaderboard.html"
TRACE_WORKERINPUT_KEY = "promptsweep_trace"


def _warn(message: str) -> None:
    print(f"[promptsweep] {message}", file=sys.stderr, flush=True)


class RunOutputs:
    """Controller only: the baseline gate, then the leaderboard entry and HTML reports per run."""

    def __init__(self, config: pytest.Config, state: PluginState) -> None:
        self.config = config
        self.state = state
        self.written: list[tuple[str, Path]] = []
        self.baseline: RunData | None = None
        ref = state.settings.baseline
        if ref:
            try:
                self.baseline = load_run(ref, state.settings.base_dir)
            except PromptsweepError as exc:
                raise pytest.UsageError(f"--baseline: {exc}") from None

    @pytest.hookimpl
    def pytest_promptsweep_gate(
        self, config: pytest.Config, aggregate: Aggregate, run_dir: Path
    ) -> list[str]:
        if self.baseline is None:
            return []
        current = RunData(
            root=run_dir, config=_read(run_dir / "config.json"), metrics=None, results=list(aggregate.results)
        )
        if self.baseline.suite != current.suite:
            _warn(
                f"--baseline {self.baseline.name} is suite {self.baseline.suite}; not compared with {current.suite}"
            )
        return baseline_failures(self.baseline, current)

    @pytest.hookimpl
    def pytest_promptsweep_run_finished(
        self, config: pytest.Config, aggregate: Aggregate, run_dir: Path, failures: list[str]
    ) -> None:
        base = self.state.settings.base_dir
        try:
            entries = leaderboard.record_run(base, run_dir)
            page = html_report.render_run_report(load_run(run_dir, base), entries)
            report = RunDirectory(run_dir).write_text(REPORT_FILENAME, page)  # never through a link
            write_text_atomic(base / LEADERBOARD_HTML, html_report.render_leaderboard_report(entries))
            self.written.append((aggregate.suite, report))
        except (OSError, ValueError, PromptsweepError) as exc:  # reports must never lose a finished run
            reason = os_error_line(exc) if isinstance(exc, OSError) else str(exc)
            _warn(f"could not write the leaderboard / HTML report for {run_dir.name}: {reason}")

    @pytest.hookimpl
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        weight = self.state.settings.token_weight
        for suite, report in self.written:
            line = f"promptsweep {suite}: html report {report}"
            if weight:
                entry = leaderboard.entry_from_run_dir(report.parent)
                line += f"; objective (λ={weight:g}) {leaderboard.ranking_score(entry, weight):.3f}"
            terminalreporter.write_line(line)
        if self.baseline is not None:
            terminalreporter.write_line(f"promptsweep: compared with baseline {self.baseline.root}")


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# ------------------------------------------------------------------------------ tracing


def _item_identity(item: pytest.Item) -> tuple[str, str, str] | None:
    """(suite, template, sample id) for eval items; None for other tests (the optimizer traces
    its own calls through the endpoint layer)."""
    sample = getattr(item, "sample", None)
    runtime = getattr(item, "runtime", None)
    if runtime is not None and sample is not None:
        return runtime.suite.name, runtime.evaluator.candidate or runtime.template.label, sample.id
    return None


def _input_attributes(item: pytest.Item) -> dict[str, Any]:
    """The sample's input record on its span (redacted, bounded), so ``promptsweep harvest``
    can turn a run's traces back into samples."""
    runtime: Any = getattr(item, "runtime", None)
    sample: Any = getattr(item, "sample", None)
    record = input_record(runtime.suite, runtime.template, sample.data)
    text, truncated = span_input(record)
    return {SPAN_INPUT_ATTRIBUTE: text, SPAN_INPUT_TRUNCATED: truncated or None}


class TracingPlugin:
    """Every process: sample spans around item calls; the controller also owns run and candidate spans."""

    def __init__(self, telemetry: Any, *, controller: bool) -> None:
        self.telemetry = telemetry
        self.controller = controller
        self.candidates: dict[tuple[str, str], dict[str, Any]] = {}

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Generator[None, None, None]:
        identity = _item_identity(item)
        if identity is None:
            return (yield)
        suite, candidate, sample_id = identity
        attributes: dict[str, Any] = {"promptsweep.sample_id": sample_id, "promptsweep.nodeid": item.nodeid}
        attributes.update(_input_attributes(item))
        span, token = self.telemetry.start_sample(suite, candidate, attributes)
        failed: str | None = None
        try:
            return (yield)
        except BaseException as exc:
            failed = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            message = messages.from_properties(item.user_properties)
            result = message.result if message is not None else None
            self.telemetry.end_sample(span, token, result.to_json() if result else None, failed)

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        message = messages.from_report(report) if self.controller else None
        if message is None or message.result is None:
            return
        result = message.result
        key = (result.suite, result.candidate or result.template)
        slot = self.candidates.setdefault(key, {"start": report.start, "stop": report.stop, "scores": []})
        slot["start"] = min(slot["start"], report.start)
        slot["stop"] = max(slot["stop"], report.stop)
        slot["scores"].append(result.score)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if not self.controller:
            return
        for (suite, candidate), slot in self.candidates.items():
            scores = slot["scores"]
            self.telemetry.record_candidate(
                suite,
                candidate,
                slot["start"],
                slot["stop"],
                {"promptsweep.score": sum(scores) / len(scores), "promptsweep.samples": len(scores)},
            )
        self.telemetry.end_run({"promptsweep.exit_status": int(session.exitstatus)})

    @pytest.hookimpl(trylast=True)
    def pytest_unconfigure(self, config: pytest.Config) -> None:
        self.telemetry.shutdown()


class TraceXdistHooks:
    """Hands the run span's traceparent to each worker; registered only when xdist is present."""

    def __init__(self, telemetry: Any) -> None:
        self.telemetry = telemetry

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput[TRACE_WORKERINPUT_KEY] = self.telemetry.traceparent()


def configure(config: pytest.Config, state: PluginState) -> None:
    """Called from ``pytest_configure`` in every process."""
    worker = hasattr(config, "workerinput")
    if not worker:
        config.pluginmanager.register(RunOutputs(config, state), "promptsweep-outputs")
    configure_tracing(config, state, worker=worker)


def tracing_requested(env: Mapping[str, str] | None = None) -> bool:
    """Whether the standard OTEL_* variables ask for OTLP trace export (no OpenTelemetry import)."""
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = {e.strip().lower() for e in env.get("OTEL_TRACES_EXPORTER", "").split(",") if e.strip()}
    if exporters and "otlp" not in exporters:
        return False
    return bool(
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or "otlp" in exporters
    )


def configure_tracing(config: pytest.Config, state: PluginState, *, worker: bool) -> None:
    """Off (nothing imported, no layer) unless the OTEL_* variables ask for OTLP export."""
    traceparent = config.workerinput.get(TRACE_WORKERINPUT_KEY) if worker else None  # type: ignore[attr-defined]
    if not (traceparent or tracing_requested()):
        return
    from promptsweep.llm import telemetry as telemetry_module  # imported only when tracing is on

    try:
        tel = telemetry_module.Telemetry()
    except PromptsweepError as exc:
        raise pytest.UsageError(str(exc)) from None
    if worker:
        if traceparent:
            tel.adopt(traceparent)
    else:
        experiment = state.settings.run_name
        tel.start_run(
            {
                "promptsweep.experiment": experiment,
                "promptsweep.args": " ".join(redact_args(list(config.invocation_params.args))),
            }
        )
        if config.pluginmanager.hasplugin("xdist"):
            config.pluginmanager.register(TraceXdistHooks(tel), "promptsweep-trace-xdist")
    state.endpoints.layers.append(tel.layer())
    config.pluginmanager.register(TracingPlugin(tel, controller=not worker), "promptsweep-tracing")
