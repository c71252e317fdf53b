"""GitHub issues for incidents that gave up, for real: the daemon (in-process, `plugins_for(loaded)`) supervises a
stand-in that exits 78 (config invalid: escalated, then gave up), and the `GitHubIssues` plugin talks REST to a
stand-in GitHub API on loopback (stdlib http.server) that records every request.

Planted secrets: an env-file value the target gets through `start.env`, and the GitHub token itself (the target
inherits the daemon's environment); the stand-in prints both into its output log, which the report quotes. Neither
may appear in any request body; the token must appear in the Authorization header only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from clawmedic import control
from clawmedic.cli_ops import plugins_for
from clawmedic.config import LoadedConfig
from clawmedic.daemon import Daemon
from clawmedic.github_issues import GitHubIssues, normalise_reason, state_path
from tests.helpers.rig import Rig, StandinTarget, free_port, holds, kill_leftovers, wait_for

pytestmark = [pytest.mark.timeout(120)]

SECRET = "plantedQ7v9x2LmZ4r8T"
GH_TOKEN = "ghTestTok9Lq2Wz7Xc4Vb1Nm"
TOKEN_ENV = "CLAWMEDIC_TEST_GITHUB_TOKEN"
REPO = "acme/gateway"


@dataclass
class ApiRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    raw: bytes

    def json(self) -> Any:
        return json.loads(self.raw)


class FakeGitHub:
    """Just enough of the GitHub REST API: list/get/create issues and create comments. `fail_status`: answer every
    request with that status (the API is down)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.requests: list[ApiRequest] = []
        self.issues: dict[int, dict[str, Any]] = {}
        self.comments: list[tuple[int, dict[str, Any]]] = []
        self.fail_status: int | None = None
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def writes(self) -> list[ApiRequest]:
        with self._lock:
            return [r for r in self.requests if r.method == "POST"]

    def handle(self, req: ApiRequest) -> tuple[int, Any]:
        if self.fail_status is not None:
            return self.fail_status, {"message": "Server Error"}
        base = f"/repos/{REPO}/issues"
        if req.method == "GET" and req.path == base:
            labels = set(",".join(req.query.get("labels", [""])).split(",")) - {""}
            state = req.query.get("state", ["open"])[0]
            return 200, [
                i for i in self.issues.values() if i["state"] == state and labels <= {lb["name"] for lb in i["labels"]}
            ]
        if req.method == "POST" and req.path == base:
            data = req.json()
            number = len(self.issues) + 1
            issue = {
                "number": number,
                "state": "open",
                "title": data["title"],
                "body": data.get("body", ""),
                "labels": [{"name": n} for n in data.get("labels", [])],
            }
            self.issues[number] = issue
            return 201, issue
        m = re.fullmatch(re.escape(base) + r"/(\d+)(/comments)?", req.path)
        if m and int(m.group(1)) in self.issues:
            number = int(m.group(1))
            if req.method == "GET" and not m.group(2):
                return 200, self.issues[number]
            if req.method == "POST" and m.group(2):
                self.comments.append((number, req.json()))
                return 201, {"id": len(self.comments), "body": req.json()["body"]}
        return 404, {"message": "Not Found"}

    def __enter__(self) -> FakeGitHub:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self, method: str) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n) if n else b""
                parts = urlsplit(self.path)
                req = ApiRequest(method, parts.path, parse_qs(parts.query), dict(self.headers), raw)
                with api._lock:
                    api.requests.append(req)
                    status, data = api.handle(req)
                answer = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


@pytest.fixture
def rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Rig]:
    monkeypatch.setenv(TOKEN_ENV, GH_TOKEN)
    r = Rig(tmp_path)
    try:
        yield r
    finally:
        with contextlib.suppress(Exception):
            kill_leftovers(r.load())
        r.cleanup()


def write(rig: Rig, exit_file: Path, api: FakeGitHub, **github: Any) -> LoadedConfig:
    target = StandinTarget(
        args=[
            "--exit-file",
            str(exit_file),
            "--exit-code",
            "78",
            "--print-env",
            "UPSTREAM_CRED",
            "--print-env",
            TOKEN_ENV,
            "--print",
            "upstream rejected the credential ${TOKEN} (config invalid)",
        ],
        env={"UPSTREAM_CRED": "${TOKEN}"},
    )
    settings = {"repo": REPO, "token_env": TOKEN_ENV, "api_url": api.url, "retry_s": 0.3, "retry_max_s": 1.0}
    rig.write_config(target, env_file={"TOKEN": SECRET}, daemon={"github": {**settings, **github}})
    return rig.load()


@contextlib.asynccontextmanager
async def daemon(loaded: LoadedConfig) -> AsyncIterator[tuple[asyncio.Task[None], GitHubIssues]]:
    plugins = plugins_for(loaded)
    issues = next(p for p in plugins if isinstance(p, GitHubIssues))
    d = Daemon(loaded, plugins=plugins)
    task = asyncio.get_running_loop().create_task(d.run())
    try:
        yield task, issues
    finally:
        d.request_stop()
        try:
            await asyncio.wait_for(task, 30)
        finally:
            kill_leftovers(loaded)


async def wait_event(rig: Rig, task: asyncio.Task[None], kind: str, count: int = 1, **fields: Any) -> dict[str, Any]:
    def found() -> list[dict[str, Any]] | None:
        evs = [e for e in rig.events(kind) if all(e.get(k) == v for k, v in fields.items())]
        return evs if len(evs) >= count else None

    evs = await wait_for(found, 40, what=f"{count} {kind!r} event(s)", describe=rig.describe, watch=task)
    return evs[-1]


def assert_clean(api: FakeGitHub) -> None:
    """Every request carries the token in its Authorization header, and nowhere else."""
    assert api.requests
    for r in api.requests:
        assert r.headers.get("Authorization") == f"Bearer {GH_TOKEN}", r.headers
        assert r.headers.get("Accept") == "application/vnd.github+json"
        other = {k: v for k, v in r.headers.items() if k != "Authorization"}
        for text in (r.raw.decode("utf-8", "replace"), r.path, json.dumps(r.query), json.dumps(other)):
            assert GH_TOKEN not in text and SECRET not in text, text


def test_one_issue_per_signature_then_a_comment_and_the_rate_limit_holds(rig: Rig) -> None:
    exit_file = rig.tmp_path / "exit-now"
    interval = 6.0
    with FakeGitHub() as api:
        loaded = write(rig, exit_file, api, min_interval_s=interval)
        first_write_at = 0.0

        async def scenario() -> None:
            nonlocal first_write_at
            async with daemon(loaded) as (task, plugin):
                await wait_event(rig, task, "state", new="healthy")
                exit_file.touch()
                gave_up = await wait_event(rig, task, "gave_up", 1)
                await wait_for(lambda: api.issues, 20, what="the issue")
                first_write_at = time.time()

                # The same fault again, after the interval: a comment on that issue, not a new issue.
                await asyncio.sleep(max(0.0, first_write_at + interval + 0.2 - time.time()))
                exit_file.touch()
                control.resume(rig.state_dir, ["svc"])
                second = await wait_event(rig, task, "gave_up", 2)
                assert second["incident"] == gave_up["incident"]
                await wait_for(lambda: api.comments, 20, what="the comment")
                comment_at = time.time()

                # And again at once, inside the interval: no write at all.
                exit_file.touch()
                control.resume(rig.state_dir, ["svc"])
                await wait_event(rig, task, "gave_up", 3)
                assert time.time() - comment_at < interval, "the third failure came too late to test the limit"
                await wait_for(lambda: plugin.skipped == 1, 10, what="the plugin to skip the third write")
                await holds(lambda: len(api.writes()) == 2 and plugin.skipped == 1, 1.5, what="no third write")
                assert not task.done()

        asyncio.run(scenario())

    assert len(api.issues) == 1 and len(api.comments) == 1
    issue = api.issues[1]
    inc = next(e["incident"] for e in rig.events("gave_up"))
    assert issue["title"].startswith("clawmedic: svc gave up — ")
    assert [lb["name"] for lb in issue["labels"]] == ["clawmedic"]
    marker = re.search(r"<!-- clawmedic-signature: (\S+) -->", issue["body"])
    assert marker is not None and marker.group(1).startswith("svc|") and "exit=78" in marker.group(1)
    assert f"# Incident #{inc} — svc" in issue["body"]  # the Markdown report
    assert "## Symptom" in issue["body"]
    assert "***" in issue["body"]  # the planted values were there, redacted
    number, comment = api.comments[0]
    assert number == 1
    assert f"clawmedic-signature: {marker.group(1)}" in comment["body"]
    assert "gave up again" in comment["body"]
    assert_clean(api)
    output_log = (rig.state_dir / "targets" / "svc" / "output.log").read_text()
    assert SECRET in output_log and GH_TOKEN in output_log  # they really were planted where the report reads
    saved = state_path(rig.state_dir)
    assert saved.stat().st_mode & 0o777 == 0o600
    assert json.loads(saved.read_text())["issues"] == {marker.group(1): 1}
    assert GH_TOKEN not in saved.read_text() and SECRET not in saved.read_text()


def test_an_api_that_is_down_is_retried_later_and_never_stops_the_daemon(rig: Rig) -> None:
    exit_file = rig.tmp_path / "exit-now"
    with FakeGitHub() as api:
        api.fail_status = 500
        loaded = write(rig, exit_file, api)

        async def scenario() -> None:
            async with daemon(loaded) as (task, plugin):
                await wait_event(rig, task, "state", new="healthy")
                exit_file.touch()
                await wait_event(rig, task, "gave_up", 1)
                await wait_for(lambda: len(api.requests) >= 3, 20, what="retries against the failing API")
                assert not api.issues and not task.done()
                api.fail_status = None
                # the API records the issue a moment before the plugin has read the response: wait for both
                await wait_for(lambda: api.issues and plugin.writes == 1, 20, what="the issue, once the API is back")
                await holds(lambda: len(api.issues) == 1 and plugin.writes == 1, 1.0)
                assert not task.done()

        asyncio.run(scenario())
    assert_clean(api)


def test_no_token_in_the_environment_means_no_plugin_and_one_warning(
    rig: Rig, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv(TOKEN_ENV)
    with FakeGitHub() as api:
        loaded = write(rig, rig.tmp_path / "exit-now", api)
        with caplog.at_level(logging.WARNING, logger="clawmedic.github"):
            plugins = plugins_for(loaded)
    assert not any(isinstance(p, GitHubIssues) for p in plugins)
    warnings = [r.getMessage() for r in caplog.records if r.name == "clawmedic.github"]
    assert len(warnings) == 1 and TOKEN_ENV in warnings[0] and "GitHub issues are off" in warnings[0]
    assert not api.requests


def test_the_fallback_signature_ignores_digits_and_paths() -> None:
    a = normalise_reason("exit 78 after 3 restarts; see /home/a/.openclaw/openclaw.json (pid 4242)")
    b = normalise_reason("exit 1 after 5 restarts; see /tmp/x/openclaw.json (pid 17)")
    assert a == b == "reason=exit-after-restarts-see-pid"
