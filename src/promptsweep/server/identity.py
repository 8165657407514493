"""What a managed llama-server will say it is, known before it starts.

The response cache keys on the model identity the server reports (model path and build,
``GET /props``). Each start records it next to the server logs, keyed by the binary and the
model file (path, size, mtime); the next run with the same files knows the identity without
starting the server, so a run whose answers are all cached needs no server at all.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from promptsweep.core.io.files import write_json_atomic
from promptsweep.llm.client import EndpointInfo

IDENTITY_FILENAME = "identity.json"
IDENTITY_SCHEMA_VERSION = 1
PREDICTED_URL = "managed://not-started"
"""The URL of a predicted endpoint: nothing listens there; the server starts on the first call."""


def _fingerprint(binary: Path, model: Path) -> str:
    parts = []
    for path in (binary, model):
        stat = path.stat()
        parts.append(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}")
    return "|".join(parts)


def record_identity(folder: Path, binary: Path, model: Path, info: EndpointInfo) -> None:
    """Remember what this binary serving this model reported (best effort)."""
    try:
        known = _read(folder)
        known[_fingerprint(binary, model)] = {**info.to_json(), "url": PREDICTED_URL}
        write_json_atomic(
            folder / IDENTITY_FILENAME, {"schema_version": IDENTITY_SCHEMA_VERSION, "servers": known}
        )
    except OSError:
        pass  # a missing record only costs the next run a server start


def predicted_identity(folder: Path, binary: Path, model: Path) -> EndpointInfo | None:
    """What a server started from these files reported last time; None if unknown or changed."""
    try:
        entry = _read(folder).get(_fingerprint(binary, model))
    except OSError:
        return None
    if not isinstance(entry, dict):
        return None
    try:
        return EndpointInfo(**entry)
    except TypeError:
        return None


def _read(folder: Path) -> dict[str, Any]:
    try:
        data = json.loads((folder / IDENTITY_FILENAME).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return {}
    servers = data.get("servers") if isinstance(data, dict) else None
    return dict(servers) if isinstance(servers, dict) else {}
