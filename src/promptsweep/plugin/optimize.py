"""The pytest glue for ``--optimize``: one item per suite runs that suite's search.

The search itself (``promptsweep.optimize.search``) runs in the pytest process with as many
concurrent calls as the server has slots, so each round can be decided from all results at
once and progress is shown live. xdist workers would add nothing but a barrier between
processes: under ``--optimize``, ``-n N`` / ``-n auto`` sets the number of concurrent calls
instead of starting workers. Bad configuration (a space file, a budget) is one usage error
before anything runs, the same under any ``-n``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from promptsweep import __version__
from promptsweep.core.data.suite import Suite
from promptsweep.core.evaluate import SampleResult
from promptsweep.core.io.errors import ConfigError, EndpointError
from promptsweep.core.io.load import key_where
from promptsweep.llm.endpoint import Endpoint
from promptsweep.optimize.runner import Runner
from promptsweep.optimize.search import Search, SearchError, SearchOutcome, SearchSettings
from promptsweep.optimize.space import Budget, SearchSpace, load_search_space, parse_budget, space_path_for
from promptsweep.optimize.strategies import BASELINE, Strategy, make_strategy, paired_order
from promptsweep.optimize.summary import summary_lines
from promptsweep.optimize.winner import SearchContext, write_results
from promptsweep.plugin.items import SampleItem, SuiteFile
from promptsweep.plugin.options import existing_file, positive_int, redact_args
from promptsweep.plugin.state import PluginState, get_state
from promptsweep.plugin.xdist import assign_endpoint, pytest_xdist_auto_num_workers
from promptsweep.reporting.artifacts import ResultsWriter, RunDirectory, git_commit

WORKERS_KEY = pytest.StashKey[int]()
MAX_ERRORED_SHARE = 0.05
"""Errored candidate calls score 0 (a prompt too long for the context fails every time); more than
this share, or any errored baseline call, fails the item: the comparison would not be reliable."""


def _budget(text: str) -> Budget:
    try:
        return parse_budget(text)
    except ValueError as exc:
        raise pytest.UsageError(f"--optimize-budget: {exc}") from None


def _gain(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise pytest.UsageError(f"--optimize-min-gain expects a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise pytest.UsageError(f"--optimize-min-gain must be within [0, 1), got {value}; e.g. 0.02")
    return value


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("promptsweep")
    group.addoption(
        "--optimize",
        action="store_true",
        default=False,
        dest="promptsweep_optimize",
        help="Search the suite's prompt space on its validation split; write the winner as "
        "prompt_templates/<base>_v<N+1>.yaml only if it beats the baseline significantly. Default: off.",
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
        choices=("screen", "halving", "grid", "random"),
        dest="promptsweep_search_strategy",
        help="screen (screen dimension values, sweep, race the best; cost grows with the sum of the "
        "dimensions' sizes), halving (successive halving over all candidates), grid (everything), random "
        "(--search-budget N candidates). Default: the space file's search.strategy, else screen.",
    )
    group.addoption(
        "--search-budget",
        default=None,
        metavar="N",
        type=positive_int("--search-budget"),
        dest="promptsweep_search_budget",
        help="Candidates to consider (a seeded random subset): required for random, optional for halving. "
        "Default: all.",
    )
    group.addoption(
        "--search-seed",
        default=None,
        metavar="N",
        type=int,
        dest="promptsweep_search_seed",
        help="Seed for designs, subsets and the validation order. Default: the space file's, else 0.",
    )
    group.addoption(
        "--optimize-budget",
        default=None,
        metavar="CALLS|TIME",
        type=_budget,
        dest="promptsweep_optimize_budget",
        help="What the search may spend: calls (600) or wall time (90s, 30m, 1h); it plans to fit and "
        "says what it gave up. Default: the space file's search.limit, else 30m.",
    )
    group.addoption(
        "--optimize-min-gain",
        default=None,
        metavar="X",
        type=_gain,
        dest="promptsweep_optimize_min_gain",
        help="Write a winner only when its paired 95%% interval against the baseline lies above X. Default: 0.",
    )


def resolve_workers(config: pytest.Config) -> None:
    """Under ``--optimize``, ``-n`` sets concurrent calls and xdist starts no workers.

    Called from ``pytest_cmdline_main`` before xdist reads ``-n``.
    """
    if not getattr(config.option, "promptsweep_optimize", False) or hasattr(config, "workerinput"):
        return
    wanted = getattr(config.option, "numprocesses", None)
    if wanted in (None, 0, "auto", "logical"):
        workers = pytest_xdist_auto_num_workers(config) or 1
    else:
        workers = int(wanted)
    config.stash[WORKERS_KEY] = max(1, workers)
    if wanted:
        config.option.numprocesses = 0


@dataclass
class SuiteSearch:
    """One suite's optimization as collected: the space, its validation order and settings."""

    suite: Suite
    space: SearchSpace
    settings: SearchSettings
    outcome: SearchOutcome | None = None
    context: SearchContext | None = None
    winner: Path | None = None


BUDGETLESS = ("grid", "screen")
"""Strategies that size themselves to --optimize-budget and take no candidate cap (search.budget)."""


def build_search(config: pytest.Config, state: PluginState, suite_path: Path) -> SuiteSearch:
    """Load the suite's space and settings; ``ConfigError`` names the file and key."""
    opt = config.option
    suite = state.load_suite(suite_path.resolve())
    dataset = suite.load_dataset()
    space = load_search_space(space_path_for(suite, opt.promptsweep_search_space), suite, dataset)
    defaults = space.spec.search
    name = opt.promptsweep_search_strategy or defaults.strategy
    seed = defaults.seed if opt.promptsweep_search_seed is None else opt.promptsweep_search_seed
    if name in BUDGETLESS and opt.promptsweep_search_budget:
        raise pytest.UsageError(
            f"--search-budget does not apply to --search-strategy={name}: it caps the candidates of random "
            "and halving; to bound what a search spends use --optimize-budget (calls or time)"
        )
    if name in BUDGETLESS and defaults.budget and not opt.promptsweep_search_budget:
        raise ConfigError(
            f"{key_where(space.path, ('search', 'budget'))}: search.budget ({defaults.budget}) caps the candidates of "
            f"random and halving; {name} would ignore it: remove it, or bound the search with search.limit "
            "(calls or time)"
        )
    if state.settings.repeats_for(suite.spec.repeats) > 1:
        raise pytest.UsageError(
            "--optimize does not use repeats (--llm-repeats / the suite's repeats:): the search measures the "
            "server's noise itself; run without repeats, and use them on a plain run of the winner"
        )
    token_weight = getattr(opt, "promptsweep_objective_token_weight", None) or 0.0
    strategy = _make_strategy(
        config, name, opt.promptsweep_search_budget or defaults.budget, seed, space, token_weight
    )
    budget = opt.promptsweep_optimize_budget or (parse_budget(defaults.limit) if defaults.limit else None)
    split = suite.split(dataset)
    sizes = f"train {len(split.train)}, validation {len(split.validation)}, test {len(split.test)}"
    if not space.validation_ids:
        raise ConfigError(f"{suite.path}: split: the validation split is empty ({sizes}); lower split.train")
    if not split.test:
        raise ConfigError(
            f"{suite.path}: split.test: the test split is empty ({sizes}); the winner must be confirmed on "
            "samples the search never saw: raise split.test or add samples"
        )
    settings = SearchSettings(
        strategy=strategy,
        seed=seed,
        budget=budget,
        min_gain=opt.promptsweep_optimize_min_gain or 0.0,
        deterministic=state.settings.deterministic,
        token_weight=token_weight,
        model=state.settings.model,
        must_beat=tuple(defaults.must_beat),
    )
    return SuiteSearch(suite, space, settings)


def _make_strategy(
    config: pytest.Config, name: str, budget: int | None, seed: int, space: SearchSpace, token_weight: float
) -> Strategy:
    """A strategy from a project's ``pytest_promptsweep_make_strategy`` hook, else a built-in one."""
    made = config.hook.pytest_promptsweep_make_strategy(config=config, name=name, space=space, seed=seed)
    if made is not None:
        return made  # type: ignore[no-any-return]
    defaults = space.spec.search
    try:
        return make_strategy(
            name,
            budget=budget,
            seed=seed,
            eta=defaults.eta,
            min_samples=defaults.min_samples,
            token_weight=token_weight,
        )
    except ValueError as exc:
        raise pytest.UsageError(f"--search-strategy={name}: {exc}") from exc


class OptimizeItem(pytest.Item):
    """Runs one suite's search; passes when it finished without errored calls."""

    def __init__(self, *, search: SuiteSearch, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.search = search

    def runtest(self) -> None:
        config = self.config
        state = get_state(config)
        search = self.search
        suite = search.suite
        dataset = search.space.dataset
        split = suite.split(dataset)
        by_id = dataset.by_id()
        order_ids = paired_order(
            split.validation, {i: by_id[i].category for i in split.validation}, search.settings.seed
        )
        order = [by_id[i] for i in order_ids]
        test = [by_id[i] for i in sorted(split.test)]
        workers = config.stash.get(WORKERS_KEY, 1)
        sends = _sends(state, workers)
        run_dir = RunDirectory.create(
            state.settings.base_dir, state.settings.run_name or f"{suite.name}-optimize"
        )
        endpoint = state.endpoints.primary
        run_dir.write_config(
            {
                "suite": suite.name,
                "suite_path": str(suite.path),
                "mode": "optimize",
                "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "search_space": str(search.space.path),
                "strategy": search.settings.strategy.name,
                "seed": search.settings.seed,
                "budget": str(search.settings.budget) if search.settings.budget else None,
                "workers": workers,
                "validation_order": order_ids,
                "test_samples": sorted(split.test),
                "dataset": {"path": str(dataset.path), "sha256": dataset.sha256},
                "split_sha256": split.sha256,
                "model": endpoint.to_json() if endpoint else None,
                "git_commit": git_commit(config.rootpath),
                "promptsweep_version": __version__,
                "pytest_args": redact_args(list(config.invocation_params.args)),
            }
        )
        writer = ResultsWriter(run_dir.results_path)
        errors: list[SampleResult] = []

        def record(result: SampleResult) -> None:
            writer.write(result.to_json())
            if result.errored:
                errors.append(result)
            config.hook.pytest_promptsweep_result(config=config, result=result, run_dir=run_dir.root)

        reporter = _LiveLines(config, f"{suite.name}: ")
        engine = Search(
            suite,
            search.space,
            order,
            search.settings,
            state.registry,
            sends,
            record=record,
            reporter=reporter,
            test=test,
            notes=search.space.notes,
            judge=state.endpoints.judge_route,
        )
        runner = Runner(engine.run_job, workers, prefix=engine.ledger.prefix)
        search.context = SearchContext(
            suite_name=suite.name,
            project_root=config.rootpath,
            invocation_dir=config.invocation_params.dir,
            run_dir=run_dir.root,
            model=_model_identity(endpoint),
            strategy=search.settings.strategy.name,
            seed=search.settings.seed,
            budget=str(search.settings.budget) if search.settings.budget else None,
            split_sha256=split.sha256,
            suite_path=suite.path,
            deterministic=state.settings.deterministic,
            must_beat=search.settings.must_beat,
        )
        try:
            search.outcome = engine.run(runner)
        except SearchError as exc:
            raise OptimizeFailure(f"{suite.name}: {exc}") from None
        finally:
            runner.close()
            writer.close()
        outcome = search.outcome
        failed = sum(outcome.still_errored.values())
        baseline_failed = outcome.still_errored.get(BASELINE, 0)
        unreliable = baseline_failed > 0 or failed > MAX_ERRORED_SHARE * max(1, outcome.calls)
        if unreliable and outcome.promoted:
            # Decided before anything is written: no winner file from an unreliable comparison.
            outcome.promoted = False
            outcome.promotion_reason = "calls errored (see below); no winner is written from an unreliable comparison"
        search.winner, _ = write_results(outcome, search.space, search.context)
        if unreliable:
            first = next((r.error for r in reversed(errors) if r.error), "?")
            raise OptimizeFailure(
                f"{failed} of {outcome.calls} calls errored and stayed errored when asked again ({baseline_failed} of "
                f"the baseline's), so the comparison is not reliable and no winner was written; last error: {first}"
            )

    def repr_failure(self, excinfo: Any, style: Any = None) -> Any:
        if isinstance(excinfo.value, (OptimizeFailure, ConfigError, EndpointError)):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"{self.name} (search space {self.search.space.path.name})"


class OptimizeFailure(Exception):
    """The search ran but some calls failed: reported as one line."""


def _sends(state: PluginState, workers: int) -> list[Any]:
    """One send function per worker thread; several endpoints get workers in proportion to slots."""
    primary = state.endpoints.endpoint()
    infos = state.endpoints.infos
    if len(infos) <= 1:
        return [primary.send] * workers
    endpoints = [primary] + [
        Endpoint(info, state.endpoints.endpoint_config, state.endpoints.layers) for info in infos[1:]
    ]
    assigned = [0] * len(infos)
    sends = []
    for _ in range(workers):
        index = assign_endpoint(infos, assigned)
        assigned[index] += 1
        sends.append(endpoints[index].send)
    return sends


def _model_identity(info: Any) -> str | None:
    """File name + hash prefix + server build: names the model without a machine path."""
    if info is None:
        return None
    from promptsweep.core.data.dataset import file_sha256

    build = f" (llama-server {info.build_info})" if info.build_info else ""
    if info.model_path:
        path = Path(info.model_path)
        digest = f"#{file_sha256(path)[:12]}" if path.is_file() else ""
        return f"{path.name}{digest}{build}"
    return f"{info.model_id or 'model'}{build}"


class _LiveLines:
    """Progress lines printed as they happen, even while pytest captures output."""

    def __init__(self, config: pytest.Config, prefix: str) -> None:
        self.config = config
        self.prefix = prefix

    def line(self, text: str) -> None:
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        capman = self.config.pluginmanager.get_plugin("capturemanager")
        with _uncaptured(capman):
            if reporter is not None:
                reporter.ensure_newline()
                reporter.write_line(f"[promptsweep] {self.prefix}{text}")


@contextmanager
def _uncaptured(capman: Any) -> Iterator[None]:
    if capman is None:
        yield
        return
    with capman.global_and_fixture_disabled():
        yield


@dataclass
class OptimizeSession:
    """The searches of this session, in collection order."""

    searches: dict[Path, SuiteSearch] = field(default_factory=dict)


session_key = pytest.StashKey[OptimizeSession]()


class OptimizePlugin:
    """Replaces each suite's sample items with its search item, and prints the summaries."""

    def __init__(self, config: pytest.Config, state: PluginState) -> None:
        self.config = config
        self.state = state
        self.session = OptimizeSession()
        config.stash[session_key] = self.session

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_modifyitems(
        self, session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
    ) -> None:
        out: list[pytest.Item] = []
        for item in items:
            if not isinstance(item, SampleItem):
                out.append(item)
                continue
            parent = item.parent
            assert isinstance(parent, SuiteFile)
            if parent.path in self.session.searches:
                continue
            try:
                search = build_search(config, self.state, parent.path)
            except ConfigError as exc:
                raise pytest.UsageError(str(exc)) from exc
            self.session.searches[parent.path] = search
            out.append(OptimizeItem.from_parent(parent, name=f"{search.suite.name}[optimize]", search=search))
        items[:] = out

    @pytest.hookimpl
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        for search in self.session.searches.values():
            if search.outcome is None or search.context is None:
                continue
            terminalreporter.write_sep("=", f"promptsweep optimize: {search.suite.name}", bold=True)
            for text in summary_lines(search.outcome, search.space, search.context, search.winner):
                significant = text.startswith("wrote ")
                terminalreporter.write_line(text, green=significant, yellow=text.startswith("no significant"))


def configure(config: pytest.Config, state: PluginState) -> None:
    """Called from plugin.pytest_configure: registers the optimizer when asked for."""
    if getattr(config.option, "promptsweep_optimize", False) and not hasattr(config, "workerinput"):
        state.check_space = False  # build_search loads and checks it, as one usage error
        config.pluginmanager.register(OptimizePlugin(config, state), "promptsweep-optimize")
