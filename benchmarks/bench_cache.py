"""How much of llama-server's prompt cache a search earns, before and after, side by side.

The same search (the example suite's space, a dataset, the same budget, cold) runs twice on the
managed llama-server, one after the other, nothing else running: with the code of a reference
commit (default 413760e, before prompts were laid out and scheduled for the prefix cache) and with
this checkout. From each run's ``results.jsonl`` and ``all_results.json``, measured the same way:
the share of prompt tokens the server read from its cache (``cached_tokens / prompt_tokens`` over
the answers the model gave), the calls made per minute of the search, and the test-split scores
(the winner, the baseline and both floors, on the same test samples).

Run on a quiet machine: ``python benchmarks/bench_cache.py [--dataset golden] [--budget 25m]``.
The reference code runs from a temporary git worktree of that commit with this checkout's
virtual environment (its dependencies are a subset).
"""

from __future__ import annotations

import argparse
import json
import os
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


def git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def search(
    code: Path, dataset: Path | None, budget: str, workdir: Path, name: str, *, plain: bool = False
) -> dict[str, Any]:
    """One cold search (or, ``plain``, one cold run of the suite) with the code in ``code``; its figures."""
    project = workdir / name
    shutil.copytree(code / "evals", project / "evals", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(code / "prompt_templates", project / "prompt_templates")
    shutil.copy(code / "conftest.py", project / "conftest.py")
    command = [
        sys.executable, "-m", "pytest", "evals/", "-n", "auto", "--llm-cache", "off", "-p", "no:cacheprovider", "-q",
    ]  # fmt: skip
    if not plain:
        command += ["--optimize", "--optimize-budget", budget]
    if dataset is not None:
        command += ["--golden", str(dataset)]
    env = {
        **os.environ,
        "PROMPTSWEEP_DIR": str(project / ".promptsweep"),
        "PYTHONPATH": str(code / "src"),  # this code, not the installed checkout
    }
    started = time.monotonic()
    proc = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, check=False)
    wall = time.monotonic() - started
    runs = sorted(p for p in (project / ".promptsweep" / "runs").glob("*") if p.is_dir())
    if not runs:
        print(proc.stdout[-4000:], proc.stderr[-4000:], file=sys.stderr)
        raise SystemExit(f"{name}: pytest exited {proc.returncode} without a run folder")
    summary = runs[-1] / ("metrics.json" if plain else "all_results.json")
    all_results = json.loads(summary.read_text()) if not plain else {}
    if plain:
        metrics = json.loads(summary.read_text())
        all_results = {"elapsed_s": wall, "test": {"scores": {"run": metrics["overall"]}}, "winner": "run"}
    prompt = cached = generated = calls = 0
    for line in (runs[-1] / "results.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r.get("answered_by", "model") != "model" or r.get("from_cache") or r.get("error"):
            continue
        calls += 1
        prompt += r.get("prompt_tokens") or 0
        cached += r.get("cached_tokens") or 0
        generated += r.get("completion_tokens") or 0
    minutes = (all_results.get("elapsed_s") or wall) / 60
    test = all_results.get("test") or {}
    return {
        "name": name,
        "calls": calls,
        "prompt": prompt,
        "cached": cached,
        "generated": generated,
        "minutes": minutes,
        "per_minute": calls / minutes if minutes else 0.0,
        "cached_share": cached / prompt if prompt else 0.0,
        "winner": all_results.get("winner"),
        "written": all_results.get("winner_file") is not None,
        "test": test,
        "load": os.getloadavg()[0],
        "ended": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(["pytest", *command[3:]]).replace(str(ROOT.parent), ".."),
    }


def _score(test: dict[str, Any], name: str | None) -> str:
    entry = (test.get("scores") or {}).get(name) if name else None
    return "—" if not entry else f"{entry['mean']:.3f}"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default="golden", choices=list(DATASETS))
    parser.add_argument("--budget", default="25m")
    parser.add_argument("--reference", default="413760e", help="the commit measured as 'before'")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument(
        "--plain",
        action="store_true",
        help="a cold plain run of the suite (`pytest evals/`) instead of a search",
    )
    args = parser.parse_args()
    head = git("rev-parse", "--short", "HEAD") + (
        "-dirty" if git("status", "--porcelain", "--untracked-files=no") else ""
    )
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="promptsweep-bench-cache-") as tmp:
        reference = Path(tmp) / "reference"
        git("worktree", "add", "--detach", str(reference), args.reference)
        try:
            rows.append(
                search(
                    reference, DATASETS[args.dataset], args.budget, Path(tmp), f"before ({args.reference})"
                )
            )
            print(rows[-1], flush=True)
        finally:
            git("worktree", "remove", "--force", str(reference))
        rows.append(
            search(ROOT, DATASETS[args.dataset], args.budget, Path(tmp), f"after ({head})", plain=args.plain)
        )
        print(rows[-1], flush=True)
    before, after = rows
    table = [
        [
            r["name"], r["calls"], f"{r['minutes']:.1f}", f"{r['per_minute']:.1f}", r["prompt"], r["cached"],
            f"{r['cached_share']:.0%}", r["generated"],
            _score(r["test"], "baseline"), _score(r["test"], r["winner"]),
            f"{(r['test'].get('floors') or {}).get('lookup') or 0:.3f}",
            f"`{r['winner']}`" + (" (written)" if r["written"] else ""), f"{r['load']:.1f}", r["ended"],
        ]
        for r in rows
    ]  # fmt: skip
    ratio = after["per_minute"] / before["per_minute"] if before["per_minute"] else float("inf")
    body = "\n".join(
        [
            f"## The prefix cache: {'a cold plain run' if args.plain else 'a search'} before and after "
            f"({args.dataset}{'' if args.plain else ', ' + args.budget})",
            "",
            f"`python benchmarks/bench_cache.py --dataset {args.dataset} --budget {args.budget}`: the same search "
            f"(the example suite's space, cold, `-n auto` on the managed llama-server) with the code of "
            f"{args.reference} and of {head}, one after the other on this machine "
            f"({os.cpu_count()} CPUs). Cached share: prompt tokens llama-server read from a slot's cache over "
            "all prompt tokens of the answers the model gave; calls/min over the search's own time. Scores are "
            "on the same test samples (the split no decision read).",
            "",
            tabulate(
                table,
                headers=[
                    "code",
                    "calls",
                    "min",
                    "calls/min",
                    "prompt tokens",
                    "cached",
                    "cached share",
                    "generated",
                    "baseline (test)",
                    "best (test)",
                    "lookup (test)",
                    "best",
                    "load at end",
                    "ended",
                ],
                tablefmt="github",
            ),
            "",
            f"Calls per minute after / before: {ratio:.2f}x; cached share {before['cached_share']:.0%} -> "
            f"{after['cached_share']:.0%}.",
            "",
            *[f"- {r['name']}: `{r['command']}`" for r in rows],
        ]
    )
    print(body)
    if not args.no_write:
        update_section(f"cache-{'plain-' if args.plain else ''}{args.dataset}", body)
        print("wrote benchmarks/RESULTS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
