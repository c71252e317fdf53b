"""The guardian for real: a real `clawmedic run` process supervises the stand-in; the daemon is killed with SIGKILL
(dead) or frozen with SIGSTOP (stale), and `clawmedic guardian` brings a new daemon up, which adopts the very same
stand-in process (same PID). When the guardian cannot restart it, a human is alerted through a real receiver.

Every process started here is ended by its PID: the daemons (checked to be `clawmedic run` of this config) and the
stand-ins (through the rig's records).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import psutil
import pytest

from clawmedic.notify import Outbox, queue_path
from clawmedic.store.lock import holder_pid
from tests.helpers.receivers import HttpReceiver
from tests.helpers.rig import Rig, StandinTarget, free_port, process_alive

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

T = TypeVar("T")
CLAWMEDIC = str(Path(sys.executable).parent / "clawmedic")
CLAWMEDIC_OPS = [sys.executable, "-c", "import clawmedic.cli_ops, clawmedic.cli as c; c.main()"]


def poll(predicate: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


class Daemons:
    """Real `clawmedic run` processes of one config, started or found; all ended by PID at teardown."""

    def __init__(self, rig: Rig) -> None:
        self.rig = rig
        self.seen: set[int] = set()
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        log = (self.rig.tmp_path / "daemon.log").open("ab")
        proc = subprocess.Popen(
            [CLAWMEDIC, "run", "--config", str(self.rig.config_path)],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        self.procs.append(proc)
        self.seen.add(proc.pid)
        return proc

    def current(self) -> int | None:
        pid = holder_pid(self.rig.state_dir)
        if pid is not None:
            self.seen.add(pid)
        return pid

    def is_ours(self, pid: int) -> bool:
        try:
            cmd = psutil.Process(pid).cmdline()
        except psutil.Error:
            return False
        return "run" in cmd and str(self.rig.config_path) in cmd

    def stop_all(self) -> None:
        self.current()
        for pid in self.seen:
            if self.is_ours(pid):
                with contextlib.suppress(psutil.Error):
                    p = psutil.Process(pid)
                    p.send_signal(signal.SIGCONT)
                    p.terminate()
                    p.wait(20)
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    try:
        yield r
    finally:
        r.cleanup()


@pytest.fixture
def daemons(rig: Rig) -> Iterator[Daemons]:
    d = Daemons(rig)
    try:
        yield d
    finally:
        d.stop_all()


def guardian(rig: Rig, *args: str) -> tuple[int, dict[str, Any], str]:
    done = subprocess.run(
        [*CLAWMEDIC_OPS, "guardian", "--config", str(rig.config_path), "--json", *args],
        capture_output=True,
        text=True,
        timeout=90,
    )
    report: dict[str, Any] = json.loads(done.stdout) if done.stdout.strip() else {}
    return done.returncode, report, done.stderr


def healthy_pid(rig: Rig, daemon_pid: int) -> int:
    """Wait until the daemon `daemon_pid` reports the stand-in healthy; return the stand-in's PID."""

    def ready() -> int | None:
        status = rig.status()
        target = status.get("targets", {}).get("svc", {})
        if status.get("daemon", {}).get("pid") == daemon_pid and target.get("state") == "healthy":
            return int(target["pid"])
        return None

    return poll(ready, 30, f"daemon {daemon_pid} to report svc healthy")


def adopted_by_new_daemon(rig: Rig, standin: int, since: float) -> dict[str, Any]:
    return poll(
        lambda: next((e for e in rig.events("adopted", since=since) if e.get("pid") == standin), None),
        30,
        f"an `adopted` event for pid {standin}",
    )


def test_guardian_restarts_a_killed_daemon_and_the_new_one_adopts_the_target(rig: Rig, daemons: Daemons) -> None:
    rig.write_config(StandinTarget())
    first = daemons.start()
    standin = healthy_pid(rig, first.pid)

    code, report, _ = guardian(rig)
    assert (code, report["action"], report["state"]) == (0, "none", "healthy")  # nothing to do

    os.kill(first.pid, signal.SIGKILL)
    first.wait(10)
    killed_at = time.time()
    code, report, err = guardian(rig)
    assert code == 0, err
    assert report["state"] == "dead" and report["action"] == "restarted"
    new_pid = report["new_pid"]
    assert new_pid != first.pid and daemons.current() == new_pid and daemons.is_ours(new_pid)

    adopted_by_new_daemon(rig, standin, killed_at)
    assert healthy_pid(rig, new_pid) == standin  # the same process, never restarted
    assert process_alive(standin)
    assert rig.events("guardian_restarted", target=None, since=killed_at)[0]["new_pid"] == new_pid
    console = Path(report["console_log"])
    assert console.stat().st_mode & 0o777 == 0o600

    code, report, _ = guardian(rig)
    assert (code, report["action"]) == (0, "none")


def test_guardian_replaces_a_hung_daemon(rig: Rig, daemons: Daemons) -> None:
    rig.write_config(StandinTarget())
    first = daemons.start()
    standin = healthy_pid(rig, first.pid)
    os.kill(first.pid, signal.SIGSTOP)  # alive, holding the lock, but its heartbeat stops
    frozen_at = time.time()

    def heartbeat_age() -> float:
        return time.time() - float(rig.status().get("daemon", {}).get("updated_at", time.time()))

    poll(lambda: heartbeat_age() > 10.5, 25, "the heartbeat to be 10 s old")
    code, report, err = guardian(rig, "--stale-after", "10")
    assert code == 0, err
    assert report["state"] == "stale" and report["action"] == "restarted", report
    assert "stopped pid" in report["detail"] or "killed pid" in report["detail"]
    first.wait(10)  # the hung daemon is gone (ours: its PID was in daemon.pid)
    new_pid = report["new_pid"]
    assert new_pid != first.pid
    adopted_by_new_daemon(rig, standin, frozen_at)
    assert healthy_pid(rig, new_pid) == standin


def test_guardian_alerts_humans_when_it_cannot_restart_the_daemon(rig: Rig, daemons: Daemons) -> None:
    down = HttpReceiver(free_port())  # never started: its alert is queued on disk for the next daemon
    with HttpReceiver() as hook:
        rig.write_config(StandinTarget(), daemon={"notify": {"urls": [hook.url("/alerts"), down.url("/down")]}})
        code, report, err = guardian(rig, "--restart-command", "false", "--wait", "2")
        assert code == 1, err
        assert report["state"] == "dead" and report["action"] == "failed"
        assert "`false` exited 1" in report["detail"]
        alerted = {a["key"]: a for a in report["alerted"]}
        assert alerted["daemon.notify.urls[0]"]["delivered"] is True
        assert alerted["daemon.notify.urls[1]"]["delivered"] is False and alerted["daemon.notify.urls[1]"]["queued"]
        message = hook.wait_for(1)[0].json()
        assert "could not be restarted" in message["title"]
        assert f"clawmedic run --config {rig.config_path}" in message["message"]
    outbox = Outbox(queue_path(rig.state_dir))
    try:
        assert [(r.dest_key, r.status) for r in outbox.all()] == [("daemon.notify.urls[1]", "pending")]
    finally:
        outbox.close()
    assert daemons.current() is None  # nothing was left running
