"""Benchmarks of what the plugin adds: eval overhead vs a bare httpx client, warm vs cold cache,
and collecting a 10,000-sample dataset. Writes benchmarks/RESULTS.md.

Run: ``python benchmarks/bench_runtime.py [--smoke] [--samples N] [--slots N]`` (``just bench``).
Needs the real llama-server (``promptsweep server ensure``); --smoke runs a tiny version.
The --optimize benchmark (calls vs full grid) is benchmarks/bench_search.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from results_md import sections

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "evals" / "k8s_triage.suite.yaml"
RESULTS_MD = ROOT / "benchmarks" / "RESULTS.md"


def make_suite_copy(workdir: Path, samples: int, max_tokens: int) -> Path:
    """The example suite on its first ``samples`` samples, with a small ``max_tokens``."""
    import yaml

    spec = yaml.safe_load(SUITE.read_text())
    data = json.loads((SUITE.parent / spec["dataset"]).read_text())
    records = data["samples"] if isinstance(data, dict) else data
    (workdir / "data.json").write_text(json.dumps(records[:samples]))
    spec["dataset"] = "data.json"
    spec["template"] = str((SUITE.parent / spec["template"]).resolve())
    spec.pop("search_space", None)
    spec["llm"] = {**(spec.get("llm") or {}), "max_tokens": max_tokens}
    spec["thresholds"] = {"overall": 0.0, "max_errors": 0}
    path = workdir / "bench.suite.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run_pytest(args: list[str], cwd: Path) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
    )
    return time.perf_counter() - started, proc


def latest_results(base: Path) -> list[dict[str, Any]]:
    run = sorted((base / "runs").iterdir())[-1]
    return [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines() if line.strip()]


def request_bodies(suite_path: Path) -> list[dict[str, Any]]:
    """The exact bodies the plugin sends, rendered by the same Evaluator."""
    from promptsweep.core.answers.metrics import MetricRegistry
    from promptsweep.core.data.suite import load_suite
    from promptsweep.core.evaluate import Evaluator

    suite = load_suite(suite_path)
    dataset = suite.load_dataset()
    evaluator = Evaluator(suite, suite.load_template(), MetricRegistry(), dataset=dataset)
    return [evaluator.request(sample).body() for sample in suite.samples_to_evaluate(dataset)]


async def bare_client(url: str, bodies: list[dict[str, Any]], concurrency: int) -> float:
    """A plain asyncio httpx client: same bodies, same concurrency, nothing else."""
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:

        async def one(body: dict[str, Any]) -> None:
            async with limit:
                response = await client.post("/v1/chat/completions", json=body)
                response.raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(one(b) for b in bodies))
        return time.perf_counter() - started


def bench_overhead(url: str, suite_path: Path, slots: int, workdir: Path) -> dict[str, Any]:
    base = workdir / "ps-overhead"
    bodies = request_bodies(suite_path)
    asyncio.run(bare_client(url, bodies[:slots], slots))  # warm the server's prompt cache equally
    bare_s = asyncio.run(bare_client(url, bodies, slots))
    plugin_s, proc = run_pytest(
        [
            str(suite_path),
            "-n",
            str(slots),
            "--llm-url",
            url,
            "--llm-cache",
            "off",
            "--promptsweep-dir",
            str(base),
        ],
        workdir,
    )
    if proc.returncode not in (0, 1):
        raise SystemExit(f"pytest failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    results = latest_results(base)
    errored = sum(1 for r in results if r["error"])
    return {
        "n": len(bodies),
        "bare_s": bare_s,
        "plugin_s": plugin_s,
        "ratio": plugin_s / bare_s,
        "errored": errored,
    }


def bench_cache(url: str, suite_path: Path, slots: int, workdir: Path) -> dict[str, Any]:
    base = workdir / "ps-cache"
    args = [str(suite_path), "-n", str(slots), "--llm-url", url, "--promptsweep-dir", str(base)]
    cold_s, _ = run_pytest(args, workdir)
    cold = latest_results(base)
    warm_s, proc = run_pytest(args, workdir)
    warm = latest_results(base)
    # The warm run without xdist: with every answer cached, worker start-up is the only cost.
    warm1_s, _ = run_pytest([a for a in args if a not in ("-n", str(slots))], workdir)
    return {
        "cold_s": cold_s,
        "warm_s": warm_s,
        "warm_serial_s": warm1_s,
        "ratio": cold_s / warm_s,
        "ratio_serial": cold_s / warm1_s,
        "cold_llm_calls": sum(1 for r in cold if not r["from_cache"] and not r["error"]),
        "warm_llm_calls": sum(1 for r in warm if not r["from_cache"]),
        "summary_line": next((ln for ln in proc.stdout.splitlines() if "response cache" in ln), ""),
    }


def bench_collect(workdir: Path, samples: int) -> dict[str, Any]:
    import yaml

    spec = yaml.safe_load(SUITE.read_text())
    data = json.loads((SUITE.parent / spec["dataset"]).read_text())
    records = data["samples"] if isinstance(data, dict) else data
    big = []
    for i in range(samples):
        record = dict(records[i % len(records)])
        record["signature_hash"] = f"{i:08x}"
        big.append(record)
    coll = workdir / "collect"
    coll.mkdir()
    (coll / "data.json").write_text(json.dumps(big))
    spec["dataset"] = "data.json"
    spec["template"] = str((SUITE.parent / spec["template"]).resolve())
    spec.pop("search_space", None)
    (coll / "big.suite.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    seconds, proc = run_pytest(["--collect-only", "--llm-server", "off", "big.suite.yaml"], coll)
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if proc.returncode != 0:
        raise SystemExit(f"collection failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return {
        "samples": samples,
        "seconds": seconds,
        "peak_rss_mb": peak_kb / 1024,
        "rss_is_max_of_children": before > 0,
        "items": proc.stdout.count("\n"),
    }


def start_server(slots: int) -> Any:
    from promptsweep.server.managed import ManagedServer
    from promptsweep.server.provision import default_model_path, find_llama_server

    binary = find_llama_server()
    if binary is None:
        raise SystemExit("no llama-server: run `promptsweep server ensure`")
    server = ManagedServer(binary, default_model_path(), slots=slots)
    server.start()
    return server


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--smoke", action="store_true", help="tiny version (CI): 4 samples, 1,000-sample collection"
    )
    parser.add_argument("--samples", type=int, default=24)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--collect-samples", type=int, default=10_000)
    parser.add_argument("--url", default=None, help="use a running llama-server instead of starting one")
    parser.add_argument("--no-write", action="store_true", help="do not write benchmarks/RESULTS.md")
    args = parser.parse_args()
    if args.smoke:
        args.samples, args.max_tokens, args.collect_samples = 4, 8, 1000

    # Collection first: RUSAGE_CHILDREN's peak is the largest child so far.
    with tempfile.TemporaryDirectory(prefix="ps-bench-") as tmp:
        workdir = Path(tmp)
        collect = bench_collect(workdir, args.collect_samples)
        print(
            f"collect {collect['samples']} samples: {collect['seconds']:.2f}s, controller peak RSS {collect['peak_rss_mb']:.0f} MB"
        )
        server = None if args.url else start_server(args.slots)
        url: str = args.url or server.url  # type: ignore[union-attr]
        try:
            suite_path = make_suite_copy(workdir, args.samples, args.max_tokens)
            overhead = bench_overhead(url, suite_path, args.slots, workdir)
            print(
                f"eval {overhead['n']} samples -n {args.slots}: plugin {overhead['plugin_s']:.2f}s, "
                f"bare httpx {overhead['bare_s']:.2f}s, ratio {overhead['ratio']:.3f}"
            )
            cache = bench_cache(url, suite_path, args.slots, workdir)
            print(
                f"cache: cold {cache['cold_s']:.2f}s, warm {cache['warm_s']:.2f}s ({cache['ratio']:.1f}x), "
                f"warm without xdist {cache['warm_serial_s']:.2f}s ({cache['ratio_serial']:.1f}x), "
                f"LLM calls warm {cache['warm_llm_calls']}"
            )
        finally:
            if server is not None:
                server.stop()

    rows = [
        (
            f"eval overhead: `pytest -n {args.slots} --llm-cache off` / bare asyncio httpx, {overhead['n']} samples",
            f"{overhead['ratio']:.3f}x ({overhead['plugin_s']:.1f}s vs {overhead['bare_s']:.1f}s)",
            "<= 1.05x",
            verdict(overhead["ratio"] <= 1.05),
        ),
        (
            f"warm re-run vs cold (same command, -n {args.slots})",
            f"{cache['ratio']:.1f}x faster ({cache['warm_s']:.2f}s vs {cache['cold_s']:.1f}s)",
            ">= 50x",
            verdict(cache["ratio"] >= 50),
        ),
        (
            "warm re-run without xdist vs cold",
            f"{cache['ratio_serial']:.1f}x faster ({cache['warm_serial_s']:.2f}s)",
            ">= 50x",
            verdict(cache["ratio_serial"] >= 50),
        ),
        (
            "LLM calls in the warm re-run",
            str(cache["warm_llm_calls"]),
            "0",
            verdict(cache["warm_llm_calls"] == 0),
        ),
        (
            f"collect {collect['samples']} samples (`--collect-only`)",
            f"{collect['seconds']:.2f}s",
            "< 5 s",
            verdict(collect["seconds"] < 5),
        ),
        (
            "controller peak RSS while collecting",
            f"{collect['peak_rss_mb']:.0f} MB",
            "< 300 MB",
            verdict(collect["peak_rss_mb"] < 300),
        ),
        ("`--optimize` calls vs full grid", "see benchmarks/bench_search.py", "<= 30%", "-"),
    ]
    table = "\n".join(
        ["| benchmark | measured | goal | |", "|---|---|---|---|"] + [f"| {' | '.join(r)} |" for r in rows]
    )
    print(table)
    if not args.no_write:
        load = os.getloadavg()
        # Other scripts keep their results in marked sections of the same file: keep them.
        kept = sections(RESULTS_MD.read_text()) if RESULTS_MD.exists() else ""
        RESULTS_MD.write_text(
            "# Benchmark results\n\n"
            f"`python benchmarks/bench_runtime.py{' --smoke' if args.smoke else ''}` on {platform.node()} "
            f"({os.cpu_count()} CPUs, load average {load[0]:.1f} at the end), llama-server with "
            f"SmolLM2-135M-Instruct Q4_1, -np {args.slots}, max_tokens {args.max_tokens}, "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Both sides of each ratio ran back to back "
            "in the same invocation against the same server.\n\n"
            f"{table}\n\n"
            "Wall times are whole processes (`python -m pytest ...` including interpreter start, plugin load, "
            "collection and xdist worker start-up); the bare client is timed from its first request to its last "
            "answer, after the same warm-up of the server's prompt cache.\n" + (f"\n{kept}" if kept else "")
        )
        print(f"wrote {RESULTS_MD}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
