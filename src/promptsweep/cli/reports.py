"""``promptsweep compare``, ``leaderboard`` and ``report``: reading what runs left behind."""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from promptsweep.cli.args import add, add_dir, base_dir, value
from promptsweep.config.options import TOKEN_WEIGHT
from promptsweep.core.io.errors import PromptsweepError
from promptsweep.core.io.files import os_error_line, refuse_links, write_text_atomic
from promptsweep.core.io.redact import terminal_text
from promptsweep.reporting.artifacts import REPORT_FILENAME, RUNS_DIRNAME, RunDirectory
from promptsweep.reporting.compare import LATENCY_TOLERANCE, RIGHT_AT, compare_runs, load_run, render
from promptsweep.reporting.html import render_leaderboard_report, render_run_report
from promptsweep.reporting.leaderboard import read_leaderboard, record_run
from promptsweep.reporting.leaderboard import render as render_leaderboard


def one_line_errors(
    command: str,
) -> Callable[[Callable[[argparse.Namespace], int]], Callable[[argparse.Namespace], int]]:
    """A command that reads and writes under ``--dir`` ends, when it cannot (a read-only or
    full directory, a link refused), in one line naming the path and the cause: exit 1 for a
    file that cannot be written, 2 for a refusal."""

    def wrap(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        @functools.wraps(handler)
        def run(args: argparse.Namespace) -> int:
            try:
                return handler(args)
            except PromptsweepError as exc:
                print(f"promptsweep {command}: error: {terminal_text(str(exc))}", file=sys.stderr)
                return 2
            except OSError as exc:
                print(f"promptsweep {command}: error: {terminal_text(os_error_line(exc))}", file=sys.stderr)
                return 1

        return run

    return wrap


@one_line_errors("compare")
def _compare(args: argparse.Namespace) -> int:
    try:
        comparison = compare_runs(
            args.run_a,
            args.run_b,
            base_dir(args),
            right_at=args.right_at,
            latency_tolerance=args.latency_tolerance,
        )
    except PromptsweepError as exc:
        print(f"promptsweep compare: error: {terminal_text(str(exc))}", file=sys.stderr)
        return 2
    for note in comparison.warnings():
        print(f"promptsweep compare: warning: {terminal_text(note)}", file=sys.stderr)
    print(render(comparison), end="")
    if args.markdown:
        write_text_atomic(args.markdown, render(comparison, fmt="github"))
        print(f"markdown: {args.markdown}")
    if args.json:
        write_text_atomic(args.json, json.dumps(comparison.to_json(), indent=2) + "\n")
    if args.fail_on_regression and comparison.regressed:
        return 1
    return 1 if args.fail_on_cost_regression and comparison.cost_regressed else 0


def _share(text: str) -> float:
    """A non-negative number for --latency-tolerance (0.2 = 20%)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expects a number such as 0.2, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text!r}")
    return value


def _command(subparsers: Any, name: str, text: str) -> argparse.ArgumentParser:
    """A subcommand that reads the promptsweep directory (``--dir``, shared with pytest)."""
    parser: argparse.ArgumentParser = subparsers.add_parser(name, help=text, description=text)
    add_dir(parser)
    return parser


def register_compare(subparsers: Any) -> None:
    """``promptsweep compare RUN_A RUN_B``: what changed between two runs, and is it significant."""
    parser = _command(
        subparsers,
        "compare",
        "compare two runs: paired score deltas, per field and category, and flipped samples",
    )
    parser.add_argument(
        "run_a", metavar="RUN_A", help="the baseline: run directory, run name, or experiment id"
    )
    parser.add_argument("run_b", metavar="RUN_B", help="the candidate, compared as B - A")
    parser.add_argument(
        "--markdown", type=Path, default=None, metavar="FILE", help="also write the comparison as markdown"
    )
    parser.add_argument(
        "--json", type=Path, default=None, metavar="FILE", help="also write the comparison as JSON"
    )
    parser.add_argument(
        "--right-at",
        type=float,
        default=RIGHT_AT,
        metavar="X",
        help=f"a sample is right when its score >= X (default {RIGHT_AT})",
    )
    parser.add_argument(
        "--fail-on-regression",
        action="store_true",
        help="exit 1 when B's overall score is significantly lower than A's and the drop is larger than "
        "either run's own noise (measured from repeats)",
    )
    parser.add_argument(
        "--fail-on-cost-regression",
        action="store_true",
        help="exit 1 when B's tokens per sample are significantly higher than A's (paired 95%% CI of the "
        "per-sample difference wholly above 0) or its p95 latency is, beyond --latency-tolerance; apart "
        "from --fail-on-regression, since latency depends on the machine and a prompt may buy score with "
        "tokens",
    )
    parser.add_argument(
        "--latency-tolerance",
        type=_share,
        default=LATENCY_TOLERANCE,
        metavar="X",
        help="a p95 latency rise counts only when its 95%% CI lies above X times A's p95 and above 50 ms "
        f"(default {LATENCY_TOLERANCE:g})",
    )
    parser.set_defaults(handler=_compare)


@one_line_errors("leaderboard")
def _leaderboard(args: argparse.Namespace) -> int:
    base = base_dir(args)
    entries = read_leaderboard(base)
    if args.rebuild:
        runs = base / RUNS_DIRNAME
        refuse_links(runs, within=base)
        for run_dir in sorted(runs.iterdir()) if runs.is_dir() else []:
            if run_dir.is_symlink():  # run directories never follow links
                note = (
                    f"{run_dir} is a symbolic link; left out (promptsweep does not follow links under runs/)"
                )
                print(f"promptsweep leaderboard: warning: {terminal_text(note)}", file=sys.stderr)
                continue
            if not (run_dir / "metrics.json").is_file():
                continue
            try:
                entries = record_run(base, run_dir)
            except ValueError:
                continue
    weight = value(args, TOKEN_WEIGHT)
    print(render_leaderboard(entries, fmt=args.format, suite=args.suite, token_weight=weight))
    return 0


def register_leaderboard(subparsers: Any) -> None:
    """``promptsweep leaderboard``: every configuration's latest score, best first, with its history."""
    parser = _command(subparsers, "leaderboard", "print the leaderboard (best first, with score history)")
    parser.add_argument("--suite", default=None, metavar="S", help="only this suite")
    parser.add_argument(
        "--format", choices=("table", "markdown", "json"), default="table", help="output format"
    )
    add(parser, TOKEN_WEIGHT)
    parser.add_argument("--rebuild", action="store_true", help="re-read every finished run under runs/ first")
    parser.set_defaults(handler=_leaderboard)


@one_line_errors("report")
def _report(args: argparse.Namespace) -> int:
    base = base_dir(args)
    entries = read_leaderboard(base)
    if args.run:
        run = load_run(args.run, base)  # a link at the run directory is refused
        page = render_run_report(run, entries)
        if args.output:
            out = args.output
            write_text_atomic(out, page)
        else:  # and one at its report.html
            out = RunDirectory(run.root).write_text(REPORT_FILENAME, page)
    else:
        out = args.output or base / "leaderboard.html"
        write_text_atomic(out, render_leaderboard_report(entries))
    print(out)
    return 0


def register_report(subparsers: Any) -> None:
    """``promptsweep report [--run RUN]``: write the leaderboard (or one run's) HTML page."""
    parser = _command(subparsers, "report", "write the self-contained HTML leaderboard (or a run's report)")
    parser.add_argument("--run", default=None, metavar="RUN", help="write this run's report.html instead")
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        default=None,
        metavar="FILE",
        help="where to write (default: <dir>/leaderboard.html or <run>/report.html)",
    )
    parser.set_defaults(handler=_report)
