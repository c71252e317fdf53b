"""End-to-end: `clawmedic drill` on a real sandboxed gateway — cheap rows, every expectation met, every invariant
held, the result as JSON and as a Markdown report."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from clawmedic.sandbox import gateway as gw
from clawmedic.sandbox.install import Install
from tests.e2e.conftest import CLAWMEDIC

pytestmark = [pytest.mark.gateway, pytest.mark.slow, pytest.mark.timeout(900)]


def test_drill_cheap_rows_meet_their_expectations_and_keep_the_invariants(install: Install, tmp_path: Path) -> None:
    root = tmp_path / "drill"
    try:
        r = subprocess.run(
            [
                CLAWMEDIC,
                "drill",
                "--faults",
                "kill9,short-stop,valid-json5-edit",
                "--json",
                "--dir",
                str(root),
                "--report",
                str(tmp_path / "drill.md"),
            ],
            capture_output=True,
            text=True,
            timeout=840,
        )
    finally:
        for pid in gw.pids_using(root):  # the drill stops its own processes; anything left is a failure below
            subprocess.run(["kill", "-9", str(pid)], check=False)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    result = json.loads(r.stdout)
    rows = {row["fault"]: row for row in result["rows"]}
    assert list(rows) == ["kill9", "short-stop", "valid-json5-edit"]
    for row in rows.values():
        assert row["met"] and row["ok"], row
        assert row["invariants"] == {"deleted": [], "signalled": [], "token": []}, row
    assert rows["kill9"]["observed"] == "healed" and rows["kill9"]["restarts"] == 1
    assert rows["kill9"]["detect_s"] is not None and rows["kill9"]["recover_s"] is not None
    assert rows["short-stop"]["observed"] == "not touched" and rows["short-stop"]["restarts"] == 0
    assert rows["valid-json5-edit"]["observed"] == "not touched"
    assert (root / "sb" / "home" / ".openclaw" / "openclaw.json").read_text().startswith("// edited by hand")
    assert not gw.pids_using(root), "the drill left a process running"
    assert "| kill -9 | healed | healed | yes |" in (tmp_path / "drill.md").read_text()
