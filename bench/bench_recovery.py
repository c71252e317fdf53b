"""Recovery benchmark: how fast clawmedic notices and heals a real, sandboxed OpenClaw gateway, and what it costs idle.

Run it from the repository root (it takes several minutes; nothing leaves loopback)::

    .venv/bin/python bench/bench_recovery.py [--rounds N] [--boots N] [--idle-seconds S] [--json] [--keep]

Phases, all on one private sandbox in a fresh temporary folder (never the user's default sandbox):

1. boot      the gateway alone, spawned and stopped `--boots` times on a reused HOME: spawn → first /health 200.
2. kill -9   an in-process `Daemon` supervises the gateway; each round starts healthy with the failure history
             forgotten, SIGKILLs the gateway and reads clawmedic's own events: SIGKILL → `exited` (detection),
             SIGKILL → `live_again` (recovery), `launched` → `live_again` (the boot of that very relaunch).
3. hang      same daemon; SIGSTOP at a random phase of the 5 s probe cycle: SIGSTOP → incident opened, → live again.
4. idle      `clawmedic run --config <sandbox config>` as its own process with default limits and a healthy
             gateway; its CPU (% of one core) and RSS sampled with psutil, the gateway excluded.

Every process the bench starts (gateways, the daemon) is stopped by PID at the end, also on Ctrl-C or an error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import platform
import random
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import httpx
import psutil

import clawmedic
from clawmedic import defaults
from clawmedic.config import LoadedConfig, load_config
from clawmedic.daemon import Daemon, events_path, incidents_path, status_path
from clawmedic.ladder.states import State
from clawmedic.logs import setup_logging
from clawmedic.sandbox import gateway as gw
from clawmedic.sandbox.install import Install, ensure_install, find_install
from clawmedic.store.events import read_events
from clawmedic.store.incidents import IncidentStore
from clawmedic.supervisor import TargetSupervisor

# Limits of the recovery phases, as in `clawmedic demo`: each fault is a fresh one (its restart is immediate).
BENCH_PROBATION_S = 5.0
BENCH_STABLE_RESET_S = 5.0
ROUND_TIMEOUT_S = 240.0  # a fault not healed by then is reported as not healed
BOOT_POLL_S = 0.1  # standalone boot: /health is polled this often (the daemon polls every STARTUP_POLL_S)
IDLE_SETTLE_S = 5.0  # after the daemon reports healthy, before sampling starts
IDLE_SAMPLE_S = 1.0
DETECT_TARGET_S = 0.1  # kill -9: SIGKILL → exited
RECOVER_MARGIN_S = 1.0  # kill -9: recovery within the gateway's own boot time + this
RSS_TARGET_MB = 60.0
CPU_TARGET_PCT = 1.0
CONTENDED_PCT = 10.0  # other processes' share of the machine above which a phase's figures are flagged contended


class BenchError(RuntimeError):
    """The bench could not go on (a boot that failed, the daemon crashed)."""


class NotHealed(BenchError):
    """One fault was not healed in time (or clawmedic escalated): recorded in its round, the bench goes on."""


# --- bookkeeping of the processes we start --------------------------------------------------------------


class Tracker:
    """Every process the bench starts, by PID and start time (so a reused PID is never signalled)."""

    def __init__(self) -> None:
        self._procs: dict[int, float] = {}

    def add(self, pid: int | None) -> None:
        if pid is None or pid in self._procs:
            return
        with contextlib.suppress(psutil.Error):
            self._procs[pid] = psutil.Process(pid).create_time()

    def alive(self) -> list[psutil.Process]:
        out = []
        for pid, ct in self._procs.items():
            with contextlib.suppress(psutil.Error):
                p = psutil.Process(pid)
                if abs(p.create_time() - ct) < 1.0 and p.status() != psutil.STATUS_ZOMBIE:
                    out.append(p)
        return out

    def stop_all(self, timeout_s: float = 15.0) -> list[int]:
        """SIGCONT + SIGTERM each live tracked process and its descendants, SIGKILL what is left after a while."""
        procs: list[psutil.Process] = []
        for p in self.alive():
            with contextlib.suppress(psutil.Error):
                procs += [p, *p.children(recursive=True)]
        for p in procs:
            with contextlib.suppress(psutil.Error):
                p.send_signal(signal.SIGCONT)  # a SIGSTOPped gateway could not act on SIGTERM
                p.terminate()
        _, left = psutil.wait_procs(procs, timeout=timeout_s)
        for p in left:
            with contextlib.suppress(psutil.Error):
                p.kill()
        psutil.wait_procs(left, timeout=5)
        return [p.pid for p in procs]


class ExitWatch:
    """Stamps the moment each process ends, from a thread blocked on pidfds: independent of clawmedic's loop.

    It tells the kernel's share of a SIGKILL (tearing down a large Node process) from clawmedic's share.
    """

    def __init__(self, pids: list[int]) -> None:
        self.ended: dict[int, float] = {}
        self._fds: dict[int, int] = {}
        for pid in pids:
            with contextlib.suppress(OSError):
                self._fds[os.pidfd_open(pid)] = pid
        self._thread = threading.Thread(target=self._run, name="exit-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while self._fds:
            ready, _, _ = select.select(list(self._fds), [], [], 0.5)
            now = time.time()
            for fd in ready:
                self.ended[self._fds.pop(fd)] = now
                os.close(fd)

    def close(self, timeout: float) -> None:
        self._thread.join(timeout)
        if not self._thread.is_alive():
            return
        for fd in list(self._fds):  # still running after `timeout`: stop watching them
            self._fds.pop(fd, None)
        self._thread.join(1.0)


class _DropClosedLoopWarning(logging.Filter):
    """`gw.start_gateway` spawns through a short-lived `asyncio.run`; when that child later exits, asyncio's
    child watcher logs "Loop … that handles pid … is closed". Harmless for the bench; counted, not printed."""

    count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if "that handles pid" in record.getMessage():
            _DropClosedLoopWarning.count += 1
            return False
        return True


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- machine, versions, contention ----------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }


def versions(inst: Install) -> dict[str, Any]:
    node = subprocess.run([str(inst.node), "--version"], capture_output=True, text=True, timeout=30, check=False)
    pkg: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        pkg = json.loads((inst.openclaw_entry.parent / "package.json").read_text())
    return {
        "openclaw": str(pkg.get("version") or inst.openclaw_version),
        "node": node.stdout.strip() or f"v{inst.node_version}",
        "clawmedic": getattr(clawmedic, "__version__", None) or _dist_version(),
        "git": _git_revision(),
    }


def _git_revision() -> str | None:
    """The commit of the clawmedic source under test, "+dirty" when its src/ has uncommitted changes."""
    src = Path(clawmedic.__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "-C", str(src), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "-C", str(src), "status", "--porcelain", "--", "."], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if sha.returncode != 0:
        return None
    return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def _dist_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("clawmedic")
    except PackageNotFoundError:
        return "?"


def foreign_gateways(root: Path) -> list[int]:
    """OpenClaw processes on this machine that are not the bench's (another engineer's tests, say).

    The gateway renames itself (process.title), so its command line no longer shows the sandbox folder: the
    bench's own gateways are told apart by their HOME, which is inside the bench's folder.
    """
    out = []
    for p in psutil.process_iter(["pid", "name", "cmdline"]):
        cmd = " ".join(p.info.get("cmdline") or [])
        if "openclaw" not in f"{p.info.get('name')} {cmd}" or p.pid == os.getpid():
            continue
        home = ""
        with contextlib.suppress(psutil.Error):
            home = p.environ().get("HOME", "")
        if str(root) not in cmd and not home.startswith(str(root)):
            out.append(p.pid)
    return out


@dataclass
class HostLoad:
    """Host CPU use over a phase, to tell a contended run from a quiet one (percentages of the whole machine)."""

    name: str
    seconds: float
    busy_pct: float  # all processes (user + system + irq; steal excluded)
    ours_pct: float  # the bench's processes: itself (with the in-process daemon), its gateways, its daemon
    others_pct: float  # busy − ours: everyone else on the machine
    steal_pct: float  # time the hypervisor gave our vCPUs to someone else
    loadavg_end: float
    foreign_gateways: int


class LoadMeter:
    """Samples the CPU time of the bench's own processes from a thread; the rest of the busy time is others'."""

    INTERVAL_S = 2.0
    SETTLE_S = INTERVAL_S + 0.2

    def __init__(self, root: Path) -> None:
        self.root = root
        self.phases: list[HostLoad] = []
        self._ours: dict[tuple[int, float], bool] = {}
        self._ours_cpu_s = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="load-meter", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5.0)

    def _is_ours(self, p: psutil.Process, key: tuple[int, float]) -> bool:
        if key not in self._ours:
            ours = p.pid == os.getpid()
            with contextlib.suppress(psutil.Error):
                ours = ours or str(self.root) in " ".join(p.cmdline())
                ours = ours or p.environ().get("HOME", "").startswith(str(self.root))
            self._ours[key] = ours
        return self._ours[key]

    def _sample(self) -> dict[tuple[int, float], float]:
        out = {}
        for p in psutil.process_iter(["create_time", "cpu_times"]):
            ct, created = p.info.get("cpu_times"), p.info.get("create_time")
            if ct is not None and created is not None and self._is_ours(p, (p.pid, created)):
                out[(p.pid, float(created))] = ct.user + ct.system
        return out

    def _run(self) -> None:
        prev, t_prev = self._sample(), time.time()
        while not self._stop.wait(self.INTERVAL_S):
            cur, t_cur = self._sample(), time.time()
            delta = 0.0
            for key, cpu in cur.items():
                if key in prev:
                    delta += cpu - prev[key]
                elif key[1] >= t_prev - 0.5:  # born since the last sample: all its CPU is new
                    delta += cpu
            with self._lock:
                self._ours_cpu_s += max(0.0, delta)
            prev, t_prev = cur, t_cur

    def ours_cpu_s(self) -> float:
        with self._lock:
            return self._ours_cpu_s

    @contextlib.contextmanager
    def phase(self, name: str, settle: bool = True) -> Iterator[None]:
        """Measure the block; `settle=False` when the block itself ends with `SETTLE_S` of waiting (async code)."""
        t0, o0 = psutil.cpu_times(), self.ours_cpu_s()
        foreign = len(foreign_gateways(self.root))
        w0 = time.monotonic()
        try:
            yield
        finally:
            if settle:
                time.sleep(self.SETTLE_S)  # let the sampler account for the phase's last seconds
            t1, o1, w1 = psutil.cpu_times(), self.ours_cpu_s(), time.monotonic()

            def d(f: str) -> float:
                return float(getattr(t1, f, 0.0) - getattr(t0, f, 0.0))

            total = sum(t1) - sum(t0) - d("guest") - d("guest_nice")  # guest time is already in user
            busy = total - d("idle") - d("iowait") - d("steal")
            ours = o1 - o0
            pct = 100.0 / total if total > 0 else 0.0
            foreign = max(foreign, len(foreign_gateways(self.root)))
            self.phases.append(
                HostLoad(
                    name,
                    round(w1 - w0, 1),
                    round(busy * pct, 1),
                    round(ours * pct, 1),
                    round(max(0.0, busy - ours) * pct, 1),
                    round(d("steal") * pct, 1),
                    round(os.getloadavg()[0], 2),
                    foreign,
                )
            )


# --- 1. standalone boot ----------------------------------------------------------------------------------------


def boot_once(sb: gw.Sandbox, tracker: Tracker, client: httpx.Client) -> float:
    """Spawn the gateway alone, return spawn → first /health 200 {"ok":true} in seconds, then stop it."""
    if sb.launcher.adopt() is not None:
        raise BenchError("a gateway of the bench sandbox is already running")
    url = f"http://127.0.0.1:{sb.port}/health"
    t0 = time.time()
    handle = gw.start_gateway(sb)
    tracker.add(handle.pid)
    try:
        while time.time() - t0 < gw.BOOT_TIMEOUT_S:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                r = client.get(url, timeout=1.0)
                if r.status_code == 200 and r.json().get("ok") is True:
                    return time.time() - t0
            if not psutil.pid_exists(handle.pid) or psutil.Process(handle.pid).status() == psutil.STATUS_ZOMBIE:
                raise BenchError(f"the gateway (pid {handle.pid}) exited while booting; see {sb.launcher.log_path}")
            time.sleep(BOOT_POLL_S)
        raise BenchError(f"the gateway did not answer /health within {gw.BOOT_TIMEOUT_S:g} s")
    finally:
        gw.stop_gateway(sb)


def measure_boots(sb: gw.Sandbox, tracker: Tracker, boots: int) -> dict[str, Any]:
    with httpx.Client(trust_env=False) as client:
        say("boot: first boot on a fresh HOME (warm-up, reported apart)")
        first = boot_once(sb, tracker, client)
        say(f"boot: first boot {first:.2f} s")
        times = []
        for i in range(boots):
            t = boot_once(sb, tracker, client)
            times.append(t)
            say(f"boot {i + 1}/{boots}: {t:.2f} s")
    return {"first_boot_fresh_home_s": round(first, 3), "boots_s": [round(t, 3) for t in times], **stats(times)}


# --- 2 and 3. faults under an in-process daemon ------------------------------------------------------------------


@dataclass
class KillRound:
    round: int
    pid: int
    new_pid: int | None = None
    healed: bool = False
    detect_s: float | None = None  # SIGKILL → `exited`
    kernel_exit_s: float | None = None  # SIGKILL → the process really ended (pidfd readable, seen from a thread)
    clawmedic_s: float | None = None  # the process ended → clawmedic's `exited`: clawmedic's own share
    incident_s: float | None = None  # SIGKILL → incident opened
    recover_s: float | None = None  # SIGKILL → live again (incident.live_at)
    relaunch_boot_s: float | None = None  # `launched` → `live_again`: the boot of that very relaunch
    overhead_s: float | None = None  # recover − detect − relaunch boot (= `exited` → the new process exists)
    spawn_s: float | None = None  # of the overhead: the launch itself (config gate, port preflight, fork/exec)
    restarts: int | None = None
    states: list[str] = field(default_factory=list)
    children: int = 0  # the gateway's child processes (workers) when it was killed
    children_gone_s: float | None = None  # SIGKILL → the last of them ended (they are not signalled by anyone)
    leftovers: list[int] = field(default_factory=list)  # children still alive when the gateway was healthy again
    error: str | None = None


@dataclass
class HangRound:
    round: int
    pid: int
    delay_s: float  # healthy and forgotten → SIGSTOP (random phase of the probe cycle)
    new_pid: int | None = None
    healed: bool = False
    first_failure_s: float | None = None  # SIGSTOP → first failed probe (the probe cycle's phase)
    detect_s: float | None = None  # SIGSTOP → incident opened
    stop_s: float | None = None  # the stop of the frozen gateway (SIGCONT+SIGTERM, SIGKILL after the hung timeout)
    sigkill: bool | None = None
    relaunch_boot_s: float | None = None
    recover_s: float | None = None  # SIGSTOP → live again
    restarts: int | None = None
    states: list[str] = field(default_factory=list)
    error: str | None = None


class InProcess:
    """The daemon under test, in this process (as `clawmedic demo` runs it), and the waits on its state."""

    def __init__(self, daemon: Daemon, task: asyncio.Task[None], sb: gw.Sandbox, tracker: Tracker) -> None:
        self.daemon = daemon
        self.task = task
        self.sb = sb
        self.tracker = tracker

    @property
    def sup(self) -> TargetSupervisor:
        sup = self.daemon.supervisors.get(gw.TARGET)
        if sup is None:
            raise BenchError("the daemon has no supervisor for the gateway")
        return sup

    async def until(self, cond: Callable[[], bool], timeout: float, what: str, poll: float = 0.02) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.task.done():
                if not self.task.cancelled() and (exc := self.task.exception()) is not None:
                    raise BenchError(f"the daemon stopped: {exc!r}")
                raise KeyboardInterrupt  # the daemon's own SIGINT/SIGTERM handler stopped it
            sup = self.daemon.supervisors.get(gw.TARGET)
            if sup is not None:
                if sup.handle is not None:
                    self.tracker.add(sup.handle.pid)
                if sup.ladder.state in (State.ESCALATED, State.GAVE_UP):
                    raise NotHealed(f"clawmedic escalated instead of healing: last exit {sup.last_exit}")
            if cond():
                return
            await asyncio.sleep(poll)
        raise NotHealed(f"timed out after {timeout:g} s waiting for {what}")

    def _healthy(self) -> bool:
        sup = self.daemon.supervisors.get(gw.TARGET)
        return (
            sup is not None and sup.ladder.state == State.HEALTHY and sup.incident_id is None and sup.handle is not None
        )

    async def fresh(self) -> None:
        """Healthy, no incident, and the failure history forgotten: the next fault is a first fault."""
        await self.until(
            lambda: self._healthy() and self.sup.ladder.consecutive_restarts == 0,
            ROUND_TIMEOUT_S,
            "a fresh healthy gateway",
        )

    async def healed(self) -> None:
        await self.until(self._healthy, ROUND_TIMEOUT_S, "the gateway to be healthy again")


def events_since(sb: gw.Sandbox, t0: float) -> list[dict[str, Any]]:
    return [e for e in read_events(events_path(sb.state_dir)) if e.get("ts", 0) >= t0 and e.get("target") == gw.TARGET]


def first(events: list[dict[str, Any]], kind: str, **match: Any) -> dict[str, Any] | None:
    return next((e for e in events if e["kind"] == kind and all(e.get(k) == v for k, v in match.items())), None)


def state_path(events: list[dict[str, Any]]) -> list[str]:
    return [e["new"] for e in events if e["kind"] == "state"]


def new_incident(store: IncidentStore, before: set[int]) -> Any:
    new = [i for i in store.list(100, gw.TARGET) if i.id not in before]
    return store.get(min(i.id for i in new)) if new else None


async def kill_round(ip: InProcess, store: IncidentStore, n: int) -> KillRound:
    await ip.fresh()
    sup = ip.sup
    assert sup.handle is not None
    pid = sup.handle.pid
    children = [c.pid for c in psutil.Process(pid).children(recursive=True)]
    watch = ExitWatch([pid, *children])
    before = {i.id for i in store.list(100)}
    row = KillRound(n, pid, children=len(children))
    t_kill = time.time()
    os.kill(pid, signal.SIGKILL)
    try:
        await ip.until(lambda: sup.last_exit is not None and sup.last_exit.get("pid") == pid, 30.0, "the exit")
        await ip.healed()
    except NotHealed as e:
        row.error = str(e)
    watch.close(1.0)
    row.leftovers = [c for c in children if c not in watch.ended and psutil.pid_exists(c)]
    if pid in watch.ended:
        row.kernel_exit_s = watch.ended[pid] - t_kill
    if children and all(c in watch.ended for c in children):
        row.children_gone_s = max(watch.ended[c] for c in children) - t_kill
    ev = events_since(ip.sb, t_kill)
    row.states = state_path(ev)
    exited = first(ev, "exited", pid=pid)
    launched = first(ev, "launched")
    live = first(ev, "live_again")
    inc = new_incident(store, before)
    if exited:
        row.detect_s = exited["at"] - t_kill
        if row.kernel_exit_s is not None:
            row.clawmedic_s = row.detect_s - row.kernel_exit_s
    if inc is not None:
        row.incident_s = inc.detected_at - t_kill
        row.restarts = inc.restarts
        row.healed = inc.status == "recovered" and row.error is None
        if inc.live_at is not None:
            row.recover_s = inc.live_at - t_kill
    if launched and live:
        row.new_pid = launched.get("pid")
        row.relaunch_boot_s = live["at"] - launched["ts"]  # the event is written once the new process exists
        row.spawn_s = launched["ts"] - launched["at"]  # `at`: the launch began (config gate, port preflight, spawn)
    if row.recover_s is not None and row.detect_s is not None and row.relaunch_boot_s is not None:
        row.overhead_s = row.recover_s - row.detect_s - row.relaunch_boot_s
    return row


async def hang_round(ip: InProcess, store: IncidentStore, n: int, rng: random.Random, interval: float) -> HangRound:
    await ip.fresh()
    delay = rng.uniform(0.0, interval)
    await asyncio.sleep(delay)
    await ip.until(ip._healthy, 5.0, "a healthy gateway")
    sup = ip.sup
    assert sup.handle is not None
    pid = sup.handle.pid
    before = {i.id for i in store.list(100)}
    row = HangRound(n, pid, round(delay, 3))
    t_stop = time.time()
    os.kill(pid, signal.SIGSTOP)
    try:
        await ip.until(lambda: sup.incident_id is not None, 60.0, "the hang to be detected")
        await ip.healed()
    except NotHealed as e:
        row.error = str(e)
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGCONT)
    ev = events_since(ip.sb, t_stop)
    row.states = state_path(ev)
    failed = first(ev, "liveness", ok=False)
    stopped = first(ev, "stopped", pid=pid)
    launched = first(ev, "launched")
    live = first(ev, "live_again")
    inc = new_incident(store, before)
    if failed:
        row.first_failure_s = failed["ts"] - t_stop
    if stopped:
        row.stop_s = stopped.get("took_s")
        row.sigkill = stopped.get("sigkill")
    if inc is not None:
        row.detect_s = inc.detected_at - t_stop
        row.restarts = inc.restarts
        row.healed = inc.status == "recovered" and row.error is None
        if inc.live_at is not None:
            row.recover_s = inc.live_at - t_stop
    if launched and live:
        row.new_pid = launched.get("pid")
        row.relaunch_boot_s = live["at"] - launched["ts"]
    return row


def log_to_file(loaded: LoadedConfig, path: Path, verbose: bool) -> TextIO | None:
    """The in-process daemon logs to a file in the sandbox (or to stderr with --verbose)."""
    setup_logging(loaded.config.daemon.log_level, not verbose, loaded.redactor)
    if verbose:
        return None
    f = path.open("a", encoding="utf-8")
    for h in logging.getLogger("clawmedic").handlers:
        if isinstance(h, logging.StreamHandler):
            h.setStream(f)
    return f


async def faults(
    sb: gw.Sandbox, loaded: LoadedConfig, tracker: Tracker, rounds: int, seed: int, load: LoadMeter
) -> tuple[list[KillRound], list[HangRound]]:
    daemon = Daemon(loaded, stop_targets_on_exit=True)
    task = asyncio.create_task(daemon.run())
    ip = InProcess(daemon, task, sb, tracker)
    store = IncidentStore(incidents_path(sb.state_dir))
    kills: list[KillRound] = []
    hangs: list[HangRound] = []
    try:
        say("daemon (in-process) starting the gateway…")
        t0 = time.monotonic()
        await ip.fresh()
        say(f"gateway healthy after {time.monotonic() - t0:.1f} s (boot + {BENCH_PROBATION_S:g} s probation)")
        with load.phase("kill -9", settle=False):
            for i in range(1, rounds + 1):
                r = await kill_round(ip, store, i)
                kills.append(r)
                say(
                    f"kill -9 {i}/{rounds}: detect {_ms(r.detect_s)}, recover {_s(r.recover_s)} "
                    f"(relaunch boot {_s(r.relaunch_boot_s)}, overhead {_ms(r.overhead_s)})"
                    + (f" ERROR {r.error}" if r.error else "")
                )
                if r.error:
                    break
            await asyncio.sleep(LoadMeter.SETTLE_S)
        interval = loaded.targets[gw.TARGET].liveness.interval_s
        rng = random.Random(seed)
        if not any(r.error for r in kills):
            with load.phase("hang", settle=False):
                for i in range(1, rounds + 1):
                    h = await hang_round(ip, store, i, rng, interval)
                    hangs.append(h)
                    say(
                        f"hang {i}/{rounds}: first failed probe {_s(h.first_failure_s)}, detect {_s(h.detect_s)}, "
                        f"stop {_s(h.stop_s)}{' (SIGKILL)' if h.sigkill else ''}, recover {_s(h.recover_s)}"
                        + (f" ERROR {h.error}" if h.error else "")
                    )
                    if h.error:
                        break
                await asyncio.sleep(LoadMeter.SETTLE_S)
    finally:
        store.close()
        daemon.request_stop()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await task
    return kills, hangs


# --- 4. the idle daemon as its own process -----------------------------------------------------------------------


def console_script() -> Path:
    script = Path(sys.executable).parent / "clawmedic"
    if not script.exists():
        raise BenchError(f"{script} not found: install clawmedic into this venv (pip install -e .)")
    return script


def read_status_file(sb: gw.Sandbox) -> dict[str, Any]:
    with contextlib.suppress(OSError, ValueError):
        return dict(json.loads(status_path(sb.state_dir).read_text()))
    return {}


def idle_overhead(sb: gw.Sandbox, tracker: Tracker, seconds: float, load: LoadMeter) -> dict[str, Any]:
    log_path = sb.root / "daemon-subprocess.log"
    cmd = [str(console_script()), "run", "--config", str(sb.config_path)]
    say(f"idle: starting `{' '.join(cmd[1:])}` as its own process (default limits)")
    with log_path.open("ab") as logf:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, start_new_session=True)
    tracker.add(proc.pid)
    try:
        t0 = time.monotonic()
        gw_pid: int | None = None
        while True:
            if proc.poll() is not None:
                raise BenchError(f"the daemon exited with {proc.returncode}; see {log_path}")
            tgt = read_status_file(sb).get("targets", {}).get(gw.TARGET, {})
            gw_pid = tgt.get("pid")
            tracker.add(gw_pid)
            if tgt.get("state") == "healthy" and gw_pid:
                break
            if time.monotonic() - t0 > ROUND_TIMEOUT_S:
                raise BenchError(f"the gateway was not healthy under the daemon within {ROUND_TIMEOUT_S:g} s")
            time.sleep(0.5)
        say(f"idle: gateway healthy under the daemon after {time.monotonic() - t0:.1f} s; sampling for {seconds:g} s")
        time.sleep(IDLE_SETTLE_S)
        assert gw_pid is not None
        d = psutil.Process(proc.pid)
        g = psutil.Process(gw_pid)
        rss: list[int] = []
        with load.phase("idle"):
            t_window = time.time()
            w0, c0, gc0 = time.monotonic(), d.cpu_times(), g.cpu_times()
            while time.monotonic() - w0 < seconds:
                rss.append(d.memory_info().rss)
                time.sleep(IDLE_SAMPLE_S)
            w1, c1, gc1 = time.monotonic(), d.cpu_times(), g.cpu_times()
            uss = d.memory_full_info().uss
            threads = d.num_threads()
        wall = w1 - w0
        cpu = (c1.user + c1.system) - (c0.user + c0.system)
        child_cpu = (c1.children_user + c1.children_system) - (c0.children_user + c0.children_system)
        kinds: dict[str, int] = {}
        for e in read_events(events_path(sb.state_dir)):
            if e.get("ts", 0) >= t_window and e.get("ts", 0) <= t_window + wall:
                kinds[e["kind"]] = kinds.get(e["kind"], 0) + 1
        gcpu = (gc1.user + gc1.system) - (gc0.user + gc0.system)
        state = read_status_file(sb).get("targets", {}).get(gw.TARGET, {})
        return {
            "seconds": round(wall, 1),
            "daemon_pid": proc.pid,
            "daemon_cpu_s": round(cpu, 3),
            "daemon_cpu_pct": round(100.0 * cpu / wall, 3),
            "daemon_children_cpu_s": round(child_cpu, 3),  # commands it ran and reaped (e.g. config validation)
            "events_during": kinds,
            "daemon_rss_mb_mean": round(statistics.fmean(rss) / 2**20, 1),
            "daemon_rss_mb_max": round(max(rss) / 2**20, 1),
            "daemon_uss_mb": round(uss / 2**20, 1),
            "daemon_threads": threads,
            "gateway_cpu_pct": round(100.0 * gcpu / wall, 2),
            "gateway_rss_mb": state.get("rss_mb"),
            "gateway_state_after": state.get("state"),
            "restarts_during": state.get("restarts"),
        }
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        gw.stop_gateway(sb)  # the daemon leaves a managed gateway running (stop_targets_on_exit = false)


# --- figures ---------------------------------------------------------------------------------------------------------


def stats(xs: list[float]) -> dict[str, float | int | None]:
    if not xs:
        return {"n": 0, "min": None, "median": None, "max": None}
    return {"n": len(xs), "min": round(min(xs), 4), "median": round(statistics.median(xs), 4), "max": round(max(xs), 4)}


def _vals(rows: list[Any], attr: str) -> list[float]:
    return [float(v) for r in rows if (v := getattr(r, attr)) is not None]


def _s(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f} s"


def _ms(x: float | None) -> str:
    return "—" if x is None else f"{x * 1000:.0f} ms"


def summarize(boot: dict[str, Any], kills: list[KillRound], hangs: list[HangRound]) -> dict[str, Any]:
    boot_med = boot.get("median")
    kill = {
        k: stats(_vals(kills, k))
        for k in (
            "detect_s",
            "kernel_exit_s",
            "clawmedic_s",
            "incident_s",
            "recover_s",
            "relaunch_boot_s",
            "overhead_s",
            "spawn_s",
            "children_gone_s",
        )
    }
    hang = {
        k: stats(_vals(hangs, k)) for k in ("first_failure_s", "detect_s", "stop_s", "relaunch_boot_s", "recover_s")
    }
    checks: dict[str, bool | None] = {}
    det = kill["detect_s"]["max"]
    checks["kill_detect_max_lt_100ms"] = None if det is None else det < DETECT_TARGET_S
    rec = kill["recover_s"]["max"]
    checks["kill_recover_max_le_boot_median_plus_1s"] = (
        None if rec is None or boot_med is None else rec <= boot_med + RECOVER_MARGIN_S
    )
    per = [r.recover_s - r.relaunch_boot_s for r in kills if r.recover_s is not None and r.relaunch_boot_s is not None]
    checks["kill_recover_le_own_relaunch_boot_plus_1s"] = None if not per else max(per) <= RECOVER_MARGIN_S
    rounds: list[KillRound | HangRound] = [*kills, *hangs]
    checks["all_healed"] = all(r.healed for r in rounds) if rounds else None
    return {"kill": kill, "hang": hang, "checks": checks}


def oddities(
    kills: list[KillRound],
    hangs: list[HangRound],
    boot: dict[str, Any],
    idle: dict[str, Any] | None,
    cfg: dict[str, Any],
) -> list[str]:
    out: list[str] = []
    confirm = (cfg["failure_threshold"] - 1) * cfg["suspect_interval_s"]  # first failed probe → incident, nominal
    windows = [h.detect_s - h.first_failure_s for h in hangs if h.detect_s is not None and h.first_failure_s]
    if windows and max(windows) < confirm - 0.25:
        out.append(
            f"hang: first failed probe → incident took {min(windows):.2f}-{max(windows):.2f} s, not the nominal "
            f"({cfg['failure_threshold']} − 1) × {cfg['suspect_interval_s']:g} s = {confirm:g} s: the move to suspect "
            "triggers an immediate re-probe, so two of the three failures are back to back"
        )
    expected = ["suspect", "restarting", "starting", "probation", "healthy"]
    for r in kills:
        if r.error:
            out.append(f"kill round {r.round}: {r.error}")
        if "backoff" in r.states:
            out.append(f"kill round {r.round}: went through backoff ({' → '.join(r.states)})")
        if r.restarts is not None and r.restarts != 1:
            out.append(f"kill round {r.round}: incident counted {r.restarts} restarts (expected 1)")
        if r.leftovers:
            out.append(
                f"kill round {r.round}: children of the killed gateway still alive after its exit: {r.leftovers}"
            )
        if r.detect_s is not None and r.detect_s >= DETECT_TARGET_S:
            kernel = f"; the process itself took {r.kernel_exit_s * 1000:.0f} ms to end" if r.kernel_exit_s else ""
            out.append(
                f"kill round {r.round}: exit detected after {r.detect_s * 1000:.0f} ms (target < 100 ms{kernel})"
            )
    for h in hangs:
        if h.error:
            out.append(f"hang round {h.round}: {h.error}")
        if h.states and h.states != expected:
            out.append(f"hang round {h.round}: unexpected state path {' → '.join(h.states)}")
        if h.restarts is not None and h.restarts != 1:
            out.append(f"hang round {h.round}: incident counted {h.restarts} restarts (expected 1)")
        if h.sigkill:
            out.append(f"hang round {h.round}: the frozen gateway needed SIGKILL after SIGCONT+SIGTERM")
    med = boot.get("median")
    rounds: list[KillRound | HangRound] = [*kills, *hangs]
    for x in rounds:
        if med and x.relaunch_boot_s is not None and x.relaunch_boot_s > 1.5 * med:
            out.append(
                f"{'kill' if isinstance(x, KillRound) else 'hang'} round {x.round}: relaunch boot "
                f"{x.relaunch_boot_s:.1f} s vs standalone median {med:.1f} s"
            )
    if idle is not None and idle["daemon_rss_mb_max"] > 0.9 * RSS_TARGET_MB:
        rss = idle["daemon_rss_mb_max"]
        how = "exceeds" if rss >= RSS_TARGET_MB else "is within 10 % of"
        out.append(f"idle: daemon RSS {rss:.1f} MB {how} the {RSS_TARGET_MB:g} MB target")
    if idle is not None and idle["daemon_cpu_pct"] > CPU_TARGET_PCT:
        out.append(f"idle: daemon CPU {idle['daemon_cpu_pct']:.2f} % of a core exceeds the {CPU_TARGET_PCT:g} % target")
    if idle is not None and idle.get("restarts_during"):
        out.append(f"idle: the daemon restarted the gateway {idle['restarts_during']} time(s) while idle")
    return out


def table(result: dict[str, Any]) -> str:
    m, v, cfg = result["machine"], result["versions"], result["config"]
    boot, summ, idle = result["boot"], result["summary"], result.get("idle")
    lines = [
        f"clawmedic recovery bench — {result['date']}",
        f"machine: {m['cpus']} CPU × {m['cpu_model']}, {m['memory_gb']} GB, {m['os']}, Python {m['python']}",
        f"gateway: OpenClaw {v['openclaw']} on Node {v['node']}; clawmedic {v['clawmedic']} (git {v.get('git')})",
        f"rounds: {cfg['rounds']}; probe interval {cfg['probe_interval_s']:g} s "
        f"(suspect {cfg['suspect_interval_s']:g} s × {cfg['failure_threshold']}), "
        f"startup poll {cfg['startup_poll_s']:g} s; faults with probation "
        f"{cfg['probation_s']:g} s, stable reset {cfg['stable_reset_s']:g} s",
        "",
    ]
    w = 48
    head = f"{'figure':<{w}} {'min':>9} {'median':>9} {'max':>9}   target"
    lines += [head, "-" * len(head)]

    def row(name: str, st: dict[str, Any], unit: str = "s", target: str = "") -> None:
        def f(x: float | None) -> str:
            if x is None:
                return "—"
            return f"{x * 1000:.0f} ms" if unit == "ms" else f"{x:.2f} s"

        lines.append(f"{name:<{w}} {f(st['min']):>9} {f(st['median']):>9} {f(st['max']):>9}   {target}")

    lines.append(f"{'gateway boot, first on a fresh HOME':<{w}} {'':>9} {boot['first_boot_fresh_home_s']:>7.2f} s")
    row(f"gateway boot, reused HOME (n={boot['n']})", boot)
    k, h = summ["kill"], summ["hang"]
    med = boot.get("median")
    row("kill -9: SIGKILL → exited (detection)", k["detect_s"], "ms", "< 100 ms")
    row("kill -9:   of which the kernel ending the process", k["kernel_exit_s"], "ms")
    row("kill -9:   of which clawmedic (ended → exited)", k["clawmedic_s"], "ms")
    row(
        "kill -9: SIGKILL → live again (recovery)",
        k["recover_s"],
        "s",
        f"≤ boot + 1 s = {med + 1:.2f} s" if med else "",
    )
    row("kill -9: relaunch boot (launched → live)", k["relaunch_boot_s"])
    row("kill -9: restart overhead (rec − det − boot)", k["overhead_s"], "ms")
    row("kill -9:   of which config gate + preflight + spawn", k["spawn_s"], "ms")
    row("kill -9: gateway's workers gone (SIGKILL →)", k["children_gone_s"], "ms")
    row("hang: SIGSTOP → first failed probe", h["first_failure_s"])
    nominal = cfg["probe_interval_s"] + (cfg["failure_threshold"] - 1) * cfg["suspect_interval_s"]
    row("hang: SIGSTOP → incident (detection)", h["detect_s"], "s", f"≤ {nominal:g} s (interval + confirmation)")
    row("hang: stop of the frozen gateway", h["stop_s"])
    row("hang: relaunch boot (launched → live)", h["relaunch_boot_s"])
    row("hang: SIGSTOP → live again (recovery)", h["recover_s"])
    if idle:
        lines.append("-" * len(head))
        lines.append(
            f"{'idle daemon CPU, % of one core':<{w}} {'':>9} {idle['daemon_cpu_pct']:>7.2f} %{'':>10}   < 1 %"
            f"   ({idle['daemon_cpu_s']:.2f} s CPU in {idle['seconds']:g} s; "
            f"+{idle['daemon_children_cpu_s']:.2f} s in commands it ran)"
        )
        lines.append(
            f"{'idle daemon RSS (mean / max), USS':<{w}} {'':>9} {idle['daemon_rss_mb_mean']:>6.1f} MB "
            f"{idle['daemon_rss_mb_max']:>6.1f} MB   < 60 MB   (USS {idle['daemon_uss_mb']:.1f} MB, "
            f"{idle['daemon_threads']} threads)"
        )
        lines.append(
            f"{'  (gateway alone, excluded above)':<{w}} {'':>9} {idle['gateway_cpu_pct']:>7.2f} %"
            f"{'':>10}   RSS {idle['gateway_rss_mb']} MB"
        )
        ev = ", ".join(f"{k} ×{n}" for k, n in sorted(idle.get("events_during", {}).items())) or "none"
        lines.append(f"  (daemon events during the idle window: {ev})")
    lines += ["", "per round:"]
    for r in result["kill_rounds"]:
        lines.append(
            f"  kill {r['round']}: pid {r['pid']} → {r['new_pid']}, detect {_ms(r['detect_s'])} "
            f"(kernel {_ms(r['kernel_exit_s'])}), "
            f"recover {_s(r['recover_s'])}, relaunch boot {_s(r['relaunch_boot_s'])}, overhead "
            f"{_ms(r['overhead_s'])}, restarts {r['restarts']}, healed {'yes' if r['healed'] else 'NO'}"
        )
    for r in result["hang_rounds"]:
        lines.append(
            f"  hang {r['round']}: pid {r['pid']} → {r['new_pid']}, SIGSTOP at random +{r['delay_s']:.2f} s, "
            f"1st failed probe {_s(r['first_failure_s'])}, detect {_s(r['detect_s'])}, stop {_s(r['stop_s'])}"
            f"{' (SIGKILL)' if r['sigkill'] else ''}, recover {_s(r['recover_s'])}, healed "
            f"{'yes' if r['healed'] else 'NO'}"
        )
    lines += [
        "",
        "checks: "
        + ", ".join(f"{k} {'ok' if v else ('—' if v is None else 'FAILED')}" for k, v in summ["checks"].items()),
    ]
    lines.append(
        "host load: "
        + "; ".join(
            f"{p['name']} {p['busy_pct']:.0f} % busy = {p['ours_pct']:.0f} % bench + {p['others_pct']:.0f} % others, "
            f"steal {p['steal_pct']:.0f} % (load {p['loadavg_end']:.2f}, other openclaw procs {p['foreign_gateways']})"
            for p in result["host_load"]
        )
    )
    if result["oddities"]:
        lines += ["", "oddities:", *(f"  - {o}" for o in result["oddities"])]
    return "\n".join(lines)


# --- main ----------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--rounds", type=int, default=5, help="kill -9 rounds and hang rounds (default 5)")
    ap.add_argument("--boots", type=int, default=3, help="standalone boots on a reused HOME (default 3)")
    ap.add_argument("--idle-seconds", type=float, default=60.0, help="idle sampling window (default 60, min 60)")
    ap.add_argument("--skip-faults", action="store_true", help="skip the kill -9 and hang rounds")
    ap.add_argument("--skip-idle", action="store_true", help="skip the idle-daemon measurement")
    ap.add_argument("--seed", type=int, default=1, help="seed of the random SIGSTOP phase")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON on stdout instead of a table")
    ap.add_argument("--keep", action="store_true", help="keep the sandbox folder (logs, events, incidents)")
    ap.add_argument("--verbose", action="store_true", help="show the in-process daemon's log on stderr")
    args = ap.parse_args(argv)
    if args.rounds < 1 or args.boots < 1:
        ap.error("--rounds and --boots must be at least 1")
    if args.idle_seconds < 60:
        ap.error("--idle-seconds must be at least 60")
    return args


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)  # cleanup runs on SIGTERM as on Ctrl-C
    logging.getLogger("asyncio").addFilter(_DropClosedLoopWarning())
    inst = find_install()
    if inst is None:
        say("installing the sandbox (Node + OpenClaw) into the user cache…")
        inst = ensure_install()
    root = Path(tempfile.mkdtemp(prefix="clawmedic-bench-")).resolve()
    tracker = Tracker()
    load = LoadMeter(root)
    logf: TextIO | None = None
    limits = {"probation_s": BENCH_PROBATION_S, "stable_reset_s": BENCH_STABLE_RESET_S}
    result: dict[str, Any] = {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine_info(),
        "versions": versions(inst),
    }
    kills: list[KillRound] = []
    hangs: list[HangRound] = []
    idle: dict[str, Any] | None = None
    code = 0
    try:
        sb = gw.create(root, inst, limits=limits)
        loaded = load_config(sb.config_path)
        lim = loaded.targets[gw.TARGET].ladder_limits()
        result["config"] = {
            "rounds": args.rounds,
            "boots": args.boots,
            "probe_interval_s": lim.probe_interval_s,
            "suspect_interval_s": lim.suspect_interval_s,
            "failure_threshold": lim.failure_threshold,
            "startup_poll_s": lim.startup_poll_s,
            "probation_s": lim.probation_s,
            "stable_reset_s": lim.stable_reset_s,
            "hung_stop_timeout_s": lim.hung_stop_timeout_s,
            "sandbox": str(root),
            "port": sb.port,
        }
        say(f"sandbox {root}, gateway port {sb.port} (loopback)")
        other = foreign_gateways(root)
        if other:
            say(f"note: {len(other)} other OpenClaw process(es) are running on this machine: figures may be contended")
        with load.phase("boot"):
            result["boot"] = measure_boots(sb, tracker, args.boots)
        if not args.skip_faults:
            logf = log_to_file(loaded, root / "daemon-inprocess.log", args.verbose)
            kills, hangs = asyncio.run(faults(sb, loaded, tracker, args.rounds, args.seed, load))
            if logf is not None:
                logf.close()
                logf = None
            gw.stop_gateway(sb)
        if not args.skip_idle:
            sb = gw.create(root, inst)  # default limits for the idle daemon: what a user runs
            idle = idle_overhead(sb, tracker, args.idle_seconds, load)
    except KeyboardInterrupt:
        say("interrupted; stopping everything the bench started")
        code = 130
    except BenchError as e:
        say(f"bench failed: {e}")
        code = 1
    finally:
        load.close()
        if logf is not None:
            logf.close()
        with contextlib.suppress(Exception):
            gw.stop_gateway(gw.Sandbox(root))
        stopped = tracker.stop_all()
        left = [p.pid for p in tracker.alive()]
        if left:
            say(f"WARNING: processes still alive after cleanup: {left}")
        elif stopped:
            say(f"cleanup: stopped leftover pids {stopped}")
        if args.keep or code:
            say(f"sandbox kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    if "boot" not in result:
        return code or 1
    result["kill_rounds"] = [_rounded(asdict(r)) for r in kills]
    result["hang_rounds"] = [_rounded(asdict(h)) for h in hangs]
    result["idle"] = idle
    result["summary"] = summarize(result["boot"], kills, hangs)
    result["host_load"] = [asdict(p) for p in load.phases]
    result["oddities"] = oddities(kills, hangs, result["boot"], idle, result["config"])
    busy = [f"{p.name} {p.others_pct:.0f} %" for p in load.phases if p.others_pct > CONTENDED_PCT]
    result["contended"] = bool(busy)
    if busy:
        result["oddities"].append(
            f"contended: other processes used more than {CONTENDED_PCT:g} % of the machine during: {', '.join(busy)}"
        )
    if _DropClosedLoopWarning.count:
        result["oddities"].append(
            f"asyncio logged 'Loop … that handles pid … is closed' {_DropClosedLoopWarning.count} time(s): "
            "gw.start_gateway spawns the gateway inside a short-lived asyncio.run (suppressed in the output)"
        )
    result["defaults"] = {"PROBE_INTERVAL_S": defaults.PROBE_INTERVAL_S, "STARTUP_POLL_S": defaults.STARTUP_POLL_S}
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print(table(result))
    if code == 0 and result["summary"]["checks"]["all_healed"] is False:
        code = 1
    return code


def _rounded(o: Any) -> Any:
    if isinstance(o, float):
        return round(o, 4)
    if isinstance(o, dict):
        return {k: _rounded(v) for k, v in o.items()}
    if isinstance(o, list):
        return [_rounded(v) for v in o]
    return o


if __name__ == "__main__":
    sys.exit(main())
