"""Search-space files: the prompt dimensions an --optimize run combines into candidate templates.

A candidate is one value of each dimension (tone, constraints wording, output structure,
few-shot strategy, reasoning strategy, LLM parameters). It renders as an ordinary prompt
template: the shared system text (tone, task, rules, output and reasoning instructions,
few-shot examples) first, the base template's per-sample user text last, so llama-server's
prompt cache reuses the prefix.

Reasoning and constrained decoding: a JSON schema constrains the very first token, so a
model cannot think before answering under it. Reasoning candidates therefore never use
``json_schema`` decoding: ``json_schema`` + reasoning becomes free text that ends with the
JSON object (the parser reads the last one), ``json`` + reasoning asks for a JSON object
whose first key is ``reasoning``, and ``lines`` + reasoning ends with the ``field: value``
lines. Reasoning candidates get ``reasoning.max_tokens`` as their token budget.

Few-shot examples come only from the suite's train split, chosen with a seeded shuffle,
spread over categories; no validation sample can appear in any prompt.
"""

from __future__ import annotations

import itertools
import json
import random
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from promptsweep.core.dataset import Dataset, Sample
from promptsweep.core.errors import ConfigError, load_yaml_file, validate_file_model
from promptsweep.core.suite import Suite
from promptsweep.core.templates import PromptTemplate, load_template, template_from_mapping

OutputStructure = Literal["json_schema", "json", "lines"]
FewShotStrategy = Literal["none", "positive_only", "mixed", "hard_negatives"]
ReasoningStrategy = Literal["direct", "cot", "structured_cot"]

DEFAULT_SUSPICIOUS = (
    "error",
    "fail",
    "timeout",
    "refused",
    "denied",
    "killed",
    "exception",
    "unable",
    "retry",
    "warn",
)
MAX_LISTED_VALUES = 40


def _non_empty(value: list[Any]) -> list[Any]:
    if not value:
        raise ValueError("empty dimension: give at least one value")
    return value


class FewShotSpec(BaseModel):
    """Few-shot strategies and how examples are drawn from the train split."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    strategies: list[FewShotStrategy] = Field(default_factory=lambda: list[FewShotStrategy](["none"]))
    k: int = Field(default=2, ge=1)
    seed: int = 0
    benign: dict[str, str] = Field(default_factory=dict)
    """Expected field values marking a benign (no issue) sample, e.g. ``{action_needed: none}``."""
    suspicious: list[str] = Field(default_factory=lambda: list(DEFAULT_SUSPICIOUS))
    """Words that make a benign sample's input look like an issue (hard negatives)."""

    @field_validator("strategies")
    @classmethod
    def _strategies_not_empty(cls, value: list[Any]) -> list[Any]:
        return _non_empty(value)

    @model_validator(mode="after")
    def _benign_needed(self) -> FewShotSpec:
        needs = {"mixed", "hard_negatives"} & set(self.strategies)
        if needs and not self.benign:
            raise ValueError(
                f"strategies {', '.join(sorted(needs))} need few_shot.benign, e.g. benign: {{action_needed: none}}"
            )
        return self


class ReasoningSpec(BaseModel):
    """Reasoning strategies and the larger token budget reasoning candidates get."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    strategies: list[ReasoningStrategy] = Field(default_factory=lambda: list[ReasoningStrategy](["direct"]))
    max_tokens: int = Field(default=384, ge=1)

    @field_validator("strategies")
    @classmethod
    def _strategies_not_empty(cls, value: list[Any]) -> list[Any]:
        return _non_empty(value)


class ParamsSpec(BaseModel):
    """LLM parameters searched as dimensions; empty lists keep the template's values."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    temperature: list[float] = Field(default_factory=list)
    max_tokens: list[int] = Field(default_factory=list)


class SearchDefaults(BaseModel):
    """Defaults for the command-line search options, per space file."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    strategy: Literal["grid", "random", "halving"] = "halving"
    eta: float = Field(default=3.0, gt=1)
    min_samples: int = Field(default=4, ge=1)
    budget: int | None = Field(default=None, ge=1)
    seed: int = 0


class SearchSpaceSpec(BaseModel):
    """The YAML shape of a ``*.space.yaml`` file."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    base_template: str
    description: str = ""
    tone: list[str]
    constraints: list[str] = Field(default_factory=lambda: [""])
    output: list[OutputStructure] = Field(default_factory=lambda: list[OutputStructure](["json_schema"]))
    few_shot: FewShotSpec = Field(default_factory=FewShotSpec)
    reasoning: ReasoningSpec = Field(default_factory=ReasoningSpec)
    params: ParamsSpec = Field(default_factory=ParamsSpec)
    search: SearchDefaults = Field(default_factory=SearchDefaults)

    @field_validator("tone", "constraints", "output")
    @classmethod
    def _dimension_not_empty(cls, value: list[Any]) -> list[Any]:
        return _non_empty(value)


@dataclass(frozen=True)
class Candidate:
    """One combination of the dimensions; ``id`` is short and stable across runs."""

    tone: int
    constraints: int
    output: OutputStructure
    few_shot: FewShotStrategy
    k: int
    reasoning: ReasoningStrategy
    temperature: float | None = None
    max_tokens: int | None = None
    tag_temperature: bool = False
    tag_max_tokens: bool = False

    @property
    def id(self) -> str:
        shots = "none" if self.few_shot == "none" else f"{self.few_shot}{self.k}"
        parts = [f"t{self.tone}", f"c{self.constraints}", self.output, shots, self.reasoning]
        if self.tag_temperature:
            parts.append(f"T{self.temperature:g}")
        if self.tag_max_tokens:
            parts.append(f"m{self.max_tokens}")
        return "-".join(parts)

    def params(self, space: SearchSpace) -> dict[str, Any]:
        """LLM parameters this candidate runs with (the top layer over template and suite)."""
        params: dict[str, Any] = {}
        if self.temperature is not None:
            params["temperature"] = self.temperature
        if self.max_tokens is not None:
            params["max_tokens"] = self.max_tokens
        if self.reasoning != "direct":
            params["max_tokens"] = max(space.spec.reasoning.max_tokens, params.get("max_tokens", 0))
        return params

    def dimensions(self, space: SearchSpace) -> dict[str, Any]:
        """The chosen value of each dimension, as the winner file records it."""
        spec = space.spec
        return {
            "tone": spec.tone[self.tone],
            "constraints": spec.constraints[self.constraints],
            "output": self.output,
            "few_shot": {"strategy": self.few_shot, "k": 0 if self.few_shot == "none" else self.k},
            "reasoning": self.reasoning,
            **self.params(space),
        }

    def to_template(
        self, space: SearchSpace, suite: Suite, train_samples: Sequence[Sample]
    ) -> PromptTemplate:
        """The candidate as a prompt template (examples drawn from ``train_samples`` only)."""
        return template_from_mapping(self.to_mapping(space, suite, train_samples))

    def to_mapping(self, space: SearchSpace, suite: Suite, train_samples: Sequence[Sample]) -> dict[str, Any]:
        base = space.base
        examples = space.examples(self, suite, train_samples)
        system = "\n\n".join(
            part
            for part in (
                space.spec.tone[self.tone].strip(),
                _task_text(suite, space.allowed_values),
                space.spec.constraints[self.constraints].strip(),
                _output_text(self, list(suite.fields)),
                _examples_text(self, examples, suite, base),
            )
            if part
        )
        model_defaults = dict(base.spec.model_defaults)
        model_defaults.update(self.params(space))
        return {
            "id": base.id,
            "version": self.id,
            "description": f"Candidate {self.id} of {space.path.name}, built on {base.label}.",
            "system": _literal(system),
            "user": base.spec.user,
            "model_defaults": model_defaults,
            "inputs": base.spec.inputs.model_dump(),
            "output": {"format": self.template_format},
        }

    @property
    def template_format(self) -> str:
        if self.reasoning != "direct":
            return "json" if self.output == "json" else "text"
        return {"json_schema": "json_schema", "json": "json", "lines": "text"}[self.output]


def _literal(text: str) -> str:
    """Text that Jinja renders verbatim (examples may hold braces), however it is written."""
    return "{% raw %}" + text.replace("{%", "{% endraw %}{{ '{%' }}{% raw %}") + "{% endraw %}"


def _task_text(suite: Suite, allowed: Mapping[str, list[str]]) -> str:
    lines = ["For the input you are given, determine these fields:"]
    for name, spec in suite.fields.items():
        detail = spec.description or ""
        values = allowed.get(name)
        if values and len(values) <= MAX_LISTED_VALUES:
            detail = (detail + "; " if detail else "") + "one of: " + ", ".join(values)
        elif spec.label:
            detail = detail or "a snake_case label"
        if spec.max_length:
            detail = (detail + "; " if detail else "") + f"at most {spec.max_length} characters"
        lines.append(f"- {name}" + (f": {detail}" if detail else ""))
    return "\n".join(lines)


def _answer_shape(candidate: Candidate, fields: Sequence[str]) -> str:
    if candidate.output == "lines":
        return "one line per field, written as `field: value`, in this order: " + ", ".join(fields)
    return "a single JSON object with exactly these keys: " + ", ".join(fields)


def _output_text(candidate: Candidate, fields: Sequence[str]) -> str:
    shape = _answer_shape(candidate, fields)
    if candidate.reasoning == "direct":
        return f"Answer with {shape}. Give only the answer, no explanation."
    if candidate.output == "json":
        steps = (
            "think step by step in a few short sentences"
            if candidate.reasoning == "cot"
            else "reason in three short labelled steps (Evidence, Cause, Impact)"
        )
        return (
            f'Answer with a single JSON object. Its first key is "reasoning", where you {steps}; '
            f"then these keys: {', '.join(fields)}."
        )
    if candidate.reasoning == "cot":
        lead = "First think step by step in at most three short sentences."
    else:
        lead = (
            "First reason in three short labelled steps:\n"
            "Evidence: what the input says.\nCause: the likely technical cause.\nImpact: how urgent it is."
        )
    return f"{lead}\nThen end with the final answer as {shape}."


def answer_text(candidate: Candidate, sample: Sample, fields: Sequence[str]) -> str:
    """How an example's expected answer is written for this candidate's output structure."""
    if candidate.output == "lines":
        return "\n".join(f"{name}: {sample.expected[name]}" for name in fields)
    return json.dumps({name: sample.expected[name] for name in fields}, ensure_ascii=False)


def _examples_text(
    candidate: Candidate, examples: Sequence[Sample], suite: Suite, base: PromptTemplate
) -> str:
    if not examples:
        return ""
    blocks = ["Examples:"]
    for sample in examples:
        user = base.render(suite.template_values(sample), sample_id=sample.id)[-1]["content"]
        blocks.append(f"Input:\n{user}\nAnswer:\n{answer_text(candidate, sample, list(suite.fields))}")
    return "\n\n".join(blocks)


class SearchSpace:
    """A validated space bound to its suite: the base template, the label sets and the train split."""

    def __init__(
        self, spec: SearchSpaceSpec, path: Path, base: PromptTemplate, suite: Suite, dataset: Dataset
    ):
        self.spec = spec
        self.path = path
        self.base = base
        self.allowed_values = suite.allowed_values(dataset)
        split = suite.split(dataset)
        by_id = dataset.by_id()
        self.train: tuple[Sample, ...] = tuple(by_id[i] for i in split.train)
        self._base_text = {
            s.id: base.render(suite.template_values(s), sample_id=s.id)[-1]["content"] for s in self.train
        }
        self._check_k(suite)

    def is_benign(self, sample: Sample) -> bool:
        return all(sample.expected.get(k) == v for k, v in self.spec.few_shot.benign.items()) and bool(
            self.spec.few_shot.benign
        )

    def looks_suspicious(self, sample: Sample) -> bool:
        text = self._base_text.get(sample.id, "").lower()
        return any(word.lower() in text for word in self.spec.few_shot.suspicious)

    def pools(self) -> dict[str, list[Sample]]:
        issues = [s for s in self.train if not self.is_benign(s)]
        benign = [s for s in self.train if self.is_benign(s)]
        hard = [s for s in benign if self.looks_suspicious(s)]
        return {"issues": issues, "benign": benign, "hard": hard}

    def _needs(self, strategy: str, k: int) -> dict[str, int]:
        if strategy == "positive_only":
            return {"issues": k}
        if strategy == "mixed":
            return {"issues": max(k - 1, 0), "benign": 1}
        if strategy == "hard_negatives":
            return {"issues": k // 2, "hard": k - k // 2}
        return {}

    def _check_k(self, suite: Suite) -> None:
        fs = self.spec.few_shot
        if set(fs.strategies) != {"none"} and fs.k > len(self.train):
            raise ConfigError(
                f"{self.path}: few_shot.k: k={fs.k} is larger than the train split of {suite.path.name} "
                f"({len(self.train)} samples)"
            )
        pools = self.pools()
        for strategy in fs.strategies:
            for pool, count in self._needs(strategy, fs.k).items():
                if count > len(pools[pool]):
                    what = {
                        "issues": "issue (non-benign)",
                        "benign": "benign",
                        "hard": "suspicious-looking benign",
                    }[pool]
                    raise ConfigError(
                        f"{self.path}: few_shot.k: {strategy} with k={fs.k} needs {count} {what} train "
                        f"samples, the train split has {len(pools[pool])}"
                    )

    def examples(self, candidate: Candidate, suite: Suite, train_samples: Sequence[Sample]) -> list[Sample]:
        """Deterministic, category-stratified examples from ``train_samples`` (the train split)."""
        allowed = {s.id for s in train_samples}
        pools = {name: [s for s in pool if s.id in allowed] for name, pool in self.pools().items()}
        chosen: list[Sample] = []
        for pool, count in self._needs(candidate.few_shot, candidate.k).items():
            chosen.extend(_stratified_pick(pools[pool], count, f"{self.spec.few_shot.seed}:{pool}"))
        return chosen

    def candidates(self) -> list[Candidate]:
        """Every combination, in a stable order."""
        spec = self.spec
        temps: list[float | None] = list(spec.params.temperature) or [None]
        maxes: list[int | None] = list(spec.params.max_tokens) or [None]
        shots = [(s, 0 if s == "none" else spec.few_shot.k) for s in spec.few_shot.strategies]
        out: list[Candidate] = []
        for tone, cons, output, (shot, k), reasoning, temp, mx in itertools.product(
            range(len(spec.tone)),
            range(len(spec.constraints)),
            spec.output,
            shots,
            spec.reasoning.strategies,
            temps,
            maxes,
        ):
            out.append(
                Candidate(
                    tone,
                    cons,
                    output,
                    shot,
                    k,
                    reasoning,
                    temp,
                    mx,
                    tag_temperature=len(temps) > 1,
                    tag_max_tokens=len(maxes) > 1,
                )
            )
        return out


def _stratified_pick(pool: Sequence[Sample], count: int, seed: str) -> list[Sample]:
    """``count`` samples spread over categories (round-robin over seeded-shuffled groups)."""
    rng = random.Random(seed)
    groups: dict[str, list[Sample]] = defaultdict(list)
    for sample in sorted(pool, key=lambda s: s.id):
        groups[sample.category or ""].append(sample)
    names = sorted(groups)
    rng.shuffle(names)
    for name in names:
        rng.shuffle(groups[name])
    picked: list[Sample] = []
    while len(picked) < count and any(groups.values()):
        for name in names:
            if groups[name] and len(picked) < count:
                picked.append(groups[name].pop(0))
    return picked


def space_path_for(suite: Suite, override: Path | None) -> Path:
    """The space file: ``--search-space`` or the suite's ``search_space`` key (relative to the suite)."""
    if override is not None:
        return override
    if not suite.spec.search_space:
        raise ConfigError(
            f"{suite.path}: search_space: --optimize needs a search space; add `search_space: NAME.space.yaml` "
            "to the suite or pass --search-space PATH"
        )
    return (suite.path.parent / suite.spec.search_space).resolve()


def load_search_space(path: Path, suite: Suite, dataset: Dataset) -> SearchSpace:
    """Load and validate a space file against its suite; every problem names the file and key."""
    if not path.is_file():
        raise ConfigError(f"search space not found: {path}")
    data = load_yaml_file(path)
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: a search space must be a mapping, got {type(data).__name__}")
    spec = validate_file_model(SearchSpaceSpec, data, path)
    base_path = (path.parent / spec.base_template).resolve()
    if not base_path.is_file():
        raise ConfigError(f"{path}: base_template: prompt template not found: {base_path}")
    try:
        base = load_template(base_path)
    except ConfigError as exc:
        raise ConfigError(f"{path}: base_template: {exc}") from exc
    return SearchSpace(spec, path, base, suite, dataset)
