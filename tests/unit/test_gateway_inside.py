"""Channels, plugins and cron jobs inside a running gateway: the ids the gateway hands us (validated, never trusted),
the restart-before-disable policy for channels, the breaker's suppressed channels, plugins in error (never a built-in
one; re-enabled by `clawmedic resume`), and one GitHub issue per disabled cron job. Pure logic over a given clock;
the gateway and the remedies are fakes here (the real ones: tests/e2e/test_inside_gateway.py)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from clawmedic import control
from clawmedic.config import load_config
from clawmedic.doctor import remedies
from clawmedic.doctor.gateway_checks import GatewayCheck, GatewayState, Healer
from clawmedic.doctor.gateway_parts import ChannelRestarts, PluginQuarantine, load_disabled, part_findings
from clawmedic.doctor.remedies import Guard, Outcome, Policy, RemedyContext, Status
from clawmedic.doctor.rules import Finding, RemedyCall
from clawmedic.github_issues import GitHubIssues
from clawmedic.knowngood_client import KnownGoodClient
from clawmedic.redact import Redactor
from clawmedic.store.events import EventLog, read_events
from clawmedic.store.incidents import IncidentStore
from clawmedic.targets import openclaw
from clawmedic.targets.openclaw.inside import (
    disconnected_channels,
    parse_plugins,
    parse_suppressed,
    valid_channel_id,
    valid_plugin_id,
)

# --- ids from the gateway's output --------------------------------------------------------------------------------

HOSTILE = ["--url=ws://evil", "-x", "../etc", "a/../../b", "tele gram", "tg;rm -rf /", "tg\n", "$(id)", "", "A" * 200]


@pytest.mark.parametrize("bad", [*HOSTILE, "Telegram", "tg.x", "/abs", 7, None])
def test_a_channel_id_that_is_not_one_is_refused(bad: object) -> None:
    assert valid_channel_id(bad) is None


@pytest.mark.parametrize("bad", [*HOSTILE, "/abs", "@scope/../x", None, 3])
def test_a_plugin_id_that_is_not_one_is_refused(bad: object) -> None:
    assert valid_plugin_id(bad) is None


@pytest.mark.parametrize("good", ["e2e-broken", "memory-core", "@acme/tool", "a2a", "x_y.z"])
def test_real_plugin_ids_are_kept(good: str) -> None:
    assert valid_plugin_id(good) == good


# `plugins list --json` (OpenClaw 2026.9.6, trimmed): a bundled plugin, a local one in error, a hostile id
PLUGINS = {
    "plugins": [
        {"id": "memory-core", "enabled": True, "status": "loaded", "origin": "bundled"},
        {"id": "telegram", "enabled": True, "status": "error", "origin": "bundled", "error": "boom"},
        {"id": "e2e-broken", "enabled": True, "status": "error", "origin": "global", "error": "invalid config: x"},
        {"id": "--help", "enabled": True, "status": "error", "origin": "global"},
        {"id": "off", "enabled": False, "status": "disabled", "origin": "global"},
    ]
}


def test_plugins_list_is_parsed_and_a_hostile_id_dropped_with_the_reason() -> None:
    plugins, dropped = parse_plugins(PLUGINS)
    assert [(p.id, p.builtin, p.failing) for p in plugins] == [
        ("memory-core", True, False),
        ("telegram", True, True),
        ("e2e-broken", False, True),
        ("off", False, False),
    ]
    assert len(dropped) == 1 and "--help" in dropped[0]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"ready": True, "suppressed": ["telegram", "discord"]}, ["telegram", "discord"]),
        ({"suppressed": [{"channel": "telegram", "accountId": "default"}, {"id": "slack"}]}, ["telegram", "slack"]),
        ({"suppressed": ["telegram", "telegram", "../x", 5]}, ["telegram"]),
        ({"ready": True}, []),
        ("not a dict", []),
    ],
)
def test_suppressed_channels_are_read_from_ready(body: object, expected: list[str]) -> None:
    assert parse_suppressed(body) == expected


def test_disconnected_channels_are_stopped_with_an_error_or_running_unconnected() -> None:
    channels: dict[str, list[dict[str, Any]]] = {
        "telegram": [{"running": True, "connected": False, "last_error": "getMe failed: network"}],
        "webhooks": [{"running": True, "connected": False}],  # webhook mode: no connection, no error
        "slack": [{"running": False, "connected": False, "last_error": "401"}],
        "discord": [{"running": True, "connected": True}],
        "whatsapp": [{"running": True, "connected": False}, {"running": True, "connected": True}],
        "evil;x": [{"running": False, "last_error": "x"}],
        "idle": [],
    }
    assert set(disconnected_channels(channels)) == {"telegram", "slack"}, "never webhooks, whatsapp or discord"


# --- the channel policy: N checks, restart(s) min_interval apart, then disable ---------------------------------------

DOWN = {"telegram"}


@pytest.mark.parametrize(
    ("restarts", "rows"),
    [
        # (time, down?, expected call after observing, how to record it)
        (
            1,
            [
                (0, True, None),
                (60, True, None),
                (120, True, "channel_restart"),  # the third check in a row
                (180, True, "channel_disable"),  # the one restart is spent
            ],
        ),
        (
            2,
            [
                (0, True, None),
                (60, True, None),
                (120, True, "channel_restart"),
                (180, True, "wait"),  # < 300 s since the restart
                (420, True, "channel_restart"),
                (480, True, "channel_disable"),
            ],
        ),
        (
            1,
            [
                (0, True, None),
                (60, True, None),
                (120, True, "channel_restart"),
                (180, False, None),  # back: the count starts again
                (240, True, None),
                (300, True, None),
                (360, True, "channel_disable"),  # down again within 300 s of the restart: its restart is spent
            ],
        ),
        (
            0,
            [(0, True, None), (60, True, None), (120, True, "channel_disable")],  # restarts = 0: disable at once
        ),
    ],
)
def test_channel_restart_policy(restarts: int, rows: list[tuple[float, bool, str | None]]) -> None:
    p = ChannelRestarts(down_checks=3, min_interval_s=300.0, restarts=restarts)
    for at, down, expected in rows:
        due = p.observe(DOWN if down else set(), at)
        if expected is None:
            assert not due, f"t={at}: not a fault yet"
            continue
        assert due == DOWN, f"t={at}"
        call = p.call("telegram", at)
        if expected == "wait":
            assert call is None and p.wait_until(due) == 120 + 300.0
            continue
        assert call == RemedyCall(expected, {"channel": "telegram"}), f"t={at}"
        if expected == "channel_restart":
            p.restarted("telegram", at)


def test_a_suppressed_channel_is_started_once_per_interval() -> None:
    p = ChannelRestarts(3, 300.0, 1)
    assert p.start_suppressed(["telegram"], 0) == [RemedyCall("channel_start", {"channel": "telegram"})]
    p.started("telegram", 0)
    assert p.start_suppressed(["telegram"], 100) == []
    assert p.start_suppressed(["telegram"], 300) == [RemedyCall("channel_start", {"channel": "telegram"})]


def _state(**kw: Any) -> dict[str, Any]:
    return GatewayState(**kw).to_dict()


def test_part_findings_hold_channel_down_until_n_checks_and_start_suppressed_not_restart(tmp_path: Path) -> None:
    ch, pl = ChannelRestarts(2, 300.0, 1), PluginQuarantine(300.0)
    breaker = "gateway restart-loop breaker tripped: 3 unclean boot(s) within 300000ms; suppressing channel/…"
    st = _state(
        ready={"status": 503, "failing": ["telegram"]},
        channels={
            "discord": [{"running": True, "connected": False, "last_error": "gateway closed 4004"}],
            "telegram": [{"running": False, "last_error": breaker}],
            "slack": [
                {"running": False, "last_error": "ambient channel credentials suppressed; configure the channel"}
            ],
        },
        suppressed=["telegram", "slack"],
    )
    rule_finding = Finding("channel-down", "a channel is failing", 0.5, "x", [], "")
    first, _ = part_findings("gw", st, [rule_finding], ch, pl, 0.0)
    assert [f.rule for f in first] == ["channel-suppressed"], "the rules' own channel-down waits for N checks"
    assert first[0].plan == [RemedyCall("channel_start", {"channel": "telegram"})], "never an ambient one (slack)"
    second, hold = part_findings("gw", st, [rule_finding], ch, pl, 60.0)
    (down,) = [f for f in second if f.rule == "channel-down"]
    assert down.plan == [RemedyCall("channel_restart", {"channel": "discord"})], "suppressed ones are not restarted"
    assert "2 checks" in down.detail and hold == {}


def test_part_findings_disable_plugins_in_error_but_never_a_built_in_one() -> None:
    ch, pl = ChannelRestarts(3, 300.0, 1), PluginQuarantine(300.0)
    plugins, _ = parse_plugins(PLUGINS)
    st = _state(plugins=[p.to_dict() for p in plugins])
    found, hold = part_findings("gw", st, [], ch, pl, 0.0)
    (f,) = found
    assert f.rule == "plugin-error" and f.plan == [RemedyCall("plugin_disable", {"plugin": "e2e-broken"})]
    assert "telegram (built in) is in error" in f.detail, "a built-in plugin in error is reported"
    pl.tried("e2e-broken", 0.0)
    found, hold = part_findings("gw", st, [], ch, pl, 100.0)
    assert found[0].plan == [] and hold == {"plugin-error": 300.0}, "not again within min_interval_s"
    only_builtin = _state(plugins=[plugins[1].to_dict()])
    found, hold = part_findings("gw", only_builtin, [], ch, pl, 100.0)
    assert found[0].plan == [] and hold == {}, "nothing to try: the healer escalates it to humans"


def test_healer_does_not_treat_a_held_rule_and_does_not_escalate_it() -> None:
    h = Healer(cooldown_s=0.0, verify_timeout_s=10.0)
    f = Finding("channel-down", "t", 0.5, "d", [], "")
    out = h.step([f], 0.0, {"channel-down": 100.0})
    assert [d.kind for d in out] == ["open"], "held: watched, not escalated for an empty plan"
    out = h.step([f], 100.0, {})
    assert [d.kind for d in out] == ["escalate"]


def test_the_disabled_record_survives_a_restart_and_rejects_what_is_not_one(tmp_path: Path) -> None:
    path = tmp_path / "plugins" / "gw.json"
    q = PluginQuarantine(300.0, path)
    q.record("e2e-broken", 5.0, 2, "boom", "abc")
    assert PluginQuarantine(300.0, path).to_enable(2) == []
    assert PluginQuarantine(300.0, path).to_enable(3) == ["e2e-broken"]
    raw = json.loads(path.read_text())
    raw["--rm"] = {"at": 1.0, "resume_seq": 0}
    raw["x"] = {"at": "soon", "resume_seq": 0}
    path.write_text(json.dumps(raw))
    assert list(load_disabled(path)) == ["e2e-broken"]
    path.write_text("{not json")
    assert load_disabled(path) == {}


# --- the remedies through the guard, over a fake CLI seam ----------------------------------------------------------


@dataclass
class FakeCli:
    plugins: dict[str, Any] = field(default_factory=lambda: json.loads(json.dumps(PLUGINS)))
    calls: list[list[str]] = field(default_factory=list)
    fail: set[str] = field(default_factory=set)

    def __call__(self, _ctx: object, args: list[str], *, remote: bool) -> openclaw.CliAnswer:
        self.calls.append(args)
        if args[:2] == ["plugins", "list"]:
            return openclaw.CliAnswer(0, self.plugins)
        if " ".join(args[:3]) in self.fail:
            return openclaw.CliAnswer(1, None, "boom")
        return openclaw.CliAnswer(0, {"ok": True})


def _ctx(tmp_path: Path) -> RemedyContext:
    home = tmp_path / "home"
    (home / ".openclaw").mkdir(parents=True, exist_ok=True)
    (home / ".openclaw" / "openclaw.json").write_text('{"gateway": {"mode": "local"}}\n')
    toml = tmp_path / "clawmedic.toml"
    toml.write_text(
        f'[daemon]\nstate_dir = "state"\n\n[targets.gw]\nkind = "openclaw"\nport = 19999\nopenclaw_home = "{home}"\n'
        '[targets.gw.start]\nmode = "managed"\ncommand = ["true"]\n'
    )
    loaded = load_config(toml)
    return RemedyContext(loaded, "gw", KnownGoodClient(loaded.state_dir))


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> FakeCli:
    fake = FakeCli()
    monkeypatch.setattr(remedies, "_cli", fake)
    return fake


def test_channel_restart_is_stop_then_start_with_the_id_as_json_in_argv(tmp_path: Path, cli: FakeCli) -> None:
    o = Guard(Policy()).run(_ctx(tmp_path), "channel_restart", {"channel": "telegram"})
    assert o.status == Status.OK, o.detail
    assert cli.calls == [
        ["gateway", "call", "channels.stop", "--params", '{"channel": "telegram"}', "--json"],
        ["gateway", "call", "channels.start", "--params", '{"channel": "telegram"}', "--json"],
    ]


def test_a_stuck_stop_does_not_prevent_the_start_but_a_failed_start_fails(tmp_path: Path, cli: FakeCli) -> None:
    cli.fail = {"gateway call channels.stop"}
    assert Guard(Policy()).run(_ctx(tmp_path), "channel_restart", {"channel": "telegram"}).status == Status.OK
    cli.fail = {"gateway call channels.start"}
    assert Guard(Policy()).run(_ctx(tmp_path), "channel_restart", {"channel": "telegram"}).status == Status.FAILED


@pytest.mark.parametrize("remedy", ["channel_restart", "channel_start"])
@pytest.mark.parametrize("bad", ["--url=ws://evil", "a;b", "../x", "state-database:x"])
def test_channel_remedies_refuse_ids_that_are_not_channels(tmp_path: Path, cli: FakeCli, remedy: str, bad: str) -> None:
    o = Guard(Policy()).run(_ctx(tmp_path), remedy, {"channel": bad})
    assert o.status == Status.REFUSED and cli.calls == []


@pytest.mark.parametrize("internal", ["state-database", "agent-database:main", "startup-sidecars"])
def test_channel_remedies_refuse_gateway_internals(tmp_path: Path, cli: FakeCli, internal: str) -> None:
    o = remedies._channel_restart(_ctx(tmp_path), remedies.ChannelParams(channel=internal.split(":")[0]))
    assert o.status == Status.REFUSED and cli.calls == []


def test_plugin_disable_snapshots_first_and_refuses_built_in_and_healthy_ones(tmp_path: Path, cli: FakeCli) -> None:
    ctx = _ctx(tmp_path)
    guard = Guard(Policy())
    o = guard.run(ctx, "plugin_disable", {"plugin": "e2e-broken"})
    assert o.status == Status.OK, o.detail
    assert cli.calls[-1] == ["plugins", "disable", "e2e-broken"]
    snap = o.changes[0]["snapshot_before"]
    assert snap and ctx.known_good.read("gw", "openclaw.json", snap) is not None
    for pid, why in (("telegram", "built into OpenClaw"), ("memory-core", "built into"), ("off", "not an enabled")):
        cli.calls.clear()
        o = guard.run(ctx, "plugin_disable", {"plugin": pid})
        assert o.status == Status.REFUSED and why in o.detail, o.detail
        assert ["plugins", "disable", pid] not in cli.calls
    o = guard.run(ctx, "plugin_disable", {"plugin": "--help"})
    assert o.status == Status.REFUSED and "bad parameters" in o.detail


# --- the gateway check: a plugin disabled, reported, re-enabled by `clawmedic resume`; a cron job's GitHub issue --


@dataclass
class FakeGuard:
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    fail: set[str] = field(default_factory=set)

    def run(self, _ctx: object, name: str, params: dict[str, Any]) -> Outcome:
        self.calls.append((name, params))
        if name in self.fail:
            return Outcome(name, Status.FAILED, "channels.start timed out", params)
        changes = [{"snapshot_before": "rev1", "error": "boom"}] if name == "plugin_disable" else []
        return Outcome(name, Status.OK, "done", params, changes)


def _check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[GatewayCheck, Any, FakeGuard, list[Any]]:
    home = tmp_path / "home"
    conf = tmp_path / "clawmedic.toml"
    conf.write_text(
        f'[daemon]\nstate_dir = "state"\n[targets.gw]\nkind = "openclaw"\nport = 19999\nopenclaw_home = "{home}"\n'
        '[targets.gw.start]\ncommand = ["/bin/true", "gateway", "run"]\n'
        "[daemon.doctor.gateway_checks]\ncooldown_s = 0.0\nverify_timeout_s = 30.0\n"
        "[daemon.doctor.gateway_checks.channels]\ndown_checks = 2\nmin_interval_s = 300\n"
    )
    loaded = load_config(conf)
    now, reads = [0.0], list[GatewayState]()
    check = GatewayCheck(loaded, clock=lambda: now[0], read=lambda _ld, _n, _since: reads[-1])
    guard = FakeGuard()
    monkeypatch.setattr(check.guard, "run", guard.run)
    (tmp_path / "state").mkdir(exist_ok=True)
    ctx: Any = SimpleNamespace(
        events=EventLog(tmp_path / "state" / "events.jsonl", Redactor()),
        incidents=IncidentStore(tmp_path / "state" / "incidents.sqlite"),
        known_good=None,
    )

    def run(at: float, state: GatewayState) -> list[dict[str, Any]]:
        now[0] = at
        reads.append(state)
        asyncio.run(check.check(ctx, "gw"))
        return read_events(ctx.events.path)

    return check, SimpleNamespace(ctx=ctx, run=run, loaded=loaded), guard, reads


def test_a_plugin_in_error_is_disabled_reported_and_enabled_again_by_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    check, rig, guard, _ = _check(tmp_path, monkeypatch)
    broken, _ = parse_plugins(PLUGINS)
    rig.run(0.0, GatewayState(plugins=[p.to_dict() for p in broken if p.id == "e2e-broken"]))
    assert guard.calls == [("plugin_disable", {"plugin": "e2e-broken"})]
    events = read_events(rig.ctx.events.path)
    (fault,) = [e for e in events if e["kind"] == "gateway_fault"]
    assert fault["rule"] == "plugin-error" and "e2e-broken" in fault["detail"]
    assert [e["plugin"] for e in events if e["kind"] == "plugin_disabled"] == ["e2e-broken"]
    events = rig.run(10.0, GatewayState(plugins=[]))
    assert [e["outcome"] for e in events if e["kind"] == "gateway_fault_resolved"] == ["recovered"]
    rig.run(20.0, GatewayState())
    assert len(guard.calls) == 1, "no enable before a resume"
    control.resume(rig.loaded.state_dir, ["gw"])
    events = rig.run(30.0, GatewayState())
    assert guard.calls[-1] == ("plugin_enable", {"plugin": "e2e-broken"})
    assert [e["plugin"] for e in events if e["kind"] == "plugin_enabled"] == ["e2e-broken"]
    assert check.plugins["gw"].disabled == {}, "forgotten once enabled: a second resume enables nothing"
    rig.run(40.0, GatewayState())
    assert len(guard.calls) == 2


def test_a_channel_is_restarted_then_disabled_and_a_failing_cron_job_emits_one_issue_event_per_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, rig, guard, _ = _check(tmp_path, monkeypatch)
    down = GatewayState(ready={"status": 503, "failing": ["telegram"]})
    rig.run(0.0, down)
    assert guard.calls == []
    rig.run(60.0, down)
    assert guard.calls == [("channel_restart", {"channel": "telegram"})]
    rig.run(100.0, down)  # verifying (30 s) is over: still down; the one restart is spent → disable
    assert guard.calls[-1] == ("channel_disable", {"channel": "telegram"})
    jobs = [
        {
            "id": "job-a",
            "name": "a",
            "enabled": True,
            "last_status": "error",
            "consecutive_errors": 3,
            "last_error": "x",
        },
        {
            "id": "job-b",
            "name": "b",
            "enabled": True,
            "last_status": "error",
            "consecutive_errors": 2,
            "last_error": "y",
        },
    ]
    events = rig.run(200.0, GatewayState(cron=jobs))
    cron = [e for e in events if e["kind"] == "cron_disabled"]
    assert [(e["job_id"], e["job_name"], e["interval_s"]) for e in cron] == [
        ("job-a", "a", 21600.0),
        ("job-b", "b", 21600.0),
    ]


class _Api:
    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, Any]]] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and request.url.path.endswith("/issues"):
            return httpx.Response(200, json=[])
        if request.method == "GET":
            return httpx.Response(200, json={"number": int(request.url.path.rsplit("/", 1)[1]), "state": "open"})
        body = json.loads(request.content)
        self.posts.append((request.url.path, body))
        return httpx.Response(201, json={"number": len(self.posts)})


def test_one_github_issue_per_cron_job_per_interval(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, rig, _, _ = _check(tmp_path, monkeypatch)
    from clawmedic.config import GitHubConfig

    now = [1000.0]
    api = _Api()
    gh = GitHubIssues(
        rig.loaded,
        "tok",
        GitHubConfig(repo="acme/gw", max_per_day=50),
        clock=lambda: now[0],
        client_factory=lambda: httpx.AsyncClient(transport=httpx.MockTransport(api.handler), base_url="http://gh"),
    )

    def disabled(job: str, at: float) -> None:
        now[0] = at
        gh.on_event(
            {
                "kind": "cron_disabled",
                "target": "gw",
                "incident": 1,
                "ts": at,
                "job_id": job,
                "job_name": job,
                "errors": 2,
                "error": "exit 3",
                "interval_s": 6 * 3600.0,
            }
        )

        async def go() -> None:
            async with gh._client_factory() as client:
                await gh.work(client, None)

        asyncio.run(go())

    disabled("job-a", 1000.0)
    disabled("job-b", 1001.0)
    disabled("job-a", 1000.0 + 3600)  # again within 6 h: skipped
    assert [p for p, _ in api.posts] == ["/repos/acme/gw/issues", "/repos/acme/gw/issues"]
    assert "job-a" in api.posts[0][1]["title"] and "disabled a failing cron job" in api.posts[0][1]["title"]
    assert "clawmedic-signature: gw|cron=job-a" in api.posts[0][1]["body"]
    disabled("job-a", 1000.0 + 6 * 3600)  # 6 h later: written again (a comment on the open issue, or a new one)
    assert len(api.posts) == 3 and gh.skipped == 1


def test_a_failed_restart_is_followed_by_the_disable_not_an_escalation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, rig, guard, _ = _check(tmp_path, monkeypatch)
    guard.fail = {"channel_restart"}
    down = GatewayState(ready={"status": 503, "failing": ["telegram"]})
    rig.run(0.0, down)
    rig.run(60.0, down)
    events = rig.run(61.0, down)
    assert [c[0] for c in guard.calls] == ["channel_restart", "channel_disable"]
    assert not [e for e in events if e["kind"] == "gateway_fault_escalated"]


def test_read_state_reads_plugins_and_the_breakers_suppressed_channels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from clawmedic.doctor import gateway_checks

    _, rig, _, _ = _check(tmp_path, monkeypatch)
    seen: list[list[str]] = []

    def fake_cli(_loaded: object, _name: str, args: list[str], *, remote: bool, timeout: float) -> openclaw.CliAnswer:
        seen.append(args)
        if args[:2] == ["plugins", "list"]:
            return openclaw.CliAnswer(0, PLUGINS)
        return openclaw.CliAnswer(0, {"jobs": [], "channelAccounts": {}})

    def fake_get(url: str, **_: object) -> httpx.Response:
        body = {"ready": True, "failing": [], "suppressed": ["telegram", "--x"]}
        return httpx.Response(200, json=body, request=httpx.Request("GET", url))

    monkeypatch.setattr(openclaw, "gateway_cli", fake_cli)
    monkeypatch.setattr(httpx, "get", fake_get)
    cfg = rig.loaded.config.daemon.doctor.gateway_checks
    st = gateway_checks.read_state(rig.loaded, "gw", since=0.0, cfg=cfg)
    assert st.errors == {}, st.errors
    assert st.suppressed == ["telegram"]
    assert [p["id"] for p in st.plugins] == ["memory-core", "telegram", "e2e-broken", "off"]
    assert st.dropped and "--help" in st.dropped[0]
    assert ["plugins", "list", "--json"] in seen
    off = cfg.model_copy(update={"plugins": cfg.plugins.model_copy(update={"enabled": False})})
    seen.clear()
    assert gateway_checks.read_state(rig.loaded, "gw", since=0.0, cfg=off).plugins == []
    assert ["plugins", "list", "--json"] not in seen, "[…plugins] enabled = false reads no plugin list"


def test_a_channel_turned_off_in_the_config_is_not_down_whatever_its_stopped_accounts_say(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seen on the real gateway: after `channels.stop` timed out and the channel was disabled, `channels status`
    still listed it stopped with `channel stop timed out after 5000ms`; the check must not count it down again."""
    from clawmedic.doctor import gateway_checks

    _, rig, _, _ = _check(tmp_path, monkeypatch)
    cfg = openclaw.config_path(rig.loaded.targets["gw"])
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text("{channels: {telegram: {enabled: false}, discord: {enabled: true}}}")
    stale = {"accountId": "default", "running": False, "connected": False, "lastError": "channel stop timed out"}
    status = {"channelAccounts": {"telegram": [stale], "discord": [stale]}}

    def fake_cli(_loaded: object, _name: str, args: list[str], *, remote: bool, timeout: float) -> openclaw.CliAnswer:
        return openclaw.CliAnswer(0, status if args[0] == "channels" else {"jobs": [], "plugins": []})

    monkeypatch.setattr(openclaw, "gateway_cli", fake_cli)
    monkeypatch.setattr(httpx, "get", lambda url, **_: httpx.Response(200, json={}, request=httpx.Request("GET", url)))
    st = gateway_checks.read_state(rig.loaded, "gw", since=0.0, cfg=rig.loaded.config.daemon.doctor.gateway_checks)
    assert set(st.channels) == {"discord"}, "the disabled telegram is left out; the enabled discord is judged"
