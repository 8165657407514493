"""OpenTelemetry: spans run → candidate → sample → LLM call, received by a real OTLP/HTTP endpoint."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from promptsweep.plugin.outputs import tracing_requested
from tests.fakeserver import FakeLLMServer
from tests.suitekit import make_suite, oracle


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


class OTLPReceiver:
    """A minimal OTLP/HTTP trace receiver: POST /v1/traces with a protobuf body."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.bodies: list[bytes] = []  # raw, to search for what must never be exported
        self.paths: list[str] = []
        self.content_types: set[str] = set()
        self.resources: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.paths.append(self.path)
                receiver.bodies.append(body)
                receiver.content_types.add(self.headers.get("Content-Type", ""))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                for rs in request.resource_spans:
                    resource = {a.key: _value(a.value) for a in rs.resource.attributes}
                    receiver.resources.append(resource)
                    for ss in rs.scope_spans:
                        for span in ss.spans:
                            receiver.spans.append(
                                {
                                    "name": span.name,
                                    "trace_id": span.trace_id.hex(),
                                    "span_id": span.span_id.hex(),
                                    "parent": span.parent_span_id.hex(),
                                    "start": span.start_time_unix_nano,
                                    "end": span.end_time_unix_nano,
                                    "attributes": {a.key: _value(a.value) for a in span.attributes},
                                    "pid": resource.get("process.pid"),
                                }
                            )
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def receiver() -> Iterator[OTLPReceiver]:
    r = OTLPReceiver()
    yield r
    r.close()


def test_xdist_spans_form_one_trace(
    pytester: pytest.Pytester, receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_suite(pytester, threshold=0.0)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "promptsweep-test")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test")
    with FakeLLMServer(oracle(wrong={1})) as fake:
        result = pytester.runpytest_subprocess(
            "tiny.suite.yaml", "--llm-url", fake.url, "--llm-cache=off", "-n", "2"
        )
    result.assert_outcomes(passed=6)
    assert set(receiver.paths) == {"/v1/traces"}
    assert receiver.content_types == {"application/x-protobuf"}
    assert all(r.get("service.name") == "promptsweep-test" for r in receiver.resources)

    spans = receiver.spans
    for span in sorted(spans, key=lambda s: s["start"]):  # shown with -s: what the collector received
        print(
            span["name"],
            span["span_id"],
            "parent",
            span["parent"] or "-",
            "pid",
            span["pid"],
            span["attributes"],
        )
    by_name: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        key = "chat" if span["name"].startswith("chat ") else span["name"]
        by_name.setdefault(key, []).append(span)
    assert {k: len(v) for k, v in by_name.items()} == {
        "promptsweep run": 1,
        "promptsweep candidate": 1,
        "promptsweep sample": 6,
        "chat": 6,
    }
    assert len({s["trace_id"] for s in spans}) == 1, "one trace across controller and workers"
    assert len({s["pid"] for s in by_name["promptsweep sample"]}) == 2, "samples ran in two worker processes"

    (run,) = by_name["promptsweep run"]
    (candidate,) = by_name["promptsweep candidate"]
    assert run["parent"] == ""
    assert candidate["parent"] == run["span_id"]
    assert candidate["attributes"]["promptsweep.candidate"] == "tiny@v1"
    assert candidate["attributes"]["promptsweep.samples"] == 6
    assert candidate["start"] <= min(s["start"] for s in by_name["promptsweep sample"])
    sample_ids = {s["span_id"] for s in by_name["promptsweep sample"]}
    assert all(s["parent"] == candidate["span_id"] for s in by_name["promptsweep sample"])
    assert {s["parent"] for s in by_name["chat"]} == sample_ids

    chat = by_name["chat"][0]["attributes"]
    assert chat["gen_ai.system"] == "openai"
    assert chat["gen_ai.operation.name"] == "chat"
    assert chat["gen_ai.request.model"] == "fake-model"
    assert chat["gen_ai.usage.input_tokens"] == 10
    assert chat["gen_ai.usage.output_tokens"] == 5
    assert chat["server.address"] == "127.0.0.1"
    assert isinstance(chat["server.port"], int) and chat["server.port"] > 0
    assert chat["gen_ai.request.max_tokens"] == 64

    scored = {
        s["attributes"]["promptsweep.sample_id"]: s["attributes"] for s in by_name["promptsweep sample"]
    }
    assert scored["disk_full-k1"]["promptsweep.score"] < 1.0
    assert scored["disk_full-k0"]["promptsweep.score"] == 1.0
    assert scored["disk_full-k0"]["promptsweep.score.label"] == 1.0
    assert {"promptsweep.score.severity", "promptsweep.score.summary", "promptsweep.category"} <= set(
        scored["disk_full-k0"]
    )


def test_no_otel_variables_means_no_tracing(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_TRACES_EXPORTER"):
        monkeypatch.delenv(name, raising=False)
    make_suite(pytester, threshold=0.0)
    pytester.makeconftest(
        "import sys\n"
        "def pytest_sessionfinish(session):\n"
        "    names = [n for n, _ in session.config.pluginmanager.list_name_plugin()]\n"
        "    print('TRACING', 'promptsweep-tracing' in names, 'promptsweep.llm.telemetry' in sys.modules)\n"
    )
    with FakeLLMServer(oracle()) as fake:
        result = pytester.runpytest_subprocess("tiny.suite.yaml", "--llm-url", fake.url, "-s")
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines(["*TRACING False False*"])


def test_tracing_switch_follows_the_standard_variables() -> None:
    assert not tracing_requested({})
    assert tracing_requested({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://h:4318"})
    assert tracing_requested({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://h:4318/v1/traces"})
    assert tracing_requested({"OTEL_TRACES_EXPORTER": "otlp"})
    assert not tracing_requested({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://h"})
    assert not tracing_requested({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://h"})
