"""Which endpoint this process talks to: a given URL, or the managed llama-server the controller owns."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from promptsweep.core.errors import EndpointError
from promptsweep.llm.client import ChatRequest, ChatResult, EndpointInfo, LLMClient
from promptsweep.plugin.options import Settings
from promptsweep.reporting.artifacts import utc_stamp
from promptsweep.server.managed import ManagedServer
from promptsweep.server.provision import ensure_default_model, ensure_llama_server

SendFn = Callable[[ChatRequest], ChatResult]
Layer = Callable[[EndpointInfo, SendFn], SendFn]
"""Wraps the send path: ``layer(info, next_send) -> send``. The response cache, retries and
tracing are layers, registered on ``EndpointManager.layers`` at configure time; the first
registered is the outermost."""


def _progress(message: str) -> None:
    # Provisioning can take minutes (a first llama-server build): say what is happening.
    print(f"[promptsweep] {message}", file=sys.stderr, flush=True)


class Endpoint:
    """One process's view of the LLM: URL, what the server said about itself, and a client.

    This is also the ``endpoint`` fixture users get: ``endpoint.chat(messages, max_tokens=...)``.
    """

    def __init__(self, info: EndpointInfo, settings: Settings, layers: Sequence[Layer] = ()) -> None:
        self.info = info
        self.url = info.url
        self.settings = settings
        self.client = LLMClient(
            info.url,
            api_key=settings.api_key.get_secret_value() if settings.api_key else None,
            timeout=settings.timeout,
        )
        send: SendFn = self.client.chat
        for layer in reversed(layers):
            send = layer(info, send)
        self._send = send

    def send(self, request: ChatRequest) -> ChatResult:
        """The single door for chat calls; the layers (cache, retries, spans) wrap it."""
        return self._send(request)

    def chat(self, messages: list[dict[str, str]], **params: Any) -> ChatResult:
        response_format = params.pop("response_format", None)
        return self.send(
            ChatRequest(
                messages=tuple(messages),
                params=params,
                response_format=response_format,
                model=self.settings.model,
            )
        )

    def close(self) -> None:
        self.client.close()


def probe_url(url: str, settings: Settings) -> EndpointInfo:
    """Reach the endpoint once; an unreachable URL is one clear error, not one per sample."""
    with LLMClient(
        url,
        api_key=settings.api_key.get_secret_value() if settings.api_key else None,
        timeout=settings.timeout,
    ) as client:
        return client.probe()


class EndpointManager:
    """Owns the endpoint for a process. The controller may start the managed server and
    hands its URL to xdist workers through ``workerinput``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.infos: list[EndpointInfo] = []
        self.server: ManagedServer | None = None
        self.layers: list[Layer] = []
        self._endpoint: Endpoint | None = None
        self._lock = threading.Lock()

    def probe_given_urls(self) -> None:
        self.infos = [probe_url(url, self.settings) for url in self.settings.llm_urls]

    def adopt(self, info_json: Mapping[str, Any]) -> None:
        """A worker takes the endpoint its controller chose."""
        self.infos = [EndpointInfo(**info_json)]

    def start_managed(self) -> EndpointInfo:
        if self.settings.server == "off":
            raise EndpointError(
                "no LLM endpoint: pass --llm-url URL (or set $PROMPTSWEEP_LLM_URL), "
                "or drop --llm-server=off to let promptsweep start llama-server"
            )
        binary = ensure_llama_server(_progress)
        model = self.settings.model_path or ensure_default_model(_progress)
        log_path = self.settings.base_dir / "server" / f"llama-server-{utc_stamp()}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.server = ManagedServer(
            binary,
            model,
            slots=self.settings.slots,
            ctx_per_slot=self.settings.ctx_per_slot,
            log_path=log_path,
        )
        _progress(f"starting llama-server ({model.name}, {self.settings.slots} slots), log: {log_path}")
        url = self.server.start()
        info = probe_url(url, self.settings)
        self.infos = [info]
        return info

    @property
    def primary(self) -> EndpointInfo | None:
        return self.infos[0] if self.infos else None

    def endpoint(self) -> Endpoint:
        """The endpoint for this process, starting the managed server on first use if needed."""
        with self._lock:
            if self._endpoint is None:
                if not self.infos:
                    if self.settings.llm_urls:
                        self.probe_given_urls()
                    else:
                        self.start_managed()
                self._endpoint = Endpoint(self.infos[0], self.settings, self.layers)
            return self._endpoint

    def close(self) -> None:
        if self._endpoint is not None:
            self._endpoint.close()
            self._endpoint = None
        if self.server is not None:
            self.server.stop()
            self.server = None


def suite_files_under(args: list[str], rootpath: Path) -> bool:
    """Whether the command line points at any ``*.suite.yaml``: the controller then starts
    the managed server before xdist workers exist, so they can share it."""
    from promptsweep.core.suite import is_suite_file

    skip = {".git", ".venv", "venv", "node_modules", "__pycache__", ".promptsweep", ".tox", ".nox"}
    for arg in args or ["."]:
        path = Path(arg.split("::", 1)[0])
        if not path.is_absolute():
            path = rootpath / path
        if path.is_file():
            if is_suite_file(path):
                return True
            continue
        if not path.is_dir():
            continue
        stack = [path]
        while stack:
            current = stack.pop()
            try:
                entries = list(current.iterdir())
            except OSError:
                continue
            for entry in entries:
                if entry.is_dir():
                    if entry.name not in skip and not entry.name.startswith("."):
                        stack.append(entry)
                elif is_suite_file(entry):
                    return True
    return False
