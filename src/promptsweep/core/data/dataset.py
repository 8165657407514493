"""Golden samples: loading JSON, JSONL and YAML datasets, sample ids, and the train/validation split."""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import string
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from promptsweep.core.io.bounded_yaml import MAX_DEPTH, nesting_depth_exceeds
from promptsweep.core.io.errors import ConfigError
from promptsweep.core.io.load import decode_text, load_yaml_file, read_text_file

_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_.:+-]+")


@dataclass(frozen=True)
class RawRecord:
    """One record as read from the file, with where it was found (for error messages)."""

    data: dict[str, Any]
    index: int
    line: int | None

    def where(self, path: Path) -> str:
        return f"{path}:{self.line}" if self.line else f"{path} (record #{self.index + 1})"


@dataclass(frozen=True)
class Sample:
    """A labelled example: its id, the whole record, and the expected field values."""

    id: str
    index: int
    data: Mapping[str, Any]
    expected: Mapping[str, str]
    category: str | None
    where: str


@dataclass(frozen=True)
class Dataset:
    """The samples of one file, in file order, and a content hash for run provenance."""

    path: Path
    samples: tuple[Sample, ...]
    sha256: str
    warnings: tuple[str, ...] = ()
    """Problems the run may go on with (e.g. a label outside ``values:`` the suite allows)."""
    id_source: str | None = None
    """The data key the sample ids come from (given or found), or ``None`` for patterns/positions."""

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    def __len__(self) -> int:
        return len(self.samples)

    def by_id(self) -> dict[str, Sample]:
        return {s.id: s for s in self.samples}


def read_records(path: Path) -> list[RawRecord]:
    """Read a dataset file by its extension: ``.json`` (a list, or ``{"samples": [...]}``),
    ``.jsonl``/``.ndjson`` (one object a line) or ``.yaml``/``.yml`` (a list)."""
    if not path.is_file():
        raise ConfigError(f"dataset not found: {path}")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return _read_jsonl(path)
    if suffix == ".json":
        return _read_json(path)
    if suffix in (".yaml", ".yml"):
        return _check_objects(path, load_yaml_file(path), lines=None)
    raise ConfigError(f"{path}: unknown dataset format {suffix!r}; use .json, .jsonl or .yaml")


def _read_jsonl(path: Path) -> list[RawRecord]:
    records: list[RawRecord] = []
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    with handle:
        for lineno, raw in enumerate(handle, start=1):
            line = decode_text(path, raw, line_offset=lineno - 1)
            if not line.strip():
                continue
            data = _parse_json(path, line, lineno, single_line=True)
            if not isinstance(data, dict):
                raise ConfigError(
                    f"{path}:{lineno}: each line must be a JSON object, got {type(data).__name__}"
                )
            records.append(RawRecord(data=data, index=len(records), line=lineno))
    return records


def _parse_json(path: Path, text: str, first_line: int = 1, *, single_line: bool = False) -> Any:
    """``json.loads`` whose failures are one line naming the file and line, never a traceback."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        line = first_line + exc.lineno - 1 if single_line is False else first_line
        raise ConfigError(f"{path}:{line}: invalid JSON: {exc.msg} (column {exc.colno})") from None
    except RecursionError:
        data = None
        deep = True
    except ValueError as exc:  # e.g. an integer with more digits than Python converts
        raise ConfigError(f"{path}:{first_line}: a value cannot be read: {exc}") from None
    else:
        deep = nesting_depth_exceeds(data)
    if deep:
        raise ConfigError(
            f"{path}:{first_line}: values are nested more than {MAX_DEPTH} levels deep; flatten the structure"
        )
    return data


def _read_json(path: Path) -> list[RawRecord]:
    text = read_text_file(path)
    data = _parse_json(path, text)
    if isinstance(data, dict) and isinstance(data.get("samples"), list):
        data = data["samples"]
    return _check_objects(path, data, lines=_top_level_lines(text) if isinstance(data, list) else None)


def _top_level_lines(text: str) -> list[int] | None:
    """Line number of each element of a top-level JSON list, so errors can name a line.

    The standard decoder gives no positions for nested values; ``raw_decode`` over the
    list's elements does, at the cost of a second parse (cheap next to any LLM call).
    """
    decoder = json.JSONDecoder()
    pos = text.find("[")
    if pos < 0:
        return None
    lines: list[int] = []
    line = text.count("\n", 0, pos) + 1
    last = pos
    pos += 1
    ws = set(string.whitespace + ",")
    while True:
        while pos < len(text) and text[pos] in ws:
            pos += 1
        if pos >= len(text) or text[pos] == "]":
            return lines
        line += text.count("\n", last, pos)
        last = pos
        lines.append(line)
        try:
            _, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            return None


def _check_objects(path: Path, data: Any, lines: list[int] | None) -> list[RawRecord]:
    if not isinstance(data, list):
        raise ConfigError(f"{path}: a dataset must be a list of objects, got {type(data).__name__}")
    records = []
    for index, item in enumerate(data):
        line = lines[index] if lines and index < len(lines) else None
        if not isinstance(item, dict):
            where = f"{path}:{line}" if line else f"{path} (record #{index + 1})"
            raise ConfigError(f"{where}: each sample must be an object, got {type(item).__name__}")
        records.append(RawRecord(data=item, index=index, line=line))
    return records


def _clean_id(text: str) -> str:
    return _ID_UNSAFE.sub("_", text).strip("_") or "sample"


def expected_values(
    data: Mapping[str, Any], fields: Sequence[str], *, expected_key: str | None, where: str
) -> dict[str, str]:
    """The labelled value of every field in one record, as text; a missing one names ``where``."""
    source = data
    if expected_key is not None:
        nested = data.get(expected_key)
        if not isinstance(nested, Mapping):
            raise ConfigError(f"{where}: sample has no {expected_key!r} object with the labels")
        source = nested
    expected: dict[str, str] = {}
    for field in fields:
        if field not in source or source[field] is None:
            raise ConfigError(f"{where}: sample is missing expected field {field!r}")
        expected[field] = _as_text(source[field])
    return expected


def load_dataset(
    path: Path,
    *,
    fields: Sequence[str],
    expected_key: str | None = None,
    id_field: str | None = None,
    id_format: str | None = None,
    category_field: str | None = None,
    records: list[RawRecord] | None = None,
) -> Dataset:
    """Load samples and check each has every expected field.

    Ids come from ``id_field`` (must be unique: duplicates are an error) or from
    ``id_format`` (a ``str.format`` pattern over the record, e.g. ``{root_cause}-{signature_hash}``;
    repeats get ``-2``, ``-3`` in file order, as real log datasets repeat lines),
    else from an obvious id key in the data (``id``, ``ticket_id``; see ``infer_id_field``),
    else the record's position.
    """
    if records is None:
        records = read_records(path)
    if id_field is None and id_format is None:
        id_field = infer_id_field(records, exclude=fields)
    samples: list[Sample] = []
    seen: dict[str, str] = {}
    repeats: dict[str, int] = defaultdict(int)
    for record in records:
        where = record.where(path)
        expected = expected_values(record.data, fields, expected_key=expected_key, where=where)
        if id_field is not None:
            if id_field not in record.data:
                raise ConfigError(f"{where}: sample has no id field {id_field!r}")
            sample_id = _clean_id(str(record.data[id_field]))
            if sample_id in seen:
                raise ConfigError(f"{where}: duplicate sample id {sample_id!r} (first at {seen[sample_id]})")
        else:
            if id_format is not None:
                try:
                    base = _clean_id(id_format.format_map({**record.data, **expected}))
                except (KeyError, IndexError, ValueError) as exc:
                    raise ConfigError(f"{where}: id pattern {id_format!r} cannot be filled: {exc}") from exc
            else:
                base = f"sample{record.index + 1:04d}"
            repeats[base] += 1
            sample_id = base if repeats[base] == 1 else f"{base}-{repeats[base]}"
        seen[sample_id] = where
        category = None
        if category_field is not None:
            value = expected.get(category_field, record.data.get(category_field))
            category = _as_text(value) if value is not None else None
        samples.append(
            Sample(
                id=sample_id,
                index=record.index,
                data=record.data,
                expected=expected,
                category=category,
                where=where,
            )
        )
    return Dataset(path=path, samples=tuple(samples), sha256=file_sha256(path), id_source=id_field)


def _looks_like_id(key: str) -> bool:
    lowered = key.lower()
    return lowered in ("id", "uid", "uuid") or lowered.endswith(("_id", "-id")) or key.endswith("Id")


def infer_id_field(records: Sequence[RawRecord], *, exclude: Sequence[str] = ()) -> str | None:
    """The data key that obviously identifies samples, when the suite names none.

    ``id`` first, then keys like ``ticket_id`` in the first record's order; a key counts
    only when every record has a non-empty scalar value for it and the cleaned values are
    unique, so ids never depend on file order by accident. ``None`` falls back to positions.
    """
    if not records:
        return None
    first = [k for k in records[0].data if isinstance(k, str) and k not in exclude and _looks_like_id(k)]
    for key in sorted(first, key=lambda k: (k.lower() != "id", first.index(k))):
        seen: set[str] = set()
        for record in records:
            value = record.data.get(key)
            if isinstance(value, bool) or not isinstance(value, (str, int)) or str(value).strip() == "":
                break
            cleaned = _clean_id(str(value))
            if cleaned in seen:
                break
            seen.add(cleaned)
        else:
            return key
    return None


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ", ".join(_as_text(v) for v in value)
    return json.dumps(value) if isinstance(value, dict) else str(value)


def ids_sha256(ids: Iterable[str]) -> str:
    """Which samples a run scored, as one hash: runs compare like with like only when it agrees."""
    return hashlib.sha256("\n".join(sorted(set(ids))).encode()).hexdigest()


def samples_sha256(samples: Iterable[Sample]) -> str:
    """Which samples, with what content, as one hash: a pool pin that holds while the rest of the
    file (test labels corrected, samples added to another side) changes."""
    rows = sorted(([s.id, s.data] for s in samples), key=lambda row: str(row[0]))
    return hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode()).hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class Split:
    """Sample ids of the train part (few-shot examples and lookups come from here), the validation
    part (what a search chooses on) and the test part (what confirms a choice; the search never
    reads it). ``notes`` says what the split had to do that the suite did not ask for."""

    train: tuple[str, ...]
    validation: tuple[str, ...]
    seed: int
    test: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    grouped_by: str | None = None
    """The key whose groups the split kept on one side: ``group_by``, or ``None`` when the suite
    names none or the split could not group by it (every sample one group)."""

    @property
    def sha256(self) -> str:
        parts: dict[str, tuple[str, ...]] = {"train": self.train, "validation": self.validation}
        if self.test:  # a split without a test part keeps the hash it always had
            parts["test"] = self.test
        payload = json.dumps(parts).encode()
        return hashlib.sha256(payload).hexdigest()


def stratified_split(
    samples: Sequence[Sample],
    *,
    train: float | int,
    seed: int,
    group_by: str | None = None,
    test: float | int = 0,
    strict_groups: bool = False,
) -> Split:
    """Deterministic split stratified by each sample's category.

    ``train`` (and ``test``) is a fraction of the samples or an exact count. Each category gets
    its share of the quota, rounded by largest remainder so the total is exact; within a
    category the choice is a seeded shuffle of ids sorted by name, so the split does not depend
    on file order. The train part is chosen first and does not depend on ``test``: adding a
    test part takes it out of validation, so pinned few-shot pools stay the same.

    ``group_by`` names a record key (e.g. ``signature_hash``) whose samples must stay on one
    side: near-duplicates of a validation sample never sit in the train part (the source
    of few-shot examples). Groups are then the units of the shuffle, each counted with its
    size, so the train count may miss the quota by less than half a group (golden-v1's 115
    samples at ``train: 0.5`` give 57 or 58, not the 67 an earlier rule took). A key with a single
    value (every sample one group) cannot divide anything: the split falls back to one sample
    per unit and says so in ``notes``, or raises when ``strict_groups`` is set.
    """
    n = len(samples)
    target = _quota(train, n, "train")
    test_target = _quota(test, n, "test")
    if target + test_target > n:
        raise ConfigError(
            f"split: train ({target}) and test ({test_target}) together ask for more than the {n} samples"
        )
    notes: list[str] = []
    units = _split_units(samples, group_by)
    if group_by is not None and n > 1 and len(units) == 1:
        message = (
            f"split.group_by: every sample has the same {group_by!r} value, so grouping would put all "
            f"{n} samples on one side"
        )
        if strict_groups:
            raise ConfigError(message + "; remove group_by or fix the data (split.strict_groups is set)")
        notes.append(message + "; split sample by sample instead (near-duplicates may sit on both sides)")
        units = _split_units(samples, None)
        group_by = None
    train_ids, rest = _take(units, target, f"{seed}")
    test_ids: list[str] = []
    if test_target:
        in_train = set(train_ids)
        rest_units = {k: v for k, v in units.items() if v[1][0] not in in_train}
        test_ids, _ = _take(rest_units, test_target, f"{seed}:test")
    test_set = set(test_ids)
    validation_ids = [i for i in rest if i not in test_set]
    return Split(
        train=tuple(sorted(train_ids)),
        validation=tuple(sorted(validation_ids)),
        seed=seed,
        test=tuple(sorted(test_ids)),
        notes=tuple(notes),
        grouped_by=group_by,
    )


def _quota(share: float | int, n: int, side: str) -> int:
    if isinstance(share, float) and not 0.0 <= share <= 1.0:
        raise ConfigError(f"split.{side} must be a fraction in [0, 1] or a count, got {share}")
    target = share if isinstance(share, int) else round(share * n)
    if not 0 <= target <= n:
        raise ConfigError(f"split.{side} asks for {target} {side} samples but the dataset has {n}")
    return target


def _take(units: Mapping[str, tuple[str, list[str]]], target: int, seed: str) -> tuple[list[str], list[str]]:
    """``target`` samples (in whole units, stratified by category) and the rest."""
    n = sum(len(ids) for _, ids in units.values())
    strata: dict[str, list[tuple[str, list[str]]]] = defaultdict(list)
    for key, (category, ids) in units.items():
        strata[category].append((key, ids))
    quotas: dict[str, int] = {}
    remainders: list[tuple[float, str]] = []
    for name, members in strata.items():
        size = sum(len(ids) for _, ids in members)
        exact = size * target / n if n else 0.0
        quotas[name] = math.floor(exact)
        remainders.append((exact - quotas[name], name))
    spare = target - sum(quotas.values())
    for _, name in sorted(remainders, key=lambda item: (-item[0], item[1]))[:spare]:
        quotas[name] += 1
    # Per category, whole units in a seeded order while they fit its quota; then, over every
    # category, the units left fill what the quotas could not take in whole groups, each only
    # when it brings the count closer to the target (so the count misses it by less than half
    # a group, and exactly when the units are single samples).
    taken_ids: list[str] = []
    left: list[tuple[str, list[str]]] = []
    for name in sorted(strata):
        members = sorted(strata[name])
        random.Random(f"{seed}:{name}").shuffle(members)
        taken = 0
        for key, ids in members:
            if taken + len(ids) <= quotas[name]:
                taken_ids.extend(ids)
                taken += len(ids)
            else:
                left.append((key, ids))
    random.Random(f"{seed}:fill").shuffle(left)
    rest_ids: list[str] = []
    for _, ids in sorted(left, key=lambda unit: len(unit[1])):
        short = target - len(taken_ids)
        if short > 0 and abs(short - len(ids)) < short:
            taken_ids.extend(ids)
        else:
            rest_ids.extend(ids)
    return taken_ids, rest_ids


def _split_units(samples: Sequence[Sample], group_by: str | None) -> dict[str, tuple[str, list[str]]]:
    """The units a split shuffles: each sample alone, or the samples sharing ``group_by``'s value
    (a group's category is its most common one, ties by name)."""
    if group_by is None:
        return {s.id: (s.category or "", [s.id]) for s in samples}
    groups: dict[str, list[Sample]] = defaultdict(list)
    for sample in samples:
        value = sample.data.get(group_by)
        key = f"group:{_as_text(value)}" if value is not None else f"sample:{sample.id}"
        groups[key].append(sample)
    units: dict[str, tuple[str, list[str]]] = {}
    for key, members in groups.items():
        counts: dict[str, int] = defaultdict(int)
        for sample in members:
            counts[sample.category or ""] += 1
        category = min(counts, key=lambda c: (-counts[c], c))
        units[key] = (category, sorted(s.id for s in members))
    return units
