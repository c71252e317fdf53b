"""End-to-end: a real Telegram channel that cannot connect (a fake bot token on a machine without internet) makes
the real gateway fail `/ready` while `/health` stays 200 (FACTS fault matrix, "Channel down"). The gateway check
finds it, disables the channel through the guard, verifies `/ready` is 200 again, and keeps the token out of
everything clawmedic writes."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from clawmedic.knowngood_client import KnownGoodClient
from clawmedic.sandbox import gateway as gw
from clawmedic.sandbox.install import Install
from tests.e2e.conftest import Daemon, incident

pytestmark = [pytest.mark.gateway, pytest.mark.slow, pytest.mark.timeout(900)]

DOWN_WAIT_S = 420.0  # FACTS: /ready fails on the channel ~120 s after boot; slower on a loaded 2-core machine


def _fake_bot_token() -> str:
    """Shaped like a real bot token (`<bot id>:<35 characters>`), unique to this run so a leak is unambiguous."""
    return f"{secrets.randbelow(9 * 10**9) + 10**9}:AA{secrets.token_urlsafe(25)[:33]}"


def _configure(sb: gw.Sandbox, bot_token: str) -> None:
    cfg = json.loads(sb.openclaw_json.read_text())
    cfg["channels"] = {"telegram": {"enabled": True, "botToken": bot_token}}
    sb.openclaw_json.write_text(json.dumps(cfg, indent=2))
    # restarts = 0: this test proves the disable path; a targeted restart before it (channels.stop/start, then the
    # disable min_interval_s later) is proven by tests/e2e/test_inside_gateway.py
    sb.config_path.write_text(
        sb.config_path.read_text()
        + "\n[daemon.doctor.gateway_checks]\ninterval_s = 5.0\ncooldown_s = 600.0\n"
        + "[daemon.doctor.gateway_checks.channels]\nrestarts = 0\n"
    )


def _openclaw(install: Install, sb: gw.Sandbox, *args: str) -> Any:
    r = subprocess.run(
        install.command(*args),
        env={**os.environ, "HOME": str(sb.home), "OPENCLAW_GATEWAY_TOKEN": sb.token},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)


class HealthWatch:
    """Polls `/health` in a thread until stopped; records every answer that was not 200 once it first was 200."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.seen_ok = 0
        self.bad: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(trust_env=False, timeout=10.0) as client:
            while not self._stop.is_set():
                try:
                    r = client.get(f"http://127.0.0.1:{self.port}/health")
                    ok, why = r.status_code == 200 and r.json().get("ok") is True, f"{r.status_code} {r.text[:100]}"
                except (httpx.HTTPError, ValueError) as e:
                    ok, why = False, repr(e)
                if ok:
                    self.seen_ok += 1
                elif self.seen_ok:
                    self.bad.append(f"{time.strftime('%H:%M:%S')} {why}")
                self._stop.wait(1.0)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)


@pytest.fixture
def health_watch(sandbox: gw.Sandbox) -> Iterator[HealthWatch]:
    w = HealthWatch(sandbox.port)
    try:
        yield w
    finally:
        w.stop()


def test_a_down_channel_is_disabled_and_ready_again(
    daemon: Daemon, sandbox: gw.Sandbox, install: Install, health_watch: HealthWatch
) -> None:
    bot_token = _fake_bot_token()
    _configure(sandbox, bot_token)
    daemon.start()
    healthy = daemon.wait_healthy()
    health_watch.start()

    fault = daemon.wait_event(
        lambda e: e["kind"] == "gateway_fault" and e["rule"] == "channel-down", DOWN_WAIT_S, after=healthy["ts"]
    )
    inc_id = fault["incident"]
    assert "telegram" in fault["detail"], fault
    fixed = daemon.wait_event(lambda e: e["kind"] == "gateway_fault_resolved" and e["incident"] == inc_id, 240)
    assert fixed["outcome"] == "recovered"

    # the gateway itself: ready again, and the channel off in its config and in its own status
    ready = httpx.get(f"http://127.0.0.1:{sandbox.port}/ready", timeout=10, trust_env=False)
    assert ready.status_code == 200, ready.text
    assert "telegram" not in ready.json().get("failing", [])
    assert json.loads(sandbox.openclaw_json.read_text())["channels"]["telegram"]["enabled"] is False
    status = _openclaw(install, sandbox, "channels", "status", "--json")
    accounts = (status.get("channelAccounts") or {}).get("telegram") or []
    assert not any(a.get("running") for a in accounts), f"the gateway still runs telegram: {accounts}"
    health_watch.stop()
    assert health_watch.seen_ok > 0 and not health_watch.bad, f"/health was not 200 all along: {health_watch.bad}"

    inc = incident(sandbox, inc_id)
    assert inc["status"] == "recovered" and inc["cause"] == "gateway_check"
    (diagnosis,) = [e["detail"] for e in inc["timeline"] if e["kind"] == "diagnosis"]
    assert [f["rule"] for f in diagnosis["findings"]] == ["channel-down"]
    evidence = [e["detail"] for e in inc["timeline"] if e["kind"] == "evidence"]
    assert any("telegram" in ev["gateway"]["ready"].get("failing", []) for ev in evidence), evidence
    remedies = [e["detail"] for e in inc["timeline"] if e["kind"] == "remedy"]
    assert [(r["remedy"], r["status"], r["params"]) for r in remedies] == [
        ("channel_disable", "ok", {"channel": "telegram"})
    ]
    before = remedies[0]["changes"][0]["snapshot_before"]
    assert before, "the config was snapshotted before the change"
    snapshot = KnownGoodClient(sandbox.state_dir).read(gw.TARGET, "openclaw.json", before)
    assert snapshot is not None and json.loads(snapshot)["channels"]["telegram"]["enabled"] is True
    verified = [e["detail"] for e in inc["timeline"] if e["kind"] == "verify"]
    assert verified and verified[-1]["fault_present"] is False
    assert verified[-1]["gateway"]["ready"] == {"status": 200, "failing": []}
    assert len([e for e in daemon.events("gateway_fault") if e["rule"] == "channel-down"]) == 1, "one incident"

    shown = daemon.cli("incidents", "show", str(inc_id), "--markdown")
    assert shown.returncode == 0, shown.stderr
    for words in ("channel-down", "channel_disable: ok", "telegram", "Recovered"):
        assert words in shown.stdout, f"{words!r} missing from the report:\n{shown.stdout}"

    # the bot token never leaves the gateway's own config through clawmedic
    bot_secret = bot_token.split(":", 1)[1]
    written = {
        "incident": json.dumps(inc),
        "report": shown.stdout,
        "daemon log": daemon.log.read_text(errors="replace"),
        "events": (sandbox.state_dir / "events.jsonl").read_text(errors="replace"),
    }
    for folder in ("reports", "logs"):
        for p in sorted((sandbox.state_dir / folder).rglob("*")) if (sandbox.state_dir / folder).is_dir() else []:
            if p.is_file():
                written[str(p)] = p.read_text(errors="replace")
    for db in sorted(sandbox.state_dir.glob("*.sqlite*")):
        written[str(db)] = db.read_bytes().decode("latin-1")
    leaks = [where for where, text in written.items() if bot_secret in text]
    assert not leaks, f"the fake bot token leaked into {leaks}"
