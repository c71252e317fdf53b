"""Read-only looks at processes and ports (psutil)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import psutil


@dataclass(frozen=True)
class PortOwner:
    pid: int | None  # None when the listener's process cannot be seen (another user's)
    cmdline: str

    def describe(self) -> str:
        who = f"pid {self.pid}" if self.pid else "a process clawmedic cannot see"
        return f"{who} ({self.cmdline})" if self.cmdline else who


def is_alive(pid: int) -> bool:
    try:
        p = psutil.Process(pid)
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def is_stopped(pid: int) -> bool:
    """True when the process is stopped (SIGSTOP, or traced): it still accepts TCP but cannot answer."""
    try:
        return psutil.Process(pid).status() in (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP)
    except psutil.Error:
        return False


def _descendants(pid: int) -> list[int] | None:
    """The process's descendants from Linux's /proc/PID/task/TID/children — reads only the tree itself, where
    psutil's `children(recursive=True)` reads every process on the machine (200 targets' memory checks did that
    200 times every 15 s). None where the kernel does not offer the file (then psutil does it)."""
    found: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            tasks = list(Path(f"/proc/{p}/task").iterdir())
        except OSError:
            if p == pid:
                return None  # no /proc (not Linux), or not ours to read: psutil decides
            continue
        for task in tasks:
            try:
                kids = [int(x) for x in (task / "children").read_bytes().split()]
            except FileNotFoundError:
                if p == pid and task.name == str(pid):
                    return None  # a kernel without CONFIG_PROC_CHILDREN
                continue
            except OSError:
                continue
            found.extend(kids)
            todo.extend(kids)
    return found


def tree_pids(pid: int) -> set[int]:
    """The process and all its descendants (empty when it is gone)."""
    if not psutil.pid_exists(pid):
        return set()
    kids = _descendants(pid)
    if kids is not None:
        return {pid, *kids}
    try:
        root = psutil.Process(pid)
        return {pid, *(c.pid for c in root.children(recursive=True))}
    except psutil.Error:
        return set()


def tree_rss(pid: int) -> int:
    """Resident memory of the process and all its descendants, in bytes."""
    total = 0
    for p in tree_pids(pid):
        try:
            total += psutil.Process(p).memory_info().rss
        except psutil.Error:
            continue
    return total


def cmdline(pid: int) -> str:
    try:
        return " ".join(psutil.Process(pid).cmdline())[:300]
    except psutil.Error:
        return ""


def port_owner(port: int) -> PortOwner | None:
    """Who listens on TCP `port` (any address), or None if nobody does."""
    try:
        conns = psutil.net_connections(kind="tcp")
    except psutil.Error:
        return None
    for c in conns:
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port:
            return PortOwner(c.pid, cmdline(c.pid) if c.pid else "")
    return None


def create_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None
