"""systemd's notify protocol from a real `clawmedic run`: a Unix datagram socket stands for systemd as NOTIFY_SOCKET
and receives READY=1, periodic WATCHDOG=1 and STOPPING=1; the supervised child does not inherit the socket.

Also managed children: their exits come through pidfds, not a thread per child, and they outlive the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from clawmedic.process.launcher import Launcher
from clawmedic.sdnotify import SystemdNotifier
from tests.helpers.rig import Rig, StandinTarget, process_alive
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


def test_children_exits_come_through_pidfds_not_a_thread_each(tmp_path: Path) -> None:
    children = 30

    async def scenario() -> tuple[int, list[int | None]]:
        before = threading.active_count()
        handles = [await Launcher(tmp_path / f"t{i}").spawn(["sleep", "60"], {}, None) for i in range(children)]
        try:
            during = threading.active_count() - before
        finally:
            for h in handles:
                h.signal_group(signal.SIGKILL)
            codes = [await asyncio.wait_for(h.wait(), 10) for h in handles]
        return during, codes

    extra_threads, codes = asyncio.run(scenario())
    assert extra_threads == 0  # was one waitpid thread per child (asyncio's threaded child watcher)
    assert codes == [-signal.SIGKILL] * children  # every exit was seen, with its code


def test_a_managed_child_outlives_the_event_loop_that_started_it(tmp_path: Path) -> None:
    """A daemon that exits leaves its gateways running (they are adopted by the next one): nothing tied to the
    loop — a subprocess transport collected after the loop ends — may kill them."""

    async def start() -> int:
        return (await Launcher(tmp_path / "t").spawn(["sleep", "60"], {}, None)).pid

    pid = asyncio.run(start())
    gc.collect()
    try:
        time.sleep(0.2)
        assert process_alive(pid)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
