"""An isolated, real OpenClaw gateway: its own HOME and state, loopback bind, a free port, a generated token in a
0600 file, its own `logging.file`, `OPENCLAW_SUPERVISOR_MODE=external` — and a clawmedic config whose one target
is that gateway. The CLI's `sandbox` commands, the demo, the tests and the benchmarks all use this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

from clawmedic import paths
from clawmedic.errors import EnvironmentMissing
from clawmedic.process import inspect
from clawmedic.process.launcher import Handle, Launcher
from clawmedic.sandbox.install import Install
from clawmedic.store.files import atomic_write
from clawmedic.store.lock import holder_pid

TARGET = "gateway"
BOOT_TIMEOUT_S = 120.0  # FACTS §1: 7-25 s, slower on a loaded 2-core machine; a first boot with a fresh HOME is slowest


def default_dir() -> Path:
    return paths.default_state_dir() / "sandbox" / "default"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Sandbox:
    root: Path

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def openclaw_json(self) -> Path:
        return self.home / ".openclaw" / "openclaw.json"

    @property
    def token_file(self) -> Path:
        return self.root / "token"

    @property
    def env_file(self) -> Path:
        return self.root / "secrets.env"

    @property
    def config_path(self) -> Path:
        return self.root / "clawmedic.toml"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def log_file(self) -> Path:
        return self.root / "gateway.log"

    @property
    def meta_path(self) -> Path:
        return self.root / "sandbox.json"

    @property
    def meta(self) -> dict[str, Any]:
        try:
            data = json.loads(self.meta_path.read_text())
        except (OSError, ValueError):
            raise EnvironmentMissing(f"No sandbox at {self.root}: run `clawmedic sandbox up` first.") from None
        return dict(data)

    @property
    def port(self) -> int:
        return int(self.meta["port"])

    @property
    def token(self) -> str:
        return self.token_file.read_text().strip()

    @property
    def launcher(self) -> Launcher:
        return Launcher(self.state_dir / "targets" / TARGET)

    def exists(self) -> bool:
        return self.meta_path.exists() and self.config_path.exists()

    def describe(self) -> dict[str, Any]:
        handle = self.launcher.adopt()
        return {
            "dir": str(self.root),
            "port": self.port,
            "url": f"http://127.0.0.1:{self.port}",
            "home": str(self.home),
            "openclaw_json": str(self.openclaw_json),
            "log_file": str(self.log_file),
            "config": str(self.config_path),
            "token_file": str(self.token_file),
            "state_dir": str(self.state_dir),
            "pid": handle.pid if handle else None,
            "daemon_pid": holder_pid(self.state_dir),
        }


def create(
    root: Path,
    install: Install,
    *,
    port: int | None = None,
    limits: dict[str, float] | None = None,
    liveness: dict[str, float] | None = None,
    llm: dict[str, str] | None = None,
) -> Sandbox:
    """Write a sandbox's files (idempotent for an existing sandbox: its port and token are kept). `llm`: the
    `[daemon.doctor.llm]` settings, e.g. {"backend": "off"} (default: none, i.e. the embedded model if installed)."""
    sb = Sandbox(root)
    paths.ensure_private_dir(root)
    paths.ensure_private_dir(sb.home / ".openclaw")
    old = sb.meta if sb.meta_path.exists() else {}
    port = port or int(old.get("port", 0)) or free_port()
    if not sb.token_file.exists():
        atomic_write(sb.token_file, secrets.token_urlsafe(24) + "\n")
    atomic_write(sb.env_file, f"OPENCLAW_GATEWAY_TOKEN={sb.token}\n")
    gateway_cfg = {
        "gateway": {"mode": "local", "port": port, "bind": "loopback"},
        "logging": {"file": str(sb.log_file)},
    }
    atomic_write(sb.openclaw_json, json.dumps(gateway_cfg, indent=2) + "\n")
    atomic_write(sb.config_path, _clawmedic_toml(sb, install, port, limits or {}, liveness or {}, llm or {}))
    atomic_write(sb.meta_path, json.dumps({"port": port, "install": str(install.root), "created_at": time.time()}))
    return sb


STANDIN_API_KEY = "sk-standin"  # the key the loopback model stand-in is given; it checks none


def use_models(
    sb: Sandbox,
    base_url: str,
    primary: str,
    order: list[str],
    *,
    probe_interval_s: float,
    check_interval_s: float | None = None,
) -> None:
    """Make an OpenAI-compatible server at `base_url` (the loopback model stand-in) the gateway's model provider:
    one provider per "provider/model" of `primary` and `order` (FACTS §8's wiring), `primary` the default model, and
    `[targets.NAME.models] order` in the clawmedic config (`check_interval_s`: the gateway checks' interval)."""
    cfg = json.loads(sb.openclaw_json.read_text())
    providers = {}
    for ref in [primary, *order]:
        provider, model = ref.split("/", 1)
        providers[provider] = {
            "baseUrl": base_url,
            "apiKey": STANDIN_API_KEY,
            "api": "openai-completions",
            "models": [{"id": model, "name": model}],
        }
    cfg["models"] = {"providers": providers}
    cfg["agents"] = {"defaults": {"model": {"primary": primary}}}
    atomic_write(sb.openclaw_json, json.dumps(cfg, indent=2) + "\n")
    extra = ""
    if check_interval_s is not None:
        extra += f"\n[daemon.doctor.gateway_checks]\ninterval_s = {_toml_value(float(check_interval_s))}\n"
    extra += (
        f"\n[targets.{TARGET}.models]\norder = {_toml_value(order)}\n"
        f"probe_interval_s = {_toml_value(probe_interval_s)}\n"
    )
    atomic_write(sb.config_path, sb.config_path.read_text() + extra)


def _toml_value(v: object) -> str:
    return json.dumps(v)  # JSON strings, numbers and arrays of strings are valid TOML


def _clawmedic_toml(
    sb: Sandbox,
    install: Install,
    port: int,
    limits: dict[str, float],
    liveness: dict[str, float],
    llm: dict[str, str],
) -> str:
    command = install.command("gateway", "run", "--bind", "loopback", "--port", str(port))
    lines = [
        "# clawmedic config for a sandboxed OpenClaw gateway, written by `clawmedic sandbox up`.",
        "[daemon]",
        'state_dir = "state"',
        'env_file = "secrets.env"  # OPENCLAW_GATEWAY_TOKEN, 0600',
        "",
        f"[targets.{TARGET}]",
        'kind = "openclaw"',
        f"port = {port}",
        f"openclaw_home = {_toml_value(str(sb.home))}",
        f"log_file = {_toml_value(str(sb.log_file))}",
        "",
        f"[targets.{TARGET}.start]",
        'mode = "managed"',
        f"command = {_toml_value(command)}",
        f"cwd = {_toml_value(str(sb.home))}",
        "",
        f"[targets.{TARGET}.start.env]",
        f"HOME = {_toml_value(str(sb.home))}",
        'OPENCLAW_SUPERVISOR_MODE = "external"',
        'OPENCLAW_GATEWAY_TOKEN = "${OPENCLAW_GATEWAY_TOKEN}"',
    ]
    if llm:
        lines += ["", "[daemon.doctor.llm]", *(f"{k} = {_toml_value(v)}" for k, v in llm.items())]
    if liveness:
        lines += ["", f"[targets.{TARGET}.liveness]", *(f"{k} = {_toml_value(v)}" for k, v in liveness.items())]
    if limits:
        lines += ["", f"[targets.{TARGET}.limits]", *(f"{k} = {_toml_value(v)}" for k, v in limits.items())]
    return "\n".join(lines) + "\n"


def open_existing(root: Path) -> Sandbox:
    sb = Sandbox(root)
    if not sb.exists():
        raise EnvironmentMissing(f"No sandbox at {root}: run `clawmedic sandbox up` first.")
    return sb


def health(port: int, timeout: float = 2.0) -> bool:
    try:
        r = httpx.get(f"http://127.0.0.1:{port}/health", timeout=timeout, trust_env=False)
        return r.status_code == 200 and r.json().get("ok") is True
    except (httpx.HTTPError, ValueError):
        return False


def wait_healthy(port: int, timeout_s: float = BOOT_TIMEOUT_S, pid: int | None = None) -> float:
    """Block until /health answers {"ok":true}; return the seconds waited. Raises EnvironmentMissing."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if health(port, timeout=1.0):
            return time.monotonic() - t0
        if pid is not None and not inspect.is_alive(pid):
            raise EnvironmentMissing(f"The sandboxed gateway (pid {pid}) exited while booting.")
        time.sleep(0.2)
    raise EnvironmentMissing(f"The sandboxed gateway did not answer /health on port {port} within {timeout_s:g} s.")


def start_gateway(sb: Sandbox) -> Handle:
    """Start the sandbox's gateway detached (its own session), recorded so a clawmedic daemon adopts it."""
    from clawmedic.config import load_config
    from clawmedic.supervisor import launch_spec

    existing = sb.launcher.adopt()
    if existing is not None:
        return existing
    spec = launch_spec(load_config(sb.config_path), TARGET)  # exactly as the daemon would launch it

    async def spawn() -> Handle:
        return await sb.launcher.spawn(spec.command, spec.env, spec.cwd)

    return asyncio.run(spawn())


def stop_daemon(sb: Sandbox, timeout_s: float = 30.0) -> int | None:
    """SIGTERM the clawmedic daemon supervising this sandbox (it holds the sandbox's own state lock)."""
    pid = holder_pid(sb.state_dir)
    if pid is None:
        return None
    with contextlib.suppress(psutil.Error):
        p = psutil.Process(pid)
        p.terminate()
        p.wait(timeout_s)
    return pid


def stop_gateway(sb: Sandbox, timeout_s: float = 30.0) -> int | None:
    handle = sb.launcher.adopt()
    if handle is None:
        return None

    async def stop() -> None:
        await handle.stop(timeout_s)

    asyncio.run(stop())
    sb.launcher.forget()
    return handle.pid


def ensure_dir_is_ours(root: Path) -> None:
    if root.exists() and any(root.iterdir()) and not (root / "sandbox.json").exists():
        raise EnvironmentMissing(f"{root} exists and is not a clawmedic sandbox; choose another --dir.")


def pids_using(root: Path) -> list[int]:
    """Processes of this sandbox: a command line that mentions its folder, or a HOME inside it (the gateway renames
    its process to `openclaw-gateway`, so its command line no longer shows the path)."""
    out = []
    mine = {os.getpid(), *(p.pid for p in psutil.Process().parents())}  # e.g. `flock … clawmedic drill --dir ROOT`
    for p in psutil.process_iter(["pid", "cmdline"]):
        if p.pid in mine:
            continue
        cmd = " ".join(p.info.get("cmdline") or [])
        try:
            home = p.environ().get("HOME", "")
        except psutil.Error:
            home = ""
        if str(root) in cmd or (home and Path(home).is_relative_to(root)):
            out.append(p.pid)
    return out
