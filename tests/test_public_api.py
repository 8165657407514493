"""The public front: ``import promptsweep`` without pytest, the README's production snippet,
and the Python route scoring what the YAML route scores on the real llama-server."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import promptsweep
from tests.fakeserver import FakeLLMServer
from tests.suitekit import SAMPLES, make_suite, on_v1, oracle

ROOT = Path(__file__).resolve().parents[1]
README_URL = "http://127.0.0.1:8080"


def run_python(code: str, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter, as a notebook or a service would. ``timeout`` is a
    bound only a hung process reaches; reaching it fails with what the process printed."""
    try:
        return subprocess.run(
            [sys.executable, "-c", code],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        printed = "".join(
            part.decode(errors="replace") if isinstance(part, bytes) else part
            for part in (exc.stdout, exc.stderr)
            if part
        )
        pytest.fail(
            f"python -c did not finish in {timeout:g}s; it printed:\n{printed[-3000:]}", pytrace=False
        )


def test_import_does_not_import_pytest(tmp_path: Path) -> None:
    proc = run_python(
        "import promptsweep, sys; print(promptsweep.__all__); assert 'pytest' not in sys.modules", tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert "'evaluate'" in proc.stdout and "'load_prompt'" in proc.stdout


def test_every_public_name_exists_and_is_documented() -> None:
    for name in promptsweep.__all__:
        value = getattr(promptsweep, name)
        if callable(value):
            assert (value.__doc__ or "").strip(), f"promptsweep.{name} has no docstring"
    assert "Stability" in (promptsweep.__doc__ or "")


def test_the_api_end_to_end_without_pytest(pytester: pytest.Pytester) -> None:
    """Load, render, send through the cache, parse, score and evaluate, in a process that
    never imports pytest; the rendered request is the one the YAML route sends."""
    make_suite(pytester, threshold=0.0)
    script = textwrap.dedent(
        """
        import json, sys
        import promptsweep

        url = sys.argv[1]
        prompt = promptsweep.load_prompt("tiny.suite.yaml")
        request = prompt.render({"line": "LOG-2 something happened", "namespace": "ns"})
        with promptsweep.connect(url, cache=".promptsweep") as endpoint:
            first = endpoint.send(request)
            again = endpoint.send(request)
        fields = prompt.parse(first.text).fields
        scored = prompt.score(first, {"label": "oom_killed", "severity": "error",
                                      "summary": "container was killed for memory"})
        agg = promptsweep.evaluate("tiny.suite.yaml", url=url, cache=".promptsweep")
        print(json.dumps({
            "body": request.body(), "fields": fields, "score": scored.score,
            "cached": [first.from_cache, again.from_cache],
            "n": agg.n, "overall": agg.overall.mean, "from_cache": agg.from_cache,
        }))
        assert "pytest" not in sys.modules, sorted(m for m in sys.modules if "pytest" in m)
        """
    )
    (pytester.path / "use_it.py").write_text(script)
    with FakeLLMServer(oracle({5})) as server:
        proc = subprocess.run(
            [sys.executable, "use_it.py", server.url],
            cwd=pytester.path,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        result = pytester.runpytest_subprocess("tiny.suite.yaml", "--llm-url", server.url, "-k", "k2")
    result.assert_outcomes(passed=1)
    body = out["body"]
    assert body["temperature"] == 0.0 and body["max_tokens"] == 64, "the template's model_defaults"
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"]["properties"]["label"]["enum"] == [
        "disk_full",
        "oom_killed",
        "started",
    ], "values: dataset enums come from the suite's data"
    assert out["fields"] == {k: SAMPLES[2][k] for k in ("label", "severity", "summary")}
    assert out["score"] == 1.0 and out["cached"] == [False, True]
    assert out["n"] == 6 and abs(out["overall"] - 5 / 6) < 0.05
    assert out["from_cache"] >= 1, "evaluate used the same response cache"
    lines = (next((pytester.path / ".promptsweep" / "runs").iterdir()) / "results.jsonl").read_text()
    assert json.loads(lines.splitlines()[0])["from_cache"], "pytest sent the same request: a cache hit"


def readme_snippet() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Use the prompt in production", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README: no python block under 'Use the prompt in production'"
    return match.group(1)


def copy_example(dest: Path, samples: int, max_tokens: int = 48) -> None:
    """The example suite and template, on the first ``samples`` samples of the example data,
    answers cut at ``max_tokens`` (48 holds the fields before the free-text summary; these
    tests compare routes, not answer quality, and the shipped 160 costs three times as long)."""
    for sub in ("evals/k8s_triage.suite.yaml", "prompt_templates/k8s_log_analysis_v1.yaml"):
        (dest / sub).parent.mkdir(parents=True, exist_ok=True)
        text = on_v1((ROOT / sub).read_text())
        (dest / sub).write_text(re.sub(r"max_tokens: \d+", f"max_tokens: {max_tokens}", text))
    data = json.loads((ROOT / "evals/data/k8s_triage_samples.json").read_text())
    (dest / "evals/data").mkdir(parents=True, exist_ok=True)
    (dest / "evals/data/k8s_triage_samples.json").write_text(json.dumps(data[:samples], indent=1))


# The snippet runs as written, but each request may wait as long as the test may: the
# library's 120 s default is for a server the caller has to itself, and this one may be
# answering another test's queued requests (or share the CPU with a busy machine).
PATIENT = """\
import functools, promptsweep
promptsweep.connect = functools.partial(promptsweep.connect, timeout=600)
promptsweep.evaluate = functools.partial(promptsweep.evaluate, timeout=600)
"""


@pytest.mark.real_server
def test_readme_production_snippet_runs(tmp_path: Path, llama_server_url: str) -> None:
    copy_example(tmp_path, samples=3)
    snippet = readme_snippet()
    assert README_URL in snippet
    proc = run_python(PATIENT + snippet.replace(README_URL, llama_server_url), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert re.fullmatch(r"overall \d\.\d{3} over 3 samples", lines[-1]), proc.stdout
    assert (tmp_path / ".promptsweep" / "cache.sqlite3").is_file()


PYTHON_ROUTE = """
import pytest

@pytest.mark.promptsweep(suite="evals/k8s_triage.suite.yaml")
def test_triage(sample, prompt, endpoint, promptsweep_score):
    answer = endpoint.chat(prompt)
    result = promptsweep_score(answer)
    assert result.got.get("severity") in {"info", "warn", "error", "critical"}
"""


def _results(pytester: pytest.Pytester) -> list[dict[str, object]]:
    runs = sorted((pytester.path / ".promptsweep" / "runs").iterdir())
    return [json.loads(line) for line in (runs[-1] / "results.jsonl").read_text().splitlines()]


@pytest.mark.real_server
def test_python_route_and_evaluate_score_what_the_yaml_route_scores(
    pytester: pytest.Pytester, llama_server_url: str
) -> None:
    """The same samples through the YAML route, the README's Python route and
    ``promptsweep.evaluate``: the same requests (every later answer is a cache hit) and the
    same scores."""
    copy_example(pytester.path, samples=4)
    common = (
        "--llm-url",
        llama_server_url,
        "--min-score",
        "0",
        "--llm-timeout",
        "600",
        "-p",
        "no:cacheprovider",
    )
    yaml_route = pytester.runpytest_subprocess("evals/k8s_triage.suite.yaml", *common)
    yaml_route.assert_outcomes(passed=4)
    by_yaml = {r["sample_id"]: r for r in _results(pytester)}
    pytester.makepyfile(test_route=PYTHON_ROUTE)
    python_route = pytester.runpytest_subprocess("test_route.py", *common)
    python_route.assert_outcomes(passed=4)
    by_python = {r["sample_id"]: r for r in _results(pytester)}
    assert by_python.keys() == by_yaml.keys()
    for sample_id, result in by_python.items():
        assert result["from_cache"], f"{sample_id}: the Python route sent another request"
        assert result["scores"] == by_yaml[sample_id]["scores"], sample_id
    agg = promptsweep.evaluate(
        pytester.path / "evals/k8s_triage.suite.yaml",
        url=llama_server_url,
        cache=pytester.path / ".promptsweep",
    )
    assert agg.from_cache == agg.n == 4
    assert {r.sample_id: r.score for r in agg.results} == {k: v["score"] for k, v in by_yaml.items()}


def test_evaluate_without_a_url_sends_the_managed_servers_key(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The managed server requires its own fresh key; ``evaluate(url=None)`` must send it."""
    from promptsweep.llm.client import EndpointInfo
    from promptsweep.server.endpoints import EndpointManager

    suite = make_suite(pytester)
    with FakeLLMServer(oracle()) as fake:

        def start_managed(self: EndpointManager) -> EndpointInfo:
            self.managed_api_key = "managed-key"
            self.infos = [EndpointInfo(url=fake.url)]  # as the real start records it
            return self.infos[0]

        monkeypatch.setattr(EndpointManager, "start_managed", start_managed)
        aggregate = promptsweep.evaluate(suite, url=None, concurrency=1)
    assert aggregate.n == 6 and not aggregate.errored
    assert {h.get("Authorization") for h in fake.headers_seen} == {"Bearer managed-key"}
