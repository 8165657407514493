"""Files written safely: atomic replaces (readers never see half a file), exclusive creates,
and no-follow opens for files at fixed names (lock files, logs, the results log).

A checkout can carry symbolic links under ``.promptsweep/`` (a pull request can commit one):
a lock file opened with ``"w"`` through such a link truncates whatever it points at. Fixed
names are therefore opened with ``O_NOFOLLOW`` and never truncated; replaced files are
written to a fresh temporary name and renamed, which replaces a link instead of following it.
Every artifact gets the same mode, ``0o666`` minus the umask, as ``open()`` would give.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from promptsweep.core.io.errors import PromptsweepError

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_umask_lock = threading.Lock()


class UnsafePathError(PromptsweepError):
    """A path that must be a plain file is a symbolic link (or cannot be opened safely)."""


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux ``/proc``)."""
    with contextlib.suppress(OSError, ValueError):
        match = re.search(r"^Umask:\s*([0-7]+)", Path("/proc/self/status").read_text(), re.M)
        if match:
            return int(match.group(1), 8)
    with _umask_lock:  # elsewhere: set and restore (the documented way to read it)
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def artifact_mode() -> int:
    """The mode every artifact gets: what ``open(path, "w")`` would create."""
    return 0o666 & ~current_umask()


def open_nofollow(path: Path, flags: int) -> int:
    """``os.open`` that refuses a symbolic link at ``path`` with a clear error, never truncates
    unless asked, and creates files with the usual mode."""
    try:
        return os.open(path, flags | _NOFOLLOW | _CLOEXEC, 0o666)
    except OSError as exc:
        if exc.errno == errno.ELOOP or (path.is_symlink() and exc.errno in (errno.EMLINK, errno.ENOTDIR)):
            raise UnsafePathError(
                f"{path} is a symbolic link; promptsweep does not write through links under its "
                "directory (it could point at any file). Remove the link."
            ) from None
        raise


@contextlib.contextmanager
def locked_file(path: Path) -> Iterator[int]:
    """An exclusive ``flock`` on ``path``, created if missing, never truncated, never followed
    through a symbolic link. Yields the file descriptor."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = open_nofollow(path, os.O_RDWR | os.O_CREAT)
    try:
        try:
            import fcntl  # POSIX only
        except ImportError:  # pragma: no cover - Windows: no advisory locks, still no truncation
            yield fd
            return
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield fd
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def open_append(path: Path, *, binary: bool = False) -> IO[Any]:
    """Open for appending (logs, ``results.jsonl``) without following a symbolic link."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = open_nofollow(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    if binary:
        return os.fdopen(fd, "ab")
    return os.fdopen(fd, "a", encoding="utf-8")


def utc_stamp(now: datetime | None = None) -> str:
    """``20261123T093512Z``: sorts by time and is safe in file names."""
    return (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%SZ")


def _temp_copy(path: Path, text: str) -> str:
    """Write ``text`` to a synced temporary file beside ``path``; the caller moves it in place.

    Not ``tempfile.mkstemp``: it creates files 0600, so reports and winner files would be
    private while ``results.jsonl`` and the cache (plain ``open``) follow the umask. Every
    artifact is created with the same mode, 0666 minus the umask.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = str(path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            fd = os.open(tmp, flags, 0o666)
            break
        except FileExistsError:
            continue
    else:
        raise FileExistsError(f"cannot create a temporary file beside {path}")
    try:
        os.fchmod(fd, artifact_mode())  # mkstemp makes 0600; artifacts get one mode, as open() gives
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return tmp


def write_text_atomic(path: Path, text: str) -> None:
    """Write to a temporary file beside ``path`` and ``os.replace`` it: readers see the
    old file or the new one, never half of one (as pytest writes its .pyc files)."""
    tmp = _temp_copy(path, text)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_text_exclusive(path: Path, text: str) -> None:
    """Like ``write_text_atomic`` but never replaces: a hard link fails if ``path`` exists."""
    tmp = _temp_copy(path, text)
    try:
        os.link(tmp, path)
    finally:
        os.unlink(tmp)


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False, ensure_ascii=False) + "\n")
