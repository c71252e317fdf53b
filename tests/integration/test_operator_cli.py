"""The operator's CLI at 3 a.m. against a real `clawmedic run` (a subprocess) supervising the stand-in service:
`pause --for` ends by itself, a kill -9 is told as "restarted" only because the config opts in, `--json-logs` lines
name the target, its state and its incident, `clawmedic logs` (and `-f`) interleaves the output with clawmedic's
lines and redacts the secret the service prints, `fix status` records no incident, and pausing without a daemon says
so. Completion is asked of the real console script as bash would."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.receivers import HttpReceiver
from tests.helpers.rig import Rig, StandinTarget
from tests.integration.test_cli import CLAWMEDIC, as_json, cli, cli_env

SECRET = "tok-3am-9f8e7d6c5b4a"


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    try:
        yield r
    finally:
        r.cleanup()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    return h


def _wait(predicate: Any, timeout: float, what: str, daemon: subprocess.Popen[bytes]) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert daemon.poll() is None, f"the daemon exited ({daemon.returncode}) while waiting for {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return value


def test_completion_of_the_real_console_script(home: Path) -> None:
    env = {**cli_env(home), "_CLAWMEDIC_COMPLETE": "complete_bash", "COMP_WORDS": "clawmedic pa", "COMP_CWORD": "1"}
    done = subprocess.run([CLAWMEDIC], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["pause"]


@pytest.mark.timeout(180)
def test_pause_for_logs_json_fields_restarted_message_and_fix_status(rig: Rig, home: Path) -> None:
    with HttpReceiver() as hook:
        target = StandinTarget(env={"TOKEN": "${TOKEN}"}, args=("--print-env", "TOKEN"))
        notify = {"urls": [hook.url("/notify")], "on": ["gave_up", "restarted"], "group_wait_s": 0.2}
        config = str(rig.write_config(target, env_file={"TOKEN": SECRET}, daemon={"notify": notify}))
        err_log = rig.tmp_path / "daemon.err"
        follow_out = rig.tmp_path / "follow.out"
        with err_log.open("wb") as log, follow_out.open("wb") as fout:
            daemon = subprocess.Popen(
                [CLAWMEDIC, "run", "--json-logs", "--config", config],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=cli_env(home),
                cwd=home,
            )
            follower: subprocess.Popen[bytes] | None = None
            try:
                _wait(lambda: rig.target_status().get("state") == "healthy", 30, "healthy", daemon)

                # pause --for: maintenance now, and healthy again by itself once the time is up
                paused_at = time.time()
                paused = cli(home, "pause", "svc", "--for", "10s", "--config", config)
                assert paused.returncode == 0, paused.stderr
                assert "resumed by itself" in paused.stdout and "no clawmedic daemon" not in paused.stderr
                _wait(lambda: rig.target_status().get("state") == "maintenance", 10, "maintenance", daemon)
                svc = as_json(cli(home, "status", "--json", "--config", config))["targets"]["svc"]
                assert svc["paused"] is True and paused_at + 10 <= svc["paused_until"] <= time.time() + 10
                _wait(lambda: rig.target_status().get("state") not in ("maintenance", None), 30, "pause end", daemon)
                assert time.time() >= paused_at + 10  # not before its time
                assert as_json(cli(home, "status", "--json", "--config", config))["targets"]["svc"]["paused"] is False
                _wait(lambda: rig.target_status().get("state") == "healthy", 20, "healthy after the pause", daemon)

                # `logs -f` follows while the service is killed; the kill is told as "restarted" (opted in)
                follower = subprocess.Popen(
                    [CLAWMEDIC, "logs", "svc", "-f", "-n", "1", "--config", config],
                    stdin=subprocess.DEVNULL,
                    stdout=fout,
                    stderr=subprocess.STDOUT,
                    env=cli_env(home),
                    cwd=home,
                )
                _wait(lambda: follow_out.read_text().strip(), 30, "logs -f printed its last line", daemon)
                shown_first = len(follow_out.read_text().splitlines())  # then it follows from the files' ends
                before = len(rig.incidents())
                os.kill(rig.launched_pids()[-1], signal.SIGKILL)
                (message,) = hook.wait_for(1, timeout=60)
                body = json.dumps(message.json())
                assert "svc restarted and healthy" in body and SECRET not in body
                _wait(lambda: "opened" in follow_out.read_text(), 20, "logs -f shows the incident", daemon)

                # fix status only reads: no incident
                incidents = len(rig.incidents())
                assert incidents == before + 1
                fixed = cli(home, "fix", "status", "svc", "--json", "--config", config)
                assert fixed.returncode in (0, 1), fixed.stderr
                assert as_json(fixed).get("incident") is None
                assert len(rig.incidents()) == incidents
            finally:
                if follower is not None:
                    follower.send_signal(signal.SIGINT)
                    follower.wait(timeout=10)
                if daemon.poll() is None:
                    daemon.send_signal(signal.SIGTERM)
                    daemon.wait(timeout=30)

    # --json-logs: the daemon's lines about the target carry target, state and incident
    lines = [json.loads(ln) for ln in err_log.read_text().splitlines() if ln.startswith("{")]
    opened = [e for e in lines if "incident #" in e["message"] and "opened" in e["message"]]
    assert opened, lines[-20:]
    assert opened[0]["target"] == "svc" and isinstance(opened[0]["incident"], int) and opened[0]["state"]
    launched = [e for e in lines if "launched pid" in e["message"]]
    assert launched and all(e["target"] == "svc" for e in launched)

    # `logs -f` printed the last line, then the new ones as they came, redacted
    followed = follow_out.read_text()
    assert SECRET not in followed
    new = followed.splitlines()[shown_first:]
    assert any("launched pid" in ln for ln in new) and any("closed: recovered" in ln for ln in new), new

    # `logs -n`: the output and clawmedic's lines, by time, the printed secret redacted
    shown = cli(home, "logs", "svc", "-n", "400", "--config", config)
    assert shown.returncode == 0, shown.stderr
    assert SECRET not in shown.stdout
    rows = [ln for ln in shown.stdout.splitlines() if ln.strip()]
    sources = {ln[21:30].strip() for ln in rows}
    assert {"output", "clawmedic"} <= sources, rows[:10]
    assert any("TOKEN" in ln and "output" in ln for ln in rows)  # the service printed its token: masked
    stamps = [ln[:19] for ln in rows if ln[:4].isdigit()]
    assert stamps == sorted(stamps)
    assert len(cli(home, "logs", "svc", "-n", "3", "--config", config).stdout.strip().splitlines()) == 3

    # without a daemon, pause says it waits for one
    alone = cli(home, "pause", "svc", "--config", config)
    assert alone.returncode == 0
    assert "no clawmedic daemon is running" in alone.stderr.replace("\n", " ")


def test_init_in_a_home_with_a_quote_writes_valid_toml(tmp_path: Path) -> None:
    home = tmp_path / 'o"neil\\home'
    (home / ".openclaw").mkdir(parents=True)
    (home / ".openclaw" / "openclaw.json").write_text("{ gateway: { port: 19999 } }")
    dest = tmp_path / "config.toml"
    done = cli(home, "init", "--path", str(dest))
    assert done.returncode == 0, done.stderr
    written = tomllib.loads(dest.read_text())
    assert written["targets"]["gateway"]["openclaw_home"] == str(home)
    assert written["targets"]["gateway"]["port"] == 19999
    for table in ("[daemon.http]", "[daemon.notify]", "[daemon.heartbeat]"):
        assert f"# {table}" in dest.read_text()
