"""End-to-end: the doctor on the real gateway — each fault injected for real, diagnosed, repaired, verified."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from clawmedic import deps
from clawmedic.process import inspect
from clawmedic.sandbox import gateway as gw
from clawmedic.sandbox.install import Install
from clawmedic.store.incidents import IncidentStore
from tests.e2e.conftest import Daemon, _kill_tree, free_of

pytestmark = [pytest.mark.gateway, pytest.mark.slow, pytest.mark.timeout(600)]


def _incident(sb: gw.Sandbox, incident_id: int) -> dict[str, Any]:
    store = IncidentStore(sb.state_dir / "incidents.sqlite")
    try:
        inc = store.get(incident_id)
        assert inc is not None
        return inc.to_dict()
    finally:
        store.close()


def _rules_and_remedies(inc: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    rules = [f["rule"] for e in inc["timeline"] if e["kind"] == "diagnosis" for f in e["detail"]["findings"]]
    remedies = [e["detail"] for e in inc["timeline"] if e["kind"] == "remedy"]
    return rules, remedies


def test_corrupted_state_database_is_moved_aside(daemon: Daemon, sandbox: gw.Sandbox) -> None:
    daemon.start()
    daemon.wait_healthy()
    pid = daemon.pid()
    db = sandbox.home / ".openclaw" / "state" / "openclaw.sqlite"
    os.kill(pid, signal.SIGKILL)
    assert free_of(pid)
    t_fault = time.time()
    db.write_bytes(b"this is not a database" * 100)
    esc = daemon.wait_event(lambda e: e["kind"] == "escalated", 180, after=t_fault)
    assert esc["cause"] == "fatal_config"
    daemon.wait_event(lambda e: e["kind"] == "incident_closed" and e["outcome"] == "recovered", 240, after=t_fault)
    assert gw.health(sandbox.port)
    rules, remedies = _rules_and_remedies(_incident(sandbox, esc["incident"]))
    assert "state-db-corrupt" in rules
    assert any(r["remedy"] == "move_aside_state_db" and r["status"] == "ok" for r in remedies)
    kept = list(db.parent.glob("openclaw.sqlite.broken-*"))
    assert kept and b"not a database" in kept[0].read_bytes(), "the corrupt database is kept, not deleted"


def test_duplicate_instance_on_the_same_state_is_stopped(daemon: Daemon, sandbox: gw.Sandbox, tmp_path: Path) -> None:
    rogue_port = gw.free_port()
    env = {
        **os.environ,
        "HOME": str(sandbox.home),
        "OPENCLAW_SUPERVISOR_MODE": "external",
        "OPENCLAW_GATEWAY_TOKEN": sandbox.token,
    }
    cfg = json.loads(sandbox.config_path.read_text().split("command = ", 1)[1].split("\n", 1)[0])
    rogue_cmd = [*cfg[:2], "gateway", "run", "--bind", "loopback", "--port", str(rogue_port)]
    with (tmp_path / "rogue.log").open("ab") as out:
        rogue = subprocess.Popen(rogue_cmd, env=env, stdout=out, stderr=out, start_new_session=True)
    try:
        gw.wait_healthy(rogue_port, pid=rogue.pid)
        daemon.start()  # its gateway meets the rogue's lock on the shared state: exit 78, contention
        esc = daemon.wait_event(lambda e: e["kind"] == "escalated", 180)
        daemon.wait_event(lambda e: e["kind"] == "incident_closed" and e["outcome"] == "recovered", 240)
        assert gw.health(sandbox.port)
        assert rogue.wait(30) is not None, "the duplicate was stopped"
        rules, remedies = _rules_and_remedies(_incident(sandbox, esc["incident"]))
        assert "duplicate-instance" in rules
        assert any(r["remedy"] == "stop_stale_gateway" and r["params"]["pid"] == rogue.pid for r in remedies)
    finally:
        _kill_tree(rogue.pid)
        rogue.wait(10)


@pytest.fixture
def private_install(install: Install, tmp_path: Path) -> Install:
    root = tmp_path / "openclaw-install"
    deps.link_tree(install.root, root)
    return Install(
        root,
        root / install.node.relative_to(install.root),
        root / install.openclaw_entry.relative_to(install.root),
        install.node_version,
        install.openclaw_version,
    )


def test_missing_dependency_without_a_pristine_copy_is_reinstalled(
    install: Install, private_install: Install, tmp_path: Path
) -> None:
    """No manifest yet (the daemon never saw it healthy long enough): the doctor falls back to npm."""
    sb = gw.create(tmp_path / "sb", private_install, limits={"probation_s": 3.0, "known_good_after_s": 9999.0})
    d = Daemon(sb, tmp_path / "daemon.log")
    ws = private_install.node_modules / "ws"
    ws.rename(tmp_path / "ws-wiped")
    try:
        d.start()
        esc = d.wait_event(lambda e: e["kind"] == "escalated", 180)
        assert esc["cause"] == "fatal_config"
        d.wait_event(lambda e: e["kind"] == "incident_closed" and e["outcome"] == "recovered", 300)
        assert gw.health(sb.port)
        assert (ws / "package.json").exists()
        rules, remedies = _rules_and_remedies(_incident(sb, esc["incident"]))
        assert "missing-dependency" in rules
        assert any(r["remedy"] == "restore_deps" and r["status"] == "ok" for r in remedies)
        learned = json.loads(d.cli("learnings", "--json").stdout)
        assert any("restore_deps" in item["remedies"] and item["successes"] == 1 for item in learned)
    finally:
        d.stop()
        handle = sb.launcher.adopt()
        if handle is not None:
            _kill_tree(handle.pid)
        for pid in {*gw.pids_using(sb.root), *gw.pids_using(private_install.root)}:
            _kill_tree(pid)


def test_diagnose_is_read_only_and_names_a_latent_fault(daemon: Daemon, sandbox: gw.Sandbox) -> None:
    daemon.start()
    daemon.wait_healthy()
    sandbox.openclaw_json.write_text(sandbox.openclaw_json.read_text() + ",,,{{")
    before = sandbox.openclaw_json.read_bytes()
    r = daemon.cli("diagnose", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert "config-invalid" in [f["rule"] for f in out["findings"]]
    assert sandbox.openclaw_json.read_bytes() == before, "diagnose changes nothing"
    assert gw.health(sandbox.port)


def _gateway_outside_clawmedic(sb: gw.Sandbox, install: Install, port: int, log: Path) -> subprocess.Popen[bytes]:
    """A gateway of this very target (same HOME) started by hand, as a user or an old service unit would."""
    env = {
        **os.environ,
        "HOME": str(sb.home),
        "OPENCLAW_SUPERVISOR_MODE": "external",
        "OPENCLAW_GATEWAY_TOKEN": sb.token,
    }
    cmd = install.command("gateway", "run", "--bind", "loopback", "--port", str(port))
    with log.open("ab") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=out, start_new_session=True)


def test_stale_gateway_on_the_port_is_stopped_and_ours_starts(
    daemon: Daemon, sandbox: gw.Sandbox, install: Install, tmp_path: Path
) -> None:
    stale = _gateway_outside_clawmedic(sandbox, install, sandbox.port, tmp_path / "stale.log")
    try:
        gw.wait_healthy(sandbox.port, pid=stale.pid)
        daemon.start()  # the preflight finds the port taken by a gateway clawmedic did not start
        esc = daemon.wait_event(lambda e: e["kind"] == "escalated", 180)
        assert esc["cause"] == "port_in_use"
        daemon.wait_event(lambda e: e["kind"] == "incident_closed" and e["outcome"] == "recovered", 240)
        assert stale.wait(30) is not None, "the stale gateway was stopped"
        ours = daemon.pid()
        owner = inspect.port_owner(sandbox.port)
        assert owner is not None and owner.pid in inspect.tree_pids(ours), "the port is now held by our gateway"
        assert gw.health(sandbox.port)
        rules, remedies = _rules_and_remedies(_incident(sandbox, esc["incident"]))
        assert "port-taken-by-stale-gateway" in rules
        assert "port-taken-by-foreign-process" not in rules, "our own target's gateway is not a foreign process"
        assert [(r["remedy"], r["params"], r["status"]) for r in remedies] == [
            ("stop_stale_gateway", {"pid": stale.pid}, "ok")
        ]
    finally:
        _kill_tree(stale.pid)
        stale.wait(10)
