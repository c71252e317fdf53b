"""What a config reload changes (`reload.diff`, pure) and the dry run's seams that need no process: the `Guard`
answers WOULD without running a remedy, the launcher refuses to spawn or signal."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import pytest

from clawmedic import dryrun, reload
from clawmedic.config import LoadedConfig, load_config
from clawmedic.doctor import remedies
from clawmedic.doctor.remedies import Guard, NoParams, Outcome, Policy, Remedy, RemedyContext, Risk, Status
from clawmedic.knowngood_client import KnownGoodClient
from clawmedic.process.launcher import Handle, Launcher, ProcessRecord
from tests.helpers.rig import StandinTarget, write_config

A = StandinTarget("a", port=18001)
B = StandinTarget("b", port=18002)


def load(tmp_path: Path, *targets: StandinTarget, **kw: Any) -> LoadedConfig:
    return load_config(write_config(tmp_path, *targets, **kw))


def test_the_same_config_changes_nothing(tmp_path: Path) -> None:
    d = reload.diff(load(tmp_path, A, B), load(tmp_path, A, B))
    assert d.empty
    assert d.sentence() == "config reloaded: no target changed."


def test_added_and_removed_targets(tmp_path: Path) -> None:
    d = reload.diff(load(tmp_path, A), load(tmp_path, B))
    assert (d.added, d.removed, d.changed, d.relaunch) == (["b"], ["a"], [], [])


def test_a_probe_change_is_a_change_without_a_relaunch(tmp_path: Path) -> None:
    slower = StandinTarget("a", port=A.port, liveness={"interval_s": 2.0})
    d = reload.diff(load(tmp_path, A, B), load(tmp_path, slower, B))
    assert (d.changed, d.relaunch, d.added, d.removed) == (["a"], [], [], [])


def test_a_command_change_is_a_relaunch(tmp_path: Path) -> None:
    tagged = StandinTarget("a", port=A.port, args=("--tag", "v2"))
    d = reload.diff(load(tmp_path, A, B), load(tmp_path, tagged, B))
    assert (d.changed, d.relaunch) == (["a"], ["a"])
    assert "restarting a" in d.sentence()


def test_a_new_secret_value_in_the_env_file_is_a_relaunch(tmp_path: Path) -> None:
    with_secret = StandinTarget("a", port=A.port, env={"API_TOKEN": "${API_TOKEN}"})
    old = load(tmp_path, with_secret, B, env_file={"API_TOKEN": "first-token-123456"})
    new = load(tmp_path, with_secret, B, env_file={"API_TOKEN": "second-token-654321"})
    d = reload.diff(old, new)
    assert (d.changed, d.relaunch, d.needs_restart) == (["a"], ["a"], [])


def test_daemon_settings_need_a_restart_and_are_kept_until_then(tmp_path: Path) -> None:
    old = load(tmp_path, A)
    new = load(tmp_path, A, daemon={"http": {"listen": "127.0.0.1:19999"}, "log_level": "info"})
    d = reload.diff(old, new)
    assert d.needs_restart == ["log_level", "http"]
    assert "daemon.log_level, daemon.http changed and needs a restart of the daemon" in d.sentence()
    kept = reload.keep_daemon_settings(old, new)
    assert kept.config.daemon == old.config.daemon and kept.redactor is old.redactor


def test_a_reloaded_secret_is_masked_by_the_running_redactor(tmp_path: Path) -> None:
    old = load(tmp_path, A)
    target = StandinTarget("a", port=A.port, env={"API_TOKEN": "${API_TOKEN}"})
    new = load(tmp_path, target, env_file={"API_TOKEN": "a-brand-new-token-98765"})
    running = old.redactor
    reload.keep_daemon_settings(old, new)
    assert "a-brand-new-token-98765" not in running.text("token a-brand-new-token-98765 leaked")


def _calls_fail(ctx: RemedyContext, params: Any) -> Outcome:
    raise AssertionError("a dry run ran a remedy")


def test_the_guard_answers_would_in_a_dry_run_without_running_the_remedy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(remedies.REMEDIES, "poke", Remedy("poke", "test", Risk.REVERSIBLE, NoParams, _calls_fail))
    ctx = RemedyContext(load(tmp_path, A), "a", KnownGoodClient(tmp_path / "state"))
    outcome = Guard(Policy(dry_run=True)).run(ctx, "poke", {})
    assert outcome.status == Status.WOULD and "would run poke" in outcome.detail
    refused = Guard(Policy(frozenset({Risk.READ_ONLY}), dry_run=True)).run(ctx, "poke", {})
    assert refused.status == Status.NEEDS_APPROVAL  # the policy is still checked first
    ran = Guard(Policy()).run(ctx, "poke", {})  # without the dry run it does run (and this one fails)
    assert ran.status == Status.FAILED and "a dry run ran a remedy" in ran.detail


def test_the_dry_run_launcher_neither_spawns_nor_signals(tmp_path: Path) -> None:
    loaded = load(tmp_path, A)
    assert type(dryrun.launcher_for(loaded, tmp_path / "t")) is Launcher
    assert Launcher(tmp_path / "t").would("relaunch") is None
    loaded.dry_run = True
    launcher = dryrun.launcher_for(loaded, tmp_path / "t")
    assert launcher.would("relaunch") == "would relaunch (dry run: nothing was done)"
    with pytest.raises(dryrun.NotDone):
        asyncio.run(launcher.spawn(["/bin/true"], {}, None))
    handle: Handle = dryrun._WouldHandle(ProcessRecord(1, 0.0, ["init"], 0.0, str(tmp_path / "log"), 0), None)
    with pytest.raises(dryrun.NotDone):
        handle.signal_group(signal.SIGTERM)  # pid 1: had it been sent, the test would not be running
    with pytest.raises(dryrun.NotDone):
        asyncio.run(handle.stop(1.0))
