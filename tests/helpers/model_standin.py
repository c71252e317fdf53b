"""A loopback OpenAI-compatible model server for the gateway's model, switchable per model while it runs.

Every model answers "pong" until a test switches it: `models.set("alpha-model", "429")` makes that model answer
429 with `Retry-After` (`retry_after` seconds), "401" a revoked key, "hang" never answers (until the server stops),
"ok" recovers. `GET /v1/models` lists the models. Standard library only; run it with `with ModelStandin(...)`.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

Mode = Literal["ok", "429", "401", "hang"]


class ModelStandin:
    def __init__(self, models: list[str], *, retry_after: int = 1) -> None:
        self.modes: dict[str, Mode] = dict.fromkeys(models, "ok")
        self.retry_after = retry_after
        self.requests: dict[str, int] = dict.fromkeys(models, 0)  # chat requests per model
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

    def _mode(self, model: str) -> Mode:
        with self._lock:
            self.requests[model] = self.requests.get(model, 0) + 1
            return self.modes.get(model, "ok")

    def __enter__(self) -> ModelStandin:
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
                req = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
                model = str(req.get("model", ""))
                mode = outer._mode(model)
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

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(10)
