"""Runs calls concurrently, as many at once as the server has slots, and keeps every finished one.

A search round is a list of jobs (candidate, sample position, repeat). Worker threads take
jobs from a queue (each thread sticks to one endpoint, so that server's prompt cache keeps
its prefix); the calling thread collects results as they finish, hands each to
``on_result`` at once (the caller writes it to ``results.jsonl``), and reports progress.

Threads rather than processes: a call is I/O bound (the server does the work), and one
process can then decide the next round from every result without a file barrier. Worker
threads are daemons: after Ctrl-C or a spent budget the calls still in flight are abandoned,
never waited for, and everything already finished has been handed over.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from promptsweep.core.evaluate import SampleResult


@dataclass(frozen=True)
class Job:
    """One call: ``candidate`` on the sample at ``position`` of the paired order."""

    candidate: str
    position: int
    repeat: int = 0


RunJob = Callable[[Job, int], SampleResult]
"""Evaluates a job on the given worker (the worker index picks its endpoint)."""


@dataclass(frozen=True)
class RoundOutcome:
    """How a batch of jobs ended: all done, or stopped (the reason says why)."""

    done: int
    stopped: str | None = None


class Runner:
    """A pool of ``workers`` threads that evaluates jobs until told to stop."""

    def __init__(self, run_job: RunJob, workers: int) -> None:
        self._run_job = run_job
        self.workers = max(1, workers)
        self._jobs: queue.Queue[Job | None] = queue.Queue()
        self._results: queue.Queue[tuple[Job, SampleResult]] = queue.Queue()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._work, args=(i,), name=f"promptsweep-optimize-{i}", daemon=True)
            for i in range(self.workers)
        ]
        for thread in self._threads:
            thread.start()

    def _work(self, index: int) -> None:
        while not self._stop.is_set():
            job = self._jobs.get()
            if job is None:
                return
            if self._stop.is_set():
                return
            result = self._run_job(job, index)
            self._results.put((job, result))

    def run(
        self,
        jobs: Sequence[Job],
        on_result: Callable[[Job, SampleResult], None],
        *,
        should_stop: Callable[[], str | None] = lambda: None,
        tick: Callable[[int], None] | None = None,
        tick_every_s: float = 10.0,
    ) -> RoundOutcome:
        """Evaluate ``jobs``; returns when all are done or ``should_stop`` gives a reason.

        ``on_result`` runs in this thread for each finished job, in completion order.
        ``KeyboardInterrupt`` stops the pool and propagates after the finished results are handed over.
        """
        for job in jobs:
            self._jobs.put(job)
        done = 0
        last_tick = time.monotonic()
        try:
            while done < len(jobs):
                reason = should_stop()
                if reason:
                    self._drain_queue()
                    # Calls already in flight may still land: take what is there now.
                    done += self._collect_ready(on_result)
                    return RoundOutcome(done, reason)
                try:
                    job, result = self._results.get(timeout=0.2)
                except queue.Empty:
                    continue
                on_result(job, result)
                done += 1
                if tick is not None and time.monotonic() - last_tick >= tick_every_s:
                    tick(done)
                    last_tick = time.monotonic()
        except KeyboardInterrupt:
            self.close()
            self._collect_ready(on_result)
            raise
        return RoundOutcome(done)

    def _drain_queue(self) -> None:
        while True:
            try:
                self._jobs.get_nowait()
            except queue.Empty:
                return

    def _collect_ready(self, on_result: Callable[[Job, SampleResult], None]) -> int:
        got = 0
        while True:
            try:
                job, result = self._results.get_nowait()
            except queue.Empty:
                return got
            on_result(job, result)
            got += 1

    def close(self) -> None:
        """Stop the workers; calls in flight are abandoned (daemon threads)."""
        self._stop.set()
        self._drain_queue()
        for _ in self._threads:
            self._jobs.put(None)
