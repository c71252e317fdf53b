"""What must hold after every drill fault, whatever the fault: no user file deleted, no foreign process signalled,
no planted secret in anything clawmedic wrote. Pure checks on folders and processes, testable on tmp dirs."""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import psutil

# how clawmedic (and the drill itself) sets a file aside: `NAME.<label>-<timestamp>` beside it (store.files.move_aside)
_ASIDE = re.compile(r"^(?P<name>.+)\.(broken|corrupt|moved|drill)-[^/]*$")
# files the gateway or SQLite create and remove on their own: their going away is not a deletion by anyone
_VOLATILE = re.compile(r"(\.lock|\.pid|-wal|-shm|-journal|\.tmp|\.sock)$|(^|/)tmp/|\.tmp-|\.last-good$")
# the gateway's own output, captured byte for byte (clawmedic masks what it writes about it, not the stream itself)
_VERBATIM = re.compile(r"(^|/)output\.log(\.[^/]*)?$")


def listing(root: Path) -> set[str]:
    """Every regular file under `root`, as paths relative to it."""
    return {str((Path(d) / f).relative_to(root)) for d, _dirs, files in os.walk(root) for f in files}


def deleted_files(before: set[str], after: set[str]) -> list[str]:
    """Files of `before` gone from `after` without a set-aside copy (`NAME.broken-…` beside it) — deletions."""
    aside = {(Path(p).parent, m.group("name")) for p in after if (m := _ASIDE.match(Path(p).name))}
    return sorted(
        p
        for p in before - after
        if not _VOLATILE.search(p) and not _ASIDE.match(Path(p).name) and (Path(p).parent, Path(p).name) not in aside
    )


@dataclass(frozen=True)
class ProcessMark:
    """A process identified by PID and create time, so a recycled PID is not taken for it."""

    pid: int
    create_time: float
    name: str

    @classmethod
    def of(cls, pid: int, name: str) -> ProcessMark:
        return cls(pid, psutil.Process(pid).create_time(), name)

    def intact(self) -> bool:
        """Alive, not stopped, the same process (create time) — never signalled to death or frozen."""
        try:
            p = psutil.Process(self.pid)
            return p.create_time() == self.create_time and p.status() not in (
                psutil.STATUS_ZOMBIE,
                psutil.STATUS_STOPPED,
                psutil.STATUS_DEAD,
            )
        except psutil.Error:
            return False


def foreign_signalled(marks: Iterable[ProcessMark]) -> list[str]:
    return [f"{m.name} (pid {m.pid})" for m in marks if not m.intact()]


def _texts(path: Path) -> Iterable[bytes]:
    if path.suffix == ".sqlite" or path.name.endswith((".sqlite", ".db")):
        with contextlib.suppress(sqlite3.Error):
            con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2)
            try:
                yield "\n".join(con.iterdump()).encode()
            finally:
                con.close()
    try:
        data = path.read_bytes()
    except OSError:
        return
    yield data
    if path.parent.parent.name == "objects":  # a loose git object (known-good snapshots): zlib-compressed
        with contextlib.suppress(zlib.error):
            yield zlib.decompress(data)


def token_hits(root: Path, token: str) -> list[str]:
    """Files under `root` (sqlite databases through a dump, git objects inflated) that contain `token`, but the
    gateway's own output captured verbatim."""
    needle = token.encode()
    hits = []
    for rel in sorted(listing(root)):
        if _VERBATIM.search(rel):
            continue
        if any(needle in t for t in _texts(root / rel)):
            hits.append(rel)
    return hits
