"""`clawmedic install` / `uninstall`: start clawmedic with the OS, and the guardian on a timer.

For the current platform:

- **systemd** (Linux with systemd): user units in `$XDG_CONFIG_HOME/systemd/user` (`~/.config/systemd/user`):
  `clawmedic.service` (the daemon, `Type=notify` + `WatchdogSec=`: the daemon says `READY=1` and sends `WATCHDOG=1`
  from its own event loop, so systemd itself restarts a dead or hung daemon and no guardian timer is needed;
  `Restart=always`, `ExecReload=` sends SIGHUP, systemd's default KillMode: stopping the unit stops what it launched;
  `PATH` is the folders of the programs it runs, resolved at install, not the installing shell's), and with
  `--with-gateway` `openclaw-gateway.service` (`ExecStart=clawmedic safe-start TARGET`). Enabled with
  `systemctl --user` when it can be reached (not in most containers: then the files are written and the message says
  how to enable them).
- **launchd** (macOS): agents in `~/Library/LaunchAgents` (`ai.clawmedic.daemon`, `ai.clawmedic.guardian` every 60 s,
  optionally `ai.clawmedic.gateway`), loaded with `launchctl bootstrap gui/UID`.
- **cron** (Linux without systemd): a marked block in the user's crontab: the daemon `@reboot`, the guardian every
  minute. Lines outside the block are never touched.

Everything written is recorded in a manifest in the state folder (`install-manifest.json`, 0600), so `uninstall`
removes exactly that. clawmedic's rule is to move files aside, never delete them; the exception is a file that
`install` generated itself and that is unchanged since (its SHA-256 is in the manifest): that one is removed. A file
the user edited after install is moved aside instead, and a file that stood at a unit path before install (not ours)
was moved aside by install and is put back by uninstall. HOME-relative paths follow `$HOME` (and
`$XDG_CONFIG_HOME`). `--dry-run` prints the same plan and changes nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import plistlib
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from clawmedic import defaults
from clawmedic.config import LoadedConfig
from clawmedic.errors import ConfigInvalid
from clawmedic.guardian import clawmedic_command, console_log_path
from clawmedic.store.files import atomic_write, move_aside

Platform = Literal["systemd", "launchd", "cron"]
PLATFORMS: tuple[Platform, ...] = ("systemd", "launchd", "cron")

DAEMON_UNIT = "clawmedic.service"
GATEWAY_UNIT = "openclaw-gateway.service"
DAEMON_LABEL = "ai.clawmedic.daemon"
GUARDIAN_LABEL = "ai.clawmedic.guardian"
GATEWAY_LABEL = "ai.clawmedic.gateway"
CRON_BEGIN = "# >>> clawmedic >>>"
CRON_END = "# <<< clawmedic <<<"
GUARDIAN_EVERY_S = 60  # launchd, cron: the guardian's period (a dead daemon is back within a minute)
_COMMAND_TIMEOUT_S = 60.0  # systemctl/launchctl/crontab answer in seconds

Runner = Callable[[list[str], str | None], tuple[int, str]]  # (argv, stdin) -> (exit code, output)


def run_command(argv: list[str], stdin: str | None = None) -> tuple[int, str]:
    try:
        done = subprocess.run(
            argv, input=stdin, capture_output=True, text=True, timeout=_COMMAND_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return 127, str(e)
    return done.returncode, (done.stdout + done.stderr).strip()


# --- where ------------------------------------------------------------------------------------------------------------


def detect_platform() -> Platform:
    if sys.platform == "darwin":
        return "launchd"
    if Path("/run/systemd/system").is_dir():  # sd_booted(): systemd is PID 1
        return "systemd"
    return "cron"


def systemd_user_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "systemd" / "user"


def launch_agents_dir() -> Path:
    return Path.home() / "Library" / "LaunchAgents"


def manifest_path(state_dir: Path) -> Path:
    return state_dir / "install-manifest.json"


# --- what: rendering ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UnitFile:
    path: Path
    content: str
    name: str  # the unit name or launchd label


@dataclass
class Plan:
    platform: Platform
    files: list[UnitFile]
    cron_block: str | None = None
    units: list[str] = field(default_factory=list)  # systemd units to enable, or launchd labels to load
    notes: list[str] = field(default_factory=list)


def _systemd_arg(arg: str) -> str:
    """One ExecStart= argument: `%` and `$` escaped, quoted when it has blanks or quotes."""
    s = arg.replace("%", "%%").replace("$", "$$")
    if any(c in s for c in " \t\"'\\;") or not s:
        s = '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return s


def _exec(argv: list[str]) -> str:
    return " ".join(_systemd_arg(a) for a in argv)


def _env_line(env: dict[str, str]) -> str:
    """One `Environment=` line: each assignment quoted, `%` escaped (systemd expands no `$` there)."""

    def one(name: str, value: str) -> str:
        v = f"{name}={value}".replace("%", "%%").replace("\\", "\\\\").replace('"', '\\"')
        return f'"{v}"'

    return "Environment=" + " ".join(one(k, v) for k, v in env.items())


SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"


def _path_env() -> str:
    return os.environ.get("PATH", SYSTEM_PATH)


def service_path(loaded: LoadedConfig | None, exe: list[str]) -> str:
    """The PATH a systemd unit gets: the folders of the programs it runs, resolved now to absolute paths (clawmedic
    itself, each target's command or restart command — and so the `node` beside an npm-installed `openclaw`),
    then the system's. Not a frozen copy of the installing shell's PATH."""
    programs = [exe[0]]
    for name, t in loaded.targets.items() if loaded is not None else ():
        cmd = t.start.command if t.start.mode == "managed" else t.start.restart_command
        if loaded is not None and cmd:
            path_var = loaded.command_env(name).get("PATH", _path_env())
            if found := shutil.which(loaded.resolve(cmd[0], "command"), path=path_var):
                programs.append(found)
    dirs: list[str] = []
    for prog in programs:
        d = str(Path(prog).parent)
        if Path(prog).is_absolute() and d not in dirs and d not in SYSTEM_PATH.split(":"):
            dirs.append(d)
    return ":".join([*dirs, SYSTEM_PATH])


def _kill() -> str:
    return shutil.which("kill", path=SYSTEM_PATH) or "/bin/kill"


def render_systemd(
    exe: list[str], config: Path, *, gateway: tuple[str, dict[str, str]] | None = None, path: str | None = None
) -> dict[str, str]:
    """Unit name -> content. `gateway`: (target name, extra environment) for `openclaw-gateway.service`; `path`:
    the units' PATH (`service_path`)."""
    cfg = str(config)
    path = path or service_path(None, exe)
    path_env = _env_line({"PATH": path})
    units = {
        DAEMON_UNIT: "\n".join(
            [
                "# Written by `clawmedic install`; `clawmedic uninstall` removes it.",
                "[Unit]",
                "Description=clawmedic: keeps the OpenClaw gateway alive from the outside",
                "StartLimitIntervalSec=0",
                "",
                "[Service]",
                "# READY=1 once supervising, WATCHDOG=1 from the daemon's own loop: a hung daemon is restarted",
                "Type=notify",
                "NotifyAccess=main",
                f"WatchdogSec={defaults.SYSTEMD_WATCHDOG_S}",
                f"ExecStart={_exec([*exe, 'run', '--config', cfg])}",
                "# SIGHUP: read the config file again (an invalid one is refused and the running one kept)",
                f"ExecReload={_kill()} -HUP $MAINPID",
                "Restart=always",
                "RestartSec=5",
                "# 2: bad config, 4: another daemon holds the state folder; restarting cannot fix either",
                "RestartPreventExitStatus=2 4",
                "# KillMode stays control-group: stopping (or a watchdog restart) ends the managed gateways too, each",
                "# with SIGTERM first; a gateway that must outlive the daemon is its own unit (install --with-gateway)",
                "TimeoutStopSec=60",
                "UMask=0077",
                path_env,
                "",
                "[Install]",
                "WantedBy=default.target",
                "",
            ]
        ),
    }
    if gateway is not None:
        target, env = gateway
        lines = [
            "# Written by `clawmedic install --with-gateway`; `clawmedic uninstall` removes it.",
            "[Unit]",
            f"Description=OpenClaw gateway ({target}), started through clawmedic safe-start",
            "StartLimitIntervalSec=300",
            "StartLimitBurst=10",
            "",
            "[Service]",
            "Type=simple",
            "# safe-start checks dependencies, the config and the port, then execs the gateway (same PID)",
            f"ExecStart={_exec([*exe, 'safe-start', target, '--config', cfg])}",
            "Restart=always",
            "RestartSec=5",
            "# 78: the config is invalid; clawmedic escalates it instead of restarting in a loop",
            "RestartPreventExitStatus=78",
            "TimeoutStopSec=30",
            "UMask=0077",
            _env_line({"PATH": path, **env}),
            "",
            "[Install]",
            "WantedBy=default.target",
            "",
        ]
        units[GATEWAY_UNIT] = "\n".join(lines)
    return units


def render_launchd(
    exe: list[str], config: Path, state_dir: Path, uid: int, *, gateway: tuple[str, dict[str, str]] | None = None
) -> dict[str, str]:
    """Label -> plist XML."""
    cfg = str(config)
    logs = state_dir / "logs"
    env = {"PATH": _path_env()}
    agents: dict[str, dict[str, Any]] = {
        DAEMON_LABEL: {
            "Label": DAEMON_LABEL,
            "ProgramArguments": [*exe, "run", "--config", cfg],
            "RunAtLoad": True,
            "KeepAlive": True,
            "ThrottleInterval": 10,
            "AbandonProcessGroup": True,  # the gateways run in their own sessions; never take them down with us
            "ProcessType": "Background",
            "WorkingDirectory": str(config.parent),
            "EnvironmentVariables": env,
            "Umask": 0o077,
            "StandardOutPath": str(logs / "launchd-daemon.log"),
            "StandardErrorPath": str(logs / "launchd-daemon.log"),
        },
        GUARDIAN_LABEL: {
            "Label": GUARDIAN_LABEL,
            "ProgramArguments": [
                *exe,
                "guardian",
                "--config",
                cfg,
                "--quiet",
                "--restart-command",
                f"launchctl kickstart -k gui/{uid}/{DAEMON_LABEL}",
            ],
            "StartInterval": GUARDIAN_EVERY_S,
            "RunAtLoad": True,
            "ProcessType": "Background",
            "EnvironmentVariables": env,
            "Umask": 0o077,
            "StandardOutPath": str(logs / "launchd-guardian.log"),
            "StandardErrorPath": str(logs / "launchd-guardian.log"),
        },
    }
    if gateway is not None:
        target, genv = gateway
        agents[GATEWAY_LABEL] = {
            "Label": GATEWAY_LABEL,
            "ProgramArguments": [*exe, "safe-start", target, "--config", cfg],
            "RunAtLoad": True,
            "KeepAlive": True,
            "ThrottleInterval": 10,
            "ProcessType": "Background",
            "EnvironmentVariables": {**env, **genv},
            "Umask": 0o077,
            "StandardOutPath": str(logs / "launchd-gateway.log"),
            "StandardErrorPath": str(logs / "launchd-gateway.log"),
        }
    return {label: plistlib.dumps(d, sort_keys=False).decode() for label, d in agents.items()}


def _cron_arg(arg: str) -> str:
    return shlex.quote(arg).replace("%", "\\%")  # cron turns an unescaped % into a newline


def render_cron_block(exe: list[str], config: Path, state_dir: Path) -> str:
    run = " ".join(_cron_arg(a) for a in [*exe, "run", "--config", str(config)])
    guard = " ".join(_cron_arg(a) for a in [*exe, "guardian", "--config", str(config), "--quiet"])
    console = _cron_arg(str(console_log_path(state_dir)))
    guard_log = _cron_arg(str(state_dir / "logs" / "guardian.log"))
    return "\n".join(
        [
            CRON_BEGIN,
            f"# written by `clawmedic install` for {config}; `clawmedic uninstall` removes this block",
            f"@reboot {run} >> {console} 2>&1",
            f"* * * * * {guard} >> {guard_log} 2>&1",
            CRON_END,
        ]
    )


def strip_cron_block(crontab: str) -> str:
    """The crontab without clawmedic's block (everything else kept as it was)."""
    out: list[str] = []
    inside = False
    for line in crontab.splitlines():
        if line.strip() == CRON_BEGIN:
            inside = True
            continue
        if inside and line.strip() == CRON_END:
            inside = False
            continue
        if not inside:
            out.append(line)
    text = "\n".join(out)
    return text + "\n" if text else ""


def _gateway_target(loaded: LoadedConfig, target: str | None) -> tuple[str, dict[str, str]]:
    name, cfg = loaded.target(target)
    where = f"{loaded.source}: targets.{name}.start"
    if cfg.start.mode != "external":
        raise ConfigInvalid(
            f'{where}.mode: --with-gateway needs mode = "external" with restart_command = ["systemctl", "--user", '
            f'"restart", "{GATEWAY_UNIT}"] (the OS starts the gateway; a managed target would be started twice).'
        )
    if not cfg.start.command:
        raise ConfigInvalid(f"{where}.command: --with-gateway needs the gateway command (safe-start execs it).")
    env: dict[str, str] = {}
    if cfg.openclaw_home is not None:
        env["HOME"] = str(cfg.openclaw_home)
    return name, env


def build_plan(
    loaded: LoadedConfig,
    platform: Platform,
    *,
    with_gateway: bool = False,
    target: str | None = None,
    exe: list[str] | None = None,
    uid: int | None = None,
) -> Plan:
    exe = exe or clawmedic_command()
    config = loaded.source.resolve()
    state_dir = loaded.state_dir
    gateway = _gateway_target(loaded, target) if with_gateway else None
    notes: list[str] = []
    if platform == "systemd":
        units = render_systemd(exe, config, gateway=gateway, path=service_path(loaded, exe))
        d = systemd_user_dir()
        files = [UnitFile(d / name, content, name) for name, content in units.items()]
        enable = [DAEMON_UNIT] + ([GATEWAY_UNIT] if gateway else [])
        notes.append(
            "systemd runs user units only while you are logged in, unless lingering is on: "
            "`loginctl enable-linger $USER` keeps clawmedic running after logout and starts it at boot."
        )
        notes.append(f"to stop clawmedic for good: `systemctl --user disable --now {DAEMON_UNIT}`.")
        return Plan(platform, files, None, enable, notes)
    if platform == "launchd":
        plists = render_launchd(exe, config, state_dir, os.getuid() if uid is None else uid, gateway=gateway)
        d = launch_agents_dir()
        files = [UnitFile(d / f"{label}.plist", content, label) for label, content in plists.items()]
        return Plan(platform, files, None, list(plists), notes)
    if gateway is not None:
        raise ConfigInvalid("--with-gateway needs systemd or launchd; with cron, keep the gateway a managed target.")
    notes.append("to stop clawmedic for good: `clawmedic uninstall` (the guardian would start the daemon again).")
    return Plan(platform, [], render_cron_block(exe, config, state_dir), [], notes)


# --- doing ------------------------------------------------------------------------------------------------------------


@dataclass
class Step:
    action: str  # write | replace | unchanged | move-aside | remove | restore | crontab | run | skip | note
    detail: str
    done: bool
    ok: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "detail": self.detail, "done": self.done, "ok": self.ok}


@dataclass
class Report:
    platform: str
    dry_run: bool
    steps: list[Step] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    files: list[UnitFile] = field(default_factory=list)
    manifest: Path | None = None

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.steps)

    def add(self, action: str, detail: str, done: bool, ok: bool = True) -> None:
        self.steps.append(Step(action, detail, done, ok))

    def to_dict(self) -> dict[str, Any]:
        return {
            "platform": self.platform,
            "dry_run": self.dry_run,
            "ok": self.ok,
            "steps": [s.to_dict() for s in self.steps],
            "notes": self.notes,
            "files": [{"path": str(f.path), "name": f.name, "content": f.content} for f in self.files],
            "manifest": str(self.manifest) if self.manifest else None,
        }


def _sha(text: str | bytes) -> str:
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()


def read_manifest(state_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(manifest_path(state_dir).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _missing_parents(path: Path) -> list[Path]:
    out: list[Path] = []
    p = path.parent
    while not p.exists():
        out.append(p)
        p = p.parent
    return out  # deepest first


def install(
    loaded: LoadedConfig,
    plan: Plan,
    *,
    dry_run: bool,
    runner: Runner = run_command,
    which: Callable[[str], str | None] = shutil.which,
) -> Report:
    report = Report(plan.platform, dry_run, notes=list(plan.notes), files=list(plan.files))
    state_dir = loaded.state_dir
    old = read_manifest(state_dir) or {}
    ours = {f["path"]: f["sha256"] for f in old.get("files", [])}
    manifest: dict[str, Any] = {
        "version": 1,
        "platform": plan.platform,
        "config": str(loaded.source.resolve()),
        "installed_at": time.time(),
        "files": [f for f in old.get("files", []) if f["path"] not in {str(u.path) for u in plan.files}],
        "dirs": list(old.get("dirs", [])),
        "moved_aside": list(old.get("moved_aside", [])),
        "units": sorted(set(old.get("units", [])) | set(plan.units)),
        "cron_block": bool(old.get("cron_block")),
    }
    verb = "would " if dry_run else ""
    if plan.platform == "systemd" and "clawmedic-guardian.timer" in old.get("units", []):
        report.notes.append(  # earlier versions installed it; systemd's watchdog (Type=notify) does its job now
            "an earlier install's clawmedic-guardian.timer is no longer needed: "
            "`systemctl --user disable --now clawmedic-guardian.timer` (`clawmedic uninstall` removes its files)."
        )
    for unit in plan.files:
        path = unit.path
        if path.exists():
            current = path.read_bytes()
            if current == unit.content.encode():
                report.add("unchanged", str(path), False)
            elif ours.get(str(path)) == _sha(current):
                report.add("replace", f"{verb}rewrite {path} (written by an earlier install)", not dry_run)
                if not dry_run:
                    atomic_write(path, unit.content, mode=0o644)
            else:
                if dry_run:
                    report.add(
                        "move-aside", f"would move the existing {path} aside (it is not ours) and write ours", False
                    )
                else:
                    kept = move_aside(path, "before-clawmedic")
                    manifest["moved_aside"].append({"path": str(path), "kept_as": str(kept)})
                    report.add("move-aside", f"moved the existing {path} aside to {kept} (it is not ours)", True)
                    atomic_write(path, unit.content, mode=0o644)
                    report.add("write", str(path), True)
        else:
            created = _missing_parents(path)
            report.add("write", f"{verb}write {path}", not dry_run)
            if not dry_run:
                for d in reversed(created):
                    d.mkdir(mode=0o755)
                manifest["dirs"] += [str(d) for d in created]
                atomic_write(path, unit.content, mode=0o644)
        manifest["files"].append({"path": str(path), "sha256": _sha(unit.content), "name": unit.name})
    if plan.cron_block is not None:
        _install_cron(plan.cron_block, report, dry_run, runner, which)
        manifest["cron_block"] = manifest["cron_block"] or (not dry_run and report.ok)
    if not dry_run:
        logs = state_dir / "logs"  # launchd and cron append to files there: the folder must exist beforehand
        created = _missing_parents(logs / "x")
        for d in reversed(created):
            d.mkdir(mode=defaults.DIR_MODE)  # private: the state folder and its logs are the user's alone
        manifest["dirs"] += [str(d) for d in created]
        atomic_write(manifest_path(state_dir), json.dumps(manifest, indent=2))
        report.manifest = manifest_path(state_dir)
    _enable(plan, report, dry_run, runner, which)
    return report


def _install_cron(
    block: str, report: Report, dry_run: bool, runner: Runner, which: Callable[[str], str | None]
) -> None:
    crontab = which("crontab")
    if crontab is None:
        report.add(
            "crontab",
            "crontab is not installed: install cron (e.g. `apt-get install cron`), or add these lines with your own "
            "scheduler:\n" + block,
            False,
            ok=dry_run,
        )
        return
    code, current = runner([crontab, "-l"], None)
    if code != 0:
        current = ""  # "no crontab for USER"
    new = strip_cron_block(current) + block + "\n"
    if dry_run:
        report.add("crontab", "would add to your crontab:\n" + block, False)
        return
    code, out = runner([crontab, "-"], new)
    report.add(
        "crontab", "added to your crontab:\n" + block if code == 0 else f"crontab failed: {out}", code == 0, code == 0
    )


def _enable(plan: Plan, report: Report, dry_run: bool, runner: Runner, which: Callable[[str], str | None]) -> None:
    if plan.platform == "systemd":
        commands = [
            (["systemctl", "--user", "daemon-reload"], True),
            (["systemctl", "--user", "enable", "--now", *plan.units], True),
        ]
        _run_manager(commands, report, dry_run, runner, which, "enabling skipped; the files are written")
    elif plan.platform == "launchd":
        uid = os.getuid()
        commands = []
        for f in plan.files:
            commands.append((["launchctl", "bootout", f"gui/{uid}/{f.name}"], False))  # fails when not loaded yet
            commands.append((["launchctl", "bootstrap", f"gui/{uid}", str(f.path)], True))
        _run_manager(commands, report, dry_run, runner, which, "loading skipped; the files are written")


def _run_manager(
    commands: list[tuple[list[str], bool]],
    report: Report,
    dry_run: bool,
    runner: Runner,
    which: Callable[[str], str | None],
    skipped: str,
) -> None:
    """Run service-manager commands (`(argv, must_succeed)`); a missing or unreachable manager is reported, not
    fatal (a container has systemctl but no user manager)."""
    tool = commands[0][0][0]
    shown = "; ".join(" ".join(c) for c, must in commands if must) or "; ".join(" ".join(c) for c, _ in commands)
    if dry_run:
        report.add("run", f"would run: {shown}", False)
        return
    exe = which(tool)
    if exe is None:
        report.add("skip", f"{tool} is not available here: {skipped}. Where it is, run: {shown}", False)
        return
    for cmd, must in commands:
        code, out = runner([exe, *cmd[1:]], None)
        if code != 0 and must:
            why = out.splitlines()[-1] if out else f"exit {code}"
            report.add("skip", f"`{' '.join(cmd)}` failed ({why}): {skipped}. In a login session, run: {shown}", False)
            return
        report.add("run", " ".join(cmd) + ("" if code == 0 else f" (exit {code}, not needed)"), True)


def uninstall(
    loaded: LoadedConfig,
    *,
    dry_run: bool,
    runner: Runner = run_command,
    which: Callable[[str], str | None] = shutil.which,
) -> Report:
    state_dir = loaded.state_dir
    manifest = read_manifest(state_dir)
    if manifest is None:
        report = Report("none", dry_run)
        report.add("note", f"nothing to remove: no install manifest in {state_dir}", False)
        return report
    platform = str(manifest.get("platform", "none"))
    report = Report(platform, dry_run)
    verb = "would " if dry_run else ""
    units = [str(u) for u in manifest.get("units", [])]
    if platform == "systemd" and units:
        disable = [(["systemctl", "--user", "disable", "--now", *units], True)]
        _run_manager(disable, report, dry_run, runner, which, "disabling skipped")
    elif platform == "launchd" and units:
        uid = os.getuid()
        bootout = [(["launchctl", "bootout", f"gui/{uid}/{u}"], False) for u in units]
        _run_manager(bootout, report, dry_run, runner, which, "unloading skipped")
    for f in manifest.get("files", []):
        path = Path(f["path"])
        if not path.exists():
            report.add("note", f"{path} is already gone", False)
            continue
        if _sha(path.read_bytes()) == f["sha256"]:
            # Generated by `clawmedic install` and unchanged since (its SHA-256 is in the manifest): ours to remove.
            report.add("remove", f"{verb}remove {path}", not dry_run)
            if not dry_run:
                path.unlink()
        else:
            report.add("move-aside", f"{verb}move {path} aside: it was edited after install", not dry_run)
            if not dry_run:
                kept = move_aside(path, "edited")
                report.steps[-1].detail = f"moved {path} aside to {kept}: it was edited after install"
    for m in manifest.get("moved_aside", []):
        original, kept = Path(m["path"]), Path(m["kept_as"])
        if kept.exists() and not original.exists():
            report.add("restore", f"{verb}put your earlier {original} back (from {kept})", not dry_run)
            if not dry_run:
                kept.rename(original)
    if manifest.get("cron_block"):
        crontab = which("crontab")
        if crontab is None:
            report.add(
                "skip", f"crontab is not available: remove the block between {CRON_BEGIN!r} and {CRON_END!r}", False
            )
        else:
            code, current = runner([crontab, "-l"], None)
            if code == 0 and CRON_BEGIN in current:
                report.add("crontab", f"{verb}remove clawmedic's block from your crontab", not dry_run)
                if not dry_run:
                    code, out = runner([crontab, "-"], strip_cron_block(current))
                    if code != 0:
                        report.steps[-1].ok = False
                        report.steps[-1].detail = f"crontab failed: {out}"
    if platform == "systemd" and units and not dry_run and which("systemctl"):
        runner(["systemctl", "--user", "daemon-reload"], None)
    gone = {Path(f["path"]) for f in manifest.get("files", [])}
    if report.ok:
        gone.add(manifest_path(state_dir))
        report.add("remove", f"{verb}remove {manifest_path(state_dir)} (the install record)", not dry_run)
        if not dry_run:
            with contextlib.suppress(OSError):
                manifest_path(state_dir).unlink()  # our own bookkeeping file
    for d in sorted((Path(x) for x in manifest.get("dirs", [])), key=lambda p: len(p.parts), reverse=True):
        if d.is_dir() and all(p in gone for p in d.iterdir()):  # empty once our files are gone (a dry run)
            gone.add(d)
            report.add("remove", f"{verb}remove the empty folder {d} (created by install)", not dry_run)
            if not dry_run:
                d.rmdir()
    return report
