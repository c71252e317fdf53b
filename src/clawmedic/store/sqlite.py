"""The one SQLite opener of clawmedic's own stores (incidents, learnings, the notification queue).

A store file that is not a database, or is malformed, is moved aside (`NAME.broken-<timestamp>`, with its -wal and
-shm) and a fresh one is started — at open, or when a later statement finds the damage — and the caller is told,
so the daemon records it and keeps supervising. A state folder that takes no writes (full disk, read-only) turns
into `StateUnwritable`; a store that cannot even be opened refuses writes the same way and tries its file again
every `STATE_DB_REOPEN_S`, so it catches up once space returns.
"""

from __future__ import annotations

import errno
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clawmedic import defaults
from clawmedic.store.files import move_aside, private_file
from clawmedic.store.health import StateUnwritable, is_write_failure, state_writes

log = logging.getLogger("clawmedic")

_MAGIC = b"SQLite format 3\x00"
_CORRUPT_CODES = frozenset({11, 26})  # SQLITE_CORRUPT, SQLITE_NOTADB


@dataclass(frozen=True)
class MovedAside:
    path: Path
    moved_to: Path
    error: str


def is_corrupt(e: BaseException) -> bool:
    if not isinstance(e, sqlite3.DatabaseError):
        return False
    code = getattr(e, "sqlite_errorcode", None)
    if isinstance(code, int) and (code & 0xFF) in _CORRUPT_CODES:
        return True
    text = str(e).lower()
    return "file is not a database" in text or "malformed" in text


def _is_write(sql: str) -> bool:
    return sql.lstrip()[:6].upper() in ("INSERT", "UPDATE", "DELETE")


def _looks_like_sqlite(path: Path) -> bool:
    """Empty (a new store) or starting with SQLite's magic header."""
    with path.open("rb") as f:
        head = f.read(len(_MAGIC))
    return head in (b"", _MAGIC)


class Db:
    """A connection that heals itself from a corrupt file and reports unwritable writes. `execute` is the only
    way in (the stores hold their own lock around it)."""

    def __init__(
        self, path: Path, schema: str, *, wal: bool = False, on_moved: Callable[[MovedAside], None] | None = None
    ) -> None:
        self.path = path
        self._schema = schema
        self._wal = wal
        self._on_moved = on_moved
        self._lock = threading.RLock()
        self.in_memory = False
        self._reopen_at = 0.0  # time.monotonic() of the next try to open the file, while in memory
        self._conn = self._open()

    def _connect(self, where: Path | str) -> sqlite3.Connection:
        conn = sqlite3.connect(where, check_same_thread=False, isolation_level=None, timeout=5)
        try:
            if self._wal:
                conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(self._schema)
        except BaseException:
            conn.close()
            raise
        return conn

    def _open(self) -> sqlite3.Connection:
        try:
            private_file(self.path)
            if not _looks_like_sqlite(self.path):  # moved before SQLite opens it (and tidies its -wal away)
                self._move_aside(sqlite3.DatabaseError("file is not a database"))
                private_file(self.path)
            try:
                conn = self._connect(self.path)
            except sqlite3.DatabaseError as e:
                if not is_corrupt(e):
                    raise
                self._move_aside(e)
                conn = self._connect(self.path)
            for extra in (self._sidecar("-wal"), self._sidecar("-shm")):
                if extra.exists():
                    extra.chmod(0o600)
            return conn
        except (OSError, sqlite3.Error) as e:
            if not is_write_failure(e):
                raise
            state_writes.failed(self.path.name, e)
            self.in_memory = True
            self._reopen_at = time.monotonic() + defaults.STATE_DB_REOPEN_S
            return self._connect(":memory:")  # an empty stand-in: reads find nothing, writes are refused

    def _sidecar(self, suffix: str) -> Path:
        return self.path.with_name(self.path.name + suffix)

    def _move_aside(self, e: BaseException) -> None:
        moved = move_aside(self.path, "broken")
        for suffix in ("-wal", "-shm"):
            side = self._sidecar(suffix)
            if side.exists():
                side.rename(moved.with_name(moved.name + suffix))
        log.error("%s is unreadable (%s): moved it aside to %s and started a fresh one", self.path, e, moved.name)
        if self._on_moved is not None:
            self._on_moved(MovedAside(self.path, moved, str(e)))

    def _reopen(self) -> bool:
        """While in memory (the file could not be opened for a full disk), try the file again now and then."""
        if time.monotonic() < self._reopen_at:
            return False
        stand_in = self._conn
        self.in_memory = False
        self._conn = self._open()  # back to memory (and a later retry) if the disk is still full
        if self.in_memory:
            self._conn.close()
            self._conn = stand_in
            return False
        stand_in.close()
        log.info("%s is open again", self.path)
        return True

    def execute(self, sql: str, args: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        with self._lock:
            if self.in_memory and not self._reopen() and _is_write(sql):
                # Refused rather than kept in memory: the stores degrade one way (incidents get no id, messages
                # stay in the notifier's memory), and no id from memory ever meets a row of the file.
                raise StateUnwritable(errno.ENOSPC, f"{self.path.name}: not open (the state folder takes no writes)")
            try:
                cur = self._execute(sql, args)
            except sqlite3.DatabaseError as e:
                if not is_corrupt(e) or self.in_memory:
                    raise
                self._conn.close()
                self._move_aside(e)
                self._conn = self._open()
                cur = self._execute(sql, args)
            return cur

    def _execute(self, sql: str, args: tuple[Any, ...]) -> sqlite3.Cursor:
        try:
            cur = self._conn.execute(sql, args)
        except sqlite3.Error as e:
            if is_write_failure(e):
                raise StateUnwritable(28, f"{self.path.name}: {e}") from e
            raise
        if not self.in_memory and _is_write(sql):
            state_writes.ok(self.path.name)
        return cur

    def close(self) -> None:
        with self._lock:
            self._conn.close()
