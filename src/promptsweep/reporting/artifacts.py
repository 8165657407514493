"""Run artifacts: the run directory and the line-flushed results log."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import threading
from pathlib import Path
from typing import Any

from promptsweep.core.answers.result import SampleResult
from promptsweep.core.io.errors import PromptsweepError
from promptsweep.core.io.files import (
    append_whole,
    open_nofollow,
    os_error_line,
    utc_stamp,
    write_json_atomic,
    write_text_atomic,
)

RUNS_DIRNAME = "runs"
REPORT_FILENAME = "report.html"
CONFIG_SCHEMA_VERSION = 1
_HOW = "choose another with --promptsweep-dir or $PROMPTSWEEP_DIR"


class ArtifactDirError(PromptsweepError):
    """The promptsweep directory cannot be written safely (unwritable, or a link in it)."""


def _linked_dir(path: Path) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(path).st_mode) and path.is_dir()
    except OSError:
        return False


def check_base_dir(base: Path, *, base_may_be_link: bool = True) -> None:
    """Refuse, before anything is written, a promptsweep directory that cannot be used safely:
    one that is not a writable directory (or cannot be created), and symbolic links to
    directories inside it (``runs -> /elsewhere`` in a checkout would make every run write
    there). ``base_may_be_link``: the directory itself was chosen by the user (command line,
    environment); the default ``.promptsweep`` of a checkout may not be a link either.
    Writes nothing; ``ArtifactDirError`` names the path and the fix."""
    if not base_may_be_link and _linked_dir(base):
        raise ArtifactDirError(
            f"{base} is a symbolic link to a directory; promptsweep does not write its runs through "
            f"links (a checkout could point it anywhere): remove the link, or {_HOW}"
        )
    if base.is_dir():
        try:
            children = list(os.scandir(base))
        except OSError as exc:
            raise ArtifactDirError(
                f"{base}: cannot read the promptsweep directory ({exc.strerror}); {_HOW}"
            ) from None
        for entry in children:
            if entry.is_symlink() and Path(entry.path).is_dir():
                raise ArtifactDirError(
                    f"{entry.path} is a symbolic link to a directory; promptsweep does not write "
                    f"through links under its directory (it could point anywhere): remove the link, or {_HOW}"
                )
        existing = base
    else:
        existing = base
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise ArtifactDirError(
                f"{base}: cannot create the promptsweep directory there ({existing} is not a directory); {_HOW}"
            )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ArtifactDirError(
            f"{base}: the promptsweep directory is not writable ({existing}: permission denied); {_HOW}"
        )


def unusable_dir_message(base: Path, exc: OSError) -> str:
    """The one line shown when writing under the promptsweep directory fails after all."""
    where = exc.filename or base
    return f"{base}: cannot write the promptsweep directory ({where}: {exc.strerror or exc}); {_HOW}"


class ArtifactWriteError(ArtifactDirError):
    """A run artifact could not be written (a full disk, a quota): the run stops with one line."""


def write_failed_message(exc: OSError, kept: str, path: Path | None = None) -> str:
    """The one line a run ends with when its artifacts cannot be written (a full disk)."""
    return f"cannot write {os_error_line(exc, path)}; {kept}. Free some space and run again"


class ResultsWriter:
    """Appends one JSON line per finished sample and syncs it at once, so an interrupted run
    keeps every result it finished; a line is stored whole or not at all (a full disk)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = open_nofollow(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        self.written = 0
        self._lock = threading.Lock()  # the optimizer records from its worker threads

    def write(self, record: dict[str, Any]) -> None:
        """``ArtifactWriteError`` (the file as it was before) when the line cannot be stored."""
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
        with self._lock:
            if self._fd is None:
                raise ValueError(f"{self.path}: the results log is closed")
            try:
                append_whole(self._fd, line.encode("utf-8"))
            except OSError as exc:
                kept = f"the run stops here, the {self.written} results before this one are kept whole"
                raise ArtifactWriteError(write_failed_message(exc, kept, self.path)) from None
            self.written += 1

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


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
        """A new run directory; ``ArtifactDirError`` when the place is unwritable or linked."""
        check_base_dir(base)
        runs = base / RUNS_DIRNAME
        try:
            runs.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ArtifactDirError(unusable_dir_message(base, exc)) from None
        stem = f"{stamp or utc_stamp()}-{name}"
        for attempt in range(1, 1000):
            root = runs / (stem if attempt == 1 else f"{stem}-{attempt}")
            try:
                root.mkdir()
            except FileExistsError:
                continue
            except OSError as exc:
                raise ArtifactDirError(unusable_dir_message(base, exc)) from None
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
        self.write_json(self.config_path.name, {"schema_version": CONFIG_SCHEMA_VERSION, **config})

    def write_text(self, name: str, text: str) -> Path:
        """Write (atomically) the artifact ``name`` in this run directory; a symbolic link at
        the directory or at the file is refused (``UnsafePathError``), never followed."""
        path = self.root / name
        write_text_atomic(path, text, within=self.root.parent)
        return path

    def write_json(self, name: str, data: Any) -> Path:
        path = self.root / name
        write_json_atomic(path, data, within=self.root.parent)
        return path

    def read_config(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.config_path.read_text(encoding="utf-8"))
        return data

    def results(self) -> list[SampleResult]:
        return read_results(self.results_path)
