"""The file reference: shipped JSON Schemas match the models, docs/reference.md documents every
key with an example, and the schemas accept the shipped files and reject typos."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from promptsweep.cli.main import main as cli_main
from promptsweep.cli.schema import SCHEMAS, SHIPPED_DIR, render_schema, schema_filename, stale_schemas

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "docs" / "reference.md"
SECTIONS = {
    "suite": "## Suite",
    "template": "## Prompt template",
    "dataset": "## Dataset",
    "space": "## Search space",
    "experiment": "## Experiment",
}
HEADING = re.compile(r"^### `([^`]+)`\s*$")
YAML_BLOCK = re.compile(r"```yaml\n(.*?)```", re.S)


def _resolve(root: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        node = root["$defs"][name]
    return node


def key_paths(root: dict[str, Any], node: dict[str, Any] | None = None, prefix: str = "") -> Iterator[str]:
    """Dotted key paths a user can write: ``fields.<name>.weight``, ``split.evaluate`` …"""
    node = _resolve(root, root if node is None else node)
    for member in node.get("anyOf", []) + node.get("oneOf", []):
        yield from key_paths(root, member, prefix)
    for key, child in node.get("properties", {}).items():
        yield prefix + key
        yield from key_paths(root, child, f"{prefix}{key}.")
    extra = node.get("additionalProperties")
    if isinstance(extra, dict) and "properties" in _resolve(root, extra):
        yield from key_paths(root, extra, f"{prefix}<name>.")
    if isinstance(node.get("items"), dict):
        yield from key_paths(root, node["items"], prefix)


def _sections() -> dict[str, str]:
    text = REFERENCE.read_text(encoding="utf-8")
    parts = re.split(r"(?m)^(?=## )", text)
    found: dict[str, str] = {}
    for kind, title in SECTIONS.items():
        matches = [p for p in parts if p.startswith(title)]
        assert len(matches) == 1, f"docs/reference.md needs one section starting with {title!r}"
        found[kind] = matches[0]
    return found


def _documented(section: str) -> dict[str, str]:
    """``### `key` `` heading → the text up to the next heading."""
    keys: dict[str, str] = {}
    current: str | None = None
    for line in section.splitlines(keepends=True):
        match = HEADING.match(line)
        if match:
            current = match.group(1)
            keys[current] = ""
        elif line.startswith("#") and not line.startswith("#!"):
            current = None if line.startswith("### ") or line.startswith("## ") else current
        elif current is not None:
            keys[current] += line
    return keys


def _schema(kind: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(render_schema(kind))
    return data


def test_shipped_schemas_match_the_models() -> None:
    stale = stale_schemas(SHIPPED_DIR)
    assert not stale, (
        f"stale JSON Schemas: {', '.join(stale)}; run `promptsweep schema --write src/promptsweep/schemas`"
    )


@pytest.mark.parametrize("kind", list(SCHEMAS))
def test_every_key_is_in_the_reference_with_an_example(kind: str) -> None:
    documented = _documented(_sections()[kind])
    paths = sorted(set(key_paths(_schema(kind))))
    assert paths, kind
    missing = [p for p in paths if p not in documented]
    assert not missing, f"docs/reference.md {SECTIONS[kind]!r} lacks `### \\`key\\`` sections for: {missing}"
    for path in paths:
        blocks = YAML_BLOCK.findall(documented[path])
        assert blocks, f"docs/reference.md: `{path}` ({kind}) has no ```yaml example"
        for block in blocks:
            assert isinstance(yaml.safe_load(block), (dict, list)), f"`{path}` example is not YAML: {block}"


@pytest.mark.parametrize("kind", list(SCHEMAS))
def test_the_reference_documents_no_key_that_does_not_exist(kind: str) -> None:
    paths = set(key_paths(_schema(kind)))
    stray = sorted(set(_documented(_sections()[kind])) - paths)
    assert not stray, (
        f"docs/reference.md {SECTIONS[kind]!r} documents keys the {kind} file does not have: {stray}"
    )


@pytest.mark.parametrize("kind", list(SCHEMAS))
def test_each_sections_full_example_is_valid(kind: str) -> None:
    first = YAML_BLOCK.findall(_sections()[kind])[0]
    jsonschema.validate(yaml.safe_load(first), _schema(kind))


def _shipped_files() -> list[tuple[str, Path]]:
    files = [("suite", p) for p in (ROOT / "evals").glob("*.suite.yaml")]
    files += [("space", p) for p in (ROOT / "evals").glob("*.space*.yaml")]
    files += [("template", p) for p in (ROOT / "prompt_templates").glob("*.yaml")]
    files += [("experiment", p) for p in (ROOT / "evals" / "experiments").glob("*.yaml")]
    files += [("dataset", p) for p in (ROOT / "evals" / "data").glob("*.json")]
    return files


@pytest.mark.parametrize(
    ("kind", "path"), _shipped_files(), ids=lambda v: v.name if isinstance(v, Path) else v
)
def test_schemas_accept_the_shipped_files(kind: str, path: Path) -> None:
    data = json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())
    jsonschema.validate(data, _schema(kind))


def test_schema_rejects_a_key_typo() -> None:
    suite = yaml.safe_load((ROOT / "evals" / "k8s_triage.suite.yaml").read_text())
    suite["fields"]["severity"]["wieght"] = suite["fields"]["severity"].pop("weight")
    with pytest.raises(jsonschema.ValidationError, match="'wieght' was unexpected"):
        jsonschema.validate(suite, _schema("suite"))


def test_schema_descriptions_reach_the_editor() -> None:
    weight = _schema("suite")["$defs"]["FieldSpec"]["properties"]["weight"]
    assert "Share of the overall score" in weight["description"]


def test_schema_command_prints_writes_and_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["schema", "suite"]) == 0
    assert json.loads(capsys.readouterr().out)["title"] == "promptsweep suite"
    assert cli_main(["schema", "--write", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(schema_filename(k) for k in SCHEMAS)
    assert cli_main(["schema", "--check", str(tmp_path)]) == 0
    (tmp_path / "suite.schema.json").write_text("{}")
    capsys.readouterr()
    assert cli_main(["schema", "--check", str(tmp_path)]) == 1
    assert f"stale schemas in {tmp_path}: suite; run `promptsweep schema --write {tmp_path}`" in (
        capsys.readouterr().err
    )
