"""`install` talking to a service manager, through the runner seam: the commands it runs, in order, and the clear
message when the manager cannot be reached (a container has systemctl but no user manager)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from clawmedic import defaults
from clawmedic.config import LoadedConfig, load_config
from clawmedic.install_units import _systemd_arg, build_plan, install, manifest_path, strip_cron_block, uninstall
from tests.helpers.rig import StandinTarget, render_config


@pytest.fixture
def loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LoadedConfig:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    path = tmp_path / "c.toml"
    path.write_text(render_config([StandinTarget()], state_dir=tmp_path / "state"))
    return load_config(path)


class Manager:
    """A fake systemctl: records each call, answers with the next scripted exit code."""

    def __init__(self, *codes: int, output: str = "") -> None:
        self.codes = list(codes)
        self.output = output
        self.calls: list[list[str]] = []

    def __call__(self, argv: list[str], stdin: str | None) -> tuple[int, str]:
        self.calls.append(argv)
        return (self.codes.pop(0) if self.codes else 0), self.output


def which(name: str) -> str | None:
    return f"/usr/bin/{name}"


def test_units_are_enabled_with_systemctl_user_in_order(loaded: LoadedConfig) -> None:
    manager = Manager()
    report = install(loaded, build_plan(loaded, "systemd", exe=["/opt/cm"]), dry_run=False, runner=manager, which=which)
    assert report.ok
    assert manager.calls == [
        ["/usr/bin/systemctl", "--user", "daemon-reload"],
        ["/usr/bin/systemctl", "--user", "enable", "--now", "clawmedic.service"],
    ]
    manager.calls.clear()
    assert uninstall(loaded, dry_run=False, runner=manager, which=which).ok
    assert manager.calls[0] == ["/usr/bin/systemctl", "--user", "disable", "--now", "clawmedic.service"]


def test_an_unreachable_user_manager_skips_enabling_with_a_clear_message(loaded: LoadedConfig) -> None:
    manager = Manager(1, output="Failed to connect to bus: No medium found")
    report = install(loaded, build_plan(loaded, "systemd", exe=["/opt/cm"]), dry_run=False, runner=manager, which=which)
    assert report.ok  # the files are written; enabling is the part a container cannot do
    skip = [s for s in report.steps if s.action == "skip"]
    assert len(skip) == 1
    assert "Failed to connect to bus" in skip[0].detail and "systemctl --user enable --now" in skip[0].detail
    assert len(manager.calls) == 1


@pytest.mark.parametrize("arg", ["/opt/my tools/clawmedic", "50%", "$HOME", 'say "hi"', "back\\slash", "plain"])
def test_execstart_arguments_survive_quoting(arg: str) -> None:
    quoted = _systemd_arg(arg)
    assert shlex.split(quoted.replace("%%", "%").replace("$$", "$")) == [arg]


def test_strip_cron_block_keeps_every_other_line() -> None:
    table = "A=1\n# >>> clawmedic >>>\n@reboot x\n# <<< clawmedic <<<\n0 1 * * * y\n"
    assert strip_cron_block(table) == "A=1\n0 1 * * * y\n"
    assert strip_cron_block("") == ""


def test_the_systemd_daemon_unit_uses_systemds_own_watchdog_and_no_guardian_timer(loaded: LoadedConfig) -> None:
    plan = build_plan(loaded, "systemd", exe=["/opt/cm"])
    names = [f.path.name for f in plan.files]
    assert names == ["clawmedic.service"]  # no clawmedic-guardian.service / .timer on systemd
    service = plan.files[0].content.splitlines()
    assert "Type=notify" in service and "NotifyAccess=main" in service
    assert f"WatchdogSec={defaults.SYSTEMD_WATCHDOG_S}" in service and defaults.SYSTEMD_WATCHDOG_S > 0
    assert "Type=simple" not in service
    assert plan.units == ["clawmedic.service"]


def test_launchd_and_cron_keep_the_guardian(loaded: LoadedConfig) -> None:
    launchd = build_plan(loaded, "launchd", exe=["/opt/cm"], uid=501)
    assert "ai.clawmedic.guardian" in [f.path.stem for f in launchd.files]
    cron = build_plan(loaded, "cron", exe=["/opt/cm"])
    assert cron.cron_block is not None and "guardian" in cron.cron_block


def test_reinstalling_over_a_guardian_timer_says_how_to_disable_it(loaded: LoadedConfig) -> None:
    loaded.state_dir.mkdir(parents=True, exist_ok=True)
    old = {"version": 1, "platform": "systemd", "files": [], "units": ["clawmedic.service", "clawmedic-guardian.timer"]}
    manifest_path(loaded.state_dir).write_text(json.dumps(old))
    plan = build_plan(loaded, "systemd", exe=["/opt/cm"])
    report = install(loaded, plan, dry_run=True, runner=Manager(), which=which)
    assert any("guardian.timer is no longer needed" in n and "disable --now" in n for n in report.notes)
    fresh = install(loaded, build_plan(loaded, "cron", exe=["/opt/cm"]), dry_run=True, runner=Manager(), which=which)
    assert not any("guardian.timer" in n for n in fresh.notes)


def test_the_systemd_unit_reloads_by_sighup_keeps_the_default_kill_mode_and_no_frozen_shell_path(
    loaded: LoadedConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "/home/someone/.shell-only/bin:/usr/bin:/bin")  # the installing shell's PATH
    service = build_plan(loaded, "systemd", exe=["/opt/cm/bin/clawmedic"]).files[0].content.splitlines()
    reload = [line for line in service if line.startswith("ExecReload=")]
    assert len(reload) == 1 and reload[0].endswith(" -HUP $MAINPID") and reload[0].split("=", 1)[1].startswith("/")
    assert not [line for line in service if line.startswith("KillMode=")], "systemd's control-group default"
    [env] = [line for line in service if line.startswith("Environment=")]
    assert ".shell-only" not in env, "not a frozen copy of the installing shell's PATH"
    path = env.split("PATH=", 1)[1].rstrip('"').split(":")
    assert path[0] == "/opt/cm/bin", "the folder of the binary it runs, resolved"
    target_program = Path(loaded.targets["svc"].start.command[0])  # type: ignore[index]  # the stand-in's python
    assert str(target_program.parent) in path or str(target_program.parent) in ("/usr/bin", "/bin")


def test_systemd_analyze_verifies_the_units(loaded: LoadedConfig, tmp_path: Path) -> None:
    import shutil
    import subprocess
    import sys

    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    exe = [sys.executable, "-m", "clawmedic"]  # ExecStart= must name a program that exists
    plan = build_plan(loaded, "systemd", exe=exe)
    folder = tmp_path / "units"
    folder.mkdir()
    for f in plan.files:
        (folder / f.path.name).write_text(f.content)
    result = subprocess.run(
        [analyze, "verify", "--man=no", *(str(folder / f.path.name) for f in plan.files)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    ours = [line for line in result.stderr.splitlines() if "clawmedic.service" in line]
    assert not ours, result.stderr  # e.g. "Unknown key name", "Invalid environment assignment", a missing executable
