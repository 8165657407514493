"""Which endpoint a process uses: the given URLs, or the managed llama-server the controller owns."""

from __future__ import annotations

import dataclasses
import os
import secrets
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from promptsweep.core.answers.chat import ChatFn, ChatRequest, ChatResult
from promptsweep.core.answers.judge import JudgeRoute, JudgeSpec
from promptsweep.core.io.errors import EndpointError
from promptsweep.core.io.files import utc_stamp
from promptsweep.llm.client import EndpointInfo, LLMClient
from promptsweep.llm.endpoint import Endpoint, EndpointConfig, Layer, probe_url
from promptsweep.server.identity import predicted_identity, record_identity
from promptsweep.server.managed import DEFAULT_CTX_PER_SLOT, DEFAULT_SLOTS, GpuLayers, ManagedServer
from promptsweep.server.provision import (
    ProvisionError,
    default_model_path,
    ensure_default_model,
    ensure_llama_server,
    find_llama_server,
    llama_server_backend,
    llama_server_source,
    llama_server_version,
)

ServerMode = Literal["auto", "managed", "off"]
SERVER_MODES: tuple[str, ...] = ("auto", "managed", "off")


@dataclass(frozen=True)
class ServerConfig:
    """Where the LLM comes from: given URLs, else a managed llama-server with these settings."""

    urls: tuple[str, ...] = ()
    mode: ServerMode = "auto"
    model_path: Path | None = None
    slots: int = DEFAULT_SLOTS
    ctx_per_slot: int = DEFAULT_CTX_PER_SLOT
    log_dir: Path = Path(".promptsweep") / "server"
    gpu_layers: GpuLayers = None
    """``--llm-gpu-layers``; None: every layer when the binary has a GPU backend, else no ``-ngl``."""


def default_gpu_layers(given: GpuLayers, backend: str | None) -> GpuLayers:
    """What ``-ngl`` the managed server gets: the flag when given, else ``all`` for a build with
    a GPU backend (Metal, CUDA, or any device ``--list-devices`` names), else nothing."""
    if given is not None:
        return given
    if backend is not None and backend != "cpu":  # metal, cuda, or e.g. vulkan
        return "all"
    return None


def _progress(message: str) -> None:
    # Provisioning can take minutes (a first llama-server build): say what is happening.
    print(f"[promptsweep] {message}", file=sys.stderr, flush=True)


class EndpointManager:
    """Owns the endpoint for a process. The controller may start the managed server and
    hands its URL to xdist workers through ``workerinput``.

    The managed server gets a fresh random API key each session (``managed_api_key``); this
    process and its workers send it, nothing writes it down.
    """

    def __init__(self, server: ServerConfig, endpoint: EndpointConfig) -> None:
        self.server_config = server
        self.endpoint_config = endpoint
        self.infos: list[EndpointInfo] = []
        self.server: ManagedServer | None = None
        self.predicted: EndpointInfo | None = None
        self.managed_api_key: str | None = None
        self.layers: list[Layer] = []
        self._provenance: dict[str, Any] | None = None
        self.backend: str | None = None
        self._endpoint: Endpoint | None = None
        self._judges: dict[tuple[str, str | None], Endpoint] = {}
        self._judge_lock = threading.Lock()  # probing a judge URL must not hold up the run's calls
        self._client: LLMClient | None = None
        self._lock = threading.Lock()
        self._start_lock = threading.Lock()

    def probe_given_urls(self) -> None:
        self.infos = [probe_url(url, self.endpoint_config) for url in self.server_config.urls]

    def adopt(self, info_json: Mapping[str, Any], api_key: str | None = None) -> None:
        """A worker takes the endpoint its controller chose (and the managed server's key)."""
        self.infos = [EndpointInfo(**info_json)]
        self.managed_api_key = api_key

    @property
    def config(self) -> EndpointConfig:
        """How to talk to the endpoint in use: the managed server's own key replaces any other."""
        if self.managed_api_key:
            return dataclasses.replace(self.endpoint_config, api_key=self.managed_api_key)
        return self.endpoint_config

    def start_managed(self) -> EndpointInfo:
        if self.server_config.mode == "off":
            raise EndpointError(
                "no LLM endpoint: pass --llm-url URL (or set $PROMPTSWEEP_LLM_URL), "
                "or drop --llm-server=off to let promptsweep start llama-server"
            )
        with self._start_lock:
            if self.server is not None and self.infos:
                return self.infos[0]  # a concurrent first call started it already
            binary = ensure_llama_server(_progress)
            model = self.server_config.model_path or ensure_default_model(_progress)
            log_path = self.server_config.log_dir / f"llama-server-{utc_stamp()}.log"
            log_path.parent.mkdir(parents=True, exist_ok=True)
            self.managed_api_key = secrets.token_urlsafe(32)
            self.backend = llama_server_backend(binary)
            gpu_layers = default_gpu_layers(self.server_config.gpu_layers, self.backend)
            self.server = ManagedServer(
                binary,
                model,
                slots=self.server_config.slots,
                ctx_per_slot=self.server_config.ctx_per_slot,
                log_path=log_path,
                api_key=self.managed_api_key,
                gpu_layers=gpu_layers,
            )
            offload = f", backend {self.backend or 'unknown'}" + (
                f", -ngl {gpu_layers}" if gpu_layers is not None else ""
            )
            _progress(
                f"starting llama-server ({model.name}, {self.server_config.slots} slots{offload}), log: {log_path}"
            )
            url = self.server.start()
            info = probe_url(url, self.config)
            record_identity(self.server_config.log_dir, binary, model, info)
            self.infos = [info]
            return info

    def predict_managed(self) -> EndpointInfo | None:
        """The managed server's identity without starting it, if a previous start recorded it
        for the same binary and model files (see ``promptsweep.server.identity``)."""
        if self.server_config.urls or self.server_config.mode == "off":
            return None
        try:
            binary = find_llama_server()
        except ProvisionError:
            return None
        model = self.server_config.model_path or default_model_path()
        if binary is None or not model.is_file():
            return None
        return predicted_identity(self.server_config.log_dir, binary, model)

    @property
    def primary(self) -> EndpointInfo | None:
        return self.infos[0] if self.infos else self.predicted

    def _start_on_first_call(self, request: ChatRequest) -> ChatResult:
        """The core of a predicted endpoint: start the managed server when a call misses the cache."""
        with self._lock:
            if self._client is None:
                info = self.infos[0] if self.infos else self.start_managed()
                self._client = self.config.client_for(info)
            client = self._client
        return client.chat(request)

    def server_provenance(self) -> dict[str, Any] | None:
        """The managed llama-server binary for config.json: path, where it was found (``PATH``,
        ``env``, ``cache``) and what ``--version`` says, since a binary from PATH is whatever the
        system installed. None when no managed server runs."""
        if self.server is None:
            return None
        if self._provenance is None:
            binary = self.server.binary
            self._provenance = {
                "path": str(binary),
                "source": llama_server_source(binary),
                "version": llama_server_version(binary),
                # cpu / metal / cuda (another GPU backend by name): what the numbers were measured on.
                "backend": self.backend or "unknown",
                "gpu_layers": self.server.gpu_layers,
            }
        return self._provenance

    def endpoint(self) -> Endpoint:
        """The endpoint for this process, starting the managed server on first use if needed."""
        with self._lock:
            if self._endpoint is None:
                if not self.infos and self.predicted is not None:
                    # Answers are keyed on the predicted identity; the server starts on a miss.
                    self._endpoint = Endpoint(
                        self.predicted, self.endpoint_config, self.layers, base=self._start_on_first_call
                    )
                    return self._endpoint
                if not self.infos:
                    if self.server_config.urls:
                        self.probe_given_urls()
                    else:
                        self.start_managed()
                self._endpoint = Endpoint(self.infos[0], self.config, self.layers)
            return self._endpoint

    def judge_endpoint(self, url: str, api_key_env: str | None = None) -> Endpoint:
        """The endpoint a judge with its own ``url`` asks: probed once per process, with the
        same layers (response cache, retries, spans) as the run's endpoint, and the key from
        ``api_key_env`` (never the run's key, which belongs to another server)."""
        key = (url, api_key_env)
        with self._judge_lock:
            if key not in self._judges:
                api_key = os.environ.get(api_key_env) if api_key_env else None
                config = dataclasses.replace(self.endpoint_config, api_key=api_key, model=None)
                self._judges[key] = Endpoint(probe_url(url, config), config, self.layers)
            return self._judges[key]

    def judge_route(self, own: ChatFn | None = None) -> JudgeRoute:
        """Which send function each judge uses: ``own`` (default: this process's endpoint) for
        judges without a ``url``, else that URL's endpoint."""

        def route(spec: JudgeSpec) -> ChatFn:
            if spec.url is None:
                return own if own is not None else self.endpoint().send
            return self.judge_endpoint(spec.url, spec.api_key_env).send

        return route

    def close(self) -> None:
        for judge in self._judges.values():
            judge.close()
        self._judges.clear()
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._endpoint is not None:
            self._endpoint.close()
            self._endpoint = None
        if self.server is not None:
            self.server.stop()
            self.server = None
