"""Eval suites: the YAML file that ties a dataset, a template, scored fields and thresholds together."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from promptsweep.core.answers.judge import JUDGE_METRIC, JudgeSpec
from promptsweep.core.answers.metrics import MetricRegistry, UnknownMetricError
from promptsweep.core.answers.parsing import normalize_label
from promptsweep.core.data.dataset import (
    Dataset,
    RawRecord,
    Sample,
    Split,
    expected_values,
    load_dataset,
    read_records,
    stratified_split,
)
from promptsweep.core.io.errors import ConfigError, did_you_mean, unknown_name_hint
from promptsweep.core.io.load import key_where, load_model_file, missing_file_message
from promptsweep.core.io.paths import contained
from promptsweep.core.templates.template import PromptTemplate, load_template

SUITE_SUFFIXES = (".suite.yaml", ".suite.yml")


def _unit_interval(value: float | None, name: str) -> float | None:
    if value is not None and not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be within [0, 1], got {value}")
    return value


class FieldSpec(BaseModel):
    """One scored output field."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    metric: str = "exact"
    """How the answer is compared with the expected value: exact, jaccard, rouge_l, token_f1,
    judge (a model grades it, see `judge`), a registered name, or `module:function`."""
    judge: JudgeSpec | None = None
    """With `metric: judge`: the rubric, scale and server a model grades the field with."""
    weight: float = 1.0
    """Share of the overall score (weights are normalised to sum to 1); 0 reports without scoring."""
    label: bool = False
    """A label field is normalised (case, spaces → snake_case, synonyms) before scoring."""
    values: list[str] | Literal["dataset"] | None = None
    """Allowed values, sent as a JSON-schema `enum`; `dataset` takes the labels seen in the data."""
    unlisted_values: Literal["error", "warn"] = "error"
    """A label in the data outside `values`: an error (default), or `warn` to score it anyway."""
    synonyms: dict[str, str] = Field(default_factory=dict)
    """Answer spellings that count as a label, e.g. `{warning: warn}` (label fields)."""
    aliases: list[str] = Field(default_factory=list)
    """Other key spellings in free-text answers, e.g. `action required` for `action_needed`."""
    description: str | None = None
    """What the field means, sent to the model as the JSON schema's `description`."""
    max_length: int | None = Field(default=None, gt=0)
    """Longest answer allowed under constrained decoding (JSON schema `maxLength`)."""

    @field_validator("weight")
    @classmethod
    def _non_negative(cls, value: float) -> float:
        if value < 0:
            raise ValueError(f"weight must be >= 0, got {value}")
        return value

    @model_validator(mode="after")
    def _judge_needs_rubric(self) -> FieldSpec:
        judged = self.metric.strip().casefold() == JUDGE_METRIC
        if judged and self.judge is None:
            raise ValueError('metric: judge needs a judge: {rubric: "..."} next to it')
        if self.judge is not None and not judged:
            raise ValueError(
                f"judge: is only read with metric: judge (this field's metric is {self.metric!r})"
            )
        return self

    @property
    def judged(self) -> bool:
        return self.judge is not None

    @property
    def scoring_metric(self) -> str:
        """The pure metric scored for this field: its own, or a judged field's reference metric."""
        return self.judge.reference_metric if self.judge is not None else self.metric


class Thresholds(BaseModel):
    """The gate: minimum overall and per-field scores, a per-sample minimum, errors allowed,
    and the cost: tokens per sample and p95 latency."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    overall: float | None = None
    """Minimum overall weighted score in [0, 1]; `--min-score` overrides it."""
    fields: dict[str, float] = Field(default_factory=dict)
    """Minimum score per field, e.g. `{category: 0.6}`."""
    sample: float | None = None
    """Minimum weighted score of every single sample: a sample below it fails its test item."""
    max_errors: int = Field(default=0, ge=0)
    """Samples allowed to error (timeouts, server errors) before the gate fails."""
    max_tokens_per_sample: int | None = Field(default=None, ge=1)
    """Most prompt + completion tokens per answer, on average, before the gate fails (a cost gate)."""
    max_latency_p95_ms: float | None = Field(default=None, gt=0)
    """Most p95 latency of the answers the server gave in this run, in milliseconds (cached answers
    are not timed)."""

    @field_validator("overall", "sample")
    @classmethod
    def _in_unit_interval(cls, value: float | None) -> float | None:
        return _unit_interval(value, "threshold")

    @field_validator("fields")
    @classmethod
    def _fields_in_unit_interval(cls, value: dict[str, float]) -> dict[str, float]:
        for name, threshold in value.items():
            _unit_interval(threshold, f"threshold for field {name!r}")
        return value


class SplitSpec(BaseModel):
    """How samples divide into train (few-shot and lookup source), validation (what `--optimize`
    chooses on) and test (what confirms its choice), and which part a plain run scores."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    train: float | int = 0.5
    """Share (a fraction) or number (an integer) of samples in the train part, stratified by category."""
    seed: int = 13
    """Seed of the split: the same seed gives the same parts."""
    test: float | int | None = None
    """Share or number of samples held out as the test part: the optimizer never chooses on them, it
    only confirms its winner there. Taken from what train leaves (train stays the same). Default:
    half of what train leaves."""
    evaluate: Literal["all", "train", "validation", "test", "held_out"] = "all"
    """Which samples a plain run scores (`--split-evaluate` overrides it); `--optimize` always searches on validation."""
    group_by: str | None = None
    """A record key whose samples stay on one side (e.g. `signature_hash`: near-duplicates)."""
    strict_groups: bool = False
    """Stop when `group_by` cannot divide the data (one value for every sample) instead of
    falling back to one sample per unit with a warning."""


class SuiteSpec(BaseModel):
    """The YAML shape of a ``*.suite.yaml`` file."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    name: str
    """Names the test items and the run folders: letters, digits, `_` or `-`."""
    description: str = ""
    """Free text for people reading the suite."""
    dataset: str
    """The golden samples (JSON, JSONL or YAML), relative to the suite file."""
    template: str
    """The prompt template YAML, relative to the suite file."""
    fields: dict[str, FieldSpec]
    """The output fields the model answers and how each is scored, by name."""
    inputs: dict[str, str] = Field(default_factory=dict)
    """Template variable → sample key (dotted for nested records); unmapped variables take the same-named key."""
    id: str | None = None
    """`str.format` pattern over the sample for readable ids, e.g. `{root_cause}-{signature_hash}`."""
    id_field: str | None = None
    """The sample key holding a unique id (default: `id` or a unique `*_id` key, else positions)."""
    expected_key: str | None = None
    """A sample key holding the expected field values as an object, when they are not top-level keys."""
    category: str | None = None
    """The field or sample key that groups samples for per-category scores and the stratified split."""
    thresholds: Thresholds = Field(default_factory=Thresholds)
    """The quality gate: a run below it fails with exit code 1."""
    split: SplitSpec = Field(default_factory=SplitSpec)
    """Train/validation split: few-shot examples come from train, --optimize scores on validation."""
    llm: dict[str, Any] = Field(default_factory=dict)
    """Request parameters (temperature, max_tokens, seed, …); the template's model_defaults win."""
    search_space: str | None = None
    """The --optimize search space YAML, relative to the suite file."""
    repeats: int = Field(default=1, ge=1, le=100)
    """Answers per sample: each repeat is its own item and request, so a run measures how
    often llama-server's answers change (``--llm-repeats`` overrides it)."""

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        if not value or not all(c.isalnum() or c in "_-" for c in value):
            raise ValueError("name must be letters, digits, '_' or '-' (it names run folders)")
        return value

    @field_validator("fields")
    @classmethod
    def _weights_sum_positive(cls, value: dict[str, FieldSpec]) -> dict[str, FieldSpec]:
        if not value:
            raise ValueError("at least one field must be scored")
        if sum(spec.weight for spec in value.values()) <= 0:
            raise ValueError("field weights sum to 0; give at least one field a positive weight")
        return value

    @model_validator(mode="after")
    def _references_exist(self) -> SuiteSpec:
        unknown = set(self.thresholds.fields) - set(self.fields)
        if unknown:
            raise ValueError(f"thresholds.fields names unknown field(s): {', '.join(sorted(unknown))}")
        if self.id and self.id_field:
            raise ValueError("give either id (a pattern) or id_field, not both")
        return self


@dataclass(frozen=True)
class Suite:
    """A validated suite with its paths resolved; the dataset and template load on demand."""

    spec: SuiteSpec
    path: Path
    dataset_path: Path
    template_path: Path

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def fields(self) -> dict[str, FieldSpec]:
        return self.spec.fields

    @property
    def weights(self) -> dict[str, float]:
        """Field weights normalised to sum to 1, so the overall score stays in [0, 1]."""
        total = sum(spec.weight for spec in self.spec.fields.values())
        return {name: spec.weight / total for name, spec in self.spec.fields.items()}

    @property
    def label_fields(self) -> list[str]:
        return [name for name, spec in self.spec.fields.items() if spec.label]

    def with_overrides(self, *, dataset: Path | None = None, template: Path | None = None) -> Suite:
        """The same suite on another dataset (``--golden``) or template (winner files)."""
        return Suite(
            spec=self.spec,
            path=self.path,
            dataset_path=dataset or self.dataset_path,
            template_path=template or self.template_path,
        )

    def require_file(self, key: str, path: Path, what: str) -> None:
        """A file the suite names must exist; the error names the suite, line and key, and the
        closest file names in that folder. A path given by a flag (``--golden``) is the flag's."""
        if path.is_file():
            return
        given = getattr(self.spec, key, None)
        if isinstance(given, str) and (self.path.parent / given).resolve() == path.resolve():
            where = key_where(self.path, (key,))
            raise ConfigError(missing_file_message(path, where=where, what=what, relative=given))
        raise ConfigError(missing_file_message(path, where=str(self.path), what=what))

    def check_files(self) -> None:
        """Every file the suite names exists: dataset, template and search space (if any)."""
        self.require_file("dataset", self.dataset_path, "dataset")
        self.require_file("template", self.template_path, "prompt template")
        if self.spec.search_space:
            space = (self.path.parent / self.spec.search_space).resolve()
            self.require_file("search_space", space, "search space")

    def load_dataset(self) -> Dataset:
        """The samples, checked against the suite: a key the suite names that no sample has
        is reported against the suite key (with a "did you mean"), a label outside a field's
        ``values`` against the data line."""
        self.require_file("dataset", self.dataset_path, "dataset")
        records = read_records(self.dataset_path)
        self._check_keys(records)
        dataset = load_dataset(
            self.dataset_path,
            fields=list(self.spec.fields),
            expected_key=self.spec.expected_key,
            id_field=self.spec.id_field,
            id_format=self.spec.id,
            category_field=self.spec.category,
            records=records,
        )
        warnings = self._check_values(dataset)
        return dataclasses.replace(dataset, warnings=tuple(warnings)) if warnings else dataset

    def _check_keys(self, records: list[RawRecord]) -> None:
        if not records:
            return
        data_keys = {k for r in records for k in r.data if isinstance(k, str)}
        expected_key = self.spec.expected_key
        if expected_key is None:
            label_keys = data_keys
        else:
            label_keys = {
                k
                for r in records
                if isinstance(r.data.get(expected_key), Mapping)
                for k in r.data[expected_key]
            }
        data = self.dataset_path
        for name in self.spec.fields:
            if name not in label_keys:
                inside = f"{expected_key}.{name}" if expected_key else name
                raise ConfigError(
                    f"{key_where(self.path, ('fields', name))}: no sample in {data} has a key {inside!r}"
                    + unknown_name_hint(name, label_keys, what="data keys")
                )
        for variable, key in self.spec.inputs.items():
            first = key.split(".", 1)[0]
            if first not in data_keys:
                raise ConfigError(
                    f"{key_where(self.path, ('inputs', variable))}: no sample in {data} has a key {first!r} "
                    f"(this maps the template's {variable!r} to the data's {key!r})"
                    + unknown_name_hint(first, data_keys, what="data keys")
                )
        for option in ("category", "id_field"):
            key = getattr(self.spec, option)
            if key is not None and key not in data_keys | label_keys:
                raise ConfigError(
                    f"{key_where(self.path, (option,))}: no sample in {data} has a key {key!r}"
                    + unknown_name_hint(key, data_keys | label_keys, what="data keys")
                )

    def normalise_value(self, field: str, value: str) -> str:
        """A value as scoring compares it: labels normalised (case, snake_case, synonyms)."""
        spec = self.spec.fields[field]
        return normalize_label(value, spec.synonyms) if spec.label else value.strip()

    def _check_values(self, dataset: Dataset) -> list[str]:
        """Labels outside ``values:`` can never be produced under the schema's enum and would
        score 0 as a category of their own: an error, or a warning when the field allows it."""
        warnings: list[str] = []
        for name, spec in self.spec.fields.items():
            if not isinstance(spec.values, list):
                continue
            allowed = {self.normalise_value(name, v) for v in spec.values}
            outside: dict[str, list[Sample]] = {}
            for sample in dataset.samples:
                value = sample.expected[name]
                if self.normalise_value(name, value) not in allowed:
                    outside.setdefault(value, []).append(sample)
            for value, samples in outside.items():
                more = f" (and {len(samples) - 1} more samples)" if len(samples) > 1 else ""
                message = (
                    f"{samples[0].where}: field {name!r} is {value!r}{more}, which is not in its values: "
                    f"{', '.join(spec.values)}"
                )
                if spec.unlisted_values == "warn":
                    warnings.append(
                        f"{message}; scored anyway (fields.{name}.unlisted_values: warn), "
                        "but constrained decoding can never produce it"
                    )
                    continue
                hint = did_you_mean(value, spec.values) or "."
                raise ConfigError(
                    f"{message}{hint} Fix the label, add it to fields.{name}.values in {self.path}, "
                    f"or set fields.{name}.unlisted_values: warn to score it anyway"
                )
        return warnings

    def check_template_inputs(self, template: PromptTemplate, dataset: Dataset) -> None:
        """Every required template input has a source in the data: mapped in ``inputs:`` (checked
        with the dataset) or a same-named key."""
        data_keys = {k for s in dataset.samples for k in s.data if isinstance(k, str)}
        for variable in template.spec.inputs.required:
            if variable in self.spec.inputs or variable in data_keys or not dataset.samples:
                continue
            raise ConfigError(
                f"{self.path}: template {template.id!r} needs input {variable!r}, but no sample in "
                f"{self.dataset_path} has a key {variable!r}; map one in the suite: "
                f"`inputs: {{{variable}: <data key>}}`"
                + unknown_name_hint(variable, data_keys, what="data keys")
            )

    def describe_missing_input(self, variable: str, sample: Sample) -> str:
        """Why a required input is empty for one sample: which data key, and the suite mapping."""
        keys = sorted(k for k in sample.data if isinstance(k, str))
        key = self.spec.inputs.get(variable)
        if key is not None:
            return (
                f"{sample.where}: required input {variable!r} has no value: the suite maps "
                f"inputs.{variable}: {key} ({self.path}), and this sample has no {key!r}"
                + unknown_name_hint(key.split(".", 1)[0], keys, what="keys in this sample")
            )
        return (
            f"{sample.where}: required input {variable!r} has no value: this sample has no key "
            f"{variable!r} and the suite's inputs: does not map it; add `inputs: {{{variable}: <data key>}}` "
            f"to {self.path}" + unknown_name_hint(variable, keys, what="keys in this sample")
        )

    def load_template(self) -> PromptTemplate:
        self.require_file("template", self.template_path, "prompt template")
        return load_template(self.template_path)

    def split(self, dataset: Dataset) -> Split:
        """The suite's split of ``dataset``. A suite that names no test part gets half of what train
        leaves as its test part, so no optimizer winner is ever scored where it was chosen."""
        spec = self.spec.split
        test = spec.test
        if test is None:
            rest = len(dataset.samples) - _train_count(spec.train, len(dataset.samples))
            test = rest // 2
        return stratified_split(
            dataset.samples,
            train=spec.train,
            seed=spec.seed,
            group_by=spec.group_by,
            test=test or 0,
            strict_groups=spec.strict_groups,
        )

    def samples_to_evaluate(self, dataset: Dataset, which: str | None = None) -> list[Sample]:
        """The samples a plain run scores: all of them, or one side of the split."""
        which = which or self.spec.split.evaluate
        if which == "all":
            return list(dataset.samples)
        split = self.split(dataset)
        sides = {
            "train": split.train,
            "validation": split.validation,
            "test": split.test,
            # Everything a prompt that retrieves examples from train never sees as an example.
            "held_out": split.validation + split.test,
        }
        keep = set(sides[which])
        return [s for s in dataset.samples if s.id in keep]

    def template_values(self, inputs: Sample | Mapping[str, Any]) -> dict[str, Any]:
        """Template variables for a sample or a record shaped like the dataset's: the suite's
        ``inputs:`` mapping first, else the record's same-named keys."""
        return template_values(inputs.data if isinstance(inputs, Sample) else inputs, self.spec.inputs)

    def sample_from(self, record: Mapping[str, Any], *, sample_id: str = "-") -> Sample:
        """A sample from one record shaped like the dataset's (labels included), e.g. to score
        a production answer against a known label."""
        where = f"<record {sample_id}>"
        expected = expected_values(
            record, list(self.spec.fields), expected_key=self.spec.expected_key, where=where
        )
        category = None
        if self.spec.category is not None:
            value = expected.get(self.spec.category, record.get(self.spec.category))
            category = None if value is None else str(value)
        return Sample(
            id=sample_id, index=0, data=dict(record), expected=expected, category=category, where=where
        )

    def check_metrics(self, registry: MetricRegistry) -> None:
        for name, spec in self.spec.fields.items():
            key = "judge.reference_metric" if spec.judged else "metric"
            try:
                registry.resolve(spec.scoring_metric, field=name)
            except UnknownMetricError as exc:
                raise ConfigError(f"{self.path}: fields.{name}.{key}: {exc}") from exc

    @property
    def judged_fields(self) -> dict[str, JudgeSpec]:
        """Fields a model grades (``metric: judge``), with their judge."""
        return {name: spec.judge for name, spec in self.spec.fields.items() if spec.judge is not None}

    def unanswerable(self, dataset: Dataset, frozen: Mapping[str, Sequence[str]]) -> dict[str, int]:
        """Per field, how many samples have a label outside a template's frozen set."""
        counts: dict[str, int] = {}
        for name, values in frozen.items():
            allowed = set(values)
            missing = sum(
                1 for s in dataset.samples if name in s.expected and s.expected[name] not in allowed
            )
            if missing:
                counts[name] = missing
        return counts

    def allowed_values(self, dataset: Dataset | None) -> dict[str, list[str]]:
        """Per-field enums for constrained decoding."""
        allowed: dict[str, list[str]] = {}
        for name, spec in self.spec.fields.items():
            if spec.values == "dataset":
                if dataset is None:
                    continue
                allowed[name] = sorted({s.expected[name] for s in dataset.samples})
            elif spec.values:
                allowed[name] = list(spec.values)
        return allowed

    def json_schema(
        self, dataset: Dataset | None, frozen: Mapping[str, Sequence[str]] | None = None
    ) -> dict[str, Any]:
        """A JSON schema of the suite's fields (enums for label fields), for ``response_format``.

        One rule for label sets: a field's declared ``values:``; ``values: dataset`` means the
        labels of the dataset being scored; ``frozen`` (a template's ``output.values``, written
        by ``--optimize``) wins over both, so a winner's schema lists what its text lists."""
        allowed = {**self.allowed_values(dataset), **{k: list(v) for k, v in (frozen or {}).items()}}
        properties: dict[str, Any] = {}
        for name, spec in self.spec.fields.items():
            prop: dict[str, Any] = {"type": "string"}
            if name in allowed:
                prop["enum"] = allowed[name]
            if spec.max_length:
                prop["maxLength"] = spec.max_length
            if spec.description:
                prop["description"] = spec.description
            properties[name] = prop
        return {
            "type": "object",
            "properties": properties,
            "required": list(self.spec.fields),
            "additionalProperties": False,
        }


def _train_count(train: float | int, n: int) -> int:
    return train if isinstance(train, int) else round(train * n)


def template_values(record: Mapping[str, Any], inputs: Mapping[str, str]) -> dict[str, Any]:
    """Template variables for one record: ``inputs`` maps variable → record key (dotted for
    nested records); every other string key of the record is available under its own name."""
    values: dict[str, Any] = {k: v for k, v in record.items() if isinstance(k, str)}
    for variable, key in inputs.items():
        found = _lookup(record, key)
        # A caller may give the template's own variable names (production inputs) instead.
        if found is not None or variable not in values:
            values[variable] = found
    return values


def _lookup(data: Mapping[str, Any], dotted: str) -> Any:
    current: Any = data
    for part in dotted.split("."):
        if not isinstance(current, Mapping) or part not in current:
            return None
        current = current[part]
    return current


def is_suite_file(path: Path) -> bool:
    return path.name.endswith(SUITE_SUFFIXES)


def load_suite(path: str | os.PathLike[str]) -> Suite:
    """Load and validate a suite file; paths inside it are relative to it."""
    path = Path(path)
    spec = load_model_file(path, SuiteSpec, "a suite")
    base = path.parent
    return Suite(
        spec=spec,
        path=path,
        dataset_path=contained(base / spec.dataset, key="dataset", where=path, value=spec.dataset),
        template_path=contained(base / spec.template, key="template", where=path, value=spec.template),
    )
