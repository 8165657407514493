"""Run artifacts: the run directory and the line-flushed results log."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import IO, Any

from promptsweep.core.files import open_append, utc_stamp, write_json_atomic
from promptsweep.core.result import SampleResult

RUNS_DIRNAME = "runs"
CONFIG_SCHEMA_VERSION = 1


class ResultsWriter:
    """Appends one JSON line per finished sample and flushes it at once, so an
    interrupted run keeps every result it finished."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: IO[str] = open_append(path)

    def write(self, record: dict[str, Any]) -> None:
        self._handle.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()


def read_results(path: Path) -> list[SampleResult]:
    """Read ``results.jsonl``; a torn last line (killed mid-write) is skipped, not fatal."""
    results: list[SampleResult] = []
    if not path.exists():
        return results
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if not line:
                continue
            try:
                results.append(SampleResult.from_json(json.loads(line)))
            except (ValueError, TypeError):
                continue
    return results


def git_commit(cwd: Path) -> str | None:
    """The commit the prompts were evaluated at, with ``-dirty`` when files differ."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}-dirty" if dirty else head


class RunDirectory:
    """``<base>/runs/<UTC timestamp>-<name>/`` holding config.json, results.jsonl,
    metrics.json and summary.md for one suite run."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def create(cls, base: Path, name: str, *, stamp: str | None = None) -> RunDirectory:
        runs = base / RUNS_DIRNAME
        runs.mkdir(parents=True, exist_ok=True)
        stem = f"{stamp or utc_stamp()}-{name}"
        for attempt in range(1, 1000):
            root = runs / (stem if attempt == 1 else f"{stem}-{attempt}")
            try:
                root.mkdir()
            except FileExistsError:
                continue
            return cls(root)
        raise RuntimeError(f"cannot create a run directory under {runs}")

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def config_path(self) -> Path:
        return self.root / "config.json"

    @property
    def results_path(self) -> Path:
        return self.root / "results.jsonl"

    @property
    def metrics_path(self) -> Path:
        return self.root / "metrics.json"

    @property
    def summary_path(self) -> Path:
        return self.root / "summary.md"

    def write_config(self, config: dict[str, Any]) -> None:
        write_json_atomic(self.config_path, {"schema_version": CONFIG_SCHEMA_VERSION, **config})

    def read_config(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.config_path.read_text(encoding="utf-8"))
        return data

    def results(self) -> list[SampleResult]:
        return read_results(self.results_path)
