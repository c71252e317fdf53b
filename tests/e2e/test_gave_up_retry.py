"""Issue 17 end to end on the real gateway: giving up is not forever.

Something outside (an OOM killer, a misbehaving script) kills the gateway each time it appears: the crash loop
escalates, the doctor finds nothing to repair, clawmedic gives up. Then the killer stops and, with nobody running
`clawmedic resume`, the gateway comes back by itself within one retry period and the incident closes as recovered.
Short limits keep it to about a minute: a crash loop of two kills and a 20 s retry period.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from clawmedic.sandbox import gateway as gw
from clawmedic.sandbox.install import Install
from tests.e2e.conftest import BOOT_WAIT_S, CLAWMEDIC, NO_LLM, Daemon, cleanup_sandbox, incident

pytestmark = [pytest.mark.gateway, pytest.mark.slow, pytest.mark.timeout(600)]

RETRY_S = 20.0
LIMITS = {
    "probation_s": 3.0,
    "startup_timeout_s": 150.0,
    "backoff_initial_s": 1.0,
    "backoff_max_s": 2.0,
    "crash_loop_failures": 2,
    "crash_loop_window_s": 300.0,
    "retry_after_gave_up_s": RETRY_S,
}


@pytest.fixture
def daemon(install: Install, tmp_path: Path) -> Iterator[Daemon]:
    sb = gw.create(tmp_path / "sandbox", install, limits=LIMITS, llm=NO_LLM)
    d = Daemon(sb, tmp_path / "daemon.log")
    try:
        yield d
    finally:
        d.stop()
        cleanup_sandbox(sb)


class Killer:
    """Kills (SIGKILL) each gateway clawmedic launches, as soon as its `launched` event names it, until stopped."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.killed: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Killer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        root = str(self.daemon.sb.root)
        while not self._stop.wait(0.05):
            for e in self.daemon.events("launched"):
                pid = e.get("pid")
                if not isinstance(pid, int) or pid in self.killed:
                    continue
                self.killed.append(pid)
                with contextlib.suppress(psutil.Error, OSError):
                    if psutil.Process(pid).cwd().startswith(root):  # the sandbox's gateway, not a reused PID
                        os.kill(pid, signal.SIGKILL)


def test_after_giving_up_the_gateway_comes_back_by_itself_once_the_killer_stops(daemon: Daemon) -> None:
    with Killer(daemon) as killer:
        daemon.start()
        gave_up = daemon.wait_event(lambda e: e["kind"] == "gave_up", 120)
        killer.stop()
    assert len(killer.killed) >= LIMITS["crash_loop_failures"]
    assert daemon.status().get("next_retry_at") is not None or daemon.status().get("state") != "gave_up"
    inc_id = gave_up["incident"]
    shown = subprocess.run(
        [CLAWMEDIC, "status", "--config", str(daemon.sb.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},  # one line a row: the phrase is not wrapped
        check=False,
    )
    assert "gave up; next try in" in shown.stdout or "retrying" in shown.stdout, shown.stdout

    closed = daemon.wait_event(lambda e: e["kind"] == "incident_closed", RETRY_S * 1.1 + BOOT_WAIT_S, gave_up["ts"])
    assert (closed["incident"], closed["outcome"]) == (inc_id, "recovered")
    retry = daemon.wait_event(lambda e: e["kind"] == "launched", 1, gave_up["ts"])
    assert "slow retry" in retry["reason"]
    assert retry["ts"] - gave_up["ts"] <= RETRY_S * 1.1 + 5  # within one retry period (jittered), gates included
    assert retry["pid"] not in killer.killed
    healed = incident(daemon.sb, inc_id)
    assert healed["status"] == "recovered"
    assert healed["cause"] == "crash_loop"
    assert [e for e in daemon.events("incident_opened")] == [daemon.events("incident_opened")[0]]  # one incident
    assert time.time() - closed["ts"] < 60
