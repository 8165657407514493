"""OpenTelemetry traces (run → candidate → sample → LLM call) exported over OTLP/HTTP.

Configured only by the standard ``OTEL_*`` variables (see ``observe.tracing_requested``):
on when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set or ``OTEL_TRACES_EXPORTER=otlp``; when off,
this module is not even imported and no layer is installed. The tracer provider is private to promptsweep
(the global one is left alone), so a project's own instrumentation is unaffected.

xdist: the controller starts the run span and hands its W3C ``traceparent`` to the workers.
A candidate's span id is derived from the trace id, suite and candidate name, so workers
parent their sample spans to it before the controller records the candidate span (with the
first sample's start and the last sample's end) at the end of the session.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from promptsweep.core.answers.chat import ChatRequest, ChatResult, LLMError
from promptsweep.core.io.errors import PromptsweepError
from promptsweep.llm.client import EndpointInfo
from promptsweep.llm.endpoint import Layer, SendFn

SCOPE = "promptsweep"
RUN_SPAN = "promptsweep run"
CANDIDATE_SPAN = "promptsweep candidate"
SAMPLE_SPAN = "promptsweep sample"


class _IdGenerator(RandomIdGenerator):
    """Random ids, except that the next span id can be pinned (for candidate spans)."""

    def __init__(self) -> None:
        self._pinned: int | None = None
        self.lock = threading.Lock()

    def pin_next_span_id(self, span_id: int) -> None:
        self._pinned = span_id

    def generate_span_id(self) -> int:
        if self._pinned is not None:
            pinned, self._pinned = self._pinned, None
            return pinned
        return super().generate_span_id()


def candidate_span_id(trace_id: int, suite: str, candidate: str) -> int:
    """The same 64-bit id in every process for one (trace, suite, candidate)."""
    digest = hashlib.sha256(f"{trace_id:032x}/{suite}/{candidate}".encode()).digest()
    return int.from_bytes(digest[:8], "big") or 1


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


class Telemetry:
    """One process's tracer: the provider, the run context and the span helpers."""

    def __init__(self, service_name: str = "promptsweep") -> None:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            raise PromptsweepError(
                "OpenTelemetry export is configured (OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_TRACES_EXPORTER) but "
                "the OTLP exporter is not installed: pip install 'pytest-promptsweep[otlp]' "
                "(or unset the OTEL_* variables)"
            ) from None
        self.ids = _IdGenerator()
        attributes: dict[str, Any] = {"process.pid": os.getpid()}  # tells xdist workers apart
        if not os.environ.get("OTEL_SERVICE_NAME"):
            attributes["service.name"] = service_name
        self.provider = TracerProvider(resource=Resource.create(attributes), id_generator=self.ids)
        self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        self.tracer = self.provider.get_tracer(SCOPE)
        self.run_span: trace.Span | None = None
        self.parent: otel_context.Context = otel_context.Context()

    # -- run (controller) and its context (workers) --------------------------------------

    def start_run(self, attributes: Mapping[str, Any]) -> None:
        self.run_span = self.tracer.start_span(
            RUN_SPAN, attributes=_clean(attributes), kind=SpanKind.INTERNAL
        )
        self.parent = trace.set_span_in_context(self.run_span)

    def traceparent(self) -> str | None:
        carrier: dict[str, str] = {}
        TraceContextTextMapPropagator().inject(carrier, context=self.parent)
        return carrier.get("traceparent")

    def adopt(self, traceparent: str) -> None:
        """A worker continues the controller's trace."""
        self.parent = TraceContextTextMapPropagator().extract({"traceparent": traceparent})

    @property
    def trace_id(self) -> int | None:
        ctx = trace.get_current_span(self.parent).get_span_context()
        return ctx.trace_id if ctx.is_valid else None

    # -- candidate --------------------------------------------------------------------------

    def candidate_context(self, suite: str, candidate: str) -> otel_context.Context:
        """The (remote) candidate span as the parent for a sample span."""
        trace_id = self.trace_id
        if trace_id is None:
            return self.parent
        span_context = SpanContext(
            trace_id=trace_id,
            span_id=candidate_span_id(trace_id, suite, candidate),
            is_remote=True,
            trace_flags=TraceFlags(TraceFlags.SAMPLED),
        )
        return trace.set_span_in_context(NonRecordingSpan(span_context))

    def record_candidate(
        self, suite: str, candidate: str, start: float, end: float, attributes: Mapping[str, Any]
    ) -> None:
        """Record the candidate span (controller, at the end) under its derived id."""
        trace_id = self.trace_id
        if trace_id is None:
            return
        with self.ids.lock:
            self.ids.pin_next_span_id(candidate_span_id(trace_id, suite, candidate))
            span = self.tracer.start_span(
                CANDIDATE_SPAN,
                context=self.parent,
                attributes=_clean(
                    {"promptsweep.suite": suite, "promptsweep.candidate": candidate, **attributes}
                ),
                start_time=_ns(start),
            )
        span.end(end_time=_ns(end))

    # -- sample --------------------------------------------------------------------------

    def start_sample(
        self, suite: str, candidate: str, attributes: Mapping[str, Any]
    ) -> tuple[trace.Span, object]:
        """Start a sample span and make it current (so the LLM-call span is its child)."""
        span = self.tracer.start_span(
            SAMPLE_SPAN,
            context=self.candidate_context(suite, candidate),
            attributes=_clean({"promptsweep.suite": suite, "promptsweep.candidate": candidate, **attributes}),
        )
        token = otel_context.attach(trace.set_span_in_context(span))
        return span, token

    @staticmethod
    def end_sample(
        span: trace.Span, token: object, result: Mapping[str, Any] | None, failed: str | None
    ) -> None:
        otel_context.detach(token)  # type: ignore[arg-type]
        if result is not None:
            span.set_attributes(sample_attributes(result))
            if result.get("error"):
                span.set_status(Status(StatusCode.ERROR, str(result["error"])[:200]))
        if failed:
            span.set_status(Status(StatusCode.ERROR, failed[:200]))
        span.end()

    # -- LLM call layer ---------------------------------------------------------------------

    def layer(self) -> Layer:
        """An endpoint layer: one client span per chat call, GenAI semantic conventions."""
        tracer = self.tracer

        def wrap(info: EndpointInfo, send: SendFn) -> SendFn:
            url = urlsplit(info.url)
            port = url.port or (443 if url.scheme == "https" else 80)
            system = "llama.cpp" if info.is_llama_server else "openai"

            def traced(request: ChatRequest) -> ChatResult:
                model = request.model or info.model_id or "unknown"
                attributes = {
                    "gen_ai.operation.name": "chat",
                    "gen_ai.system": system,
                    "gen_ai.request.model": model,
                    "gen_ai.request.temperature": request.params.get("temperature"),
                    "gen_ai.request.max_tokens": request.params.get("max_tokens"),
                    "gen_ai.request.top_p": request.params.get("top_p"),
                    "server.address": url.hostname or "",
                    "server.port": port,
                }
                with tracer.start_as_current_span(
                    f"chat {model}",
                    kind=SpanKind.CLIENT,
                    attributes=_clean(attributes),
                    record_exception=False,
                    set_status_on_exception=False,
                ) as span:
                    try:
                        result = send(request)
                    except LLMError as exc:
                        span.set_attribute(
                            "error.type", f"http_{exc.status}" if exc.status else type(exc).__name__
                        )
                        span.set_status(Status(StatusCode.ERROR, str(exc)[:200]))
                        raise
                    span.set_attributes(
                        _clean(
                            {
                                "gen_ai.response.model": result.model,
                                "gen_ai.response.finish_reasons": [result.finish_reason]
                                if result.finish_reason
                                else None,
                                "gen_ai.usage.input_tokens": result.prompt_tokens,
                                "gen_ai.usage.output_tokens": result.completion_tokens,
                                "promptsweep.usage.cached_tokens": result.cached_tokens,
                                "promptsweep.latency_s": result.latency_s,
                                "promptsweep.from_cache": result.from_cache,
                            }
                        )
                    )
                    return result

            return traced

        return wrap

    # -- shutdown -----------------------------------------------------------------------------

    def end_run(self, attributes: Mapping[str, Any] | None = None) -> None:
        if self.run_span is not None:
            if attributes:
                self.run_span.set_attributes(_clean(attributes))
            self.run_span.end()
            self.run_span = None

    def shutdown(self) -> None:
        """Flush what is batched and stop the exporter (every process, at unconfigure)."""
        self.end_run()
        self.provider.force_flush()
        self.provider.shutdown()


def sample_attributes(result: Mapping[str, Any]) -> dict[str, Any]:
    """A sample span's outcome: overall and per-field scores, tokens, latency."""
    attributes: dict[str, Any] = {
        "promptsweep.sample_id": result.get("sample_id"),
        "promptsweep.category": result.get("category"),
        "promptsweep.template": result.get("template"),
        "promptsweep.score": result.get("score"),
        "promptsweep.parse_source": result.get("parse_source"),
        "promptsweep.latency_s": result.get("latency_s"),
        "gen_ai.usage.input_tokens": result.get("prompt_tokens"),
        "gen_ai.usage.output_tokens": result.get("completion_tokens"),
        "promptsweep.error": result.get("error"),
    }
    for name, value in (result.get("scores") or {}).items():
        attributes[f"promptsweep.score.{name}"] = value
    return _clean(attributes)


def _clean(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """OTel attributes cannot be None; drop those."""
    return {k: v for k, v in attributes.items() if v is not None}


def now() -> float:
    return time.time()
