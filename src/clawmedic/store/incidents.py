"""Incidents in SQLite: one row per incident, and its timeline of probes, actions, outcomes and durations.

An incident opens when a failure is confirmed and closes when the target is healthy again (outcome
"recovered"). In between its status follows the ladder: open → escalated → gave_up.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clawmedic.redact import Redactor
from clawmedic.store.health import is_write_failure, state_writes
from clawmedic.store.sqlite import Db, MovedAside

_SCHEMA = """
CREATE TABLE IF NOT EXISTS incidents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    target TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT NOT NULL,
    cause TEXT,
    first_failure_at REAL NOT NULL,
    detected_at REAL NOT NULL,
    live_at REAL,
    closed_at REAL,
    restarts INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS incident_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_id INTEGER NOT NULL REFERENCES incidents(id),
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL,
    duration_s REAL
);
CREATE INDEX IF NOT EXISTS incident_events_by_incident ON incident_events(incident_id, ts);
"""


@dataclass
class TimelineEntry:
    ts: float
    kind: str
    detail: dict[str, Any]
    duration_s: float | None


@dataclass
class Incident:
    id: int
    target: str
    status: str
    reason: str
    cause: str | None
    first_failure_at: float
    detected_at: float
    live_at: float | None
    closed_at: float | None
    restarts: int
    timeline: list[TimelineEntry] = field(default_factory=list)

    @property
    def time_to_recover_s(self) -> float | None:
        return None if self.live_at is None else self.live_at - self.first_failure_at

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "target": self.target,
            "status": self.status,
            "reason": self.reason,
            "cause": self.cause,
            "first_failure_at": self.first_failure_at,
            "detected_at": self.detected_at,
            "live_at": self.live_at,
            "closed_at": self.closed_at,
            "restarts": self.restarts,
            "time_to_recover_s": self.time_to_recover_s,
            "timeline": [
                {"ts": e.ts, "kind": e.kind, "detail": e.detail, "duration_s": e.duration_s} for e in self.timeline
            ],
        }


class IncidentStore:
    def __init__(
        self, path: Path, redactor: Redactor | None = None, on_moved: Callable[[MovedAside], None] | None = None
    ) -> None:
        self.path = path
        self._redactor = redactor or Redactor()
        self._lock = threading.Lock()
        self._db = Db(path, _SCHEMA, wal=True, on_moved=on_moved)  # a corrupt file is moved aside, not fatal
        self._unsaved = itertools.count(-1, -1)  # ids of incidents the disk did not take (full): negative

    def _write(self, sql: str, args: tuple[Any, ...]) -> sqlite3.Cursor | None:
        """One write; None when the state folder takes no writes (reported, and supervision goes on)."""
        try:
            with self._lock:
                return self._db.execute(sql, args)
        except OSError as e:
            if not is_write_failure(e):
                raise
            state_writes.failed(self.path.name, e)
            return None

    def close(self) -> None:
        self._db.close()

    def open(self, target: str, reason: str, first_failure_at: float, detected_at: float | None = None) -> int:
        now = detected_at if detected_at is not None else time.time()
        cur = self._write(
            "INSERT INTO incidents (target, status, reason, first_failure_at, detected_at) VALUES (?,?,?,?,?)",
            (target, "open", self._redactor.text(reason), first_failure_at, now),
        )
        if cur is None or cur.lastrowid is None:
            return next(self._unsaved)
        self.add(cur.lastrowid, "detected", {"reason": reason}, ts=now)
        return cur.lastrowid

    def add(
        self,
        incident_id: int,
        kind: str,
        detail: dict[str, Any],
        *,
        ts: float | None = None,
        duration_s: float | None = None,
    ) -> None:
        if incident_id < 0:
            return  # an incident the disk did not take
        payload = json.dumps(self._redactor.data(detail), default=str)
        self._write(
            "INSERT INTO incident_events (incident_id, ts, kind, detail, duration_s) VALUES (?,?,?,?,?)",
            (incident_id, ts if ts is not None else time.time(), kind, payload, duration_s),
        )

    def update(self, incident_id: int, **fields: Any) -> None:
        allowed = {"status", "cause", "live_at", "closed_at", "reason"}
        if unknown := set(fields) - allowed:
            raise ValueError(f"unknown incident fields {unknown}")
        if "reason" in fields:
            fields["reason"] = self._redactor.text(fields["reason"])
        sets = ", ".join(f"{k} = ?" for k in fields)
        if incident_id >= 0:
            self._write(f"UPDATE incidents SET {sets} WHERE id = ?", (*fields.values(), incident_id))  # noqa: S608

    def count_restart(self, incident_id: int) -> None:
        if incident_id >= 0:
            self._write("UPDATE incidents SET restarts = restarts + 1 WHERE id = ?", (incident_id,))

    def get(self, incident_id: int) -> Incident | None:
        with self._lock:
            row = self._db.execute(f"SELECT {_COLS} FROM incidents WHERE id = ?", (incident_id,)).fetchone()  # noqa: S608
            if row is None:
                return None
            events = self._db.execute(
                "SELECT ts, kind, detail, duration_s FROM incident_events WHERE incident_id = ? ORDER BY ts, id",
                (incident_id,),
            ).fetchall()
        inc = Incident(*row)
        inc.timeline = [TimelineEntry(ts, kind, json.loads(detail), dur) for ts, kind, detail, dur in events]
        return inc

    def list(self, limit: int = 50, target: str | None = None) -> list[Incident]:
        q = f"SELECT {_COLS} FROM incidents"  # noqa: S608
        args: tuple[Any, ...] = ()
        if target is not None:
            q += " WHERE target = ?"
            args = (target,)
        q += " ORDER BY id DESC LIMIT ?"
        with self._lock:
            rows = self._db.execute(q, (*args, limit)).fetchall()
        return [Incident(*r) for r in rows]


_COLS = "id, target, status, reason, cause, first_failure_at, detected_at, live_at, closed_at, restarts"
