"""JSON Schemas of the files a user writes, generated from the pydantic models that load them.

Editors validate and autocomplete YAML with them (yaml-language-server reads a
``# yaml-language-server: $schema=...`` first line). The package ships them in
``promptsweep/schemas/``; ``promptsweep schema --write src/promptsweep/schemas`` regenerates
them and a test fails when they are stale, so a key added to a model reaches the schema.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from promptsweep.core.data.experiment import ExperimentSpec
from promptsweep.core.data.suite import SuiteSpec
from promptsweep.core.templates.template import PromptTemplateSpec
from promptsweep.optimize.space import SearchSpaceSpec

if TYPE_CHECKING:
    from promptsweep.cli.args import SubParsers

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SHIPPED_DIR = Path(__file__).resolve().parents[1] / "schemas"

SAMPLE_DESCRIPTION = (
    "One golden sample: the keys the template's inputs read (mapped by the suite's `inputs:` or "
    "same-named) and the expected value of every scored field, as top-level keys or inside the "
    "object the suite's `expected_key` names. Other keys are kept and may be used in `id:` patterns."
)


def _model_schema(model: type[BaseModel], title: str, description: str) -> Callable[[], dict[str, Any]]:
    def build() -> dict[str, Any]:
        schema = model.model_json_schema(mode="validation")
        return {"$schema": JSON_SCHEMA_DIALECT, **schema, "title": title, "description": description}

    return build


def dataset_schema() -> dict[str, Any]:
    """Datasets are the user's own records: only the container and "an object per sample" are fixed."""
    samples = {"type": "array", "items": {"$ref": "#/$defs/Sample"}, "minItems": 1}
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "title": "promptsweep dataset",
        "description": "Golden samples: a list of objects (JSON or YAML), or {samples: [...]}. "
        "JSONL files hold one Sample object per line.",
        "oneOf": [
            samples,
            {
                "type": "object",
                "properties": {"samples": {**samples, "description": "The samples, in file order."}},
                "required": ["samples"],
            },
        ],
        "$defs": {
            "Sample": {"type": "object", "description": SAMPLE_DESCRIPTION, "additionalProperties": True}
        },
    }


#: kind → schema builder; the file is ``<kind>.schema.json``.
SCHEMAS: dict[str, Callable[[], dict[str, Any]]] = {
    "suite": _model_schema(
        SuiteSpec, "promptsweep suite", "A *.suite.yaml file: dataset, template, scored fields, gate."
    ),
    "template": _model_schema(
        PromptTemplateSpec, "promptsweep prompt template", "A prompt template YAML file (prompt_templates/)."
    ),
    "space": _model_schema(
        SearchSpaceSpec,
        "promptsweep search space",
        "A *.space.yaml file: the dimensions --optimize combines.",
    ),
    "experiment": _model_schema(
        ExperimentSpec, "promptsweep experiment", "An experiment YAML file (evals/experiments/<id>.yaml)."
    ),
    "dataset": dataset_schema,
}


def schema_filename(kind: str) -> str:
    return f"{kind}.schema.json"


def render_schema(kind: str) -> str:
    """The schema as the shipped file holds it (stable key order, trailing newline)."""
    return json.dumps(SCHEMAS[kind](), indent=2, ensure_ascii=False) + "\n"


def stale_schemas(folder: Path) -> list[str]:
    """Kinds whose file in ``folder`` is missing or differs from the models."""
    stale = []
    for kind in SCHEMAS:
        path = folder / schema_filename(kind)
        if not path.is_file() or path.read_text(encoding="utf-8") != render_schema(kind):
            stale.append(kind)
    return stale


def write_schemas(folder: Path) -> list[Path]:
    from promptsweep.core.io.files import write_text_atomic

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for kind in SCHEMAS:
        path = folder / schema_filename(kind)
        write_text_atomic(path, render_schema(kind))
        written.append(path)
    return written


def _schema_command(args: argparse.Namespace) -> int:
    if args.check is not None:
        stale = stale_schemas(args.check)
        if stale:
            print(
                f"stale schemas in {args.check}: {', '.join(stale)}; "
                f"run `promptsweep schema --write {args.check}`",
                file=sys.stderr,
            )
            return 1
        print(f"schemas in {args.check} are up to date")
        return 0
    if args.write is not None:
        for path in write_schemas(args.write):
            print(path)
        return 0
    if args.kind is None:
        print(f"kinds: {', '.join(SCHEMAS)}; shipped in {SHIPPED_DIR}")
        print("e.g. `promptsweep schema suite`, or `promptsweep schema --write evals/schemas`")
        return 0
    sys.stdout.write(render_schema(args.kind))
    return 0


def register_schema(subparsers: SubParsers) -> None:
    """``promptsweep schema [KIND] [--write DIR | --check DIR]``."""
    parser = subparsers.add_parser(
        "schema",
        help="print or write the JSON Schemas of suite, template, space, experiment and dataset files",
        description="JSON Schemas for editors: add `# yaml-language-server: $schema=schemas/suite.schema.json` "
        "as the first line of a suite (the path is relative to the YAML file).",
    )
    parser.add_argument("kind", nargs="?", choices=list(SCHEMAS), help="print this schema to stdout")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", type=Path, metavar="DIR", help="write every <kind>.schema.json into DIR")
    group.add_argument(
        "--check",
        type=Path,
        metavar="DIR",
        help="exit 1 when DIR's schemas differ from this version's models",
    )
    parser.set_defaults(handler=_schema_command)
