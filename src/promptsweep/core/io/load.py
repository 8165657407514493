"""Reading a user's YAML, JSON or text file and validating it into a model, with errors that
name the file, line and dotted key (``suite.yaml:14: fields.priority.wieght: unknown key 'wieght';
did you mean 'weight'?``), in our words rather than pydantic's.
"""

from __future__ import annotations

import codecs
import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from promptsweep.core.io.bounded_yaml import YAMLBoundsError, load_bounded
from promptsweep.core.io.errors import ConfigError, safe_key, unknown_name_hint

ModelT = TypeVar("ModelT", bound=BaseModel)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


_CONTAINERS = (dict, list, tuple, Mapping, Sequence)


def _unwrap(annotation: Any) -> Any:
    """``Model | None`` → ``Model``: the union member that a key can lead into."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if _model_in(arg) is not None or typing.get_origin(arg) in _CONTAINERS:
                return arg
    return annotation


def _descend(annotation: Any, part: str | int) -> Any:
    """The type of the value under key or index ``part``; ``None`` when it has none."""
    annotation = _unwrap(annotation)
    model = _model_in(annotation)
    if model is not None:
        info = model.model_fields.get(str(part))
        return info.annotation if info is not None else None
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (dict, Mapping) and len(args) == 2:
        return args[1]
    if origin in (list, tuple, Sequence) and args:
        return args[0]
    return None


def model_at(root: type[BaseModel], loc: Sequence[str | int]) -> type[BaseModel] | None:
    """The model class that validates the value at ``loc`` (e.g. ``("fields", "priority")``)."""
    annotation: Any = root
    for part in loc:
        annotation = _descend(annotation, part)
        if annotation is None:
            return None
    return _model_in(_unwrap(annotation))


def _message(err: Mapping[str, Any], root: type[BaseModel] | None) -> str:
    kind = err["type"]
    loc = tuple(err["loc"])
    if kind == "extra_forbidden" and loc:
        key = str(loc[-1])
        parent = model_at(root, loc[:-1]) if root is not None else None
        known = list(parent.model_fields) if parent is not None else []
        return f"unknown key {safe_key(key)!r}" + unknown_name_hint(key, known)
    if kind == "missing" and loc:
        return f"missing required key {str(loc[-1])!r}"
    message = str(err["msg"])
    if kind == "value_error":
        message = message.removeprefix("Value error, ")
    return message


def yaml_line(text: str, loc: Sequence[str | int]) -> int | None:
    """1-based line of the key at ``loc`` in a YAML document (the deepest part found)."""
    try:
        node = yaml.compose(text)
    except (yaml.YAMLError, RecursionError, ValueError):
        return None
    line: int | None = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.value == str(part):
                    line, node = key_node.start_mark.line + 1, value_node
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def key_where(path: Path, loc: Sequence[str | int]) -> str:
    """``suite.yaml:14: fields.priority`` for a key of a YAML file (no line if unreadable)."""
    try:
        line = yaml_line(path.read_text(encoding="utf-8"), loc)
    except OSError:
        line = None
    dotted = ".".join(safe_key(part) for part in loc)
    return f"{path}{f':{line}' if line else ''}: {dotted}"


def format_validation_error(
    where: str, exc: ValidationError, *, model: type[BaseModel] | None = None, source: str | None = None
) -> str:
    """One line per problem, each naming the file, line (when ``source`` is the YAML text) and
    dotted key, in our words: ``suite.yaml:14: fields.priority.wieght: unknown key 'wieght';
    did you mean 'weight'?``"""
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        key = ".".join(safe_key(part) for part in loc) or "<root>"
        line = yaml_line(source, loc) if source is not None else None
        lines.append(f"{where}{f':{line}' if line else ''}: {key}: {_message(err, model)}")
    return "\n".join(lines)


def validate_file_model(model: type[ModelT], data: Mapping[str, Any], path: Path | None) -> ModelT:
    """Validate a mapping read from ``path``; a ``ConfigError`` names file, line and key."""
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        source = None
        if path is not None:
            try:
                source = path.read_text(encoding="utf-8")
            except OSError:
                source = None
        where = str(path) if path is not None else f"<{model.__name__}>"
        raise ConfigError(format_validation_error(where, exc, model=model, source=source)) from None


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


def yaml_hint(problem: str) -> str:
    """What usually causes a YAML syntax error, in words a newcomer can act on."""
    text = problem.lower()
    if "'\\t'" in text or "tab" in text:
        return "indent with spaces, not tabs"
    if "mapping values are not allowed" in text:
        return (
            "a value that contains ': ' needs quotes (e.g. description: \"x: y\"), "
            "or this line is indented under a key that already has a value"
        )
    if "could not find expected ':'" in text or "simple key" in text:
        return "a key needs ': ' after it, and a line that continues a value needs quotes or `|`"
    if "expected <block end>" in text or "did not find expected key" in text:
        return "check the indentation: keys of one mapping (and items of one list) line up in the same column"
    if "found character" in text or "cannot start any token" in text:
        return "quote a value that starts with one of ` @ % * & ! | > { [ or contains ': '"
    return "check the indentation of this line and the one above, and quote values that contain ': ' or '#'"


def missing_file_message(target: Path, *, where: str, what: str, relative: str | None = None) -> str:
    """``suite.yaml:7: dataset: file not found: data/ticket.jsonl; did you mean 'data/tickets.jsonl'?``:
    the key that names the file, and the closest names in that folder."""
    shown = relative if relative is not None else str(target)
    hint = ""
    folder = target.parent
    if folder.is_dir():
        try:
            names = sorted(p.name for p in folder.iterdir() if p.is_file())
        except OSError:
            names = []
        close = difflib.get_close_matches(target.name, names, n=3, cutoff=0.5)
        if close:
            prefix = shown[: len(shown) - len(target.name)] if shown.endswith(target.name) else ""
            hint = "; did you mean " + " or ".join(repr(prefix + name) for name in close) + "?"
    elif relative is not None:
        hint = f" (there is no folder {str(folder)!r})"
    looked = f" (looked for {target})" if relative is not None else ""
    return f"{where}: {what} not found: {shown}{looked}{hint}"


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
        raise ConfigError(f"{path}{line}: YAML syntax error: {problem} ({yaml_hint(problem)})") from None
    except YAMLBoundsError as exc:
        raise ConfigError(f"{path}: refused: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: YAML error: {exc}") from None
    except (ValueError, OverflowError) as exc:
        # e.g. an integer with more digits than Python converts (sys.get_int_max_str_digits)
        raise ConfigError(f"{path}: a value cannot be read: {type(exc).__name__}: {exc}") from None


def validate_model(model: type[ModelT], data: Mapping[str, Any], where: str) -> ModelT:
    """Validate a mapping that did not come from a file; errors name ``where`` and each key."""
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(where, exc, model=model)) from None


def load_model_file(path: Path, model: type[ModelT], what: str) -> ModelT:
    """A YAML file holding one mapping, validated; e.g. ``what="a suite"``. Errors name the
    file, the line and the key; a file that shares no key with ``model`` is refused whole."""
    data = load_yaml_file(path)
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: {what} must be a mapping, got {type(data).__name__}")
    check_looks_like(path, data, model, what.split(" ", 1)[-1])
    return validate_file_model(model, data, path)
