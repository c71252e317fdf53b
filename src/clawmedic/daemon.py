"""The daemon: holds the state folder's lock, runs one `TargetSupervisor` per target, writes the status file,
and applies pause/resume requests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time
from typing import Any, Protocol

from clawmedic import control, defaults
from clawmedic import reload as config_reload
from clawmedic.config import LoadedConfig, check_commands, load_config
from clawmedic.doctor import Doctor, RecordOnlyDoctor
from clawmedic.doctor.clinic import RuleDoctor
from clawmedic.doctor.learnings import LearningStore
from clawmedic.doctor.remedies import Policy, Risk
from clawmedic.errors import ClawmedicError
from clawmedic.knowngood_client import KnownGoodClient
from clawmedic.ladder.states import State
from clawmedic.paths import ensure_private_dir
from clawmedic.paths import events_path as events_path  # re-exported: the state files' paths live in `paths`
from clawmedic.paths import incidents_path as incidents_path
from clawmedic.paths import learnings_path as learnings_path
from clawmedic.paths import status_path as status_path
from clawmedic.probes import Prober
from clawmedic.process.launcher import Handle, cap_own_console
from clawmedic.sdnotify import SystemdNotifier
from clawmedic.store.events import EventLog
from clawmedic.store.files import atomic_write
from clawmedic.store.health import is_write_failure, state_writes
from clawmedic.store.incidents import IncidentStore
from clawmedic.store.lock import DaemonLock
from clawmedic.store.sqlite import MovedAside
from clawmedic.supervisor import Context, TargetSupervisor

log = logging.getLogger("clawmedic")

STATUS_REFRESH_S = 5.0  # the status file doubles as the daemon's heartbeat for the guardian


class DaemonPlugin(Protocol):
    """Something that runs beside the supervisors (notifications, a heartbeat ping…)."""

    def on_event(self, event: dict[str, Any]) -> None: ...  # every event, redacted; must not block

    async def run(self, ctx: Context) -> None: ...  # a long-running task; cancelled when the daemon stops


class Daemon:
    def __init__(
        self,
        loaded: LoadedConfig,
        doctor: Doctor | None = None,
        *,
        stop_targets_on_exit: bool | None = None,
        plugins: list[DaemonPlugin] | None = None,
    ) -> None:
        self.loaded = loaded
        self.plugins = list(plugins or [])
        self.stop_targets_on_exit = (
            loaded.config.daemon.stop_targets_on_exit if stop_targets_on_exit is None else stop_targets_on_exit
        )
        self.state_dir = ensure_private_dir(loaded.state_dir)
        self.doctor: Doctor | None = doctor
        self.started_at = time.time()
        self.supervisors: dict[str, TargetSupervisor] = {}
        self._status_dirty = asyncio.Event()
        self._writes_failing_since: float | None = None  # the state folder stopped taking writes (full disk…)
        self._stop = asyncio.Event()
        self._target_tasks: dict[str, asyncio.Task[None]] = {}  # one per supervisor; a reload replaces some
        self._failure: BaseException | None = None  # a supervisor crashed: the daemon ends with it
        self._reload_asked: str | None = None  # why (SIGHUP), until the control loop reloads
        # target -> (snapshot, redactor generation, its JSON, when encoded): status.json is assembled from these
        self._status_cache: dict[str, tuple[dict[str, Any], int, str, float]] = {}
        self._control_poked = asyncio.Event()  # a command wrote control.json (control.poke), or SIGHUP
        self._config_version = _config_version(loaded)
        self.reload_status: dict[str, Any] | None = None  # the last reload's outcome, for `status`

    def _default_doctor(
        self, incidents: IncidentStore, known_good: KnownGoodClient, learnings: LearningStore
    ) -> Doctor:
        cfg = self.loaded.config.daemon.doctor
        if not cfg.enabled:
            return RecordOnlyDoctor()
        policy = Policy(frozenset(Risk(r) for r in cfg.allow), cfg.allow_kill_foreign, self.loaded.dry_run)
        return RuleDoctor(self.loaded, incidents, known_good, learnings, policy)

    def request_stop(self) -> None:
        self._stop.set()

    def _on_sighup(self) -> None:
        self._reload_asked = "SIGHUP"  # done by the control loop, between two of its passes
        self._control_poked.set()

    async def run(self) -> None:
        lock = DaemonLock(self.state_dir)
        lock.acquire()
        state_writes.reset()
        events = EventLog(events_path(self.state_dir), self.loaded.redactor)
        self._events = events

        def moved(m: MovedAside) -> None:  # one of our own databases was unreadable: recorded, then carry on
            events.emit("state_db_moved_aside", path=str(m.path), moved_to=str(m.moved_to), error=m.error)

        incidents = IncidentStore(incidents_path(self.state_dir), self.loaded.redactor, on_moved=moved)
        prober = Prober()
        notifier = SystemdNotifier.from_env()  # Type=notify + WatchdogSec= (taken out of the children's env)
        known_good = KnownGoodClient(self.state_dir)
        learnings = LearningStore(learnings_path(self.state_dir), on_moved=moved)
        if self.doctor is None:
            self.doctor = self._default_doctor(incidents, known_good, learnings)
        if (on_event := getattr(self.doctor, "on_event", None)) is not None:
            events.subscribe(on_event)
        ctx = Context(self.loaded, events, incidents, prober, self.doctor, known_good, on_change=self._status_dirty.set)
        self.ctx = ctx
        loop = asyncio.get_running_loop()
        for plugin in self.plugins:
            events.subscribe(plugin.on_event)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)  # the default action would end the daemon
        events.emit("daemon_started", pid=os.getpid(), config=str(self.loaded.source))
        log.info(
            "clawmedic daemon %d supervising %s (state in %s)",
            os.getpid(),
            ", ".join(self.loaded.targets),
            self.state_dir,
        )
        ctl = control.read_control(self.state_dir)
        acks = control.read_acks(self.state_dir)
        if acks is None:  # no daemon of this version ran here: an older one handled what the file holds
            acks = control.Acks(dict(ctl.resume_seq), dict(ctl.restart_seq))
        acks.daemon_pid = os.getpid()
        if acks.pending_reload(ctl):  # asked while no daemon ran: this start read the config
            acks.reload_seq, acks.reload_ok, acks.reload_message = ctl.reload_seq, True, "config loaded at start."
        tasks: list[asyncio.Task[Any]] = []
        try:
            for name in self.loaded.targets:
                # A restart asked for while no daemon ran (or just before this one started) is honoured now: on an
                # adopted process by restarting it, otherwise by the launch itself.
                restart = None
                if acks.pending_restart(ctl, name):
                    restart = "restart requested by the user (taken at daemon start)"
                    acks.restart_seq[name] = ctl.restart_seq[name]
                    acks.restart_at[name] = time.time()
                self._start_target(name, paused=name in ctl.paused, restart=restart)
            console_every = defaults.CONSOLE_CAP_CHECK_S
            ctx.scheduler.every("console-log", lambda: console_every, self._cap_console, start=loop.time())
            tasks.append(loop.create_task(self._status_loop(), name="status"))
            for plugin in self.plugins:
                tasks.append(loop.create_task(plugin.run(ctx), name=f"plugin:{type(plugin).__name__}"))
            tasks.append(loop.create_task(self._control_loop(acks), name="control"))
            if notifier is not None:
                tasks.append(loop.create_task(notifier.run(), name="systemd-notify"))
            stop = loop.create_task(self._stop.wait())
            done, _ = await asyncio.wait([*tasks, stop], return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t is not stop and not t.cancelled() and (exc := t.exception()) is not None:
                    raise exc
            if self._failure is not None:
                raise self._failure
        finally:
            self._stop.set()  # loops that lost a cancellation to `wait_for` (Python 3.11) end on their next turn
            tasks += self._target_tasks.values()
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            for sup in self.supervisors.values():
                await sup.shutdown(self.stop_targets_on_exit)
            self._write_status(running=False)
            events.emit("daemon_stopped", pid=os.getpid())
            await prober.aclose()
            incidents.close()
            learnings.close()
            lock.release()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)

    def _cap_console(self) -> None:
        """Started by cron (`>> daemon-console.log 2>&1`) or launchd, our own output goes to a file nothing rotates:
        capped as a managed child's output.log is (under systemd it goes to the journal: nothing to do)."""
        if self.loaded.dry_run:
            return
        for copy in cap_own_console(defaults.OUTPUT_LOG_MAX_BYTES):
            log.info("console log capped: the earlier part is in %s", copy)

    def _start_target(
        self, name: str, *, paused: bool, restart: str | None = None, handle: Handle | None = None
    ) -> None:
        sup = TargetSupervisor(name, self.ctx)
        self.supervisors[name] = sup
        task = asyncio.get_running_loop().create_task(
            sup.run(paused=paused, restart=restart, handle=handle), name=f"target:{name}"
        )
        self._target_tasks[name] = task
        task.add_done_callback(self._target_done)

    def _target_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (exc := task.exception()) is not None:
            self._failure = exc
            self._stop.set()

    async def reload(self, why: str) -> tuple[bool, str]:
        """Read the config file again and apply it: targets added, removed or changed, the others untouched.
        An invalid new config (or a missing program) leaves the running one as it is. Returns (applied, one
        sentence)."""
        self._config_version = _config_version(self.loaded)
        old = self.loaded

        def load() -> LoadedConfig:
            new = load_config(old.source)
            check_commands(new)
            return new

        try:
            new = await asyncio.to_thread(load)
        except ClawmedicError as e:
            msg = f"The new config was refused ({why}) and the previous one keeps running: {e}"
            log.error("%s", msg)
            self._events.emit("config_reload_refused", why=why, error=str(e))
            self._reloaded(ok=False, message=msg)
            return False, msg
        d = config_reload.diff(old, new)
        new = config_reload.keep_daemon_settings(old, new)
        handles: dict[str, Handle] = {}
        for name in d.removed + d.changed:
            sup = self.supervisors.pop(name)
            task = self._target_tasks.pop(name, None)
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            # A removed target's process is left running (like at daemon exit) unless stop_targets_on_exit.
            await sup.shutdown(self.stop_targets_on_exit and name in d.removed)
            if name in d.changed and sup.handle is not None and new.targets[name].start.mode == "managed":
                handles[name] = sup.handle  # still our child: the new supervisor takes it over
        self.loaded = new
        self.ctx.loaded = new
        if isinstance(self.doctor, RuleDoctor):  # it looks targets up in the config
            self.doctor.loaded = new
        ctl = control.read_control(self.state_dir)
        for name in new.targets:
            if name in d.added or name in d.changed:
                restart = "its launch command changed (config reload)" if name in d.relaunch else None
                self._start_target(name, paused=name in ctl.paused, restart=restart, handle=handles.get(name))
        msg = d.sentence()
        log.info("%s: %s", why, msg)  # e.g. "SIGHUP: config reloaded: no target changed."
        self._events.emit(
            "config_reloaded",
            why=why,
            added=d.added,
            removed=d.removed,
            changed=d.changed,
            relaunched=d.relaunch,
            needs_restart=d.needs_restart,
        )
        self._reloaded(ok=True, message=msg)
        return True, msg

    def _reloaded(self, *, ok: bool, message: str) -> None:
        self.reload_status = {"at": time.time(), "ok": ok, "message": message}
        self._status_dirty.set()

    async def _status_loop(self) -> None:
        while not self._stop.is_set():
            self._write_status(running=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._status_dirty.wait(), STATUS_REFRESH_S)
            self._status_dirty.clear()
            await asyncio.sleep(0.05)  # coalesce bursts of changes into one write

    async def _control_loop(self, acks: control.Acks) -> None:
        """Apply pause/resume/restart requests and acknowledge each one in `control-ack.json` once the target has
        it. The first pass comes as soon as every target has started, so nothing written meanwhile is lost."""
        while any(sup.ladder.state == State.STOPPED for sup in self.supervisors.values()):
            await asyncio.sleep(defaults.CONTROL_POLL_S / 10)  # each target adopts, launches or pauses first
        version: tuple[int, int] | str | None = "unread"
        ctl = control.Control()
        stop_listening = control.listen(self.state_dir, self._control_poked.set)
        try:
            await self._control_passes(acks, version, ctl)
        finally:
            if stop_listening is not None:
                stop_listening()

    async def _control_passes(
        self, acks: control.Acks, version: tuple[int, int] | str | None, ctl: control.Control
    ) -> None:
        """One pass when a command pokes (or SIGHUP), else every CONTROL_RECHECK_S: a hand edit of control.json, the
        config file saved (reloaded on change), a `pause --for` running out."""
        while True:
            now_version = control.file_version(self.state_dir)
            if now_version != version:
                first = version == "unread"
                version = now_version
                ctl = control.read_control(self.state_dir)
                if acks.pending_reload(ctl):
                    acks.reload_ok, acks.reload_message = await self.reload("clawmedic reload")
                    acks.reload_seq = ctl.reload_seq
                    first = True  # acknowledged below
                self._apply_control(ctl, acks, first=first)
            if expired := ctl.expired_pauses(time.time()):  # `pause --for` ran out: resumed as `clawmedic resume` does
                log.info("maintenance of %s ended (its `pause --for` expired)", ", ".join(expired))
                try:
                    control.resume(self.state_dir, expired)  # the next pass sees the new file and resumes them
                except OSError as e:  # a full disk: tried again next pass
                    if not is_write_failure(e):
                        raise
                    state_writes.failed(control.control_path(self.state_dir).name, e)
            if self._reload_asked is not None:
                why, self._reload_asked = self._reload_asked, None
                await self.reload(why)
            elif _config_version(self.loaded) != self._config_version:
                await self.reload("the config file changed")
            wait = defaults.CONTROL_RECHECK_S
            if ctl.paused_until:  # `pause --for`: look again when the first one runs out
                wait = min(wait, max(0.0, min(ctl.paused_until.values()) - time.time()) + 0.01)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._control_poked.wait(), wait)
            self._control_poked.clear()

    def _apply_control(self, ctl: control.Control, acks: control.Acks, *, first: bool) -> None:
        changed = first  # the first pass always writes the file: it tells commands that this daemon acknowledges
        for name, sup in self.supervisors.items():
            resumed = launched_by_resume = False
            if name in ctl.paused:
                if sup.ladder.state != State.MAINTENANCE:
                    sup.pause()
            elif acks.pending_resume(ctl, name):
                was_running = sup.ladder.running
                sup.resume()
                resumed = True
                launched_by_resume = not was_running and sup.ladder.state == State.STARTING
            if resumed or acks.pending_resume(ctl, name):
                acks.resume_seq[name] = ctl.resume_seq.get(name, 0)
                changed = True
            if acks.pending_restart(ctl, name):
                if not launched_by_resume:  # a resume that launched it already is the restart asked for
                    sup.request_restart("restart requested by the user")
                acks.restart_seq[name] = ctl.restart_seq[name]
                acks.restart_state[name] = sup.ladder.state.value  # e.g. "retrying": a launch already in flight
                acks.restart_at[name] = time.time()
                changed = True
        if changed:
            try:
                control.write_acks(self.state_dir, acks)
            except OSError as e:  # a full disk: the request is applied; its acknowledgement waits for space
                if not is_write_failure(e):
                    raise
                state_writes.failed(control.ack_path(self.state_dir).name, e)

    def snapshot(self, running: bool) -> dict[str, Any]:
        return {
            "daemon": {
                "pid": os.getpid(),
                "running": running,
                "started_at": self.started_at,
                "updated_at": time.time(),
                "config": str(self.loaded.source),
                **({"dry_run": True} if self.loaded.dry_run else {}),
                **({"reload": self.reload_status} if self.reload_status is not None else {}),
            },
            "targets": {name: sup.snapshot() for name, sup in self.supervisors.items()},
        }

    def status_text(self, running: bool) -> str:
        """status.json's text: compact JSON through json's C encoder (indent= is pure Python), redacted (last errors
        and reasons quote URLs and output). A target is redacted and encoded again only when its snapshot changed
        beyond the figures every probe refreshes (a probe's latency, the memory): those are rewritten at least every
        STATUS_DETAIL_REFRESH_S. At 200 targets a heartbeat write then re-encodes a few targets, not all of them."""
        redactor = self.loaded.redactor
        snap = self.snapshot(running)
        now = time.monotonic()
        parts: list[str] = []
        cache: dict[str, tuple[dict[str, Any], int, str, float]] = {}
        for name, target in snap["targets"].items():
            hit = self._status_cache.get(name)
            if (
                hit is not None
                and hit[1] == redactor.generation
                and (
                    hit[0] == target
                    or (now - hit[3] < defaults.STATUS_DETAIL_REFRESH_S and _settled(hit[0]) == _settled(target))
                )
            ):
                cache[name] = hit
            else:
                fragment = json.dumps(redactor.data(target), separators=(",", ":"), default=str)
                cache[name] = (target, redactor.generation, fragment, now)
            parts.append(f"{json.dumps(name)}:{cache[name][2]}")
        self._status_cache = cache
        daemon = json.dumps(redactor.data(snap["daemon"]), separators=(",", ":"), default=str)
        return f'{{"daemon":{daemon},"targets":{{{",".join(parts)}}}}}'

    def _write_status(self, running: bool) -> None:
        try:
            atomic_write(status_path(self.state_dir), self.status_text(running), durable=False)
        except OSError as e:
            if not is_write_failure(e):
                raise
            state_writes.failed(status_path(self.state_dir).name, e)
        else:
            state_writes.ok(status_path(self.state_dir).name)
        self._check_writes()

    def _check_writes(self) -> None:
        """One `state_writes_failing` when the state folder stops taking writes, one `state_writes_recovered` once
        the status file is written again and no write failed for a while (the status write is the probe)."""
        events = getattr(self, "_events", None)
        if events is None:
            return
        if state_writes.failing and self._writes_failing_since is None:
            self._writes_failing_since = time.time()
            failing = dict(state_writes.failing)
            events.emit("state_writes_failing", failing=failing, state_dir=str(self.state_dir))
            log.error("the state folder %s takes no writes (%s); supervising from memory", self.state_dir, failing)
        elif (
            self._writes_failing_since is not None
            and status_path(self.state_dir).name not in state_writes.failing
            and state_writes.quiet_for() >= defaults.STATE_WRITES_SETTLE_S
        ):
            down_s = round(time.time() - self._writes_failing_since, 1)
            self._writes_failing_since = None
            state_writes.reset()
            pid_file = self.state_dir / "daemon.pid"
            if not pid_file.exists():  # the lock could not write it while the disk was full
                with contextlib.suppress(OSError):
                    atomic_write(pid_file, str(os.getpid()))
            events.emit("state_writes_recovered", down_s=down_s, state_dir=str(self.state_dir))
            log.warning("the state folder %s takes writes again after %.0f s; status caught up", self.state_dir, down_s)


_PER_PROBE = ("liveness_detail", "rss_mb")  # change on every probe / memory check without anything happening


def _settled(target: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in target.items() if k not in _PER_PROBE}


def _config_version(loaded: LoadedConfig) -> tuple[tuple[int, int, int] | None, ...]:
    """Changes when the config file or its env_file is rewritten (a save is often a rename: a new inode)."""
    files = [loaded.source]
    if loaded.config.daemon.env_file is not None:
        files.append(loaded.source.parent / loaded.config.daemon.env_file)
    versions: list[tuple[int, int, int] | None] = []
    for f in files:
        try:
            st = f.stat()
        except OSError:
            versions.append(None)
        else:
            versions.append((st.st_ino, st.st_mtime_ns, st.st_size))
    return tuple(versions)
