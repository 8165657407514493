"""Search-space files: the prompt dimensions an --optimize run combines into candidate templates.

A candidate is one value of each dimension (tone, constraints wording, output structure,
few-shot strategy, reasoning strategy, LLM parameters). It renders as an ordinary prompt
template: the shared system text (tone, task, rules, output and reasoning instructions, fixed
few-shot examples) first, the base template's per-sample user text last, so llama-server's
prompt cache reuses the prefix. Retrieved examples (the ``retrieved`` strategy) differ per
sample, so they come as user/assistant turns between the two.

The user's own words survive: the task's field descriptions come from the suite's
``description:`` or else from the base template's line for that field; without a ``tone`` or
``constraints`` dimension, candidates keep the base template's first paragraph and its rules.

Reasoning and constrained decoding: a JSON schema constrains the very first token, so a
model cannot think before answering under it. Reasoning candidates therefore never use
``json_schema`` decoding: ``json_schema`` + reasoning becomes free text that ends with the
JSON object (the parser reads the last one), ``json`` + reasoning asks for a JSON object
whose first key is ``reasoning``, and ``lines`` + reasoning ends with the ``field: value``
lines. Reasoning candidates get ``reasoning.max_tokens`` as their token budget.

Few-shot examples come only from the suite's train split; no validation sample can appear in
any prompt, and a sample is never shown its own answer.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import os
import random
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator, model_validator

from promptsweep.core.data.dataset import Dataset, Sample, samples_sha256
from promptsweep.core.data.suite import Suite
from promptsweep.core.io.errors import ConfigError
from promptsweep.core.io.load import load_yaml_file, validate_file_model
from promptsweep.core.io.paths import contained
from promptsweep.core.neighbours.nearest import Pool, compared_inputs, examples_from_samples
from promptsweep.core.neighbours.retrieval import Retrieval, format_answer
from promptsweep.core.templates.template import (
    ChoicesSpec,
    PromptTemplate,
    literal,
    load_template,
    template_from_mapping,
)
from promptsweep.optimize.strategies import Dimension, SpaceShape

OutputStructure = Literal["json_schema", "json", "lines"]
FewShotStrategy = Literal["none", "positive_only", "mixed", "hard_negatives", "retrieved"]
MustBeat = Literal["baseline", "lookup"]
ReasoningStrategy = Literal["direct", "cot", "structured_cot"]
Layout = Literal["shared_first", "instructions_first"]
"""Where a candidate's own words go: ``instructions_first`` (tone, rules, output and fixed examples in
the system message, before the retrieved examples and the sample) or ``shared_first`` (the task
every candidate shares in the system message, then the retrieved examples, most similar last, and
the sample; the candidate's own words after the sample), which lets llama-server reuse everything
before them across the candidates with as many examples asked about one sample. (Nearest first
would share examples across k too, but cost 0.18-0.21 on retrieved candidates: RESULTS.md.)"""
StrategyName = Literal["screen", "halving", "grid", "random"]

MAX_LISTED_VALUES = 40
PROMPT_ONLY = "prompt-only"
GATED = "gated lookup"
NEIGHBOUR_CHOICE = "neighbour choice"
KNN = "kNN vote"
FAMILIES = (PROMPT_ONLY, GATED, NEIGHBOUR_CHOICE, KNN)
KNN_VOTES = (1, 3, 5)
"""The kNN votes that compete: how many nearest train samples vote on each field."""
"""Candidate families: prompts that always call, gated lookups (copy near-duplicates' answers, ask
about the rest), neighbour choice (label enums from the nearest train samples) and the kNN vote
(no call at all)."""
_BUDGET = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h)?\s*$")


def _or_off(kind: str) -> WithJsonSchema:
    """A value or "off" in the JSON Schema: editors read YAML 1.2 (`off` is a string), the loader
    YAML 1.1 (`off` is false); both spellings validate, as the loader accepts both."""
    return WithJsonSchema({"anyOf": [{"type": kind}, {"const": "off"}, {"const": False}, {"type": "null"}]})


def _off_to_none(value: Any) -> Any:
    """YAML 1.1 reads a bare ``off`` as false; ``off``, false and null all mean "not used"."""
    if not isinstance(value, list):
        return value
    return [
        None if v is False or v is None or (isinstance(v, str) and v.lower() == "off") else v for v in value
    ]


def _non_empty(value: list[Any]) -> list[Any]:
    if not value:
        raise ValueError("empty dimension: give at least one value")
    return value


@dataclass(frozen=True)
class Budget:
    """How much a search may spend: a number of calls, or wall-clock seconds."""

    calls: int | None = None
    seconds: float | None = None

    def __str__(self) -> str:
        if self.calls is not None:
            return f"{self.calls} calls"
        assert self.seconds is not None
        return f"{self.seconds / 60:g} min" if self.seconds >= 60 else f"{self.seconds:g} s"


def parse_budget(text: str) -> Budget:
    """``600`` (calls), ``90s``, ``30m``, ``1.5h``; ``ValueError`` says what is accepted."""
    match = _BUDGET.match(str(text))
    if not match:
        raise ValueError(f"budget must be a number of calls (600) or a time (90s, 30m, 1h), got {text!r}")
    value, unit = float(match.group(1)), match.group(2)
    if value <= 0:
        raise ValueError(f"budget must be positive, got {text!r}")
    if unit is None:
        if value != int(value):
            raise ValueError(f"a budget in calls is a whole number, got {text!r}")
        return Budget(calls=int(value))
    factor = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}[unit]
    return Budget(seconds=value * factor)


class FewShotSpec(BaseModel):
    """Few-shot strategies and how examples are drawn from the train split."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    strategies: list[FewShotStrategy] = Field(default_factory=lambda: list[FewShotStrategy](["none"]))
    k: int | list[int] = 2
    """Examples per prompt; a list makes k a dimension (e.g. ``[2, 4, 8]``)."""
    seed: int = 0
    benign: dict[str, str] = Field(default_factory=dict)
    """Expected field values that mark a sample with nothing to report (your suite's words,
    e.g. ``{status: ok}``); needed by ``mixed`` and ``hard_negatives``."""
    suspicious: list[str] = Field(default_factory=list)
    """Words that make a benign sample's input look like a problem; needed by ``hard_negatives``."""
    retrieve_by: list[str] | None = None
    """Template inputs compared (BM25) to pick ``retrieved`` examples. Default: every input the
    base template declares."""
    copy_if_similar: list[Annotated[float | None, _or_off("number")]] = Field(
        default_factory=lambda: list[float | None]([None])
    )
    """Gated-lookup thresholds to try, ``off`` for none, e.g. ``[off, 0.5, 0.3]``: a candidate
    with one answers inputs whose nearest train sample is at least that similar (token overlap)
    with that sample's answer and no call, and asks the model about the rest."""

    @field_validator("copy_if_similar", mode="before")
    @classmethod
    def _off_is_none(cls, value: Any) -> Any:
        # YAML 1.1 reads a bare `off` as false; both spellings mean "no gate".
        if not isinstance(value, list):
            return value
        return [
            None if v is False or v is None or (isinstance(v, str) and v.lower() == "off") else v
            for v in value
        ]

    @field_validator("copy_if_similar")
    @classmethod
    def _thresholds_in_range(cls, value: list[float | None]) -> list[float | None]:
        _non_empty(value)
        bad = [v for v in value if v is not None and not 0.0 <= v <= 1.0]
        if bad:
            raise ValueError(
                f"copy_if_similar thresholds are token overlaps in [0, 1] (or off), got {bad[0]}"
            )
        return list(dict.fromkeys(value))

    @field_validator("strategies")
    @classmethod
    def _strategies_not_empty(cls, value: list[Any]) -> list[Any]:
        return _non_empty(value)

    @field_validator("k")
    @classmethod
    def _k_positive(cls, value: int | list[int]) -> int | list[int]:
        values = value if isinstance(value, list) else [value]
        if not values or any(k < 1 for k in values):
            raise ValueError(f"k must be at least 1 (or a non-empty list of such), got {value}")
        return value

    @property
    def ks(self) -> list[int]:
        return sorted(set(self.k)) if isinstance(self.k, list) else [self.k]

    @model_validator(mode="after")
    def _what_each_strategy_needs(self) -> FewShotSpec:
        needs = {"mixed", "hard_negatives"} & set(self.strategies)
        if needs and not self.benign:
            raise ValueError(
                f"strategies {', '.join(sorted(needs))} need few_shot.benign: the expected value(s) of a "
                "sample with nothing to report, e.g. benign: {<field>: <value>}"
            )
        if "hard_negatives" in self.strategies and not self.suspicious:
            raise ValueError(
                "strategy hard_negatives needs few_shot.suspicious: words that make a benign input look "
                "like a problem, e.g. suspicious: [error, failed]"
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

    strategy: StrategyName = "screen"
    eta: float = Field(default=3.0, gt=1)
    min_samples: int = Field(default=4, ge=1)
    budget: int | None = Field(default=None, ge=1)
    """Candidates considered by ``random`` (and optionally ``halving``): a seeded subset."""
    limit: str | None = "30m"
    """What the whole search may spend: calls (``600``) or time (``30m``); ``--optimize-budget`` wins."""
    seed: int = 0
    must_beat: list[MustBeat] = Field(default_factory=lambda: list[MustBeat](["baseline"]))
    """What the winner must beat on the test split (paired 95% interval above 0) to be written:
    the suite's own template (``baseline``) and, if listed, the no-call ``lookup`` floor (the
    labels of the most similar train sample). Either way both comparisons are reported."""

    @field_validator("must_beat")
    @classmethod
    def _must_beat_has_baseline(cls, value: list[MustBeat]) -> list[MustBeat]:
        if "baseline" not in value:
            raise ValueError(
                "must_beat must include baseline: a winner is never written below the prompt it replaces"
            )
        return list(dict.fromkeys(value))

    @field_validator("limit")
    @classmethod
    def _limit_parses(cls, value: str | None) -> str | None:
        if value is not None:
            parse_budget(value)
        return value


class SearchSpaceSpec(BaseModel):
    """The YAML shape of a ``*.space.yaml`` file."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    base_template: str
    description: str = ""
    tone: list[str] | None = None
    """Opening lines to try; ``base`` is the base template's first paragraph as it reads when the
    search starts (so an edited template is searched from its edit). Default: ``[base]``."""
    constraints: list[str] | None = None
    """Rule wordings to try; ``base`` is the base template's own rules (its text after the fields)
    as they read when the search starts. Default: ``[base]``."""
    output: list[OutputStructure] = Field(default_factory=lambda: list[OutputStructure](["json_schema"]))
    few_shot: FewShotSpec = Field(default_factory=FewShotSpec)
    reasoning: ReasoningSpec = Field(default_factory=ReasoningSpec)
    params: ParamsSpec = Field(default_factory=ParamsSpec)
    layout: list[Layout] = Field(default_factory=lambda: list[Layout](["instructions_first"]))
    """Where the candidate's own words go (a dimension when two are listed); see ``Layout``."""
    choices: list[Annotated[int | None, _or_off("integer")]] = Field(
        default_factory=lambda: list[int | None]([None])
    )
    """Choose among the neighbours, e.g. ``[off, 4]``: a ``json_schema`` candidate with k
    restricts each label field's enum, per sample, to the labels of its k nearest train samples."""
    search: SearchDefaults = Field(default_factory=SearchDefaults)

    @field_validator("choices", mode="before")
    @classmethod
    def _choices_off_is_none(cls, value: Any) -> Any:
        return _off_to_none(value)

    @field_validator("choices")
    @classmethod
    def _choices_positive(cls, value: list[int | None]) -> list[int | None]:
        _non_empty(value)
        bad = [v for v in value if v is not None and v < 1]
        if bad:
            raise ValueError(f"choices are numbers of neighbours (1 or more) or off, got {bad[0]}")
        return list(dict.fromkeys(value))

    @field_validator("tone", "constraints", "output", "layout")
    @classmethod
    def _dimension_not_empty(cls, value: list[Any] | None) -> list[Any] | None:
        return None if value is None else _non_empty(value)


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
    copy: float | None = None
    """Gated-lookup threshold (``few_shot.copy_if_similar``); ``None``: every sample is asked."""
    choices: int | None = None
    """Neighbours whose labels make each sample's enums (``choices``); ``None``: every label."""
    layout: Layout = "instructions_first"
    tag_layout: bool = False
    knn: int | None = None
    """A kNN vote: each field's most frequent value among this many nearest train samples, with
    no call at all (a gate at 0 voting ``knn`` neighbours); it competes on validation like any
    prompt and is written, when it wins, as a template that copies."""

    @classmethod
    def vote(cls, k: int) -> Candidate:
        """The kNN vote of ``k`` neighbours (the base template's words, never sent while a
        neighbour exists)."""
        return cls(0, 0, "json_schema", "none", 0, "direct", copy=0.0, knn=k)

    @property
    def choice(self) -> str:
        """The neighbour-choice dimension's label: ``all`` or ``choose4``."""
        return "all" if self.choices is None else f"choose{self.choices}"

    @property
    def family(self) -> str:
        """The candidate's family: a gate makes it a gated lookup whatever else it does."""
        if self.knn is not None:
            return KNN
        if self.copy is not None:
            return GATED
        return NEIGHBOUR_CHOICE if self.choices is not None else PROMPT_ONLY

    @property
    def uses_pool(self) -> bool:
        """Whether the candidate needs the train pool: retrieved examples, a gate or neighbour choice."""
        return self.few_shot == "retrieved" or self.copy is not None or self.choices is not None

    @property
    def gate(self) -> str:
        """The copy dimension's label: ``off`` or ``copy0.5``."""
        return "off" if self.copy is None else f"copy{self.copy:g}"

    @property
    def shots(self) -> str:
        return "none" if self.few_shot == "none" else f"{self.few_shot}{self.k}"

    @property
    def id(self) -> str:
        if self.knn is not None:
            return f"knn{self.knn}"
        parts = [f"t{self.tone}", f"c{self.constraints}", self.output, self.shots, self.reasoning]
        if self.tag_temperature:
            parts.append(f"T{self.temperature:g}")
        if self.tag_max_tokens:
            parts.append(f"m{self.max_tokens}")
        if self.choices is not None:
            parts.append(self.choice)
        if self.copy is not None:
            parts.append(self.gate)
        if self.tag_layout:
            parts.append("shared" if self.layout == "shared_first" else "instr")
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
        if self.knn is not None:
            return {"knn_vote": self.knn, "retrieve_by": list(space.retrieve_by)}
        return {
            "tone": space.tones[self.tone],
            "constraints": space.constraints[self.constraints],
            "output": self.output,
            "few_shot": {
                "strategy": self.few_shot,
                "k": 0 if self.few_shot == "none" else self.k,
                **({"copy_if_similar": self.copy} if self.copy is not None else {}),
            },
            "reasoning": self.reasoning,
            "layout": self.layout,
            **({"choices": self.choices} if self.choices is not None else {}),
            **self.params(space),
        }

    @property
    def answer_format(self) -> Literal["json", "lines"]:
        return "lines" if self.output == "lines" else "json"

    @property
    def template_format(self) -> str:
        if self.reasoning != "direct":
            return "json" if self.output == "json" else "text"
        return {"json_schema": "json_schema", "json": "json", "lines": "text"}[self.output]


@dataclass(frozen=True)
class BaseWords:
    """What the base template's system text says, split into the parts a candidate reuses."""

    opening: str
    descriptions: dict[str, str]
    rules: str


def base_words(system: str, fields: Sequence[str], aliases: Mapping[str, Sequence[str]]) -> BaseWords:
    """The first paragraph, each field's description (a ``- field: text`` line) and the remaining
    paragraphs that are neither the opening nor the field list (the rules)."""
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", system.strip()) if p.strip()]
    descriptions: dict[str, str] = {}
    field_paragraphs: set[int] = set()
    for index, paragraph in enumerate(paragraphs):
        for line in paragraph.splitlines():
            for name in fields:
                spellings = [name, name.replace("_", " "), *aliases.get(name, ())]
                alternatives = "|".join(re.escape(s) for s in spellings)
                pattern = rf"^\s*[-*]?\s*(?:{alternatives})\s*[:=-]\s*(.+)$"
                match = re.match(pattern, line, flags=re.IGNORECASE)
                if match and name not in descriptions:
                    descriptions[name] = match.group(1).strip()
                    field_paragraphs.add(index)
    opening = paragraphs[0] if paragraphs and 0 not in field_paragraphs else ""
    rest = [p for i, p in enumerate(paragraphs) if i != 0 and i not in field_paragraphs]
    return BaseWords(opening, descriptions, "\n\n".join(rest))


def _task_text(suite: Suite, allowed: Mapping[str, list[str]], described: Mapping[str, str]) -> str:
    lines = ["For the input you are given, determine these fields:"]
    for name, spec in suite.fields.items():
        detail = spec.description or described.get(name) or ""
        values = allowed.get(name)
        listed = "one of:" in detail.lower()  # the base template's own description may list them already
        if values and len(values) <= MAX_LISTED_VALUES and not listed:
            detail = (detail + "; " if detail else "") + "one of: " + ", ".join(values)
        elif spec.label and not detail:
            detail = "a snake_case label"
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


class SearchSpace:
    """A validated space bound to its suite: the base template, the label sets and the train split."""

    def __init__(
        self,
        spec: SearchSpaceSpec,
        path: Path,
        base: PromptTemplate,
        suite: Suite,
        dataset: Dataset,
    ):
        self.spec = spec
        self.path = path
        self.base = base
        """The template candidates are built from (``base_template``)."""
        self.suite = suite
        self.dataset = dataset
        split = suite.split(dataset)
        seen = set(split.train) | set(split.validation)
        self.visible = dataclasses.replace(dataset, samples=tuple(s for s in dataset.samples if s.id in seen))
        """The samples a search may read: train and validation. Label lists (``values: dataset``)
        come from here, so no test label reaches a candidate's text, schema or choices."""
        self.allowed_values = suite.allowed_values(self.visible)
        aliases = {name: f.aliases for name, f in suite.fields.items()}
        self.words = base_words(base.spec.system, list(suite.fields), aliases)
        self.tones = list(
            dict.fromkeys(self.words.opening if t == "base" else t for t in spec.tone or ["base"])
        )
        self.constraints = list(
            dict.fromkeys(self.words.rules if c == "base" else c for c in spec.constraints or ["base"])
        )
        by_id = dataset.by_id()
        self.train: tuple[Sample, ...] = tuple(by_id[i] for i in split.train)
        self.validation_ids = frozenset(split.validation)
        self._base_text = {
            s.id: base.render_user(suite.template_values(s), sample_id=s.id) for s in self.train
        }
        self.grouped_by = split.grouped_by
        self.retrieve_by = compared_inputs(base, suite.spec.inputs, spec.few_shot.retrieve_by)
        """What every neighbour of the search is compared on: examples shown, gates, choices, the
        kNN vote and the lookup floor every candidate is read against."""
        self.notes: list[str] = list(split.notes)
        """What binding the space to this dataset changed (dropped strategies, split fallbacks)."""
        self.shots: list[tuple[FewShotStrategy, int]] = []
        self.copies: list[float | None] = list(spec.few_shot.copy_if_similar)
        self.choices: list[int | None] = list(spec.choices)
        self._check(suite)

    @functools.cached_property
    def pool(self) -> Pool | None:
        """The train split as the one pool every neighbour of the search comes from (compared on
        :attr:`retrieve_by`, its split groups left out); ``None`` without train samples."""
        if not self.train:
            return None
        examples = examples_from_samples(
            self.train, self.suite.spec.inputs, list(self.suite.fields), group_by=self.grouped_by
        )
        return Pool(examples, self.retrieve_by, group_by=self.grouped_by)

    @functools.cached_property
    def baseline(self) -> PromptTemplate:
        """The prompt a winner must beat: the one a plain run of the suite scores today (the suite's
        ``template``, or ``--prompt-template``), which may be an earlier winner, not the seed.
        Loaded on first use: a plain run checks its space at collection and never needs it."""
        return self.suite.load_template()

    # -- few-shot pools -------------------------------------------------------------------

    def is_benign(self, sample: Sample) -> bool:
        benign = self.spec.few_shot.benign
        return bool(benign) and all(sample.expected.get(k) == v for k, v in benign.items())

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

    def _check(self, suite: Suite) -> None:
        """Keep the few-shot strategies the train split can support. One the data cannot support
        (k larger than the pool, no benign sample for ``mixed``) is dropped with a note the plan
        prints, so the suite's own space runs on another dataset of the same schema; only a
        space left with nothing to try is an error."""
        fs = self.spec.few_shot
        declared = set(self.base.declared_inputs)
        unknown = [name for name in self.retrieve_by if declared and name not in declared]
        if "retrieved" in fs.strategies and unknown:
            raise ConfigError(
                f"{self.path}: few_shot.retrieve_by: {', '.join(unknown)} is not an input of {self.base.label}; "
                f"its inputs are {', '.join(sorted(declared))}"
            )
        pools = self.pools()
        what = {"issues": "non-benign", "benign": "benign", "hard": "suspicious-looking benign"}
        kept: list[tuple[FewShotStrategy, int]] = []
        dropped: list[str] = []
        for strategy in fs.strategies:
            for k in [0] if strategy == "none" else fs.ks:
                # A sample is never its own example, so retrieval needs one more than k.
                why = ""
                if strategy != "none" and k > len(self.train) - (strategy == "retrieved"):
                    why = f"k={k} is larger than the train split ({len(self.train)} samples)"
                for pool, count in self._needs(strategy, k).items():
                    if not why and count > len(pools[pool]):
                        why = f"needs {count} {what[pool]} train samples, the train split has {len(pools[pool])}"
                if why:
                    dropped.append(f"few_shot {strategy} with k={k} dropped: {why}")
                elif (strategy, k) not in kept:
                    kept.append((strategy, k))
        if not kept:
            raise ConfigError(
                f"{self.path}: few_shot: no strategy can run on the train split of {suite.path.name} "
                f"({len(self.train)} samples): "
                + "; ".join(dropped)
                + "; lower k or raise split.train in the suite"
            )
        self.shots = kept
        self.notes.extend(dropped)
        if len(self.train) < 2 and any(c is not None for c in self.copies):
            # A sample is never its own neighbour: a gate needs two train samples to copy from.
            self.notes.append(
                f"few_shot copy_if_similar dropped: the train split has {len(self.train)} sample(s) to copy from"
            )
            self.copies = [None]
        too_many = [c for c in self.choices if c is not None and c > len(self.train) - 1]
        if too_many:
            self.notes.append(
                f"choices {', '.join(map(str, too_many))} dropped: the train split has {len(self.train)} samples"
            )
            self.choices = [c for c in self.choices if c not in too_many] or [None]

    def examples(self, candidate: Candidate) -> list[Sample]:
        """Fixed examples: deterministic, category-stratified picks from the train split."""
        pools = self.pools()
        chosen: list[Sample] = []
        for pool, count in self._needs(candidate.few_shot, candidate.k).items():
            chosen.extend(_stratified_pick(pools[pool], count, f"{self.spec.few_shot.seed}:{pool}"))
        return chosen

    def retrieval(self, candidate: Candidate) -> Retrieval | None:
        """For ``retrieved`` and gated candidates: the train split as a BM25 pool over
        ``retrieve_by`` (a gated candidate without retrieved examples shows none: k = 0)."""
        if not candidate.uses_pool or self.pool is None:
            return None
        if candidate.knn is not None:
            return Retrieval(
                self.pool, 0, tuple(self.suite.fields), "json", copy_if_similar=0.0, vote=candidate.knn
            )
        return Retrieval(
            self.pool,
            candidate.k if candidate.few_shot == "retrieved" else 0,
            tuple(self.suite.fields),
            candidate.answer_format,
            copy_if_similar=candidate.copy,
            choices=None if candidate.choices is None else ChoicesSpec(neighbours=candidate.choices),
        )

    # -- candidates -----------------------------------------------------------------------

    def candidates(self) -> list[Candidate]:
        """Every combination, in a stable order."""
        spec = self.spec
        temps: list[float | None] = list(spec.params.temperature) or [None]
        maxes: list[int | None] = list(spec.params.max_tokens) or [None]
        shots = self.shots
        copies = self.copies
        out: list[Candidate] = []
        layouts = list(spec.layout)
        for tone, cons, output, (shot, k), reasoning, temp, mx, copy, choices, layout in itertools.product(
            range(len(self.tones)),
            range(len(self.constraints)),
            spec.output,
            shots,
            spec.reasoning.strategies,
            temps,
            maxes,
            copies,
            self.choices,
            layouts,
        ):
            candidate = Candidate(
                tone, cons, output, shot, k, reasoning, temp, mx,
                tag_temperature=len(temps) > 1, tag_max_tokens=len(maxes) > 1, copy=copy, choices=choices,
                layout=layout, tag_layout=len(layouts) > 1,
            )  # fmt: skip
            # Label enums exist only under constrained decoding: elsewhere neighbour choice is moot.
            if choices is None or candidate.template_format == "json_schema":
                out.append(candidate)
        return out

    def candidate(self, candidate_id: str) -> Candidate:
        """A candidate of the grid or a kNN vote, by its id."""
        for candidate in (*self.candidates(), *self.knn_candidates()):
            if candidate.id == candidate_id:
                return candidate
        raise KeyError(candidate_id)

    def knn_candidates(self) -> list[Candidate]:
        """The kNN votes that compete beside the grid (k of 1, 3 and 5 nearest train samples, as
        far as the train split has them): no call at all, so they are scored on every validation
        sample the race reached, outside the strategy's design."""
        if self.pool is None:
            return []
        return [Candidate.vote(k) for k in KNN_VOTES if k <= len(self.pool)]

    def shape(self) -> SpaceShape:
        """The space as a search strategy sees it: dimensions and each candidate's value indices."""
        candidates = self.candidates()
        axes: dict[str, list[str]] = {
            "tone": [f"t{i}" for i in range(len(self.tones))],
            "constraints": [f"c{i}" for i in range(len(self.constraints))],
            "output": list(dict.fromkeys(c.output for c in candidates)),
            "few_shot": list(dict.fromkeys(c.shots for c in candidates)),
            "reasoning": list(dict.fromkeys(c.reasoning for c in candidates)),
            "temperature": list(
                dict.fromkeys(f"T{c.temperature:g}" for c in candidates if c.temperature is not None)
            ),
            "max_tokens": list(
                dict.fromkeys(f"m{c.max_tokens}" for c in candidates if c.max_tokens is not None)
            ),
            "copy_if_similar": (
                list(dict.fromkeys(c.gate for c in candidates)) if len(self.copies) > 1 else []
            ),
            "choices": list(dict.fromkeys(c.choice for c in candidates)) if len(self.choices) > 1 else [],
            "layout": list(dict.fromkeys(c.layout for c in candidates)) if len(self.spec.layout) > 1 else [],
        }

        def values(c: Candidate) -> dict[str, str]:
            return {
                "tone": f"t{c.tone}",
                "constraints": f"c{c.constraints}",
                "output": c.output,
                "few_shot": c.shots,
                "reasoning": c.reasoning,
                "temperature": f"T{c.temperature:g}" if c.temperature is not None else "",
                "max_tokens": f"m{c.max_tokens}" if c.max_tokens is not None else "",
                "copy_if_similar": c.gate,
                "choices": c.choice,
                "layout": c.layout,
            }

        names = [name for name, labels in axes.items() if labels]
        dims = tuple(Dimension(name, tuple(axes[name])) for name in names)
        levels = {c.id: tuple(axes[n].index(values(c)[n]) for n in names) for c in candidates}
        return SpaceShape(dims, levels)

    def to_mapping(
        self, candidate: Candidate, *, pool_spec: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """The candidate as a prompt-template mapping; ``pool_spec`` (a winner file's pinned
        pool) is written for ``retrieved`` candidates."""
        base = self.base
        fields = list(self.suite.fields)
        fixed = self.examples(candidate)
        blocks = ["Examples:"]
        for sample in fixed:
            question = base.render_user(self.suite.template_values(sample), sample_id=sample.id)
            answer = format_answer(sample.expected, fields, candidate.answer_format)
            blocks.append(f"Input:\n{question}\nAnswer:\n{answer}")
        task = _task_text(self.suite, self.allowed_values, self.words.descriptions)
        own = [
            self.tones[candidate.tone].strip(),
            self.constraints[candidate.constraints].strip(),
            _output_text(candidate, fields),
            "\n\n".join(blocks) if fixed else "",
        ]
        if candidate.layout == "shared_first":
            # What every candidate shares first (the task; then the sample's examples and the
            # sample), the candidate's own words last: the server reuses the prefix.
            system, instructions = task, "\n\n".join(part for part in own if part)
        else:
            system = "\n\n".join(part for part in (own[0], task, *own[1:]) if part)
            instructions = ""
        model_defaults = dict(base.spec.model_defaults)
        model_defaults.update(candidate.params(self))
        mapping: dict[str, Any] = {
            "id": base.id,
            "version": candidate.id,
            "description": f"Candidate {candidate.id} of {self.path.name}, built on {base.label}.",
            "system": literal(system),
            "user": base.spec.user,
            **({"instructions": literal(instructions)} if instructions else {}),
            "model_defaults": model_defaults,
            "inputs": base.spec.inputs.model_dump(),
            # The label sets the text lists, frozen: scored on other data, text and schema still agree.
            "output": {
                "format": candidate.template_format,
                "values": {k: list(v) for k, v in self.allowed_values.items()},
            },
        }
        if candidate.uses_pool and pool_spec is not None:
            if candidate.choices is not None:
                mapping["output"]["choices"] = {"neighbours": candidate.choices}
            k = candidate.k if candidate.few_shot == "retrieved" else 0
            mapping["examples"] = {
                "retrieve": {"k": k, "by": list(self.retrieve_by)},
                "pool": dict(pool_spec),
                "answer_format": candidate.answer_format,
            }
            if candidate.copy is not None:
                mapping["examples"]["copy_if_similar"] = candidate.copy
            if candidate.knn is not None and candidate.knn > 1:
                mapping["examples"]["vote"] = candidate.knn
        return mapping

    def to_template(self, candidate: Candidate) -> PromptTemplate:
        """The candidate as an in-memory template (retrieved examples come from :meth:`retrieval`)."""
        return template_from_mapping(self.to_mapping(candidate))

    def pool_spec(self, relative_to: Path) -> dict[str, Any]:
        """The pinned pool a winner file records: dataset path relative to ``relative_to`` (the
        winner's folder), its sha256, and the split and keys that rebuild the train part."""
        suite = self.suite.spec
        dataset = self.dataset.path.resolve()
        try:
            where = Path(os.path.relpath(dataset, relative_to.resolve()))
        except ValueError:  # another drive on Windows: no relative path exists
            where = dataset
        spec: dict[str, Any] = {
            "dataset": where.as_posix(),
            "train_sha256": samples_sha256(self.train),
            "split": {"train": suite.split.train, "seed": suite.split.seed, "group_by": suite.split.group_by},
            "inputs": dict(suite.inputs),
            "answer": list(self.suite.fields),
        }
        for key in ("id", "id_field", "expected_key", "category"):
            value = getattr(suite, key)
            if value is not None:
                spec[key] = value
        return spec


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
    return contained(
        suite.path.parent / suite.spec.search_space,
        key="search_space",
        where=suite.path,
        value=suite.spec.search_space,
    )


def load_search_space(path: Path, suite: Suite, dataset: Dataset) -> SearchSpace:
    """Load and validate a space file against its suite; every problem names the file and key."""
    if not path.is_file():
        raise ConfigError(f"search space not found: {path}")
    data = load_yaml_file(path)
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: a search space must be a mapping, got {type(data).__name__}")
    spec = validate_file_model(SearchSpaceSpec, data, path)
    base_path = contained(
        path.parent / spec.base_template, key="base_template", where=path, value=spec.base_template
    )
    if not base_path.is_file():
        raise ConfigError(f"{path}: base_template: prompt template not found: {base_path}")
    try:
        base = load_template(base_path)
    except ConfigError as exc:
        raise ConfigError(f"{path}: base_template: {exc}") from exc
    return SearchSpace(spec, path, base, suite, dataset)
