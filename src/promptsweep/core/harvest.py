"""Production inputs back into the golden set: harvest what it does not cover, add what people labelled.

``harvest`` reads inputs (the ``promptsweep.input`` attribute of a run's sample spans, in the
OTLP/JSON file-exporter format, or a plain JSONL of input records), drops the ones the golden
set already covers and writes the rest, most unlike the golden set first, as unlabelled samples
for a person to label. Coverage is BM25 similarity over the template's input variables (the
same documents the few-shot retriever indexes), normalised so an identical input scores 1 and
one sharing no word scores 0. ``add`` checks labelled samples against the suite and merges them
into its dataset file, in the file's own format, so the next collection picks them up.
"""

from __future__ import annotations

import hashlib
import json
import os
import string
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bm25s  # type: ignore[import-untyped]
import numpy as np
import yaml

from promptsweep.core.dataset import RawRecord, _clean_id, read_records
from promptsweep.core.errors import ConfigError
from promptsweep.core.redact import redact_text
from promptsweep.core.retrieval import TOKEN_PATTERN
from promptsweep.core.suite import Suite, template_values
from promptsweep.core.templates import PromptTemplate

SPAN_INPUT_ATTRIBUTE = "promptsweep.input"
"""A sample span's input record: JSON of the data keys the template reads, redacted, bounded."""
SPAN_INPUT_TRUNCATED = "promptsweep.input.truncated"
MAX_SPAN_INPUT_CHARS = 8192
"""Span attributes travel in every export batch: a long input is cut to fit (and marked)."""
DEFAULT_THRESHOLD = 0.8
HARVESTED_FROM = "harvested_from"


# ------------------------------------------------------------------------------ inputs in spans


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


# ------------------------------------------------------------------------------ similarity


def _tokens(texts: Sequence[str]) -> list[list[str]]:
    tokenized = bm25s.tokenize(
        list(texts), stopwords=None, token_pattern=TOKEN_PATTERN, return_ids=False, show_progress=False
    )
    return [list(tokens) for tokens in tokenized]


def _normalised(forward: np.ndarray, backward: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        values = np.where(denominator > 0, (forward + backward) / denominator, 0.0)
    return np.clip(values, 0.0, 1.0)


class Similarity:
    """Normalised BM25 similarity between documents of one corpus (golden + candidates):
    ``(bm25(a→b) + bm25(b→a)) / (bm25(a→a) + bm25(b→b))``, symmetric, 1 for identical
    documents and 0 for documents that share no word. ``row(i)`` is one BM25 query: document
    ``i``'s scores against the whole corpus."""

    def __init__(self, documents: Sequence[str]) -> None:
        self.tokens = [t or ["\x00"] for t in _tokens(documents)]
        self._index = bm25s.BM25()
        self._index.index(self.tokens, show_progress=False)

    def row(self, i: int) -> np.ndarray:
        return np.asarray(self._index.get_scores(self.tokens[i]), dtype=np.float64)

    def __call__(self, a: int, b: int) -> float:
        row_a, row_b = self.row(a), self.row(b)
        return float(_normalised(row_a[[b]], row_b[[a]], np.asarray([row_a[a] + row_b[b]]))[0])


@dataclass(frozen=True)
class Harvested:
    candidate: Candidate
    similarity: float
    nearest: str | None


@dataclass
class HarvestResult:
    kept: list[Harvested]
    covered: int = 0
    duplicates: int = 0
    empty: int = 0


def _document(suite: Suite, variables: Sequence[str], record: Mapping[str, Any]) -> str:
    values = template_values(record, suite.spec.inputs)
    return "\n".join(str(values.get(name) or "") for name in variables)


def harvest(
    suite: Suite,
    template: PromptTemplate,
    golden: Sequence[tuple[str, Mapping[str, Any]]],
    candidates: Sequence[Candidate],
    *,
    threshold: float = DEFAULT_THRESHOLD,
) -> HarvestResult:
    """Candidates whose nearest golden sample is less similar than ``threshold``, and that are
    not (near-)repeats of one already kept, most unlike the golden set first."""
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"--threshold must be within [0, 1], got {threshold}")
    variables = input_variables(template)
    result = HarvestResult(kept=[])
    usable: list[Candidate] = []
    seen: set[str] = set()
    for candidate in candidates:
        document = _document(suite, variables, candidate.record)
        if not document.strip():
            result.empty += 1
            continue
        if document in seen:
            result.duplicates += 1
            continue
        seen.add(document)
        usable.append(candidate)
    docs = [_document(suite, variables, record) for _, record in golden]
    docs += [_document(suite, variables, c.record) for c in usable]
    if not usable:
        return result
    similarity = Similarity(docs)
    offset = len(golden)
    golden_rows = np.stack([similarity.row(i) for i in range(offset)]) if offset else np.zeros((0, len(docs)))
    golden_self = np.diagonal(golden_rows[:, :offset]) if offset else np.zeros(0)
    scored: list[tuple[Harvested, int]] = []
    for j, candidate in enumerate(usable):
        index = offset + j
        mine = similarity.row(index)
        values = _normalised(mine[:offset], golden_rows[:, index], mine[index] + golden_self)
        nearest = int(np.argmax(values)) if len(values) else None  # ties: the first in file order
        best = float(values[nearest]) if nearest is not None else 0.0
        if best >= threshold:
            result.covered += 1
            continue
        scored.append(
            (Harvested(candidate, best, golden[nearest][0] if nearest is not None else None), offset + j)
        )
    scored.sort(key=lambda pair: (pair[0].similarity, pair[0].candidate.where))
    # Repeats among the inputs themselves: compare each with those kept so far. Their score
    # rows (kept x corpus) fill a matrix that doubles when full.
    rows = np.empty((min(len(scored), 64), len(docs)))
    kept_index: list[int] = []
    kept_self: list[float] = []
    for item, index in scored:
        mine = similarity.row(index)
        count = len(kept_index)
        if count:
            others = np.asarray(kept_index)
            denominator = mine[index] + np.asarray(kept_self)
            if float(_normalised(mine[others], rows[:count, index], denominator).max()) >= threshold:
                result.duplicates += 1
                continue
        if count == len(rows):
            rows = np.concatenate([rows, np.empty_like(rows)])
        rows[count] = mine
        kept_index.append(index)
        kept_self.append(float(mine[index]))
        result.kept.append(item)
    return result


def pattern_keys(pattern: str | None) -> list[str]:
    """The record keys a ``str.format`` id pattern reads (``{label}-{key}`` → label, key)."""
    if not pattern:
        return []
    keys = []
    for _, name, _, _ in string.Formatter().parse(pattern):
        if name:
            keys.append(name.split(".", 1)[0].split("[", 1)[0])
    return keys


def unlabelled(suite: Suite, id_key: str | None, item: Harvested) -> dict[str, Any]:
    """A sample for a person to label: the input, every field empty, and where it came from."""
    record = {k: v for k, v in item.candidate.record.items() if k != HARVESTED_FROM}
    if id_key is not None:
        digest = hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:10]
        record[id_key] = f"harvested-{digest}"
    empty = {name: "" for name in suite.fields}
    for key in pattern_keys(suite.spec.id):  # the id pattern's other keys, to fill in too
        if key not in record and key not in empty:
            record[key] = ""
    if suite.spec.expected_key:
        record[suite.spec.expected_key] = empty
    else:
        record.update(empty)
    record[HARVESTED_FROM] = {
        **item.candidate.origin,
        "similarity": round(item.similarity, 4),
        "nearest": item.nearest,
    }
    return record


# ------------------------------------------------------------------------------ writing files


def dumps_records(records: Sequence[Mapping[str, Any]], suffix: str) -> str:
    """Records as the text of a dataset file with this suffix."""
    if suffix in (".jsonl", ".ndjson"):
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    if suffix == ".json":
        return json.dumps(list(records), indent=2, ensure_ascii=False) + "\n"
    if suffix in (".yaml", ".yml"):
        return yaml.safe_dump(list(records), sort_keys=False, allow_unicode=True) if records else "[]\n"
    raise ConfigError(f"unknown file format {suffix!r}; use .json, .jsonl or .yaml")


def _json_indent(text: str) -> int | None:
    for line in text.splitlines()[1:]:
        stripped = line.lstrip(" ")
        if stripped and len(stripped) != len(line):
            return len(line) - len(stripped)
    return None


def merged_text(path: Path, old: str, new: Sequence[Mapping[str, Any]]) -> str:
    """The dataset file with ``new`` records appended, in its own format. JSONL and YAML lists
    are appended to as text (comments and layout stay); JSON is rewritten with its indent."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return (old if not old or old.endswith("\n") else old + "\n") + dumps_records(new, suffix)
    if suffix in (".yaml", ".yml"):
        stripped = old.strip()
        if stripped in ("", "[]"):
            return dumps_records(new, suffix)
        return (old if old.endswith("\n") else old + "\n") + dumps_records(new, suffix)
    if suffix == ".json":
        data = json.loads(old) if old.strip() else []
        indent = _json_indent(old) or 2
        if isinstance(data, dict) and isinstance(data.get("samples"), list):
            data["samples"].extend(new)
        elif isinstance(data, list):
            data.extend(new)
        else:
            raise ConfigError(f'{path}: a dataset must be a list of objects (or {{"samples": [...]}})')
        return json.dumps(data, indent=indent, ensure_ascii=False) + "\n"
    raise ConfigError(f"{path}: unknown dataset format {suffix!r}; use .json, .jsonl or .yaml")


# ------------------------------------------------------------------------------ add


@dataclass
class AddResult:
    added: int
    path: Path
    warnings: list[str]


def _is_blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def check_labelled(
    suite: Suite, template: PromptTemplate, path: Path, records: Sequence[RawRecord]
) -> list[str]:
    """Every problem of labelled samples, each naming ``file:line: field``: a field left empty,
    a label outside the field's ``values``, a required input without a value."""
    problems: list[str] = []
    allowed = suite.allowed_values(None)
    for record in records:
        where = record.where(path)
        labels: Any = record.data
        if suite.spec.expected_key:
            labels = record.data.get(suite.spec.expected_key)
            if not isinstance(labels, Mapping):
                problems.append(f"{where}: {suite.spec.expected_key}: missing (an object with the labels)")
                continue
        for name, spec in suite.fields.items():
            value = labels.get(name)
            if _is_blank(value):
                problems.append(
                    f"{where}: {name}: empty; write the expected value (this sample is not labelled yet)"
                )
                continue
            if name in allowed and spec.unlisted_values == "error":
                values = {suite.normalise_value(name, v) for v in allowed[name]}
                if suite.normalise_value(name, str(value)) not in values:
                    problems.append(f"{where}: {name}: {value!r} is not one of {', '.join(allowed[name])}")
        variables = template_values(record.data, suite.spec.inputs)
        for variable in template.spec.inputs.required:
            if _is_blank(variables.get(variable)):
                source = suite.spec.inputs.get(variable, variable)
                problems.append(f"{where}: {source}: missing; the template's input {variable!r} reads it")
    return problems


def _id_of(suite: Suite, id_key: str | None, data: Mapping[str, Any]) -> str | None:
    if id_key is not None:
        value = data.get(id_key)
        return _clean_id(str(value)) if value is not None else None
    if suite.spec.id is not None:
        labels = data.get(suite.spec.expected_key, {}) if suite.spec.expected_key else data
        try:
            return _clean_id(suite.spec.id.format_map({**data, **dict(labels)}))
        except (KeyError, IndexError, ValueError):
            return None
    return None


def add_labelled(suite: Suite, labelled: Path) -> AddResult:
    """Check labelled samples and append them to the suite's dataset (atomically, in its format).
    Nothing is written when any sample has a problem; every problem is listed."""
    template = suite.load_template()
    records = read_records(labelled)
    if not records:
        raise ConfigError(f"{labelled}: no samples to add")
    problems = check_labelled(suite, template, labelled, records)
    dataset = suite.load_dataset()
    id_key = dataset.id_source if dataset.id_source is not None else suite.spec.id_field
    existing = {s.id: s.where for s in dataset.samples}
    seen: dict[str, str] = {}
    for record in records:
        sample_id = _id_of(suite, id_key, record.data)
        if sample_id is None:
            if id_key is not None:
                problems.append(f"{record.where(labelled)}: {id_key}: missing; every sample needs an id")
            elif suite.spec.id is not None:
                labels = record.data.get(suite.spec.expected_key, {}) if suite.spec.expected_key else {}
                absent = [k for k in pattern_keys(suite.spec.id) if k not in record.data and k not in labels]
                problems.append(
                    f"{record.where(labelled)}: {', '.join(absent) or 'id'}: missing; the suite's id pattern "
                    f"{suite.spec.id!r} reads it"
                )
            continue
        if id_key is None and suite.spec.id is not None:
            blank = [
                k
                for k in pattern_keys(suite.spec.id)
                if _is_blank(record.data.get(k)) and k not in suite.fields
            ]
            if blank:
                problems.append(
                    f"{record.where(labelled)}: {', '.join(blank)}: empty; the suite's id pattern {suite.spec.id!r} reads it"
                )
        where = existing.get(sample_id) or seen.get(sample_id)
        if where is not None:
            problems.append(
                f"{record.where(labelled)}: {id_key or 'id'}: duplicate sample id {sample_id!r} (already at {where})"
            )
        seen[sample_id] = record.where(labelled)
    if problems:
        raise ConfigError(f"{labelled}: {len(problems)} problem(s), nothing added:\n" + "\n".join(problems))
    target = suite.dataset_path
    old = target.read_text(encoding="utf-8")
    text = merged_text(target, old, [r.data for r in records])
    # Write beside the dataset, load it as the next run will, and only then replace the file.
    fd, name = tempfile.mkstemp(prefix=f".{target.stem}-", suffix=target.suffix, dir=target.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        merged = suite.with_overrides(dataset=tmp).load_dataset()
        if len(merged.samples) != len(dataset.samples) + len(records):
            raise ConfigError(f"{target}: merging gave {len(merged.samples)} samples, expected more")
        os.chmod(tmp, os.stat(target).st_mode & 0o777)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    warnings = [w.replace(str(tmp), str(target)) for w in merged.warnings]
    return AddResult(added=len(records), path=target, warnings=warnings)
