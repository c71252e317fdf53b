"""Prevention and repair commands for humans (and for the daemon's tiers): config apply with probation and automatic
rollback, rollback, snapshots. Each returns its outcome as data; the CLI only renders it.

Every change is snapshotted first in the known-good store, every replaced file is moved aside as
`NAME.broken-<timestamp>`, and every command that changes something is recorded as an incident.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clawmedic import defaults, relaunch
from clawmedic.config import LoadedConfig
from clawmedic.daemon import incidents_path, status_path
from clawmedic.errors import ClawmedicError
from clawmedic.knowngood_client import Snapshot
from clawmedic.paths import ensure_private_dir
from clawmedic.process.launcher import stop_pid
from clawmedic.relaunch import live
from clawmedic.store.files import atomic_write, keep_copy
from clawmedic.store.incidents import IncidentStore
from clawmedic.store.lock import holder_pid
from clawmedic.targets import openclaw

if TYPE_CHECKING:
    from clawmedic.knowngood import KnownGoodStore

BAD_STATES = frozenset({"escalated", "gave_up", "backoff"})
Progress = Callable[[str], None]


class ConfigRefused(ClawmedicError):
    """The new config does not validate: nothing was changed."""

    exit_code = defaults.EXIT_FAILURE


@dataclass
class ApplyReport:
    target: str
    applied: bool
    healthy: bool
    rolled_back: bool
    validation: dict[str, Any]
    snapshot: str | None = None
    moved_aside: str | None = None
    reason: str = ""
    incident: int | None = None
    took_s: float = 0.0
    steps: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _store(loaded: LoadedConfig) -> KnownGoodStore:
    from clawmedic.knowngood import KnownGoodStore  # dulwich: only in the CLI process that needs it

    return KnownGoodStore(ensure_private_dir(loaded.state_dir))


def _incidents(loaded: LoadedConfig) -> IncidentStore:
    return IncidentStore(incidents_path(ensure_private_dir(loaded.state_dir)), loaded.redactor)


def daemon_status(loaded: LoadedConfig, name: str) -> dict[str, Any] | None:
    """The target's entry in the running daemon's status file, or None when no daemon runs."""
    if holder_pid(loaded.state_dir) is None:
        return None
    try:
        data = json.loads(status_path(loaded.state_dir).read_text())
        entry: dict[str, Any] = data["targets"][name]
        return entry
    except (OSError, ValueError, KeyError):
        return {}


def snapshot(loaded: LoadedConfig, name: str, *, known_good: bool, reason: str = "on demand") -> Snapshot | None:
    cfg = loaded.targets[name]
    files = openclaw.boot_files(cfg)
    if not files:
        raise ConfigRefused(f"Target {name} has no boot-critical files to snapshot (set `boot_files`).")
    health = "live" if live(loaded, name) else "not live"
    if known_good and cfg.kind == "openclaw":
        v = openclaw.validate(loaded, name)
        if not v.valid:
            raise ConfigRefused(f"{openclaw.config_path(cfg)} is invalid ({v.summary()}): not marking it known-good.")
    return _store(loaded).snapshot(name, files, reason, health, known_good=known_good)


def restart_via_daemon(loaded: LoadedConfig, name: str) -> relaunch.DaemonRequest | None:
    """Ask the running daemon to (re)start the target (resuming it first if it is paused or gave up), without
    waiting; None when no daemon runs."""
    return relaunch.ask_daemon(loaded, name)


def restart_target(
    loaded: LoadedConfig, name: str, progress: Progress, *, check_config: bool = True
) -> relaunch.Outcome:
    """Restart the target and wait until a new process is live: through the daemon when one supervises it,
    else by itself (managed targets) or with the service manager's restart command (external ones)."""
    cfg = loaded.targets[name]
    req = relaunch.ask_daemon(loaded, name)
    if req is not None:
        progress(f"asked the clawmedic daemon (pid {req.daemon_pid}) to restart {name}")
        return relaunch.await_daemon_restart(loaded, name, req, progress)
    _, no_daemon = relaunch.supervision(loaded)
    progress(no_daemon)
    if cfg.start.mode == "external":
        if not cfg.start.restart_command:
            return relaunch.Outcome(False, f"{name} is started by a service manager and has no `restart_command`")
        cmd = [loaded.resolve(x, "restart_command") for x in cfg.start.restart_command]
        progress(f"running {' '.join(cmd)}")
        r = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env={**os.environ, **loaded.command_env(name)},
        )
        if r.returncode != 0:
            return relaunch.Outcome(False, f"the restart command exited {r.returncode}")
        if wait_healthy(loaded, name, cfg.limits.startup_timeout_s + defaults.RESTART_WAIT_MARGIN_S, progress):
            return relaunch.Outcome(True, f"{name} restarted by its service manager and is live")
        return relaunch.Outcome(False, f"{name} is not live after its restart command")
    if check_config and cfg.kind == "openclaw":
        v = openclaw.validate(loaded, name)
        if not v.valid:
            return relaunch.Outcome(
                False,
                f"{openclaw.config_path(cfg)} is invalid ({v.summary()}): not restarting {name} on it "
                "(`clawmedic fix config` restores known-good)",
            )
    outcome = relaunch.restart_unsupervised(loaded, name, progress)
    if outcome is None:  # a daemon started meanwhile: it supervises now
        return restart_target(loaded, name, progress, check_config=False)
    if outcome.ok:
        return relaunch.Outcome(
            True,
            f"{outcome.detail}; no clawmedic daemon is supervising it: start one with "
            f"{relaunch.how_to_start_daemon(loaded)} (it adopts pid {outcome.pid})",
            outcome.pid,
        )
    return outcome


def wait_healthy(loaded: LoadedConfig, name: str, timeout_s: float, progress: Progress) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        st = daemon_status(loaded, name)
        if live(loaded, name) and (st is None or st.get("state") in ("healthy", "probation")):
            return True
        time.sleep(1.0)
    progress(f"{name} is not healthy after {timeout_s:g} s")
    return False


def apply_config(
    loaded: LoadedConfig,
    name: str,
    new_file: Path,
    *,
    probation_s: float = defaults.APPLY_PROBATION_S,
    progress: Progress = lambda _m: None,
) -> ApplyReport:
    """Validate → snapshot → apply → (the gateway reloads or asks for a restart) → probation → rollback if unhealthy."""
    cfg = loaded.targets[name]
    if cfg.kind != "openclaw":
        raise ConfigRefused(f"`config apply` manages an OpenClaw config; target {name} is of kind {cfg.kind}.")
    t0 = time.monotonic()
    live_path = openclaw.config_path(cfg)
    progress(f"validating {new_file}")
    v = openclaw.validate(loaded, name, candidate=new_file)
    report = ApplyReport(name, False, False, False, v.to_dict())
    if not v.valid:
        report.reason = f"{new_file} is invalid: {v.summary()}"
        report.steps.append("refused: nothing changed")
        return report
    store = _store(loaded)
    before = store.snapshot(
        name, openclaw.boot_files(cfg), "before config apply", "live" if live(loaded, name) else "not live"
    )
    latest = before or store.latest(name)
    rev = latest.rev if latest is not None else None
    report.snapshot = rev
    report.steps.append(f"snapshot {rev[:10] if rev else '-'} taken")
    incidents = _incidents(loaded)
    t_apply = time.time()
    incident = incidents.open(name, f"config apply of {new_file}", t_apply, t_apply)
    incidents.update(incident, cause="config_apply")
    report.incident = incident
    log_offset = _log_size(cfg.log_file)
    if live_path.exists():
        report.moved_aside = str(keep_copy(live_path, "broken"))
    atomic_write(live_path, new_file.read_bytes())  # one rename: the gateway's watcher sees one change
    report.applied = True
    report.steps.append(
        f"applied to {live_path}" + (f" (previous kept as {report.moved_aside})" if report.moved_aside else "")
    )
    incidents.add(
        incident,
        "action",
        {"action": "apply", "file": str(new_file), "moved_aside": report.moved_aside, "snapshot": rev},
    )
    how = _await_reload(cfg.log_file, log_offset)
    if how == "hot":
        report.steps.append("the gateway hot-reloaded it (no restart needed)")
    elif how == "restart" and _restarted_since(loaded, name, t_apply, wait_s=20.0):
        report.steps.append("the gateway restarted itself to load it")
    elif restart_via_daemon(loaded, name):
        report.steps.append(f"the change did not load live ({how}): asked the daemon to restart the gateway")
    else:
        report.steps.append(f"the change did not load live ({how}) and no clawmedic daemon runs to restart it")
    incidents.add(incident, "reload", {"how": how})
    progress(f"applied ({report.steps[-1]}); probation {probation_s:g} s")
    failure = _probation(loaded, name, probation_s, t_apply, progress)
    if failure is None:
        report.healthy = True
        report.reason = f"healthy through {probation_s:g} s of probation"
        report.steps.append("probation passed")
        incidents.update(incident, status="recovered", closed_at=time.time())
        incidents.add(incident, "verdict", {"healthy": True})
        report.took_s = time.monotonic() - t0
        return report
    report.reason = failure
    report.steps.append(f"probation failed: {failure}")
    incidents.add(incident, "probe", {"ok": False, "detail": failure})
    progress(f"unhealthy: {failure}; rolling back to {rev[:10] if rev else 'the previous file'}")
    if rev is not None:
        restored = store.restore(name, openclaw.CONFIG_KEY, live_path, rev)
        report.rolled_back = True
        report.steps.append(
            f"rolled back to snapshot {rev[:10]}"
            + (f" (the applied file kept as {restored.moved_aside})" if restored.moved_aside else "")
        )
        incidents.add(
            incident,
            "action",
            {
                "action": "rollback",
                "rev": rev,
                "moved_aside": str(restored.moved_aside) if restored.moved_aside else None,
            },
        )
    if restart_via_daemon(loaded, name):
        report.steps.append("asked the daemon to restart the gateway")
    healthy = wait_healthy(loaded, name, cfg.limits.startup_timeout_s + 30, progress)
    report.steps.append("healthy again after the rollback" if healthy else "still not healthy after the rollback")
    incidents.add(incident, "verdict", {"healthy_after_rollback": healthy, "reason": failure})
    incidents.update(incident, status="rolled_back" if healthy else "gave_up", closed_at=time.time())
    report.took_s = time.monotonic() - t0
    return report


_RELOAD_MARKERS = (
    ("hot reload applied", "hot"),
    ("requires gateway restart", "restart"),
    ("reload skipped", "skipped"),
    ("superseded", "superseded"),
)
RELOAD_WAIT_S = 15.0  # OpenClaw notices a config change within a second or two


def _log_size(path: Path | None) -> int:
    try:
        return path.stat().st_size if path is not None else 0
    except OSError:
        return 0


def _await_reload(log_file: Path | None, offset: int, wait_s: float = RELOAD_WAIT_S) -> str:
    """How the gateway took the change, from its own JSON-lines log: hot, restart, skipped, superseded, unknown."""
    if log_file is None:
        return "unknown"
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            with log_file.open("rb") as f:
                f.seek(offset)
                text = f.read().decode("utf-8", "replace")
        except OSError:
            text = ""
        for marker, how in _RELOAD_MARKERS:
            if marker in text:
                return how
        time.sleep(0.3)
    return "unknown"


def _restarted_since(loaded: LoadedConfig, name: str, since: float, wait_s: float) -> bool:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        st = daemon_status(loaded, name)
        if st is None:
            return False
        if (st.get("last_exit") or {}).get("at", 0) >= since:
            return True
        time.sleep(0.5)
    return False


def _probation(loaded: LoadedConfig, name: str, probation_s: float, since: float, progress: Progress) -> str | None:
    """None if the target stays healthy for `probation_s`, else why it did not."""
    cfg = loaded.targets[name]
    deadline = time.monotonic() + probation_s
    failures = 0
    while time.monotonic() < deadline:
        time.sleep(1.0)
        st = daemon_status(loaded, name)
        if st is not None:
            state = st.get("state")
            last_exit = st.get("last_exit") or {}
            if state in BAD_STATES:
                why = f"the daemon reports {state}"
                if last_exit.get("at", 0) >= since:
                    why += f" after exit code {last_exit.get('code')} ({last_exit.get('kind')})"
                return why
            if state in ("starting", "restarting"):
                failures = 0
                continue  # the gateway is restarting itself to load the change
        if live(loaded, name):
            failures = 0
        else:
            failures += 1
            if failures >= cfg.liveness.failure_threshold and st is None:
                return f"liveness failed {failures} times in a row"
    if not live(loaded, name):
        return f"not live at the end of the {probation_s:g} s probation"
    return None


def rollback(
    loaded: LoadedConfig, name: str, rev: str | None, *, progress: Progress = lambda _m: None
) -> dict[str, Any]:
    """Restore the boot-critical config from `rev` (default: known-good) and restart through the daemon."""
    cfg = loaded.targets[name]
    store = _store(loaded)
    files = openclaw.boot_files(cfg)
    if not files:
        raise ConfigRefused(f"Target {name} has no boot-critical files.")
    before = store.snapshot(name, files, "before rollback", "live" if live(loaded, name) else "not live")
    incidents = _incidents(loaded)
    now = time.time()
    incident = incidents.open(name, f"rollback to {rev or 'known-good'}", now, now)
    incidents.update(incident, cause="rollback")
    restored = []
    for key, path in files.items():
        r = store.restore(name, key, path, rev)
        restored.append({"file": str(path), "rev": r.rev, "moved_aside": str(r.moved_aside) if r.moved_aside else None})
        progress(f"restored {path} from {r.rev[:10]}" + (f" (kept {r.moved_aside})" if r.moved_aside else ""))
    incidents.add(
        incident,
        "action",
        {"action": "rollback", "restored": restored, "snapshot_before": before.rev if before else None},
    )
    outcome = restart_target(loaded, name, progress)
    healthy = outcome.ok
    incidents.add(incident, "action", {"action": "restart", "ok": outcome.ok, "detail": outcome.detail})
    incidents.update(incident, status="recovered" if healthy else "open", closed_at=time.time() if healthy else None)
    return {
        "target": name,
        "restored": restored,
        "restarted": outcome.pid is not None or outcome.ok,
        "restart": outcome.detail,
        "pid": outcome.pid,
        "healthy": healthy,
        "incident": incident,
    }


# --- the runbook: fix status|config|deps|port|restart|nuclear, and safe-start -----------------------------------

StepStatus = str  # "ok" (nothing to do) | "fixed" | "planned" | "refused" | "failed"


@dataclass
class Step:
    name: str
    status: StepStatus
    detail: str
    changes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def good(self) -> bool:
        return self.status in ("ok", "fixed", "planned")


@dataclass
class FixReport:
    target: str
    action: str
    dry_run: bool
    steps: list[Step] = field(default_factory=list)
    incident: int | None = None

    @property
    def ok(self) -> bool:
        return all(s.good for s in self.steps)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "action": self.action,
            "dry_run": self.dry_run,
            "ok": self.ok,
            "incident": self.incident,
            "steps": [asdict(s) for s in self.steps],
        }


def fix_config(loaded: LoadedConfig, name: str, *, dry_run: bool) -> Step:
    cfg = loaded.targets[name]
    if cfg.kind != "openclaw":
        return Step("config", "ok", f"target {name} has no OpenClaw config to check")
    path = openclaw.config_path(cfg)
    v = openclaw.validate(loaded, name)
    if v.valid:
        return Step("config", "ok", f"{path} is valid")
    store = _store(loaded)
    kg = store.known_good(name)
    if kg is None:
        return Step("config", "failed", f"{path} is invalid ({v.summary()}) and there is no known-good snapshot")
    if dry_run:
        return Step(
            "config",
            "planned",
            f"{path} is invalid ({v.summary()}): would restore known-good {kg.short} "
            "and keep the broken file beside it",
        )
    store.snapshot(name, openclaw.boot_files(cfg), "before fix config", "config invalid")
    r = store.restore(name, openclaw.CONFIG_KEY, path)
    again = openclaw.validate(loaded, name)
    change = {"file": str(path), "restored_from": r.rev, "moved_aside": str(r.moved_aside) if r.moved_aside else None}
    if not again.valid:
        return Step("config", "failed", f"restored {kg.short} but it does not validate: {again.summary()}", [change])
    return Step("config", "fixed", f"{path} was invalid ({v.summary()}); restored known-good {kg.short}", [change])


def fix_deps(loaded: LoadedConfig, name: str, *, dry_run: bool) -> Step:
    from clawmedic import deps

    if loaded.targets[name].kind != "openclaw":
        return Step("deps", "ok", f"target {name} has no npm install to check")
    try:
        report = deps.fix(loaded, name, dry_run=dry_run)
    except ClawmedicError as e:
        return Step("deps", "failed", str(e))
    changes = [o.to_dict() for o in report.outcomes]
    if not report.outcomes:
        return Step("deps", "ok", "every package of the install is present")
    names = ", ".join(o.package for o in report.outcomes)
    if dry_run:
        return Step("deps", "planned", f"would restore: {names}", changes)
    if report.ok:
        return Step("deps", "fixed", f"restored: {names}", changes)
    failed = ", ".join(f"{o.package} ({o.detail})" for o in report.outcomes if o.status == "failed")
    return Step("deps", "failed", f"could not restore: {failed}", changes)


def _target_pid(loaded: LoadedConfig, name: str) -> int | None:
    from clawmedic.process.launcher import Launcher

    handle = Launcher(loaded.state_dir / "targets" / name).adopt()
    return handle.pid if handle else None


def fix_port(loaded: LoadedConfig, name: str, *, dry_run: bool, kill_foreign: bool = False) -> Step:
    from clawmedic.process import identity, inspect

    cfg = loaded.targets[name]
    if cfg.port is None:
        return Step("port", "ok", f"target {name} has no port configured")
    owner = inspect.port_owner(cfg.port)
    if owner is None:
        return Step("port", "ok", f"port {cfg.port} is free")
    ours = _target_pid(loaded, name)
    if owner.pid is not None and (
        (ours is not None and owner.pid in inspect.tree_pids(ours))
        or identity.has_marker(owner.pid, loaded.state_dir / "targets" / name)
    ):
        return Step("port", "ok", f"port {cfg.port} is held by {name} itself (pid {ours or owner.pid})")
    info = {"port": cfg.port, "owner_pid": owner.pid, "owner_cmdline": owner.cmdline}
    stale = owner.pid is not None and identity.is_stale_gateway_of(loaded, name, owner.pid)
    if not stale and not kill_foreign:
        return Step(
            "port",
            "refused",
            f"port {cfg.port} is held by {owner.describe()}, which clawmedic did not start; "
            "stop it yourself, or pass --kill-foreign",
            [info],
        )
    what = "a stale gateway of this target" if stale else "a foreign process (allowed by --kill-foreign)"
    if dry_run:
        return Step("port", "planned", f"would stop {what}: {owner.describe()}", [info])
    # Re-checked right before the signal, on the very process (psutil refuses a reused PID).
    holder = identity.port_holder(cfg.port)
    if (
        holder is None
        or holder.pid != owner.pid
        or not identity.still_holds(cfg.port, holder)
        or (stale and not identity.is_stale_gateway_of(loaded, name, holder.pid))
    ):
        return Step("port", "failed", f"port {cfg.port} changed hands while checking; run it again", [info])
    stop_pid(holder, loaded.targets[name].limits.stop_timeout_s)
    after = inspect.port_owner(cfg.port)
    if after is not None:
        return Step("port", "failed", f"port {cfg.port} is still held by {after.describe()}", [info])
    return Step("port", "fixed", f"stopped {what}: {owner.describe()}", [info])


def fix_restart(
    loaded: LoadedConfig, name: str, *, dry_run: bool, progress: Progress, check_config: bool = True
) -> Step:
    if dry_run:
        cfg = loaded.targets[name]
        st = daemon_status(loaded, name)
        if st is not None:
            return Step("restart", "planned", f"would ask the daemon to restart {name} (now {st.get('state')})")
        _, no_daemon = relaunch.supervision(loaded)
        if cfg.start.mode == "external":
            cmd = " ".join(cfg.start.restart_command or ["(no restart_command)"])
            return Step("restart", "planned", f"{no_daemon}; would run {cmd}")
        pid = _target_pid(loaded, name)
        stop = f"stop its own process (pid {pid}) and " if pid is not None else ""
        return Step("restart", "planned", f"{no_daemon}; would {stop}launch {name} the way the daemon does")
    outcome = restart_target(loaded, name, progress, check_config=check_config)
    return Step("restart", "fixed" if outcome.ok else "failed", outcome.detail)


def fix_status(loaded: LoadedConfig, name: str) -> list[Step]:
    from clawmedic import deps
    from clawmedic.process import identity, inspect

    cfg = loaded.targets[name]
    st = daemon_status(loaded, name)
    steps = [
        Step(
            "daemon",
            "ok" if st is not None else "failed",
            relaunch.supervision(loaded)[1] + (f"; {name} is {st.get('state')}" if st is not None else ""),
        ),
        Step("liveness", "ok" if live(loaded, name) else "failed", cfg.liveness.url or ""),
    ]
    if cfg.kind == "openclaw":
        v = openclaw.validate(loaded, name)
        steps.append(Step("config", "ok" if v.valid else "failed", v.summary()))
        kg = _store(loaded).known_good(name)
        steps.append(
            Step(
                "known-good",
                "ok" if kg else "failed",
                f"known-good snapshot {kg.short}" if kg else "no known-good snapshot yet",
            )
        )
        try:
            problems = deps.check(loaded, name)
            steps.append(
                Step(
                    "deps",
                    "ok" if not problems else "failed",
                    "all packages present" if not problems else "; ".join(f"{p.package}: {p.kind}" for p in problems),
                )
            )
        except ClawmedicError as e:
            steps.append(Step("deps", "failed", str(e)))
    if cfg.port is not None:
        owner = inspect.port_owner(cfg.port)
        ours = _target_pid(loaded, name)
        held_by_us = owner is not None and ours is not None and owner.pid in inspect.tree_pids(ours)
        held_by_us = held_by_us or (
            owner is not None
            and owner.pid is not None
            and identity.has_marker(owner.pid, loaded.state_dir / "targets" / name)
        )
        steps.append(
            Step(
                "port",
                "ok" if owner is None or held_by_us else "failed",
                "free" if owner is None else f"held by {owner.describe()}" + (" (the target)" if held_by_us else ""),
            )
        )
    return steps


def run_fix(
    loaded: LoadedConfig,
    name: str,
    action: str,
    *,
    dry_run: bool,
    kill_foreign: bool = False,
    progress: Progress = lambda _m: None,
) -> FixReport:
    """One runbook action, recorded as an incident (unless it is a dry run, or the read-only `status`)."""
    report = FixReport(name, action, dry_run)
    if action == "status":
        report.steps = fix_status(loaded, name)
    elif action == "config":
        report.steps = [fix_config(loaded, name, dry_run=dry_run)]
    elif action == "deps":
        report.steps = [fix_deps(loaded, name, dry_run=dry_run)]
    elif action == "port":
        report.steps = [fix_port(loaded, name, dry_run=dry_run, kill_foreign=kill_foreign)]
    elif action == "restart":
        report.steps = [fix_restart(loaded, name, dry_run=dry_run, progress=progress)]
    elif action == "nuclear":
        plan: list[Callable[[], Step]] = [
            lambda: fix_config(loaded, name, dry_run=dry_run),
            lambda: fix_deps(loaded, name, dry_run=dry_run),
            lambda: fix_port(loaded, name, dry_run=dry_run, kill_foreign=kill_foreign),
            # the config step just checked (or restored) the config: no second validation before the restart
            lambda: fix_restart(loaded, name, dry_run=dry_run, progress=progress, check_config=False),
        ]
        for step in plan:
            s = step()
            report.steps.append(s)
            progress(f"{s.name}: {s.status} — {s.detail}")
            if not s.good:
                break  # verify after each step: do not restart on top of a failed repair
    else:
        raise ConfigRefused(f"Unknown fix action {action!r}.")
    if not dry_run and action != "status":  # `fix status` only reads: it is no incident (it would skew the stats)
        incidents = _incidents(loaded)
        now = time.time()
        inc = incidents.open(name, f"clawmedic fix {action}", now, now)
        incidents.update(inc, cause=f"fix_{action}")
        for s in report.steps:
            incidents.add(inc, "action", asdict(s))
        incidents.update(inc, status="recovered" if report.ok else "gave_up", closed_at=time.time())
        report.incident = inc
    return report


def safe_start_checks(loaded: LoadedConfig, name: str, *, progress: Progress = lambda _m: None) -> list[Step]:
    """What `clawmedic safe-start` does before exec: deps, config, port. Stops at the first failure."""
    steps: list[Step] = []
    plan: list[Callable[[], Step]] = [
        lambda: fix_deps(loaded, name, dry_run=False),
        lambda: fix_config(loaded, name, dry_run=False),
        lambda: fix_port(loaded, name, dry_run=False),
    ]
    for step in plan:
        s = step()
        steps.append(s)
        progress(f"{s.name}: {s.status} — {s.detail}")
        if not s.good:
            break
    return steps
