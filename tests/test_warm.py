"""A warm re-run costs what it does: ``-n auto`` starts no worker (or only as many as there are
calls to make) when the response cache holds the answers, and a managed llama-server is not
started at all when nothing misses."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from promptsweep.core.answers.chat import ChatRequest, ChatResult
from promptsweep.llm.client import EndpointInfo
from promptsweep.llm.endpoint import EndpointConfig
from promptsweep.server.endpoints import EndpointManager, ServerConfig
from promptsweep.server.identity import predicted_identity, record_identity
from tests.fakeserver import FakeLLMServer
from tests.suitekit import make_suite, on_v1, oracle

ROOT = Path(__file__).resolve().parents[1]


def _hits(pytester: pytest.Pytester) -> list[bool]:
    run = sorted((pytester.path / ".promptsweep" / "runs").iterdir())[-1]
    return [json.loads(line)["from_cache"] for line in (run / "results.jsonl").read_text().splitlines()]


def test_n_auto_starts_only_the_workers_the_cache_cannot_spare(pytester: pytest.Pytester) -> None:
    make_suite(pytester, threshold=0.0)
    with FakeLLMServer(oracle(), props={"total_slots": 4}) as server:
        cold = pytester.runpytest_subprocess("tiny.suite.yaml", "--llm-url", server.url, "-n", "auto", "-v")
        cold.stdout.fnmatch_lines(["*created: 4/4 workers*"])
        assert len(server.requests) == 6

        warm = pytester.runpytest_subprocess("tiny.suite.yaml", "--llm-url", server.url, "-n", "auto", "-v")
        warm.assert_outcomes(passed=6)
        warm.stderr.fnmatch_lines(
            ["*-n auto: 0 call(s) not in the response cache; running without xdist workers*"]
        )
        assert "created:" not in warm.stdout.str() and "bringing up nodes" not in warm.stdout.str()
        assert len(server.requests) == 6, "a warm run makes no call"
        assert all(_hits(pytester))

        data = pytester.path / "data.json"
        data.write_text(data.read_text().replace("LOG-3 something happened", "LOG-3 something changed"))
        one_left = pytester.runpytest_subprocess(
            "tiny.suite.yaml", "--llm-url", server.url, "-n", "auto", "-v"
        )
        one_left.assert_outcomes(passed=6)
        one_left.stderr.fnmatch_lines(
            ["*-n auto: 1 call(s) not in the response cache; 1 worker(s) instead of 4*"]
        )
        one_left.stdout.fnmatch_lines(["*created: 1/1 worker*"])
        assert len(server.requests) == 7


def test_unknowable_runs_keep_the_usual_size(pytester: pytest.Pytester) -> None:
    """A Python test among the arguments, or a run that does not read the cache: -n auto = slots."""
    make_suite(pytester, threshold=0.0)
    pytester.makepyfile(test_plain="def test_x():\n    assert True\n")
    with FakeLLMServer(oracle(), props={"total_slots": 2}) as server:
        pytester.runpytest_subprocess("tiny.suite.yaml", "--llm-url", server.url)
        mixed = pytester.runpytest_subprocess(".", "--llm-url", server.url, "-n", "auto", "-v")
        mixed.stdout.fnmatch_lines(["*created: 2/2 workers*"])
        uncached = pytester.runpytest_subprocess(
            "tiny.suite.yaml", "--llm-url", server.url, "-n", "auto", "-v", "--llm-cache", "write"
        )
        uncached.stdout.fnmatch_lines(["*created: 2/2 workers*"])


def test_the_managed_identity_is_known_before_the_server_starts(tmp_path: Path) -> None:
    binary, model = tmp_path / "llama-server", tmp_path / "m.gguf"
    binary.write_text("#!/bin/sh\n")
    model.write_bytes(b"gguf")
    info = EndpointInfo(url="http://127.0.0.1:5", model_path=str(model), build_info="b1-x", total_slots=4)
    assert predicted_identity(tmp_path, binary, model) is None
    record_identity(tmp_path, binary, model, info)
    predicted = predicted_identity(tmp_path, binary, model)
    assert predicted is not None and predicted.model_identity == info.model_identity
    model.write_bytes(b"another model")  # the file changed: the record no longer applies
    assert predicted_identity(tmp_path, binary, model) is None


def test_a_predicted_endpoint_starts_the_server_only_on_a_miss(monkeypatch: pytest.MonkeyPatch) -> None:
    manager = EndpointManager(ServerConfig(), EndpointConfig())
    manager.predicted = EndpointInfo(url="managed://not-started", model_path="/m.gguf", build_info="b1")
    started: list[bool] = []
    answers: dict[str, ChatResult] = {}

    def cache(info: EndpointInfo, send):  # type: ignore[no-untyped-def]
        def cached(request: ChatRequest) -> ChatResult:
            key = request.cache_key(info.model_identity)
            if key not in answers:
                answers[key] = send(request)
            return answers[key]

        return cached

    class FakeClient:
        def chat(self, request: ChatRequest) -> ChatResult:
            return ChatResult(text="fresh")

        def close(self) -> None:
            pass

    def start() -> EndpointInfo:
        started.append(True)
        manager.infos = [EndpointInfo(url="http://127.0.0.1:1", model_path="/m.gguf", build_info="b1")]
        return manager.infos[0]

    monkeypatch.setattr(manager, "start_managed", start)
    monkeypatch.setattr(EndpointConfig, "client", lambda self, url, **kwargs: FakeClient())
    manager.layers.append(cache)
    request = ChatRequest(messages=({"role": "user", "content": "hi"},))
    answers[request.cache_key(manager.predicted.model_identity)] = ChatResult(text="cached")
    endpoint = manager.endpoint()
    assert endpoint.send(request).text == "cached" and not started
    other = ChatRequest(messages=({"role": "user", "content": "new"},))
    assert endpoint.send(other).text == "fresh" and started == [True]
    assert endpoint.send(ChatRequest(messages=({"role": "user", "content": "newer"},))).text == "fresh"
    assert started == [True], "started once"
    manager.close()


@pytest.mark.real_server
@pytest.mark.parametrize("workers", ["auto", "2"])
def test_a_warm_run_on_the_managed_server_starts_nothing(
    pytester: pytest.Pytester,
    llama_server_files: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    workers: str,
) -> None:
    """Cold: the managed llama-server answers and its identity is recorded. Warm: every answer
    is cached, so neither xdist workers nor llama-server are started, with ``-n auto`` or a
    number (``-n 2`` started both, issue 28 item 5)."""
    # pytester's HOME is empty: point the plugin at the binary and model already provisioned
    monkeypatch.setenv("PROMPTSWEEP_LLAMA_SERVER", str(llama_server_files[0]))
    monkeypatch.setenv("PROMPTSWEEP_MODEL", str(llama_server_files[1]))
    for sub in ("evals/k8s_triage.suite.yaml", "prompt_templates/k8s_log_analysis_v1.yaml"):
        (pytester.path / sub).parent.mkdir(parents=True, exist_ok=True)
        # short answers: this test is about what a warm run starts, not about the answers
        text = re.sub(r"max_tokens: \d+", "max_tokens: 32", on_v1((ROOT / sub).read_text()))
        (pytester.path / sub).write_text(text)
    data = json.loads((ROOT / "evals/data/k8s_triage_samples.json").read_text())
    (pytester.path / "evals/data").mkdir()
    (pytester.path / "evals/data/k8s_triage_samples.json").write_text(json.dumps(data[:3]))
    args = ("evals", "-n", workers, "--llm-slots", "2", "--min-score", "0", "--llm-timeout", "600", "-v")
    cold = pytester.runpytest_subprocess(*args)
    cold.assert_outcomes(passed=3)
    server_dir = pytester.path / ".promptsweep" / "server"
    logs = sorted(server_dir.glob("llama-server-*.log"))
    assert len(logs) == 1 and (server_dir / "identity.json").is_file()
    warm = pytester.runpytest_subprocess(*args)
    warm.assert_outcomes(passed=3)
    warm.stderr.fnmatch_lines(["*running without xdist workers*"])
    assert "starting llama-server" not in warm.stderr.str()
    assert sorted(server_dir.glob("llama-server-*.log")) == logs, "no second llama-server"
    assert all(_hits(pytester))
    config = json.loads(
        (sorted((pytester.path / ".promptsweep" / "runs").iterdir())[-1] / "config.json").read_text()
    )
    assert config["model"]["model_path"].endswith(".gguf"), "provenance still names the model"
