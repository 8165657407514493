"""Golden samples written and merged into a dataset file: harvested inputs to label, and
labelled samples added to the suite's dataset in the file's own format.

``add`` checks labelled samples against the suite (every field filled, labels within their
values, required inputs present, ids unique) and merges them atomically, so the next
collection picks them up; nothing is written when any sample has a problem.
"""

from __future__ import annotations

import hashlib
import json
import os
import string
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from promptsweep.core.data.dataset import RawRecord, _clean_id, read_records
from promptsweep.core.data.suite import Suite, template_values
from promptsweep.core.harvest.coverage import Harvested
from promptsweep.core.io.errors import ConfigError
from promptsweep.core.templates.template import PromptTemplate

HARVESTED_FROM = "harvested_from"


def pattern_keys(pattern: str | None) -> list[str]:
    """The record keys a ``str.format`` id pattern reads (``{label}-{key}`` → label, key)."""
    if not pattern:
        return []
    keys = []
    for _, name, _, _ in string.Formatter().parse(pattern):
        if name:
            keys.append(name.split(".", 1)[0].split("[", 1)[0])
    return keys


def unlabelled(suite: Suite, id_key: str | None, item: Harvested) -> dict[str, Any]:
    """A sample for a person to label: the input, every field empty, and where it came from."""
    record = {k: v for k, v in item.candidate.record.items() if k != HARVESTED_FROM}
    if id_key is not None:
        digest = hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:10]
        record[id_key] = f"harvested-{digest}"
    empty = {name: "" for name in suite.fields}
    for key in pattern_keys(suite.spec.id):  # the id pattern's other keys, to fill in too
        if key not in record and key not in empty:
            record[key] = ""
    if suite.spec.expected_key:
        record[suite.spec.expected_key] = empty
    else:
        record.update(empty)
    record[HARVESTED_FROM] = {
        **item.candidate.origin,
        "similarity": round(item.similarity, 4),
        "nearest": item.nearest,
    }
    return record


# ------------------------------------------------------------------------------ writing files


def dumps_records(records: Sequence[Mapping[str, Any]], suffix: str) -> str:
    """Records as the text of a dataset file with this suffix."""
    if suffix in (".jsonl", ".ndjson"):
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    if suffix == ".json":
        return json.dumps(list(records), indent=2, ensure_ascii=False) + "\n"
    if suffix in (".yaml", ".yml"):
        return yaml.safe_dump(list(records), sort_keys=False, allow_unicode=True) if records else "[]\n"
    raise ConfigError(f"unknown file format {suffix!r}; use .json, .jsonl or .yaml")


def _json_indent(text: str) -> int | None:
    for line in text.splitlines()[1:]:
        stripped = line.lstrip(" ")
        if stripped and len(stripped) != len(line):
            return len(line) - len(stripped)
    return None


def merged_text(path: Path, old: str, new: Sequence[Mapping[str, Any]]) -> str:
    """The dataset file with ``new`` records appended, in its own format. JSONL and YAML lists
    are appended to as text (comments and layout stay); JSON is rewritten with its indent."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return (old if not old or old.endswith("\n") else old + "\n") + dumps_records(new, suffix)
    if suffix in (".yaml", ".yml"):
        stripped = old.strip()
        if stripped in ("", "[]"):
            return dumps_records(new, suffix)
        return (old if old.endswith("\n") else old + "\n") + dumps_records(new, suffix)
    if suffix == ".json":
        data = json.loads(old) if old.strip() else []
        indent = _json_indent(old) or 2
        if isinstance(data, dict) and isinstance(data.get("samples"), list):
            data["samples"].extend(new)
        elif isinstance(data, list):
            data.extend(new)
        else:
            raise ConfigError(f'{path}: a dataset must be a list of objects (or {{"samples": [...]}})')
        return json.dumps(data, indent=indent, ensure_ascii=False) + "\n"
    raise ConfigError(f"{path}: unknown dataset format {suffix!r}; use .json, .jsonl or .yaml")


# ------------------------------------------------------------------------------ add


@dataclass
class AddResult:
    added: int
    path: Path
    warnings: list[str]


def _is_blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def check_labelled(
    suite: Suite, template: PromptTemplate, path: Path, records: Sequence[RawRecord]
) -> list[str]:
    """Every problem of labelled samples, each naming ``file:line: field``: a field left empty,
    a label outside the field's ``values``, a required input without a value."""
    problems: list[str] = []
    allowed = suite.allowed_values(None)
    for record in records:
        where = record.where(path)
        labels: Any = record.data
        if suite.spec.expected_key:
            labels = record.data.get(suite.spec.expected_key)
            if not isinstance(labels, Mapping):
                problems.append(f"{where}: {suite.spec.expected_key}: missing (an object with the labels)")
                continue
        for name, spec in suite.fields.items():
            value = labels.get(name)
            if _is_blank(value):
                problems.append(
                    f"{where}: {name}: empty; write the expected value (this sample is not labelled yet)"
                )
                continue
            if name in allowed and spec.unlisted_values == "error":
                values = {suite.normalise_value(name, v) for v in allowed[name]}
                if suite.normalise_value(name, str(value)) not in values:
                    problems.append(f"{where}: {name}: {value!r} is not one of {', '.join(allowed[name])}")
        variables = template_values(record.data, suite.spec.inputs)
        for variable in template.spec.inputs.required:
            if _is_blank(variables.get(variable)):
                source = suite.spec.inputs.get(variable, variable)
                problems.append(f"{where}: {source}: missing; the template's input {variable!r} reads it")
    return problems


def _id_of(suite: Suite, id_key: str | None, data: Mapping[str, Any]) -> str | None:
    if id_key is not None:
        value = data.get(id_key)
        return _clean_id(str(value)) if value is not None else None
    if suite.spec.id is not None:
        labels = data.get(suite.spec.expected_key, {}) if suite.spec.expected_key else data
        try:
            return _clean_id(suite.spec.id.format_map({**data, **dict(labels)}))
        except (KeyError, IndexError, ValueError):
            return None
    return None


def add_labelled(suite: Suite, labelled: Path) -> AddResult:
    """Check labelled samples and append them to the suite's dataset (atomically, in its format).
    Nothing is written when any sample has a problem; every problem is listed."""
    template = suite.load_template()
    records = read_records(labelled)
    if not records:
        raise ConfigError(f"{labelled}: no samples to add")
    problems = check_labelled(suite, template, labelled, records)
    dataset = suite.load_dataset()
    id_key = dataset.id_source if dataset.id_source is not None else suite.spec.id_field
    existing = {s.id: s.where for s in dataset.samples}
    seen: dict[str, str] = {}
    for record in records:
        sample_id = _id_of(suite, id_key, record.data)
        if sample_id is None:
            if id_key is not None:
                problems.append(f"{record.where(labelled)}: {id_key}: missing; every sample needs an id")
            elif suite.spec.id is not None:
                labels = record.data.get(suite.spec.expected_key, {}) if suite.spec.expected_key else {}
                absent = [k for k in pattern_keys(suite.spec.id) if k not in record.data and k not in labels]
                problems.append(
                    f"{record.where(labelled)}: {', '.join(absent) or 'id'}: missing; the suite's id pattern "
                    f"{suite.spec.id!r} reads it"
                )
            continue
        if id_key is None and suite.spec.id is not None:
            blank = [
                k
                for k in pattern_keys(suite.spec.id)
                if _is_blank(record.data.get(k)) and k not in suite.fields
            ]
            if blank:
                problems.append(
                    f"{record.where(labelled)}: {', '.join(blank)}: empty; the suite's id pattern {suite.spec.id!r} reads it"
                )
        where = existing.get(sample_id) or seen.get(sample_id)
        if where is not None:
            problems.append(
                f"{record.where(labelled)}: {id_key or 'id'}: duplicate sample id {sample_id!r} (already at {where})"
            )
        seen[sample_id] = record.where(labelled)
    if problems:
        raise ConfigError(f"{labelled}: {len(problems)} problem(s), nothing added:\n" + "\n".join(problems))
    target = suite.dataset_path
    old = target.read_text(encoding="utf-8")
    text = merged_text(target, old, [r.data for r in records])
    # Write beside the dataset, load it as the next run will, and only then replace the file.
    fd, name = tempfile.mkstemp(prefix=f".{target.stem}-", suffix=target.suffix, dir=target.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        merged = suite.with_overrides(dataset=tmp).load_dataset()
        if len(merged.samples) != len(dataset.samples) + len(records):
            raise ConfigError(f"{target}: merging gave {len(merged.samples)} samples, expected more")
        os.chmod(tmp, os.stat(target).st_mode & 0o777)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    warnings = [w.replace(str(tmp), str(target)) for w in merged.warnings]
    return AddResult(added=len(records), path=target, warnings=warnings)
