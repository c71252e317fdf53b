"""Whether the state folder takes writes: a full disk, a quota, a read-only remount or an I/O error must not stop
supervision. Every write seam (status.json, events.jsonl, the SQLite stores, output logs, the process record)
catches these errors, reports them here and carries on from memory; the daemon turns the first failure into one
`state_writes_failing` event (which the notifier sends) and, once writes succeed again, `state_writes_recovered`.
"""

from __future__ import annotations

import errno
import logging
import sqlite3
import threading
import time

log = logging.getLogger("clawmedic")

# The errors of a state folder that cannot take writes (as opposed to a bug or a bad path): degrade, never die.
WRITE_FAILURE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO})
# SQLite's primary result codes for the same conditions: FULL, IOERR, READONLY, CANTOPEN.
_SQLITE_WRITE_FAILURES = frozenset({13, 10, 8, 14})


class StateUnwritable(OSError):
    """A SQLite store could not write (its disk is full, read-only or failing); raised as an OSError so every
    seam catches one kind of error."""


def is_write_failure(e: BaseException) -> bool:
    if isinstance(e, OSError):
        return e.errno in WRITE_FAILURE_ERRNOS
    if isinstance(e, sqlite3.Error):
        code = getattr(e, "sqlite_errorcode", None)
        return isinstance(code, int) and (code & 0xFF) in _SQLITE_WRITE_FAILURES
    return False


class StateWrites:
    """Which writes fail right now. Thread-safe: the notifier and the doctor write from worker threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.failing: dict[str, str] = {}  # seam -> the last error, e.g. "events.jsonl" -> "No space left on device"
        self.last_failure_at: float | None = None  # time.monotonic()

    def failed(self, where: str, e: BaseException) -> None:
        why = (e.strerror if isinstance(e, OSError) and e.strerror else None) or str(e) or type(e).__name__
        with self._lock:
            first = where not in self.failing
            self.failing[where] = why
            self.last_failure_at = time.monotonic()
        if first:
            log.error("cannot write %s in the state folder (%s); carrying on from memory", where, why)

    def ok(self, where: str) -> None:
        with self._lock:
            self.failing.pop(where, None)

    def quiet_for(self) -> float:
        """Seconds since the last failed write (infinite when none failed)."""
        with self._lock:
            return float("inf") if self.last_failure_at is None else time.monotonic() - self.last_failure_at

    def reset(self) -> None:
        with self._lock:
            self.failing.clear()
            self.last_failure_at = None


state_writes = StateWrites()  # one per process: the seams are spread over the stores, the launcher and the daemon
