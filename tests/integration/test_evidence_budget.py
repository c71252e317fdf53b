"""The what-changed evidence on a loaded host: the known-good snapshot and all its files come back from one child
process, and the evidence waits longer for that collector than for the others (the change rule needs its answer)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from clawmedic import defaults
from clawmedic.config import LoadedConfig, load_config
from clawmedic.doctor import evidence
from clawmedic.knowngood_client import KnownGoodClient
from tests.helpers.rig import free_port


def _loaded(tmp_path: Path) -> LoadedConfig:
    port = free_port()
    path = tmp_path / "clawmedic.toml"
    path.write_text(
        f"""
[daemon]
state_dir = "state"
[targets.svc]
kind = "http"
port = {port}
liveness.url = "http://127.0.0.1:{port}/health"
[targets.svc.start]
command = ["{sys.executable}", "-c", "pass"]
"""
    )
    loaded = load_config(path)
    loaded.state_dir.mkdir(parents=True, exist_ok=True)
    return loaded


def test_known_good_files_returns_every_file_in_one_call(tmp_path: Path) -> None:
    loaded = _loaded(tmp_path)
    env, empty = tmp_path / "service.env", tmp_path / "empty.conf"
    env.write_text("MODE=good\n")
    empty.write_text("")
    store = KnownGoodClient(loaded.state_dir)
    assert store.known_good_files("svc") is None, "no snapshot yet"
    snap = store.snapshot("svc", {"service.env": env, "empty.conf": empty}, "healthy", "healthy", known_good=True)
    assert snap is not None
    got = store.known_good_files("svc")
    assert got is not None
    kg, files = got
    assert kg.rev == snap.rev
    assert files == {"service.env": b"MODE=good\n", "empty.conf": b""}, "an empty file is a file, not a missing one"


def test_a_slow_changes_collector_is_waited_for_past_the_common_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = _loaded(tmp_path)

    def slow_changes(loaded: LoadedConfig, name: str, ev: evidence.Evidence) -> None:
        time.sleep(1.5)  # a known-good read on a host at load 10
        ev.changes.append({"what": "config", "key": "service.env"})

    def slower_disk(*args: object) -> None:
        time.sleep(4.0)

    monkeypatch.setattr(evidence, "_changes", slow_changes)
    monkeypatch.setattr(evidence, "_disk", slower_disk)
    monkeypatch.setattr(defaults, "EVIDENCE_CHANGES_BUDGET_S", 10.0)
    ev = evidence.collect(loaded, "svc", budget_s=0.5, lint=False)
    assert "changes" not in ev.errors, ev.errors
    assert ev.changes and ev.changes[0]["key"] == "service.env"
    assert ev.errors.get("disk", "").startswith("timed out"), "the others are not waited for beyond it"
