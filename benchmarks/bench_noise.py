"""llama-server's own noise at temperature 0, and what the deterministic mode and repeats do about it.

Writes its sections of benchmarks/RESULTS.md. Parts (all by default, or name some):

- ``table``: the example suite's first 12 request bodies, sent twice in each of several ways
  (default vs ``cache_prompt: false``, 4 concurrent vs one at a time, the deterministic
  mode): identical answers run 1 vs run 2, and wall time. Each way gets a fresh server.
- ``cold-runs``: two cold runs of the example suite (``--llm-cache off``) in the
  deterministic mode, and two in the default mode: identical answers and scores?
- ``repeats``: the example suite with ``--llm-repeats 3`` in the default mode: agreement,
  the noise line, and the interval next to the single-answer and flat intervals.
- ``coverage``: a simulated noisy server, many runs: how often each kind of interval
  covers the true score (no llama-server needed).

Run: ``python benchmarks/bench_noise.py [table] [cold-runs] [repeats] [coverage] [--no-write]``.
Needs the real llama-server (``promptsweep server ensure``) except for ``coverage``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench_runtime import start_server
from results_md import update_section

from promptsweep.core.measure.stats import Estimate, hierarchical_interval, mean_interval, noise_summary

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "evals" / "k8s_triage.suite.yaml"
PARTS = ("table", "cold-runs", "repeats", "coverage")


def machine() -> str:
    load = os.getloadavg()
    return (
        f"{os.cpu_count()} CPUs, load average {load[0]:.1f} at the end, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )


# ------------------------------------------------------------------------------ table


def example_requests(count: int) -> list[Any]:
    """The first ``count`` requests the plugin sends for the example suite (same Evaluator)."""
    from promptsweep.core.answers.metrics import MetricRegistry
    from promptsweep.core.data.suite import load_suite
    from promptsweep.core.evaluate import Evaluator

    suite = load_suite(SUITE)
    dataset = suite.load_dataset()
    evaluator = Evaluator(suite, suite.load_template(), MetricRegistry(), dataset=dataset)
    return [evaluator.request(sample) for sample in suite.samples_to_evaluate(dataset)[:count]]


@dataclass
class Way:
    """One way of sending the bodies: server slots, client concurrency, what is added."""

    label: str
    slots: int
    concurrency: int
    cache_prompt: bool | None = None  # None: leave llama-server's default (on)
    deterministic_layer: bool = False  # send through the plugin's own deterministic layer


WAYS = [
    Way("default (`cache_prompt` on), 4 concurrent", 4, 4),
    Way("default, one at a time", 4, 1),
    Way('`"cache_prompt": false`, 4 concurrent', 4, 4, cache_prompt=False),
    Way('`"cache_prompt": false`, one at a time', 4, 1, cache_prompt=False),
    Way(
        "**`--llm-deterministic`** (1 slot, `cache_prompt` false, endpoint lock; 4 client threads)",
        1,
        4,
        deterministic_layer=True,
    ),
    Way(
        '1 slot, `"cache_prompt": false`, 4 concurrent without the lock (the server queues)',
        1,
        4,
        cache_prompt=False,
    ),
]


def send_all(url: str, way: Way, requests: Sequence[Any]) -> tuple[list[str], float]:
    """Send every request ``way.concurrency`` at a time; the answers in order and the wall time."""
    from promptsweep.llm.determinism import deterministic_layer
    from promptsweep.llm.endpoint import Endpoint, EndpointConfig, probe_url

    config = EndpointConfig(timeout=1200)
    layers = (
        [deterministic_layer(directory=Path(tempfile.gettempdir()) / "ps-bench-locks")]
        if way.deterministic_layer
        else []
    )
    endpoint = Endpoint(probe_url(url, config), config, layers)
    texts: list[str] = [""] * len(requests)

    def one(index: int) -> None:
        request = requests[index]
        if way.cache_prompt is not None:
            request = dataclasses.replace(
                request, params={**request.params, "cache_prompt": way.cache_prompt}
            )
        texts[index] = endpoint.send(request).text

    started = time.perf_counter()
    with ThreadPoolExecutor(way.concurrency) as pool:
        list(pool.map(one, range(len(requests))))
    elapsed = time.perf_counter() - started
    endpoint.close()
    return texts, elapsed


def same(a: Sequence[str], b: Sequence[str]) -> int:
    return sum(1 for x, y in zip(a, b, strict=True) if x == y)


def bench_table(count: int, ways: Sequence[Way], raw_out: Path | None) -> str:
    requests = example_requests(count)
    measured: list[dict[str, Any]] = []
    for way in ways:
        server = start_server(way.slots)
        try:
            first, t1 = send_all(server.url, way, requests)
            second, t2 = send_all(server.url, way, requests)
        finally:
            server.stop()
        row = {
            "way": way.label,
            "run1": first,
            "run2": second,
            "t1": t1,
            "t2": t2,
            "same": same(first, second),
        }
        measured.append(row)
        print(f"{way.label}: {row['same']} of {count} identical, {t1:.1f}s / {t2:.1f}s", flush=True)
        if raw_out:
            raw_out.write_text(json.dumps(measured, indent=1))
    lines = [
        "| how sent (SmolLM2-135M; 4 slots unless said) | identical answers, run 1 vs run 2 | wall time run 1 / run 2 |",
        "|---|---|---|",
    ]
    for row in measured:
        lines.append(f"| {row['way']} | {row['same']} of {count} | {row['t1']:.1f} s / {row['t2']:.1f} s |")
    by_label = {row["way"]: row for row in measured}

    def cross(a: Way, b: Way, label: str) -> None:
        if a.label in by_label and b.label in by_label:
            lines.append(
                f"| {label} | {same(by_label[a.label]['run1'], by_label[b.label]['run1'])} of {count} | - |"
            )

    cross(WAYS[3], WAYS[2], '`"cache_prompt": false`: one at a time vs 4 concurrent (run 1 each)')
    cross(WAYS[4], WAYS[3], "`--llm-deterministic` (1 slot) vs `cache_prompt` false one at a time on 4 slots")
    cross(
        WAYS[4],
        WAYS[5],
        "1 slot: `--llm-deterministic` vs the server queueing 4 concurrent (two server processes)",
    )
    return "\n".join(lines)


# ------------------------------------------------------------------------------ pytest runs


def run_suite(base: Path, *args: str) -> tuple[float, subprocess.CompletedProcess[str], Path]:
    """One cold ``pytest`` run of the example suite into ``base``; returns wall time, process, run dir."""
    started = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(SUITE),
            "-p",
            "no:cacheprovider",
            "-q",
            "--llm-cache",
            "off",
            "--promptsweep-dir",
            str(base),
            "--llm-timeout",
            "1200",
            *args,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - started
    runs = sorted((base / "runs").iterdir()) if (base / "runs").is_dir() else []
    if proc.returncode not in (0, 1) or not runs:
        raise SystemExit(f"pytest failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return elapsed, proc, runs[-1]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def answers(run_dir: Path) -> dict[tuple[str, int], tuple[str, float]]:
    return {
        (r["sample_id"], r.get("repeat", 0)): (r["raw"], r["score"])
        for r in read_jsonl(run_dir / "results.jsonl")
    }


def metrics(run_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((run_dir / "metrics.json").read_text())
    return data


def bench_cold_runs(workdir: Path) -> str:
    rows = []
    for label, args in (
        ("`--llm-deterministic` (`-n auto` = 1 worker, 1 slot)", ["-n", "auto", "--llm-deterministic"]),
        ("default (`-n auto` = 4 workers, 4 slots)", ["-n", "auto"]),
    ):
        runs = []
        for attempt in (1, 2):
            elapsed, _, run_dir = run_suite(workdir / f"{args[-1].strip('-')}-{attempt}", *args)
            runs.append((elapsed, run_dir))
            m = metrics(run_dir)
            print(f"{label} run {attempt}: {elapsed:.0f}s overall {m['overall']['mean']:.4f}", flush=True)
        (t1, a), (t2, b) = runs
        ans_a, ans_b = answers(a), answers(b)
        keys = sorted(set(ans_a) & set(ans_b))
        same_text = sum(1 for k in keys if ans_a[k][0] == ans_b[k][0])
        same_score = sum(1 for k in keys if ans_a[k][1] == ans_b[k][1])
        ma, mb = metrics(a), metrics(b)
        rows.append(
            f"| {label} | {same_text} of {len(keys)} | {same_score} of {len(keys)} | "
            f"{ma['overall']['mean']:.4f} / {mb['overall']['mean']:.4f} | "
            f"{'pass' if ma['gate']['passed'] else 'FAIL'} / {'pass' if mb['gate']['passed'] else 'FAIL'} | "
            f"{t1:.0f} s / {t2:.0f} s |"
        )
    return "\n".join(
        [
            "| two cold runs of `pytest evals/k8s_triage.suite.yaml --llm-cache off` | identical answers | identical scores | overall run 1 / run 2 | gate | wall time run 1 / run 2 |",
            "|---|---|---|---|---|---|",
            *rows,
        ]
    )


def bench_repeats(workdir: Path, repeats: int) -> str:
    elapsed, proc, run_dir = run_suite(workdir / "repeats", "-n", "auto", "--llm-repeats", str(repeats))
    m = metrics(run_dir)
    results = read_jsonl(run_dir / "results.jsonl")
    groups: dict[str, list[float]] = {}
    for r in sorted(results, key=lambda r: (r["sample_id"], r["repeat"])):
        groups.setdefault(r["sample_id"], []).append(r["score"])
    first = mean_interval([g[0] for g in groups.values()])
    flat = mean_interval([s for g in groups.values() for s in g])
    nested = hierarchical_interval(list(groups.values()))
    noise_line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("noise:")), "(no noise line)")
    print(noise_line)

    def ci(e: Any) -> str:
        return f"{e.mean:.3f} ({e.low:.3f}-{e.high:.3f}, width {e.high - e.low:.3f})"

    noise = m["noise"] or {}
    return "\n".join(
        [
            f"`pytest evals/k8s_triage.suite.yaml -n auto --llm-cache off --llm-repeats {repeats}` (default mode, "
            f"{len(results)} answers, {elapsed:.0f} s). The terminal summary said:",
            "",
            f"> {noise_line}",
            "",
            "| interval of the overall score | mean (95% CI, width) |",
            "|---|---|",
            f"| repeat 0 alone, bootstrap over samples (what one run reports) | {ci(first)} |",
            f"| all {len(results)} answers as if independent (flat bootstrap) | {ci(flat)} |",
            f"| **hierarchical** (samples, then repeats): what the run reports now | {ci(nested)} |",
            "",
            f"Variance components: prediction noise {noise.get('within_variance', 0):.4f}, sample draw "
            f"{noise.get('between_variance', 0):.4f} (noise share {noise.get('noise_share', 0):.0%}); "
            f"smallest detectable difference ±{noise.get('detectable', 0):.3f}.",
        ]
    )


# ------------------------------------------------------------------------------ coverage


@dataclass(frozen=True)
class NoisyServer:
    """A simulated server: each sample has a few possible answers with their scores; it gives
    the sample's usual answer with probability ``stable`` (drawn per sample) and another one
    otherwise. Answer scores are Beta(a, b), so the true expected score is a / (a + b)."""

    a: float = 0.6
    b: float = 3.0
    alternatives: int = 3
    stable_low: float = 0.5
    stable_share: float = 0.6
    """Share of samples that always give the same answer (the rest are stable with
    probability uniform in [stable_low, 1))."""

    @property
    def truth(self) -> float:
        return self.a / (self.a + self.b)

    def run(self, rng: random.Random, samples: int, repeats: int) -> list[list[float]]:
        return self.run_with_truth(rng, samples, repeats)[0]

    def run_with_truth(
        self, rng: random.Random, samples: int, repeats: int
    ) -> tuple[list[list[float]], float]:
        """One run's repeat scores per sample, and the expected score of *these* samples."""
        groups, expected = [], []
        for _ in range(samples):
            scores = [rng.betavariate(self.a, self.b) for _ in range(self.alternatives + 1)]
            stable = 1.0 if rng.random() < self.stable_share else rng.uniform(self.stable_low, 1.0)
            groups.append(
                [scores[0] if rng.random() < stable else rng.choice(scores[1:]) for _ in range(repeats)]
            )
            expected.append(stable * scores[0] + (1 - stable) * sum(scores[1:]) / self.alternatives)
        return groups, sum(expected) / samples


ONE = "one answer per sample, bootstrap over samples (a run without repeats)"
FLAT = "every answer as its own sample (flat bootstrap over samples x repeats)"
NESTED = "hierarchical bootstrap (samples, then repeats)"


def intervals(groups: list[list[float]], seed: int, resamples: int) -> dict[str, Estimate]:
    """The three intervals one simulated run could report."""
    return {
        ONE: mean_interval([g[0] for g in groups], seed=seed, resamples=resamples),
        FLAT: mean_interval([v for g in groups for v in g], seed=seed, resamples=resamples),
        NESTED: hierarchical_interval(groups, seed=seed, resamples=resamples),
    }


def coverage(
    runs: int,
    samples: int,
    repeats: int,
    *,
    seed: int = 0,
    server: NoisyServer | None = None,
    resamples: int = 2000,
) -> dict[str, tuple[float, float]]:
    """Per interval kind, the share of simulated runs whose interval contains (a) the true
    expected score over the population of samples and the server's noise, what a gate or a
    comparison is about, and (b) the expected score of the run's own samples (a fixed golden set).
    Each run draws fresh samples."""
    server = server or NoisyServer()
    rng = random.Random(seed)
    hits = {name: [0, 0] for name in (ONE, FLAT, NESTED)}
    for run in range(runs):
        groups, own = server.run_with_truth(rng, samples, repeats)
        for name, e in intervals(groups, run, resamples).items():
            hits[name][0] += e.low <= server.truth <= e.high
            hits[name][1] += e.low <= own <= e.high
    return {name: (a / runs, b / runs) for name, (a, b) in hits.items()}


def bench_coverage(runs: int, samples: int, repeats: int) -> str:
    server = NoisyServer()
    started = time.perf_counter()
    shares = coverage(runs, samples, repeats, server=server)
    noise = noise_summary(server.run(random.Random(1), 2000, 3))
    lines = [
        f"{runs} simulated runs of {samples} samples x {repeats} answers from a noisy server (`NoisyServer` in "
        f"this script: true score {server.truth:.3f}; {noise.agree / noise.repeated:.0%} of samples answer the same "
        f"every time, prediction noise is {noise.noise_share:.0%} of one answer's score variance), 95% intervals, "
        f"{time.perf_counter() - started:.0f} s:",
        "",
        "| interval | covers the population's expected score | covers the drawn samples' expected score |",
        "|---|---|---|",
    ]
    for name, (population, own) in shares.items():
        lines.append(f"| {name} | {population:.1%} | {own:.1%} |")
        print(f"{population:.1%} {own:.1%}  {name}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ main


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("parts", nargs="*", metavar="PART", help=f"any of {', '.join(PARTS)} (default: all)")
    parser.add_argument("--bodies", type=int, default=12, help="request bodies for the table (default 12)")
    parser.add_argument(
        "--ways", default=None, help="comma-separated indices of the table's ways (default: all)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--runs", type=int, default=400, help="simulated runs for coverage (default 400)")
    parser.add_argument("--samples", type=int, default=64, help="samples per simulated run (default 64)")
    parser.add_argument(
        "--raw", type=Path, default=None, help="also write the table's answers to this JSON file"
    )
    parser.add_argument("--no-write", action="store_true", help="do not update benchmarks/RESULTS.md")
    args = parser.parse_args()
    parts = args.parts or list(PARTS)
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown part(s) {', '.join(sorted(unknown))}; choose from {', '.join(PARTS)}")
    write = (lambda name, body: None) if args.no_write else update_section
    with tempfile.TemporaryDirectory(prefix="ps-noise-") as tmp:
        workdir = Path(tmp)
        if "table" in parts:
            ways = [WAYS[int(i)] for i in args.ways.split(",")] if args.ways else WAYS
            table = bench_table(args.bodies, ways, args.raw)
            print(table)
            write(
                "noise-table",
                "## Noise at temperature 0: the same request twice\n\n"
                f"`python benchmarks/bench_noise.py table` ({machine()}): the example suite's first {args.bodies} "
                "request bodies, each sent twice (run 1, then run 2) to a fresh llama-server per row.\n\n"
                + table,
            )
        if "cold-runs" in parts:
            body = bench_cold_runs(workdir)
            print(body)
            write(
                "noise-cold-runs",
                "## Two cold runs of the example suite\n\n"
                f"`python benchmarks/bench_noise.py cold-runs` ({machine()}).\n\n" + body,
            )
        if "repeats" in parts:
            body = bench_repeats(workdir, args.repeats)
            print(body)
            write(
                "noise-repeats",
                f"## Repeats in the default mode\n\n`python benchmarks/bench_noise.py repeats` ({machine()}).\n\n"
                + body,
            )
        if "coverage" in parts:
            body = bench_coverage(args.runs, args.samples, args.repeats)
            print(body)
            write(
                "noise-coverage",
                "## Interval coverage under a noisy server (simulation)\n\n"
                f"`python benchmarks/bench_noise.py coverage --runs {args.runs}`.\n\n" + body,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
