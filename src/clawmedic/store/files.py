"""File habits: private modes, atomic replacement, and moving aside instead of deleting."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from clawmedic import defaults
from clawmedic.paths import make_private_dirs


def atomic_write(path: Path, data: str | bytes, mode: int = defaults.FILE_MODE, *, durable: bool = True) -> None:
    """Write `data` to `path` so a reader sees the old file or the new one, never half of one. `durable=False`
    skips the fsync: for a file rewritten every few seconds anyway (the status heartbeat), where a power cut may
    lose the last version but no reader ever sees a torn one."""
    make_private_dirs(path.parent)  # 0700 whatever the umask; an existing folder is left as it is
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def private_file(path: Path) -> Path:
    """Create `path` if needed and make it 0600."""
    make_private_dirs(path.parent)  # 0700 whatever the umask; an existing folder is left as it is
    path.touch(mode=defaults.FILE_MODE, exist_ok=True)
    path.chmod(defaults.FILE_MODE)
    return path


def timestamp(now: float | None = None) -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.localtime(now if now is not None else time.time()))


def move_aside(path: Path, label: str = "broken", now: float | None = None) -> Path:
    """Rename `path` to `NAME.<label>-<timestamp>` (0600) beside it and return the new path. Never deletes."""
    base = path.with_name(f"{path.name}.{label}-{timestamp(now)}")
    dest, n = base, 1
    while dest.exists():
        dest = base.with_name(f"{base.name}.{n}")
        n += 1
    path.rename(dest)
    dest.chmod(defaults.FILE_MODE)
    return dest


def keep_copy(path: Path, label: str = "broken", now: float | None = None) -> Path:
    """Copy `path` to `NAME.<label>-<timestamp>` (0600) beside it, leaving `path` in place, so the caller can then
    replace it with one atomic rename: a watcher of `path` (OpenClaw's own) sees a single change."""
    base = path.with_name(f"{path.name}.{label}-{timestamp(now)}")
    dest, n = base, 1
    while dest.exists():
        dest = base.with_name(f"{base.name}.{n}")
        n += 1
    atomic_write(dest, path.read_bytes())
    return dest
