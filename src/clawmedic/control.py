"""Maintenance requests from the command line to the daemon, through one small file in the state folder.

`clawmedic pause|resume` write `control.json` atomically; the daemon looks at its mtime twice a second. A file
rather than a socket, so pausing works (and persists) whether or not the daemon is running.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from clawmedic.store.files import atomic_write


@dataclass
class Control:
    paused: dict[str, float] = field(default_factory=dict)  # target -> when it was paused
    resume_seq: dict[str, int] = field(default_factory=dict)  # bumped by every `resume`, to retry after gave_up
    restart_seq: dict[str, int] = field(default_factory=dict)  # bumped by every requested restart


def control_path(state_dir: Path) -> Path:
    return state_dir / "control.json"


def read_control(state_dir: Path) -> Control:
    try:
        raw = json.loads(control_path(state_dir).read_text())
        return Control(
            dict(raw.get("paused", {})),
            {k: int(v) for k, v in raw.get("resume_seq", {}).items()},
            {k: int(v) for k, v in raw.get("restart_seq", {}).items()},
        )
    except (OSError, ValueError, AttributeError):
        return Control()


def _write(state_dir: Path, c: Control) -> None:
    data = {"paused": c.paused, "resume_seq": c.resume_seq, "restart_seq": c.restart_seq}
    atomic_write(control_path(state_dir), json.dumps(data, indent=1))


def pause(state_dir: Path, targets: list[str]) -> None:
    c = read_control(state_dir)
    for t in targets:
        c.paused.setdefault(t, time.time())
    _write(state_dir, c)


def resume(state_dir: Path, targets: list[str]) -> None:
    c = read_control(state_dir)
    for t in targets:
        c.paused.pop(t, None)
        c.resume_seq[t] = c.resume_seq.get(t, 0) + 1
    _write(state_dir, c)


def request_restart(state_dir: Path, targets: list[str]) -> None:
    """Ask the running daemon to restart `targets` (not counted as a failure)."""
    c = read_control(state_dir)
    for t in targets:
        c.restart_seq[t] = c.restart_seq.get(t, 0) + 1
    _write(state_dir, c)
