"""Issue 10 §4, bad input: one sentence naming the file and the key, a documented exit code, never a traceback.

A seeded fuzz generator mutates one valid config (an `http` target running the stand-in service) into a few
hundred broken ones, one category of mistake each: wrong types, unknown keys, invalid UTF-8 in the config or the
env_file, `~nosuchuser` paths, unusable state and log folders, NUL bytes, `=` in env names, huge/tiny/inf/nan
numbers, malformed, scheme-less and non-http URLs, missing commands, cwd and restart_command, two targets on one
port, duplicate and path-like target names, and random truncations and byte flips of the file.

Every case runs `clawmedic config check`, `clawmedic status` and `clawmedic run`. The bulk runs in-process through
`clawmedic.cli.main` (a traceback there is an exception that fails the test); a sample runs as real subprocesses
(the console script, its own HOME). `run` must refuse at once with exit 2/3, or start: then it is stopped after
about a second (SIGTERM, or `request_stop` in-process) and must exit 0 without a traceback.

Plus explicit tests: path-like target names are refused; a log file in /tmp does not chmod /tmp; a world-writable
state folder clawmedic did not create is refused; the folders clawmedic creates are 0700 under umask 000.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import math
import os
import random
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
import typer
import typer.main

from clawmedic import cli, defaults
from clawmedic.config import DaemonConfig
from tests.helpers.rig import FAST_LIMITS, FAST_LIVENESS, REPO_ROOT, free_port, standin_command

SEED = 20261201
DOCUMENTED_EXITS = {defaults.EXIT_OK, defaults.EXIT_FAILURE, defaults.EXIT_CONFIG, defaults.EXIT_ENVIRONMENT}
CONFIG_NAME = "fuzz.toml"
SUBPROCESS_SAMPLE = 25  # configs also run through the real console script (python start-up is ~0.5 s each)
RUN_FOR_S = 0.8  # an accepted config's daemon runs this long before it is asked to stop

# --- the valid starting point ---------------------------------------------------------------------------------

Mutation = Callable[[dict[str, Any], Path, int], bytes | None]  # edit the config in place, or return raw bytes


def base_config(folder: Path, port: int, tag: str) -> dict[str, Any]:
    (folder / "secrets.env").write_text("FUZZ_TOKEN=s3cret-fuzz-token\n")
    (folder / "secrets.env").chmod(0o600)
    daemon_extra: dict[str, Any] = {"http": {"listen": ""}} if "http" in DaemonConfig.model_fields else {}
    return {
        "daemon": {
            **daemon_extra,  # no status page: every run would want the same port
            "state_dir": "state",
            "env_file": "secrets.env",
            "log_level": "info",
            "stop_targets_on_exit": True,
            "doctor": {"llm": {"backend": "off"}},
            "logfile": {"path": "logs/clawmedic.log"},
        },
        "targets": {
            "svc": {
                "kind": "http",
                "host": "127.0.0.1",
                "port": port,
                "start": {
                    "mode": "managed",
                    "command": standin_command(port, "--tag", tag),
                    "cwd": str(REPO_ROOT),
                    "env": {"FUZZ_MODE": "fuzz", "FUZZ_SECRET": "${FUZZ_TOKEN}"},
                },
                "liveness": {"url": f"http://127.0.0.1:{port}/health", "expect_json": {"ok": True}, **FAST_LIVENESS},
                "limits": dict(FAST_LIMITS),
            }
        },
    }


def _toml_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string (NUL becomes \u0000)
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{json.dumps(str(k))} = {_toml_scalar(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_scalar(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def to_toml(data: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> str:
    """Nested tables as [a.b] sections (so every key keeps its own line), everything else inline."""
    scalars = {k: v for k, v in data.items() if not (isinstance(v, Mapping) and v and k != "expect_json")}
    tables = {k: v for k, v in data.items() if k not in scalars}
    lines = []
    if prefix and (scalars or not tables):
        lines.append("[" + ".".join(json.dumps(p) for p in prefix) + "]")
    lines += [f"{json.dumps(str(k))} = {_toml_scalar(v)}" for k, v in scalars.items()]
    text = "\n".join(lines) + ("\n" if lines else "")
    for k, v in tables.items():
        text += "\n" + to_toml(v, (*prefix, str(k)))
    return text


def _at(cfg: dict[str, Any], path: str) -> tuple[dict[str, Any], str]:
    """The dict holding `path` ("targets.svc.liveness.url") and the last key; missing tables are created."""
    *parents, last = path.split(".")
    node = cfg
    for p in parents:
        node = node.setdefault(p, {})
    return node, last


def set_key(path: str, value: Any) -> Mutation:
    def mutate(cfg: dict[str, Any], folder: Path, port: int) -> None:
        node, last = _at(cfg, path)
        node[last] = value(folder, port) if callable(value) else value

    return mutate


def del_key(path: str) -> Mutation:
    def mutate(cfg: dict[str, Any], folder: Path, port: int) -> None:
        node, last = _at(cfg, path)
        node.pop(last, None)

    return mutate


def both(*mutations: Mutation) -> Mutation:
    def mutate(cfg: dict[str, Any], folder: Path, port: int) -> bytes | None:
        raw = None
        for m in mutations:
            raw = m(cfg, folder, port) or raw
        return raw

    return mutate


# --- the cases ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    category: str
    mutate: Mutation
    key: str | None  # a key (or fragment) the rejection must name; None: any
    reject: frozenset[str]  # commands that must refuse (exit 2, or 3 for a missing binary)
    code: int = defaults.EXIT_CONFIG


ALL = frozenset({"check", "status", "run"})
RUN = frozenset({"run"})
NONE: frozenset[str] = frozenset()
T = "targets.svc"

NUMBERS: dict[str, str] = {  # numeric keys: path -> "pos" (> 0) | "nonneg" | "int"
    f"{T}.liveness.interval_s": "pos",
    f"{T}.liveness.timeout_s": "pos",
    f"{T}.liveness.failure_threshold": "int",
    f"{T}.liveness.expect_status": "int",
    f"{T}.port": "int",
    f"{T}.limits.startup_timeout_s": "pos",
    f"{T}.limits.probation_s": "nonneg",
    f"{T}.limits.stop_timeout_s": "pos",
    f"{T}.limits.backoff_initial_s": "pos",
    f"{T}.limits.backoff_max_s": "pos",
    f"{T}.limits.backoff_jitter": "fraction",
    f"{T}.limits.crash_loop_failures": "int",
    f"{T}.limits.crash_loop_window_s": "pos",
    f"{T}.limits.memory_limit_mb": "int",
    f"{T}.limits.memory_check_interval_s": "pos",
    f"{T}.limits.snapshot_interval_s": "pos",
    "daemon.notify.repeat_interval_s": "nonneg",
    "daemon.heartbeat.interval_s": "pos",
    "daemon.guardian.stale_after_s": "pos",
    "daemon.logfile.keep_days": "int",
    "daemon.doctor.llm.max_steps": "int",
    "daemon.doctor.gateway_checks.interval_s": "pos",
}
BAD_NUMBERS: list[tuple[str, Any]] = [
    ("inf", math.inf),
    ("-inf", -math.inf),
    ("nan", math.nan),
    ("tiny", 1e-300),
    ("huge", 1e300),
    ("negative", -1),
    ("bigint", 2**62),
]

BAD_URLS: list[tuple[str, str]] = [
    ("schemeless", "127.0.0.1:{port}/health"),
    ("unclosed-ipv6", "http://[::1"),
    ("ftp", "ftp://127.0.0.1:{port}/health"),
    ("file", "file:///etc/passwd"),
    ("no-host", "http:///health"),
    ("empty", ""),
    ("words", "not a url"),
    ("bad-port", "http://127.0.0.1:99999/health"),
    ("space-host", "http://exa mple.com/"),
    ("javascript", "javascript:alert(1)"),
    ("nul", "http://127.0.0.1:{port}/he\x00alth"),
]
URL_KEYS = [f"{T}.liveness.url", f"{T}.readiness.url", "daemon.heartbeat.url", "daemon.doctor.llm.base_url"]

PATH_KEYS = [
    "daemon.state_dir",
    "daemon.env_file",
    "daemon.logfile.path",
    f"{T}.start.cwd",
    f"{T}.openclaw_home",
    f"{T}.log_file",
]

BAD_NAMES = ["../../x", "/abs/path", "", "a b", "-x", ".hidden", "x" * 65, "ü", "a/b", "..", "nul\x00", "a\\b"]


def _wrong_type(value: Any) -> list[Any]:
    if isinstance(value, bool):
        return ["maybe", [True]]
    if isinstance(value, int | float):
        return ["five", [1], {"a": 1}]
    if isinstance(value, str):
        return [5, ["x"], {"a": "b"}]
    if isinstance(value, list):
        return ["echo hi", {"a": 1}, [1, 2]]
    if isinstance(value, dict):
        return ["table", [1]]
    return []


def _leaves(data: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for k, v in data.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict) and v and k not in ("expect_json", "env"):
            yield from _leaves(v, path + ".")
        else:
            yield path, v


def _raw(edit: Callable[[bytes, Path, int], bytes]) -> Callable[[dict[str, Any], Path, int], bytes]:
    def mutate(cfg: dict[str, Any], folder: Path, port: int) -> bytes:
        return edit(to_toml(cfg).encode(), folder, port)

    return mutate


def _second_target(port_of: Callable[[int], int], name: str = "other", url: bool = False) -> Mutation:
    def mutate(cfg: dict[str, Any], folder: Path, port: int) -> None:
        other = copy.deepcopy(cfg["targets"]["svc"])
        p = port_of(port)
        if url:
            other.pop("port")
            other["liveness"]["url"] = f"http://127.0.0.1:{port}/health"
        else:
            other["port"] = p
        tag = other["start"]["command"][-1]  # base_config ends the command with "--tag", tag
        other["start"]["command"] = standin_command(p, "--tag", f"{tag}-other")
        cfg["targets"][name] = other

    return mutate


def _world_writable_dir(name: str) -> Callable[[Path, int], str]:
    def make(folder: Path, port: int) -> str:
        d = folder / name
        d.mkdir()
        d.chmod(0o777)
        return str(d)

    return make


def _existing_file(name: str) -> Callable[[Path, int], str]:
    def make(folder: Path, port: int) -> str:
        (folder / name).write_text("not a folder\n")
        return str(folder / name)

    return make


def _existing_dir(name: str) -> Callable[[Path, int], str]:
    def make(folder: Path, port: int) -> str:
        (folder / name).mkdir(mode=0o700)
        return str(folder / name)

    return make


def _bad_env_file(content: bytes) -> Mutation:
    def mutate(cfg: dict[str, Any], folder: Path, port: int) -> None:
        (folder / "secrets.env").write_bytes(content)

    return mutate


def _rename(name: str) -> Mutation:
    def mutate(cfg: dict[str, Any], folder: Path, port: int) -> None:
        cfg["targets"] = {name: cfg["targets"]["svc"]}

    return mutate


def _truncate(fraction: float) -> Callable[[bytes, Path, int], bytes]:
    return lambda b, f, p: b[: int(len(b) * fraction)]


def generate_cases() -> list[Case]:
    rng = random.Random(SEED)
    cases: list[Case] = []

    def add(
        cid: str, category: str, mutate: Mutation, key: str | None, reject: frozenset[str] = ALL, **kw: Any
    ) -> None:
        cases.append(Case(f"{category}:{cid}", category, mutate, key, reject, **kw))

    shape = {  # the base config's shape, without touching the disk
        "daemon": {
            "state_dir": "state",
            "env_file": "secrets.env",
            "log_level": "info",
            "stop_targets_on_exit": True,
            "doctor": {"llm": {"backend": "off"}},
            "logfile": {"path": "logs/clawmedic.log"},
        },
        "targets": {
            "svc": {
                "kind": "http",
                "host": "127.0.0.1",
                "port": 1,
                "start": {"mode": "managed", "command": ["x"], "cwd": "/", "env": {"A": "b"}},
                "liveness": {"url": "http://x/", "expect_json": {"ok": True}, **FAST_LIVENESS},
                "limits": dict(FAST_LIMITS),
            }
        },
    }

    # wrong types, for every leaf of the base config
    for path, value in _leaves(shape):
        for i, wrong in enumerate(_wrong_type(value)):
            add(f"{path}#{i}", "type", set_key(path, wrong), path.rsplit(".", 1)[-1])
    add("targets-list", "type", set_key("targets", ["svc"]), "targets")
    add("daemon-string", "type", set_key("daemon", "fast"), "daemon")
    add("env-int-value", "type", set_key(f"{T}.start.env", {"A": 1}), "env")

    # unknown keys, at every table
    for table in ["", "daemon.", "daemon.doctor.", "daemon.doctor.llm.", f"{T}.", f"{T}.start.", f"{T}.liveness.",
                  f"{T}.limits.", "daemon.logfile.", "daemon.notify."]:  # fmt: skip
        add(f"{table}intervall_s", "unknown-key", set_key(f"{table}intervall_s", 5), "intervall_s")
    add("misspelt-target-key", "unknown-key", set_key(f"{T}.livenes", {"url": "http://127.0.0.1/"}), "livenes")

    # invalid UTF-8 in the config or the env_file
    add("in-comment", "utf8", _raw(lambda b, f, p: b"# caf\xe9\n" + b), None)
    add("in-string", "utf8", _raw(lambda b, f, p: b.replace(b'"info"', b'"inf\xff"')), None)
    add("in-key", "utf8", _raw(lambda b, f, p: b.replace(b'"log_level"', b'"log_\xc3level"')), None)
    add("truncated-sequence", "utf8", _raw(lambda b, f, p: b + b"\n# \xe2\x82"), None)
    add("bom-utf16", "utf8", _raw(lambda b, f, p: b"\xff\xfe" + b.decode().encode("utf-16-le")), None)
    add("env-file", "utf8", _bad_env_file(b"FUZZ_TOKEN=caf\xe9\n"), "env_file")
    add("env-file-binary", "utf8", _bad_env_file(bytes(range(256))), "env_file")

    # ~nosuchuser paths
    for path in PATH_KEYS:
        add(path, "nosuchuser", set_key(path, "~nosuchuser-fuzz/x"), path.rsplit(".", 1)[-1])
    add("boot_files", "nosuchuser", set_key(f"{T}.boot_files", ["~nosuchuser-fuzz/unit"]), "boot_files")
    add("command", "nosuchuser", set_key(f"{T}.start.command", ["~nosuchuser-fuzz/bin/gw"]), "command", RUN,
        code=defaults.EXIT_ENVIRONMENT)  # fmt: skip

    # unusable state and log folders
    add("state-is-file", "folders", set_key("daemon.state_dir", _existing_file("afile")), "state_dir")
    add("state-under-file", "folders", set_key("daemon.state_dir", lambda f, p: _existing_file("afile2")(f, p) + "/s"),
        "state_dir")  # fmt: skip
    add("state-world-writable", "folders", set_key("daemon.state_dir", _world_writable_dir("ww")), "state_dir")
    # as root, only creating it tells /proc apart: `run` refuses, `status` (which creates nothing) may not
    add("state-in-proc", "folders", set_key("daemon.state_dir", "/proc/clawmedic-fuzz"), "state_dir", RUN)
    add("state-empty", "folders", set_key("daemon.state_dir", ""), "state_dir")
    add("log-is-dir", "folders", set_key("daemon.logfile.path", _existing_dir("logdir")), "logfile")
    add("log-in-world-writable", "folders", set_key("daemon.logfile.path", lambda f, p: _world_writable_dir("wwl")(
        f, p) + "/x.log"), "logfile")  # fmt: skip
    add("log-in-proc", "folders", set_key("daemon.logfile.path", "/proc/clawmedic-fuzz/x.log"), "logfile", RUN)
    add("log-empty", "folders", set_key("daemon.logfile.path", ""), "logfile")
    add("env-file-is-dir", "folders", set_key("daemon.env_file", _existing_dir("envdir")), "env_file")
    add("env-file-missing", "folders", set_key("daemon.env_file", "nope.env"), "env_file")

    # NUL bytes in strings
    for path in ["daemon.state_dir", "daemon.log_level", f"{T}.host", f"{T}.start.cwd", "daemon.logfile.path",
                 "daemon.env_file", f"{T}.openclaw_home"]:  # fmt: skip
        add(path, "nul", set_key(path, "sta\x00te"), path.rsplit(".", 1)[-1])
    add("command-arg", "nul", lambda c, f, p: c["targets"]["svc"]["start"]["command"].append("--x\x00y"), "command")
    add("env-value", "nul", set_key(f"{T}.start.env", {"A": "b\x00c"}), "env")
    add("env-name", "nul", set_key(f"{T}.start.env", {"A\x00B": "c"}), "env")
    add("env-file-value", "nul", _bad_env_file(b"FUZZ_TOKEN=a\x00b\n"), "env_file")

    # env names
    for i, name in enumerate(["A=B", "", "=", "FUZZ_TOKEN=x"]):
        add(f"env-name#{i}", "env-name", set_key(f"{T}.start.env", {name: "v"}), "env")

    # numbers
    for path, kind in NUMBERS.items():
        for label, value in BAD_NUMBERS:
            if kind in ("int", "fraction") and label == "tiny":
                continue  # 1e-300 is a fine fraction; as an int it is a plain type error, tested above
            add(f"{path}={label}", "number", set_key(path, value), path.rsplit(".", 1)[-1])
        if kind == "pos":
            add(f"{path}=0", "number", set_key(path, 0), path.rsplit(".", 1)[-1])

    # URLs
    for path in URL_KEYS:
        for label, url in BAD_URLS:
            add(f"{path}={label}", "url", set_key(path, lambda f, p, u=url: u.format(port=p)), path.rsplit(".", 1)[-1])
    for i, host in enumerate(["bad host", "", "http://x", "[::1", "a/b", "-x-"]):
        add(f"host#{i}", "url", set_key(f"{T}.host", host), "host")
    add("api-url", "url", set_key("daemon.github", {"repo": "a/b", "api_url": "api.github.com"}), "api_url")
    for label, url in BAD_URLS:  # Apprise URLs: any scheme, checked by Apprise when `run` starts
        if label != "nul":
            add(f"notify={label}", "url", set_key("daemon.notify.urls", [url.format(port=1)]), "notify.urls", RUN)

    # commands, cwd, restart_command
    missing = defaults.EXIT_ENVIRONMENT
    add("no-such-binary", "command", set_key(f"{T}.start.command", ["no-such-binary-fuzz", "x"]), "command", RUN,
        code=missing)  # fmt: skip
    add("no-such-path", "command", set_key(f"{T}.start.command", ["/nonexistent/fuzz/bin"]), "command", RUN,
        code=missing)  # fmt: skip
    add("not-executable", "command", set_key(f"{T}.start.command", lambda f, p: [str(f / "secrets.env")]), "command",
        RUN, code=missing)  # fmt: skip
    add("empty-list", "command", set_key(f"{T}.start.command", []), "command")
    add("empty-program", "command", set_key(f"{T}.start.command", [""]), "command")
    add("cwd-missing", "command", set_key(f"{T}.start.cwd", "/nonexistent/fuzz"), "cwd", RUN)
    add("cwd-is-file", "command", set_key(f"{T}.start.cwd", lambda f, p: str(f / "secrets.env")), "cwd", RUN)
    ext = {"mode": "external", "restart_command": ["no-such-restart-fuzz"]}
    add("restart-missing", "command", set_key(f"{T}.start", ext), "restart_command", RUN, code=missing)
    add("restart-empty", "command", set_key(f"{T}.start", {"mode": "external", "restart_command": []}), "restart")
    add("stop-missing", "command", set_key(f"{T}.start", {**ext, "restart_command": ["true"], "stop_command": [
        "no-such-stop-fuzz"]}), "stop_command", RUN, code=missing)  # fmt: skip
    add("secret-program", "command", set_key(f"{T}.start.command", ["${FUZZ_TOKEN}"]), "command", RUN, code=missing)

    # two targets on one port
    add("same-port", "port", _second_target(lambda p: p), "port")
    add("same-port-by-url", "port", _second_target(lambda p: p, url=True), "port", NONE)  # two probes may share one
    add("same-port-other-name", "port", _second_target(lambda p: p, name="gw2"), "port")

    # target names
    for i, name in enumerate(BAD_NAMES):
        add(f"name#{i}", "name", _rename(name), "targets")
    add("duplicate", "name", _raw(lambda b, f, p: b + b'\n[targets.svc]\nkind = "http"\n'), None)
    add("duplicate-quoted", "name", _raw(lambda b, f, p: b + b'\n[targets."svc"]\nport = 1\n'), None)
    add("no-targets", "name", set_key("targets", {}), "targets")
    add("targets-missing", "name", del_key("targets"), "targets")

    # wrong literals and structure
    add("log-level", "literal", set_key("daemon.log_level", "verbose"), "log_level")
    add("kind", "literal", set_key(f"{T}.kind", "ssh"), "kind")
    add("mode", "literal", set_key(f"{T}.start.mode", "docker"), "mode")
    add("expect-status", "literal", set_key(f"{T}.liveness.expect_status", 999), "expect_status")
    add("empty-file", "literal", _raw(lambda b, f, p: b""), None)
    add("not-toml", "literal", _raw(lambda b, f, p: b'{"json": true}\n'), None)
    add("huge-string", "literal", set_key("daemon.log_level", "x" * 1_000_000), "log_level")

    # random truncations and byte flips of the valid file (anything may happen, except a traceback)
    for i in range(12):
        cut = rng.random()
        add(f"truncate#{i}", "random", _raw(_truncate(cut)), None, NONE)
    for i in range(12):
        seed = rng.randrange(1 << 30)

        def flip(b: bytes, f: Path, p: int, s: int = seed) -> bytes:
            r = random.Random(s)
            data = bytearray(b)
            for _ in range(r.randint(1, 4)):
                data[r.randrange(len(data))] = r.choice(b'"[]=.\\\x00\n{}#~/ 9eE\xff')
            return bytes(data)

        add(f"flip#{i}", "random", _raw(flip), None, NONE)
    return cases


CASES = generate_cases()


# --- running clawmedic ------------------------------------------------------------------------------------------


@dataclass
class Result:
    command: str
    code: int
    output: str  # stdout + stderr


def cli_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CLAWMEDIC_CONFIG", "COLUMNS", "LINES")}
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_STATE_HOME=str(home / ".local" / "state"),
        XDG_CACHE_HOME=str(home / ".cache"),
        CLAWMEDIC_CACHE_DIR=str(home / ".cache" / "clawmedic"),
        FUZZ_ENV_ONLY="1",
    )
    return env


ARGS = {"check": ["config", "check"], "status": ["status"], "run": ["run"]}


_COMMANDS: dict[int, Any] = {}


def _cached_get_command(typer_app: typer.Typer) -> Any:
    """Typer builds the whole click command tree on every call (~70 ms of signature inspection): once is enough."""
    if id(typer_app) not in _COMMANDS:
        _COMMANDS[id(typer_app)] = (typer_app, _REAL_GET_COMMAND(typer_app))
    return _COMMANDS[id(typer_app)][1]


_REAL_GET_COMMAND = typer.main.get_command


def in_process(command: str, config: Path, monkeypatch: pytest.MonkeyPatch) -> Result:
    """`clawmedic.cli.main` in this process: SystemExit is the exit code; any other exception fails the test."""
    from clawmedic.daemon import Daemon

    monkeypatch.setattr(typer.main, "get_command", _cached_get_command)

    real_run = Daemon.run

    async def run_briefly(self: Daemon) -> None:
        import asyncio

        asyncio.get_running_loop().call_later(RUN_FOR_S, self.request_stop)
        await real_run(self)

    monkeypatch.setattr(Daemon, "run", run_briefly)
    monkeypatch.setattr(sys, "argv", ["clawmedic", *ARGS[command], "--config", str(config)])
    # `run` configures the process (logging handlers, excepthooks): give it all back for the tests that follow
    logger = logging.getLogger("clawmedic")
    before = list(logger.handlers)
    for obj, attr in ((sys, "excepthook"), (threading, "excepthook")):
        monkeypatch.setattr(obj, attr, getattr(obj, attr))
    for attr in ("handlers", "level", "propagate"):
        monkeypatch.setattr(logger, attr, copy.copy(getattr(logger, attr)))
    buf = io.StringIO()
    code = 0
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            try:
                cli.main()
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        for h in logger.handlers:
            if h not in before:
                h.close()
    return Result(command, code, buf.getvalue())


def _argv(command: str, config: Path) -> list[str]:
    return [str(Path(sys.executable).parent / "clawmedic"), *ARGS[command], "--config", str(config)]


def as_subprocess(command: str, config: Path, home: Path) -> Result:
    r = subprocess.run(
        _argv(command, config), stdin=subprocess.DEVNULL, env=cli_env(home), cwd=home, capture_output=True,
        text=True, timeout=60, check=False,
    )  # fmt: skip
    return Result(command, r.returncode, r.stdout + r.stderr)


class RunningDaemon:
    """`clawmedic run` as a subprocess: it refuses (exits by itself), or says it supervises; then it gets SIGTERM."""

    def __init__(self, config: Path, home: Path) -> None:
        self.proc = subprocess.Popen(
            _argv("run", config), stdin=subprocess.DEVNULL, env=cli_env(home), cwd=home, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        self.lines: list[str] = []
        self.started = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            if "supervising" in line:
                self.started.set()

    def finish(self) -> Result:
        try:
            deadline = time.monotonic() + 30
            while self.proc.poll() is None and not self.started.wait(0.05) and time.monotonic() < deadline:
                pass
            if self.proc.poll() is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(RUN_FOR_S)  # it must not die by itself
                if self.proc.poll() is None:
                    self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.reader.join(5)
        return Result("run", self.proc.returncode, "".join(self.lines))


def kill_tagged(tag: str, children_only: bool = False) -> None:
    """End the stand-ins this case started (their command line carries the case's tag), by PID: our own children
    (an in-process daemon's), or any process (a subprocess daemon's, which outlive it)."""
    procs = psutil.Process().children(recursive=True) if children_only else psutil.process_iter()
    for p in procs:
        with contextlib.suppress(psutil.Error):
            argv = p.cmdline()
            if any(a.startswith(tag) for a in argv) and "--tag" in argv:
                p.kill()
                p.wait(5)


def build(case: Case, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    tag = f"fuzz-{abs(hash(case.id)) % 10**8}-{os.getpid()}"
    cfg = base_config(folder, port, tag)
    raw = case.mutate(cfg, folder, port)
    path = folder / CONFIG_NAME
    path.write_bytes(raw if raw is not None else to_toml(cfg).encode())
    (folder / ".tag").write_text(tag)
    return path


def check(case: Case, result: Result) -> None:
    shown = f"{case.id} / {result.command}: exit {result.code}\n{result.output[-3000:]}"
    assert "Traceback" not in result.output, shown
    assert result.code in DOCUMENTED_EXITS, shown
    if result.command in case.reject:
        assert result.code == case.code, shown
    if result.code in (defaults.EXIT_CONFIG, defaults.EXIT_ENVIRONMENT):
        lines = [ln for ln in result.output.splitlines() if "error:" in ln]
        assert len(lines) == 1, shown
        assert CONFIG_NAME in lines[0] or "--config" in lines[0], shown  # names the file
        if case.key is not None and result.command in case.reject:
            assert case.key in lines[0], shown  # and the key


@pytest.fixture
def fuzz_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    for k, v in cli_env(home).items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("CLAWMEDIC_CONFIG", raising=False)
    return home


def test_the_fuzz_covers_every_category() -> None:
    categories = {c.category for c in CASES}
    assert len(CASES) >= 200, len(CASES)
    assert categories >= {"type", "unknown-key", "utf8", "nosuchuser", "folders", "nul", "env-name", "number", "url",
                          "command", "port", "name", "random"}  # fmt: skip
    assert len({c.id for c in CASES}) == len(CASES)


def test_the_base_config_is_accepted(tmp_path: Path, fuzz_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = build(Case("base", "base", lambda c, f, p: None, None, NONE), tmp_path / "cfg")
    try:
        for command in ("status", "run"):
            r = in_process(command, config, monkeypatch)
            # accepted; `status` says no daemon runs (exit 1), `run` supervises briefly and stops (exit 0)
            expected = defaults.EXIT_FAILURE if command == "status" else defaults.EXIT_OK
            assert r.code == expected and "Traceback" not in r.output, r.output
    finally:
        kill_tagged((tmp_path / "cfg" / ".tag").read_text())


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_config_in_process(case: Case, tmp_path: Path, fuzz_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = build(case, tmp_path / "cfg")
    try:
        for command in ("check", "status", "run"):
            check(case, in_process(command, config, monkeypatch))
    finally:
        kill_tagged((tmp_path / "cfg" / ".tag").read_text(), children_only=True)


def _sample() -> list[int]:
    """One case of every category, then random ones up to SUBPROCESS_SAMPLE (seeded: the same cases every run)."""
    rng = random.Random(SEED)
    picked = {
        rng.choice([i for i, c in enumerate(CASES) if c.category == cat]) for cat in sorted({c.category for c in CASES})
    }
    rest = [i for i in range(len(CASES)) if i not in picked]
    return sorted(picked | set(rng.sample(rest, SUBPROCESS_SAMPLE - len(picked))))


SAMPLE = _sample()


@pytest.mark.parametrize("case", [CASES[i] for i in SAMPLE], ids=[CASES[i].id for i in SAMPLE])
def test_bad_config_as_subprocess(case: Case, tmp_path: Path, fuzz_home: Path) -> None:
    config = build(case, tmp_path / "cfg")
    try:
        daemon = RunningDaemon(config, fuzz_home)  # starting while the other two run: 2 cores, 2 processes
        try:
            for command in ("check", "status"):
                check(case, as_subprocess(command, config, fuzz_home))
        finally:
            ran = daemon.finish()
        check(case, ran)
    finally:
        kill_tagged((tmp_path / "cfg" / ".tag").read_text())


# --- explicit promises ------------------------------------------------------------------------------------------


def _write(folder: Path, cfg: dict[str, Any]) -> Path:
    path = folder / CONFIG_NAME
    path.write_text(to_toml(cfg))
    return path


@pytest.mark.parametrize("name", ["../../x", "/abs/path", "a/../../y"])
def test_a_path_like_target_name_is_refused(
    name: str, tmp_path: Path, fuzz_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "cfg"
    folder.mkdir()
    cfg = base_config(folder, free_port(), "fuzz-name")
    cfg["targets"] = {name: cfg["targets"]["svc"]}
    config = _write(folder, cfg)
    before = sorted(p for p in tmp_path.rglob("*"))
    outside = Path("/abs/path")
    existed = outside.exists()
    for command in ("status", "run"):
        r = in_process(command, config, monkeypatch)
        assert r.code == defaults.EXIT_CONFIG, r.output
        assert CONFIG_NAME in r.output and "targets." in r.output and "target name" in r.output, r.output
    assert sorted(p for p in tmp_path.rglob("*")) == before  # nothing written, inside the state folder or out of it
    assert outside.exists() == existed  # the old code made /abs/path/{output.log,process.json}


def test_a_log_file_in_tmp_does_not_chmod_tmp(tmp_path: Path, fuzz_home: Path) -> None:
    from clawmedic.config import load_config
    from clawmedic.logfiles import HANDLER_NAME, setup_file_logging

    folder = tmp_path / "cfg"
    folder.mkdir()
    log = Path("/tmp") / f"clawmedic-bad-input-{os.getpid()}-{tmp_path.name}.log"
    cfg = base_config(folder, free_port(), "fuzz-log")
    cfg["daemon"]["logfile"] = {"path": str(log)}
    before = Path("/tmp").stat()
    try:
        assert setup_file_logging(load_config(_write(folder, cfg))) == log
        logging.getLogger("clawmedic").warning("a line for the log file")
        after = Path("/tmp").stat()
        assert stat.S_IMODE(after.st_mode) == stat.S_IMODE(before.st_mode)  # 1777 stays 1777
        assert (after.st_uid, after.st_gid) == (before.st_uid, before.st_gid)
        assert stat.S_IMODE(log.stat().st_mode) == 0o600
    finally:
        if stat.S_IMODE(Path("/tmp").stat().st_mode) != stat.S_IMODE(before.st_mode):
            Path("/tmp").chmod(stat.S_IMODE(before.st_mode))  # undo the old bug at once: the whole machine uses /tmp
        for h in list(logging.getLogger("clawmedic").handlers):
            if h.get_name() == HANDLER_NAME:
                logging.getLogger("clawmedic").removeHandler(h)
                h.close()
        log.unlink(missing_ok=True)  # the file this test made


def test_a_log_file_in_a_world_writable_folder_that_is_not_sticky_is_refused(
    tmp_path: Path, fuzz_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "cfg"
    folder.mkdir()
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    cfg = base_config(folder, free_port(), "fuzz-log2")
    cfg["daemon"]["logfile"] = {"path": str(shared / "clawmedic.log")}
    r = in_process("run", _write(folder, cfg), monkeypatch)
    assert r.code == defaults.EXIT_CONFIG and "daemon.logfile.path" in r.output and "not sticky" in r.output, r.output
    assert stat.S_IMODE(shared.stat().st_mode) == 0o777 and not (shared / "clawmedic.log").exists()


def test_a_world_writable_state_folder_not_created_by_us_is_refused(
    tmp_path: Path, fuzz_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "cfg"
    folder.mkdir()
    state = tmp_path / "shared-state"
    state.mkdir()
    state.chmod(0o777)
    cfg = base_config(folder, free_port(), "fuzz-state")
    cfg["daemon"]["state_dir"] = str(state)
    config = _write(folder, cfg)
    for command in ("status", "run"):
        r = in_process(command, config, monkeypatch)
        assert r.code == defaults.EXIT_CONFIG, r.output
        assert CONFIG_NAME in r.output and "daemon.state_dir" in r.output and "other users" in r.output, r.output
    assert stat.S_IMODE(state.stat().st_mode) == 0o777  # refused, not silently tightened
    assert list(state.iterdir()) == []


def test_folders_clawmedic_creates_are_0700_under_umask_000(
    tmp_path: Path, fuzz_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from clawmedic.paths import ensure_private_dir
    from clawmedic.store.files import atomic_write, private_file

    folder = tmp_path / "cfg"
    folder.mkdir()
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o755)
    theirs.chmod(0o755)
    cfg = base_config(folder, free_port(), "fuzz-umask")
    cfg["daemon"]["state_dir"] = str(theirs / "state")
    del cfg["daemon"]["logfile"]  # the default: <state>/logs/clawmedic.log
    old = os.umask(0)
    try:
        r = in_process("run", _write(folder, cfg), monkeypatch)  # a real daemon run: state, targets/svc, logs …
        ensure_private_dir(theirs / "state" / "a" / "b")
        atomic_write(theirs / "state" / "reports" / "incident-1.md", "# report\n")
        private_file(theirs / "state" / "targets" / "other" / "output.log")
    finally:
        os.umask(old)
        kill_tagged("fuzz-umask")
    assert r.code == defaults.EXIT_OK, r.output
    made = [p for p in (theirs / "state").rglob("*") if p.is_dir()] + [theirs / "state"]
    assert {"a", "b", "reports", "targets", "svc", "other", "logs"} <= {p.name for p in made}
    assert {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in made} == {p.name: "0o700" for p in made}
    assert stat.S_IMODE(theirs.stat().st_mode) == 0o755  # the folder it did not create is left alone


def test_a_url_the_checks_missed_is_a_failed_probe_not_a_dead_daemon() -> None:
    import asyncio

    from clawmedic.config import ProbeConfig
    from clawmedic.probes import Prober

    async def probe(url: str) -> tuple[bool, str]:
        prober = Prober()
        try:
            result = await prober.http(ProbeConfig.model_construct(url=url, expect_status=200, timeout_s=1.0))
        finally:
            await prober.aclose()
        return result.ok, result.detail

    for url in ("http://[::1", "127.0.0.1:1/health", "ftp://127.0.0.1/", "http://exa mple.com:99999/"):
        ok, detail = asyncio.run(probe(url))
        assert not ok and detail, (url, detail)


def test_the_base_config_runs_and_stops_cleanly_as_a_subprocess(tmp_path: Path, fuzz_home: Path) -> None:
    """The control for the sample above: the real console script starts, supervises, and exits 0 on SIGTERM."""
    config = build(Case("base", "base", lambda c, f, p: None, None, NONE), tmp_path / "cfg")
    try:
        ran = RunningDaemon(config, fuzz_home).finish()
    finally:
        kill_tagged((tmp_path / "cfg" / ".tag").read_text())
    assert ran.code == defaults.EXIT_OK and "supervising" in ran.output and "Traceback" not in ran.output, ran.output
