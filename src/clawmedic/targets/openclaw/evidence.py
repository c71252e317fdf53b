"""The doctor's evidence only an OpenClaw gateway has: its config validated, its packages, its Node against
openclaw's engines, its state database, its stability bundles (the crash-loop breaker), duplicate gateways on its
state, and `openclaw doctor --lint`. Each collector fills its part of `Evidence` and may raise: `collect` records a
failure as `errors[name]`."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clawmedic import defaults
from clawmedic.config import LoadedConfig
from clawmedic.doctor.evidence import Evidence
from clawmedic.process import inspect
from clawmedic.targets import openclaw


def collectors(
    loaded: LoadedConfig, name: str, ev: Evidence, *, pid: int | None, config: dict[str, Any] | None, lint: bool
) -> dict[str, Callable[[], None]]:
    found: dict[str, Callable[[], None]] = {
        "config": lambda: _config(loaded, name, ev, config),
        "deps": lambda: _deps(loaded, name, ev),
        "node": lambda: _node(loaded, name, ev),
        "state_db": lambda: _state_db(loaded, name, ev),
        "stability": lambda: _stability(loaded, name, ev),
        "duplicates": lambda: _duplicates(loaded, name, pid, ev),
    }
    if lint:
        found["lint"] = lambda: _lint(loaded, name, ev)
    return found


def _config(loaded: LoadedConfig, name: str, ev: Evidence, known: dict[str, Any] | None) -> None:
    """`known`: the supervisor's own validation of the current file (it validates before every start). The
    known-good facts are the `changes` collector's: the slow validation must not take them down with it."""
    ev.config = known if known is not None else openclaw.validate(loaded, name).to_dict()


def _deps(loaded: LoadedConfig, name: str, ev: Evidence) -> None:
    from clawmedic import deps

    ev.deps_problems = [p.to_dict() for p in deps.check(loaded, name)]


def _node(loaded: LoadedConfig, name: str, ev: Evidence) -> None:
    cli = openclaw.cli_command(loaded.targets[name])
    if not cli:
        return
    node = cli[0] if len(cli) > 1 else shutil.which("node")
    if node is None:
        ev.node = {"found": False}
        return
    r = subprocess.run(
        [node, "--version"], capture_output=True, text=True, timeout=defaults.EVIDENCE_NODE_TIMEOUT_S, check=False
    )
    version = r.stdout.strip().lstrip("v")
    engines = ""
    entry = next((Path(a) for a in cli if a.endswith("openclaw.mjs")), None)
    if entry is not None:
        try:
            engines = json.loads((entry.parent / "package.json").read_text()).get("engines", {}).get("node", "")
        except (OSError, ValueError):
            engines = ""
    ev.node = {"found": True, "version": version, "engines": engines, "satisfied": _satisfies(version, engines)}


def _satisfies(version: str, spec: str) -> bool | None:
    """Enough of npm's semver ranges for `engines.node` (`>=a.b.c <d || >=e.f.g`); None when unsure."""
    try:
        v = tuple(int(x) for x in version.split(".")[:3])
    except ValueError:
        return None
    if not spec:
        return None
    for alt in spec.split("||"):
        ok = True
        for cond in alt.split():
            m = re.fullmatch(r"(>=|<=|>|<|=)?v?(\d+)(?:\.(\d+))?(?:\.(\d+))?", cond)
            if m is None:
                return None
            op = m.group(1) or "="
            want = tuple(int(g or 0) for g in m.group(2, 3, 4))
            ok = (
                ok and {">=": v >= want, "<=": v <= want, ">": v > want, "<": v < want, "=": v[: len(want)] == want}[op]
            )
        if ok:
            return True
    return False


def _state_db(loaded: LoadedConfig, name: str, ev: Evidence) -> None:
    db = openclaw.gateway_home(loaded.targets[name]) / ".openclaw" / "state" / "openclaw.sqlite"
    if not db.exists():
        ev.state_db = {"path": str(db), "exists": False}
        return
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=defaults.EVIDENCE_DB_BUSY_S)
        try:
            con.execute("PRAGMA schema_version").fetchone()
        finally:
            con.close()
        ev.state_db = {"path": str(db), "exists": True, "ok": True}
    except sqlite3.DatabaseError as e:
        ev.state_db = {"path": str(db), "exists": True, "ok": False, "error": str(e)}


def _stability(loaded: LoadedConfig, name: str, ev: Evidence) -> None:
    folder = openclaw.gateway_home(loaded.targets[name]) / ".openclaw" / "logs" / "stability"
    if folder.is_dir():
        ev.stability_bundles = sorted(p.name for p in folder.glob("*.json"))[-20:]
        written = [p.stat().st_mtime for p in folder.glob("*crash_loop_breaker*.json")]
        if written:
            ev.breaker_age_s = round(max(0.0, time.time() - max(written)), 1)


def _duplicates(loaded: LoadedConfig, name: str, pid: int | None, ev: Evidence) -> None:
    """Other gateway processes running on this target's HOME (a duplicate instance fights over the state DB)."""
    from clawmedic.process import identity

    ours = inspect.tree_pids(pid) if pid else set()
    for p in identity.duplicate_gateways(loaded, name, ours):
        ev.duplicates.append({"pid": p.pid, "cmdline": inspect.cmdline(p.pid)})


def _lint(loaded: LoadedConfig, name: str, ev: Evidence) -> None:
    cli = openclaw.cli_command(loaded.targets[name])
    if not cli:
        return
    r = subprocess.run(
        [*cli, "doctor", "--lint", "--json"],
        capture_output=True,
        text=True,
        timeout=defaults.EVIDENCE_LINT_TIMEOUT_S,
        env=openclaw.cli_env(loaded, name),
        check=False,
    )
    try:
        out = json.loads(r.stdout)
    except ValueError:
        return
    ev.lint_findings = [
        {k: f.get(k) for k in ("checkId", "severity", "message", "fixHint")}
        for f in out.get("findings", [])
        if isinstance(f, dict)
    ][:30]
