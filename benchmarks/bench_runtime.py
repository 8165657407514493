"""Benchmarks of what the plugin adds: eval overhead against a bare asyncio client on identical
requests (paired runs, alternating order), warm vs cold cache, and collecting a 10,000-sample
dataset. Writes only its own section of benchmarks/RESULTS.md (``runtime``), after each part.

Each part runs in a scratch project that holds copies of ``evals/`` and ``prompt_templates/``,
so the suite's template and whatever the template names relative to itself (its examples pool)
lie inside the project, as the plugin's path rule requires.

Run: ``python benchmarks/bench_runtime.py [--smoke] [--samples N] [--slots N] [--pairs N]``
(``just bench``). Needs the real llama-server (``promptsweep server ensure``); --smoke runs a
tiny version. The --optimize benchmark (calls vs full grid) is benchmarks/bench_search.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from bench_optimize import end_stamp, measured_commit
from results_md import update_section

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "evals" / "k8s_triage.suite.yaml"
SECTION = "runtime"
RATIO_GOAL = 1.05
"""Plugin / bare client, median of at least MIN_PAIRS paired runs (issue 26)."""
MIN_PAIRS = 3


def scratch_project(workdir: Path, name: str) -> Path:
    """A project folder with copies of ``evals/`` and ``prompt_templates/``: the template, and the
    examples pool it names relative to itself, stay inside the project (the path rule)."""
    project = workdir / name
    shutil.copytree(ROOT / "evals", project / "evals", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "prompt_templates", project / "prompt_templates")
    return project


def example_records() -> list[dict[str, Any]]:
    import yaml

    spec = yaml.safe_load(SUITE.read_text())
    data = json.loads((SUITE.parent / spec["dataset"]).read_text())
    records: list[dict[str, Any]] = data["samples"] if isinstance(data, dict) else data
    return records


def write_suite(project: Path, records: list[dict[str, Any]], max_tokens: int | None = None) -> Path:
    """The example suite at the project's root, on ``records``, with its template's copy in the
    project; gates off (a benchmark measures, it does not judge), no search space."""
    import yaml

    spec = yaml.safe_load(SUITE.read_text())
    (project / "bench-data.json").write_text(json.dumps(records))
    spec["dataset"] = "bench-data.json"
    template = (SUITE.parent / spec["template"]).resolve()
    spec["template"] = os.path.relpath(project / template.relative_to(ROOT), project)
    spec.pop("search_space", None)
    if max_tokens is not None:
        spec["llm"] = {**(spec.get("llm") or {}), "max_tokens": max_tokens}
        # The template's model_defaults win over the suite's llm (core/prompt.py merge_params), so
        # the cap goes into the project's copy of the template too, or it would not hold.
        copied = project / template.relative_to(ROOT)
        template_spec = yaml.safe_load(copied.read_text())
        if "max_tokens" in (template_spec.get("model_defaults") or {}):
            template_spec["model_defaults"]["max_tokens"] = max_tokens
            copied.write_text(yaml.safe_dump(template_spec, sort_keys=False, allow_unicode=True))
    spec["thresholds"] = {"overall": 0.0, "max_errors": 0}
    path = project / "bench.suite.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run_pytest(args: list[str], cwd: Path) -> tuple[float, subprocess.CompletedProcess[str]]:
    """``python -m pytest`` in ``cwd`` with ``cwd`` as pytest's rootdir (the project the path rule
    keeps files in), timed as a whole process."""
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--rootdir", str(cwd), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
    )
    return time.perf_counter() - started, proc


def latest_results(base: Path) -> list[dict[str, Any]]:
    run = sorted((base / "runs").iterdir())[-1]
    return [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines() if line.strip()]


def request_bodies(suite_path: Path, info: Any) -> list[dict[str, Any]]:
    """The exact bodies the plugin sends for the suite: each request rendered by the same Evaluator
    a plain run builds, then dressed by the plugin's own client for this endpoint (for llama-server:
    ``stream``, ``stream_options`` and ``return_progress``; ``id_slot`` only if a request names a slot)."""
    from promptsweep.core.answers.metrics import MetricRegistry
    from promptsweep.core.data.suite import load_suite
    from promptsweep.core.evaluate import Evaluator
    from promptsweep.llm.endpoint import EndpointConfig

    suite = load_suite(suite_path)
    dataset = suite.load_dataset()
    evaluator = Evaluator(suite, suite.load_template(), MetricRegistry(), dataset=dataset)
    client = EndpointConfig().client_for(info)
    try:
        # _body is the client's one definition of what goes on the wire; no public accessor exists.
        return [client._body(evaluator.request(sample)) for sample in suite.samples_to_evaluate(dataset)]
    finally:
        client.close()


def describe_body(body: dict[str, Any]) -> str:
    """What one body held, for the section: keys, with the small values shown."""
    shown = []
    for key, value in body.items():
        if key in ("messages", "response_format"):
            shown.append(f"`{key}`")
        else:
            shown.append(f"`{key}: {json.dumps(value)}`")
    return ", ".join(shown) + ("" if "id_slot" in body else " (no `id_slot`)")


def chat_path(url: str) -> str:
    """The plugin's path for chat completions: ``/v1`` is added unless the URL ends with it."""
    return "/chat/completions" if url.rstrip("/").endswith("/v1") else "/v1/chat/completions"


async def bare_client(url: str, bodies: list[dict[str, Any]], concurrency: int) -> float:
    """A plain asyncio httpx client: the same bodies at the same concurrency, each answer read to its
    last byte (streamed, when the body asks for it), nothing parsed or stored."""
    from promptsweep.llm.body import ACCEPT_ENCODING

    limit = asyncio.Semaphore(concurrency)
    path = chat_path(url)
    headers = {"Accept-Encoding": ACCEPT_ENCODING}  # what the plugin's client accepts
    async with httpx.AsyncClient(base_url=url.rstrip("/"), timeout=600, headers=headers) as client:

        async def one(body: dict[str, Any]) -> None:
            async with limit, client.stream("POST", path, json=body) as response:
                response.raise_for_status()
                async for _ in response.aiter_bytes():
                    pass

        started = time.perf_counter()
        await asyncio.gather(*(one(b) for b in bodies))
        return time.perf_counter() - started


def plugin_run(url: str, project: Path, suite_path: Path, slots: int, base: Path) -> tuple[float, int]:
    """``pytest <suite> -n <slots> --llm-url <url> --llm-cache off``: whole-process seconds, errored samples."""
    args = [str(suite_path), "-n", str(slots), "--llm-url", url, "--llm-cache", "off"]
    seconds, proc = run_pytest([*args, "--promptsweep-dir", str(base)], project)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"pytest failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return seconds, sum(1 for r in latest_results(base) if r["error"])


def bench_overhead(
    url: str, info: Any, project: Path, suite_path: Path, slots: int, pairs: int
) -> dict[str, Any]:
    """Paired runs on identical requests, the order alternating (plugin, bare; bare, plugin; ...),
    so a machine that gets busier or a server cache that gets warmer favours neither side."""
    bodies = request_bodies(suite_path, info)
    asyncio.run(bare_client(url, bodies[:slots], slots))  # warm the server once before either side
    runs = []
    for pair in range(pairs):
        commit = measured_commit()
        order = ("plugin", "bare") if pair % 2 == 0 else ("bare", "plugin")
        seconds: dict[str, float] = {}
        errored = 0
        for side in order:
            if side == "bare":
                seconds["bare"] = asyncio.run(bare_client(url, bodies, slots))
            else:
                base = project / f".ps-overhead-{pair}"
                seconds["plugin"], errored = plugin_run(url, project, suite_path, slots, base)
        runs.append({
            "order": order, "plugin_s": seconds["plugin"], "bare_s": seconds["bare"],
            "ratio": seconds["plugin"] / seconds["bare"], "errored": errored, **end_stamp(commit),
        })  # fmt: skip
        print(
            f"pair {pair + 1} ({' then '.join(order)}): plugin {seconds['plugin']:.2f}s, bare "
            f"{seconds['bare']:.2f}s, ratio {runs[-1]['ratio']:.3f}",
            flush=True,
        )
    ratios = [r["ratio"] for r in runs]
    return {
        "n": len(bodies),
        "body": describe_body(bodies[0]) if bodies else "no request",
        "pairs": runs,
        "median": statistics.median(ratios),
        "min": min(ratios),
        "max": max(ratios),
    }


def bench_cache(url: str, project: Path, suite_path: Path, slots: int) -> dict[str, Any]:
    commit = measured_commit()
    base = project / ".ps-cache"
    args = [str(suite_path), "-n", str(slots), "--llm-url", url, "--promptsweep-dir", str(base)]
    cold_s, _ = run_pytest(args, project)
    cold = latest_results(base)
    warm_s, proc = run_pytest(args, project)
    warm = latest_results(base)
    # The warm run without xdist: with every answer cached, worker start-up is the only cost.
    warm1_s, _ = run_pytest([a for a in args if a not in ("-n", str(slots))], project)
    return {
        "cold_s": cold_s,
        "warm_s": warm_s,
        "warm_serial_s": warm1_s,
        "ratio": cold_s / warm_s,
        "ratio_serial": cold_s / warm1_s,
        "cold_llm_calls": sum(1 for r in cold if not r["from_cache"] and not r["error"]),
        "warm_llm_calls": sum(1 for r in warm if not r["from_cache"]),
        "summary_line": next((ln for ln in proc.stdout.splitlines() if "response cache" in ln), ""),
        **end_stamp(commit),
    }


def bench_collect(workdir: Path, samples: int) -> dict[str, Any]:
    commit = measured_commit()
    records = example_records()
    big = []
    for i in range(samples):
        record = dict(records[i % len(records)])
        record["signature_hash"] = f"{i:08x}"
        big.append(record)
    project = scratch_project(workdir, "collect")
    suite_path = write_suite(project, big)
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    seconds, proc = run_pytest(["--collect-only", "--llm-server", "off", suite_path.name], project)
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if proc.returncode != 0:
        raise SystemExit(f"collection failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return {
        "samples": samples,
        "seconds": seconds,
        "peak_rss_mb": peak_kb / 1024,
        "rss_is_max_of_children": before > 0,
        "items": sum(1 for line in proc.stdout.splitlines() if "::" in line),
        **end_stamp(commit),
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


def describe_server(info: Any) -> str:
    """The model and server the endpoint names itself (GET /props), not a name written here."""
    name = Path(info.model_path).name if info.model_path else info.model_id or "an unnamed model"
    parts = [f"llama-server {info.build_info}" if info.build_info else None]
    if info.total_slots:
        parts.append(f"{info.total_slots} slots")
    shown = [p for p in parts if p]
    return f"{name} ({', '.join(shown)})" if shown else name


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def _stamped(cells: tuple[str, str, str, str], figure: dict[str, Any]) -> str:
    load = figure.get("load")
    stamp = (f"`{figure['commit']}`", figure["ended"], "?" if load is None else f"{load:.2f}")
    return f"| {' | '.join((*cells, *stamp))} |"


def render(
    args: argparse.Namespace,
    server: str | None,
    collect: dict[str, Any] | None,
    overhead: dict[str, Any] | None,
    cache: dict[str, Any] | None,
) -> str:
    """The section from the parts measured so far, each row with its own commit, end and load."""
    rows: list[str] = []
    if overhead is not None:
        for number, pair in enumerate(overhead["pairs"], 1):
            errors = f"; {pair['errored']} errored samples" if pair["errored"] else ""
            rows.append(
                _stamped(
                    (
                        f"eval overhead, pair {number} ({' then '.join(pair['order'])})",
                        f"{pair['ratio']:.3f}x ({pair['plugin_s']:.1f}s vs {pair['bare_s']:.1f}s){errors}",
                        "",
                        "",
                    ),
                    pair,
                )
            )
        count = len(overhead["pairs"])
        enough = count >= MIN_PAIRS
        rows.append(
            _stamped(
                (
                    f"eval overhead: `pytest -n {args.slots} --llm-cache off` / bare asyncio httpx, "
                    f"{overhead['n']} samples, median of {count} pairs",
                    f"{overhead['median']:.3f}x (pairs {overhead['min']:.3f}x-{overhead['max']:.3f}x)",
                    f"<= {RATIO_GOAL}x (median of >= {MIN_PAIRS} pairs)",
                    verdict(overhead["median"] <= RATIO_GOAL) if enough else f"too few pairs ({count})",
                ),
                overhead["pairs"][-1],
            )
        )
    if cache is not None:
        rows += [
            _stamped(
                (
                    f"warm re-run vs cold (same command, -n {args.slots})",
                    f"{cache['ratio']:.1f}x faster ({cache['warm_s']:.2f}s vs {cache['cold_s']:.1f}s)",
                    ">= 50x",
                    verdict(cache["ratio"] >= 50),
                ),
                cache,
            ),
            _stamped(
                (
                    "warm re-run without xdist vs cold",
                    f"{cache['ratio_serial']:.1f}x faster ({cache['warm_serial_s']:.2f}s)",
                    ">= 50x",
                    verdict(cache["ratio_serial"] >= 50),
                ),
                cache,
            ),
            _stamped(
                (
                    "LLM calls in the warm re-run",
                    str(cache["warm_llm_calls"]),
                    "0",
                    verdict(cache["warm_llm_calls"] == 0),
                ),
                cache,
            ),
        ]
    if collect is not None:
        rows += [
            _stamped(
                (
                    f"collect {collect['samples']} samples (`--collect-only`, {collect['items']} items)",
                    f"{collect['seconds']:.2f}s",
                    "< 5 s",
                    verdict(collect["seconds"] < 5),
                ),
                collect,
            ),
            _stamped(
                (
                    "controller peak RSS while collecting",
                    f"{collect['peak_rss_mb']:.0f} MB",
                    "< 300 MB",
                    verdict(collect["peak_rss_mb"] < 300),
                ),
                collect,
            ),
        ]
    table = "\n".join(
        [
            "| benchmark | measured | goal | | commit | ended | load (1 min) |",
            "|---|---|---|---|---|---|---|",
            *rows,
        ]
    )
    command = "python benchmarks/bench_runtime.py" + (" --smoke" if args.smoke else "")
    command += (
        f" --samples {args.samples} --max-tokens {args.max_tokens} --slots {args.slots} --pairs {args.pairs}"
    )
    lines = [
        "## Plugin overhead, warm re-runs and collection",
        "",
        f"`{command}` on {os.uname().nodename} ({os.cpu_count()} CPUs), against "
        + (f"{server}" if server else "no server yet")
        + f", max_tokens {args.max_tokens}. Each row carries the commit it was measured at (`-dirty`: tracked "
        "files differed from it), the UTC time it ended and the 1-minute load average at that moment.",
        "",
        table,
        "",
        "Wall times are whole processes (`python -m pytest ...` including interpreter start, plugin load, "
        "collection and xdist worker start-up); the bare client is timed from its first request to its last "
        "answer's last byte. *Eval overhead* pairs one plugin run with one bare run on identical requests, "
        "the order alternating from pair to pair (plugin then bare, bare then plugin, ...) after one warm-up "
        "of the server's prompt cache, so neither side always runs on the warmer cache or the quieter "
        "machine; each pair's ratio is plugin / bare, and the goal is read on the median of the pairs.",
    ]
    if overhead is not None:
        lines += [
            "",
            f"Both sides sent the same {overhead['n']} bodies, rendered by the plugin's Evaluator and dressed by "
            f"its own client for this endpoint (`LLMClient._body`): {overhead['body']}; the bare client read "
            "each answer to its end and parsed nothing.",
        ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--smoke", action="store_true", help="tiny version (CI): 4 samples, 1,000-sample collection"
    )
    parser.add_argument("--samples", type=int, default=24)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument(
        "--pairs",
        type=int,
        default=MIN_PAIRS,
        help=f"paired plugin/bare runs, order alternating. Default: {MIN_PAIRS}",
    )
    parser.add_argument("--collect-samples", type=int, default=10_000)
    parser.add_argument("--url", default=None, help="use a running llama-server instead of starting one")
    parser.add_argument("--no-write", action="store_true", help="do not write benchmarks/RESULTS.md")
    args = parser.parse_args()
    if args.pairs < 1:
        parser.error("--pairs: at least 1")
    if args.smoke:
        args.samples, args.max_tokens, args.collect_samples = 4, 8, 1000
    from promptsweep.llm.client import LLMClient

    measured: dict[str, Any] = {"server": None, "collect": None, "overhead": None, "cache": None}

    def write() -> None:
        # After each part, so a later failure loses nothing measured; only this script's section.
        if not args.no_write:
            update_section(SECTION, render(args, **measured))
            print("wrote benchmarks/RESULTS.md", flush=True)

    # Collection first: RUSAGE_CHILDREN's peak is the largest child so far.
    with tempfile.TemporaryDirectory(prefix="ps-bench-") as tmp:
        workdir = Path(tmp)
        collect = measured["collect"] = bench_collect(workdir, args.collect_samples)
        print(
            f"collect {collect['samples']} samples ({collect['items']} items): {collect['seconds']:.2f}s, "
            f"controller peak RSS {collect['peak_rss_mb']:.0f} MB",
            flush=True,
        )
        write()
        server = None if args.url else start_server(args.slots)
        url: str = args.url or server.url
        try:
            with LLMClient(url) as probe:
                info = probe.probe()
            measured["server"] = describe_server(info)
            project = scratch_project(workdir, "eval")
            suite_path = write_suite(project, example_records()[: args.samples], args.max_tokens)
            overhead = measured["overhead"] = bench_overhead(
                url, info, project, suite_path, args.slots, args.pairs
            )
            print(
                f"eval {overhead['n']} samples -n {args.slots}: plugin / bare median {overhead['median']:.3f} "
                f"({overhead['min']:.3f}-{overhead['max']:.3f}, {len(overhead['pairs'])} pairs)",
                flush=True,
            )
            write()
            cache = measured["cache"] = bench_cache(url, project, suite_path, args.slots)
            print(
                f"cache: cold {cache['cold_s']:.2f}s, warm {cache['warm_s']:.2f}s ({cache['ratio']:.1f}x), "
                f"warm without xdist {cache['warm_serial_s']:.2f}s ({cache['ratio_serial']:.1f}x), "
                f"LLM calls warm {cache['warm_llm_calls']}",
                flush=True,
            )
            write()
        finally:
            if server is not None:
                server.stop()
    print(render(args, **measured))
    return 0


if __name__ == "__main__":
    sys.exit(main())
