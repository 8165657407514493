"""A newcomer's first try on real data of another domain (issue 28), on the real managed llama-server.

In a scratch project (nothing lands in the repository) it types what the README gives a user:
``promptsweep init bgl --data bgl_140.jsonl`` (no flags) on the 140 loghub BlueGene/L log lines
of ``tests/data/loghub_bgl/``, ``promptsweep check bgl``, the first run ``pytest bgl -n 2``, and
``pytest bgl --optimize -n 2`` with the search space ``init`` wrote. Both runs are cold
(``--llm-cache off``) so the times are the model's. It writes the ``newcomer`` section of
benchmarks/RESULTS.md: the winner against the baseline on the test split, beside both floors
(a constant answer, and copying the nearest train sample's labels without a call).

Run on a quiet machine: ``python benchmarks/bench_newcomer.py [--optimize-budget 10m] [--skip-run]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench_optimize import HEADERS, row
from results_md import RESULTS_MD, update_section
from tabulate import tabulate

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "data" / "loghub_bgl" / "bgl_140.jsonl"
SECTION = "newcomer"


class StepFailed(Exception):
    """A README command did not end as a user would need it to."""


def typed(command: list[str]) -> str:
    """A command as the user types it: ``promptsweep ...`` or ``pytest ...``."""
    words = command[2:] if command[:2] == [sys.executable, "-m"] else command
    return " ".join(["promptsweep", *words[1:]] if words[0] == "promptsweep.cli.main" else words)


def step(project: Path, command: list[str], ok: tuple[int, ...] = (0,)) -> tuple[str, float]:
    """One command in the scratch project: its output and seconds; a bad exit code is a failure."""
    env = {**os.environ, "PROMPTSWEEP_DIR": str(project / ".promptsweep")}
    started = time.monotonic()
    done = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    output = done.stdout + done.stderr
    print(f"$ {typed(command)}: exit {done.returncode}, {seconds / 60:.1f} min", flush=True)
    if done.returncode not in ok:
        print(output[-4000:], file=sys.stderr)
        raise StepFailed(f"{typed(command)} exited {done.returncode}")
    return output, seconds


def scenario(project: Path, budget: str, skip_run: bool, rows: int | None = None) -> dict[str, Any]:
    """The README's commands, in order; what each said that RESULTS.md reports. ``rows``: a
    spread-out slice of the data instead of all of it (a quick check of the script)."""
    lines = FIXTURE.read_text().splitlines(keepends=True)
    if rows is not None and rows < len(lines):
        lines = [lines[i * len(lines) // rows] for i in range(rows)]
    (project / FIXTURE.name).write_text("".join(lines))
    cli = [sys.executable, "-m", "promptsweep.cli.main"]
    made, _ = step(project, [*cli, "init", "bgl", "--data", FIXTURE.name])
    step(project, [*cli, "check", "bgl"])
    result: dict[str, Any] = {"init": made}
    pytest = [
        sys.executable,
        "-m",
        "pytest",
        "bgl",
        "-n",
        "2",
        "--llm-cache",
        "off",
        "-p",
        "no:cacheprovider",
        "-q",
    ]
    if not skip_run:
        output, seconds = step(project, pytest, ok=(0, 1))
        runs = sorted(p for p in (project / ".promptsweep" / "runs").iterdir() if p.name.endswith("-bgl"))
        result["first_run"] = json.loads((runs[-1] / "metrics.json").read_text())
        result["first_run_min"] = seconds / 60
        proposed = re.search(r"thresholds\.overall: (\d\.\d\d) would gate", output)
        result["proposed_gate"] = proposed.group(1) if proposed else None
    output, seconds = step(project, [*pytest, "--optimize", "--optimize-budget", budget], ok=(0, 1))
    runs = sorted((project / ".promptsweep" / "runs").glob("*-optimize"))
    if not runs:
        raise StepFailed("--optimize left no run folder")
    data: dict[str, Any] = json.loads((runs[-1] / "all_results.json").read_text())
    data["wall_s"] = seconds
    data["output"] = output
    result["optimize"] = data
    return result


def _picked(init_output: str) -> str:
    """init's lines about each key, as it printed them."""
    return "\n".join(
        f"    {line.strip()}" for line in init_output.splitlines() if line.startswith("  ") and ":" in line
    )


def _row(data: dict[str, Any]) -> list[str]:
    """bench_optimize's row; a search stopped before any verdict says so in the last column."""
    try:
        return row("loghub BGL", data)
    except (KeyError, TypeError):
        return ["loghub BGL", *["—"] * (len(HEADERS) - 2), f"no verdict: {data.get('stopped') or '?'}"]


def render(result: dict[str, Any], budget: str, skip_run: bool, commit: str, rows: int | None) -> str:
    data = result["optimize"]
    load = os.getloadavg()[0]
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "## A newcomer's real data: loghub BGL through the README commands",
        "",
        f"`python benchmarks/bench_newcomer.py --optimize-budget {budget}"
        + (" --skip-run" if skip_run else "")
        + (f" --rows {rows}" if rows else "")
        + f"` at {commit} on "
        f"{os.uname().nodename} ({os.cpu_count()} CPUs, load average {load:.1f} at the end), {stamp}: "
        f"{rows or 140} BlueGene/L log lines from loghub (`tests/data/loghub_bgl/`), `promptsweep init bgl --data "
        "bgl_140.jsonl` with no flags, `promptsweep check bgl`, "
        + ("" if skip_run else "`pytest bgl -n 2`, ")
        + f"`pytest bgl --optimize -n 2 --optimize-budget {budget}` with the space init wrote, cold "
        "(`--llm-cache off`), on the managed llama-server (SmolLM2-135M-Instruct Q4_1). What init picked:",
        "",
        "```",
        _picked(result["init"]),
        "```",
        "",
    ]
    first = result.get("first_run")
    if first:
        overall = first.get("overall") or {}
        constant = (first.get("constant_answer") or {}).get("score")
        lookup = (first.get("lookup_answer") or {}).get("score")
        lines += [
            f"First run (v1, all {first.get('n', '?')} samples, {result['first_run_min']:.1f} min): overall "
            f"{overall.get('mean', float('nan')):.3f} (95% CI {overall.get('low', float('nan')):.3f}-"
            f"{overall.get('high', float('nan')):.3f}); constant answer "
            + (f"{constant:.3f}" if constant is not None else "—")
            + "; lookup "
            + (f"{lookup:.3f}" if lookup is not None else "—")
            + f"; the summary proposed `thresholds.overall: {result.get('proposed_gate') or '—'}`.",
            "",
        ]
    lines += [
        "`--optimize` (*test*: the split no decision of the search read; the best is written as the "
        "winner only when it beats the baseline there):",
        "",
        tabulate([_row(data)], headers=HEADERS, tablefmt="github"),
        "",
        (f"- best `{data['winner']}`" if data.get("winner") else "- no best candidate")
        + f"; {data.get('stopped') or 'complete'}"
        + (f"; {data['promotion']}" if data.get("promotion") else ""),
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--optimize-budget", default="10m", help="--optimize-budget of the search. Default: 10m"
    )
    parser.add_argument("--skip-run", action="store_true", help="skip the first plain run (140 cold calls)")
    parser.add_argument("--no-write", action="store_true", help="print the section, do not update RESULTS.md")
    parser.add_argument("--keep", help="a folder to copy the search's all_results.json and outputs into")
    parser.add_argument(
        "--rows",
        type=int,
        default=None,
        help="use this many of the 140 lines, spread over the file (a quick check of the script; "
        "RESULTS.md figures come from all of them). Default: all",
    )
    parser.add_argument(
        "--results-md", type=Path, default=RESULTS_MD, help="the results file to update. Default: %(default)s"
    )
    args = parser.parse_args()
    commit = (
        subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()
        or "?"
    )
    with tempfile.TemporaryDirectory(prefix="promptsweep-bench-newcomer-") as tmp:
        try:
            result = scenario(Path(tmp), args.optimize_budget, args.skip_run, args.rows)
        except StepFailed as failed:
            print(f"bench_newcomer: {failed}", file=sys.stderr)
            return 1
    if args.keep:
        keep = Path(args.keep)
        keep.mkdir(parents=True, exist_ok=True)
        (keep / "newcomer-all_results.json").write_text(json.dumps(result["optimize"], indent=2))
        (keep / "newcomer-init.out").write_text(result["init"])
    body = render(result, args.optimize_budget, args.skip_run, commit, args.rows)
    print(body)
    if not args.no_write:
        update_section(SECTION, body, args.results_md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
