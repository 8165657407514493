"""Every promptsweep option, defined once: flag, ini key, environment variable, default and check.

The pytest plugin (``promptsweep.plugin.options``) and the ``promptsweep`` command
(``promptsweep.cli``) both build their flags from this table and resolve them with
:func:`resolve` (command line > ini > environment > default), so an option means the same
thing, with the same default and the same error message, wherever it is given.
Nothing here imports pytest or argparse.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from promptsweep.core.io.redact import redact_url
from promptsweep.core.measure.gate import FLAKY_POLICIES
from promptsweep.core.templates.sandbox import DEFAULT_LIMITS
from promptsweep.llm.cache import DEFAULT_MODE, MODES
from promptsweep.llm.client import DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_TIMEOUT_S
from promptsweep.llm.retry import DEFAULT_BASE_DELAY_S, DEFAULT_RETRIES, DEFAULT_RETRY_TIME_S
from promptsweep.server.endpoints import SERVER_MODES
from promptsweep.server.managed import DEFAULT_CTX_PER_SLOT, DEFAULT_SLOTS
from promptsweep.server.provision import ENV_MODEL

T = TypeVar("T")
Converter = Callable[[str, str], T]
"""``convert(text, flag) -> value``; raises ``ValueError`` whose message names ``flag`` and the fix."""

ENV_DIR = "PROMPTSWEEP_DIR"
ENV_URL = "PROMPTSWEEP_LLM_URL"
ENV_API_KEY = "PROMPTSWEEP_API_KEY"
DEFAULT_DIR = ".promptsweep"


# ------------------------------------------------------------------------------ converters


def _number(text: str, flag: str, kind: type[float] | type[int], what: str) -> Any:
    try:
        value = kind(text)
    except (TypeError, ValueError):
        raise ValueError(f"{flag} expects {what}, got {text!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{flag} expects {what}, got {text!r}")
    return value


def _bounded(
    kind: type[float] | type[int], what: str, ok: Callable[[Any], bool], rule: str, example: str = ""
) -> Any:
    """A number converter: ``what`` it expects, and the ``rule`` (with an example) it enforces."""

    def convert(text: str, flag: str) -> Any:
        value = _number(text, flag, kind, what)
        if not ok(value):
            hint = f"; e.g. {flag}={example}" if example else ""
            raise ValueError(f"{flag} {rule}, got {value}{hint}")
        return value

    return convert


unit_interval: Converter[float] = _bounded(
    float, "a number in [0, 1]", lambda v: 0.0 <= v <= 1.0, "must be within [0, 1]", "0.7"
)
positive_int: Converter[int] = _bounded(int, "a whole number", lambda v: v >= 1, "must be at least 1")
non_negative_int: Converter[int] = _bounded(int, "a whole number", lambda v: v >= 0, "must be 0 or more")
positive_float: Converter[float] = _bounded(float, "a number of seconds", lambda v: v > 0, "must be positive")
non_negative_float: Converter[float] = _bounded(
    float, "a number >= 0", lambda v: v >= 0, "must be >= 0", "0.05"
)


def boolean(text: str, flag: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{flag} expects true or false, got {text!r}")


def existing_file(text: str, flag: str) -> Path:
    path = Path(text).expanduser()
    if not path.is_file():
        raise ValueError(f"{flag}: file not found: {text}")
    return path.resolve()


def existing_dir(text: str, flag: str) -> Path:
    path = Path(text).expanduser()
    if not path.is_dir():
        raise ValueError(f"{flag}: not a directory: {text}")
    return path.resolve()


def http_url(text: str, flag: str) -> str:
    url = text.strip()
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"{flag} must start with http:// or https://, got {redact_url(url)!r}")
    return url


def gpu_layers(value: str, flag: str) -> int | str:
    """``all`` or a number of layers (0 keeps everything on the CPU)."""
    text_value = value.strip().lower()
    if text_value == "all":
        return "all"
    try:
        number = int(text_value)
    except ValueError:
        raise ValueError(
            f"{flag} expects a number of layers or 'all', got {value!r}; e.g. {flag}=all"
        ) from None
    if number < 0:
        raise ValueError(f"{flag} must be 0 or more (or 'all'), got {number}")
    return number


def text(value: str, flag: str) -> str:
    return value


def one_of(*choices: str) -> Converter[str]:
    def convert(value: str, flag: str) -> str:
        if value not in choices:
            raise ValueError(f"{flag} must be one of {', '.join(choices)}, got {value!r}")
        return value

    return convert


# ------------------------------------------------------------------------------ the table


@dataclass(frozen=True)
class Option(Generic[T]):
    """One option. ``flag`` is the pytest flag; ``cli_flag`` its spelling in the ``promptsweep``
    command where it has one there. ``many`` options repeat on the command line, are a line
    list in the ini file and comma-separated in the environment."""

    flag: str
    dest: str
    help: str
    convert: Converter[T]
    default: T | None = None
    default_text: str | None = None
    metavar: str | None = None
    env: str | None = None
    ini: str | None = None
    choices: tuple[str, ...] = ()
    many: bool = False
    switch: bool = False
    cli_flag: str | None = None

    @property
    def help_text(self) -> str:
        """The help line with its "Default:" (pytest-benchmark's habit), naming the variable."""
        default = self.default_text or ("none" if self.default is None else _show(self.default))
        if self.env:
            default = f"${self.env}, else {default}"
        return f"{self.help} Default: {default}."

    def from_text(self, value: str, source: str) -> T:
        return self.convert(value, source)


def _show(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


LLM_URL = Option[str](
    "--llm-url",
    "promptsweep_llm_url",
    "OpenAI-compatible endpoint (e.g. a running llama-server); repeat for several machines.",
    http_url,
    metavar="URL",
    env=ENV_URL,
    ini="llm_url",
    many=True,
    default_text="a managed llama-server",
)
API_KEY = Option[str](
    "--llm-api-key",
    "promptsweep_api_key",
    "Bearer token for the endpoint; never written to artifacts.",
    text,
    metavar="KEY",
    env=ENV_API_KEY,
)
MODEL = Option[str](
    "--llm-model",
    "promptsweep_model",
    "Model name sent in requests (servers hosting several models need it).",
    text,
    metavar="NAME",
)
MODEL_PATH = Option[Path](
    "--llm-model-path",
    "promptsweep_model_path",
    "GGUF file for the managed llama-server.",
    existing_file,
    metavar="GGUF",
    env=ENV_MODEL,
    default_text="SmolLM2-135M-Instruct Q4_1",
    cli_flag="--model",
)
SERVER = Option[str](
    "--llm-server",
    "promptsweep_server",
    "Start a managed llama-server: auto (when suites are collected and no URL is given), "
    "managed (always), off (never).",
    one_of(*SERVER_MODES),
    default="auto",
    ini="promptsweep_server",
    choices=SERVER_MODES,
)
SLOTS = Option[int](
    "--llm-slots",
    "promptsweep_slots",
    "Parallel slots (-np) of the managed llama-server.",
    positive_int,
    default=DEFAULT_SLOTS,
    metavar="N",
    ini="promptsweep_slots",
    cli_flag="--slots",
)
CTX_PER_SLOT = Option[int](
    "--llm-ctx-per-slot",
    "promptsweep_ctx_per_slot",
    "Context tokens per slot of the managed llama-server.",
    positive_int,
    default=DEFAULT_CTX_PER_SLOT,
    metavar="N",
    cli_flag="--ctx-per-slot",
)
GPU_LAYERS = Option[Any](
    "--llm-gpu-layers",
    "promptsweep_gpu_layers",
    "Layers of the model the managed llama-server offloads to the GPU (-ngl): a number, or all.",
    gpu_layers,
    metavar="N|all",
    env="PROMPTSWEEP_GPU_LAYERS",
    ini="promptsweep_gpu_layers",
    default_text="all when the llama-server build has a GPU backend (Metal, CUDA), else none",
    cli_flag="--gpu-layers",
)
TIMEOUT = Option[float](
    "--llm-timeout",
    "promptsweep_timeout",
    "How long a server may send nothing (no header, byte or streamed token) before a request "
    "counts as hung, in seconds; llama-server streams its answers, so a busy one is never cut "
    "off for being slow. Each request also has a total cap: 4 x SECONDS, or 10 x what it should "
    "take at the slowest speed this run measured, whichever is longer. Requests that time out "
    "are asked once more at the end of the run.",
    positive_float,
    default=DEFAULT_TIMEOUT_S,
    metavar="SECONDS",
)
MAX_RESPONSE_BYTES = Option[int](
    "--llm-max-response-bytes",
    "promptsweep_max_response_bytes",
    "Largest response body a server may send, counted after gzip/deflate decoding; a larger one "
    "errors that sample.",
    positive_int,
    default=DEFAULT_MAX_RESPONSE_BYTES,
    default_text=f"{DEFAULT_MAX_RESPONSE_BYTES} (16 MiB)",
    metavar="N",
    ini="promptsweep_max_response_bytes",
)
MIN_SCORE = Option[float](
    "--min-score",
    "promptsweep_min_score",
    "Fail the run when a suite's overall score is below X, in [0, 1].",
    unit_interval,
    metavar="X",
    default_text="the suite's thresholds.overall",
)
GOLDEN = Option[Path](
    "--golden",
    "promptsweep_golden",
    "Score suites on another dataset of the same schema (JSON, JSONL or YAML).",
    existing_file,
    metavar="PATH",
    default_text="the suite's dataset",
)
TEMPLATE = Option[Path](
    "--prompt-template",
    "promptsweep_template",
    "Score suites with another prompt template (e.g. an --optimize winner).",
    existing_file,
    metavar="YAML",
    default_text="the suite's template",
)
ALLOW_PATH = Option[Path](
    "--allow-path",
    "promptsweep_allow_path",
    "Let suites, templates, experiments and search spaces name files under DIR, outside the "
    "project (repeat for several). Only on the command line: a file in a pull request cannot "
    "widen what files may name.",
    existing_dir,
    metavar="DIR",
    many=True,
    default_text="only files inside the rootdir (symbolic links resolved)",
)
BASE_DIR = Option[str](
    "--promptsweep-dir",
    "promptsweep_dir",
    "Where runs, caches and reports are written (the promptsweep command reads the same place).",
    text,
    metavar="DIR",
    env=ENV_DIR,
    ini="promptsweep_dir",
    default_text=f"{DEFAULT_DIR} under pytest's rootdir (the current directory for the promptsweep command)",
    cli_flag="--dir",
)
WORST = Option[int](
    "--promptsweep-worst",
    "promptsweep_worst",
    "Worst samples shown in the terminal summary.",
    non_negative_int,
    default=5,
    metavar="N",
)
MAX_PROMPT_CHARS = Option[int](
    "--max-prompt-chars",
    "promptsweep_max_prompt_chars",
    "Largest prompt a template may render (all messages, in characters); larger values and "
    "prompts are errors naming the template and sample.",
    positive_int,
    default=DEFAULT_LIMITS.max_prompt_chars,
    metavar="N",
    ini="promptsweep_max_prompt_chars",
)
TEMPLATE_TIMEOUT = Option[float](
    "--template-timeout",
    "promptsweep_template_timeout",
    "Time limit for rendering one prompt, in seconds.",
    positive_float,
    default=DEFAULT_LIMITS.timeout_s,
    metavar="SECONDS",
    ini="promptsweep_template_timeout",
)
CACHE = Option[str](
    "--llm-cache",
    "promptsweep_cache",
    "Response cache under --promptsweep-dir: read-write (answer repeated requests from it and "
    "store new answers), read, write, off, or check (ask the server again, compare each answer with "
    "the stored one and report the agreement rate; never writes).",
    one_of(*MODES),
    default=DEFAULT_MODE,
    ini="promptsweep_cache",
    choices=MODES,
)
CACHE_CLEAR = Option[bool](
    "--llm-cache-clear",
    "promptsweep_cache_clear",
    "Empty the response cache before the run.",
    lambda value, flag: value.strip().lower() in ("1", "true", "yes"),
    default=False,
    switch=True,
)
CACHE_TRUST = Option[bool](
    "--llm-cache-trust",
    "promptsweep_cache_trust",
    "Answer (and gate) from response-cache entries this machine did not write: a cache copied "
    "or restored from elsewhere, one tracked by git, or written before entries were signed. "
    "Without it such answers are reported, and under CI=true the run fails rather than gate on "
    "them; with it they are accepted, and signed as this machine's where the run writes the "
    "cache. Only on the command line: a file in a pull request cannot vouch for a cache.",
    boolean,
    default=False,
    default_text="off",
    switch=True,
)
REPEATS = Option[int](
    "--llm-repeats",
    "promptsweep_repeats",
    "Ask every sample N times (each repeat is its own item, request and cache entry) to measure "
    "how often the answers change; intervals and the gate then cover that noise.",
    positive_int,
    metavar="N",
    ini="promptsweep_repeats",
    default_text="the suite's repeats, else 1",
)
DETERMINISTIC = Option[bool](
    "--llm-deterministic",
    "promptsweep_deterministic",
    "Send requests so the same request gives the same answer on llama-server: cache_prompt off "
    "and one request at a time per server (the managed server runs 1 slot; -n auto = 1 worker per "
    "server). Slower; recorded in config.json.",
    boolean,
    default=False,
    default_text="off",
    ini="promptsweep_deterministic",
    switch=True,
)
FLAKY = Option[str](
    "--promptsweep-flaky",
    "promptsweep_flaky",
    "What flaky samples (with repeats: parsed answers or pass/fail differ between repeats) do: "
    "fail the gate, warn (list them in the summary), or ignore them.",
    one_of(*FLAKY_POLICIES),
    default="warn",
    env="PROMPTSWEEP_FLAKY",
    ini="promptsweep_flaky",
    choices=FLAKY_POLICIES,
)
RETRIES = Option[int](
    "--llm-retries",
    "promptsweep_retries",
    "Retries of a failed LLM call (connect errors, 408, 429, 5xx), with exponential backoff "
    "and jitter, honouring Retry-After; 0 disables them, and the end-of-run retry of timed-out "
    "calls too.",
    non_negative_int,
    default=DEFAULT_RETRIES,
    metavar="N",
    ini="promptsweep_retries",
)
RETRY_TIME = Option[float](
    "--llm-retry-time",
    "promptsweep_retry_time",
    "Give up retrying one call after this many seconds.",
    positive_float,
    default=DEFAULT_RETRY_TIME_S,
    metavar="SECONDS",
)
RETRY_DELAY = Option[float](
    "--llm-retry-delay",
    "promptsweep_retry_delay",
    "First backoff delay in seconds (doubles each retry, full jitter).",
    positive_float,
    default=DEFAULT_BASE_DELAY_S,
    metavar="SECONDS",
)
EXPERIMENT = Option[str](
    "--experiment",
    "promptsweep_experiment",
    "Run an experiment: evals/experiments/NAME.yaml or a YAML path. It sets the dataset, prompt, "
    "endpoint, model, llm_config and concurrency for the run and names the run directory.",
    text,
    metavar="NAME|PATH",
)
BASELINE = Option[str](
    "--baseline",
    "promptsweep_baseline",
    "Fail the gate when the overall score drops significantly (paired 95% CI below 0) and by more "
    "than either run's measured noise against RUN: a run directory, a run name under "
    "<promptsweep-dir>/runs, or an experiment id / suite name (its latest run); RUN must have used "
    "the same mode (--llm-deterministic or not).",
    text,
    metavar="RUN",
    default_text="no baseline",
)
TOKEN_WEIGHT = Option[float](
    "--objective-token-weight",
    "promptsweep_objective_token_weight",
    "Multi-objective score = score - LAMBDA * tokens_per_sample / 1000, shown in reports and the "
    "leaderboard ranking.",
    non_negative_float,
    default=0.0,
    default_text="0 (quality only)",
    metavar="LAMBDA",
)

SPLIT_SIDES = ("all", "train", "validation", "test", "held_out")
SPLIT_EVALUATE = Option[str](
    "--split-evaluate",
    "promptsweep_split_evaluate",
    "Which side of each suite's split a plain run scores: all, train, validation (the samples "
    "--optimize chooses on), test (those it confirms its winner on) or held_out (validation and test: "
    "every sample a retrieved-examples prompt cannot see); overrides the suite's split.evaluate.",
    one_of(*SPLIT_SIDES),
    default_text="the suite's split.evaluate (all)",
    env="PROMPTSWEEP_SPLIT_EVALUATE",
    ini="promptsweep_split_evaluate",
    choices=SPLIT_SIDES,
)

PYTEST_OPTIONS: tuple[Option[Any], ...] = (
    LLM_URL,
    API_KEY,
    MODEL,
    MODEL_PATH,
    SERVER,
    SLOTS,
    CTX_PER_SLOT,
    GPU_LAYERS,
    TIMEOUT,
    MAX_RESPONSE_BYTES,
    MIN_SCORE,
    GOLDEN,
    TEMPLATE,
    ALLOW_PATH,
    BASE_DIR,
    WORST,
    MAX_PROMPT_CHARS,
    TEMPLATE_TIMEOUT,
    CACHE,
    CACHE_CLEAR,
    CACHE_TRUST,
    REPEATS,
    DETERMINISTIC,
    FLAKY,
    RETRIES,
    RETRY_TIME,
    RETRY_DELAY,
    EXPERIMENT,
    BASELINE,
    TOKEN_WEIGHT,
    SPLIT_EVALUATE,
)
"""The options of ``pytest`` (in ``--help`` order); the optimizer adds its own."""


def resolve(
    option: Option[T],
    cli: Any,
    ini: str | Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Any:
    """The option's value: command line > ini > environment > default.

    ``cli`` is already converted (the flag's parser did it); ini and environment text is
    converted here, and a bad value names where it came from (``promptsweep_slots (ini)``,
    ``$PROMPTSWEEP_LLM_URL``). ``many`` options return a tuple.
    """
    if option.many:
        if cli:
            return tuple(cli)
        if ini:
            lines = [ini] if isinstance(ini, str) else list(ini)
            return tuple(option.from_text(v, f"{option.ini} (ini)") for v in lines if v.strip())
        raw = (environ or {}).get(option.env or "", "")
        values = [v.strip() for v in raw.split(",") if v.strip()]
        return tuple(option.from_text(v, f"${option.env}") for v in values)
    if cli is not None and cli is not False:
        return cli
    if isinstance(ini, bool):  # a switch's ini key (pytest parses true/false)
        if ini:
            return True
    elif ini and isinstance(ini, str) and ini.strip():
        return option.from_text(ini.strip(), f"{option.ini} (ini)")
    raw_env = (environ or {}).get(option.env or "", "") if option.env else ""
    if raw_env.strip():
        return option.from_text(raw_env.strip(), f"${option.env}")
    return option.default


def base_dir(
    cli: str | None, ini: str | None, environ: Mapping[str, str], *, invocation: Path, root: Path
) -> Path:
    """The promptsweep directory, the same for pytest and the ``promptsweep`` command.

    A path from the command line or ``$PROMPTSWEEP_DIR`` is relative to where the command
    runs; one from the ini file is relative to the rootdir; the default is ``.promptsweep``
    in ``root`` (pytest's rootdir, the current directory for the command).
    """
    if cli:
        chosen, start = Path(cli), invocation
    elif ini and ini.strip():
        chosen, start = Path(ini.strip()), root
    elif environ.get(ENV_DIR, "").strip():
        chosen, start = Path(environ[ENV_DIR].strip()), invocation
    else:
        chosen, start = Path(DEFAULT_DIR), root
    chosen = chosen.expanduser()
    return chosen if chosen.is_absolute() else start / chosen
