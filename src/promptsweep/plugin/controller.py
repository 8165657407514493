"""The controller-only plugin: receives every sample's result (from xdist workers too), writes
the run artifacts as results arrive, and at the end aggregates, gates and reports."""

from __future__ import annotations

import statistics
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from _pytest.junitxml import xml_key

from promptsweep import __version__
from promptsweep.core.answers.result import SampleResult
from promptsweep.core.data.dataset import file_sha256, ids_sha256
from promptsweep.core.data.suite import Suite, is_suite_file
from promptsweep.core.io.errors import PromptsweepError
from promptsweep.core.io.files import UnsafePathError
from promptsweep.core.measure.aggregate import RIGHT_AT, Aggregate, aggregate, stability
from promptsweep.core.measure.gate import check_gate, cost_line
from promptsweep.core.measure.scoring import ConstantAnswer, Scorer
from promptsweep.core.measure.stats import Estimate
from promptsweep.core.neighbours.lookup import LookupFloor, lookup_difference, suite_lookup_floor
from promptsweep.core.prompt import merge_params
from promptsweep.llm.determinism import DEFAULT, DETERMINISTIC, mode_json
from promptsweep.plugin import messages
from promptsweep.plugin.items import SampleItem
from promptsweep.plugin.options import redact_args
from promptsweep.plugin.state import PluginState
from promptsweep.reporting.agreement import judge_agreement
from promptsweep.reporting.artifacts import (
    ArtifactDirError,
    ArtifactWriteError,
    ResultsWriter,
    RunDirectory,
    git_commit,
    unusable_dir_message,
    write_failed_message,
)
from promptsweep.reporting.summary import (
    ANSWER_PROBLEMS,
    RunFacts,
    render_markdown,
    render_terminal,
    server_json,
)


def _route_slug(route: str) -> str:
    """``tests/test_route.py::test_triage`` → ``test_triage``, for a run directory name."""
    name = route.rsplit("::", 1)[-1]
    return "".join(c if c.isalnum() or c in "_-" else "_" for c in name) or "python"


GATE_FAILED_STAT = "gate FAILED"

ESTIMATE_FROM_S = 60.0
"""A run expected to end sooner than this gets no estimate line: it is over before it matters."""


def duration_text(seconds: float) -> str:
    """``45 s``, ``12 min``, ``2.5 h``: a forecast's precision, not a stopwatch's."""
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


class RunEstimate:
    """The line a newcomer's first (long) run prints once its first answers are in: about how
    long the whole run takes, from the answers planned, the measured seconds per call and the
    calls in flight (Little's law: answers per second = calls in flight / seconds per call)."""

    def __init__(self, parallel: int) -> None:
        self.parallel = max(1, parallel)
        self.planned: int | None = None
        self.repeats = False
        self.timed: list[float] = []
        self.said = False

    def plan(self, nodeids: list[str]) -> None:
        """The eval items this session will run (once, from the first collection seen)."""
        if self.planned is None:
            self.planned = len(nodeids)
            self.repeats = any("@r" in nodeid for nodeid in nodeids)

    def add(self, result: SampleResult) -> str | None:
        """The estimate line when ``result`` completes the first measured batch (one answer per
        call in flight, at least three), if the run is long enough to be worth one; else None."""
        untimed = result.errored or result.from_cache or result.answered_by != "model"
        if self.said or self.planned is None or untimed or result.latency_s is None:
            return None
        self.timed.append(result.latency_s)
        first = max(self.parallel, 3)
        if len(self.timed) < first:
            return None
        self.said = True
        per_call = statistics.median(self.timed)
        total = self.planned * per_call / self.parallel
        if self.planned <= first or total < ESTIMATE_FROM_S:
            return None
        what = "answers" if self.repeats else "samples"
        return (
            f"promptsweep: about {duration_text(total)} for {self.planned} {what} "
            f"({per_call:.1f} s a call, {self.parallel} at a time, measured on the first {first} answers)"
        )


class SuiteRun:
    """The artifacts and results of one suite in this session (created on its first result).

    A suite scored by its own items and by a Python-route test in one session makes two
    runs (``route`` names the test), each with its own results and totals.
    """

    def __init__(
        self, config: pytest.Config, state: PluginState, suite: Suite, route: str | None = None
    ) -> None:
        self.config = config
        self.state = state
        self.suite = suite
        self.route = route
        self.results: list[SampleResult] = []
        self.aggregate: Aggregate | None = None
        self.failures: list[str] = []
        self.samples: dict[str, Any] = {}
        self.constant: ConstantAnswer | None = None
        self.lookup: LookupFloor | None = None
        self.lookup_difference: Estimate | None = None
        self.write_error: str | None = None
        """Set when an artifact could not be written (a full disk): nothing more is written."""
        self.started = time.monotonic()
        self.elapsed_s: float | None = None
        """The run's wall time, from its controller's start to its totals."""
        name = state.settings.run_name or suite.name
        if route is not None:
            name = f"{name}-{_route_slug(route)}"
        self.run_dir = RunDirectory.create(state.settings.base_dir, name)
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
        settings = self.state.settings
        managed = self.state.endpoints.server
        return {
            "suite": suite.name,
            "suite_path": str(suite.path),
            "route": self.route or "suite",
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
            "managed_server": managed is not None,
            "llama_server": self.state.endpoints.server_provenance(),
            "determinism": mode_json(
                settings.deterministic, managed_slots=managed.slots if managed else None
            ),
            "repeats": self.repeats,
            "git_commit": git_commit(self.config.rootpath),
            "promptsweep_version": __version__,
            "pytest_args": redact_args(list(self.config.invocation_params.args)),
        }

    @property
    def repeats(self) -> int:
        return self.state.settings.repeats_for(self.suite.spec.repeats)

    def record(self, result: SampleResult) -> None:
        """Store one result; ``ArtifactWriteError`` (and ``write_error`` set) when it cannot be
        stored, the results log left as it was."""
        try:
            self._writer.write(result.to_json())
        except ArtifactWriteError as exc:
            self.write_error = str(exc)
            raise
        self.results.append(result)

    @property
    def right_at(self) -> float:
        """What one answer must score to pass: ``thresholds.sample``, else compare's 0.5."""
        sample = self.suite.spec.thresholds.sample
        return sample if sample is not None else RIGHT_AT

    def completed_stability(self, sample_id: str) -> str | None:
        """The sample's classification once all its repeats are in (None before, and without
        repeats): what its last item to finish carries to junitxml."""
        if self.repeats < 2:
            return None
        group = {r.repeat: r for r in self.results if r.sample_id == sample_id}
        if len(group) < self.repeats:
            return None
        return stability([group[k] for k in sorted(group)], self.right_at)

    def finish(self) -> None:
        self.elapsed_s = time.monotonic() - self.started
        self._writer.close()
        agg = aggregate(self.suite.name, self.results, list(self.suite.fields), right_at=self.right_at)
        self.aggregate = agg
        self.samples = self.completeness()
        self.failures = check_gate(
            agg,
            self.suite.spec.thresholds,
            min_score=self.state.settings.min_score,
            flaky=self.state.settings.flaky,
        )
        for extra in self.config.hook.pytest_promptsweep_gate(
            config=self.config, aggregate=agg, run_dir=self.run_dir.root
        ):
            self.failures.extend(extra)
        self.constant = self.constant_answer()
        metrics = agg.to_json()
        metrics["server"] = server_json(agg, self.elapsed_s)
        if self.constant is not None:
            metrics["constant_answer"] = {
                "score": self.constant.score,
                "fields": self.constant.fields,
                "answer": dict(self.constant.answer),
            }
        self.lookup, self.lookup_difference = self.lookup_answer(agg)
        if self.lookup is not None and self.lookup_difference is not None:
            d = self.lookup_difference
            metrics["lookup_answer"] = {
                "score": self.lookup.score,
                "fields": dict(self.lookup.fields),
                "difference": {"mean": d.mean, "low": d.low, "high": d.high, "n": d.n},
            }
        metrics.update(
            samples=self.samples,
            run=self.run_dir.name,
            weights=self.suite.weights,
            threshold=self.threshold,
            cost={
                "tokens_per_sample": agg.tokens_per_sample,
                "latency_p95_ms": None if agg.latency_p95 is None else agg.latency_p95 * 1000,
                "max_tokens_per_sample": self.suite.spec.thresholds.max_tokens_per_sample,
                "max_latency_p95_ms": self.suite.spec.thresholds.max_latency_p95_ms,
            },
            flaky_policy=self.state.settings.flaky,
            gate={"passed": not self.failures, "failures": self.failures},
            determinism=DETERMINISTIC if self.deterministic else DEFAULT,
        )
        agreement = judge_agreement(agg.results)
        if agreement:  # judged fields: the judge beside its reference metric (promptsweep judge-agreement)
            metrics["judge"] = [a.to_json() for a in agreement]
        checked = Counter(r.cache_check for r in agg.results if r.cache_check and not r.errored)
        if checked:
            metrics["cache_check"] = {k: checked[k] for k in ("same", "different", "missing")}
        if self.write_error is not None:
            return  # the disk is full: the results log is whole, the rest would fail as well
        try:
            self._write_totals(metrics)
        except (OSError, PromptsweepError) as exc:
            reason = (
                write_failed_message(exc, "results.jsonl is whole") if isinstance(exc, OSError) else str(exc)
            )
            self.write_error = reason
            warn(reason)

    def _write_totals(self, metrics: dict[str, Any]) -> None:
        """metrics.json and summary.md, each written whole or not at all."""
        assert self.aggregate is not None
        agg = self.aggregate
        self.run_dir.write_json(self.run_dir.metrics_path.name, metrics)
        self.run_dir.write_text(
            self.run_dir.summary_path.name,
            render_markdown(
                agg, self.suite.weights, self.facts, title=f"promptsweep: {self.label} ({self.run_dir.name})"
            ),
        )

    @property
    def facts(self) -> RunFacts:
        """What the summaries say beside the scores, for the terminal and summary.md alike."""
        return RunFacts(
            gate_failures=self.failures,
            threshold=self.threshold,
            deterministic=self.deterministic,
            constant=self.constant.score if self.constant else None,
            cost=self.cost_line,
            flaky=self.state.settings.flaky,
            lookup=self.lookup.score if self.lookup else None,
            lookup_difference=self.lookup_difference,
            elapsed_s=self.elapsed_s,
        )

    @property
    def cost_line(self) -> str | None:
        return None if self.aggregate is None else cost_line(self.aggregate, self.suite.spec.thresholds)

    def constant_answer(self) -> ConstantAnswer | None:
        """What each field's most frequent expected value would score on the samples scored."""
        first: dict[str, SampleResult] = {}
        for result in self.results:
            first.setdefault(result.sample_id, result)
        return Scorer(self.suite, self.state.registry).constant_answer([r.expected for r in first.values()])

    def lookup_answer(self, agg: Aggregate) -> tuple[LookupFloor | None, Estimate | None]:
        """The lookup floor on the samples scored (the suite's split as its train side), and
        *prompt - lookup* paired over them, each sample's repeats averaged first.

        ``(None, None)`` when the split has no train side, or a scored sample is not in the
        dataset (a Python-route record): the floor is only shown over the run's own samples.
        """
        prompt: dict[str, list[float]] = {}
        for result in agg.results:
            prompt.setdefault(result.sample_id, []).append(result.score)
        try:
            dataset = self.suite.load_dataset()
            by_id = dataset.by_id()
            if not prompt or not set(prompt) <= set(by_id):
                return None, None
            samples = [by_id[sid] for sid in sorted(prompt)]
            floor = suite_lookup_floor(self.suite, dataset, samples, Scorer(self.suite, self.state.registry))
        except PromptsweepError as exc:
            warn(f"{self.suite.name}: no lookup floor: {exc}")
            return None, None
        if floor is None:
            return None, None
        means = {sid: sum(scores) / len(scores) for sid, scores in prompt.items()}
        return floor, lookup_difference(floor, means)

    def completeness(self) -> dict[str, Any]:
        """Which samples were scored, and whether that is all the suite has: a run narrowed by
        ``-k``, ``--lf``, deselection or an interrupt is *partial* and is kept out of trends."""
        scored = {r.sample_id for r in self.results}
        try:
            dataset = self.suite.load_dataset()
            expected: set[str] | None = {s.id for s in self.suite.samples_to_evaluate(dataset)}
        except PromptsweepError:
            expected = None
        return {
            "scored": len(scored),
            "expected": None if expected is None else len(expected),
            "partial": expected is not None and scored != expected,
            "ids_sha256": ids_sha256(scored),
        }

    @property
    def partial(self) -> bool:
        return bool(self.samples.get("partial"))

    @property
    def deterministic(self) -> bool:
        return self.state.settings.deterministic

    @property
    def label(self) -> str:
        """How the terminal names this run: the suite, and the Python-route test if any."""
        return self.suite.name if self.route is None else f"{self.suite.name} ({self.route})"

    @property
    def threshold(self) -> float | None:
        override = self.state.settings.min_score
        return override if override is not None else self.suite.spec.thresholds.overall


class EvalController:
    """Registered only in the controller process (or the sole process without xdist)."""

    def __init__(self, config: pytest.Config, state: PluginState) -> None:
        self.config = config
        self.state = state
        self.runs: dict[tuple[str, str | None], SuiteRun] = {}
        tx = getattr(config.option, "tx", None) or []
        self.estimate = RunEstimate(len(tx) if getattr(config.option, "dist", "no") != "no" else 1)
        self._estimate_line: str | None = None

    @pytest.hookimpl
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.estimate.plan([item.nodeid for item in session.items if isinstance(item, SampleItem)])

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        """Under xdist the controller collects nothing: a worker's collection says what will run."""
        self.estimate.plan([i for i in ids if is_suite_file(Path(i.split("::", 1)[0]))])

    @pytest.hookimpl(trylast=True)
    def pytest_runtest_logfinish(self) -> None:
        """The estimate, once due, goes out after the item's own progress mark."""
        line, self._estimate_line = self._estimate_line, None
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if line is None or reporter is None:
            return
        reporter.ensure_newline()
        # Under xdist the progress dots do not mark the line as begun: look at the writer.
        if getattr(getattr(reporter, "_tw", None), "width_of_current_line", 0):
            reporter.write("\n")
        reporter.write_line(line, bold=True)
        reporter.currentfspath = None  # the progress that follows starts a line of its own

    def _run_for(self, suite_path: str, route: str | None) -> SuiteRun:
        key = (suite_path, route)
        if key not in self.runs:
            suite = self.state.load_suite(Path(suite_path))
            try:
                self.runs[key] = SuiteRun(self.config, self.state, suite, route)
            except (ArtifactDirError, UnsafePathError) as exc:
                # Checked at session start; this is the place changing under the run.
                pytest.exit(str(exc), returncode=pytest.ExitCode.USAGE_ERROR)
            except OSError as exc:
                message = unusable_dir_message(self.state.settings.base_dir, exc)
                pytest.exit(message, returncode=pytest.ExitCode.USAGE_ERROR)
        return self.runs[key]

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "teardown":
            self._mark_flaky(report)
            return
        message = messages.from_report(report)
        if message is None or message.mode != "eval" or message.result is None:
            return
        run = self._run_for(message.suite_path, message.route)
        if run.write_error is not None:
            return  # stopping: a result arriving after the disk filled is not stored
        try:
            run.record(message.result)
        except ArtifactWriteError as exc:
            pytest.exit(str(exc), returncode=pytest.ExitCode.INTERRUPTED)
        self.config.hook.pytest_promptsweep_result(
            config=self.config, result=message.result, run_dir=run.run_dir.root
        )
        self._estimate_line = self._estimate_line or self.estimate.add(message.result)

    def _mark_flaky(self, report: pytest.TestReport) -> None:
        """With repeats, the item whose result completes a sample gets ``flaky`` (true/false)
        and ``stability`` (stable/flaky/errored) properties. junitxml writes the properties of
        the teardown report, which reaches this hook (tryfirst) before junitxml's; the items
        that finished earlier are already written, so only the completing one can carry them."""
        message = messages.from_properties(report.user_properties)
        if message is None or message.mode != "eval" or message.result is None:
            return
        run = self.runs.get((message.suite_path, message.route))
        verdict = run.completed_stability(message.result.sample_id) if run is not None else None
        if verdict is not None:
            report.user_properties.append(("flaky", "true" if verdict == "flaky" else "false"))
            report.user_properties.append(("stability", verdict))

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        failed = False
        for run in self.runs.values():
            run.finish()
            assert run.aggregate is not None
            failed = failed or bool(run.failures)
            if run.write_error is not None:
                continue  # no leaderboard entry or report for a run whose totals are not on disk
            self.config.hook.pytest_promptsweep_run_finished(
                config=self.config, aggregate=run.aggregate, run_dir=run.run_dir.root, failures=run.failures
            )
        self._junit_flaky()
        if failed and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            # pytest's last line counts every stats key: "6 passed, 1 gate FAILED in 2.1s", so a
            # failed gate is visible where people look, not only in the summary above it.
            for run in self.runs.values():
                if run.failures:
                    reporter.stats.setdefault(GATE_FAILED_STAT, []).append(run.label)

    def _junit_flaky(self) -> None:
        """``--junitxml``: a test-suite property per suite run with repeats,
        ``promptsweep.flaky.<suite>``, listing its flaky samples (comma-separated, empty when
        none), the way ``record_testsuite_property`` adds one. Runs before junitxml writes."""
        xml = self.config.stash.get(xml_key, None)
        if xml is None:
            return
        for run in self.runs.values():
            if run.aggregate is not None and run.aggregate.repeats > 1:
                flaky = [group[0].sample_id for group in run.aggregate.flaky()]
                xml.add_global_property(
                    messages.property_name(f"promptsweep.flaky.{run.label}"), ",".join(flaky)
                )

    @pytest.hookimpl
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        for run in self.runs.values():
            if run.aggregate is None:
                continue
            terminalreporter.write_sep("=", f"promptsweep: {run.label}", bold=True)
            text = render_terminal(
                run.aggregate,
                run.suite.weights,
                run.facts,
                label=run.label,
                run_dir=str(run.run_dir.root),
                worst=self.state.settings.worst,
            )
            for line in text.splitlines():
                red = line.startswith(("GATE FAILED", "ERRORED"))
                yellow = line.startswith(("flaky samples", "warning:", *ANSWER_PROBLEMS))
                terminalreporter.write_line(line, red=red, yellow=yellow, green=line == "gate passed")
            if run.partial:
                terminalreporter.write_line(
                    f"partial run: {run.samples['scored']} of {run.samples['expected']} samples scored "
                    "(-k, --lf, deselected or interrupted); the leaderboard keeps it out of rankings and trends",
                    yellow=True,
                )

    @pytest.hookimpl(trylast=True)
    def pytest_unconfigure(self) -> None:
        self.state.endpoints.close()


def warn(message: str) -> None:
    print(f"[promptsweep] {message}", file=sys.stderr, flush=True)
