"""The pytest glue for ``--optimize``: candidate items, the round barrier, and the winner file.

In optimize mode a suite collects ``<suite>[<candidate>:<sample id>]`` items (candidate x
validation sample, plus the suite's own template as candidate ``baseline``), ordered round by
round. The controller records every result as it arrives (``results.jsonl``, flushed per line)
and, when a round is complete, decides who survives and writes ``decisions.json`` atomically.
An item of round r+1 first waits for round r's decision (polling that file, bounded by
``--search-round-timeout``), then runs, or is skipped with the reason if its candidate was
pruned. xdist's load scheduler hands out items as a prefix of the collection order, and every
worker runs its items in that order, so a waiting item never blocks an earlier round.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from tabulate import tabulate

from promptsweep import __version__
from promptsweep.core.dataset import Dataset, Sample
from promptsweep.core.errors import ConfigError
from promptsweep.core.evaluate import Evaluator, SampleResult
from promptsweep.core.files import write_json_atomic, write_text_exclusive
from promptsweep.core.stats import Estimate, is_significant, mean_interval, paired_difference
from promptsweep.core.suite import Suite
from promptsweep.optimize.space import Candidate, SearchSpace, load_search_space, space_path_for
from promptsweep.optimize.strategies import (
    BASELINE,
    Decision,
    Plan,
    Selection,
    Strategy,
    make_strategy,
    paired_order,
    select,
)
from promptsweep.plugin.items import SampleFailure, SampleItem, SuiteFile
from promptsweep.plugin.options import existing_file, positive_int
from promptsweep.plugin.state import PluginState, get_state
from promptsweep.plugin.xdist import WORKERINPUT_KEY
from promptsweep.reporting.artifacts import ResultsWriter, RunDirectory

RESULT_PROPERTY = "promptsweep.optimize.result"
ITEM_PROPERTY = "promptsweep.optimize.item"
DECISIONS_SCHEMA_VERSION = 1
ALL_RESULTS_SCHEMA_VERSION = 1
POLL_S = 0.1


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("promptsweep")
    group.addoption(
        "--optimize",
        action="store_true",
        default=False,
        dest="promptsweep_optimize",
        help="Search the suite's prompt space on its validation split and write the winner as "
        "prompt_templates/<base>_v<N+1>.yaml.",
    )
    group.addoption(
        "--search-space",
        default=None,
        metavar="PATH",
        type=existing_file("--search-space"),
        dest="promptsweep_search_space",
        help="Search-space YAML. Default: the suite's search_space key.",
    )
    group.addoption(
        "--search-strategy",
        default=None,
        choices=("grid", "random", "halving"),
        dest="promptsweep_search_strategy",
        help="grid (every candidate on every sample), random (N seeded candidates), halving "
        "(successive halving, the default unless the space file says otherwise).",
    )
    group.addoption(
        "--search-budget",
        default=None,
        metavar="N",
        type=positive_int("--search-budget"),
        dest="promptsweep_search_budget",
        help="Candidates to consider (a seeded random subset): required for random, optional for halving.",
    )
    group.addoption(
        "--search-seed",
        default=None,
        metavar="N",
        type=int,
        dest="promptsweep_search_seed",
        help="Seed for candidate subsets and the validation order. Default: the space file's, else 0.",
    )
    group.addoption(
        "--search-round-timeout",
        default=3600.0,
        metavar="SECONDS",
        type=float,
        dest="promptsweep_round_timeout",
        help="How long an item waits for the previous round's decision. Default: 3600.",
    )


# ---------------------------------------------------------------- the plan (same on every process)


@dataclass
class SuitePlan:
    """Everything about one suite's optimization that every process computes identically."""

    suite: Suite
    dataset: Dataset
    space: SearchSpace
    strategy: Strategy
    seed: int
    candidates: dict[str, Candidate]
    plan: Plan
    order: list[Sample]
    grid_candidates: int
    _evaluators: dict[str, Evaluator] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return [*self.plan.candidates, BASELINE]

    def items(self) -> list[tuple[int, str, Sample]]:
        """(round, candidate, sample) in run order: round by round, candidate-major inside a
        round so a worker's consecutive calls share the candidate's system prompt (cache)."""
        out: list[tuple[int, str, Sample]] = []
        for r in range(self.plan.rounds):
            start, end = self.plan.round_slice(r)
            for name in self.names:
                out.extend((r, name, sample) for sample in self.order[start:end])
        return out

    def evaluator(self, state: PluginState, name: str) -> Evaluator:
        if name not in self._evaluators:
            if name == BASELINE:
                template = self.space.base
                params: dict[str, Any] = {}
            else:
                cand = self.candidates[name]
                template = cand.to_template(self.space, self.suite, self.space.train)
                params = cand.params(self.space)
            self._evaluators[name] = Evaluator(
                self.suite,
                template,
                state.registry,
                dataset=self.dataset,
                params=params,
                model=state.settings.model,
                candidate=name,
            )
        return self._evaluators[name]

    def position(self) -> dict[str, int]:
        return {s.id: i for i, s in enumerate(self.order)}


def build_plan(config: pytest.Config, state: PluginState, suite_path: Path) -> SuitePlan:
    """Load the suite's space and lay out candidates and rounds; ``ConfigError`` on bad input."""
    suite = state.load_suite(suite_path.resolve())
    dataset = suite.load_dataset()
    space = load_search_space(space_path_for(suite, config.option.promptsweep_search_space), suite, dataset)
    defaults = space.spec.search
    name = config.option.promptsweep_search_strategy or defaults.strategy
    seed = config.option.promptsweep_search_seed
    seed = defaults.seed if seed is None else seed
    budget = config.option.promptsweep_search_budget or defaults.budget
    if name == "grid" and config.option.promptsweep_search_budget:
        raise pytest.UsageError("--search-budget does not apply to --search-strategy=grid")
    try:
        strategy = make_strategy(
            name, budget=budget, seed=seed, eta=defaults.eta, min_samples=defaults.min_samples
        )
    except ValueError as exc:
        raise pytest.UsageError(f"--search-strategy={name}: {exc}") from exc
    all_candidates = space.candidates()
    by_id = {c.id: c for c in all_candidates}
    split = suite.split(dataset)
    samples = dataset.by_id()
    order_ids = paired_order(split.validation, {i: samples[i].category for i in split.validation}, seed)
    if not order_ids:
        raise ConfigError(f"{suite.path}: split: the validation split is empty; lower split.train")
    plan = strategy.plan(list(by_id), len(order_ids))
    return SuitePlan(
        suite=suite,
        dataset=dataset,
        space=space,
        strategy=strategy,
        seed=seed,
        candidates=by_id,
        plan=plan,
        order=[samples[i] for i in order_ids],
        grid_candidates=len(all_candidates),
    )


# ---------------------------------------------------------------- decisions file (the round barrier)


def decisions_path(run_dir: Path) -> Path:
    return run_dir / "decisions.json"


def read_decisions(run_dir: Path) -> list[dict[str, Any]]:
    path = decisions_path(run_dir)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    rounds = data.get("rounds", [])
    return rounds if isinstance(rounds, list) else []


def wait_for_round(run_dir: Path, rounds_needed: int, timeout: float, *, what: str) -> list[dict[str, Any]]:
    """Block until ``rounds_needed`` rounds are decided; a clear error after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        decided = read_decisions(run_dir)
        if len(decided) >= rounds_needed:
            return decided
        if time.monotonic() > deadline:
            raise SampleFailure(
                f"{what}: waited {timeout:.0f}s for round {rounds_needed}'s decision in "
                f"{decisions_path(run_dir)}; the controller has not decided it (items deselected with -k/-m, "
                "or a crashed worker?). Raise --search-round-timeout if rounds are just slow."
            )
        time.sleep(POLL_S)


def pruned_reason(decided: Sequence[dict[str, Any]], candidate: str) -> str | None:
    for decision in decided:
        pruned = decision.get("pruned", {})
        if candidate in pruned:
            score, cutoff = pruned[candidate], decision["cutoff"]
            why = (
                f"{score:.2f} < cutoff {cutoff:.2f}"
                if score < cutoff
                else f"{score:.2f} tied at cutoff {cutoff:.2f}, more tokens"
            )
            return (
                f"pruned in round {decision['round'] + 1}: {why} (after {decision['samples_seen']} samples)"
            )
    return None


# ---------------------------------------------------------------- items


class OptimizeItem(pytest.Item):
    """One candidate on one validation sample."""

    def __init__(
        self, *, plan: SuitePlan, round_index: int, candidate: str, sample: Sample, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.plan = plan
        self.round_index = round_index
        self.candidate = candidate
        self.sample = sample
        self.user_properties.append(
            (
                ITEM_PROPERTY,
                json.dumps(
                    {
                        "suite_path": str(plan.suite.path),
                        "candidate": candidate,
                        "sample_id": sample.id,
                        "round": round_index,
                    }
                ),
            )
        )

    def runtest(self) -> None:
        ctx = self.config.stash[context_key]
        run_dir = ctx.run_dir(self.plan.suite.name)
        if self.round_index > 0:
            decided = wait_for_round(run_dir, self.round_index, ctx.round_timeout, what=self.name)
            reason = pruned_reason(decided, self.candidate)
            if reason:
                pytest.skip(reason)
        state = get_state(self.config)
        evaluator = self.plan.evaluator(state, self.candidate)
        result = evaluator.evaluate(self.sample, state.endpoints.endpoint().send)
        payload = {
            "suite_path": str(self.plan.suite.path),
            "round": self.round_index,
            "result": result.to_json(),
        }
        self.user_properties.append((RESULT_PROPERTY, json.dumps(payload, ensure_ascii=False)))
        self.user_properties.append(("score", round(result.score, 4)))
        if result.errored:
            raise SampleFailure(f"{self.candidate} on {self.sample.id} errored: {result.error}")

    def repr_failure(self, excinfo: Any, style: Any = None) -> Any:
        if isinstance(excinfo.value, (SampleFailure, ConfigError)):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"{self.name} ({self.sample.where})"


@dataclass
class OptimizeContext:
    """Per-process optimize state: where run dirs live and the plans built so far."""

    session_dir: Path
    round_timeout: float
    plans: dict[Path, SuitePlan] = field(default_factory=dict)

    def run_dir(self, suite_name: str) -> Path:
        return self.session_dir / suite_name

    def plan_for(self, config: pytest.Config, suite_path: Path) -> SuitePlan:
        key = suite_path.resolve()
        if key not in self.plans:
            self.plans[key] = build_plan(config, get_state(config), key)
        return self.plans[key]


context_key = pytest.StashKey[OptimizeContext]()


class OptimizeCollection:
    """Replaces each suite's sample items with its candidate x validation-sample items."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_modifyitems(
        self, session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
    ) -> None:
        ctx = config.stash[context_key]
        out: list[pytest.Item] = []
        done: set[Path] = set()
        for item in items:
            if not isinstance(item, SampleItem):
                out.append(item)
                continue
            parent = item.parent
            assert isinstance(parent, SuiteFile)
            if parent.path in done:
                continue
            done.add(parent.path)
            try:
                plan = ctx.plan_for(config, parent.path)
            except ConfigError as exc:
                raise pytest.UsageError(str(exc)) from exc
            for r, name, sample in plan.items():
                out.append(
                    OptimizeItem.from_parent(
                        parent,
                        name=f"{plan.suite.name}[{name}:{sample.id}]",
                        plan=plan,
                        round_index=r,
                        candidate=name,
                        sample=sample,
                    )
                )
        items[:] = out


# ---------------------------------------------------------------- controller


@dataclass
class SuiteSearch:
    """The controller's record of one suite's optimization."""

    plan: SuitePlan
    run_dir: RunDirectory
    writer: ResultsWriter
    results: dict[str, dict[str, SampleResult]] = field(default_factory=dict)
    decisions: list[Decision] = field(default_factory=list)
    alive: list[str] = field(default_factory=list)
    selection: Selection | None = None
    baseline_diff: Estimate | None = None
    winner_path: Path | None = None
    complete: bool = False

    def record(self, result: SampleResult) -> None:
        self.writer.write(result.to_json())
        self.results.setdefault(result.candidate or BASELINE, {})[result.sample_id] = result

    def scores(self, name: str) -> list[float]:
        """Scores in the paired order (errored = 0), as far as this candidate got."""
        got = self.results.get(name, {})
        out = []
        for sample in self.plan.order:
            if sample.id not in got:
                break
            out.append(got[sample.id].score)
        return out

    def cost(self, name: str) -> float:
        """Mean prompt + completion tokens per call: what a tie is broken on."""
        got = [r for r in self.results.get(name, {}).values() if not r.errored]
        if not got:
            return math.inf
        return sum((r.prompt_tokens or 0) + (r.completion_tokens or 0) for r in got) / len(got)

    def round_complete(self, r: int) -> bool:
        start, end = self.plan.plan.round_slice(r)
        ids = [s.id for s in self.plan.order[start:end]]
        return all(i in self.results.get(name, {}) for name in [*self.alive, BASELINE] for i in ids)

    def advance(self) -> None:
        """Decide every round that is complete and not yet decided; write decisions.json."""
        changed = False
        while len(self.decisions) < self.plan.plan.rounds - 1 and self.round_complete(len(self.decisions)):
            r = len(self.decisions)
            scores = {c: self.scores(c) for c in self.alive}
            costs = {c: self.cost(c) for c in self.alive}
            decision = self.plan.strategy.decide(r, self.plan.plan, self.alive, scores, costs)
            self.decisions.append(decision)
            self.alive = list(decision.survivors)
            changed = True
        if changed:
            write_json_atomic(
                decisions_path(self.run_dir.root),
                {
                    "schema_version": DECISIONS_SCHEMA_VERSION,
                    "suite": self.plan.suite.name,
                    "rounds": [d.to_json() for d in self.decisions],
                },
            )
        last = self.plan.plan.rounds - 1
        self.complete = len(self.decisions) == last and self.round_complete(last)

    def pruned_round(self) -> dict[str, int]:
        return {c: d.round for d in self.decisions for c in d.pruned}

    def calls(self) -> int:
        return sum(len(v) for v in self.results.values())


class OptimizeController:
    """Controller side: records results, writes the round decisions, picks and writes the winner."""

    def __init__(self, config: pytest.Config, state: PluginState, ctx: OptimizeContext) -> None:
        self.config = config
        self.state = state
        self.ctx = ctx
        self.searches: dict[str, SuiteSearch] = {}

    def _search(self, suite_path: str) -> SuiteSearch:
        if suite_path not in self.searches:
            plan = self.ctx.plan_for(self.config, Path(suite_path))
            run_dir = RunDirectory(self.ctx.run_dir(plan.suite.name))
            run_dir.root.mkdir(parents=True, exist_ok=True)
            endpoint = self.state.endpoints.primary
            run_dir.write_config(
                {
                    "suite": plan.suite.name,
                    "suite_path": str(plan.suite.path),
                    "mode": "optimize",
                    "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "search_space": str(plan.space.path),
                    "strategy": plan.strategy.name,
                    "seed": plan.seed,
                    "candidates": list(plan.plan.candidates),
                    "round_ends": list(plan.plan.round_ends),
                    "validation_order": [s.id for s in plan.order],
                    "dataset": {"path": str(plan.dataset.path), "sha256": plan.dataset.sha256},
                    "split_sha256": plan.suite.split(plan.dataset).sha256,
                    "model": endpoint.to_json() if endpoint else None,
                    "promptsweep_version": __version__,
                }
            )
            search = SuiteSearch(plan, run_dir, ResultsWriter(run_dir.results_path))
            search.alive = list(plan.plan.candidates)
            self.searches[suite_path] = search
        return self.searches[suite_path]

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        """Workers write into the same optimize session directory as the controller."""
        node.workerinput.setdefault(WORKERINPUT_KEY, {})["optimize_dir"] = str(self.ctx.session_dir)

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        props = dict(report.user_properties)
        if RESULT_PROPERTY in props and report.when == "call":  # teardown reports carry it too
            payload = json.loads(str(props[RESULT_PROPERTY]))
            search = self._search(payload["suite_path"])
            result = SampleResult.from_json(payload["result"])
        elif ITEM_PROPERTY in props and report.failed and report.when in ("setup", "call"):
            # The item broke before it had a result (a bug, a render error): count it as an
            # errored call so the round still completes.
            info = json.loads(str(props[ITEM_PROPERTY]))
            search = self._search(info["suite_path"])
            if info["sample_id"] in search.results.get(info["candidate"], {}) or "waited" in str(
                report.longrepr
            ):
                return
            evaluator = search.plan.evaluator(self.state, info["candidate"])
            sample = search.plan.dataset.by_id()[info["sample_id"]]
            result = evaluator._errored(sample, str(report.longrepr).strip().splitlines()[-1][:500])
        else:
            return
        search.record(result)
        self.config.hook.pytest_promptsweep_result(
            config=self.config, result=result, run_dir=search.run_dir.root
        )
        search.advance()

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        interrupted = exitstatus == pytest.ExitCode.INTERRUPTED or bool(session.shouldstop)
        for search in self.searches.values():
            search.writer.close()
            finish_search(search, self.state, write_winner=search.complete and not interrupted)

    @pytest.hookimpl
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        for search in self.searches.values():
            terminalreporter.write_sep("=", f"promptsweep optimize: {search.plan.suite.name}", bold=True)
            for line in summary_lines(search):
                terminalreporter.write_line(line)


def finish_search(search: SuiteSearch, state: PluginState, *, write_winner: bool) -> None:
    """Rank, compare with the baseline, write all_results.json and (complete runs) the winner."""
    plan = search.plan
    names = [n for n in plan.names if search.results.get(n)]
    scores = {n: search.scores(n) for n in names}
    costs = {n: search.cost(n) for n in names}
    pruned = search.pruned_round()
    if any(scores.get(n) for n in plan.plan.candidates):
        search.selection = select(scores, costs, pruned, seed=plan.seed)
        winner = search.selection.winner
        n = min(len(scores[winner]), len(scores.get(BASELINE, [])))
        if n:
            search.baseline_diff = paired_difference(scores[BASELINE][:n], scores[winner][:n], seed=plan.seed)
    write_json_atomic(
        search.run_dir.root / "all_results.json", all_results_json(search, scores, costs, pruned)
    )
    if write_winner and search.selection is not None:
        search.winner_path = write_winner_template(search, state)


def all_results_json(
    search: SuiteSearch, scores: dict[str, list[float]], costs: dict[str, float], pruned: dict[str, int]
) -> dict[str, Any]:
    plan = search.plan
    sel = search.selection
    candidates: list[dict[str, Any]] = []
    for name, values in scores.items():
        got = list(search.results.get(name, {}).values())
        candidates.append(
            {
                "candidate": name,
                "mean": sum(values) / len(values) if values else None,
                "samples_seen": len(values),
                "errored": sum(1 for r in got if r.errored),
                "prompt_tokens": sum(r.prompt_tokens or 0 for r in got),
                "completion_tokens": sum(r.completion_tokens or 0 for r in got),
                "tokens_per_call": None if math.isinf(costs[name]) else costs[name],
                "pruned_round": None if name not in pruned else pruned[name] + 1,
                "dimensions": plan.candidates[name].dimensions(plan.space)
                if name in plan.candidates
                else None,
            }
        )
    candidates.sort(key=lambda c: (-c["samples_seen"], -(c["mean"] or 0.0), c["candidate"]))
    return {
        "schema_version": ALL_RESULTS_SCHEMA_VERSION,
        "suite": plan.suite.name,
        "complete": search.complete,
        "strategy": plan.strategy.name,
        "seed": plan.seed,
        "calls_used": search.calls(),
        "grid_calls": plan.grid_candidates * len(plan.order),
        "round_ends": list(plan.plan.round_ends),
        "decisions": [d.to_json() for d in search.decisions],
        "winner": sel.winner if sel else None,
        "best": sel.best if sel else None,
        "tied_with_best": list(sel.tied) if sel else [],
        "winner_file": str(search.winner_path) if search.winner_path else None,
        "candidates": candidates,
    }


_VERSION_FILE = re.compile(r"^(?P<id>.+)_v(?P<n>\d+)\.ya?ml$")


def next_version_path(folder: Path, template_id: str, current_version: str) -> tuple[Path, int]:
    """``<folder>/<id>_v<N+1>.yaml``, N the highest version seen for this id; never an existing file."""
    highest = 0
    match = re.fullmatch(r"v(\d+)", current_version)
    if match:
        highest = int(match.group(1))
    for entry in folder.iterdir() if folder.is_dir() else ():
        m = _VERSION_FILE.match(entry.name)
        if m and m.group("id") == template_id:
            highest = max(highest, int(m.group("n")))
    n = highest + 1
    while (folder / f"{template_id}_v{n}.yaml").exists():
        n += 1
    return folder / f"{template_id}_v{n}.yaml", n


def write_new_file(path: Path, text: str) -> None:
    """Write ``path`` atomically and only if it does not exist."""
    write_text_exclusive(path, text)


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings as ``|`` blocks, so a winner file reads well in a pull request."""


def _str_representer(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_BlockDumper.add_representer(str, _str_representer)


def _estimate(e: Estimate) -> dict[str, Any]:
    return {"mean": round(e.mean, 4), "low": round(e.low, 4), "high": round(e.high, 4), "n": e.n}


def write_winner_template(search: SuiteSearch, state: PluginState) -> Path:
    plan = search.plan
    sel = search.selection
    assert sel is not None
    base = plan.space.base
    folder = (base.path or plan.suite.template_path).parent
    # The file name comes only from the validated template id (letters, digits, _ . -).
    path, n = next_version_path(folder, base.id, base.spec.version)
    winner = sel.winner
    scores = search.scores(winner)
    base_scores = search.scores(BASELINE)
    endpoint = state.endpoints.primary
    diff = search.baseline_diff
    optimization: dict[str, Any] = {
        "suite": plan.suite.name,
        "candidate": winner,
        "score": _estimate(mean_interval(scores, seed=plan.seed)),
        "baseline": {
            "template": base.label,
            "score": _estimate(mean_interval(base_scores[: len(scores)], seed=plan.seed)),
        },
        "difference_vs_baseline": _estimate(diff) if diff else None,
        "verdict": "significant" if diff and is_significant(diff) else "not significant",
        "tied_with_best": list(sel.tied),
        "dataset": {"path": plan.dataset.path.name, "sha256": plan.dataset.sha256},
        "split": {
            "sha256": plan.suite.split(plan.dataset).sha256,
            "seed": plan.suite.spec.split.seed,
            "validation_samples": len(plan.order),
        },
        "model": endpoint.model_identity if endpoint else None,
        "calls_used": search.calls(),
        "grid_calls": plan.grid_candidates * len(plan.order),
        "strategy": plan.strategy.name,
        "seed": plan.seed,
        "search_space": plan.space.path.name,
        "dimensions": plan.candidates[winner].dimensions(plan.space),
        "run_dir": str(search.run_dir.root),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    mapping = plan.candidates[winner].to_mapping(plan.space, plan.suite, plan.space.train)
    mapping.update(
        version=f"v{n}",
        description=f"Found by pytest --optimize ({plan.strategy.name}) from {base.label}: candidate {winner}.",
        optimization=optimization,
    )
    text = f"# Written by pytest --optimize; validate with: pytest {plan.suite.path.parent.name}/ --prompt-template {path.parent.name}/{path.name}\n"
    text += yaml.dump(mapping, Dumper=_BlockDumper, sort_keys=False, allow_unicode=True, width=100)
    write_new_file(path, text)
    return path


def summary_lines(search: SuiteSearch, top: int = 10) -> list[str]:
    plan = search.plan
    sel = search.selection
    grid = plan.grid_candidates * len(plan.order)
    lines = [
        f"run dir: {search.run_dir.root}",
        f"strategy {plan.strategy.name}, seed {plan.seed}: {search.calls()} calls of a {grid}-call grid "
        f"({plan.grid_candidates} candidates x {len(plan.order)} validation samples, {search.calls() / grid:.0%})",
    ]
    if sel is None:
        return [*lines, "no candidate finished"]
    rows = []
    shown = list(sel.ranking[:top])
    for rank, r in enumerate(shown, start=1):
        interval = f"{r.interval.low:.3f}-{r.interval.high:.3f}" if r.interval else ""
        mark = "winner" if r.candidate == sel.winner else ("tie" if r.candidate in sel.tied else "")
        rows.append(
            [
                rank,
                r.candidate,
                f"{r.mean:.3f}",
                interval,
                r.samples_seen,
                "" if math.isinf(r.cost) else f"{r.cost:.0f}",
                "" if r.pruned_round is None else r.pruned_round + 1,
                mark,
            ]
        )
    base = search.scores(BASELINE)
    if base:
        rows.append(
            [
                "",
                BASELINE,
                f"{sum(base) / len(base):.3f}",
                "",
                len(base),
                f"{search.cost(BASELINE):.0f}",
                "",
                "",
            ]
        )
    lines.append(
        tabulate(rows, headers=["#", "candidate", "mean", "95% CI", "n", "tokens/call", "pruned in", ""])
    )
    diff = search.baseline_diff
    if diff is not None:
        verdict = "significant" if is_significant(diff) else "not significant"
        lines.append(
            f"winner {sel.winner} vs baseline: {diff.mean:+.3f} (95% CI {diff.low:+.3f} to {diff.high:+.3f}, "
            f"n={diff.n}): {verdict}"
        )
    if search.winner_path:
        lines.append(f"wrote {search.winner_path}")
        lines.append(f"validate: pytest {plan.suite.path.parent} --prompt-template {search.winner_path}")
    elif not search.complete:
        lines.append("search incomplete (interrupted or items deselected): no winner file written")
    return lines


# ---------------------------------------------------------------- registration


def configure(config: pytest.Config, state: PluginState) -> None:
    """Called from plugin.pytest_configure: registers what this process needs."""
    optimizing = bool(getattr(config.option, "promptsweep_optimize", False))
    worker = hasattr(config, "workerinput")
    ctx: OptimizeContext | None = None
    if optimizing:
        timeout = config.option.promptsweep_round_timeout
        if timeout <= 0:
            raise pytest.UsageError(f"--search-round-timeout must be positive, got {timeout}")
        if worker:
            shared = config.workerinput.get(WORKERINPUT_KEY) or {}  # type: ignore[attr-defined]
            session_dir = Path(shared["optimize_dir"])
        else:
            session_dir = RunDirectory.create(state.settings.base_dir, "optimize").root
        ctx = OptimizeContext(session_dir=session_dir, round_timeout=timeout)
        config.stash[context_key] = ctx
        config.pluginmanager.register(OptimizeCollection(config), "promptsweep-optimize-collection")
        if not worker:
            config.pluginmanager.register(OptimizeController(config, state, ctx), "promptsweep-optimize")
