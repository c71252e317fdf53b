"""End-to-end: `clawmedic safe-start` as a service manager would run it, on the real gateway."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from clawmedic.sandbox import gateway as gw
from tests.e2e.conftest import CLAWMEDIC, _kill_tree

pytestmark = [pytest.mark.gateway, pytest.mark.slow, pytest.mark.timeout(600)]


def _safe_start(sb: gw.Sandbox, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [CLAWMEDIC, "safe-start", gw.TARGET, "--config", str(sb.config_path)],
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
        )


def test_safe_start_restores_an_invalid_config_then_execs_the_gateway(sandbox: gw.Sandbox, tmp_path: Path) -> None:
    snap = subprocess.run(
        [CLAWMEDIC, "config", "snapshot", "--known-good", "--config", str(sandbox.config_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert snap.returncode == 0, snap.stderr
    good = sandbox.openclaw_json.read_text()
    sandbox.openclaw_json.write_text(good + ",,,{{")
    proc = _safe_start(sandbox, tmp_path / "safe-start.log")
    try:
        gw.wait_healthy(sandbox.port, pid=proc.pid)
        assert sandbox.openclaw_json.read_text() == good
        assert list(sandbox.openclaw_json.parent.glob("openclaw.json.broken-*")), "the broken file is kept"
        # exec, not a child: the service manager's PID is the gateway itself
        assert "clawmedic" not in " ".join(psutil.Process(proc.pid).cmdline())
        assert proc.poll() is None
    finally:
        _kill_tree(proc.pid)
        proc.wait(30)


def test_safe_start_refuses_a_foreign_port_holder_and_names_it(sandbox: gw.Sandbox, tmp_path: Path) -> None:
    squatter = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(sandbox.port), "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(
            c.laddr and c.laddr.port == sandbox.port for c in psutil.Process(squatter.pid).net_connections()
        ):
            time.sleep(0.1)
        log = tmp_path / "safe-start.log"
        proc = _safe_start(sandbox, log)
        assert proc.wait(120) == 1
        text = log.read_text()
        assert str(squatter.pid) in text and "http.server" in text
        assert squatter.poll() is None, "a foreign process is never killed without --kill-foreign"
        assert not gw.health(sandbox.port)
    finally:
        squatter.terminate()
        squatter.wait(10)
