"""Prevention and repair commands for humans (and for the daemon's tiers): config apply with probation and automatic
rollback, rollback, snapshots. Each returns its outcome as data; the CLI only renders it.

Every change is snapshotted first in the known-good store, every replaced file is moved aside as
`NAME.broken-<timestamp>`, and every command that changes something is recorded as an incident.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from clawmedic import control, defaults
from clawmedic.config import LoadedConfig
from clawmedic.daemon import incidents_path, status_path
from clawmedic.errors import ClawmedicError
from clawmedic.knowngood import KnownGoodStore, Snapshot
from clawmedic.paths import ensure_private_dir
from clawmedic.store.files import atomic_write, keep_copy
from clawmedic.store.incidents import IncidentStore
from clawmedic.store.lock import holder_pid
from clawmedic.targets import openclaw

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


def live(loaded: LoadedConfig, name: str) -> bool:
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


def restart_via_daemon(loaded: LoadedConfig, name: str) -> bool:
    """Ask the running daemon to (re)start the target: resume it if it gave up, else a requested restart."""
    st = daemon_status(loaded, name)
    if st is None:
        return False
    if st.get("state") in ("gave_up", "escalated", "maintenance"):
        control.resume(loaded.state_dir, [name])
    else:
        control.request_restart(loaded.state_dir, [name])
    return True


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
    restarted = restart_via_daemon(loaded, name)
    healthy = (
        wait_healthy(loaded, name, cfg.limits.startup_timeout_s + 30, progress) if restarted else live(loaded, name)
    )
    incidents.update(incident, status="recovered" if healthy else "open", closed_at=time.time() if healthy else None)
    return {"target": name, "restored": restored, "restarted": restarted, "healthy": healthy, "incident": incident}
