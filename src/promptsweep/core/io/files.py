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


def _link_message(path: Path) -> str:
    return (
        f"{path} is a symbolic link; promptsweep does not write through links under its "
        "directory (it could point at any file). Remove the link."
    )


def open_nofollow(path: Path, flags: int) -> int:
    """``os.open`` that refuses a symbolic link at ``path`` with a clear error, never truncates
    unless asked, and creates files with the usual mode."""
    try:
        return os.open(path, flags | _NOFOLLOW | _CLOEXEC, 0o666)
    except OSError as exc:
        if exc.errno == errno.ELOOP or (path.is_symlink() and exc.errno in (errno.EMLINK, errno.ENOTDIR)):
            raise UnsafePathError(_link_message(path)) from None
        raise


def refuse_links(path: Path, *, within: Path) -> None:
    """``UnsafePathError`` when ``path``, or a directory between ``within`` and it, is a
    symbolic link: a run directory (or its report) linked out of the project would make a
    writer replace whatever the link points at. ``within`` itself may be a link (the user chose
    it); a ``path`` outside ``within`` has only its last component checked."""
    try:
        parts = path.relative_to(within).parts
    except ValueError:
        within, parts = path.parent, (path.name,)
    current = within
    for part in parts:
        current = current / part
        if current.is_symlink():
            raise UnsafePathError(_link_message(current))


def append_whole(fd: int, data: bytes) -> None:
    """Append ``data`` to the file open (``O_APPEND``) at ``fd`` whole, or not at all.

    A full disk (or quota, or file-size limit) lets ``write`` store part of a line, then fail:
    the part is cut off again, so a log of records never ends in a torn one. Written with
    plain ``os.write`` calls, not a buffered file, to know exactly what reached the file.
    Raises the ``OSError``, named after the file, once the file is as it was.
    """
    start = os.fstat(fd).st_size
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except OSError:
        with contextlib.suppress(OSError):  # shrinking a file needs no space
            os.ftruncate(fd, start)
        raise


def os_error_line(exc: OSError, path: Path | None = None) -> str:
    """``<file>: <cause>`` for a failed file operation, as one line for the user; ``path``
    names the file when the error does not (a write to an open descriptor)."""
    cause = exc.strerror or type(exc).__name__
    where = exc.filename or path
    return f"{where}: {cause}" if where else cause


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
        except OSError as exc:  # named after the file meant, not its temporary name
            raise OSError(exc.errno, exc.strerror, str(path)) from None
    else:
        raise FileExistsError(f"cannot create a temporary file beside {path}")
    try:
        os.fchmod(fd, artifact_mode())  # mkstemp makes 0600; artifacts get one mode, as open() gives
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):  # e.g. a full disk: named after the file meant
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        raise
    return tmp


def write_text_atomic(path: Path, text: str, *, within: Path | None = None) -> None:
    """Write to a temporary file beside ``path`` and ``os.replace`` it: readers see the
    old file or the new one, never half of one (as pytest writes its .pyc files).

    ``within``: ``path`` is an artifact under that directory (a run's report), refused with
    ``UnsafePathError`` when it or a directory on the way is a symbolic link
    (:func:`refuse_links`). Without it a link at ``path`` is replaced, never followed."""
    if within is not None:
        refuse_links(path, within=within)
    tmp = _temp_copy(path, text)
    try:
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        raise


def write_text_exclusive(path: Path, text: str) -> None:
    """Like ``write_text_atomic`` but never replaces: a hard link fails if ``path`` exists."""
    tmp = _temp_copy(path, text)
    try:
        os.link(tmp, path)
    finally:
        os.unlink(tmp)


def write_json_atomic(path: Path, data: Any, *, within: Path | None = None) -> None:
    text = json.dumps(data, indent=2, sort_keys=False, ensure_ascii=False) + "\n"
    write_text_atomic(path, text, within=within)
