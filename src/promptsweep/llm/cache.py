"""The response cache: answers committed to SQLite as they arrive, so re-runs and resumed runs
make no repeated LLM calls.

Keyed by ``ChatRequest.cache_key(model_identity)``: sha256 of the model identity
(llama-server's model path and build, else the model id), the canonical request body and
the request's repeat index (``repeats:``), so each repeat is its own entry. With
temperature > 0 a re-run replays the answers drawn first (use ``--llm-cache off`` or
``write`` to draw again).

``check`` mode asks the server anyway and says, per answer, whether it matches the stored
one, without writing: whether cached numbers still hold for this server build.

**Trust.** A cache file is data like any other in a pull request: whoever commits it decides
what the "model" answered. So every entry records where and when it was written (``host``,
``created_at``) and carries an HMAC signature made with a secret that belongs to this cache and
lives outside the project (``CacheKeys``, under the user's cache directory). A hit is *trusted*
when its signature verifies with this machine's key for the cache and the cache file is not
tracked by git; any other hit (a cache copied or committed from elsewhere, one tracked by git,
entries written before signing existed, or altered ones) is still answered from, but counted,
so a run can say that no model was asked here (and refuse to gate on it under ``CI=true``,
``promptsweep.plugin.cache``). ``trust`` (``--llm-cache-trust``) accepts such entries and, where
the run writes, signs them as this machine's.

An answer that names another model than the one its request was keyed on (the server switched
models, or answers for another) is returned but not stored under that key, and counted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import os
import re
import secrets
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from promptsweep.core.answers.chat import ChatRequest, ChatResult
from promptsweep.core.io.errors import PromptsweepError
from promptsweep.core.io.files import artifact_mode, write_text_exclusive
from promptsweep.llm.client import EndpointInfo
from promptsweep.llm.endpoint import Layer, SendFn

CACHE_FILENAME = "cache.sqlite3"
CACHE_SCHEMA_VERSION = 2
"""2: entries carry ``host`` and ``signature`` (version 1 entries read back unsigned: untrusted)."""
KEYS_DIRNAME = "cache-keys"
"""Where the caches' secrets live, under the user's cache directory (never in the project)."""
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
    schema_version INTEGER NOT NULL,
    host TEXT,
    signature TEXT
)
"""
_META_SCHEMA = "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)"
_CACHE_ID = re.compile(r"^[0-9a-f]{32}$")
_HOST = socket.gethostname()[:255] or "unknown"
# Model names that say nothing about the model: older llama-server builds name every answer
# "gpt-3.5-turbo-0613" whatever they run. Such a name is never taken for another model.
_PLACEHOLDER_MODELS = frozenset({"gpt-3.5-turbo", "gpt-3.5-turbo-0613", "unknown", "default"})


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


class CacheKeys:
    """The secrets that sign cache entries, one per cache (named by the random ``cache_id`` in
    its ``meta`` table), in a private directory outside the project. A cache file that is
    copied, committed or restored elsewhere carries its entries but not its key, so its entries
    verify only where they were written."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def get(self, cache_id: str, *, create: bool) -> bytes | None:
        """The cache's key, made now when ``create`` and none exists; None when there is none
        (or the id is not one promptsweep writes: a hostile cache names no file here)."""
        if not _CACHE_ID.match(cache_id):
            return None
        path = self.directory / f"{cache_id}.key"
        for _ in range(3):
            try:
                text = path.read_text().strip()
            except FileNotFoundError:
                text = ""
            except OSError:
                return None
            if len(text) == 64:
                try:
                    return bytes.fromhex(text)
                except ValueError:
                    return None
            if not create:
                return None
            try:
                self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
                os.chmod(self.directory, 0o700)  # the keys are only ever read by their owner
                write_text_exclusive(path, secrets.token_hex(32) + "\n")
                os.chmod(path, 0o600)
            except FileExistsError:
                time.sleep(0.05)  # another process made it first: read theirs
            except OSError:
                return None
        return None


@dataclass(frozen=True)
class Entry:
    """A stored answer and where it came from."""

    response: dict[str, Any]
    model: str
    created_at: float
    host: str | None
    trusted: bool
    """Signed with this machine's key for the cache, in a file git does not track."""
    reason: str | None = None
    """Why not trusted, for a message."""


def tracked_by_git(path: Path) -> bool:
    """Whether ``path`` is in a git repository's index: a committed cache is whatever the last
    commit made it, whoever wrote that commit."""
    try:
        done = subprocess.run(
            ["git", "ls-files", "--error-unmatch", "--", path.name],
            cwd=path.parent,
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def _when(created_at: float) -> str:
    try:
        return datetime.fromtimestamp(created_at, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    except (OverflowError, OSError, ValueError):
        return "an unknown time"


def _signature(
    key: bytes, cache_id: str, entry_key: str, model: str, text: str, created_at: float, host: str
) -> str:
    message = json.dumps([cache_id, entry_key, model, text, repr(float(created_at)), host], ensure_ascii=True)
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


class ResponseCache:
    """One SQLite connection per process (WAL, ``busy_timeout``), shared by its threads.

    WAL lets xdist workers read while one writes; each ``put`` is its own committed
    transaction, so a killed run keeps every answer it received.

    A symbolic link at the cache's path (or at its ``-wal``/``-shm`` files) is refused: SQLite
    would follow it and turn the target into a database. ``problems`` counts failed reads and
    writes (a damaged file), so the run can say so in its summary.
    """

    def __init__(self, path: Path, keys: CacheKeys | None = None, *, trust: bool = False) -> None:
        """``keys``: where this cache's signing key is kept (None: entries are written unsigned
        and no hit is trusted). ``trust``: ``--llm-cache-trust``."""
        self.path = path
        self.keys = keys
        self.trust = trust
        self._conn: sqlite3.Connection | None = None
        self._pid: int | None = None
        self._lock = threading.Lock()
        self._cache_id = ""
        self._key: bytes | None = None
        self._key_missing = False
        self.tracked = False
        """The cache file is tracked by git (checked once per process, on opening it)."""
        self.problems = 0
        self.first_problem: str | None = None
        self.untrusted_hits = 0
        self.untrusted_reason: str | None = None
        self.model_mismatches = 0
        self.mismatch_example: str | None = None
        self._counts = threading.Lock()

    def note_untrusted(self, reason: str | None) -> None:
        with self._counts:
            self.untrusted_hits += 1
            self.untrusted_reason = self.untrusted_reason or reason

    def note_mismatch(self, example: str) -> None:
        with self._counts:
            self.model_mismatches += 1
            self.mismatch_example = self.mismatch_example or example

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
            _add_columns(conn)
            conn.execute(_META_SCHEMA)
            self._cache_id = _cache_id(conn)
            if created:
                os.chmod(self.path, artifact_mode())  # SQLite creates 0644; artifacts share one mode
        except sqlite3.DatabaseError as exc:
            raise CacheError(
                f"response cache {self.path} cannot be used: {exc}; "
                "delete it or run `promptsweep cache clear`"
            ) from exc
        self._conn, self._pid = conn, os.getpid()
        self._key, self._key_missing = None, False
        self.tracked = not created and tracked_by_git(self.path)
        return conn

    def _signing_key(self, *, create: bool) -> bytes | None:
        """This cache's key on this machine; looked for once per process until it is made."""
        if (
            self._key is None
            and self.keys is not None
            and self._cache_id
            and (create or not self._key_missing)
        ):
            self._key = self.keys.get(self._cache_id, create=create)
            self._key_missing = self._key is None
        return self._key

    def open(self) -> ResponseCache:
        """Create the file and tables now (the controller does this before workers start)."""
        with self._lock:
            self._connect()
        return self

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored answer, whoever wrote it (``lookup`` says that too)."""
        entry = self.lookup(key)
        return None if entry is None else entry.response

    def lookup(self, key: str) -> Entry | None:
        """The stored answer with where and when it was written, and whether it is trusted."""
        with self._lock:
            row = (
                self._connect()
                .execute(
                    "SELECT response, model, created_at, host, signature FROM responses WHERE key = ?", (key,)
                )
                .fetchone()
            )
            signing_key = self._signing_key(create=False) if row is not None else None
        if row is None:
            return None
        text, model, created_at, host, signature = row
        try:
            data = json.loads(text)
        except (TypeError, ValueError, RecursionError):
            return None
        if not isinstance(data, dict):
            return None
        when = float(created_at) if isinstance(created_at, (int, float)) else 0.0
        where = str(host)[:255] if host else None
        written = f"written on {where or 'an unnamed host'} at {_when(when)}"
        reason: str | None = None
        if self.tracked:
            reason = f"{self.path.name} is tracked by git, so its entries are whatever a commit made them"
        elif not signature:
            reason = f"{written}, before promptsweep signed its cache entries"
        elif signing_key is None:
            reason = f"{written}; this machine has no key for this cache, so it did not write it"
        elif not hmac.compare_digest(
            str(signature),
            _signature(signing_key, self._cache_id, key, str(model), str(text), when, str(host)),
        ):
            reason = f"{written}, but its signature does not match (written elsewhere, or altered)"
        return Entry(data, str(model), when, where, trusted=reason is None, reason=reason)

    def sign(self, key: str) -> bool:
        """Sign an entry as this machine's (``--llm-cache-trust`` in a run that writes): later
        runs here trust it without the flag. Never in a file git tracks. True when signed."""
        if self.tracked:
            return False
        with self._lock:
            conn = self._connect()
            signing_key = self._signing_key(create=True)
            row = conn.execute(
                "SELECT model, response, created_at FROM responses WHERE key = ?", (key,)
            ).fetchone()
            if signing_key is None or row is None:
                return False
            model, text, created_at = row
            when = float(created_at) if isinstance(created_at, (int, float)) else time.time()
            signature = _signature(signing_key, self._cache_id, key, str(model), str(text), when, _HOST)
            conn.execute(
                "UPDATE responses SET host = ?, signature = ?, created_at = ? WHERE key = ?",
                (_HOST, signature, when, key),
            )
        return True

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
        """Store an answer, signed with this cache's key (made on the first write here)."""
        text = json.dumps(response, ensure_ascii=False, separators=(",", ":"))
        created_at = time.time()
        with self._lock:
            conn = self._connect()
            signing_key = self._signing_key(create=True)
            signature = (
                _signature(signing_key, self._cache_id, key, model, text, created_at, _HOST)
                if signing_key is not None
                else None
            )
            conn.execute(
                "INSERT OR REPLACE INTO responses "
                "(key, model, response, created_at, schema_version, host, signature) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (key, model, text, created_at, CACHE_SCHEMA_VERSION, _HOST, signature),
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


def model_matches(answered: str | None, expected: Sequence[str]) -> bool:
    """Whether an answer's ``model`` is one of the names the request was keyed on: the same
    name, a dated snapshot of it (``gpt-4o`` answered as ``gpt-4o-2024-08-06``) or the file
    name of a path. A server that names no model, or only a placeholder, cannot be told apart."""
    if not answered or answered in _PLACEHOLDER_MODELS or not expected:
        return True
    return any(
        answered == name or answered.startswith(name + "-") or Path(name).name == answered
        for name in expected
    )


def cache_layer(cache: ResponseCache, mode: CacheMode, *, warn: Callable[[str], None] | None = None) -> Layer:
    """A ``Layer``: a hit returns the stored answer with ``from_cache=True``; a miss asks the
    next layer and stores the answer. Failed calls raise, so errors are never stored.

    A hit the cache cannot vouch for (``Entry.trusted``) is answered from and counted on
    ``cache.untrusted_hits``; with ``cache.trust`` it is signed as this machine's where the
    layer writes. An answer naming another model than the endpoint reported (or the request
    named) is returned but not stored, and counted on ``cache.model_mismatches``.

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
        reported = [info.model_id] if info.model_id else []
        learned: list[str] = []  # the first answer's model, when the endpoint named none

        def cached_send(request: ChatRequest) -> ChatResult:
            key = request.cache_key(identity)
            if reads:
                try:
                    hit = cache.lookup(key)
                    if hit is not None and not hit.trusted:
                        cache.note_untrusted(hit.reason)
                        if cache.trust and writes:
                            cache.sign(key)
                except (sqlite3.Error, CacheError) as exc:
                    trouble(exc)
                    hit = None
                if hit is not None:
                    return ChatResult.from_json(hit.response, from_cache=True)
            result = send(request)
            expected = [*reported, *([request.model] if request.model else [])] or learned
            if not model_matches(result.model, expected):
                cache.note_mismatch(f"{result.model!r}, keyed on {expected[0]!r}")
                return result
            if not expected and result.model and result.model not in _PLACEHOLDER_MODELS:
                learned.append(result.model)
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


def _cache_id(conn: sqlite3.Connection) -> str:
    """The cache's random id (made on first use), which names its key. A damaged page here is
    not fatal: the cache then has no id, its entries verify nowhere, and the reads and writes
    that fail are counted like any other (``note_problem``)."""
    try:
        conn.execute(
            "INSERT OR IGNORE INTO meta (name, value) VALUES ('cache_id', ?)", (secrets.token_hex(16),)
        )
        row = conn.execute("SELECT value FROM meta WHERE name = 'cache_id'").fetchone()
    except sqlite3.DatabaseError:
        return ""
    return str(row[0]) if row else ""


def _add_columns(conn: sqlite3.Connection) -> None:
    """Bring a version 1 cache up to date: its entries stay readable (unsigned, so untrusted)."""
    columns = {str(row[1]) for row in conn.execute("PRAGMA table_info(responses)")}
    for column in ("host", "signature"):
        if column not in columns:
            try:
                conn.execute(f"ALTER TABLE responses ADD COLUMN {column} TEXT")
            except sqlite3.OperationalError as exc:  # a sibling process added it first
                if "duplicate column" not in str(exc):
                    raise


def _stderr(message: str) -> None:
    print(f"[promptsweep] {message}", file=sys.stderr, flush=True)
