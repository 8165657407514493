"""Prompt templates: YAML files with a system and a user part, rendered by a sandboxed Jinja2."""

from __future__ import annotations

import functools
import hashlib
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import jinja2
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from promptsweep.core.io.errors import ConfigError, short_repr
from promptsweep.core.io.load import check_looks_like, load_yaml_file, validate_file_model
from promptsweep.core.templates.sandbox import (
    DEFAULT_LIMITS,
    BoundedSandbox,
    RenderLimits,
    TemplateLimitError,
    rendering,
)

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
    values: dict[str, list[str]] | None = None
    """Label sets this template was written for (``--optimize`` freezes them into a winner): the
    schema's enums come from here, not from the dataset a run scores, so the template's text and
    its schema always list the same set. A run on data with other labels reports how many
    samples the template cannot answer."""
    choices: ChoicesSpec | None = None
    """``json_schema`` only: each label field's enum per input, from its nearest pool samples'
    labels (needs ``examples:``), e.g. ``{neighbours: 4}``."""


class ChoicesSpec(BaseModel):
    """Per-input label sets: each label field's enum is the labels of the input's nearest pool
    samples, so the model chooses among plausible answers instead of every label."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    neighbours: int = Field(ge=1)
    """How many nearest pool samples (the ``examples:`` pool and ``retrieve.by``) give their labels."""
    plus_all: bool = False
    """Also allow every other label (the neighbours' labels come first in the enum)."""


class PoolSplitSpec(BaseModel):
    """How the pool's dataset is split; only its train part is ever shown as examples."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    train: float | int = 0.5
    seed: int = 13
    group_by: str | None = None


class PoolSpec(BaseModel):
    """Where retrieved examples come from, pinned so the prompt renders the same everywhere."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    dataset: str
    """The labelled dataset, relative to this template file."""
    sha256: str | None = None
    """The whole dataset file's sha256 (older winners): any change to the file is an error."""
    train_sha256: str | None = None
    """The train part's ids and content (``--optimize`` writes this): a pool that changed since the
    prompt was chosen is an error, while the file's other samples may change freely."""
    split: PoolSplitSpec = Field(default_factory=PoolSplitSpec)
    inputs: dict[str, str] = Field(default_factory=dict)
    """Template variable → record key, as in the suite's ``inputs``."""
    answer: list[str]
    """Record keys shown as each example's answer, in this order (the suite's fields)."""
    id: str | None = None
    id_field: str | None = None
    expected_key: str | None = None
    category: str | None = None


class RetrieveSpec(BaseModel):
    """How many examples, compared on which template variables."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    k: int = Field(default=4, ge=0)
    """Examples shown per input; 0 shows none (a pool kept only for ``copy_if_similar``)."""
    by: list[str]
    """Template variables whose text is compared with BM25, e.g. ``[logs, component]``."""


class ExamplesSpec(BaseModel):
    """Few-shot examples retrieved per input: the ``k`` most similar of the pool, most similar last,
    shown as earlier user/assistant turns."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    retrieve: RetrieveSpec
    pool: PoolSpec
    answer_format: Literal["json", "lines"] = "json"
    nearest: Literal["last", "first"] = "last"
    """Where the most similar example sits: ``last``, next to the question; ``first``, so that a
    prompt showing k examples begins like one showing more (their cached prefix is shared)."""
    copy_if_similar: float | None = Field(default=None, ge=0.0, le=1.0)
    """Gated lookup: an input whose nearest pool sample shares at least this share of its words
    (token overlap in [0, 1], the lookup floor's similarity) gets that sample's answer with no
    call; the others go to the model. 0 copies always (a kNN answer, no call at all)."""
    vote: int = Field(default=1, ge=1)
    """With ``copy_if_similar``: copy each field's most frequent value among the ``vote``
    nearest pool samples (ties to the nearer one); 1 copies the nearest sample's answer."""

    @model_validator(mode="after")
    def _vote_needs_the_gate(self) -> ExamplesSpec:
        if self.vote > 1 and self.copy_if_similar is None:
            raise ValueError("vote needs copy_if_similar: it says how copied answers are voted")
        return self


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
    instructions: str = ""
    """Text after the question in the last user message only (never in retrieved examples' turns):
    what differs between prompts goes last, so llama-server reuses the cached prompt before it."""
    model_defaults: dict[str, Any] = Field(default_factory=dict)
    """Request parameters (temperature, max_tokens, seed, …); they win over the suite's llm."""
    inputs: TemplateInputs = Field(default_factory=TemplateInputs)
    """The template's variables, required and optional (with defaults)."""
    output: TemplateOutput = Field(default_factory=TemplateOutput)
    """How the model is asked to answer."""
    examples: ExamplesSpec | None = None
    """Few-shot examples retrieved per input from a pinned pool (written by --optimize)."""
    optimization: dict[str, Any] | None = None
    """Written by --optimize into winner files (scores, interval, hashes); carried along untouched."""

    @model_validator(mode="after")
    def _the_pool_is_used(self) -> PromptTemplateSpec:
        choices = self.output.choices
        if choices is not None and (self.examples is None or self.output.format != "json_schema"):
            raise ValueError(
                "output.choices builds a JSON schema per input from the examples pool: it needs "
                "output.format: json_schema and an examples: block"
            )
        examples = self.examples
        if (
            examples is not None
            and examples.retrieve.k == 0
            and examples.copy_if_similar is None
            and choices is None
        ):
            raise ValueError(
                "examples.retrieve.k: 0 shows no examples; it needs examples.copy_if_similar or "
                "output.choices (the pool is then used for those only), or set k to 1 or more"
            )
        return self

    @field_validator("id")
    @classmethod
    def _id_is_a_safe_name(cls, value: str) -> str:
        # Template ids become file names (winner files, run dirs): keep them inside their folder.
        if not _SAFE_ID.match(value):
            raise ValueError(
                f"template id {short_repr(value)} must be letters, digits, '_', '-' or '.', "
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


_ENV = BoundedSandbox(
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=False,
    autoescape=False,  # prompts are plain text, not HTML
)
_limits = DEFAULT_LIMITS


def set_render_limits(limits: RenderLimits) -> None:
    """The limits every later render uses unless it is given its own (set once per run from
    ``--max-prompt-chars`` / ``--template-timeout``)."""
    global _limits
    _limits = limits


def render_limits() -> RenderLimits:
    return _limits


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

    @property
    def declared_inputs(self) -> list[str]:
        """The variables the template declares it reads: required first, then optional."""
        return [*self.spec.inputs.required, *self.spec.inputs.optional]

    def variables(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults for optional inputs, overlaid by the given values."""
        merged = dict(self.spec.inputs.optional)
        merged.update({k: v for k, v in values.items() if v is not None})
        return merged

    def render(
        self,
        values: Mapping[str, Any],
        *,
        sample_id: str = "?",
        examples: Sequence[tuple[Mapping[str, Any], str]] = (),
        limits: RenderLimits | None = None,
    ) -> list[dict[str, str]]:
        """Chat messages for one sample: shared system text first, per-sample text last.

        Keeping the system message identical across samples lets llama-server's
        prompt cache reuse it (``timings.cache_n``). ``examples`` (inputs, answer text)
        become user/assistant turns between the two, in the order given.

        The whole prompt is rendered under one budget of ``limits`` (see
        ``promptsweep.core.templates.sandbox``): a prompt over ``max_prompt_chars`` or a render over the
        time limit is a ``TemplateRenderError`` naming the template and the sample.
        """
        limits = limits or _limits
        messages: list[dict[str, str]] = []
        with rendering(limits):
            question = self.render_user(values, sample_id=sample_id)
            if self.spec.system.strip():
                variables = self.variables(values)
                messages.append(
                    {
                        "role": "system",
                        "content": self._render_part("system", self.spec.system, variables, sample_id),
                    }
                )
            for inputs, answer in examples:
                messages.append({"role": "user", "content": self.render_user(inputs, sample_id=sample_id)})
                messages.append({"role": "assistant", "content": answer})
            if self.spec.instructions.strip():
                variables = self.variables(values)
                tail = self._render_part("instructions", self.spec.instructions, variables, sample_id)
                question = f"{question}\n\n{tail}" if question else tail
            if self.spec.user.strip() or self.spec.instructions.strip():
                messages.append({"role": "user", "content": question})
        size = sum(len(m["content"]) for m in messages)
        if size > limits.max_prompt_chars:
            raise TemplateRenderError(
                f"{self._where()}: the prompt for sample {sample_id!r} is {size} characters, over the "
                f"limit of {limits.max_prompt_chars} (--max-prompt-chars)"
            )
        return messages

    def render_user(
        self, values: Mapping[str, Any], *, sample_id: str = "?", limits: RenderLimits | None = None
    ) -> str:
        """The per-sample part alone (the question the model answers); bounded like ``render``
        (inside ``render`` it shares that render's budget)."""
        with rendering(limits or _limits, reuse=True):
            variables = self.variables(values)
            missing = self.missing_inputs(values)
            if missing:
                raise MissingInputError(
                    f"{self._where()}: required input {missing[0]!r} has no value for sample {sample_id!r}",
                    variable=missing[0],
                )
            return self._render_part("user", self.spec.user, variables, sample_id)

    def missing_inputs(self, values: Mapping[str, Any]) -> list[str]:
        """Required inputs without a value (checked without rendering anything)."""
        variables = self.variables(values)
        return [name for name in self.spec.inputs.required if name not in variables]

    def _render_part(self, role: str, source: str, variables: Mapping[str, Any], sample_id: str) -> str:
        try:
            return _compile(source).render(**variables).strip()
        except TemplateLimitError as exc:
            raise TemplateRenderError(f"{self._where()} ({role}): sample {sample_id!r}: {exc}") from None
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
        except RecursionError:
            raise TemplateRenderError(
                f"{self._where()} ({role}): sample {sample_id!r}: recursion too deep (a macro or "
                "recursive loop that does not end?)"
            ) from None
        except Exception as exc:  # OverflowError, ZeroDivisionError, TypeError ... from template code
            raise TemplateRenderError(
                f"{self._where()} ({role}): cannot render sample {sample_id!r}: {type(exc).__name__}: {exc}"
            ) from None

    def _where(self) -> str:
        return f"template {self.spec.id!r}" + (f" ({self.path})" if self.path else "")


def literal(text: str) -> str:
    """Text that Jinja renders verbatim (it may hold braces or ``{%``), however it is written:
    how data and generated words go into a template without becoming template code."""
    return "{% raw %}" + text.replace("{%", "{% endraw %}{{ '{%' }}{% raw %}") + "{% endraw %}"


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
        except RecursionError:
            raise TemplateRenderError(
                f"{template._where()} ({role}): expressions are nested too deeply"
            ) from None


def template_from_mapping(data: Mapping[str, Any], *, path: Path | None = None) -> PromptTemplate:
    """Validate a template mapping (from YAML or built in memory by the optimizer)."""
    check_looks_like(str(path) if path else "<template>", data, PromptTemplateSpec, "prompt template")
    spec = validate_file_model(PromptTemplateSpec, data, path)
    canonical = yaml.safe_dump(spec.model_dump(exclude={"optimization"}), sort_keys=True)
    template = PromptTemplate(spec=spec, path=path, sha256=hashlib.sha256(canonical.encode()).hexdigest())
    check_syntax(template)
    return template


def load_template(path: str | os.PathLike[str]) -> PromptTemplate:
    """Load and validate a prompt template YAML file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"prompt template not found: {path}")
    data = load_yaml_file(path)
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: a prompt template must be a mapping, got {type(data).__name__}")
    return template_from_mapping(data, path=path)
