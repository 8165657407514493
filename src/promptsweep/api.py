"""The functions behind ``promptsweep``'s public names: load a prompt, connect to an endpoint
with the cache and retry layers, and evaluate a suite in one call. No pytest here."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx

from promptsweep.core.answers.chat import ChatFn
from promptsweep.core.answers.judge import JudgeSpec
from promptsweep.core.answers.metrics import MetricRegistry
from promptsweep.core.data.suite import Suite, load_suite
from promptsweep.core.measure.aggregate import Aggregate, aggregate
from promptsweep.core.prompt import Prompt
from promptsweep.core.templates.template import PromptTemplate, load_template
from promptsweep.llm.cache import CacheMode, ResponseCache, cache_layer, cache_path
from promptsweep.llm.client import DEFAULT_TIMEOUT_S, EndpointInfo
from promptsweep.llm.endpoint import Endpoint, EndpointConfig, Layer, probe_url
from promptsweep.llm.retry import DEFAULT_RETRIES, RetryPolicy, retry_layer

PathLike = str | os.PathLike[str]


def _suite(suite: Suite | PathLike) -> Suite:
    return suite if isinstance(suite, Suite) else load_suite(Path(suite))


def _template(template: PromptTemplate | PathLike | None) -> PromptTemplate | None:
    if template is None or isinstance(template, PromptTemplate):
        return template
    return load_template(Path(template))


def load_prompt(
    suite: Suite | PathLike,
    template: PromptTemplate | PathLike | None = None,
    *,
    metrics: MetricRegistry | None = None,
) -> Prompt:
    """A suite's prompt (its own template, or ``template``) for rendering, parsing and scoring.

    The suite's dataset is read only when a field takes its labels from it (``values: dataset``),
    so the JSON schema sent with each request has the same enums as in the eval.
    """
    loaded = _suite(suite)
    dataset = loaded.load_dataset() if any(s.values == "dataset" for s in loaded.fields.values()) else None
    return Prompt(loaded, _template(template), dataset=dataset, registry=metrics)


def connect(
    url: str,
    *,
    cache: PathLike | None = None,
    cache_mode: CacheMode = "read-write",
    retries: int = DEFAULT_RETRIES,
    timeout: float = DEFAULT_TIMEOUT_S,
    api_key: str | None = None,
    model: str | None = None,
    transport: httpx.BaseTransport | None = None,
) -> Endpoint:
    """An endpoint with the layers a pytest run uses: the response cache (when ``cache`` names a
    promptsweep directory, e.g. ``".promptsweep"``) outside the retries.

    Probes the URL once (``EndpointError`` if unreachable): the cache keys on the model the
    server reports. Close it, or use it as a context manager.
    """
    config = EndpointConfig(api_key=api_key, timeout=timeout, model=model, transport=transport)
    info = probe_url(url.rstrip("/"), config)
    return _endpoint(info, config, cache=cache, cache_mode=cache_mode, retries=retries)


def _endpoint(
    info: EndpointInfo, config: EndpointConfig, *, cache: PathLike | None, cache_mode: CacheMode, retries: int
) -> Endpoint:
    layers: list[Layer] = []
    if cache is not None and cache_mode != "off":
        layers.append(cache_layer(ResponseCache(cache_path(Path(cache))), cache_mode))
    layers.append(retry_layer(RetryPolicy(retries=retries)))
    return Endpoint(info, config, layers)


@contextmanager
def _managed(slots: int | None, timeout: float) -> Iterator[tuple[str, str | None]]:
    """A llama-server started for one ``evaluate`` call (found or built as ``promptsweep server ensure``),
    and the key it requires (a fresh one per start)."""
    from promptsweep.server.endpoints import EndpointManager, ServerConfig
    from promptsweep.server.managed import DEFAULT_SLOTS

    manager = EndpointManager(
        ServerConfig(mode="managed", slots=slots or DEFAULT_SLOTS), EndpointConfig(timeout=timeout)
    )
    try:
        url = manager.start_managed().url
        yield url, manager.managed_api_key
    finally:
        manager.close()


def evaluate(
    suite: Suite | PathLike,
    *,
    url: str | None = None,
    template: PromptTemplate | PathLike | None = None,
    dataset: PathLike | None = None,
    cache: PathLike | None = None,
    retries: int = DEFAULT_RETRIES,
    concurrency: int | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    api_key: str | None = None,
    model: str | None = None,
    metrics: MetricRegistry | None = None,
) -> Aggregate:
    """Run a suite against ``url`` and return its aggregate, as ``pytest`` would score it.

    Requests go out ``concurrency`` at a time, by default as many as the server has slots
    (llama-server's ``total_slots``). ``url=None`` starts a managed llama-server for the call.
    ``template`` and ``dataset`` replace the suite's (like ``--prompt-template`` and
    ``--golden``); ``cache`` names a promptsweep directory whose response cache to use.
    A failed call scores 0 and is listed in ``aggregate.errored``, as in a pytest run.
    """
    loaded = _suite(suite).with_overrides(dataset=Path(dataset).resolve() if dataset else None)
    chosen = _template(template) or loaded.load_template()
    data = loaded.load_dataset()
    registry = metrics if metrics is not None else MetricRegistry()
    loaded.check_metrics(registry)
    from promptsweep.core.evaluate import Evaluator

    evaluator = Evaluator(loaded, chosen, registry, dataset=data, model=model)
    samples = loaded.samples_to_evaluate(data)
    config = EndpointConfig(api_key=api_key, timeout=timeout, model=model)
    with _managed(concurrency, timeout) if url is None else _given(url) as (base_url, managed_key):
        if managed_key:  # the managed server refuses requests without its own key
            config = EndpointConfig(api_key=managed_key, timeout=timeout, model=model)
        info = probe_url(base_url.rstrip("/"), config)
        workers = max(1, concurrency or info.total_slots or 1)
        endpoint = _endpoint(info, config, cache=cache, cache_mode="read-write", retries=retries)
        judges: dict[str, Endpoint] = {}
        lock = threading.Lock()

        def judge(spec: JudgeSpec) -> ChatFn:
            """A judge with its own ``url`` gets its own endpoint, cached and retried the same way."""
            if spec.url is None:
                return endpoint.send
            with lock:
                if spec.url not in judges:
                    key = os.environ.get(spec.api_key_env) if spec.api_key_env else None
                    judge_config = EndpointConfig(api_key=key, timeout=timeout)
                    judges[spec.url] = _endpoint(
                        probe_url(spec.url, judge_config),
                        judge_config,
                        cache=cache,
                        cache_mode="read-write",
                        retries=retries,
                    )
                return judges[spec.url].send

        try:
            with endpoint, ThreadPoolExecutor(max_workers=workers, thread_name_prefix="promptsweep") as pool:
                results = list(pool.map(lambda s: evaluator.evaluate(s, endpoint.send, judge=judge), samples))
        finally:
            for other in judges.values():
                other.close()
    return aggregate(loaded.name, results, list(loaded.fields))


@contextmanager
def _given(url: str) -> Iterator[tuple[str, str | None]]:
    yield url, None
