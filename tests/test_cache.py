"""The response cache: modes, keys, errors never stored, several processes writing at once, the CLI."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from promptsweep.cli.main import main as cli_main
from promptsweep.core.answers.chat import ChatRequest, ChatResult, LLMError
from promptsweep.llm.cache import ResponseCache, cache_layer
from promptsweep.llm.client import EndpointInfo
from tests.fakeserver import FakeLLMServer
from tests.suitekit import make_suite, oracle

INFO = EndpointInfo(url="http://127.0.0.1:1", model_path="/m/smol.gguf", build_info="b1")


def request(text: str = "hi", temperature: float = 0.0) -> ChatRequest:
    return ChatRequest(messages=({"role": "user", "content": text},), params={"temperature": temperature})


class Counting:
    def __init__(self, fail: bool = False) -> None:
        self.calls = 0
        self.fail = fail

    def __call__(self, req: ChatRequest) -> ChatResult:
        self.calls += 1
        if self.fail:
            raise LLMError("http://x: HTTP 500", status=500)
        return ChatResult(text=f"answer {self.calls}", prompt_tokens=3, latency_s=0.2)


@pytest.mark.parametrize(
    ("mode", "calls", "cached_second"),
    [("read-write", 1, True), ("read", 2, False), ("write", 2, False)],
)
def test_modes(tmp_path: Path, mode: str, calls: int, cached_second: bool) -> None:
    cache = ResponseCache(tmp_path / "cache.sqlite3")
    backend = Counting()
    send = cache_layer(cache, mode)(INFO, backend)  # type: ignore[arg-type]
    first, second = send(request()), send(request())
    assert backend.calls == calls
    assert not first.from_cache
    assert second.from_cache is cached_second
    if cached_second:
        assert second.text == first.text and second.prompt_tokens == 3
    assert cache.stats().entries == (0 if mode == "read" else 1)


def test_read_mode_uses_what_write_stored(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "cache.sqlite3")
    cache_layer(cache, "write")(INFO, Counting())(request())
    backend = Counting()
    hit = cache_layer(cache, "read")(INFO, backend)(request())
    assert hit.from_cache and backend.calls == 0


def test_errors_are_never_stored(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "cache.sqlite3")
    send = cache_layer(cache, "read-write")(INFO, Counting(fail=True))
    with pytest.raises(LLMError):
        send(request())
    assert cache.stats().entries == 0


def test_key_depends_on_model_identity_and_body(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "cache.sqlite3")
    backend = Counting()
    layer = cache_layer(cache, "read-write")
    layer(INFO, backend)(request("a"))
    layer(INFO, backend)(request("b"))
    layer(EndpointInfo(url=INFO.url, model_path="/m/other.gguf", build_info="b1"), backend)(request("a"))
    assert backend.calls == 3
    assert request("a").cache_key("m") == request("a").cache_key("m", 0)  # repeat 0 keeps its old key
    assert request("a").cache_key("m", 0) != request("a").cache_key("m", 5)  # a repeat is asked again
    assert request("a", 0.7).cache_key("m", 0) != request("a", 0.7).cache_key("m", 1)


def legacy_key(req: ChatRequest, model: str) -> str:
    """The key formula from before repeats existed: caches written then must still hit."""
    payload: dict[str, Any] = {"model": model, "body": req.body()}
    if (req.params.get("temperature") or 0) > 0:
        payload["repetition"] = 0
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def test_repeat_zero_keeps_the_old_keys_and_each_repeat_has_its_own() -> None:
    for temperature in (0.0, 0.7):
        first = request("a", temperature)
        assert first.cache_key("m") == legacy_key(first, "m")
        again = dataclasses.replace(first, repeat=2)
        assert again.body() == first.body()  # the repeat index is never sent
        assert again.cache_key("m") != first.cache_key("m")  # even at temperature 0
        assert again.cache_key("m") == first.cache_key("m", 2)
        assert again.cache_key("m") != dataclasses.replace(first, repeat=1).cache_key("m")


def test_each_repeat_is_its_own_cache_entry(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "cache.sqlite3")
    backend = Counting()
    send = cache_layer(cache, "read-write")(INFO, backend)
    for repeat in (0, 1, 2, 0, 1, 2):
        send(dataclasses.replace(request("a"), repeat=repeat))
    assert backend.calls == 3
    assert cache.stats().entries == 3


def test_check_mode_asks_again_compares_and_never_writes(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "cache.sqlite3")
    cache_layer(cache, "read-write")(INFO, Counting())(request("a"))  # stores "answer 1"
    cache_layer(cache, "read-write")(INFO, Counting())(request("b"))  # stores "answer 1"
    backend = Counting()
    check = cache_layer(cache, "check")(INFO, backend)
    same = check(request("a"))  # the server says "answer 1" again
    different = check(request("b"))  # now "answer 2"
    missing = check(request("c"))
    assert backend.calls == 3  # every call reaches the server
    assert (same.cache_check, different.cache_check, missing.cache_check) == ("same", "different", "missing")
    assert not same.from_cache and different.text == "answer 2"
    assert cache.stats().entries == 2  # nothing written, nothing overwritten
    stored = cache.get(request("b").cache_key(INFO.model_identity))
    assert stored is not None and stored["text"] == "answer 1"


def _writer(path: str, worker: int, count: int) -> None:
    cache = ResponseCache(Path(path))
    for i in range(count):
        cache.put(f"{worker}-{i}", "model", {"text": f"{worker}-{i}"})
        assert cache.get(f"{worker}-{i}") == {"text": f"{worker}-{i}"}
    cache.close()


def test_several_processes_write_at_once(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite3"
    ResponseCache(path).open().close()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(path), w, 150)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    assert ResponseCache(path).stats().entries == 600
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_corrupt_cache_file_is_a_clear_usage_error(pytester: pytest.Pytester) -> None:
    make_suite(pytester)
    (pytester.path / ".promptsweep").mkdir()
    (pytester.path / ".promptsweep" / "cache.sqlite3").write_text("not a database at all" * 100)
    result = pytester.runpytest("--llm-server=off")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: response cache */cache.sqlite3 cannot be used: *; delete it or run `promptsweep cache clear`"
        ]
    )


def test_cache_end_to_end_with_xdist_and_clear(pytester: pytest.Pytester) -> None:
    make_suite(pytester)
    with FakeLLMServer(oracle()) as fake:
        cold = pytester.runpytest_subprocess("--llm-url", fake.url, "-n", "2")
        cold.assert_outcomes(passed=6)
        cold.stdout.fnmatch_lines(["*response cache (read-write, *): 0 hits, 6 misses"])
        warm = pytester.runpytest_subprocess("--llm-url", fake.url, "-n", "2")
        warm.assert_outcomes(passed=6)
        warm.stdout.fnmatch_lines(["*6 answers from the response cache*", "*: 6 hits, 0 misses"])
        assert len(fake.requests) == 6
        off = pytester.runpytest("--llm-url", fake.url, "--llm-cache", "off")
        off.assert_outcomes(passed=6)
        assert len(fake.requests) == 12
        cleared = pytester.runpytest("--llm-url", fake.url, "--llm-cache-clear")
        cleared.assert_outcomes(passed=6)
        cleared.stdout.fnmatch_lines(["*: 0 hits, 6 misses"])
        assert len(fake.requests) == 18


def test_cache_check_end_to_end_reports_the_agreement_rate(pytester: pytest.Pytester) -> None:
    make_suite(pytester)
    # One llama-server (same model file and build) on a new port each run, as the managed server is.
    props = {"model_path": "/models/tiny.gguf", "build_info": "b1", "total_slots": 2}
    with FakeLLMServer(oracle(), props=props) as fake:
        pytester.runpytest_subprocess("--llm-url", fake.url).assert_outcomes(passed=6)
    with FakeLLMServer(oracle(wrong={1, 4}), props=props) as changed:  # now two answers differ
        check = pytester.runpytest_subprocess("--llm-url", changed.url, "--llm-cache", "check", "-n", "2")
        assert len(changed.requests) == 6
    check.assert_outcomes(passed=6)
    check.stdout.fnmatch_lines(
        ["*response cache check (*): 4 of 6 stored answers reproduced (67%); 2 differ, 0 not in the cache*"]
    )
    runs = sorted((pytester.path / ".promptsweep" / "runs").iterdir())
    lines = [json.loads(x) for x in (runs[-1] / "results.jsonl").read_text().splitlines()]
    assert sorted(r["cache_check"] for r in lines) == ["different"] * 2 + ["same"] * 4
    metrics = json.loads((runs[-1] / "metrics.json").read_text())
    assert metrics["cache_check"] == {"same": 4, "different": 2, "missing": 0}
    with FakeLLMServer(oracle(), props=props) as fake:  # the stored answers are untouched: all hits again
        warm = pytester.runpytest_subprocess("--llm-url", fake.url)
        assert fake.requests == []
    warm.stdout.fnmatch_lines(["*: 6 hits, 0 misses"])


def test_cli_stats_and_clear(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = tmp_path / ".promptsweep"
    assert cli_main(["cache", "stats", "--dir", str(base)]) == 0
    assert "no response cache yet" in capsys.readouterr().out
    cache = ResponseCache(base / "cache.sqlite3")
    for i in range(3):
        cache.put(str(i), "/m/smol.gguf|b1", {"text": "x"})
    cache.close()
    assert cli_main(["cache", "stats", "--dir", str(base)]) == 0
    out = capsys.readouterr().out
    assert "3 answers" in out and "/m/smol.gguf|b1" in out
    assert cli_main(["cache", "clear", "--dir", str(base)]) == 0
    assert "removed 3 answers" in capsys.readouterr().out
    assert ResponseCache(base / "cache.sqlite3").stats().entries == 0
