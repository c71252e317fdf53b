"""A managed target's output log is rotated between launches and old rotations expire."""

from __future__ import annotations

import os
import time
from pathlib import Path

from clawmedic import defaults
from clawmedic.process.launcher import Launcher


def test_output_log_rotates_past_the_limit_and_old_rotations_expire(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(defaults, "OUTPUT_LOG_MAX_BYTES", 100)
    launcher = Launcher(tmp_path)
    launcher.log_path.write_bytes(b"x" * 500)
    ancient = tmp_path / "output.log.20000101T000000"
    ancient.write_text("old")
    old_time = time.time() - (defaults.LOG_RETENTION_DAYS + 1) * 86400
    os.utime(ancient, (old_time, old_time))
    recent = tmp_path / "output.log.20990101T000000"
    recent.write_text("recent")
    launcher._rotate_output()
    assert not launcher.log_path.exists(), "the big log was rotated away"
    rotated = sorted(p.name for p in tmp_path.glob("output.log.*"))
    assert "output.log.20000101T000000" not in rotated, "expired rotations are removed"
    assert "output.log.20990101T000000" in rotated and len(rotated) == 2
    launcher.log_path.write_bytes(b"small")
    launcher._rotate_output()
    assert launcher.log_path.read_bytes() == b"small", "a small log is left alone"
