"""The real `clawmedic` console script, run as a subprocess: exit codes, error sentences, JSON output, init, the
control file, and one whole `run` → pause → resume → SIGTERM cycle against the stand-in service.

Every subprocess gets its own HOME and XDG folders under tmp_path (so nothing reads or writes the user's
config or state), no COLUMNS and no terminal (stdin is /dev/null), like a service manager or a log pipe.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from clawmedic import defaults
from clawmedic.config import load_config
from clawmedic.daemon import incidents_path, status_path
from clawmedic.store.incidents import IncidentStore
from tests.helpers.rig import Rig, StandinTarget, process_alive, render_config


def _find_clawmedic() -> str:
    beside = Path(sys.executable).parent / "clawmedic"
    found = str(beside) if beside.exists() else shutil.which("clawmedic")
    assert found, "the clawmedic console script is not installed (pip install -e .)"
    return found


CLAWMEDIC = _find_clawmedic()


def cli_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CLAWMEDIC_CONFIG", "COLUMNS", "LINES")}
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_STATE_HOME=str(home / ".local" / "state"),
        XDG_CACHE_HOME=str(home / ".cache"),
        CLAWMEDIC_CACHE_DIR=str(home / ".cache" / "clawmedic"),
    )
    return env


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    return h


def cli(home: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLAWMEDIC, *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cli_env(home),
        cwd=home,
        check=False,
    )


def flat(text: str) -> str:
    """stderr with its line breaks removed (Rich wraps long lines; see test_a_config_error_is_one_line)."""
    return text.replace("\n", "")


def assert_user_error(result: subprocess.CompletedProcess[str], code: int, *fragments: str) -> None:
    shown = f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    assert result.returncode == code, shown
    assert "Traceback" not in result.stderr + result.stdout, shown
    assert result.stderr.startswith("error: "), shown
    for fragment in fragments:
        assert fragment in flat(result.stderr), f"{fragment!r} missing\n{shown}"


# --- bad configs -------------------------------------------------------------------------------------------------

_TARGET = """
[targets.svc]
kind = "http"
port = 18080
[targets.svc.start]
command = ["python", "-m", "http.server", "18080"]
[targets.svc.liveness]
url = "http://127.0.0.1:18080/health"
"""

BAD_CONFIGS = [
    pytest.param(_TARGET.replace('kind = "http"', 'kind = "http"\nbogus = 1'), "targets.svc.bogus", id="unknown-key"),
    pytest.param('[daemon]\nstate_dirr = "x"\n' + _TARGET, "daemon.state_dirr", id="unknown-daemon-key"),
    pytest.param(_TARGET.replace("port = 18080", 'port = "eighty"'), "targets.svc.port", id="wrong-type"),
    pytest.param(_TARGET + "interval_s = -1\n", "targets.svc.liveness.interval_s", id="out-of-range"),
    pytest.param(
        _TARGET.replace('command = ["python", "-m", "http.server", "18080"]', 'mode = "managed"'),
        "targets.svc.start: a managed target needs `command`",
        id="missing-command",
    ),
    pytest.param(_TARGET.replace("[targets.svc.start]", "[targets.svc.start"), "is not valid TOML", id="bad-toml"),
    pytest.param(
        _TARGET + '[targets.svc.start.env]\nTOKEN = "${CLAWMEDIC_IT_NOT_SET}"\n',
        "targets.svc.start.env.TOKEN refers to ${CLAWMEDIC_IT_NOT_SET}",
        id="missing-secret",
    ),
    pytest.param('[daemon]\nenv_file = "nope.env"\n' + _TARGET, "daemon.env_file", id="missing-env-file"),
    pytest.param('[daemon]\nlog_level = "info"\n', "targets", id="no-targets"),
]


def _write_bad(tmp_path: Path, text: str) -> Path:
    folder = tmp_path / "a-config-folder-with-a-fairly-long-name"  # long, as real paths often are
    folder.mkdir()
    path = folder / "clawmedic.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(("text", "key"), BAD_CONFIGS)
def test_a_bad_config_is_one_sentence_and_exit_2(tmp_path: Path, home: Path, text: str, key: str) -> None:
    path = _write_bad(tmp_path, text)
    result = cli(home, "run", "--config", str(path))  # `run` above all must refuse before starting anything
    assert_user_error(result, defaults.EXIT_CONFIG, str(path), key)
    assert result.stdout == ""
    assert not (path.parent / "state").exists()  # nothing was started or written


def test_a_config_error_is_one_line(tmp_path: Path, home: Path) -> None:
    path = _write_bad(tmp_path, _TARGET.replace('kind = "http"', 'kind = "http"\nbogus = 1'))
    result = cli(home, "status", "--config", str(path))
    assert_user_error(result, defaults.EXIT_CONFIG, str(path), "targets.svc.bogus")
    assert result.stderr.count("\n") == 1, result.stderr
    assert str(path) in result.stderr


def test_a_missing_config_file_is_exit_2(tmp_path: Path, home: Path) -> None:
    missing = tmp_path / "nowhere" / "clawmedic.toml"
    assert_user_error(cli(home, "status", "--config", str(missing)), defaults.EXIT_CONFIG, str(missing), "init")
    # Without --config: $CLAWMEDIC_CONFIG is unset, so the platform's folder (under our HOME) is looked at.
    default = home / ".config" / "clawmedic" / "config.toml"
    assert_user_error(cli(home, "status"), defaults.EXIT_CONFIG, str(default))


def test_an_unknown_target_is_exit_2(tmp_path: Path, home: Path) -> None:
    path = tmp_path / "clawmedic.toml"
    path.write_text(render_config([StandinTarget()], state_dir=tmp_path / "state"))
    assert_user_error(cli(home, "pause", "nosuch", "--config", str(path)), defaults.EXIT_CONFIG, "'nosuch'", "svc")


# --- init ----------------------------------------------------------------------------------------------------------


def test_init_writes_a_config_that_loads_and_keeps_the_old_one(tmp_path: Path, home: Path) -> None:
    (home / ".openclaw").mkdir()
    (home / ".openclaw" / "openclaw.json").write_text("{ gateway: { port: 19999 } } // json5\n")
    path = tmp_path / "conf" / "clawmedic.toml"

    first = cli(home, "init", "--path", str(path))
    assert first.returncode == 0, first.stderr
    assert path.stat().st_mode & 0o777 == 0o600
    loaded = load_config(path)
    _, target = loaded.target(None)
    assert target.port == 19999  # found the existing install
    assert target.openclaw_home == home

    path.write_text(path.read_text() + "# edited by hand\n")
    edited = path.read_bytes()
    again = cli(home, "init", "--path", str(path))
    assert_user_error(again, defaults.EXIT_CONFIG, str(path), "--force")
    assert path.read_bytes() == edited
    assert list(path.parent.iterdir()) == [path]

    forced = cli(home, "init", "--path", str(path), "--force")
    assert forced.returncode == 0, forced.stderr
    kept = [p for p in path.parent.iterdir() if p != path]
    assert len(kept) == 1
    assert re.fullmatch(r"clawmedic\.toml\.old-\d{8}T\d{6}(\.\d+)?", kept[0].name), kept[0].name
    assert kept[0].read_bytes() == edited
    assert kept[0].stat().st_mode & 0o777 == 0o600
    assert "# edited by hand" not in path.read_text()
    load_config(path)


def test_init_without_path_writes_the_default_config(home: Path) -> None:
    result = cli(home, "init")
    assert result.returncode == 0, result.stderr
    default = home / ".config" / "clawmedic" / "config.toml"
    assert load_config(default).targets
    assert cli(home, "status", "--json").returncode == defaults.EXIT_FAILURE  # found it (not 2); no daemon runs: 1


# --- status, incidents, pause/resume without a daemon -----------------------------------------------------------------


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "clawmedic.toml"
    path.write_text(render_config([StandinTarget()], state_dir=tmp_path / "state"))
    return path


def as_json(result: subprocess.CompletedProcess[str], code: int = defaults.EXIT_OK) -> Any:
    assert result.returncode == code, result.stderr
    return json.loads(result.stdout)


def test_status_json_without_a_daemon(home: Path, config: Path) -> None:
    data = as_json(cli(home, "status", "--json", "--config", str(config)), defaults.EXIT_FAILURE)  # no daemon: 1
    assert data["daemon"]["running"] is False
    assert data["daemon"]["pid"] is None
    assert data["targets"] == {"svc": {"state": "unknown", "paused": False}}
    assert data["summary"]["ok"] is False
    table = cli(home, "status", "--config", str(config))
    assert table.returncode == defaults.EXIT_FAILURE
    assert "not running" in table.stdout.splitlines()[0]


def test_incidents_json_and_show(tmp_path: Path, home: Path, config: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    store = IncidentStore(incidents_path(state))
    long_reason = "exit is not fixable by a restart (port_in_use): port 18080 is held by pid 4242 " + "x" * 150
    first = store.open("svc", long_reason, 1000.0, 1001.0)
    store.add(first, "probe", {"ok": False, "detail": "y" * 200}, ts=1000.5)
    store.update(first, status="gave_up", cause="port_in_use")
    second = store.open("svc", "process exited (killed by signal 9)", 2000.0, 2000.1)
    store.update(second, status="recovered", live_at=2003.0, closed_at=2004.0)
    store.close()

    listed = as_json(cli(home, "incidents", "--json", "--config", str(config)))
    assert [i["id"] for i in listed] == [second, first]  # newest first
    assert listed[1]["reason"] == long_reason  # long values are not wrapped into the JSON
    assert listed[0]["time_to_recover_s"] == pytest.approx(3.0)

    shown = as_json(cli(home, "incidents", "show", str(first), "--json", "--config", str(config)))
    assert shown["status"] == "gave_up"
    assert shown["cause"] == "port_in_use"
    assert [e["kind"] for e in shown["timeline"]] == ["probe", "detected"]
    assert shown["timeline"][0]["detail"]["detail"] == "y" * 200

    table = cli(home, "incidents", "show", str(second), "--config", str(config))
    assert table.returncode == 0, table.stderr
    assert f"Incident #{second}" in table.stdout

    missing = cli(home, "incidents", "show", "999", "--config", str(config))
    assert_user_error(missing, defaults.EXIT_CONFIG, "#999")
    missing_before = cli(home, "incidents", "--config", str(config), "show", "999")
    assert_user_error(missing_before, defaults.EXIT_CONFIG, "#999")


def test_incidents_json_is_an_empty_list_at_first(home: Path, config: Path) -> None:
    assert as_json(cli(home, "incidents", "--json", "--config", str(config))) == []


def test_pause_and_resume_write_the_control_file(tmp_path: Path, home: Path, config: Path) -> None:
    control = tmp_path / "state" / "control.json"
    before = time.time()
    paused = cli(home, "pause", "--config", str(config))
    assert paused.returncode == 0, paused.stderr
    data = json.loads(control.read_text())
    assert list(data["paused"]) == ["svc"]
    assert data["paused"]["svc"] >= before - 1
    assert control.stat().st_mode & 0o777 == 0o600
    paused = as_json(cli(home, "status", "--json", "--config", str(config)), defaults.EXIT_FAILURE)  # no daemon
    assert paused["targets"]["svc"]["paused"] is True

    resumed = cli(home, "resume", "svc", "--config", str(config))
    assert resumed.returncode == 0, resumed.stderr
    data = json.loads(control.read_text())
    assert (data["paused"], data["resume_seq"]) == ({}, {"svc": 1})
    assert cli(home, "resume", "--config", str(config)).returncode == 0
    assert json.loads(control.read_text())["resume_seq"] == {"svc": 2}


# --- --help --------------------------------------------------------------------------------------------------------


def _command_paths() -> list[list[str]]:
    import typer.main

    from clawmedic.cli import app

    def walk(cmd: Any, path: list[str]) -> Iterator[list[str]]:
        yield path
        for name, sub in sorted(getattr(cmd, "commands", {}).items()):
            yield from walk(sub, [*path, name])

    return list(walk(typer.main.get_command(app), []))


COMMANDS = _command_paths()


def test_every_known_command_is_in_the_help_list() -> None:
    for expected in (["run"], ["status"], ["incidents", "show"], ["pause"], ["resume"], ["init"], ["demo"]):
        assert expected in COMMANDS
    assert ["sandbox", "up"] in COMMANDS


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "clawmedic")
def test_help_of_every_command_exits_0(home: Path, command: Sequence[str]) -> None:
    result = cli(home, *command, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout
    assert "Traceback" not in result.stderr


# --- a whole run ---------------------------------------------------------------------------------------------------


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    try:
        yield r
    finally:
        r.cleanup()


def _wait(predicate: Any, timeout: float, what: str, daemon: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert daemon.poll() is None, f"the daemon exited ({daemon.returncode}) while waiting for {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.timeout(60)
def test_run_pause_resume_and_sigterm(rig: Rig, home: Path) -> None:
    config = str(rig.write_config(StandinTarget()))
    log = (rig.tmp_path / "daemon.log").open("wb")
    daemon = subprocess.Popen(
        [CLAWMEDIC, "run", "--json-logs", "--config", config],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        env=cli_env(home),
        cwd=home,
    )
    try:
        _wait(lambda: rig.target_status().get("state") == "healthy", 20, "healthy", daemon)
        status = as_json(cli(home, "status", "--json", "--config", config))
        assert status["daemon"]["running"] is True
        assert status["daemon"]["pid"] == daemon.pid
        svc = status["targets"]["svc"]
        assert (svc["state"], svc["live"], svc["paused"]) == ("healthy", True, False)
        assert svc["pid"] == rig.launched_pids()[0]
        assert as_json(cli(home, "incidents", "--json", "--config", config)) == []

        locked = cli(home, "run", "--config", config)
        assert_user_error(locked, defaults.EXIT_LOCKED, f"pid {daemon.pid}")

        assert cli(home, "pause", "--config", config).returncode == 0
        _wait(lambda: rig.target_status().get("state") == "maintenance", 10, "maintenance", daemon)
        svc = as_json(cli(home, "status", "--json", "--config", config))["targets"]["svc"]
        assert (svc["state"], svc["paused"]) == ("maintenance", True)

        resumed_at = time.time()
        assert cli(home, "resume", "--config", config).returncode == 0
        _wait(lambda: "healthy" in rig.states(since=resumed_at), 10, "healthy after resume", daemon)

        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        log.close()

    lines = (rig.tmp_path / "daemon.log").read_text().splitlines()
    logged = [json.loads(line) for line in lines if line.startswith("{")]
    assert any("probation → healthy" in e["message"] for e in logged)
    status = as_json(cli(home, "status", "--json", "--config", config), defaults.EXIT_FAILURE)  # no daemon: 1
    assert status["daemon"]["running"] is False
    assert status_path(rig.state_dir).stat().st_mode & 0o777 == 0o600
    # stop_targets_on_exit is false by default: the gateway outlives the daemon (the rig ends it).
    child = rig.launched_pids()[0]
    assert process_alive(child)
    assert [e["kind"] for e in rig.events(target=None)][-1] == "daemon_stopped"
