"""Turn a model's free-form answer into named fields.

Models answer in JSON (sometimes fenced, sometimes after a paragraph of reasoning) or in
``Field: value`` lines decorated with markdown.  Both shapes are parsed here without any
knowledge of a schema: field names, label fields, synonyms and key aliases are parameters.
Parsing never raises: a response that cannot be read is a wrong answer, not a crashed test.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["ParsedAnswer", "normalize_label", "parse_answer"]

# Characters stripped from both ends of a label before and after separators are unified.
_LABEL_EDGE_CHARS = " \t\r\n\"'`*_.,;:!?()[]{}<>\u201c\u201d\u2018\u2019\u00ab\u00bb"
_LABEL_SEPARATORS = re.compile(r"[\s\-.]+")
_REPEATED_UNDERSCORES = re.compile(r"_{2,}")

# Leading decoration of a ``Field: value`` line: headings, quotes, numbering, bullets.
_LINE_PREFIX = re.compile(r"^(?:#{1,6}[ \t]*|>[ \t]*|\d{1,3}[.)][ \t]*|[-*+•][ \t]+)*")
_HEADING = re.compile(r"^[ \t]*#{1,6}")
_TRAILING_PARENTHETICAL = re.compile(r"\s*\([^()]*\)\s*$")
_KEY_SEPARATORS = re.compile(r"[\s\-_]+")
_EMPHASIS = re.compile(r"^[*_]+")
# ``{`` is deliberately absent: ``{"key": ...`` on one line is JSON, not a key line.
_KEY_EDGE_CHARS = " \t*_`'\""
# No real key is longer; longer text before a colon is prose and is skipped cheaply.
_MAX_KEY_CHARS = 100
_VALUE_WRAPPERS = "\"'`*"
_OBJECT_START = re.compile(r'\{\s*["}]')
_MAX_FAILED_DECODES = 200


@dataclass(frozen=True)
class ParsedAnswer:
    """The fields read from one response, how they were read, and what is missing."""

    fields: dict[str, str]
    source: Literal["json", "lines", "none"]
    missing: tuple[str, ...]
    error: str | None = None


def _unify_label(value: str) -> str:
    """Lower-case snake_case form of a label, without synonym mapping."""
    text = value.strip().lower().strip(_LABEL_EDGE_CHARS)
    text = _LABEL_SEPARATORS.sub("_", text)
    text = _REPEATED_UNDERSCORES.sub("_", text)
    return text.strip("_")


def _prepare_synonyms(synonyms: Mapping[str, str] | None) -> dict[str, str]:
    """Normalise synonym keys and targets once so lookups compare like with like."""
    if not synonyms:
        return {}
    return {_unify_label(key): _unify_label(target) for key, target in synonyms.items()}


def normalize_label(value: str, synonyms: Mapping[str, str] | None = None) -> str:
    """Canonical form of a label value, so ``"API Server Not-Ready."`` equals ``api_server_not_ready``.

    Strips and lower-cases, drops quotes and punctuation at the ends, turns whitespace,
    dashes and dots into ``_``, collapses repeated ``_``, then maps through ``synonyms``
    (whose keys and targets are normalised the same way, e.g. ``{"Warning": "warn"}``).
    """
    unified = _unify_label(value)
    return _prepare_synonyms(synonyms).get(unified, unified)


def _normalize_key(key: str) -> str:
    """Compare keys as ``root_cause`` whatever their case, spacing or dashes."""
    text = _KEY_SEPARATORS.sub("_", key.strip().casefold())
    return text.strip("_")


def _key_lookup(fields: Sequence[str], aliases: Mapping[str, Sequence[str]] | None) -> dict[str, str]:
    """Map every accepted key spelling (normalised) to its requested field name."""
    lookup: dict[str, str] = {}
    for field in fields:
        lookup.setdefault(_normalize_key(field), field)
    for field, spellings in (aliases or {}).items():
        if field not in fields:
            continue
        for spelling in spellings:
            lookup.setdefault(_normalize_key(spelling), field)
    lookup.pop("", None)
    return lookup


def _json_to_text(value: Any) -> str | None:
    """Render a JSON value as text; ``None`` for null, which counts as not answered."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list):
        parts = (_json_to_text(item) for item in value)
        return ", ".join(part for part in parts if part is not None)
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        return str(value)


def _json_objects(text: str) -> tuple[list[dict[str, Any]], bool]:
    """Top-level JSON objects in ``text`` in order, and whether any candidate failed to decode.

    Only ``{`` followed by ``"`` or ``}`` can open an object, which skips prose braces
    cheaply.  Each failed decode costs time linear in the text (the decoder computes line
    numbers), so after :data:`_MAX_FAILED_DECODES` failures the scan stops: no real answer
    has that many, and pathological input must stay fast.
    """
    decoder = json.JSONDecoder()
    objects: list[dict[str, Any]] = []
    failures = 0
    pos = 0
    while failures < _MAX_FAILED_DECODES:
        match = _OBJECT_START.search(text, pos)
        if match is None:
            break
        start = match.start()
        try:
            value, end = decoder.raw_decode(text, start)
        except (ValueError, RecursionError):
            failures += 1
            pos = start + 1
            continue
        if isinstance(value, dict):
            objects.append(value)
        pos = max(end, start + 1)
    return objects, failures > 0


def _has_requested_key(obj: Mapping[str, Any], lookup: Mapping[str, str]) -> bool:
    return any(isinstance(key, str) and _normalize_key(key) in lookup for key in obj)


def _answer_object(obj: dict[str, Any], lookup: Mapping[str, str]) -> dict[str, Any] | None:
    """The object itself if it holds a requested key, else the last nested one that does.

    Nested search covers wrappers such as ``{"answer": {...}}``; it is iterative because
    decoded JSON may be nested close to the recursion limit.
    """
    if _has_requested_key(obj, lookup):
        return obj
    found: dict[str, Any] | None = None
    stack: list[Any] = list(reversed(list(obj.values())))
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if _has_requested_key(item, lookup):
                found = item
                continue
            stack.extend(reversed(list(item.values())))
        elif isinstance(item, list):
            stack.extend(reversed(item))
    return found


_JSON_PAIR = re.compile(r'"((?:[^"\\]|\\.)*)"\s*:\s*"((?:[^"\\]|\\.)*)"')


def _salvage_pairs(text: str, lookup: Mapping[str, str]) -> dict[str, str]:
    """Complete ``"key": "value"`` string pairs of a JSON object cut off by max_tokens.

    A one-line answer truncated inside its last value is not valid JSON and has no
    key lines, yet every pair before the cut is whole; the last occurrence wins.
    """
    values: dict[str, str] = {}
    for key, raw in _JSON_PAIR.findall(text):
        field = lookup.get(_normalize_key(key))
        if field is None:
            continue
        try:
            values[field] = json.loads(f'"{raw}"')
        except ValueError:
            continue
    return values


def _parse_json(text: str, lookup: Mapping[str, str]) -> tuple[dict[str, str], list[dict[str, Any]], bool]:
    """Raw field values from the last JSON object that answers, plus what was seen."""
    objects, failed = _json_objects(text)
    chosen: dict[str, Any] | None = None
    for obj in objects:
        candidate = _answer_object(obj, lookup)
        if candidate is not None:
            chosen = candidate
    values: dict[str, str] = {}
    if chosen is not None:
        for key, raw in chosen.items():
            field = lookup.get(_normalize_key(key)) if isinstance(key, str) else None
            rendered = _json_to_text(raw)
            if field is not None and rendered is not None:
                values[field] = rendered
    return values, objects, failed


def _split_key_line(line: str, lookup: Mapping[str, str]) -> tuple[str, str] | None:
    """``(field, raw value)`` if the line is a requested key line, else ``None``."""
    body = _LINE_PREFIX.sub("", line.strip(), count=1)
    colon = body.find(":")
    if colon == -1:
        # Only a heading may name a field without a colon; its value is on a later line.
        if not _HEADING.match(line) or len(body) > _MAX_KEY_CHARS:
            return None
        raw_key, value = body, ""
    else:
        if colon > _MAX_KEY_CHARS:
            return None
        raw_key, value = body[:colon], body[colon + 1 :]
    emphasis_match = _EMPHASIS.match(raw_key)
    key = _TRAILING_PARENTHETICAL.sub("", raw_key.strip(_KEY_EDGE_CHARS))
    field = lookup.get(_normalize_key(key.strip(_KEY_EDGE_CHARS)))
    if field is None:
        return None
    value = value.strip()
    if emphasis_match is not None:
        # Close the key's emphasis: ``**Key:** value`` or ``**Key: value**``.
        marker = emphasis_match.group(0)
        if value.startswith(marker):
            value = value[len(marker) :].strip()
        elif value.endswith(marker):
            value = value[: -len(marker)].strip()
    if raw_key.lstrip().startswith('"'):
        # A line of pretty-printed JSON that did not decode (truncated): ``"severity": "warn",``.
        value = value.removesuffix(",").rstrip()
        if value.startswith('"') and not value.endswith('"'):
            value = value[1:]
    return field, value


def _unwrap_value(value: str) -> str:
    """Drop matching quotes, backticks or asterisks wrapped around a whole value."""
    text = value.strip()
    while len(text) >= 2 and text[0] == text[-1] and text[0] in _VALUE_WRAPPERS:
        text = text[1:-1].strip()
    return text


def _parse_lines(text: str, lookup: Mapping[str, str]) -> dict[str, str]:
    """Raw field values from ``Field: value`` lines; the last occurrence of a field wins."""
    lines = text.splitlines()
    values: dict[str, str] = {}
    for index, line in enumerate(lines):
        split = _split_key_line(line, lookup)
        if split is None:
            continue
        field, value = split
        value = _unwrap_value(value)
        if not value:
            value = _continuation(lines, index + 1, lookup)
        if value:
            values[field] = value
    return values


def _continuation(lines: Sequence[str], start: int, lookup: Mapping[str, str]) -> str:
    """The next non-empty line after an empty key line, unless it is a key line itself."""
    for index in range(start, len(lines)):
        line = lines[index]
        if not line.strip():
            continue
        if _split_key_line(line, lookup) is not None:
            return ""
        return _unwrap_value(_LINE_PREFIX.sub("", line.strip(), count=1))
    return ""


def _finish_value(raw: str, *, is_label: bool, synonyms: Mapping[str, str]) -> str:
    """Labels are normalised (with synonyms); free text is only stripped."""
    if is_label:
        unified = _unify_label(raw)
        return synonyms.get(unified, unified)
    return raw.strip()


def _why_nothing(text: str, objects: list[dict[str, Any]], json_failed: bool, fields: Iterable[str]) -> str:
    """One line for the report saying why no field could be read."""
    if not text.strip():
        return "empty response"
    if objects:
        keys = sorted({str(key) for obj in objects for key in obj})
        shown = ", ".join(keys[:10]) + (", ..." if len(keys) > 10 else "")
        wanted = ", ".join(fields)
        return f"JSON object found but none of the fields {wanted} (keys: {shown or 'none'})"
    if json_failed:
        return "no valid JSON object (malformed or truncated?) and no `Field: value` lines found"
    return "no JSON object or `Field: value` lines found"


def parse_answer(
    text: str,
    fields: Sequence[str],
    *,
    label_fields: Collection[str] = (),
    synonyms: Mapping[str, Mapping[str, str]] | None = None,
    aliases: Mapping[str, Sequence[str]] | None = None,
) -> ParsedAnswer:
    """Read ``fields`` from a model response, as JSON or as ``Field: value`` lines.

    The last JSON object holding a requested key wins, as does the last occurrence of a key
    line, because reasoning comes before the answer.  JSON is preferred unless the lines
    yield more fields.  Values of ``label_fields`` go through :func:`normalize_label` with
    ``synonyms[field]``; other fields are only stripped.  ``aliases`` adds key spellings per
    field (used for both shapes).  Never raises on any text.
    """
    fields = list(dict.fromkeys(fields))
    lookup = _key_lookup(fields, aliases)
    json_values, objects, json_failed = _parse_json(text, lookup)
    line_values = _parse_lines(text, lookup)

    source: Literal["json", "lines", "none"]
    if json_values and len(json_values) >= len(line_values):
        raw_values, source = json_values, "json"
    elif line_values and json_failed and (salvaged := _salvage_pairs(text, lookup)):
        # A JSON object cut by max_tokens on one line reads as one key line whose value runs
        # on into the next pairs (``none", "level": "error", ...``): its whole pairs win.
        raw_values = {**line_values, **salvaged}
        source = "json" if len(salvaged) >= len(line_values) else "lines"
    elif line_values:
        raw_values, source = line_values, "lines"
    elif json_failed and (salvaged := _salvage_pairs(text, lookup)):
        raw_values, source = salvaged, "json"
    else:
        raw_values, source = {}, "none"

    labels = set(label_fields)
    prepared = {field: _prepare_synonyms((synonyms or {}).get(field)) for field in labels}
    values: dict[str, str] = {}
    for field in fields:
        if field in raw_values:
            values[field] = _finish_value(
                raw_values[field], is_label=field in labels, synonyms=prepared.get(field, {})
            )
    missing = tuple(field for field in fields if field not in values)
    error = None if source != "none" else _why_nothing(text, objects, json_failed, fields)
    return ParsedAnswer(fields=values, source=source, missing=missing, error=error)
