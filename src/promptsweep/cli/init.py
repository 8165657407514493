"""``promptsweep init [DIR]``: a working suite for your own task, to edit rather than to guess.

It writes a suite, a prompt template, a search space, the JSON Schemas for editors and a
README under DIR (five placeholder samples too, without ``--data``), adds ``.promptsweep/`` to
the project's ``.gitignore``, and prints the commands to run next (paths as typed where
``init`` ran). The scaffold runs green against the managed llama-server as written.

Everything read from the user's data is data: keys and values written into the YAML files are
quoted, the ones written into Jinja are literal text, and the files are loaded back (suite,
dataset, template rendered for every sample, search space) in a staging folder before any of
them replaces what is there.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import keyword
import math
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from promptsweep.cli.check import Report, check_suite
from promptsweep.cli.infer import Choice, Proposal, looks_like_label, propose
from promptsweep.cli.schema import write_schemas
from promptsweep.core.answers.metrics import MetricRegistry
from promptsweep.core.data.dataset import RawRecord, read_records
from promptsweep.core.data.suite import Suite, SuiteSpec, load_suite
from promptsweep.core.io.bounded_yaml import load_bounded
from promptsweep.core.io.errors import ConfigError, PromptsweepError, did_you_mean
from promptsweep.core.io.files import write_text_atomic
from promptsweep.core.measure.scoring import Scorer
from promptsweep.core.prompt import Prompt
from promptsweep.core.templates.template import literal as jinja_literal
from promptsweep.server.provision import DEFAULT_LLAMA_CPP_VERSION

if TYPE_CHECKING:
    from promptsweep.cli.args import SubParsers

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_KINDS = ("label", "text")
_TEXT_METRICS = ("rouge_l", "token_f1", "jaccard", "exact")
SAMPLE_COUNT = 5
PLACEHOLDER = "REPLACE ME"
PLACEHOLDER_LABELS = ("replace_me_a", "replace_me_b")
FIELD_HELP = (
    "NAME:label:V1,V2,V3 (a label with its allowed values), NAME:label (labels taken from the data) "
    "or NAME:text[:METRIC] (free text, scored by rouge_l unless METRIC is token_f1, jaccard or exact)"
)

MAX_DATA_BYTES = 50 * 1024 * 1024
"""``--data`` files larger than this are refused before reading: a golden set is a few MB."""
MAX_KEYS = 200
"""Distinct top-level keys ``--data`` reads; more is not a set of samples for one prompt."""
MAX_KEY_CHARS = 100
CHARS_PER_TOKEN = 3.0
"""A cautious count for answers full of ids, numbers and punctuation (English prose is nearer 4)."""
TOKEN_MARGIN = 1.5
SEARCH_LIMIT = "10m"
"""What the written search space may spend by default: its 16 candidates fit on 2 CPU cores."""
TONES = (
    "You are a careful assistant. Answer exactly as asked.",
    "You are an expert reviewer. Be precise and brief.",
)
BASE_TONE = "base"
"""A ``tone:`` entry that stands for the base template's own opening, as it reads today."""
# Names that cannot be a Jinja variable: operators, constants and what Jinja defines itself.
_JINJA_RESERVED = frozenset(
    {"and", "or", "not", "in", "is", "if", "else", "true", "false", "none", "loop", "self"}
    | {"super", "caller", "varargs", "kwargs", "raw", "endraw"}
)


class InitError(Exception):
    """Bad ``init`` input; the message says what to type instead."""


# ---------------------------------------------------------------- untrusted text as data


def one_line(text: str) -> str:
    """``text`` on one printable line: line breaks, control characters and other unprintable
    characters become ``\\n``/``\\uXXXX`` escapes, so data can never start a YAML key, end a
    block or reach a terminal as a control sequence."""
    out = []
    for ch in text:
        if ch.isprintable():
            out.append(ch)
        elif ch in "\n\t\r":
            out.append({"\n": "\\n", "\t": "\\t", "\r": "\\r"}[ch])
        elif ord(ch) > 0xFFFF:
            out.append(f"\\U{ord(ch):08x}")
        else:
            out.append(f"\\u{ord(ch):04x}")
    return "".join(out)


_PLAIN = re.compile(r"^[A-Za-z_.][A-Za-z0-9_./\- ]*$")
_YAML_WORDS = {"true", "false", "yes", "no", "on", "off", "null", "y", "n", "~"}


def _scalar(text: str) -> str:
    """A string as a YAML scalar: plain when it reads back as the same string, else double-quoted
    with every unprintable character escaped (YAML reads JSON's escapes and ``\\UXXXXXXXX``)."""
    if _PLAIN.match(text) and text.lower() not in _YAML_WORDS and text == text.strip():
        return text
    return quoted(text)


_PLAIN_VALUE = re.compile(r"^[^\s,\"'\\{}][^,\"'\\{}]*$")


def _listed(value: str) -> str:
    """A label value as the prompt lists it: bare when it cannot be misread, else JSON-quoted."""
    if _PLAIN_VALUE.match(value) and value == value.strip() and value.isprintable():
        return value
    return quoted(value)


def _jinja_text(text: str) -> str:
    """Prompt text that renders verbatim: where it holds a Jinja delimiter, a raw block."""
    return jinja_literal(text) if any(d in text for d in ("{{", "{%", "{#")) else text


def quoted(text: str) -> str:
    """Data in a message: JSON-quoted on one printable line."""
    return one_line(json.dumps(text, ensure_ascii=False))


def _key_problem(key: str) -> str | None:
    """Why a data key cannot be written into the suite as a name, or None."""
    if not key.strip():
        return "an empty key"
    if not key.isprintable():
        return "a line break or control character in the key"
    if len(key) > MAX_KEY_CHARS:
        return f"a key of {len(key)} characters (at most {MAX_KEY_CHARS})"
    return None


def _variable(key: str, taken: set[str]) -> str:
    """The template variable that reads data key ``key``: the key itself when it is a plain
    name Jinja can read, else a snake_case spelling of it (the suite's ``inputs:`` maps it)."""
    if _NAME.match(key) and key.lower() not in _JINJA_RESERVED and not keyword.iskeyword(key):
        base = key
    else:
        base = re.sub(r"[^0-9A-Za-z]+", "_", key).strip("_").lower()
        if not base or not base[0].isalpha() or base in _JINJA_RESERVED or keyword.iskeyword(base):
            base = f"input_{base}".rstrip("_")
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}_{n}"
    taken.add(name)
    return name


# ---------------------------------------------------------------- the plan


@dataclass(frozen=True)
class FieldPlan:
    name: str
    kind: str  # "label" | "text"
    values: tuple[str, ...] = ()
    metric: str = "exact"
    max_words: int | None = None
    """The longest answer in the data, in words (text fields read from ``--data``)."""

    @property
    def label(self) -> bool:
        return self.kind == "label"

    def describe(self, listed: Sequence[str] = ()) -> str:
        """How the prompt and the JSON schema describe the field to the model; a label lists its
        values (``listed`` stands in for values the data will bring)."""
        values = self.values or tuple(listed)
        if self.label and values:
            return "one of: " + ", ".join(_listed(v) for v in values)
        if self.label:
            return "a short snake_case label"
        if self.max_words is not None:
            return f"free text, at most {self.max_words} words"
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
class SplitCounts:
    """Samples on each side of the suite's split, as a run will split them."""

    train: int
    validation: int
    test: int


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
    max_tokens: int | None = None
    """Answer budget sized from the data's longest answer; None: a default by field kinds."""
    answer_tokens: int | None = None
    """The data's longest answer, in (estimated) tokens."""
    counts: SplitCounts | None = None
    """The split's sides, known once the samples are loaded with the suite."""

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
            problem = _key_problem(name)
            if problem:
                raise InitError(f"field {quoted(name)}: {problem}; rename the key in your data")
        for key in self.inputs:
            if self.data is None and not _NAME.match(key):
                raise InitError(f"--input {key!r}: use letters, digits and _ (it is a key in your data)")
            problem = _key_problem(key) or (
                "a '.' in the key (a suite reads it as a path into nested records)" if "." in key else None
            )
            if problem:
                raise InitError(f"--input {quoted(key)}: {problem}; rename the key in your data")
            if key in names:
                raise InitError(f"--input {key!r} is also a --field: the model cannot read its own answer")
        if self.data is None and ("id" in names or "id" in self.inputs):
            raise InitError("'id' is the samples' id key in the scaffold; name the field or input otherwise")

    @property
    def category(self) -> FieldPlan | None:
        return next((f for f in self.fields if f.label), None)

    @property
    def variables(self) -> dict[str, str]:
        """Template variable → data key, one per input."""
        taken: set[str] = set()
        return {_variable(key, taken): key for key in self.inputs}

    def listed(self, field: FieldPlan) -> tuple[str, ...]:
        """The values the prompt lists for a label field: its own, else the placeholders'."""
        if field.label and not field.values and self.data is None:
            return PLACEHOLDER_LABELS
        return field.values

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
    def from_root(self) -> str:
        """DIR as a CI job in the project's root types it."""
        try:
            return Path(os.path.relpath(self.folder.resolve(), project_root(self.folder))).as_posix()
        except ValueError:  # another drive on Windows
            return shown(self.folder)

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
        example = one_line(f"{self.name}[{self.example_id}]")[:80]
        lines = [
            "# yaml-language-server: $schema=schemas/suite.schema.json",
            f"# Each sample of the dataset is one test item, e.g. {example}.",
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
                f"category: {_scalar(self.category.name)}",
            ]
        lines += [
            "",
            "# The template's variables and the data keys they read (template variable: data key).",
            "inputs:",
            *(f"  {_scalar(var)}: {_scalar(key)}" for var, key in self.variables.items()),
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
                    f"    description: {_scalar(field.describe())}   # the model sees this; say what you want"
                )
        if self.floor is not None:
            gate = [
                f"# A constant answer (each field's most frequent value) scores {self.floor:.3f} on this data:",
                "# a gate at or below it passes a prompt that learned nothing (the summary warns). After",
                "# the first run, set overall to the low end of its 95% interval; the summary proposes it.",
            ]
        else:
            gate = [
                "# The gate. After the first run on real samples, set overall above the constant-answer",
                "# floor the summary prints, at the low end of the run's 95% interval (the summary proposes it).",
            ]
        lines += [
            "",
            *gate,
            "thresholds:",
            "  overall: 0.0",
            "  max_errors: 0",
            "",
            "split:",
            "  train: 0.5     # few-shot examples and lookups come from here; the rest is validation + test",
            "  seed: 13",
            "  evaluate: all",
            "",
            "llm:",
            "  temperature: 0.0",
            "",
        ]
        return "\n".join(lines)

    @property
    def answer_budget(self) -> int:
        """``max_tokens`` of the template: sized from the data, else by the kinds of fields."""
        if self.max_tokens is not None:
            return self.max_tokens
        return 128 if any(not f.label for f in self.fields) else 64

    def system_lines(self) -> list[str]:
        """The system message as the model reads it, line by line."""
        return [
            TONES[0],
            "",
            "For the input you are given, answer with a JSON object with these keys:",
            *(f"- {one_line(f.name)}: {f.describe(self.listed(f))}" for f in self.fields),
        ]

    def system_source(self) -> str:
        """The template's system text (Jinja source): every data-derived word literal."""
        return "\n".join(_jinja_text(line) for line in self.system_lines())

    def _labels(self) -> dict[str, str]:
        """Template variable → the label its value gets in the user message (several inputs)."""
        return {var: one_line(key.replace("_", " ").capitalize()) for var, key in self.variables.items()}

    def user_source(self) -> str:
        """The template's user text: each input's value, labelled when there are several."""
        labels = self._labels()
        if len(labels) == 1:
            return "{{{{ {} }}}}".format(*labels)
        return "\n".join(f"{_jinja_text(label)}: {{{{ {var} }}}}" for var, label in labels.items())

    def user_text(self, record: Mapping[str, Any]) -> str:
        """The user message for one record as the model should read it (what ``user_source`` renders to)."""
        labels = self._labels()
        values = {var: str(record[key]) for var, key in self.variables.items()}
        if len(labels) == 1:
            return next(iter(values.values()))
        return "\n".join(f"{label}: {values[var]}" for var, label in labels.items())

    def template_text(self) -> str:
        budget = (
            [
                f"  # the longest answer in your data is about {self.answer_tokens} tokens; "
                f"{TOKEN_MARGIN:g}x that and a little more,",
                "  # so a truncated answer means a model that ran on, not a budget too small",
            ]
            if self.answer_tokens is not None
            else []
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
                *budget,
                f"  max_tokens: {self.answer_budget}",
                "  seed: 42",
                "",
                "# json_schema: llama-server constrains the answer to the suite's fields (labels become enums).",
                "output:",
                "  format: json_schema",
                "",
                "inputs:",
                f"  required: [{', '.join(self.variables)}]",
                "",
                "system: |",
                *(f"  {line}" if line else "" for line in self.system_source().split("\n")),
                "",
                "user: |",
                *(f"  {line}" for line in self.user_source().split("\n")),
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
                if field.label:
                    labels = self.listed(field)
                    row[field.name] = labels[(i - 1) % len(labels)]
                else:
                    row[field.name] = f"{PLACEHOLDER}: the {field.name} you expect for example {i}."
            rows.append(row)
        return rows

    def data_text(self) -> str:
        return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in self.samples())

    @property
    def neighbour_choice(self) -> bool:
        """Neighbour choice cuts label enums: only a suite with a label field has one to cut."""
        return any(f.label for f in self.fields)

    @property
    def candidates(self) -> int:
        return len(TONES) * 2 * 2 * (2 if self.neighbour_choice else 1)

    def space_text(self) -> str:
        counts = self.counts
        sizes = f"{len(TONES)} tones x 2 few-shot x 2 gated lookup" + (
            " x 2 neighbour choice" if self.neighbour_choice else ""
        )
        where = (
            f"# {counts.validation} validation samples choose, {counts.test} test samples confirm: a winner "
            f"needs a gain of about {detectable_gain(counts.test):.2f} there (see README.md)."
            if counts is not None
            else "# The validation samples choose, the test samples confirm (see README.md)."
        )
        choices = (
            [
                "# Neighbour choice: each label's allowed values, per sample, cut to the labels of its 4",
                "# nearest train samples (off: every label).",
                "choices: [off, 4]",
                "",
            ]
            if self.neighbour_choice
            else []
        )
        return "\n".join(
            [
                "# yaml-language-server: $schema=schemas/space.schema.json",
                "# What `pytest <this folder> --optimize -n 2` tries:",
                f"# {sizes} = {self.candidates} candidates,",
                "# each scored against your template (the baseline); the best is written as",
                f"# prompt_templates/{self.name}_v2.yaml only when it beats the baseline on the test split.",
                where,
                "# Every candidate keeps the base template's user message, rules and model_defaults; edit",
                "# the template and the search follows it. Examples and copied answers come from the",
                "# train split only: a sample never sees its own answer.",
                f"base_template: prompt_templates/{self.name}_v1.yaml",
                f"description: Retrieval, a gated lookup and neighbour choice beside two tones for {self.name}.",
                "",
                f"# `{BASE_TONE}`: the base template's own opening paragraph, as it reads when the search starts.",
                "tone:",
                f"  - {BASE_TONE}",
                *(f"  - {tone}" for tone in TONES[1:]),
                "",
                "output: [json_schema]",
                "",
                "few_shot:",
                "  # retrieved: per sample, the 4 most similar train samples (BM25 over the inputs) as",
                "  # earlier turns, most similar last.",
                "  strategies: [none, retrieved]",
                "  k: 4",
                "  # Gated lookup: copy the nearest train sample's answer (no call) when it shares at least",
                "  # half of its words with the sample; ask the model about the rest.",
                "  copy_if_similar: [off, 0.5]",
                "",
                *choices,
                "search:",
                "  strategy: screen",
                f"  limit: {SEARCH_LIMIT}   # calls (600) or time (10m); --optimize-budget overrides it",
                "",
            ]
        )

    def readme_text(self) -> str:
        if self.data is None:
            samples = PLACEHOLDER_SAMPLES.format(name=self.name)
        else:
            samples = OWN_SAMPLES.format(dataset=self.dataset_ref, records=self.records)
        counts = self.counts or SplitCounts(0, 0, 0)
        return README.format(
            name=self.name,
            dir=shown(self.folder),
            python_route=python_route_snippet(self.name),
            samples=samples,
            dataset=self.dataset_ref,
            records=self.records,
            train=counts.train,
            validation=counts.validation,
            test=counts.test,
            candidates=self.candidates,
            choice=NEIGHBOUR_CHOICE if self.neighbour_choice else "",
            limit=SEARCH_LIMIT,
            gain=detectable_gain(counts.test),
            n_for_01=samples_for_gain(0.1),
            n_for_02=samples_for_gain(0.2),
            ci=ci_snippet(self.from_root),
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


def ci_snippet(suite_dir: str) -> str:
    """A GitHub Actions job for a user's own project: the plugin from the package index, the
    built llama-server and the model cached between runs, the user's suite path."""
    return f"""# .github/workflows/evals.yml
name: evals
on: [pull_request]
jobs:
  evals:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - uses: actions/setup-python@v5
        with: {{python-version: "3.12"}}
      - uses: actions/cache@v4            # llama-server (built once) and the model
        with:
          path: ~/.cache/promptsweep
          key: promptsweep-llama-{DEFAULT_LLAMA_CPP_VERSION}-${{{{ runner.os }}}}
      - run: pip install pytest-promptsweep   # or your requirements file, which pins it
      - run: promptsweep server ensure
      - run: pytest {suite_dir} -n 2 --junitxml=evals.xml
      - if: always()
        run: cat .promptsweep/runs/*/summary.md >> "$GITHUB_STEP_SUMMARY\""""


#: Standard deviation of per-sample score differences between two prompts: what the
#: sample-size advice assumes (0.3-0.5 is typical of label fields scored 0/1).
DIFF_SD = 0.4


def detectable_gain(n: int, sd: float = DIFF_SD) -> float:
    """The smallest gain a paired 95% interval over ``n`` samples can tell from 0: 1.96·sd/√n."""
    return 1.96 * sd / math.sqrt(max(n, 1))


def samples_for_gain(gain: float, sd: float = DIFF_SD) -> int:
    """Validation samples a gain needs to be significant: n ≈ (1.96·sd/gain)²."""
    return math.ceil((1.96 * sd / gain) ** 2)


PLACEHOLDER_SAMPLES = """## 1. Put in your own samples

`data/{name}.jsonl` holds five placeholders marked `REPLACE ME`. Replace them with real
examples (30 or more give useful intervals): the keys the model reads and the answer you
expect for each field. Keep `id` unique (or use another unique key such as `ticket_id`: ids
come from `id` or a unique `*_id` key). A label field declared without values lists the
placeholders' labels in `prompt_templates/{name}_v1.yaml`: list yours there too.
`promptsweep init DIR --data FILE` writes a suite for a file you already have instead."""

OWN_SAMPLES = """## 1. Your samples

The suite reads `{dataset}` ({records} records) where it is; `promptsweep check` validates it
with the suite, the template and the search space, without calling a model."""

NEIGHBOUR_CHOICE = (
    ", with or without neighbour choice (each label's allowed values cut, per sample, to the "
    "labels of its 4 nearest train samples)"
)

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
field and per category, the worst samples, and two floors: what a constant answer (each
field's most frequent value) scores, and what copying the labels of the most similar train
sample (no model call) scores. A model below the constant floor has learned nothing usable.
The gate starts at 0.0: after the first run, set `thresholds.overall` in `{name}.suite.yaml`
to the low end of the run's 95% interval (the summary proposes it, e.g. `thresholds.overall:
0.88 would gate on what this prompt reliably scores`), and the run fails (exit 1) when a change
makes it worse (a gate at the run's point score would fail reruns that score a little lower by
noise alone). Artifacts land in `.promptsweep/runs/` under pytest's rootdir (`init` added
`.promptsweep/` to the project's `.gitignore`).

## 3. Improve the prompt

```bash
pytest {dir} --optimize -n 2
```

The suite's split puts {train} of the {records} samples in train (few-shot examples and copied
answers come only from there), {validation} in validation and {test} in test. `--optimize` scores
the {candidates} candidates of `{name}.space.yaml` on the validation samples: two tones (the
first is your template's own opening, as it reads when you run it), with or without the 4 most
similar train samples as examples, with or without a gated lookup (copy the nearest train
sample's answer, no call, when it shares half its words with the sample){choice}. It then scores
the best against v1 on the {test} test samples, which no choice read, and writes it as
`prompt_templates/{name}_v2.yaml` only when it beats v1 there (its paired 95% interval lies above
0); otherwise the summary says why and keeps it as `best_candidate.yaml` in the run directory.
The search stops at the space's `search.limit` ({limit}); `--optimize-budget 30m` gives it more.

How big a gain that takes depends on the number of test samples: roughly n ≈ (1.96·sd/gain)²,
where sd, the spread of per-sample score differences between two prompts, is often 0.3 to 0.5.
With sd 0.4, a gain of 0.2 needs about {n_for_02} samples and a gain of 0.1 about {n_for_01}. This
suite has {test}, enough for gains of about {gain:.2f} and up. Add samples before reading much
into small differences.

## 4. Your own logic around the call (optional)

A test file next to the suite gets the same request the YAML route sends:

```python
{python_route}
```

`prompt` is this sample's request as the YAML route sends it, so this route scores exactly
what the YAML route scores; a call that raises counts as an errored sample on both.

## 5. Gate merges in CI

Install the plugin, cache llama-server and the model between runs (the first run builds
llama-server, several minutes), and run this suite; the exit code gates the merge and
`summary.md` says why. Set `thresholds.overall` first (section 2): a gate at 0.0 passes anything.

```yaml
{ci}
```

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


# ---------------------------------------------------------------- writing, checked


def measure(plan: Plan, dataset_path: Path) -> Plan:
    """Load the samples with the proposed suite (in memory) and return the plan with what they
    say: the split's sides and, for the user's data, what a constant answer scores on every field."""
    try:
        spec = SuiteSpec.model_validate(load_bounded(plan.suite_text()))
    except (ValidationError, PromptsweepError) as exc:
        raise InitError(f"the proposed suite is not valid: {one_line(str(exc))}") from None
    suite = Suite(
        spec=spec,
        path=plan.suite_path,
        dataset_path=dataset_path.resolve(),
        template_path=plan.template_path.resolve(),
    )
    try:
        dataset = suite.load_dataset()
    except ConfigError as exc:
        raise InitError(f"the data does not fit the proposed suite: {exc}") from None
    split = suite.split(dataset)
    counts = SplitCounts(len(split.train), len(split.validation), len(split.test))
    floor = None
    if plan.data is not None:
        constant = Scorer(suite, MetricRegistry()).constant_answer([s.expected for s in dataset.samples])
        floor = constant.score if constant is not None else None
    return dataclasses.replace(plan, counts=counts, floor=floor)


def read_back(plan: Plan, suite_path: Path) -> None:
    """Load the suite as ``promptsweep check`` does (dataset, template rendered for every sample,
    search space) and compare it with the plan: data that changed the files' structure (a key
    that became YAML, a value that became Jinja) is caught here, before anything is replaced."""
    report = Report()
    check_suite(suite_path, report)
    suite = load_suite(suite_path)
    template = suite.load_template()
    spec = suite.spec
    wanted_values = {f.name: (list(f.values) if f.values else "dataset") for f in plan.fields if f.label}
    found = {
        "fields": list(spec.fields),
        "inputs": dict(spec.inputs),
        "labels": {name: f.values for name, f in spec.fields.items() if f.label},
        "category": spec.category,
        "id_field": spec.id_field,
        "system": template.spec.system.strip(),
        "user": template.spec.user.strip(),
        "model_defaults": dict(template.spec.model_defaults),
        "required": list(template.spec.inputs.required),
    }
    wanted = {
        "fields": [f.name for f in plan.fields],
        "inputs": plan.variables,
        "labels": wanted_values,
        "category": plan.category.name if plan.category else None,
        "id_field": plan.id_field,
        "system": plan.system_source().strip(),
        "user": plan.user_source().strip(),
        "model_defaults": {"temperature": 0.0, "max_tokens": plan.answer_budget, "seed": 42},
        "required": list(plan.variables),
    }
    # ... and rendered: no word of the data was read as Jinja.
    dataset = suite.load_dataset()
    first = dataset.samples[0]
    messages = Prompt(suite, template, dataset=dataset).messages(first)
    found["rendered system"] = messages[0]["content"]
    wanted["rendered system"] = "\n".join(plan.system_lines()).strip()
    found["rendered user"] = messages[-1]["content"]
    wanted["rendered user"] = plan.user_text(first.data).strip()
    for key, value in wanted.items():
        if found[key] != value:
            raise InitError(f"the files init wrote do not read back as planned ({key}); please report this")


def _stage(files: Mapping[Path, str], folder: Path, staging: Path) -> None:
    for path, text in files.items():
        write_text_atomic(staging / path.relative_to(folder), text)


def write_plan(plan: Plan, *, force: bool) -> tuple[Plan, list[Path]]:
    """Write the plan's files, checked first: they are written to a staging folder beside DIR
    (the same relative paths to the data), loaded back, and only then moved into place. Returns
    the plan with its measured split and floor, and the paths written."""
    targets = list(plan.files())
    existing = [p for p in targets if p.exists()]
    if existing and not force:
        raise InitError(
            f"would overwrite {', '.join(shown(p) for p in existing)}; pick another folder or pass --force"
        )
    parent = plan.folder.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{plan.folder.name}-init-", dir=parent))
    except OSError as exc:
        raise InitError(f"cannot write under {shown(parent)}: {exc.strerror}") from None
    try:
        folder = plan.folder
        if plan.data is None:
            _stage({plan.data_path: plan.data_text()}, folder, staging)
        plan = measure(
            plan, plan.data if plan.data is not None else staging / plan.data_path.relative_to(folder)
        )
        files = plan.files()
        _stage(files, folder, staging)
        try:
            read_back(plan, staging / plan.suite_path.relative_to(folder))
        except PromptsweepError as exc:
            message = str(exc).replace(str(staging), str(folder))
            raise InitError(f"the suite init wrote does not load: {one_line(message)}") from None
        for path in files:
            path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / path.relative_to(folder), path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return plan, [*files, *write_schemas(plan.schemas_dir)]


IGNORED = ".promptsweep/"


def project_root(folder: Path) -> Path:
    """Where ``.promptsweep/`` will appear: the nearest folder up from DIR with ``.git`` or a
    project file (pytest's rootdir), else the current folder when DIR is inside it, else DIR's parent."""
    start = folder.resolve()
    for candidate in [start, *start.parents]:
        if (candidate / ".git").exists() or any(
            (candidate / name).is_file() for name in ("pyproject.toml", "pytest.ini", "tox.ini", "setup.cfg")
        ):
            return candidate
    cwd = Path.cwd().resolve()
    return cwd if start.is_relative_to(cwd) else start.parent


def ignore_artifacts(root: Path) -> str | None:
    """Add ``.promptsweep/`` (run artifacts and the response cache) to ``root/.gitignore``,
    once: what happened, in a line, or None when it was there already."""
    path = root / ".gitignore"
    if path.is_symlink():
        return f"left {shown(path)} alone (a symbolic link): add {IGNORED} to it yourself"
    try:
        text = path.read_text(encoding="utf-8") if path.exists() else ""
    except (OSError, UnicodeDecodeError) as exc:
        return f"could not read {shown(path)} ({exc}): add {IGNORED} to it yourself"
    if any(
        line.strip() in (IGNORED, IGNORED.rstrip("/"), "/" + IGNORED, "/.promptsweep")
        for line in text.splitlines()
    ):
        return None
    prefix = "" if not text or text.endswith("\n") else "\n"
    try:
        write_text_atomic(path, f"{text}{prefix}{IGNORED}\n")
    except OSError as exc:
        return f"could not write {shown(path)} ({exc.strerror}): add {IGNORED} to it yourself"
    return f"{'added' if text else 'wrote'} {IGNORED} to {shown(path)} (run artifacts and the response cache stay out of git)"


# ---------------------------------------------------------------- --data


_ROLE_KEYS = {"i": "input", "l": "label", "t": "text", "s": "skip"}


def _ask_role(choice: Choice, ask: Callable[[str], str], say: Callable[[str], None]) -> None:
    """One question about a key ``propose`` had to guess; Enter keeps the guess."""
    default = choice.role[0]
    while True:
        answer = (
            ask(
                f"{one_line(repr(choice.column.key))} ({one_line(choice.column.describe())}): "
                f"[i]nput the model reads, [l]abel or [t]ext it answers, [s]kip? [{default}] "
            )
            .strip()
            .lower()[:1]
            or default
        )
        if answer in _ROLE_KEYS:
            role = _ROLE_KEYS[answer]
            if role != choice.role:
                choice.role, choice.why = role, "your answer"  # type: ignore[assignment]
                if role == "label":
                    choice.values = tuple(sorted(set(choice.column.values)))
            choice.unsure = False
            return
        say("answer i, l, t or s")


def _hint(choice: Choice) -> str:
    key = choice.column.key
    typed = key if _NAME.match(key) else quoted(key)
    kind = "label" if looks_like_label(choice.column, choice.column.present) else "text"
    return f"--input {typed} or --field {typed}:{kind}"


def check_size(data: Path) -> None:
    """Refuse a file too large to be a golden set, before reading a byte of it."""
    try:
        size = data.stat().st_size
    except OSError as exc:
        raise InitError(f"--data {shown(data)}: cannot read: {exc.strerror}") from None
    if size > MAX_DATA_BYTES:
        raise InitError(
            f"--data {shown(data)}: {size / 1024**2:.0f} MB, over the {MAX_DATA_BYTES // 1024**2} MB init reads: "
            "give it a sample of your records (e.g. the first thousand lines of a JSONL file)"
        )


def check_keys(records: Sequence[RawRecord], data: Path) -> None:
    """Refuse data with more distinct top-level keys than samples for one prompt have, counting
    no further than the limit (a file of 100,000 keys is refused as fast as one of 201)."""
    keys: set[Any] = set()
    for record in records:
        keys.update(record.data)
        if len(keys) > MAX_KEYS:
            raise InitError(
                f"--data {shown(data)}: more than {MAX_KEYS} distinct keys (record {record.index + 1} "
                "reaches it): init proposes a suite from the keys the model reads and answers; keep those"
            )


def answer_tokens(records: Sequence[RawRecord], fields: Sequence[FieldPlan]) -> int:
    """The longest answer in the data as the model writes it (a JSON object of the fields),
    in tokens at :data:`CHARS_PER_TOKEN`."""
    longest = max(
        len(json.dumps({f.name: r.data.get(f.name) for f in fields}, ensure_ascii=False)) for r in records
    )
    return math.ceil(longest / CHARS_PER_TOKEN)


def token_budget(tokens: int) -> int:
    """``max_tokens`` for answers of up to ``tokens``: a margin over it, in steps of 32, at least 64."""
    return max(64, math.ceil((tokens * TOKEN_MARGIN + 16) / 32) * 32)


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
    """Read the user's records and propose the suite. ``--input``/``--field`` decide the keys
    they name; the others keep their proposals. A key ``propose`` is unsure about is asked
    about (``ask`` given: a terminal) or left out, and the line says so: a guess never feeds
    the model what may be its answer."""
    check_size(data)
    try:
        records = read_records(data)
    except ConfigError as exc:
        raise InitError(f"--data: {one_line(str(exc))}") from None
    except (MemoryError, RecursionError):
        raise InitError(f"--data {shown(data)}: too large or too deeply nested to read") from None
    if not records:
        raise InitError(f"--data {shown(data)}: no records in the file")
    check_keys(records, data)
    proposal = propose(records)
    flagged = {parse_field(text).name: parse_field(text) for text in fields}
    known = {c.column.key for c in proposal.choices}
    for key in [*inputs, *flagged]:
        if key == proposal.id_field:
            raise InitError(
                f"--data {shown(data)}: {key!r} is the samples' id ({proposal.id_why}); it is neither read nor answered"
            )
        if key not in known:
            raise InitError(f"--data {shown(data)}: no record has a key {key!r}" + did_you_mean(key, known))
    for choice in proposal.choices:
        key = choice.column.key
        if key in inputs:
            choice.role, choice.why, choice.unsure = "input", "--input", False
        elif key in flagged:
            choice.role, choice.why, choice.unsure = flagged[key].kind, "--field", False  # type: ignore[assignment]
            choice.values = flagged[key].values
        elif choice.role != "skip" and _key_problem(key):
            choice.role, choice.unsure = "skip", False
            choice.why = f"{_key_problem(key)}: rename it to use it"
        elif choice.role == "input" and "." in key:
            choice.role, choice.unsure = "skip", False
            choice.why = (
                "a '.' in the key, which a suite reads as a path into nested records: rename it to use it"
            )
    say(_describe(proposal, data, asking=ask is not None))
    for choice in proposal.unsure:
        if ask is not None:
            _ask_role(choice, ask, say)
        else:
            choice.role = "skip"
    plan_fields = []
    for choice in proposal.choices:
        if choice.role not in ("label", "text"):
            continue
        key = choice.column.key
        data_values = tuple(sorted(set(choice.column.values)))
        flag = flagged.get(key)
        kind = flag.kind if flag else choice.role
        plan_fields.append(
            FieldPlan(
                name=key,
                kind=kind,
                values=(choice.values or data_values) if kind == "label" else (),
                metric=flag.metric if flag else ("exact" if kind == "label" else "rouge_l"),
                max_words=choice.column.max_words if kind == "text" else None,
            )
        )
    plan_inputs = tuple(proposal.inputs)
    if not plan_inputs:
        free = [c.column.key for c in proposal.choices if c.column.scalar and c.role == "skip"]
        some = f" (e.g. {', '.join(one_line(k) for k in free[:3])})" if free else ""
        raise InitError(f"--data {shown(data)}: no key to read: name the input with --input KEY{some}")
    if not plan_fields:
        raise InitError(f"--data {shown(data)}: nothing to answer: name a field with --field {FIELD_HELP}")
    tokens = answer_tokens(records, plan_fields)
    return Plan(
        folder=folder,
        name=name or _default_name(folder, fallback=data.stem),
        inputs=plan_inputs,
        fields=tuple(plan_fields),
        data=data,
        id_field=proposal.id_field,
        records=len(records),
        example_id=_first_id(records, proposal.id_field),
        max_tokens=token_budget(tokens),
        answer_tokens=tokens,
    )


def _first_id(records: Sequence[RawRecord], id_field: str | None) -> str:
    if id_field is None:
        return "sample0001"
    return str(records[0].data.get(id_field, "sample0001"))


def _describe(proposal: Proposal, data: Path, *, asking: bool) -> str:
    lines = [f"{shown(data)}: {proposal.records} records"]
    lines.append(f"  id: {one_line(proposal.id_field or '(positions)')} ({proposal.id_why})")
    for choice in proposal.choices:
        key, why = one_line(choice.column.key), one_line(choice.why)
        if choice.unsure:
            unsure = "asked below" if asking else f"left out; unsure: pass {_hint(choice)} to use it"
            lines.append(f"  {key}: {unsure} ({why})")
            continue
        what = {"input": "input", "label": "label", "text": "text field", "skip": "skipped"}[choice.role]
        values = choice.values or tuple(sorted(set(choice.column.values)))
        listed = f": {one_line(', '.join(values))}" if choice.role == "label" else ""
        lines.append(f"  {key}: {what}{listed} ({why})")
    if proposal.unsure and not asking:
        lines.append("  (run init on a terminal to be asked about the keys left out)")
    return "\n".join(lines)


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
        plan, written = write_plan(plan, force=args.force)
    except InitError as exc:
        print(f"promptsweep init: error: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {shown(path)}")
    ignored = ignore_artifacts(project_root(folder))
    if ignored:
        print(ignored)
    where = shown(folder)
    if plan.floor is not None:
        print(
            f"\na constant answer scores {plan.floor:.3f} on this data (every field counted); the gate "
            f"starts at 0.0: after the first run set thresholds.overall above {plan.floor:.3f}, at the low "
            "end of the run's 95% interval (the summary proposes it)"
        )
    counts = plan.counts
    if counts is not None:
        print(
            f"split: {counts.train} train, {counts.validation} validation, {counts.test} test samples; "
            f"--optimize tries {plan.candidates} candidates for up to {SEARCH_LIMIT}"
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
        description="Write a suite, a prompt template, five placeholder samples (or a suite for your "
        "--data), a search space, JSON Schemas and a README under DIR, and add .promptsweep/ to the "
        "project's .gitignore. Without --field or --data it asks (on a terminal).",
    )
    parser.add_argument(
        "dir", nargs="?", default="evals", metavar="DIR", help="where to write (default: evals)"
    )
    parser.add_argument("--name", default=None, help="suite name (default: the folder's name, else my_task)")
    parser.add_argument(
        "--field",
        action="append",
        default=[],
        metavar="SPEC",
        help=f"an output field (repeat): {FIELD_HELP}; with --data it decides that key only",
    )
    parser.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="KEY",
        help="a data key the model reads (repeat; default: text); with --data it decides that key only",
    )
    parser.add_argument(
        "--data",
        default=None,
        metavar="FILE",
        help="your own samples (JSON, JSONL or YAML, up to 50 MB): propose the id key, inputs and fields "
        "from them (asks about unclear keys on a terminal, leaves them out elsewhere) instead of "
        "writing placeholders",
    )
    parser.add_argument("--force", action="store_true", help="overwrite files init wrote before")
    parser.add_argument("--no-input", action="store_true", help="never ask; fail when --field is missing")
    parser.set_defaults(handler=_init_command)


__all__ = ["FieldPlan", "InitError", "Plan", "parse_field", "register_init", "write_plan"]
