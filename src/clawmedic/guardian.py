"""`clawmedic guardian`: the watcher watched. Run by the OS on a timer (systemd timer, launchd StartInterval, cron),
it checks the daemon of one config and restarts it when it is dead or stale; when it cannot, it alerts a human
through the notification URLs directly (and queues the alert on disk if a receiver is down).

How the daemon is judged:

- **dead**: nobody holds the state folder's lock (`daemon.lock`; the OS frees it when the process dies, even by
  SIGKILL). → start it.
- **stale**: the lock is held but `status.json` — rewritten every 5 s by the daemon, its heartbeat — is older than
  `stale_after_s` (a hung event loop, a SIGSTOPped process). → stop it (SIGTERM, then SIGKILL), then start it.
- **starting**: the lock is held and the daemon is younger than `stale_after_s` but has not written its status yet.
  → nothing.
- **healthy**: the lock is held and the heartbeat is fresh. → nothing.

Starting means `clawmedic run --config C`, detached in its own session (so it outlives the guardian) with its output
appended to `<state>/logs/daemon-console.log` (0600); or, under a service manager, the `restart_command` given
(e.g. `systemctl --user restart clawmedic.service`), so the daemon stays in its unit. Supervised gateways are not
touched: they run in their own sessions and the new daemon adopts them.

Exit codes: 0 the daemon is running (healthy or starting, or restarted now); 1 it is dead or stale and could not be
restarted (a human was alerted, or the alert was queued); 2 bad config or usage.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import psutil
from filelock import FileLock, Timeout

from clawmedic import defaults
from clawmedic.config import LoadedConfig
from clawmedic.paths import ensure_private_dir
from clawmedic.process.launcher import tail_lines
from clawmedic.store.events import EventLog
from clawmedic.store.files import private_file

DaemonState = Literal["healthy", "starting", "stale", "dead"]
_STOP_TIMEOUT_S = 10.0  # a daemon that ignores SIGTERM this long is hung: SIGKILL
_CONSOLE_MAX_BYTES = 5 * 1024 * 1024  # the console log of guardian-started daemons is moved to .1 past this size
_RESTART_COMMAND_TIMEOUT_S = 60.0  # `systemctl --user restart` returns in seconds


@dataclass(frozen=True)
class DaemonHealth:
    state: DaemonState
    pid: int | None
    heartbeat_age_s: float | None
    detail: str


@dataclass
class GuardianReport:
    before: DaemonHealth
    action: Literal["none", "restarted", "failed", "busy"]
    detail: str
    new_pid: int | None = None
    alerted: list[dict[str, Any]] = field(default_factory=list)
    console_log: str | None = None

    @property
    def ok(self) -> bool:
        return self.action in ("none", "restarted", "busy")

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.before.state,
            "pid": self.before.pid,
            "heartbeat_age_s": self.before.heartbeat_age_s,
            "checked": self.before.detail,
            "action": self.action,
            "detail": self.detail,
            "new_pid": self.new_pid,
            "alerted": self.alerted,
            "console_log": self.console_log,
        }


# --- looking ---------------------------------------------------------------------------------------------------------


def lock_held(state_dir: Path) -> bool:
    """True when a process holds the daemon lock of `state_dir` (a daemon is running or starting)."""
    if not (state_dir / "daemon.lock").exists():
        return False
    lock = FileLock(state_dir / "daemon.lock", mode=defaults.FILE_MODE)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    lock.release()
    return False


def _pid_file(state_dir: Path) -> int | None:
    try:
        return int((state_dir / "daemon.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def _status(state_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((state_dir / "status.json").read_text())
    except (OSError, ValueError):
        return {}
    daemon = data.get("daemon") if isinstance(data, dict) else None
    return daemon if isinstance(daemon, dict) else {}


def check(state_dir: Path, stale_after_s: float, now: float | None = None) -> DaemonHealth:
    """Judge the daemon of `state_dir` from its lock, PID file and heartbeat (status.json)."""
    now = time.time() if now is None else now
    pid = _pid_file(state_dir)
    if not lock_held(state_dir):
        gone = f"; pid {pid} of daemon.pid is gone" if pid is not None else ""
        return DaemonHealth("dead", None, None, f"no clawmedic daemon holds {state_dir / 'daemon.lock'}{gone}")
    if pid is None:
        return DaemonHealth("starting", None, None, "the lock is held but daemon.pid is not written yet")
    status = _status(state_dir)
    updated = status.get("updated_at")
    if status.get("pid") == pid and isinstance(updated, int | float):
        age = now - float(updated)
        if age > stale_after_s:
            return DaemonHealth("stale", pid, age, f"pid {pid} last wrote its heartbeat {age:.0f} s ago")
        return DaemonHealth("healthy", pid, age, f"pid {pid}, heartbeat {age:.1f} s old")
    try:
        running_for = now - psutil.Process(pid).create_time()
    except psutil.Error:
        running_for = 0.0  # it is exiting right now: look again next round
    if running_for < stale_after_s:
        return DaemonHealth("starting", pid, None, f"pid {pid} started {running_for:.0f} s ago, no heartbeat yet")
    return DaemonHealth("stale", pid, None, f"pid {pid} has run {running_for:.0f} s without writing a heartbeat")


# --- acting ----------------------------------------------------------------------------------------------------------


def clawmedic_command() -> list[str]:
    """How to run this very clawmedic: the script beside our interpreter, else on PATH, else `python -m`."""
    beside = Path(sys.executable).parent / "clawmedic"
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    found = shutil.which("clawmedic")
    return [found] if found else [sys.executable, "-m", "clawmedic"]


def console_log_path(state_dir: Path) -> Path:
    return state_dir / "logs" / "daemon-console.log"


def _is_clawmedic_daemon(proc: psutil.Process) -> bool:
    try:
        cmd = proc.cmdline()
    except psutil.Error:
        return False
    return "run" in cmd and any(Path(a).name == "clawmedic" or a == "clawmedic" for a in cmd)


def stop_stale(pid: int, timeout_s: float = _STOP_TIMEOUT_S) -> str:
    """Stop a stale daemon: SIGTERM (+SIGCONT, so a stopped one can act on it), then SIGKILL."""
    try:
        proc = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return f"pid {pid} was already gone"
    # We may kill it because clawmedic owns it: `pid` is what the daemon holding this state folder's lock wrote in
    # daemon.pid — a clawmedic daemon — and its command line says so too (a reused PID is never signalled).
    if not _is_clawmedic_daemon(proc):
        return f"pid {pid} is not a clawmedic daemon; left alone"
    with contextlib.suppress(psutil.Error):
        proc.send_signal(signal.SIGTERM)
        proc.send_signal(signal.SIGCONT)
    if _gone(proc, timeout_s):
        return f"stopped pid {pid} (SIGTERM)"
    with contextlib.suppress(psutil.Error):
        proc.kill()
    _gone(proc, timeout_s)
    return f"killed pid {pid} (SIGKILL after {timeout_s:g} s)"


def _gone(proc: psutil.Process, timeout_s: float) -> bool:
    """Wait until `proc` has exited (a zombie its parent has not reaped yet counts as exited: it holds nothing)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def _rotate_console(path: Path) -> None:
    with contextlib.suppress(OSError):
        if path.stat().st_size > _CONSOLE_MAX_BYTES:
            path.replace(path.with_name(path.name + ".1"))  # our own generated log: the older .1 is replaced


def spawn_daemon(loaded: LoadedConfig) -> subprocess.Popen[bytes]:
    """`clawmedic run --config C`, detached in its own session, output appended to the console log (0600)."""
    log_path = console_log_path(loaded.state_dir)
    ensure_private_dir(log_path.parent)
    _rotate_console(log_path)
    private_file(log_path)
    cmd = [*clawmedic_command(), "run", "--config", str(loaded.source)]
    with log_path.open("ab") as out:
        out.write(
            f"\n--- clawmedic guardian: starting the daemon at {time.strftime('%Y-%m-%d %H:%M:%S')} ---\n".encode()
        )
        out.flush()
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            cwd=str(loaded.source.parent),
            start_new_session=True,
        )


def _wait_for_daemon(
    state_dir: Path, not_pid: int | None, wait_s: float, proc: subprocess.Popen[bytes] | None
) -> tuple[int | None, str]:
    """Wait until a daemon other than `not_pid` holds the lock and has written a fresh heartbeat."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return None, f"the new daemon exited at once with code {proc.returncode}"
        pid = _pid_file(state_dir)
        status = _status(state_dir)
        fresh = isinstance(status.get("updated_at"), int | float) and time.time() - status["updated_at"] < 30
        if (
            pid is not None
            and pid != not_pid
            and (proc is None or pid == proc.pid)
            and status.get("pid") == pid
            and status.get("running")
            and fresh
            and lock_held(state_dir)
        ):
            return pid, f"daemon pid {pid} is running"
        time.sleep(0.1)
    return None, f"no daemon wrote its heartbeat within {wait_s:g} s"


def guard(
    loaded: LoadedConfig,
    *,
    stale_after_s: float | None = None,
    start_wait_s: float | None = None,
    restart_command: list[str] | None = None,
    alert: Callable[[LoadedConfig, str, str], list[dict[str, Any]]] | None = None,
) -> GuardianReport:
    """Check the daemon once and act; never raises for the daemon's own failures (they are in the report)."""
    gcfg = loaded.config.daemon.guardian
    stale_after = stale_after_s if stale_after_s is not None else gcfg.stale_after_s
    wait_s = start_wait_s if start_wait_s is not None else gcfg.start_wait_s
    state_dir = ensure_private_dir(loaded.state_dir)
    busy = FileLock(state_dir / "guardian.lock", mode=defaults.FILE_MODE)
    try:
        busy.acquire(timeout=0)
    except Timeout:
        health = DaemonHealth("starting", None, None, "another guardian is at work")
        return GuardianReport(health, "busy", "another guardian is checking this state folder right now")
    try:
        return _guard(loaded, state_dir, stale_after, wait_s, restart_command, alert or alert_humans)
    finally:
        busy.release()


def _guard(
    loaded: LoadedConfig,
    state_dir: Path,
    stale_after: float,
    wait_s: float,
    restart_command: list[str] | None,
    alert: Callable[[LoadedConfig, str, str], list[dict[str, Any]]],
) -> GuardianReport:
    health = check(state_dir, stale_after)
    if health.state in ("healthy", "starting"):
        return GuardianReport(health, "none", health.detail)
    steps: list[str] = [health.detail]
    if health.state == "stale" and health.pid is not None:
        steps.append(stop_stale(health.pid))
    proc: subprocess.Popen[bytes] | None = None
    console = console_log_path(state_dir)
    if restart_command:
        try:
            done = subprocess.run(
                restart_command, capture_output=True, text=True, timeout=_RESTART_COMMAND_TIMEOUT_S, check=False
            )
            out = (done.stdout + done.stderr).strip()
            steps.append(f"`{' '.join(restart_command)}` exited {done.returncode}" + (f": {out[-300:]}" if out else ""))
        except (OSError, subprocess.TimeoutExpired) as e:
            steps.append(f"`{' '.join(restart_command)}` failed: {e}")
    else:
        try:
            proc = spawn_daemon(loaded)
            steps.append(f"started `clawmedic run` as pid {proc.pid}")
        except OSError as e:
            steps.append(f"cannot start `clawmedic run`: {e.strerror or e}")
    new_pid: int | None = None
    if proc is not None or restart_command:
        new_pid, waited = _wait_for_daemon(state_dir, health.pid, wait_s, proc)
        steps.append(waited)
    events = EventLog(state_dir / "events.jsonl", loaded.redactor)
    if new_pid is not None:
        events.emit("guardian_restarted", old_pid=health.pid, new_pid=new_pid, why=health.state, detail=health.detail)
        return GuardianReport(health, "restarted", "; ".join(steps), new_pid, console_log=str(console))
    if proc is not None and proc.poll() is None:
        with contextlib.suppress(OSError):
            proc.terminate()  # ours, just started, and not healthy: do not leave a half-started daemon behind
    tail = [loaded.redactor.text(x) for x in tail_lines(console, 20)] if proc is not None else []
    detail = "; ".join(steps)
    events.emit("guardian_failed", old_pid=health.pid, why=health.state, detail=detail)
    title = f"clawmedic: the daemon on {socket.gethostname()} is {health.state} and could not be restarted"
    body = "\n".join(
        [
            f"The clawmedic guardian found the daemon {health.state} and could not restart it — nothing is watching "
            "the gateway now.",
            "",
            f"config: {loaded.source}",
            f"what happened: {detail}",
            *(["", f"last lines of {console}:", *(f"  {x}" for x in tail)] if tail else []),
            "",
            f"start it by hand: clawmedic run --config {loaded.source}",
            f"see: clawmedic status --config {loaded.source}",
        ]
    )
    alerted = alert(loaded, title, body)
    return GuardianReport(health, "failed", detail, None, alerted, str(console))


def alert_humans(loaded: LoadedConfig, title: str, body: str) -> list[dict[str, Any]]:
    """Send the guardian's alert now, to every critical destination; queue it on disk where delivery fails."""
    from clawmedic.notify import send_now

    results = send_now(
        loaded,
        title,
        body,
        severity="critical",
        notify_type="failure",
        queue_failures_as=f"guardian:{int(time.time())}",
    )
    return [asdict(r) for r in results]
