"""A scripted model server on loopback, speaking OpenAI's chat completions and Anthropic's messages API.

Each request takes the next scripted turn (a tool call or a text answer) and is recorded raw, so a test can
assert what was sent (tools offered or not, a planted secret never present, a truncation notice visible).

    with ScriptedLLM([call("log_tail", lines=5), call("finish", diagnosis="x", fault="other")]) as llm:
        ... base_url=llm.url ...
        llm.requests  # the decoded JSON bodies
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Turn:
    tool: str | None = None
    arguments: dict[str, Any] = field(default_factory=dict)
    text: str = ""
    delay_s: float = 0.0
    status: int = 200


def call(tool: str, **arguments: Any) -> Turn:
    return Turn(tool=tool, arguments=arguments)


def say(text: str) -> Turn:
    return Turn(text=text)


class ScriptedLLM:
    def __init__(self, script: list[Turn], *, repeat_last: bool = True) -> None:
        self.script = script
        self.repeat_last = repeat_last
        self.requests: list[dict[str, Any]] = []
        self.raw: list[bytes] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    @property
    def root(self) -> str:
        return self.url.removesuffix("/v1")

    def _next(self) -> Turn:
        with self._lock:
            n = len(self.requests) - 1
        if n < len(self.script):
            return self.script[n]
        return self.script[-1] if self.repeat_last else say("(script ended)")

    def __enter__(self) -> ScriptedLLM:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with owner._lock:
                    owner.raw.append(raw)
                    owner.requests.append(json.loads(raw))
                turn = owner._next()
                if turn.delay_s:
                    time.sleep(turn.delay_s)
                if turn.status != 200:
                    body = {"error": {"message": "scripted failure", "type": "server_error"}}
                elif self.path.endswith("/messages"):
                    body = _anthropic(turn, len(owner.requests))
                else:
                    body = _openai(turn, len(owner.requests))
                data = json.dumps(body).encode()
                try:
                    self.send_response(turn.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting (time-budget tests)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    def all_bytes(self) -> bytes:
        return b"\n".join(self.raw)


def _openai(turn: Turn, n: int) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": turn.text or None}
    if turn.tool:
        message["tool_calls"] = [
            {
                "id": f"call_{n}",
                "type": "function",
                "function": {"name": turn.tool, "arguments": json.dumps(turn.arguments)},
            }
        ]
    return {
        "id": f"chatcmpl-{n}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": "scripted",
        "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if turn.tool else "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


def _anthropic(turn: Turn, n: int) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "text", "text": turn.text}] if turn.text else []
    if turn.tool:
        content.append({"type": "tool_use", "id": f"toolu_{n}", "name": turn.tool, "input": turn.arguments})
    return {
        "id": f"msg_{n}",
        "type": "message",
        "role": "assistant",
        "model": "scripted",
        "content": content,
        "stop_reason": "tool_use" if turn.tool else "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 5},
    }
