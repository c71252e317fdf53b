"""Gateway checks over recorded gateway state (shapes from OpenClaw 2026.9.6's `--json` output and log), the rules
that plan gateway remedies, and the healer's decisions over an injected clock: one incident per fault, a cooldown,
a try limit, escalation instead of loops."""

from __future__ import annotations

import json
from typing import Any

import pytest

from clawmedic.doctor.evidence import Evidence
from clawmedic.doctor.gateway_checks import (
    GatewayState,
    Healer,
    findings_of,
    parse_channels,
    parse_cron,
    parse_model_events,
    parse_sessions,
)
from clawmedic.doctor.remedies import Guard, Outcome, Policy, Risk, Status
from clawmedic.doctor.report import render
from clawmedic.doctor.rules import Finding, RemedyCall
from clawmedic.store.incidents import Incident, TimelineEntry

JOB = "2d69b37a-8d70-45bd-98c7-c069a361ae12"
# `cron list --all --json`, recorded (trimmed): a user job failing twice in a row, a built-in job, a disabled job
CRON_LIST = {
    "jobs": [
        {
            "id": JOB,
            "name": "failing",
            "enabled": True,
            "payload": {"kind": "command", "argv": ["sh", "-lc", "exit 3"]},
            "state": {"lastRunStatus": "error", "lastError": "command exited with code 3", "consecutiveErrors": 2},
        },
        {
            "id": "d02b9e95-b1a8-4cfe-9c8c-f41063c49cd7",
            "declarationKey": "heartbeat:main",
            "name": "heartbeat-main",
            "enabled": True,
            "state": {"nextRunAtMs": 1795999536088},
        },
        {
            "id": "aaaaaaaa-0000-0000-0000-000000000000",
            "name": "already-off",
            "enabled": False,
            "state": {"lastRunStatus": "error", "lastError": "command exited with code 3", "consecutiveErrors": 5},
        },
    ]
}
CHANNELS = {
    "channelAccounts": {
        "telegram": [
            {"accountId": "default", "running": False, "connected": False, "lastError": "401 Unauthorized"},
        ],
        "discord": [{"accountId": "default", "running": True, "connected": True, "lastError": None}],
    }
}
SESSIONS = {
    "sessions": [
        {"key": "agent:main:main", "providerOverride": "fake", "modelOverride": "fake-model"},
        {"key": "agent:main:other", "providerOverride": "other", "modelOverride": "good-model"},
        {"key": "agent:main:plain"},
    ]
}


def _log_line(at: str, **fields: Any) -> str:
    obj = {"event": "model_fallback_decision", "decision": "candidate_failed", **fields}
    return json.dumps({"0": '{"subsystem":"model-fallback"}', "1": obj, "2": "model fallback decision", "time": at})


MODEL_LOG = [
    _log_line("2026-01-01T10:00:00.000Z", candidateProvider="fake", candidateModel="fake-model", reason="auth"),
    "not json",
    json.dumps({"1": {"event": "other"}, "time": "2026-01-01T10:00:01.000Z"}),
    _log_line(
        "2026-01-01T10:00:05.000Z",
        candidateProvider="fake",
        candidateModel="fake-model",
        reason="rate_limit",
        status=429,
        fallbackStepFinalOutcome="chain_exhausted",
    ),
]


def _state(**kw: Any) -> GatewayState:
    return GatewayState(**kw)


def _only(findings: list[Finding], rule: str) -> Finding:
    (f,) = [f for f in findings if f.rule == rule]
    return f


def test_a_cron_job_failing_twice_is_planned_for_cron_disable_and_others_are_left_alone() -> None:
    jobs = parse_cron(CRON_LIST)
    assert [j["system"] for j in jobs] == [False, True, False]
    f = _only(findings_of("gateway", _state(cron=jobs)), "cron-failing")
    assert f.plan == [RemedyCall("cron_disable", {"job_id": JOB})]
    assert "command exited with code 3" in f.detail and JOB in f.detail


def test_a_single_cron_failure_is_not_yet_a_fault() -> None:
    jobs = parse_cron(CRON_LIST)
    jobs[0]["consecutive_errors"] = 1
    assert findings_of("gateway", _state(cron=jobs)) == []


def test_a_channel_failing_ready_is_planned_for_channel_disable_but_gateway_internals_are_not() -> None:
    ready = {"status": 503, "failing": ["telegram", "startup-sidecars", "agent-database:main"]}
    f = _only(findings_of("gateway", _state(ready=ready)), "channel-down")
    assert f.plan == [RemedyCall("channel_disable", {"channel": "telegram"})]


def test_a_stopped_channel_account_with_an_error_is_down_and_a_running_one_is_not() -> None:
    f = _only(findings_of("gateway", _state(channels=parse_channels(CHANNELS))), "channel-down")
    assert f.plan == [RemedyCall("channel_disable", {"channel": "telegram"})]
    assert "401 Unauthorized" in f.detail


def test_model_events_since_the_last_check_are_read_and_older_ones_skipped() -> None:
    since = 1767261602.0  # 2026-01-01T10:00:02Z
    events = parse_model_events(MODEL_LOG, since)
    assert [(e["reason"], e["status"], e["outcome"]) for e in events] == [("rate_limit", 429, "chain_exhausted")]
    assert len(parse_model_events(MODEL_LOG, 0.0)) == 2


def test_a_session_pinned_to_the_failing_model_is_planned_for_clearing_and_other_pins_are_kept() -> None:
    pins = parse_sessions(SESSIONS)
    assert [p["key"] for p in pins] == ["agent:main:main", "agent:main:other"]
    f = _only(
        findings_of("gateway", _state(model_events=parse_model_events(MODEL_LOG, 0.0), session_pins=pins)),
        "model-failures",
    )
    assert f.plan == [RemedyCall("clear_session_model_pin", {"session_key": "agent:main:main"})]


def test_model_failures_without_a_pin_are_reported_with_no_remedy() -> None:
    f = _only(findings_of("gateway", _state(model_events=parse_model_events(MODEL_LOG, 0.0))), "model-failures")
    assert f.plan == [] and "rate_limit" in f.detail


def test_the_doctors_evidence_without_gateway_state_plans_no_gateway_remedy() -> None:
    ev = Evidence("gateway", output_tail=["cron: job run returned error status jobId=x"])
    assert findings_of("gateway", GatewayState()) == []
    from clawmedic.doctor.rules import diagnose

    (f,) = [f for f in diagnose(ev) if f.rule == "cron-failing"]
    assert f.plan == []


@pytest.mark.parametrize(
    ("name", "params", "policy", "status"),
    [
        ("cron_disable", {"job_id": "x; rm -rf /"}, Policy(), Status.REFUSED),
        ("channel_disable", {"channel": "telegram.botToken"}, Policy(), Status.REFUSED),
        ("clear_session_model_pin", {"session_key": "a b"}, Policy(), Status.REFUSED),
        ("cron_disable", {"job_id": JOB}, Policy(frozenset({Risk.READ_ONLY})), Status.NEEDS_APPROVAL),
    ],
)
def test_the_guard_refuses_bad_gateway_remedy_calls(
    name: str, params: dict[str, Any], policy: Policy, status: Status
) -> None:
    refusal = Guard(policy).check(name, params)
    assert refusal is not None and refusal.status == status


# --- the healer, over an injected clock -------------------------------------------------------------------------------

CALL = RemedyCall("cron_disable", {"job_id": JOB})
FAULT = Finding("cron-failing", "a cron job fails", 0.5, "failing", [CALL], "fix it")


def _ok(status: Status = Status.OK) -> list[Outcome]:
    return [Outcome("cron_disable", status, "…", {"job_id": JOB})]


def kinds(decisions: list[Any]) -> list[str]:
    return [d.kind for d in decisions]


def test_healer_opens_one_incident_treats_and_closes_it_healed_when_the_fault_goes() -> None:
    h = Healer(cooldown_s=600, verify_timeout_s=90)
    assert kinds(h.step([FAULT], 0)) == ["open", "treat"]
    h.tracked["cron-failing"].incident = 7
    assert h.record("cron-failing", _ok(), 1) == "verifying"
    assert h.step([FAULT], 5) == [], "verifying: no new incident, no second try"
    (d,) = h.step([], 10)
    assert (d.kind, d.incident, d.healed) == ("resolved", 7, True)
    assert h.tracked == {}


def test_healer_retries_a_remedy_that_did_not_help_only_after_the_cooldown_then_escalates_once() -> None:
    h = Healer(cooldown_s=600, verify_timeout_s=90, max_tries=2)
    h.step([FAULT], 0)
    h.record("cron-failing", _ok(), 0)
    assert kinds(h.step([FAULT], 91)) == ["unverified"], "still there after the verify window: no retry yet"
    assert h.step([FAULT], 599) == []
    assert kinds(h.step([FAULT], 600)) == ["treat"]
    h.record("cron-failing", _ok(), 600)
    assert kinds(h.step([FAULT], 691)) == ["unverified"]
    assert kinds(h.step([FAULT], 1200)) == ["escalate"]
    assert h.step([FAULT], 5000) == [], "escalated: nothing more until the fault is gone"
    (d,) = h.step([], 6000)
    assert (d.kind, d.healed) == ("resolved", True)


def test_healer_stops_at_needs_approval_without_looping() -> None:
    h = Healer(cooldown_s=0, verify_timeout_s=90)
    h.step([FAULT], 0)
    assert h.record("cron-failing", _ok(Status.NEEDS_APPROVAL), 0) == "needs_approval"
    assert all(h.step([FAULT], t) == [] for t in (1, 100, 10_000))


def test_healer_escalates_at_once_when_the_only_remedy_is_refused() -> None:
    h = Healer(cooldown_s=600, verify_timeout_s=90)
    h.step([FAULT], 0)
    assert h.record("cron-failing", _ok(Status.REFUSED), 0) == "escalated"
    (d,) = h.step([], 10)
    assert (d.kind, d.healed) == ("resolved", False), "gone without a remedy of ours: resolved, not recovered"


def test_healer_escalates_a_fault_no_remedy_is_known_for() -> None:
    h = Healer(cooldown_s=600, verify_timeout_s=90)
    bare = Finding("model-failures", "model calls fail", 0.5, "429", [], "add fallbacks")
    assert kinds(h.step([bare], 0)) == ["open", "escalate"]
    assert h.step([bare], 1) == []


def test_the_report_of_a_gateway_incident_tells_the_story() -> None:
    state = _state(cron=parse_cron(CRON_LIST), ready={"status": 200, "failing": []})
    f = _only(findings_of("gateway", state), "cron-failing")
    after = parse_cron(CRON_LIST)
    after[0]["enabled"] = False
    timeline = [
        TimelineEntry(1.0, "evidence", {"gateway": state.to_dict()}, None),
        TimelineEntry(1.0, "diagnosis", {"findings": [f.to_dict()]}, None),
        TimelineEntry(2.0, "remedy", Outcome("cron_disable", Status.OK, "disabled cron job failing").to_dict(), 3.1),
        TimelineEntry(5.0, "verify", {"fault_present": False, "gateway": {"cron": after}}, None),
        TimelineEntry(5.0, "verdict", {"healed": True, "summary": "the fault is gone after cron_disable"}, None),
    ]
    inc = Incident(1, "gateway", "recovered", "gateway check: a cron job fails", "gateway_check", 0, 1, 5, 5, 0)
    inc.timeline = timeline
    text = render(inc)
    for words in (
        "cron job `failing`",
        "cron-failing",
        "cron_disable: ok",
        "re-check: the fault is gone",
        "Recovered: the fault is gone after cron_disable",
    ):
        assert words in text, f"{words!r} missing:\n{text}"
