"""The model fallback's state machine over an injected clock: cooldowns from `model_fallback_decision` events, one
test per edge (named after it), pins moved to the same fallback, probes every interval, persistence across a daemon
restart, and the config keys that drive it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar

import pytest
from pydantic import ValidationError

from clawmedic.config import ModelsConfig, TargetConfig, load_config
from clawmedic.doctor import gateway_checks
from clawmedic.doctor.gateway_checks import GatewayCheck, GatewayState, parse_model_errors, parse_probe
from clawmedic.doctor.model_fallback import TRANSITIONS, Action, IllegalMove, Mode, ModelFallback, cooldown_kind
from clawmedic.doctor.remedies import REMEDIES, Guard, Outcome, Policy, Risk, Status
from clawmedic.redact import Redactor
from clawmedic.store.events import EventLog, read_events
from clawmedic.store.incidents import IncidentStore

A, B, C = "alpha/alpha-model", "beta/beta-model", "gamma/gamma-model"
MIN = 60.0
RATE_S, AUTH_S, PROBE_S = 300 * MIN, 720 * MIN, 300.0

Edge = tuple[Mode, Mode]
COVERED: set[Edge] = set()
F = TypeVar("F", bound=Callable[..., object])


def covers(*edges: Edge) -> Callable[[F], F]:
    def mark(fn: F) -> F:
        COVERED.update(edges)
        return fn

    return mark


def event(model: str, reason: str, at: float | None = None) -> dict[str, Any]:
    provider, name = model.split("/", 1)
    return {"at": at, "reason": reason, "provider": provider, "model": name, "decision": "candidate_failed"}


def machine(path: Path | None = None, order: list[str] | None = None) -> ModelFallback:
    return ModelFallback(
        order or [B, C], rate_limit_cooldown_s=RATE_S, auth_cooldown_s=AUTH_S, probe_interval_s=PROBE_S, path=path
    )


def kinds(actions: list[Action]) -> list[tuple[str, str]]:
    return [(a.kind, a.model) for a in actions]


# --- cooldowns --------------------------------------------------------------------------------------------------

REASONS = [
    ("rate_limit", "rate_limit"),
    ("overloaded", "rate_limit"),
    ("billing", "rate_limit"),
    ("auth", "auth"),
    ("model_not_found", "auth"),
    ("timeout", None),  # says nothing about the model
    ("context_overflow", None),
    (None, None),
]


@pytest.mark.parametrize(("reason", "kind"), REASONS)
def test_reason_maps_to_a_cooldown_kind(reason: str | None, kind: str | None) -> None:
    assert cooldown_kind(reason) == kind


def test_rate_limit_cools_300_min_and_auth_720_min() -> None:
    mf = machine()
    changed = dict(mf.observe([event(A, "rate_limit", at=100.0), event(C, "auth", at=100.0)], now=110.0))
    assert changed[A].until == 100.0 + RATE_S and changed[A].kind == "rate_limit"
    assert changed[C].until == 100.0 + AUTH_S and changed[C].kind == "auth"
    assert mf.cooling(A, 100.0 + RATE_S - 1) and not mf.cooling(A, 100.0 + RATE_S)


def test_an_auth_failure_lengthens_a_rate_limit_cooldown() -> None:
    mf = machine()
    mf.observe([event(A, "rate_limit", at=0.0)], now=0.0)
    ((_, cd),) = mf.observe([event(A, "auth", at=10.0)], now=10.0)
    assert cd.kind == "auth" and cd.until == 10.0 + AUTH_S and cd.since == 0.0


def test_an_older_event_does_not_shorten_a_cooldown_nor_report_it_again() -> None:
    mf = machine()
    mf.observe([event(A, "rate_limit", at=50.0)], now=50.0)
    assert mf.observe([event(A, "rate_limit", at=40.0)], now=60.0) == []


def test_events_without_a_cooling_reason_change_nothing() -> None:
    mf = machine()
    assert mf.observe([event(A, "timeout", at=1.0), {"reason": "rate_limit"}], now=2.0) == []
    assert mf.step(A, [], 3.0) == []


# --- the edges ----------------------------------------------------------------------------------------------------


@covers((Mode.ON_PRIMARY, Mode.ON_FALLBACK))
def test_transition_on_primary_to_on_fallback_when_the_default_cools() -> None:
    mf = machine()
    mf.observe([event(A, "rate_limit", at=0.0)], now=1.0)
    assert kinds(mf.step(A, [], 1.0)) == [("switch", B)]
    mf.switched(A, B, 1.0)
    assert mf.state.mode == Mode.ON_FALLBACK and mf.state.original == A and mf.state.fallback == B
    assert mf.step(B, [], 2.0) == [], "on the fallback, nothing to do until the probe is due"


@covers((Mode.ON_FALLBACK, Mode.ON_FALLBACK))
def test_transition_on_fallback_to_on_fallback_when_the_fallback_cools_too() -> None:
    mf = machine()
    mf.observe([event(A, "rate_limit", at=0.0)], now=0.0)
    mf.switched(A, B, 0.0)
    mf.observe([event(B, "overloaded", at=5.0)], now=5.0)
    assert kinds(mf.step(B, [], 5.0)) == [("switch", C)]
    mf.switched(B, C, 5.0)
    assert mf.state.original == A, "the user's own default stays the one to return to"
    assert mf.state.fallback == C and mf.state.since == 0.0


@covers((Mode.ON_FALLBACK, Mode.ON_PRIMARY))
def test_transition_on_fallback_to_on_primary_when_the_probe_answers() -> None:
    mf = machine()
    mf.observe([event(A, "rate_limit", at=0.0)], now=0.0)
    mf.switched(A, B, 0.0)
    assert kinds(mf.step(B, [], PROBE_S - 1)) == [], "no probe before the interval"
    assert kinds(mf.step(B, [], PROBE_S)) == [("probe", A)]
    mf.probed(A, answered=False, now=PROBE_S)
    assert kinds(mf.step(B, [], PROBE_S + 1)) == [], "a failed probe waits another interval"
    assert kinds(mf.step(B, [], 2 * PROBE_S)) == [("probe", A)]
    mf.probed(A, answered=True, now=2 * PROBE_S)
    assert kinds(mf.step(B, [], 2 * PROBE_S)) == [("return", A)]
    assert mf.returned(2 * PROBE_S + 3) == 2 * PROBE_S + 3, "the time on the fallback"
    assert mf.state.mode == Mode.ON_PRIMARY and mf.state.original is None and mf.state.incident is None


def test_on_fallback_returns_when_the_cooldown_ends_without_a_probe() -> None:
    mf = machine()
    mf.observe([event(A, "rate_limit", at=0.0)], now=0.0)
    mf.switched(A, B, 0.0)
    assert kinds(mf.step(B, [], RATE_S)) == [("return", A)]
    assert A not in mf.state.cooldowns


def test_every_allowed_edge_has_a_test() -> None:
    allowed = {(a, b) for a, targets in TRANSITIONS.items() for b in targets}
    assert allowed == COVERED


def test_a_move_outside_the_table_is_refused() -> None:
    mf = machine()
    with pytest.raises(IllegalMove):
        mf.returned(0.0)


# --- pins, exhaustion, probes ---------------------------------------------------------------------------------------


def test_pins_on_a_cooling_model_move_to_the_same_fallback() -> None:
    mf = machine()
    mf.observe([event(A, "rate_limit", at=0.0)], now=0.0)
    pins: list[dict[str, Any]] = [
        {"key": "agent:main:main", "provider": "alpha", "model": "alpha-model"},
        {"key": "agent:main:other", "provider": None, "model": A},
        {"key": "agent:main:fine", "provider": "gamma", "model": "gamma-model"},
    ]
    actions = mf.step(A, pins, 0.0)
    assert [(a.kind, a.model, a.session) for a in actions] == [
        ("switch", B, ""),
        ("pin", B, "agent:main:main"),
        ("pin", B, "agent:main:other"),
    ]


def test_pins_move_to_the_default_when_the_default_does_not_cool() -> None:
    mf = machine()
    mf.observe([event(C, "auth", at=0.0)], now=0.0)
    actions = mf.step(B, [{"key": "s", "provider": "gamma", "model": "gamma-model"}], 0.0)
    assert [(a.kind, a.model, a.session) for a in actions] == [("pin", B, "s")]


def test_every_model_cooling_is_said_once_and_nothing_is_switched() -> None:
    mf = machine()
    mf.observe([event(m, "rate_limit", at=0.0) for m in (A, B, C)], now=0.0)
    assert kinds(mf.step(A, [], 0.0)) == [("exhausted", A)]
    assert mf.step(A, [], 1.0) == [], "said once"
    assert kinds(mf.step(A, [], PROBE_S)) == [("probe", A), ("probe", B), ("probe", C)]
    mf.probed(C, answered=True, now=PROBE_S)
    assert kinds(mf.step(A, [], PROBE_S))[:1] == [("switch", C)]


def test_a_model_outside_the_order_is_not_probed() -> None:
    mf = machine()
    mf.observe([event("other/x", "rate_limit", at=0.0)], now=0.0)
    assert mf.step(B, [], PROBE_S) == []


def test_the_default_is_unknown_nothing_is_switched() -> None:
    mf = machine()
    mf.observe([event(A, "rate_limit", at=0.0)], now=0.0)
    assert kinds(mf.step(None, [], 0.0)) == []


# --- persistence ----------------------------------------------------------------------------------------------------


def test_cooldowns_and_the_fallback_survive_a_daemon_restart(tmp_path: Path) -> None:
    path = tmp_path / "models" / "gw.json"
    mf = machine(path)
    mf.observe([event(A, "auth", at=0.0)], now=0.0)
    mf.switched(A, B, 1.0)
    mf.set_incident(7)
    assert path.stat().st_mode & 0o777 == 0o600
    again = machine(path)
    assert again.state == mf.state
    assert again.state.cooldowns[A].until == AUTH_S and again.state.incident == 7
    assert kinds(again.step(B, [], PROBE_S)) == [("probe", A)]
    again.probed(A, answered=True, now=PROBE_S)
    assert kinds(again.step(B, [], PROBE_S)) == [("return", A)]
    assert again.returned(PROBE_S + 1) == PROBE_S, "the time on the fallback counts from before the restart"


def test_an_unreadable_state_file_starts_afresh(tmp_path: Path) -> None:
    path = tmp_path / "gw.json"
    path.write_text("{not json")
    assert machine(path).state.mode == Mode.ON_PRIMARY
    path.write_text(json.dumps({"mode": "sideways"}))
    assert machine(path).state.cooldowns == {}


# --- config -----------------------------------------------------------------------------------------------------


def test_models_config_defaults() -> None:
    mc = ModelsConfig(order=[B])
    assert (mc.probe_interval_s, mc.rate_limit_cooldown_min, mc.auth_cooldown_min) == (300.0, 300.0, 720.0)


@pytest.mark.parametrize(
    "bad",
    [
        {"order": []},
        {"order": ["no-provider"]},
        {"order": [B, B]},
        {"order": [B], "probe_interval_s": 59},
        {"order": [B], "rate_limit_cooldown_min": 0.5},
        {"order": [B], "auth_cooldown_min": 7 * 1440 + 1},
    ],
)
def test_models_config_refuses(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ModelsConfig.model_validate(bad)


# --- what the gateway says (recorded from OpenClaw 2026.9.6, trimmed) ----------------------------------------------

AGENT_END_429 = {
    "0": '{"subsystem":"agent/embedded"}',
    "1": {
        "event": "embedded_run_agent_end",
        "isError": True,
        "error": "⚠️ Rate limit reached, retry later; Retry-After: 1 seconds",
        "failoverReason": "rate_limit",
        "model": "alpha-model",
        "provider": "alpha",
        "rawErrorPreview": "429 Rate limit reached, retry later; Retry-After: 1 seconds",
    },
    "2": "embedded run agent end",
    "time": "2026-12-01T03:50:52.802+00:00",
}
RETRY_LINE = {
    "0": '{"subsystem":"agent/embedded"}',
    "1": "transient same-model retry 5/9 for alpha/alpha-model reason=rate_limit: delayMs=23005",
    "time": "2026-12-01T03:50:52.820+00:00",
}


def test_failed_turns_are_read_from_the_log_with_their_reason() -> None:
    lines = [json.dumps(RETRY_LINE), json.dumps(AGENT_END_429), "not json failoverReason embedded_run_agent_end"]
    (err,) = parse_model_errors(lines, since=0.0)
    assert (err["reason"], err["provider"], err["model"]) == ("rate_limit", "alpha", "alpha-model")
    assert err["at"] == pytest.approx(1796097052.802)
    assert parse_model_errors(lines, since=err["at"]) == [], "seen by the last check"
    mf = machine()
    ((ref, cd),) = mf.observe([err], now=err["at"] + 1)
    assert ref == A and cd.kind == "rate_limit"


@pytest.mark.parametrize(
    ("answer", "answered", "said"),
    [
        ({"provider": "alpha", "status": "ok", "latencyMs": 41, "results": []}, True, "ok in 41 ms"),
        (
            {"provider": "alpha", "status": "rate_limit", "error": "The provider rate limit was reached."},
            False,
            "rate_limit: The provider rate limit was reached.",
        ),
        ({"provider": "alpha", "status": "auth", "error": "Authentication failed."}, False, "auth: Authentication"),
        ("garbage", False, "unexpected answer"),
    ],
)
def test_the_probe_answer_is_read(answer: object, answered: bool, said: str) -> None:
    ok, detail = parse_probe(answer)
    assert ok is answered and said in detail


@pytest.mark.parametrize(
    ("remedy", "params"),
    [
        ("set_default_model", {"model": "no-provider"}),
        ("set_default_model", {"model": "a/b; rm -rf ~"}),
        ("set_default_model", {"model": "a/b", "extra": 1}),
        ("pin_session_model", {"session_key": "agent:main:main"}),
        ("pin_session_model", {"session_key": "--all", "model": "a/b"}),
    ],
)
def test_the_guard_refuses_bad_model_remedy_calls(remedy: str, params: dict[str, Any]) -> None:
    refusal = Guard(Policy()).check(remedy, params)
    assert refusal is not None and refusal.status == Status.REFUSED


def test_model_remedies_are_reversible_and_repair_in_place() -> None:
    for name in ("set_default_model", "pin_session_model"):
        r = REMEDIES[name]
        assert r.risk == Risk.REVERSIBLE and not r.restarts_target and r.needs_running_gateway
        assert (
            Guard(Policy(frozenset({Risk.READ_ONLY}))).check(
                name, {"model": "a/b", "session_key": "k"} if "pin" in name else {"model": "a/b"}
            )
            is not None
        )


def test_a_later_failure_of_a_cooling_model_moves_its_end_silently() -> None:
    mf = machine()
    mf.observe([event(A, "rate_limit", at=0.0)], now=0.0)
    assert mf.observe([event(A, "rate_limit", at=30.0)], now=30.0) == []
    assert mf.state.cooldowns[A].until == 30.0 + RATE_S and mf.state.cooldowns[A].since == 0.0


def test_a_model_order_is_refused_on_a_plain_http_target_and_a_bad_name_is_named() -> None:
    target = {"kind": "http", "start": {"command": ["/bin/true"]}, "liveness": {"url": "http://127.0.0.1:9/health"}}
    with pytest.raises(ValidationError, match="openclaw targets only"):
        TargetConfig.model_validate({**target, "models": {"order": [B]}})
    with pytest.raises(ValidationError, match='written "provider/model"'):
        ModelsConfig.model_validate({"order": ["gpt-4o"]})


# --- the gateway check carries the decisions out (fake gateway: remedies, probe and reads replaced) ---------------


class FakeGateway:
    """openclaw.json's default, the remedies the guard was asked to run, the probe's answers."""

    def __init__(self, home: Path) -> None:
        self.cfg = home / ".openclaw" / "openclaw.json"
        self.cfg.parent.mkdir(parents=True)
        self.set_default(A)
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.probe_answers: list[bool] = []
        self.refuse: set[str] = set()

    def set_default(self, model: str) -> None:
        self.cfg.write_text(json.dumps({"agents": {"defaults": {"model": {"primary": model}}}}))

    def run(self, _ctx: object, name: str, params: dict[str, Any]) -> Outcome:
        self.calls.append((name, params))
        if name in self.refuse:
            return Outcome(name, Status.FAILED, "config set failed", params)
        if name == "set_default_model":
            self.set_default(params["model"])
        return Outcome(name, Status.OK, "done", params)

    def probe(self, _loaded: object, _name: str, model: str, _timeout: float) -> tuple[bool, str]:
        ok = self.probe_answers.pop(0)
        return ok, "ok in 5 ms" if ok else "rate_limit"


@dataclass
class Rig:
    check: GatewayCheck
    ctx: Any
    gw: FakeGateway
    now: list[float]
    reads: list[GatewayState]

    def run(self, at: float, state: GatewayState | None = None) -> None:
        self.now[0] = at
        self.reads.append(state or GatewayState())
        asyncio.run(self.check.check(self.ctx, "gw"))

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in read_events(self.ctx.events.path) if e["kind"] == kind]


def make_rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gateway: FakeGateway | None = None) -> Rig:
    home = tmp_path / "home"
    fake = gateway or FakeGateway(home)
    conf = tmp_path / "clawmedic.toml"
    conf.write_text(
        f"""[daemon]
state_dir = "state"
[targets.gw]
kind = "openclaw"
port = 19999
openclaw_home = "{home}"
log_file = "{tmp_path / "gateway.log"}"
[targets.gw.start]
command = ["/bin/true", "gateway", "run"]
[targets.gw.models]
order = ["{B}", "{C}"]
probe_interval_s = {PROBE_S}
"""
    )
    loaded = load_config(conf)
    now = [0.0]
    reads: list[GatewayState] = []
    check = GatewayCheck(loaded, clock=lambda: now[0], read=lambda _ld, _n, _since: reads[-1])
    monkeypatch.setattr(check.guard, "run", fake.run)
    monkeypatch.setattr(gateway_checks, "probe_model", fake.probe)
    (tmp_path / "state").mkdir(exist_ok=True)
    ctx = SimpleNamespace(
        events=EventLog(tmp_path / "state" / "events.jsonl", Redactor()),
        incidents=IncidentStore(tmp_path / "state" / "incidents.sqlite"),
        known_good=None,
    )
    return Rig(check, ctx, fake, now, reads)


FAILED_TURN = GatewayState(
    model_errors=[{"at": 1.0, "reason": "rate_limit", "provider": "alpha", "model": "alpha-model"}],
    session_pins=[{"key": "agent:main:main", "provider": "alpha", "model": "alpha-model"}],
)


def test_gateway_check_falls_back_moves_pins_probes_and_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = make_rig(tmp_path, monkeypatch)
    rig.run(5.0, FAILED_TURN)
    assert rig.gw.calls == [
        ("set_default_model", {"model": B}),
        ("pin_session_model", {"session_key": "agent:main:main", "model": B}),
    ]
    (moved,) = rig.events("model_fallback")
    (cooled,) = rig.events("model_cooldown")
    assert moved["check"] == cooled["check"] == 1 and moved["to"] == B
    inc = moved["incident"]
    rig.run(10.0)
    rig.gw.probe_answers = [False, True]
    rig.run(5.0 + PROBE_S)  # due: still failing
    rig.run(5.0 + PROBE_S + 10)  # not due again
    rig.run(5.0 + 2 * PROBE_S)  # answers: back in the same check
    assert [e["answered"] for e in rig.events("model_probe")] == [False, True]
    assert rig.gw.calls[-1] == ("set_default_model", {"model": A})
    (back,) = rig.events("model_restored")
    assert back["incident"] == inc and back["on_fallback_s"] == 2 * PROBE_S
    stored = rig.ctx.incidents.get(inc)
    assert stored.status == "recovered" and stored.closed_at == 5.0 + 2 * PROBE_S
    assert len(rig.events("gateway_fault")) == 1, "one incident for the whole fallback"
    assert not any(r for r in rig.check.healers["gw"].tracked), "the healer did not clear the pin as well"


def test_gateway_check_keeps_the_fallback_across_a_daemon_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = make_rig(tmp_path, monkeypatch)
    rig.run(5.0, FAILED_TURN)
    inc = rig.events("model_fallback")[0]["incident"]
    again = make_rig(tmp_path, monkeypatch, rig.gw)  # a new daemon: the same state folder and gateway
    again.gw.probe_answers = [True]
    again.run(5.0 + PROBE_S)
    (back,) = again.events("model_restored")
    assert back["incident"] == inc and back["on_fallback_s"] == PROBE_S
    assert again.gw.calls[-1] == ("set_default_model", {"model": A})


def test_gateway_check_escalates_when_the_default_cannot_be_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = make_rig(tmp_path, monkeypatch)
    rig.gw.refuse = {"set_default_model"}
    rig.run(5.0, FAILED_TURN)
    (esc,) = rig.events("gateway_fault_escalated")
    assert esc["rule"] == "model-cooldown" and "config set failed" in esc["why"]
    assert rig.events("model_fallback") == [] and rig.ctx.incidents.get(esc["incident"]).status == "escalated"
    assert [c[0] for c in rig.gw.calls] == ["set_default_model"], "no pin moves to a default that was not set"
    rig.run(6.0)
    assert [c[0] for c in rig.gw.calls] == ["set_default_model"], "not retried before cooldown_s"
    rig.gw.refuse = set()
    rig.gw.probe_answers = [False]  # the probe is due too: the model still fails
    rig.run(6.0 + 600.0)
    assert [c[0] for c in rig.gw.calls] == ["set_default_model", "set_default_model"]
    assert rig.events("model_fallback")[0]["incident"] == esc["incident"], "the same incident"
