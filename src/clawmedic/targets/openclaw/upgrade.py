"""Upgrading a managed OpenClaw target to another version without taking the gateway down, and rolling back.

An `npm install -g openclaw` replaces the running install in place, and its postinstall wipes peer dependencies
about half the time; a new version may also refuse the current config. So clawmedic never touches the install the
gateway runs. It installs the new version beside it, in its own prefix, checks it, and only then switches:

    before    snapshot the config; install VERSION into `<state>/installs/<target>/openclaw-<v>-node-<v>/` from the
              registry (`sandbox.install.ensure_install`); every dependency openclaw declares is present (a wiped
              one is restored with `npm install --ignore-scripts`); the *current* config passes the *new*
              version's `config validate --json`. Any failure here changes nothing the gateway uses.
    switch    the "current install" pointer (`current.json`) is rewritten; every `load_config` applies it to the
              target's command (`apply_current_installs`), so the daemon (asked to reload), `fix restart` and a
              relaunch without daemon all start the new entry point.
    probation the gateway must come up, report the new version on `/startup` and stay live for the probation.
    rollback  on any failure after the switch: the pointer and the config go back, the old install is started
              again, and the failed install is kept aside (`….failed-<timestamp>`) until the next successful
              upgrade. `upgrade --rollback` does the same on demand, to the previous install.

A new version may migrate the state database as it starts (2026.9.6 takes `state/openclaw.sqlite` from schema 17
to 18, and 2026.9.5 then refuses to start: "uses newer schema version 18; this build supports 17"). So the state
databases are backed up (SQLite's online backup) just before the switch, and a rollback to an install whose
schema differs stops the gateway, moves the migrated databases aside (`….rollback-<timestamp>`, never deleted),
puts the backup in place and starts the old install.

Nothing the user installed is modified or deleted. The pointer names the install the clawmedic config names
(`configured`): once the user edits the command to another install, the pointer no longer applies.
Side effects go through `Ops`, so the sequence (`Upgrader`) is tested with fakes and the real thing end to end.
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

from clawmedic import defaults
from clawmedic.errors import AlreadyRunning, ClawmedicError, EnvironmentMissing
from clawmedic.paths import ensure_private_dir
from clawmedic.store.files import atomic_write, move_aside, timestamp

if TYPE_CHECKING:
    from clawmedic.config import LoadedConfig, TargetConfig
    from clawmedic.process.launcher import ProcessRecord
    from clawmedic.sandbox.install import ProgressFn

POINTER: Final = "current.json"
POINTER_FORMAT: Final = 1
# Limits of the upgrade (candidates for defaults.py).
UPGRADE_PROBATION_S: Final = defaults.APPLY_PROBATION_S  # as long as `config apply`'s: a boot that falls over soon
REGISTRY_TIMEOUT_S: Final = 20.0  # one small JSON document from the registry
LOCK_NAME: Final = "upgrade.lock"
_VERSION: Final = re.compile(r"\d{1,9}\.\d{1,9}\.\d{1,9}(?:-[0-9A-Za-z][0-9A-Za-z.-]{0,63})?")
_FAILED: Final = ".failed-"
_STATE: Final = "state-before-"  # a state backup's folder: state-before-<version that left it>-<timestamp>

Say = Callable[[str], None]
# upgraded / switched (a rollback on demand) / already / planned (dry run): exit 0. refused: nothing was switched;
# rolled_back: switched, failed, and back on the old install; failed: the way back failed too. Those exit 1.
Outcome = Literal["upgraded", "switched", "rolled_back", "refused", "already", "planned", "failed"]


class UpgradeRefused(ClawmedicError):
    """The upgrade cannot start (bad version, external target, nothing to roll back to): nothing was changed."""

    exit_code = defaults.EXIT_CONFIG


# --- the installs and the pointer ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class InstallRef:
    """One OpenClaw install a target can run: its version, its entry point and the Node that runs it."""

    version: str
    entry: str  # as written in the command: a path to openclaw.mjs, or `openclaw` (a bin on PATH)
    node: str | None  # the argument before the entry (a node binary), None when the entry runs by itself
    root: str | None = None  # clawmedic's own install folder; None for the install the user's config names

    def args(self) -> list[str]:
        return [self.node, self.entry] if self.node is not None else [self.entry]

    @classmethod
    def from_dict(cls, d: Any) -> InstallRef:
        if not isinstance(d, dict):
            raise TypeError("an install is an object")
        node, root = d.get("node"), d.get("root")
        return cls(
            str(d["version"]),
            str(d["entry"]),
            None if node is None else str(node),
            None if root is None else str(root),
        )


@dataclass(frozen=True)
class Pointer:
    """`<state>/installs/<target>/current.json`: which install the target runs now, and the one before."""

    target: str
    configured: InstallRef  # the install the clawmedic config names (what the command is rewritten from)
    current: InstallRef
    previous: InstallRef | None = None
    updated_at: float = 0.0
    reason: str = ""
    state_backup: str | None = None  # the state databases as `previous` left them (restored by a rollback)

    def to_dict(self) -> dict[str, Any]:
        return {"format": POINTER_FORMAT, **asdict(self)}

    @classmethod
    def from_dict(cls, d: Any) -> Pointer:
        if not isinstance(d, dict) or d.get("format") != POINTER_FORMAT:
            raise ValueError("not a clawmedic install pointer of format 1")
        prev = d.get("previous")
        return cls(
            str(d["target"]),
            InstallRef.from_dict(d["configured"]),
            InstallRef.from_dict(d["current"]),
            None if prev is None else InstallRef.from_dict(prev),
            float(d.get("updated_at", 0.0)),
            str(d.get("reason", "")),
            None if d.get("state_backup") is None else str(d["state_backup"]),
        )


def installs_dir(state_dir: Path, name: str) -> Path:
    return state_dir / "installs" / name


def pointer_path(state_dir: Path, name: str) -> Path:
    return installs_dir(state_dir, name) / POINTER


def read_pointer(state_dir: Path, name: str) -> Pointer | None:
    """The recorded pointer, or None when there is none or it cannot be read (then the config's install runs)."""
    try:
        return Pointer.from_dict(json.loads(pointer_path(state_dir, name).read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_pointer(state_dir: Path, p: Pointer) -> None:
    ensure_private_dir(installs_dir(state_dir, p.target))
    atomic_write(pointer_path(state_dir, p.target), json.dumps(p.to_dict(), indent=1) + "\n")


def entry_index(cmd: list[str]) -> int | None:
    """Where the openclaw entry point is in a command: `…/openclaw.mjs` or an `openclaw` bin."""
    for i, arg in enumerate(cmd):
        if arg.endswith("openclaw.mjs") or Path(arg).name == "openclaw":
            return i
    return None


def configured_install(cmd: list[str], version: str) -> InstallRef | None:
    """The install a command names (its entry and the node before it), or None when it names none."""
    i = entry_index(cmd)
    if i is None:
        return None
    node = cmd[i - 1] if i > 0 and Path(cmd[i - 1]).name.startswith("node") else None
    return InstallRef(version, cmd[i], node)


def rewrite(cmd: list[str], configured: InstallRef, to: InstallRef) -> list[str] | None:
    """`cmd` with the configured install's node and entry replaced by `to`'s; None when `cmd` does not name the
    configured install (the user changed the config since: the pointer no longer applies)."""
    try:
        i = cmd.index(configured.entry)
    except ValueError:
        return None
    start = i - 1 if configured.node is not None and i > 0 and cmd[i - 1] == configured.node else i
    if configured.node is not None and start == i:
        return None
    return [*cmd[:start], *to.args(), *cmd[i + 1 :]]


def with_install(cfg: TargetConfig, configured: InstallRef, to: InstallRef) -> TargetConfig:
    """The target as it runs `to`: its start command and its openclaw CLI (where they name the configured one)."""
    update: dict[str, Any] = {}
    if cfg.start.command and (cmd := rewrite(cfg.start.command, configured, to)) is not None:
        update["start"] = cfg.start.model_copy(update={"command": cmd})
    if cfg.openclaw_command and (cli := rewrite(cfg.openclaw_command, configured, to)) is not None:
        update["openclaw_command"] = cli
    return cfg.model_copy(update=update) if update else cfg


def applied(loaded: LoadedConfig, name: str, configured: InstallRef, to: InstallRef) -> LoadedConfig:
    """A copy of `loaded` in which target `name` runs `to` (the config file is untouched)."""
    new = copy.copy(loaded)
    targets = dict(loaded.config.targets)
    targets[name] = with_install(targets[name], configured, to)
    new.config = loaded.config.model_copy(update={"targets": targets})
    return new


def _ours(state_dir: Path, name: str, ref: InstallRef) -> bool:
    """An install other than the configured one runs only from clawmedic's own install folder: a pointer edited to
    name any other program is ignored (the config as written runs)."""
    if ref.root is None:
        return False
    base = installs_dir(state_dir, name).resolve()
    paths = [Path(ref.root), Path(ref.entry), *([Path(ref.node)] if ref.node is not None else [])]
    return all(p.is_absolute() and p.resolve().is_relative_to(base) for p in paths)


def apply_current_installs(loaded: LoadedConfig) -> None:
    """Run every target on the install its pointer names (called by `load_config`). Never raises: an unreadable
    pointer, or one whose configured install the config no longer names, leaves the config as written."""
    targets = dict(loaded.config.targets)
    changed = False
    for name, cfg in targets.items():
        if cfg.kind != "openclaw":
            continue
        p = read_pointer(loaded.state_dir, name)
        if p is None or p.current == p.configured or not _ours(loaded.state_dir, name, p.current):
            continue
        new = with_install(cfg, p.configured, p.current)
        if new is not cfg:
            targets[name] = new
            changed = True
    if changed:
        loaded.config = loaded.config.model_copy(update={"targets": targets})


# --- the registry ---------------------------------------------------------------------------------------------------


def check_version(version: str) -> str:
    if not _VERSION.fullmatch(version):
        raise UpgradeRefused(f"{version!r} is not an OpenClaw version (e.g. {defaults.OPENCLAW_VERSION}).")
    return version


def registry_version(spec: str) -> str:
    """The exact version the registry has for `spec` (a version, or `latest`); refuses an unknown version."""
    import httpx  # here, not at the top: every load_config imports this module (apply_current_installs)

    from clawmedic.sandbox.install import registry_url

    registry = registry_url()
    url = f"{registry}/openclaw/{spec}"
    try:
        r = httpx.get(url, timeout=REGISTRY_TIMEOUT_S, follow_redirects=True, headers={"accept": "application/json"})
    except httpx.HTTPError as exc:
        raise EnvironmentMissing(f"Cannot reach the npm registry at {registry}: {exc or type(exc).__name__}.") from None
    if r.status_code == 404:
        raise UpgradeRefused(f"The npm registry has no openclaw {spec} ({url}).")
    if r.status_code != 200:
        raise EnvironmentMissing(f"The npm registry answered HTTP {r.status_code} for openclaw {spec} ({url}).")
    try:
        version = str(r.json()["version"])
    except (ValueError, KeyError, TypeError):
        raise EnvironmentMissing(f"The npm registry's answer for openclaw {spec} names no version ({url}).") from None
    return check_version(version)


# --- the report -------------------------------------------------------------------------------------------------------


@dataclass
class Step:
    name: str  # snapshot | install | deps | validate | switch | probation | rollback
    ok: bool
    seconds: float
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "seconds": round(self.seconds, 2), "detail": self.detail}


@dataclass
class Report:
    target: str
    action: Literal["upgrade", "rollback"]
    dry_run: bool
    from_version: str
    to_version: str
    outcome: Outcome = "planned"
    reason: str = ""
    install: str | None = None  # the folder of the version switched to (None: the install the config names)
    plan: list[str] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    running_version: str | None = None  # what the gateway reported on /startup at the end

    @property
    def ok(self) -> bool:
        return self.outcome in ("upgraded", "switched", "already", "planned")

    @property
    def exit_code(self) -> int:
        return defaults.EXIT_OK if self.ok else defaults.EXIT_FAILURE

    def timings(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for s in self.steps:
            out[s.name] = round(out.get(s.name, 0.0) + s.seconds, 2)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "target": self.target,
            "action": self.action,
            "dry_run": self.dry_run,
            "from": self.from_version,
            "to": self.to_version,
            "outcome": self.outcome,
            "reason": self.reason,
            "install": self.install,
            "running_version": self.running_version,
            "plan": self.plan,
            "steps": [s.to_dict() for s in self.steps],
            "timings_s": self.timings(),
        }


class StepFailed(Exception):
    """A step did not succeed; its message is the reason, one sentence."""


# --- the side effects -------------------------------------------------------------------------------------------------


class Ops(Protocol):
    """Every side effect of an upgrade; `RealOps` does them, tests fake them."""

    def install(self, version: str, root: Path) -> InstallRef: ...
    def deps(self, loaded: LoadedConfig, name: str) -> str: ...  # what was repaired; raises StepFailed
    def validate(self, loaded: LoadedConfig, name: str) -> str: ...  # raises StepFailed
    def snapshot(self, loaded: LoadedConfig, name: str, reason: str) -> bytes | None: ...
    def restore_config(self, loaded: LoadedConfig, name: str, content: bytes | None) -> str: ...
    def backup_state(self, loaded: LoadedConfig, name: str, dest: Path) -> str: ...  # raises StepFailed
    # restart on the loaded command (first putting back the state backup `restore_from` where the live schema
    # differs from it); raises StepFailed
    def switch(self, loaded: LoadedConfig, name: str, restore_from: Path | None = None) -> str: ...
    def probation(self, loaded: LoadedConfig, name: str, version: str, seconds: float) -> str: ...  # raises
    def running_version(self, loaded: LoadedConfig, name: str) -> str | None: ...


# --- the sequence -----------------------------------------------------------------------------------------------------


class Upgrader:
    """Plan, upgrade, roll back: the order of the steps and what is undone when one fails."""

    def __init__(
        self,
        loaded: LoadedConfig,
        name: str,
        ops: Ops,
        *,
        say: Say = lambda _m: None,
        probation_s: float = UPGRADE_PROBATION_S,
        clock: Callable[[], float] = time.monotonic,
        reload: Callable[[], LoadedConfig] | None = None,
    ) -> None:
        self.loaded = loaded
        self.name = name
        self.ops = ops
        self.say = say
        self.probation_s = probation_s
        self.clock = clock
        self._reload = reload
        self.cfg = loaded.targets[name]
        self.state_dir = loaded.state_dir
        self.pointer = read_pointer(self.state_dir, name)
        cmd = self.cfg.start.command or []
        if self.pointer is not None and self.pointer.current.entry not in cmd:
            self.pointer = None  # the config names another install since: `load_config` ignored the pointer too

    # --- what runs now -------------------------------------------------------------------------------------

    def configured(self) -> InstallRef:
        """The install the config names (the pointer's record of it while that still applies)."""
        if self.pointer is not None:
            return self.pointer.configured
        cfg = self.cfg  # no pointer applies: the command is the config's own
        cmd = cfg.openclaw_command or cfg.start.command or []
        if cfg.start.command and entry_index(cfg.start.command) is not None:
            cmd = cfg.start.command
        ref = configured_install(cmd, "")
        if ref is None:
            raise UpgradeRefused(
                f"Target {self.name}'s command names no openclaw entry point (node_modules/openclaw/openclaw.mjs or "
                "`openclaw`), so clawmedic cannot tell which install to upgrade."
            )
        return replace(ref, version=self._configured_version())

    def _configured_version(self) -> str:
        from clawmedic import deps

        loc = deps.find_location(self.cfg)
        version = _package_version(loc.openclaw_dir) if loc is not None else None
        if not version:
            raise UpgradeRefused(
                f"Cannot tell which openclaw version target {self.name} runs: its command must name "
                "node_modules/openclaw/openclaw.mjs or an `openclaw` on PATH."
            )
        return version

    def current(self) -> InstallRef:
        return self.pointer.current if self.pointer is not None else self.configured()

    def _preflight(self) -> None:
        if self.cfg.kind != "openclaw":
            raise UpgradeRefused(f"Target {self.name} is not an openclaw target (kind = {self.cfg.kind!r}).")
        if self.cfg.start.mode != "managed":
            raise UpgradeRefused(
                f"Target {self.name} is started by a service manager (start.mode = external): clawmedic upgrades "
                "only managed targets, whose command it starts itself."
            )

    # --- upgrade -----------------------------------------------------------------------------------------------

    def upgrade(self, version: str, *, dry_run: bool = False) -> Report:
        self._preflight()
        configured, current = self.configured(), self.current()
        report = Report(self.name, "upgrade", dry_run, current.version, version)
        if version == current.version:
            report.outcome, report.reason = "already", f"{self.name} already runs openclaw {version}"
            report.plan = [report.reason]
            return report
        root = installs_dir(self.state_dir, self.name) / _install_name(version)
        reuse = configured if version == configured.version else None
        prev = self.pointer.previous if self.pointer is not None else None
        if reuse is None and prev is not None and prev.version == version:
            reuse = prev  # e.g. upgrading again after a rollback: that install is complete
        report.install = reuse.root if reuse is not None else str(root)
        report.plan = self._plan(current, version, root, reuse)
        if dry_run:
            report.outcome, report.reason = "planned", "dry run: nothing was changed"
            return report
        with self._locked():
            return self._upgrade(report, configured, current, version, root, reuse)

    def _plan(self, current: InstallRef, version: str, root: Path, reuse: InstallRef | None) -> list[str]:
        from clawmedic.store.lock import holder_pid

        where = current.root or current.entry
        daemon = holder_pid(self.state_dir)
        how = (
            f"ask the clawmedic daemon (pid {daemon}) to reload and relaunch {self.name} on it"
            if daemon is not None
            else f"stop {self.name}'s own process and launch it on the new entry point (no daemon runs)"
        )
        install = (
            f"use the install already at {reuse.root or reuse.entry}"
            if reuse is not None
            else f"install openclaw {version} from the registry into {root} (its own prefix)"
        )
        return [
            f"snapshot the config ({self._config_path()})",
            f"keep the current install ({current.version}, {where}) as it is",
            install,
            "check that every dependency openclaw declares is present (restore with npm --ignore-scripts)",
            f"validate the current config with openclaw {version}'s `config validate --json`",
            f"back up the state databases ({current.version}'s schema) for a rollback",
            f"switch: record openclaw {version} as the current install, then {how}",
            f"probation: {self.probation_s:g} s live, reporting {version} on /startup",
            f"on failure: roll back to openclaw {current.version} and the snapshot config, keeping the new "
            "install aside",
        ]

    def _config_path(self) -> Path:
        from clawmedic.targets.openclaw import config_path

        return config_path(self.cfg)

    def _upgrade(
        self,
        report: Report,
        configured: InstallRef,
        current: InstallRef,
        version: str,
        root: Path,
        reuse: InstallRef | None,
    ) -> Report:
        saved: list[bytes | None] = []

        def snapshot() -> str:
            saved.append(self.ops.snapshot(self.loaded, self.name, f"before openclaw {version}"))
            return "config saved" if saved[0] is not None else "no config file yet"

        installed: list[InstallRef] = [reuse] if reuse is not None else []

        def install() -> str:
            installed.append(self.ops.install(version, root))
            return f"openclaw {installed[0].version} in {installed[0].root}"

        new: InstallRef | None = reuse
        try:
            self._step(report, "snapshot", snapshot)
            if new is None:
                self.say(f"installing openclaw {version} into {root}")
                self._step(report, "install", install)
                new = installed[0]
            target_ref = new
            candidate = applied(self.loaded, self.name, current, target_ref)
            self.say(f"checking openclaw {version}'s dependencies")
            self._step(report, "deps", lambda: self.ops.deps(candidate, self.name))
            self.say(f"validating the current config with openclaw {version}")
            self._step(report, "validate", lambda: self.ops.validate(candidate, self.name))
            backup = self._backup(report, current)
        except StepFailed as e:
            report.outcome, report.reason = "refused", f"nothing was switched: {e}"
            if new is not None and new.root is not None:
                self._set_aside(new, report)
            report.running_version = self._running_version()
            return report
        ok = self._switch_with_probation(report, configured, current, new, f"upgrade to {version}", backup, None)
        if ok:
            report.outcome = "upgraded"
            report.reason = f"{self.name} runs openclaw {version} and passed its probation"
            self._prune(keep={new.root, current.root, str(backup)})
        else:
            self._rollback_after(report, configured, current, new, saved[0], backup)
        report.running_version = self._running_version()
        return report

    def _backup(self, report: Report, current: InstallRef) -> Path:
        """Back up the state databases as `current` leaves them, into a new folder beside the installs."""
        base = installs_dir(self.state_dir, self.name) / f"{_STATE}{current.version}-{timestamp()}"
        dest, n = base, 1
        while dest.exists():  # two switches within a second: never write into an earlier backup
            dest, n = base.with_name(f"{base.name}.{n}"), n + 1
        self.say(f"backing up the state databases to {dest}")
        self._step(report, "backup", lambda: self.ops.backup_state(self.loaded, self.name, dest))
        return dest

    def _switch_with_probation(
        self,
        report: Report,
        configured: InstallRef,
        old: InstallRef,
        new: InstallRef,
        why: str,
        backup: Path,
        restore_from: Path | None,
    ) -> bool:
        """Record `new` as current (and the state `old` leaves, `backup`), switch to it, run its probation.
        `restore_from`: the state backup `new` left when it last ran (a rollback to it), else None."""
        self._write(Pointer(self.name, configured, new, old, time.time(), why, str(backup)))
        fresh = self._fresh()
        try:
            self.say(f"switching {self.name} to openclaw {new.version}")
            self._step(report, "switch", lambda: self.ops.switch(fresh, self.name, restore_from))
            self.say(f"probation: {self.probation_s:g} s on openclaw {new.version}")
            self._step(report, "probation", lambda: self.ops.probation(fresh, self.name, new.version, self.probation_s))
        except StepFailed as e:
            report.reason = str(e)
            return False
        return True

    def _rollback_after(
        self,
        report: Report,
        configured: InstallRef,
        old: InstallRef,
        failed: InstallRef,
        saved: bytes | None,
        backup: Path,
    ) -> None:
        """Back to `old`, its config `saved` and its state databases (`backup`, where the failed one migrated
        them)."""
        why = report.reason
        self.say(f"rolling back to openclaw {old.version}: {why}")
        self._write(Pointer(self.name, configured, old, None, time.time(), f"rolled back: {why}"))
        t0 = self.clock()
        detail = self.ops.restore_config(self.loaded, self.name, saved)
        try:
            fresh = self._fresh()
            switched = self.ops.switch(fresh, self.name, backup)
            kept = self.ops.probation(fresh, self.name, old.version, min(self.probation_s, 10.0))
        except StepFailed as e:
            report.steps.append(Step("rollback", False, self.clock() - t0, str(e)))
            report.outcome = "failed"
            report.reason = (
                f"openclaw {failed.version} failed ({why}) and the rollback to {old.version} failed too: {e}; "
                "the daemon keeps restarting it (see `clawmedic status`)"
            )
        else:
            report.steps.append(Step("rollback", True, self.clock() - t0, f"{detail}; {switched}; {kept}"))
            report.outcome = "rolled_back"
            report.reason = f"openclaw {failed.version} failed: {why}; {self.name} runs openclaw {old.version} again"
        if failed.root is not None:
            self._set_aside(failed, report)

    # --- rollback on demand ------------------------------------------------------------------------------------

    def rollback(self, *, dry_run: bool = False) -> Report:
        self._preflight()
        p = self.pointer
        if p is None or p.previous is None:
            raise UpgradeRefused(
                f"Target {self.name} has no previous install to roll back to (`clawmedic upgrade` records one)."
            )
        prev, current = p.previous, p.current
        report = Report(self.name, "rollback", dry_run, current.version, prev.version, install=prev.root)
        report.plan = [
            f"switch {self.name} back to openclaw {prev.version} ({prev.root or prev.entry})",
            f"probation: {self.probation_s:g} s live, reporting {prev.version} on /startup",
            f"on failure: back to openclaw {current.version}",
        ]
        if dry_run:
            report.outcome, report.reason = "planned", "dry run: nothing was changed"
            return report
        with self._locked():
            try:
                backup = self._backup(report, current)
            except StepFailed as e:
                report.outcome, report.reason = "refused", f"nothing was switched: {e}"
                return report
            restore = Path(p.state_backup) if p.state_backup else None
            if self._switch_with_probation(report, p.configured, current, prev, "rollback on demand", backup, restore):
                report.outcome = "switched"
                report.reason = f"{self.name} runs openclaw {prev.version} again (was {current.version})"
            else:
                self._rollback_after(report, p.configured, current, prev, None, backup)
            report.running_version = self._running_version()
            return report

    # --- helpers -------------------------------------------------------------------------------------------------

    def _step(self, report: Report, name: str, run: Callable[[], str]) -> str:
        t0 = self.clock()
        try:
            detail = run()
        except StepFailed as e:
            report.steps.append(Step(name, False, self.clock() - t0, str(e)))
            raise
        except EnvironmentMissing as e:  # an install or a download that failed: the step's reason
            report.steps.append(Step(name, False, self.clock() - t0, str(e)))
            raise StepFailed(str(e)) from None
        report.steps.append(Step(name, True, self.clock() - t0, detail))
        return detail

    def _write(self, p: Pointer) -> None:
        write_pointer(self.state_dir, p)
        self.pointer = p

    def _fresh(self) -> LoadedConfig:
        if self._reload is not None:
            return self._reload()
        from clawmedic.config import load_config

        return load_config(self.loaded.source)

    def _running_version(self) -> str | None:
        return self.ops.running_version(self.loaded, self.name)

    def _set_aside(self, failed: InstallRef, report: Report) -> None:
        """Keep a failed install (clawmedic's own) beside the others until the next successful upgrade."""
        if failed.root is None:
            return
        src = Path(failed.root)
        if not src.is_dir():
            return
        dest = src.with_name(f"{src.name}{_FAILED}{timestamp()}")
        try:
            src.rename(dest)
        except OSError as e:
            report.reason += f" (the failed install stays at {src}: {e.strerror or e})"
            return
        report.reason += f"; the failed install is kept at {dest} until the next successful upgrade"
        p = self.pointer
        if p is not None and p.previous is not None and p.previous.root == failed.root:
            self._write(replace(p, previous=None))

    def _prune(self, keep: set[str | None]) -> None:
        """After a successful upgrade: remove clawmedic's own failed installs and superseded state backups (only
        folders it named so)."""
        folder = installs_dir(self.state_dir, self.name)
        with contextlib.suppress(OSError):
            for p in folder.iterdir():
                ours = _FAILED in p.name or p.name.startswith(_STATE)  # older state backups no rollback can use
                if ours and p.is_dir() and str(p) not in keep:
                    shutil.rmtree(p, ignore_errors=True)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        import filelock  # lazily, as httpx: load_config imports this module

        folder = ensure_private_dir(installs_dir(self.state_dir, self.name))
        lock = filelock.FileLock(folder / LOCK_NAME, mode=defaults.FILE_MODE)
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            raise AlreadyRunning(
                f"Another clawmedic upgrade of {self.name} is running (lock {folder / LOCK_NAME}); wait for it."
            ) from None
        try:
            yield
        finally:
            lock.release()


def _install_name(version: str) -> str:
    from clawmedic.sandbox.install import install_name

    return install_name(version)


def _package_version(folder: Path) -> str | None:
    try:
        data = json.loads((folder / "package.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    v = data.get("version") if isinstance(data, dict) else None
    return str(v) if v else None


# --- the real side effects --------------------------------------------------------------------------------------------


class RealOps:
    """The side effects for real: the registry and npm, the openclaw CLI, the daemon or a relaunch, HTTP probes."""

    def __init__(self, progress: ProgressFn | None = None, say: Say = lambda _m: None) -> None:
        self.progress = progress
        self.say = say

    def install(self, version: str, root: Path) -> InstallRef:
        from clawmedic.sandbox.install import ensure_install, npm_cache_dir

        ensure_private_dir(root.parent)
        shared_cache = npm_cache_dir(_default_install_root())  # the sandbox's npm cache: clawmedic's own
        inst = ensure_install(root, self.progress, openclaw_version=version, npm_cache=shared_cache)
        return InstallRef(inst.openclaw_version, str(inst.openclaw_entry), str(inst.node), str(inst.root))

    def deps(self, loaded: LoadedConfig, name: str) -> str:
        from clawmedic import deps

        problems = deps.check(loaded, name)
        if not problems:
            return "every declared dependency is present"
        names = ", ".join(p.package for p in problems[:5]) + (" …" if len(problems) > 5 else "")
        self.say(f"restoring {len(problems)} missing dependencies ({names}) with npm --ignore-scripts")
        fixed = deps.fix(loaded, name, allow_network=True)
        if not fixed.ok:
            bad = next(o for o in fixed.outcomes if o.status == "failed")
            raise StepFailed(
                f"dependency {bad.package} of the new install is missing and could not be restored ({bad.detail})"
            )
        return f"restored {names} with npm --ignore-scripts"

    def validate(self, loaded: LoadedConfig, name: str) -> str:
        from clawmedic.targets import openclaw

        v = openclaw.validate(loaded, name)
        if v.stage == "unchecked":
            raise StepFailed("the new version's `openclaw config validate --json` did not answer")
        if not v.valid:
            raise StepFailed(f"the new version refuses the current config ({v.summary()})")
        return "the current config is valid for the new version"

    def snapshot(self, loaded: LoadedConfig, name: str, reason: str) -> bytes | None:
        from clawmedic import runbook
        from clawmedic.targets import openclaw

        path = openclaw.config_path(loaded.targets[name])
        try:
            content = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StepFailed(f"cannot read {path}: {e.strerror or e}") from None
        with contextlib.suppress(ClawmedicError):
            runbook.snapshot(loaded, name, known_good=False, reason=f"upgrade: {reason}")
        return content

    def restore_config(self, loaded: LoadedConfig, name: str, content: bytes | None) -> str:
        from clawmedic.targets import openclaw

        path = openclaw.config_path(loaded.targets[name])
        if content is None:
            return "config unchanged"
        try:
            if path.read_bytes() == content:
                return "config unchanged"
        except OSError:
            pass
        aside = move_aside(path, "upgrade") if path.exists() else None
        atomic_write(path, content)
        return f"config restored from the snapshot (the changed one is {aside})"

    def backup_state(self, loaded: LoadedConfig, name: str, dest: Path) -> str:
        try:
            versions = backup_state(loaded.targets[name], dest)
        except (OSError, sqlite3.Error) as e:
            raise StepFailed(f"cannot back up the state databases into {dest}: {e}") from None
        if not versions:
            return "no state database yet"
        return ", ".join(f"{n} (schema {v})" for n, v in versions.items()) + f" backed up to {dest}"

    def switch(self, loaded: LoadedConfig, name: str, restore_from: Path | None = None) -> str:
        from clawmedic import runbook
        from clawmedic.store.lock import holder_pid

        stale = stale_databases(loaded.targets[name], restore_from) if restore_from is not None else []
        if restore_from is not None and stale:
            return _switch_restoring(loaded, name, restore_from, stale, self.say)
        if holder_pid(loaded.state_dir) is not None:
            return _switch_via_daemon(loaded, name, self.say)
        outcome = runbook.restart_target(loaded, name, self.say, check_config=False)
        if not outcome.ok:
            raise StepFailed(outcome.detail)
        return outcome.detail

    def probation(self, loaded: LoadedConfig, name: str, version: str, seconds: float) -> str:
        return _probation(loaded, name, version, seconds, self.say)

    def running_version(self, loaded: LoadedConfig, name: str) -> str | None:
        return startup_version(loaded.targets[name])


# --- the state databases ----------------------------------------------------------------------------------------------


def state_databases(cfg: TargetConfig) -> list[Path]:
    """The gateway's SQLite state databases (`~/.openclaw/state/*.sqlite`, FACTS §2: `state-database`)."""
    from clawmedic.targets.openclaw import gateway_home

    folder = gateway_home(cfg) / ".openclaw" / "state"
    try:
        return sorted(p for p in folder.glob("*.sqlite") if p.is_file())
    except OSError:
        return []


def schema_version(db: Path) -> int | None:
    """`PRAGMA user_version`: the schema OpenClaw migrated the database to (17 for 2026.9.5, 18 for 2026.9.6)."""
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        try:
            row = con.execute("PRAGMA user_version").fetchone()
        finally:
            con.close()
    except sqlite3.Error:
        return None
    return int(row[0]) if row else None


def backup_state(cfg: TargetConfig, dest: Path) -> dict[str, int | None]:
    """A consistent copy of every state database (SQLite's online backup: the gateway may be writing), and the
    schema of each in `schema.json`."""
    ensure_private_dir(dest)
    versions: dict[str, int | None] = {}
    for db in state_databases(cfg):
        src = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
        dst = sqlite3.connect(dest / db.name)
        try:
            src.backup(dst)
        finally:
            dst.close()
            src.close()
        (dest / db.name).chmod(defaults.FILE_MODE)
        versions[db.name] = schema_version(dest / db.name)
    atomic_write(dest / "schema.json", json.dumps(versions, indent=1) + "\n")
    return versions


def stale_databases(cfg: TargetConfig, backup: Path) -> list[str]:
    """The backed-up databases whose live schema is not the backup's (migrated since): a rollback restores them."""
    try:
        saved = json.loads((backup / "schema.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    live = {db.name: schema_version(db) for db in state_databases(cfg)}
    return [n for n, v in dict(saved).items() if (backup / n).is_file() and live.get(n) != v]


def restore_state(cfg: TargetConfig, backup: Path, names: list[str]) -> list[str]:
    """Put the backed-up databases `names` back (the gateway is stopped); the live ones, with their -wal and -shm,
    are moved aside as `NAME.rollback-<timestamp>`. Returns the paths moved aside."""
    from clawmedic.targets.openclaw import gateway_home

    folder = gateway_home(cfg) / ".openclaw" / "state"
    moved: list[str] = []
    stamp = timestamp()
    for n in names:
        for suffix in ("", "-wal", "-shm"):
            live = folder / f"{n}{suffix}"
            if live.exists():
                aside = live.with_name(f"{live.name}.rollback-{stamp}")
                live.rename(aside)
                moved.append(str(aside))
        shutil.copy2(backup / n, folder / n)
        (folder / n).chmod(defaults.FILE_MODE)
    return moved


def _switch_restoring(loaded: LoadedConfig, name: str, backup: Path, stale: list[str], say: Say) -> str:
    """Stop the target's own process, put the state backup back, start the loaded command: with a daemon, by
    pausing the target (maintenance: no restart), reloading and resuming; without one, under the daemon's lock."""
    import asyncio

    from clawmedic import control, relaunch, runbook
    from clawmedic.errors import NotOurProcess
    from clawmedic.process.launcher import Handle
    from clawmedic.store.lock import holder_pid

    cfg = loaded.targets[name]
    state_dir = loaded.state_dir
    say(f"the state databases {', '.join(stale)} were migrated since the backup: stopping {name} to restore them")

    def stop(handle: Handle | None) -> None:
        if handle is None:
            return
        try:
            asyncio.run(handle.stop(cfg.limits.stop_timeout_s))
        except NotOurProcess as e:
            raise StepFailed(f"not restoring the state databases: {e}") from None

    if holder_pid(state_dir) is not None:
        asked_at = time.time()
        control.pause(state_dir, [name])
        t0 = time.monotonic()
        while (runbook.daemon_status(loaded, name) or {}).get("state") != "maintenance":
            if time.monotonic() - t0 > defaults.CONTROL_ACK_TIMEOUT_S:
                control.resume(state_dir, [name])
                raise StepFailed("the clawmedic daemon did not pause the target to restore its state databases")
            time.sleep(0.25)
        before = relaunch._recorded(loaded, name)
        try:
            stop(Handle(before, None) if before is not None else None)
            moved = restore_state(cfg, backup, stale)
        finally:
            seq = control.request_reload(state_dir)  # the daemon's config must run the loaded command
            _await_reload(state_dir, seq)
            control.resume(state_dir, [name])
        detail = _await_new_process(loaded, name, before, asked_at, say)
    else:
        lock = relaunch._Lock(state_dir)  # no daemon may launch the target while its databases are replaced
        lock.acquire()
        try:
            stop(relaunch._launcher(loaded, name).adopt())
            moved = restore_state(cfg, backup, stale)
        finally:
            lock.release()
        outcome = runbook.restart_target(loaded, name, say, check_config=False)
        if not outcome.ok:
            raise StepFailed(outcome.detail)
        detail = outcome.detail
    return f"state databases restored from {backup} (the migrated ones: {', '.join(moved)}); {detail}"


def _default_install_root() -> Path:
    from clawmedic.sandbox.install import install_root

    return install_root()


def startup_url(cfg: TargetConfig) -> str:
    host = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
    return f"http://{host}:{cfg.port}/startup"


def startup_version(cfg: TargetConfig) -> str | None:
    """The version the running gateway reports on `/startup` (FACTS §2), or None."""
    import httpx

    if cfg.port is None:
        return None
    try:
        r = httpx.get(startup_url(cfg), timeout=defaults.PROBE_TIMEOUT_S, trust_env=False)
        body = r.json()
    except (httpx.HTTPError, ValueError):
        return None
    v = body.get("version") if isinstance(body, dict) and r.status_code == 200 else None
    return str(v) if v else None


def _switch_via_daemon(loaded: LoadedConfig, name: str, say: Say) -> str:
    """Ask the running daemon to reload its config (which now runs the new install) — it relaunches the target
    through its ladder — and wait for a new process to be live and healthy."""
    from clawmedic import control, relaunch
    from clawmedic.store.lock import holder_pid

    state_dir = loaded.state_dir
    before = relaunch._recorded(loaded, name)  # read only, as `fix restart` looks
    daemon = holder_pid(state_dir)
    asked_at = time.time()
    seq = control.request_reload(state_dir)
    say(f"asked the clawmedic daemon (pid {daemon}) to reload: it relaunches {name} on the new install")
    _await_reload(state_dir, seq)
    return _await_new_process(loaded, name, before, asked_at, say)


def _await_reload(state_dir: Path, seq: int) -> None:
    from clawmedic import control
    from clawmedic.store.lock import holder_pid

    daemon = holder_pid(state_dir)
    t0 = time.monotonic()
    while True:
        acks = control.read_acks(state_dir)
        if acks is not None and acks.reload_seq >= seq:
            if not acks.reload_ok:
                raise StepFailed(f"the daemon refused the reload: {acks.reload_message}")
            break
        if time.monotonic() - t0 > defaults.CONTROL_ACK_TIMEOUT_S:
            raise StepFailed(
                f"the clawmedic daemon (pid {daemon}) did not take the reload within "
                f"{defaults.CONTROL_ACK_TIMEOUT_S:g} s: it may be hung"
            )
        time.sleep(0.25)


def _await_new_process(loaded: LoadedConfig, name: str, before: ProcessRecord | None, asked_at: float, say: Say) -> str:
    """Wait until the daemon runs a new process of the target (not `before`), healthy and live."""
    from clawmedic import relaunch, runbook
    from clawmedic.store.lock import holder_pid

    cfg = loaded.targets[name]
    t0 = time.monotonic()
    limit = cfg.limits.stop_timeout_s + cfg.limits.startup_timeout_s + defaults.RESTART_WAIT_MARGIN_S
    last_said = time.monotonic()
    while True:
        rec = relaunch._recorded(loaded, name)
        st = runbook.daemon_status(loaded, name) or {}
        fresh = rec is not None and (before is None or rec.pid != before.pid)
        settled = rec is not None and st.get("pid") == rec.pid and st.get("state") in ("healthy", "probation")
        if fresh and settled and rec is not None and relaunch.live(loaded, name):
            was = f" (was pid {before.pid})" if before is not None else ""
            return f"the daemon relaunched {name}: pid {rec.pid}{was}, live after {time.monotonic() - t0:.0f} s"
        if st.get("state") in runbook.BAD_STATES and float(st.get("since") or 0) >= asked_at:
            exit_ = st.get("last_exit") or {}
            why = f" (last exit code {exit_.get('code')}, {exit_.get('kind')})" if exit_ else ""
            raise StepFailed(f"{name} did not start on the new install: the daemon reports it {st['state']}{why}")
        if holder_pid(loaded.state_dir) is None:
            raise StepFailed("the clawmedic daemon stopped during the switch")
        now = time.monotonic()
        if now - t0 > limit:
            raise StepFailed(f"{name} did not come back within {limit:g} s of the switch")
        if now - last_said >= defaults.RESTART_PROGRESS_EVERY_S:
            last_said = now
            say(f"waiting for {name} to come back on the new install ({now - t0:.0f} s, {st.get('state', '?')})")
        time.sleep(0.25)


def _probation(loaded: LoadedConfig, name: str, version: str, seconds: float, say: Say) -> str:
    """The gateway reports `version` on /startup and stays live, on one process, for `seconds`."""
    from clawmedic import relaunch, runbook

    cfg = loaded.targets[name]
    t0 = time.monotonic()
    deadline_version = t0 + cfg.limits.startup_timeout_s
    reported: str | None = None
    while reported != version:
        reported = startup_version(cfg)
        if reported is not None and reported != version:
            raise StepFailed(f"the gateway reports openclaw {reported} on /startup, not {version}")
        if time.monotonic() > deadline_version:
            limit = cfg.limits.startup_timeout_s
            raise StepFailed(f"the gateway did not report its version on /startup within {limit:g} s")
        if reported is None:
            time.sleep(0.5)
    rec = relaunch._recorded(loaded, name)
    pid = rec.pid if rec is not None else None
    end = time.monotonic() + seconds
    misses = 0
    while time.monotonic() < end:
        st = runbook.daemon_status(loaded, name)
        if st is not None and st.get("state") in runbook.BAD_STATES:
            raise StepFailed(f"the daemon reports {name} {st.get('state')} during the probation")
        now_rec = relaunch._recorded(loaded, name)
        if pid is not None and (now_rec is None or now_rec.pid != pid):
            raise StepFailed(f"{name}'s process (pid {pid}) exited during the probation")
        if relaunch.live(loaded, name):
            misses = 0
        else:
            misses += 1
            if misses >= cfg.liveness.failure_threshold:
                raise StepFailed(f"{name} stopped answering its liveness probe during the probation")
        time.sleep(1.0)
    return f"live on openclaw {version} for {seconds:g} s" + (f" (pid {pid})" if pid else "")
