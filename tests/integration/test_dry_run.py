"""`clawmedic run --dry-run` (issue 14, operator controls): it observes, diagnoses and decides, and changes nothing.

A real `clawmedic run` launches the stand-in service (tests/helpers/standin.py) and exits, leaving it running; a
`clawmedic run --dry-run` adopts it; the stand-in is killed. The dry run opens the incident and records the
relaunch it would have made — in events.jsonl and in the incident's timeline — and no process is started.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import psutil
import pytest

from tests.helpers.rig import Rig, StandinTarget, kill_pids
from tests.integration.test_cli import CLAWMEDIC, cli_env

pytestmark = pytest.mark.timeout(90)
T = TypeVar("T")


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    try:
        yield r
    finally:
        r.cleanup()


def wait(predicate: Callable[[], T | None], what: str, rig: Rig, timeout: float = 30.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}\n{rig.describe()}"
        time.sleep(0.05)


def running(command: list[str]) -> list[int]:
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        with contextlib.suppress(psutil.Error):
            if p.info["cmdline"] == command and p.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(p.pid)
    return found


def test_a_killed_child_in_a_dry_run_gets_a_would_relaunch_and_no_new_process(rig: Rig, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    target = StandinTarget()
    rig.write_config(target)
    procs: list[subprocess.Popen[bytes]] = []

    def run(*extra: str) -> subprocess.Popen[bytes]:
        with (tmp_path / "daemon.log").open("ab") as log:
            p = subprocess.Popen(
                [CLAWMEDIC, "run", "--json-logs", *extra, "--config", str(rig.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=cli_env(home),
                cwd=home,
            )
        procs.append(p)
        return p

    def healthy_pid() -> int | None:
        st = rig.target_status()
        return int(st["pid"]) if st.get("state") == "healthy" and st.get("pid") else None

    try:
        first = run()
        pid = wait(healthy_pid, "healthy under the real daemon", rig)
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=30) == 0
        started = time.time()
        dry = run("--dry-run")
        wait(lambda: [e for e in rig.events("adopted", since=started) if e["pid"] == pid], "the dry run adopts", rig)
        wait(lambda: rig.status().get("daemon", {}).get("dry_run") is True, "status says dry run", rig)

        kill_pids([pid], [target.command()])
        would = wait(lambda: rig.events("would", since=started), "a 'would' event", rig)
        assert would[0]["action"] == "relaunch"
        incident = wait(lambda: [i for i in rig.incidents() if i.detected_at >= started], "an incident", rig)[0]
        entries = [e.detail for e in incident.timeline if e.kind == "would"]
        assert entries and entries[0]["action"] == "relaunch", incident.timeline
        time.sleep(1.0)  # a launch would have shown by now
        assert rig.launched_pids(since=started) == []
        assert running(target.command()) == []
        assert dry.poll() is None
        dry.send_signal(signal.SIGTERM)
        assert dry.wait(timeout=30) == 0
        assert not rig.events("internal_error", target=None, since=started), rig.describe()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
