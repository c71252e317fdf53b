"""A stand-in for an HTTP service such as the OpenClaw gateway, to supervise in integration tests.

It listens on 127.0.0.1:PORT and answers `/health` 200 `{"ok": true}` and `/ready` 200
`{"ready": true, "failing": []}` (anything else: 404). Its faults are chosen on the command line, so one
config can describe a service that crashes, hangs, or asks for a restart:

    --port N                 where to listen (required)
    --tag TEXT               ignored; marks the command line so a test can recognise its own processes
    --boot-delay S           sleep S seconds before listening
    --crash-file PATH        if PATH exists at start: print its content and exit 1 at once (a boot-time crash
                             the test switches on and off)
    --exit-after S           exit S seconds after listening (or after the boot delay, with --no-listen)
    --exit-file PATH         when PATH appears: delete it and exit (a one-shot "exit now" switch)
    --exit-code N            the code of --exit-after / --exit-file (default 0)
    --print LINE             printed (repeatable) just before such an exit, e.g. "listen EADDRINUSE"
    --print-env NAME         print the value of the environment variable NAME at start (repeatable)
    --wedge-file PATH        when PATH appears: delete it and answer /health 503 `{"ok": false}` from then on
                             (alive, but failing liveness)
    --request-log PATH       append one line to PATH for every /health request (so a test can act between probes)
    --no-listen              never listen (only with --exit-after, --exit-file or --crash-file)
    --ignore-term            ignore SIGTERM, so only SIGKILL stops it

Run it as `python -m tests.helpers.standin ...` from the repository root, or by path with `sys.executable`.
Standard library only: it must start fast and need nothing from the project.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HEALTH_BODY: dict[str, object] = {"ok": True}
READY_BODY: dict[str, object] = {"ready": True, "failing": []}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="standin", description="A stand-in HTTP service for clawmedic's tests.")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--tag", default="")
    p.add_argument("--boot-delay", type=float, default=0.0)
    p.add_argument("--crash-file", type=Path)
    p.add_argument("--exit-after", type=float)
    p.add_argument("--exit-file", type=Path)
    p.add_argument("--exit-code", type=int, default=0)
    p.add_argument("--print", dest="lines", action="append", default=[])
    p.add_argument("--print-env", action="append", default=[])
    p.add_argument("--wedge-file", type=Path)
    p.add_argument("--request-log", type=Path)
    p.add_argument("--no-listen", action="store_true")
    p.add_argument("--ignore-term", action="store_true")
    return p.parse_args(argv)


class _Handler(BaseHTTPRequestHandler):
    wedged = threading.Event()
    wedge_file: Path | None = None
    request_log: Path | None = None

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/health" and self.request_log is not None:
            with self.request_log.open("a") as f:
                f.write(f"{time.time()} GET /health\n")
        if self.wedge_file is not None and self.wedge_file.exists():
            self.wedge_file.unlink(missing_ok=True)
            self.wedged.set()
        bodies: dict[str, dict[str, object]] = {"/health": HEALTH_BODY, "/ready": READY_BODY}
        status: int
        body: dict[str, object]
        if path == "/health" and self.wedged.is_set():
            status, body = 503, {"ok": False}
        elif path in bodies:
            status, body = 200, bodies[path]
        else:
            status, body = 404, {"error": "not found"}
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: the output log is for what a test asks the stand-in to print


def _say(line: str) -> None:
    print(line, flush=True)


def _exit(code: int, lines: Sequence[str]) -> None:
    for line in lines:
        _say(line)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # from any thread, without waiting for the server


def _exit_later(args: argparse.Namespace) -> None:
    if args.exit_after is not None:
        timer = threading.Timer(args.exit_after, _exit, (args.exit_code, args.lines))
        timer.daemon = True
        timer.start()
    if args.exit_file is not None:
        trigger: Path = args.exit_file

        def watch() -> None:
            while True:
                if trigger.exists():
                    trigger.unlink(missing_ok=True)
                    _exit(args.exit_code, args.lines)
                time.sleep(0.02)

        threading.Thread(target=watch, daemon=True).start()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for name in args.print_env:
        _say(f"env {name}: {os.environ.get(name, '')}")
    if args.crash_file is not None and args.crash_file.exists():
        content = args.crash_file.read_text()
        _exit(1, content.splitlines())
    if args.boot_delay > 0:
        time.sleep(args.boot_delay)
    _exit_later(args)
    if args.no_listen:
        while True:
            time.sleep(3600)
    _Handler.wedge_file = args.wedge_file
    _Handler.request_log = args.request_log
    server = ThreadingHTTPServer((args.host, args.port), _Handler)
    server.daemon_threads = True
    _say(f"standin pid {os.getpid()} listening on {args.host}:{args.port}")
    server.serve_forever(poll_interval=0.1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
