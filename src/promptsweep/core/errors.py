"""Error types and the helpers that make bad-input messages name the file, line and field."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class PromptsweepError(Exception):
    """Base class for errors the plugin reports to the user as one clear line."""


class ConfigError(PromptsweepError):
    """Bad input: a suite, template, dataset or search-space file that cannot be used."""


class EndpointError(PromptsweepError):
    """The LLM endpoint cannot be used (unreachable, not OpenAI-compatible)."""


def format_validation_error(where: str, exc: ValidationError) -> str:
    """One line per problem, each naming the dotted key, e.g. ``fields.summary.weight``."""
    lines = []
    for err in exc.errors():
        key = ".".join(str(part) for part in err["loc"]) or "<root>"
        lines.append(f"{where}: {key}: {err['msg']}")
    return "\n".join(lines)


def load_yaml_file(path: Path) -> Any:
    """``yaml.safe_load`` a file; a syntax error names the file and line (1-based)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(f"{path}{line}: YAML syntax error: {problem}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: YAML error: {exc}") from exc


def validate_model(model: type[M], data: Mapping[str, Any], where: str) -> M:
    """Validate a mapping against a pydantic model; errors name ``where`` and each key."""
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(where, exc)) from None


def load_model_file(path: Path, model: type[M], what: str) -> M:
    """A YAML file holding one mapping, validated; e.g. ``what="a suite"``."""
    data = load_yaml_file(path)
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: {what} must be a mapping, got {type(data).__name__}")
    return validate_model(model, data, str(path))
