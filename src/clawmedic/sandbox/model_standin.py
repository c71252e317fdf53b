"""A loopback OpenAI-compatible model server for the gateway's model, switchable per model while it runs.

Every model answers "pong" until a test switches it: `models.set("alpha-model", "429")` makes that model answer
429 with `Retry-After` (`retry_after` seconds), "401" a revoked key, "hang" never answers (until the server stops),
"ok" recovers. `GET /v1/models` lists the models. Standard library only; run it with `with ModelStandin(...)`, or
`start()` and `stop()`.

`clawmedic drill` serves its sandboxed gateway's models with it (`sandbox.gateway.use_models` wires a gateway to it),
and so do the tests.

`received` keeps what each chat request carried (model, messages, characters of the prompt and of the tool
definitions), so a test can say what one gateway turn costs in model input.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

Mode = Literal["ok", "429", "401", "hang"]


@dataclass(frozen=True)
class Received:
    model: str
    messages: int  # messages in the prompt (system, history, the new one)
    prompt_chars: int  # characters of the messages' content
    tools: int  # tool definitions sent along
    tools_chars: int  # characters of their JSON
    body_bytes: int  # the whole request body

    @property
    def est_tokens(self) -> int:
        """Input tokens, estimated at 4 characters a token (OpenAI's rule of thumb for English and JSON)."""
        return (self.prompt_chars + self.tools_chars + 3) // 4


def _content_chars(content: object) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
        return sum(len(str(c.get("text", ""))) if isinstance(c, dict) else len(str(c)) for c in content)
    return 0


class ModelStandin:
    def __init__(self, models: list[str], *, retry_after: int = 1) -> None:
        self.modes: dict[str, Mode] = dict.fromkeys(models, "ok")
        self.retry_after = retry_after
        self.requests: dict[str, int] = dict.fromkeys(models, 0)  # chat requests per model
        self.received: list[Received] = []  # every chat request, in order
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def set(self, model: str, mode: Mode) -> None:
        with self._lock:
            self.modes[model] = mode

    def _mode(self, model: str, req: dict[str, Any], size: int) -> Mode:
        messages: list[Any] = req["messages"] if isinstance(req.get("messages"), list) else []
        tools: list[Any] = req["tools"] if isinstance(req.get("tools"), list) else []
        got = Received(
            model,
            len(messages),
            sum(_content_chars(m.get("content")) for m in messages if isinstance(m, dict)),
            len(tools),
            len(json.dumps(tools)) if tools else 0,
            size,
        )
        with self._lock:
            self.requests[model] = self.requests.get(model, 0) + 1
            self.received.append(got)
            return self.modes.get(model, "ok")

    def __enter__(self) -> ModelStandin:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> ModelStandin:
        """Listen on a free loopback port, in a thread of this process."""
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _send(self, code: int, obj: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                body = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                self._send(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in outer.modes]})

            def do_POST(self) -> None:
                try:
                    raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                    req = json.loads(raw or b"{}")
                    if not isinstance(req, dict):
                        raise ValueError("not a JSON object")
                except ValueError as e:
                    self._send(400, {"error": {"message": f"bad request: {e}", "code": "invalid_request"}})
                    return
                model = str(req.get("model", ""))
                mode = outer._mode(model, req, len(raw))
                if mode == "hang":
                    outer._stop.wait()
                    return
                if mode == "429":
                    err = {"message": "Rate limit reached, retry later", "type": "rate_limit_exceeded"}
                    self._send(
                        429, {"error": {**err, "code": "rate_limit_exceeded"}}, {"Retry-After": str(outer.retry_after)}
                    )
                    return
                if mode == "401":
                    self._send(401, {"error": {"message": "invalid api key", "code": "invalid_api_key"}})
                    return
                msg = {"index": 0, "message": {"role": "assistant", "content": "pong"}, "finish_reason": "stop"}
                usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
                self._send(
                    200,
                    {
                        "id": "x",
                        "object": "chat.completion",
                        "created": 0,
                        "model": model,
                        "choices": [msg],
                        "usage": usage,
                    },
                )

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(10)
