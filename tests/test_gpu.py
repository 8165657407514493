"""GPU offload: the backend a build picks, what the managed server is told (-ngl), and the option.

No GPU here: detection is tested with a monkeypatched platform and PATH (fake ``nvcc`` and
``nvidia-smi``), the command line without starting a server. Measuring the speed-up waits
for a machine with a GPU.
"""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest

from promptsweep.config import options as o
from promptsweep.server import provision
from promptsweep.server.endpoints import default_gpu_layers
from promptsweep.server.managed import ManagedServer, build_command, gpu_layers_args


def _tool(directory: Path, name: str, body: str) -> None:
    path = directory / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def bin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "bin"
    directory.mkdir()
    monkeypatch.setenv("PATH", str(directory))
    monkeypatch.delenv("PROMPTSWEEP_CMAKE_ARGS", raising=False)
    return directory


def test_macos_builds_with_metal(bin_dir: Path) -> None:
    assert provision.detect_gpu_backend(platform="darwin") == "metal"
    args = provision.cmake_configure_args(Path("s"), Path("b"), generator="Unix Makefiles", backend="metal")
    assert "-DGGML_METAL=ON" in args
    assert provision.backend_of_cmake_args(args, platform="darwin") == "metal"


def test_nvcc_and_a_listed_device_build_with_cuda(bin_dir: Path) -> None:
    _tool(bin_dir, "nvcc", "exit 0")
    _tool(bin_dir, "nvidia-smi", 'echo "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1234)"')
    assert provision.detect_gpu_backend(platform="linux") == "cuda"
    args = provision.cmake_configure_args(Path("s"), Path("b"), generator="Unix Makefiles")
    assert "-DGGML_CUDA=ON" in args
    assert provision.backend_of_cmake_args(args, platform="linux") == "cuda"


@pytest.mark.parametrize(
    "smi",
    [
        None,  # a CUDA toolkit in a CI image, no driver
        'echo "No devices found."',
        "echo 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver'; exit 9",
    ],
)
def test_nvcc_without_a_gpu_stays_cpu(bin_dir: Path, smi: str | None) -> None:
    """This machine's case: nvcc on PATH but no GPU must not make a CUDA build that cannot run."""
    _tool(bin_dir, "nvcc", "exit 0")
    if smi is not None:
        _tool(bin_dir, "nvidia-smi", smi)
    assert provision.detect_gpu_backend(platform="linux") == "cpu"
    args = provision.cmake_configure_args(Path("s"), Path("b"), generator="Unix Makefiles")
    assert not any("GGML_CUDA" in a or "GGML_METAL" in a for a in args)
    assert provision.backend_of_cmake_args(args, platform="linux") == "cpu"


def test_a_device_without_nvcc_cannot_build_cuda(bin_dir: Path) -> None:
    _tool(bin_dir, "nvidia-smi", 'echo "GPU 0: NVIDIA A10"')
    assert provision.detect_gpu_backend(platform="linux") == "cpu"


def test_the_cmake_variable_still_overrides_the_detected_backend(
    bin_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _tool(bin_dir, "nvcc", "exit 0")
    _tool(bin_dir, "nvidia-smi", 'echo "GPU 0: NVIDIA A10"')
    monkeypatch.setenv("PROMPTSWEEP_CMAKE_ARGS", "-DGGML_CUDA=OFF")
    args = provision.cmake_configure_args(Path("s"), Path("b"), generator="Unix Makefiles")
    assert args[-2:] == ["-DGGML_CUDA=ON", "-DGGML_CUDA=OFF"]  # cmake: the last one wins
    assert provision.backend_of_cmake_args(args, platform="linux") == "cpu"
    assert provision.backend_of_cmake_args(["-DGGML_METAL=OFF"], platform="darwin") == "cpu"


def test_the_backend_of_a_binary_is_read_back(tmp_path: Path) -> None:
    built = tmp_path / "llama-server"
    _tool(tmp_path, "llama-server", "exit 1")
    (tmp_path / "llama-server.backend").write_text("cuda\n")
    assert provision.llama_server_backend(built) == "cuda"
    # Not ours (PATH, Homebrew): what --list-devices says.
    other = tmp_path / "other"
    other.mkdir()
    _tool(
        other,
        "llama-server",
        'echo "Available devices:"; echo "  Metal: Apple M2 Pro (21845 MiB, 21845 MiB free)"',
    )
    assert provision.llama_server_backend(other / "llama-server") == "metal"
    cpu_only = tmp_path / "cpu"
    cpu_only.mkdir()
    _tool(cpu_only, "llama-server", 'echo "Available devices:"; echo "  (none)"')  # this machine's build
    assert provision.llama_server_backend(cpu_only / "llama-server") == "cpu"
    old = tmp_path / "old"
    old.mkdir()
    _tool(old, "llama-server", "echo 'error: invalid argument: --list-devices' >&2; exit 1")
    assert provision.llama_server_backend(old / "llama-server") is None
    assert provision.parse_list_devices("Available devices:\n  CUDA0: NVIDIA H100 (80000 MiB)\n") == "cuda"
    assert provision.parse_list_devices("Available devices:\n  Vulkan0: AMD Radeon\n") == "vulkan"


@pytest.mark.parametrize(
    ("given", "backend", "expected"),
    [
        (None, "cuda", "all"),
        (None, "metal", "all"),
        (None, "vulkan", "all"),
        (None, "cpu", None),
        (None, None, None),  # unknown build: leave it to the server's own default
        (0, "cuda", 0),
        (12, "cpu", 12),
        ("all", None, "all"),
    ],
)
def test_default_gpu_layers(given: int | str | None, backend: str | None, expected: int | str | None) -> None:
    assert default_gpu_layers(given, backend) == expected  # type: ignore[arg-type]


def test_the_managed_server_command_carries_ngl(tmp_path: Path) -> None:
    def command(gpu_layers: int | str | None) -> list[str]:
        return build_command(
            tmp_path / "bin",
            tmp_path / "m.gguf",
            host="127.0.0.1",
            port=1,
            slots=1,
            ctx_per_slot=512,
            gpu_layers=gpu_layers,  # type: ignore[arg-type]
        )

    assert "-ngl" not in command(None)
    assert " ".join(command("all")).endswith("-ngl 999")
    assert " ".join(command(0)).endswith("-ngl 0")
    assert gpu_layers_args(20) == ["-ngl", "20"]
    server = ManagedServer(tmp_path / "bin", tmp_path / "m.gguf", gpu_layers="all", log_path=tmp_path / "log")
    assert server.command[-2:] == ["-ngl", "999"]


@pytest.mark.parametrize(("text", "expected"), [("all", "all"), ("ALL", "all"), ("0", 0), ("33", 33)])
def test_the_gpu_layers_option(text: str, expected: int | str) -> None:
    assert o.resolve(o.GPU_LAYERS, None, text, {}) == expected
    assert o.resolve(o.GPU_LAYERS, None, None, {"PROMPTSWEEP_GPU_LAYERS": text}) == expected
    assert o.resolve(o.GPU_LAYERS, None, None, {}) is None


@pytest.mark.parametrize(
    ("text", "message"), [("-1", "must be 0 or more"), ("most", "a number of layers or 'all'")]
)
def test_a_bad_gpu_layers_value_names_the_option(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        o.resolve(o.GPU_LAYERS, None, text, {})


def test_pytest_takes_the_flag(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--llm-gpu-layers", "most")
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*--llm-gpu-layers expects a number of layers or 'all', got 'most'*"])


def test_subprocess_stub_is_not_needed_for_cpu_detection(bin_dir: Path) -> None:
    """No nvcc at all: detection never runs nvidia-smi."""

    def refuse(*args: object, **kwargs: object) -> subprocess.CompletedProcess[str]:
        raise AssertionError("nvidia-smi must not run without nvcc")

    assert provision.detect_gpu_backend(platform="linux", run=refuse) == "cpu"


@pytest.mark.parametrize(
    ("recorded", "given", "ngl"), [("cuda", None, "all"), ("cpu", None, None), ("cpu", 8, 8)]
)
def test_the_managed_server_gets_ngl_from_its_builds_backend_and_config_json_records_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recorded: str, given: int | None, ngl: int | str | None
) -> None:
    from promptsweep.llm.client import EndpointInfo
    from promptsweep.llm.endpoint import EndpointConfig
    from promptsweep.server import endpoints

    _tool(tmp_path, "llama-server", "echo 'version: 1 (abc)'")
    binary = tmp_path / "llama-server"
    (tmp_path / "llama-server.backend").write_text(recorded + "\n")
    started: dict[str, object] = {}

    class FakeServer:
        def __init__(self, binary: Path, model: Path, **kwargs: object) -> None:
            self.binary = binary
            self.gpu_layers = kwargs["gpu_layers"]
            started.update(kwargs)

        def start(self) -> str:
            return "http://127.0.0.1:1"

        def stop(self) -> None:
            pass

    monkeypatch.setattr(endpoints, "ManagedServer", FakeServer)
    monkeypatch.setattr(endpoints, "ensure_llama_server", lambda progress: binary)
    monkeypatch.setattr(endpoints, "ensure_default_model", lambda progress: tmp_path / "m.gguf")
    monkeypatch.setattr(endpoints, "probe_url", lambda url, config: EndpointInfo(url=url))
    monkeypatch.setattr(endpoints, "record_identity", lambda *args: None)
    manager = endpoints.EndpointManager(
        endpoints.ServerConfig(log_dir=tmp_path / "logs", gpu_layers=given),
        EndpointConfig(),  # type: ignore[arg-type]
    )
    manager.start_managed()
    assert started["gpu_layers"] == ngl
    provenance = manager.server_provenance() or {}
    assert provenance["backend"] == recorded and provenance["gpu_layers"] == ngl
