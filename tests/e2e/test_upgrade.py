"""End-to-end: `clawmedic upgrade` on the real sandboxed gateway, supervised by a real daemon.

One sandbox and one daemon for the whole module (the cases run in order and build on each other):
a dry run changes nothing; 2026.9.5 → 2026.9.6 installs from the registry and ends healthy on 2026.9.6;
`--rollback` goes back to 2026.9.5; an upgrade forced to fail (a dependency wiped from the new install that
cannot be restored offline) is refused before the switch and the gateway stays healthy on 2026.9.5.

The gateway runs a private hard-link copy of the 2026.9.5 install (the shared one in the user cache is never
touched); the new version is installed under the sandbox's state folder. Timings are printed (run with -s).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from clawmedic import deps
from clawmedic.sandbox import gateway as gw
from clawmedic.sandbox.install import Install, ensure_install
from clawmedic.targets.openclaw import upgrade as up
from tests.e2e.conftest import CLAWMEDIC, NO_LLM, SANDBOX_LIMITS, Daemon, cleanup_sandbox

pytestmark = [pytest.mark.gateway, pytest.mark.slow, pytest.mark.timeout(900)]

OLD, NEW = "2026.9.5", "2026.9.6"
PROBATION_S = "8"  # the daemon's own probation is 3 s here; the upgrade's default is 60 s
TIMINGS: dict[str, dict[str, float]] = {}


@dataclass
class Rig:
    sb: gw.Sandbox
    daemon: Daemon
    old: Install

    def upgrade(self, *args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
        t0 = time.monotonic()
        r = subprocess.run(
            [CLAWMEDIC, "upgrade", *args, "--json", "--config", str(self.sb.config_path)],
            capture_output=True,
            text=True,
            timeout=800,
            env={**os.environ, **(env or {})},
        )
        took = time.monotonic() - t0
        assert "Traceback" not in r.stderr, r.stderr[-3000:]
        try:
            report: dict[str, Any] = json.loads(r.stdout)
        except ValueError:
            raise AssertionError(f"exit {r.returncode}, no JSON:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}") from None
        label = " ".join(a for a in args if not a.startswith("--probation") and a != PROBATION_S) or "latest"
        TIMINGS[f"{len(TIMINGS) + 1}. {label}"] = {**report.get("timings_s", {}), "command": round(took, 1)}
        print(f"\nupgrade {label}: exit {r.returncode} in {took:.1f} s, {report.get('timings_s')}: {report['reason']}")
        return r.returncode, report

    def version(self, wait_s: float = 90.0) -> str | None:
        """The version the running gateway reports on /startup (503 until its sidecars started: wait for 200)."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{self.sb.port}/startup", timeout=5, trust_env=False)
                if r.status_code == 200:
                    return str(r.json().get("version"))
            except (httpx.HTTPError, ValueError):
                pass
            if time.monotonic() > deadline:
                return None
            time.sleep(0.5)


def _state(rig: Rig) -> dict[str, Any]:
    installs = up.installs_dir(rig.sb.state_dir, gw.TARGET)
    return {
        "pid": rig.daemon.pid(),
        "config": rig.sb.openclaw_json.read_bytes(),
        "installs": sorted(p.name for p in installs.iterdir()) if installs.is_dir() else None,
        "pointer": up.read_pointer(rig.sb.state_dir, gw.TARGET),
        "version": rig.version(),
    }


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    tmp = tmp_path_factory.mktemp("upgrade")
    t0 = time.monotonic()
    shared = ensure_install(openclaw_version=OLD)  # cached in the user cache after the first run
    root = tmp / f"openclaw-{OLD}"
    deps.link_tree(shared.root, root)
    old = Install(
        root=root,
        node=root / shared.node.relative_to(shared.root),
        openclaw_entry=root / shared.openclaw_entry.relative_to(shared.root),
        node_version=shared.node_version,
        openclaw_version=shared.openclaw_version,
    )
    print(f"\n{OLD} install ready (private hard-link copy) in {time.monotonic() - t0:.1f} s")
    sb = gw.create(tmp / "sandbox", old, limits=SANDBOX_LIMITS, llm=NO_LLM)
    daemon = Daemon(sb, tmp / "daemon.log")
    try:
        daemon.start()
        daemon.wait_healthy()
        yield Rig(sb, daemon, old)
    finally:
        daemon.stop()
        cleanup_sandbox(sb, root)
        print("\nupgrade timings (s):", json.dumps(TIMINGS))


def test_dry_run_changes_nothing(rig: Rig) -> None:
    before = _state(rig)
    assert before["version"] == OLD
    code, report = rig.upgrade(NEW, "--dry-run")
    assert code == 0 and report["outcome"] == "planned" and report["from"] == OLD and report["to"] == NEW
    assert any("install openclaw 2026.9.6 from the registry" in line for line in report["plan"])
    assert _state(rig) == before  # same process, config, no install, no pointer


def test_upgrade_to_the_new_version_ends_healthy_on_it(rig: Rig) -> None:
    pid = rig.daemon.pid()
    code, report = rig.upgrade(NEW, "--probation", PROBATION_S)
    assert code == 0, report
    assert report["outcome"] == "upgraded" and report["running_version"] == NEW
    assert [s["name"] for s in report["steps"]] == [
        "snapshot",
        "install",
        "deps",
        "validate",
        "backup",
        "switch",
        "probation",
    ]
    assert rig.version() == NEW  # what the running gateway reports
    assert rig.daemon.pid() != pid
    p = up.read_pointer(rig.sb.state_dir, gw.TARGET)
    assert p is not None and p.current.version == NEW and p.previous is not None and p.previous.version == OLD
    new_root = up.installs_dir(rig.sb.state_dir, gw.TARGET) / f"openclaw-{NEW}-node-24.21.0"
    assert p.current.entry == str(new_root / "node_modules" / "openclaw" / "openclaw.mjs")
    launched = rig.daemon.events("launched")[-1]
    assert launched["pid"] == rig.daemon.pid()
    assert (rig.old.root / "node_modules" / "openclaw" / "package.json").is_file()  # the old install is untouched


def test_rollback_goes_back_to_the_previous_install(rig: Rig) -> None:
    pid = rig.daemon.pid()
    code, report = rig.upgrade("--rollback", "--probation", PROBATION_S)
    assert code == 0, report
    assert report["outcome"] == "switched" and report["to"] == OLD and report["running_version"] == OLD
    assert rig.version() == OLD and rig.daemon.pid() != pid
    p = up.read_pointer(rig.sb.state_dir, gw.TARGET)
    assert p is not None and p.current.version == OLD and p.previous is not None and p.previous.version == NEW


def test_an_upgrade_forced_to_fail_ends_healthy_on_the_old_version(rig: Rig, tmp_path: Path) -> None:
    p = up.read_pointer(rig.sb.state_dir, gw.TARGET)
    assert p is not None and p.previous is not None and p.previous.root is not None
    new_root = Path(p.previous.root)
    wiped = new_root / "node_modules" / "grammy"
    assert wiped.is_dir()
    wiped.rename(tmp_path / "grammy.wiped")  # the postinstall's damage, after the install
    before = _state(rig)
    offline = {
        "npm_config_registry": "http://127.0.0.1:9/",  # nothing listens on the discard port: npm cannot fetch
        "npm_config_cache": str(tmp_path / "empty-npm-cache"),
        "npm_config_fetch_retries": "0",
        "npm_config_offline": "true",
    }
    code, report = rig.upgrade(NEW, "--probation", PROBATION_S, env=offline)
    assert code == 1, report
    assert report["outcome"] == "refused" and "grammy" in report["reason"]
    assert report["running_version"] == OLD
    after = _state(rig)
    assert after["pid"] == before["pid"] and after["version"] == OLD and after["config"] == before["config"]
    assert not new_root.exists()  # kept aside, not deleted
    assert any(n.startswith(f"openclaw-{NEW}-node-24.21.0.failed-") for n in after["installs"])
    p2 = up.read_pointer(rig.sb.state_dir, gw.TARGET)
    assert p2 is not None and p2.current.version == OLD and p2.previous is None
