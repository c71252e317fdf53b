"""Promise: a restart someone asks for is done, and reported only once it is done.

Real `clawmedic run` and `clawmedic fix …` processes against the stand-in service (tests/helpers/standin.py), on
loopback, each with its own HOME. What is asserted is what the daemon and the command recorded (events.jsonl,
control-ack.json, process.json) and which processes run — never how long anything took.

- A restart request written while no daemon runs (or just before one restarts) is honoured when it starts.
- `fix restart` through a daemon returns only after the daemon acknowledged the request and a new PID is live.
- With no daemon, `fix restart` restarts the target itself, the way the daemon would (so a daemon started later
  adopts it), stops only the target's own process, and says that nothing supervises it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from clawmedic import control, defaults, relaunch
from clawmedic.config import load_config
from clawmedic.process import identity
from tests.helpers.rig import Rig, StandinTarget, free_port, kill_pids, process_alive, runs_command, standin_command
from tests.integration.test_cli import CLAWMEDIC, cli_env

pytestmark = pytest.mark.timeout(90)
T = TypeVar("T")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    return h


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    try:
        yield r
    finally:
        r.cleanup()  # every stand-in the daemon or a `fix` command launched, by PID


class Daemons:
    """`clawmedic run` processes of one test, each stopped by PID at the end."""

    def __init__(self, rig: Rig, home: Path) -> None:
        self.rig, self.home = rig, home
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        log = (self.rig.tmp_path / "daemon.log").open("ab")
        proc = subprocess.Popen(
            [CLAWMEDIC, "run", "--json-logs", "--config", str(self.rig.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=cli_env(self.home),
            cwd=self.home,
        )
        log.close()
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()


@pytest.fixture
def daemons(rig: Rig, home: Path) -> Iterator[Daemons]:
    d = Daemons(rig, home)
    try:
        yield d
    finally:
        d.close()


def wait(predicate: Callable[[], T | None], what: str, timeout: float = 30.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def fix(home: Path, rig: Rig, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLAWMEDIC, "fix", *args, "--config", str(rig.config_path)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        env=cli_env(home),
        cwd=home,
        check=False,
    )


def flat(text: str) -> str:
    """Output with Rich's line wrapping undone."""
    return " ".join(text.split())


def record(rig: Rig) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads((rig.state_dir / "targets" / "svc" / "process.json").read_text())
    except (OSError, ValueError):
        return {}
    return data


def healthy_pid(rig: Rig, since: float = 0.0) -> int | None:
    """The target's PID once the daemon reports it healthy (after `since`)."""
    st = rig.target_status()
    if st.get("state") == "healthy" and float(st.get("since") or 0) >= since and st.get("pid"):
        return int(st["pid"])
    return None


def test_a_restart_requested_while_the_daemon_is_down_is_honoured_at_start(
    rig: Rig, daemons: Daemons, tmp_path: Path
) -> None:
    target = StandinTarget()
    rig.write_config(target)
    first = daemons.start()
    old = wait(lambda: healthy_pid(rig), "healthy under the first daemon")
    daemons.stop(first)  # stop_targets_on_exit is false: the stand-in keeps running
    assert runs_command(old, target.command())

    seq = control.request_restart(rig.state_dir, ["svc"])["svc"]
    asked_at = time.time()
    daemons.start()

    def acked() -> control.Acks | None:
        a = control.read_acks(rig.state_dir)
        return a if a is not None and a.restart_seq.get("svc", 0) >= seq else None

    acks = wait(acked, "the new daemon to acknowledge the request")
    new = wait(lambda: (p := healthy_pid(rig, asked_at)) is not None and p != old and p, "a new healthy pid")
    assert acks.daemon_pid == daemons.procs[-1].pid
    assert [e["pid"] for e in rig.events("adopted", since=asked_at)] == [old]
    assert rig.events("restart_requested", since=asked_at)
    assert rig.launched_pids(since=asked_at) == [new]
    assert not runs_command(old, target.command())


def test_a_request_the_new_daemon_launched_fresh_for_is_not_a_second_restart(rig: Rig, daemons: Daemons) -> None:
    rig.write_config(StandinTarget())
    first = daemons.start()
    old = wait(lambda: healthy_pid(rig), "healthy under the first daemon")
    daemons.stop(first)
    kill_pids([old], [rig.targets[0].command()])  # nothing left to adopt: the next start launches
    seq = control.request_restart(rig.state_dir, ["svc"])["svc"]
    asked_at = time.time()
    daemons.start()
    new = wait(lambda: (p := healthy_pid(rig, asked_at)) and p, "healthy under the second daemon")
    acks = control.read_acks(rig.state_dir)
    assert acks is not None and acks.restart_seq["svc"] == seq
    assert rig.launched_pids(since=asked_at) == [new]  # the launch was the restart asked for
    assert not rig.events("restart_requested", since=asked_at)


def test_fix_restart_returns_only_after_the_pid_changed(rig: Rig, daemons: Daemons, home: Path) -> None:
    target = StandinTarget(args=["--boot-delay", "1"])  # the new process takes a moment: no early "healthy"
    rig.write_config(target)
    daemon = daemons.start()
    old = wait(lambda: healthy_pid(rig), "healthy")

    status = json.loads(fix(home, rig, "status", "--json").stdout)
    supervising = status["steps"][0]
    assert supervising["status"] == "ok"
    assert f"pid {daemon.pid} is supervising since" in supervising["detail"]

    done = fix(home, rig, "restart")
    returned_at = time.time()
    assert done.returncode == 0, done.stderr + done.stdout
    rec = record(rig)
    assert rec["pid"] != old
    assert process_alive(rec["pid"])
    assert not runs_command(old, target.command())  # the old one was gone before the command returned
    assert relaunch.live(load_config(rig.config_path), "svc")
    assert [e["pid"] for e in rig.events("launched") if e["ts"] <= returned_at][-1] == rec["pid"]
    assert f"restarted and is healthy: new pid {rec['pid']}, was pid {old}" in flat(done.stdout)
    assert "took restart request" in done.stderr  # progress was shown
    acks = control.read_acks(rig.state_dir)
    assert acks is not None and acks.restart_seq["svc"] == 1


def test_a_daemon_that_does_not_acknowledge_is_reported_in_one_sentence(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig.write_config(StandinTarget())
    loaded = rig.load()
    rig.state_dir.mkdir(mode=0o700, exist_ok=True)
    (rig.state_dir / "daemon.pid").write_text(str(os.getpid()))  # "a daemon" that never reads its control file
    monkeypatch.setattr(defaults, "CONTROL_ACK_TIMEOUT_S", 0.5)
    req = relaunch.ask_daemon(loaded, "svc")
    assert req is not None
    said: list[str] = []
    outcome = relaunch.await_daemon_restart(loaded, "svc", req, said.append)
    assert not outcome.ok
    assert outcome.detail.startswith(f"the clawmedic daemon (pid {os.getpid()}) did not take the restart request")
    assert "\n" not in outcome.detail


def test_fix_restart_without_a_daemon_relaunches_and_a_later_daemon_adopts(
    rig: Rig, daemons: Daemons, home: Path
) -> None:
    target = StandinTarget(args=["--print-env", "CLAWMEDIC_TARGET"])
    rig.write_config(target)
    first = daemons.start()
    old = wait(lambda: healthy_pid(rig), "healthy under the daemon")
    daemons.stop(first)

    done = fix(home, rig, "restart")
    assert done.returncode == 0, done.stderr + done.stdout
    out = flat(done.stdout)
    assert "no clawmedic daemon is supervising" in out
    assert "clawmedic run --config" in out
    new = record(rig)["pid"]
    assert new != old
    assert not runs_command(old, target.command())  # its own process, stopped
    assert runs_command(new, target.command())  # launched the way the daemon does: same command
    assert identity.has_marker(new, rig.state_dir / "targets" / "svc")  # and the same identity marker
    assert relaunch.live(rig.load(), "svc")
    assert [e["pid"] for e in rig.events("launched") if e.get("by") == "cli"] == [new]

    status = json.loads(fix(home, rig, "status", "--json").stdout)
    assert status["steps"][0]["status"] == "failed"
    assert "no clawmedic daemon is supervising (the last one stopped at" in status["steps"][0]["detail"]

    started = time.time()
    daemons.start()
    wait(lambda: rig.events("adopted", since=started), "the daemon to adopt the relaunched process")
    assert [e["pid"] for e in rig.events("adopted", since=started)] == [new]
    wait(lambda: healthy_pid(rig, started) == new, "healthy with the adopted pid")
    assert rig.launched_pids(since=started) == []  # no second launch


def test_fix_restart_without_a_daemon_never_stops_a_process_it_did_not_start(
    rig: Rig, home: Path, tmp_path: Path
) -> None:
    port = free_port()
    rig.write_config(StandinTarget(port=port))
    foreign_cmd = standin_command(port, "--tag", "foreign")
    foreign = subprocess.Popen(foreign_cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        wait(lambda: relaunch.live(rig.load(), "svc"), "the foreign stand-in to listen")
        done = fix(home, rig, "restart")
        assert done.returncode == defaults.EXIT_FAILURE
        assert f"port {port} is held by pid {foreign.pid}" in flat(done.stdout)
        assert foreign.poll() is None  # untouched
        assert record(rig) == {}  # and nothing was launched beside it
    finally:
        foreign.kill()
        foreign.wait()


def test_fix_restart_without_a_daemon_finds_its_own_process_by_marker_when_the_record_is_lost(
    rig: Rig, home: Path
) -> None:
    target = StandinTarget()
    rig.write_config(target)
    assert fix(home, rig, "restart").returncode == 0
    first = record(rig)["pid"]
    (rig.state_dir / "targets" / "svc" / "process.json").unlink()  # the record is gone; the marker is not

    done = fix(home, rig, "restart")
    assert done.returncode == 0, done.stderr + done.stdout
    assert f"stopping svc's own process, pid {first}" in flat(done.stderr)
    second = record(rig)["pid"]
    assert second != first
    assert not runs_command(first, target.command())
    assert runs_command(second, target.command())


def test_fix_restart_written_just_before_the_daemon_restarts_is_done_by_the_next_daemon(
    rig: Rig, daemons: Daemons, home: Path
) -> None:
    target = StandinTarget()
    rig.write_config(target)
    first = daemons.start()
    old = wait(lambda: healthy_pid(rig), "healthy")
    os.kill(first.pid, signal.SIGSTOP)  # hung: it can no longer take the request
    command = subprocess.Popen(
        [CLAWMEDIC, "fix", "restart", "--config", str(rig.config_path)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(home),
        cwd=home,
    )
    try:
        wait(lambda: control.read_control(rig.state_dir).restart_seq.get("svc") == 1, "the request written")
        first.kill()  # the daemon crashes before it read the request
        first.wait()
        second = daemons.start()  # a service manager starts it again
        out, err = command.communicate(timeout=60)
    finally:
        if command.poll() is None:
            command.kill()
            command.wait()
    assert command.returncode == 0, out + err
    assert f"the clawmedic daemon restarted (now pid {second.pid})" in flat(err)
    new = record(rig)["pid"]
    assert new != old
    assert f"restarted and is healthy: new pid {new}, was pid {old}" in flat(out)
    assert not runs_command(old, target.command())
