"""`clawmedic drill --compare supervisord`: kill -9, the hang and a broken config + crash under supervisord 4.3,
configured as a competent user would, on the drill's own sandbox in the same run — beside clawmedic's rows.

supervisord is pip-installed into a venv in clawmedic's cache on first use. It runs in the foreground as the
drill's child, with its own socket and logs in the drill's folder; everything it starts is stopped by it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clawmedic import paths
from clawmedic.errors import EnvironmentMissing
from clawmedic.sandbox import gateway as gw

if TYPE_CHECKING:
    from clawmedic.drill.runner import SandboxRig

SUPERVISOR_VERSION = "4.3.0"
HANG_WATCH_S = 60.0  # supervisord has no health check: a hang it has not healed in a minute is never healed
HEAL_WATCH_S = 180.0  # a restart is a boot: 7-25 s, far longer on a loaded machine
STARTSECS = 10  # a competent user's settings: the gateway must stay up 10 s to count as started ...
STARTRETRIES = 3  # ... up to 3 tries, then FATAL
TITLES = {"kill9": "kill -9", "hang": "hang (SIGSTOP)", "invalid-json": "invalid JSON + crash"}


def ensure_supervisor(on_step: Callable[[str], None]) -> Path:
    """The venv's bin folder holding supervisord and supervisorctl, installing them on first use."""
    venv = paths.cache_dir() / f"supervisor-{SUPERVISOR_VERSION}"
    bin_ = venv / "bin"
    if (bin_ / "supervisord").exists():
        return bin_
    on_step(f"installing supervisor=={SUPERVISOR_VERSION} into {venv} (once)")
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=300)
        subprocess.run(
            [str(bin_ / "pip"), "install", "--disable-pip-version-check", f"supervisor=={SUPERVISOR_VERSION}"],
            check=True,
            capture_output=True,
            timeout=600,
        )
    except (OSError, subprocess.SubprocessError) as e:
        raise EnvironmentMissing(f"supervisor {SUPERVISOR_VERSION} could not be installed into {venv}: {e}") from None
    return bin_


def supervisord_conf(rig: SandboxRig, folder: Path) -> str:
    sb = rig.sb
    command = " ".join(rig.install.command("gateway", "run", "--bind", "loopback", "--port", str(rig.port)))
    env = {"HOME": str(sb.home), "OPENCLAW_SUPERVISOR_MODE": "external", "OPENCLAW_GATEWAY_TOKEN": sb.token}
    return "\n".join(
        [
            "[unix_http_server]",
            f"file={folder / 'supervisor.sock'}",
            "[supervisord]",
            f"logfile={folder / 'supervisord.log'}",
            f"pidfile={folder / 'supervisord.pid'}",
            "nodaemon=true",
            "[rpcinterface:supervisor]",
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
            "[supervisorctl]",
            f"serverurl=unix://{folder / 'supervisor.sock'}",
            "[program:gateway]",
            f"command={command}",
            f"directory={sb.home}",
            "environment=" + ",".join(f'{k}="{v}"' for k, v in env.items()),
            "autostart=true",
            "autorestart=true",
            f"startsecs={STARTSECS}",
            f"startretries={STARTRETRIES}",
            "stopasgroup=true",
            "killasgroup=true",
            "stopwaitsecs=30",
            "redirect_stderr=true",
            f"stdout_logfile={folder / 'gateway.log'}",
            "",
        ]
    )


class Supervisord:
    def __init__(self, bin_: Path, folder: Path, conf: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.conf = folder / "supervisord.conf"
        self.conf.write_text(conf)
        self.log = folder / "supervisord.log"
        self.bin = bin_
        self.proc = subprocess.Popen(
            [str(bin_ / "supervisord"), "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def ctl(self, *args: str) -> str:
        r = subprocess.run(
            [str(self.bin / "supervisorctl"), "-c", str(self.conf), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        return r.stdout.strip()

    def state(self) -> str:
        words = self.ctl("status", "gateway").split()
        return words[1] if len(words) > 1 else "?"

    def pid(self) -> int | None:
        out = self.ctl("pid", "gateway")
        return int(out) if out.isdigit() and out != "0" else None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # supervisord stops its programs (as a group) before it exits
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def spawned_after(log: str, after: float) -> float | None:
    """The first "spawned: 'gateway'" in supervisord's log at or after `after` (epoch), as epoch seconds."""
    for line in log.splitlines():
        if "spawned: 'gateway'" not in line:
            continue
        try:
            t = time.mktime(time.strptime(line[:19], "%Y-%m-%d %H:%M:%S")) + int(line[20:23]) / 1000
        except ValueError:
            continue
        if t >= after - 0.001:
            return t
    return None


def _wait_healthy(sup: Supervisord, port: int, timeout: float, not_pid: int | None = None) -> float | None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        pid = sup.pid()
        if pid and pid != not_pid and gw.health(port, timeout=1.0):
            return time.monotonic() - t0
        time.sleep(0.1)
    return None


def _measure(sup: Supervisord, rig: SandboxRig, fault: str) -> dict[str, Any]:
    if _wait_healthy(sup, rig.port, HEAL_WATCH_S) is None:
        return {"recover_s": None, "note": f"not healthy to begin with ({sup.state()})"}
    time.sleep(STARTSECS + 1)  # RUNNING, past startsecs
    pid = sup.pid()
    if pid is None:
        return {"recover_s": None, "note": f"no pid ({sup.state()})"}
    if fault == "invalid-json":
        rig.openclaw_json.write_text(rig.openclaw_json.read_text() + ",,,{{")
    t0, wall0 = time.monotonic(), time.time()
    os.kill(pid, signal.SIGSTOP if fault == "hang" else signal.SIGKILL)
    watch = HANG_WATCH_S if fault == "hang" else HEAL_WATCH_S
    took, state, checked = None, "?", 0.0
    while time.monotonic() - t0 < watch:
        if gw.health(rig.port, timeout=0.5):
            t_ok = time.monotonic()  # before supervisorctl (a whole Python process) is asked which pid answered
            if sup.pid() not in (None, pid):
                took = t_ok - t0
                break
        if time.monotonic() - checked > 2.0:  # supervisorctl is a whole Python process: ask every 2 s only
            checked = time.monotonic()
            state = sup.state()
            if state == "FATAL":
                break
        time.sleep(0.1)
    if fault == "hang":
        os.kill(pid, signal.SIGCONT)
    note = "" if took is not None else f"{state} after {time.monotonic() - t0:.0f} s"
    spawned = spawned_after(sup.log.read_text(errors="replace"), wall0) if sup.log.exists() else None
    return {
        "recover_s": None if took is None else round(took, 2),
        "relaunch_s": None if spawned is None else round(spawned - wall0, 3),
        "note": note,
    }


def run_compare(rig: SandboxRig, rows: list[dict[str, Any]], on_step: Callable[[str], None]) -> dict[str, Any]:
    """supervisord on the drill's sandbox (clawmedic and its gateway stopped first) for the three faults; each
    beside clawmedic's row of the same run, with the ratio of recover times."""
    bin_ = ensure_supervisor(on_step)
    rig.stop_all()
    good = rig.openclaw_json.read_text()
    folder = rig.root / "supervisord"
    sup = Supervisord(bin_, folder, supervisord_conf(rig, folder))
    out = []
    try:
        for fault, title in TITLES.items():
            on_step(f"supervisord: {title}")
            if sup.state() == "FATAL":
                sup.ctl("start", "gateway")
            m = _measure(sup, rig, fault)
            rig.openclaw_json.write_text(good)
            ours = next((r for r in rows if r["fault"] == fault), None)
            theirs_s, ours_s = m["recover_s"], (ours or {}).get("recover_s")
            out.append(
                {
                    "fault": fault,
                    "title": title,
                    "supervisord": f"{theirs_s:.2f} s" if theirs_s is not None else f"not healed ({m['note']})",
                    "clawmedic": "not run" if ours is None else (f"{ours_s:.2f} s" if ours["ok"] else "missed"),
                    "ratio": f"{ours_s / theirs_s:.3f}" if theirs_s and ours_s else "—",
                    "supervisord_recover_s": theirs_s,
                    "clawmedic_recover_s": ours_s,
                    "supervisord_relaunch_s": m["relaunch_s"],
                    "clawmedic_relaunch_s": (ours or {}).get("relaunch_s"),
                }
            )
    finally:
        sup.stop()
        rig.openclaw_json.write_text(good)
        with contextlib.suppress(Exception):
            gw.stop_gateway(rig.sb)
    return {"peer": f"supervisord {SUPERVISOR_VERSION}", "rows": out}
