"""Files written safely: atomic replaces (readers never see half a file) and exclusive creates."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


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
