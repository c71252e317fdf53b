"""Remedies: declared (name, description, typed parameters, risk class) and returning their outcome as data.

Every remedy runs through `Guard.run`, which enforces the policy: an allowlist of risk classes; a process that
clawmedic did not start and that is not this target's own gateway is never signalled unless the user allowed it;
files are snapshotted first and moved aside, never deleted; security settings and secrets are never touched
(no remedy here edits them).
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from clawmedic import defaults
from clawmedic.config import LoadedConfig
from clawmedic.knowngood_client import KnownGoodClient
from clawmedic.process import inspect
from clawmedic.process.identity import (
    duplicate_gateways,
    is_duplicate_gateway_of,
    is_ours,
    is_stale_gateway_of,
    port_holder,
    still_holds,
)
from clawmedic.process.launcher import Launcher, stop_pid
from clawmedic.store.files import move_aside
from clawmedic.targets import openclaw
from clawmedic.targets.openclaw.inside import PLUGIN_ID, parse_plugins


class Risk(StrEnum):
    READ_ONLY = "read_only"
    REVERSIBLE = "reversible"
    DESTRUCTIVE = "destructive"


class Status(StrEnum):
    OK = "ok"
    FAILED = "failed"
    REFUSED = "refused"
    NEEDS_APPROVAL = "needs_approval"
    WOULD = "would"  # allowed, not run: `run --dry-run`


@dataclass
class Outcome:
    remedy: str
    status: Status
    detail: str
    params: dict[str, Any] = field(default_factory=dict)
    changes: list[dict[str, Any]] = field(default_factory=list)
    took_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["status"] = self.status.value
        return d


@dataclass(frozen=True)
class RemedyContext:
    loaded: LoadedConfig
    target: str
    known_good: KnownGoodClient


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CronJobParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    job_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


class ChannelParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    channel: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")


class PluginParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    plugin: str = Field(pattern=PLUGIN_ID)


class SessionParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    session_key: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@/+-]{0,255}$")


MODEL_REF = r"^[A-Za-z0-9][A-Za-z0-9_.:@+-]{0,127}/[A-Za-z0-9][A-Za-z0-9_.:@/+-]{0,255}$"  # "provider/model"


class ModelParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(pattern=MODEL_REF)


class SessionModelParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    session_key: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@/+-]{0,255}$")
    model: str = Field(pattern=MODEL_REF)


@dataclass(frozen=True)
class Remedy:
    name: str
    description: str
    risk: Risk
    params: type[BaseModel]
    run: Callable[[RemedyContext, Any], Outcome]
    signals_foreign: bool = False  # signals a process clawmedic did not start
    restarts_target: bool = True  # after it, the target is relaunched (False: it repairs the running process)
    needs_running_gateway: bool = False  # talks to a live gateway (cron, channels, sessions): not for one that is down


@dataclass(frozen=True)
class Policy:
    allowed: frozenset[Risk] = frozenset({Risk.READ_ONLY, Risk.REVERSIBLE})
    allow_kill_foreign: bool = False
    dry_run: bool = False  # check every call as usual, then answer WOULD instead of running it


def _snapshot(ctx: RemedyContext, why: str) -> str | None:
    """The revision that holds the files as they are now: a new snapshot, or — when nothing changed since the last
    one (e.g. the known-good taken after boot) — that last one, which already holds them."""
    snap = ctx.known_good.snapshot(ctx.target, openclaw.boot_files(ctx.loaded.targets[ctx.target]), why, "escalated")
    if snap is None:
        snap = ctx.known_good.latest(ctx.target)
    return snap.rev if snap else None


# --- the remedies ----------------------------------------------------------------------------------------------


def _restore_known_good(ctx: RemedyContext, _: NoParams) -> Outcome:
    """Every boot-critical file (openclaw.json first) back to its known-good copy; a file that already matches is
    left alone, a replaced one is kept beside it, and a snapshot of them all is taken first."""
    from clawmedic.knowngood_client import NoKnownGood

    kg = ctx.known_good.known_good(ctx.target)
    if kg is None:
        return Outcome("restore_known_good", Status.FAILED, "there is no known-good snapshot")
    before = _snapshot(ctx, "before the doctor restores known-good")
    changes: list[dict[str, Any]] = []
    for key, path in openclaw.boot_files(ctx.loaded.targets[ctx.target]).items():
        existed = path.exists()
        try:
            r = ctx.known_good.restore(ctx.target, key, path, kg.rev)
        except NoKnownGood:
            continue  # the snapshot does not hold this file (it did not exist when healthy)
        if r.moved_aside is None and existed:
            continue  # already the known-good content
        kept = str(r.moved_aside) if r.moved_aside else None
        changes.append({"file": str(path), "restored_from": r.rev, "kept": kept, "snapshot_before": before})
    files = ", ".join(c["file"] for c in changes) or "nothing (the files already match it)"
    return Outcome("restore_known_good", Status.OK, f"restored {files} from known-good {kg.rev[:10]}", changes=changes)


def _restore_deps(ctx: RemedyContext, _: NoParams) -> Outcome:
    from clawmedic import deps

    report = deps.fix(ctx.loaded, ctx.target, allow_network=True)
    changes = [o.to_dict() for o in report.outcomes]
    if not report.outcomes:
        return Outcome("restore_deps", Status.FAILED, "no missing package found to restore")
    names = ", ".join(o.package for o in report.outcomes)
    status = Status.OK if report.ok else Status.FAILED
    return Outcome(
        "restore_deps",
        status,
        f"restored {names}" if report.ok else f"could not restore all of {names}",
        changes=changes,
    )


def _our_tree(ctx: RemedyContext) -> set[int]:
    handle = Launcher(ctx.loaded.state_dir / "targets" / ctx.target).adopt()
    return inspect.tree_pids(handle.pid) if handle else set()


def _stop_stale_gateway(ctx: RemedyContext, _: NoParams) -> Outcome:
    """Stops what it finds itself, never a PID it is given: the real OpenClaw gateway holding the target's port and
    running on its state, or gateways duplicating it on its state. Each is re-checked right before the signal."""
    port = ctx.loaded.targets[ctx.target].port
    holder = port_holder(port) if port is not None else None
    victims = []
    if holder is not None and port is not None and is_stale_gateway_of(ctx.loaded, ctx.target, holder.pid):
        victims.append(holder)
    ours = _our_tree(ctx)
    victims += [p for p in duplicate_gateways(ctx.loaded, ctx.target, ours) if p.pid not in {v.pid for v in victims}]
    if not victims:
        held = f"; port {port} is held by pid {holder.pid}, which is not a gateway of {ctx.target}" if holder else ""
        return Outcome(
            "stop_stale_gateway",
            Status.REFUSED,
            f"no gateway of {ctx.target} that clawmedic did not start holds its port or runs on its state{held}: "
            "not touching anything",
        )
    changes, said = [], []
    for p in victims:
        if p.pid in ours or not (
            is_stale_gateway_of(ctx.loaded, ctx.target, p.pid) or is_duplicate_gateway_of(ctx.loaded, ctx.target, p)
        ):
            said.append(f"pid {p.pid} changed before the signal: left alone")
            continue
        said.append(f"stale gateway pid {p.pid} {stop_pid(p, defaults.FOREIGN_STOP_TIMEOUT_S)}")
        changes.append({"stopped_pid": p.pid})
    status = Status.OK if changes else Status.REFUSED
    return Outcome("stop_stale_gateway", status, "; ".join(said), changes=changes)


def _resume_stopped_gateway(ctx: RemedyContext, _: NoParams) -> Outcome:
    """SIGCONT to our own gateway's process group: a stopped process cannot answer, and a restart did not help
    (something stops it again). Only the very process clawmedic started (its record or marker), never a PID it is
    given."""
    handle = Launcher(ctx.loaded.state_dir / "targets" / ctx.target).adopt()
    if handle is None:
        return Outcome(
            "resume_stopped_gateway",
            Status.REFUSED,
            f"clawmedic runs no process for {ctx.target} now: nothing of its own to resume",
        )
    stopped = sorted(p for p in inspect.tree_pids(handle.pid) if inspect.is_stopped(p))
    if not stopped:
        return Outcome("resume_stopped_gateway", Status.FAILED, f"pid {handle.pid} is not stopped (anymore)")
    handle.signal_group(signal.SIGCONT)  # the whole group: the gateway and its same-group workers
    deadline = time.monotonic() + 5.0
    while any(inspect.is_stopped(p) for p in stopped) and time.monotonic() < deadline:
        time.sleep(0.05)
    still = [p for p in stopped if inspect.is_stopped(p)]
    if still:
        return Outcome("resume_stopped_gateway", Status.FAILED, f"pid {still[0]} is still stopped after SIGCONT")
    return Outcome(
        "resume_stopped_gateway",
        Status.OK,
        f"resumed pid {', '.join(map(str, stopped))} with SIGCONT; something keeps stopping it (SIGSTOP): find what",
        changes=[{"resumed_pid": p} for p in stopped],
    )


def _kill_port_holder(ctx: RemedyContext, _: NoParams) -> Outcome:
    """Only the process that holds the target's port now (re-checked right before the signal), never a PID it is
    given, and never clawmedic's own gateway."""
    port = ctx.loaded.targets[ctx.target].port
    if port is None:
        return Outcome("kill_port_holder", Status.FAILED, f"target {ctx.target} has no port")
    holder = port_holder(port)
    if holder is None:
        owner = inspect.port_owner(port)
        why = "is free" if owner is None else "is held by a process clawmedic cannot see (another user's)"
        return Outcome("kill_port_holder", Status.FAILED, f"port {port} {why}: nothing to stop")
    if holder.pid in _our_tree(ctx) or is_ours(holder.pid, ctx.loaded.state_dir / "targets" / ctx.target):
        return Outcome(
            "kill_port_holder", Status.REFUSED, f"port {port} is held by {ctx.target} itself (pid {holder.pid})"
        )
    if not still_holds(port, holder):
        return Outcome("kill_port_holder", Status.FAILED, f"pid {holder.pid} let go of port {port}: not signalling")
    how = stop_pid(holder, defaults.FOREIGN_STOP_TIMEOUT_S)
    return Outcome(
        "kill_port_holder",
        Status.OK,
        f"port {port} holder pid {holder.pid} {how}",
        changes=[{"stopped_pid": holder.pid, "port": port}],
    )


def _move_aside_state_db(ctx: RemedyContext, _: NoParams) -> Outcome:
    db = openclaw.gateway_home(ctx.loaded.targets[ctx.target]) / ".openclaw" / "state" / "openclaw.sqlite"
    if not db.exists():
        return Outcome("move_aside_state_db", Status.FAILED, f"{db} does not exist")
    moved = [
        str(move_aside(p, "broken"))
        for p in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm"))
        if p.exists()
    ]
    return Outcome(
        "move_aside_state_db",
        Status.OK,
        f"moved the unreadable state database aside ({moved[0]}); the gateway starts with fresh state",
        changes=[{"moved": moved}],
    )


def _openclaw_doctor_fix(ctx: RemedyContext, _: NoParams) -> Outcome:
    cli = openclaw.cli_command(ctx.loaded.targets[ctx.target])
    if not cli:
        return Outcome("openclaw_doctor_fix", Status.FAILED, "the openclaw CLI is not known for this target")
    before = _snapshot(ctx, "before openclaw doctor --fix")
    r = subprocess.run(
        [*cli, "doctor", "--fix", "--non-interactive"],
        capture_output=True,
        text=True,
        timeout=defaults.OPENCLAW_DOCTOR_FIX_TIMEOUT_S,
        env=openclaw.cli_env(ctx.loaded, ctx.target),
        check=False,
    )
    v = openclaw.validate(ctx.loaded, ctx.target)
    status = Status.OK if v.valid else Status.FAILED
    return Outcome(
        "openclaw_doctor_fix",
        status,
        f"openclaw doctor --fix exited {r.returncode}; config {v.summary()}",
        changes=[{"snapshot_before": before}],
    )


def _retry_start(ctx: RemedyContext, _: NoParams) -> Outcome:
    return Outcome(
        "retry_start",
        Status.OK,
        "the cause is already gone (e.g. OpenClaw restored its own last-good "
        "config): relaunching without changing anything",
    )


# --- remedies on a running gateway (faults that do not take it down) --------------------------------------------


def _cli(ctx: RemedyContext, args: list[str], *, remote: bool) -> openclaw.CliAnswer:
    timeout = ctx.loaded.config.daemon.doctor.gateway_checks.command_timeout_s
    return openclaw.gateway_cli(ctx.loaded, ctx.target, args, remote=remote, timeout=timeout)


def _cron_disable(ctx: RemedyContext, params: CronJobParams) -> Outcome:
    job = params.job_id
    r = _cli(ctx, ["cron", "disable", job, "--json"], remote=True)
    if r.error is not None:
        status = Status.REFUSED if "system-owned" in r.error or "cannot be edited" in r.error else Status.FAILED
        return Outcome("cron_disable", status, f"the gateway did not disable cron job {job}: {r.error}")
    enabled = r.data.get("enabled") if isinstance(r.data, dict) else None
    if enabled is not False:
        return Outcome("cron_disable", Status.FAILED, f"cron job {job} still reports enabled={enabled}")
    name = r.data.get("name") if isinstance(r.data, dict) else None
    return Outcome(
        "cron_disable",
        Status.OK,
        f"disabled cron job {name or job} ({job}); `openclaw cron enable {job}` undoes it",
        changes=[{"cron_job": job, "name": name, "enabled": False, "undo": f"openclaw cron enable {job}"}],
    )


def _channel_disable(ctx: RemedyContext, params: ChannelParams) -> Outcome:
    ch = params.channel
    if openclaw.is_ready_internal(ch):  # /ready's failing[] also names the gateway's own parts
        return Outcome("channel_disable", Status.REFUSED, f"{ch!r} is a gateway internal, not a channel")
    before = _snapshot(ctx, f"before disabling channel {ch}")
    r = _cli(ctx, ["config", "set", f"channels.{ch}.enabled", "false"], remote=False)
    if r.rc != 0:
        return Outcome(
            "channel_disable",
            Status.FAILED,
            f"`config set channels.{ch}.enabled false` failed: {r.error}",
            changes=[{"snapshot_before": before}],
        )
    return Outcome(
        "channel_disable",
        Status.OK,
        f"disabled channel {ch} (config snapshot {str(before)[:10]} first); "
        f"`openclaw config set channels.{ch}.enabled true` undoes it",
        changes=[{"channel": ch, "enabled": False, "snapshot_before": before}],
    )


def _sessions_patch(ctx: RemedyContext, key: str, model: str | None) -> openclaw.CliAnswer:
    """`gateway call sessions.patch` setting (or, with None, clearing) one session's model pin."""
    patch = json.dumps({"key": key, "model": model})
    return _cli(ctx, ["gateway", "call", "sessions.patch", "--params", patch, "--json"], remote=True)


def _clear_session_model_pin(ctx: RemedyContext, params: SessionParams) -> Outcome:
    key = params.session_key
    r = _sessions_patch(ctx, key, None)
    if r.error is not None:
        return Outcome("clear_session_model_pin", Status.FAILED, f"sessions.patch on {key} failed: {r.error}")
    return Outcome(
        "clear_session_model_pin",
        Status.OK,
        f"cleared the model pin of session {key}: it uses the agent's default model and its fallbacks again",
        changes=[{"session": key, "model": None}],
    )


def _set_default_model(ctx: RemedyContext, params: ModelParams) -> Outcome:
    """`config set agents.defaults.model.primary` (config snapshotted first); OpenClaw hot-reloads it in seconds."""
    model = params.model
    before = openclaw.default_model(ctx.loaded.targets[ctx.target])
    snap = _snapshot(ctx, f"before setting the default model to {model}")
    r = _cli(ctx, ["config", "set", "agents.defaults.model.primary", model], remote=False)
    if r.rc != 0:
        return Outcome(
            "set_default_model",
            Status.FAILED,
            f"`config set agents.defaults.model.primary {model}` failed: {r.error}",
            changes=[{"snapshot_before": snap}],
        )
    undo = f"openclaw config set agents.defaults.model.primary {before}" if before else "restore the snapshot"
    return Outcome(
        "set_default_model",
        Status.OK,
        f"the default model is now {model} (was {before}; config snapshot {str(snap)[:10]} first); `{undo}` undoes it",
        changes=[{"default_model": model, "was": before, "snapshot_before": snap, "undo": undo}],
    )


def _pin_session_model(ctx: RemedyContext, params: SessionModelParams) -> Outcome:
    key, model = params.session_key, params.model
    r = _sessions_patch(ctx, key, model)
    if r.error is not None:
        return Outcome("pin_session_model", Status.FAILED, f"sessions.patch on {key} failed: {r.error}")
    return Outcome(
        "pin_session_model",
        Status.OK,
        f"session {key} now uses {model} (its pinned model cools)",
        changes=[{"session": key, "model": model}],
    )


def _channel_call(ctx: RemedyContext, method: str, ch: str) -> openclaw.CliAnswer:
    """`gateway call channels.stop|start` for one channel: the id is a validated parameter, passed as JSON in an
    argv list (no shell)."""
    return _cli(ctx, ["gateway", "call", method, "--params", json.dumps({"channel": ch}), "--json"], remote=True)


def _channel_restart(ctx: RemedyContext, params: ChannelParams) -> Outcome:
    """A targeted restart of one channel (`channels.stop` then `channels.start`); the rest of the gateway is left
    alone. A stop that fails or times out (a stuck channel, FACTS §7) does not prevent the start."""
    ch = params.channel
    if openclaw.is_ready_internal(ch):
        return Outcome("channel_restart", Status.REFUSED, f"{ch!r} is a gateway internal, not a channel")
    stop = _channel_call(ctx, "channels.stop", ch)
    start = _channel_call(ctx, "channels.start", ch)
    said = f"channels.stop: {'ok' if stop.error is None else stop.error}"
    if start.error is not None:
        return Outcome("channel_restart", Status.FAILED, f"channels.start {ch} failed: {start.error}; {said}")
    return Outcome(
        "channel_restart",
        Status.OK,
        f"restarted channel {ch} (channels.stop + channels.start; {said})",
        changes=[{"channel": ch, "restarted": True}],
    )


def _channel_start(ctx: RemedyContext, params: ChannelParams) -> Outcome:
    """Start a channel OpenClaw's crash-loop breaker left stopped (its own manual recovery, FACTS §5)."""
    ch = params.channel
    if openclaw.is_ready_internal(ch):
        return Outcome("channel_start", Status.REFUSED, f"{ch!r} is a gateway internal, not a channel")
    r = _channel_call(ctx, "channels.start", ch)
    if r.error is not None:
        return Outcome("channel_start", Status.FAILED, f"channels.start {ch} failed: {r.error}")
    return Outcome(
        "channel_start",
        Status.OK,
        f"started channel {ch}, which the crash-loop breaker had suppressed",
        changes=[{"channel": ch, "started": True}],
    )


def _find_plugin(ctx: RemedyContext, plugin: str) -> tuple[dict[str, object] | None, str | None]:
    """The plugin as `plugins list --json` says now (the guard judges live facts, not the caller's word)."""
    r = _cli(ctx, ["plugins", "list", "--json"], remote=False)
    if r.error is not None:
        return None, f"`plugins list --json` failed: {r.error}"
    plugins, _ = parse_plugins(r.data)
    found = next((p for p in plugins if p.id == plugin), None)
    return (found.to_dict(), None) if found is not None else (None, f"no plugin {plugin!r} is installed")


def _plugin_disable(ctx: RemedyContext, params: PluginParams) -> Outcome:
    """Disable a plugin in error (`plugins disable ID`, config snapshotted first); never a built-in one, never one
    that is not in error now."""
    pid = params.plugin
    found, why = _find_plugin(ctx, pid)
    if found is None:
        return Outcome("plugin_disable", Status.FAILED, str(why))
    if found["builtin"]:
        why = "is built into OpenClaw (origin bundled): never disabled"
        return Outcome("plugin_disable", Status.REFUSED, f"{pid} {why}")
    if found["status"] != "error" or found["enabled"] is not True:
        return Outcome(
            "plugin_disable",
            Status.REFUSED,
            f"{pid} is not an enabled plugin in error now (status {found['status']}, enabled {found['enabled']})",
        )
    before = _snapshot(ctx, f"before disabling plugin {pid}")
    r = _cli(ctx, ["plugins", "disable", pid], remote=False)
    if r.rc != 0:
        return Outcome(
            "plugin_disable",
            Status.FAILED,
            f"`plugins disable {pid}` failed: {r.error}",
            changes=[{"snapshot_before": before}],
        )
    return Outcome(
        "plugin_disable",
        Status.OK,
        f"disabled plugin {pid} (config snapshot {str(before)[:10]} first; OpenClaw skips it from the gateway's next "
        f"start on); `clawmedic resume` or `openclaw plugins enable {pid}` undoes it",
        changes=[{"plugin": pid, "enabled": False, "snapshot_before": before, "error": found.get("error")}],
    )


def _plugin_enable(ctx: RemedyContext, params: PluginParams) -> Outcome:
    """Enable again a plugin clawmedic disabled (`plugins enable ID`), after a human's `clawmedic resume`."""
    pid = params.plugin
    before = _snapshot(ctx, f"before enabling plugin {pid}")
    r = _cli(ctx, ["plugins", "enable", pid], remote=False)
    if r.rc != 0:
        return Outcome("plugin_enable", Status.FAILED, f"`plugins enable {pid}` failed: {r.error}")
    return Outcome(
        "plugin_enable",
        Status.OK,
        f"enabled plugin {pid} again (config snapshot {str(before)[:10]} first); OpenClaw loads it at the gateway's "
        "next start",
        changes=[{"plugin": pid, "enabled": True, "snapshot_before": before}],
    )


REMEDIES: dict[str, Remedy] = {
    r.name: r
    for r in (
        Remedy(
            "restore_known_good",
            "Put openclaw.json back from the known-good snapshot (the broken one is kept)",
            Risk.REVERSIBLE,
            NoParams,
            _restore_known_good,
        ),
        Remedy(
            "restore_deps",
            "Restore missing npm packages from the pristine copy (npm install as fallback)",
            Risk.REVERSIBLE,
            NoParams,
            _restore_deps,
        ),
        Remedy(
            "stop_stale_gateway",
            "Stop a gateway of this very target that clawmedic did not start: the OpenClaw gateway holding its port "
            "on its state (HOME), or a duplicate on its state; found and checked by clawmedic, not named",
            Risk.REVERSIBLE,
            NoParams,
            _stop_stale_gateway,
        ),
        Remedy(
            "resume_stopped_gateway",
            "Resume (SIGCONT) the gateway clawmedic started when it is stopped (SIGSTOP) and restarts did not help",
            Risk.REVERSIBLE,
            NoParams,
            _resume_stopped_gateway,
            restarts_target=False,
        ),
        Remedy(
            "kill_port_holder",
            "Stop the foreign process that holds the gateway's port now (whichever it is then; never another one)",
            Risk.DESTRUCTIVE,
            NoParams,
            _kill_port_holder,
            signals_foreign=True,
        ),
        Remedy(
            "retry_start",
            "Relaunch without changing anything, once, when the evidence shows the cause is gone",
            Risk.READ_ONLY,
            NoParams,
            _retry_start,
        ),
        Remedy(
            "move_aside_state_db",
            "Move an unreadable state database aside so the gateway starts fresh",
            Risk.REVERSIBLE,
            NoParams,
            _move_aside_state_db,
        ),
        Remedy(
            "openclaw_doctor_fix",
            "Run `openclaw doctor --fix --non-interactive` (snapshot first)",
            Risk.REVERSIBLE,
            NoParams,
            _openclaw_doctor_fix,
        ),
        Remedy(
            "cron_disable",
            "Disable a failing cron job of the running gateway (`openclaw cron enable ID` undoes it)",
            Risk.REVERSIBLE,
            CronJobParams,
            _cron_disable,
            restarts_target=False,  # repairs the running gateway in place
            needs_running_gateway=True,
        ),
        Remedy(
            "channel_disable",
            "Disable a failing channel (`config set channels.<id>.enabled false`, config snapshotted first)",
            Risk.REVERSIBLE,
            ChannelParams,
            _channel_disable,
            restarts_target=False,  # repairs the running gateway in place
            needs_running_gateway=True,
        ),
        Remedy(
            "clear_session_model_pin",
            "Clear a session's model pin (`sessions.patch` model=null) so it uses the default model and fallbacks",
            Risk.REVERSIBLE,
            SessionParams,
            _clear_session_model_pin,
            restarts_target=False,  # repairs the running gateway in place
            needs_running_gateway=True,
        ),
        Remedy(
            "set_default_model",
            "Set the gateway's default model (`config set agents.defaults.model.primary`, config snapshotted first)",
            Risk.REVERSIBLE,
            ModelParams,
            _set_default_model,
            restarts_target=False,  # OpenClaw hot-reloads it
            needs_running_gateway=True,
        ),
        Remedy(
            "pin_session_model",
            "Move a session pinned to a cooling model to another model (`sessions.patch` model=provider/model)",
            Risk.REVERSIBLE,
            SessionModelParams,
            _pin_session_model,
            restarts_target=False,  # repairs the running gateway in place
            needs_running_gateway=True,
        ),
        Remedy(
            "channel_restart",
            "Restart one disconnected channel in place (`gateway call channels.stop` + `channels.start`)",
            Risk.REVERSIBLE,
            ChannelParams,
            _channel_restart,
            restarts_target=False,  # repairs the running gateway in place
            needs_running_gateway=True,
        ),
        Remedy(
            "channel_start",
            "Start a channel OpenClaw's crash-loop breaker suppressed (`gateway call channels.start`)",
            Risk.REVERSIBLE,
            ChannelParams,
            _channel_start,
            restarts_target=False,  # repairs the running gateway in place
            needs_running_gateway=True,
        ),
        Remedy(
            "plugin_disable",
            "Disable a plugin in error state that is not built in (`plugins disable`, config snapshotted first)",
            Risk.REVERSIBLE,
            PluginParams,
            _plugin_disable,
            restarts_target=False,  # OpenClaw reloads its plugins from the config
            needs_running_gateway=True,
        ),
        Remedy(
            "plugin_enable",
            "Enable again a plugin clawmedic disabled (`plugins enable`), after `clawmedic resume`",
            Risk.REVERSIBLE,
            PluginParams,
            _plugin_enable,
            restarts_target=False,
            needs_running_gateway=True,
        ),
    )
}


class Guard:
    """Enforces the policy on every remedy call, from a rule or from a model."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    def check(self, name: str, params: dict[str, Any]) -> Outcome | None:
        """None if the call may run; otherwise the refusal, as data."""
        remedy = REMEDIES.get(name)
        if remedy is None:
            return Outcome(name, Status.REFUSED, f"{name!r} is not a declared remedy", params)
        try:
            remedy.params.model_validate(params)
        except ValidationError as e:
            return Outcome(name, Status.REFUSED, f"bad parameters: {e.errors()[0]['msg']}", params)
        if remedy.signals_foreign and not self.policy.allow_kill_foreign:
            return Outcome(
                name,
                Status.NEEDS_APPROVAL,
                "it would signal a process clawmedic did not start; allow it "
                "with `allow_kill_foreign = true` under [daemon.doctor], or stop it yourself",
                params,
            )
        if remedy.risk not in self.policy.allowed:
            return Outcome(
                name,
                Status.NEEDS_APPROVAL,
                f"risk class {remedy.risk.value} is not in the allowlist ([daemon.doctor] allow)",
                params,
            )
        return None

    def run(self, ctx: RemedyContext, name: str, params: dict[str, Any]) -> Outcome:
        refusal = self.check(name, params)
        if refusal is not None:
            return refusal
        remedy = REMEDIES[name]
        if self.policy.dry_run:
            return Outcome(name, Status.WOULD, f"would run {name} (dry run: nothing was changed)", params)
        t0 = time.monotonic()
        try:
            outcome = remedy.run(ctx, remedy.params.model_validate(params))
        except Exception as e:
            outcome = Outcome(name, Status.FAILED, f"{type(e).__name__}: {e}")
        outcome.params = params
        outcome.took_s = round(time.monotonic() - t0, 3)
        return outcome
