"""The response cache: answers committed to SQLite as they arrive, so re-runs and resumed runs
make no repeated LLM calls.

Keyed by ``ChatRequest.cache_key(model_identity)``: sha256 of the model identity
(llama-server's model path and build, else the model id), the canonical request body and
the request's repeat index (``repeats:``), so each repeat is its own entry. With
temperature > 0 a re-run replays the answers drawn first (use ``--llm-cache off`` or
``write`` to draw again).

``check`` mode asks the server anyway and says, per answer, whether it matches the stored
one, without writing: whether cached numbers still hold for this server build.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from promptsweep.core.answers.chat import ChatRequest, ChatResult
from promptsweep.core.io.errors import PromptsweepError
from promptsweep.core.io.files import artifact_mode
from promptsweep.llm.client import EndpointInfo
from promptsweep.llm.endpoint import Layer, SendFn

CACHE_FILENAME = "cache.sqlite3"
CACHE_SCHEMA_VERSION = 1
CacheMode = Literal["off", "read", "write", "read-write", "check"]
MODES: tuple[str, ...] = ("off", "read", "write", "read-write", "check")
DEFAULT_MODE: CacheMode = "read-write"
BUSY_TIMEOUT_MS = 30_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    response TEXT NOT NULL,
    created_at REAL NOT NULL,
    schema_version INTEGER NOT NULL
)
"""


class CacheError(PromptsweepError):
    """The cache file cannot be used (corrupt, not a database, unwritable)."""


@dataclass(frozen=True)
class CacheStats:
    path: Path
    entries: int
    size_bytes: int
    models: dict[str, int]


def cache_path(base_dir: Path) -> Path:
    return base_dir / CACHE_FILENAME


def cache_files(path: Path) -> list[Path]:
    """The database and the files SQLite keeps beside it."""
    return [path, *(path.with_name(path.name + suffix) for suffix in ("-wal", "-shm", "-journal"))]


class ResponseCache:
    """One SQLite connection per process (WAL, ``busy_timeout``), shared by its threads.

    WAL lets xdist workers read while one writes; each ``put`` is its own committed
    transaction, so a killed run keeps every answer it received.

    A symbolic link at the cache's path (or at its ``-wal``/``-shm`` files) is refused: SQLite
    would follow it and turn the target into a database. ``problems`` counts failed reads and
    writes (a damaged file), so the run can say so in its summary.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._pid: int | None = None
        self._lock = threading.Lock()
        self.problems = 0
        self.first_problem: str | None = None

    def note_problem(self, exc: BaseException) -> bool:
        """Count a failed read or write; True the first time."""
        self.problems += 1
        if self.first_problem is None:
            self.first_problem = str(exc)
            return True
        return False

    def _refuse_links(self) -> None:
        for candidate in cache_files(self.path):
            if candidate.is_symlink():
                raise CacheError(
                    f"response cache {candidate} is a symbolic link; refusing to follow it (SQLite would "
                    "write to whatever it points at). Remove it, or run `promptsweep cache clear`"
                )

    def _connect(self) -> sqlite3.Connection:
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._refuse_links()
        created = not self.path.exists()
        try:
            conn = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
            )
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            # Switching to WAL needs a moment of exclusive access: retry if a sibling holds it.
            for attempt in range(50):
                try:
                    conn.execute("PRAGMA journal_mode=WAL")
                    break
                except sqlite3.OperationalError:
                    if attempt == 49:
                        raise
                    time.sleep(0.1)
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(_SCHEMA)
            if created:
                os.chmod(self.path, artifact_mode())  # SQLite creates 0644; artifacts share one mode
        except sqlite3.DatabaseError as exc:
            raise CacheError(
                f"response cache {self.path} cannot be used: {exc}; "
                "delete it or run `promptsweep cache clear`"
            ) from exc
        self._conn, self._pid = conn, os.getpid()
        return conn

    def open(self) -> ResponseCache:
        """Create the file and tables now (the controller does this before workers start)."""
        with self._lock:
            self._connect()
        return self

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._connect().execute("SELECT response FROM responses WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        try:
            data = json.loads(row[0])
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    def count(self, keys: Sequence[str]) -> int:
        """How many of ``keys`` have a stored answer (what a re-run would not have to ask)."""
        found = 0
        with self._lock:
            conn = self._connect()
            for start in range(0, len(keys), 500):
                chunk = list(keys[start : start + 500])
                marks = ",".join("?" * len(chunk))
                query = f"SELECT COUNT(*) FROM responses WHERE key IN ({marks})"
                found += int(conn.execute(query, chunk).fetchone()[0])
        return found

    def put(self, key: str, model: str, response: dict[str, Any]) -> None:
        text = json.dumps(response, ensure_ascii=False, separators=(",", ":"))
        with self._lock:
            self._connect().execute(
                "INSERT OR REPLACE INTO responses (key, model, response, created_at, schema_version) "
                "VALUES (?, ?, ?, ?, ?)",
                (key, model, text, time.time(), CACHE_SCHEMA_VERSION),
            )

    def clear(self) -> int:
        """Delete every entry; returns how many there were."""
        with self._lock:
            conn = self._connect()
            count = int(conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0])
            conn.execute("DELETE FROM responses")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return count

    def stats(self) -> CacheStats:
        with self._lock:
            conn = self._connect()
            rows = conn.execute(
                "SELECT model, COUNT(*) FROM responses GROUP BY model ORDER BY model"
            ).fetchall()
        size = sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*") if p.is_file())
        models = {str(model): int(count) for model, count in rows}
        return CacheStats(path=self.path, entries=sum(models.values()), size_bytes=size, models=models)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def remove(self) -> list[Path]:
        """Delete the cache files (a symbolic link is removed itself, never its target);
        how ``cache clear`` recovers a cache too damaged to open or to empty."""
        self.close()
        removed = []
        for candidate in cache_files(self.path):
            if candidate.is_symlink() or candidate.exists():
                candidate.unlink()
                removed.append(candidate)
        return removed

    def clear_or_remove(self) -> tuple[int | None, str | None]:
        """Empty the cache; if it is damaged (or a link), delete its files instead.
        Returns (entries removed, or None when the files were deleted; the reason)."""
        try:
            return self.clear(), None
        except (sqlite3.DatabaseError, CacheError) as exc:
            self.remove()
            return None, str(exc)


def cache_layer(cache: ResponseCache, mode: CacheMode, *, warn: Callable[[str], None] | None = None) -> Layer:
    """A ``Layer``: a hit returns the stored answer with ``from_cache=True``; a miss asks the
    next layer and stores the answer. Failed calls raise, so errors are never stored.

    In ``check`` mode every call asks the next layer and returns the fresh answer with
    ``cache_check`` set to ``same``, ``different`` (from the stored text) or ``missing``;
    nothing is written.
    """
    if mode == "check":
        return _check_layer(cache, warn or _stderr)
    reads = mode in ("read", "read-write")
    writes = mode in ("write", "read-write")
    report = warn or _stderr
    warned: list[bool] = []

    def trouble(exc: Exception) -> None:
        # A busy or broken cache must not fail the eval: the call is made, and we say so once
        # here and (counted in cache.problems) in the run's terminal summary.
        cache.note_problem(exc)
        if not warned:
            warned.append(True)
            report(f"response cache {cache.path} unavailable ({exc}); continuing without it")

    def layer(info: EndpointInfo, send: SendFn) -> SendFn:
        identity = info.model_identity

        def cached_send(request: ChatRequest) -> ChatResult:
            key = request.cache_key(identity)
            if reads:
                try:
                    hit = cache.get(key)
                except (sqlite3.Error, CacheError) as exc:
                    trouble(exc)
                    hit = None
                if hit is not None:
                    return ChatResult.from_json(hit, from_cache=True)
            result = send(request)
            if writes:
                try:
                    cache.put(key, identity, result.to_json())
                except (sqlite3.Error, CacheError) as exc:
                    trouble(exc)
            return result

        return cached_send

    return layer


def _check_layer(cache: ResponseCache, report: Callable[[str], None]) -> Layer:
    warned: list[bool] = []

    def layer(info: EndpointInfo, send: SendFn) -> SendFn:
        identity = info.model_identity

        def checked_send(request: ChatRequest) -> ChatResult:
            try:
                stored = cache.get(request.cache_key(identity))
            except (sqlite3.Error, CacheError) as exc:
                if not warned:
                    warned.append(True)
                    report(f"response cache {cache.path} unavailable ({exc}); nothing to check against")
                stored = None
            result = send(request)
            if stored is None:
                verdict = "missing"
            else:
                verdict = "same" if str(stored.get("text", "")) == result.text else "different"
            return dataclasses.replace(result, cache_check=verdict)

        return checked_send

    return layer


def _stderr(message: str) -> None:
    print(f"[promptsweep] {message}", file=sys.stderr, flush=True)
