"""What clawmedic knows about an OpenClaw target: its boot-critical files, its CLI, and how to validate its config.

Validation is two stages: a JSON5 parse (milliseconds, in-process), then `openclaw config validate --json` (about
2 s: the gateway's own strict schema). A candidate file that is not at the live location is validated by the CLI
in a throw-away HOME holding a copy of it, so checking never touches the live config.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import json5

from clawmedic import defaults
from clawmedic.config import LoadedConfig, TargetConfig

CONFIG_KEY = "openclaw.json"


@dataclass(frozen=True)
class Validation:
    valid: bool
    stage: str  # "missing" | "parse" | "schema" | "ok" | "unchecked" (the CLI could not run: parse only)
    issues: list[str] = field(default_factory=list)
    digest: str = ""

    def summary(self) -> str:
        if self.valid:
            return "valid" + (" (JSON5 only: the openclaw CLI could not run)" if self.stage == "unchecked" else "")
        return "; ".join(self.issues) or self.stage

    def to_dict(self) -> dict[str, object]:
        return {"valid": self.valid, "stage": self.stage, "issues": self.issues, "digest": self.digest}


def loads(text: str) -> Any:
    """`json5.loads`, with a too deeply nested document (json5 recurses: ~500 levels of `[` exhaust the stack)
    raised as the ValueError any other unparsable file raises, so every reader of openclaw.json treats it as one."""
    try:
        return json5.loads(text)
    except RecursionError:
        raise ValueError("the document is nested too deeply to parse") from None


def gateway_home(cfg: TargetConfig) -> Path:
    """The HOME whose .openclaw/ holds the config: `openclaw_home`, else HOME in start.env, else the user's."""
    if cfg.openclaw_home is not None:
        return cfg.openclaw_home.expanduser()
    if "HOME" in cfg.start.env:
        return Path(cfg.start.env["HOME"]).expanduser()
    return Path.home()


def config_path(cfg: TargetConfig) -> Path:
    return gateway_home(cfg) / ".openclaw" / CONFIG_KEY


def default_model(cfg: TargetConfig) -> str | None:
    """`agents.defaults.model.primary` of openclaw.json ("provider/model"; a bare string model too), or None."""
    try:
        data = loads(config_path(cfg).read_text())
    except (OSError, ValueError):
        return None
    node: object = data
    for key in ("agents", "defaults", "model"):
        node = node.get(key) if isinstance(node, dict) else None
    if isinstance(node, str):
        return node or None
    primary = node.get("primary") if isinstance(node, dict) else None
    return primary if isinstance(primary, str) and primary else None


def boot_files(cfg: TargetConfig) -> dict[str, Path]:
    """Boot-critical files to track, by stable key: openclaw.json plus any the user lists."""
    files: dict[str, Path] = {}
    if cfg.kind == "openclaw":
        files[CONFIG_KEY] = config_path(cfg)
    for p in cfg.boot_files:
        key = p.name
        n = 2
        while key in files:
            key = f"{p.name}.{n}"
            n += 1
        files[key] = p.expanduser()
    return files


def cli_command(cfg: TargetConfig) -> list[str] | None:
    """The openclaw CLI prefix: `openclaw_command`, else the start command up to its `gateway` argument."""
    if cfg.openclaw_command:
        return list(cfg.openclaw_command)
    cmd = cfg.start.command or []
    if "gateway" in cmd:
        return cmd[: cmd.index("gateway")]
    return None


def cli_env(loaded: LoadedConfig, name: str) -> dict[str, str]:
    env = {**os.environ, **loaded.command_env(name)}
    env["HOME"] = str(gateway_home(loaded.targets[name]))
    return env


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def parse(data: bytes) -> Validation:
    d = digest(data)
    try:
        parsed = loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        return Validation(False, "parse", [f"JSON5 parse failed: {e}"], d)
    if not isinstance(parsed, dict):
        return Validation(False, "parse", ["the config is not an object"], d)
    return Validation(True, "parse", [], d)


def validate(loaded: LoadedConfig, name: str, candidate: Path | None = None) -> Validation:
    """Validate the live config of target `name`, or a `candidate` file as if it were the live one."""
    cfg = loaded.targets[name]
    live = config_path(cfg)
    path = candidate or live
    if not path.is_file():
        return Validation(False, "missing", [f"{path} does not exist"])
    data = path.read_bytes()
    first = parse(data)
    if not first.valid:
        return first
    cli = cli_command(cfg)
    if cli is None:
        return Validation(True, "unchecked", [], first.digest)
    env = cli_env(loaded, name)
    with tempfile.TemporaryDirectory(prefix="clawmedic-validate-") as tmp:
        if candidate is not None and candidate.resolve() != live.resolve():
            home = Path(tmp)
            (home / ".openclaw").mkdir()
            (home / ".openclaw" / CONFIG_KEY).write_bytes(data)
            env["HOME"] = str(home)
        try:
            r = subprocess.run(
                [*cli, "config", "validate", "--json"],
                env=env,
                capture_output=True,
                text=True,
                timeout=defaults.OPENCLAW_VALIDATE_TIMEOUT_S,
                cwd=tmp,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return Validation(True, "unchecked", [], first.digest)
    try:
        out = json.loads(r.stdout)
    except ValueError:
        return Validation(True, "unchecked", [], first.digest)
    if out.get("valid") is True:
        return Validation(True, "ok", [str(w) for w in out.get("warnings", [])][:0], first.digest)
    issues = [f"{i.get('path', '?')}: {i.get('message', '')}" for i in out.get("issues", []) if isinstance(i, dict)]
    if not issues and isinstance(out.get("error"), dict):
        issues = [str(out["error"].get("message", "invalid"))]
    return Validation(False, "schema", issues or ["invalid"], first.digest)


@dataclass(frozen=True)
class CliAnswer:
    """One `openclaw … --json` call on a running gateway: its exit code and parsed JSON, or why there is none."""

    rc: int | None  # None: it could not run or timed out
    data: object = None
    error: str | None = None  # the CLI's own `error.message`, or why it could not run

    @property
    def ok(self) -> bool:
        return self.rc == 0 and self.error is None


def gateway_cli(loaded: LoadedConfig, name: str, args: list[str], *, remote: bool, timeout: float) -> CliAnswer:
    """Run `openclaw ARGS` against target `name`'s running gateway, bounded by `timeout`; never raises.

    `remote`: the command takes `--url`/`--token` (cron, gateway call); they are passed explicitly so a broken
    config file cannot send it elsewhere (FACTS §2). Other commands find the gateway through its config and
    `OPENCLAW_GATEWAY_TOKEN`. Output is not redacted here: callers store it through redacting stores."""
    cfg = loaded.targets[name]
    cli = cli_command(cfg)
    if not cli:
        return CliAnswer(None, error="the openclaw CLI is not known for this target")
    env = cli_env(loaded, name)
    argv = [*cli, *args]
    if remote:
        token = env.get("OPENCLAW_GATEWAY_TOKEN")
        if cfg.port is None or not token:
            return CliAnswer(None, error="the gateway's port or token (OPENCLAW_GATEWAY_TOKEN) is not configured")
        argv += ["--url", f"ws://127.0.0.1:{cfg.port}", "--token", token]
    try:
        r = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=timeout, cwd=str(gateway_home(cfg)), check=False
        )
    except subprocess.TimeoutExpired:
        return CliAnswer(None, error=f"`openclaw {' '.join(args[:2])}` timed out after {timeout:g} s")
    except OSError as e:
        return CliAnswer(None, error=f"cannot run the openclaw CLI: {e}")
    try:
        data: object = json.loads(r.stdout)
    except ValueError:
        tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or [""]
        return CliAnswer(r.returncode, None, f"exit {r.returncode}, not JSON: {tail[0][:300]}")
    error = None
    if isinstance(data, dict) and data.get("ok") is False:
        err = data.get("error")
        error = str(err.get("message", err)) if isinstance(err, dict) else str(err)
    elif r.returncode != 0:
        error = f"exit {r.returncode}"
    return CliAnswer(r.returncode, data, error)


# /ready's `failing[]` names channel ids and the gateway's own parts (FACTS §2): these by their exact name, and
# `agent-database:<agent id>`, one per agent. None of them is a channel: a channel may be called `plugin-reload-x`.
READY_INTERNALS = frozenset({"startup-sidecars", "gateway-draining", "plugin-reload", "state-database"})
READY_INTERNAL_FAMILY = "agent-database"  # `agent-database:<agent id>`


def is_ready_internal(name: str) -> bool:
    """A name in /ready's `failing[]` that is a part of the gateway, not a channel (rules and remedies alike)."""
    return name in READY_INTERNALS or name.split(":", 1)[0] == READY_INTERNAL_FAMILY
