"""What the prompt layout costs: the same candidates in both layouts, on the same validation samples.

``layout: shared_first`` puts what every candidate shares first (the task, the sample's retrieved
examples, the sample) and a candidate's own words after it, so llama-server's prompt cache reuses
the prefix; ``instructions_first`` is the order candidates had before. Whether the reorder costs
score is measured here, not assumed: a grid search over a few representative candidates, each in
both layouts (a space with ``layout: [shared_first, instructions_first]``), on the validation
samples of a dataset, cold, on the managed llama-server. Each sample's difference *shared_first -
instructions_first* is averaged over the candidates (one paired difference per sample) and read
with the project's interval; per-candidate differences and each layout's cached share follow.

Run on a quiet machine: ``python benchmarks/bench_layout.py [--dataset golden] [--budget 40m]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
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
sys.path.insert(0, str(ROOT / "src"))

from promptsweep.core.measure.stats import mean_interval, paired_difference  # noqa: E402

DATASETS = {
    "example": None,
    "golden": ROOT.parent / "shared" / "datasets" / "k8s-golden-v1.json",
    "unseen": ROOT / "benchmarks" / "data" / "k8s-unseen-v1.json",
}
# Representative candidates of the shipped space that ask the model: retrieved examples (the long
# shared part), fixed examples, none; JSON schema, JSON and lines; direct and a reasoning one.
SPACE = """\
base_template: ../prompt_templates/k8s_log_analysis_v1.yaml
description: The layout comparison of benchmarks/bench_layout.py.
tone:
  - You are a senior Kubernetes Site Reliability Engineer triaging log lines.
  - You classify Kubernetes log lines for an incident dashboard.
output: [json_schema, lines]
few_shot:
  strategies: [none, retrieved]
  k: 4
  retrieve_by: [logs, component]
reasoning: {strategies: [direct], max_tokens: 320}
layout: [shared_first, instructions_first]
search: {strategy: grid}
"""


def commit() -> str:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True
    )
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def run(dataset: Path | None, budget: str, workdir: Path) -> tuple[Path, str, float]:
    """A grid search of the layout space in a scratch copy of the project; its run folder."""
    project = workdir / "layout"
    shutil.copytree(ROOT / "evals", project / "evals", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "prompt_templates", project / "prompt_templates")
    shutil.copy(ROOT / "conftest.py", project / "conftest.py")
    (project / "evals" / "layout.space.yaml").write_text(SPACE)
    command = [
        sys.executable, "-m", "pytest", "evals/", "--optimize", "-n", "auto", "--llm-cache", "off",
        "--search-space", "evals/layout.space.yaml", "--optimize-budget", budget, "-p", "no:cacheprovider", "-q",
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
        raise SystemExit(f"--optimize exited {proc.returncode} without a run folder")
    shown = " ".join(["pytest", *command[3:]]).replace(str(ROOT.parent), "..")
    return runs[-1], shown, seconds


def paired(run_dir: Path) -> dict[str, Any]:
    """Per-sample scores of each candidate in each layout (validation answers of the grid)."""
    all_results = json.loads((run_dir / "all_results.json").read_text())
    order = json.loads((run_dir / "config.json").read_text())["validation_order"]
    scores: dict[str, dict[str, dict[str, float]]] = {}
    cached: dict[str, list[tuple[int, int]]] = {"shared": [], "instr": []}
    for line in (run_dir / "results.jsonl").read_text().splitlines():
        r = json.loads(line)
        name = r.get("candidate") or ""
        if r["sample_id"] not in order or r.get("repeat") or not name.endswith(("-shared", "-instr")):
            continue
        base, layout = name.rsplit("-", 1)
        scores.setdefault(base, {}).setdefault(layout, {})[r["sample_id"]] = r["score"]
        if r.get("answered_by") == "model" and r.get("prompt_tokens"):
            cached[layout].append((r.get("cached_tokens") or 0, r["prompt_tokens"]))
    return {"scores": scores, "cached": cached, "order": order, "all_results": all_results}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default="golden", choices=list(DATASETS))
    parser.add_argument(
        "--budget", default="40m", help="--optimize-budget (the grid must finish). Default 40m"
    )
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    measured_at = commit()
    with tempfile.TemporaryDirectory(prefix="promptsweep-bench-layout-") as tmp:
        run_dir, command, seconds = run(DATASETS[args.dataset], args.budget, Path(tmp))
        data = paired(run_dir)
    load = os.getloadavg()[0]
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    scores = data["scores"]
    complete = {base: layouts for base, layouts in scores.items() if {"shared", "instr"} <= set(layouts)}
    samples = [
        s for s in data["order"] if all(s in two["shared"] and s in two["instr"] for two in complete.values())
    ]
    rows = []
    for base, layouts in sorted(complete.items()):
        d = paired_difference([layouts["instr"][s] for s in samples], [layouts["shared"][s] for s in samples])
        rows.append([
            f"`{base}`",
            f"{statistics.fmean(layouts['instr'][s] for s in samples):.3f}",
            f"{statistics.fmean(layouts['shared'][s] for s in samples):.3f}",
            f"{d.mean:+.3f} ({d.low:+.3f}..{d.high:+.3f})",
        ])  # fmt: skip
    per_sample = [
        statistics.fmean(complete[b]["shared"][s] - complete[b]["instr"][s] for b in complete)
        for s in samples
    ]
    pooled = mean_interval(per_sample, bounds=(-1.0, 1.0)) if per_sample else None
    share = {
        layout: (sum(c for c, _ in pairs) / sum(p for _, p in pairs) if pairs else None)
        for layout, pairs in data["cached"].items()
    }
    verdict = "no difference measured"
    if pooled is not None:
        if pooled.low > 0:
            verdict = "shared_first scores higher"
        elif pooled.high < 0:
            verdict = "shared_first costs score"
        else:
            verdict = "no significant difference"
    lines = [
        "## The prompt layout: what putting shared text first costs",
        "",
        f"`python benchmarks/bench_layout.py --dataset {args.dataset} --budget {args.budget}` at {measured_at}, "
        f"{stamp} (load average {load:.1f} at the end; {seconds / 60:.1f} min): `{command}`. The same "
        f"{len(complete)} candidates of the shipped space's kind (two tones x json_schema/lines x none/retrieved4, "
        "direct) in both layouts, a grid on the validation samples, cold, on the managed llama-server.",
        "",
        tabulate(
            rows,
            headers=["candidate", "instructions_first", "shared_first", "shared - instructions (95% CI)"],
            tablefmt="github",
        )
        if rows
        else "(no candidate answered in both layouts)",
        "",
        (
            f"Pooled over the candidates, per sample (n={pooled.n} validation samples): shared_first - "
            f"instructions_first = {pooled.mean:+.3f} (95% CI {pooled.low:+.3f}..{pooled.high:+.3f}): {verdict}."
            if pooled is not None
            else "No sample was answered in both layouts."
        ),
        "Cached share of prompt tokens in this run (both layouts interleaved sample by sample, so the "
        "speed comparison proper is the cache benchmark's): "
        + ", ".join(f"{k} {v:.0%}" if v is not None else f"{k} —" for k, v in share.items())
        + ".",
    ]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        update_section(f"layout-{args.dataset}", body)
        print("wrote benchmarks/RESULTS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
