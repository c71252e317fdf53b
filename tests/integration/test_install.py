"""`clawmedic install` / `uninstall` for real, into a temporary HOME: the real command in a subprocess whose PATH
holds no systemctl or launchctl (so nothing is ever enabled on the machine running the tests; the command says
it skipped that) and a stand-in `crontab` that keeps its table in a file.

Unit files are checked with `systemd-analyze verify` where it is installed, and parsed key by key otherwise; plists
are parsed with plistlib (generated on Linux too, through the hidden `--platform macos`); the cron block is checked
line by line. `uninstall` must leave the temporary tree exactly as it was before `install` (same files, same bytes).
"""

from __future__ import annotations

import configparser
import hashlib
import os
import plistlib
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.rig import StandinTarget, render_config

CLAWMEDIC_OPS = [sys.executable, "-c", "import clawmedic.cli_ops, clawmedic.cli as c; c.main()"]

FAKE_CRONTAB = f"""#!{sys.executable}
# A stand-in for crontab(1): `-l` prints the table kept in $CRONTAB_FILE, `-` replaces it from stdin.
import os, sys
path = os.environ["CRONTAB_FILE"]
if sys.argv[1:] == ["-l"]:
    if not os.path.exists(path):
        sys.stderr.write("no crontab for user\\n")
        sys.exit(1)
    sys.stdout.write(open(path).read())
elif sys.argv[1:] == ["-"]:
    open(path, "w").write(sys.stdin.read())
else:
    sys.exit(2)
"""


class Home:
    """A temporary HOME, a PATH with only a stand-in crontab, and a clawmedic config."""

    def __init__(self, tmp_path: Path, config: str | None = None) -> None:
        self.root = tmp_path
        self.home = tmp_path / "home"
        self.home.mkdir()
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        crontab = self.bin / "crontab"
        crontab.write_text(FAKE_CRONTAB)
        crontab.chmod(0o755)
        self.crontab_file = tmp_path / "crontab.txt"
        self.config = tmp_path / "clawmedic.toml"
        self.config.write_text(config or render_config([StandinTarget()], state_dir=tmp_path / "state"))
        self.state = tmp_path / "state"

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {"HOME": str(self.home), "PATH": str(self.bin), "CRONTAB_FILE": str(self.crontab_file), "LANG": "C.UTF-8"}
        return subprocess.run(
            [*CLAWMEDIC_OPS, *args, "--config", str(self.config)], capture_output=True, text=True, env=env, timeout=60
        )

    def snapshot(self) -> dict[str, str]:
        """Every file and folder under the temporary root, with the bytes of each file."""
        out = {}
        for p in sorted(self.root.rglob("*")):
            rel = str(p.relative_to(self.root))
            out[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
        return out

    @property
    def units(self) -> Path:
        return self.home / ".config" / "systemd" / "user"

    @property
    def agents(self) -> Path:
        return self.home / "Library" / "LaunchAgents"


def external_gateway_config(tmp_path: Path) -> str:
    """A target the OS starts (`--with-gateway`): start.mode external, restarted through systemd."""
    command = StandinTarget(name="gateway").command()
    return "\n".join(
        [
            "[daemon]",
            f'state_dir = "{tmp_path / "state"}"',
            "[targets.gateway]",
            'kind = "http"',
            'liveness = { url = "http://127.0.0.1:9/health" }',
            f"openclaw_home = {str(tmp_path / 'home')!r}".replace("'", '"'),
            "[targets.gateway.start]",
            'mode = "external"',
            "command = [" + ", ".join(f'"{c}"' for c in command) + "]",
            'restart_command = ["systemctl", "--user", "restart", "openclaw-gateway.service"]',
            "",
        ]
    )


@pytest.mark.parametrize("platform", ["systemd", "macos", "cron"])
def test_dry_run_changes_nothing(tmp_path: Path, platform: str) -> None:
    h = Home(tmp_path)
    h.crontab_file.write_text("0 3 * * * /usr/bin/backup\n")
    before = h.snapshot()
    done = h.run("install", "--platform", platform, "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "dry run" in done.stdout
    assert "would " in done.stdout
    assert h.snapshot() == before
    undo = h.run("uninstall", "--dry-run")
    assert undo.returncode == 0 and h.snapshot() == before


def verify_with_systemd_analyze(files: list[Path]) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        return
    done = subprocess.run([analyze, "verify", *map(str, files)], capture_output=True, text=True, timeout=60)
    problems = [
        line
        for line in (done.stdout + done.stderr).splitlines()
        if any(w in line for w in ("Failed to parse", "Unknown key", "Invalid", "not executable", "Missing", "bad"))
    ]
    assert done.returncode == 0 and not problems, done.stdout + done.stderr


def parse_unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=True, interpolation=None, comment_prefixes=("#", ";"))
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive in systemd
    parser.read_string(path.read_text())
    return parser


def exec_start(unit: configparser.ConfigParser) -> list[str]:
    argv = shlex.split(unit["Service"]["ExecStart"].replace("%%", "%").replace("$$", "$"))
    assert Path(argv[0]).is_file() and os.access(argv[0], os.X_OK), argv
    return argv


def test_systemd_units_are_written_valid_and_uninstall_removes_exactly_them(tmp_path: Path) -> None:
    h = Home(tmp_path, external_gateway_config(tmp_path))
    h.units.mkdir(parents=True)
    theirs = h.units / "openclaw-gateway.service"
    theirs.write_text("[Service]\nExecStart=/usr/bin/openclaw gateway run\n")  # the user's own: not ours
    before = h.snapshot()

    done = h.run("install", "--platform", "systemd", "--with-gateway")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "systemctl is not available here: enabling skipped" in done.stdout
    assert "moved the existing" in done.stdout and "(it is not ours)" in done.stdout
    names = ["clawmedic.service", "openclaw-gateway.service"]
    files = [h.units / n for n in names]
    assert all(f.is_file() for f in files)
    verify_with_systemd_analyze(files)

    daemon = parse_unit(files[0])
    assert exec_start(daemon)[1:] == ["run", "--config", str(h.config)]
    assert daemon["Service"]["Restart"] == "always"
    assert "KillMode" not in daemon["Service"]  # systemd's default: stopping the unit stops what it started too
    assert daemon["Install"]["WantedBy"] == "default.target"
    # systemd's own watchdog instead of a guardian timer: the daemon notifies READY=1 and WATCHDOG=1
    assert daemon["Service"]["Type"] == "notify" and daemon["Service"]["NotifyAccess"] == "main"
    assert int(daemon["Service"]["WatchdogSec"]) > 0
    assert not list(h.units.glob("clawmedic-guardian.*"))
    gateway = parse_unit(files[1])
    assert exec_start(gateway)[1:] == ["safe-start", "gateway", "--config", str(h.config)]
    assert gateway["Service"]["RestartPreventExitStatus"] == "78"
    assert f'"HOME={h.home}"' in gateway["Service"]["Environment"]

    again = h.run("install", "--platform", "systemd", "--with-gateway")  # idempotent
    assert again.returncode == 0 and "unchanged" in again.stdout

    undo = h.run("uninstall")
    assert undo.returncode == 0, undo.stdout + undo.stderr
    assert "put your earlier" in undo.stdout
    assert h.snapshot() == before  # exactly what install wrote is gone; the user's unit is back, byte for byte


def test_launchd_plists_parse_and_uninstall_removes_exactly_them(tmp_path: Path) -> None:
    h = Home(tmp_path, external_gateway_config(tmp_path))
    before = h.snapshot()
    done = h.run("install", "--platform", "macos", "--with-gateway", "--json")
    assert done.returncode == 0, done.stderr
    labels = ["ai.clawmedic.daemon", "ai.clawmedic.guardian", "ai.clawmedic.gateway"]
    plists = {}
    for label in labels:
        with (h.agents / f"{label}.plist").open("rb") as f:
            plists[label] = plistlib.load(f)
        assert plists[label]["Label"] == label
        assert Path(plists[label]["ProgramArguments"][0]).is_file()
    daemon, guard, gateway = (plists[x] for x in labels)
    assert daemon["ProgramArguments"][1:] == ["run", "--config", str(h.config)]
    assert daemon["KeepAlive"] is True and daemon["RunAtLoad"] is True and daemon["AbandonProcessGroup"] is True
    assert guard["StartInterval"] == 60
    assert guard["ProgramArguments"][1:5] == ["guardian", "--config", str(h.config), "--quiet"]
    assert guard["ProgramArguments"][-1].startswith("launchctl kickstart -k gui/")
    assert gateway["ProgramArguments"][1:] == ["safe-start", "gateway", "--config", str(h.config)]
    assert gateway["EnvironmentVariables"]["HOME"] == str(h.home)
    assert Path(daemon["StandardErrorPath"]).parent.is_dir()  # launchd does not create the folder
    assert "launchctl is not available here" in done.stdout

    undo = h.run("uninstall")
    assert undo.returncode == 0, undo.stdout + undo.stderr
    assert h.snapshot() == before


def test_the_cron_block_is_well_formed_and_leaves_other_lines_alone(tmp_path: Path) -> None:
    h = Home(tmp_path)
    original = "MAILTO=me@example.com\n0 3 * * * /usr/bin/backup --all\n"
    h.crontab_file.write_text(original)
    before = h.snapshot()
    done = h.run("install", "--platform", "cron")
    assert done.returncode == 0, done.stdout + done.stderr
    assert h.run("install", "--platform", "cron").returncode == 0  # a second install replaces the block

    table = h.crontab_file.read_text()
    assert table.startswith(original)
    lines = table[len(original) :].splitlines()
    assert lines[0] == "# >>> clawmedic >>>" and lines[-1] == "# <<< clawmedic <<<"
    assert table.count("# >>> clawmedic >>>") == 1
    entries = [ln for ln in lines if not ln.startswith("#")]
    assert len(entries) == 2
    reboot = shlex.split(entries[0])
    assert reboot[0] == "@reboot"
    assert reboot[2:5] == ["run", "--config", str(h.config)] and reboot[-3:] == [">>", reboot[-2], "2>&1"]
    every_minute = shlex.split(entries[1])
    assert every_minute[:5] == ["*"] * 5
    assert every_minute[6:10] == ["guardian", "--config", str(h.config), "--quiet"]
    for argv in (reboot[1:], every_minute[5:]):
        assert Path(argv[0]).is_file() and os.access(argv[0], os.X_OK)
    assert all("%" not in e.replace("\\%", "") for e in entries)  # cron would cut the line at a bare %
    assert Path(reboot[-2]).parent.is_dir()  # the log folder the shell appends to exists

    undo = h.run("uninstall")
    assert undo.returncode == 0, undo.stdout + undo.stderr
    assert h.crontab_file.read_text() == original
    assert h.snapshot() == before


def test_with_gateway_refuses_a_target_the_daemon_starts_itself(tmp_path: Path) -> None:
    h = Home(tmp_path)  # the stand-in target is managed: systemd would start a second gateway
    before = h.snapshot()
    done = h.run("install", "--platform", "systemd", "--with-gateway")
    assert done.returncode == 2
    assert "targets.svc.start.mode" in done.stderr and "Traceback" not in done.stderr
    assert h.snapshot() == before


def test_uninstall_moves_aside_a_unit_the_user_edited(tmp_path: Path) -> None:
    h = Home(tmp_path)
    assert h.run("install", "--platform", "systemd").returncode == 0
    unit = h.units / "clawmedic.service"
    unit.write_text(unit.read_text() + "Nice=5\n")  # edited by the user after install
    undo = h.run("uninstall")
    assert undo.returncode == 0
    kept = list(h.units.glob("clawmedic.service.edited-*"))
    assert len(kept) == 1 and kept[0].read_text().endswith("Nice=5\n")
    assert not unit.exists() and not (h.units / "clawmedic-guardian.timer").exists()
