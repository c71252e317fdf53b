"""The JSONL event stream: one redacted JSON object a line, appended, rotated by size."""

from __future__ import annotations

import collections
import contextlib
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clawmedic import defaults
from clawmedic.redact import Redactor
from clawmedic.store.files import private_file
from clawmedic.store.health import is_write_failure, state_writes


class EventLog:
    def __init__(self, path: Path, redactor: Redactor, max_bytes: int = defaults.EVENTS_MAX_BYTES) -> None:
        self.path = private_file(path)
        self._redactor = redactor
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        self._subscribers: list[Callable[[dict[str, Any]], None]] = []
        # Lines the disk did not take (full): written first, in order, once it takes writes again.
        self._unwritten: collections.deque[str] = collections.deque(maxlen=defaults.EVENTS_KEPT_WHILE_UNWRITABLE)

    def subscribe(self, callback: Callable[[dict[str, Any]], None]) -> None:
        """Call `callback` with every (already redacted) event; it must not block (hand work to a task)."""
        self._subscribers.append(callback)

    def emit(self, kind: str, target: str | None = None, **fields: Any) -> dict[str, Any]:
        event: dict[str, Any] = {"ts": time.time(), "kind": kind}
        if target is not None:
            event["target"] = target
        event.update(fields)
        event = self._redactor.data(event)
        line = json.dumps(event, default=str, separators=(",", ":")) + "\n"
        with self._lock:
            self._unwritten.append(line)
            try:
                self._append("".join(self._unwritten))
            except OSError as e:
                if not is_write_failure(e):
                    raise
                state_writes.failed(self.path.name, e)
            else:
                self._unwritten.clear()
                state_writes.ok(self.path.name)
        for callback in self._subscribers:
            callback(event)
        return event

    def _append(self, text: str) -> None:
        if self.path.exists() and self.path.stat().st_size + len(text) > self._max_bytes:
            self.path.replace(self.path.with_name(self.path.name + ".1"))
            private_file(self.path)
        data = text.encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, defaults.FILE_MODE)
        try:
            start = os.lseek(fd, 0, os.SEEK_END)
            try:
                done = 0
                while done < len(data):
                    done += os.write(fd, data[done:])
            except OSError:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, start)  # no half line for a reader to choke on
                raise
        finally:
            os.close(fd)


def read_events(path: Path) -> list[dict[str, Any]]:
    """All events in `path` (tests, bench and the demo read the stream this way)."""
    if not path.exists():
        return []
    out: list[dict[str, Any]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            out.append(json.loads(line))
    return out
