"""pytest-benchmark settings for benchmarks/test_hot_paths.py (run by ``just bench``).

- The load average at the start and end of the run goes into the saved JSON
  (``load_average``): the machine is shared, and a baseline saved under load says so in
  RESULTS.md (benchmarks/hot_paths_md.py).
- ``--benchmark-compare`` with no saved baseline for this machine is a usage error, not
  pytest-benchmark's warning: a comparison that silently compares nothing would let a
  regression through.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

_LOAD_AT_START: dict[str, float] = {}


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def pytest_sessionstart(session: pytest.Session) -> None:
    _LOAD_AT_START["load"] = _load()
    bench = getattr(session.config, "_benchmarksession", None)
    if bench is None or bench.disabled or bench.compare is not True:
        return
    if not bench.compared_mapping:
        raise pytest.UsageError(
            f"--benchmark-compare: no saved baseline in {bench.storage.path / bench.machine_id}; "
            "save one with `just bench-save`"
        )


def pytest_benchmark_update_json(config: pytest.Config, benchmarks: Any, output_json: dict[str, Any]) -> None:
    output_json["load_average"] = {
        "start": _LOAD_AT_START.get("load"),
        "end": _load(),
        "cpus": os.cpu_count(),
    }
