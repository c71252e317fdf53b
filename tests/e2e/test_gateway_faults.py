"""End-to-end: a real sandboxed OpenClaw gateway under a real `clawmedic run`, broken for real."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from clawmedic.sandbox import gateway as gw
from tests.e2e.conftest import Daemon, free_of, incident, is_running

pytestmark = [pytest.mark.gateway, pytest.mark.slow, pytest.mark.timeout(600)]


def test_kill9_is_detected_at_once_and_healed(daemon: Daemon, sandbox: gw.Sandbox) -> None:
    daemon.start()
    daemon.wait_healthy()
    old = daemon.pid()
    t_kill = time.time()
    os.kill(old, signal.SIGKILL)
    exited = daemon.wait_event(lambda e: e["kind"] == "exited" and e["pid"] == old, 30)
    assert exited["code"] == -signal.SIGKILL  # our own child: the real exit status, seen through the exit event
    opened = daemon.wait_event(lambda e: e["kind"] == "incident_opened", 30, after=t_kill)
    closed = daemon.wait_event(lambda e: e["kind"] == "incident_closed", 240, after=t_kill)
    assert closed["outcome"] == "recovered"
    new = daemon.pid()
    assert new != old and is_running(new) and not is_running(old)
    assert gw.health(sandbox.port)
    inc = incident(sandbox, opened["incident"])
    assert inc["status"] == "recovered"
    assert inc["restarts"] == 1
    # detected from the exit event, not by failed polls (a probe may still catch the kernel tearing the process
    # down, but the incident is opened by the exit itself)
    assert opened["reason"].startswith("process exited"), opened["reason"]
    assert opened["ts"] >= exited["ts"]


def test_sigstop_hang_is_detected_killed_and_restarted(daemon: Daemon, sandbox: gw.Sandbox) -> None:
    daemon.start()
    daemon.wait_healthy()
    old = daemon.pid()
    t_stop = time.time()
    os.kill(old, signal.SIGSTOP)
    opened = daemon.wait_event(lambda e: e["kind"] == "incident_opened", 60, after=t_stop)
    assert "stopped" in opened["reason"]
    daemon.wait_event(lambda e: e["kind"] == "incident_closed" and e["outcome"] == "recovered", 240, after=t_stop)
    assert free_of(old), "the hung gateway must have been stopped"
    new = daemon.pid()
    assert new != old and gw.health(sandbox.port)
    inc = incident(sandbox, opened["incident"])
    actions = [e["detail"] for e in inc["timeline"] if e["kind"] == "action"]
    assert any(a["action"] == "stop" and a["pid"] == old for a in actions)
    assert any(a["action"] == "launch" and a["pid"] == new for a in actions)


def test_foreign_listener_is_not_mistaken_for_the_gateway_nor_killed(daemon: Daemon, sandbox: gw.Sandbox) -> None:
    squatter = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(sandbox.port), "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", sandbox.port)) == 0:
                    break
            time.sleep(0.1)
        assert not gw.health(sandbox.port)  # answers 404: not our gateway
        daemon.start()
        esc = daemon.wait_event(lambda e: e["kind"] == "escalated", 60)
        assert esc["cause"] == "port_in_use"
        conflict = daemon.events("port_conflict")[0]
        assert conflict["owner_pid"] == squatter.pid
        assert "http.server" in conflict["owner_cmdline"]
        time.sleep(3)
        assert squatter.poll() is None, "clawmedic must not kill a process it does not own"
        assert not daemon.events("launched"), "no gateway is started onto a taken port"
        gave_up = daemon.wait_event(lambda e: e["kind"] == "gave_up", 30)
        inc = incident(sandbox, esc["incident"])
        assert inc["status"] == "gave_up"
        assert str(squatter.pid) in str(inc["timeline"])
        assert gave_up
        remedies = [e["detail"] for e in inc["timeline"] if e["kind"] == "remedy"]
        assert remedies and remedies[0]["remedy"] == "kill_port_holder"
        assert remedies[0]["status"] == "needs_approval", "a refused remedy is reported, not run"
        report = daemon.cli("incidents", "show", str(esc["incident"]), "--markdown").stdout
        assert "port-taken-by-foreign-process" in report and str(squatter.pid) in report
    finally:
        squatter.terminate()
        squatter.wait(10)


def test_pause_takes_no_action_and_resume_heals(daemon: Daemon, sandbox: gw.Sandbox) -> None:
    daemon.start()
    daemon.wait_healthy()
    pid = daemon.pid()
    assert daemon.cli("pause").returncode == 0
    daemon.wait_event(lambda e: e["kind"] == "state" and e["new"] == "maintenance", 10)
    t_kill = time.time()
    os.kill(pid, signal.SIGKILL)
    daemon.wait_event(lambda e: e["kind"] == "exited" and e["pid"] == pid, 30)
    time.sleep(6)
    assert not [e for e in daemon.events("launched") if e["ts"] >= t_kill], "paused: nothing may be restarted"
    assert daemon.status()["state"] == "maintenance"
    assert not gw.health(sandbox.port)
    t_resume = time.time()
    assert daemon.cli("resume").returncode == 0
    daemon.wait_healthy(after=t_resume)
    assert gw.health(sandbox.port)
