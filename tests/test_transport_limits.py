"""What a server sends, bounded before it is believed: stacked content encodings (issue 27 row 6),
error bodies scrubbed before they are cut (row 8), and llama-server ``timings`` checked like token
counts (row 14).

The bomb runs in a child pytest whose address space is capped (``run_capped``: 2 GiB) with a
body that would pass that cap if any layer were inflated whole.
"""

from __future__ import annotations

import gzip
import json
import re
import zlib
from http.server import BaseHTTPRequestHandler
from typing import Any

import httpx
import pytest

from promptsweep.core.answers.chat import ChatRequest, ChatResult, LLMError, clean_timings
from promptsweep.llm.body import BoundedDecoder, ResponseTooLarge, UndecodableBody
from promptsweep.llm.client import DEFAULT_MAX_RESPONSE_BYTES, LLMClient, ServerDataWarning
from tests.fakeserver import FakeLLMServer, Reply
from tests.suitekit import make_suite, oracle
from tests.test_hostile import output, run_capped
from tests.test_hostile_limits import HostileServer, completion, gzip_bomb, right_answer, run_dirs
from tests.test_optimize import answer as optimize_answer
from tests.test_optimize import make_optimize_suite

REQUEST = ChatRequest(messages=({"role": "user", "content": "hi"},))

# ============================================================== row 6: stacked encodings


def gzip_of_gzip_bomb() -> bytes:
    """8 GiB of zeros, gzipped, gzipped again: about 13 KB on the wire."""
    return gzip.compress(gzip_bomb(8 * 1024**3), 9)


def test_the_double_bomb_is_what_the_issue_measured() -> None:
    bomb = gzip_of_gzip_bomb()
    assert len(bomb) < 20_000
    inner = zlib.decompressobj(31).decompress(bomb[:-8], 1024)  # the first layer: a gzip stream again
    assert inner[:2] == b"\x1f\x8b"


def _double_bomb(handler: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
    data = gzip_of_gzip_bomb()
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Encoding", "gzip, gzip")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def test_a_gzip_of_gzip_bomb_stops_at_the_byte_limit(pytester: pytest.Pytester) -> None:
    """The attack: ``Content-Encoding: gzip, gzip`` inflated a 13 KB body toward 8 GiB in one
    decode (MemoryError at 2.75 GB under a cap). Now each layer is decoded a step at a time under
    --llm-max-response-bytes and the sample errors with one line."""
    make_suite(pytester, threshold=0.0)
    with HostileServer(_double_bomb) as server:
        done = run_capped(
            pytester.path,
            "tiny.suite.yaml",
            "--llm-url",
            server.url,
            "--llm-retries=0",
            "-k",
            "k0",
            timeout=120,
        )
        assert len(server.requests) == 1
    text = output(done)
    assert done.returncode == pytest.ExitCode.TESTS_FAILED, text[-3000:]
    assert (
        f"response body is over {DEFAULT_MAX_RESPONSE_BYTES} bytes (decoded); see --llm-max-response-bytes"
        in text
    )
    for raw in ("Traceback", "MemoryError", "INTERNALERROR"):
        assert raw not in text, text[-3000:]
    assert "--llm-max-response-bytes" in (run_dirs(pytester.path)[0] / "results.jsonl").read_text()


def _decode(applied: list[str], body: bytes, limit: int) -> bytes:
    decoder = BoundedDecoder(applied, limit)
    out = b"".join(piece for i in range(0, len(body), 1000) for piece in decoder.feed(body[i : i + 1000]))
    return out + b"".join(decoder.close())


def test_stacked_encodings_decode_layer_by_layer_and_each_layer_is_bounded() -> None:
    payload = json.dumps(completion("x" * 5000)).encode()
    raw_deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    deflated = raw_deflate.compress(gzip.compress(payload)) + raw_deflate.flush()
    # Applied in order: gzip first, then (headerless) deflate; decoded deflate first.
    assert _decode(["gzip", "deflate"], deflated, len(payload)) == payload
    assert _decode(["deflate"], zlib.compress(payload), len(payload)) == payload
    with pytest.raises(ResponseTooLarge):
        _decode(["gzip", "deflate"], deflated, len(payload) - 1)
    with pytest.raises(UndecodableBody, match="Content-Encoding 'br'"):
        BoundedDecoder(["br"], 100)
    with pytest.raises(UndecodableBody, match="stacks 5 content encodings"):
        BoundedDecoder(["gzip"] * 5, 100)


def _brotli(handler: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Encoding", "br")
    handler.send_header("Content-Length", "2")
    handler.end_headers()
    handler.wfile.write(b"\x00\x01")


def test_the_client_asks_only_for_encodings_it_can_bound_and_names_others() -> None:
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("accept-encoding"))
        return httpx.Response(200, json=completion("x"))

    LLMClient("http://llm.test", transport=httpx.MockTransport(handler)).chat(REQUEST)
    assert seen == ["gzip, deflate"]  # never br or zstd, even where those packages are installed
    refused = "Content-Encoding 'br', which promptsweep does not decode"
    with (
        HostileServer(_brotli) as server,
        LLMClient(server.url) as client,
        pytest.raises(LLMError, match=refused) as info,
    ):
        client.chat(REQUEST)
    assert not info.value.retryable


# ============================================================== row 8: scrub, then cut

SECRET = "S3cretPassw0rd-7781xyz"


def test_a_secret_crossing_the_display_cut_leaks_no_prefix() -> None:
    """The attack: an error body cut to 300 characters before scrubbing; a password crossing the
    cut showed its first 8 characters, which no rule recognised once cut."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, text="x" * 292 + f"{SECRET} was rejected upstream")

    client = LLMClient(f"http://svc:{SECRET}@llm.test", transport=httpx.MockTransport(handler))
    with pytest.raises(LLMError) as info:
        client.chat(REQUEST)
    message = str(info.value)
    assert "HTTP 500" in message and "***" in message
    assert SECRET[:4] not in message  # the old cut showed "S3cretPa"


def test_an_echoed_api_key_at_the_cut_reaches_no_artifact(pytester: pytest.Pytester) -> None:
    make_suite(pytester, threshold=0.0)
    key = "sk-live-" + SECRET

    def echo(body: dict[str, Any]) -> Reply:
        return Reply(status=500, body="e" * 290 + f" {key} denied")

    with FakeLLMServer(echo) as server:
        result = pytester.runpytest_subprocess(
            "tiny.suite.yaml", "--llm-url", server.url, "--llm-api-key", key, "--llm-retries=0",
            "--llm-cache=off", "-k", "k0 or k1",
        )  # fmt: skip
    result.assert_outcomes(failed=2)
    run = run_dirs(pytester.path)[0]
    shown = [result.stdout.str(), result.stderr.str()] + [
        (run / name).read_text() for name in ("results.jsonl", "summary.md", "metrics.json", "report.html")
    ]
    for text in shown:
        assert key[:8] not in text  # the old cut showed "sk-live-S"
    assert any("HTTP 500: eeee" in text for text in shown)


# ============================================================== row 14: timings like token counts

BAD_TIMINGS: dict[str, Any] = {
    "prompt_per_token_ms": "abc",
    "predicted_per_token_ms": [1],
    "prompt_ms": 1e308,
    "predicted_ms": -5.0,
    "prompt_n": 1e308,
    "predicted_n": -3,
    "cache_n": 2,
    "predicted_per_second": float("nan"),
}


def test_impossible_timings_are_dropped_with_a_note() -> None:
    kept, notes = clean_timings(BAD_TIMINGS)
    assert kept == {"cache_n": 2}
    assert len(notes) == len(BAD_TIMINGS) - 1
    assert any("timings.prompt_per_token_ms is 'abc'; dropped" in note for note in notes)
    assert clean_timings("garbage") == (None, ["timings is 'garbage', not an object; dropped"])
    good = {"prompt_n": 12, "prompt_ms": 40.5, "prompt_per_token_ms": 3.4, "predicted_per_second": 80.0}
    assert clean_timings(good) == (good, [])


def test_the_client_and_the_cache_keep_only_sound_timings() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=json.dumps({**completion("hello"), "timings": BAD_TIMINGS}))

    with pytest.warns(ServerDataWarning) as warned:
        result = LLMClient("http://llm.test", transport=httpx.MockTransport(handler)).chat(REQUEST)
    assert result.text == "hello" and result.timings == {"cache_n": 2} and result.cached_tokens == 2
    note = str(warned[0].message)
    assert "timings.prompt_per_token_ms is 'abc'; dropped" in note and "timings.prompt_n is 1e+308" in note
    # A cache entry written before this check (or forged) is read back the same way.
    stored = {"text": "x", "latency_s": "abc", "timings": BAD_TIMINGS, "finish_reason": ["stop"]}
    again = ChatResult.from_json(stored, from_cache=True)
    assert again.timings == {"cache_n": 2} and again.latency_s == 0.0 and again.finish_reason is None


@pytest.mark.parametrize("variant", ["abc", "1e308"])
def test_optimize_survives_impossible_timings(pytester: pytest.Pytester, variant: str) -> None:
    """The attack: ``"abc"`` or ``[1]`` in ``timings`` crashed ``--optimize`` (~1,000 lines),
    ``1e308`` printed a 300-digit estimate, a negative one a negative estimate."""
    make_optimize_suite(pytester)
    bad = {"prompt_per_token_ms": "abc", "predicted_per_token_ms": [1]}
    if variant == "1e308":
        bad = {"prompt_per_token_ms": 1e308, "predicted_per_token_ms": -7.0, "prompt_n": 1e308}

    def respond(body: dict[str, Any]) -> Reply:
        reply = optimize_answer(body)
        assert isinstance(reply.body, dict)
        reply.body["timings"] = {**bad, "predicted_n": 5}
        return reply

    with FakeLLMServer(respond, props={"total_slots": 2}) as fake:
        result = pytester.runpytest_subprocess("--optimize", "--llm-url", fake.url, "-p", "no:cacheprovider")
    text = result.stdout.str() + result.stderr.str()
    assert result.ret == 0, text[-3000:]
    assert "Traceback" not in text and "INTERNALERROR" not in text
    assert "ServerDataWarning" in text and "; dropped (a number from 0 to" in text
    estimate = next(line for line in result.stdout.lines if "estimated time:" in line)
    assert not re.search(r"\d{7,}|-\d", estimate), estimate  # no 300 digits, nothing negative


def test_ordinary_bodies_still_read() -> None:
    """The bounded reader changes nothing for ordinary bodies, gzipped or plain, on a real socket."""
    payload = completion(right_answer({"messages": [{"role": "user", "content": "LOG-0 x"}]}))

    def gz(handler: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        data = gzip.compress(json.dumps(payload).encode())
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Encoding", "gzip")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    with HostileServer(gz) as server, LLMClient(server.url) as client:
        assert "disk_full" in client.chat(REQUEST).text
    with FakeLLMServer(oracle()) as fake, LLMClient(fake.url) as client:
        assert client.chat(REQUEST).text == "I cannot tell"
