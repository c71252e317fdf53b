"""End-to-end: the operator controls on the real sandboxed gateway — `clawmedic reload`.

A real daemon supervises the gateway and an http stand-in; `clawmedic reload` adds a second http target and changes
the first → the gateway, unchanged, keeps its PID and is not even handed to a new supervisor; an invalid new config
is refused with one sentence (exit 2, in `status` too) and the old one keeps running.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from clawmedic.process import inspect
from clawmedic.sandbox import gateway as gw
from clawmedic.sandbox.install import Install
from tests.e2e.conftest import CLAWMEDIC, NO_LLM, SANDBOX_LIMITS, Daemon, cleanup_sandbox
from tests.helpers.rig import StandinTarget, kill_pids, render_config

pytestmark = [pytest.mark.gateway, pytest.mark.slow, pytest.mark.timeout(600)]

SVC, EXTRA = StandinTarget("svc"), StandinTarget("extra")
WAIT_S = 60.0


@pytest.fixture(scope="module")
def shared(install: Install, tmp_path_factory: pytest.TempPathFactory) -> Iterator[gw.Sandbox]:
    """One sandbox (and so one gateway) for every test here; everything it ran is stopped by PID at the end."""
    root = tmp_path_factory.mktemp("operator")
    sb = gw.create(root / "sandbox", install, limits=SANDBOX_LIMITS, llm=NO_LLM)
    base = sb.config_path.read_text()
    try:
        yield sb
    finally:
        cleanup_sandbox(sb)
        kill_pids([p for t in (SVC, EXTRA) for p in _pids(t)], [SVC.command(), EXTRA.command()])
        sb.config_path.write_text(base)


def _pids(t: StandinTarget) -> list[int]:
    import psutil

    found = []
    for p in psutil.process_iter(["cmdline"]):
        if p.info["cmdline"] == t.command():
            found.append(p.pid)
    return found


def _http_tables(*targets: StandinTarget) -> str:
    """The `[targets.NAME…]` tables of stand-in http targets (render_config's daemon table left out)."""
    return render_config(targets).split("\n\n", 1)[1]


def _cli(sb: gw.Sandbox, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLAWMEDIC, *args, "--config", str(sb.config_path)], capture_output=True, text=True, timeout=120, check=False
    )


def test_reload_adds_and_changes_targets_and_the_unchanged_gateway_keeps_its_pid(
    shared: gw.Sandbox, tmp_path: Path
) -> None:
    sb = shared
    base = sb.config_path.read_text()
    sb.config_path.write_text(base + "\n" + _http_tables(SVC))
    d = Daemon(sb, tmp_path / "daemon.log")
    d.start()
    try:
        d.wait_healthy()
        pid = d.pid()
        t0 = time.time()
        changed = StandinTarget("svc", port=SVC.port, liveness={"interval_s": 0.5})
        sb.config_path.write_text(base + "\n" + _http_tables(changed, EXTRA))
        done = _cli(sb, "reload")
        assert done.returncode == 0, done.stdout + done.stderr
        event = d.wait_event(lambda e: e["kind"] == "config_reloaded", WAIT_S, after=t0)
        assert event["added"] == ["extra"] and event["changed"] == ["svc"] and event["removed"] == []
        assert gw.TARGET not in event["changed"] and event["relaunched"] == []
        d.wait_event(lambda e: e["kind"] == "state" and e["target"] == "extra" and e["new"] == "healthy", WAIT_S, t0)
        d.wait_event(lambda e: e["kind"] == "state" and e["target"] == "svc" and e["new"] == "healthy", WAIT_S, t0)
        assert d.pid() == pid and inspect.is_alive(pid), "the unchanged gateway keeps its PID"
        assert not [
            e
            for e in d.events()
            if e["ts"] >= t0
            and e.get("target") == gw.TARGET
            and e["kind"]
            in (
                "launched",
                "adopted",
                "stopped",
                "restart_requested",
            )
        ], "the unchanged gateway was not touched: not relaunched, not even handed to a new supervisor"
        assert gw.health(sb.port)

        # an invalid new config: refused with one sentence, the old one keeps running
        good = sb.config_path.read_text()
        t1 = time.time()
        sb.config_path.write_text(good.replace('"interval_s" = 0.5', '"interval_s" = "often"', 1))
        refused = _cli(sb, "reload")
        assert refused.returncode == 2, refused.stdout + refused.stderr
        said = " ".join(refused.stderr.split())
        assert "targets.svc.liveness.interval_s" in said and "previous one keeps running" in said, said
        assert "Traceback" not in refused.stderr
        d.wait_event(lambda e: e["kind"] == "config_reload_refused", WAIT_S, after=t1)
        sb.config_path.with_name("good.toml").write_text(good)
        status = subprocess.run(
            [CLAWMEDIC, "status", "--config", str(sb.config_path.with_name("good.toml"))],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert "previous one keeps running" in " ".join(status.stdout.split()), status.stdout + status.stderr
        reload_status = json.loads((d.sb.state_dir / "status.json").read_text())["daemon"]["reload"]
        assert reload_status["ok"] is False and reload_status["message"].count(". ") == 0, "one sentence"
        assert d.pid() == pid and gw.health(sb.port), "the gateway kept running on the old config"
        assert d.proc is not None and d.proc.poll() is None, "the daemon kept running"
        sb.config_path.write_text(good)
    finally:
        d.stop()  # stop_targets_on_exit is false: the gateway (and the stand-ins) outlive the daemon
    assert inspect.is_alive(pid) and gw.health(sb.port), "the gateway outlives the daemon"
