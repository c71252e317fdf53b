"""Evidence collectors: each bounded in time and output, each passed through secret redaction.

A collector that fails or times out becomes evidence of its own (`errors[name]`), never an exception: the doctor
must work precisely when things are broken.
"""

from __future__ import annotations

import concurrent.futures
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from clawmedic import defaults
from clawmedic.config import LoadedConfig
from clawmedic.process import inspect
from clawmedic.process.launcher import Launcher, tail_lines
from clawmedic.targets import kinds
from clawmedic.text import clip


@dataclass
class Evidence:
    target: str
    cause: str = ""  # why the ladder escalated: an ExitKind value or "crash_loop"
    reason: str = ""
    last_exit: dict[str, Any] | None = None
    output_tail: list[str] = field(default_factory=list)  # the gateway's console output, last launch
    log_events: list[dict[str, Any]] = field(default_factory=list)  # its JSON-lines log, parsed (errors/warnings)
    process: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] | None = None  # a Validation as a dict
    known_good: str | None = None  # rev of the known-good snapshot, if any
    config_differs_from_known_good: bool = False
    port_owner: dict[str, Any] | None = None  # pid, cmdline, ours, stale_gateway
    deps_problems: list[dict[str, Any]] = field(default_factory=list)
    node: dict[str, Any] = field(default_factory=dict)
    disk_free_mb: float | None = None  # on the fullest of the disks that matter (gateway HOME, clawmedic state)
    disk_total_mb: float | None = None
    disk_path: str = ""
    state_db: dict[str, Any] = field(default_factory=dict)
    stability_bundles: list[str] = field(default_factory=list)
    breaker_age_s: float | None = None  # age of the newest crash-loop-breaker bundle (they outlive the breaker)
    lint_findings: list[dict[str, Any]] = field(default_factory=list)
    duplicates: list[dict[str, Any]] = field(default_factory=list)  # other gateways on the same HOME
    gateway: dict[str, Any] = field(default_factory=dict)  # a running gateway's own state (gateway_checks)
    errors: dict[str, str] = field(default_factory=dict)  # collector -> why it could not tell
    collected_at: float | None = None  # epoch seconds
    window_start: float | None = None  # the incident's window opens here: older log records are an earlier life
    first_failure_at: float | None = None  # the incident's, epoch s
    last_healthy_at: float | None = None  # the last probe that found the target healthy, epoch s
    changes: list[dict[str, Any]] = field(default_factory=list)  # what changed since then (doctor/changes.py)
    target_kind: str = "openclaw"  # whose words the findings speak (targets/kinds.py); older records are OpenClaw's

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def current_log_events(self) -> list[dict[str, Any]]:
        """Log events inside the incident's window (an event without a time cannot be placed, so it counts)."""
        start = self.window_start
        return [
            e for e in self.log_events if start is None or not isinstance(e.get("at"), int | float) or e["at"] >= start
        ]

    def text(self) -> str:
        """Everything the gateway printed (this launch) or logged (within the window), for pattern rules."""
        return "\n".join([*self.output_tail, *(str(e.get("message", "")) for e in self.current_log_events())])


def _cut(lines: list[str]) -> list[str]:
    return [clip(ln, defaults.EVIDENCE_MAX_LINE_CHARS) for ln in lines[-defaults.EVIDENCE_MAX_LINES :]]


def log_time(value: object) -> float | None:
    """A JSON-lines record's `time` (ISO 8601, as OpenClaw writes it; or epoch s/ms) as epoch seconds."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) / (1000 if value > 1e11 else 1)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


def collect(
    loaded: LoadedConfig,
    name: str,
    *,
    cause: str = "",
    reason: str = "",
    last_exit: dict[str, Any] | None = None,
    pid: int | None = None,
    lint: bool = True,
    config: dict[str, Any] | None = None,
    budget_s: float = defaults.EVIDENCE_COLLECTOR_BUDGET_S,
    since: float | None = None,
    first_failure_at: float | None = None,
    last_healthy_at: float | None = None,
) -> Evidence:
    """Run every collector (in parallel, each bounded) and return redacted evidence. `since`: when the incident's
    window opens (epoch s); without one, the last `EVIDENCE_WINDOW_S` count."""
    cfg = loaded.targets[name]
    kind = kinds.kind_of(cfg.kind)
    now = time.time()
    ev = Evidence(name, cause, reason, last_exit, collected_at=round(now, 3), target_kind=kind.name)
    ev.window_start = round(since if since is not None else now - defaults.EVIDENCE_WINDOW_S, 3)
    ev.first_failure_at, ev.last_healthy_at = first_failure_at, last_healthy_at
    collectors: dict[str, Callable[[], None]] = {
        "output": lambda: _output(loaded, name, ev),
        "log": lambda: _log(cfg.log_file, ev),
        "process": lambda: _process(pid, ev),
        "port": lambda: _port(loaded, name, pid, ev),
        "disk": lambda: _disk(loaded, name, ev),
        "changes": lambda: _changes(loaded, name, ev),
    }
    collectors |= kind.collectors(loaded, name, ev, pid=pid, config=config, lint=lint)  # what only this kind has
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=len(collectors), thread_name_prefix="evidence")
    futures = {pool.submit(fn): key for key, fn in collectors.items()}
    done, pending = concurrent.futures.wait(futures, timeout=budget_s)
    late = [f for f in pending if futures[f] == "changes"]
    if late:  # what changed names the cause the change rule reverts: worth a few more seconds on a loaded host
        concurrent.futures.wait(late, timeout=max(0.0, defaults.EVIDENCE_CHANGES_BUDGET_S - budget_s))
        done, pending = done | {f for f in late if f.done()}, {f for f in pending if not f.done()}
    for f in done:
        if (exc := f.exception()) is not None:
            ev.errors[futures[f]] = f"{type(exc).__name__}: {exc}"
    for f in pending:
        ev.errors[futures[f]] = f"timed out after {budget_s:g} s"
    done_keys = {futures[f] for f in done if f.exception() is None}
    pool.shutdown(wait=False, cancel_futures=True)
    if "deps" in done_keys:
        try:
            _deps_changes(loaded, name, ev)
        except (OSError, ValueError) as e:
            ev.errors["changes"] = f"{type(e).__name__}: {e}"
    redacted: dict[str, Any] = loaded.redactor.data(ev.to_dict())
    return Evidence(**redacted)


# --- collectors --------------------------------------------------------------------------------------------------


def _output(loaded: LoadedConfig, name: str, ev: Evidence) -> None:
    launcher = Launcher(loaded.state_dir / "targets" / name)
    text = tail_lines(launcher.log_path, defaults.EVIDENCE_MAX_LINES * 4)
    # only the last launch: output after the last "--- clawmedic: starting" marker
    last = max((i for i, ln in enumerate(text) if ln.startswith("--- clawmedic: starting")), default=-1)
    ev.output_tail = _cut([ln for ln in text[last + 1 :] if ln.strip()])


def _log(log_file: Path | None, ev: Evidence) -> None:
    if log_file is None:
        return
    ev.log_events = parse_log(tail_lines(log_file, 400), ev.window_start)


def parse_log(lines: list[str], window_start: float | None) -> list[dict[str, Any]]:
    """Warnings and errors of the gateway's JSON-lines log (FACTS §8), each with its time; records logged before
    `window_start` belong to an earlier life of the gateway and are left out."""
    events = []
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if not isinstance(rec, dict):
            continue
        meta: dict[str, Any] = rec["_meta"] if isinstance(rec.get("_meta"), dict) else {}
        level = str(meta.get("logLevelName", "")).upper()
        if level not in ("WARN", "ERROR", "FATAL"):
            continue
        stamp = rec.get("time") or meta.get("date")
        at = log_time(stamp)
        if window_start is not None and at is not None and at < window_start:
            continue
        msg = rec.get("2") if isinstance(rec.get("2"), str) else rec.get("1") if isinstance(rec.get("1"), str) else ""
        structured: dict[str, Any] = rec["1"] if isinstance(rec.get("1"), dict) else {}
        events.append(
            {
                "time": stamp,
                "at": at,
                "level": level,
                "subsystem": rec.get("0", ""),
                "message": clip(str(msg), defaults.EVIDENCE_MAX_LINE_CHARS),
                "event": structured.get("event"),
            }
        )
    return events[-defaults.EVIDENCE_MAX_LINES :]


def _process(pid: int | None, ev: Evidence) -> None:
    if pid is None:
        ev.process = {"pid": None, "alive": False}
        return
    ev.process = {
        "pid": pid,
        "alive": inspect.is_alive(pid),
        "stopped": inspect.is_stopped(pid),
        "rss_mb": round(inspect.tree_rss(pid) / 2**20, 1),
    }


def _port(loaded: LoadedConfig, name: str, pid: int | None, ev: Evidence) -> None:
    from clawmedic.process import identity

    port = loaded.targets[name].port
    if port is None:
        return
    owner = inspect.port_owner(port)
    if owner is None:
        ev.port_owner = None
        return
    ours = owner.pid is not None and (
        (pid is not None and owner.pid in inspect.tree_pids(pid))
        or identity.has_marker(owner.pid, loaded.state_dir / "targets" / name)
    )
    stale = owner.pid is not None and not ours and identity.is_stale_gateway_of(loaded, name, owner.pid)
    ev.port_owner = {"port": port, "pid": owner.pid, "cmdline": owner.cmdline, "ours": ours, "stale_gateway": stale}


def _disk(loaded: LoadedConfig, name: str, ev: Evidence) -> None:
    """Free space where the gateway writes (its HOME: state database, logs) and where clawmedic does; the fuller
    one is the evidence."""
    cfg = loaded.targets[name]
    places = [*kinds.kind_of(cfg.kind).data_dirs(cfg), loaded.state_dir]
    if cfg.log_file is not None:
        places.append(cfg.log_file.parent)
    worst: tuple[float, float, Path] | None = None
    for place in places:
        while not place.exists() and place != place.parent:
            place = place.parent
        usage = shutil.disk_usage(place)
        free, total = usage.free / 2**20, usage.total / 2**20
        if worst is None or free < worst[0]:
            worst = (free, total, place)
    if worst is not None:
        ev.disk_free_mb, ev.disk_total_mb, ev.disk_path = round(worst[0], 1), round(worst[1], 1), str(worst[2])


def _changes(loaded: LoadedConfig, name: str, ev: Evidence) -> None:
    """What changed since the last healthy state (doctor/changes.py), against the known-good snapshot."""
    from clawmedic.doctor import changes
    from clawmedic.knowngood_client import KnownGoodClient

    got = KnownGoodClient(loaded.state_dir).known_good_files(name)
    kg, kg_files = got if got is not None else (None, {})
    if kg is not None:
        ev.known_good = kg.rev
    found = changes.collect_changes(
        loaded,
        name,
        kg_files.get,
        kg.at if kg is not None else None,
        ev.last_healthy_at,
    )
    ev.config_differs_from_known_good = any(c.what == "config" for c in found)
    ev.changes += changes.as_dicts(found, ev.last_healthy_at, ev.first_failure_at)


def _deps_changes(loaded: LoadedConfig, name: str, ev: Evidence) -> None:
    """Packages that differ from the pristine install, once the `deps` collector found them."""
    from clawmedic import deps
    from clawmedic.doctor import changes

    if ev.deps_problems:
        manifest = deps.load_manifest(loaded, name)
        found = changes.deps_changes(ev.deps_problems, manifest.root if manifest else None)
        ev.changes += changes.as_dicts(found, ev.last_healthy_at, ev.first_failure_at)
