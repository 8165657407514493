"""The package's layers, checked: each imports only the layers before it, and nothing below the
pytest glue imports pytest (the public API must work in a process without it)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "promptsweep"
LAYERS = ["core", "llm", "server", "optimize", "reporting", "config", "api", "plugin", "cli"]
PYTEST_FREE = {"core", "llm", "server", "optimize", "reporting", "config", "api"}


def layer_of(path: Path) -> str:
    part = path.relative_to(PACKAGE).parts[0]
    return part.removesuffix(".py")


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.parent != PACKAGE or p.name == "api.py")


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_a_module_imports_only_layers_before_its_own(path: Path) -> None:
    layer = layer_of(path)
    allowed = set(LAYERS[: LAYERS.index(layer) + 1])
    for name in imports(path):
        if name.startswith("promptsweep."):
            target = name.split(".")[1]
            assert target in allowed, f"{path.relative_to(PACKAGE)} ({layer}) imports {name} ({target})"
        if layer in PYTEST_FREE:
            assert name.split(".")[0] not in ("pytest", "_pytest", "xdist", "pluggy"), (
                f"{path.relative_to(PACKAGE)} is below the pytest glue but imports {name}"
            )
