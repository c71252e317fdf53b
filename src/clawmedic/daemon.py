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
from pathlib import Path
from typing import Any, Protocol

from clawmedic import control, defaults
from clawmedic.config import LoadedConfig
from clawmedic.doctor import Doctor, RecordOnlyDoctor
from clawmedic.doctor.clinic import RuleDoctor
from clawmedic.doctor.learnings import LearningStore
from clawmedic.doctor.remedies import Policy, Risk
from clawmedic.knowngood_client import KnownGoodClient
from clawmedic.paths import ensure_private_dir
from clawmedic.probes import Prober
from clawmedic.store.events import EventLog
from clawmedic.store.files import atomic_write
from clawmedic.store.incidents import IncidentStore
from clawmedic.store.lock import DaemonLock
from clawmedic.supervisor import Context, TargetSupervisor

log = logging.getLogger("clawmedic")

STATUS_REFRESH_S = 5.0  # the status file doubles as the daemon's heartbeat for the guardian


def status_path(state_dir: Path) -> Path:
    return state_dir / "status.json"


def events_path(state_dir: Path) -> Path:
    return state_dir / "events.jsonl"


def incidents_path(state_dir: Path) -> Path:
    return state_dir / "incidents.sqlite"


def learnings_path(state_dir: Path) -> Path:
    return state_dir / "learnings.sqlite"


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
        self._stop = asyncio.Event()

    def _default_doctor(
        self, incidents: IncidentStore, known_good: KnownGoodClient, learnings: LearningStore
    ) -> Doctor:
        cfg = self.loaded.config.daemon.doctor
        if not cfg.enabled:
            return RecordOnlyDoctor()
        policy = Policy(frozenset(Risk(r) for r in cfg.allow), cfg.allow_kill_foreign)
        return RuleDoctor(self.loaded, incidents, known_good, learnings, policy)

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        lock = DaemonLock(self.state_dir)
        lock.acquire()
        events = EventLog(events_path(self.state_dir), self.loaded.redactor)
        incidents = IncidentStore(incidents_path(self.state_dir), self.loaded.redactor)
        prober = Prober()
        known_good = KnownGoodClient(self.state_dir)
        learnings = LearningStore(learnings_path(self.state_dir))
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
        events.emit("daemon_started", pid=os.getpid(), config=str(self.loaded.source))
        log.info(
            "clawmedic daemon %d supervising %s (state in %s)",
            os.getpid(),
            ", ".join(self.loaded.targets),
            self.state_dir,
        )
        ctl = control.read_control(self.state_dir)
        seen_seq = dict(ctl.resume_seq)
        seen_restart = dict(ctl.restart_seq)
        tasks: list[asyncio.Task[Any]] = []
        try:
            for name in self.loaded.targets:
                sup = TargetSupervisor(name, ctx)
                self.supervisors[name] = sup
                tasks.append(loop.create_task(sup.run(paused=name in ctl.paused), name=f"target:{name}"))
            tasks.append(loop.create_task(self._status_loop(), name="status"))
            for plugin in self.plugins:
                tasks.append(loop.create_task(plugin.run(ctx), name=f"plugin:{type(plugin).__name__}"))
            tasks.append(loop.create_task(self._control_loop(seen_seq, seen_restart), name="control"))
            stop = loop.create_task(self._stop.wait())
            done, _ = await asyncio.wait([*tasks, stop], return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t is not stop and not t.cancelled() and (exc := t.exception()) is not None:
                    raise exc
        finally:
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
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    async def _status_loop(self) -> None:
        while True:
            self._write_status(running=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._status_dirty.wait(), STATUS_REFRESH_S)
            self._status_dirty.clear()
            await asyncio.sleep(0.05)  # coalesce bursts of changes into one write

    async def _control_loop(self, seen_seq: dict[str, int], seen_restart: dict[str, int]) -> None:
        path = control.control_path(self.state_dir)
        last_mtime = path.stat().st_mtime if path.exists() else 0.0
        while True:
            await asyncio.sleep(defaults.CONTROL_POLL_S)
            mtime = path.stat().st_mtime if path.exists() else 0.0
            if mtime == last_mtime:
                continue
            last_mtime = mtime
            ctl = control.read_control(self.state_dir)
            for name, sup in self.supervisors.items():
                paused_now = sup.ladder.state.value == "maintenance"
                if name in ctl.paused and not paused_now:
                    sup.pause()
                elif ctl.resume_seq.get(name, 0) > seen_seq.get(name, 0):
                    sup.resume()
                if ctl.restart_seq.get(name, 0) > seen_restart.get(name, 0):
                    sup.request_restart("restart requested by the user")
            seen_seq.update(ctl.resume_seq)
            seen_restart.update(ctl.restart_seq)

    def snapshot(self, running: bool) -> dict[str, Any]:
        return {
            "daemon": {
                "pid": os.getpid(),
                "running": running,
                "started_at": self.started_at,
                "updated_at": time.time(),
                "config": str(self.loaded.source),
            },
            "targets": {name: sup.snapshot() for name, sup in self.supervisors.items()},
        }

    def _write_status(self, running: bool) -> None:
        atomic_write(status_path(self.state_dir), json.dumps(self.snapshot(running), indent=2, default=str))
