"""Experiments: named YAML configs (``evals/experiments/<id>.yaml``) that pin dataset, prompt,
model endpoint and LLM parameters for a run."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from promptsweep.core.io.errors import ConfigError, short_repr
from promptsweep.core.io.load import key_where, load_model_file, missing_file_message
from promptsweep.core.io.paths import contained
from promptsweep.core.io.redact import redact_url

EXPERIMENTS_DIR = Path("evals") / "experiments"
TEMPLATES_DIR = Path("prompt_templates")
EXPERIMENT_SCHEMA_VERSION = 1
EXPERIMENT_FILENAME = "experiment.json"
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class ModelSpec(BaseModel):
    """Which endpoint to call and which model name to send; both optional."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    endpoint: str | None = None
    """URL of an OpenAI-compatible server; else --llm-url, $PROMPTSWEEP_LLM_URL or the managed server."""
    name: str | None = None
    """Model name sent in requests (servers hosting several models need it)."""

    @field_validator("endpoint")
    @classmethod
    def _http(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"must start with http:// or https://, got {short_repr(redact_url(value))}")
        return value


class ExperimentSpec(BaseModel):
    """The YAML shape of an experiment. Relative paths resolve against the project rootdir."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    experiment_id: str
    """Names the run directory `<stamp>-<experiment_id>`: letters, digits, `.`, `_` or `-`."""
    description: str = ""
    """Free text for people reading the experiment."""
    dataset: str | None = None
    """Another dataset for every suite in the run (like --golden), relative to the project root."""
    model: ModelSpec = Field(default_factory=ModelSpec)
    """Which endpoint and model name to use."""
    llm_config: dict[str, Any] = Field(default_factory=dict)
    """Request parameters that override the template's and suite's."""
    prompt: str | None = None
    """A template id under prompt_templates/, or a template path (like --prompt-template)."""
    concurrency: int | None = Field(default=None, ge=1)
    """xdist workers (-n) and managed llama-server slots."""

    @field_validator("experiment_id")
    @classmethod
    def _safe_id(cls, value: str) -> str:
        if not _ID.match(value):
            raise ValueError(
                f"must be letters, digits, '.', '_' or '-' (it names the run directory), got {short_repr(value)}"
            )
        return value


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A validated experiment with its dataset and prompt resolved to files."""

    spec: ExperimentSpec
    path: Path
    dataset_path: Path | None
    template_path: Path | None

    @property
    def id(self) -> str:
        return self.spec.experiment_id

    def to_json(self) -> dict[str, Any]:
        """What ``experiment.json`` freezes in the run directory."""
        return {
            "schema_version": EXPERIMENT_SCHEMA_VERSION,
            "experiment_id": self.id,
            "path": str(self.path),
            "resolved": {
                "dataset": str(self.dataset_path) if self.dataset_path else None,
                "template": str(self.template_path) if self.template_path else None,
            },
            "config": self._config_json(),
        }

    def _config_json(self) -> dict[str, Any]:
        config = self.spec.model_dump(mode="json")
        if config["model"].get("endpoint"):
            config["model"]["endpoint"] = redact_url(
                config["model"]["endpoint"]
            )  # no credentials in artifacts
        return config


def find_experiment(name_or_path: str, rootdir: Path) -> Path:
    """``baseline-v1`` → ``<rootdir>/evals/experiments/baseline-v1.yaml``; a path is used as is."""
    given = Path(name_or_path).expanduser()
    candidates = [given, rootdir / given] if given.suffix in (".yaml", ".yml") or "/" in name_or_path else []
    candidates += [
        rootdir / EXPERIMENTS_DIR / f"{name_or_path}.yaml",
        rootdir / EXPERIMENTS_DIR / f"{name_or_path}.yml",
    ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    known = sorted(p.stem for p in (rootdir / EXPERIMENTS_DIR).glob("*.y*ml"))
    hint = f"; known: {', '.join(known)}" if known else f"; no experiments in {rootdir / EXPERIMENTS_DIR}"
    raise ConfigError(f"--experiment: no experiment {name_or_path!r}{hint}")


def _resolve_file(value: str, rootdir: Path, where: str, key: str) -> Path:
    path = Path(value).expanduser()
    path = path if path.is_absolute() else rootdir / path
    resolved = contained(path, key=key, where=where, value=value)
    if not resolved.is_file():
        message = missing_file_message(
            path, where=key_where(Path(where), (key,)), what="file", relative=value
        )
        raise ConfigError(f"{message}; relative paths start at {rootdir}")
    return resolved


def _resolve_prompt(value: str, rootdir: Path, where: str) -> Path:
    """A prompt is a template file path or a template id under ``prompt_templates/``."""
    if "/" in value or value.endswith((".yaml", ".yml")):
        return _resolve_file(value, rootdir, where, "prompt")
    for candidate in (rootdir / TEMPLATES_DIR / f"{value}.yaml", rootdir / TEMPLATES_DIR / f"{value}.yml"):
        if candidate.is_file():
            return contained(candidate, key="prompt", where=where)
    raise ConfigError(f"{where}: prompt: no template {value!r} in {rootdir / TEMPLATES_DIR}")


def load_experiment(path: Path, rootdir: Path) -> Experiment:
    """Load and validate; a ``ConfigError`` names the file and the key."""
    spec = load_model_file(path, ExperimentSpec, "an experiment")
    return Experiment(
        spec=spec,
        path=path,
        dataset_path=_resolve_file(spec.dataset, rootdir, str(path), "dataset") if spec.dataset else None,
        template_path=_resolve_prompt(spec.prompt, rootdir, str(path)) if spec.prompt else None,
    )
