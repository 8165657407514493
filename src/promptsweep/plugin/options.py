"""Command-line and ini options, resolved once (CLI > ini > environment > default) into ``Settings``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel, ConfigDict, SecretStr

from promptsweep.core.redact import SECRET_OPTIONS as SECRET_OPTIONS
from promptsweep.core.redact import redact_argv, redact_url
from promptsweep.core.sandbox import DEFAULT_LIMITS, RenderLimits
from promptsweep.llm.endpoint import EndpointConfig
from promptsweep.server.endpoints import ServerConfig

ENV_URL = "PROMPTSWEEP_LLM_URL"
ENV_API_KEY = "PROMPTSWEEP_API_KEY"
ENV_MODEL = "PROMPTSWEEP_MODEL"


class Settings(BaseModel):
    """Everything the plugin needs from the command line, frozen for the session."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    llm_urls: tuple[str, ...] = ()
    api_key: SecretStr | None = None
    model: str | None = None
    model_path: Path | None = None
    server: Literal["auto", "managed", "off"] = "auto"
    slots: int = 4
    ctx_per_slot: int = 2048
    timeout: float = 120.0
    min_score: float | None = None
    golden: Path | None = None
    template: Path | None = None
    base_dir: Path = Path(".promptsweep")
    worst: int = 5
    run_name: str | None = None  # names the run directory (set by --experiment)
    max_prompt_chars: int = DEFAULT_LIMITS.max_prompt_chars
    template_timeout: float = DEFAULT_LIMITS.timeout_s

    @property
    def render_limits(self) -> RenderLimits:
        """How much work rendering one prompt may do (``promptsweep.core.sandbox``)."""
        return RenderLimits(max_prompt_chars=self.max_prompt_chars, timeout_s=self.template_timeout)

    @property
    def endpoint_config(self) -> EndpointConfig:
        """What the transport needs, without pytest."""
        return EndpointConfig(
            api_key=self.api_key.get_secret_value() if self.api_key else None,
            timeout=self.timeout,
            model=self.model,
        )

    @property
    def server_config(self) -> ServerConfig:
        """What the server layer needs, without pytest."""
        return ServerConfig(
            urls=self.llm_urls,
            mode=self.server,
            model_path=self.model_path,
            slots=self.slots,
            ctx_per_slot=self.ctx_per_slot,
            log_dir=self.base_dir / "server",
        )


def redact_args(args: list[str]) -> list[str]:
    """The command line for provenance files and spans: secret option values replaced and
    credentials in URLs redacted (``promptsweep.core.redact``)."""
    return redact_argv(args)


def unit_interval(flag: str) -> Any:
    """A ``type=`` validator for scores: names the flag and the valid range."""

    def convert(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise pytest.UsageError(f"{flag} expects a number in [0, 1], got {text!r}") from None
        if not 0.0 <= value <= 1.0:
            raise pytest.UsageError(f"{flag} must be within [0, 1], got {value}; e.g. {flag}=0.7")
        return value

    return convert


def positive_float(flag: str) -> Any:
    def convert(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise pytest.UsageError(f"{flag} expects a number of seconds, got {text!r}") from None
        if not value > 0:
            raise pytest.UsageError(f"{flag} must be positive, got {value}")
        return value

    return convert


def positive_int(flag: str) -> Any:
    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise pytest.UsageError(f"{flag} expects a whole number, got {text!r}") from None
        if value < 1:
            raise pytest.UsageError(f"{flag} must be at least 1, got {value}")
        return value

    return convert


def existing_file(flag: str) -> Any:
    def convert(text: str) -> Path:
        path = Path(text).expanduser()
        if not path.is_file():
            raise pytest.UsageError(f"{flag}: file not found: {text}")
        return path.resolve()

    return convert


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("promptsweep", "LLM evals as tests (pytest-promptsweep)")
    group.addoption(
        "--llm-url",
        action="append",
        default=[],
        metavar="URL",
        dest="promptsweep_llm_url",
        help="OpenAI-compatible endpoint (e.g. a running llama-server); repeat for several machines. "
        f"Default: ${ENV_URL}, else a managed llama-server.",
    )
    group.addoption(
        "--llm-api-key",
        default=None,
        metavar="KEY",
        dest="promptsweep_api_key",
        help=f"Bearer token for the endpoint; never written to artifacts. Default: ${ENV_API_KEY}.",
    )
    group.addoption(
        "--llm-model",
        default=None,
        metavar="NAME",
        dest="promptsweep_model",
        help="Model name sent in requests (servers hosting several models need it). Default: none.",
    )
    group.addoption(
        "--llm-model-path",
        default=None,
        metavar="GGUF",
        dest="promptsweep_model_path",
        type=existing_file("--llm-model-path"),
        help=f"GGUF file for the managed llama-server. Default: ${ENV_MODEL}, else SmolLM2-135M-Instruct Q4_1.",
    )
    group.addoption(
        "--llm-server",
        default=None,
        choices=("auto", "managed", "off"),
        dest="promptsweep_server",
        help="Start a managed llama-server: auto (when suites are collected and no URL is given), "
        "managed (always), off (never). Default: auto.",
    )
    group.addoption(
        "--llm-slots",
        default=None,
        metavar="N",
        type=positive_int("--llm-slots"),
        dest="promptsweep_slots",
        help="Parallel slots (-np) of the managed llama-server. Default: 4.",
    )
    group.addoption(
        "--llm-timeout",
        default=None,
        metavar="SECONDS",
        type=float,
        dest="promptsweep_timeout",
        help="Per-request timeout. Default: 120.",
    )
    group.addoption(
        "--min-score",
        default=None,
        metavar="X",
        type=unit_interval("--min-score"),
        dest="promptsweep_min_score",
        help="Fail the run when a suite's overall score is below X, in [0, 1]. Default: the suite's thresholds.overall.",
    )
    group.addoption(
        "--golden",
        default=None,
        metavar="PATH",
        type=existing_file("--golden"),
        dest="promptsweep_golden",
        help="Score suites on another dataset of the same schema (JSON, JSONL or YAML). Default: the suite's dataset.",
    )
    group.addoption(
        "--prompt-template",
        default=None,
        metavar="YAML",
        type=existing_file("--prompt-template"),
        dest="promptsweep_template",
        help="Score suites with another prompt template (e.g. an --optimize winner). Default: the suite's template.",
    )
    group.addoption(
        "--promptsweep-dir",
        default=None,
        metavar="DIR",
        dest="promptsweep_dir",
        help="Where runs, caches and reports are written. Default: .promptsweep under the rootdir.",
    )
    group.addoption(
        "--promptsweep-worst",
        default=None,
        metavar="N",
        type=int,
        dest="promptsweep_worst",
        help="Worst samples shown in the terminal summary. Default: 5.",
    )
    group.addoption(
        "--max-prompt-chars",
        default=None,
        metavar="N",
        type=positive_int("--max-prompt-chars"),
        dest="promptsweep_max_prompt_chars",
        help="Largest prompt a template may render (all messages, in characters); larger values and "
        f"prompts are errors naming the template and sample. Default: {DEFAULT_LIMITS.max_prompt_chars}.",
    )
    group.addoption(
        "--template-timeout",
        default=None,
        metavar="SECONDS",
        type=positive_float("--template-timeout"),
        dest="promptsweep_template_timeout",
        help=f"Time limit for rendering one prompt. Default: {DEFAULT_LIMITS.timeout_s:g}.",
    )
    parser.addini("llm_url", type="linelist", default=[], help="Default --llm-url value(s).")
    parser.addini("promptsweep_max_prompt_chars", default="", help="Default --max-prompt-chars.")
    parser.addini("promptsweep_template_timeout", default="", help="Default --template-timeout.")
    parser.addini("promptsweep_dir", default="", help="Default --promptsweep-dir.")
    parser.addini("promptsweep_slots", default="", help="Default --llm-slots.")
    parser.addini("promptsweep_server", default="", help="Default --llm-server (auto, managed, off).")


def resolve_settings(config: pytest.Config) -> Settings:
    """CLI > ini > environment > default, validated once; errors are UsageErrors naming the option."""
    opt = config.option
    urls: list[str] = list(opt.promptsweep_llm_url or []) or list(config.getini("llm_url") or [])
    if not urls and os.environ.get(ENV_URL):
        urls = [u.strip() for u in os.environ[ENV_URL].split(",") if u.strip()]
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise pytest.UsageError(f"--llm-url must start with http:// or https://, got {redact_url(url)!r}")
    api_key = opt.promptsweep_api_key or os.environ.get(ENV_API_KEY)
    model_path = opt.promptsweep_model_path
    if model_path is None and os.environ.get(ENV_MODEL):
        model_path = Path(os.environ[ENV_MODEL]).expanduser()
        if not model_path.is_file():
            raise pytest.UsageError(f"${ENV_MODEL} points to a missing file: {model_path}")
    slots_ini = config.getini("promptsweep_slots")
    slots = opt.promptsweep_slots or (positive_int("promptsweep_slots (ini)")(slots_ini) if slots_ini else 4)
    server = opt.promptsweep_server or config.getini("promptsweep_server") or "auto"
    if server not in ("auto", "managed", "off"):
        raise pytest.UsageError(f"promptsweep_server (ini) must be auto, managed or off, got {server!r}")
    base = opt.promptsweep_dir or config.getini("promptsweep_dir") or ".promptsweep"
    base_dir = Path(base)
    if not base_dir.is_absolute():
        base_dir = config.rootpath / base_dir
    timeout = opt.promptsweep_timeout if opt.promptsweep_timeout is not None else 120.0
    if timeout <= 0:
        raise pytest.UsageError(f"--llm-timeout must be positive, got {timeout}")
    chars_ini = config.getini("promptsweep_max_prompt_chars")
    max_prompt_chars = opt.promptsweep_max_prompt_chars or (
        positive_int("promptsweep_max_prompt_chars (ini)")(chars_ini)
        if chars_ini
        else DEFAULT_LIMITS.max_prompt_chars
    )
    timeout_ini = config.getini("promptsweep_template_timeout")
    template_timeout = opt.promptsweep_template_timeout or (
        positive_float("promptsweep_template_timeout (ini)")(timeout_ini)
        if timeout_ini
        else DEFAULT_LIMITS.timeout_s
    )
    return Settings(
        llm_urls=tuple(urls),
        max_prompt_chars=max_prompt_chars,
        template_timeout=template_timeout,
        api_key=SecretStr(api_key) if api_key else None,
        model=opt.promptsweep_model,
        model_path=model_path,
        server=server,  # type: ignore[arg-type]
        slots=slots,
        timeout=timeout,
        min_score=opt.promptsweep_min_score,
        golden=opt.promptsweep_golden,
        template=opt.promptsweep_template,
        base_dir=base_dir,
        worst=opt.promptsweep_worst if opt.promptsweep_worst is not None else 5,
    )
