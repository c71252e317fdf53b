"""Promise 1 of issue 10: clawmedic never signals a process it did not start (unless allowed).

Real child processes on loopback, no gateway: a `python3 -m http.server` served from a folder named `openclaw-docs`
on the target's port and HOME, a foreign sleeper whose argv says `openclaw`, a bystander next to a port squatter,
and clawmedic's own children whose `process.json` is lost. Every process a test starts is ended by its PID.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from clawmedic import runbook
from clawmedic.config import LoadedConfig, load_config
from clawmedic.doctor.remedies import REMEDIES, Guard, NoParams, Policy, RemedyContext, Risk, Status
from clawmedic.knowngood_client import KnownGoodClient
from clawmedic.process import identity
from clawmedic.process.launcher import Launcher
from clawmedic.sandbox import gateway as gw
from tests.e2e.conftest import Daemon, daemon, install, is_running, sandbox  # noqa: F401 (fixtures)
from tests.helpers.rig import Rig, StandinTarget, free_port

pytestmark = pytest.mark.timeout(60)

ALLOW_ALL = Policy(frozenset(Risk), allow_kill_foreign=True)


class Procs:
    """Children of one test, each ended by its PID at the end."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], *, home: Path | None = None, cwd: Path | None = None) -> subprocess.Popen[bytes]:
        env = {**os.environ, **({"HOME": str(home)} if home else {})}
        p = subprocess.Popen(
            argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.started.append(p)
        return p

    def end(self) -> None:
        for p in self.started:
            if p.poll() is None:
                p.kill()
            p.wait(10)


@pytest.fixture
def procs() -> Iterator[Procs]:
    ps = Procs()
    try:
        yield ps
    finally:
        ps.end()


def listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """Wait until `proc` accepts connections on `port` (event: a successful connect, not a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"{proc.args!r} exited {proc.returncode}"
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise AssertionError(f"{proc.args!r} never listened on {port}")


def squatter(port: int, *tags: str) -> list[str]:
    """A plain listener on `port`; `tags` only decorate its argv."""
    code = (
        "import socket, time; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
        f"s.bind(('127.0.0.1', {port})); s.listen(); time.sleep(120)"
    )
    return [sys.executable, "-c", code, *tags]


def sleeper(*tags: str) -> list[str]:
    return [sys.executable, "-c", "import time; time.sleep(120)", *tags]


def write_config(tmp_path: Path, port: int, home: Path, allow_kill_foreign: bool = False) -> LoadedConfig:
    """A managed target `svc` on `port`, whose gateway HOME is `home` (its start.env HOME)."""
    path = tmp_path / "clawmedic.toml"
    path.write_text(
        f"""
[daemon]
state_dir = "{tmp_path / "state"}"
[daemon.doctor]
allow_kill_foreign = {str(allow_kill_foreign).lower()}
[daemon.doctor.llm]
backend = "off"
[targets.svc]
kind = "http"
port = {port}
liveness.url = "http://127.0.0.1:{port}/health"
[targets.svc.start]
command = ["{sys.executable}", "-c", "pass"]
env = {{ HOME = "{home}" }}
"""
    )
    return load_config(path)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "gateway-home"
    (h / ".openclaw").mkdir(parents=True)
    return h


def remedy_ctx(loaded: LoadedConfig) -> RemedyContext:
    return RemedyContext(loaded, "svc", KnownGoodClient(loaded.state_dir))


# --- (a) `fix port` and a http.server from a folder named openclaw-docs ------------------------------------------


def test_fix_port_refuses_a_http_server_run_from_openclaw_docs_on_the_targets_home(
    tmp_path: Path, home: Path, procs: Procs
) -> None:
    docs = tmp_path / "openclaw-docs"
    docs.mkdir()
    port = free_port()
    loaded = write_config(tmp_path, port, home)
    server = procs.start(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(docs)],
        home=home,
        cwd=docs,
    )
    listening(port, server)
    assert not identity.is_stale_gateway_of(loaded, "svc", server.pid), "an http.server is not an OpenClaw gateway"

    step = runbook.fix_port(loaded, "svc", dry_run=False)

    assert step.status == "refused", step.detail
    assert "did not start" in step.detail and "--kill-foreign" in step.detail
    assert server.poll() is None and psutil.pid_exists(server.pid), "the http.server was not signalled"
    cli = Path(sys.executable).with_name("clawmedic")
    r = subprocess.run(
        [str(cli), "fix", "port", "--config", str(tmp_path / "clawmedic.toml"), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "Traceback" not in r.stderr
    assert r.returncode != 0, "`clawmedic fix port` reports the refusal"
    assert server.poll() is None, "`clawmedic fix port` did not signal it either"


# --- (b) stop_stale_gateway names no victim ------------------------------------------------------------------------


def test_stop_stale_gateway_cannot_be_pointed_at_a_foreign_process_whose_argv_says_openclaw(
    tmp_path: Path, home: Path, procs: Procs
) -> None:
    port = free_port()
    loaded = write_config(tmp_path, port, home)
    foreign = procs.start(sleeper("openclaw", "gateway", "run"), home=home)
    holder = procs.start(squatter(port, "openclaw-gateway"), home=home)
    listening(port, holder)
    assert REMEDIES["stop_stale_gateway"].params is NoParams, "the model names a remedy, not a victim"
    guard = Guard(Policy())  # stop_stale_gateway is `reversible`: allowed by default

    named = guard.run(remedy_ctx(loaded), "stop_stale_gateway", {"pid": foreign.pid})
    by_itself = guard.run(remedy_ctx(loaded), "stop_stale_gateway", {})

    assert named.status == Status.REFUSED and "bad parameters" in named.detail
    assert by_itself.status == Status.REFUSED, by_itself.detail
    assert f"pid {holder.pid}" in by_itself.detail and "not a gateway" in by_itself.detail
    assert by_itself.changes == []
    assert foreign.poll() is None and holder.poll() is None, "neither process was signalled"


def fake_gateway(root: Path, port: int, package: str = "openclaw") -> list[str]:
    """`node <...>/node_modules/<package>/openclaw.mjs gateway run`: a gateway-shaped command line (node is Python
    under that name, the entry a real file) that listens on `port`."""
    entry = root / "node_modules" / package / "openclaw.mjs"
    entry.parent.mkdir(parents=True)
    entry.write_text(squatter(port)[2].replace("; ", "\n"))
    node = root / "bin" / "node"
    node.parent.mkdir(parents=True, exist_ok=True)
    node.symlink_to(Path(sys.executable).resolve())
    return [str(node), str(entry), "gateway", "run"]


def test_stop_stale_gateway_stops_a_real_gateway_shape_on_the_port_and_home_only(
    tmp_path: Path, home: Path, procs: Procs
) -> None:
    port = free_port()
    loaded = write_config(tmp_path, port, home)
    elsewhere = tmp_path / "other-home"
    elsewhere.mkdir()
    docs = procs.start(fake_gateway(tmp_path / "docs", port, package="openclaw-docs"), home=home)
    listening(port, docs)
    assert not identity.is_openclaw_gateway(psutil.Process(docs.pid)), "an entry outside the openclaw package"
    assert Guard(Policy()).run(remedy_ctx(loaded), "stop_stale_gateway", {}).status == Status.REFUSED
    docs.kill()
    docs.wait(10)
    other = procs.start(fake_gateway(tmp_path / "a", port), home=elsewhere)
    listening(port, other)
    assert identity.is_openclaw_gateway(psutil.Process(other.pid))
    assert not identity.is_stale_gateway_of(loaded, "svc", other.pid), "another HOME: another instance"
    assert Guard(Policy()).run(remedy_ctx(loaded), "stop_stale_gateway", {}).status == Status.REFUSED
    assert other.poll() is None
    other.kill()
    other.wait(10)
    stale = procs.start(fake_gateway(tmp_path / "b", port), home=home)
    listening(port, stale)

    out = Guard(Policy()).run(remedy_ctx(loaded), "stop_stale_gateway", {})

    assert out.status == Status.OK, out.detail
    assert out.changes == [{"stopped_pid": stale.pid}]
    assert stale.wait(20) is not None


def test_resume_stopped_gateway_takes_no_pid_and_touches_nothing_without_our_process(
    tmp_path: Path, home: Path, procs: Procs
) -> None:
    loaded = write_config(tmp_path, free_port(), home)
    foreign = procs.start(sleeper("openclaw-gateway"))
    assert REMEDIES["resume_stopped_gateway"].params is NoParams
    named = Guard(Policy()).run(remedy_ctx(loaded), "resume_stopped_gateway", {"pid": foreign.pid})
    bare = Guard(Policy()).run(remedy_ctx(loaded), "resume_stopped_gateway", {})
    assert named.status == Status.REFUSED and bare.status == Status.REFUSED
    assert "runs no process" in bare.detail and foreign.poll() is None


# --- (c) kill_port_holder: the port's current holder, never another pid -------------------------------------------


def test_kill_port_holder_signals_only_the_current_holder_of_the_port(tmp_path: Path, home: Path, procs: Procs) -> None:
    port = free_port()
    loaded = write_config(tmp_path, port, home, allow_kill_foreign=True)
    bystander = procs.start(sleeper("bystander"))
    guard = Guard(ALLOW_ALL)

    nobody = guard.run(remedy_ctx(loaded), "kill_port_holder", {})
    assert nobody.status == Status.FAILED and "free" in nobody.detail
    holder = procs.start(squatter(port, "squatter"))
    listening(port, holder)
    named = guard.run(remedy_ctx(loaded), "kill_port_holder", {"pid": bystander.pid})
    assert named.status == Status.REFUSED and "bad parameters" in named.detail
    assert bystander.poll() is None and holder.poll() is None

    done = guard.run(remedy_ctx(loaded), "kill_port_holder", {})

    assert done.status == Status.OK, done.detail
    assert done.changes == [{"stopped_pid": holder.pid, "port": port}]
    assert holder.wait(10) is not None, "the holder of the port was stopped"
    assert bystander.poll() is None, "the bystander was not signalled"


def test_kill_port_holder_refuses_when_the_holder_is_clawmedics_own_child(
    tmp_path: Path, home: Path, procs: Procs
) -> None:
    port = free_port()
    loaded = write_config(tmp_path, port, home, allow_kill_foreign=True)
    launcher = Launcher(loaded.state_dir / "targets" / "svc")
    launcher.target_dir.mkdir(parents=True)
    handle = asyncio.run(launcher.spawn(squatter(port), {}, None))
    try:
        _wait_port(port)
        launcher.record_path.unlink()  # even without its record, the marker says it is ours
        out = Guard(ALLOW_ALL).run(remedy_ctx(loaded), "kill_port_holder", {})
        assert out.status == Status.REFUSED and "svc itself" in out.detail
        assert psutil.pid_exists(handle.pid)
    finally:
        _kill(handle.pid)


# --- (d) ours by marker ----------------------------------------------------------------------------------------------


def _wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise AssertionError(f"nothing listened on {port}")


def _kill(pid: int) -> None:
    with contextlib.suppress(psutil.Error):
        p = psutil.Process(pid)
        p.kill()
        p.wait(10)


@pytest.fixture
def spawned(tmp_path: Path) -> Iterator[tuple[Launcher, int]]:
    """A child spawned by clawmedic's Launcher for `<tmp>/state` target `svc`."""
    target_dir = tmp_path / "state" / "targets" / "svc"
    target_dir.mkdir(parents=True)
    launcher = Launcher(target_dir)
    handle = asyncio.run(launcher.spawn(sleeper("ours"), {}, None))
    try:
        yield launcher, handle.pid
    finally:
        _kill(handle.pid)


@pytest.mark.parametrize("damage", ["deleted", "garbage", "other pid"])
def test_our_child_is_found_by_its_marker_when_process_json_is_lost(spawned: tuple[Launcher, int], damage: str) -> None:
    launcher, pid = spawned
    assert psutil.Process(pid).environ()[identity.MARKER_ENV] == identity.marker(launcher.target_dir)
    if damage == "deleted":
        launcher.record_path.unlink()
    elif damage == "garbage":
        launcher.record_path.write_bytes(b"\x00{not json")
    else:
        record: dict[str, Any] = json.loads(launcher.record_path.read_text())
        launcher.record_path.write_text(json.dumps({**record, "pid": os.getpid()}))

    handle = Launcher(launcher.target_dir).adopt()

    assert handle is not None and handle.pid == pid, "a new daemon adopts its own child by marker"
    assert handle.is_ours()
    assert json.loads(launcher.record_path.read_text())["pid"] == pid, "the record is rewritten"


def test_a_marker_of_another_state_dir_or_target_is_not_ours(tmp_path: Path, spawned: tuple[Launcher, int]) -> None:
    launcher, pid = spawned
    launcher.record_path.unlink()
    other_state = tmp_path / "other-state" / "targets" / "svc"
    other_target = tmp_path / "state" / "targets" / "svc2"
    for d in (other_state, other_target):
        d.mkdir(parents=True)
        assert Launcher(d).adopt() is None, f"{d} did not launch pid {pid}"
        assert not identity.is_ours(pid, d)
    assert identity.is_ours(pid, launcher.target_dir)
    assert not identity.is_ours(os.getpid(), launcher.target_dir), "no marker, no record: not ours"


def test_a_child_is_started_and_adoptable_when_process_json_cannot_be_written(tmp_path: Path) -> None:
    target_dir = tmp_path / "state" / "targets" / "svc"
    (target_dir / "process.json").mkdir(parents=True)  # unwritable: a folder in the record's place
    launcher = Launcher(target_dir)
    handle = asyncio.run(launcher.spawn(sleeper("ours"), {}, None))
    try:
        assert psutil.pid_exists(handle.pid) and handle.is_ours()
        again = Launcher(target_dir).adopt()
        assert again is not None and again.pid == handle.pid
    finally:
        _kill(handle.pid)


# --- the daemon adopts its own child by marker (stand-in target, no gateway) ----------------------------------------


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    try:
        yield r
    finally:
        r.cleanup()


@pytest.mark.parametrize("damage", ["deleted", "garbage"])
def test_a_restarted_daemon_adopts_its_child_when_process_json_is_lost(rig: Rig, damage: str) -> None:
    rig.write_config(StandinTarget())
    record = rig.state_dir / "targets" / "svc" / "process.json"

    async def first_daemon() -> int:
        async with rig.daemon(stop_targets_on_exit=False, cleanup=False):
            await rig.wait_state("healthy")
        return int(rig.launched_pids()[0])

    pid = asyncio.run(first_daemon())
    if damage == "deleted":
        record.unlink()
    else:
        record.write_text("{{{ garbage")
    second_started = time.time()

    async def second_daemon() -> dict[str, Any]:
        async with rig.daemon():
            adopted = await rig.wait_event("adopted", since=second_started)
            await rig.wait_state("healthy", since=second_started)
            return adopted

    adopted = asyncio.run(second_daemon())
    assert adopted["pid"] == pid, "the same process, adopted by its marker"
    assert rig.launched_pids(since=second_started) == [], "no second launch"
    assert rig.events("port_conflict") == [], "its own child is not a foreign port holder"
    assert rig.incidents() == []
    assert json.loads(record.read_text())["pid"] == pid


# --- the real gateway: one test, the promise is about it ------------------------------------------------------------


@pytest.mark.gateway
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_restarted_daemon_adopts_the_real_gateway_after_process_json_is_deleted(
    daemon: Daemon,  # noqa: F811
    sandbox: gw.Sandbox,  # noqa: F811
) -> None:
    daemon.start()
    daemon.wait_healthy()
    pid = daemon.pid()
    gateway = psutil.Process(pid)
    assert identity.is_openclaw_gateway(gateway), "the gateway is known by its process, not by a substring"
    assert identity.has_marker(pid, sandbox.launcher.target_dir)
    assert daemon.proc is not None
    daemon.proc.kill()  # the daemon crashes (the sandbox's daemon stops its gateway on a clean exit)
    daemon.proc.wait(30)
    assert is_running(pid) and gw.health(sandbox.port), "the gateway outlives the daemon"
    sandbox.launcher.record_path.unlink()
    restarted = time.time()

    daemon.start()
    adopted = daemon.wait_event(lambda e: e["kind"] == "adopted", 120, after=restarted)
    healthy = daemon.wait_healthy(after=restarted)

    assert adopted["pid"] == pid and healthy["ts"] >= adopted["ts"]
    assert daemon.pid() == pid and is_running(pid), "the same gateway, never restarted"
    later = [e for e in daemon.events() if e["ts"] >= restarted]
    assert not [e for e in later if e["kind"] in ("port_conflict", "launched", "escalated")], later
    assert json.loads(sandbox.launcher.record_path.read_text())["pid"] == pid, "the record is written again"
