"""Inputs production traces carry back: the span attribute a run writes, and reading it (or a
plain JSONL of input records) from a file.

Every sample span carries its input record (``promptsweep.input``): JSON of the data keys the
template reads, never labels, redacted and cut to a bounded size. ``read_source`` reads those
back from an OTLP/JSON file-exporter file, or reads a JSONL of records as they are.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from promptsweep.core.data.suite import Suite
from promptsweep.core.io.errors import ConfigError
from promptsweep.core.io.redact import redact_text
from promptsweep.core.templates.template import PromptTemplate

SPAN_INPUT_ATTRIBUTE = "promptsweep.input"
"""A sample span's input record: JSON of the data keys the template reads, redacted, bounded."""
SPAN_INPUT_TRUNCATED = "promptsweep.input.truncated"
MAX_SPAN_INPUT_CHARS = 8192
"""Span attributes travel in every export batch: a long input is cut to fit (and marked)."""


def input_variables(template: PromptTemplate) -> list[str]:
    return [*template.spec.inputs.required, *template.spec.inputs.optional]


def input_record(suite: Suite, template: PromptTemplate, data: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a sample's record the prompt is rendered from: keys the suite's ``inputs:``
    map (their top-level key) and same-named keys of the template's variables; never labels."""
    keys = {source.split(".", 1)[0] for source in suite.spec.inputs.values()}
    keys |= {name for name in input_variables(template) if name not in suite.spec.inputs}
    labels = set(suite.fields) | ({suite.spec.expected_key} if suite.spec.expected_key else set())
    return {k: v for k, v in data.items() if isinstance(k, str) and k in keys and k not in labels}


def _redacted(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {str(k): _redacted(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redacted(v) for v in value]
    return value


def span_input(record: Mapping[str, Any], limit: int = MAX_SPAN_INPUT_CHARS) -> tuple[str, bool]:
    """The span attribute for an input record: JSON with URLs' credentials redacted, cut to
    ``limit`` characters by shortening its longest strings; and whether it was cut."""
    data = _redacted(record)
    text = json.dumps(data, ensure_ascii=False, sort_keys=True)
    if len(text) <= limit:
        return text, False
    strings = {k: v for k, v in data.items() if isinstance(v, str)}
    while len(text) > limit and strings:
        longest = max(strings, key=lambda k: len(strings[k]))
        excess = len(text) - limit
        keep = max(0, len(strings[longest]) - excess - 1)
        strings[longest] = strings[longest][:keep] + "…"
        data[longest] = strings[longest]
        if keep == 0:
            del strings[longest]
        text = json.dumps(data, ensure_ascii=False, sort_keys=True)
    if len(text) > limit:  # nested values too large: keep only what fits as strings
        text = json.dumps({k: v for k, v in data.items() if isinstance(v, str)}, ensure_ascii=False)[:limit]
    return text, True


# ------------------------------------------------------------------------------ reading sources


@dataclass(frozen=True)
class Candidate:
    """One input read from a source, with where it was read (file:line, trace and span ids)."""

    record: dict[str, Any]
    where: str
    origin: dict[str, Any] = field(default_factory=dict)


@dataclass
class SourceStats:
    lines: int = 0
    spans: int = 0
    records: int = 0
    other_suite: int = 0
    without_input: int = 0


def _attr_value(value: Mapping[str, Any]) -> Any:
    """An OTLP/JSON ``AnyValue`` (``{"stringValue": ...}``, proto field names in either case)."""
    for key, item in value.items():
        name = key.replace("_", "").lower()
        if name == "stringvalue" or name == "boolvalue" or name == "doublevalue":
            return item
        if name == "intvalue":
            return int(item)
        if name == "arrayvalue":
            return [_attr_value(v) for v in (item or {}).get("values", [])]
    return None


def _get(data: Mapping[str, Any], camel: str) -> Any:
    snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in camel)
    return data.get(camel, data.get(snake))


def _spans(request: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    for resource_spans in _get(request, "resourceSpans") or []:
        for scope_spans in _get(resource_spans, "scopeSpans") or []:
            yield from scope_spans.get("spans") or []


def _documents(path: Path, text: str) -> Iterator[tuple[int, Any]]:
    """JSON values in a file: one per line (JSONL, the file exporter), or one whole document."""
    lines = text.splitlines()
    parsed: list[tuple[int, Any]] = []
    try:
        for number, line in enumerate(lines, start=1):
            if line.strip():
                parsed.append((number, json.loads(line)))
    except json.JSONDecodeError:
        try:
            whole = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg} (column {exc.colno})") from None
        parsed = [(1, item) for item in whole] if isinstance(whole, list) else [(1, whole)]
    yield from parsed


def read_source(path: Path, suite: str | None = None) -> tuple[list[Candidate], SourceStats]:
    """Inputs from an OTLP/JSON trace file (the spans' ``promptsweep.input``; spans of another
    suite are skipped) or a JSONL of input records (each line one record)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    stats = SourceStats()
    found: list[Candidate] = []
    for number, document in _documents(path, text):
        stats.lines += 1
        where = f"{path}:{number}"
        if not isinstance(document, Mapping):
            raise ConfigError(f"{where}: expected a JSON object (an OTLP export or an input record)")
        if _get(document, "resourceSpans") is None:
            stats.records += 1
            found.append(Candidate(dict(document), where, {"source": str(path), "line": number}))
            continue
        for span in _spans(document):
            stats.spans += 1
            attributes = {
                a.get("key"): _attr_value(a.get("value") or {}) for a in span.get("attributes") or []
            }
            raw = attributes.get(SPAN_INPUT_ATTRIBUTE)
            if raw is None:
                stats.without_input += 1
                continue
            if suite is not None and attributes.get("promptsweep.suite") not in (None, suite):
                stats.other_suite += 1
                continue
            try:
                record = json.loads(raw)
            except (TypeError, json.JSONDecodeError):
                record = None
            if not isinstance(record, dict):
                raise ConfigError(
                    f"{where}: span {_get(span, 'spanId')}: {SPAN_INPUT_ATTRIBUTE} is not a JSON object"
                )
            origin: dict[str, Any] = {
                "source": str(path),
                "line": number,
                "trace_id": _get(span, "traceId"),
                "span_id": _get(span, "spanId"),
            }
            if attributes.get("promptsweep.sample_id"):
                origin["sample_id"] = attributes["promptsweep.sample_id"]
            if attributes.get(SPAN_INPUT_TRUNCATED):
                origin["truncated"] = True
            found.append(Candidate(record, where, origin))
    return found, stats
