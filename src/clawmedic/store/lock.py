"""The single-instance lock of a state folder (filelock), with the holder's PID beside it for `status`."""

from __future__ import annotations

import os
from pathlib import Path

import psutil

from clawmedic.errors import AlreadyRunning
from clawmedic.store.files import atomic_write
from clawmedic.store.health import is_write_failure, state_writes


class DaemonLock:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "daemon.lock"
        self.pid_path = state_dir / "daemon.pid"
        from filelock import FileLock  # only the daemon locks; `status` reads the PID beside the lock

        self._lock = FileLock(self.path, mode=0o600)

    def acquire(self) -> None:
        from filelock import Timeout

        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            pid = holder_pid(self.pid_path.parent)
            who = f" (pid {pid})" if pid else ""
            raise AlreadyRunning(
                f"Another clawmedic daemon{who} already supervises the state folder {self.pid_path.parent}."
            ) from None
        try:
            atomic_write(self.pid_path, str(os.getpid()))
        except OSError as e:  # a full disk: the lock (an open file) holds; `status` cannot name us until it clears
            if not is_write_failure(e):
                raise
            state_writes.failed(self.pid_path.name, e)

    def release(self) -> None:
        self.pid_path.unlink(missing_ok=True)  # our own bookkeeping file, not a user's
        self._lock.release()


def holder_pid(state_dir: Path) -> int | None:
    """The PID of the running daemon of `state_dir`, or None when no daemon runs."""
    try:
        pid = int((state_dir / "daemon.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if psutil.pid_exists(pid) else None
