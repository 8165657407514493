"""The settings of a run: every option resolved once (CLI > ini > environment > default) into a
frozen model that the plugin, the transport and the server layer read."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, SecretStr

from promptsweep.config import options as o
from promptsweep.core.data.suite import Suite
from promptsweep.core.measure.gate import FlakyPolicy
from promptsweep.core.templates.sandbox import DEFAULT_LIMITS, RenderLimits
from promptsweep.llm.cache import KEYS_DIRNAME, CacheKeys, CacheMode, ResponseCache, cache_path
from promptsweep.llm.client import DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_TIMEOUT_S
from promptsweep.llm.endpoint import EndpointConfig
from promptsweep.llm.retry import DEFAULT_BASE_DELAY_S, DEFAULT_RETRIES, DEFAULT_RETRY_TIME_S, RetryPolicy
from promptsweep.server.endpoints import ServerConfig, ServerMode
from promptsweep.server.managed import DEFAULT_CTX_PER_SLOT, DEFAULT_SLOTS, GpuLayers
from promptsweep.server.provision import cache_dir


def user_cache_keys() -> CacheKeys:
    """Where this user's response-cache keys live: beside the llama-server builds and models,
    outside every project (``$PROMPTSWEEP_CACHE_DIR``, else ``$XDG_CACHE_HOME/promptsweep``,
    else ``~/.cache/promptsweep``), so a cache committed or copied into a project never brings
    the key that would vouch for it."""
    return CacheKeys(cache_dir() / KEYS_DIRNAME)


class Settings(BaseModel):
    """Everything a run needs from its options, frozen for the session; ``extra="forbid"`` so a
    misspelt field is an error, not a silent default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    llm_urls: tuple[str, ...] = ()
    api_key: SecretStr | None = None
    model: str | None = None
    model_path: Path | None = None
    server: ServerMode = "auto"
    slots: int = DEFAULT_SLOTS
    ctx_per_slot: int = DEFAULT_CTX_PER_SLOT
    gpu_layers: GpuLayers = None  # --llm-gpu-layers; None: all on a GPU build, else none
    timeout: float = DEFAULT_TIMEOUT_S
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    min_score: float | None = None
    golden: Path | None = None
    template: Path | None = None
    allow_paths: tuple[Path, ...] = ()
    base_dir: Path = Path(o.DEFAULT_DIR)
    worst: int = 5
    cache: CacheMode = "read-write"
    cache_clear: bool = False
    cache_trust: bool = False  # --llm-cache-trust
    ci: bool = False  # $CI set (as GitHub Actions and most CI services do): refuse untrusted caches
    retries: int = DEFAULT_RETRIES
    retry_time: float = DEFAULT_RETRY_TIME_S
    retry_delay: float = DEFAULT_BASE_DELAY_S
    experiment: str | None = None
    baseline: str | None = None
    token_weight: float = 0.0
    run_name: str | None = None  # names the run directory (set by --experiment)
    max_prompt_chars: int = DEFAULT_LIMITS.max_prompt_chars
    template_timeout: float = DEFAULT_LIMITS.timeout_s
    repeats: int | None = None  # --llm-repeats; None: each suite's own ``repeats``
    deterministic: bool = False
    flaky: FlakyPolicy = "warn"
    split_evaluate: str | None = None  # --split-evaluate; None: each suite's split.evaluate

    def apply_to(self, suite: Suite) -> Suite:
        """A suite as this run scores it: ``--golden``, ``--prompt-template`` and ``--split-evaluate``."""
        suite = suite.with_overrides(dataset=self.golden, template=self.template)
        if self.split_evaluate is None or self.split_evaluate == suite.spec.split.evaluate:
            return suite
        split = suite.spec.split.model_copy(update={"evaluate": self.split_evaluate})
        return dataclasses.replace(suite, spec=suite.spec.model_copy(update={"split": split}))

    def repeats_for(self, suite_repeats: int) -> int:
        """Answers per sample for a suite: ``--llm-repeats`` wins over the suite's key."""
        return self.repeats if self.repeats is not None else suite_repeats

    @property
    def render_limits(self) -> RenderLimits:
        """How much work rendering one prompt may do (``promptsweep.core.templates.sandbox``)."""
        return RenderLimits(max_prompt_chars=self.max_prompt_chars, timeout_s=self.template_timeout)

    @property
    def endpoint_config(self) -> EndpointConfig:
        """What the transport needs, without pytest."""
        return EndpointConfig(
            api_key=self.api_key.get_secret_value() if self.api_key else None,
            timeout=self.timeout,
            model=self.model,
            max_response_bytes=self.max_response_bytes,
        )

    @property
    def server_config(self) -> ServerConfig:
        """What the server layer needs, without pytest."""
        return ServerConfig(
            urls=self.llm_urls,
            mode=self.server,
            model_path=self.model_path,
            # One slot: llama-server batches concurrent slots together, and the batch changes
            # the arithmetic, so only a single slot gives the same bytes every time.
            slots=1 if self.deterministic else self.slots,
            ctx_per_slot=self.ctx_per_slot,
            log_dir=self.base_dir / "server",
            gpu_layers=self.gpu_layers,
        )

    def response_cache(self) -> ResponseCache:
        """The run's response cache (not opened): under ``base_dir``, signed with this user's key."""
        return ResponseCache(cache_path(self.base_dir), user_cache_keys(), trust=self.cache_trust)

    @property
    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(retries=self.retries, base_delay_s=self.retry_delay, max_total_s=self.retry_time)


@dataclass(frozen=True)
class Sources:
    """Where option values come from: parsed flags by ``dest`` (None when not given), the ini
    file's raw values by key, and the environment."""

    cli: Mapping[str, Any]
    ini: Callable[[str], Any]
    environ: Mapping[str, str]
    invocation_dir: Path
    rootdir: Path

    def value(self, option: o.Option[Any]) -> Any:
        """One option, resolved; ``ValueError`` names the flag, ini key or variable at fault."""
        ini = self.ini(option.ini) if option.ini else None
        return o.resolve(option, self.cli.get(option.dest), ini, self.environ)


_FIELDS: dict[str, o.Option[Any]] = {
    "llm_urls": o.LLM_URL,
    "model": o.MODEL,
    "model_path": o.MODEL_PATH,
    "server": o.SERVER,
    "slots": o.SLOTS,
    "ctx_per_slot": o.CTX_PER_SLOT,
    "gpu_layers": o.GPU_LAYERS,
    "timeout": o.TIMEOUT,
    "max_response_bytes": o.MAX_RESPONSE_BYTES,
    "min_score": o.MIN_SCORE,
    "golden": o.GOLDEN,
    "template": o.TEMPLATE,
    "allow_paths": o.ALLOW_PATH,
    "worst": o.WORST,
    "cache": o.CACHE,
    "cache_clear": o.CACHE_CLEAR,
    "cache_trust": o.CACHE_TRUST,
    "retries": o.RETRIES,
    "retry_time": o.RETRY_TIME,
    "retry_delay": o.RETRY_DELAY,
    "experiment": o.EXPERIMENT,
    "baseline": o.BASELINE,
    "token_weight": o.TOKEN_WEIGHT,
    "max_prompt_chars": o.MAX_PROMPT_CHARS,
    "template_timeout": o.TEMPLATE_TIMEOUT,
    "repeats": o.REPEATS,
    "deterministic": o.DETERMINISTIC,
    "flaky": o.FLAKY,
    "split_evaluate": o.SPLIT_EVALUATE,
}


def resolve_settings(sources: Sources) -> Settings:
    """Every option, resolved once; ``ValueError`` on the first bad value, naming its source."""
    values: dict[str, Any] = {name: sources.value(option) for name, option in _FIELDS.items()}
    api_key = sources.value(o.API_KEY)
    values["api_key"] = SecretStr(api_key) if api_key else None
    values["llm_urls"] = tuple(url.rstrip("/") for url in values["llm_urls"])
    values["ci"] = in_ci(sources.environ)
    values["base_dir"] = o.base_dir(
        sources.cli.get(o.BASE_DIR.dest),
        sources.ini(o.BASE_DIR.ini) if o.BASE_DIR.ini else None,
        sources.environ,
        invocation=sources.invocation_dir,
        root=sources.rootdir,
    )
    slots_given = sources.cli.get(o.SLOTS.dest) or (sources.ini(o.SLOTS.ini) if o.SLOTS.ini else None)
    if values["deterministic"] and values["slots"] > 1 and slots_given:
        raise ValueError(
            f"--llm-deterministic runs the managed llama-server with 1 slot, but {o.SLOTS.flag} "
            f"{values['slots']} asks for {values['slots']}: drop one of the two"
        )
    return Settings(**values)


def in_ci(environ: Mapping[str, str]) -> bool:
    """``CI`` set to anything but empty, 0, false or no (GitHub Actions, GitLab and most CI
    services set ``CI=true``)."""
    return environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def given(sources: Sources, *names: str) -> dict[str, bool]:
    """Which settings the command line set explicitly (an experiment fills only the others)."""
    return {name: bool(sources.cli.get(_FIELDS[name].dest)) for name in names}


__all__ = ["Settings", "Sources", "given", "in_ci", "resolve_settings", "user_cache_keys"]
