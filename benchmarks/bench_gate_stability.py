"""Is the example suite's gate decision the same on every cold run? One command for CI owners.

Runs ``pytest evals/ -n auto --llm-cache off`` N times (each a cold run on a fresh managed
llama-server, into its own temporary ``--promptsweep-dir``) in the recommended CI setting,
``--llm-deterministic``, or in another one (``--setting default``), and reports each run's
overall score, interval, gate decision, wall time and how many answers match run 1's.
Writes its section of benchmarks/RESULTS.md. Exit code 0 when all N gate decisions agree.

Run: ``python benchmarks/bench_gate_stability.py --runs 5 [--setting deterministic|default] [-- extra pytest args]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_noise import run_suite
from results_md import update_section

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {
    "deterministic": ["-n", "auto", "--llm-deterministic"],
    "default": ["-n", "auto"],
}


def cold_run(base: Path, args: list[str]) -> dict[str, Any]:
    elapsed, proc, run_dir = run_suite(base, *args)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    answers = {}
    for line in (run_dir / "results.jsonl").read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            answers[(r["sample_id"], r.get("repeat", 0))] = r["raw"]
    return {
        "seconds": elapsed,
        "exit": proc.returncode,
        "overall": metrics["overall"],
        "passed": metrics["gate"]["passed"],
        "failures": metrics["gate"]["failures"],
        "answers": answers,
        "noise": next((ln for ln in proc.stdout.splitlines() if ln.startswith("noise:")), ""),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--setting", choices=sorted(SETTINGS), default="deterministic")
    parser.add_argument("--no-write", action="store_true", help="do not update benchmarks/RESULTS.md")
    parser.add_argument("extra", nargs="*", help="more pytest arguments (after --)")
    args = parser.parse_args()
    pytest_args = [*SETTINGS[args.setting], *args.extra]
    results = []
    with tempfile.TemporaryDirectory(prefix="ps-gate-") as tmp:
        for i in range(1, args.runs + 1):
            result = cold_run(Path(tmp) / f"run{i}", pytest_args)
            results.append(result)
            o = result["overall"]
            print(
                f"run {i}: overall {o['mean']:.4f} ({o['low']:.3f}-{o['high']:.3f}), "
                f"gate {'passed' if result['passed'] else 'FAILED'}, {result['seconds']:.0f}s",
                flush=True,
            )
    first = results[0]["answers"]
    rows = []
    for i, r in enumerate(results, 1):
        o = r["overall"]
        same = sum(1 for k, text in r["answers"].items() if first.get(k) == text)
        rows.append(
            f"| {i} | {o['mean']:.4f} | {o['low']:.3f}-{o['high']:.3f} | "
            f"{'passed' if r['passed'] else 'FAILED: ' + '; '.join(r['failures'])} | "
            f"{same} of {len(r['answers'])} | {r['seconds']:.0f} s |"
        )
    decisions = {r["passed"] for r in results}
    verdict = (
        f"the gate decision was the same in {args.runs} of {args.runs} cold runs"
        if len(decisions) == 1
        else f"the gate decision CHANGED between runs ({sum(r['passed'] for r in results)} of {args.runs} passed)"
    )
    load = os.getloadavg()[0]
    body = "\n".join(
        [
            "## Gate stability of the example suite",
            "",
            f"`python benchmarks/bench_gate_stability.py --runs {args.runs} --setting {args.setting}`: "
            f"`pytest evals/ {' '.join(pytest_args)} --llm-cache off`, each a cold run on a fresh managed "
            f"llama-server ({os.cpu_count()} CPUs, load average {load:.1f} at the end, "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}). **{verdict}.**",
            "",
            "| run | overall | 95% CI | gate | answers identical to run 1 | wall time |",
            "|---|---|---|---|---|---|",
            *rows,
        ]
    )
    print(body)
    if not args.no_write:
        update_section(f"gate-stability-{args.setting}", body)
    return 0 if len(decisions) == 1 else 1


if __name__ == "__main__":
    sys.exit(main())
