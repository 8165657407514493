"""pytest-xdist glue for every run: ``-n auto`` sized to llama-server's slots, and each worker's endpoint."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

import pytest

from promptsweep.core.errors import EndpointError
from promptsweep.llm.client import EndpointInfo, LLMClient
from promptsweep.plugin.state import PluginState

WORKERINPUT_KEY = "promptsweep"


def _urls(config: pytest.Config) -> list[str]:
    urls = list(getattr(config.option, "promptsweep_llm_url", None) or []) or list(
        config.getini("llm_url") or []
    )
    if not urls and os.environ.get("PROMPTSWEEP_LLM_URL"):
        urls = [u.strip() for u in os.environ["PROMPTSWEEP_LLM_URL"].split(",") if u.strip()]
    return urls


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """``-n auto`` = llama-server's total slots (summed over ``--llm-url``s; ``--llm-slots`` for
    the managed server); without ``/props``, the CPU count, said on stderr."""
    urls = _urls(config)
    if urls:
        total = 0
        for url in urls:
            try:
                with LLMClient(url, api_key=_api_key(config), timeout=10.0) as client:
                    info = client.probe()
            except EndpointError:
                info = EndpointInfo(url=url)
            if not info.total_slots:
                cpus = os.cpu_count() or 1
                print(
                    f"[promptsweep] -n auto: {info.public_url} reports no total_slots (GET /props); "
                    f"using the CPU count ({cpus}) workers",
                    file=sys.stderr,
                    flush=True,
                )
                return cpus
            total += info.total_slots
        return total
    server = (
        getattr(config.option, "promptsweep_server", None) or config.getini("promptsweep_server") or "auto"
    )
    if server == "off":
        return None
    slots = getattr(config.option, "promptsweep_slots", None) or config.getini("promptsweep_slots")
    return int(slots) if slots else 4


def _api_key(config: pytest.Config) -> str | None:
    key = getattr(config.option, "promptsweep_api_key", None) or os.environ.get("PROMPTSWEEP_API_KEY")
    return str(key) if key else None


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
        index = assign_endpoint(infos, self.assigned)
        self.assigned[index] += 1
        shared["endpoint"] = infos[index].to_private_json()  # the real URL: workers must reach it
        shared["api_key"] = self.state.endpoints.managed_api_key


def adopt_endpoint(config: pytest.Config, state: PluginState) -> None:
    """On a worker: use the endpoint the controller chose for it."""
    shared = config.workerinput.get(WORKERINPUT_KEY)  # type: ignore[attr-defined]
    if shared and shared.get("endpoint"):
        state.endpoints.adopt(shared["endpoint"], api_key=shared.get("api_key"))
