"""Never stop supervising (issue 10, section 3): a full state folder, clawmedic's own databases overwritten with
garbage, an LLM consultation running when the daemon stops, and SIGHUP.

Each test runs a real `clawmedic run` (or, where said, the daemon in-process) over the stand-in service
(tests/helpers/standin.py) on loopback, and asserts on what a user can see from outside: the child process, its
/health answer, status.json, events.jsonl, the notifications a loopback receiver got. The full disk is a real one:
a small tmpfs mounted over the state folder (root only; without root those tests are skipped, said in the reason).
Every process a test starts is ended by its PID; every mount is unmounted.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psutil
import pytest

from clawmedic.daemon import events_path, incidents_path, learnings_path, status_path
from clawmedic.doctor.learnings import LearningStore
from clawmedic.notify import queue_path
from clawmedic.store.events import read_events
from clawmedic.store.incidents import IncidentStore
from tests.helpers.receivers import HttpReceiver
from tests.helpers.rig import Rig, StandinTarget, free_port, kill_pids, render_config, wait_for
from tests.helpers.scripted_llm import ScriptedLLM, Turn

pytestmark = pytest.mark.timeout(120)

T = TypeVar("T")
CLAWMEDIC = str(Path(sys.executable).parent / "clawmedic")
GARBAGE = b"this is not a database, it is garbage \x00\xff" * 200


def poll(
    predicate: Callable[[], T | None], timeout: float, what: str, daemon: subprocess.Popen[bytes] | None = None
) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if daemon is not None and daemon.poll() is not None:
            raise AssertionError(f"the daemon exited ({daemon.returncode}) while waiting for {what}")
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.1)


def pids_running(command: list[str]) -> list[int]:
    out = []
    for p in psutil.process_iter(["cmdline", "status"]):
        with contextlib.suppress(psutil.Error):
            if p.info["cmdline"] == command and p.info["status"] != psutil.STATUS_ZOMBIE:
                out.append(p.pid)
    return out


def serves(target: StandinTarget) -> bool:
    try:
        return httpx.get(f"{target.url}/health", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def status(state: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(status_path(state).read_text())
    except (OSError, ValueError):
        return {}
    return data


def healthy(state: Path) -> bool:
    return bool(status(state).get("targets", {}).get("svc", {}).get("state") == "healthy")


class Run:
    """One real `clawmedic run` of a config; stopped (and its targets' children killed) by PID at the end."""

    def __init__(self, tmp_path: Path, config: Path, commands: list[list[str]]) -> None:
        self.tmp_path = tmp_path
        self.config = config
        self.commands = commands
        self.log = tmp_path / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [CLAWMEDIC, "run", "--json-logs", "--config", str(self.config)],  # one line a record: no wrapping
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        return self.proc

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def cleanup(self) -> None:
        self.stop()
        kill_pids({pid for c in self.commands for pid in pids_running(c)}, self.commands)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@pytest.fixture
def runs() -> Iterator[list[Run]]:
    started: list[Run] = []
    try:
        yield started
    finally:
        for r in started:
            r.cleanup()


# --- a full state folder ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def small_disk(where: Path, size: str = "8m") -> Iterator[Path]:
    """A real, small filesystem (tmpfs) mounted at `where`; unmounted at the end."""
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root; the full-disk tests run as root in CI")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)], check=False)
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (a container without CAP_SYS_ADMIN)")
    try:
        yield where
    finally:
        for _ in range(50):
            if subprocess.run(["umount", str(where)], check=False, capture_output=True).returncode == 0:
                break
            time.sleep(0.1)  # a child just killed may still hold its output log open


def fill(disk: Path) -> Path:
    """Write a file until the disk says ENOSPC; return it (delete it to free the space)."""
    filler = disk / "filler"
    chunk = b"\0" * 65536
    with filler.open("wb", buffering=0) as f:
        while True:
            try:
                f.write(chunk)
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
                break
    for small in (4096, 512, 1):  # the last few blocks too
        with filler.open("ab", buffering=0) as f, contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * small)
    return filler


def disk_config(tmp_path: Path, target: StandinTarget, receiver: HttpReceiver) -> Path:
    config = tmp_path / "clawmedic.toml"
    daemon = {"notify": {"urls": [receiver.url("/hook")], "group_wait_s": 0.0}}
    config.write_text(render_config([target], state_dir=tmp_path / "state", daemon=daemon))
    return config


def messages(receiver: HttpReceiver, title: str) -> list[dict[str, Any]]:
    return [m for m in (r.json() for r in receiver.items()) if title in str(m.get("title", ""))]


def test_a_full_state_folder_does_not_stop_supervision_and_writes_catch_up(tmp_path: Path, runs: list[Run]) -> None:
    target = StandinTarget()
    with HttpReceiver() as receiver, small_disk(tmp_path / "state") as state:
        run = Run(tmp_path, disk_config(tmp_path, target, receiver), [target.command()])
        runs.append(run)
        daemon = run.start()
        try:
            poll(lambda: healthy(state), 30, "healthy", daemon)
            old = status(state)["targets"]["svc"]["pid"]

            filler = fill(state)
            full_at = time.time()
            os.kill(old, signal.SIGKILL)

            # Still supervising from memory: the killed child is relaunched and serves.
            new = poll(lambda: [p for p in pids_running(target.command()) if p != old], 30, "a relaunch", daemon)
            poll(lambda: serves(target), 30, "the relaunched child to serve", daemon)
            # One alert, over the network, though the disk took nothing.
            poll(lambda: messages(receiver, "state folder not writable"), 30, "the full-disk alert", daemon)
            assert status(state)["daemon"]["updated_at"] < full_at + 1, "nothing new could be written"
            time.sleep(5.5)  # a status refresh (every 5 s) while full: still one alert, and the daemon lives
            assert daemon.poll() is None
            assert len(messages(receiver, "state folder not writable")) == 1
            assert "Traceback" not in run.output()

            # Space returns: the status is current again, the events held in memory are written, one "recovered".
            filler.unlink()
            freed_at = time.time()
            poll(lambda: status(state).get("daemon", {}).get("updated_at", 0) > freed_at, 30, "a new status", daemon)
            assert status(state)["targets"]["svc"]["pid"] == new[0]
            poll(lambda: read_events(events_path(state)) and [
                e for e in read_events(events_path(state)) if e["kind"] == "state_writes_recovered"
            ], 40, "state_writes_recovered", daemon)  # fmt: skip
            kinds = [e["kind"] for e in read_events(events_path(state)) if e["ts"] >= full_at - 1]
            assert "state_writes_failing" in kinds
            assert any(e["kind"] == "exited" and e.get("pid") == old for e in read_events(events_path(state)))
            assert any(e["kind"] == "launched" and e.get("pid") == new[0] for e in read_events(events_path(state)))
            poll(lambda: messages(receiver, "state folder writable again"), 30, "the recovery message", daemon)
            assert len(messages(receiver, "state folder not writable")) == 1
        finally:
            assert run.stop() == 0, run.output()[-3000:]
            run.cleanup()
    assert "Traceback" not in run.output(), run.output()[-3000:]


def test_a_daemon_started_on_a_full_state_folder_starts_and_supervises(tmp_path: Path, runs: list[Run]) -> None:
    target = StandinTarget()
    with HttpReceiver() as receiver, small_disk(tmp_path / "state") as state:
        run = Run(tmp_path, disk_config(tmp_path, target, receiver), [target.command()])
        runs.append(run)
        filler = fill(state)
        daemon = run.start()
        try:
            first = poll(lambda: pids_running(target.command()), 30, "the launch", daemon)
            poll(lambda: serves(target), 30, "the child to serve", daemon)
            os.kill(first[0], signal.SIGKILL)
            second = poll(
                lambda: [p for p in pids_running(target.command()) if p != first[0]], 30, "a relaunch", daemon
            )
            poll(lambda: serves(target), 30, "the relaunched child to serve", daemon)
            poll(lambda: messages(receiver, "state folder not writable"), 30, "the full-disk alert", daemon)
            assert daemon.poll() is None

            # Space returns: the stores it could not open at start open now, and the next incident is recorded.
            filler.unlink()
            poll(lambda: healthy(state), 30, "a status written again", daemon)
            poll(lambda: messages(receiver, "state folder writable again"), 40, "the recovery message", daemon)
            os.kill(second[0], signal.SIGKILL)
            poll(
                lambda: [
                    e for e in read_events(events_path(state)) if e["kind"] == "incident_closed" and e["incident"] > 0
                ],
                30,
                "an incident recorded after the disk recovered",
                daemon,
            )
        finally:
            assert run.stop() == 0, run.output()[-3000:]
            run.cleanup()
        store = IncidentStore(incidents_path(state))  # before the small disk goes away
        try:
            recorded = [(i.status, i.restarts) for i in store.list()]
        finally:
            store.close()
    assert recorded == [("recovered", 1)], "incidents.sqlite, unopenable at start, took the later incident"
    assert "Traceback" not in run.output(), run.output()[-3000:]


# --- clawmedic's own databases corrupt ---------------------------------------------------------------------------


def test_garbage_databases_are_moved_aside_and_fresh_ones_work(tmp_path: Path, runs: list[Run]) -> None:
    target = StandinTarget()
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    broken = [incidents_path(state), learnings_path(state), queue_path(state)]
    for db in broken:
        db.write_bytes(GARBAGE)
        db.chmod(0o600)
    incidents_path(state).with_name("incidents.sqlite-wal").write_bytes(GARBAGE[:100])
    with HttpReceiver() as receiver:
        run = Run(tmp_path, disk_config(tmp_path, target, receiver), [target.command()])
        runs.append(run)
        daemon = run.start()
        try:
            poll(lambda: healthy(state), 30, "healthy", daemon)
            old = status(state)["targets"]["svc"]["pid"]
            os.kill(old, signal.SIGKILL)  # an incident goes into the fresh incidents.sqlite
            poll(
                lambda: [e for e in read_events(events_path(state)) if e["kind"] == "incident_closed"],
                30,
                "the incident to close",
                daemon,
            )
        finally:
            assert run.stop() == 0, run.output()[-3000:]
            run.cleanup()
    moved = [e for e in read_events(events_path(state)) if e["kind"] == "state_db_moved_aside"]
    assert sorted(Path(e["path"]).name for e in moved) == sorted(p.name for p in broken)
    for db in broken:
        aside = sorted(state.glob(f"{db.name}.broken-*"))
        assert [p for p in aside if not p.name.endswith(("-wal", "-shm"))], f"{db.name} was not kept"
        assert aside[0].read_bytes() == GARBAGE, "the broken file is kept as it was"
        assert oct(aside[0].stat().st_mode & 0o777) == "0o600"
        assert f"{db.name} is unreadable" in run.output()
    assert any(p.name.endswith("-wal") for p in state.glob("incidents.sqlite.broken-*")), "its -wal went with it"
    store = IncidentStore(incidents_path(state))
    try:
        incidents = store.list()
    finally:
        store.close()
    assert len(incidents) == 1 and incidents[0].status == "recovered"
    for db, table in ((learnings_path(state), "learnings"), (queue_path(state), "outbox")):
        with contextlib.closing(sqlite3.connect(db)) as conn:
            assert conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone() is not None  # noqa: S608
    assert "Traceback" not in run.output()


def test_a_store_damaged_while_open_is_moved_aside_and_the_write_goes_to_a_fresh_one(tmp_path: Path) -> None:
    path = tmp_path / "learnings.sqlite"
    moved: list[Any] = []
    store = LearningStore(path, on_moved=moved.append)
    try:
        store.record("sig", ["retry_start"], True, 1, "first")
        with path.open("r+b") as f:
            f.write(GARBAGE)  # damaged behind the daemon's back, while its connection is open
        store.record("sig", ["restore_known_good"], True, 2, "second")
        kept = store.all()
    finally:
        store.close()
    assert [k.summary for k in kept] == ["second"]
    assert len(moved) == 1 and moved[0].moved_to.read_bytes().startswith(GARBAGE)
    assert "file is not a database" in moved[0].error


# --- the LLM doctor's consultation process ------------------------------------------------------------------------


def consultations(config: Path) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if "clawmedic.doctor.llm.run" in cmd and str(config) in cmd:
            out.append(p)
    return out


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_no_consultation_process_outlives_the_daemon(tmp_path: Path, runs: list[Run], how: signal.Signals) -> None:
    crash = tmp_path / "crash"
    crash.write_text("a crash no rule explains\n")
    target = StandinTarget(args=["--crash-file", str(crash)])
    with ScriptedLLM([Turn(text="…", delay_s=300.0)]) as llm:  # a model that never answers in time
        llm_cfg = {"backend": "openai", "model": "scripted", "base_url": llm.url, "time_budget_s": 600.0}
        llm_cfg["request_timeout_s"] = 600.0
        config = tmp_path / "clawmedic.toml"
        config.write_text(render_config([target], state_dir=tmp_path / "state", daemon={"doctor": {"llm": llm_cfg}}))
        run = Run(tmp_path, config, [target.command()])
        runs.append(run)
        daemon = run.start()
        try:
            poll(lambda: llm.requests, 60, "the consultation's first request", daemon)
            children = consultations(config)
            assert len(children) == 1, children
            daemon.send_signal(how)
            daemon.wait(30)
            _gone, alive = psutil.wait_procs(children, timeout=10)
            assert not alive, f"the consultation {alive} outlived the daemon ({how.name})"
            assert consultations(config) == []
        finally:
            for p in consultations(config):  # the safety net, by PID
                with contextlib.suppress(psutil.Error):
                    p.kill()
            run.cleanup()


def test_a_fault_a_rule_explains_never_wakes_the_model(tmp_path: Path) -> None:
    """The start command does not exist: the rule doctor says so; the model is not asked."""
    rig = Rig(tmp_path)
    with ScriptedLLM([Turn(text="should not be asked")]) as llm:
        port = free_port()
        text = render_config([StandinTarget(port=port)], state_dir=tmp_path / "state")
        text = text.replace('"backend" = "off"', f'"backend" = "openai", "model" = "m", "base_url" = "{llm.url}"')
        cmd = json.dumps([str(tmp_path / "no-such-program")])
        text = "\n".join(f'"command" = {cmd}' if line.startswith('"command" =') else line for line in text.splitlines())
        assert '"backend" = "openai"' in text and "no-such-program" in text
        rig.config_path.write_text(text)

        async def scenario() -> None:
            async with rig.daemon():
                await wait_for(
                    lambda: any(e.kind == "verdict" for i in rig.incidents() for e in i.timeline),
                    30,
                    what="the doctor's verdict",
                )

        try:
            asyncio.run(scenario())
        finally:
            rig.cleanup()
    inc = rig.incidents()[0]
    diagnosis = next(e.detail for e in inc.timeline if e.kind == "diagnosis")
    assert [f["rule"] for f in diagnosis["findings"]] == ["start-command-unusable"]
    assert not [e for e in inc.timeline if e.kind.startswith("llm")]
    assert llm.requests == [], "the model was woken for a fault a rule explains"


# --- SIGHUP ---------------------------------------------------------------------------------------------------------


def test_sighup_is_logged_and_the_daemon_carries_on_supervising(tmp_path: Path, runs: list[Run]) -> None:
    target = StandinTarget()
    config = tmp_path / "clawmedic.toml"
    config.write_text(render_config([target], state_dir=tmp_path / "state"))
    state = tmp_path / "state"
    run = Run(tmp_path, config, [target.command()])
    runs.append(run)
    daemon = run.start()
    poll(lambda: healthy(state), 30, "healthy", daemon)
    daemon.send_signal(signal.SIGHUP)
    poll(lambda: "SIGHUP: config reloaded: no target changed." in run.output(), 10, "the SIGHUP line", daemon)
    old = status(state)["targets"]["svc"]["pid"]
    os.kill(old, signal.SIGKILL)
    poll(lambda: [p for p in pids_running(target.command()) if p != old], 30, "a relaunch after SIGHUP", daemon)
    poll(lambda: serves(target), 30, "the relaunched child to serve", daemon)
    assert daemon.poll() is None
    assert run.stop() == 0
