"""Learnings: each incident's signature and the remedies that healed it, so the next similar one tries them first."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from clawmedic.store.health import is_write_failure, state_writes
from clawmedic.store.sqlite import Db, MovedAside

_SCHEMA = """
CREATE TABLE IF NOT EXISTS learnings (
    signature TEXT NOT NULL,
    remedies TEXT NOT NULL,
    successes INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    last_at REAL NOT NULL,
    last_incident INTEGER,
    summary TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (signature, remedies)
);
"""


@dataclass(frozen=True)
class Learning:
    signature: str
    remedies: list[str]
    successes: int
    failures: int
    last_at: float
    last_incident: int | None
    summary: str

    def to_dict(self) -> dict[str, object]:
        return self.__dict__.copy()


class LearningStore:
    def __init__(self, path: Path, on_moved: Callable[[MovedAside], None] | None = None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db = Db(path, _SCHEMA, on_moved=on_moved)  # a corrupt file is moved aside, not fatal

    def close(self) -> None:
        self._db.close()

    def record(self, signature: str, remedies: list[str], healed: bool, incident: int, summary: str) -> None:
        key = json.dumps(remedies)
        col = "successes" if healed else "failures"
        try:
            with self._lock:
                self._db.execute(
                    f"INSERT INTO learnings (signature, remedies, {col}, last_at, last_incident, summary) "  # noqa: S608
                    f"VALUES (?,?,1,?,?,?) ON CONFLICT(signature, remedies) DO UPDATE SET {col} = {col} + 1, "
                    "last_at = excluded.last_at, last_incident = excluded.last_incident, summary = excluded.summary",
                    (signature, key, time.time(), incident, summary),
                )
        except OSError as e:  # a full disk loses this lesson, not the supervision
            if not is_write_failure(e):
                raise
            state_writes.failed(self.path.name, e)

    def proven(self, signature: str) -> list[str]:
        """Remedy keys that healed this signature before, best first (most successes, fewest failures)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT remedies FROM learnings WHERE signature = ? AND successes > 0 "
                "ORDER BY successes - failures DESC, last_at DESC",
                (signature,),
            ).fetchall()
        out: list[str] = []
        for (remedies,) in rows:
            for r in json.loads(remedies):
                if r not in out:
                    out.append(r)
        return out

    def all(self) -> list[Learning]:
        with self._lock:
            rows = self._db.execute(
                "SELECT signature, remedies, successes, failures, last_at, last_incident, summary FROM learnings "
                "ORDER BY last_at DESC"
            ).fetchall()
        return [Learning(s, json.loads(r), ok, bad, at, inc, summ) for s, r, ok, bad, at, inc, summ in rows]


def export_markdown(items: list[Learning]) -> str:
    lines = ["# Recovery learnings", "", "What healed each kind of incident, as recorded by clawmedic's doctor.", ""]
    for item in items:
        lines += [
            f"## {item.summary or item.signature}",
            "",
            f"- signature: `{item.signature}`",
            f"- remedies: {', '.join(f'`{r}`' for r in item.remedies) or '—'}",
            f"- healed {item.successes} time(s), failed {item.failures} time(s); last incident #{item.last_incident}",
            "",
        ]
    return "\n".join(lines)
