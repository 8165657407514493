"""Prompt templates: YAML files with a system and a user part, rendered by a sandboxed Jinja2."""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import jinja2
import yaml
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field, field_validator

from promptsweep.core.errors import ConfigError, load_yaml_file, validate_file_model

OutputFormat = Literal["text", "json", "json_schema"]
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class TemplateInputs(BaseModel):
    """Variables a template needs; optional ones carry their default value."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    required: tuple[str, ...] = ()
    """Variables every sample must supply (through the suite's inputs mapping or a same-named key)."""
    optional: dict[str, Any] = Field(default_factory=dict)
    """Variables a sample may leave out, with the value used then."""


class TemplateOutput(BaseModel):
    """How the model is asked to answer.

    ``json_schema`` sends llama-server's constrained decoding (``response_format``
    with a schema built from the suite's fields); ``json`` asks for a JSON object
    without constraint; ``text`` expects ``Field: value`` lines.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    format: OutputFormat = "text"
    """`json_schema` (constrained decoding), `json` (a JSON object) or `text` (`Field: value` lines)."""


class PromptTemplateSpec(BaseModel):
    """The YAML shape of a prompt template (see prompt_templates/)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    id: str
    """Names the template in reports and winner files (`<id>_v2.yaml`): letters, digits, `_`, `-`, `.`."""
    version: str = "v1"
    """Shown as `id@version` in reports; --optimize writes the next one."""
    description: str = ""
    """Free text for people reading the template."""
    system: str = ""
    """The system message, a Jinja2 template; keep it the same for every sample (prompt cache)."""
    user: str
    """The user message, a Jinja2 template over the inputs, e.g. `{{ body }}`."""
    model_defaults: dict[str, Any] = Field(default_factory=dict)
    """Request parameters (temperature, max_tokens, seed, …); they win over the suite's llm."""
    inputs: TemplateInputs = Field(default_factory=TemplateInputs)
    """The template's variables, required and optional (with defaults)."""
    output: TemplateOutput = Field(default_factory=TemplateOutput)
    """How the model is asked to answer."""
    optimization: dict[str, Any] | None = None
    """Written by --optimize into winner files (scores, interval, hashes); carried along untouched."""

    @field_validator("id")
    @classmethod
    def _id_is_a_safe_name(cls, value: str) -> str:
        # Template ids become file names (winner files, run dirs): keep them inside their folder.
        if not _SAFE_ID.match(value):
            raise ValueError(
                f"template id {value!r} must be letters, digits, '_', '-' or '.', "
                "and start with a letter or digit"
            )
        return value


class TemplateRenderError(ConfigError):
    """A template could not be rendered for one sample (missing variable, syntax, sandbox)."""


class MissingInputError(TemplateRenderError):
    """A required input has no value; the suite, which knows the data, rewords it."""

    def __init__(self, message: str, *, variable: str) -> None:
        super().__init__(message)
        self.variable = variable


_ENV = ImmutableSandboxedEnvironment(
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=False,
    autoescape=False,  # prompts are plain text, not HTML
)


@dataclass(frozen=True)
class PromptTemplate:
    """A loaded template: its spec, where it came from, and its compiled parts."""

    spec: PromptTemplateSpec
    path: Path | None
    sha256: str

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def label(self) -> str:
        """``id@version``, how reports name a template."""
        return f"{self.spec.id}@{self.spec.version}"

    def variables(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults for optional inputs, overlaid by the given values."""
        merged = dict(self.spec.inputs.optional)
        merged.update({k: v for k, v in values.items() if v is not None})
        return merged

    def render(self, values: Mapping[str, Any], *, sample_id: str = "?") -> list[dict[str, str]]:
        """Chat messages for one sample: shared system text first, per-sample text last.

        Keeping the system message identical across samples lets llama-server's
        prompt cache reuse it (``timings.cache_n``).
        """
        variables = self.variables(values)
        missing = [name for name in self.spec.inputs.required if name not in variables]
        if missing:
            raise MissingInputError(
                f"{self._where()}: required input {missing[0]!r} has no value for sample {sample_id!r}",
                variable=missing[0],
            )
        messages: list[dict[str, str]] = []
        for role, source in (("system", self.spec.system), ("user", self.spec.user)):
            if not source.strip():
                continue
            messages.append({"role": role, "content": self._render_part(role, source, variables, sample_id)})
        return messages

    def _render_part(self, role: str, source: str, variables: Mapping[str, Any], sample_id: str) -> str:
        try:
            return _compile(source).render(**variables).strip()
        except jinja2.UndefinedError as exc:
            raise TemplateRenderError(
                f"{self._where()} ({role}): {exc.message} for sample {sample_id!r}; "
                "declare it under inputs.optional with a default, or map it in the suite's inputs"
            ) from exc
        except jinja2.exceptions.SecurityError as exc:
            raise TemplateRenderError(f"{self._where()} ({role}): refused by the sandbox: {exc}") from exc
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateRenderError(
                f"{self._where()} ({role}) line {exc.lineno}: template syntax error: {exc.message}"
            ) from exc

    def _where(self) -> str:
        return f"template {self.spec.id!r}" + (f" ({self.path})" if self.path else "")


@functools.lru_cache(maxsize=512)
def _compile(source: str) -> jinja2.Template:
    # Cached: compiling is ~1.5 ms, and every sample renders the same two sources.
    return _ENV.from_string(source)


def check_syntax(template: PromptTemplate) -> None:
    """Compile both parts now so a syntax error is a collection error, not 115 failures."""
    for role, source in (("system", template.spec.system), ("user", template.spec.user)):
        try:
            _compile(source)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateRenderError(
                f"{template._where()} ({role}) line {exc.lineno}: template syntax error: {exc.message}"
            ) from exc


def template_from_mapping(data: Mapping[str, Any], *, path: Path | None = None) -> PromptTemplate:
    """Validate a template mapping (from YAML or built in memory by the optimizer)."""
    spec = validate_file_model(PromptTemplateSpec, data, path)
    canonical = yaml.safe_dump(spec.model_dump(exclude={"optimization"}), sort_keys=True)
    template = PromptTemplate(spec=spec, path=path, sha256=hashlib.sha256(canonical.encode()).hexdigest())
    check_syntax(template)
    return template


def load_template(path: Path) -> PromptTemplate:
    """Load and validate a prompt template YAML file."""
    if not path.is_file():
        raise ConfigError(f"prompt template not found: {path}")
    data = load_yaml_file(path)
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: a prompt template must be a mapping, got {type(data).__name__}")
    return template_from_mapping(data, path=path)
