"""systemd's notify protocol from a real `clawmedic run`: a Unix datagram socket stands for systemd as NOTIFY_SOCKET
and receives READY=1, periodic WATCHDOG=1 and STOPPING=1; the supervised child does not inherit the socket.

Also the child watcher: managed children's exits come through pidfds, not a thread per child.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from clawmedic.process.launcher import use_pidfd_child_watcher
from clawmedic.sdnotify import SystemdNotifier
from tests.helpers.rig import Rig, StandinTarget
from tests.integration.test_cli import CLAWMEDIC, cli_env


def _receive(sock: socket.socket, until: float) -> list[str]:
    got: list[str] = []
    sock.settimeout(0.2)
    while time.monotonic() < until:
        try:
            got.append(sock.recv(4096).decode())
        except TimeoutError:
            continue
    return got


@pytest.mark.timeout(60)
def test_a_real_daemon_says_ready_then_watchdog_then_stopping(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    config = str(rig.write_config(StandinTarget(args=["--print-env", "NOTIFY_SOCKET"])))
    address = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(address))
    env = cli_env(home) | {"NOTIFY_SOCKET": str(address), "WATCHDOG_USEC": "1000000"}  # 1 s: a ping every 0.5 s
    log = (tmp_path / "daemon.log").open("wb")
    daemon = subprocess.Popen([CLAWMEDIC, "run", "--config", config], stdout=log, stderr=log, env=env, cwd=home)
    try:
        got = _receive(sock, time.monotonic() + 8)
        assert daemon.poll() is None, (tmp_path / "daemon.log").read_text()
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
        got += _receive(sock, time.monotonic() + 0.5)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        log.close()
        sock.close()
        rig.cleanup()
    assert got, "nothing reached NOTIFY_SOCKET"
    assert got[0].startswith("READY=1") and f"MAINPID={daemon.pid}" in got[0]
    assert got.count("WATCHDOG=1") >= 5  # every ~0.5 s over ~8 s, from the daemon's own loop
    assert got[-1] == "STOPPING=1"
    output = next(rig.state_dir.rglob("output.log")).read_text()
    assert re.search(r"^env NOTIFY_SOCKET: *$", output, re.M), output  # printed empty: not inherited


def test_no_notify_socket_means_no_notifier_and_an_abstract_address_is_understood() -> None:
    assert SystemdNotifier.from_env({}) is None
    env = {"NOTIFY_SOCKET": "@/org/x", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}
    n = SystemdNotifier.from_env(env)
    assert n is not None and n.address == "\0/org/x" and n.interval_s == 15.0
    assert env == {}  # taken out of the environment: children do not inherit it
    other = SystemdNotifier.from_env({"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"})
    assert other is not None and other.interval_s is None  # the watchdog is another process's


def test_children_exits_come_through_pidfds_not_a_thread_each() -> None:
    children = 30

    async def scenario() -> tuple[bool, int, list[int]]:
        used = use_pidfd_child_watcher(asyncio.get_running_loop())
        before = threading.active_count()
        procs = [await asyncio.create_subprocess_exec("sleep", "60") for _ in range(children)]
        try:
            during = threading.active_count() - before
        finally:
            for p in procs:
                p.send_signal(signal.SIGKILL)
            codes = [await asyncio.wait_for(p.wait(), 10) for p in procs]
        return used, during, codes

    used, extra_threads, codes = asyncio.run(scenario())
    assert used  # Linux >= 5.3 on Python 3.11 (CI and this machine)
    assert extra_threads < children // 2
    assert codes == [-signal.SIGKILL] * children  # every exit was seen
