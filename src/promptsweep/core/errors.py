"""Error types and the helpers that make bad-input messages name the file, line and field.

Messages about a file never quote its content back: a path given by mistake (``/etc/shadow``
as a template) must not end up in a CI log. Keys that are not plain names are described by
their length, values are never shown.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from promptsweep.core.bounded_yaml import YAMLBoundsError, load_bounded


class PromptsweepError(Exception):
    """Base class for errors the plugin reports to the user as one clear line."""


class ConfigError(PromptsweepError):
    """Bad input: a suite, template, dataset or search-space file that cannot be used."""


class EndpointError(PromptsweepError):
    """The LLM endpoint cannot be used (unreachable, not OpenAI-compatible)."""


_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\- ]{0,47}$")


def safe_key(part: object) -> str:
    """A key as it may appear in a message: plain names as they are, anything else by length."""
    if isinstance(part, int):
        return str(part)
    text = str(part)
    return text if _PLAIN_KEY.match(text) else f"<a key of {len(text)} characters>"


def short_repr(value: object, width: int = 40) -> str:
    """``repr`` of a user value cut to ``width`` characters, for validator messages."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def format_validation_error(where: str, exc: ValidationError) -> str:
    """One line per problem, each naming the dotted key, e.g. ``fields.summary.weight``."""
    lines = []
    for err in exc.errors():
        key = ".".join(safe_key(part) for part in err["loc"]) or "<root>"
        lines.append(f"{where}: {key}: {err['msg']}")
    return "\n".join(lines)


def check_looks_like(path: Path | str, data: Mapping[str, Any], model: type[BaseModel], kind: str) -> None:
    """Refuse a mapping that shares no key with ``model``: it is some other file (a wrong path),
    and listing its "unknown keys" would print that file's content."""
    known = set(model.model_fields)
    if data and not any(isinstance(key, str) and key in known for key in data):
        required = [name for name, field in model.model_fields.items() if field.is_required()]
        article = "an" if kind[0] in "aeiou" else "a"
        raise ConfigError(
            f"{path}: not {article} {kind}: none of its {len(data)} top-level keys is {article} {kind} key "
            f"(a {kind} needs {', '.join(required)}); check the path"
        )


def read_text_file(path: Path) -> str:
    """A file's text as UTF-8 with an optional BOM removed (the same for YAML, JSON and JSONL);
    undecodable bytes are a ``ConfigError`` naming the file, line and byte, not a traceback."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    return decode_text(path, raw)


def decode_text(path: Path | str, raw: bytes, *, line_offset: int = 0) -> str:
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE, codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        raise ConfigError(f"{path}: the file is UTF-16/UTF-32 encoded; save it as UTF-8")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1 + line_offset
        raise ConfigError(
            f"{path}:{line}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
            "save the file as UTF-8"
        ) from None


def load_yaml_file(path: Path) -> Any:
    """Load a YAML file safely and within bounds (no Python tags, no alias bombs, no deep
    nesting); a syntax error names the file and line (1-based)."""
    text = read_text_file(path)
    try:
        return load_bounded(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(f"{path}{line}: YAML syntax error: {problem}") from None
    except YAMLBoundsError as exc:
        raise ConfigError(f"{path}: refused: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: YAML error: {exc}") from None
    except (ValueError, OverflowError) as exc:
        # e.g. an integer with more digits than Python converts (sys.get_int_max_str_digits)
        raise ConfigError(f"{path}: a value cannot be read: {type(exc).__name__}: {exc}") from None
