"""An in-process OpenAI-compatible server for edge cases the real llama-server cannot be made to show.

Answers come from a ``responder(body) -> Reply`` callable, so a test scripts statuses,
delays, torn bodies or garbage text. It binds 127.0.0.1 only.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    status: int = 200
    body: bytes | str | dict[str, Any] = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


def chat_reply(text: str, *, prompt_tokens: int = 10, completion_tokens: int = 5) -> Reply:
    """A well-formed chat completion whose message content is ``text``."""
    return Reply(
        body={
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "model": "fake-model",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
    )


Responder = Callable[[dict[str, Any]], Reply]


class FakeLLMServer:
    """``with FakeLLMServer(responder) as server: server.url``; ``server.requests`` keeps every body."""

    def __init__(
        self, responder: Responder, *, props: dict[str, Any] | None = None, models: bool = True
    ) -> None:
        self.responder = responder
        self.props = props
        self.models = models  # False: no /v1/models, like a bare OpenAI-compatible proxy
        self.requests: list[dict[str, Any]] = []
        self.headers_seen: list[dict[str, str]] = []
        self.paths_seen: list[str] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, reply: Reply) -> None:
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                body = reply.body
                if isinstance(body, dict):
                    body = json.dumps(body)
                if isinstance(body, str):
                    body = body.encode()
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path.rstrip("/").endswith("/models") and server.models:
                    self._send(Reply(body={"object": "list", "data": [{"id": "fake-model"}]}))
                elif path == "/props" and server.props is not None:
                    self._send(Reply(body=server.props))
                elif path == "/health":
                    self._send(Reply(body={"status": "ok"}))
                else:
                    self._send(Reply(status=404, body={"error": "not found"}))

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                with server._lock:
                    server.requests.append(body)
                    server.headers_seen.append(dict(self.headers))
                    server.paths_seen.append(self.path)
                self._send(server.responder(body))

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeLLMServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def user_text(body: dict[str, Any]) -> str:
    return "\n".join(m.get("content", "") for m in body.get("messages", []) if m.get("role") == "user")


def question(body: dict[str, Any]) -> str:
    """The last user message: the question itself, after any few-shot turns."""
    users = [m.get("content", "") for m in body.get("messages", []) if m.get("role") == "user"]
    return users[-1] if users else ""
