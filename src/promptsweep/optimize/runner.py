"""Runs calls concurrently, as many at once as the server has slots, and keeps every finished one.

A search round is a list of jobs (candidate, sample position, repeat). They are sent sample by
sample: each worker thread owns the samples at its positions (position modulo the workers) and
asks every candidate about one sample before the next, on its own server slot (the search asks
with ``slot`` = the worker), so the slot's prompt cache holds that sample's prefix (the shared
instructions, its retrieved examples, the sample itself) while the candidates that share it are
asked; llama-server then reads only what differs. A worker with nothing left takes the last
sample of the busiest one (its current sample stays where its prefix is). The calling thread
collects results as they finish, hands each to ``on_result`` at once (the caller writes it to
``results.jsonl``), and reports progress.

Threads rather than processes: a call is I/O bound (the server does the work), and one
process can then decide the next round from every result without a file barrier. Worker
threads are daemons: after Ctrl-C or a spent budget the calls still in flight are abandoned,
never waited for, and everything already finished has been handed over.
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

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

    def __init__(self, run_job: RunJob, workers: int, *, prefix: Callable[[Job], Any] | None = None) -> None:
        """``prefix`` names what a job's prompt begins with: a sample's jobs are sent grouped by
        it, so consecutive requests on a slot share the longest prefix."""
        self._run_job = run_job
        self._prefix = prefix
        self.workers = max(1, workers)
        self._queues: list[collections.deque[Job]] = [collections.deque() for _ in range(self.workers)]
        self._ready = threading.Condition()
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
            job = self._take(index)
            if job is None:
                return
            result = self._run_job(job, index)
            self._results.put((job, result))

    def _take(self, index: int) -> Job | None:
        """The worker's next job: its own next sample's, else the last of the busiest worker's."""
        with self._ready:
            while not self._stop.is_set():
                mine = self._queues[index]
                if mine:
                    return mine.popleft()
                busiest = max(self._queues, key=len)
                if busiest:
                    return busiest.pop()
                self._ready.wait(timeout=1.0)
            return None

    def _schedule(self, jobs: Sequence[Job]) -> None:
        """Sample-major: each worker's samples in order, every job of a sample together."""
        order = {id(job): i for i, job in enumerate(jobs)}
        prefix = self._prefix

        def key(job: Job) -> tuple[Any, ...]:
            return (job.position, prefix(job) if prefix is not None else (), order[id(job)])

        with self._ready:
            for job in sorted(jobs, key=key):
                self._queues[job.position % self.workers].append(job)
            self._ready.notify_all()

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
        self._schedule(jobs)
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
        with self._ready:
            for jobs in self._queues:
                jobs.clear()

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
        with self._ready:
            self._ready.notify_all()
