"""A rig for integration tests: stand-in targets, their clawmedic config, and daemon runs that always clean up.

    rig = Rig(tmp_path)
    rig.write_config(StandinTarget(args=["--exit-after", "1", "--exit-code", "78"]))
    async with rig.daemon() as run:
        await rig.wait_for(lambda: rig.events("gave_up"), 20)

Everything is loopback, and every process a test starts is ended by its PID: the daemon's children are found
through the daemon's own records (`launched`/`adopted` events, `process.json`) and killed only when their command
line is one the config names, so a reused PID is never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psutil

from clawmedic.config import LoadedConfig, load_config
from clawmedic.daemon import Daemon, events_path, incidents_path, status_path
from clawmedic.doctor import Doctor
from clawmedic.store.events import read_events
from clawmedic.store.incidents import Incident, IncidentStore

T = TypeVar("T")

STANDIN = Path(__file__).with_name("standin.py")
REPO_ROOT = Path(__file__).resolve().parents[2]

# Small limits, so a whole fault-and-recovery cycle takes a few seconds of real time.
FAST_LIVENESS: dict[str, Any] = {"interval_s": 0.3, "timeout_s": 1.0, "failure_threshold": 2}
FAST_LIMITS: dict[str, Any] = {
    "startup_timeout_s": 10.0,
    "probation_s": 1.0,
    "stop_timeout_s": 2.0,
    "hung_stop_timeout_s": 2.0,
    "backoff_initial_s": 0.5,
    "backoff_max_s": 2.0,
    "crash_loop_failures": 3,
    "crash_loop_window_s": 60.0,
}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def standin_command(port: int, *args: str) -> list[str]:
    return [sys.executable, str(STANDIN), "--port", str(port), *args]


@dataclass
class StandinTarget:
    """One `kind = "http"`, managed target running the stand-in service."""

    name: str = "svc"
    port: int = field(default_factory=free_port)
    args: Sequence[str] = ()  # stand-in options, e.g. ("--exit-after", "1", "--exit-code", "78")
    env: Mapping[str, str] = field(default_factory=dict)  # `start.env`; "${NAME}" is a secret
    readiness: bool = False  # also probe /ready
    liveness: Mapping[str, Any] = field(default_factory=dict)  # overrides of FAST_LIVENESS
    limits: Mapping[str, Any] = field(default_factory=dict)  # overrides of FAST_LIMITS

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return standin_command(self.port, *self.args)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{json.dumps(str(k))} = {_toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, Sequence):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def _table(name: str, values: Mapping[str, Any]) -> str:
    lines = [f"[{name}]"] + [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def render_config(
    targets: Iterable[StandinTarget],
    *,
    state_dir: str | Path = "state",
    env_file: str | Path | None = None,
    daemon: Mapping[str, Any] | None = None,
) -> str:
    # No LLM doctor unless a test asks for one: the embedded model would answer in minutes, not milliseconds.
    daemon_values: dict[str, Any] = {
        "state_dir": str(state_dir),
        "log_level": "debug",
        "doctor": {"llm": {"backend": "off"}},
        **(daemon or {}),
    }
    if env_file is not None:
        daemon_values["env_file"] = str(env_file)
    parts = [_table("daemon", daemon_values)]
    for t in targets:
        key = f"targets.{json.dumps(t.name)}"
        parts.append(_table(key, {"kind": "http", "host": "127.0.0.1", "port": t.port}))
        start: dict[str, Any] = {"mode": "managed", "command": t.command(), "cwd": str(REPO_ROOT)}
        if t.env:
            start["env"] = dict(t.env)
        parts.append(_table(f"{key}.start", start))
        liveness = {"url": f"{t.url}/health", "expect_status": 200, "expect_json": {"ok": True}}
        parts.append(_table(f"{key}.liveness", {**liveness, **FAST_LIVENESS, **t.liveness}))
        if t.readiness:
            parts.append(_table(f"{key}.readiness", {"url": f"{t.url}/ready", **FAST_LIVENESS}))
        parts.append(_table(f"{key}.limits", {**FAST_LIMITS, **t.limits}))
    return "\n".join(parts)


def write_config(
    tmp_path: Path,
    *targets: StandinTarget,
    env_file: Mapping[str, str] | None = None,
    daemon: Mapping[str, Any] | None = None,
    name: str = "clawmedic.toml",
) -> Path:
    """Write a clawmedic config for `targets` (state in `tmp_path/state`) and return its path.

    `env_file` values are written to `tmp_path/secrets.env` (0600) and named by `daemon.env_file`.
    """
    env_path = None
    if env_file is not None:
        env_path = tmp_path / "secrets.env"
        env_path.write_text("".join(f"{k}={v}\n" for k, v in env_file.items()))
        env_path.chmod(0o600)
    path = tmp_path / name
    path.write_text(render_config(targets, state_dir=tmp_path / "state", env_file=env_path, daemon=daemon))
    return path


# --- waiting -------------------------------------------------------------------------------------------------


async def wait_for(
    predicate: Callable[[], T | None],
    timeout: float,
    *,
    interval: float = 0.05,
    what: str = "",
    describe: Callable[[], str] | None = None,
    watch: asyncio.Task[Any] | None = None,
) -> T:
    """Poll `predicate` until it returns something truthy and return that; fail after `timeout` seconds.

    `watch`: a task (the daemon) whose early end is a failure of its own, reported at once.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if watch is not None and watch.done():
            exc = None if watch.cancelled() else watch.exception()
            raise AssertionError(f"the daemon stopped while waiting for {what or predicate}: {exc!r}") from exc
        if time.monotonic() >= deadline:
            extra = f"\n{describe()}" if describe is not None else ""
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what or predicate}{extra}")
        await asyncio.sleep(interval)


async def holds(predicate: Callable[[], object], duration: float, *, interval: float = 0.05, what: str = "") -> None:
    """Assert that `predicate` stays true for `duration` seconds (a short "nothing happens" window)."""
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        assert predicate(), f"no longer true: {what or predicate}"
        await asyncio.sleep(interval)
    assert predicate(), f"no longer true: {what or predicate}"


# --- processes -----------------------------------------------------------------------------------------------


def process_alive(pid: int) -> bool:
    """True when `pid` runs and is not a zombie waiting to be reaped."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def runs_command(pid: int, command: Sequence[str]) -> bool:
    """True when `pid` is alive and runs exactly `command` (so a reused PID does not count)."""
    try:
        p = psutil.Process(pid)
        return p.status() != psutil.STATUS_ZOMBIE and p.cmdline() == list(command)
    except psutil.Error:
        return False


def target_commands(loaded: LoadedConfig) -> list[list[str]]:
    return [
        [loaded.resolve(x, "command") for x in t.start.command]
        for t in loaded.targets.values()
        if t.start.command is not None
    ]


def known_pids(state_dir: Path) -> set[int]:
    """Every PID the daemon recorded for a child: `launched`/`adopted` events and `process.json` records."""
    pids = {
        int(e["pid"])
        for e in read_events(events_path(state_dir))
        if e.get("kind") in ("launched", "adopted") and isinstance(e.get("pid"), int)
    }
    for record in state_dir.glob("targets/*/process.json"):
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            pids.add(int(json.loads(record.read_text())["pid"]))
    return pids


def kill_pids(pids: Iterable[int], commands: Sequence[Sequence[str]], timeout: float = 5.0) -> list[int]:
    """SIGKILL each of `pids` that still runs one of `commands`; wait for them to go. Returns those killed."""
    victims: list[psutil.Process] = []
    for pid in sorted(set(pids)):
        if any(runs_command(pid, c) for c in commands):
            with contextlib.suppress(psutil.Error):
                p = psutil.Process(pid)
                p.send_signal(signal.SIGCONT)  # a stopped process still dies of SIGKILL; this is for tidiness
                p.kill()
                victims.append(p)
    psutil.wait_procs(victims, timeout=timeout)
    return [p.pid for p in victims]


def kill_leftovers(loaded: LoadedConfig) -> list[int]:
    """Kill (by PID) every child the daemon of `loaded` started that still runs."""
    return kill_pids(known_pids(loaded.state_dir), target_commands(loaded))


@dataclass
class DaemonRun:
    daemon: Daemon
    task: asyncio.Task[None]

    @property
    def loaded(self) -> LoadedConfig:
        return self.daemon.loaded


@contextlib.asynccontextmanager
async def running_daemon(
    config: Path | LoadedConfig,
    *,
    stop_targets_on_exit: bool = False,
    cleanup: bool = True,
    doctor: Doctor | None = None,
    stop_timeout: float = 30.0,
) -> AsyncIterator[DaemonRun]:
    """Run a `Daemon` in a task; on exit always stop it (`request_stop`, then await it) and then, when `cleanup`,
    kill by PID every child of it that still runs.

    `stop_targets_on_exit` is False by default: the rig ends the children itself, because the daemon's own
    SIGTERM-then-SIGCONT can trip over a child that dies at once (see
    `test_stopping_a_child_that_dies_at_once_on_sigterm` in test_supervisor_real_processes.py).
    """
    loaded = config if isinstance(config, LoadedConfig) else load_config(config)
    daemon = Daemon(loaded, doctor, stop_targets_on_exit=stop_targets_on_exit)
    task = asyncio.get_running_loop().create_task(daemon.run(), name="clawmedic-daemon")
    try:
        yield DaemonRun(daemon, task)
    finally:
        daemon.request_stop()
        try:
            await asyncio.wait_for(task, stop_timeout)
        finally:
            if cleanup:
                kill_leftovers(loaded)


async def between_probes(request_log: Path, timeout: float = 10.0) -> None:
    """Return just after the stand-in answered a /health probe (it logs each one with `--request-log`), so an
    action taken now lands well before the next probe."""

    def count() -> int:
        try:
            return len(request_log.read_text().splitlines())
        except OSError:
            return 0

    seen = count()
    await wait_for(lambda: count() > seen, timeout, interval=0.005, what=f"a /health probe logged in {request_log}")
    await asyncio.sleep(0.05)  # let the answer reach the prober


# --- the rig ---------------------------------------------------------------------------------------------------


class Rig:
    """One test's config, state folder and daemon runs, with readers for what the daemon recorded."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.state_dir = tmp_path / "state"
        self.config_path = tmp_path / "clawmedic.toml"
        self.targets: list[StandinTarget] = []
        self._run: DaemonRun | None = None

    def write_config(
        self,
        *targets: StandinTarget,
        env_file: Mapping[str, str] | None = None,
        daemon: Mapping[str, Any] | None = None,
    ) -> Path:
        self.targets = list(targets)
        self.config_path = write_config(self.tmp_path, *targets, env_file=env_file, daemon=daemon)
        return self.config_path

    def load(self) -> LoadedConfig:
        return load_config(self.config_path)

    @contextlib.asynccontextmanager
    async def daemon(self, *, stop_targets_on_exit: bool = False, cleanup: bool = True) -> AsyncIterator[DaemonRun]:
        async with running_daemon(self.config_path, stop_targets_on_exit=stop_targets_on_exit, cleanup=cleanup) as run:
            self._run = run
            try:
                yield run
            finally:
                self._run = None

    def cleanup(self) -> list[int]:
        """Kill every child the daemon ever started for this config that is still running (the safety net)."""
        commands = [t.command() for t in self.targets]
        return kill_pids(known_pids(self.state_dir), commands)

    # --- reading the records ---

    def events(
        self, kind: str | None = None, target: str | None = "svc", *, since: float = 0.0
    ) -> list[dict[str, Any]]:
        return [
            e
            for e in read_events(events_path(self.state_dir))
            if (kind is None or e["kind"] == kind)
            and (target is None or e.get("target") in (target, None))
            and e["ts"] >= since
        ]

    def states(self, target: str = "svc", *, since: float = 0.0) -> list[str]:
        return [e["new"] for e in self.events("state", target, since=since)]

    def launched_pids(self, target: str = "svc", *, since: float = 0.0) -> list[int]:
        return [int(e["pid"]) for e in self.events("launched", target, since=since)]

    def status(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(status_path(self.state_dir).read_text())
        except (OSError, ValueError):
            return {}
        return data

    def target_status(self, target: str = "svc") -> dict[str, Any]:
        result: dict[str, Any] = self.status().get("targets", {}).get(target, {})
        return result

    def incidents(self) -> list[Incident]:
        """Every incident, oldest first, each with its timeline."""
        store = IncidentStore(incidents_path(self.state_dir))
        try:
            found = [store.get(i.id) for i in store.list(limit=1000)]
            return sorted((i for i in found if i is not None), key=lambda i: i.id)
        finally:
            store.close()

    def describe(self) -> str:
        lines = [json.dumps(e, default=str)[:300] for e in self.events(target=None)[-40:]]
        return "last events:\n  " + "\n  ".join(lines)

    # --- waiting ---

    async def wait_for(self, predicate: Callable[[], T | None], timeout: float = 20.0, what: str = "") -> T:
        watch = self._run.task if self._run is not None else None
        return await wait_for(predicate, timeout, what=what, describe=self.describe, watch=watch)

    async def wait_event(
        self, kind: str, target: str = "svc", *, since: float = 0.0, timeout: float = 20.0, **fields: Any
    ) -> dict[str, Any]:
        """The first event of `kind` (at or after `since`) whose fields equal `fields`."""

        def find() -> dict[str, Any] | None:
            for e in self.events(kind, target, since=since):
                if all(e.get(k) == v for k, v in fields.items()):
                    return e
            return None

        desc = f"a {kind!r} event" + (f" with {fields}" if fields else "")
        return await self.wait_for(find, timeout, desc)

    async def wait_state(
        self, state: str, target: str = "svc", *, since: float = 0.0, timeout: float = 20.0
    ) -> dict[str, Any]:
        """The first transition into `state` at or after `since`."""
        return await self.wait_event("state", target, since=since, timeout=timeout, new=state)
