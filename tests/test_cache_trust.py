"""The response cache is trusted only where it was made (issue 27 row 4), answers from another
model are not cached under this one's key (row 13), and a warm run costs nothing whatever
answers it (issue 28 item 5: ``evaluate()`` uses the cache, gate-copied answers are not misses,
``-n 2`` starts no workers when nothing is to be sent)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest

import promptsweep
from promptsweep.core.answers.chat import ChatRequest, ChatResult
from promptsweep.llm.cache import CacheKeys, ResponseCache, cache_layer
from promptsweep.llm.client import EndpointInfo
from tests.fakeserver import FakeLLMServer, Reply, chat_reply
from tests.suitekit import make_suite, oracle
from tests.test_families import gated_project, model

INFO = EndpointInfo(url="http://127.0.0.1:1", model_id="m", model_path="/m/smol.gguf", build_info="b1")
PROPS = {"model_path": "/models/tiny.gguf", "build_info": "b1", "total_slots": 2}


def request(text: str = "hi") -> ChatRequest:
    return ChatRequest(messages=({"role": "user", "content": text},))


class Counting:
    def __init__(self, model: str | None = None) -> None:
        self.calls = 0
        self.model = model

    def __call__(self, req: ChatRequest) -> ChatResult:
        self.calls += 1
        return ChatResult(text=f"answer {self.calls}", prompt_tokens=3, model=self.model)


def answered_from(cache: ResponseCache, text: str = "hi") -> ChatResult:
    return cache_layer(cache, "read")(INFO, Counting())(request(text))


# ============================================================== where and when, signed


def test_entries_are_trusted_only_with_the_key_they_were_signed_with(tmp_path: Path) -> None:
    path = tmp_path / "project" / "cache.sqlite3"
    here, elsewhere = CacheKeys(tmp_path / "here"), CacheKeys(tmp_path / "elsewhere")
    writer = ResponseCache(path, here)
    cache_layer(writer, "read-write")(INFO, Counting())(request())
    writer.close()
    entry = ResponseCache(path, here).lookup(request().cache_key(INFO.model_identity))
    assert entry is not None and entry.trusted and entry.host and entry.created_at > 0
    assert entry.response["text"] == "answer 1"

    copied = ResponseCache(path, elsewhere)  # the same file on another machine: no key for it
    assert answered_from(copied).from_cache, "still readable"
    assert copied.untrusted_hits == 1
    assert "this machine has no key for this cache, so it did not write it" in (copied.untrusted_reason or "")
    assert "written on " in (copied.untrusted_reason or "")
    (key_file,) = (tmp_path / "here").iterdir()
    assert key_file.stat().st_mode & 0o077 == 0, "the key is private"


def test_an_altered_or_moved_entry_fails_its_signature(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite3"
    keys = CacheKeys(tmp_path / "keys")
    cache = ResponseCache(path, keys)
    layer = cache_layer(cache, "read-write")(INFO, Counting())
    layer(request("a"))
    layer(request("b"))
    cache.close()
    with sqlite3.connect(path) as db:  # a forger edits an answer, and copies another under a new key
        db.execute("UPDATE responses SET response = replace(response, 'answer 1', 'forged')")
        db.execute(
            "INSERT INTO responses SELECT ?, model, response, created_at, schema_version, host, signature "
            "FROM responses WHERE key = ?",
            (request("c").cache_key(INFO.model_identity), request("b").cache_key(INFO.model_identity)),
        )
    reader = ResponseCache(path, keys)
    for text in ("a", "c"):
        entry = reader.lookup(request(text).cache_key(INFO.model_identity))
        assert entry is not None and not entry.trusted
        assert "its signature does not match (written elsewhere, or altered)" in (entry.reason or "")
    good = reader.lookup(request("b").cache_key(INFO.model_identity))
    assert good is not None and good.trusted


def test_a_cache_written_before_signing_is_readable_but_untrusted(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite3"
    with sqlite3.connect(path) as db:  # the version 1 layout, as earlier promptsweep wrote it
        db.execute(
            "CREATE TABLE responses (key TEXT PRIMARY KEY, model TEXT NOT NULL, response TEXT NOT NULL, "
            "created_at REAL NOT NULL, schema_version INTEGER NOT NULL)"
        )
        db.execute(
            "INSERT INTO responses VALUES (?, ?, ?, 1700000000.0, 1)",
            (request().cache_key(INFO.model_identity), INFO.model_identity, json.dumps({"text": "old"})),
        )
    cache = ResponseCache(path, CacheKeys(tmp_path / "keys"))
    hit = answered_from(cache)
    assert hit.from_cache and hit.text == "old"
    assert cache.untrusted_hits == 1
    assert "2023-11-14 22:13 UTC, before promptsweep signed its cache entries" in (
        cache.untrusted_reason or ""
    )
    cache_layer(cache, "read-write")(INFO, Counting())(request("new"))  # new entries are signed
    fresh = cache.lookup(request("new").cache_key(INFO.model_identity))
    assert fresh is not None and fresh.trusted


def test_trust_signs_what_it_accepts_as_this_machines(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite3"
    cache_layer(ResponseCache(path, CacheKeys(tmp_path / "other")), "read-write")(INFO, Counting())(request())
    keys = CacheKeys(tmp_path / "mine")
    trusting = ResponseCache(path, keys, trust=True)
    assert cache_layer(trusting, "read-write")(INFO, Counting())(request()).from_cache
    assert trusting.untrusted_hits == 1  # said once ...
    later = ResponseCache(path, keys)
    assert answered_from(later).from_cache and later.untrusted_hits == 0  # ... and trusted since


def test_a_hostile_cache_id_names_no_key_file(tmp_path: Path) -> None:
    keys = CacheKeys(tmp_path / "keys")
    assert keys.get("../../etc/passwd", create=True) is None
    assert not (tmp_path / "keys").exists()
    made = keys.get("0" * 32, create=True)
    assert made is not None and keys.get("0" * 32, create=False) == made


# ============================================================== the run says so; CI refuses


def _forged_project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cache with every answer right, written on "another machine" (another key directory),
    as a pull request could bring it."""
    make_suite(pytester, threshold=0.9)
    monkeypatch.setenv("PROMPTSWEEP_CACHE_DIR", str(pytester.path / "elsewhere"))
    with FakeLLMServer(oracle(), props=PROPS) as fake:
        pytester.runpytest_subprocess("tiny.suite.yaml", "--llm-url", fake.url).assert_outcomes(passed=6)
    monkeypatch.setenv("PROMPTSWEEP_CACHE_DIR", str(pytester.path / "here"))


def always_wrong(body: dict[str, Any]) -> Reply:
    return chat_reply(json.dumps({"label": "nonsense", "severity": "info", "summary": "no"}))


@pytest.mark.parametrize("ci", ["true", ""])
def test_answers_from_a_cache_written_elsewhere_are_reported_and_ci_refuses_to_gate(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str
) -> None:
    """The attack: a committed cache with forged answers gave 80 hits, 0 requests and a passing
    gate against a server that always answered wrong; nothing told CI that no model was asked."""
    _forged_project(pytester, monkeypatch)
    monkeypatch.setenv("CI", ci)
    with FakeLLMServer(always_wrong, props=PROPS) as fake:
        result = pytester.runpytest_subprocess("tiny.suite.yaml", "--llm-url", fake.url)
        assert fake.requests == []
    result.stdout.fnmatch_lines(
        ["*6 answer(s) came from response-cache entries this machine did not write (written on *"]
    )
    if ci:
        assert result.ret == pytest.ExitCode.TESTS_FAILED
        result.stdout.fnmatch_lines(["*CI=true: refusing to gate on answers no model gave here; run with*"])
    else:
        assert result.ret == pytest.ExitCode.OK
        result.stdout.fnmatch_lines(["*the scores rest on them. --llm-cache-trust accepts them*"])


def test_llm_cache_trust_accepts_the_cache_in_ci(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    _forged_project(pytester, monkeypatch)
    monkeypatch.setenv("CI", "true")
    with FakeLLMServer(always_wrong, props=PROPS) as fake:
        trusted = pytester.runpytest_subprocess("tiny.suite.yaml", "--llm-url", fake.url, "--llm-cache-trust")
        assert trusted.ret == pytest.ExitCode.OK, trusted.stdout.str()[-2000:]
        trusted.stdout.fnmatch_lines(["*did not write (*; accepted (--llm-cache-trust)"])
        again = pytester.runpytest_subprocess("tiny.suite.yaml", "--llm-url", fake.url)
    assert again.ret == pytest.ExitCode.OK, "signed as this machine's by the trusting run"
    assert "did not write" not in again.stdout.str()


def test_a_cache_tracked_by_git_is_untrusted_even_where_it_was_written(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_suite(pytester, threshold=0.9)
    monkeypatch.setenv("PROMPTSWEEP_CACHE_DIR", str(pytester.path / "keys"))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"]
    with FakeLLMServer(oracle(), props=PROPS) as fake:
        pytester.runpytest_subprocess("tiny.suite.yaml", "--llm-url", fake.url).assert_outcomes(passed=6)
        subprocess.run([*git, "init", "-q"], cwd=pytester.path, check=True)
        subprocess.run([*git, "add", "-f", ".promptsweep/cache.sqlite3"], cwd=pytester.path, check=True)
        monkeypatch.setenv("CI", "1")
        result = pytester.runpytest_subprocess("tiny.suite.yaml", "--llm-url", fake.url)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "*6 answer(s) came from response-cache entries this machine did not write (cache.sqlite3 is tracked by git*"
        ]
    )


# ============================================================== another model's answers


def test_an_answer_from_another_model_is_not_cached_under_this_ones_key(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "cache.sqlite3", CacheKeys(tmp_path / "keys"))
    layer = cache_layer(cache, "read-write")
    assert layer(INFO, Counting(model="m"))(request("a")).text == "answer 1"
    assert layer(INFO, Counting(model="m-2024-08-06"))(request("b")).text == "answer 1"  # a dated snapshot
    assert layer(INFO, Counting(model="gpt-3.5-turbo-0613"))(request("c")).text == "answer 1"  # says nothing
    switched = layer(INFO, Counting(model="other-model"))(request("d"))
    assert switched.text == "answer 1" and not switched.from_cache, "returned, scored"
    assert cache.stats().entries == 3, "but not cached"
    assert cache.model_mismatches == 1 and cache.mismatch_example == "'other-model', keyed on 'm'"
    backend = Counting(model="first")
    send = layer(EndpointInfo(url="http://x:1"), backend)  # no /v1/models: the first answer's model counts
    send(request("e"))
    backend.model = "second"
    send(request("f"))
    assert cache.model_mismatches == 2 and cache.stats().entries == 4


def test_a_server_that_switches_model_mid_run_poisons_no_cache(pytester: pytest.Pytester) -> None:
    """The attack: 60 answers of model B stored under model A's key, served to the next A run."""
    make_suite(pytester, threshold=0.0)
    right = oracle()
    served: list[int] = []

    def switching(body: dict[str, Any]) -> Reply:
        reply: Reply = right(body)
        served.append(1)
        if len(served) > 3:
            assert isinstance(reply.body, dict)
            reply.body["model"] = "model-b"
        return reply

    with FakeLLMServer(switching, props=PROPS) as fake:
        first = pytester.runpytest_subprocess("tiny.suite.yaml", "--llm-url", fake.url)
    first.assert_outcomes(passed=6)
    first.stdout.fnmatch_lines(
        [
            "*3 answer(s) named another model than the one this run's cache is keyed on ('model-b', keyed on 'fake-model'); they were scored but not cached*"
        ]
    )
    with sqlite3.connect(pytester.path / ".promptsweep" / "cache.sqlite3") as db:
        models = [json.loads(r)["model"] for (r,) in db.execute("SELECT response FROM responses")]
    assert models == ["fake-model"] * 3
    with FakeLLMServer(oracle(), props=PROPS) as fake:
        again = pytester.runpytest_subprocess("tiny.suite.yaml", "--llm-url", fake.url)
    again.stdout.fnmatch_lines(["*: 3 hits, 3 misses"])


# ============================================================== warm runs cost nothing


def test_evaluate_answers_from_the_cache_on_a_second_call(pytester: pytest.Pytester) -> None:
    """``promptsweep.evaluate()`` as the README shows it ignored the cache (219 s instead of 2.3 s)."""
    suite = make_suite(pytester, threshold=0.0)
    with FakeLLMServer(oracle()) as fake:
        first = promptsweep.evaluate(suite, url=fake.url)
        calls = len(fake.requests)
        second = promptsweep.evaluate(suite, url=fake.url)
        assert len(fake.requests) == calls == 6, "the second call made none"
        assert (first.from_cache, second.from_cache) == (0, 6)
        assert second.overall.mean == first.overall.mean
        promptsweep.evaluate(suite, url=fake.url, cache_mode="off")
        assert len(fake.requests) == 12
    assert (pytester.path / ".promptsweep" / "cache.sqlite3").is_file(), "where pytest keeps it"


@pytest.mark.parametrize("workers", ["2", "auto"])
def test_a_warm_rerun_with_gate_copied_answers_starts_no_workers(
    pytester: pytest.Pytester, workers: str
) -> None:
    """Answers the gated lookup copied counted as misses (110 hits, 30 misses), so a warm
    re-run started a server and workers with nothing to send; ``-n 2`` started them always."""
    gated_project(pytester)
    args = ["tiny.suite.yaml", "--prompt-template", "gated.yaml", "-n", workers, "-p", "no:cacheprovider"]
    with FakeLLMServer(model, props={"total_slots": 4}) as fake:
        cold = pytester.runpytest_subprocess(*args, "--llm-url", fake.url)
        cold.assert_outcomes(passed=6)
        assert len(fake.requests) == 3  # e0-e2 are copied, e3-e5 asked
        warm = pytester.runpytest_subprocess(*args, "--llm-url", fake.url)
        assert len(fake.requests) == 3, "nothing asked"
    warm.assert_outcomes(passed=6)
    assert "created:" not in warm.stdout.str() and "bringing up nodes" not in warm.stdout.str()
    warm.stderr.fnmatch_lines(["*running without xdist workers*"])
    warm.stdout.fnmatch_lines(["*: 3 hits, 0 misses, 3 answered by the lookup without a call"])


def test_n_2_keeps_its_workers_while_anything_is_to_be_asked(pytester: pytest.Pytester) -> None:
    make_suite(pytester, threshold=0.0)
    with FakeLLMServer(oracle()) as fake:
        result = pytester.runpytest_subprocess("tiny.suite.yaml", "--llm-url", fake.url, "-n", "2")
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines(["*created: 2/2 workers*"])
    assert "running without xdist workers" not in result.stderr.str()
