"""``promptsweep check [PATH ...]``: every file ``pytest`` or ``--optimize`` would read, validated
without calling a model.

Suites with their dataset, template, rendered prompts and search space; the templates under
``prompt_templates/``; the experiments under ``evals/experiments/``; loose search spaces and
datasets given by path. Problems print as the loaders print them (``file:line: key: what; did
you mean …``), every one of them rather than the first, and the exit code is 1 when there is one.

The files it opens follow pytest's path rule (``core/io/paths.py``): under the project found as
pytest finds its rootdir, a suite, template, search space or experiment may name files inside
the project only (symbolic links resolved), unless ``--allow-path DIR`` allows a folder; a file
found by walking a folder is not opened when it resolves outside. ``check`` says "no problems"
only where pytest would read the same files.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from promptsweep.cli.args import add, value
from promptsweep.config.options import ALLOW_PATH
from promptsweep.core.answers.metrics import MetricRegistry, UnknownMetricError
from promptsweep.core.data.dataset import read_records
from promptsweep.core.data.experiment import EXPERIMENTS_DIR, TEMPLATES_DIR, load_experiment
from promptsweep.core.data.suite import Suite, is_suite_file, load_suite
from promptsweep.core.evaluate import Evaluator
from promptsweep.core.io.errors import ConfigError, PromptsweepError
from promptsweep.core.io.load import load_model_file
from promptsweep.core.io.paths import PathPolicy, contained, path_policy, set_path_policy
from promptsweep.core.templates.template import load_template
from promptsweep.optimize.space import SearchSpaceSpec, load_search_space, space_path_for

if TYPE_CHECKING:
    from promptsweep.cli.args import SubParsers

SPACE_NAME = re.compile(r"\.space([-_.][A-Za-z0-9_-]+)?\.ya?ml$")
DATA_SUFFIXES = (".json", ".jsonl", ".ndjson")
YAML_SUFFIXES = (".yaml", ".yml")
_SKIP_DIRS = {"node_modules", "__pycache__", "venv", "site-packages", "build", "dist", "schemas"}
_ROOT_MARKERS = ("pyproject.toml", "pytest.ini", "tox.ini", "setup.cfg")


@dataclass
class Report:
    """What ``check`` found: one line per file that is fine, every problem, and warnings."""

    ok: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seen: set[Path] = field(default_factory=set)

    def run(self, path: Path, check: Callable[[], str]) -> None:
        """Run one check; a ``ConfigError`` is a problem, anything else a bug worth reporting too."""
        path = path.resolve()
        if path in self.seen:
            return
        self.seen.add(path)
        try:
            what = check()
        except PromptsweepError as exc:
            self.problems.append(str(exc))
        except Exception as exc:  # a loader bug must not hide the other files' problems
            self.problems.append(f"{path}: cannot be checked: {type(exc).__name__}: {exc}")
        else:
            self.ok.append(f"{shown(path)}: {what}")


def shown(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def find_rootdir(start: Path) -> Path:
    """Where pytest would put its rootdir: the nearest folder up with a project file, else here."""
    start = start.resolve()
    for folder in [start if start.is_dir() else start.parent, *start.parents]:
        if any((folder / name).is_file() for name in _ROOT_MARKERS):
            return folder
    return Path.cwd()


@contextmanager
def project_paths(start: Path, allowed: Sequence[Path] = ()) -> Iterator[PathPolicy]:
    """pytest's path rule for the length of one command: files in the project found from
    ``start`` (as pytest finds its rootdir) may name files inside it or under ``allowed``."""
    previous = path_policy()
    policy = PathPolicy.of(find_rootdir(start), allowed)
    set_path_policy(policy)
    try:
        yield policy
    finally:
        set_path_policy(previous)


def add_allow_path(parser: argparse.ArgumentParser) -> None:
    """``--allow-path DIR`` (repeatable), as pytest has it."""
    add(parser, ALLOW_PATH)


def allowed_paths(args: argparse.Namespace) -> tuple[Path, ...]:
    return tuple(value(args, ALLOW_PATH))


def registry_for(suite: Suite, report: Report) -> MetricRegistry:
    """The built-in metrics, plus a stand-in for a name a ``conftest.py`` may register
    (pytest would know it; without pytest this can only warn)."""
    registry = MetricRegistry()
    for name, spec in suite.fields.items():
        try:
            registry.resolve(spec.metric, field=name)
        except UnknownMetricError as exc:
            if ":" in spec.metric:
                raise ConfigError(f"{suite.path}: fields.{name}.metric: {exc}") from exc
            report.warnings.append(
                f"{suite.path}: fields.{name}.metric: {spec.metric!r} is not built in; fine if a "
                "conftest.py registers it (pytest_promptsweep_register_metrics), else " + str(exc)
            )
            registry.register(spec.metric.strip(), lambda expected, got: 0.0)
    return registry


def check_suite(path: Path, report: Report) -> str:
    """What a plain run loads at collection, and the search space ``--optimize`` would read."""
    suite = load_suite(path)
    suite.check_files()
    registry = registry_for(suite, report)
    dataset = suite.load_dataset()
    report.warnings.extend(dataset.warnings)
    template = suite.load_template()
    report.seen.add(suite.template_path.resolve())
    suite.check_template_inputs(template, dataset)
    evaluator = Evaluator(suite, template, registry, dataset=dataset)
    samples = suite.samples_to_evaluate(dataset)
    for sample in samples:
        evaluator.messages(sample)
    what = f"suite, {len(samples)} of {len(dataset.samples)} samples rendered with {template.label}"
    if suite.spec.search_space:
        space_path = space_path_for(suite, None)
        space = load_search_space(space_path, suite, dataset)
        report.seen.add(space_path)
        what += f", search space {shown(space_path)} ({len(space.candidates())} candidates)"
    return what


def check_template(path: Path) -> str:
    template = load_template(path)
    return f"template {template.label}"


def check_space(path: Path, suites: list[Path]) -> str:
    """A space no suite names (``--search-space PATH``): against the first suite next to it, else
    its keys and base template only."""
    for suite_path in suites:
        try:
            suite = load_suite(suite_path)
            dataset = suite.load_dataset()
        except PromptsweepError:
            continue  # that suite's own problems are reported against it
        space = load_search_space(path, suite, dataset)
        return f"search space ({len(space.candidates())} candidates, with {shown(suite_path)})"
    spec = load_model_file(path, SearchSpaceSpec, "a search space")
    base = contained(
        path.parent / spec.base_template, key="base_template", where=path, value=spec.base_template
    )
    if not base.is_file():
        raise ConfigError(f"{path}: base_template: prompt template not found: {base}")
    load_template(base)
    return "search space; no suite next to it, so its labels and examples were not checked"


def check_experiment(path: Path, rootdir: Path) -> str:
    experiment = load_experiment(path, rootdir)
    return f"experiment {experiment.id}"


def check_dataset(path: Path) -> str:
    return f"dataset, {len(read_records(path))} records"


def _is_space(name: str) -> bool:
    """``x.space.yaml`` and its variants (``x.space-small.yaml``)."""
    return SPACE_NAME.search(name) is not None


def _walk(folder: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in _SKIP_DIRS)
        for name in sorted(filenames):
            yield Path(dirpath) / name


def check_paths(paths: list[Path], allowed: Sequence[Path] = ()) -> Report:
    """Check files and folders (recursively); suites first, so what they read is checked in
    context; under pytest's path rule (``--allow-path``: ``allowed``)."""
    start = paths[0] if paths else Path.cwd()
    with project_paths(start, allowed):
        return _check_paths(paths, find_rootdir(start))


def _found(path: Path, report: Report) -> bool:
    """Whether a file found by walking a folder may be opened: a link out of the project is
    reported (as the path rule words it), not read."""
    try:
        contained(path, key="file", where=path, value=str(path))
    except ConfigError as exc:
        report.problems.append(str(exc))
        report.seen.add(path.resolve())
        return False
    return True


def _check_paths(paths: list[Path], rootdir: Path) -> Report:
    report = Report()
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(found for found in _walk(path) if _found(found, report))
        elif path.is_file():
            files.append(path)
        else:
            report.problems.append(f"{path}: no such file or folder")
    explicit = {p.resolve() for p in paths if p.is_file()}
    suites = [p for p in files if is_suite_file(p)]
    for path in suites:
        report.run(path, lambda path=path: check_suite(path, report))  # type: ignore[misc]
    for path in files:
        resolved = path.resolve()
        if resolved in report.seen:
            continue
        name = path.name
        parents = {p.name for p in path.parents}
        if _is_space(name):
            near = [s for s in suites if s.parent.resolve() == resolved.parent]
            report.run(path, lambda path=path, near=near: check_space(path, near))  # type: ignore[misc]
        elif name.endswith(YAML_SUFFIXES) and (
            TEMPLATES_DIR.name in parents or (resolved in explicit and "experiments" not in parents)
        ):
            report.run(path, lambda path=path: check_template(path))  # type: ignore[misc]
        elif name.endswith(YAML_SUFFIXES) and (
            resolved.parent == (rootdir / EXPERIMENTS_DIR).resolve() or "experiments" in parents
        ):
            report.run(path, lambda path=path: check_experiment(path, rootdir))  # type: ignore[misc]
        elif resolved in explicit and name.endswith(DATA_SUFFIXES):
            report.run(path, lambda path=path: check_dataset(path))  # type: ignore[misc]
    return report


def _check_command(args: argparse.Namespace) -> int:
    paths = [Path(p) for p in (args.paths or ["."])]
    report = check_paths(paths, allowed_paths(args))
    if not args.quiet:
        for line in report.ok:
            print(f"ok  {line}")
    for line in report.warnings:
        print(f"warning: {line}", file=sys.stderr)
    for line in report.problems:
        print(line, file=sys.stderr)
    checked = len(report.ok) + len(report.problems)
    if report.problems:
        print(f"{len(report.problems)} problem(s) in {checked} file(s) checked", file=sys.stderr)
        return 1
    if not checked:
        print(f"nothing to check under {', '.join(map(str, paths))} (no *.suite.yaml, templates or spaces)")
        return 1
    print(f"{checked} file(s) checked, no problems")
    return 0


def register_check(subparsers: SubParsers) -> None:
    """``promptsweep check [PATH ...]``: validate without calling a model."""
    parser = subparsers.add_parser(
        "check",
        help="validate suites, templates, datasets, search spaces and experiments without a model",
        description="Load every file pytest or --optimize would read (suites and what they name, "
        "templates under prompt_templates/, experiments, search spaces) and render every prompt, "
        "without calling a model. Exit code 1 when there is a problem.",
    )
    parser.add_argument(
        "paths", nargs="*", metavar="PATH", help="files or folders to check (default: the current folder)"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="print problems only")
    add_allow_path(parser)
    parser.set_defaults(handler=_check_command)


__all__ = ["Report", "add_allow_path", "allowed_paths", "check_paths", "project_paths", "register_check"]
