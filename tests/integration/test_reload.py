"""Reloading clawmedic's own config under a real `clawmedic run` (issue 14, operator controls).

Stand-in services (tests/helpers/standin.py) on loopback, each test with its own HOME and state folder. What is
asserted is what the daemon recorded (events.jsonl, status.json, control-ack.json) and which processes run: an
unchanged target keeps its PID, an added one is supervised, a removed one is let go, a changed one is adopted
again (or relaunched when its command changed), and an invalid new config leaves the old one running.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from tests.helpers.rig import Rig, StandinTarget, kill_pids, render_config, runs_command
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
        r.cleanup()  # every stand-in any config of the test named, by PID


@pytest.fixture
def daemon(rig: Rig, home: Path, tmp_path: Path) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        with (tmp_path / "daemon.log").open("ab") as log:
            proc = subprocess.Popen(
                [CLAWMEDIC, "run", "--json-logs", "--config", str(rig.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=cli_env(home),
                cwd=home,
            )
        procs.append(proc)
        return proc

    try:
        yield start
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
    assert not rig.events("internal_error", target=None), rig.describe()  # no supervisor task crashed meanwhile
    assert all(p.returncode == 0 for p in procs)


def wait(predicate: Callable[[], T | None], what: str, rig: Rig, timeout: float = 30.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}\n{rig.describe()}"
        time.sleep(0.05)


def healthy_pid(rig: Rig, target: str = "svc") -> int | None:
    st = rig.target_status(target)
    return int(st["pid"]) if st.get("state") == "healthy" and st.get("pid") else None


def write(rig: Rig, *targets: StandinTarget, quietly: bool = False) -> None:
    """Write the config for `targets`; every target ever named stays on `rig.targets` for the cleanup.

    `quietly`: keep the file's inode, size and mtime, so only a signal or `clawmedic reload` can make the daemon
    notice (not its watch on the file)."""
    text = render_config(targets, state_dir=rig.state_dir)
    path = rig.config_path
    if quietly:
        st = path.stat()
        assert len(text) <= st.st_size, "the first config must be padded to hold the second"
        text += "#" * (st.st_size - len(text) - 1) + "\n"
        with path.open("r+") as f:  # in place: the same inode
            f.write(text)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    else:
        path.write_text(text)
    rig.targets += [t for t in targets if t not in rig.targets]


def reloaded(rig: Rig, since: float, why: str | None = None) -> dict[str, object] | None:
    found = [e for e in rig.events("config_reloaded", target=None, since=since) if why is None or e["why"] == why]
    return found[-1] if found else None


def test_a_target_added_and_sighup_is_supervised_and_the_other_keeps_its_pid(
    rig: Rig, daemon: Callable[[], subprocess.Popen[bytes]]
) -> None:
    svc, extra = StandinTarget("svc"), StandinTarget("extra")
    rig.config_path.write_text(render_config([svc], state_dir=rig.state_dir) + "#" * 2000 + "\n")
    rig.targets = [svc]
    proc = daemon()
    pid = wait(lambda: healthy_pid(rig), "svc healthy", rig)
    since = time.time()
    write(rig, svc, extra, quietly=True)
    time.sleep(1.5)  # three passes of the control loop: the file watch sees nothing
    assert reloaded(rig, since) is None
    proc.send_signal(signal.SIGHUP)

    event = wait(lambda: reloaded(rig, since, "SIGHUP"), "a reload on SIGHUP", rig)
    assert event["added"] == ["extra"] and event["changed"] == [] and event["removed"] == []
    new = wait(lambda: healthy_pid(rig, "extra"), "extra healthy", rig)
    assert runs_command(new, extra.command())
    assert healthy_pid(rig) == pid and runs_command(pid, svc.command())
    assert rig.launched_pids("svc") == [pid]  # launched once, at start
    assert not rig.events("adopted", "svc")  # and never handed to another supervisor
    assert proc.poll() is None


def test_an_invalid_config_keeps_the_old_one_running_and_reload_says_why(
    rig: Rig, daemon: Callable[[], subprocess.Popen[bytes]], home: Path
) -> None:
    svc = StandinTarget("svc")
    write(rig, svc)
    proc = daemon()
    pid = wait(lambda: healthy_pid(rig), "svc healthy", rig)
    good = rig.config_path.read_text()
    rig.config_path.write_text(good.replace('"interval_s" = 0.3', '"interval_s" = "often"', 1))

    done = subprocess.run(
        [CLAWMEDIC, "reload", "--config", str(rig.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env(home),
        cwd=home,
        check=False,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    said = " ".join(done.stderr.split())
    assert "targets.svc.liveness.interval_s" in said and "previous one keeps running" in said
    assert "Traceback" not in done.stderr
    reload_status = rig.status()["daemon"]["reload"]
    assert reload_status["ok"] is False
    assert "targets.svc.liveness.interval_s" in reload_status["message"]
    assert reload_status["message"].count(". ") == 0  # one sentence
    shown = subprocess.run(
        [CLAWMEDIC, "status", "--config", str(rig.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env(home),
        cwd=home,
        check=False,
    )
    # `status` itself needs a valid config to find the state folder: show it through the good one
    assert shown.returncode == 2
    rig.config_path.with_name("good.toml").write_text(good)
    shown = subprocess.run(
        [CLAWMEDIC, "status", "--config", str(rig.config_path.with_name("good.toml"))],
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env(home),
        cwd=home,
        check=False,
    )
    assert "previous one keeps running" in " ".join(shown.stdout.split()), shown.stdout
    assert healthy_pid(rig) == pid and rig.launched_pids("svc") == [pid]
    assert proc.poll() is None


def test_a_removed_target_is_let_go_and_its_process_left_running(
    rig: Rig, daemon: Callable[[], subprocess.Popen[bytes]]
) -> None:
    svc, gone = StandinTarget("svc"), StandinTarget("gone")
    write(rig, svc, gone)
    daemon()
    pid = wait(lambda: healthy_pid(rig), "svc healthy", rig)
    gone_pid = wait(lambda: healthy_pid(rig, "gone"), "gone healthy", rig)
    since = time.time()
    write(rig, svc)  # the file watch picks it up

    event = wait(lambda: reloaded(rig, since), "a reload on the file change", rig)
    assert event["removed"] == ["gone"] and event["why"] == "the config file changed"
    wait(lambda: "gone" not in rig.status().get("targets", {}), "gone out of the status", rig)
    assert runs_command(gone_pid, gone.command())  # stop_targets_on_exit is false: left running
    kill_pids([gone_pid], [gone.command()])
    time.sleep(1.0)  # no supervisor is left to notice, let alone relaunch it
    assert rig.launched_pids("gone") == [gone_pid]
    assert healthy_pid(rig) == pid


def test_a_changed_liveness_interval_adopts_and_does_not_restart(
    rig: Rig, daemon: Callable[[], subprocess.Popen[bytes]]
) -> None:
    svc = StandinTarget("svc")
    write(rig, svc)
    daemon()
    pid = wait(lambda: healthy_pid(rig), "svc healthy", rig)
    since = time.time()
    write(rig, StandinTarget("svc", port=svc.port, liveness={"interval_s": 0.5}))

    event = wait(lambda: reloaded(rig, since), "a reload on the file change", rig)
    assert event["changed"] == ["svc"] and event["relaunched"] == []
    # the new supervisor adopts in its own task, just after `config_reloaded` is written: waited for, not raced
    adopted = wait(lambda: rig.events("adopted", "svc", since=since), "the new supervisor adopting", rig)
    assert [e["pid"] for e in adopted] == [pid]
    wait(lambda: "healthy" in rig.states("svc", since=since), "svc healthy again", rig)
    assert wait(lambda: healthy_pid(rig), "svc healthy in the status", rig) == pid
    assert rig.launched_pids("svc") == [pid]


def test_a_changed_command_restarts_the_target_through_the_ladder(
    rig: Rig, daemon: Callable[[], subprocess.Popen[bytes]]
) -> None:
    svc = StandinTarget("svc")
    write(rig, svc)
    daemon()
    pid = wait(lambda: healthy_pid(rig), "svc healthy", rig)
    since = time.time()
    tagged = StandinTarget("svc", port=svc.port, args=("--tag", "v2"))
    write(rig, tagged)

    event = wait(lambda: reloaded(rig, since), "a reload on the file change", rig)
    assert event["relaunched"] == ["svc"]
    new = wait(lambda: (p := healthy_pid(rig)) != pid and p, "a new healthy pid", rig)
    assert runs_command(new, tagged.command())
    assert not runs_command(pid, svc.command())
    assert rig.events("restart_requested", "svc", since=since)
