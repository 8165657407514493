"""``promptsweep harvest`` and ``promptsweep add``: production inputs back into the golden set.

Both read (and ``add`` writes) the files the suite names under pytest's path rule: a suite in
the project may name files inside it only (symbolic links resolved) unless ``--allow-path DIR``
allows a folder, so ``add`` cannot append to a dataset that pytest itself would refuse to read.
What ``harvest`` writes is redacted first (``core/io/redact.py``, via ``read_source``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from promptsweep.cli.check import add_allow_path, allowed_paths, project_paths
from promptsweep.core.data.suite import load_suite
from promptsweep.core.harvest.coverage import DEFAULT_THRESHOLD, harvest
from promptsweep.core.harvest.merge import add_labelled, dumps_records, unlabelled
from promptsweep.core.harvest.spans import read_source
from promptsweep.core.io.errors import PromptsweepError
from promptsweep.core.io.files import write_text_atomic


def _threshold(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expects a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be within [0, 1], got {value}; e.g. --threshold 0.5")
    return value


def _harvest(args: argparse.Namespace) -> int:
    try:
        with project_paths(args.suite, allowed_paths(args)):
            suite = load_suite(args.suite)
            dataset = suite.load_dataset()
            template = suite.load_template()
            candidates, stats = read_source(args.source, suite=suite.name)
            golden = [(s.id, s.data) for s in dataset.samples]
            result = harvest(suite, template, golden, candidates, threshold=args.threshold)
        out: Path = args.out or Path(f"harvested-{suite.name}.jsonl")
        records = [unlabelled(suite, dataset.id_source, item) for item in result.kept]
        write_text_atomic(out, dumps_records(records, out.suffix.lower()))
    except PromptsweepError as exc:
        print(f"promptsweep harvest: error: {exc}", file=sys.stderr)
        return 2
    read = f"{stats.spans} spans" if stats.spans else f"{stats.records} records"
    skipped = []
    if stats.without_input:
        skipped.append(f"{stats.without_input} spans without {'promptsweep.input'} (LLM-call and run spans)")
    if stats.other_suite:
        skipped.append(f"{stats.other_suite} of other suites")
    print(
        f"read {len(candidates)} inputs from {args.source} ({read})"
        + (f"; skipped {', '.join(skipped)}" if skipped else "")
        + f"; {result.covered} covered by the golden set ({len(golden)} samples, similarity >= {args.threshold:g}), "
        f"{result.duplicates} repeats, {result.empty} empty",
        file=sys.stderr,
    )
    print(
        f"wrote {len(records)} unlabelled samples to {out}, most unlike the golden set first", file=sys.stderr
    )
    if records:
        print(
            f"label them (fill {', '.join(suite.fields)}), then: promptsweep add {out} --suite {args.suite}",
            file=sys.stderr,
        )
    print(out)
    return 0


def _add(args: argparse.Namespace) -> int:
    try:
        with project_paths(args.suite, allowed_paths(args)):
            suite = load_suite(args.suite)
            result = add_labelled(suite, args.labelled)
    except PromptsweepError as exc:
        print(f"promptsweep add: error: {exc}", file=sys.stderr)
        return 1
    for warning in result.warnings:
        print(f"promptsweep add: warning: {warning}", file=sys.stderr)
    print(f"added {result.added} samples to {result.path}")
    return 0


def register_harvest(subparsers: Any) -> None:
    """``promptsweep harvest SOURCE --suite S [--threshold T] [--out FILE]``."""
    text = (
        "turn production inputs (a run's OTLP/JSON spans, or a JSONL of input records) into "
        "unlabelled samples the golden set does not cover, most novel first"
    )
    parser: argparse.ArgumentParser = subparsers.add_parser("harvest", help=text, description=text)
    parser.add_argument("source", type=Path, metavar="SOURCE", help="OTLP/JSON trace file or JSONL of inputs")
    parser.add_argument(
        "--suite", type=Path, required=True, metavar="SUITE", help="the *.suite.yaml to harvest for"
    )
    parser.add_argument(
        "--threshold",
        type=_threshold,
        default=DEFAULT_THRESHOLD,
        metavar="T",
        help="an input at least this similar (normalised BM25, 0..1) to a golden sample is covered "
        f"and dropped. Default: {DEFAULT_THRESHOLD}.",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="FILE",
        help="where the unlabelled samples go (.jsonl, .json or .yaml). Default: harvested-<suite>.jsonl.",
    )
    add_allow_path(parser)
    parser.set_defaults(handler=_harvest)


def register_add(subparsers: Any) -> None:
    """``promptsweep add LABELLED --suite S``."""
    text = (
        "check labelled samples against a suite (fields, values, inputs, ids) and merge them into "
        "its dataset file, so the next pytest run collects them"
    )
    parser: argparse.ArgumentParser = subparsers.add_parser("add", help=text, description=text)
    parser.add_argument(
        "labelled", type=Path, metavar="LABELLED", help="labelled samples (.jsonl, .json or .yaml)"
    )
    parser.add_argument(
        "--suite", type=Path, required=True, metavar="SUITE", help="the *.suite.yaml whose dataset grows"
    )
    add_allow_path(parser)
    parser.set_defaults(handler=_add)
