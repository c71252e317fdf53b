"""`clawmedic logs TARGET`: the target's own output and clawmedic's lines about it, interleaved by time, redacted.

Sources, each a file the daemon already writes (no second bookkeeping):
- the target's console output (`<state>/targets/NAME/output.log`, managed targets) and its own `log_file`;
- the daemon's log file (`[daemon.logfile]`, JSON lines): the lines whose `target` field is NAME (older lines without
  the field: those that start with "NAME: ").

A console line carries no time of its own unless it starts with an ISO timestamp: it takes the time of the line
before it (the launcher's "--- clawmedic: starting at …" marker opens every launch), so a launch's output stays
together and after the clawmedic line that launched it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from clawmedic.config import LoadedConfig
from clawmedic.logfiles import log_file_path

_ISO = re.compile(r"^\[?(\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})?)")
_MARKER = re.compile(  # the launcher's (and the guardian's) line before each launch, in local time
    r"^--- clawmedic(?: guardian)?: starting(?: the daemon)? at (\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}) ---"
)
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
READ_LIMIT = 4 * 1024 * 1024  # bytes read from the end of each file: a day of a chatty gateway, not its whole history


@dataclass(frozen=True)
class Line:
    ts: float
    source: str  # "output", "log" (the target's log_file) or "clawmedic"
    text: str

    def render(self) -> str:
        when = dt.datetime.fromtimestamp(self.ts).strftime("%Y-%m-%d %H:%M:%S") if self.ts else " " * 19
        return f"{when}  {self.source:<9}  {self.text}"


def _parse_time(text: str) -> float | None:
    if m := _MARKER.match(text):
        return dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").timestamp()
    if m := _ISO.match(text):
        try:
            t = dt.datetime.fromisoformat(m.group(1).replace("Z", "+00:00"))
        except ValueError:
            return None
        return t.timestamp()
    return None


def _read_from(path: Path, offset: int) -> tuple[str, int]:
    """Text from byte `offset` (at most READ_LIMIT from the end), and the offset of the end."""
    try:
        with path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            start = max(0 if size < offset else offset, size - READ_LIMIT)  # smaller: rotated, start over
            f.seek(start)
            data = f.read()
    except OSError:
        return "", offset
    return data.decode("utf-8", "replace"), start + len(data)


@dataclass
class Source:
    """One file read incrementally: its lines are parsed by `parse` (text → Line or None)."""

    path: Path
    name: str
    offset: int = 0
    last_ts: float = 0.0
    partial: str = ""

    def read(self, target: str) -> list[Line]:
        text, self.offset = _read_from(self.path, self.offset)
        text = self.partial + text
        lines = text.split("\n")
        self.partial = lines.pop()  # an unfinished last line waits for its end
        out = []
        for raw in lines:
            line = self._parse(_ANSI.sub("", raw.rstrip("\r")), target)
            if line is not None:
                out.append(line)
        return out

    def _parse(self, raw: str, target: str) -> Line | None:
        if not raw.strip():
            return None
        if self.name == "clawmedic":
            return _daemon_line(raw, target)
        if self.name == "log":  # the gateway's own JSON-lines log: its `time` field
            try:
                entry = json.loads(raw)
                ts = _parse_time(str(entry.get("time", ""))) if isinstance(entry, dict) else None
            except ValueError:
                ts = None
            if ts is not None:
                self.last_ts = ts
            return Line(self.last_ts, "log", raw)
        ts = _parse_time(raw)
        if ts is not None:
            self.last_ts = ts
        return Line(self.last_ts, "output", raw)


def _daemon_line(raw: str, target: str) -> Line | None:
    try:
        entry = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(entry, dict):
        return None
    message = str(entry.get("message", ""))
    about = entry.get("target")
    if about != target and not (about is None and message.startswith(f"{target}: ")):
        return None
    extra = " ".join(f"{k}={entry[k]}" for k in ("state", "incident") if entry.get(k) is not None)
    level = str(entry.get("level", "info"))
    text = f"{level:<7} {message}" + (f"  [{extra}]" if extra else "")
    try:
        ts = float(entry.get("ts", 0.0))
    except (TypeError, ValueError):
        ts = 0.0
    return Line(ts, "clawmedic", text)


def sources(loaded: LoadedConfig, target: str) -> list[Source]:
    cfg = loaded.targets[target]
    out = [Source(loaded.state_dir / "targets" / target / "output.log", "output")]
    if cfg.log_file is not None:
        out.append(Source(cfg.log_file, "log"))
    if (daemon_log := log_file_path(loaded)) is not None:
        out.append(Source(daemon_log, "clawmedic"))
    return out


def merged(lines: list[Line]) -> list[Line]:
    """By time; a stable sort keeps each file's own order among lines of one second."""
    return sorted(lines, key=lambda ln: ln.ts)


def last(loaded: LoadedConfig, target: str, n: int) -> tuple[list[Source], list[Line]]:
    """The last `n` lines of every source together, redacted; and the sources, positioned at their ends."""
    srcs = sources(loaded, target)
    lines = merged([ln for s in srcs for ln in s.read(target)])
    redact = loaded.redactor.text
    return srcs, [Line(ln.ts, ln.source, redact(ln.text)) for ln in lines[-n:]] if n > 0 else []


def follow(
    loaded: LoadedConfig, target: str, srcs: list[Source], *, sleep: Callable[[float], None], interval_s: float = 0.5
) -> Iterator[Line]:
    """New lines as they are written (each poll's batch in time order), redacted. Runs until interrupted."""
    redact = loaded.redactor.text
    while True:
        for ln in merged([ln for s in srcs for ln in s.read(target)]):
            yield Line(ln.ts, ln.source, redact(ln.text))
        sleep(interval_s)
