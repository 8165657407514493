"""``promptsweep init [DIR]``: a working suite for your own task, to edit rather than to guess.

It writes a suite, a prompt template, five placeholder samples, a two-candidate search
space, the JSON Schemas for editors and a README, all under DIR, and prints the commands
to run next (paths as typed where ``init`` ran). The scaffold runs green against the
managed llama-server as written; the placeholders are marked ``REPLACE ME``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from promptsweep.cli.infer import Choice, Proposal, propose
from promptsweep.cli.schema import write_schemas
from promptsweep.core.answers.metrics import MetricRegistry
from promptsweep.core.data.dataset import RawRecord, read_records
from promptsweep.core.data.suite import Suite, SuiteSpec
from promptsweep.core.io.bounded_yaml import load_bounded
from promptsweep.core.io.errors import ConfigError, did_you_mean
from promptsweep.core.io.files import write_text_atomic
from promptsweep.core.measure.scoring import Scorer

if TYPE_CHECKING:
    from promptsweep.cli.args import SubParsers

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
    data: Path | None = None
    """The user's own data file (``--data``); None writes placeholder samples."""
    id_field: str | None = None
    records: int = SAMPLE_COUNT
    example_id: str = "example-1"
    floor: float | None = None
    """What a constant answer scores on the data (known once the data is read)."""

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
        if self.data is None and ("id" in names or "id" in self.inputs):
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

    @property
    def dataset_ref(self) -> str:
        """The suite's ``dataset:``: the user's file relative to the suite, else the placeholders."""
        if self.data is None:
            return f"data/{self.name}.jsonl"
        try:
            return Path(os.path.relpath(self.data.resolve(), self.folder.resolve())).as_posix()
        except ValueError:  # another drive on Windows
            return self.data.resolve().as_posix()

    @property
    def validation_count(self) -> int:
        """Validation samples under the written split (train: 0.5)."""
        return self.records - round(self.records * 0.5)

    def files(self) -> dict[Path, str]:
        files = {
            self.suite_path: self.suite_text(),
            self.template_path: self.template_text(),
            self.data_path: self.data_text(),
            self.space_path: self.space_text(),
            self.readme_path: self.readme_text(),
        }
        if self.data is not None:
            del files[self.data_path]
        return files

    # ---------------------------------------------------------------- contents

    def suite_text(self) -> str:
        lines = [
            "# yaml-language-server: $schema=schemas/suite.schema.json",
            f"# Each sample of the dataset is one test item, e.g. {self.name}[{self.example_id}].",
            "# Every key is explained in the file reference (docs/reference.md of pytest-promptsweep).",
            f"name: {self.name}",
            f'description: "{PLACEHOLDER} with what the model does, in one line."',
            "",
            f"dataset: {_scalar(self.dataset_ref)}",
            f"template: prompt_templates/{self.name}_v1.yaml",
            f"search_space: {self.name}.space.yaml",
            "",
        ]
        if self.id_field is not None:
            lines.append(f"id_field: {_scalar(self.id_field)}")
        else:
            lines.append(
                "# ids: the data's `id` or a unique `*_id` key (e.g. ticket_id), else sample0001, …; "
                "`id_field: KEY` picks one"
            )
        if self.category is not None:
            lines += [
                "# Per-category scores and the stratified train/validation split use this key.",
                f"category: {self.category.name}",
            ]
        lines += [
            "",
            "# The template's variables and the data keys they read (template variable: data key).",
            "inputs:",
            *(f"  {_scalar(key)}: {_scalar(key)}" for key in self.inputs),
            "",
            "# The fields the model answers, and how each is scored. Weights are normalised to sum to 1.",
            "fields:",
        ]
        for field in self.fields:
            lines.append(f"  {_scalar(field.name)}:")
            lines.append(f"    metric: {field.metric}")
            lines.append("    weight: 1.0")
            if field.label:
                lines.append("    label: true")
                values = f"[{', '.join(_scalar(v) for v in field.values)}]" if field.values else "dataset"
                lines.append(f"    values: {values}")
            else:
                lines.append(
                    f"    description: {field.describe()}   # the model sees this; say what you want"
                )
        if self.floor is not None:
            gate = [
                f"# A constant answer (each field's most frequent value) scores {self.floor:.3f} on this data:",
                "# a gate at or below it passes a prompt that learned nothing (the summary warns). After",
                "# the first run, set overall above it and just below your score; the summary proposes one.",
            ]
        else:
            gate = [
                "# The gate. After the first run on real samples, set overall above the constant-answer",
                "# floor the summary prints and just below your score; the summary proposes one.",
            ]
        lines += [
            "",
            *gate,
            "thresholds:",
            "  overall: 0.0",
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
        max_tokens = 128 if any(not f.label for f in self.fields) else 64
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
                f"  max_tokens: {max_tokens}",
                "  seed: 42",
                "",
                "# json_schema: llama-server constrains the answer to the suite's fields (labels become enums).",
                "output:",
                "  format: json_schema",
                "",
                "inputs:",
                f"  required: [{', '.join(_scalar(k) for k in self.inputs)}]",
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
                f"# better one as prompt_templates/{self.name}_v2.yaml only when its gain is significant: with",
                f"# {self.validation_count} validation samples that takes a gain of about "
                f"{detectable_gain(self.validation_count):.2f} or more (see README.md).",
                "# Add dimensions (constraints, output, few_shot, reasoning, params) as your data grows.",
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
        if self.data is None:
            samples = PLACEHOLDER_SAMPLES.format(name=self.name)
        else:
            samples = OWN_SAMPLES.format(dataset=self.dataset_ref, records=self.records)
        v = self.validation_count
        return README.format(
            name=self.name,
            dir=shown(self.folder),
            python_route=python_route_snippet(self.name),
            samples=samples,
            dataset=self.dataset_ref,
            validation=v,
            gain=detectable_gain(v),
            n_for_01=samples_for_gain(0.1),
            n_for_02=samples_for_gain(0.2),
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
def test_{name}(sample, prompt, endpoint, promptsweep_score):
    answer = endpoint.chat(prompt)           # the request the YAML route sends
    result = promptsweep_score(answer)       # parsed, scored, counted in the gate
    assert not result.errored'''


#: Standard deviation of per-sample score differences between two prompts: what the
#: sample-size advice assumes (0.3-0.5 is typical of label fields scored 0/1).
DIFF_SD = 0.4


def detectable_gain(n: int, sd: float = DIFF_SD) -> float:
    """The smallest gain a paired 95% interval over ``n`` samples can tell from 0: 1.96·sd/√n."""
    return 1.96 * sd / math.sqrt(max(n, 1))


def samples_for_gain(gain: float, sd: float = DIFF_SD) -> int:
    """Validation samples a gain needs to be significant: n ≈ (1.96·sd/gain)²."""
    return math.ceil((1.96 * sd / gain) ** 2)


_PLAIN = re.compile(r"^[A-Za-z_.][A-Za-z0-9_./\- ]*$")
_YAML_WORDS = {"true", "false", "yes", "no", "on", "off", "null", "y", "n", "~"}


def _scalar(text: str) -> str:
    """A string as a YAML scalar: plain when it reads back as the same string, else quoted."""
    if _PLAIN.match(text) and text.lower() not in _YAML_WORDS and text == text.strip():
        return text
    return json.dumps(text, ensure_ascii=False)


PLACEHOLDER_SAMPLES = """## 1. Put in your own samples

`data/{name}.jsonl` holds five placeholders marked `REPLACE ME`. Replace them with real
examples (30 or more give useful intervals): the keys the model reads and the answer you
expect for each field. Keep `id` unique (or use another unique key such as `ticket_id`: ids
come from `id` or a unique `*_id` key). `promptsweep init DIR --data FILE` writes a suite for
a file you already have instead."""

OWN_SAMPLES = """## 1. Your samples

The suite reads `{dataset}` ({records} records) where it is; `promptsweep check` validates it
with the suite, the template and the search space, without calling a model."""

README = """# {name}: LLM evals as pytest tests

Written by `promptsweep init`. Everything the run needs is in this folder:

| file | what |
|---|---|
| `{name}.suite.yaml` | the suite: dataset, template, scored fields, the gate |
| `prompt_templates/{name}_v1.yaml` | the prompt (Jinja2) and request parameters |
| `{dataset}` | the golden samples |
| `{name}.space.yaml` | what `--optimize` tries |
| `schemas/` | JSON Schemas: editors validate and complete the YAML files with them |

{samples}

## 2. Run

```bash
pytest {dir} -n 2
```

Each sample is a test item; the summary shows the overall score with a 95% interval, per
field and per category, the worst samples, and what a constant answer (each field's most
frequent value) would score. A model below that floor has learned nothing usable. The gate
starts at 0.0: after the first run, set `thresholds.overall` in `{name}.suite.yaml` above the
floor and just below your score (the summary warns about a gate at or below the floor and
proposes one), and the run fails (exit 1) when a change makes it worse. Artifacts land in
`.promptsweep/runs/` under pytest's rootdir.

## 3. Improve the prompt

```bash
pytest {dir} --optimize -n 2
```

scores both tones of `{name}.space.yaml` on the validation split and writes the winner as
`prompt_templates/{name}_v2.yaml` — only when its gain over v1 is significant (its paired 95%
interval lies above 0). How big a gain that takes depends on the number of validation samples:
roughly n ≈ (1.96·sd/gain)², where sd, the spread of per-sample score differences between two
prompts, is often 0.3 to 0.5. With sd 0.4, a gain of 0.2 needs about {n_for_02} validation samples and
a gain of 0.1 about {n_for_01}. This suite has {validation}, enough for gains of about {gain:.2f} and
up; below that the summary says `no significant improvement` and keeps the best candidate in the
run directory (`best_candidate.yaml`). Add samples before reading much into small differences.

## 4. Your own logic around the call (optional)

A test file next to the suite gets the same request the YAML route sends:

```python
{python_route}
```

`prompt` is this sample's request as the YAML route sends it, so this route scores exactly
what the YAML route scores; a call that raises counts as an errored sample on both.

## Editors

`schemas/` is referenced from the first line of each YAML file
(`# yaml-language-server: $schema=...`). After upgrading promptsweep, refresh it with
`promptsweep schema --write {dir}/schemas`.
"""


# ---------------------------------------------------------------- interaction


def _default_name(folder: Path, fallback: str | None = None) -> str:
    for candidate in (folder.resolve().name, fallback or ""):
        base = re.sub(r"[^A-Za-z0-9_]", "_", candidate).strip("_")
        if base and base not in ("evals", "tests", "data") and _NAME.match(base):
            return base
    return "my_task"


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


# ---------------------------------------------------------------- --data


_ROLE_KEYS = {"i": "input", "l": "label", "t": "text", "s": "skip"}


def _ask_role(choice: Choice, ask: Callable[[str], str], say: Callable[[str], None]) -> None:
    """One question about a key ``propose`` had to guess; Enter keeps the guess."""
    default = choice.role[0]
    while True:
        answer = (
            ask(
                f"{choice.column.key!r} ({choice.column.describe()}): "
                f"[i]nput the model reads, [l]abel or [t]ext it answers, [s]kip? [{default}] "
            )
            .strip()
            .lower()[:1]
            or default
        )
        if answer in _ROLE_KEYS:
            role = _ROLE_KEYS[answer]
            if role != choice.role:
                choice.role, choice.why, choice.unsure = role, "your answer", False  # type: ignore[assignment]
                if role == "label":
                    choice.values = tuple(sorted(set(choice.column.values)))
            choice.unsure = False
            return
        say("answer i, l, t or s")


def plan_from_data(
    folder: Path,
    data: Path,
    *,
    name: str | None,
    inputs: Sequence[str],
    fields: Sequence[str],
    ask: Callable[[str], str] | None,
    say: Callable[[str], None],
) -> Plan:
    """Read the user's records and propose the suite; keys it is unsure about are asked
    (``ask`` given: a terminal) or picked and reported. ``--input``/``--field`` win."""
    try:
        records = read_records(data)
    except ConfigError as exc:
        raise InitError(f"--data: {exc}") from None
    if not records:
        raise InitError(f"--data {data}: no records in the file")
    proposal = propose(records)
    flagged = {parse_field(text).name: parse_field(text) for text in fields}
    for choice in proposal.choices:
        key = choice.column.key
        if inputs or flagged:
            if key in inputs:
                choice.role, choice.unsure = "input", False
            elif key in flagged:
                choice.role, choice.unsure = flagged[key].kind, False  # type: ignore[assignment]
            elif (inputs and choice.role == "input") or (flagged and choice.role in ("label", "text")):
                choice.role, choice.unsure = "skip", False
    known = {c.column.key for c in proposal.choices} | ({proposal.id_field} if proposal.id_field else set())
    for key in [*inputs, *flagged]:
        if key not in known:
            raise InitError(f"--data {data}: no record has a key {key!r}" + did_you_mean(key, known))
    say(_describe(proposal, data))
    for choice in proposal.unsure:
        if ask is not None:
            _ask_role(choice, ask, say)
        else:
            say(
                f"  picked {choice.column.key!r} as {choice.role} ({choice.why}); unsure: "
                "pass --input/--field to choose, or run init on a terminal to be asked"
            )
    plan_fields = tuple(
        flagged.get(c.column.key)
        or FieldPlan(
            name=c.column.key,
            kind=c.role,
            values=c.values or tuple(sorted(set(c.column.values))) if c.role == "label" else (),
            metric="exact" if c.role == "label" else "rouge_l",
        )
        for c in proposal.choices
        if c.role in ("label", "text")
    )
    plan = Plan(
        folder=folder,
        name=name or _default_name(folder, fallback=data.stem),
        inputs=tuple(proposal.inputs),
        fields=plan_fields,
        data=data,
        id_field=proposal.id_field,
        records=len(records),
        example_id=_first_id(records, proposal.id_field),
    )
    if not plan.inputs:
        raise InitError(f"--data {data}: no key to read: name the input with --input KEY")
    return dataclasses.replace(plan, floor=constant_floor(plan))


def _first_id(records: Sequence[RawRecord], id_field: str | None) -> str:
    if id_field is None:
        return "sample0001"
    return str(records[0].data.get(id_field, "sample0001"))


def _describe(proposal: Proposal, data: Path) -> str:
    lines = [f"{shown(data)}: {proposal.records} records"]
    lines.append(f"  id: {proposal.id_field or '(positions)'} ({proposal.id_why})")
    for choice in proposal.choices:
        what = {"input": "input", "label": "label", "text": "text field", "skip": "skipped"}[choice.role]
        values = f": {', '.join(choice.values)}" if choice.role == "label" and choice.values else ""
        lines.append(f"  {choice.column.key}: {what}{values} ({choice.why})")
    return "\n".join(lines)


def constant_floor(plan: Plan) -> float | None:
    """Check the proposed suite against the data before anything is written, and return what a
    constant answer scores on it (the floor a gate must be above)."""
    spec = SuiteSpec.model_validate(load_bounded(plan.suite_text()))
    suite = Suite(
        spec=spec,
        path=plan.suite_path,
        dataset_path=(plan.folder / spec.dataset).resolve(),
        template_path=(plan.folder / spec.template).resolve(),
    )
    try:
        dataset = suite.load_dataset()
    except ConfigError as exc:
        raise InitError(f"the data does not fit the proposed suite: {exc}") from None
    constant = Scorer(suite, MetricRegistry()).constant_answer([s.expected for s in dataset.samples])
    return constant.score if constant is not None else None


def _init_command(args: argparse.Namespace) -> int:
    folder = Path(args.dir)
    try:
        if args.data is not None:
            interactive = sys.stdin.isatty() and not args.no_input
            plan = plan_from_data(
                folder,
                Path(args.data),
                name=args.name,
                inputs=args.input,
                fields=args.field,
                ask=input if interactive else None,
                say=print,
            )
        elif args.field:
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
    if plan.floor is not None:
        print(
            f"\na constant answer scores {plan.floor:.3f} on this data; the gate starts at 0.0: after the "
            f"first run set thresholds.overall above {plan.floor:.3f} and just below your score"
        )
    first = (
        f"  1. replace the {SAMPLE_COUNT} REPLACE ME samples in {shown(plan.data_path)} with your own\n"
        if plan.data is None
        else f"  1. promptsweep check {where}\n"
    )
    print(
        f"\nnext:\n"
        f"{first}"
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
    parser.add_argument(
        "--data",
        default=None,
        metavar="FILE",
        help="your own samples (JSON, JSONL or YAML): propose the id key, inputs and fields from them "
        "(asks about unclear keys on a terminal) instead of writing placeholders",
    )
    parser.add_argument("--force", action="store_true", help="overwrite files init wrote before")
    parser.add_argument("--no-input", action="store_true", help="never ask; fail when --field is missing")
    parser.set_defaults(handler=_init_command)


__all__ = ["FieldPlan", "InitError", "Plan", "parse_field", "register_init", "write_plan"]
