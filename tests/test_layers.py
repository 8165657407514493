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


CORE = PACKAGE / "core"
CORE_LAYERS = ["io", "templates", "answers", "data", "measure", "neighbours", "harvest", "<top>"]
"""core/'s own rooms, lowest first: files and errors, templates, answers, data, numbers, the nearest
train samples, harvest; ``prompt.py`` and ``evaluate.py`` (the ``<top>``) use them all."""


def core_layer_of(path: Path) -> str:
    parts = path.relative_to(CORE).parts
    return parts[0] if len(parts) > 1 else "<top>"


CORE_MODULES = sorted(p for p in CORE.rglob("*.py") if p != CORE / "__init__.py")


def test_core_holds_no_loose_module() -> None:
    """Every module of core/ lives in a named room, but the two that use every room."""
    loose = sorted(p.name for p in CORE.glob("*.py") if p.name != "__init__.py")
    assert loose == ["evaluate.py", "prompt.py"]
    rooms = sorted(p.name for p in CORE.iterdir() if p.is_dir() and p.name != "__pycache__")
    assert rooms == sorted(CORE_LAYERS[:-1])


@pytest.mark.parametrize("path", CORE_MODULES, ids=lambda p: str(p.relative_to(CORE)))
def test_a_core_room_imports_only_rooms_below_it(path: Path) -> None:
    layer = core_layer_of(path)
    allowed = set(CORE_LAYERS[: CORE_LAYERS.index(layer) + 1])
    for name in imports(path):
        if name.startswith("promptsweep.core."):
            target = name.split(".")[2]
            target = target if (CORE / target).is_dir() else "<top>"
            assert target in allowed, f"core/{path.relative_to(CORE)} ({layer}) imports {name} ({target})"
