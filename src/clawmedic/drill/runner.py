"""Runs the drill's fault table against a sandboxed real gateway under a real `clawmedic run` daemon process.

The sandbox runs from a private hard-link copy of the pinned install (so a wiped dependency or a removed entry file
never touches the shared one), with short limits so a row takes seconds of clawmedic's own time, not minutes.
After every row the invariants are checked; a row that misses its expectation is followed by a repair of what the
drill broke, so the next row starts from a healthy gateway.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import json5
import psutil

from clawmedic import defaults, deps, paths
from clawmedic.drill import invariants as inv
from clawmedic.drill.faults import (
    HEAL_TIMEOUT_S,
    OPENED,
    QUIET_WINDOW_S,
    RETURN_TIMEOUT_S,
    Expect,
    Fault,
    expectation_met,
    is_repair,
)
from clawmedic.errors import EnvironmentMissing
from clawmedic.sandbox import gateway as gw
from clawmedic.sandbox.install import Install
from clawmedic.sandbox.model_standin import Mode, ModelStandin
from clawmedic.store.events import read_events
from clawmedic.store.incidents import IncidentStore

DRILL_LIMITS: dict[str, float] = {
    "probation_s": 3.0,  # a healed gateway counts as healed 3 s after it answers (the default 30 s is for real use)
    "stable_reset_s": 5.0,  # each row is a fresh fault: its first restart is immediate
    "startup_timeout_s": 150.0,  # boots are slow on a loaded machine
    "known_good_after_s": 2.0,  # the config is known-good soon after the first healthy boot
    "crash_loop_failures": 3,  # flapping gives up after 3 failures rather than 5
    "backoff_initial_s": 2.0,  # ... and the backoff between them stays short
    "backoff_max_s": 8.0,
    "retry_after_gave_up_s": 0.0,  # after giving up, no retry: "does not loop" is then plain to see
}
READY_TIMEOUT_S = 240.0  # the gateway boots in 7-25 s; far longer on a loaded 2-core machine
TOKEN_ENV = "DRILL_PLANTED_TOKEN"  # noqa: S105 - the name of the planted env var, not a secret
PRIMARY_MODEL, FALLBACK_MODEL = "alpha/alpha-model", "beta/beta-model"  # both served by the loopback stand-in
# the gateway checks read the gateway's log and cron every 15 s in the drill (60 s by default: a CLI run each)
MODEL_CHECK_INTERVAL_S = 15.0
CHAT_TIMEOUT_S = 300.0  # one turn through the gateway: seconds idle, minutes on a loaded machine


@dataclass
class Row:
    fault: str
    title: str
    expect: str
    observed: str = "not run"
    met: bool = False
    detect_s: float | None = None
    recover_s: float | None = None
    relaunch_s: float | None = None  # fault → the new gateway spawned (the reaction, without the boot)
    back_s: float | None = None  # a fault that ends by itself: its end → clawmedic undid its workaround
    restarts: int = 0
    diagnosis: str = ""
    incident: int | None = None
    problems: list[str] = field(default_factory=list)
    invariants: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.met and not self.problems and not any(self.invariants.values())

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def _first(events: list[dict[str, Any]], pred: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
    return next((e for e in events if pred(e)), None)


REPAIRS = {  # events that name what clawmedic repaired before the restart
    "config_restored": "known-good config restored",
    "deps_restored": "dependencies restored",
    "state_db_moved_aside": "state database moved aside",
    "port_conflict": "port held by another process",
    "model_fallback": "default model moved to the fallback",
}


def measure(row: Row, events: list[dict[str, Any]], t_fault: float, healed_by: str = "state") -> None:
    """Detect and recover times (from the fault), restarts and the incident, from the daemon's events."""
    after = [e for e in events if e["ts"] >= t_fault]
    opened = _first(after, lambda e: e["kind"] in (*OPENED, "escalated"))
    live = _first(after, lambda e: e["kind"] == "live_again") if healed_by == "state" else None
    healthy = _first(after, lambda e: is_repair(e, healed_by))
    row.restarts = sum(1 for e in after if e["kind"] == "launched")
    launched = _first(after, lambda e: e["kind"] == "launched")
    if launched is not None:
        row.relaunch_s = round(float(launched.get("at") or launched["ts"]) - t_fault, 3)
    if opened is not None:
        row.detect_s = round(opened["ts"] - t_fault, 3)
        row.incident = opened.get("incident")
        row.diagnosis = str(opened.get("reason") or opened.get("cause") or "")
    if live is not None:
        row.recover_s = round(float(live.get("at") or live["ts"]) - t_fault, 2)
    elif healthy is not None:
        row.recover_s = round(healthy["ts"] - t_fault, 2)


class SandboxRig:
    """The `Rig` of the fault table, for real: a sandbox, its gateway and a `clawmedic run` process."""

    def __init__(self, root: Path, install: Install) -> None:
        self.root = root
        self.aside = root / "aside"
        self.aside.mkdir(parents=True, exist_ok=True)
        private = root / "install"
        if not private.exists():
            deps.link_tree(install.root, private)
        self.install = Install(
            root=private,
            node=private / install.node.relative_to(install.root),
            openclaw_entry=private / install.openclaw_entry.relative_to(install.root),
            node_version=install.node_version,
            openclaw_version=install.openclaw_version,
        )
        self.sb = gw.create(root / "sb", self.install, limits=DRILL_LIMITS, llm={"backend": "off"})
        self.primary_model, self.fallback_model = PRIMARY_MODEL, FALLBACK_MODEL
        ids = [m.split("/", 1)[1] for m in (PRIMARY_MODEL, FALLBACK_MODEL)]
        self.models = ModelStandin(ids, retry_after=1).start()
        self.chats: list[subprocess.Popen[bytes]] = []
        gw.use_models(
            self.sb,
            self.models.base_url,
            PRIMARY_MODEL,
            [FALLBACK_MODEL],
            probe_interval_s=defaults.MODEL_PROBE_MIN_INTERVAL_S,
            check_interval_s=MODEL_CHECK_INTERVAL_S,
        )
        self.token = "drl_" + secrets.token_hex(20)
        text = self.sb.config_path.read_text()
        anchor = 'OPENCLAW_GATEWAY_TOKEN = "${OPENCLAW_GATEWAY_TOKEN}"\n'
        self.sb.config_path.write_text(text.replace(anchor, anchor + f'{TOKEN_ENV} = "{self.token}"\n'))
        self.good_config = self.sb.openclaw_json.read_text()
        self.openclaw_json = self.sb.openclaw_json
        self.state_db = self.sb.home / ".openclaw" / "state" / "openclaw.sqlite"
        self.node_modules = self.install.node_modules
        self.entry = self.install.openclaw_entry
        self.port = self.sb.port
        self.crash_loop_failures = int(DRILL_LIMITS["crash_loop_failures"])
        self.daemon_log = root / "daemon.log"
        self.daemon: subprocess.Popen[bytes] | None = None
        self.squatter: subprocess.Popen[bytes] | None = None
        self.squatter_mark: inv.ProcessMark | None = None
        self.squatter_pid: int | None = None
        self.canary = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(86400)"])
        self.canary_mark = inv.ProcessMark.of(self.canary.pid, "the drill's canary process")

    # --- the Rig protocol ---------------------------------------------------------------------------------

    def events(self, after: float) -> list[dict[str, Any]]:
        return [e for e in read_events(paths.events_path(self.sb.state_dir)) if e["ts"] >= after]

    def wait_event(self, kind: str, after: float, timeout: float, **match: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in self.events(after):
                if e["kind"] == kind and all(e.get(k) == v for k, v in match.items()):
                    return e
            time.sleep(0.1)
        raise EnvironmentMissing(f"no {kind} event within {timeout:g} s")

    def status(self) -> dict[str, Any]:
        try:
            data = json.loads(paths.status_path(self.sb.state_dir).read_text())
            return dict(data["targets"][gw.TARGET])
        except (OSError, ValueError, KeyError, TypeError):
            return {}

    def gateway_pid(self) -> int:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pid = self.status().get("pid")
            if pid:
                return int(pid)
            time.sleep(0.1)
        raise EnvironmentMissing("the status file names no gateway pid")

    def signal_gateway(self, sig: signal.Signals) -> int:
        pid = self.gateway_pid()
        os.kill(pid, sig)
        return pid

    def wait_gone(self, pid: int) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                    return
            except psutil.Error:
                return
            time.sleep(0.05)

    def start_daemon(self) -> None:
        with self.daemon_log.open("ab") as out:
            self.daemon = subprocess.Popen(
                [sys.executable, "-m", "clawmedic", "run", "--config", str(self.sb.config_path), "--json-logs"],
                stdout=out,
                stderr=out,
                stdin=subprocess.DEVNULL,
            )

    def stop_daemon(self) -> None:
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.terminate()
            try:
                self.daemon.wait(30)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait(10)
        self.daemon = None

    def kill_daemon(self) -> None:
        if self.daemon is not None:
            self.daemon.kill()
            self.daemon.wait(10)
        self.daemon = None

    def stop_all(self) -> None:
        self.stop_daemon()
        handle = self.sb.launcher.adopt()
        if handle is not None:
            with contextlib.suppress(OSError):
                os.kill(handle.pid, signal.SIGCONT)
        gw.stop_gateway(self.sb)

    def resume(self) -> None:
        """What a human does once an escalation is dealt with: `clawmedic resume` (past failures forgotten)."""
        subprocess.run(
            [sys.executable, "-m", "clawmedic", "resume", "--config", str(self.sb.config_path)],
            capture_output=True,
            timeout=120,
            check=False,
        )

    def restart_daemon(self) -> None:
        self.stop_daemon()
        self.start_daemon()

    def start_squatter(self) -> int:
        self.squatter = subprocess.Popen(
            [sys.executable, "-m", "http.server", str(self.port), "--bind", "127.0.0.1"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    break
            time.sleep(0.1)
        self.squatter_mark = inv.ProcessMark.of(self.squatter.pid, "the port squatter")
        self.squatter_pid = self.squatter.pid
        return self.squatter.pid

    def squatter_intact(self) -> bool:
        return self.squatter_mark is not None and self.squatter_mark.intact()

    def stop_squatter(self) -> None:
        if self.squatter is not None:
            self.squatter.terminate()
            self.squatter.wait(10)
        self.squatter = None

    def sleep(self, s: float) -> None:
        time.sleep(s)

    def set_model(self, mode: str) -> None:
        if mode not in ("ok", "429", "401", "hang"):
            raise ValueError(f"unknown model mode {mode!r}")
        self.models.set(self.primary_model.split("/", 1)[1], cast(Mode, mode))

    def _openclaw_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCLAW_")}  # never the user's gateway
        return {**env, "HOME": str(self.sb.home), "OPENCLAW_GATEWAY_TOKEN": self.sb.token}

    def start_chat(self, session: str) -> None:
        args = ("agent", "--session-key", session, "--message", "ping", "--json", "--timeout", "40")
        self.chats.append(
            subprocess.Popen(
                self.install.command(*args),
                env=self._openclaw_env(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                stdin=subprocess.DEVNULL,
            )
        )

    def stop_chats(self) -> None:
        for proc in self.chats:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
        self.chats = []

    def chat(self, session: str) -> list[str]:
        before = dict(self.models.requests)
        try:
            r = subprocess.run(
                self.install.command("agent", "--session-key", session, "--message", "ping", "--json"),
                env=self._openclaw_env(),
                capture_output=True,
                text=True,
                timeout=CHAT_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return []
        if r.returncode != 0 or "pong" not in r.stdout:
            return []
        return sorted(m for m, n in self.models.requests.items() if n > before.get(m, 0))

    def default_model(self) -> str | None:
        try:
            model = json5.loads(self.openclaw_json.read_text())["agents"]["defaults"]["model"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        primary = model.get("primary") if isinstance(model, dict) else model
        return primary if isinstance(primary, str) else None

    # --- the drill's own steps --------------------------------------------------------------------------------

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> float:
        """Wait for a healthy gateway and the stable period that forgets earlier failures; the seconds waited."""
        t0 = time.monotonic()
        resumed = False
        while time.monotonic() - t0 < timeout:
            if self.daemon is None or self.daemon.poll() is not None:
                self.start_daemon()
            st = self.status()
            if st.get("state") == "gave_up" and not resumed:  # an escalation of the previous row, dealt with
                self.resume()
                resumed = True
            if st.get("state") == "healthy" and not st.get("incident") and gw.health(self.port):
                time.sleep(DRILL_LIMITS["stable_reset_s"] + 1.0)
                if self.status().get("state") == "healthy":
                    return time.monotonic() - t0
            time.sleep(0.2)
        raise EnvironmentMissing(f"the sandboxed gateway was not healthy within {timeout:g} s")

    def plant_token(self) -> None:
        """The planted secret shows up in the gateway's own log and output, as a leaking gateway would print it."""
        line = json.dumps({"time": time.time(), "level": "error", "msg": f"auth failed, token={self.token}"})
        with self.sb.log_file.open("a") as f:
            f.write(line + "\n")
        out = self.sb.state_dir / "targets" / gw.TARGET / "output.log"
        if out.exists():
            with out.open("a") as f:
                f.write(f"Error: upstream refused token {self.token}\n")

    def repair_leftovers(self) -> list[str]:
        """After a missed row: put back what the drill took away, so the next row starts from a working sandbox."""
        done = []
        if not (self.node_modules / "ws").exists():
            wiped = sorted(self.aside.glob("ws-wiped-*"))
            if wiped:
                wiped[-1].rename(self.node_modules / "ws")
                done.append("ws put back")
        if not self.entry.exists():
            removed = sorted(self.aside.glob("entry-removed-*"))
            if removed:
                removed[-1].rename(self.entry)
                done.append("entry file put back")
        try:
            json5.loads(self.openclaw_json.read_text())
        except (OSError, ValueError):
            if self.openclaw_json.exists():
                self.openclaw_json.rename(self.openclaw_json.with_name(f"openclaw.json.drill-{time.time_ns()}"))
            self.openclaw_json.write_text(self.good_config)
            done.append("openclaw.json rewritten")
        self.stop_chats()
        self.set_model("ok")
        self.stop_squatter()
        self.stop_all()
        return done

    def invariants(self, before: set[str]) -> dict[str, list[str]]:
        leaks = inv.token_hits(self.sb.state_dir, self.token)
        if self.daemon_log.exists() and self.token in self.daemon_log.read_text(errors="replace"):
            leaks.append(self.daemon_log.name)
        return {
            "deleted": inv.deleted_files(before, inv.listing(self.sb.home)),
            "signalled": inv.foreign_signalled([self.canary_mark]),
            "token": leaks,
        }

    def diagnosis(self, incident: int | None) -> str:
        if incident is None:
            return ""
        store = IncidentStore(paths.incidents_path(self.sb.state_dir))
        try:
            inc = store.get(incident)
        finally:
            store.close()
        if inc is None:
            return ""
        rules = [
            str(f.get("rule"))
            for e in inc.timeline
            if e.kind == "diagnosis"
            for f in (e.detail or {}).get("findings", [])
        ]
        return ", ".join(dict.fromkeys(rules)) or inc.reason

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop_chats()
        with contextlib.suppress(Exception):
            self.stop_squatter()
        with contextlib.suppress(Exception):
            self.stop_all()
        self.canary.kill()
        self.canary.wait(10)
        self.models.stop()
        for pid in gw.pids_using(self.root):
            with contextlib.suppress(psutil.Error):
                p = psutil.Process(pid)
                p.send_signal(signal.SIGCONT)
                p.kill()


def run_fault(rig: SandboxRig, fault: Fault) -> Row:
    row = Row(fault.name, fault.title, fault.expect.value)
    before = inv.listing(rig.sb.home)
    rig.plant_token()
    t_start = time.time()
    try:
        t_fault = fault.inject(rig)
        if fault.expect is Expect.UNTOUCHED:
            time.sleep(QUIET_WINDOW_S)
        elif fault.expect is Expect.HEALED:
            match = {"new": "healthy"} if fault.healed_by == "state" else {}
            rig.wait_event(fault.healed_by, t_fault, HEAL_TIMEOUT_S, **match)
        else:
            _wait_any(rig, ("gave_up", "escalated"), t_fault)
    except EnvironmentMissing as e:
        row.problems.append(str(e))
        t_fault = t_start
    events = rig.events(t_start)
    row.met, row.observed = expectation_met(fault.expect, events, gw.health(rig.port), t_fault, fault.healed_by)
    measure(row, events, t_fault, fault.healed_by)
    with contextlib.suppress(Exception):
        row.diagnosis = rig.diagnosis(row.incident) or row.diagnosis
    repairs = [REPAIRS[e["kind"]] for e in events if e["ts"] >= t_fault and e["kind"] in REPAIRS]
    row.diagnosis = "; ".join(dict.fromkeys([row.diagnosis, *repairs])).strip("; ")
    row.problems += fault.verify(rig, rig.events(t_start))
    if fault.returns is not None and row.met:
        t_end = fault.returns.end(rig)
        try:
            back = rig.wait_event(fault.returns.event, t_end, RETURN_TIMEOUT_S)
            row.back_s = round(back["ts"] - t_end, 2)
            row.diagnosis += f"; {fault.returns.back} {row.back_s:.1f} s after {fault.returns.what}"
        except EnvironmentMissing as e:
            row.problems.append(f"{fault.returns.what}, but {e}")
        row.problems += fault.returns.verify(rig, rig.events(t_end))
    if fault.cleanup is not None:
        fault.cleanup(rig)
    row.invariants = rig.invariants(before)
    return row


def _wait_any(rig: SandboxRig, kinds: tuple[str, ...], after: float) -> None:
    deadline = time.monotonic() + HEAL_TIMEOUT_S
    while time.monotonic() < deadline:
        if any(e["kind"] in kinds for e in rig.events(after)):
            return
        time.sleep(0.2)
    raise EnvironmentMissing(f"no {' or '.join(kinds)} event within {HEAL_TIMEOUT_S:g} s")


def machine() -> dict[str, Any]:
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "load": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
    }


@contextlib.contextmanager
def drill_root(dir_: Path | None) -> Iterator[Path]:
    """`dir_`, or a fresh folder of the drill's own under the state folder, removed afterwards."""
    if dir_ is not None:
        dir_.mkdir(parents=True, exist_ok=True)
        yield dir_
        return
    base = paths.default_state_dir() / "sandbox"
    base.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="drill-", dir=base))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)  # the drill's own sandbox, nothing of the user's


def run_drill(
    faults: list[Fault],
    install: Install,
    dir_: Path | None,
    on_row: Callable[[int, Row], None],
    on_step: Callable[[str], None],
    compare: bool = False,
) -> dict[str, Any]:
    """Run `faults` in order on one sandbox, then (`compare`) the peer's rows on it; returns {"machine",
    "openclaw", "boot_s", "rows", "ok", "compare"}."""
    rows: list[Row] = []
    peer: dict[str, Any] | None = None
    with drill_root(dir_) as root:
        on_step(f"preparing the sandbox in {root}")
        rig = SandboxRig(root, install)
        try:
            on_step("booting the sandboxed gateway under clawmedic")
            rig.start_daemon()
            boot_s = rig.wait_ready()
            rig.wait_event("deps_recorded", 0, 120)
            rig.wait_event("known_good", 0, 60)
            for i, fault in enumerate(faults):
                on_step(f"{fault.title}: {fault.what}")
                try:
                    rig.wait_ready()
                    row = run_fault(rig, fault)
                except EnvironmentMissing as e:
                    row = Row(fault.name, fault.title, fault.expect.value, observed="not run", problems=[str(e)])
                if not row.ok:
                    on_step(f"{fault.title} missed: repairing the sandbox for the next fault")
                    rig.repair_leftovers()
                rows.append(row)
                on_row(i, row)
            if compare:
                from clawmedic.drill.compare import run_compare

                peer = run_compare(rig, [r.to_dict() for r in rows], on_step)
        finally:
            rig.close()
    return {
        "machine": machine(),
        "openclaw": install.openclaw_version,
        "node": install.node_version,
        "boot_s": round(boot_s, 1) if rows else None,
        "rows": [r.to_dict() for r in rows],
        "ok": bool(rows) and all(r.ok for r in rows),
        "compare": peer,
    }
