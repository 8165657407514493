"""Error types and the helpers that make bad-input messages name the file, line and field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError


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
