"""The operator's CLI at 3 a.m., without a daemon: help without `<bool>`, --version, completion, `init` through
tomlkit, `pause --for` in the control file, the opt-in `restarted` message, the JSON log fields, and the interleaving
and redaction of `clawmedic logs`."""

from __future__ import annotations

import json
import logging
import re
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from clawmedic import control
from clawmedic.cli import app
from clawmedic.config import load_config
from clawmedic.init_config import Detected, render
from clawmedic.logs import JsonFormatter
from clawmedic.notify import NotifyPolicy
from clawmedic.notify import render as render_message
from clawmedic.target_logs import Line, last

runner = CliRunner()


def _commands(cmd: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [prefix]
    for name, sub in getattr(cmd, "commands", {}).items():
        found += _commands(sub, (*prefix, name))
    return found


COMMANDS = _commands(typer.main.get_command(app))


def test_the_walk_finds_the_commands() -> None:
    assert {("pause",), ("logs",), ("fix", "status"), ()} <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "clawmedic")
def test_no_help_shows_a_bool_metavar(command: tuple[str, ...]) -> None:
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output
    assert "--help" in result.output


def test_version_and_completion() -> None:
    from importlib.metadata import version

    result = runner.invoke(app, ["--version"])
    assert (result.exit_code, result.output.strip()) == (0, f"clawmedic {version('clawmedic')}")
    completion = runner.invoke(app, ["--show-completion", "bash"], prog_name="clawmedic")
    assert completion.exit_code == 0
    assert "_CLAWMEDIC_COMPLETE=complete_bash" in completion.output


def test_init_quotes_a_home_with_a_quote_and_a_backslash(tmp_path: Path) -> None:
    home = tmp_path / 'we"ird\\home'
    text = render(Detected(home, True, 18789, None))
    assert tomllib.loads(text)["targets"]["gateway"]["openclaw_home"] == str(home)
    path = tmp_path / "c.toml"
    path.write_text(text)
    assert load_config(path).targets["gateway"].port == 18789


def test_init_shows_notify_heartbeat_and_http_examples_that_load_once_uncommented(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = render(Detected(tmp_path, False, 18789, None))
    for table in ("[daemon.http]", "[daemon.notify]", "[daemon.heartbeat]"):
        assert f"# {table}" in text
    # Uncomment the three example tables: the result is a valid config asking for the opt-in "restarted" message.
    lines, on = [], False
    for ln in text.splitlines():
        if re.match(r"^# \[daemon\.(http|notify|heartbeat)\]", ln):
            on = True
        elif not ln.startswith("#"):
            on = False
        lines.append(ln[2:] if on and re.match(r"^# [\w[]", ln) else ln)
    path = tmp_path / "c.toml"
    path.write_text("\n".join(lines))
    monkeypatch.setenv("NTFY_TOPIC", "t")
    monkeypatch.setenv("HEALTHCHECKS_UUID", "u")
    loaded = load_config(path)
    assert "restarted" in loaded.config.daemon.notify.events
    assert loaded.config.daemon.heartbeat.url is not None
    assert loaded.config.daemon.http.listen == "127.0.0.1:18780"


def test_pause_for_sets_an_end_and_resume_clears_it(tmp_path: Path) -> None:
    control.pause(tmp_path, ["gw"], until=100.0)
    c = control.read_control(tmp_path)
    assert "gw" in c.paused
    assert (c.paused_until, c.expired_pauses(99.0), c.expired_pauses(100.0)) == ({"gw": 100.0}, [], ["gw"])
    control.pause(tmp_path, ["gw"])  # a pause without --for is open-ended again
    assert control.read_control(tmp_path).expired_pauses(1e9) == []
    control.pause(tmp_path, ["gw"], until=5.0)
    control.resume(tmp_path, ["gw"])
    c = control.read_control(tmp_path)
    assert (c.paused, c.paused_until, c.expired_pauses(1e9)) == ({}, {}, [])


def test_pause_for_rejects_a_duration_that_is_not_one(tmp_path: Path) -> None:
    result = runner.invoke(app, ["pause", "--for", "soon", "-c", str(tmp_path / "none.toml")])
    assert result.exit_code != 0
    assert isinstance(result.exception, Exception) and "--for 'soon'" in str(result.exception)


def _closed(inc: int, outcome: str = "recovered") -> dict[str, object]:
    return {"kind": "incident_closed", "target": "gw", "incident": inc, "outcome": outcome}


@pytest.mark.parametrize(
    ("kinds", "outcome", "expected"),
    [
        (("escalated", "gave_up", "recovered"), "recovered", []),  # the default: a healed restart tells nobody
        (("restarted",), "recovered", [("restarted", "info", "success")]),  # opted in
        (("restarted",), "abandoned", []),  # not healed
    ],
)
def test_restarted_is_told_only_when_asked_for(kinds: tuple[str, ...], outcome: str, expected: list[object]) -> None:
    policy = NotifyPolicy(group_wait_s=0, repeat_interval_s=0, kinds=kinds)
    alerts = policy.observe(_closed(3, outcome), 10.0)
    assert [(a.kind, a.severity, a.notify_type) for a in alerts] == expected


def test_the_restarted_message_says_what_happened(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(render(Detected(tmp_path, False, 18789, None)))
    policy = NotifyPolicy(group_wait_s=0, repeat_interval_s=0, kinds=("restarted",))
    (alert,) = policy.observe(_closed(3), 10.0)
    title, body = render_message(alert, load_config(cfg), None, (None, []), 11.0)
    assert title == "clawmedic: gw restarted and healthy (incident #3)"
    assert "clawmedic restarted it: it is healthy again" in body


def test_json_log_lines_carry_target_state_and_incident() -> None:
    record = logging.LogRecord("clawmedic", logging.INFO, __file__, 1, "svc: launched", None, None)
    record.target, record.state, record.incident = "svc", "restarting", 4
    entry = json.loads(JsonFormatter().format(record))
    assert (entry["target"], entry["state"], entry["incident"]) == ("svc", "restarting", 4)
    plain = logging.LogRecord("clawmedic", logging.INFO, __file__, 1, "daemon started", None, None)
    assert "target" not in json.loads(JsonFormatter().format(plain))


def test_logs_interleave_output_and_clawmedic_lines_by_time_and_redact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "s3cr3t-value-123456"
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        render(Detected(tmp_path, False, 18789, None))
        .replace("[targets.gateway.start.env]", '[targets.gateway.start.env]\nTOKEN = "${TOKEN}"')
        .replace("[daemon]", f'[daemon]\nstate_dir = "{tmp_path / "state"}"')
        + f'\n[daemon.logfile]\npath = "{tmp_path / "clawmedic.log"}"\n'
    )
    monkeypatch.setenv("TOKEN", secret)
    loaded = load_config(cfg)
    assert loaded.state_dir == tmp_path / "state"  # never the user's own state folder
    t0 = time.mktime(time.strptime("2026-12-01 03:00:00", "%Y-%m-%d %H:%M:%S"))
    out = loaded.state_dir / "targets" / "gateway" / "output.log"
    out.parent.mkdir(parents=True)
    out.write_text(
        "\n--- clawmedic: starting at 2026-12-01 03:00:00 ---\n"
        f"booting with token {secret}\n"
        "2026-12-01T03:00:20+00:00 listening\n".replace("+00:00", time.strftime("%z", time.localtime(t0)))
    )
    log = [
        {"ts": t0 - 1, "level": "info", "message": "gateway: launched pid 7", "target": "gateway", "state": "starting"},
        {"ts": t0 + 10, "level": "warning", "message": "other: down", "target": "other"},
        {"ts": t0 + 10, "level": "warning", "message": "gateway: incident #1 opened", "incident": 1},  # old line
        {"ts": t0 + 30, "level": "info", "message": f"gateway: healthy {secret}", "target": "gateway"},
    ]
    (tmp_path / "clawmedic.log").write_text("".join(json.dumps(e) + "\n" for e in log))
    _, lines = last(loaded, "gateway", 50)
    shown = [(ln.source, ln.text.split("  [")[0].split(maxsplit=1)[-1]) for ln in lines]
    assert [s for s, _ in shown] == ["clawmedic", "output", "output", "clawmedic", "output", "clawmedic"]
    assert "launched pid 7" in shown[0][1]
    assert "incident #1 opened" in shown[3][1]
    assert all(secret not in ln.render() for ln in lines)
    assert "booting with token" in lines[2].text
    assert isinstance(lines[0], Line) and "state=starting" in lines[0].text
    assert [ln.text for ln in last(loaded, "gateway", 2)[1]] == [ln.text for ln in lines[-2:]]
