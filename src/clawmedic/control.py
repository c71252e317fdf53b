"""Maintenance requests from the command line to the daemon, through one small file in the state folder.

`clawmedic pause|resume` write `control.json` atomically, then poke the daemon through a Unix datagram (`poke`): it
reads the file at once, with no poll. A file rather than a socket for the request itself, so pausing works (and
persists) whether or not the daemon is running.

Each resume and restart request carries a sequence number per target. The daemon acknowledges the requests it has
acted on in `control-ack.json` (a file only it writes), so a command waits for the daemon's answer instead of
guessing, and a request written while no daemon ran — or just before one restarted — is honoured when it starts.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from clawmedic.store.files import atomic_write

if TYPE_CHECKING:
    from filelock import FileLock


@dataclass
class Control:
    paused: dict[str, float] = field(default_factory=dict)  # target -> when it was paused
    resume_seq: dict[str, int] = field(default_factory=dict)  # bumped by every `resume`, to retry after gave_up
    restart_seq: dict[str, int] = field(default_factory=dict)  # bumped by every requested restart
    reload_seq: int = 0  # bumped by every `clawmedic reload`: read the config file again
    paused_until: dict[str, float] = field(default_factory=dict)  # target -> when its pause ends (`pause --for`)

    def expired_pauses(self, now: float) -> list[str]:
        """Targets paused for a while (`pause --for`) whose time is up: the daemon resumes them."""
        return [t for t, until in self.paused_until.items() if t in self.paused and until <= now]


def control_path(state_dir: Path) -> Path:
    return state_dir / "control.json"


def read_control(state_dir: Path) -> Control:
    try:
        raw = json.loads(control_path(state_dir).read_text())
        return Control(
            dict(raw.get("paused", {})),
            {k: int(v) for k, v in raw.get("resume_seq", {}).items()},
            {k: int(v) for k, v in raw.get("restart_seq", {}).items()},
            int(raw.get("reload_seq", 0)),
            {k: float(v) for k, v in raw.get("paused_until", {}).items()},
        )
    except (OSError, ValueError, AttributeError, TypeError, OverflowError):  # JSON allows Infinity: int(inf)
        return Control()


def _write(state_dir: Path, c: Control) -> None:
    data = {
        "paused": c.paused,
        "paused_until": c.paused_until,
        "resume_seq": c.resume_seq,
        "restart_seq": c.restart_seq,
        "reload_seq": c.reload_seq,
    }
    atomic_write(control_path(state_dir), json.dumps(data, indent=1))
    poke(state_dir)


def _locked(state_dir: Path) -> FileLock:
    """Two commands at once must not lose each other's request in the read-modify-write."""
    from filelock import FileLock  # only writers lock: `status` reads without loading it (and the asyncio it imports)

    return FileLock(state_dir / "control.lock", mode=0o600)


def pause(state_dir: Path, targets: list[str], *, until: float | None = None) -> None:
    """Pause `targets`: until `clawmedic resume`, or, with `until`, until then (a later `pause` sets a new end; one
    without `--for` makes it open-ended)."""
    with _locked(state_dir):
        c = read_control(state_dir)
        for t in targets:
            c.paused.setdefault(t, time.time())
            if until is None:
                c.paused_until.pop(t, None)
            else:
                c.paused_until[t] = until
        _write(state_dir, c)


def resume(state_dir: Path, targets: list[str]) -> None:
    with _locked(state_dir):
        c = read_control(state_dir)
        for t in targets:
            c.paused.pop(t, None)
            c.paused_until.pop(t, None)
            c.resume_seq[t] = c.resume_seq.get(t, 0) + 1
        _write(state_dir, c)


def request_restart(state_dir: Path, targets: list[str], *, resume: bool = False) -> dict[str, int]:
    """Ask the daemon to restart `targets` (not counted as a failure); with `resume`, also leave maintenance or
    gave-up first. Returns each target's request number, to wait for its acknowledgement (`read_acks`)."""
    with _locked(state_dir):
        c = read_control(state_dir)
        for t in targets:
            if resume:
                c.paused.pop(t, None)
                c.paused_until.pop(t, None)
                c.resume_seq[t] = c.resume_seq.get(t, 0) + 1
            c.restart_seq[t] = c.restart_seq.get(t, 0) + 1
        _write(state_dir, c)
        return {t: c.restart_seq[t] for t in targets}


def request_reload(state_dir: Path) -> int:
    """Ask the daemon to read its config file again. Returns the request's number, to wait for its
    acknowledgement (`Acks.reload_seq`, with the outcome in `reload_ok` and `reload_message`)."""
    with _locked(state_dir):
        c = read_control(state_dir)
        c.reload_seq += 1
        _write(state_dir, c)
        return c.reload_seq


# --- the daemon's side: acknowledgements ----------------------------------------------------------------------


@dataclass
class Acks:
    """The requests a daemon has acted on: the highest sequence number per target, and when."""

    resume_seq: dict[str, int] = field(default_factory=dict)
    restart_seq: dict[str, int] = field(default_factory=dict)
    restart_at: dict[str, float] = field(default_factory=dict)  # target -> when its last restart request was taken
    restart_state: dict[str, str] = field(default_factory=dict)  # target -> its ladder state right after taking it
    daemon_pid: int | None = None
    reload_seq: int = 0  # the last reload request taken
    reload_ok: bool = True  # its outcome: False when the new config was refused (the previous one still runs)
    reload_message: str = ""  # one sentence: what changed, or why the new config was refused

    def pending_reload(self, c: Control) -> bool:
        return c.reload_seq > self.reload_seq

    def pending_restart(self, c: Control, target: str) -> bool:
        return c.restart_seq.get(target, 0) > self.restart_seq.get(target, 0)

    def pending_resume(self, c: Control, target: str) -> bool:
        return c.resume_seq.get(target, 0) > self.resume_seq.get(target, 0)


def ack_path(state_dir: Path) -> Path:
    return state_dir / "control-ack.json"


def read_acks(state_dir: Path) -> Acks | None:
    """The daemon's acknowledgements, or None when no daemon of this version has run in this state folder."""
    try:
        raw = json.loads(ack_path(state_dir).read_text())
        pid = raw.get("daemon_pid")
        return Acks(
            {k: int(v) for k, v in raw.get("resume_seq", {}).items()},
            {k: int(v) for k, v in raw.get("restart_seq", {}).items()},
            {k: float(v) for k, v in raw.get("restart_at", {}).items()},
            {k: str(v) for k, v in raw.get("restart_state", {}).items()},
            int(pid) if pid is not None else None,
            int(raw.get("reload_seq", 0)),
            bool(raw.get("reload_ok", True)),
            str(raw.get("reload_message", "")),
        )
    except (OSError, ValueError, AttributeError, TypeError, OverflowError):  # JSON allows Infinity: int(inf)
        return None


def write_acks(state_dir: Path, acks: Acks) -> None:
    data = {
        "daemon_pid": acks.daemon_pid,
        "resume_seq": acks.resume_seq,
        "restart_seq": acks.restart_seq,
        "restart_at": acks.restart_at,
        "restart_state": acks.restart_state,
        "reload_seq": acks.reload_seq,
        "reload_ok": acks.reload_ok,
        "reload_message": acks.reload_message,
    }
    atomic_write(ack_path(state_dir), json.dumps(data, indent=1))


def file_version(state_dir: Path) -> tuple[int, int] | None:
    """Changes whenever `control.json` is rewritten (each write is a rename: a new inode), even within one
    mtime tick."""
    try:
        st = control_path(state_dir).stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns


# --- waking the daemon: a datagram instead of a poll -----------------------------------------------------------------


def _address(state_dir: Path) -> str:
    """The daemon's wake-up socket: an abstract Unix address (Linux) named after the state folder — no file to go
    stale, no 108-byte path limit. It carries no request, only "look at control.json now"."""
    digest = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:32]
    return f"\0clawmedic-control-{digest}"


def poke(state_dir: Path) -> None:
    """Tell a running daemon that `control.json` changed. No daemon (or no Linux): nothing happens — it reads the
    file when it starts, and a daemon that could not listen looks at it every CONTROL_RECHECK_S anyway."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.setblocking(False)
        s.sendto(b"control", _address(state_dir))


def listen(state_dir: Path, on_poke: Callable[[], None]) -> Callable[[], None] | None:
    """Call `on_poke` on the running event loop whenever a command pokes (`poke`). Returns the function that stops
    listening, or None when there is no wake-up socket (not Linux; the address taken)."""
    if not sys.platform.startswith("linux"):
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(_address(state_dir))
    except OSError:
        sock.close()
        return None
    sock.setblocking(False)
    import asyncio  # only the daemon listens: the commands that poke never load asyncio

    loop = asyncio.get_running_loop()

    def readable() -> None:
        with contextlib.suppress(OSError):
            while sock.recv(64):  # drain: several pokes are one look at the file
                pass
        on_poke()

    loop.add_reader(sock.fileno(), readable)

    def close() -> None:
        loop.remove_reader(sock.fileno())
        sock.close()

    return close
