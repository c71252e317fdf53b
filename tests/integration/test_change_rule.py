"""The change rule through the real doctor (RuleDoctor) and the real known-good store: a boot file changed before
the failures is reverted (a snapshot first, the replaced file kept), and a revert that did not heal is not repeated.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

from clawmedic.config import LoadedConfig, load_config
from clawmedic.doctor import Escalation
from clawmedic.doctor.clinic import RuleDoctor
from clawmedic.doctor.learnings import LearningStore
from clawmedic.doctor.llm.run import policy_of
from clawmedic.doctor.report import render
from clawmedic.knowngood_client import KnownGoodClient
from clawmedic.store.incidents import IncidentStore
from tests.helpers.rig import free_port
from tests.integration.test_cli import CLAWMEDIC, cli_env


def _loaded(tmp_path: Path, boot_file: Path) -> LoadedConfig:
    port = free_port()
    path = tmp_path / "clawmedic.toml"
    path.write_text(
        f"""
[daemon]
state_dir = "state"
[daemon.doctor.llm]
backend = "off"
[targets.svc]
kind = "http"
port = {port}
liveness.url = "http://127.0.0.1:{port}/health"
boot_files = ["{boot_file}"]
[targets.svc.start]
command = ["{sys.executable}", "-c", "pass"]
"""
    )
    loaded = load_config(path)
    loaded.state_dir.mkdir(parents=True, exist_ok=True)
    return loaded


def test_a_changed_boot_file_is_reverted_once_and_kept(tmp_path: Path) -> None:
    boot = tmp_path / "service.env"
    boot.write_text("MODE=good\n")
    loaded = _loaded(tmp_path, boot)
    store = KnownGoodClient(loaded.state_dir)
    assert store.snapshot("svc", {"service.env": boot}, "served healthy", "healthy", known_good=True) is not None
    boot.write_text("MODE=broken\n")  # the change; the failures come after it
    home = tmp_path / "home"
    home.mkdir()
    shown = subprocess.run(  # a human's `diagnose` names the change (read-only)
        [CLAWMEDIC, "diagnose", "svc", "--config", str(loaded.source)],
        capture_output=True,
        text=True,
        env={**cli_env(home), "COLUMNS": "200"},
        timeout=120,
    )
    assert "what changed" in shown.stdout and f"{boot} differs from its known-good copy" in shown.stdout, shown
    assert boot.read_text() == "MODE=broken\n", "diagnose changes nothing"
    incidents = IncidentStore(loaded.state_dir / "incidents.sqlite", loaded.redactor)
    inc = incidents.open("svc", "process exited (exit 1: bad mode)", time.time())
    learnings = LearningStore(loaded.state_dir / "learnings.sqlite")
    doctor = RuleDoctor(loaded, incidents, store, learnings, policy_of(loaded))
    esc = Escalation("svc", inc, "crash loop", "crash_loop", {"last_exit": {"code": 1}, "last_healthy_at": 1.0})

    first = asyncio.run(doctor.treat(esc))
    assert first.healed and "restore_known_good" in first.summary, first.summary
    assert boot.read_text() == "MODE=good\n"
    kept = list(tmp_path.glob("service.env.broken-*"))
    assert len(kept) == 1 and kept[0].read_text() == "MODE=broken\n", "the replaced file is kept beside it"
    got = incidents.get(inc)
    assert got is not None
    evidence = next(e.detail for e in got.timeline if e.kind == "evidence")
    change = next(c for c in evidence["changes"] if c["key"] == "service.env")
    assert change["what"] == "boot_file" and change["reversible"] and "after the last healthy probe" in change["when"]
    remedy = next(e.detail for e in got.timeline if e.kind == "remedy")
    assert remedy["changes"][0]["snapshot_before"], "a snapshot of the broken state was taken first"
    report = render(got)  # the recovery report
    assert "## What changed" in report and f"**boot_file** {boot} differs from its known-good copy" in report

    # the relaunch failed again: the same incident comes back; nothing left to revert, no loop
    second = asyncio.run(doctor.treat(esc))
    assert not second.healed and "needs a human" in second.summary, second.summary
    got = incidents.get(inc)
    assert got is not None
    assert [e.detail["remedy"] for e in got.timeline if e.kind == "remedy"] == ["restore_known_good"]
    assert len(list(tmp_path.glob("service.env.broken-*"))) == 1
