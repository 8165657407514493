"""Keeps the managed llama-server alive: restarted once if it dies, the second death stops the run."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable

from promptsweep.core.answers.chat import LLMError
from promptsweep.core.io.errors import PromptsweepError
from promptsweep.server.endpoints import EndpointManager


class ServerGuard:
    """Restarts the managed llama-server once if it dies; the second death stops the run.

    Only the process that started the server owns it (``EndpointManager.server``); on xdist
    workers ``manager.server`` is None and this does nothing, their retries cover the
    restart window while the controller's watchdog restarts it.
    """

    def __init__(
        self,
        manager: EndpointManager,
        *,
        restarts: int = 1,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.manager = manager
        self.restarts_left = restarts
        self.restarts_done = 0
        self.gave_up: str | None = None
        self.stopped = False
        self.events: list[str] = []  # shown in the terminal summary: stderr is captured during items
        self._emit = progress or _stderr
        self._lock = threading.Lock()

    def _progress(self, message: str) -> None:
        self.events.append(message)
        self._emit(message)

    def check(self) -> None:
        """Restart the owned server if it is dead; raise ``LLMError`` if it cannot be."""
        with self._lock:
            server = self.manager.server
            if self.stopped or server is None:
                return
            if self.gave_up:
                raise LLMError(self.gave_up)
            if server.is_alive():
                return
            if self.restarts_left <= 0:
                self.gave_up = (
                    f"the managed llama-server died again after {self.restarts_done} restart(s); "
                    f"stopping. Its log: {server.log_path}"
                )
                self._progress(self.gave_up)
                raise LLMError(self.gave_up)
            self.restarts_left -= 1
            self._progress(
                f"the managed llama-server died; restarting it on the same port (log: {server.log_path})"
            )
            try:
                server.restart()
            except PromptsweepError as exc:
                self.gave_up = (
                    f"the managed llama-server died and did not restart: {exc}. Its log: {server.log_path}"
                )
                self._progress(self.gave_up)
                raise LLMError(self.gave_up) from exc
            self.restarts_done += 1
            self._progress(f"llama-server is back at {server.url}")


class ServerWatchdog:
    """Polls the owned server from the controller, so it is restarted even when only xdist
    workers (which cannot restart it) are making calls."""

    def __init__(self, guard: ServerGuard, interval_s: float = 0.5) -> None:
        self.guard = guard
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="promptsweep-server-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.guard.check()
            except LLMError:
                return


def _stderr(message: str) -> None:
    print(f"[promptsweep] {message}", file=sys.stderr, flush=True)
