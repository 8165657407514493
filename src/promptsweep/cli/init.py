"""``promptsweep init [DIR]``: a working suite for your own task, to edit rather than to guess.

It writes a suite, a prompt template, five placeholder samples, a two-candidate search
space, the JSON Schemas for editors and a README, all under DIR, and prints the commands
to run next (paths as typed where ``init`` ran). The scaffold runs green against the
managed llama-server as written; the placeholders are marked ``REPLACE ME``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from promptsweep.cli.schema import write_schemas
from promptsweep.core.files import write_text_atomic

if TYPE_CHECKING:
    from promptsweep.cli.main import SubParsers

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_KINDS = ("label", "text")
_TEXT_METRICS = ("rouge_l", "token_f1", "jaccard", "exact")
SAMPLE_COUNT = 5
PLACEHOLDER = "REPLACE ME"
FIELD_HELP = (
    "NAME:label:V1,V2,V3 (a label with its allowed values), NAME:label (labels taken from the data) "
    "or NAME:text[:METRIC] (free text, scored by rouge_l unless METRIC is token_f1, jaccard or exact)"
)


class InitError(Exception):
    """Bad ``init`` input; the message says what to type instead."""


@dataclass(frozen=True)
class FieldPlan:
    name: str
    kind: str  # "label" | "text"
    values: tuple[str, ...] = ()
    metric: str = "exact"

    @property
    def label(self) -> bool:
        return self.kind == "label"

    def describe(self) -> str:
        """How the prompt and the JSON schema describe the field to the model."""
        if self.label and self.values:
            return "one of: " + ", ".join(self.values)
        if self.label:
            return "a short snake_case label"
        return "one short sentence"


def parse_field(text: str) -> FieldPlan:
    """``category:label:billing,bug`` → a label field with values; errors show the accepted forms."""
    parts = text.strip().split(":")
    name = parts[0].strip()
    if not _NAME.match(name):
        raise InitError(
            f"--field {text!r}: {name!r} is not a field name (letters, digits, _); use {FIELD_HELP}"
        )
    kind = parts[1].strip().lower() if len(parts) > 1 else ""
    if kind not in _KINDS or len(parts) > 3:
        raise InitError(
            f"--field {text!r}: use {FIELD_HELP}, e.g. priority:label:low,normal,high or reply:text"
        )
    rest = parts[2].strip() if len(parts) == 3 else ""
    if kind == "label":
        values = tuple(v.strip() for v in rest.split(",") if v.strip())
        if len(set(values)) != len(values):
            raise InitError(f"--field {text!r}: a value is listed twice")
        return FieldPlan(name=name, kind="label", values=values, metric="exact")
    metric = rest or "rouge_l"
    if metric not in _TEXT_METRICS:
        raise InitError(f"--field {text!r}: metric {metric!r} is not one of {', '.join(_TEXT_METRICS)}")
    return FieldPlan(name=name, kind="text", metric=metric)


@dataclass(frozen=True)
class Plan:
    """What ``init`` writes: the suite name, the data keys the model reads, the scored fields."""

    folder: Path
    name: str
    inputs: tuple[str, ...]
    fields: tuple[FieldPlan, ...]

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise InitError(
                f"--name {self.name!r}: use letters, digits and _ (it names files and test items)"
            )
        if not self.fields:
            raise InitError(f"give at least one --field: {FIELD_HELP}")
        names = [f.name for f in self.fields]
        for name in names:
            if names.count(name) > 1:
                raise InitError(f"--field {name!r} is given twice")
        for key in self.inputs:
            if not _NAME.match(key):
                raise InitError(f"--input {key!r}: use letters, digits and _ (it is a key in your data)")
            if key in names:
                raise InitError(f"--input {key!r} is also a --field: the model cannot read its own answer")
        if "id" in names or "id" in self.inputs:
            raise InitError("'id' is the samples' id key in the scaffold; name the field or input otherwise")

    @property
    def category(self) -> FieldPlan | None:
        return next((f for f in self.fields if f.label), None)

    # ---------------------------------------------------------------- paths

    @property
    def suite_path(self) -> Path:
        return self.folder / f"{self.name}.suite.yaml"

    @property
    def template_path(self) -> Path:
        return self.folder / "prompt_templates" / f"{self.name}_v1.yaml"

    @property
    def data_path(self) -> Path:
        return self.folder / "data" / f"{self.name}.jsonl"

    @property
    def space_path(self) -> Path:
        return self.folder / f"{self.name}.space.yaml"

    @property
    def readme_path(self) -> Path:
        return self.folder / "README.md"

    @property
    def schemas_dir(self) -> Path:
        return self.folder / "schemas"

    def files(self) -> dict[Path, str]:
        return {
            self.suite_path: self.suite_text(),
            self.template_path: self.template_text(),
            self.data_path: self.data_text(),
            self.space_path: self.space_text(),
            self.readme_path: self.readme_text(),
        }

    # ---------------------------------------------------------------- contents

    def suite_text(self) -> str:
        lines = [
            "# yaml-language-server: $schema=schemas/suite.schema.json",
            f"# Each sample of the dataset is one test item, e.g. {self.name}[example-1].",
            "# Every key is explained in the file reference (docs/reference.md of pytest-promptsweep).",
            f"name: {self.name}",
            f'description: "{PLACEHOLDER} with what the model does, in one line."',
            "",
            f"dataset: data/{self.name}.jsonl",
            f"template: prompt_templates/{self.name}_v1.yaml",
            f"search_space: {self.name}.space.yaml",
            "",
            "id_field: id",
        ]
        if self.category is not None:
            lines += [
                "# Per-category scores and the stratified train/validation split use this key.",
                f"category: {self.category.name}",
            ]
        lines += [
            "",
            "# The template's variables and the data keys they read (template variable: data key).",
            "inputs:",
            *(f"  {key}: {key}" for key in self.inputs),
            "",
            "# The fields the model answers, and how each is scored. Weights are normalised to sum to 1.",
            "fields:",
        ]
        for field in self.fields:
            lines.append(f"  {field.name}:")
            lines.append(f"    metric: {field.metric}")
            lines.append("    weight: 1.0")
            if field.label:
                lines.append("    label: true")
                values = f"[{', '.join(field.values)}]" if field.values else "dataset"
                lines.append(f"    values: {values}")
            else:
                lines.append(
                    f"    description: {field.describe()}   # the model sees this; say what you want"
                )
        lines += [
            "",
            "thresholds:",
            "  overall: 0.0   # the gate; raise it to just below your first real score",
            "  max_errors: 0",
            "",
            "split:",
            "  train: 0.5     # few-shot examples come from here; --optimize scores the rest",
            "  seed: 13",
            "  evaluate: all",
            "",
            "llm:",
            "  temperature: 0.0",
            "",
        ]
        return "\n".join(lines)

    def template_text(self) -> str:
        keys = "\n".join(f"  - {field.name}: {field.describe()}" for field in self.fields)
        if len(self.inputs) == 1:
            user = f"  {{{{ {self.inputs[0]} }}}}"
        else:
            user = "\n".join(
                f"  {key.replace('_', ' ').capitalize()}: {{{{ {key} }}}}" for key in self.inputs
            )
        return "\n".join(
            [
                "# yaml-language-server: $schema=../schemas/template.schema.json",
                f"id: {self.name}",
                "version: v1",
                f"description: First prompt for {self.name}.",
                "",
                "model_defaults:",
                "  temperature: 0.0",
                "  max_tokens: 128",
                "  seed: 42",
                "",
                "# json_schema: llama-server constrains the answer to the suite's fields (labels become enums).",
                "output:",
                "  format: json_schema",
                "",
                "inputs:",
                f"  required: [{', '.join(self.inputs)}]",
                "",
                "system: |",
                f"  {TONES[0]}",
                "",
                "  For the input you are given, answer with a JSON object with these keys:",
                keys,
                "",
                "user: |",
                user,
                "",
            ]
        )

    def samples(self) -> list[dict[str, str]]:
        rows = []
        for i in range(1, SAMPLE_COUNT + 1):
            row = {"id": f"example-{i}"}
            for key in self.inputs:
                row[key] = f"{PLACEHOLDER}: the {key} of your example {i}, as the model will read it."
            for field in self.fields:
                if field.label and field.values:
                    row[field.name] = field.values[(i - 1) % len(field.values)]
                elif field.label:
                    row[field.name] = ("replace_me_a", "replace_me_b")[(i - 1) % 2]
                else:
                    row[field.name] = f"{PLACEHOLDER}: the {field.name} you expect for example {i}."
            rows.append(row)
        return rows

    def data_text(self) -> str:
        return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in self.samples())

    def space_text(self) -> str:
        return "\n".join(
            [
                "# yaml-language-server: $schema=schemas/space.schema.json",
                "# `pytest <this folder> --optimize -n 2` scores both tones on the validation split and writes the",
                f"# better one as prompt_templates/{self.name}_v2.yaml. Add dimensions (constraints, output,",
                "# few_shot, reasoning, params) as your data grows; see the file reference.",
                f"base_template: prompt_templates/{self.name}_v1.yaml",
                f"description: Two tones for {self.name}.",
                "",
                "tone:",
                *(f"  - {tone}" for tone in TONES),
                "",
                "output: [json_schema]",
                "",
                "search:",
                "  strategy: grid   # every candidate on every validation sample",
                "",
            ]
        )

    def readme_text(self) -> str:
        return README.format(
            name=self.name, dir=shown(self.folder), python_route=python_route_snippet(self.name)
        )


TONES = (
    "You are a careful assistant. Answer exactly as asked.",
    "You are an expert reviewer. Be precise and brief.",
)


def python_route_snippet(name: str) -> str:
    """The Python route for a suite: the same request the YAML route sends (template params and
    response format), with your own logic around the call."""
    return f'''import pytest


@pytest.mark.promptsweep(suite="{name}.suite.yaml")
def test_{name}(sample, promptsweep_runtime, endpoint, promptsweep_score):
    request = promptsweep_runtime.evaluator.request(sample)  # the template's params and schema
    result = promptsweep_score(endpoint.send(request))        # parsed, scored, counted in the gate
    assert not result.errored'''


README = """# {name}: LLM evals as pytest tests

Written by `promptsweep init`. Everything the run needs is in this folder:

| file | what |
|---|---|
| `{name}.suite.yaml` | the suite: dataset, template, scored fields, the gate |
| `prompt_templates/{name}_v1.yaml` | the prompt (Jinja2) and request parameters |
| `data/{name}.jsonl` | the golden samples, one JSON object a line |
| `{name}.space.yaml` | what `--optimize` tries |
| `schemas/` | JSON Schemas: editors validate and complete the YAML files with them |

## 1. Put in your own samples

`data/{name}.jsonl` holds five placeholders marked `REPLACE ME`. Replace them with real
examples (30 or more give useful intervals): the keys the model reads and the answer you
expect for each field. Keep `id` unique.

## 2. Run

```bash
pytest {dir} -n 2
```

Each sample is a test item; the summary shows the overall score with a 95% interval, per
field and per category, and the worst samples. Artifacts land in `.promptsweep/runs/`
under pytest's rootdir. Raise `thresholds.overall` in `{name}.suite.yaml` to just below your
first real score, and the run fails (exit 1) when a change makes it worse.

## 3. Improve the prompt

```bash
pytest {dir} --optimize -n 2
```

scores both tones of `{name}.space.yaml` on the validation split and writes the winner as
`prompt_templates/{name}_v2.yaml`.

## 4. Your own logic around the call (optional)

A test file next to the suite gets the same request the YAML route sends:

```python
{python_route}
```

## Editors

`schemas/` is referenced from the first line of each YAML file
(`# yaml-language-server: $schema=...`). After upgrading promptsweep, refresh it with
`promptsweep schema --write {dir}/schemas`.
"""


# ---------------------------------------------------------------- interaction


def _default_name(folder: Path) -> str:
    base = re.sub(r"[^A-Za-z0-9_]", "_", folder.resolve().name).strip("_")
    if not base or base in ("evals", "tests") or not _NAME.match(base):
        return "my_task"
    return base


def ask_plan(folder: Path, name: str | None, ask: Callable[[str], str], say: Callable[[str], None]) -> Plan:
    """Ask for the name, the input keys and the fields, re-asking after a bad answer."""
    default = name or _default_name(folder)
    name = ask(f"Suite name [{default}]: ").strip() or default
    inputs = tuple(
        k.strip() for k in (ask("Data keys the model reads [text]: ") or "text").split(",") if k.strip()
    )
    say(f"Fields the model answers, one per line: {FIELD_HELP}. An empty line ends the list.")
    fields: list[FieldPlan] = []
    while True:
        answer = ask(f"field {len(fields) + 1}: ").strip()
        if not answer:
            if fields:
                break
            say("give at least one field, e.g. priority:label:low,normal,high or reply:text")
            continue
        try:
            fields.append(parse_field(answer))
        except InitError as exc:
            say(str(exc))
    return Plan(folder=folder, name=name, inputs=inputs, fields=tuple(fields))


def shown(path: Path) -> str:
    """A path as the user should type it where they ran ``init``."""
    try:
        return os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return str(path)


def write_plan(plan: Plan, *, force: bool) -> list[Path]:
    files = plan.files()
    existing = [p for p in files if p.exists()]
    if existing and not force:
        raise InitError(
            f"would overwrite {', '.join(shown(p) for p in existing)}; pick another folder or pass --force"
        )
    for path, text in files.items():
        write_text_atomic(path, text)
    return [*files, *write_schemas(plan.schemas_dir)]


def _init_command(args: argparse.Namespace) -> int:
    folder = Path(args.dir)
    try:
        if args.field:
            fields = tuple(parse_field(text) for text in args.field)
            plan = Plan(
                folder=folder,
                name=args.name or _default_name(folder),
                inputs=tuple(args.input or ["text"]),
                fields=fields,
            )
        elif sys.stdin.isatty() and not args.no_input:
            plan = ask_plan(folder, args.name, input, print)
        else:
            raise InitError(
                f"give the fields the model answers: --field {FIELD_HELP}; e.g. "
                "promptsweep init tickets --field category:label:billing,bug,account --field reply:text"
            )
        written = write_plan(plan, force=args.force)
    except InitError as exc:
        print(f"promptsweep init: error: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {shown(path)}")
    where = shown(folder)
    print(
        f"\nnext:\n"
        f"  1. replace the {SAMPLE_COUNT} REPLACE ME samples in {shown(plan.data_path)} with your own\n"
        f"  2. pytest {where} -n 2\n"
        f"  3. pytest {where} --optimize -n 2\n"
        f"more in {shown(plan.readme_path)}"
    )
    return 0


def register_init(subparsers: SubParsers) -> None:
    """``promptsweep init [DIR] --field ...``: scaffold a suite for your own task."""
    parser = subparsers.add_parser(
        "init",
        help="scaffold a working suite for your own task (suite, template, samples, search space)",
        description="Write a suite, a prompt template, five placeholder samples, a search space, "
        "JSON Schemas and a README under DIR. Without --field it asks (on a terminal).",
    )
    parser.add_argument(
        "dir", nargs="?", default="evals", metavar="DIR", help="where to write (default: evals)"
    )
    parser.add_argument("--name", default=None, help="suite name (default: the folder's name, else my_task)")
    parser.add_argument(
        "--field", action="append", default=[], metavar="SPEC", help=f"an output field (repeat): {FIELD_HELP}"
    )
    parser.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="KEY",
        help="a data key the model reads (repeat; default: text)",
    )
    parser.add_argument("--force", action="store_true", help="overwrite files init wrote before")
    parser.add_argument("--no-input", action="store_true", help="never ask; fail when --field is missing")
    parser.set_defaults(handler=_init_command)


__all__ = ["FieldPlan", "InitError", "Plan", "parse_field", "register_init", "write_plan"]
