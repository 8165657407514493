"""`--optimize` on the real llama-server, on three datasets, three seeds each, read against both floors.

For each dataset the example suite's own search space runs cold (``--llm-cache off``) in a
scratch copy of the project (so no winner file lands in the repository), once per search seed
(``--search-seed``), and the script reads each run's ``all_results.json`` and ``config.json``:
the test split's constant and lookup floors, the baseline's and the winner's test scores
(samples no decision read), the winner's selection score (validation, where it was chosen:
optimistic), the verdicts on the test split, the winner's family and how stable its choice was,
the confirmable gain, the prompt cache's share and the calls per minute. Each search's row is
stamped with the commit it ran at, the UTC time it ended, the load average right after it and
the model its config.json names. Over the seeds of one dataset the section gives the spread of
*best - baseline* and *best - lookup* and how often the same family won: one search's choice is
noisy, and the spread says how noisy. It writes its section of benchmarks/RESULTS.md after every
search.

Datasets: the example suite's own data, ``../shared/datasets/k8s-golden-v1.json`` and
``benchmarks/data/k8s-unseen-v1.json`` (hand-written, other root causes; the search builds its
pool from that set's train split and confirms on its test split like any other).

Run on a quiet machine: ``python benchmarks/bench_optimize.py [--budget 10m] [--only example,golden]
[--seeds 0,1,2] [--keep DIR] [--reuse DIR]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
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
SEEDS = (0, 1, 2)


class RunFailed(Exception):
    """One search did not produce an all_results.json to read; ``record`` is its row all the same
    (seed, command and stamp), so the section shows the failure where the search would stand."""

    def __init__(self, message: str, record: dict[str, Any]) -> None:
        super().__init__(message)
        self.record = {"failed": message, **record}


def measured_commit(root: Path = ROOT) -> str:
    """The commit the working tree is at, ``-dirty`` when tracked files differ from it (read when a
    measurement starts: the code measured is the code checked out then)."""

    def git(*args: str) -> str:
        proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
        return proc.stdout.strip() if proc.returncode == 0 else ""

    head = git("rev-parse", "--short", "HEAD") or "?"
    return head + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def end_stamp(commit: str) -> dict[str, Any]:
    """When a measurement ended and how busy the machine was right then, with the commit it ran at."""
    return {
        "commit": commit,
        "ended": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "load": round(os.getloadavg()[0], 2),
        "host": os.uname().nodename,
        "cpus": os.cpu_count(),
    }


def model_of(config: dict[str, Any]) -> str:
    """The model and server a run's config.json names (``model``: the probed endpoint; ``llama_server``:
    the managed binary, where written), as one cell."""
    model = config.get("model") or {}
    if not isinstance(model, dict):
        return str(model)
    path = model.get("model_path")
    name = Path(path).name if path else model.get("model_id") or model.get("id") or model.get("name") or "?"
    server = config.get("llama_server") or {}
    version = server.get("version") if isinstance(server, dict) else None
    build = model.get("build_info") or (str(version).splitlines()[0] if version else None)
    details = [f"llama-server {build}" if build else None]
    if model.get("total_slots"):
        details.append(f"{model['total_slots']} slots")
    if config.get("workers"):
        details.append(f"{config['workers']} concurrent calls")
    shown = [d for d in details if d]
    return f"{name} ({', '.join(shown)})" if shown else name


def optimize(name: str, dataset: Path | None, budget: str, seed: int, workdir: Path) -> dict[str, Any]:
    """One cold search in a scratch project; the figures of its all_results.json, stamped."""
    project = workdir / f"{name}-seed{seed}"
    shutil.copytree(ROOT / "evals", project / "evals", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "prompt_templates", project / "prompt_templates")
    shutil.copy(ROOT / "conftest.py", project / "conftest.py")
    command = [
        sys.executable, "-m", "pytest", "evals/", "--optimize", "-n", "auto", "--llm-cache", "off",
        "--optimize-budget", budget, "--search-seed", str(seed), "-p", "no:cacheprovider", "-q",
    ]  # fmt: skip
    if dataset is not None:
        command += ["--golden", str(dataset)]
    env = {**os.environ, "PROMPTSWEEP_DIR": str(project / ".promptsweep")}
    commit = measured_commit()
    started = time.monotonic()
    proc = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    stamp = end_stamp(commit)  # right after the search: its own time and load, not the rendering's
    shown = " ".join(["pytest", *command[3:]]).replace(str(ROOT) + os.sep, "")
    shown = shown.replace(str(ROOT.parent), "..")
    runs = sorted((project / ".promptsweep" / "runs").glob("*-optimize"))
    config_path = runs[-1] / "config.json" if runs else None
    config: dict[str, Any] = (
        json.loads(config_path.read_text()) if config_path is not None and config_path.is_file() else {}
    )
    stamp["model"] = model_of(config) if config else "?"
    output = proc.stdout + proc.stderr
    failed = None
    if not runs:
        failed = f"--optimize exited {proc.returncode} without a run folder"
    elif proc.returncode not in (0, 1):  # 1: the gate or "no winner" are results, not failures
        failed = f"--optimize exited {proc.returncode}"
    elif not (runs[-1] / "all_results.json").is_file():
        failed = f"--optimize exited {proc.returncode} without all_results.json"
    if failed is not None:
        print(proc.stdout[-4000:], proc.stderr[-4000:], file=sys.stderr)
        raise RunFailed(failed, {"seed": seed, "command": shown, "bench": stamp, "output": output})
    data: dict[str, Any] = json.loads((runs[-1] / "all_results.json").read_text())
    data["seed"] = data.get("seed", seed)
    data["wall_s"] = seconds
    data["output"] = output
    data["command"] = shown
    data["bench"] = stamp
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


def _seed(data: dict[str, Any]) -> str:
    return "—" if data.get("seed") is None else str(data["seed"])


def row(name: str, data: dict[str, Any]) -> list[str]:
    """One search's scores (HEADERS); bench_newcomer.py renders its search with it too."""
    test = data["test"]
    floors = test.get("floors") or {}
    winner = data.get("winner")
    selection = next((c for c in data["candidates"] if c["candidate"] == winner), None)
    calls = data["candidate_calls"] + data["baseline_calls"] + test.get("calls", 0)
    return [
        name,
        _seed(data),
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
    "seed",
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


def winner_family(data: dict[str, Any]) -> str:
    """The winner's family: the ``families`` entry it is the best member of, else read from its id
    (``knn<k>``: kNN vote; a ``-copy<gate>`` part: gated lookup, whatever else it does; a
    ``-choose<k>`` part: neighbour choice; otherwise prompt-only)."""
    winner = data.get("winner")
    if not winner:
        return "none"
    for family in data.get("families") or []:
        if family.get("member") == winner:
            return str(family["family"])
    if re.fullmatch(r"knn\d+", winner):
        return "kNN vote"
    if re.search(r"-copy[\d.]", winner):
        return "gated lookup"
    if "-choose" in winner:
        return "neighbour choice"
    return "prompt-only"


def _stamp(data: dict[str, Any]) -> dict[str, Any]:
    """The row's own stamp; a row kept from before stamps existed shows its run folder's time only."""
    stamp = data.get("bench")
    if stamp:
        return dict(stamp)
    return {"commit": "?", "ended": measured_at(data), "load": None, "model": "?"}


RUN_HEADERS = [
    "dataset",
    "seed",
    "winner",
    "family",
    "winner stays first",
    "confirmable gain (80% power)",
    "cached prompt share",
    "calls/min",
    "ended",
    "load (1 min)",
    "commit",
    "model",
]


def run_row(name: str, data: dict[str, Any]) -> list[str]:
    """How one search ran and when (RUN_HEADERS): its winner, its stability and cost, its stamp."""
    stamp = _stamp(data)
    load = "?" if stamp.get("load") is None else f"{stamp['load']:.2f}"
    tail = [stamp.get("ended") or "?", load, f"`{stamp.get('commit') or '?'}`", stamp.get("model") or "?"]
    if "failed" in data:
        return [name, _seed(data), f"run failed: {data['failed']}", *["—"] * 5, *tail]
    stability = data.get("stability") or {}
    power = data.get("power") or {}
    tokens = data.get("tokens") or {}
    share = stability.get("winner_share")
    gain = power.get("confirmable_gain")
    cached = tokens.get("cached_share")
    per_minute = tokens.get("calls_per_minute")
    winner = data.get("winner")
    return [
        name,
        _seed(data),
        f"`{winner}`" if winner else "—",
        winner_family(data),
        "—" if share is None else f"{share:.0%} of resamples (n={stability.get('n', '?')})",
        "—" if gain is None else f"{gain:+.3f} (n={power.get('n_test', '?')})",
        "—" if cached is None else f"{cached:.0%}",
        "—" if per_minute is None else f"{per_minute:.1f}",
        *tail,
    ]


FAMILY_HEADERS = [
    "dataset",
    "seed",
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
            name, _seed(data), f["family"], f"`{f['member']}`",
            "—" if f["validation"] is None else f"{f['validation']:.3f}",
            "not asked" if f["test"] is None else f"{f['test']:.3f} (n={f['test_n']})",
            "—" if not d else f"{d['mean']:+.3f} ({d['low']:+.3f}..{d['high']:+.3f})",
            "—" if f["calls_per_answer"] is None else f"{f['calls_per_answer']:.2f}",
        ])  # fmt: skip
    return rows


SPREAD_HEADERS = [
    "dataset",
    "searches (seeds)",
    "best - baseline (test): min / median / max",
    "best - lookup (test): min / median / max",
    "significant vs baseline",
    "significant vs lookup",
    "winning family",
]


def _spread(values: list[float]) -> str:
    if not values:
        return "—"
    return f"{min(values):+.3f} / {statistics.median(values):+.3f} / {max(values):+.3f}"


def _significance(entries: list[dict[str, Any]], of: int) -> str:
    above = sum(1 for e in entries if e["significant"])
    below = sum(1 for e in entries if not e["significant"] and e["high"] < 0)
    text = f"{above} of {of} above"
    return text + (f", {below} below" if below else "")


def spread_row(name: str, searches: list[dict[str, Any]]) -> list[str]:
    """One dataset over its seeds (SPREAD_HEADERS): the spread of its test differences, how many of
    its verdicts were significant and how often the same family won."""
    done = [d for d in searches if "failed" not in d]
    seeds = ", ".join(_seed(d) for d in searches)
    failed = len(searches) - len(done)
    counted = (
        f"{len(done)} (seeds {seeds})"
        if not failed
        else f"{len(done)} of {len(searches)} (seeds {seeds}; {failed} failed)"
    )
    verdicts = [(d.get("test") or {}).get("verdicts") or {} for d in done]
    baseline = [v["baseline"] for v in verdicts if v.get("baseline")]
    lookup = [v["lookup"] for v in verdicts if v.get("lookup")]
    families = Counter(winner_family(d) for d in done)
    won = ", ".join(f"{family} {count} of {len(done)}" for family, count in families.most_common())
    return [
        name,
        counted,
        _spread([e["mean"] for e in baseline]),
        _spread([e["mean"] for e in lookup]),
        _significance(baseline, len(baseline)) if baseline else "—",
        _significance(lookup, len(lookup)) if lookup else "—",
        won or "—",
    ]


Runs = dict[tuple[str, int], dict[str, Any]]
"""Each search by (dataset, seed)."""


def kept_path(keep: Path, name: str, seed: int) -> Path:
    return keep / f"{name}-seed{seed}-all_results.json"


def load_kept(folder: Path, names: Iterable[str]) -> Runs:
    """Every search of ``names`` kept in a --keep folder, each with the stamp it was measured with
    (``<name>-seed<S>-all_results.json``; an older ``<name>-all_results.json`` by its own seed)."""
    runs: Runs = {}
    for name in names:
        for kept in sorted(folder.glob(f"{name}-*all_results.json")):
            if not re.fullmatch(rf"{re.escape(name)}-(seed\d+-)?all_results\.json", kept.name):
                continue
            data = json.loads(kept.read_text())
            runs[(name, int(data.get("seed") or 0))] = data
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--budget", default="10m", help="--optimize-budget of each search. Default: 10m")
    parser.add_argument(
        "--only", default=",".join(DATASETS), help="comma-separated subset of: " + ", ".join(DATASETS)
    )
    parser.add_argument(
        "--seeds",
        default=",".join(map(str, SEEDS)),
        help="comma-separated --search-seed values, one search each per dataset. Default: 0,1,2",
    )
    parser.add_argument("--no-write", action="store_true", help="do not update benchmarks/RESULTS.md")
    parser.add_argument("--keep", help="a folder to copy each search's all_results.json (stamped) into")
    parser.add_argument(
        "--reuse",
        help="a --keep folder of an earlier run: datasets not in --only are shown from its files, each "
        "search with the stamp it was measured with, so re-measuring one dataset keeps the others' rows",
    )
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n]
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        parser.error(f"unknown dataset {unknown[0]!r}; choose from {', '.join(DATASETS)}")
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--seeds {args.seeds!r}: give whole numbers separated by commas, e.g. 0,1,2")
    if names and not seeds:
        parser.error("--seeds: give at least one seed")
    keep = Path(args.keep) if args.keep else None
    runs: Runs = {}
    if args.reuse:
        runs.update(load_kept(Path(args.reuse), [n for n in DATASETS if n not in names]))
    with tempfile.TemporaryDirectory(prefix="promptsweep-bench-optimize-") as tmp:
        for name in names:
            for seed in seeds:
                try:
                    data = optimize(name, DATASETS[name], args.budget, seed, Path(tmp))
                except RunFailed as failed:
                    data = failed.record
                if keep is not None:
                    keep.mkdir(parents=True, exist_ok=True)
                    if "output" in data:
                        (keep / f"{name}-seed{seed}.out").write_text(data["output"])
                    kept_path(keep, name, seed).write_text(json.dumps(data, indent=2))
                runs[(name, seed)] = data
                if "failed" not in data:
                    print(tabulate([row(name, data)], headers=HEADERS), flush=True)
                print(tabulate([run_row(name, data)], headers=RUN_HEADERS), flush=True)
                if not args.no_write:
                    # After every search, so a later failure loses nothing measured.
                    update_section("optimize-real", render(runs))
                    print("wrote benchmarks/RESULTS.md", flush=True)
    if not names and not args.no_write:
        # --only '' --reuse DIR: render the section again from kept results, measuring nothing.
        update_section("optimize-real", render(runs))
        print("wrote benchmarks/RESULTS.md", flush=True)
    return 0


def measured_at(data: dict[str, Any]) -> str:
    """When an unstamped (kept, older) search ran: its run folder's UTC stamp
    (``.promptsweep/runs/<stamp>-<suite>-optimize``)."""
    found = re.search(r"runs/(\d{8}T\d{4})\d{2}Z-", data.get("output", ""))
    if not found:
        return "?"
    return datetime.strptime(found.group(1), "%Y%m%dT%H%M").strftime("%Y-%m-%d %H:%M UTC")


def render(runs: Runs) -> str:
    """The section: what was run, the spread per dataset, each search's scores and stamp, each
    family's best, and the command lines, in DATASETS then seed order."""
    ordered = sorted(runs.items(), key=lambda item: (list(DATASETS).index(item[0][0]), item[0][1]))
    rows: list[list[str]] = []
    run_rows: list[list[str]] = []
    families: list[list[str]] = []
    spreads: list[list[str]] = []
    commands: list[str] = []
    for name, seed in (key for key, _ in ordered):
        data = runs[(name, seed)]
        run_rows.append(run_row(name, data))
        if "failed" in data:
            rows.append([name, _seed(data), *["—"] * (len(HEADERS) - 3), f"run failed: {data['failed']}"])
            commands.append(
                f"- {name}, seed {_seed(data)}: `{data.get('command', '?')}`: failed: {data['failed']}"
            )
            continue
        rows.append(row(name, data))
        families.extend(family_rows(name, data))
        commands.append(
            f"- {name}, seed {_seed(data)}: `{data['command']}`; best `{data.get('winner')}`; "
            f"{data.get('stopped') or 'complete'}; {data.get('promotion') or ''}"
        )
    for name in DATASETS:
        searches = [data for (dataset, _), data in ordered if dataset == name]
        if searches:
            spreads.append(spread_row(name, searches))
    names = [n for n in DATASETS if any(dataset == n for dataset, _ in runs)]
    hosts = sorted(
        {f"{s['host']} ({s['cpus']} CPUs)" for d in runs.values() if (s := d.get("bench")) and s.get("host")}
    )
    return "\n".join(
        [
            "## `--optimize` on the real llama-server, against both floors, over search seeds",
            "",
            f"`python benchmarks/bench_optimize.py` ({', '.join(names)}; each search's budget and seed in its "
            f"command below) on {', '.join(hosts) or 'an unrecorded machine'}: the example suite's own search "
            "space, cold (`--llm-cache off`), on the managed llama-server, each search in its own scratch copy "
            "of the project. Each dataset is searched once per seed (`--search-seed`, which seeds the "
            "designs, the candidate subsets and the validation order); the data, the split and the budget "
            "are the same, so rows of one dataset differ only by seed. Each row carries its own stamp: the "
            "UTC time its "
            "search ended, the 1-minute load average right after it, the commit it ran at (`-dirty`: tracked "
            "files differed from it) and the model its run's config.json names.",
            "",
            "Scores are weighted per-sample means with 95% intervals. *Test* is the split no decision of the "
            "search read: the only score here that is a result. *Selection* is the best candidate's "
            "validation score, where it was picked as the best of every candidate, so it is optimistic; the "
            "best is written as the winner only when it beats the baseline on test. The floors: *constant* "
            "gives each field's most frequent value as every test sample's answer, *lookup* copies the labels "
            "of the most similar train sample; neither calls the model, and a prompt is worth its calls only "
            "above both.",
            "",
            "**Spread over seeds.** One search's choice is noisy: the same data and budget with another seed "
            "can pick another prompt, and each verdict is right only about its own candidate. *min / median / "
            "max* are over the searches of one dataset; *significant* counts the searches whose 95% interval "
            "on test lies above 0 (*below*: entirely under 0); *winning family* counts which family the "
            "chosen prompt belonged to.",
            "",
            tabulate(spreads, headers=SPREAD_HEADERS, tablefmt="github") if spreads else "(no search)",
            "",
            tabulate(rows, headers=HEADERS, tablefmt="github") if rows else "(no search)",
            "",
            "How each search chose and what it cost: *winner stays first* is the share of bootstrap "
            "resamples of the final race's validation samples in which the winner is chosen again; the "
            "*confirmable gain* is the smallest gain over the baseline the test split confirms with 80% "
            "power; the *cached prompt share* is the prompt tokens llama-server's prefix cache served.",
            "",
            tabulate(run_rows, headers=RUN_HEADERS, tablefmt="github") if run_rows else "(no search)",
            "",
            "Each candidate family's best member, chosen on validation like the best, scored on the same "
            "test samples (prompt-only: every sample asked; gated lookup: near-duplicates copied, the rest "
            "asked; neighbour choice: label enums from the nearest train samples; kNN vote: no call). "
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


if __name__ == "__main__":
    sys.exit(main())
