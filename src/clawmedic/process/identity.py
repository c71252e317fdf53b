"""Whose process is this? The one place that decides which processes clawmedic may signal.

- **Ours**: a process clawmedic launched for this target. Every launch carries `CLAWMEDIC_TARGET=<state dir>
  <target>` in its environment (read back through psutil), with `CLAWMEDIC_LAUNCHED_AT`, the launch's time since
  boot, and its PID + start time are recorded in `process.json`. Either proves it; a reused PID has another start
  time and no marker. The processes a launch spawns inherit its environment, marker included, but started later:
  a helper the gateway left detached (an agent's background job in its own session) is not ours.
- **A stale gateway of this target**: a real OpenClaw gateway process (known by its executable or entry file, never
  by a substring of its command line) that holds this target's port **and** runs on this target's state (HOME).
- **A duplicate gateway of this target**: a real OpenClaw gateway process, not ours, running on this target's
  state: two gateways on one state directory fight over its lock (exit 78).

Nothing else is ever signalled without the user's explicit permission (`--kill-foreign`, `allow_kill_foreign`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import psutil

from clawmedic import defaults
from clawmedic.config import LoadedConfig
from clawmedic.process import inspect
from clawmedic.targets import openclaw

MARKER_ENV = "CLAWMEDIC_TARGET"  # set in the environment of every process clawmedic launches
LAUNCHED_AT_ENV = "CLAWMEDIC_LAUNCHED_AT"  # beside it: seconds since boot (CLOCK_BOOTTIME) just before the launch
GATEWAY_PROCESS_NAME = "openclaw-gateway"  # the title OpenClaw's gateway gives its process (FACTS §1)
_GATEWAY_ENTRY = "openclaw.mjs"  # the npm package's bin entry, run by node
_STATE_ENV = ("OPENCLAW_STATE_DIR", "OPENCLAW_PROFILE", "OPENCLAW_CONFIG_PATH")  # besides HOME, what picks the state


def marker(target_dir: Path) -> str:
    """The identity a launch of the target whose folder is `<state dir>/targets/<name>` carries."""
    target_dir = target_dir.resolve()
    return f"{target_dir.parent.parent} {target_dir.name}"


def marker_of(target_dir: Path) -> dict[str, str]:
    """The environment entries to add to a launch made now."""
    return {MARKER_ENV: marker(target_dir), LAUNCHED_AT_ENV: f"{time.clock_gettime(time.CLOCK_BOOTTIME):.3f}"}


def _launched_then(p: psutil.Process, env: dict[str, str]) -> bool:
    """The marked process is the launch itself, not a descendant that inherited its environment later: it started
    within `LAUNCH_MARKER_SLACK_S` of the time the marker names. Boot-relative times on both sides, so a step of the
    wall clock changes nothing. A marker without the time (a launch by an older clawmedic) is taken as it is."""
    at = env.get(LAUNCHED_AT_ENV)
    if at is None:
        return True
    try:
        since_boot = p.create_time() - psutil.boot_time()  # psutil adds the boot time to /proc's jiffies
        return abs(since_boot - float(at)) < defaults.LAUNCH_MARKER_SLACK_S
    except (psutil.Error, ValueError):
        return False


def _environ(p: psutil.Process) -> dict[str, str] | None:
    try:
        return p.environ()
    except psutil.Error:
        return None


def has_marker(pid: int, target_dir: Path) -> bool:
    """True when `pid` carries the identity marker of exactly this state dir and target and is a launch of it, or
    runs under one that still lives (a wrapper's child holding the port). A marked process that started later and
    outlived its launch — a helper the gateway left detached — is not one of ours."""
    try:
        p = psutil.Process(pid)
        want = marker(target_dir)
        env = _environ(p)
        if env is None or env.get(MARKER_ENV) != want:
            return False
        if _launched_then(p, env):
            return True
        for parent in p.parents():
            penv = _environ(parent)
            if penv is not None and penv.get(MARKER_ENV) == want and _launched_then(parent, penv):
                return True
        return False
    except psutil.Error:
        return False


def is_ours(pid: int, target_dir: Path, recorded: tuple[int, float] | None = None) -> bool:
    """Launched by clawmedic for this target: the marker, or the recorded (PID, start time)."""
    if recorded is not None and recorded[0] == pid:
        ct = inspect.create_time(pid)
        if ct is not None and abs(ct - recorded[1]) < 1.0:
            return True
    return has_marker(pid, target_dir)


def find_ours(target_dir: Path) -> psutil.Process | None:
    """The live process a previous launch of this target left running, found by its marker (when its record is
    missing or broken): the group leader among the marked processes whose parent is not marked (its workers inherit
    the marker; a launch is always its own group leader). The oldest one if there are several."""
    want = marker(target_dir)
    marked: dict[int, psutil.Process] = {}
    for p in _processes():
        env = _environ(p)
        if env is not None and env.get(MARKER_ENV) == want and _launched_then(p, env):
            marked[p.pid] = p
    roots = []
    for p in marked.values():
        try:
            if p.ppid() in marked or os.getpgid(p.pid) != p.pid or p.status() == psutil.STATUS_ZOMBIE:
                continue
            roots.append((p.create_time(), p))
        except (psutil.Error, OSError):
            continue
    return min(roots, key=lambda r: r[0])[1] if roots else None


def _processes() -> Iterator[psutil.Process]:
    me = os.getpid()
    for p in psutil.process_iter():
        if p.pid != me:
            yield p


def is_openclaw_gateway(p: psutil.Process) -> bool:
    """A real OpenClaw gateway: the process titled `openclaw-gateway`, or node running the `openclaw` package's entry
    file (argv[1], resolved against the process's cwd to a real file) with the `gateway` command. Never a substring
    match on the command line: `python3 -m http.server` run from `~/openclaw-docs` is not a gateway."""
    try:
        if p.name() == GATEWAY_PROCESS_NAME:
            return True
        argv = p.cmdline()
        if len(argv) < 3 or not Path(argv[0]).name.startswith("node"):
            return False
        entry = Path(argv[1]) if Path(argv[1]).is_absolute() else Path(p.cwd()) / argv[1]
        real = entry.resolve()
    except (psutil.Error, OSError):
        return False
    is_entry = real.is_file() and (real.name == _GATEWAY_ENTRY and real.parent.name == "openclaw")
    return is_entry and argv[2] == "gateway" and (len(argv) == 3 or argv[3] == "run" or argv[3].startswith("-"))


def _on_target_state(p: psutil.Process, loaded: LoadedConfig, name: str) -> bool:
    """Runs on this target's state: same HOME as its gateway, and the same state overrides if any are set."""
    env = _environ(p)
    if env is None:
        return False
    ours = openclaw.cli_env(loaded, name)
    if env.get("HOME") != ours["HOME"]:
        return False
    return all(env.get(k) == ours.get(k) for k in _STATE_ENV)


def is_stale_gateway_of(loaded: LoadedConfig, name: str, pid: int) -> bool:
    """A gateway of this very target that clawmedic does not track: a real OpenClaw gateway process holding the
    target's port (itself or its process tree's leader) and running on the target's state."""
    port = loaded.targets[name].port
    if port is None:
        return False
    owner = inspect.port_owner(port)
    if owner is None or owner.pid is None or owner.pid != pid:
        return False
    try:
        p = psutil.Process(pid)
    except psutil.Error:
        return False
    return is_openclaw_gateway(p) and _on_target_state(p, loaded, name)


def is_duplicate_gateway_of(loaded: LoadedConfig, name: str, p: psutil.Process) -> bool:
    """A real OpenClaw gateway on this target's state that clawmedic did not launch for it."""
    return (
        is_openclaw_gateway(p)
        and _on_target_state(p, loaded, name)
        and not has_marker(p.pid, loaded.state_dir / "targets" / name)
    )


def duplicate_gateways(loaded: LoadedConfig, name: str, exclude: set[int] | None = None) -> list[psutil.Process]:
    """Every duplicate gateway of this target (`exclude`: the tree of the process clawmedic runs for it now)."""
    found = []
    for p in _processes():
        if exclude and p.pid in exclude:
            continue
        if is_duplicate_gateway_of(loaded, name, p):  # node's own thread is named "MainThread": no name filter
            found.append(p)
    return found


def port_holder(port: int) -> psutil.Process | None:
    """The process listening on `port` now, as a psutil handle (which refuses to signal a reused PID)."""
    owner = inspect.port_owner(port)
    if owner is None or owner.pid is None:
        return None
    try:
        return psutil.Process(owner.pid)
    except psutil.Error:
        return None


def still_holds(port: int, p: psutil.Process) -> bool:
    """Re-checked right before a signal: `p` (the very process, not a reused PID) still listens on `port`."""
    owner = inspect.port_owner(port)
    try:
        return owner is not None and owner.pid == p.pid and p.is_running()
    except psutil.Error:
        return False
