"""Restarting a target from the command line (`fix restart`, `fix nuclear`, `rollback`).

- A daemon supervises the state folder: the command writes a numbered restart request (`control.py`), waits for the
  daemon to acknowledge it, then for a *new* process (another PID or start time than before) to be live and
  healthy. Success is never reported before that.
- No daemon runs: the command restarts a managed target itself, the way the daemon launches it (`launch_spec`, the
  same `Launcher`: own session, output log, process record, identity marker), and stops only this target's own
  process (its record: PID + start time, or its marker). A daemon started later adopts what it launched.

Outcomes are data (`Outcome`); progress goes to a callback, on change and at least every
`RESTART_PROGRESS_EVERY_S` while waiting.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from clawmedic import control, defaults
from clawmedic.config import LoadedConfig
from clawmedic.daemon import events_path, status_path
from clawmedic.errors import AlreadyRunning, NotOurProcess
from clawmedic.paths import ensure_private_dir
from clawmedic.process import inspect
from clawmedic.process.launcher import Handle, Launcher, ProcessRecord
from clawmedic.store.events import EventLog
from clawmedic.store.lock import DaemonLock, holder_pid
from clawmedic.supervisor import launch_spec

Progress = Callable[[str], None]
_POLL_S = 0.25  # how often the command looks at the acknowledgement, the process record and the status file
_PORT_RELEASE_S = 5.0  # after our process exited, the kernel frees its listening socket at once; allow a little


@dataclass(frozen=True)
class Outcome:
    ok: bool
    detail: str  # one sentence for the human
    pid: int | None = None  # the new process, when there is one


@dataclass(frozen=True)
class DaemonRequest:
    """A restart request written for the running daemon, and what ran before it."""

    seq: int
    daemon_pid: int
    requested_at: float
    before: ProcessRecord | None


def live(loaded: LoadedConfig, name: str) -> bool:
    """The target's liveness probe, once, from this process."""
    probe = loaded.targets[name].liveness
    assert probe.url is not None
    try:
        r = httpx.get(probe.url, timeout=probe.timeout_s, trust_env=False)
    except httpx.HTTPError:
        return False
    if r.status_code != probe.expect_status:
        return False
    if probe.expect_json:
        try:
            body = r.json()
        except ValueError:
            return False
        return isinstance(body, dict) and all(body.get(k) == v for k, v in probe.expect_json.items())
    return True


def _launcher(loaded: LoadedConfig, name: str) -> Launcher:
    return Launcher(loaded.state_dir / "targets" / name, loaded.redactor.text)


def _recorded(loaded: LoadedConfig, name: str) -> ProcessRecord | None:
    """The daemon's record of the target's process, if that very process runs. Read only: while a daemon runs,
    its files are its own (`Launcher.adopt` would rewrite a missing record)."""
    try:
        record = ProcessRecord.read(_launcher(loaded, name).record_path)
    except (OSError, ValueError, TypeError):
        return None
    return record if Handle(record, None).is_ours() and inspect.is_alive(record.pid) else None


def _status(state_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads(status_path(state_dir).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _target_status(state_dir: Path, name: str) -> dict[str, Any]:
    entry = _status(state_dir).get("targets", {}).get(name, {})
    return entry if isinstance(entry, dict) else {}


def how_to_start_daemon(loaded: LoadedConfig) -> str:
    """How to start supervision again: the installed service if `clawmedic install` put one in place."""
    from clawmedic import install_units

    manifest = install_units.read_manifest(loaded.state_dir) or {}
    run = f"`clawmedic run --config {loaded.source}`"
    units = manifest.get("units", [])
    if manifest.get("platform") == "systemd" and install_units.DAEMON_UNIT in units:
        return f"`systemctl --user start {install_units.DAEMON_UNIT}` (the installed service), or {run}"
    if manifest.get("platform") == "launchd" and install_units.DAEMON_LABEL in units:
        return f"`launchctl kickstart gui/{os.getuid()}/{install_units.DAEMON_LABEL}` (the installed agent), or {run}"
    return f"{run}, or install it as a service with `clawmedic install`"


def supervision(loaded: LoadedConfig) -> tuple[bool, str]:
    """Whether a daemon supervises this state folder, and since when, as a sentence."""
    pid = holder_pid(loaded.state_dir)
    daemon = _status(loaded.state_dir).get("daemon", {})
    if pid is not None:
        started = daemon.get("started_at") if daemon.get("pid") == pid else None
        since = f" since {_when(started)}" if isinstance(started, int | float) else ""
        return True, f"clawmedic daemon pid {pid} is supervising{since}"
    last = daemon.get("updated_at")
    stopped = f" (the last one stopped at {_when(last)})" if isinstance(last, int | float) else ""
    return False, f"no clawmedic daemon is supervising{stopped}: start one with {how_to_start_daemon(loaded)}"


def _when(ts: float) -> str:
    ago = max(0.0, time.time() - ts)
    span = f"{ago:.0f} s" if ago < 120 else f"{ago / 60:.0f} min" if ago < 7200 else f"{ago / 3600:.1f} h"
    return f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(ts))} ({span} ago)"


# --- through the daemon ---------------------------------------------------------------------------------------


def ask_daemon(loaded: LoadedConfig, name: str) -> DaemonRequest | None:
    """Write a restart request for the running daemon (resuming the target first if it is paused or gave up);
    None when no daemon runs."""
    daemon_pid = holder_pid(loaded.state_dir)
    if daemon_pid is None:
        return None
    state = _target_status(loaded.state_dir, name).get("state")
    before = _recorded(loaded, name) if loaded.targets[name].start.mode == "managed" else None
    requested_at = time.time()
    resume = state in ("gave_up", "escalated", "maintenance")
    seq = control.request_restart(loaded.state_dir, [name], resume=resume)[name]
    return DaemonRequest(seq, daemon_pid, requested_at, before)


def _same(a: ProcessRecord | None, b: ProcessRecord | None) -> bool:
    return a is not None and b is not None and a.pid == b.pid and abs(a.create_time - b.create_time) < 1.0


def await_daemon_restart(
    loaded: LoadedConfig, name: str, req: DaemonRequest, progress: Progress, *, timeout_s: float | None = None
) -> Outcome:
    """Wait until the daemon acknowledged `req` and a new process of the target is live and healthy."""
    cfg = loaded.targets[name]
    state_dir = loaded.state_dir
    managed = cfg.start.mode == "managed"
    limit = timeout_s or (cfg.limits.stop_timeout_s + cfg.limits.startup_timeout_s + defaults.RESTART_WAIT_MARGIN_S)
    t0 = ack_t0 = time.monotonic()
    daemon_pid = req.daemon_pid
    gone_since: float | None = None  # the daemon's lock has been free since (a service manager may restart it)
    last_said = t0
    said: set[str] = set()
    acked = False
    new: ProcessRecord | None = None
    waiting_for = "the daemon to take the request"
    was = f" (was pid {req.before.pid})" if req.before else ""

    def say(key: str, message: str) -> None:
        nonlocal last_said
        if key not in said:
            said.add(key)
            last_said = time.monotonic()
            progress(message)

    while True:
        now = time.monotonic()
        if not acked:
            acks = control.read_acks(state_dir)
            if acks is not None and acks.restart_seq.get(name, 0) >= req.seq:
                acked = True
                waiting_for = "a new process" if managed else "the restart"
                say("ack", f"the daemon (pid {daemon_pid}) took restart request #{req.seq}")
                if acks.restart_state.get(name) == "retrying" and req.before is not None:
                    new = req.before  # its slow retry had just launched this process: that is the fresh start
                    waiting_for = f"pid {new.pid} (launched by the daemon's retry) to be live and healthy"
                    say("retrying", f"the daemon is already retrying {name} with pid {new.pid}")
            elif now - ack_t0 > defaults.CONTROL_ACK_TIMEOUT_S:
                return Outcome(
                    False,
                    f"the clawmedic daemon (pid {daemon_pid}) did not take the restart request within "
                    f"{defaults.CONTROL_ACK_TIMEOUT_S:g} s: it may be hung (see `clawmedic status`); nothing was "
                    "restarted",
                )
        if acked:
            st = _target_status(state_dir, name)
            state = st.get("state")
            if state and float(st.get("since") or 0) >= req.requested_at:  # not the state from before the request
                say(f"state:{state}:{new.pid if new else ''}", f"{name} is {state}")
            if managed and new is None:
                current = _recorded(loaded, name)
                if current is not None and not _same(current, req.before):
                    new = current
                    waiting_for = f"pid {new.pid} to be live and healthy"
                    say("new", f"new process pid {new.pid} started{was}")
            fresh = new is not None if managed else float(st.get("since") or 0) >= req.requested_at
            settled = state in ("healthy", "probation") and (new is None or st.get("pid") == new.pid)
            if fresh and settled and live(loaded, name):
                what = f": new pid {new.pid}" if new is not None else ""
                what += f", was pid {req.before.pid}" if new is not None and req.before and new != req.before else ""
                return Outcome(True, f"{name} restarted and is healthy{what}", new.pid if new else None)
            if state == "gave_up" and float(st.get("since") or 0) >= req.requested_at:
                exit_ = st.get("last_exit") or {}
                why = f": last exit code {exit_.get('code')} ({exit_.get('kind')})" if exit_ else ""
                return Outcome(False, f"the daemon restarted {name} but gave up on it{why}; see `clawmedic incidents`")
        holder = holder_pid(state_dir)
        gone_since = (gone_since or now) if holder is None else None
        if gone_since is not None and now - gone_since > defaults.CONTROL_ACK_TIMEOUT_S:  # not restarted by anyone
            return Outcome(
                False,
                f"the clawmedic daemon (pid {daemon_pid}) stopped while waiting for {waiting_for}: run the "
                f"command again (with no daemon running it restarts {name} itself)",
            )
        if holder is not None and holder != daemon_pid:  # restarted (service manager, guardian): it honours the request
            daemon_pid, ack_t0 = holder, now
            say(f"daemon:{holder}", f"the clawmedic daemon restarted (now pid {holder}); it takes the request at start")
        if now - t0 > limit:
            return Outcome(False, f"{name} did not come back within {limit:g} s: still waiting for {waiting_for}")
        if now - last_said >= defaults.RESTART_PROGRESS_EVERY_S:
            last_said = now
            progress(f"waiting for {waiting_for} ({now - t0:.0f} s)")
        time.sleep(_POLL_S)


# --- without a daemon ---------------------------------------------------------------------------------------


def restart_unsupervised(loaded: LoadedConfig, name: str, progress: Progress) -> Outcome | None:
    """Restart a managed target with no daemon running: stop its own process, launch it as the daemon would,
    wait until it is live. None when a daemon took the state folder meanwhile (ask that one instead)."""
    cfg = loaded.targets[name]
    state_dir = ensure_private_dir(loaded.state_dir)
    launcher = _launcher(loaded, name)
    events = EventLog(events_path(state_dir), loaded.redactor)
    lock = _Lock(state_dir)  # held while the process changes hands: a daemon starting now would launch a twin
    try:
        lock.acquire()
    except AlreadyRunning:
        return None
    try:
        old = launcher.adopt()
        if old is not None:
            progress(f"stopping {name}'s own process, pid {old.pid} (launched by clawmedic: its record or marker)")
            try:
                code, killed = asyncio.run(old.stop(cfg.limits.stop_timeout_s))
            except NotOurProcess as e:
                return Outcome(False, f"not restarting {name}: {e}")
            how = "SIGKILL after the stop timeout" if killed else "SIGTERM"
            events.emit("stopped", name, pid=old.pid, code=code, sigkill=killed, by="clawmedic fix (no daemon)")
            progress(f"pid {old.pid} stopped ({how})")
        else:
            progress(f"no process clawmedic launched for {name} is running")
        if cfg.port is not None:
            owner = _port_owner_after(cfg.port, waited=old is not None)
            if owner is not None:
                return Outcome(
                    False,
                    f"port {cfg.port} is held by {owner.describe()}, which is not {name}'s own process: not launching "
                    "a second one (`clawmedic fix port` frees it from a stale gateway of this target)",
                )
        spec = launch_spec(loaded, name)
        return asyncio.run(
            _launch_and_wait(loaded, name, launcher, spec.command, spec.env, spec.cwd, events, lock, progress)
        )
    finally:
        lock.release()


class _Lock(DaemonLock):
    """The daemon's lock, held by this command only until the new process is recorded: a daemon started while it
    waits for liveness adopts that process."""

    held = False

    def acquire(self) -> None:
        super().acquire()
        self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            super().release()


def _port_owner_after(port: int, *, waited: bool) -> inspect.PortOwner | None:
    deadline = time.monotonic() + (_PORT_RELEASE_S if waited else 0.0)
    while True:
        owner = inspect.port_owner(port)
        if owner is None or time.monotonic() >= deadline:
            return owner
        time.sleep(0.1)


async def _launch_and_wait(
    loaded: LoadedConfig,
    name: str,
    launcher: Launcher,
    command: list[str],
    env: dict[str, str],
    cwd: Path | None,
    events: EventLog,
    lock: _Lock,
    progress: Progress,
) -> Outcome:
    cfg = loaded.targets[name]
    try:
        handle = await launcher.spawn(command, env, cwd)
    except OSError as e:
        return Outcome(False, f"cannot start {command[0]}: {e.strerror or e}")
    finally:
        lock.release()
    reason = "clawmedic fix restart: no daemon running"
    events.emit("launched", name, pid=handle.pid, reason=reason, by="cli")
    progress(f"launched pid {handle.pid} in its own session (output in {launcher.log_path})")
    exited = asyncio.ensure_future(handle.wait())
    t0 = time.monotonic()
    last_said = t0
    try:
        while True:
            if await asyncio.to_thread(live, loaded, name):
                took = time.monotonic() - t0
                return Outcome(
                    True, f"{name} restarted and is live (new pid {handle.pid}, after {took:.0f} s)", handle.pid
                )
            if exited.done():
                code = exited.result()
                tail = [ln for ln in handle.output_tail(40) if ln.strip() and not ln.startswith("---")]
                said = f": {loaded.redactor.text(tail[-1])[-300:]}" if tail else ""
                return Outcome(False, f"{name} (pid {handle.pid}) exited with code {code} while starting{said}")
            elapsed = time.monotonic() - t0
            if elapsed > cfg.limits.startup_timeout_s:
                return Outcome(
                    False,
                    f"{name} (pid {handle.pid}) is not live after {cfg.limits.startup_timeout_s:g} s; it keeps running "
                    f"(see {launcher.log_path})",
                    handle.pid,
                )
            if time.monotonic() - last_said >= defaults.RESTART_PROGRESS_EVERY_S:
                last_said = time.monotonic()
                progress(f"waiting for pid {handle.pid} to be live ({elapsed:.0f} s)")
            await asyncio.sleep(_POLL_S)
    finally:
        exited.cancel()
