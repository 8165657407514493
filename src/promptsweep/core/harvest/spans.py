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
from typing import Any, BinaryIO

from promptsweep.core.data.suite import Suite
from promptsweep.core.io.bounded_yaml import MAX_DEPTH, nesting_depth_exceeds
from promptsweep.core.io.errors import ConfigError
from promptsweep.core.io.load import decode_text, read_text_file
from promptsweep.core.io.redact import redact_personal_data, redact_text
from promptsweep.core.templates.template import PromptTemplate

SPAN_INPUT_ATTRIBUTE = "promptsweep.input"
"""A sample span's input record: JSON of the data keys the template reads, redacted, bounded."""
SPAN_INPUT_TRUNCATED = "promptsweep.input.truncated"
MAX_SPAN_INPUT_CHARS = 8192
"""Span attributes travel in every export batch: a long input is cut to fit (and marked)."""


def input_record(suite: Suite, template: PromptTemplate, data: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a sample's record the prompt is rendered from: keys the suite's ``inputs:``
    map (their top-level key) and same-named keys of the template's variables; never labels."""
    keys = {source.split(".", 1)[0] for source in suite.spec.inputs.values()}
    keys |= {name for name in template.declared_inputs if name not in suite.spec.inputs}
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


def _attr_value(value: Any) -> Any:
    """An OTLP/JSON ``AnyValue`` (``{"stringValue": ...}``, proto field names in either case)."""
    if not isinstance(value, Mapping):
        return None
    for key, item in value.items():
        name = str(key).replace("_", "").lower()
        if name == "stringvalue" or name == "boolvalue" or name == "doublevalue":
            return item
        if name == "intvalue":
            try:
                return int(item)
            except (TypeError, ValueError):  # not a number, or more digits than Python converts
                return None
        if name == "arrayvalue":
            values = item.get("values") if isinstance(item, Mapping) else None
            return [_attr_value(v) for v in values] if isinstance(values, list) else None
    return None


def _get(data: Mapping[str, Any], camel: str) -> Any:
    snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in camel)
    return data.get(camel, data.get(snake))


def _objects(value: Any) -> list[Mapping[str, Any]]:
    """The objects of an OTLP list field; anything else in it (a hand-edited file) is skipped."""
    return [item for item in value if isinstance(item, Mapping)] if isinstance(value, list) else []


def _spans(request: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    for resource_spans in _objects(_get(request, "resourceSpans")):
        for scope_spans in _objects(_get(resource_spans, "scopeSpans")):
            yield from _objects(scope_spans.get("spans"))


MAX_SOURCE_LINE_BYTES = 64 * 1024 * 1024
"""The longest line (one OTLP export request, or one record) a source may have; a whole JSON
document written over many lines is bounded by the same size. The file exporter writes one
request per batch (512 spans of at most ``MAX_SPAN_INPUT_CHARS`` input each is about 5 MB)."""


def _parse(path: Path, text: str, line: int) -> Any:
    """One JSON value, bounded in nesting like a dataset; a one-line error naming the line."""
    try:
        data = json.loads(text)
    except RecursionError:
        data, deep = None, True
    except json.JSONDecodeError:
        raise
    except ValueError as exc:  # e.g. an integer with more digits than Python converts
        raise ConfigError(f"{path}:{line}: a value cannot be read: {exc}") from None
    else:
        deep = nesting_depth_exceeds(data)
    if deep:
        raise ConfigError(
            f"{path}:{line}: values are nested more than {MAX_DEPTH} levels deep; flatten the structure"
        )
    return data


def _lines(path: Path, handle: BinaryIO, limit: int) -> Iterator[tuple[int, str]]:
    """The file's lines, decoded as UTF-8, each read only up to ``limit`` bytes."""
    number = 0
    while True:
        raw = handle.readline(limit + 1)
        if not raw:
            return
        number += 1
        if len(raw) > limit:
            raise ConfigError(
                f"{path}:{number}: the line is longer than {limit // (1024 * 1024)} MiB; a source has one "
                "JSON value (an OTLP export request or an input record) a line"
            )
        yield number, decode_text(path, raw, line_offset=number - 1)


def _documents(path: Path, limit: int = MAX_SOURCE_LINE_BYTES) -> Iterator[tuple[int, Any]]:
    """JSON values in a file: one per line (JSONL, the file exporter), or one whole document
    written over several lines (at most ``limit`` bytes); a list's items are values each. Lines are read one at a time and
    never past ``limit`` bytes, so a huge line costs no more memory than the limit."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    with handle:
        first = True
        for number, line in _lines(path, handle, limit):
            if not line.strip():
                continue
            try:
                value = _parse(path, line, number)
            except json.JSONDecodeError as exc:
                if not first:
                    raise ConfigError(
                        f"{path}:{number}: invalid JSON: {exc.msg} (column {exc.colno})"
                    ) from None
                break  # not JSONL: perhaps one document over several lines
            first = False
            yield from ((number, item) for item in (value if isinstance(value, list) else [value]))
        else:
            return
    yield from _whole_document(path, limit)


def _whole_document(path: Path, limit: int) -> Iterator[tuple[int, Any]]:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    if size > limit:
        raise ConfigError(
            f"{path}: not one JSON value a line, and larger than {limit // (1024 * 1024)} MiB as one "
            "document; write it as JSONL (one OTLP export request or input record a line)"
        )
    text = read_text_file(path)
    try:
        whole = _parse(path, text, 1)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg} (column {exc.colno})") from None
    yield from ([(1, item) for item in whole] if isinstance(whole, list) else [(1, whole)])


def read_source(path: Path, suite: str | None = None) -> tuple[list[Candidate], SourceStats]:
    """Inputs from an OTLP/JSON trace file (the spans' ``promptsweep.input``; spans of another
    suite are skipped) or a JSONL of input records (each line one record), every one redacted
    (credentials, e-mail addresses, home folders become ``<redacted:KIND>``) before it is kept.
    Lines are bounded in length, nesting and encoding; each problem is one line naming it."""
    stats = SourceStats()
    found: list[Candidate] = []
    for number, document in _documents(path):
        stats.lines += 1
        where = f"{path}:{number}"
        if not isinstance(document, Mapping):
            raise ConfigError(f"{where}: expected a JSON object (an OTLP export or an input record)")
        if _get(document, "resourceSpans") is None:
            stats.records += 1
            found.append(_redacted_candidate(dict(document), where, {"source": str(path), "line": number}))
            continue
        for span in _spans(document):
            stats.spans += 1
            attributes = {a.get("key"): _attr_value(a.get("value")) for a in _objects(span.get("attributes"))}
            raw = attributes.get(SPAN_INPUT_ATTRIBUTE)
            if raw is None:
                stats.without_input += 1
                continue
            if suite is not None and attributes.get("promptsweep.suite") not in (None, suite):
                stats.other_suite += 1
                continue
            try:
                record = _parse(path, raw, number) if isinstance(raw, str) else None
            except json.JSONDecodeError:
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
            found.append(_redacted_candidate(record, where, origin))
    return found, stats


def _redacted_candidate(record: dict[str, Any], where: str, origin: dict[str, Any]) -> Candidate:
    """A candidate whose record and origin went through the one credential and personal-data
    rule (``redact_personal_data``): what harvest writes is for people to read and commit."""
    return Candidate(redact_personal_data(record), where, redact_personal_data(origin))
