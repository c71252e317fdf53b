"""Issue 10 §3, "daemon restarts mid-incident": what one daemon decided holds for the next one.

A real `clawmedic run` supervises a crash-looping stand-in until it gives up and a loopback receiver has heard so;
the daemon is then SIGKILLed (a crash, `systemctl restart`, a reboot) and started again. The new daemon must stay
given up (no relaunch, no flapping), keep the same open incident (no second one), and tell nobody again. Cheaper
in-process runs cover the rest: a relaunch after a restart says so, and an incident the previous daemon left open
without a record is closed with a clear outcome. Stand-in children only (no gateway), loopback only, every process
ended by its PID.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from clawmedic.config import load_config
from clawmedic.daemon import events_path, incidents_path
from clawmedic.doctor import RecordOnlyDoctor
from clawmedic.knowngood_client import KnownGoodClient
from clawmedic.notify import Outbox, queue_path
from clawmedic.probes import Prober
from clawmedic.store.events import EventLog
from clawmedic.store.incidents import IncidentStore
from clawmedic.supervisor import Context, TargetSupervisor
from clawmedic.targets.openclaw import Validation
from tests.helpers.receivers import HttpReceiver
from tests.helpers.rig import Rig, StandinTarget, free_port, holds

pytestmark = pytest.mark.timeout(90)


def queued(rig: Rig, status: str | None = None) -> list[tuple[str, str]]:
    """The notification queue's rows as (key, status): what the daemons decided to tell."""
    outbox = Outbox(queue_path(rig.state_dir))
    try:
        return [(q.key, q.status) for q in outbox.all(status)]
    finally:
        outbox.close()


def carried_path(target_dir: Path) -> Path:
    return target_dir / "ladder.json"  # store/carried.py: what a daemon restart carries over


def _clawmedic() -> str:
    beside = Path(sys.executable).parent / "clawmedic"
    found = str(beside) if beside.exists() else shutil.which("clawmedic")
    assert found, "the clawmedic console script is not installed (pip install -e .)"
    return found


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    try:
        yield r
    finally:
        r.cleanup()


class Daemons:
    """`clawmedic run` processes of one test, each ended by its PID."""

    def __init__(self, rig: Rig) -> None:
        self.rig = rig
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        home = self.rig.tmp_path / "home"
        home.mkdir(exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k != "CLAWMEDIC_CONFIG"}
        env.update(HOME=str(home), XDG_STATE_HOME=str(home / "state"), XDG_CONFIG_HOME=str(home / "config"))
        log = (self.rig.tmp_path / f"daemon{len(self.started)}.log").open("wb")
        p = subprocess.Popen(
            [_clawmedic(), "run", "--json-logs", "--config", str(self.rig.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=env,
            cwd=home,
        )
        log.close()
        self.started.append(p)
        return p

    def wait(self, predicate: Callable[[], object], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            last = self.started[-1]
            assert last.poll() is None, f"the daemon exited ({last.returncode}) while waiting for {what}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}\n{self.rig.describe()}"
            time.sleep(0.05)

    def stop_all(self) -> None:
        for p in self.started:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)


@pytest.fixture
def daemons(rig: Rig) -> Iterator[Daemons]:
    d = Daemons(rig)
    try:
        yield d
    finally:
        d.stop_all()


def test_a_sigkilled_daemon_that_had_given_up_stays_given_up_with_the_same_incident_and_tells_nobody_again(
    rig: Rig, daemons: Daemons
) -> None:
    crash = rig.tmp_path / "crash"
    crash.write_text("TypeError: Cannot read properties of undefined (reading 'gateway')\n")
    with HttpReceiver() as hook:
        rig.write_config(
            StandinTarget(args=["--crash-file", str(crash)]),
            daemon={"notify": {"urls": [hook.url("/hook")], "group_wait_s": 0.0, "retry_initial_s": 0.3}},
        )
        first = daemons.start()
        daemons.wait(lambda: rig.target_status().get("state") == "gave_up", 40, "gave_up")
        daemons.wait(lambda: any("gave up" in m.text for m in hook.items()), 20, "the gave_up message")
        daemons.wait(lambda: not queued(rig, "pending"), 30, "every message delivered")  # none left to retry
        told, rows = hook.items(), queued(rig)
        [incident] = rig.incidents()
        assert incident.status == "gave_up"
        launches = len(rig.launched_pids())

        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        restarted_at = time.time()
        second = daemons.start()
        daemons.wait(
            lambda: rig.status().get("daemon", {}).get("pid") == second.pid and rig.target_status().get("state"),
            20,
            "the second daemon's status",
        )
        asyncio.run(holds(lambda: rig.target_status().get("state") == "gave_up", 3.0, what="still gave_up"))
        carried = [e for e in rig.events("carried_over") if e["ts"] >= restarted_at]
        assert [(e["state"], e["incident"]) for e in carried] == [("gave_up", incident.id)]
        assert rig.target_status()["incident"] == incident.id
        assert rig.target_status()["next_retry_at"] is not None  # the slow retry is still on its schedule
        assert len(rig.launched_pids()) == launches  # not relaunched: no flapping, no second crash loop
        assert [i.id for i in rig.incidents()] == [incident.id]  # no second incident
        assert rig.incidents()[0].status == "gave_up"
        assert not rig.events("incident_opened", since=restarted_at)
        assert not rig.events("escalated", since=restarted_at)
        assert len(hook.items()) == len(told)  # nobody is told again
        assert queued(rig) == rows  # not even queued

        # A human fixes it and resumes: the recovery is credited to that same incident.
        crash.unlink()
        resumed_at = time.time()
        assert (
            subprocess.run(
                [_clawmedic(), "resume", "--config", str(rig.config_path)],
                capture_output=True,
                env={**os.environ, "HOME": str(rig.tmp_path / "home")},
                timeout=60,
                check=False,
            ).returncode
            == 0
        )
        daemons.wait(lambda: rig.events("incident_closed", since=resumed_at), 30, "the incident closing")
        [closed] = rig.incidents()
        assert (closed.id, closed.status) == (incident.id, "recovered")


def test_a_relaunch_after_a_daemon_restart_says_so(rig: Rig) -> None:
    rig.write_config(StandinTarget())

    async def scenario() -> dict[str, object]:
        async with rig.daemon(cleanup=False):  # the child outlives the daemon, as with stop_targets_on_exit off
            await rig.wait_state("healthy")
        [pid] = rig.launched_pids()
        os.kill(pid, signal.SIGKILL)  # the child dies while no daemon watches
        restarted_at = time.time()
        async with rig.daemon():
            launched = await rig.wait_event("launched", since=restarted_at)
            await rig.wait_state("healthy", since=restarted_at)
        return launched

    launched = asyncio.run(scenario())
    assert launched["reason"] == "relaunch after daemon restart (it was healthy)"
    assert next(e["reason"] for e in rig.events("launched")) == "initial start"


def test_an_incident_left_open_without_a_record_is_closed_as_abandoned_and_a_damaged_record_is_kept(rig: Rig) -> None:
    crash = rig.tmp_path / "crash"
    crash.write_text("boom\n")
    rig.write_config(StandinTarget(args=["--crash-file", str(crash)]))
    record = carried_path(rig.state_dir / "targets" / "svc")

    async def scenario() -> None:
        async with rig.daemon():
            await rig.wait_event("gave_up", timeout=30)
        record.write_text("{ not json")
        crash.unlink()
        restarted_at = time.time()
        async with rig.daemon():
            await rig.wait_state("healthy", since=restarted_at, timeout=30)

    asyncio.run(scenario())
    [old] = rig.incidents()
    assert old.status == "abandoned"
    assert old.closed_at is not None
    assert any(e.kind == "outcome" and e.detail["outcome"] == "abandoned" for e in old.timeline)
    kept = list(record.parent.glob("ladder.json.corrupt-*"))
    assert len(kept) == 1
    assert kept[0].read_text() == "{ not json"
    assert json.loads(record.read_text())["state"] == "healthy"


def _openclaw_supervisor(tmp_path: Path) -> tuple[TargetSupervisor, IncidentStore]:
    """A supervisor of an openclaw target over real stores in `tmp_path/state` (nothing launched, nothing probed)."""
    config = tmp_path / "clawmedic.toml"
    config.write_text(
        '[daemon]\nstate_dir = "state"\n[daemon.doctor.llm]\nbackend = "off"\n'
        f'[targets.gw]\nkind = "openclaw"\nport = {free_port()}\nopenclaw_home = "{tmp_path / "home"}"\n'
        f'[targets.gw.start]\ncommand = ["{sys.executable}", "gateway"]\n'
    )
    loaded = load_config(config)
    incidents = IncidentStore(incidents_path(loaded.state_dir), loaded.redactor)
    ctx = Context(
        loaded,
        EventLog(events_path(loaded.state_dir), loaded.redactor),
        incidents,
        Prober(),
        RecordOnlyDoctor(),
        KnownGoodClient(loaded.state_dir),
    )
    return TargetSupervisor("gw", ctx), incidents


def test_the_same_invalid_file_does_not_open_a_second_latent_fault_incident_after_a_restart(tmp_path: Path) -> None:
    invalid = Validation(False, "schema", ["gateway.port: expected a number"], "digest-a")
    first, store = _openclaw_supervisor(tmp_path)
    first._carry_over()
    first._on_config_change(invalid, initial=True)
    opened = first.latent_incident
    assert opened is not None
    store.close()

    second, store = _openclaw_supervisor(tmp_path)  # the daemon restarted; the file is unchanged
    second._carry_over()
    second._on_config_change(invalid, initial=True)
    assert second.latent_incident == opened
    assert [(i.id, i.closed_at) for i in store.list(target="gw")] == [(opened, None)]
    store.close()

    third, store = _openclaw_supervisor(tmp_path)  # restarted again, and the file is now broken differently
    third._carry_over()
    third._on_config_change(Validation(False, "schema", ["other"], "digest-b"), initial=True)
    assert third.latent_incident not in (None, opened)
    old = store.get(opened)
    assert old is not None and old.status == "superseded" and old.closed_at is not None
    store.close()
