"""`--optimize` on the real llama-server, on three datasets, read against both floors.

For each dataset the example suite's own search space runs cold (``--llm-cache off``) in a
scratch copy of the project (so no winner file lands in the repository), and the script reads
the run's ``all_results.json``: the test split's constant and lookup floors, the baseline's and
the winner's test scores (samples no decision read), the winner's selection score (validation,
where it was chosen: optimistic), the verdicts on the test split, calls and time against the
estimate. It writes its section of benchmarks/RESULTS.md.

Datasets: the example suite's own data, ``../shared/datasets/k8s-golden-v1.json`` and
``benchmarks/data/k8s-unseen-v1.json`` (hand-written, other root causes; the search builds its
pool from that set's train split and confirms on its test split like any other).

Run on a quiet machine: ``python benchmarks/bench_optimize.py [--budget 10m] [--only example,golden]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from results_md import update_section
from tabulate import tabulate

ROOT = Path(__file__).resolve().parents[1]
DATASETS = {
    "example": None,
    "golden": ROOT.parent / "shared" / "datasets" / "k8s-golden-v1.json",
    "unseen": ROOT / "benchmarks" / "data" / "k8s-unseen-v1.json",
}


class RunFailed(Exception):
    """One dataset's search did not produce an all_results.json to read."""


def optimize(name: str, dataset: Path | None, budget: str, workdir: Path) -> dict[str, Any]:
    """One cold search in a scratch project; the figures of its all_results.json."""
    project = workdir / name
    shutil.copytree(ROOT / "evals", project / "evals", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "prompt_templates", project / "prompt_templates")
    shutil.copy(ROOT / "conftest.py", project / "conftest.py")
    command = [
        sys.executable, "-m", "pytest", "evals/", "--optimize", "-n", "auto", "--llm-cache", "off",
        "--optimize-budget", budget, "-p", "no:cacheprovider", "-q",
    ]  # fmt: skip
    if dataset is not None:
        command += ["--golden", str(dataset)]
    env = {**os.environ, "PROMPTSWEEP_DIR": str(project / ".promptsweep")}
    started = time.monotonic()
    proc = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    runs = sorted((project / ".promptsweep" / "runs").glob("*-optimize"))
    if not runs:
        print(proc.stdout[-4000:], proc.stderr[-4000:], file=sys.stderr)
        raise RunFailed(f"--optimize exited {proc.returncode} without a run folder")
    if proc.returncode not in (0, 1):  # 1: the gate or "no winner" are results, not failures
        print(proc.stdout[-4000:], proc.stderr[-4000:], file=sys.stderr)
        raise RunFailed(f"--optimize exited {proc.returncode}")
    data: dict[str, Any] = json.loads((runs[-1] / "all_results.json").read_text())
    data["wall_s"] = seconds
    data["output"] = proc.stdout + proc.stderr
    shown = " ".join(["pytest", *command[3:]]).replace(str(ROOT) + os.sep, "")
    data["command"] = shown.replace(str(ROOT.parent), "..")
    return data


def _score(entry: dict[str, Any] | None) -> str:
    if not entry or entry.get("mean") is None:
        return "—"
    return f"{entry['mean']:.3f} ({entry['low']:.3f}-{entry['high']:.3f})"


def _diff(entry: dict[str, Any] | None) -> str:
    if not entry:
        return "—"
    if entry["significant"]:
        word = "significant"
    elif entry["high"] < 0:
        word = "significantly worse"
    else:
        word = "not significant"
    return f"{entry['mean']:+.3f} ({entry['low']:+.3f}..{entry['high']:+.3f}), {word}"


def row(name: str, data: dict[str, Any]) -> list[str]:
    test = data["test"]
    floors = test.get("floors") or {}
    winner = data.get("winner")
    selection = next((c for c in data["candidates"] if c["candidate"] == winner), None)
    calls = data["candidate_calls"] + data["baseline_calls"] + test.get("calls", 0)
    return [
        name,
        str(test["n"]),
        f"{floors.get('constant'):.3f}" if floors.get("constant") is not None else "—",
        f"{floors.get('lookup'):.3f}" if floors.get("lookup") is not None else "—",
        _score(test["scores"].get("baseline")),
        f"{selection['mean']:.3f} (n={selection['n']})" if selection else "—",
        _score(test["scores"].get(winner)) if winner else "—",
        _diff(test["verdicts"].get("baseline")),
        _diff(test["verdicts"].get("lookup")),
        f"{calls}",
        f"{data['wall_s'] / 60:.1f} ({(data['estimated_s'] or 0) / 60:.1f})",
        "written"
        if data.get("winner_file")
        else f"not written: {data.get('promotion') or data.get('stopped')}",
    ]


HEADERS = [
    "dataset",
    "test n",
    "constant",
    "lookup",
    "baseline (test)",
    "best, selection (validation)",
    "best (test)",
    "best - baseline (test)",
    "best - lookup (test)",
    "calls",
    "min (estimate)",
    "winner file",
]


FAMILY_HEADERS = [
    "dataset",
    "family",
    "best member (chosen on validation)",
    "validation",
    "test",
    "test - lookup (95% CI)",
    "calls per answer",
]


def family_rows(name: str, data: dict[str, Any]) -> list[list[str]]:
    """Each family's best on the test split (``families`` of all_results.json)."""
    rows = []
    for f in data.get("families") or []:
        d = f.get("minus_lookup")
        rows.append([
            name, f["family"], f"`{f['member']}`",
            "—" if f["validation"] is None else f"{f['validation']:.3f}",
            "not asked" if f["test"] is None else f"{f['test']:.3f} (n={f['test_n']})",
            "—" if not d else f"{d['mean']:+.3f} ({d['low']:+.3f}..{d['high']:+.3f})",
            "—" if f["calls_per_answer"] is None else f"{f['calls_per_answer']:.2f}",
        ])  # fmt: skip
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--budget", default="10m", help="--optimize-budget of each search. Default: 10m")
    parser.add_argument(
        "--only", default=",".join(DATASETS), help="comma-separated subset of: " + ", ".join(DATASETS)
    )
    parser.add_argument("--no-write", action="store_true", help="do not update benchmarks/RESULTS.md")
    parser.add_argument("--keep", help="a folder to copy each dataset's all_results.json into")
    parser.add_argument(
        "--reuse",
        help="a --keep folder of an earlier run: datasets not in --only are shown from its all_results.json "
        "(each with the time it was measured), so re-measuring one dataset keeps the others' rows",
    )
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n]
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        parser.error(f"unknown dataset {unknown[0]!r}; choose from {', '.join(DATASETS)}")
    keep = Path(args.keep) if args.keep else None
    runs: dict[str, dict[str, Any]] = {}
    if args.reuse:
        for name in DATASETS:
            kept = Path(args.reuse) / f"{name}-all_results.json"
            if name not in names and kept.is_file():
                runs[name] = json.loads(kept.read_text())
    with tempfile.TemporaryDirectory(prefix="promptsweep-bench-optimize-") as tmp:
        for name in names:
            try:
                data = optimize(name, DATASETS[name], args.budget, Path(tmp))
            except RunFailed as failed:
                runs[name] = {"failed": str(failed)}
                continue
            if keep is not None:
                keep.mkdir(parents=True, exist_ok=True)
                (keep / f"{name}.out").write_text(data["output"])
                (keep / f"{name}-all_results.json").write_text(json.dumps(data, indent=2))
            runs[name] = data
            print(tabulate([row(name, data)], headers=HEADERS), flush=True)
            print(tabulate(family_rows(name, data), headers=FAMILY_HEADERS), flush=True)
            if not args.no_write:
                # After every dataset, so a later failure loses nothing measured.
                write(args.budget, [n for n in DATASETS if n in runs], *render(runs))
    if not names and not args.no_write:
        # --only '' --reuse DIR: render the section again from kept results, measuring nothing.
        write(args.budget, [n for n in DATASETS if n in runs], *render(runs))
    return 0


def render(runs: dict[str, dict[str, Any]]) -> tuple[list[list[str]], list[list[str]], list[str]]:
    """The two tables and the command lines, in DATASETS order."""
    rows: list[list[str]] = []
    families: list[list[str]] = []
    commands: list[str] = []
    for name in DATASETS:
        data = runs.get(name)
        if data is None:
            continue
        if "failed" in data:
            rows.append([name, *["—"] * (len(HEADERS) - 2), f"run failed: {data['failed']}"])
            commands.append(f"- {name}: failed: {data['failed']}")
            continue
        rows.append(row(name, data))
        families.extend(family_rows(name, data))
        commands.append(
            f"- {name} (measured {measured_at(data)}): `{data['command']}`; best `{data.get('winner')}`; "
            f"{data.get('stopped') or 'complete'}; {data.get('promotion') or ''}"
        )
    return rows, families, commands


def measured_at(data: dict[str, Any]) -> str:
    """When the search ran: its run folder's UTC stamp (``.promptsweep/runs/<stamp>-<suite>-optimize``)."""
    found = re.search(r"runs/(\d{8}T\d{4})\d{2}Z-", data.get("output", ""))
    if not found:
        return "?"
    return datetime.strptime(found.group(1), "%Y%m%dT%H%M").strftime("%Y-%m-%d %H:%M UTC")


def write(
    budget: str, names: list[str], rows: list[list[str]], families: list[list[str]], commands: list[str]
) -> None:
    load = os.getloadavg()[0]
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = "\n".join(
        [
            "## `--optimize` on the real llama-server, against both floors",
            "",
            f"`python benchmarks/bench_optimize.py` ({', '.join(names)}; each search's budget in its command "
            f"below) on "
            f"{os.uname().nodename} ({os.cpu_count()} CPUs, load average {load:.1f} at the end), {stamp}: the "
            "example suite's own search space, cold (`--llm-cache off`), on the managed llama-server "
            "(SmolLM2-135M-Instruct Q4_1, -np 4). Scores are weighted per-sample means with 95% intervals. "
            "*Test* is the split no decision of the search read; *selection* is the best candidate's validation "
            "score, where it was picked as the best of every candidate (optimistic); it is written as the "
            "winner only when it beats the baseline on test. *Lookup*: the labels of the most "
            "similar train sample, no model call.",
            "",
            tabulate(rows, headers=HEADERS, tablefmt="github"),
            "",
            "Each candidate family's best member, chosen on validation like the best, scored on the same "
            "test samples (prompt-only: every sample asked; gated lookup: near-duplicates copied, the rest "
            "asked; neighbour choice: label enums from the 4 nearest train samples; kNN vote: no call). "
            "*Test - lookup* is paired over the test samples; a family beats the lookup floor when its "
            "interval is above 0.",
            "",
            tabulate(families, headers=FAMILY_HEADERS, tablefmt="github")
            if families
            else "(no family scored)",
            "",
            *commands,
        ]
    )
    update_section("optimize-real", body)
    print("wrote benchmarks/RESULTS.md", flush=True)


if __name__ == "__main__":
    sys.exit(main())
