"""End-to-end: a dependency wiped from the real OpenClaw install stops the gateway; the pristine copy brings it back.

The shared sandbox install in the user cache is never touched (other tests use it at the same time): each test
works on a private hard-link copy of it. Renaming folders in the copy and linking files back never writes to
a shared inode.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from clawmedic import deps
from clawmedic.config import load_config
from clawmedic.sandbox import gateway as gw
from clawmedic.sandbox.install import Install
from tests.e2e.conftest import NO_LLM, Daemon, cleanup_sandbox, free_of

pytestmark = [pytest.mark.gateway, pytest.mark.slow, pytest.mark.timeout(600)]

EXIT_WAIT_S = 60.0  # FACTS §6: without `ws` the gateway exits 78 after ~1.3 s; allow for a loaded machine


@pytest.fixture
def private_install(install: Install, tmp_path: Path) -> Install:
    root = tmp_path / "openclaw-install"
    t0 = time.monotonic()
    stats = deps.link_tree(install.root, root)
    print(f"\nprivate hard-link copy of the install: {time.monotonic() - t0:.2f} s, {stats}")
    return Install(
        root=root,
        node=root / install.node.relative_to(install.root),
        openclaw_entry=root / install.openclaw_entry.relative_to(install.root),
        node_version=install.node_version,
        openclaw_version=install.openclaw_version,
    )


@pytest.fixture
def private_sandbox(private_install: Install, tmp_path: Path) -> Iterator[gw.Sandbox]:
    sb = gw.create(
        tmp_path / "sb",
        private_install,
        limits={"probation_s": 3.0, "stable_reset_s": 5.0, "startup_timeout_s": 150.0, "known_good_after_s": 2.0},
        llm=NO_LLM,
    )
    try:
        yield sb
    finally:
        with contextlib.suppress(Exception):
            gw.stop_gateway(sb, timeout_s=15)
        cleanup_sandbox(sb, private_install.root)


def output_since_last_start(sb: gw.Sandbox) -> str:
    text = (sb.state_dir / "targets" / gw.TARGET / "output.log").read_text(errors="replace")
    return text.rsplit("--- clawmedic: starting", 1)[-1]


def test_a_wiped_dependency_is_restored_from_the_pristine_copy(
    private_sandbox: gw.Sandbox, private_install: Install, tmp_path: Path
) -> None:
    sb = private_sandbox
    d = Daemon(sb, tmp_path / "daemon.log")
    try:
        d.start()
        d.wait_healthy()
        loaded = load_config(sb.config_path)
        assert deps.locate(loaded.targets[gw.TARGET]) == private_install.node_modules

        t0 = time.monotonic()
        manifest = deps.record(loaded, gw.TARGET)
        t_record = time.monotonic() - t0
        assert manifest.openclaw_version == private_install.openclaw_version
        assert manifest.packages["ws"].files > 0
        t0 = time.monotonic()
        assert deps.record(loaded, gw.TARGET) == manifest  # nothing changed: nothing relinked
        t_record_again = time.monotonic() - t0
        live_pkg = private_install.node_modules / "ws" / "package.json"
        assert live_pkg.stat().st_ino == (deps.pristine_root(loaded, gw.TARGET) / "ws" / "package.json").stat().st_ino
    finally:
        d.stop()
    gw.stop_gateway(sb)
    assert sb.launcher.adopt() is None

    # the wipe: ws leaves node_modules entirely
    (private_install.node_modules / "ws").rename(tmp_path / "ws-wiped")
    handle = gw.start_gateway(sb)
    assert free_of(handle.pid, EXIT_WAIT_S), "the gateway kept running without ws"
    out = output_since_last_start(sb)
    assert re.search(r"Cannot find (module|package) 'ws[/']", out), out[-2000:]  # FACTS §6: 'ws/package.json'
    assert not gw.health(sb.port)

    t0 = time.monotonic()
    problems = deps.check(loaded, gw.TARGET)
    t_check = time.monotonic() - t0
    assert [(p.path, p.kind) for p in problems] == [("ws", "missing")]

    plan = deps.fix(loaded, gw.TARGET, dry_run=True)
    assert [(o.package, o.action, o.status) for o in plan.outcomes] == [("ws", "restored_from_pristine", "planned")]
    assert not (private_install.node_modules / "ws").exists()

    t0 = time.monotonic()
    report = deps.fix(loaded, gw.TARGET, allow_network=False)
    t_fix = time.monotonic() - t0
    assert report.ok, report.to_dict()
    assert [(o.package, o.action, o.status) for o in report.outcomes] == [("ws", "restored_from_pristine", "ok")]
    assert deps.check(loaded, gw.TARGET) == []
    assert deps.fix(loaded, gw.TARGET).outcomes == []  # idempotent

    handle = gw.start_gateway(sb)
    booted = gw.wait_healthy(sb.port, timeout_s=180, pid=handle.pid)
    print(
        f"record {t_record:.2f} s ({len(manifest.packages)} packages), record again {t_record_again:.3f} s, "
        f"check {t_check:.3f} s, fix {t_fix:.3f} s, boot after fix {booted:.1f} s"
    )
    gw.stop_gateway(sb)


def test_fix_deps_command_and_the_daemon_restore_a_wiped_package(
    private_sandbox: gw.Sandbox, private_install: Install, tmp_path: Path
) -> None:
    """The whole path a user sees: the daemon records the install while healthy; `ws` is wiped; `clawmedic fix deps`
    plans and restores it; wiped again, the daemon restores it on its own before restarting the killed gateway."""
    import json
    import os
    import signal

    sb = private_sandbox
    d = Daemon(sb, tmp_path / "daemon.log")
    try:
        d.start()
        d.wait_healthy()
        d.wait_event(lambda e: e["kind"] == "deps_recorded", 120)
        ws = private_install.node_modules / "ws"
        ws.rename(tmp_path / "ws-wiped-1")

        plan = d.cli("fix", "deps", "--dry-run", "--json")
        assert plan.returncode == 0, plan.stderr
        planned = json.loads(plan.stdout)
        assert planned["steps"][0]["status"] == "planned" and "ws" in planned["steps"][0]["detail"]
        assert not ws.exists(), "a dry run changes nothing"

        done = d.cli("fix", "deps", "--json")
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert report["steps"][0]["status"] == "fixed" and report["incident"]
        assert (ws / "package.json").exists()
        again = json.loads(d.cli("fix", "deps", "--json").stdout)
        assert again["steps"][0]["status"] == "ok", "idempotent: nothing left to do"

        ws.rename(tmp_path / "ws-wiped-2")
        t_kill = time.time()
        os.kill(d.pid(), signal.SIGKILL)
        restored = d.wait_event(lambda e: e["kind"] == "deps_restored", 60, after=t_kill)
        assert restored["ok"] is True
        launched = d.wait_event(lambda e: e["kind"] == "launched", 60, after=t_kill)
        assert restored["ts"] <= launched["ts"], "restored before the restart"
        d.wait_event(lambda e: e["kind"] == "incident_closed" and e["outcome"] == "recovered", 240, after=t_kill)
        assert gw.health(sb.port)
        assert not [e for e in d.events("exited") if e["ts"] >= t_kill and e["code"] == 78]
    finally:
        d.stop()
