"""Write the ``hot-paths`` section of benchmarks/RESULTS.md from a saved pytest-benchmark baseline.

Usage: ``python benchmarks/hot_paths_md.py [BASELINE.json]`` (``just bench-save`` runs it);
without an argument, the newest ``benchmarks/baselines/*/NNNN_hot_paths.json``. Every figure
comes from the file: each benchmark's median, IQR and rounds, the machine, CPU, commit and
date pytest-benchmark recorded, and the load average benchmarks/conftest.py added.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from results_md import update_section

BASELINES = Path(__file__).resolve().parent / "baselines"
SAVE_NAME = "hot_paths"
SECTION = "hot-paths"
QUIET_LOAD = 1.5
"""A baseline started at this 1-minute load average or above is marked for re-saving."""


def newest_baseline(root: Path = BASELINES) -> Path:
    """The newest saved run (pytest-benchmark numbers them 0001, 0002, ... per machine)."""
    found = sorted(root.glob(f"*/[0-9][0-9][0-9][0-9]_{SAVE_NAME}.json"), key=lambda p: (p.name, p.parent))
    if not found:
        raise SystemExit(f"no saved baseline in {root}: run `just bench-save`")
    return found[-1]


def duration(seconds: float) -> str:
    """A time in the unit that shows it best: ns, µs, ms or s, three significant figures."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def _row(bench: dict[str, Any]) -> str:
    stats = bench["stats"]
    what = (bench.get("extra_info") or {}).get("what", "")
    return (
        f"| `{bench['name']}` | {what} | {duration(stats['median'])} | {duration(stats['iqr'])} | "
        f"{duration(stats['min'])} | {stats['rounds']} x {stats.get('iterations', 1)} |"
    )


def _difference(a: float, b: float) -> str:
    return duration(a - b) if a >= b else "-" + duration(b - a)


def _deadline_costs(benchmarks: list[dict[str, Any]]) -> list[str]:
    """``X`` vs ``X_no_deadline``: what the render deadline adds to a render, on the medians and
    on the minimums (the minimum is the least disturbed by other jobs: when the two disagree,
    the medians' difference is noise)."""
    stats = {b["name"]: b["stats"] for b in benchmarks}
    lines = []
    for name, without in stats.items():
        base = name.removesuffix("_no_deadline")
        if base == name or base not in stats:
            continue
        with_deadline = stats[base]
        lines.append(
            f"- `{base}`, with the render deadline minus without: "
            f"{_difference(with_deadline['median'], without['median'])} on the medians ({with_deadline['median'] / without['median']:.2f}x), "
            f"{_difference(with_deadline['min'], without['min'])} on the minimums "
            f"({with_deadline['min'] / without['min']:.2f}x)."
        )
    return lines


def section(path: Path, data: dict[str, Any]) -> str:
    machine = data["machine_info"]
    cpu = machine.get("cpu") or {}
    commit = data["commit_info"]
    load = data.get("load_average") or {}
    when = datetime.fromisoformat(data["datetime"]).strftime("%Y-%m-%d %H:%M UTC")
    # The load before the run decides: the one at the end includes the run's own process.
    start = load.get("start")
    busy = not isinstance(start, (int, float)) or start >= QUIET_LOAD
    relative = path.relative_to(BASELINES.parents[1]) if path.is_relative_to(BASELINES.parents[1]) else path
    head = [
        "## Hot paths (pytest-benchmark)",
        "",
        f"`just bench-save` on {machine.get('node', '?')} ({cpu.get('brand_raw', machine.get('processor') or '?')}, "
        f"{cpu.get('count', load.get('cpus', '?'))} CPUs, {machine.get('python_implementation', '')} "
        f"{machine.get('python_version', '?')}), commit {str(commit.get('id', '?'))[:12]}"
        f"{' (with uncommitted changes)' if commit.get('dirty') else ''}, {when}; "
        f"1-minute load average {load.get('start', '?')} at the start, {load.get('end', '?')} at the end "
        "(the end includes this run's own process). "
        f"Baseline: `{relative}`.",
        "",
    ]
    if busy:
        head += [
            f"**Saved on a busy machine** (1-minute load average {start if start is not None else 'unknown'} "
            f"at the start, {QUIET_LOAD} or more, on {load.get('cpus', '?')} CPUs): other jobs shared the cores "
            "while these ran, so expect slower, noisier figures than a quiet machine gives; re-save with "
            "`just bench-save` on a quiet machine.",
            "",
        ]
    table = ["| benchmark | what | median | IQR | min | rounds x iterations |", "|---|---|---|---|---|---|"]
    table += [_row(b) for b in data["benchmarks"]]
    notes = [
        "",
        "`just bench` runs these again and fails when a median is more than 50% above this baseline "
        "(`--benchmark-compare-fail=median:50%`). What each measures is in its docstring in "
        "`benchmarks/test_hot_paths.py`.",
    ]
    costs = _deadline_costs(data["benchmarks"])
    if costs:
        notes += ["", *costs]
    return "\n".join(head + table + notes)


def main(argv: list[str]) -> int:
    path = Path(argv[0]).resolve() if argv else newest_baseline()
    data = json.loads(path.read_text())
    update_section(SECTION, section(path, data))
    print(f"wrote the {SECTION} section of benchmarks/RESULTS.md from {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
