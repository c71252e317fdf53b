"""The upgrade's plan, switch and rollback logic (`targets/openclaw/upgrade.py`) with fake side effects.

The fakes stand in for npm, the openclaw CLI and the gateway; the pointer, the config loading that applies it and
the install folders are real files in a temporary folder. The real thing runs in tests/e2e/test_upgrade.py.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import filelock
import pytest

from clawmedic.config import LoadedConfig, load_config
from clawmedic.errors import AlreadyRunning
from clawmedic.targets.openclaw import upgrade as up

OLD, NEW = "2026.9.5", "2026.9.6"


def _fake_install(root: Path, version: str) -> Path:
    pkg = root / "node_modules" / "openclaw"
    pkg.mkdir(parents=True)
    (root / "package.json").write_text("{}")
    (pkg / "package.json").write_text(json.dumps({"name": "openclaw", "version": version}))
    entry = pkg / "openclaw.mjs"
    entry.write_text("// fake\n")
    (root / "node" / "bin").mkdir(parents=True)
    (root / "node" / "bin" / "node").write_text("")
    return entry


def _config(tmp_path: Path, *, mode: str = "managed") -> Path:
    entry = _fake_install(tmp_path / "old", OLD)
    node = tmp_path / "old" / "node" / "bin" / "node"
    home = tmp_path / "home"
    (home / ".openclaw").mkdir(parents=True)
    (home / ".openclaw" / "openclaw.json").write_text('{ gateway: { mode: "local" } }\n')
    start = (
        f'command = ["{node}", "{entry}", "gateway", "run", "--port", "19999"]'
        if mode == "managed"
        else 'restart_command = ["true"]'
    )
    cfg = tmp_path / "clawmedic.toml"
    cfg.write_text(
        f'[daemon]\nstate_dir = "state"\n\n[targets.gw]\nport = 19999\nopenclaw_home = "{home}"\n\n'
        f'[targets.gw.start]\nmode = "{mode}"\n{start}\n'
    )
    return cfg


@dataclass
class FakeOps:
    """Every side effect, recorded; `fail` maps a step name to the versions (or "*") for which it fails."""

    fail: dict[str, set[str]] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)
    running: str | None = OLD
    migrate_config: bool = False  # the new version rewrites openclaw.json when it starts
    restored_from: list[Path | None] = field(default_factory=list)  # each switch's state backup to put back

    def _version_of(self, loaded: LoadedConfig) -> str:
        cmd = loaded.targets["gw"].start.command or []
        entry = Path(cmd[up.entry_index(cmd) or 0])
        return str(json.loads((entry.parent / "package.json").read_text())["version"])

    def _maybe_fail(self, step: str, version: str) -> None:
        self.calls.append((step, version))
        bad = self.fail.get(step, set())
        if version in bad or "*" in bad:
            raise up.StepFailed(f"{step} failed for {version}")

    def install(self, version: str, root: Path) -> up.InstallRef:
        self._maybe_fail("install", version)
        entry = _fake_install(root, version)
        return up.InstallRef(version, str(entry), str(root / "node" / "bin" / "node"), str(root))

    def deps(self, loaded: LoadedConfig, name: str) -> str:
        self._maybe_fail("deps", self._version_of(loaded))
        return "ok"

    def validate(self, loaded: LoadedConfig, name: str) -> str:
        self._maybe_fail("validate", self._version_of(loaded))
        return "ok"

    def snapshot(self, loaded: LoadedConfig, name: str, reason: str) -> bytes | None:
        self.calls.append(("snapshot", ""))
        return _openclaw_json(loaded).read_bytes()

    def restore_config(self, loaded: LoadedConfig, name: str, content: bytes | None) -> str:
        self.calls.append(("restore_config", ""))
        path = _openclaw_json(loaded)
        if content is not None and path.read_bytes() != content:
            path.rename(path.with_name("openclaw.json.upgrade-test"))
            path.write_bytes(content)
            return "restored"
        return "unchanged"

    def backup_state(self, loaded: LoadedConfig, name: str, dest: Path) -> str:
        self._maybe_fail("backup", self._version_of(loaded))
        dest.mkdir(parents=True)
        return "backed up"

    def switch(self, loaded: LoadedConfig, name: str, restore_from: Path | None = None) -> str:
        version = self._version_of(loaded)  # what the reloaded config would launch
        self.restored_from.append(restore_from)
        self._maybe_fail("switch", version)
        self.running = version
        if self.migrate_config and version == NEW:
            _openclaw_json(loaded).write_text('{ gateway: { mode: "local" }, meta: { migrated: true } }\n')
        return f"launched {version}"

    def probation(self, loaded: LoadedConfig, name: str, version: str, seconds: float) -> str:
        assert self.running == version
        self._maybe_fail("probation", version)
        return "live"

    def running_version(self, loaded: LoadedConfig, name: str) -> str | None:
        return self.running


def _openclaw_json(loaded: LoadedConfig) -> Path:
    home = loaded.targets["gw"].openclaw_home
    assert home is not None
    return home / ".openclaw" / "openclaw.json"


def _upgrader(cfg: Path, ops: FakeOps) -> up.Upgrader:
    return up.Upgrader(load_config(cfg), "gw", ops, probation_s=1.0)


def _installs(cfg: Path) -> list[str]:
    folder = up.installs_dir(load_config(cfg).state_dir, "gw")
    return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def _steps(report: up.Report) -> list[str]:
    return [s.name for s in report.steps]


# --- the command rewrite ---------------------------------------------------------------------------------------------

NODE, ENTRY = "/o/node/bin/node", "/o/node_modules/openclaw/openclaw.mjs"
TO = up.InstallRef(NEW, "/n/node_modules/openclaw/openclaw.mjs", "/n/node/bin/node", "/n")
REWRITES = [
    # (command, configured install, expected; None: the command no longer names the configured install)
    ([NODE, ENTRY, "gateway", "run"], up.InstallRef(OLD, ENTRY, NODE), [TO.node, TO.entry, "gateway", "run"]),
    (["openclaw", "gateway", "run"], up.InstallRef(OLD, "openclaw", None), [TO.node, TO.entry, "gateway", "run"]),
    (
        ["env", "X=1", NODE, ENTRY, "gateway"],
        up.InstallRef(OLD, ENTRY, NODE),
        ["env", "X=1", TO.node, TO.entry, "gateway"],
    ),
    (["/other/openclaw.mjs", "gateway"], up.InstallRef(OLD, ENTRY, NODE), None),
    (["/x/node", ENTRY, "gateway"], up.InstallRef(OLD, ENTRY, NODE), None),  # another node than recorded
]


@pytest.mark.parametrize(("cmd", "configured", "expected"), REWRITES)
def test_rewrite(cmd: list[str], configured: up.InstallRef, expected: list[str] | None) -> None:
    assert up.rewrite(cmd, configured, TO) == expected


@pytest.mark.parametrize("bad", ["latest;rm", "../2026.9.6", "2026.9", "", "v2026.9.6", "2026.9.6/../x"])
def test_a_version_that_is_not_one_is_refused(bad: str) -> None:
    with pytest.raises(up.UpgradeRefused) as e:
        up.check_version(bad)
    assert e.value.exit_code == 2


def test_check_version_accepts_prereleases() -> None:
    assert up.check_version("2026.10.1-beta.2") == "2026.10.1-beta.2"


# --- plan and dry run ------------------------------------------------------------------------------------------------


def test_dry_run_plans_and_changes_nothing(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    ops = FakeOps()
    report = _upgrader(cfg, ops).upgrade(NEW, dry_run=True)
    assert report.outcome == "planned" and report.exit_code == 0
    assert report.from_version == OLD and report.to_version == NEW
    assert any("install openclaw 2026.9.6 from the registry" in line for line in report.plan)
    assert ops.calls == [] and not (tmp_path / "state" / "installs").exists()


def test_the_version_that_runs_already_is_not_installed_again(tmp_path: Path) -> None:
    ops = FakeOps()
    report = _upgrader(_config(tmp_path), ops).upgrade(OLD)
    assert report.outcome == "already" and report.exit_code == 0 and ops.calls == []


def test_an_external_target_is_refused(tmp_path: Path) -> None:
    with pytest.raises(up.UpgradeRefused, match="service manager"):
        _upgrader(_config(tmp_path, mode="external"), FakeOps()).upgrade(NEW)


# --- upgrade ---------------------------------------------------------------------------------------------------------


def test_upgrade_installs_checks_switches_and_records_the_pointer(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    ops = FakeOps()
    report = _upgrader(cfg, ops).upgrade(NEW)
    assert report.outcome == "upgraded" and report.exit_code == 0 and report.running_version == NEW
    assert _steps(report) == ["snapshot", "install", "deps", "validate", "backup", "switch", "probation"]
    assert ops.restored_from == [None]  # forward: the state is the new version's to migrate
    assert [c for c in ops.calls if c[0] in ("deps", "validate", "switch")] == [
        ("deps", NEW),  # the new install's dependencies and CLI, before anything is switched
        ("validate", NEW),
        ("switch", NEW),
    ]
    loaded = load_config(cfg)  # every later load runs the new install
    assert ops._version_of(loaded) == NEW
    p = up.read_pointer(loaded.state_dir, "gw")
    assert p is not None and p.current.version == NEW and p.previous is not None and p.previous.version == OLD
    assert (tmp_path / "old" / "node_modules" / "openclaw" / "openclaw.mjs").is_file()  # the old install untouched


@pytest.mark.parametrize("step", ["install", "deps", "validate", "backup"])
def test_a_failure_before_the_switch_changes_nothing_the_gateway_uses(tmp_path: Path, step: str) -> None:
    cfg = _config(tmp_path)
    ops = FakeOps(fail={step: {"*"}})
    report = _upgrader(cfg, ops).upgrade(NEW)
    assert report.outcome == "refused" and report.exit_code == 1
    assert f"{step} failed for" in report.reason and "nothing was switched" in report.reason
    assert not any(c[0] == "switch" for c in ops.calls)
    assert up.read_pointer(load_config(cfg).state_dir, "gw") is None
    assert ops._version_of(load_config(cfg)) == OLD
    if step != "install":  # the failed install is kept aside, not deleted
        failed = [n for n in _installs(cfg) if ".failed-" in n]
        assert len(failed) == 1 and failed[0].startswith(f"openclaw-{NEW}-node-")


@pytest.mark.parametrize("step", ["switch", "probation"])
def test_a_failure_after_the_switch_rolls_back_install_and_config(tmp_path: Path, step: str) -> None:
    cfg = _config(tmp_path)
    before = _openclaw_json(load_config(cfg)).read_bytes()
    ops = FakeOps(fail={step: {NEW}}, migrate_config=True)
    report = _upgrader(cfg, ops).upgrade(NEW)
    assert report.outcome == "rolled_back" and report.exit_code == 1
    assert f"{step} failed for {NEW}" in report.reason and f"runs openclaw {OLD} again" in report.reason
    assert _steps(report)[-1] == "rollback" and report.steps[-1].ok
    assert ops.running == OLD and report.running_version == OLD
    loaded = load_config(cfg)
    assert ops._version_of(loaded) == OLD
    assert _openclaw_json(loaded).read_bytes() == before
    if step == "probation":  # the migrated config was moved aside, not deleted
        assert (_openclaw_json(loaded).parent / "openclaw.json.upgrade-test").is_file()
    p = up.read_pointer(loaded.state_dir, "gw")
    assert p is not None and p.current.version == OLD and p.previous is None
    installs = _installs(cfg)
    assert len([n for n in installs if ".failed-" in n]) == 1 and len(installs) == 2
    backup = next(n for n in installs if n.startswith(f"state-before-{OLD}-"))
    assert ops.restored_from[0] is None and ops.restored_from[-1] == up.installs_dir(loaded.state_dir, "gw") / backup


def test_when_the_way_back_fails_too_the_report_says_so(tmp_path: Path) -> None:
    ops = FakeOps(fail={"probation": {NEW, OLD}})
    report = _upgrader(_config(tmp_path), ops).upgrade(NEW)
    assert report.outcome == "failed" and report.exit_code == 1
    assert "the rollback to 2026.9.5 failed too" in report.reason
    assert not report.steps[-1].ok


def test_a_successful_upgrade_removes_the_failed_installs_kept_aside(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    _upgrader(cfg, FakeOps(fail={"probation": {NEW}})).upgrade(NEW)
    assert any(".failed-" in n for n in _installs(cfg))
    report = _upgrader(cfg, FakeOps()).upgrade(NEW)
    assert report.outcome == "upgraded"
    installs = _installs(cfg)
    assert [n for n in installs if not n.startswith("state-before-")] == [f"openclaw-{NEW}-node-24.21.0"]
    assert len(installs) == 2  # and the one state backup a rollback can use


def test_an_upgrade_runs_alone(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    folder = up.installs_dir(load_config(cfg).state_dir, "gw")
    folder.mkdir(parents=True)
    with filelock.FileLock(folder / up.LOCK_NAME), pytest.raises(AlreadyRunning) as e:
        _upgrader(cfg, FakeOps()).upgrade(NEW)
    assert e.value.exit_code == 4


# --- rollback on demand ----------------------------------------------------------------------------------------------


def test_rollback_without_a_previous_install_is_refused(tmp_path: Path) -> None:
    with pytest.raises(up.UpgradeRefused, match="no previous install") as e:
        _upgrader(_config(tmp_path), FakeOps()).rollback()
    assert e.value.exit_code == 2


def test_rollback_goes_back_and_a_second_one_goes_forward_without_installing(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    _upgrader(cfg, FakeOps()).upgrade(NEW)
    backup = up.read_pointer(load_config(cfg).state_dir, "gw").state_backup  # type: ignore[union-attr]
    assert backup is not None and Path(backup).name.startswith(f"state-before-{OLD}-")
    ops = FakeOps(running=NEW)
    report = _upgrader(cfg, ops).rollback()
    assert report.outcome == "switched" and report.exit_code == 0 and ops.running == OLD
    assert ops.restored_from == [Path(backup)]  # the state as the old version left it
    assert ops._version_of(load_config(cfg)) == OLD
    again = FakeOps(running=OLD)
    report = _upgrader(cfg, again).rollback()
    assert report.outcome == "switched" and again.running == NEW
    assert not any(c[0] == "install" for c in again.calls)


def test_upgrading_to_the_previous_version_reuses_its_install(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    _upgrader(cfg, FakeOps()).upgrade(NEW)
    _upgrader(cfg, FakeOps(running=NEW)).rollback()
    ops = FakeOps()
    report = _upgrader(cfg, ops).upgrade(NEW)
    assert report.outcome == "upgraded" and "install" not in _steps(report)


def test_a_failed_rollback_returns_to_the_install_it_left(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    _upgrader(cfg, FakeOps()).upgrade(NEW)
    ops = FakeOps(running=NEW, fail={"probation": {OLD}})
    report = _upgrader(cfg, ops).rollback()
    assert report.outcome == "rolled_back" and report.exit_code == 1 and ops.running == NEW
    assert ops._version_of(load_config(cfg)) == NEW


# --- the pointer as every command reads it ---------------------------------------------------------------------------


def test_a_pointer_the_config_no_longer_matches_is_ignored(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    _upgrader(cfg, FakeOps()).upgrade(NEW)
    other = _fake_install(tmp_path / "other", "2026.9.7")
    text = cfg.read_text().replace(str(tmp_path / "old" / "node_modules" / "openclaw" / "openclaw.mjs"), str(other))
    cfg.write_text(text)  # the user points the config at another install by hand
    assert load_config(cfg).targets["gw"].start.command[1] == str(other)  # type: ignore[index]


def test_an_unreadable_pointer_leaves_the_config_as_written(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    path = up.pointer_path(load_config(cfg).state_dir, "gw")
    path.parent.mkdir(parents=True)
    path.write_text("{ not json")
    assert FakeOps()._version_of(load_config(cfg)) == OLD


def test_a_pointer_edited_to_name_a_program_outside_clawmedics_installs_is_ignored(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    _upgrader(cfg, FakeOps()).upgrade(NEW)
    loaded = load_config(cfg)
    upgraded = loaded.targets["gw"].start.command
    path = up.pointer_path(loaded.state_dir, "gw")
    data = json.loads(path.read_text())
    data["current"]["entry"] = "/bin/sh"  # an attacker's program, or a typo
    path.write_text(json.dumps(data))
    command = load_config(cfg).targets["gw"].start.command
    assert command is not None and "/bin/sh" not in command and command != upgraded  # the config as written runs
    assert FakeOps()._version_of(load_config(cfg)) == OLD


# --- the state databases (real SQLite files) --------------------------------------------------------------------------


def _db(path: Path, schema: int, rows: int) -> None:
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE IF NOT EXISTS t (x INTEGER)")
    con.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(rows)])
    con.execute(f"PRAGMA user_version = {schema}")
    con.commit()
    con.close()


def test_a_migrated_state_database_is_restored_and_the_migrated_one_kept(tmp_path: Path) -> None:
    loaded = load_config(_config(tmp_path))
    cfg = loaded.targets["gw"]
    state = tmp_path / "home" / ".openclaw" / "state"
    state.mkdir()
    _db(state / "openclaw.sqlite", 17, 3)
    backup = tmp_path / "backup"
    assert up.backup_state(cfg, backup) == {"openclaw.sqlite": 17}
    assert up.stale_databases(cfg, backup) == []  # nothing migrated yet: a rollback has nothing to restore
    _db(state / "openclaw.sqlite", 18, 2)  # the new version migrates and writes
    assert up.stale_databases(cfg, backup) == ["openclaw.sqlite"]
    moved = up.restore_state(cfg, backup, ["openclaw.sqlite"])
    assert up.schema_version(state / "openclaw.sqlite") == 17
    assert any(m.endswith(".sqlite." + m.rsplit(".", 1)[-1]) for m in moved)
    aside = [Path(m) for m in moved if Path(m).name.startswith("openclaw.sqlite.rollback-")]
    assert aside and up.schema_version(aside[0]) == 18  # the migrated database is kept, not deleted
    con = sqlite3.connect(state / "openclaw.sqlite")
    assert con.execute("SELECT count(*) FROM t").fetchone() == (3,)
    con.close()
