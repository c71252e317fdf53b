"""Read-only looks at processes and ports (psutil)."""

from __future__ import annotations

from dataclasses import dataclass

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


def tree_rss(pid: int) -> int:
    """Resident memory of the process and all its descendants, in bytes."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            continue
    return total


def tree_pids(pid: int) -> set[int]:
    try:
        root = psutil.Process(pid)
        return {pid, *(c.pid for c in root.children(recursive=True))}
    except psutil.Error:
        return set()


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
