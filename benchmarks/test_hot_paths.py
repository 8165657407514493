"""The plugin's own costs on its hot paths, measured with pytest-benchmark.

Run by ``just bench`` (compared against the baseline in ``benchmarks/baselines``; a median
more than 50% slower fails) and saved by ``just bench-save``; never by CI (``testpaths`` is
``tests``). Each benchmark is one thing a run does per sample or per run, on the example
suite where it has the data (``evals/k8s_triage.suite.yaml`` and its v2 template) and on
synthetic data where a size is the point (10,000 results, a 1,000-sample pool, 10,000 samples).

The checks after each benchmark only make sure the code measured did the work (a benchmark of
an error path would measure nothing); no check is on time.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

import promptsweep
from promptsweep.core.answers.metrics import MetricRegistry
from promptsweep.core.answers.parsing import parse_answer
from promptsweep.core.answers.result import SampleResult
from promptsweep.core.data.dataset import Sample
from promptsweep.core.measure.aggregate import aggregate
from promptsweep.core.measure.scoring import Scorer
from promptsweep.core.neighbours.nearest import Example, Pool
from promptsweep.core.prompt import Prompt
from promptsweep.core.templates import sandbox
from promptsweep.core.templates.template import template_from_mapping

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "evals" / "k8s_triage.suite.yaml"

Benchmark = Any  # pytest-benchmark's fixture (BenchmarkFixture) ships no type information


@pytest.fixture(scope="module")
def prompt() -> Prompt:
    """The example suite's prompt: the v2 template, two retrieved examples per sample."""
    loaded = promptsweep.load_prompt(SUITE)
    assert loaded.retrieval is not None and loaded.retrieval.k > 0, "v2 should retrieve examples"
    return loaded


@pytest.fixture(scope="module")
def sample(prompt: Prompt) -> Sample:
    """A held-out sample: what a plain run of the example suite scores."""
    dataset = prompt.suite.load_dataset()
    return prompt.suite.samples_to_evaluate(dataset)[0]


@pytest.fixture
def no_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    """The render deadline switched off: there is no option for it (``--template-timeout``
    only takes a positive number, and an infinite one still runs every check), so the two
    pieces of it that cost are replaced: the trace function each filter call runs under
    (``_call_before_deadline``) by a plain call, and the clock read before and after each
    filter by nothing. The clock read every 32 steps stays (one ``time.monotonic`` per 32
    outputs). Patching a name that is gone fails here, not silently."""

    def plain_call(budget: Any, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)

    monkeypatch.setattr(sandbox, "_call_before_deadline", plain_call)
    monkeypatch.setattr(sandbox._Budget, "check_time", lambda self: None)


# ----------------------------------------------------------------------------- rendering


def test_render_prompt(benchmark: Benchmark, prompt: Prompt, sample: Sample) -> None:
    """One request of the example suite: system text, two retrieved examples as turns, the
    question, the JSON schema. The ranking is cached after the first round, as it is for
    every candidate after the first in a search (cold ranking: ``test_rank_neighbours``)."""
    benchmark.extra_info["what"] = (
        "render one request of the example suite (v2: system, 2 retrieved examples, question, schema)"
    )
    request = benchmark(prompt.render, sample)
    assert len(request.messages) == 6 and sample.data["log_line"] in request.messages[-1]["content"]


def test_render_prompt_no_deadline(
    benchmark: Benchmark, prompt: Prompt, sample: Sample, no_deadline: None
) -> None:
    """The same request with the render deadline off: the deadline's cost is the difference.
    The shipped templates call no filter, so this should be close to ``test_render_prompt``."""
    benchmark.extra_info["what"] = "the same with the render deadline off"
    request = benchmark(prompt.render, sample)
    assert len(request.messages) == 6


FILTERED = template_from_mapping(
    {
        "id": "filtered",
        "system": "Classify the log line of {{ component | default('a container') | upper }}.",
        "user": (
            "Namespace: {{ namespace | trim | lower }}\n"
            "Pod: {{ pod | replace('-', ' ') | truncate(40) }}\n"
            "Log line:\n{{ logs | trim | wordwrap(80) | indent(2) }}\n"
            "Words: {{ logs.split() | map('lower') | unique | sort | join(', ') | truncate(120) }}"
        ),
        "inputs": {"required": ["logs"], "optional": {"namespace": "unknown", "pod": "unknown"}},
    }
)


def _filtered_values(sample: Sample) -> dict[str, Any]:
    return {
        "logs": sample.data["log_line"],
        "namespace": sample.data["namespace"],
        "pod": sample.data["pod"],
        "component": sample.data["container"],
    }


def test_render_filters(benchmark: Benchmark, sample: Sample) -> None:
    """A template that has 14 filter calls: each runs under the deadline's trace function."""
    benchmark.extra_info["what"] = "render a template that has 14 filter calls"
    messages = benchmark(FILTERED.render, _filtered_values(sample))
    assert messages[0]["content"].startswith("Classify the log line of ")
    assert "Words: " in messages[-1]["content"]


def test_render_filters_no_deadline(benchmark: Benchmark, sample: Sample, no_deadline: None) -> None:
    """The same filters with the deadline off: the trace function's cost per filter call."""
    benchmark.extra_info["what"] = "the same with the render deadline off"
    messages = benchmark(FILTERED.render, _filtered_values(sample))
    assert "Words: " in messages[-1]["content"]


# ----------------------------------------------------------------------------- parsing and scoring


def _answer(sample: Sample, fields: list[str]) -> dict[str, str]:
    return {name: str(sample.expected[name]) for name in fields}


def _parse(prompt: Prompt, text: str) -> Any:
    suite = prompt.suite
    return parse_answer(
        text,
        list(suite.fields),
        label_fields=suite.label_fields,
        synonyms={name: spec.synonyms for name, spec in suite.fields.items() if spec.synonyms},
        aliases={name: spec.aliases for name, spec in suite.fields.items() if spec.aliases},
    )


def test_parse_json_answer(benchmark: Benchmark, prompt: Prompt, sample: Sample) -> None:
    """A JSON answer with every field, as ``output.format: json_schema`` gets it."""
    benchmark.extra_info["what"] = "parse a JSON answer (5 fields)"
    fields = list(prompt.suite.fields)
    text = json.dumps(_answer(sample, fields))
    parsed = benchmark(_parse, prompt, text)
    assert parsed.source == "json" and not parsed.missing


def test_parse_lines_answer(benchmark: Benchmark, prompt: Prompt, sample: Sample) -> None:
    """The same answer as ``field: value`` lines (``output.format: text``), after a line of
    reasoning, with a synonym and a spaced label to normalise."""
    benchmark.extra_info["what"] = "parse `field: value` lines (5 fields, after a line of reasoning)"
    answer = _answer(sample, list(prompt.suite.fields))
    answer["severity"] = {"warn": "Warning", "error": "ERR", "critical": "fatal"}.get(
        answer["severity"], answer["severity"]
    )
    answer["root_cause"] = answer["root_cause"].replace("_", " ").title()
    text = "The container logged a known failure.\n" + "\n".join(f"{k}: {v}" for k, v in answer.items())
    parsed = benchmark(_parse, prompt, text)
    assert parsed.source == "lines" and not parsed.missing
    assert parsed.fields["root_cause"] == sample.expected["root_cause"]


def test_score_sample(benchmark: Benchmark, prompt: Prompt, sample: Sample) -> None:
    """Each field's metric (exact, token F1, ROUGE-L) and the weighted sum, for an answer
    that is right on some fields and differs in wording on the summary."""
    benchmark.extra_info["what"] = "score one sample (exact, token F1, ROUGE-L) and weight it"
    scorer = Scorer(prompt.suite, MetricRegistry())
    got = _answer(sample, list(prompt.suite.fields))
    got["severity"] = "info" if got["severity"] != "info" else "warn"
    got["summary"] = "the " + got["summary"].lower() + " again"

    def score() -> float:
        return scorer.weighted(scorer.score(sample.expected, got))

    weighted = benchmark(score)
    assert 0.0 < weighted < 1.0


# ----------------------------------------------------------------------------- aggregating


def _results(count: int, fields: list[str]) -> list[SampleResult]:
    """``count`` results over 29 categories with varied scores, tokens and latencies."""
    results = []
    for i in range(count):
        scores = {
            name: ((i * 7 + j * 3) % 11) / 10 if j else float(i % 3 == 0) for j, name in enumerate(fields)
        }
        results.append(
            SampleResult(
                suite="k8s_triage",
                sample_id=f"s{i:05d}",
                category=f"cause_{i % 29}",
                template="k8s_log_analysis@v2",
                expected={name: "x" for name in fields},
                got={name: "x" for name in fields},
                scores=scores,
                score=sum(scores.values()) / len(scores),
                raw="{}",
                parse_source="json",
                latency_s=0.5 + (i % 97) / 10,
                prompt_tokens=1200 + i % 240,
                completion_tokens=48,
                cached_tokens=(i % 5) * 200,
                from_cache=i % 10 == 0,
            )
        )
    return results


def test_aggregate_10000_results(benchmark: Benchmark, prompt: Prompt) -> None:
    """One run's totals over 10,000 results: per-field and per-category intervals, latency
    percentiles, tokens. Few rounds: one call takes a while."""
    benchmark.extra_info["what"] = "aggregate 10,000 results (intervals per field and category)"
    fields = list(prompt.suite.fields)
    results = _results(10_000, fields)
    total = benchmark.pedantic(aggregate, args=("k8s_triage", results, fields), rounds=5, iterations=1)
    assert total.n == 10_000 and len(total.categories) == 29


# ----------------------------------------------------------------------------- neighbours

_CAUSES = [
    ("OOMKilled: container {c} exceeded memory limit {n}Mi", "oom_killed"),
    ("Back-off pulling image registry.local/{c}:{n}", "image_pull_backoff"),
    ("Readiness probe failed: HTTP probe failed with statuscode: {n}", "readiness_probe_failed"),
    ("dial tcp 10.0.{n}.4:5432: connect: connection refused", "database_connection_refused"),
    ("etcdserver: request took too long ({n}ms) to execute", "etcd_slow_requests"),
    ("x509: certificate has expired or is not yet valid: {c} {n}", "certificate_expired"),
    ("0/{n} nodes are available: insufficient cpu, insufficient memory", "insufficient_node_resources"),
    (
        "upstream connect error or disconnect/reset before headers, retried {n} times",
        "upstream_connect_error",
    ),
    ("[ERROR] plugin/errors: {n} example.com. A: read udp i/o timeout", "dns_upstream_timeout"),
    ("Started {c} version 1.{n}.0 listening on :8080", "service_started"),
]
_COMPONENTS = ["orders-api", "billing-worker", "kubelet", "coredns", "loki", "postgres", "envoy", "etcd"]


def _log_line(i: int) -> tuple[str, str, str]:
    """A synthetic log line (template ``i % 10``, varied numbers and components), its
    component and its cause."""
    pattern, cause = _CAUSES[i % len(_CAUSES)]
    component = _COMPONENTS[(i // len(_CAUSES)) % len(_COMPONENTS)]
    line = f"{i % 28:02d}:{i % 60:02d} level=error pod={component}-{i:04x} " + pattern.format(
        c=component, n=i
    )
    return line, component, cause


@pytest.fixture(scope="module")
def pool() -> Pool:
    """1,000 synthetic log-line examples, compared on the log line and the component as v2
    compares them."""
    examples = []
    for i in range(1000):
        line, component, cause = _log_line(i)
        examples.append(
            Example(
                id=f"e{i:04d}",
                inputs={"logs": line, "component": component},
                answer={"root_cause": cause},
                group=f"g{i % 250}",
            )
        )
    return Pool(examples, ["logs", "component"], group_by=None)


def test_rank_neighbours(benchmark: Benchmark, pool: Pool) -> None:
    """One cold ranking (BM25 over the 1,000 examples, then the similarities of the first
    four): the pool's query cache is emptied before each round, untimed, and each round asks
    a different log line."""
    benchmark.extra_info["what"] = "rank a 1,000-sample pool for one new input (cold)"
    queries = iter(range(10**9))

    def next_query() -> tuple[tuple[dict[str, str]], dict[str, Any]]:
        pool._cache.clear()
        line, component, _ = _log_line(next(queries) + 1000)
        return ({"logs": line, "component": component},), {}

    def rank(values: dict[str, str]) -> Any:
        return pool.nearest(values, 4)

    found = benchmark.pedantic(rank, setup=next_query, rounds=300, iterations=1, warmup_rounds=5)
    assert len(found) == 4 and found[0].similarity > 0.3
    assert len(pool._cache) == 1, "each round should rank once, into an emptied cache"


# ----------------------------------------------------------------------------- collection


@pytest.fixture(scope="module")
def big_suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project laid out as this one (``evals/``, ``prompt_templates/``) whose suite is the
    example suite (v2 template, its pool) over a 10,000-record dataset: the example samples
    repeated, each with its own id; every sample is collected (``evaluate: all``)."""
    spec = yaml.safe_load(SUITE.read_text())
    records = json.loads((SUITE.parent / spec["dataset"]).read_text())
    records = records["samples"] if isinstance(records, dict) else records
    big = [dict(records[i % len(records)], signature_hash=f"{i:08x}") for i in range(10_000)]
    project = tmp_path_factory.mktemp("collect")
    for source in (SUITE.parent / spec["dataset"], SUITE.parent / spec["template"]):
        copy = project / source.resolve().relative_to(ROOT)
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, copy)
    (project / "evals" / "data" / "big.json").write_text(json.dumps(big))
    spec["dataset"] = "data/big.json"
    spec.pop("search_space", None)
    spec["split"]["evaluate"] = "all"
    (project / "evals" / "big.suite.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return project


def test_collect_10000_samples(benchmark: Benchmark, big_suite: Path) -> None:
    """``pytest --collect-only`` of a 10,000-sample suite in a fresh process: interpreter and
    plugin start, suite and dataset loading, one item per sample. Three rounds."""
    benchmark.extra_info["what"] = "`pytest --collect-only` of a 10,000-sample suite (a fresh process)"
    command = [
        sys.executable,
        "-m",
        "pytest",
        "--collect-only",
        "-q",
        "-p",
        "no:cacheprovider",
        "--llm-server",
        "off",
        "evals/big.suite.yaml",
    ]

    def collect() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            command, cwd=big_suite, capture_output=True, text=True, env=os.environ.copy(), check=False
        )

    proc = benchmark.pedantic(collect, rounds=3, iterations=1)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "10000 tests collected" in proc.stdout, proc.stdout[-2000:]
