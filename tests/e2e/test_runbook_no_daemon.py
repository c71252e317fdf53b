"""End-to-end: the 3 a.m. runbook works when the daemon is dead too (issue 16), on the real sandboxed gateway.

The daemon supervised the gateway, then stopped (`stop_targets_on_exit` is false: the gateway keeps running). With
no daemon: the config is corrupted and the gateway killed with SIGKILL. `clawmedic fix nuclear` restores the
known-good config (the broken file kept beside it) and relaunches the gateway itself, the way the daemon does; a
`clawmedic run` started afterwards adopts that very process instead of launching a second one.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from clawmedic.sandbox import gateway as gw
from tests.e2e.conftest import Daemon, free_of, is_running

pytestmark = [pytest.mark.gateway, pytest.mark.slow, pytest.mark.timeout(900)]


def flat(text: str) -> str:
    return " ".join(text.split())  # Rich wraps long lines


def test_fix_nuclear_without_a_daemon_heals_and_a_later_daemon_adopts(daemon: Daemon, sandbox: gw.Sandbox) -> None:
    daemon.start()
    daemon.wait_healthy()
    daemon.wait_event(lambda e: e["kind"] == "known_good", 120)
    daemon.wait_event(lambda e: e["kind"] == "deps_recorded", 120)  # so `fix deps` has a manifest to check against
    good = sandbox.openclaw_json.read_text()
    first = daemon.pid()
    daemon.stop()
    output = sandbox.state_dir / "targets" / gw.TARGET / "output.log"
    assert is_running(first), f"the gateway should outlive the daemon; its last output:\n{output.read_text()[-2000:]}"

    corrupt = good + ",,,{{"
    sandbox.openclaw_json.write_text(corrupt)
    os.kill(first, signal.SIGKILL)
    assert free_of(first)
    assert not gw.health(sandbox.port)

    t_fix = time.time()
    fixed = daemon.cli("fix", "nuclear")
    out = flat(fixed.stdout)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "no clawmedic daemon is supervising" in out
    assert "clawmedic run --config" in out  # and how to start one
    assert json.loads(sandbox.openclaw_json.read_text()) == json.loads(good)
    broken = [p for p in sandbox.openclaw_json.parent.glob("openclaw.json.broken-*") if p.read_text() == corrupt]
    assert broken, "the broken config is kept beside the restored one"
    assert gw.health(sandbox.port)
    launched = [e for e in daemon.events("launched") if e["ts"] >= t_fix]
    assert [e.get("by") for e in launched] == ["cli"]
    relaunched = launched[0]["pid"]
    assert relaunched != first
    record = sandbox.launcher.adopt()
    assert record is not None and record.pid == relaunched, "recorded (PID + start time) for a daemon to adopt"
    assert f"pid {relaunched}" in out

    t_run = time.time()
    daemon.start()
    adopted = daemon.wait_event(lambda e: e["kind"] == "adopted", 60, after=t_run)
    assert adopted["pid"] == relaunched
    daemon.wait_healthy(after=t_run)
    assert daemon.pid() == relaunched
    assert not [e for e in daemon.events("launched") if e["ts"] >= t_run], "no second launch"
    assert gw.health(sandbox.port)
