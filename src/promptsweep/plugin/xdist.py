"""pytest-xdist glue for every run: ``-n auto`` sized to llama-server's slots, and each worker's endpoint."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest

from promptsweep.config.settings import Settings
from promptsweep.core.io.errors import EndpointError
from promptsweep.llm.client import EndpointInfo
from promptsweep.llm.endpoint import probe_url
from promptsweep.plugin.options import settings_for
from promptsweep.plugin.state import PluginState
from promptsweep.plugin.warm import pending_calls, run_params

WORKERINPUT_KEY = "promptsweep"


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """``-n auto`` = llama-server's total slots (summed over ``--llm-url``s; ``--llm-slots`` for
    the managed server; without ``/props``, the CPU count, said on stderr), but no more workers
    than there are calls the response cache cannot answer: none for a warm re-run. In the
    deterministic mode each server takes one request at a time: one worker per server."""
    settings = settings_for(config)
    if settings.deterministic:
        return max(1, len(settings.llm_urls))
    slots = _slots(settings)
    if slots is None:
        return None
    pending = pending_calls(config, settings, run_params(config))
    if pending is None or pending >= slots:
        return slots
    _say(
        f"-n auto: {pending} call(s) not in the response cache; "
        + (f"{pending} worker(s) instead of {slots}" if pending else "running without xdist workers")
    )
    return pending


def _slots(settings: Settings) -> int | None:
    if not settings.llm_urls:
        return None if settings.server == "off" else settings.slots
    total = 0
    for url in settings.llm_urls:
        try:
            info = probe_url(url, settings.endpoint_config)
        except EndpointError:
            info = EndpointInfo(url=url)
        if not info.total_slots:
            cpus = os.cpu_count() or 1
            _say(
                f"-n auto: {info.public_url} reports no total_slots (GET /props); using the CPU count ({cpus}) workers"
            )
            return cpus
        total += info.total_slots
    return total


def _say(message: str) -> None:
    print(f"[promptsweep] {message}", file=sys.stderr, flush=True)


def assign_endpoint(infos: Sequence[EndpointInfo], assigned: list[int]) -> int:
    """The endpoint for the next worker: proportional to slots (D'Hondt), ties to the first."""
    weights = [info.total_slots or 1 for info in infos]
    return max(range(len(infos)), key=lambda i: (weights[i] / (assigned[i] + 1), -i))


class XdistHooks:
    """Hands each worker its endpoint; registered on the controller only when xdist is installed.

    With several ``--llm-url`` endpoints, workers are spread in proportion to their slots and
    each sticks to one endpoint, so that server's prompt cache keeps working.
    """

    def __init__(self, state: PluginState) -> None:
        self.state = state
        self.assigned: list[int] = []

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        shared = node.workerinput.setdefault(WORKERINPUT_KEY, {})
        infos = self.state.endpoints.infos
        if not infos:
            shared["endpoint"] = None
            return
        if len(self.assigned) != len(infos):
            self.assigned = [0] * len(infos)
        # Deterministic mode: each server takes one request at a time, so spread workers
        # evenly (one per server with -n auto) instead of by slots.
        weighted = [replace(i, total_slots=1) for i in infos] if self.state.settings.deterministic else infos
        index = assign_endpoint(weighted, self.assigned)
        self.assigned[index] += 1
        shared["endpoint"] = infos[index].to_private_json()  # the real URL: workers must reach it
        shared["api_key"] = self.state.endpoints.managed_api_key


def adopt_endpoint(config: pytest.Config, state: PluginState) -> None:
    """On a worker: use the endpoint the controller chose for it."""
    shared = config.workerinput.get(WORKERINPUT_KEY)  # type: ignore[attr-defined]
    if shared and shared.get("endpoint"):
        state.endpoints.adopt(shared["endpoint"], api_key=shared.get("api_key"))
