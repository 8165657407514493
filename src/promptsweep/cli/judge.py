"""``promptsweep judge-agreement RUN``: whether a run's judge ranks answers as its reference metric does."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from promptsweep.cli.args import add_dir, base_dir
from promptsweep.core.io.errors import PromptsweepError
from promptsweep.reporting.agreement import judge_agreement, render
from promptsweep.reporting.artifacts import read_results
from promptsweep.reporting.compare import resolve_run


def _agreement(args: argparse.Namespace) -> int:
    try:
        root = resolve_run(args.run, base_dir(args))
    except PromptsweepError as exc:
        print(f"promptsweep judge-agreement: error: {exc}", file=sys.stderr)
        return 2
    agreements = judge_agreement(read_results(root / "results.jsonl"))
    if args.json:
        print(json.dumps({"run": root.name, "fields": [a.to_json() for a in agreements]}, indent=2))
    else:
        print(f"run {root.name}")
        print(render(agreements), end="")
    return 0 if agreements else 1


def register_judge_agreement(subparsers: Any) -> None:
    """``promptsweep judge-agreement RUN [--json]``."""
    text = (
        "rank correlation (Spearman) between a run's judge scores and its reference metric "
        "(ROUGE-L vs the labelled value by default), with n: whether to trust the judge"
    )
    parser: argparse.ArgumentParser = subparsers.add_parser("judge-agreement", help=text, description=text)
    add_dir(parser)
    parser.add_argument("run", metavar="RUN", help="run directory, run name, or experiment id / suite name")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.set_defaults(handler=_agreement)
