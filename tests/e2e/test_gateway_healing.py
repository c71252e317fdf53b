"""End-to-end: faults that leave the real gateway up, found by the gateway check while it is healthy and healed
through the guard — or escalated, once, when the policy does not allow the remedy."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from clawmedic.sandbox import gateway as gw
from clawmedic.sandbox.install import Install
from tests.e2e.conftest import Daemon, incident

pytestmark = [pytest.mark.gateway, pytest.mark.slow, pytest.mark.timeout(600)]

FAULT_WAIT_S = 300.0  # the job fails at ~10 s, again ~30 s later (OpenClaw backs off), then one check interval


def _configure(sb: gw.Sandbox, doctor: str = "") -> None:
    """Check every 5 s (the default is a minute); `doctor`: extra `[daemon.doctor]` keys."""
    extra = f"\n[daemon.doctor]\n{doctor}\n" if doctor else "\n"
    sb.config_path.write_text(
        sb.config_path.read_text() + extra + "[daemon.doctor.gateway_checks]\ninterval_s = 5.0\ncooldown_s = 600.0\n"
    )


def _openclaw(install: Install, sb: gw.Sandbox, *args: str) -> Any:
    r = subprocess.run(
        [*install.command(*args), "--url", f"ws://127.0.0.1:{sb.port}", "--token", sb.token],
        env={**os.environ, "HOME": str(sb.home)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)


def _add_failing_job(install: Install, sb: gw.Sandbox) -> str:
    job = _openclaw(
        install, sb, "cron", "add", "--name", "e2e-failing", "--every", "10s", "--command", "exit 3", "--no-deliver"
    )
    return str(job["id"])


def _job(install: Install, sb: gw.Sandbox, job_id: str) -> dict[str, Any]:
    jobs = _openclaw(install, sb, "cron", "list", "--all", "--json")["jobs"]
    return next(j for j in jobs if j["id"] == job_id)


def test_failing_cron_job_is_disabled_verified_and_reported(
    daemon: Daemon, sandbox: gw.Sandbox, install: Install
) -> None:
    _configure(sandbox)
    daemon.start()
    healthy = daemon.wait_healthy()
    job_id = _add_failing_job(install, sandbox)
    fault = daemon.wait_event(
        lambda e: e["kind"] == "gateway_fault" and e["rule"] == "cron-failing", FAULT_WAIT_S, after=healthy["ts"]
    )
    inc_id = fault["incident"]
    assert job_id in fault["detail"]
    fixed = daemon.wait_event(lambda e: e["kind"] == "gateway_fault_resolved" and e["incident"] == inc_id, 180)
    assert fixed["outcome"] == "recovered"

    job = _job(install, sandbox, job_id)
    assert job["enabled"] is False, "the gateway itself says the job is disabled"
    assert gw.health(sandbox.port), "the gateway was never taken down"

    inc = incident(sandbox, inc_id)
    assert inc["status"] == "recovered" and inc["cause"] == "gateway_check"
    remedies = [e["detail"] for e in inc["timeline"] if e["kind"] == "remedy"]
    assert [(r["remedy"], r["status"], r["params"]) for r in remedies] == [("cron_disable", "ok", {"job_id": job_id})]
    verified = [e["detail"] for e in inc["timeline"] if e["kind"] == "verify"]
    assert verified and verified[-1]["fault_present"] is False
    assert any(j["id"] == job_id and j["enabled"] is False for j in verified[-1]["gateway"]["cron"])

    shown = daemon.cli("incidents", "show", str(inc_id), "--markdown")
    assert shown.returncode == 0, shown.stderr
    for words in ("cron-failing", "cron_disable: ok", job_id, "Recovered", "command exited with code 3"):
        assert words in shown.stdout, f"{words!r} missing from the report:\n{shown.stdout}"
    opened = [e for e in daemon.events("gateway_fault") if e["rule"] == "cron-failing"]
    assert len(opened) == 1, "one incident per fault"


def test_cron_disable_outside_the_policy_escalates_once_and_changes_nothing(
    daemon: Daemon, sandbox: gw.Sandbox, install: Install
) -> None:
    _configure(sandbox, 'allow = ["read_only"]')
    daemon.start()
    healthy = daemon.wait_healthy()
    job_id = _add_failing_job(install, sandbox)
    esc = daemon.wait_event(lambda e: e["kind"] == "gateway_fault_escalated", FAULT_WAIT_S, after=healthy["ts"])
    assert esc["status"] == "needs_approval" and esc["rule"] == "cron-failing"
    # two more checks see the fault still there: no new incident, no new attempt
    first = daemon.wait_event(lambda e: e["kind"] == "gateway_checked", 120, after=esc["ts"] + 0.001)
    seen = daemon.wait_event(lambda e: e["kind"] == "gateway_checked", 120, after=first["ts"] + 0.001)
    assert seen["open"] == {"cron-failing": "needs_approval"}
    assert len(daemon.events("gateway_fault")) == 1
    assert len(daemon.events("gateway_remedy")) == 1
    (attempt,) = daemon.events("gateway_remedy")
    assert attempt["remedy"] == "cron_disable" and attempt["status"] == "needs_approval"

    assert _job(install, sandbox, job_id)["enabled"] is True, "a remedy outside the policy is not run"
    inc = incident(sandbox, esc["incident"])
    assert inc["status"] == "needs_approval" and inc["closed_at"] is None
    shown = daemon.cli("incidents", "show", str(esc["incident"]), "--markdown")
    assert "needs_approval" in shown.stdout and "allowlist" in shown.stdout, shown.stdout


class _FakeModels(BaseHTTPRequestHandler):
    """An OpenAI-compatible stand-in: `bad-model` answers 401 (a revoked key), any other model says "pong"."""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, code: int, obj: dict[str, Any]) -> None:
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._send(200, {"object": "list", "data": [{"id": "fake-model"}, {"id": "bad-model"}]})

    def do_POST(self) -> None:
        req = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
        if req.get("model") == "bad-model":
            self._send(401, {"error": {"message": "invalid api key", "code": "invalid_api_key"}})
            return
        msg = {"index": 0, "message": {"role": "assistant", "content": "pong"}, "finish_reason": "stop"}
        self._send(
            200, {"id": "x", "object": "chat.completion", "created": 0, "model": req.get("model"), "choices": [msg]}
        )


@pytest.fixture
def fake_models() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeModels)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_a_session_pinned_to_a_failing_model_is_unpinned(
    daemon: Daemon, sandbox: gw.Sandbox, install: Install, fake_models: int
) -> None:
    cfg = json.loads(sandbox.openclaw_json.read_text())
    models = [{"id": "fake-model", "name": "fake-model"}, {"id": "bad-model", "name": "bad-model"}]
    provider = {"baseUrl": f"http://127.0.0.1:{fake_models}/v1", "apiKey": "sk-fake", "api": "openai-completions"}
    cfg["models"] = {"providers": {"fake": {**provider, "models": models}}}
    cfg["agents"] = {"defaults": {"model": {"primary": "fake/fake-model"}}}
    sandbox.openclaw_json.write_text(json.dumps(cfg, indent=2))
    _configure(sandbox)
    daemon.start()
    healthy = daemon.wait_healthy()
    pin = json.dumps({"key": "agent:main:main", "model": "fake/bad-model"})
    assert _openclaw(install, sandbox, "gateway", "call", "sessions.patch", "--params", pin, "--json")["ok"] is True
    turn = subprocess.run(  # fails: the pinned model answers 401, and a pin leaves no fallback
        install.command("agent", "--agent", "main", "--message", "ping", "--json"),
        env={**os.environ, "HOME": str(sandbox.home), "OPENCLAW_GATEWAY_TOKEN": sandbox.token},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert turn.returncode != 0
    fault = daemon.wait_event(
        lambda e: e["kind"] == "gateway_fault" and e["rule"] == "model-failures", 240, after=healthy["ts"]
    )
    assert "agent:main:main" in fault["detail"] and "auth" in fault["detail"]
    fixed = daemon.wait_event(
        lambda e: e["kind"] == "gateway_fault_resolved" and e["incident"] == fault["incident"], 240
    )
    assert fixed["outcome"] == "recovered"
    r = subprocess.run(
        install.command("sessions", "--json"),
        env={**os.environ, "HOME": str(sandbox.home)},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    (session,) = [s for s in json.loads(r.stdout)["sessions"] if s["key"] == "agent:main:main"]
    assert not session.get("modelOverride"), "the gateway itself says the pin is gone"
    inc = incident(sandbox, fault["incident"])
    remedies = [(e["detail"]["remedy"], e["detail"]["status"]) for e in inc["timeline"] if e["kind"] == "remedy"]
    assert remedies == [("clear_session_model_pin", "ok")]
