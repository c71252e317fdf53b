"""End-to-end: the operator controls on the real sandboxed gateway — `clawmedic reload` and `run --dry-run`.

One gateway for the whole module (it boots once, in the first test):

1. reload: a real daemon supervises the gateway and an http stand-in; `clawmedic reload` adds a second http target
   and changes the first → the gateway, unchanged, keeps its PID and is not even handed to a new supervisor; an
   invalid new config is refused with one sentence (exit 2, in `status` too) and the old one keeps running.
2. dry run: the daemon stops (the gateway outlives it) and `clawmedic run --dry-run` adopts the gateway; its config
   is broken and the gateway killed with SIGKILL → events, the incident and the status file say it *would* restore
   known-good and relaunch, while the config file's bytes stay as broken and no gateway process is started.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from clawmedic.process import inspect
from clawmedic.sandbox import gateway as gw
from clawmedic.sandbox.install import Install
from tests.e2e.conftest import CLAWMEDIC, NO_LLM, SANDBOX_LIMITS, Daemon, cleanup_sandbox, free_of, incident
from tests.helpers.rig import StandinTarget, kill_pids, render_config

pytestmark = [pytest.mark.gateway, pytest.mark.slow, pytest.mark.timeout(600)]

SVC, EXTRA = StandinTarget("svc"), StandinTarget("extra")
WAIT_S = 60.0


class DryRunDaemon(Daemon):
    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [CLAWMEDIC, "run", "--dry-run", "--config", str(self.sb.config_path), "--json-logs"],
                stdout=out,
                stderr=out,
                stdin=subprocess.DEVNULL,
            )


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


def _gateways(sb: gw.Sandbox) -> list[int]:
    """Gateway processes of the sandbox (not the short CLI runs the daemon makes to validate its config)."""
    import psutil

    found = []
    for pid in gw.pids_using(sb.root):
        with contextlib.suppress(psutil.Error):
            if psutil.Process(pid).name() == "openclaw-gateway":
                found.append(pid)
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
        d.wait_event(lambda e: e["kind"] == "known_good" and e.get("target") == gw.TARGET, 120)  # for the dry run
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
    assert inspect.is_alive(pid) and gw.health(sb.port), "the gateway outlives the daemon, for the dry run"


def test_dry_run_on_a_killed_gateway_with_a_broken_config_says_would_and_changes_nothing(
    shared: gw.Sandbox, tmp_path: Path
) -> None:
    sb = shared
    pid = sb.launcher.adopt()
    assert pid is not None, "the first test leaves the gateway running"
    gateway_pid = pid.pid
    d = DryRunDaemon(sb, tmp_path / "dry.log")
    t0 = time.time()
    d.start()
    try:
        d.wait_event(lambda e: e["kind"] == "adopted" and e.get("target") == gw.TARGET, 120, after=t0)
        d.wait_event(
            lambda e: e["kind"] == "state" and e.get("target") == gw.TARGET and e["new"] == "healthy", 120, after=t0
        )
        assert '"dry_run":true' in (sb.state_dir / "status.json").read_text().replace(" ", "")

        broken = sb.openclaw_json.read_bytes().replace(b"{", b",,,{{", 1)
        sb.openclaw_json.write_bytes(broken)
        time.sleep(1.0)  # the relaunch's own gate reads the file (the watcher may not have started watching yet)
        aside_before = sorted(p.name for p in sb.openclaw_json.parent.iterdir())
        t_kill = time.time()
        os.kill(gateway_pid, signal.SIGKILL)
        assert free_of(gateway_pid)

        restore = d.wait_event(lambda e: e["kind"] == "would" and e["action"] == "restore", WAIT_S, after=t_kill)
        relaunch = d.wait_event(lambda e: e["kind"] == "would" and e["action"] == "relaunch", WAIT_S, after=t_kill)
        assert restore["ts"] <= relaunch["ts"], "the restore comes first, as it would before a real relaunch"
        inc_id = d.status().get("incident")
        assert inc_id, d.status()
        timeline = incident(sb, int(inc_id))["timeline"]
        woulds = [e["detail"] for e in timeline if e["kind"] == "would"]
        assert [w["action"] for w in woulds][:2] == ["restore", "relaunch"], timeline
        assert "would restore known-good" in woulds[0]["detail"] and "nothing was done" in woulds[0]["detail"]
        deadline = time.monotonic() + 10  # the status file is rewritten within a moment of the change
        while not d.status().get("would") and time.monotonic() < deadline:
            time.sleep(0.1)
        shown = d.status().get("would") or {}
        assert shown.get("action") in ("relaunch", "restore") and "dry run" in shown.get("detail", ""), d.status()
        time.sleep(5.0)  # a real daemon would have restored and spawned by now
        assert sb.openclaw_json.read_bytes() == broken, "the config file's bytes are untouched"
        assert sorted(p.name for p in sb.openclaw_json.parent.iterdir()) == aside_before, "nothing moved aside"
        assert not [e for e in d.events() if e["ts"] >= t_kill and e["kind"] in ("launched", "config_restored")]
        assert inspect.port_owner(sb.port) is None and not gw.health(sb.port), "no gateway was started"
        assert not _gateways(sb), "no new gateway process"
        assert d.proc is not None and d.proc.poll() is None
    finally:
        d.stop()
    assert d.proc is not None and d.proc.returncode == 0
