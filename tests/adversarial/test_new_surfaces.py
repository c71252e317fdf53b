"""The four promises against the surfaces added after they were hardened: the "what changed" config diff, the
ladder record carried over restarts (`ladder.json`), and every reader of openclaw.json.

Stand-ins and real child processes only (no gateway), loopback only, every process ended by its PID.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import psutil
import pytest

from clawmedic import control, defaults, github_issues, relaunch
from clawmedic.cli_ops import plugins_for
from clawmedic.config import load_config
from clawmedic.doctor.changes import config_diff
from clawmedic.doctor.llm.tools import LiveTools
from clawmedic.doctor.model_fallback import ModelFallback
from clawmedic.doctor.remedies import Guard, Policy
from clawmedic.ladder.machine import Ladder, LadderLimits, Saved
from clawmedic.ladder.states import State
from clawmedic.process import identity
from clawmedic.process.launcher import Launcher
from clawmedic.redact import Redactor
from clawmedic.targets import openclaw
from tests.helpers.rig import Rig, StandinTarget

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    try:
        yield r
    finally:
        r.cleanup()


# --- never write a secret: the "what changed" diff of openclaw.json ----------------------------------------------

# Values of openclaw.json whose key names a secret in a way the first diff did not know (a word inside the name,
# SCREAMING_CASE env names, a secret inside a list), and token-family values under innocent names.
_SECRET_SETTINGS = {
    "channels": {"telegram": {"accounts": [{"name": "ops", "botToken": "tg-list-secret-{v}"}]}},
    "env": {"vars": {"ACME_SERVICE_TOKEN_VALUE": "env-token-secret-{v}", "DB_PASS": "db-pass-secret-{v}"}},
    "hooks": {
        "signingKey": "signing-secret-{v}",
        "secretKey": "secretkey-secret-{v}",
        "webhookSecretValue": "webhook-secret-{v}",
        "privateKeyPem": "pem-secret-{v}",
        "auth": "auth-secret-{v}",
        "notes": "ghp_{v}123456789abcdefghijABCDEFGHIJ01234",
    },
    "models": {"providers": {"acme": {"headers": {"X-Api-Key": "header-secret-{v}"}}}},
}


def _planted(v: str) -> dict[str, object]:
    loaded: dict[str, object] = json.loads(json.dumps(_SECRET_SETTINGS).replace("{v}", v))
    return loaded


def test_the_what_changed_diff_shows_no_value_of_a_secret_setting_of_openclaw_json() -> None:
    old, new = _planted("0"), _planted("1")
    old["agents"] = {"defaults": {"maxTokens": 1000, "model": {"primary": "acme/a"}}}
    new["agents"] = {"defaults": {"maxTokens": 2000, "model": {"primary": "acme/b"}}}

    lines = config_diff(old, new, Redactor())
    text = "\n".join(lines)

    for doc in (old, new):
        for value in _leaves(doc["channels"], doc["env"], doc["hooks"], doc["models"]):
            assert value not in text, f"{value!r} leaked into the diff:\n{text}"
    # every secret setting is still named as changed, and settings that are no secret keep their values
    assert "channels.telegram.accounts[0].botToken (secret)" in text
    assert "hooks.signingKey (secret)" in text
    assert "channels.telegram.accounts[0].name" not in text  # unchanged
    assert 'agents.defaults.model.primary: "acme/a" → "acme/b"' in lines
    assert "agents.defaults.maxTokens: 1000 → 2000" in lines


def _leaves(*docs: object) -> list[str]:
    out: list[str] = []
    for d in docs:
        if isinstance(d, dict):
            out += _leaves(*d.values())
        elif isinstance(d, list):
            out += _leaves(*d)
        elif isinstance(d, str):
            out.append(d)
    return out


_OPENCLAW_TEXT = """{
  gateway: { port: 18789, auth: { token: "tok-{v}", password: 'pw-{v}' } },
  channels: { telegram: { botToken: "bt-{v}" } },
  hooks: { signingKey: "sig-{v}", pass: "pass-{v}", "webhookSecretValue": "wsv-{v}", privateKeyPem: 'pem-{v}',
           webhookSignature: "whs-{v}", pwd: "pwd-{v}" },
  env: { ACME_TOKEN_VALUE: "env-{v}", DB_PWD: "dbpwd-{v}" },
  agents: { defaults: { model: { primary: "acme/visible-model" } } },
}"""


@pytest.mark.parametrize("broken", [False, True], ids=["parses", "does-not-parse"])
def test_the_llm_sees_no_secret_setting_of_openclaw_json(tmp_path: Path, broken: bool) -> None:
    """The doctor's `redacted_config` tool masked only names containing a few words when the file parsed, and sent
    the raw text (pattern redaction only) when it did not: `signingKey`, `pass`, `ACME_TOKEN_VALUE`… reached the
    model."""
    home = tmp_path / "home"
    (home / ".openclaw").mkdir(parents=True)
    text = _OPENCLAW_TEXT.replace("{v}", "planted")
    (home / ".openclaw" / "openclaw.json").write_text(text + ("\n  oops {" if broken else ""))
    config = tmp_path / "clawmedic.toml"
    config.write_text(
        '[daemon]\nstate_dir = "state"\n'
        f'[targets.gw]\nkind = "openclaw"\nport = {StandinTarget().port}\nopenclaw_home = "{home}"\n'
        f"[targets.gw.start]\ncommand = [{json.dumps(sys.executable)}]\n"
    )
    tools = LiveTools(load_config(config), "gw", Guard(Policy()), None, read_only=True)

    seen = tools.call("redacted_config", {}).text

    assert ("does not parse" in seen) is broken
    assert "acme/visible-model" in seen  # what is no secret is still shown
    assert "planted" not in seen, seen


# --- bad input: an openclaw.json nested too deeply ------------------------------------------------------------------


def test_an_openclaw_json_nested_too_deeply_is_a_parse_failure_not_a_crash(tmp_path: Path) -> None:
    """json5 recurses: ~500 levels of `[` raised RecursionError through validation, the diff and the doctor."""
    deep = "[" * 3000 + "]" * 3000
    v = openclaw.parse(deep.encode())
    assert (v.valid, v.stage) == (False, "parse")
    with pytest.raises(ValueError, match="nested too deeply"):
        openclaw.loads(deep)


# --- never stop supervising: ladder.json carried over a restart -----------------------------------------------------


@pytest.mark.parametrize(
    "carried",
    [{"consecutive_restarts": 10**6}, {"incident": 10**30}, {"latent_incident": -(10**30)}],
    ids=["restarts", "incident", "latent-incident"],
)
def test_a_carried_number_too_big_does_not_end_supervision(rig: Rig, carried: dict[str, int]) -> None:
    """`2.0 ** (n - 1)` overflows for n > 1024, and SQLite takes no integer beyond 64 bits: a damaged or
    hand-edited ladder.json ended the target's supervision, and with it the daemon (at the first crash after the
    restart, or at once when the incident was looked up)."""
    crash = rig.tmp_path / "crash"
    crash.write_text("boom\n")
    rig.write_config(StandinTarget(args=["--crash-file", str(crash)]))
    record = rig.state_dir / "targets" / "svc" / "ladder.json"
    record.parent.mkdir(parents=True, mode=0o700)
    now = time.time()
    record.write_text(
        json.dumps(
            {
                "version": 1,
                "saved_at": now,
                "state": "healthy",
                "since": now,
                "failures": [],
                "consecutive_restarts": 0,
                "incident_open": False,
                "cause": "",
                "reason": "",
                "retry_at": None,
                "incident": None,
                "latent_incident": None,
                "latent_digest": None,
            }
            | carried
        )
    )

    async def scenario() -> None:
        async with rig.daemon():
            await rig.wait_event("launched")
            await rig.wait_for(lambda: len(rig.launched_pids()) >= 2, 20, "a relaunch after the first crash")

    asyncio.run(scenario())
    assert len(rig.launched_pids()) >= 2


def test_a_carried_slow_retry_in_the_far_future_is_brought_within_one_period() -> None:
    limits = LadderLimits(retry_after_gave_up_s=600.0, retry_jitter=0.1)
    ladder = Ladder(limits)
    now = 1_000_000.0
    ladder.restore(now, Saved(State.GAVE_UP, now - 10, retry_at=1e300))
    assert ladder.state == State.GAVE_UP
    assert ladder.retry_at is not None
    assert now < ladder.retry_at <= now + 600.0 * 1.1


# --- never stop supervising / bad input: control.json and control-ack.json with numbers JSON allows ----------------


def test_a_control_file_with_infinite_numbers_neither_ends_the_daemon_nor_makes_commands_crash(rig: Rig) -> None:
    """`Infinity` is valid JSON to Python's reader; `int(inf)` raised OverflowError, which the readers did not
    catch: the daemon's control loop died with it, and every `restart`/`pause`/`reload` command with a traceback."""
    rig.write_config(StandinTarget())

    async def scenario() -> None:
        async with rig.daemon():
            await rig.wait_state("healthy")
            [first] = rig.launched_pids()
            control.control_path(rig.state_dir).write_text('{"reload_seq": Infinity, "restart_seq": {"svc": 1e999}}')
            control.ack_path(rig.state_dir).write_text('{"daemon_pid": Infinity, "reload_seq": -Infinity}')
            assert control.read_acks(rig.state_dir) is None  # unreadable: as if no daemon had acknowledged yet
            await asyncio.sleep(2 * defaults.CONTROL_POLL_S)  # the daemon reads the garbage
            asked_at = time.time()
            seq = control.request_restart(rig.state_dir, ["svc"])  # a command after the garbage
            assert seq == {"svc": 1}
            await rig.wait_for(lambda: [p for p in rig.launched_pids(since=asked_at) if p != first], 20, "the restart")

    asyncio.run(scenario())


# --- never stop supervising: the model fallback's saved state ---------------------------------------------------------


@pytest.mark.parametrize(
    "saved",
    [
        {"mode": "on_fallback", "original": ["acme/a"], "fallback": "acme/b"},  # unhashable: every step raised
        {"mode": "on_primary", "cooldowns": {"acme/a": {"kind": "auth", "reason": "x", "since": 0, "until": "soon"}}},
        {"mode": "on_fallback", "original": "acme/a", "since": "yesterday"},  # `returned` subtracted a string
        {"mode": "on_primary", "next_probe_at": ["acme/a"]},
        {"mode": "on_primary", "incident": 10**30},  # no SQLite integer
    ],
)
def test_a_damaged_model_fallback_file_is_moved_aside_and_the_fallback_keeps_working(
    tmp_path: Path, saved: dict[str, object]
) -> None:
    path = tmp_path / "models" / "gw.json"
    path.parent.mkdir()
    path.write_text(json.dumps(saved))

    def fallback() -> ModelFallback:
        return ModelFallback(
            ["acme/a", "acme/b"], rate_limit_cooldown_s=300, auth_cooldown_s=600, probe_interval_s=60, path=path
        )

    mf = fallback()
    now = 1_000_000.0
    mf.observe([{"reason": "rate_limit", "provider": "acme", "model": "a", "at": now}], now)
    actions = mf.step("acme/a", [], now)
    assert [(a.kind, a.model) for a in actions] == [("switch", "acme/b")]
    mf.switched("acme/a", "acme/b", now)
    assert mf.returned(now + 1) == 1.0
    kept = list(path.parent.glob("gw.json.corrupt-*"))
    assert [json.loads(k.read_text()) for k in kept] == [saved]  # never deleted
    assert fallback().state.mode.value == "on_primary"  # what it saved since reads back


# --- never signal a process clawmedic did not start: what the gateway left behind carries its marker ----------------


def test_fix_restart_without_a_daemon_leaves_alone_a_detached_helper_that_inherited_the_marker(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gateway's children inherit its environment, the identity marker included. A helper it left running in
    its own session (an agent's background job) was "ours" by marker once the gateway was gone: `fix restart`
    with no daemon (and a daemon adopting at start) SIGTERMed the user's process. Only the launch itself is ours."""
    monkeypatch.setattr(defaults, "LAUNCH_MARKER_SLACK_S", 0.5, raising=False)  # the helper starts 1 s later
    rig.write_config(StandinTarget())
    loaded = rig.load()
    target_dir = rig.state_dir / "targets" / "svc"
    pid_file = rig.tmp_path / "helper.pid"
    script = (
        "import subprocess, sys, time; time.sleep(1.0); "
        "p = subprocess.Popen(['sleep', '120'], start_new_session=True); "
        f"open({str(pid_file)!r}, 'w').write(str(p.pid))"
    )
    helper = 0
    try:
        gateway = asyncio.run(
            Launcher(target_dir, loaded.redactor.text).spawn([sys.executable, "-c", script], {}, None)
        )
        assert asyncio.run(gateway.wait()) == 0  # the "gateway" is gone; its helper runs on, marked
        helper = int(pid_file.read_text())
        assert os.environ.get("CLAWMEDIC_TARGET") is None

        outcome = relaunch.restart_unsupervised(loaded, "svc", lambda _: None)

        assert outcome is not None and outcome.ok, outcome
        assert psutil.Process(helper).status() != psutil.STATUS_ZOMBIE  # still running: not signalled
        assert not [e for e in rig.events("stopped") if e.get("pid") == helper]
    finally:
        if helper:
            os.kill(helper, signal.SIGKILL)


# --- run --dry-run changes nothing: no GitHub issue, no heartbeat ---------------------------------------------------


def test_a_dry_run_files_no_github_issue_and_pings_no_heartbeat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Notifications went through the dry run's WouldSender, but `[daemon.github]` and `[daemon.heartbeat]` were
    plugged in as usual: a dry run filed and commented on issues, told the dead-man's switch that a daemon
    supervises (none does: a dry run only watches), and — its targets never relaunched, so given up — pinged
    `fail_url`, paging humans."""
    monkeypatch.setenv("CLAWMEDIC_TEST_GH_TOKEN", "ghp_" + "x" * 36)
    config = tmp_path / "clawmedic.toml"
    config.write_text(
        '[daemon]\nstate_dir = "state"\n'
        '[daemon.github]\nrepo = "acme/ops"\ntoken_env = "CLAWMEDIC_TEST_GH_TOKEN"\napi_url = "http://127.0.0.1:9"\n'
        '[daemon.heartbeat]\nurl = "http://127.0.0.1:9/ping"\nfail_url = "http://127.0.0.1:9/fail"\n'
        f"[targets.svc]\nport = {StandinTarget().port}\n[targets.svc.start]\ncommand = [{json.dumps(sys.executable)}]\n"
    )
    loaded = load_config(config)
    assert {"GitHubIssues", "Heartbeat"} <= set(plugin_names(plugins_for(loaded)))  # a real run has both
    loaded.dry_run = True
    plugin, why = github_issues.plugin_for(loaded)
    assert plugin is None
    assert why is not None and "dry run" in why
    assert not {"GitHubIssues", "Heartbeat"} & set(plugin_names(plugins_for(loaded)))


def plugin_names(plugins: Sequence[object]) -> list[str]:
    return [type(p).__name__ for p in plugins]


def test_a_later_child_of_a_live_launch_is_ours_and_once_orphaned_it_is_not(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wrapper launch (`npx`, a shell without exec) leaves the port to a child it starts later: that child is ours
    while its launch runs. Once the launch is gone, the marked orphan is nobody clawmedic started."""
    monkeypatch.setattr(defaults, "LAUNCH_MARKER_SLACK_S", 0.5, raising=False)
    rig.write_config(StandinTarget())
    loaded = rig.load()
    target_dir = rig.state_dir / "targets" / "svc"
    pid_file = rig.tmp_path / "child.pid"
    script = (
        "import subprocess, time; time.sleep(1.0); "
        "p = subprocess.Popen(['sleep', '120'], start_new_session=True); "
        f"open({str(pid_file)!r}, 'w').write(str(p.pid)); time.sleep(120)"
    )
    child = 0
    launch = asyncio.run(Launcher(target_dir, loaded.redactor.text).spawn([sys.executable, "-c", script], {}, None))
    try:
        deadline = time.monotonic() + 10
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline, "the launch never started its child"
            time.sleep(0.02)
        child = int(pid_file.read_text())
        assert identity.has_marker(launch.pid, target_dir)
        assert identity.has_marker(child, target_dir)  # under its live launch
        os.kill(launch.pid, signal.SIGKILL)
        assert asyncio.run(launch.wait()) is not None
        assert not identity.has_marker(child, target_dir)  # orphaned: not ours any more
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(launch.pid, signal.SIGKILL)
        if child:
            os.kill(child, signal.SIGKILL)


# --- never signal a process it did not start: two targets on one gateway state, by reload or not ---------------------


def _two_gateways(tmp_path: Path, profile_b: str = "") -> str:
    home = tmp_path / "gw-home"
    out = ""
    for name, profile in (("a", ""), ("b", profile_b)):
        env = f"env = {{ OPENCLAW_PROFILE = {json.dumps(profile)} }}\n" if profile else ""
        out += (
            f'[targets.{name}]\nkind = "openclaw"\nport = {StandinTarget().port}\nopenclaw_home = "{home}"\n'
            f'[targets.{name}.start]\ncommand = [{json.dumps(sys.executable)}, "-c", "pass"]\n{env}'
        )
    return out


def test_two_openclaw_targets_on_one_gateway_state_are_refused_also_by_a_reload(rig: Rig) -> None:
    """Each target's gateway is the other's "duplicate gateway on this target's state" (not ours: the other
    target's marker), which `stop_stale_gateway` stops: a reload adding a second target on the HOME of the first
    had clawmedic stop a gateway over and over. Two gateways on one state cannot both run anyway (exit 78)."""
    rig.write_config(StandinTarget())
    base = rig.config_path.read_text()
    ok = base + _two_gateways(rig.tmp_path, profile_b="work")  # another profile: another state, accepted
    rig.config_path.write_text(ok)
    assert set(load_config(rig.config_path).targets) == {"svc", "a", "b"}
    rig.config_path.write_text(base)

    async def scenario() -> tuple[bool, str]:
        async with rig.daemon() as run:
            await rig.wait_state("healthy")
            rig.config_path.write_text(base + _two_gateways(rig.tmp_path))
            return await run.daemon.reload("test")

    applied, said = asyncio.run(scenario())
    assert not applied
    assert "targets.b.openclaw_home" in said and "gateway state of target a" in said
    assert not rig.events("launched", target="a") and not rig.events("launched", target="b")


# --- never stop supervising: a process.json of the wrong shape -------------------------------------------------------


@pytest.mark.parametrize(
    "record",
    [
        {"pid": "1", "create_time": "x", "command": [], "started_at": 0, "log_path": "", "log_offset": 0},
        {"pid": [1], "create_time": 0, "command": 5, "started_at": 0, "log_path": 3, "log_offset": "a"},
    ],
    ids=["strings", "lists"],
)
def test_a_process_record_of_the_wrong_types_is_not_a_crash(rig: Rig, record: dict[str, object]) -> None:
    """`ProcessRecord(**json)` took any types: comparing a string PID raised TypeError out of `adopt`, which ended
    the target's supervision, and with it the daemon — and the next daemon, on the same file."""
    rig.write_config(StandinTarget())
    target_dir = rig.state_dir / "targets" / "svc"
    target_dir.mkdir(parents=True, mode=0o700)
    (target_dir / "process.json").write_text(json.dumps(record))

    async def scenario() -> None:
        async with rig.daemon():
            await rig.wait_state("healthy")

    asyncio.run(scenario())
    assert len(rig.launched_pids()) == 1


@pytest.mark.parametrize(
    ("args", "named"),
    [(["incidents", "show", str(10**30)], "incident_id"), (["incidents", "--limit", str(10**30)], "--limit")],
    ids=["show", "limit"],
)
def test_a_number_beyond_sqlite_is_a_usage_error_not_a_traceback(rig: Rig, args: list[str], named: str) -> None:
    rig.write_config(StandinTarget())
    clawmedic = Path(sys.executable).parent / "clawmedic"
    r = subprocess.run(
        [str(clawmedic), *args, "--config", str(rig.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    assert named in r.stderr
