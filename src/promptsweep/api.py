"""The functions behind ``promptsweep``'s public names: load a prompt, connect to an endpoint
with the cache and retry layers, and evaluate a suite in one call. No pytest here."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from promptsweep.config.options import base_dir
from promptsweep.config.settings import user_cache_keys
from promptsweep.core.answers.metrics import MetricRegistry
from promptsweep.core.data.suite import Suite, load_suite
from promptsweep.core.measure.aggregate import Aggregate, aggregate
from promptsweep.core.prompt import Prompt
from promptsweep.core.templates.template import PromptTemplate, load_template
from promptsweep.llm.cache import CacheMode, ResponseCache, cache_layer, cache_path
from promptsweep.llm.client import DEFAULT_TIMEOUT_S
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


def default_dir() -> Path:
    """The promptsweep directory the ``promptsweep`` command uses: ``$PROMPTSWEEP_DIR``, else
    ``.promptsweep`` in the current directory."""
    cwd = Path.cwd()
    return base_dir(None, None, os.environ, invocation=cwd, root=cwd)


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
    return Endpoint(info, config, _layers(Path(cache) if cache is not None else None, cache_mode, retries))


def _layers(base: Path | None, cache_mode: CacheMode, retries: int) -> list[Layer]:
    """The response cache of promptsweep directory ``base`` (unless None or ``off``) outside the retries."""
    layers: list[Layer] = []
    if base is not None and cache_mode != "off":
        layers.append(cache_layer(ResponseCache(cache_path(base), user_cache_keys()), cache_mode))
    layers.append(retry_layer(RetryPolicy(retries=retries)))
    return layers


def evaluate(
    suite: Suite | PathLike,
    *,
    url: str | None = None,
    template: PromptTemplate | PathLike | None = None,
    dataset: PathLike | None = None,
    cache: PathLike | None = None,
    cache_mode: CacheMode = "read-write",
    retries: int = DEFAULT_RETRIES,
    concurrency: int | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    api_key: str | None = None,
    model: str | None = None,
    metrics: MetricRegistry | None = None,
) -> Aggregate:
    """Run a suite against ``url`` and return its aggregate, as ``pytest`` would score it.

    Requests go out ``concurrency`` at a time, by default as many as the server has slots
    (llama-server's ``total_slots``). ``url=None`` uses the managed llama-server (found or built
    as ``promptsweep server ensure``), started only when an answer is not in the cache.
    ``template`` and ``dataset`` replace the suite's (like ``--prompt-template`` and
    ``--golden``). Answers come from and go to the response cache as in a pytest run: that of
    the promptsweep directory ``cache`` (default: ``$PROMPTSWEEP_DIR``, else ``.promptsweep``
    in the current directory; ``cache_mode="off"`` asks the model every time).
    A failed call scores 0 and is listed in ``aggregate.errored``, as in a pytest run.
    """
    loaded = _suite(suite).with_overrides(dataset=Path(dataset).resolve() if dataset else None)
    chosen = _template(template) or loaded.load_template()
    data = loaded.load_dataset()
    registry = metrics if metrics is not None else MetricRegistry()
    loaded.check_metrics(registry)
    from promptsweep.core.evaluate import Evaluator
    from promptsweep.server.endpoints import EndpointManager, ServerConfig
    from promptsweep.server.managed import DEFAULT_SLOTS

    evaluator = Evaluator(loaded, chosen, registry, dataset=data, model=model)
    samples = loaded.samples_to_evaluate(data)
    base = Path(cache) if cache is not None else default_dir()
    manager = EndpointManager(
        ServerConfig(
            urls=(url.rstrip("/"),) if url else (),
            mode="managed" if url is None else "off",
            slots=concurrency or DEFAULT_SLOTS,
            log_dir=base / "server",
        ),
        EndpointConfig(api_key=api_key, timeout=timeout, model=model),
    )
    layers = _layers(base, cache_mode, retries)
    manager.layers.extend(layers)
    try:
        if url is None:  # known from an earlier start: cached answers need no server
            manager.predicted = manager.predict_managed()
        endpoint = manager.endpoint()
        workers = max(1, concurrency or endpoint.info.total_slots or 1)
        judge = manager.judge_route(endpoint.send)  # a judge with its own url: same layers
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="promptsweep") as pool:
            results = list(pool.map(lambda s: evaluator.evaluate(s, endpoint.send, judge=judge), samples))
    finally:
        manager.close()
    return aggregate(loaded.name, results, list(loaded.fields))
