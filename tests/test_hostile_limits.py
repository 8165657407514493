"""Hostile servers and pull requests, second round: one test per attack that still got through.

Each test reproduces the attack (a fake OpenAI-compatible server on 127.0.0.1, or files as a
pull request could change them) and shows the safe result. The risky part runs in a child
pytest whose address space is capped (``run_capped``: 2 GiB), with inputs that would pass that
cap if they were read, inflated or expanded whole, and a subprocess timeout as the guard
against a hang (not a timing assertion).
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import multiprocessing
import os
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from promptsweep.core.io.redact import redact_credentials, redact_text
from promptsweep.llm.client import DEFAULT_MAX_RESPONSE_BYTES
from promptsweep.optimize import winner
from promptsweep.optimize.winner import claim_next_version
from tests.fakeserver import FakeLLMServer, user_text
from tests.suitekit import SAMPLES, make_suite, oracle
from tests.test_hostile import assert_one_line_error, output, run_capped, written_files

KEY = "sk-planted-0badc0de5eed"

# ============================================================== a server that misbehaves

PostHandler = Callable[[BaseHTTPRequestHandler, dict[str, Any]], None]


class HostileServer:
    """An OpenAI-compatible server on 127.0.0.1 whose chat answers are written by ``post``
    (raw: status line, headers, body at any pace); ``/v1/models`` names ``model_id``."""

    def __init__(self, post: PostHandler, *, model_id: str = "hostile-model") -> None:
        self.requests: list[dict[str, Any]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                if self.path.split("?", 1)[0].rstrip("/").endswith("/models"):
                    send_json(self, 200, {"object": "list", "data": [{"id": model_id}]})
                else:
                    send_json(self, 404, {"error": "not found"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                server.requests.append(body)
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    post(self, body)  # a bounded client hangs up mid-answer
                self.close_connection = True

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> HostileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def send_json(handler: BaseHTTPRequestHandler, status: int, payload: Any) -> None:
    data = json.dumps(payload).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def completion(text: str, usage: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": usage or {"prompt_tokens": 10, "completion_tokens": 5},
    }


def right_answer(body: dict[str, Any]) -> str:
    text = user_text(body)
    for i, sample in enumerate(SAMPLES):
        if f"LOG-{i} " in text:
            return json.dumps({k: sample[k] for k in ("label", "severity", "summary")})
    return "no idea"


def run_dirs(root: Path) -> list[Path]:
    return sorted((root / ".promptsweep" / "runs").iterdir())


# ============================================================== 1. files outside the project

CREDENTIAL = "AKIA-PLANTED-CREDENTIAL-7781"

POOL_TEMPLATE = """\
examples:
  retrieve: {{k: 2, by: [logs]}}
  pool:
    dataset: {dataset}
    split: {{train: 1.0}}
    inputs: {{logs: line}}
    answer: [label, severity, summary]
"""


def _outside_pool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("elsewhere")
    pool = folder / "creds.jsonl"
    records = [
        {"key": f"c{i}", "line": f"LOG-{i} something happened {CREDENTIAL}", "label": "disk_full",
         "severity": "error", "summary": CREDENTIAL}
        for i in range(4)
    ]  # fmt: skip
    pool.write_text("".join(json.dumps(r) + "\n" for r in records))
    return pool


@pytest.mark.parametrize("how", ["relative", "absolute", "symlink"])
def test_pool_dataset_outside_the_project_is_refused_unless_allowed(
    pytester: pytest.Pytester, tmp_path_factory: pytest.TempPathFactory, how: str
) -> None:
    """The attack: ``examples.pool.dataset: ../../../elsewhere/creds.jsonl`` (or an absolute path,
    or a link in the project) was read and its records sent to the server as few-shot turns."""
    make_suite(pytester, threshold=0.0)
    pool = _outside_pool(tmp_path_factory)
    named = {
        "relative": os.path.relpath(pool, pytester.path),
        "absolute": str(pool),
        "symlink": "pool.jsonl",
    }[how]
    if how == "symlink":
        (pytester.path / "pool.jsonl").symlink_to(pool)
    template = pytester.path / "template.yaml"
    template.write_text(template.read_text().rstrip("\n") + "\n" + POOL_TEMPLATE.format(dataset=named))
    with FakeLLMServer(oracle()) as fake:
        done = run_capped(pytester.path, "tiny.suite.yaml", "--llm-url", fake.url, timeout=120)
        assert fake.requests == []
    assert_one_line_error(
        done, f"{template}: examples.pool.dataset: {named} resolves to {pool}", "--allow-path"
    )
    assert CREDENTIAL not in output(done)

    # The user, on the command line, may allow it: then the records are the examples.
    with FakeLLMServer(oracle()) as fake:
        allowed = run_capped(
            pytester.path,
            "tiny.suite.yaml",
            "--llm-url",
            fake.url,
            f"--allow-path={pool.parent}",
            timeout=120,
        )
        assert allowed.returncode == 0, output(allowed)[-3000:]
        assert fake.requests and all(CREDENTIAL in json.dumps(body) for body in fake.requests)


def test_suite_and_experiment_files_outside_the_project_are_refused(
    pytester: pytest.Pytester, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The same rule for every key that names a file: the suite's dataset and an experiment's."""
    suite = make_suite(pytester)
    pool = _outside_pool(tmp_path_factory)
    suite.write_text(suite.read_text().replace("dataset: data.json", f"dataset: {pool}"))
    done = run_capped(pytester.path, "tiny.suite.yaml", "--llm-server=off", timeout=120)
    assert_one_line_error(done, f"{suite}: dataset: {pool} resolves to {pool}, outside the project")
    assert CREDENTIAL not in output(done)

    make_suite(pytester)
    (pytester.path / "leak.yaml").write_text(f"experiment_id: leak\ndataset: {pool}\n")
    done = run_capped(
        pytester.path, "tiny.suite.yaml", "--experiment", "leak.yaml", "--llm-server=off", timeout=120
    )
    assert_one_line_error(done, "leak.yaml: dataset: ", "outside the project")
    assert CREDENTIAL not in output(done)


def test_the_rule_binds_files_in_the_project_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file in the project may not name one outside it; a file the user chose outside the
    project (a suite in another folder, given on the command line or to the Python API) may name
    its neighbours. Both sides are seen through links."""
    from promptsweep.core.io.errors import ConfigError
    from promptsweep.core.io.paths import PathPolicy, contained, path_policy, set_path_policy

    project, outside = tmp_path / "project", tmp_path / "outside"
    project.mkdir()
    outside.mkdir()
    (project / "link").symlink_to(outside, target_is_directory=True)
    monkeypatch.setattr("promptsweep.core.io.paths._policy", path_policy())  # restored afterwards
    set_path_policy(PathPolicy.of(project))
    assert (
        contained(outside / "data.json", key="dataset", where=outside / "x.suite.yaml")
        == outside / "data.json"
    )
    assert contained(project / "d.json", key="dataset", where=project / "x.suite.yaml") == project / "d.json"
    for target in (outside / "data.json", project / "link" / "data.json"):
        with pytest.raises(ConfigError, match=r"x\.suite\.yaml: dataset: .* outside the project"):
            contained(target, key="dataset", where=project / "x.suite.yaml")
    set_path_policy(PathPolicy.of(project, [outside]))
    assert (
        contained(outside / "data.json", key="dataset", where=project / "x.suite.yaml")
        == outside / "data.json"
    )


# ============================================================== 2. a large value aliased many times

BIG_ALIAS = "    pad: &big " + "x" * 200_000 + "\n    more: [" + ", ".join(["*big"] * 9_000) + "]\n"


@pytest.mark.parametrize("where", ["template", "suite llm"])
def test_one_large_value_aliased_thousands_of_times_is_refused(pytester: pytest.Pytester, where: str) -> None:
    """The attack: one 200 KB string aliased 9 000 times (a 228 KB file) passed the alias-count
    limit, then took minutes and 1.76 GB in ``yaml.safe_dump`` (template) or wrote a 1.8 GB
    config.json (suite ``llm:``). Now: refused by the characters it expands to."""
    suite = make_suite(pytester)
    if where == "template":
        target = pytester.path / "template.yaml"
        target.write_text(
            target.read_text().replace(
                "  optional:\n    namespace: unknown\n", "  optional:\n    namespace: unknown\n" + BIG_ALIAS
            )
        )
    else:
        target = suite
        suite.write_text(suite.read_text() + "llm:\n" + BIG_ALIAS.replace("    ", "  "))
    assert target.stat().st_size < 300_000
    with FakeLLMServer(oracle()) as fake:
        done = run_capped(pytester.path, "tiny.suite.yaml", "--llm-url", fake.url, timeout=120)
        assert fake.requests == []
    assert_one_line_error(
        done,
        f"{target.name}: refused: aliases (*name) expand this document to more than",
        "characters, 1000000 more than it spells out",
    )
    assert not (pytester.path / ".promptsweep" / "runs").exists()


# ============================================================== 3. a filter that runs long in one call

WORDWRAPS = "{{ ('a' * 450000)" + "|wordwrap(1)" * 9 + " }}"


def test_a_slow_filter_chain_stops_at_the_template_timeout(pytester: pytest.Pytester) -> None:
    """The attack: nine chained ``wordwrap(1)`` on a 450 000-character string spent 23.9 s per
    render inside ``textwrap`` with no error, past the 10 s ``--template-timeout``; each call
    stays under the size limits (set to 2 000 000 here), so only the time limit can stop it."""
    make_suite(pytester)
    template = pytester.path / "template.yaml"
    template.write_text(template.read_text().replace("  Log: {{ logs }}", "  Log: {{ logs }} " + WORDWRAPS))
    done = run_capped(
        pytester.path,
        "tiny.suite.yaml",
        "--llm-server=off",
        "--max-prompt-chars",
        "2000000",
        "--template-timeout",
        "1",
        timeout=120,
    )
    assert_one_line_error(
        done,
        "template 'tiny'",
        "sample 'disk_full-k0'",
        "rendering took longer than the 1s limit (--template-timeout)",
    )


def test_the_render_deadline_interrupts_one_long_call() -> None:
    """In process: one ``wordwrap`` call that alone outlasts the limit is interrupted inside it."""
    from promptsweep.core.templates.sandbox import RenderLimits
    from promptsweep.core.templates.template import TemplateRenderError, template_from_mapping

    template = template_from_mapping({"id": "slow", "user": "{{ text|wordwrap(1)|wordwrap(1)|wordwrap(1) }}"})
    with pytest.raises(TemplateRenderError, match=r"rendering took longer than the 0\.2s limit"):
        template.render(
            {"text": "a" * 450_000}, sample_id="s1", limits=RenderLimits(2_000_000, timeout_s=0.2)
        )
    # Nothing is left behind: the next render, and plain code after it, run normally.
    assert template.render({"text": "a b"}, sample_id="s2")[-1]["content"] == "a\nb"
    time.sleep(0.3)
    assert sum(range(10)) == 45


def test_a_timeout_never_lands_outside_its_render() -> None:
    """Renders that end right at their deadline, hundreds of times in four threads: each one
    either renders or fails with the named error, no late timeout surfaces in the code that
    runs next, and no thread hangs. (A watchdog raising asynchronously once left importlib's
    module lock held under this load, and every later render waited on it.)"""
    from promptsweep.core.templates.sandbox import RenderLimits
    from promptsweep.core.templates.template import TemplateRenderError, template_from_mapping

    template = template_from_mapping({"id": "edge", "user": "{% for i in range(300) %}{{ i }}{% endfor %}"})
    outcomes: dict[str, int] = {"rendered": 0, "timed out": 0}
    strays: list[BaseException] = []

    def renders() -> None:
        for i in range(300):
            try:
                template.render({}, sample_id="s", limits=RenderLimits(timeout_s=0.0002 * (i % 7 + 1)))
                outcomes["rendered"] += 1
            except TemplateRenderError as exc:
                assert "--template-timeout" in str(exc)
                outcomes["timed out"] += 1
            except BaseException as exc:
                strays.append(exc)
            try:
                total = 0
                for n in range(2000):  # plain code, calls and jumps: where a stray timeout would land
                    total += abs(n)
                assert total == 1999000
            except BaseException as exc:
                strays.append(exc)

    threads = [threading.Thread(target=renders) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a rendering thread hung"
    assert not strays, strays[:3]
    assert outcomes["timed out"] > 0


def test_the_deadline_never_interrupts_code_off_the_list() -> None:
    """Code outside Jinja, MarkupSafe and textwrap (here: code holding a lock across lines, as
    importlib and threading do) runs to its end even past the deadline; the render stops at the
    next check instead, and the lock is free."""
    from promptsweep.core.templates.sandbox import RenderLimits, RenderTimeout, _Budget, _call_before_deadline

    lock = threading.Lock()
    budget = _Budget(RenderLimits(timeout_s=0.01))

    def holds_a_lock_across_lines() -> int:
        lock.acquire()
        lines = 0
        end = time.monotonic() + 0.1
        while time.monotonic() < end:  # line after line past the deadline
            lines += 1
        lock.release()
        return lines

    assert _call_before_deadline(budget, holds_a_lock_across_lines) > 0
    assert not lock.locked()
    with pytest.raises(RenderTimeout):
        budget.check_time()
    # Code on the list is stopped inside, past the same deadline.
    import textwrap

    with pytest.raises(RenderTimeout):
        _call_before_deadline(budget, textwrap.wrap, "a" * 1000, 1)


def test_collection_renders_one_prompt_not_every_sample(pytester: pytest.Pytester) -> None:
    """The attack's second half: collection rendered all samples, even those -k deselects. Now
    every sample's inputs are checked without rendering and one prompt is rendered."""
    make_suite(pytester)
    pytester.makeconftest(
        """
        import promptsweep.core.templates.template as templates

        rendered = []
        original = templates.PromptTemplate.render

        def counting(self, *args, **kwargs):
            rendered.append(kwargs.get("sample_id"))
            return original(self, *args, **kwargs)

        templates.PromptTemplate.render = counting

        def pytest_collection_finish(session):
            print(f"RENDERED {len(rendered)}")
        """
    )
    result = pytester.runpytest_subprocess(
        "tiny.suite.yaml", "--collect-only", "-k", "k3", "--llm-server=off"
    )
    result.stdout.fnmatch_lines(["*RENDERED 1", "*1/6 tests collected (5 deselected)*"])


# ============================================================== 4 and 8. response bodies that do not end

_GZIP_CHUNK = 16 * 1024 * 1024


def gzip_bomb(decoded_bytes: int) -> bytes:
    """A gzip stream of ``decoded_bytes`` zeros (3 GiB is about 3 MB), made in a fraction of a
    second: after a full flush the deflate stream of a zero chunk repeats byte for byte. The
    trailer's CRC is not that of the whole (a reader that got that far has already failed)."""
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = bytes(_GZIP_CHUNK)
    head = c.compress(chunk) + c.flush(zlib.Z_FULL_FLUSH)
    segment = c.compress(chunk) + c.flush(zlib.Z_FULL_FLUSH)
    tail = c.flush()
    return head + segment * (decoded_bytes // _GZIP_CHUNK - 1) + tail


def test_gzip_bomb_helper_inflates_as_claimed() -> None:
    bomb = gzip_bomb(4 * _GZIP_CHUNK)
    inflated = zlib.decompressobj(31).decompress(bomb[:-8])  # all but the (unchecked) trailer
    assert len(inflated) == 4 * _GZIP_CHUNK and not inflated.strip(b"\0")
    assert len(gzip_bomb(3 * 1024**3)) < 4_000_000


def _bomb(handler: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
    data = gzip_bomb(3 * 1024**3)  # 3 GiB decoded: more than the child's 2 GiB address space
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Encoding", "gzip")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def _endless(handler: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
    size = 2 * 1024**3  # 2 GiB announced and sent until the client hangs up
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(size))
    handler.end_headers()
    chunk = b'{"choices": "' + b"x" * (1024 * 1024)
    for _ in range(size // len(chunk)):
        handler.wfile.write(chunk)


@pytest.mark.parametrize("attack", ["gzip bomb", "2 GiB body"])
def test_response_bodies_are_bounded(pytester: pytest.Pytester, attack: str) -> None:
    """The attacks: a gzip bomb (8 GiB from 8 MB) inflated until MemoryError; a 2 GB body was
    read whole. Now the decoded body stops at --llm-max-response-bytes and the sample errors."""
    make_suite(pytester, threshold=0.0)
    with HostileServer(_bomb if attack == "gzip bomb" else _endless) as server:
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
    results = (run_dirs(pytester.path)[0] / "results.jsonl").read_text()
    assert "--llm-max-response-bytes" in results


def test_max_response_bytes_is_configurable() -> None:
    """The limit is the option's: a body just over it is refused, one under it is read."""
    import httpx

    from promptsweep.core.answers.chat import ChatRequest, LLMError
    from promptsweep.llm.client import LLMClient

    payload = json.dumps(completion("x" * 2000)).encode()

    def transport(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=gzip.compress(payload), headers={"Content-Encoding": "gzip"})

    request = ChatRequest(messages=({"role": "user", "content": "hi"},))
    ok = LLMClient(
        "http://127.0.0.1:9", transport=httpx.MockTransport(transport), max_response_bytes=len(payload)
    )
    assert ok.chat(request).text == "x" * 2000
    small = LLMClient(
        "http://127.0.0.1:9", transport=httpx.MockTransport(transport), max_response_bytes=len(payload) - 1
    )
    with pytest.raises(LLMError, match=f"over {len(payload) - 1} bytes"):
        small.chat(request)


# ============================================================== 5. a server that trickles


def _trickle_body(handler: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
    data = json.dumps(completion(right_answer(body))).encode()
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    for i in range(len(data)):
        handler.wfile.write(data[i : i + 1])
        handler.wfile.flush()
        time.sleep(0.25)  # 4 bytes a second: every read arrives well within any read timeout


def _trickle_headers(handler: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
    handler.wfile.write(b"HTTP/1.1 200 OK\r\n")
    for _ in range(10_000):
        handler.wfile.write(b"X-Slow: 1\r\n")
        handler.wfile.flush()
        time.sleep(0.25)


@pytest.mark.parametrize("where", ["body", "headers"])
def test_a_trickling_server_is_cut_off_at_llm_timeout(pytester: pytest.Pytester, where: str) -> None:
    """The attack: a body trickled at 1 byte/s kept ``--llm-timeout 5`` inside the request at
    100 s, since each read arrived in time. Now every request has a total cap (before any speed
    is measured: 4 x --llm-timeout, the silence a request may have)."""
    make_suite(pytester, threshold=0.0)
    with HostileServer(_trickle_body if where == "body" else _trickle_headers) as server:
        done = run_capped(
            pytester.path, "tiny.suite.yaml", "--llm-url", server.url, "--llm-timeout", "2", "--llm-retries=0",
            "-k", "k0", timeout=60,
        )  # fmt: skip
    text = output(done)
    assert done.returncode == pytest.ExitCode.TESTS_FAILED, text[-3000:]
    assert "timed out after 8s, the request's total cap (4 x --llm-timeout" in text, text[-3000:]


# ============================================================== 6. credentials echoed in an error


def _echo_auth(handler: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
    echoed = (
        f"upstream refused: Authorization: {handler.headers.get('Authorization')}; retry with api_key={KEY}"
    )
    send_json(handler, 500, {"error": {"message": echoed}})


def test_an_echoed_basic_credential_reaches_no_artifact_or_terminal(pytester: pytest.Pytester) -> None:
    """The attack: an HTTP 500 whose body echoed ``Authorization: Basic …``; Bearer was masked,
    the base64 credential was written raw to the terminal, summary.md, results.jsonl,
    metrics.json and report.html."""
    make_suite(pytester, threshold=0.0)
    basic = base64.b64encode(f"user:{KEY}".encode()).decode()
    with HostileServer(_echo_auth) as server:
        url = server.url.replace("http://", f"http://user:{KEY}@")
        done = run_capped(
            pytester.path, "tiny.suite.yaml", "--llm-url", url, "--llm-retries=0", "-rA", timeout=120
        )
        assert len(server.requests) == 6
    text = output(done)
    assert done.returncode == pytest.ExitCode.TESTS_FAILED, text[-3000:]
    assert "HTTP 500" in text and "Authorization: ***" in text
    files = written_files(pytester.path, skip=("tiny.suite.yaml",))
    names = {p.name for p in files}
    assert {"summary.md", "results.jsonl", "metrics.json", "report.html"} <= names
    for secret in (KEY, basic, basic.rstrip("=")):
        assert secret not in text
        assert [p.name for p in files if secret.encode() in p.read_bytes()] == []


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("echo: Authorization: Basic Zm9vOmJhcg==", "echo: Authorization: ***"),
        ('{"headers": {"authorization": "Bearer abc.def.ghi"}}', '{"headers": {"authorization": "***"}}'),
        ("proxy said Basic Zm9vOmJhcg== was wrong", "proxy said Basic *** was wrong"),
        ("an impossible token count: -5", "an impossible token count: -5"),
        ("bad api_key=sk-999 and x-api-key: qwerty1", "bad api_key=*** and x-api-key: ***"),
        ('{"client_secret": "s3cr3t", "prompt_tokens": 12}', '{"client_secret": "***", "prompt_tokens": 12}'),
        ("see http://u:p@host:8080/v1?sig=abc", "see http://***@host:8080/v1?sig=***"),
    ],
)
def test_one_credential_rule_for_whatever_a_server_sends(text: str, shown: str) -> None:
    """Credentials of any form are masked even when they are not ours (a proxy echoing another
    header), and known secrets in their base64 (basic auth) form too."""
    assert redact_credentials(redact_text(text, credentials=False)) == shown
    assert KEY not in redact_text(f"got {base64.b64encode(f'me:{KEY}'.encode()).decode()}", [f"me:{KEY}"])


# ============================================================== 7. markup and escapes from servers and files

HOSTILE = "<script>alert(1)</script>\x1b]0;pwned\x07\x1b[2J\x1b]52;c;cHduZWQ=\x07<svg onload=alert(2)>"


def _hostile_answers(right: bool) -> PostHandler:
    def post(handler: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        if right:
            text = right_answer(body)
        else:
            text = json.dumps({"label": HOSTILE, "severity": "info", "summary": HOSTILE})
        send_json(handler, 200, completion(text))

    return post


def test_model_ids_labels_and_answers_reach_terminals_and_markdown_inert(pytester: pytest.Pytester) -> None:
    """The attack: ``<script>``, ``<svg onload>`` and ANSI/OSC escapes (title, clear screen, OSC 52
    clipboard) in the model id and answers; ``leaderboard --format markdown`` and ``compare
    --markdown`` printed them raw, ``leaderboard`` and ``compare`` sent the escapes to the terminal."""
    make_suite(pytester, threshold=0.0)
    runs = []
    for right in (True, False):
        with HostileServer(_hostile_answers(right), model_id=HOSTILE) as server:
            done = run_capped(pytester.path, "tiny.suite.yaml", "--llm-url", server.url, timeout=120)
            assert done.returncode in (0, 1), output(done)[-3000:]
        runs = run_dirs(pytester.path)
    assert len(runs) == 2
    md = pytester.path / "compare.md"

    def cli(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "promptsweep.cli.main", *args, "--dir", ".promptsweep"],
            cwd=pytester.path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode in (0, 1), done.stderr
        return done.stdout + done.stderr

    table = cli("leaderboard")
    markdown = cli("leaderboard", "--format", "markdown")
    compared = cli("compare", runs[0].name, runs[1].name, "--markdown", str(md))
    compare_md = md.read_text()
    assert "alert(2)" in markdown and "alert(1)" in compare_md, "the hostile text is there, made inert"
    for shown in (table, markdown, compared, compare_md):
        assert "\x1b" not in shown and "\x07" not in shown
    for shown in (markdown, compare_md):
        assert "<script" not in shown and "<svg" not in shown
        assert "&lt;script" in shown


# ============================================================== 9. impossible token counts


def _bad_usage(handler: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
    text = user_text(body)
    usage: dict[str, Any] = {"prompt_tokens": 10, "completion_tokens": 5}
    if "LOG-0 " in text:
        usage = {"prompt_tokens": -2_000_000_000_000, "completion_tokens": 5}
    elif "LOG-1 " in text:
        usage = {"prompt_tokens": 10, "completion_tokens": 1e308}
    send_json(handler, 200, completion(right_answer(body), usage))


def test_impossible_token_counts_error_their_sample_and_the_reports_survive(
    pytester: pytest.Pytester,
) -> None:
    """The attack: negative counts were accepted (``tokens prompt -2000000000000``); 1e308 ended
    the run in an OverflowError traceback with no report, and ``leaderboard --rebuild`` crashed
    until the run directory was deleted."""
    make_suite(pytester, threshold=0.0)
    with HostileServer(_bad_usage) as server:
        done = run_capped(
            pytester.path, "tiny.suite.yaml", "--llm-url", server.url, "--llm-retries=0", timeout=120
        )
    text = output(done)
    assert done.returncode == pytest.ExitCode.TESTS_FAILED, text[-3000:]
    assert "usage.prompt_tokens is -2000000000000; a token count must be a whole number from 0 to" in text
    assert "usage.completion_tokens is 1e+308" in text
    assert "-2000000000000 (cached" not in text and "OverflowError" not in text and "Traceback" not in text
    run = run_dirs(pytester.path)[0]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["tokens"]["prompt"] == 40 and metrics["tokens"]["completion"] == 20  # the 4 good samples
    assert (run / "summary.md").is_file() and (run / "report.html").is_file()
    rebuilt = subprocess.run(
        [sys.executable, "-m", "promptsweep.cli.main", "leaderboard", "--rebuild", "--dir", ".promptsweep"],
        cwd=pytester.path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rebuilt.returncode == 0, rebuilt.stderr


# ============================================================== 10. two --optimize runs at once


def _claim_many(folder: str, count: int, queue: Any) -> None:
    claimed = []
    for _ in range(count):
        path = claim_next_version(Path(folder), "tiny", "v1", lambda p, n: f"version: v{n}\n" + "x" * 10_000)
        claimed.append(path.name)
    queue.put(claimed)


def test_concurrent_claims_get_distinct_complete_versions(tmp_path: Path) -> None:
    """Two processes claiming versions as fast as they can: every claim a new number, every file whole."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    workers = [ctx.Process(target=_claim_many, args=(str(tmp_path), 15, queue)) for _ in range(2)]
    for w in workers:
        w.start()
    claimed = queue.get(timeout=120) + queue.get(timeout=120)
    for w in workers:
        w.join(timeout=60)
    assert len(claimed) == len(set(claimed)) == 30
    assert sorted(int(name[len("tiny_v") : -len(".yaml")]) for name in claimed) == list(range(2, 32))
    for path in tmp_path.glob("tiny_v*.yaml"):
        text = path.read_text()
        assert text.startswith(f"version: {path.stem.split('_')[-1]}\n") and len(text) > 10_000
    assert not list(tmp_path.glob(".*.tmp"))


def test_an_optimize_run_that_loses_the_race_takes_the_next_version(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The attack: two ``--optimize`` runs in one project both claimed ``_v3.yaml``; the loser
    failed with FileExistsError and kept no all_results.json or best_candidate.yaml. Here the
    other run writes v2 between this run's look and its write."""
    from tests.test_optimize import answer, make_optimize_suite

    make_optimize_suite(pytester)
    folder = pytester.path / "prompt_templates"
    other = "# written by the other run\n"
    real = winner.next_version_path

    def racing(*args: Any, **kwargs: Any) -> tuple[Path, int]:
        path, n = real(*args, **kwargs)
        if n == 2:
            path.write_text(other)  # the other run wins v2 just now
        return path, n

    monkeypatch.setattr(winner, "next_version_path", racing)
    with FakeLLMServer(answer, props={"total_slots": 2}) as fake:
        result = pytester.runpytest("--optimize", "--llm-url", fake.url, "-p", "no:cacheprovider")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["*wrote prompt_templates/tiny_v3.yaml*"])
    assert (folder / "tiny_v2.yaml").read_text() == other
    assert "version: v3" in (folder / "tiny_v3.yaml").read_text()
    run_dir = sorted((pytester.path / ".promptsweep" / "runs").glob("*-optimize"))[-1]
    assert (run_dir / "best_candidate.yaml").is_file()
    assert (
        json.loads((run_dir / "all_results.json").read_text())["winner_file"]
        == "prompt_templates/tiny_v3.yaml"
    )


# ============================================================== 11 and 12. the artifact directory


@pytest.fixture
def unwritable(tmp_path: Path) -> Iterator[Path]:
    """A directory this process cannot create anything in: read-only for a normal user; for
    root (which ignores permissions) a place in sysfs, where nobody may create directories."""
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        yield folder / "promptsweep"
        folder.chmod(0o755)
    elif Path("/sys/kernel").is_dir():
        yield Path("/sys/kernel/promptsweep-test")
    else:  # pragma: no cover - root without sysfs
        pytest.skip("running as root without /sys: no directory is unwritable")


@pytest.mark.parametrize("jobs", ["0", "2"])
def test_an_unwritable_artifact_dir_is_one_clear_error(
    pytester: pytest.Pytester, unwritable: Path, jobs: str
) -> None:
    """The attack: ``--promptsweep-dir`` unwritable gave a 92-line INTERNALERROR with PermissionError."""
    make_suite(pytester)
    with FakeLLMServer(oracle()) as fake:
        done = run_capped(
            pytester.path, "tiny.suite.yaml", "--llm-url", fake.url, "--promptsweep-dir", str(unwritable),
            "-n", jobs, timeout=120,
        )  # fmt: skip
    assert_one_line_error(
        done, f"{unwritable}: ", "choose another with --promptsweep-dir or $PROMPTSWEEP_DIR"
    )
    assert not unwritable.exists()


@pytest.mark.parametrize("link", ["runs", "server", ".promptsweep"])
def test_a_symlinked_directory_under_the_artifact_dir_is_refused(
    pytester: pytest.Pytester, tmp_path_factory: pytest.TempPathFactory, link: str
) -> None:
    """The attack: a symlinked directory under ``.promptsweep/`` (committed in a checkout) was
    followed silently, and new files were created in its target."""
    make_suite(pytester)
    target = tmp_path_factory.mktemp("target")
    base = pytester.path / ".promptsweep"
    if link == ".promptsweep":
        base.symlink_to(target, target_is_directory=True)
        linked = base
    else:
        base.mkdir()
        linked = base / link
        linked.symlink_to(target, target_is_directory=True)
    with FakeLLMServer(oracle()) as fake:
        done = run_capped(pytester.path, "tiny.suite.yaml", "--llm-url", fake.url, timeout=120)
        assert fake.requests == []
    assert_one_line_error(done, f"{linked} is a symbolic link to a directory", "remove the link")
    assert list(target.iterdir()) == []


def test_a_promptsweep_dir_chosen_on_the_command_line_may_be_a_link(
    pytester: pytest.Pytester, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The user's own choice is not second-guessed: ``--promptsweep-dir`` naming a link works."""
    make_suite(pytester)
    target = tmp_path_factory.mktemp("bigdisk")
    (pytester.path / "artifacts").symlink_to(target, target_is_directory=True)
    with FakeLLMServer(oracle()) as fake:
        done = run_capped(
            pytester.path, "tiny.suite.yaml", "--llm-url", fake.url, "--promptsweep-dir", "artifacts"
        )
    assert done.returncode == 0, output(done)[-3000:]
    assert (target / "runs").is_dir()
