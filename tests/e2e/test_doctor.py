"""End-to-end: the doctor on the real gateway — each fault injected for real, diagnosed, repaired, verified."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import filelock
import httpx
import pytest

from clawmedic import deps, paths
from clawmedic.process import inspect
from clawmedic.sandbox import gateway as gw
from clawmedic.sandbox.install import Install, fetch_package, node_package_name, registry_url
from tests.e2e.conftest import BOOT_WAIT_S, NO_LLM, Daemon, _kill_tree, cleanup_sandbox, free_of, incident, is_running

pytestmark = [pytest.mark.gateway, pytest.mark.slow, pytest.mark.timeout(600)]


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
    rules, remedies = _rules_and_remedies(incident(sandbox, esc["incident"]))
    assert "state-db-corrupt" in rules
    assert any(r["remedy"] == "move_aside_state_db" and r["status"] == "ok" for r in remedies)
    assert "config-changed" not in rules and all(r["remedy"] != "restore_known_good" for r in remedies), (
        "no change behind this fault: nothing is reverted"
    )
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
        rules, remedies = _rules_and_remedies(incident(sandbox, esc["incident"]))
        assert "duplicate-instance" in rules
        assert any(
            r["remedy"] == "stop_stale_gateway" and {"stopped_pid": rogue.pid} in r["changes"] for r in remedies
        ), "the remedy found the duplicate itself (it takes no pid)"
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
    sb = gw.create(
        tmp_path / "sb", private_install, limits={"probation_s": 3.0, "known_good_after_s": 9999.0}, llm=NO_LLM
    )
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
        rules, remedies = _rules_and_remedies(incident(sb, esc["incident"]))
        assert "missing-dependency" in rules
        assert any(r["remedy"] == "restore_deps" and r["status"] == "ok" for r in remedies)
        learned = json.loads(d.cli("learnings", "--json").stdout)
        assert any("restore_deps" in item["remedies"] and item["successes"] == 1 for item in learned)
    finally:
        d.stop()
        cleanup_sandbox(sb, private_install.root)


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
        rules, remedies = _rules_and_remedies(incident(sandbox, esc["incident"]))
        assert "port-taken-by-stale-gateway" in rules
        assert "port-taken-by-foreign-process" not in rules, "our own target's gateway is not a foreign process"
        assert [(r["remedy"], r["params"], r["status"], r["changes"]) for r in remedies] == [
            ("stop_stale_gateway", {}, "ok", [{"stopped_pid": stale.pid}])
        ]
    finally:
        _kill_tree(stale.pid)
        stale.wait(10)


def _report(d: Daemon, incident_id: int) -> str:
    r = d.cli("incidents", "show", str(incident_id), "--markdown")
    assert r.returncode == 0, r.stderr
    return r.stdout


def _teardown(d: Daemon, sb: gw.Sandbox) -> None:
    d.stop()
    cleanup_sandbox(sb)


def _next_live_pid(d: Daemon, after: float) -> int:
    """Wait for the gateway launched after `after` to pass liveness; return its pid."""
    d.wait_event(lambda e: e["kind"] == "state" and e["new"] == "probation", BOOT_WAIT_S, after=after)
    launched = [e for e in d.events("launched") if e["ts"] >= after or after == 0.0]
    assert launched, "a gateway was launched"
    pid = int(launched[-1]["pid"])
    assert is_running(pid)
    return pid


OLD_NODE = "22.22.0"  # OpenClaw 2026.9.6 wants ">=24.16.0 <25 || >=26.1.0" and refuses 22 at boot (exit 1)


@pytest.fixture(scope="session")
def old_node() -> Path:
    """Node 22 from the npm registry, fetched like the pinned Node 24 (integrity-checked), once, into the cache."""
    name = node_package_name()
    dest = paths.cache_dir() / "sandbox" / f"{name}-{OLD_NODE}"
    binary = dest / "bin" / "node"
    dest.parent.mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(str(dest) + ".lock"):
        if not binary.is_file():
            work = Path(tempfile.mkdtemp(prefix=f".{name}-{OLD_NODE}-", dir=dest.parent))
            try:
                with httpx.Client(timeout=60.0, follow_redirects=True) as client:
                    fetch_package(client, registry_url(), name, OLD_NODE, work / "pkg", work, lambda _m, _f: None)
                (work / "pkg").rename(dest)
            finally:
                shutil.rmtree(work, ignore_errors=True)
        binary.chmod(0o755)
    return binary


def test_a_node_openclaw_refuses_escalates_at_once_with_the_advice(
    install: Install, old_node: Path, tmp_path: Path
) -> None:
    refused = Install(install.root, old_node, install.openclaw_entry, OLD_NODE, install.openclaw_version)
    sb = gw.create(tmp_path / "sb", refused, limits={"probation_s": 3.0, "startup_timeout_s": 150.0}, llm=NO_LLM)
    d = Daemon(sb, tmp_path / "daemon.log")
    try:
        d.start()
        esc = d.wait_event(lambda e: e["kind"] == "escalated", 180)
        assert esc["cause"] == "unsupported_runtime"
        d.wait_event(lambda e: e["kind"] == "gave_up", 120)
        exits = d.events("exited")
        assert [e["code"] for e in exits] == [1], "escalated at the first refusal: no restart loop"
        inc = incident(sb, esc["incident"])
        assert inc["status"] == "gave_up"
        rules, remedies = _rules_and_remedies(inc)
        assert "node-engine-mismatch" in rules
        assert remedies == [], "no automatic repair: installing another Node is a human's call"
        report = _report(d, esc["incident"])
        assert "node-engine-mismatch" in report and OLD_NODE in report and ">=24.16.0" in report
        assert "Install a Node version inside openclaw's `engines` range" in report
        assert not gw.health(sb.port)
    finally:
        _teardown(d, sb)


@pytest.fixture
def tiny_home(tmp_path: Path) -> Iterator[Path]:
    """The sandbox's HOME on a real 64 MB tmpfs, so the disk can really be filled (and only this one)."""
    home = tmp_path / "sb" / "home"
    home.mkdir(parents=True)
    try:
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64m,mode=0700", "tmpfs", str(home)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except FileNotFoundError:
        pytest.skip("no mount(8) here: a real full disk needs a small filesystem of its own")
    if r.returncode != 0:
        why = r.stderr.strip()
        pytest.skip(f"cannot mount a 64 MB tmpfs for a real full disk (needs root or CAP_SYS_ADMIN): {why}")
    try:
        yield home
    finally:
        subprocess.run(["umount", str(home)], capture_output=True, timeout=30, check=False)


def _fill(folder: Path) -> Path:
    filler = folder / "filler.bin"
    block = b"\0" * 2**20
    with filler.open("wb") as f:
        try:
            while True:
                f.write(block)
                f.flush()
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
    return filler


def test_a_full_disk_escalates_with_the_advice_and_heals_once_space_is_freed(
    install: Install, tiny_home: Path, tmp_path: Path
) -> None:
    sb = gw.create(tmp_path / "sb", install, limits={"probation_s": 3.0, "startup_timeout_s": 150.0}, llm=NO_LLM)
    assert sb.home == tiny_home
    d = Daemon(sb, tmp_path / "daemon.log")
    try:
        d.start()
        pid = _next_live_pid(d, 0.0)
        t_fault = time.time()
        filler = _fill(sb.home)
        assert shutil.disk_usage(sb.home).free < 2**20
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)  # the next boot meets the full disk
        esc = d.wait_event(lambda e: e["kind"] == "escalated", 400, after=t_fault)
        # exit 78 "database or disk is full" at once, or (seen under load) exit 1 "database is not open" until the
        # crash loop escalates: the same fault, found by the doctor either way
        assert esc["cause"] in ("fatal_config", "crash_loop")
        d.wait_event(lambda e: e["kind"] == "gave_up", 120, after=t_fault)
        inc = incident(sb, esc["incident"])
        rules, remedies = _rules_and_remedies(inc)
        assert "disk-full" in rules
        assert "state-db-corrupt" not in rules, "the database is fine; the disk is full"
        assert remedies == [], "clawmedic deletes nothing of the user's to make room"
        report = _report(d, esc["incident"])
        assert "disk-full" in report and str(sb.home) in report and "Free disk space" in report
        assert filler.exists() and not gw.health(sb.port)
        # a human frees space and resumes: the same gateway, untouched otherwise, is healthy again
        filler.unlink()
        t_resume = time.time()
        assert d.cli("resume").returncode == 0
        d.wait_healthy(after=t_resume)
        assert gw.health(sb.port)
    finally:
        _teardown(d, sb)


def test_a_hang_that_returns_after_restarts_is_diagnosed_and_resumed(install: Install, tmp_path: Path) -> None:
    limits = {"probation_s": 3.0, "startup_timeout_s": 150.0, "crash_loop_failures": 3, "stable_reset_s": 600.0}
    sb = gw.create(tmp_path / "sb", install, limits=limits, llm=NO_LLM)
    d = Daemon(sb, tmp_path / "daemon.log")
    stopped: list[int] = []
    try:
        d.start()
        t = 0.0
        for _ in range(3):  # something stops every gateway again as soon as it is live
            pid = _next_live_pid(d, t)
            t = time.time()
            os.kill(pid, signal.SIGSTOP)
            stopped.append(pid)
        esc = d.wait_event(lambda e: e["kind"] == "escalated", 180, after=t)
        assert esc["cause"] == "crash_loop"
        d.wait_event(lambda e: e["kind"] == "incident_closed" and e["incident"] == esc["incident"], 240, after=t)
        inc = incident(sb, esc["incident"])
        assert inc["status"] == "recovered"
        rules, remedies = _rules_and_remedies(inc)
        assert "process-hang" in rules
        assert [(r["remedy"], r["params"], r["status"]) for r in remedies] == [("resume_stopped_gateway", {}, "ok")]
        assert {"resumed_pid": stopped[-1]} in remedies[0]["changes"], "it found our own stopped gateway itself"
        assert d.pid() == stopped[-1], "the stopped gateway was resumed, not replaced"
        assert not inspect.is_stopped(stopped[-1]) and gw.health(sb.port)
        assert free_of(stopped[0]) and free_of(stopped[1]), "the earlier hung gateways were stopped by the ladder"
    finally:
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        _teardown(d, sb)


def test_openclaws_crash_loop_breaker_is_reported_with_its_recovery(install: Install, tmp_path: Path) -> None:
    limits = {"probation_s": 3.0, "startup_timeout_s": 150.0, "crash_loop_failures": 4, "stable_reset_s": 600.0}
    sb = gw.create(tmp_path / "sb", install, limits=limits, llm=NO_LLM)
    d = Daemon(sb, tmp_path / "daemon.log")
    stability = sb.home / ".openclaw" / "logs" / "stability"
    try:
        d.start()
        t = 0.0
        for _ in range(4):  # 3 unclean boots within 300 s trip the breaker at the 4th boot; the 4th kill escalates
            pid = _next_live_pid(d, t)
            t = time.time()
            os.kill(pid, signal.SIGKILL)
        esc = d.wait_event(lambda e: e["kind"] == "escalated", 180, after=t)
        assert esc["cause"] == "crash_loop"
        d.wait_event(lambda e: e["kind"] == "gave_up", 120, after=t)
        bundles = list(stability.glob("*crash_loop_breaker.json"))
        assert bundles, "the real gateway tripped its breaker"
        inc = incident(sb, esc["incident"])
        rules, remedies = _rules_and_remedies(inc)
        assert "crash-loop-breaker" in rules
        assert remedies == [], "the kills' cause is unknown: a human decides"
        report = _report(d, esc["incident"])
        assert "crash-loop-breaker" in report and "channels.start" in report
        t_resume = time.time()
        assert d.cli("resume").returncode == 0
        d.wait_healthy(after=t_resume)
        assert gw.health(sb.port)
    finally:
        _teardown(d, sb)
