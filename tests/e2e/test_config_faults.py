"""End-to-end: boot-critical config faults on the real gateway — restored from known-good, never restarted on."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from clawmedic.sandbox import gateway as gw
from tests.e2e.conftest import Daemon

pytestmark = [pytest.mark.gateway, pytest.mark.slow, pytest.mark.timeout(600)]

VALID = '{\n  "gateway": {"mode": "local", "port": PORT, "bind": "loopback"},\n  "logging": {"file": "LOG"}\n}\n'


def _break(sb: gw.Sandbox, fault: str) -> None:
    path = sb.openclaw_json
    if fault == "invalid_json":
        path.write_text(path.read_text() + ",,,{{")
    elif fault == "unknown_key":
        path.write_text(path.read_text().replace('"mode": "local"', '"mode": "local", "bogusField": 1'))
    elif fault == "missing_file":
        path.rename(path.with_name("openclaw.json.moved-by-test"))
    else:
        raise AssertionError(fault)


def _broken_copies(sb: gw.Sandbox) -> list[str]:
    return sorted(p.name for p in sb.openclaw_json.parent.iterdir() if p.name.startswith("openclaw.json.broken-"))


@pytest.mark.parametrize("fault", ["invalid_json", "unknown_key", "missing_file"])
def test_config_fault_is_latent_then_restored_from_known_good(daemon: Daemon, sandbox: gw.Sandbox, fault: str) -> None:
    daemon.start()
    daemon.wait_healthy()
    daemon.wait_event(lambda e: e["kind"] == "known_good", 60)
    good = sandbox.openclaw_json.read_text()
    pid = daemon.pid()

    t_break = time.time()
    _break(sandbox, fault)
    latent = daemon.wait_event(lambda e: e["kind"] == "latent_config_fault", 60, after=t_break)
    assert latent["issues"], "the finding names what is wrong"
    assert gw.health(sandbox.port), "the running gateway keeps serving on its loaded config"
    assert not [e for e in daemon.events("launched") if e["ts"] >= t_break], "no restart on an invalid config"

    t_kill = time.time()
    os.kill(pid, signal.SIGKILL)  # the next boot would read the broken config
    restored = daemon.wait_event(lambda e: e["kind"] == "config_restored", 60, after=t_kill)
    launched = daemon.wait_event(lambda e: e["kind"] == "launched", 60, after=t_kill)
    assert restored["ts"] <= launched["ts"], "known-good is restored before the restart"
    daemon.wait_event(lambda e: e["kind"] == "incident_closed" and e["outcome"] == "recovered", 240, after=t_kill)
    assert gw.health(sandbox.port)
    assert sandbox.openclaw_json.read_text() == good
    assert (sandbox.openclaw_json.stat().st_mode & 0o777) == 0o600
    copies = _broken_copies(sandbox)
    if fault == "missing_file":
        assert restored["moved_aside"] is None
        assert (sandbox.openclaw_json.parent / "openclaw.json.moved-by-test").exists()
    else:
        assert len(copies) == 1 and restored["moved_aside"].endswith(copies[0])
        broken = (sandbox.openclaw_json.parent / copies[0]).read_text()
        assert broken != good and ("{{" in broken or "bogusField" in broken), "the broken edit is kept, not lost"
        assert ((sandbox.openclaw_json.parent / copies[0]).stat().st_mode & 0o777) == 0o600
    daemon.wait_event(lambda e: e["kind"] == "latent_config_resolved", 30, after=t_kill)
    exits = [e for e in daemon.events("exited") if e["ts"] >= t_kill]
    assert all(e["code"] != 78 for e in exits), "the gateway never booted on the broken config"


def _config_files(sb: gw.Sandbox) -> list[str]:
    """openclaw.json and the files beside it — but OpenClaw's own `.last-good` copy, which the gateway writes by
    itself some time after a healthy boot (not clawmedic's doing)."""
    return sorted(p.name for p in sb.openclaw_json.parent.glob("openclaw.json*") if not p.name.endswith(".last-good"))


def test_config_apply_of_an_invalid_file_is_refused_and_nothing_changes(
    daemon: Daemon, sandbox: gw.Sandbox, tmp_path: Path
) -> None:
    daemon.start()
    daemon.wait_healthy()
    before = sandbox.openclaw_json.read_bytes()
    listing = _config_files(sandbox)
    bad = tmp_path / "new.json"
    bad.write_text(before.decode().replace('"mode": "local"', '"mode": "local", "bogusField": 1'))
    r = daemon.cli("config", "apply", str(bad), "--json")
    assert r.returncode == 1, r.stderr
    report = json.loads(r.stdout)
    assert report["applied"] is False and report["rolled_back"] is False
    assert "bogusField" in report["reason"]
    assert sandbox.openclaw_json.read_bytes() == before
    assert _config_files(sandbox) == listing, "no file touched"
    assert gw.health(sandbox.port)


def test_config_apply_that_fails_at_runtime_is_rolled_back(daemon: Daemon, sandbox: gw.Sandbox, tmp_path: Path) -> None:
    daemon.start()
    daemon.wait_healthy()
    good = sandbox.openclaw_json.read_text()
    new = tmp_path / "remote.json"
    # valid for the schema, but the gateway refuses to run with it (exit 78 at its next boot)
    new.write_text(good.replace('"mode": "local"', '"mode": "remote"'))
    assert daemon.cli("config", "check", str(new)).returncode == 0
    r = daemon.cli("config", "apply", str(new), "--probation", "60", "--json")
    assert r.returncode == 1, r.stdout + r.stderr
    report = json.loads(r.stdout)
    assert report["applied"] is True and report["rolled_back"] is True and report["healthy"] is False
    assert "78" in report["reason"] or "not live" in report["reason"]
    assert sandbox.openclaw_json.read_text() == good
    kept = [p for p in sandbox.openclaw_json.parent.iterdir() if p.name.startswith("openclaw.json.broken-")]
    assert any(p.read_text() == good for p in kept), "the file that apply replaced is kept beside the config"
    assert new.exists(), "the user's new file is never consumed"
    daemon.wait_healthy(after=time.time() - 1)
    assert gw.health(sandbox.port)
    history = json.loads(daemon.cli("config", "history", "--json").stdout)
    assert report["snapshot"] in [h["rev"] for h in history], "the change was snapshotted before it was applied"
