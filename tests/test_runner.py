"""Requests scheduled for llama-server's prefix cache: sample by sample, each worker on its own slot,
the slot a hint only llama-server is sent and no cache key sees."""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx

from promptsweep.core.answers.chat import ChatRequest
from promptsweep.core.evaluate import SampleResult
from promptsweep.llm.client import LLMClient
from promptsweep.optimize.runner import Job, Runner


def _result(job: Job) -> SampleResult:
    return SampleResult(suite="s", sample_id=str(job.position), category=None, template="t", expected={})


def test_each_worker_asks_every_candidate_about_one_sample_before_the_next() -> None:
    seen: list[tuple[int, Job]] = []
    lock = threading.Lock()
    release = threading.Event()

    def run_job(job: Job, worker: int) -> SampleResult:
        release.wait(5)  # every job is queued before the first is taken: the order is the scheduler's
        with lock:
            seen.append((worker, job))
        return _result(job)

    runner = Runner(run_job, 2)
    jobs = [Job(c, p) for c in ("a", "b", "c") for p in range(4)]  # candidate-major, as rounds list them
    try:
        done: list[Job] = []
        threading.Timer(0.3, release.set).start()
        outcome = runner.run(jobs, lambda job, result: done.append(job))
    finally:
        runner.close()
    assert outcome.done == len(jobs) and sorted(done, key=repr) == sorted(jobs, key=repr)
    for worker in (0, 1):
        mine = [job for w, job in seen if w == worker]
        positions = [job.position for job in mine]
        # Its own samples (position modulo 2), each sample's candidates together, samples in order;
        # a worker that ran dry may have taken the other's last sample, never its current one.
        own = [p for p in positions if p % 2 == worker]
        assert own == sorted(own) and own, (worker, positions)
        for p in set(positions):
            at = [i for i, q in enumerate(positions) if q == p]
            assert at == list(range(at[0], at[0] + len(at))), f"worker {worker} split sample {p}: {positions}"


def test_the_slot_goes_to_llama_server_as_id_slot_and_never_into_the_cache_key() -> None:
    bodies: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(
            200, json={"choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}]}
        )

    request = ChatRequest(messages=({"role": "user", "content": "hi"},))
    on_slot = ChatRequest(messages=request.messages, slot=5)
    assert on_slot.cache_key("m") == request.cache_key("m") and on_slot.body() == request.body()
    transport = httpx.MockTransport(handler)
    with LLMClient("http://127.0.0.1:9", transport=transport, slots=4) as llama:
        llama.chat(on_slot)
        llama.chat(request)
    with LLMClient("http://127.0.0.1:9", transport=transport) as other:  # any other OpenAI-compatible server
        other.chat(on_slot)
    assert bodies[0]["id_slot"] == 5 % 4
    assert "id_slot" not in bodies[1], "no slot asked, none sent"
    assert "id_slot" not in bodies[2], "a server that is not llama-server never sees id_slot"
