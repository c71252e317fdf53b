"""Fixtures for end-to-end tests against the real sandboxed OpenClaw gateway.

Each test gets its own sandbox (own HOME, port, token, state) and a real `clawmedic run` daemon process.
Everything started here is stopped by PID at teardown.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from clawmedic.sandbox import gateway as gw
from clawmedic.sandbox.install import Install, ensure_install
from clawmedic.store.events import read_events
from clawmedic.store.incidents import IncidentStore

CLAWMEDIC = str(Path(sys.executable).parent / "clawmedic")
BOOT_WAIT_S = 180.0  # the gateway boots in 7-25 s; a shared 2-core CI machine can be much slower


@pytest.fixture(scope="session")
def install() -> Install:
    return ensure_install()


def _kill_tree(pid: int) -> None:
    with contextlib.suppress(psutil.Error):
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
        for p in procs:
            with contextlib.suppress(psutil.Error):
                p.send_signal(signal.SIGCONT)
                p.kill()
        psutil.wait_procs(procs, timeout=10)


class Daemon:
    """A real `clawmedic run` process supervising one sandbox."""

    def __init__(self, sb: gw.Sandbox, log: Path) -> None:
        self.sb = sb
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [CLAWMEDIC, "run", "--config", str(self.sb.config_path), "--json-logs"],
                stdout=out,
                stderr=out,
                stdin=subprocess.DEVNULL,
            )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def cli(self, *args: str, timeout: float = 400) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [CLAWMEDIC, *args, "--config", str(self.sb.config_path)], capture_output=True, text=True, timeout=timeout
        )

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        evs = read_events(self.sb.state_dir / "events.jsonl")
        return [e for e in evs if kind is None or e["kind"] == kind]

    def status(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads((self.sb.state_dir / "status.json").read_text())
            target: dict[str, Any] = data["targets"][gw.TARGET]
            return target
        except (OSError, ValueError, KeyError):
            return {}

    def wait_event(self, pred: Callable[[dict[str, Any]], bool], timeout: float, after: float = 0.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in self.events():
                if e["ts"] >= after and pred(e):
                    return e
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"the daemon exited ({self.proc.returncode}):\n{self.log.read_text()[-3000:]}")
            time.sleep(0.1)
        raise AssertionError(
            f"no matching event within {timeout:g} s; events:\n"
            + "\n".join(json.dumps(e)[:300] for e in self.events()[-30:])
        )

    def wait_healthy(self, after: float = 0.0, timeout: float = BOOT_WAIT_S) -> dict[str, Any]:
        """Wait for the target to reach `healthy` (after `after`), with no incident open."""
        return self.wait_event(lambda e: e["kind"] == "state" and e["new"] == "healthy", timeout, after)

    def pid(self) -> int:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pid = self.status().get("pid")
            if pid:
                return int(pid)
            time.sleep(0.1)
        raise AssertionError("the status file names no gateway pid")


def cleanup_sandbox(sb: gw.Sandbox, *roots: Path) -> None:
    """Stop, by PID, the sandbox's gateway and every process running from its folder (or from `roots`)."""
    handle = sb.launcher.adopt()
    if handle is not None:
        _kill_tree(handle.pid)
    for pid in {pid for root in (sb.root, *roots) for pid in gw.pids_using(root)}:
        _kill_tree(pid)


def incident(sb: gw.Sandbox, incident_id: int) -> dict[str, Any]:
    """One incident of the sandbox's daemon, with its timeline, as a dict."""
    store = IncidentStore(sb.state_dir / "incidents.sqlite")
    try:
        inc = store.get(incident_id)
        assert inc is not None
        return inc.to_dict()
    finally:
        store.close()


NO_LLM = {"backend": "off"}  # the embedded model answers in minutes: only the LLM doctor's own tests ask for one
SANDBOX_LIMITS: dict[str, float] = {
    "probation_s": 3.0,
    "stable_reset_s": 5.0,
    "startup_timeout_s": 150.0,
    "known_good_after_s": 2.0,
}


@pytest.fixture
def sandbox(install: Install, tmp_path: Path) -> Iterator[gw.Sandbox]:
    sb = gw.create(tmp_path / "sandbox", install, limits=SANDBOX_LIMITS, llm=NO_LLM)
    try:
        yield sb
    finally:
        cleanup_sandbox(sb)


@pytest.fixture
def daemon(sandbox: gw.Sandbox, tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon(sandbox, tmp_path / "daemon.log")
    try:
        yield d
    finally:
        d.stop()


def is_running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def free_of(pid: int, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_running(pid):
            return True
        time.sleep(0.1)
    return False
