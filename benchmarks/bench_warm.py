"""Cold and warm runs of the example suite as ``just eval`` runs it (``pytest evals/ -n auto``),
in a fresh promptsweep directory: the cold run asks the managed llama-server every sample,
the warm runs find every answer in the response cache. Updates the "Warm re-run" section of
benchmarks/RESULTS.md.

Run: ``python benchmarks/bench_warm.py [--warm-runs 5]`` on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS_MD = ROOT / "benchmarks" / "RESULTS.md"
BEGIN, END = "<!-- bench_warm:begin -->", "<!-- bench_warm:end -->"


def run(command: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    return time.perf_counter() - started, proc


def calls(base: Path) -> tuple[int, int]:
    """(LLM calls, samples) of the latest run: answers not from the cache, and all answers."""
    latest = sorted((base / "runs").iterdir())[-1]
    lines = [json.loads(x) for x in (latest / "results.jsonl").read_text().splitlines()]
    return sum(1 for r in lines if not r["from_cache"]), len(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warm-runs", type=int, default=5)
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()
    pytest_cmd = [sys.executable, "-m", "pytest", "evals/", "-n", "auto", "-q", "-p", "no:cacheprovider"]
    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="promptsweep-bench-") as tmp:
        env = {**os.environ, "PROMPTSWEEP_DIR": tmp}
        cold_s, cold = run(pytest_cmd, env)
        if cold.returncode not in (0, 1):
            print(cold.stdout[-3000:], cold.stderr[-3000:], file=sys.stderr)
            return 1
        cold_calls, n = calls(Path(tmp))
        warm: list[float] = []
        warm_out = ""
        for _ in range(args.warm_runs):
            seconds, proc = run(pytest_cmd, env)
            warm.append(seconds)
            warm_out = proc.stderr
        warm_calls, _ = calls(Path(tmp))
        no_workers = "running without xdist workers" in warm_out
        no_xdist = [run([*pytest_cmd[:4], "-n", "0", *pytest_cmd[6:]], env)[0] for _ in range(args.warm_runs)]
        just = [run(["just", "eval"], env)[0] for _ in range(args.warm_runs)]
    rows.append(
        ("cold `pytest evals/ -n auto` (fresh promptsweep dir)", f"{cold_s:.2f} s", f"{cold_calls} of {n}")
    )
    rows.append(
        (
            f"warm `pytest evals/ -n auto`, median of {len(warm)} (min-max)",
            f"{statistics.median(warm):.2f} s ({min(warm):.2f}-{max(warm):.2f})",
            f"{warm_calls} of {n}" + ("; no xdist workers, no llama-server" if no_workers else ""),
        )
    )
    rows.append(
        (
            f"warm `pytest evals/ -n 0`, median of {len(no_xdist)}",
            f"{statistics.median(no_xdist):.2f} s",
            "0",
        )
    )
    rows.append((f"warm `just eval`, median of {len(just)}", f"{statistics.median(just):.2f} s", "0"))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        BEGIN,
        "## Warm re-run of `just eval`",
        "",
        f"`python benchmarks/bench_warm.py --warm-runs {args.warm_runs}` on {platform.node()} "
        f"({os.cpu_count()} CPUs, load average {load:.1f} at the end), {stamp}: the example suite "
        "(64 samples) on the managed llama-server (SmolLM2-135M-Instruct Q4_1, 4 slots), in a fresh "
        "`$PROMPTSWEEP_DIR`. Wall time of the whole command.",
        "",
        "| run | wall time | LLM calls |",
        "|---|---|---|",
        *(f"| {a} | {b} | {c} |" for a, b, c in rows),
        "",
        "A warm run makes no call, so `-n auto` starts no xdist worker, and the managed llama-server",
        "is not started either: its model identity (the cache key) is known from the cold run's start.",
        END,
    ]
    block = "\n".join(lines)
    print(block)
    if not args.no_write:
        text = RESULTS_MD.read_text()
        if BEGIN in text:
            text = text[: text.index(BEGIN)] + block + text[text.index(END) + len(END) :]
        else:
            text = text.rstrip() + "\n\n" + block + "\n"
        RESULTS_MD.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
