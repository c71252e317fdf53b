"""Real notification receivers on loopback, for tests: an HTTP receiver (JSON webhooks, a Discord-style webhook,
heartbeat pings) and an SMTP server (aiosmtpd). Each records what it received, with the time it arrived.

    with HttpReceiver() as hook, SmtpReceiver() as mail:
        ... point Apprise at hook.url("/hooks/x") and mail.mailto_url() ...
        hook.wait_for(1)

Loopback only; each server runs in a thread of the test process and is stopped by `stop()` (the context manager).
"""

from __future__ import annotations

import email
import email.policy
import json
import threading
import time
from dataclasses import dataclass
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller

from tests.helpers.rig import free_port

DISCORD_MAX_CONTENT = 2000  # Discord rejects a webhook message whose content is longer
_DISCORD_KEYS = frozenset({"content", "username", "avatar_url", "tts", "embeds", "allowed_mentions", "flags"})


@dataclass(frozen=True)
class Received:
    at: float
    method: str
    path: str
    headers: dict[str, str]
    raw: bytes

    def json(self) -> Any:
        return json.loads(self.raw.decode())

    @property
    def text(self) -> str:
        return self.raw.decode("utf-8", "replace")


class HttpReceiver:
    """Records every request. `discord=True`: answer like a Discord webhook (204; 400 for a payload Discord would
    refuse: no `content`, content over 2000 characters, or a key Discord does not know)."""

    def __init__(self, port: int | None = None, *, discord: bool = False, status: int = 200) -> None:
        self.port = port or free_port()
        self.discord = discord
        self.status = status
        self.received: list[Received] = []
        self.rejected: list[Received] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def url(self, path: str = "/", scheme: str = "json") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def start(self) -> HttpReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self, method: str) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n) if n else b""
                item = Received(time.time(), method, self.path, dict(self.headers), raw)
                status = receiver.status
                answer = b""
                if receiver.discord and method == "POST":
                    problem = _discord_problem(self.path, raw)
                    if problem:
                        status, answer = 400, json.dumps({"message": problem, "code": 50006}).encode()
                    else:
                        status = 204
                with receiver._lock:
                    (receiver.rejected if status >= 400 else receiver.received).append(item)
                self.send_response(status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                if answer:
                    self.wfile.write(answer)

            def do_POST(self) -> None:
                self._record("POST")

            def do_GET(self) -> None:
                self._record("GET")

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()  # close the socket: a stopped receiver refuses connections
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> HttpReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def items(self) -> list[Received]:
        with self._lock:
            return list(self.received)

    def wait_for(self, count: int, timeout: float = 20.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            items = self.items()
            if len(items) >= count:
                return items
            time.sleep(0.05)
        raise AssertionError(f"{self.port}: {len(self.items())} request(s) after {timeout:g} s, wanted {count}")


def _discord_problem(path: str, raw: bytes) -> str | None:
    parts = path.split("?", 1)[0].strip("/").split("/")
    if len(parts) != 4 or parts[:2] != ["api", "webhooks"] or not parts[2].isdigit():
        return "Unknown Webhook"
    try:
        payload = json.loads(raw)
    except ValueError:
        return "Cannot send an empty message"
    if not isinstance(payload, dict) or not isinstance(payload.get("content"), str) or not payload["content"]:
        return "Cannot send an empty message"
    if len(payload["content"]) > DISCORD_MAX_CONTENT:
        return "Invalid Form Body: content must be 2000 or fewer in length"
    if unknown := set(payload) - _DISCORD_KEYS:
        return f"Invalid Form Body: unknown field(s) {sorted(unknown)}"
    return None


@dataclass(frozen=True)
class Mail:
    at: float
    raw: bytes
    message: EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def body(self) -> str:
        """The decoded text body (quoted-printable undone, so a secret cannot hide behind a soft line break)."""
        part = self.message.get_body(preferencelist=("plain", "html"))
        return "" if part is None else str(part.get_content())


class SmtpReceiver:
    """An SMTP server (aiosmtpd) on 127.0.0.1, no TLS, no auth, recording every message."""

    def __init__(self) -> None:
        self.port = free_port()
        self.mails: list[Mail] = []
        self._lock = threading.Lock()
        self._controller: Controller | None = None

    def mailto_url(self, to: str = "ops@example.com", sender: str = "clawmedic@example.com") -> str:
        return f"mailto://127.0.0.1:{self.port}?from={sender}&to={to}&mode=insecure"

    async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:
        raw = bytes(envelope.original_content or envelope.content)
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        with self._lock:
            self.mails.append(Mail(time.time(), raw, msg))
        return "250 OK"

    def start(self) -> SmtpReceiver:
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> SmtpReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def items(self) -> list[Mail]:
        with self._lock:
            return list(self.mails)

    def wait_for(self, count: int, timeout: float = 20.0) -> list[Mail]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            items = self.items()
            if len(items) >= count:
                return items
            time.sleep(0.05)
        raise AssertionError(f"SMTP {self.port}: {len(self.items())} mail(s) after {timeout:g} s, wanted {count}")
