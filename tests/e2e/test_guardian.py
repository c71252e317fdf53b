"""End-to-end: the guardian on the real sandboxed OpenClaw gateway. The `clawmedic run` daemon is killed with SIGKILL;
`clawmedic guardian` starts a new daemon, which adopts the very same gateway process (same PID, an `adopted`
event), and the gateway stays healthy throughout."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import psutil
import pytest

from clawmedic.sandbox import gateway as gw
from clawmedic.store.lock import holder_pid
from tests.e2e.conftest import Daemon, is_running

pytestmark = [pytest.mark.gateway, pytest.mark.slow, pytest.mark.timeout(600)]

CLAWMEDIC_OPS = [sys.executable, "-c", "import clawmedic.cli_ops, clawmedic.cli as c; c.main()"]


def wait_event(daemon: Daemon, kind: str, timeout: float, after: float, **fields: Any) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for e in daemon.events(kind):
            if e["ts"] >= after and all(e.get(k) == v for k, v in fields.items()):
                return e
        time.sleep(0.2)
    raise AssertionError(f"no {kind} event with {fields} within {timeout:g} s: {daemon.events()[-20:]}")


def stop_daemon_by_pid(pid: int, config: str) -> None:
    with contextlib.suppress(psutil.Error):
        p = psutil.Process(pid)
        if "run" in p.cmdline() and config in p.cmdline():
            p.terminate()
            p.wait(60)


def test_guardian_brings_back_a_killed_daemon_and_the_gateway_is_adopted(daemon: Daemon, sandbox: gw.Sandbox) -> None:
    daemon.start()
    daemon.wait_healthy()
    gateway_pid = daemon.pid()
    assert daemon.proc is not None
    old = daemon.proc.pid
    os.kill(old, signal.SIGKILL)
    daemon.proc.wait(30)
    daemon.proc = None  # gone: the fixture has nothing left to stop
    killed_at = time.time()
    assert is_running(gateway_pid) and gw.health(sandbox.port)  # the gateway does not depend on the daemon

    done = subprocess.run(
        [*CLAWMEDIC_OPS, "guardian", "--config", str(sandbox.config_path), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    report = json.loads(done.stdout)
    new = report.get("new_pid")
    try:
        assert done.returncode == 0, done.stderr
        assert report["state"] == "dead" and report["action"] == "restarted"
        assert new != old and holder_pid(sandbox.state_dir) == new
        adopted = wait_event(daemon, "adopted", 60, killed_at, pid=gateway_pid)
        assert adopted["target"] == gw.TARGET
        healthy = wait_event(daemon, "state", 120, killed_at, new="healthy")
        assert healthy["ts"] >= adopted["ts"]
        assert daemon.pid() == gateway_pid and is_running(gateway_pid)  # never restarted
        assert gw.health(sandbox.port)
        assert not [e for e in daemon.events("launched") if e["ts"] >= killed_at]
    finally:
        if new:
            stop_daemon_by_pid(int(new), str(sandbox.config_path))
