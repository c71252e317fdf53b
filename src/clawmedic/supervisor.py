"""One coordinator per supervised target: feeds observations to its `Ladder` and carries out the actions.

Everything here runs on one asyncio loop, so ladder calls never interleave. Side effects go through the seams
passed in: `Launcher` (processes), `Prober` (HTTP), the stores (incidents, events) and the `Doctor`.
Logging happens on change (live → failing, failing → live), not on every probe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
import time
from collections.abc import Callable, Coroutine, MutableMapping
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from clawmedic import defaults
from clawmedic.config import LoadedConfig, TargetConfig
from clawmedic.doctor import Doctor, Escalation
from clawmedic.dryrun import launcher_for
from clawmedic.errors import ClawmedicError, NotOurProcess
from clawmedic.knowngood_client import KnownGoodClient
from clawmedic.ladder.exits import classify_exit, exit_detail, telling_line
from clawmedic.ladder.machine import (
    Action,
    CheckGates,
    CloseIncident,
    Escalate,
    Ladder,
    Launch,
    OpenIncident,
    Stop,
    Transition,
)
from clawmedic.ladder.states import RESTORED_STATES, ExitKind, State
from clawmedic.probes import Prober, ProbeResult
from clawmedic.process import identity, inspect
from clawmedic.process.launcher import Handle, run_command
from clawmedic.scheduler import Job, Scheduler
from clawmedic.store import carried as carried_store
from clawmedic.store.events import EventLog
from clawmedic.store.health import is_write_failure, state_writes
from clawmedic.store.incidents import IncidentStore
from clawmedic.targets import openclaw

log = logging.getLogger("clawmedic")

_NOT_PROBED = frozenset({State.RESTARTING, State.BACKOFF, State.STOPPED})
_EXTERNAL_COMMAND_TIMEOUT_S = 120.0  # systemctl/launchctl restart returns in seconds; a hung one is killed


@dataclass(frozen=True)
class LaunchSpec:
    """How a managed target is started: by the daemon, and by `clawmedic fix restart` when no daemon runs, so a
    daemon started later adopts what the command launched."""

    command: list[str]
    env: dict[str, str]
    cwd: Path | None


def launch_spec(loaded: LoadedConfig, name: str) -> LaunchSpec:
    start = loaded.targets[name].start
    assert start.command is not None  # config validation: a managed target has a command
    return LaunchSpec([loaded.resolve(x, "command") for x in start.command], loaded.command_env(name), start.cwd)


@dataclass
class Context:
    """What all targets of one daemon share."""

    loaded: LoadedConfig
    events: EventLog
    incidents: IncidentStore
    prober: Prober
    doctor: Doctor
    known_good: KnownGoodClient
    clock: Callable[[], float] = time.time
    on_change: Callable[[], None] = lambda: None  # e.g. rewrite the status file
    scheduler: Scheduler = field(default_factory=Scheduler)  # one deadline heap for every target's timed work


class _TargetLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """The daemon's logger with this target's `target`, `state` and `incident` on every line, read when the line is
    logged (they are fields of `--json-logs` and of the log file, which `clawmedic logs TARGET` filters on)."""

    def __init__(self, sup: TargetSupervisor) -> None:
        super().__init__(log, {})
        self.sup = sup

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        sup = self.sup
        kwargs["extra"] = {
            "target": sup.name,
            "state": sup.ladder.state.value,
            "incident": sup.incident_id,
            **kwargs.get("extra", {}),
        }
        return msg, kwargs


class TargetSupervisor:
    def __init__(self, name: str, ctx: Context) -> None:
        self.name = name
        self.log = _TargetLog(self)
        self.cfg: TargetConfig = ctx.loaded.targets[name]
        self.ctx = ctx
        self.ladder = Ladder(self.cfg.ladder_limits(), on_change=self._pending_transitions_append)
        self.launcher = launcher_for(ctx.loaded, ctx.loaded.state_dir / "targets" / name, ctx.loaded.redactor.text)
        self.handle: Handle | None = None
        self.incident_id: int | None = None
        self.liveness: ProbeResult | None = None
        self.readiness: ProbeResult | None = None
        self.rss_bytes: int = 0
        self.restarts = 0
        self.last_exit: dict[str, Any] | None = None
        self.last_healthy_at: float | None = None  # the last probe that found the target healthy (evidence)
        self.files = openclaw.boot_files(self.cfg)  # boot-critical files, by key
        self.config_check: openclaw.Validation | None = None  # the last validation of the live config
        self._valid_digest: str | None = None  # content last found valid: skip the 2 s CLI when unchanged
        self._known_good_digest: str | None = None
        self.latent_incident: int | None = None
        self.last_would: dict[str, Any] | None = None  # a dry run: the last thing it would have done
        self._latent_digest: str | None = None  # the content the latent-fault incident is about
        self._carried: dict[str, Any] | None = None  # what was last written for the next daemon
        self._files_changed_at = 0.0  # known-good needs the files themselves to have served healthy long enough
        self._pending: list[Transition] = []
        self._tasks: set[asyncio.Task[None]] = set()
        # Timed work lives in the daemon's one scheduler (no loop per target): jobs are made when `run` starts.
        self._jobs: list[Job] = []
        self._probe_job: Job | None = None
        self._timer_job: Job | None = None
        self._known_good_job: Job | None = None
        self._probe_asap = False  # a transition before the jobs exist: the first probe runs at once
        self._probing = self._probe_again = self._checking_memory = self._snapshotting = False
        self._failed: asyncio.Future[None] | None = None  # a probe's internal error ends `run` (and the daemon)

    # --- running --------------------------------------------------------------------------------------

    async def run(self, *, paused: bool, restart: str | None = None, handle: Handle | None = None) -> None:
        """Adopt the running process or launch one; `restart`: a restart someone asked for while no daemon ran
        (done on an adopted process; a fresh launch already is one). `handle`: the process the supervisor this one
        replaces (a config reload) ran, still this daemon's child."""
        self._carry_over()
        if handle is None and self.cfg.start.mode == "managed":
            handle = self.launcher.adopt()
        if handle is not None:
            self._adopt(handle)
            self._feed(partial(self.ladder.start, running=True))
        elif self.cfg.start.mode == "external":
            probe = await self.ctx.prober.liveness(self.cfg.liveness, None)
            if probe.ok or paused:
                self._feed(partial(self.ladder.start, running=True, live=probe.ok))
        if paused:
            self._feed(self.ladder.pause)
        elif self.ladder.state == State.STOPPED:
            self._feed(self.ladder.start)
        elif restart is not None:
            self.request_restart(restart)
        self._failed = asyncio.get_running_loop().create_future()
        self._schedule()
        try:  # the watcher and the known-good read end early when there is nothing to watch; `_failed` does not
            await asyncio.gather(self._failed, self._watch_loop(), self._load_known_good())
        finally:
            self._unschedule()

    def _schedule(self) -> None:
        """Put this target's timed work in the daemon's scheduler: probes at start + k·interval, the ladder's
        next deadline, the memory check and output-log cap, the hourly snapshot and the known-good check."""
        sched = self.ctx.scheduler
        now = sched.now()
        first_probe = now if self._probe_asap else now + self.ladder.probe_interval()
        probe_every = self.ladder.probe_interval
        self._probe_job = sched.every(f"{self.name}:probe", probe_every, self._probe_due, start=first_probe)
        self._timer_job = sched.once(f"{self.name}:ladder", lambda: self._feed(self.ladder.tick))
        memory_every = self.cfg.limits.memory_check_interval_s
        self._jobs = [
            self._probe_job,
            self._timer_job,
            sched.every(f"{self.name}:memory", lambda: memory_every, self._memory_due, start=now + memory_every),
        ]
        if self.files:
            snap_every = self.cfg.limits.snapshot_interval_s
            self._known_good_job = sched.once(f"{self.name}:known-good", self._known_good_due)
            self._jobs += [
                sched.every(f"{self.name}:snapshot", lambda: snap_every, self._snapshot_due, start=now + snap_every),
                self._known_good_job,
            ]
        self._rearm_timer()
        self._rearm_known_good()

    def _unschedule(self) -> None:
        for job in self._jobs:
            self.ctx.scheduler.cancel(job)
        self._jobs = []
        self._probe_job = self._timer_job = self._known_good_job = None

    def _adopt(self, handle: Handle) -> None:
        """Take over a process a previous daemon launched (found by its record or by its identity marker)."""
        self.handle = handle
        self._watch(handle)
        self.ctx.events.emit("adopted", self.name, pid=handle.pid)
        self.log.info("%s: adopted running pid %d", self.name, handle.pid)

    async def shutdown(self, stop_target: bool) -> None:
        for t in list(self._tasks):
            t.cancel()
        if stop_target and self.handle is not None and (would := self.launcher.would("stop")) is not None:
            self._would("stop", would, "daemon exiting")
        elif stop_target and self.handle is not None:
            self.ladder.change_state(State.STOPPED, self.ctx.clock(), "daemon exiting")
            await self.handle.stop(self.cfg.limits.stop_timeout_s)
        self._persist()

    def pause(self) -> None:
        self._feed(self.ladder.pause)

    def resume(self) -> None:
        self._feed(self.ladder.resume)

    def request_restart(self, reason: str) -> None:
        self.ctx.events.emit("restart_requested", self.name, reason=reason)
        self._feed(self.ladder.request_restart, reason)

    # --- feeding the ladder -----------------------------------------------------------------------------

    def _pending_transitions_append(self, t: Transition) -> None:
        self._pending.append(t)

    def _feed(self, step: Callable[..., list[Action]], *args: Any) -> None:
        """Give the ladder one observation (`step(now, *args)`), record what changed, carry out its actions."""
        now = self.ctx.clock()
        actions = step(now, *args)
        for a in actions:
            if isinstance(a, OpenIncident):
                self._open_incident(a, now)
        transitions, self._pending = self._pending, []
        for t in transitions:
            self._record_transition(t)
        for a in actions:
            if isinstance(a, CloseIncident):
                self._close_incident(a, now)
            elif isinstance(a, Launch):
                self._spawn(self._launch(a))
            elif isinstance(a, Stop):
                self._spawn(self._stop(a))
            elif isinstance(a, Escalate):
                self._spawn(self._escalate(a))
            elif isinstance(a, CheckGates):
                self._spawn(self._retry_gates(a))
        self._persist()
        self._rearm_timer()  # any observation may move a deadline (no 1 Hz polling)
        if transitions:
            self._probe_soon()
            self._rearm_known_good()
            self.ctx.on_change()

    def _rearm_timer(self) -> None:
        """The ladder's tick is due at its next deadline (bounded by TIMER_SAFETY_S against a missed wake-up)."""
        job = self._timer_job
        if job is None:
            return
        sched = self.ctx.scheduler
        now = sched.now()
        deadline = self.ladder.next_deadline()
        if deadline is None:
            if job.due is None or job.due <= now:
                sched.move(job, now + defaults.TIMER_SAFETY_S)
            return
        due = now + min(defaults.TIMER_SAFETY_S, max(0.0, deadline - self.ctx.clock()))
        if job.due is None or abs(job.due - due) > 0.001:
            sched.move(job, due)

    def _probe_soon(self) -> None:
        """Probe now (a new state: e.g. entering suspect, the first confirmation probe runs at once); the next
        probes follow at now + k·interval."""
        if self._probe_job is None:
            self._probe_asap = True
        elif self._probing:
            self._probe_again = True
        else:
            self.ctx.scheduler.move(self._probe_job, self.ctx.scheduler.now())

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            self.log.error("%s: internal error in a supervisor task: %r", self.name, exc, exc_info=exc)
            self.ctx.events.emit("internal_error", self.name, error=repr(exc))

    # --- a daemon restart: carried over (store/carried.py) ------------------------------------------------

    def _carry_over(self) -> None:
        """Pick up what the previous daemon left: the ladder's escalation state and failure history, its open
        incident (resumed; any other incident of this target it left open is closed as abandoned) and the latent
        fault incident. Without a record (first start, damaged file) only stale incidents are closed."""
        prev = carried_store.load(self.launcher.target_dir)
        now = self.ctx.clock()
        resumed: int | None = None
        if prev is not None and prev.incident is not None and prev.ladder.incident_open:
            inc = self.ctx.incidents.get(prev.incident)
            if inc is not None and inc.target == self.name and inc.closed_at is None:
                resumed = inc.id
        if prev is not None and prev.latent_incident is not None:
            lat = self.ctx.incidents.get(prev.latent_incident)
            if lat is not None and lat.target == self.name and lat.closed_at is None:
                self.latent_incident, self._latent_digest = lat.id, prev.latent_digest
        for inc in self.ctx.incidents.list(limit=1000, target=self.name):
            if inc.closed_at is None and inc.id not in (resumed, self.latent_incident):
                self._abandon(inc.id, now)
        if prev is None:
            return
        saved = prev.ladder
        if resumed is None:
            saved = replace(saved, incident_open=False)
            if saved.state in RESTORED_STATES:  # nothing to carry the escalation on: start afresh
                saved = replace(saved, state=State.STOPPED)
        self.incident_id = resumed
        self.ctx.events.emit(
            "carried_over",
            self.name,
            state=prev.ladder.state.value,
            failures=len(saved.failures),
            incident=resumed,
            latent_incident=self.latent_incident,
            saved_at=prev.saved_at,
        )
        self._incident_note("daemon_restarted", {"previous_state": prev.ladder.state.value}, ts=now)
        self.log.info(
            "%s: carried over from the previous daemon: %s%s",
            self.name,
            prev.ladder.state.value,
            f", incident #{resumed} resumed" if resumed is not None else "",
        )
        self._feed(partial(self.ladder.restore, saved=saved))

    def _abandon(self, incident: int, now: float) -> None:
        self.ctx.incidents.add(
            incident, "outcome", {"outcome": "abandoned", "why": "a daemon restart could not carry it over"}, ts=now
        )
        self.ctx.incidents.update(incident, status="abandoned", closed_at=now)
        self.ctx.events.emit("incident_closed", self.name, incident=incident, outcome="abandoned", at=now)
        self.log.warning("%s: incident #%d closed as abandoned: the previous daemon left it open", self.name, incident)

    def _persist(self) -> None:
        """Write what the next daemon needs, when it changed (a probe that changes nothing writes nothing)."""
        rec = carried_store.Carried(
            self.ladder.saved(), self.incident_id, self.latent_incident, self._latent_digest, saved_at=0.0
        )
        data = rec.to_dict()
        if data == self._carried:
            return
        try:
            carried_store.save(self.launcher.target_dir, replace(rec, saved_at=self.ctx.clock()))
        except OSError as e:
            if is_write_failure(e):  # a full disk: said once by the tracker, not on every change
                state_writes.failed(f"{self.name}/carried state", e)
            else:
                self.log.warning("%s: cannot record the ladder's state for a daemon restart: %s", self.name, e)
            return
        self._carried = data

    # --- records ------------------------------------------------------------------------------------------

    def _record_transition(self, t: Transition) -> None:
        self.ctx.events.emit("state", self.name, old=t.old.value, new=t.new.value, reason=t.reason, at=t.at)
        level = logging.INFO if t.new in (State.HEALTHY, State.PROBATION, State.STARTING) else logging.WARNING
        log.log(level, "%s: %s → %s (%s)", self.name, t.old.value, t.new.value, self.ctx.loaded.redactor.text(t.reason))
        if self.incident_id is None:
            return
        self.ctx.incidents.add(
            self.incident_id, "state", {"from": t.old.value, "to": t.new.value, "reason": t.reason}, ts=t.at
        )
        if t.new == State.PROBATION:
            inc = self.ctx.incidents.get(self.incident_id)
            if inc is not None and inc.live_at is None:
                self.ctx.incidents.update(self.incident_id, live_at=t.at)
                self.ctx.events.emit("live_again", self.name, incident=self.incident_id, at=t.at)
        elif t.new == State.GAVE_UP and t.old == State.ESCALATED:
            self.ctx.incidents.update(self.incident_id, status="gave_up")
            self.ctx.events.emit("gave_up", self.name, incident=self.incident_id, reason=t.reason)
        elif t.new == State.GAVE_UP and t.old != State.STOPPED:  # the slow retry failed: same incident, told already
            self.ctx.events.emit("retry_failed", self.name, incident=self.incident_id, reason=t.reason)

    def _open_incident(self, a: OpenIncident, now: float) -> None:
        self.incident_id = self.ctx.incidents.open(self.name, a.reason, a.first_failure_at, now)
        self.ctx.events.emit("incident_opened", self.name, incident=self.incident_id, reason=a.reason, at=now)
        self.log.warning(
            "%s: incident #%d opened: %s", self.name, self.incident_id, self.ctx.loaded.redactor.text(a.reason)
        )

    def _close_incident(self, a: CloseIncident, now: float) -> None:
        if self.incident_id is None:
            return
        self.ctx.incidents.update(self.incident_id, status=a.outcome, closed_at=now)
        self.ctx.events.emit("incident_closed", self.name, incident=self.incident_id, outcome=a.outcome, at=now)
        self.log.info("%s: incident #%d closed: %s", self.name, self.incident_id, a.outcome)
        self.incident_id = None

    def _incident_note(
        self, kind: str, detail: dict[str, Any], duration_s: float | None = None, ts: float | None = None
    ) -> None:
        if self.incident_id is not None:
            self.ctx.incidents.add(self.incident_id, kind, detail, duration_s=duration_s, ts=ts)

    # --- actions ------------------------------------------------------------------------------------------

    async def _launch(self, a: Launch) -> None:
        if (would := self.launcher.would("relaunch")) is not None:
            await self._would_restore(a.reason)
            self._would("relaunch", would, a.reason)
            return
        start = self.cfg.start
        env = self.ctx.loaded.command_env(self.name)
        t0 = self.ctx.clock()
        if self.incident_id is not None and self.ladder.state in (State.STARTING, State.RETRYING):
            self.ctx.incidents.count_restart(self.incident_id)
        self.restarts += 1 if a.reason != "initial start" else 0
        refusal = await self._config_gate()
        if refusal is not None:
            self._feed(self.ladder.exited, ExitKind.FATAL_CONFIG, refusal)
            return
        if start.mode == "external":
            assert start.restart_command is not None
            cmd = [self.ctx.loaded.resolve(x, "restart_command") for x in start.restart_command]
            code, out = await run_command(cmd, env, _EXTERNAL_COMMAND_TIMEOUT_S)
            out = self.ctx.loaded.redactor.text(out)  # redact before any cut
            self._incident_note(
                "action", {"action": "restart_command", "exit": code, "output": out[-500:]}, self.ctx.clock() - t0
            )
            self.ctx.events.emit("launched", self.name, via="restart_command", exit=code, reason=a.reason)
            if code != 0:
                detail = f"restart command exited {code}: {out.strip()[-200:]}"
                self._feed(self.ladder.exited, ExitKind.CRASH, detail)
            return
        if self.cfg.port is not None and (owner := inspect.port_owner(self.cfg.port)) is not None:
            ours = self.handle is not None and owner.pid in inspect.tree_pids(self.handle.pid)
            marked = owner.pid is not None and identity.has_marker(owner.pid, self.launcher.target_dir)
            mine = not ours and self.handle is None and marked
            if mine and (handle := self.launcher.adopt()) is not None:  # our own child, record lost: adopt, not fight
                self._adopt(handle)
                return
            if not ours:
                detail = f"port {self.cfg.port} is held by {owner.describe()}, not by clawmedic's {self.name}"
                seen = self.ctx.clock()
                self.ctx.events.emit(
                    "port_conflict", self.name, port=self.cfg.port, owner_pid=owner.pid, owner_cmdline=owner.cmdline
                )
                self.log.error("%s: %s; not starting, not touching it", self.name, detail)
                self._feed(self.ladder.exited, ExitKind.PORT_IN_USE, detail)  # opens the incident if needed
                self._incident_note(
                    "preflight",
                    {"port": self.cfg.port, "owner_pid": owner.pid, "owner_cmdline": owner.cmdline},
                    ts=seen,
                )
                return
        spec = launch_spec(self.ctx.loaded, self.name)
        cmd = spec.command
        try:
            handle = await self.launcher.spawn(cmd, spec.env, spec.cwd)
        except OSError as e:
            detail = f"cannot start {cmd[0]}: {e.strerror or e}"
            self.log.error("%s: %s", self.name, detail)
            self._feed(self.ladder.exited, ExitKind.FATAL_CONFIG, detail)
            return
        self.handle = handle
        self.ctx.events.emit("launched", self.name, pid=handle.pid, reason=a.reason, at=t0)
        self._incident_note("action", {"action": "launch", "pid": handle.pid, "reason": a.reason})
        self.log.info("%s: launched pid %d (%s)", self.name, handle.pid, a.reason)
        self._watch(handle)

    async def _would_restore(self, reason: str) -> None:
        """A dry run: the known-good restore (or refusal) that the launch's config gate would have begun with."""
        if not self._uses_config_checks():
            return
        v = await self._validate()
        if v.valid:
            return
        path = openclaw.config_path(self.cfg)
        if await asyncio.to_thread(self.ctx.known_good.known_good, self.name) is None:
            detail = f"would refuse to start: {path} is invalid ({v.summary()}) and there is no known-good snapshot"
            self._would("refuse", f"{detail} (dry run: nothing was done)", reason)
        else:
            detail = f"would restore known-good {path}: it is invalid ({v.summary()})"
            self._would("restore", f"{detail} (dry run: nothing was done)", reason)

    def _would(self, action: str, detail: str, reason: str) -> None:
        """A dry run: what would have been done, recorded where the deed would have been."""
        self.last_would = {"action": action, "reason": reason, "detail": detail, "at": self.ctx.clock()}
        self.ctx.on_change()  # the status file says it too
        self.ctx.events.emit("would", self.name, action=action, reason=reason)
        self._incident_note("would", {"action": action, "reason": reason, "detail": detail})
        self.log.warning("%s: %s: %s", self.name, detail, self.ctx.loaded.redactor.text(reason))

    def _watch(self, handle: Handle) -> None:
        async def watch() -> None:
            code = await handle.wait()
            now = self.ctx.clock()
            tail = handle.output_tail(60)
            kind = classify_exit(code, requested=handle.stop_requested, output_tail=tail)
            if self.handle is handle:
                self.handle = None
                self.launcher.forget()
            last = telling_line(tail)
            says = kind != ExitKind.REQUESTED and code is not None and 0 < code < 128 and last
            last = self.ctx.loaded.redactor.text(last)  # redact before cutting: a cut secret would not match
            detail = exit_detail(code, last if says else "")
            self.last_exit = {"code": code, "kind": kind.value, "at": now, "pid": handle.pid}
            self.ctx.events.emit(
                "exited", self.name, pid=handle.pid, code=code, exit_kind=kind.value, at=now, detail=detail
            )
            if kind != ExitKind.REQUESTED:
                self.log.warning("%s: pid %d %s", self.name, handle.pid, self.ctx.loaded.redactor.text(detail))
            self._feed(self.ladder.exited, kind, detail)  # may open the incident: note the exit after, dated `now`
            self._incident_note(
                "exit", {"pid": handle.pid, "code": code, "kind": kind.value, "output_tail": tail[-20:]}, ts=now
            )

        self._spawn(watch())

    async def _stop(self, a: Stop) -> None:
        if (would := self.launcher.would("stop")) is not None:
            self._would("stop", would, a.reason)
            self._feed(self.ladder.exited, ExitKind.REQUESTED, would)  # decided as if it had stopped
            return
        t0 = self.ctx.clock()
        handle = self.handle
        if handle is None:
            cmd = self.cfg.start.stop_command
            if cmd:
                code, _ = await run_command(
                    [self.ctx.loaded.resolve(x, "stop_command") for x in cmd],
                    self.ctx.loaded.command_env(self.name),
                    _EXTERNAL_COMMAND_TIMEOUT_S,
                )
                self._incident_note("action", {"action": "stop_command", "exit": code}, self.ctx.clock() - t0)
            self._feed(self.ladder.exited, ExitKind.REQUESTED, "stopped")
            return
        self.log.warning("%s: stopping pid %d (%s)", self.name, handle.pid, self.ctx.loaded.redactor.text(a.reason))
        try:
            code, killed = await handle.stop(a.timeout_s)
        except NotOurProcess as e:
            self._incident_note("action", {"action": "stop", "refused": str(e)})
            if self.handle is handle:
                self.handle = None
            self._feed(self.ladder.exited, ExitKind.REQUESTED, str(e))
            return
        took = self.ctx.clock() - t0
        self.ctx.events.emit("stopped", self.name, pid=handle.pid, code=code, sigkill=killed, took_s=took)
        self._incident_note(
            "action", {"action": "stop", "pid": handle.pid, "exit": code, "sigkill": killed, "reason": a.reason}, took
        )

    async def _retry_gates(self, a: CheckGates) -> None:
        """Gave up, and the slow retry is due: launch only when the pre-start gates pass (config, dependencies,
        port owner, Node). A fault a launch cannot fix is looked at again next period, never launched into."""
        blocked = await self._pre_start_block()
        self.ctx.events.emit(
            "retry_gates", self.name, passed=blocked is None, detail=blocked, incident=self.incident_id
        )
        self._incident_note("retry", {"reason": a.reason, "launched": blocked is None, "blocked": blocked})
        if blocked is not None:
            self.log.info("%s: slow retry not launched: %s", self.name, self.ctx.loaded.redactor.text(blocked))
        self._feed(self.ladder.gates_checked, blocked is None)

    async def _pre_start_block(self) -> str | None:
        """Why a launch now could not work, found without launching; None when the gates pass."""
        refusal = await self._config_gate()  # also restores missing packages and, when it can, known-good config
        if refusal is not None:
            return refusal
        if self.cfg.start.mode == "managed" and self.cfg.port is not None:
            owner = await asyncio.to_thread(inspect.port_owner, self.cfg.port)
            ours = owner is not None and self.handle is not None and owner.pid in inspect.tree_pids(self.handle.pid)
            if owner is not None and not ours:
                return f"port {self.cfg.port} is held by {owner.describe()}, not by clawmedic's {self.name}"
        if self.cfg.kind == "openclaw":
            from clawmedic.doctor.evidence import Evidence
            from clawmedic.targets.openclaw import evidence

            ev = Evidence(self.name)
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                await asyncio.to_thread(evidence._node, self.ctx.loaded, self.name, ev)
            if ev.node.get("satisfied") is False:
                return f"Node {ev.node.get('version')} does not satisfy openclaw's engines {ev.node.get('engines')!r}"
        return None

    async def _escalate(self, a: Escalate) -> None:

        assert self.incident_id is not None
        incident = self.incident_id
        self.ctx.incidents.update(incident, status="escalated", cause=a.cause)
        self.ctx.events.emit("escalated", self.name, incident=incident, cause=a.cause, reason=a.reason)
        self.log.error("%s: escalated (%s): %s", self.name, a.cause, self.ctx.loaded.redactor.text(a.reason))
        evidence: dict[str, object] = {
            "last_exit": self.last_exit,
            "pid": self.handle.pid if self.handle else None,
            "last_healthy_at": self.last_healthy_at,
        }
        if self._uses_config_checks():
            evidence["config"] = (await self._validate()).to_dict()  # cached by content: free when unchanged
        if self.cfg.port is not None and (owner := inspect.port_owner(self.cfg.port)) is not None:
            evidence["port_owner"] = {"pid": owner.pid, "cmdline": owner.cmdline}
        evidence = self.ctx.loaded.redactor.data(evidence)
        verdict = await self.ctx.doctor.treat(Escalation(self.name, incident, a.reason, a.cause, evidence))
        self.ctx.incidents.add(
            incident, "doctor", {"healed": verdict.healed, "summary": verdict.summary, "evidence": evidence}
        )
        self._feed(self.ladder.verdict, verdict.healed, verdict.summary, verdict.restart)

    # --- boot-critical files: validation, known-good, latent faults ---

    def _uses_config_checks(self) -> bool:
        return self.cfg.kind == "openclaw" and self.cfg.limits.validate_config

    async def _validate(self) -> openclaw.Validation:
        path = openclaw.config_path(self.cfg)
        try:
            data = await asyncio.to_thread(path.read_bytes)
        except OSError:
            v = openclaw.Validation(False, "missing", [f"{path} does not exist"])
        else:
            d = openclaw.digest(data)
            if d == self._valid_digest:
                v = openclaw.Validation(True, "ok", [], d)
            else:
                v = await asyncio.to_thread(openclaw.validate, self.ctx.loaded, self.name)
        if v.valid and v.stage == "ok":
            self._valid_digest = v.digest
        self.config_check = v
        return v

    async def _record_deps(self) -> None:
        """While healthy: record the install's packages and keep a pristine copy (cheap when unchanged)."""
        from clawmedic import deps

        try:
            manifest = await asyncio.to_thread(deps.record, self.ctx.loaded, self.name)
        except ClawmedicError as e:
            self.log.warning("%s: cannot record the install's dependencies: %s", self.name, e)
            return
        self.ctx.events.emit("deps_recorded", self.name, packages=len(manifest.packages))

    async def _deps_gate(self) -> None:
        """Before a (re)start: restore any package missing from the install (from the pristine copy, offline)."""
        from clawmedic import deps

        if self.cfg.kind != "openclaw" or deps.load_manifest(self.ctx.loaded, self.name) is None:
            return
        try:
            problems = await asyncio.to_thread(deps.check, self.ctx.loaded, self.name)
            if not problems:
                return
            report = await asyncio.to_thread(deps.fix, self.ctx.loaded, self.name, allow_network=False)
        except ClawmedicError as e:
            self.log.warning("%s: dependency check failed: %s", self.name, e)
            return
        outcome = report.to_dict()
        self.ctx.events.emit("deps_restored", self.name, ok=report.ok, outcomes=outcome["outcomes"])
        self._incident_note("deps_restored", outcome)
        self.log.warning(
            "%s: restored missing packages before starting: %s",
            self.name,
            ", ".join(f"{o.package} ({o.status})" for o in report.outcomes),
        )

    async def _config_gate(self) -> str | None:
        """Before any (re)start the config must be valid: restore known-good if it is not, or refuse."""
        await self._deps_gate()
        if not self._uses_config_checks():
            return None
        v = await self._validate()
        if v.valid:
            return None
        path = openclaw.config_path(self.cfg)
        store = self.ctx.known_good
        kg = await asyncio.to_thread(store.known_good, self.name)
        if kg is None:
            detail = f"{path} is invalid ({v.summary()}) and there is no known-good snapshot to restore: not starting"
            self.ctx.events.emit("config_refused", self.name, issues=v.issues)
            self._incident_note("config", {"valid": False, "issues": v.issues, "action": "refused to start"})
            self.log.error("%s: %s", self.name, detail)
            return detail
        await asyncio.to_thread(
            store.snapshot,
            self.name,
            self.files,
            "before restoring known-good (config invalid)",
            self.ladder.state.value,
        )
        restored = await asyncio.to_thread(store.restore, self.name, openclaw.CONFIG_KEY, path)
        aside = str(restored.moved_aside) if restored.moved_aside else None
        self.ctx.events.emit("config_restored", self.name, rev=restored.rev, moved_aside=aside, issues=v.issues)
        self._incident_note(
            "config_restored",
            {"path": str(path), "known_good": restored.rev[:10], "broken_copy": aside, "issues": v.issues},
        )
        self.log.warning(
            "%s: %s was invalid (%s); restored known-good %s, broken copy kept as %s",
            self.name,
            path,
            v.summary(),
            restored.rev[:10],
            aside or "(none: the file was missing)",
        )
        again = await self._validate()
        if not again.valid:
            return f"the known-good {path} does not validate either ({again.summary()}): not starting"
        return None

    async def _load_known_good(self) -> None:
        if not self.files:
            return
        store = self.ctx.known_good
        kg = await asyncio.to_thread(store.known_good, self.name)
        if kg is not None:
            data = await asyncio.to_thread(store.read, self.name, openclaw.CONFIG_KEY, kg.rev)
            self._known_good_digest = openclaw.digest(data) if data is not None else None

    def _rearm_known_good(self) -> None:
        """The known-good check is due when the files have served healthy for `known_good_after_s` (again after a
        new state or an edit), then every KNOWN_GOOD_RECHECK_S while healthy (an edit no watcher saw)."""
        job = self._known_good_job
        if job is None:
            return
        sched = self.ctx.scheduler
        since = self.ladder.healthy_since
        if since is None:
            sched.disarm(job)
            return
        at = max(since, self._files_changed_at) + self.cfg.limits.known_good_after_s
        sched.move(job, sched.now() + max(0.0, at - self.ctx.clock()))

    def _known_good_due(self) -> None:
        since = self.ladder.healthy_since
        if since is None or self._snapshotting:
            return
        now = self.ctx.clock()
        since = max(since, self._files_changed_at)
        if now - since < self.cfg.limits.known_good_after_s:
            self._rearm_known_good()
            return
        if self._known_good_job is not None:
            sched = self.ctx.scheduler
            sched.move(self._known_good_job, sched.now() + defaults.KNOWN_GOOD_RECHECK_S)
        self._snapshotting = True
        self._spawn(self._snapshot_task(self._maybe_mark_known_good(now - since)))

    def _snapshot_due(self) -> None:
        if not self._snapshotting:
            self._snapshotting = True
            self._spawn(self._snapshot_task(self._scheduled_snapshot()))

    async def _snapshot_task(self, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        finally:
            self._snapshotting = False

    async def _scheduled_snapshot(self) -> None:
        snap = await asyncio.to_thread(
            self.ctx.known_good.snapshot, self.name, self.files, "scheduled", self.ladder.state.value
        )
        if snap is not None:
            self.ctx.events.emit("snapshot", self.name, rev=snap.rev, reason="scheduled")

    async def _maybe_mark_known_good(self, healthy_for: float) -> None:
        path = next(iter(self.files.values()))
        changed_at = self._files_changed_at
        try:
            d = openclaw.digest(await asyncio.to_thread(path.read_bytes))
        except OSError:
            return
        if d == self._known_good_digest:
            return
        if self._uses_config_checks():
            v = await self._validate()
            if not v.valid or v.digest != d:
                return  # a latent fault must never become known-good
        if self.ladder.state != State.HEALTHY or self._files_changed_at != changed_at:
            return  # things moved while we looked (a crash, an edit): not a config that served healthy
        snap = await asyncio.to_thread(
            self.ctx.known_good.snapshot,
            self.name,
            self.files,
            f"served healthy for {healthy_for:.0f} s",
            "healthy",
            known_good=True,
        )
        self._known_good_digest = d
        if snap is not None:
            self.ctx.events.emit("known_good", self.name, rev=snap.rev, files=snap.files)
            self.log.info("%s: boot-critical files snapshotted as known-good (%s)", self.name, snap.short)
        if self.cfg.kind == "openclaw":
            await self._record_deps()  # slow (a hard-link copy): after the snapshot, not between check and commit

    async def _watch_loop(self) -> None:
        """Validate boot-critical files as soon as they change: OpenClaw ignores an invalid edit while running,
        so without this the fault would only bite at the next restart."""
        if not self._uses_config_checks():
            return
        watched = {str(p) for p in self.files.values()}
        dirs = sorted({str(p.parent) for p in self.files.values() if p.parent.is_dir()})
        if not dirs:
            return
        import watchfiles  # only targets with boot-critical files to watch pay for it

        v = await self._validate()
        self._on_config_change(v, initial=True)
        async for _ in watchfiles.awatch(
            *dirs,
            debounce=defaults.WATCH_DEBOUNCE_MS,
            recursive=False,
            watch_filter=lambda _c, p: p in watched,
            rust_timeout=1000,
        ):
            self._on_config_change(await self._validate())

    def _on_config_change(self, v: openclaw.Validation, initial: bool = False) -> None:
        path = openclaw.config_path(self.cfg)
        if not initial:
            self._files_changed_at = self.ctx.clock()
            self._rearm_known_good()
        if not v.valid:
            if self.latent_incident is not None and (not initial or v.digest == self._latent_digest):
                return  # the fault already has its incident (opened by this daemon or the previous one)
            now = self.ctx.clock()
            if self.latent_incident is not None:  # carried over, but about other content: that one is history
                self.ctx.incidents.update(self.latent_incident, status="superseded", closed_at=now)
                self.ctx.events.emit("incident_closed", self.name, incident=self.latent_incident, outcome="superseded")
            reason = (
                f"latent config fault: {path} is invalid ({v.summary()}); "
                "the running gateway ignores it, the next restart would fail"
            )
            self.latent_incident = self.ctx.incidents.open(self.name, reason, now, now)
            self._latent_digest = v.digest
            self.ctx.incidents.update(self.latent_incident, cause="latent_config_fault")
            self.ctx.incidents.add(self.latent_incident, "config", v.to_dict())
            self.ctx.events.emit(
                "latent_config_fault",
                self.name,
                incident=self.latent_incident,
                issues=v.issues,
                stage=v.stage,
                path=str(path),
            )
            self.log.warning("%s: %s — clawmedic will restore known-good before any restart", self.name, reason)
            self._persist()
            self.ctx.on_change()
            return
        if self.latent_incident is not None:
            now = self.ctx.clock()
            self.ctx.incidents.add(self.latent_incident, "config", v.to_dict())
            self.ctx.incidents.update(self.latent_incident, status="resolved", closed_at=now)
            self.ctx.events.emit("latent_config_resolved", self.name, incident=self.latent_incident)
            self.log.info("%s: %s is valid again", self.name, path)
            self.latent_incident = self._latent_digest = None
            self._persist()
            self.ctx.on_change()
        if not initial:
            self._spawn(self._snapshot_changed())

    async def _snapshot_changed(self) -> None:
        if self.cfg.kind == "openclaw":
            await self._record_deps()
        snap = await asyncio.to_thread(
            self.ctx.known_good.snapshot, self.name, self.files, "changed on disk", self.ladder.state.value
        )
        if snap is not None:
            self.ctx.events.emit("snapshot", self.name, rev=snap.rev, reason="changed on disk")

    # --- loops -------------------------------------------------------------------------------------------------

    def _probe_due(self) -> None:
        if self._probing or self.ladder.state in _NOT_PROBED:
            return  # a probe still in flight keeps its slot: this period is skipped, the next one is on time
        launching = self.ladder.state in (State.STARTING, State.RETRYING)
        if self.cfg.start.mode == "managed" and self.handle is None and launching:
            return  # the launch is still in flight
        self._probing = True
        task = asyncio.get_running_loop().create_task(self._probe_once(), name=f"probe:{self.name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _probe_once(self) -> None:
        try:
            pid = self.handle.pid if self.handle is not None else None
            result = await self.ctx.prober.liveness(self.cfg.liveness, pid)
            self._observe_liveness(result)
            self._feed(self.ladder.probe, result.ok, result.detail)
            if result.ok and self.ladder.state == State.HEALTHY:
                self.last_healthy_at = self.ctx.clock()
            if result.ok and self.cfg.readiness is not None and self.ladder.state != State.STARTING:
                self._observe_readiness(await self.ctx.prober.http(self.cfg.readiness))
        except Exception as e:  # a bug here ends the daemon, as a crashed supervisor always has
            if self._failed is not None and not self._failed.done():
                self._failed.set_exception(e)
        finally:
            self._probing = False
            if self._probe_again:
                self._probe_again = False
                self._probe_soon()

    def _observe_liveness(self, result: ProbeResult) -> None:
        before = self.liveness
        self.liveness = result
        if before is None or before.ok != result.ok:
            self.ctx.events.emit("liveness", self.name, ok=result.ok, detail=result.detail)
            if before is not None:
                log.log(
                    logging.INFO if result.ok else logging.WARNING,
                    "%s: liveness %s: %s",
                    self.name,
                    "ok" if result.ok else "FAILED",
                    result.detail,
                )
        if not result.ok and self.ladder.state not in (State.STARTING, State.MAINTENANCE):
            self._incident_note("probe", {"ok": False, "detail": result.detail})

    def _observe_readiness(self, result: ProbeResult) -> None:
        before = self.readiness
        self.readiness = result
        if before is None or before.ok != result.ok or before.failing != result.failing:
            self.ctx.events.emit("readiness", self.name, ok=result.ok, failing=result.failing, detail=result.detail)
            if before is not None or not result.ok:
                log.log(
                    logging.INFO if result.ok else logging.WARNING,
                    "%s: readiness %s%s",
                    self.name,
                    "ok" if result.ok else "failing",
                    f" {result.failing}" if result.failing else "",
                )
            self.ctx.on_change()

    def _memory_due(self) -> None:
        if not self._checking_memory:
            self._checking_memory = True
            self._spawn(self._check_memory())

    async def _check_memory(self) -> None:
        try:
            if self.handle is None:
                self.rss_bytes = 0
                return
            self.launcher.cap_output(self.handle)  # a chatty child's output.log, capped while it runs
            limit_mb = self.cfg.limits.memory_limit_mb
            self.rss_bytes = await asyncio.to_thread(inspect.tree_rss, self.handle.pid)
            if limit_mb is not None and self.rss_bytes > limit_mb * 1024 * 1024:
                detail = f"process tree uses {self.rss_bytes / 2**20:.0f} MB, limit {limit_mb} MB"
                self.ctx.events.emit("memory_exceeded", self.name, rss_bytes=self.rss_bytes, limit_mb=limit_mb)
                self._feed(self.ladder.memory_exceeded, detail)
        finally:
            self._checking_memory = False

    # --- status ------------------------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        lad = self.ladder
        return {
            "state": lad.state.value,
            "since": lad.since,
            "pid": self.handle.pid if self.handle else None,
            "adopted": bool(self.handle and self.handle.adopted),
            "live": self.liveness.ok if self.liveness else None,
            "liveness_detail": self.liveness.detail if self.liveness else None,
            "ready": self.readiness.ok if self.readiness else None,
            "ready_failing": self.readiness.failing if self.readiness else [],
            "rss_mb": round(self.rss_bytes / 2**20, 1),
            "restarts": self.restarts,
            "consecutive_failures": lad.consecutive_restarts,
            "next_restart_at": lad.restart_at if lad.state == State.BACKOFF else None,
            "next_retry_at": lad.retry_at if lad.state == State.GAVE_UP else None,
            "incident": self.incident_id,
            "last_exit": self.last_exit,
            "kind": self.cfg.kind,
            "mode": self.cfg.start.mode,
            "config": self.config_check.to_dict() if self.config_check else None,
            "latent_incident": self.latent_incident,
            **({"would": self.last_would} if self.last_would is not None else {}),  # a dry run's last decision
        }
