"""Eval suites: the YAML file that ties a dataset, a template, scored fields and thresholds together."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from promptsweep.core.dataset import Dataset, Sample, Split, load_dataset, stratified_split
from promptsweep.core.errors import ConfigError, check_looks_like, format_validation_error, load_yaml_file
from promptsweep.core.metrics import MetricRegistry, UnknownMetricError
from promptsweep.core.templates import PromptTemplate, load_template

SUITE_SUFFIXES = (".suite.yaml", ".suite.yml")


def _unit_interval(value: float | None, name: str) -> float | None:
    if value is not None and not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be within [0, 1], got {value}")
    return value


class FieldSpec(BaseModel):
    """One scored output field."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: str = "exact"
    weight: float = 1.0
    label: bool = False
    """A label field is normalised (case, spaces → snake_case, synonyms) before scoring."""
    values: list[str] | Literal["dataset"] | None = None
    """Allowed values, sent as a JSON-schema ``enum``; ``dataset`` takes the labels seen in the data."""
    synonyms: dict[str, str] = Field(default_factory=dict)
    aliases: list[str] = Field(default_factory=list)
    """Other key spellings in free-text answers, e.g. ``action required`` for ``action_needed``."""
    description: str | None = None
    max_length: int | None = Field(default=None, gt=0)

    @field_validator("weight")
    @classmethod
    def _non_negative(cls, value: float) -> float:
        if value < 0:
            raise ValueError(f"weight must be >= 0, got {value}")
        return value


class Thresholds(BaseModel):
    """The gate: minimum overall and per-field scores, a per-sample minimum, errors allowed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    overall: float | None = None
    fields: dict[str, float] = Field(default_factory=dict)
    sample: float | None = None
    max_errors: int = Field(default=0, ge=0)

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
    """How samples divide into train (few-shot source) and validation, and which part a run scores."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    train: float | int = 0.5
    seed: int = 13
    evaluate: Literal["all", "train", "validation"] = "all"
    group_by: str | None = None
    """A record key whose samples stay on one side (e.g. ``signature_hash``: near-duplicates)."""


class SuiteSpec(BaseModel):
    """The YAML shape of a ``*.suite.yaml`` file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    dataset: str
    template: str
    fields: dict[str, FieldSpec]
    inputs: dict[str, str] = Field(default_factory=dict)
    """Template variable → sample key (dotted for nested records)."""
    id: str | None = None
    """``str.format`` pattern over the sample for readable ids, e.g. ``{root_cause}-{signature_hash}``."""
    id_field: str | None = None
    expected_key: str | None = None
    category: str | None = None
    thresholds: Thresholds = Field(default_factory=Thresholds)
    split: SplitSpec = Field(default_factory=SplitSpec)
    llm: dict[str, Any] = Field(default_factory=dict)
    search_space: str | None = None

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

    def load_dataset(self) -> Dataset:
        return load_dataset(
            self.dataset_path,
            fields=list(self.spec.fields),
            expected_key=self.spec.expected_key,
            id_field=self.spec.id_field,
            id_format=self.spec.id,
            category_field=self.spec.category,
        )

    def load_template(self) -> PromptTemplate:
        return load_template(self.template_path)

    def split(self, dataset: Dataset) -> Split:
        spec = self.spec.split
        return stratified_split(dataset.samples, train=spec.train, seed=spec.seed, group_by=spec.group_by)

    def samples_to_evaluate(self, dataset: Dataset) -> list[Sample]:
        """The samples a plain run scores: all of them, or one side of the split."""
        which = self.spec.split.evaluate
        if which == "all":
            return list(dataset.samples)
        split = self.split(dataset)
        keep = set(split.train if which == "train" else split.validation)
        return [s for s in dataset.samples if s.id in keep]

    def template_values(self, sample: Sample) -> dict[str, Any]:
        """Template variables for one sample: mapped inputs, else same-named sample keys."""
        return template_values(sample.data, self.spec.inputs)

    def check_metrics(self, registry: MetricRegistry) -> None:
        for name, spec in self.spec.fields.items():
            try:
                registry.resolve(spec.metric, field=name)
            except UnknownMetricError as exc:
                raise ConfigError(f"{self.path}: fields.{name}.metric: {exc}") from exc

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

    def json_schema(self, dataset: Dataset | None) -> dict[str, Any]:
        """A JSON schema of the suite's fields (enums for label fields), for ``response_format``."""
        allowed = self.allowed_values(dataset)
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


def template_values(record: Mapping[str, Any], inputs: Mapping[str, str]) -> dict[str, Any]:
    """Template variables for one record: ``inputs`` maps variable → record key (dotted for
    nested records); every other string key of the record is available under its own name."""
    values: dict[str, Any] = {k: v for k, v in record.items() if isinstance(k, str)}
    for variable, key in inputs.items():
        values[variable] = _lookup(record, key)
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


def load_suite(path: Path) -> Suite:
    """Load and validate a suite file; paths inside it are relative to it."""
    data = load_yaml_file(path)
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: a suite must be a mapping, got {type(data).__name__}")
    check_looks_like(path, data, SuiteSpec, "suite")
    try:
        spec = SuiteSpec.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(str(path), exc)) from exc
    base = path.parent
    return Suite(
        spec=spec,
        path=path,
        dataset_path=(base / spec.dataset).resolve(),
        template_path=(base / spec.template).resolve(),
    )
