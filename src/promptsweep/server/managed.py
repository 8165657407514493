"""Run a local ``llama-server`` as a child process for the duration of a session.

The server is bound to loopback on a free port, its output goes to a log file (the
first place to look when an eval misbehaves), and it is stopped on context exit, on
``stop()``, at interpreter exit, and (on Linux) when the parent process dies, so test
runs never leave orphaned servers holding memory.

Loopback is not private on a shared machine: with an ``api_key`` the server requires it
(passed in the child's environment, ``LLAMA_API_KEY``, which other users cannot read, unlike
its command line), and startup checks that whatever answers on the port is the server we
started: it must refuse a request without the key and accept one with it.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Literal

import httpx

from promptsweep.core.io.errors import PromptsweepError
from promptsweep.core.io.files import open_append

__all__ = [
    "GpuLayers",
    "ManagedServer",
    "ServerStartError",
    "build_command",
    "free_port",
    "gpu_layers_args",
    "port_available",
    "tail_lines",
]

LOG_TAIL_LINES = 20
DEFAULT_SLOTS = 4
"""Parallel slots (``-np``) of a managed llama-server (``--llm-slots``)."""
DEFAULT_CTX_PER_SLOT = 4096
"""Context tokens per slot; ``-c`` is slots x this."""
_STOP_GRACE_S = 10.0

GpuLayers = int | Literal["all"] | None
"""Layers offloaded to the GPU (``-ngl``): a number, ``all``, or None to pass nothing."""
#: ``-ngl`` value meaning every layer: more than any model has (accepted by every llama-server,
#: unlike the newer ``-ngl all``).
ALL_LAYERS = 999


def gpu_layers_args(gpu_layers: GpuLayers) -> list[str]:
    """``-ngl N`` for the server command line; nothing for None (the server's own default)."""
    if gpu_layers is None:
        return []
    return ["-ngl", str(ALL_LAYERS if gpu_layers == "all" else int(gpu_layers))]


class ServerStartError(PromptsweepError, RuntimeError):
    """The server exited or never became healthy; the message carries the log tail."""

    def __init__(self, message: str, log_path: Path) -> None:
        tail = tail_lines(log_path, LOG_TAIL_LINES)
        body = "\n".join(f"    {line}" for line in tail) if tail else "    (log is empty)"
        super().__init__(f"{message}\nllama-server log: {log_path}\nLast {LOG_TAIL_LINES} log lines:\n{body}")
        self.log_path = log_path


def tail_lines(path: Path, count: int = LOG_TAIL_LINES) -> list[str]:
    """Last ``count`` lines of a text file (reads only the end of big logs)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            data = handle.read()
    except OSError:
        return []
    lines = data.decode("utf-8", errors="replace").splitlines()
    return lines[-count:]


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def free_port(host: str = "127.0.0.1") -> int:
    """Ask the OS for an unused TCP port by binding to port 0."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_available(host: str, port: int) -> bool:
    """Whether a server could listen on ``host:port`` now (SO_REUSEADDR, like servers do).

    Checked before spawning so that another server already on that port can never answer
    our health check and be mistaken for ours.
    """
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def build_command(
    binary: Path,
    model: Path,
    *,
    host: str,
    port: int,
    slots: int,
    ctx_per_slot: int,
    extra_args: Sequence[str] = (),
    gpu_layers: GpuLayers = None,
) -> list[str]:
    """The llama-server command line.

    ``-c`` is the total context; with an explicit ``-np`` the KV cache is split evenly,
    so each slot gets ``ctx_per_slot`` tokens. Continuous batching, prompt caching and
    the Jinja chat template are on by default in this llama.cpp. ``--metrics`` exposes
    ``/metrics`` for throughput stats; the web UI is not needed. Extra args come last so
    callers can override anything.
    """
    return [
        str(binary),
        "-m",
        str(model),
        "--host",
        host,
        "--port",
        str(port),
        "-np",
        str(slots),
        "-c",
        str(slots * ctx_per_slot),
        "--no-webui",
        "--metrics",
        "--log-colors",
        "off",
        *gpu_layers_args(gpu_layers),
        *extra_args,
    ]


def _pdeathsig_preexec() -> Callable[[], None] | None:
    """On Linux, ask the kernel to SIGTERM the server if our thread dies (even SIGKILL).

    PR_SET_PDEATHSIG fires when the *thread* that forked exits, so it is only used when
    starting from the main thread; atexit and ``stop()`` cover the other cases.
    """
    if not sys.platform.startswith("linux"):
        return None
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # parent already gone before prctl took effect
            os._exit(1)

    return preexec


#: Every server process we started and have not stopped yet, for the atexit safety net.
#: Holding the Popen (not the ManagedServer) means a dropped ManagedServer is still reaped.
_LIVE: set[subprocess.Popen[bytes]] = set()
_LIVE_LOCK = threading.Lock()


def _terminate_process(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM, wait, then SIGKILL; never raises for an already-dead process."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
    with _LIVE_LOCK:
        _LIVE.discard(proc)


@atexit.register
def _stop_all_at_exit() -> None:
    """Safety net: stop servers whose owners forgot (or never got the chance) to."""
    with _LIVE_LOCK:
        procs = list(_LIVE)
    for proc in procs:
        _terminate_process(proc, 5.0)


class ManagedServer:
    """A ``llama-server`` child process; use as a context manager or call start/stop."""

    def __init__(
        self,
        binary: Path,
        model: Path,
        *,
        slots: int = DEFAULT_SLOTS,
        ctx_per_slot: int = DEFAULT_CTX_PER_SLOT,
        host: str = "127.0.0.1",
        port: int | None = None,
        extra_args: Sequence[str] = (),
        log_path: Path | None = None,
        startup_timeout: float = 120,
        api_key: str | None = None,
        gpu_layers: GpuLayers = None,
    ) -> None:
        if slots < 1:
            raise ValueError("slots must be >= 1")
        if ctx_per_slot < 1:
            raise ValueError("ctx_per_slot must be >= 1")
        self.binary = Path(binary)
        self.model = Path(model)
        self.slots = slots
        self.ctx_per_slot = ctx_per_slot
        self.host = host
        self.extra_args = tuple(extra_args)
        self.startup_timeout = startup_timeout
        self.api_key = api_key
        self.gpu_layers = gpu_layers
        self._requested_port = port
        self._port: int | None = port
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_handle: IO[bytes] | None = None
        self._lock = threading.RLock()
        if log_path is None:
            fd, name = tempfile.mkstemp(prefix="promptsweep-llama-server-", suffix=".log")
            os.close(fd)
            log_path = Path(name)
        self._log_path = Path(log_path)

    # ------------------------------------------------------------------ properties

    @property
    def log_path(self) -> Path:
        """Where the server's stdout and stderr go (kept after stop for diagnosis)."""
        return self._log_path

    @property
    def port(self) -> int | None:
        """The TCP port; chosen at first start when not given, then kept for restarts."""
        return self._port

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:8080`` (valid once started)."""
        if self._port is None:
            raise RuntimeError("server has not been started")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self._port}"

    @property
    def pid(self) -> int | None:
        """Process id of the running server, or None when not running."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def command(self) -> list[str]:
        """The exact command line used (port filled in once known)."""
        return build_command(
            self.binary,
            self.model,
            host=self.host,
            port=self._port if self._port is not None else 0,
            slots=self.slots,
            ctx_per_slot=self.ctx_per_slot,
            extra_args=self.extra_args,
            gpu_layers=self.gpu_layers,
        )

    def is_alive(self) -> bool:
        """Whether the process is still running (says nothing about health)."""
        proc = self._proc
        return proc is not None and proc.poll() is None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> str:
        """Start the server, wait until ``/health`` is 200, and return the base URL.

        When we picked the port ourselves and the server dies early, retry once with a
        fresh port: another process may have grabbed it between our probe and the bind.
        """
        with self._lock:
            if self.is_alive():
                return self.url
            if not self.binary.is_file():
                raise ServerStartError(f"llama-server binary not found: {self.binary}", self._log_path)
            if not self.model.is_file():
                raise ServerStartError(f"model file not found: {self.model}", self._log_path)
            attempts = 2 if self._requested_port is None and self._port is None else 1
            for attempt in range(attempts):
                if self._port is None:
                    self._port = free_port(self.host)
                elif not port_available(self.host, self._port):
                    raise ServerStartError(
                        f"port {self._port} on {self.host} is already in use", self._log_path
                    )
                try:
                    self._spawn()
                    self._wait_healthy()
                    return self.url
                except ServerStartError:
                    self._terminate()
                    if attempt + 1 >= attempts or not self._port_in_use():
                        raise
                    self._port = None
            raise AssertionError("unreachable")  # pragma: no cover

    def stop(self, timeout: float = _STOP_GRACE_S) -> None:
        """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL. Safe to call twice."""
        with self._lock:
            self._terminate(timeout)

    def restart(self) -> str:
        """Stop and start again on the same port (used to recover from a crash)."""
        with self._lock:
            self._terminate()
            return self.start()

    def __enter__(self) -> ManagedServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.is_alive() else "stopped"
        return f"<ManagedServer {self.binary.name} port={self._port} {state} log={self._log_path}>"

    # ------------------------------------------------------------------ internals

    def _spawn(self) -> None:
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open_append(self._log_path, binary=True)  # lives as long as the process; no-follow
        cmd = self.command
        log.write(f"\n=== promptsweep: starting {' '.join(cmd)}\n".encode())
        log.flush()
        env = dict(os.environ)
        env.pop("LLAMA_API_KEY", None)
        env.pop("LLAMA_ARG_API_KEY_FILE", None)
        if self.api_key:
            env["LLAMA_API_KEY"] = self.api_key
        try:
            self._proc = subprocess.Popen(
                cmd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Own session: a Ctrl-C in the terminal reaches us, and we stop it cleanly.
                start_new_session=True,
                preexec_fn=_pdeathsig_preexec(),
            )
        except OSError as exc:
            log.close()
            raise ServerStartError(f"could not execute {self.binary}: {exc}", self._log_path) from exc
        with _LIVE_LOCK:
            _LIVE.add(self._proc)
        self._log_handle = log

    def _wait_healthy(self) -> None:
        proc = self._proc
        assert proc is not None
        deadline = time.monotonic() + self.startup_timeout
        delay = 0.05
        health = f"{self.url}/health"
        # trust_env=False: a proxy from the environment must never see loopback traffic.
        with httpx.Client(trust_env=False, timeout=5.0) as client:
            while True:
                code = proc.poll()
                if code is not None:
                    raise ServerStartError(
                        f"llama-server exited with code {code} during startup", self._log_path
                    )
                try:
                    if client.get(health).status_code == 200 and proc.poll() is None:
                        self._verify_identity(client)
                        return
                    # 503 means the model is still loading: keep waiting.
                except httpx.TransportError:
                    pass  # not listening yet
                if time.monotonic() >= deadline:
                    raise ServerStartError(
                        f"llama-server did not become healthy within {self.startup_timeout:g}s",
                        self._log_path,
                    )
                time.sleep(delay)
                delay = min(delay * 1.5, 0.5)

    def _verify_identity(self, client: httpx.Client) -> None:
        """With an API key: the server on our port must refuse a request without the key and
        accept one with it, or it is not the process we started (nor configured as we asked)."""
        if not self.api_key:
            return
        props = f"{self.url}/props"
        anonymous = client.get(props).status_code
        keyed = client.get(props, headers={"Authorization": f"Bearer {self.api_key}"}).status_code
        if anonymous != 401 or keyed != 200:
            raise ServerStartError(
                f"the server answering on {self.url} is not the llama-server we started with an API key "
                f"(GET /props: {anonymous} without the key, {keyed} with it; expected 401 and 200)",
                self._log_path,
            )

    def _port_in_use(self) -> bool:
        """Whether the startup failure looks like a bind conflict (worth a new port)."""
        text = "\n".join(tail_lines(self._log_path, 40)).lower()
        return "address already in use" in text or "couldn't bind" in text

    def _terminate(self, timeout: float = _STOP_GRACE_S) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            _terminate_process(proc, timeout)
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None
