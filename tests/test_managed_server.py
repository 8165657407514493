"""ManagedServer against fake servers (fast, always run) and the real llama-server."""

from __future__ import annotations

import json
import socket
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from promptsweep.server.managed import ManagedServer, ServerStartError, build_command, free_port

FAKE_SERVER = textwrap.dedent(
    """\
    import os, signal, sys, time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    args = sys.argv[1:]
    def opt(name, default=None):
        return args[args.index(name) + 1] if name in args else default

    mode = opt("--fake-mode", "ok")
    print("fake llama-server starting", " ".join(args), flush=True)
    if mode == "ignore-term":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    started = time.monotonic()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            loading = mode in ("loading", "ignore-term") or time.monotonic() - started < 0.3
            code = 503 if loading and mode != "ignore-term" else 200
            body = b'{"status": "ok"}' if code == 200 else b'{"error": "Loading model"}'
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def log_message(self, *a):
            pass

    ThreadingHTTPServer((opt("--host"), int(opt("--port"))), Handler).serve_forever()
    """
)


def write_script(path: Path, body: str) -> Path:
    path.write_text(body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def fake_server(tmp_path: Path) -> Path:
    return write_script(tmp_path / "llama-server", f"#!{sys.executable}\n{FAKE_SERVER}")


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF")
    return path


def port_is_free(port: int) -> bool:
    """Whether a new server could listen there (SO_REUSEADDR, as servers do: ignores
    TIME_WAIT leftovers from closed client connections, but not a live listener)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def process_gone(pid: int, timeout: float = 30.0) -> bool:
    """True once ``pid`` no longer exists (zombies count as gone). Returns as soon as it is
    gone; the bound is only how long a failure takes to show on a busy machine."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


# ----------------------------------------------------------------------------- fakes


def test_build_command_shape(tmp_path: Path) -> None:
    cmd = build_command(
        tmp_path / "bin",
        tmp_path / "m.gguf",
        host="127.0.0.1",
        port=8123,
        slots=3,
        ctx_per_slot=1000,
        extra_args=["--temp", "0"],
    )
    assert cmd[0] == str(tmp_path / "bin")
    joined = " ".join(cmd)
    assert f"-m {tmp_path / 'm.gguf'}" in joined
    assert "--host 127.0.0.1 --port 8123 -np 3 -c 3000" in joined
    assert "--no-webui" in cmd
    assert cmd[-2:] == ["--temp", "0"]


def test_free_port_is_bindable() -> None:
    assert port_is_free(free_port())


def test_exits_immediately_raises_with_log(tmp_path: Path, model: Path) -> None:
    binary = write_script(
        tmp_path / "llama-server",
        "#!/bin/sh\necho 'error: failed to load model from m.gguf' >&2\nexit 3\n",
    )
    server = ManagedServer(binary, model, startup_timeout=10)
    assert server.log_path.exists()  # default: a temp file, kept for diagnosis
    with pytest.raises(ServerStartError) as info:
        server.start()
    message = str(info.value)
    assert str(server.log_path) in message
    assert "exited with code 3" in message
    assert "error: failed to load model from m.gguf" in message
    assert info.value.log_path == server.log_path
    assert not server.is_alive()
    assert server.pid is None
    server.log_path.unlink()


def test_missing_binary_and_model(tmp_path: Path, model: Path, fake_server: Path) -> None:
    log = tmp_path / "s.log"
    with pytest.raises(ServerStartError, match="binary not found"):
        ManagedServer(tmp_path / "nope", model, log_path=log).start()
    with pytest.raises(ServerStartError, match="model file not found"):
        ManagedServer(fake_server, tmp_path / "nope.gguf", log_path=log).start()


def test_start_waits_through_503_then_stop_and_restart(
    tmp_path: Path, fake_server: Path, model: Path
) -> None:
    log = tmp_path / "logs" / "server.log"
    server = ManagedServer(fake_server, model, slots=3, ctx_per_slot=512, log_path=log)
    with server:
        url = server.url
        assert url == f"http://127.0.0.1:{server.port}"
        assert server.is_alive()
        first_pid = server.pid
        assert first_pid is not None
        assert httpx.get(f"{url}/health", trust_env=False).status_code == 200
        text = log.read_text()
        assert "-np 3 -c 1536" in text and "--host 127.0.0.1" in text

        assert server.restart() == url  # same port
        assert server.pid not in (None, first_pid)
        assert process_gone(first_pid)
        port = server.port
        assert port is not None
    assert not server.is_alive()
    assert process_gone(server.pid or first_pid)
    assert port_is_free(port)
    server.stop()  # idempotent


def test_never_healthy_times_out_and_kills(tmp_path: Path, fake_server: Path, model: Path) -> None:
    server = ManagedServer(
        fake_server,
        model,
        extra_args=["--fake-mode", "loading"],
        startup_timeout=1.0,
        log_path=tmp_path / "s.log",
    )
    with pytest.raises(ServerStartError, match="did not become healthy within 1s") as info:
        server.start()
    # The log tail in the message: the line start() itself wrote (the fake's own first line
    # may come after 1s on a busy machine; test_exits_immediately_raises_with_log covers that).
    assert f"=== promptsweep: starting {fake_server}" in str(info.value)
    assert not server.is_alive()


def test_stop_kills_a_server_that_ignores_sigterm(tmp_path: Path, fake_server: Path, model: Path) -> None:
    server = ManagedServer(
        fake_server, model, extra_args=["--fake-mode", "ignore-term"], log_path=tmp_path / "s.log"
    )
    server.start()
    pid = server.pid
    assert pid is not None
    server.stop(timeout=0.5)
    assert process_gone(pid)  # it ignores SIGTERM: gone means stop() sent SIGKILL


def test_explicit_port_already_serving_is_not_mistaken_for_ours(
    tmp_path: Path, fake_server: Path, model: Path
) -> None:
    with ManagedServer(fake_server, model, log_path=tmp_path / "a.log") as other:
        assert other.port is not None
        second = ManagedServer(fake_server, model, port=other.port, log_path=tmp_path / "b.log")
        with pytest.raises(ServerStartError, match=f"port {other.port} .* already in use"):
            second.start()
        assert not second.is_alive()


BIND_FAILS = '#!/bin/sh\n{extra}echo "couldn\'t bind HTTP server socket" >&2\nexit 1\n'


def test_bind_failure_with_explicit_port_reports_log(tmp_path: Path, model: Path) -> None:
    binary = write_script(tmp_path / "llama-server", BIND_FAILS.format(extra=""))
    with pytest.raises(ServerStartError, match="couldn't bind"):
        ManagedServer(binary, model, port=free_port(), log_path=tmp_path / "s.log").start()


def test_auto_port_retries_once_after_bind_failure(tmp_path: Path, model: Path) -> None:
    """Another process may grab our probed port before the server binds it."""
    counter = tmp_path / "attempts"
    binary = write_script(tmp_path / "llama-server", BIND_FAILS.format(extra=f"echo x >> {counter}\n"))
    with pytest.raises(ServerStartError):
        ManagedServer(binary, model, log_path=tmp_path / "s.log").start()
    assert counter.read_text().split() == ["x", "x"]


@pytest.mark.parametrize("how", ["exit", "sigkill"])
def test_no_orphan_when_parent_exits_without_stop(
    tmp_path: Path, fake_server: Path, model: Path, how: str
) -> None:
    """atexit covers a normal exit; PR_SET_PDEATHSIG covers a SIGKILLed parent (Linux)."""
    if how == "sigkill" and not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG is Linux-only")
    ending = "os.kill(os.getpid(), signal.SIGKILL)" if how == "sigkill" else "sys.exit(0)"
    code = textwrap.dedent(
        f"""
        import os, signal, sys
        from pathlib import Path
        from promptsweep.server.managed import ManagedServer
        s = ManagedServer(Path({str(fake_server)!r}), Path({str(model)!r}),
                          log_path=Path({str(tmp_path / "s.log")!r}))
        s.start()
        print(s.pid, flush=True)
        {ending}
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    pid = int(proc.stdout.split()[0])
    assert process_gone(pid), f"llama-server {pid} outlived its parent ({how})"


# ----------------------------------------------------------------------------- real server


@pytest.mark.real_server
def test_real_server_health_props_and_chat(
    managed_llama_server: ManagedServer, llama_server_url: str
) -> None:
    with httpx.Client(base_url=llama_server_url, trust_env=False, timeout=600) as client:
        assert client.get("/health").status_code == 200
        props = client.get("/props").json()
        assert props["total_slots"] == managed_llama_server.slots == 4
        reply = client.post(
            "/v1/chat/completions",
            json={
                "messages": [{"role": "user", "content": "Say hello."}],
                "max_tokens": 4,
                "temperature": 0,
            },
        )
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["choices"][0]["message"]["content"].strip()
        assert body["usage"]["completion_tokens"] <= 4


@pytest.mark.real_server
def test_real_server_own_instance_lifecycle(managed_llama_server: ManagedServer, tmp_path: Path) -> None:
    """A second, small server: slot count and per-slot context honoured, stop frees the port."""
    log = tmp_path / "server.log"
    server = ManagedServer(
        managed_llama_server.binary,
        managed_llama_server.model,
        slots=2,
        ctx_per_slot=512,
        log_path=log,
    )
    began = time.monotonic()
    url = server.start()
    startup_s = time.monotonic() - began
    try:
        props = httpx.get(f"{url}/props", trust_env=False, timeout=30).json()
        assert props["total_slots"] == 2
        assert props["default_generation_settings"]["n_ctx"] == 512
        port = server.port
        assert port is not None
        assert not port_is_free(port)
    finally:
        server.stop()
    assert port_is_free(port)
    assert not server.is_alive()
    print(json.dumps({"real_server_startup_s": round(startup_s, 2)}))
