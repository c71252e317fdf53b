"""Conversation readiness over recorded `openclaw agent --json` answers and gateway log lines (OpenClaw 2026.9.6,
the loopback model stand-in set to ok, 401 and hang), the probe's schedule as a state machine over an injected
clock, and the plugin's incidents with the probe replaced."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import ValidationError

from clawmedic.config import ConversationConfig, LoadedConfig, load_config
from clawmedic.doctor.conversation import (
    TRANSITIONS,
    ConversationProbe,
    IllegalMove,
    Phase,
    ProbeResult,
    Readiness,
    agent_args,
    classify,
    parse_reply,
    session_key,
    turn_records,
)
from clawmedic.redact import Redactor
from clawmedic.store.events import EventLog, read_events
from clawmedic.store.incidents import IncidentStore

RUN = "77148b41-5426-40a1-bff1-b282fdc3091b"

# `openclaw agent --agent main --session-key agent:main:clawmedic-readiness --message … --json`, recorded (trimmed)
OK_REPLY = {
    "runId": "c707dc61-a8d8-4d62-973d-48d955940909",
    "status": "ok",
    "summary": "completed",
    "result": {
        "payloads": [{"text": "pong", "mediaUrl": None}],
        "meta": {
            "durationMs": 13392,
            "agentMeta": {
                "provider": "alpha",
                "model": "alpha-model",
                "usage": {"input": 1, "output": 1, "cacheRead": 0, "total": 2},
                "contextBudgetStatus": {"estimatedPromptTokens": 18664},
            },
        },
    },
}
AUTH_REPLY = {
    "ok": False,
    "runId": RUN,
    "origin": "gateway",
    "error": {
        "type": "cli_error",
        "message": "Authentication failed (provider returned HTTP 401). Your provider token may have expired.",
    },
}
TIMEOUT_REPLY = {
    "runId": "2c4b4c76-e495-41b9-a206-1e865dd620f4",
    "status": "timeout",
    "summary": "aborted",
    "timeoutPhase": "provider",
    "result": {
        "payloads": [{"text": "Request timed out before a response was generated.", "isError": True}],
        "meta": {"agentMeta": {"provider": "alpha", "model": "alpha-model"}},
    },
}
COOLING_REPLY = {  # the turn after a 401: OpenClaw's own provider cooldown refuses before any model call
    "ok": False,
    "runId": "10ec8a31-83c9-4661-9c7f-1036fe4af0ff",
    "error": {"message": 'Inline API key for provider "alpha" is temporarily disabled after a provider auth/billing '},
}


def _rec(event: str, run_id: str, at: str = "2026-12-01T05:05:59.327+00:00", **fields: Any) -> str:
    return json.dumps({"0": "{}", "1": {"event": event, "runId": run_id, **fields}, "time": at})


LOG = [
    _rec(
        "embedded_run_agent_end",
        RUN,
        isError=True,
        failoverReason="auth",
        provider="alpha",
        model="alpha-model",
        rawErrorPreview="401 invalid api key",
    ),
    _rec(
        "model_fallback_decision",
        RUN,
        at="2026-12-01T05:05:59.733+00:00",
        decision="candidate_failed",
        candidateProvider="alpha",
        candidateModel="alpha-model",
        reason="auth",
        status=401,
        fallbackStepFinalOutcome="chain_exhausted",
    ),
    _rec("embedded_run_agent_end", "someone-elses-run", isError=True, failoverReason="rate_limit"),
    _rec("embedded_run_agent_end", RUN, isError=False),
    "embedded run timeout: runId=2c4b… (plain text)",
]


# --- the schedule: one test per edge ------------------------------------------------------------------------------


def test_transition_unknown_to_answering() -> None:
    r = Readiness(900.0, now=0.0)
    assert r.due(0.0)
    assert r.record(True, 5.0) == "ok" and r.phase == Phase.ANSWERING
    assert r.next_at == 905.0 and not r.due(904.0) and r.due(905.0)


def test_transition_unknown_to_failing() -> None:
    r = Readiness(900.0)
    assert r.record(False, 5.0) == "open" and r.phase == Phase.FAILING
    assert r.next_at == 125.0, "while failing it asks again after CONVERSATION_RETRY_S, not a full interval"
    assert r.failing_since == 5.0


def test_transition_answering_to_answering() -> None:
    r = Readiness(60.0)
    r.record(True, 0.0)
    assert r.record(True, 60.0) == "ok" and r.next_at == 120.0


def test_transition_answering_to_failing() -> None:
    r = Readiness(30.0)
    r.record(True, 0.0)
    assert r.record(False, 30.0) == "open" and r.next_at == 60.0, "retry is never longer than the interval"


def test_transition_failing_to_failing() -> None:
    r = Readiness(900.0)
    r.record(False, 0.0)
    assert r.record(False, 120.0) == "still_failing" and r.failing_since == 0.0


def test_transition_failing_to_answering() -> None:
    r = Readiness(900.0)
    r.record(False, 0.0)
    assert r.record(True, 120.0) == "recovered" and r.failing_since is None and r.next_at == 1020.0


def test_transition_unknown_to_doubtful() -> None:
    r = Readiness(900.0, failures=2)
    assert r.record(False, 0.0) == "doubt" and r.phase == Phase.DOUBTFUL
    assert r.next_at == 120.0, "a doubt is checked again soon"


def test_transition_answering_to_doubtful() -> None:
    r = Readiness(900.0, failures=2)
    r.record(True, 0.0)
    assert r.record(False, 900.0) == "doubt" and r.failed == 1 and r.failing_since == 900.0


def test_transition_doubtful_to_doubtful() -> None:
    r = Readiness(900.0, failures=3)
    r.record(False, 0.0)
    assert r.record(False, 120.0) == "doubt" and r.failed == 2 and r.failing_since == 0.0


def test_transition_doubtful_to_answering() -> None:
    r = Readiness(900.0, failures=2)
    r.record(False, 0.0)
    assert r.record(True, 120.0) == "ok", "a slow turn followed by an answer was never an incident"
    assert r.failed == 0 and r.failing_since is None and r.phase == Phase.ANSWERING


def test_transition_doubtful_to_failing() -> None:
    r = Readiness(900.0, failures=2)
    r.record(False, 0.0)
    assert r.record(False, 120.0) == "open" and r.phase == Phase.FAILING and r.failing_since == 0.0


def test_every_edge_is_in_the_table_and_nothing_goes_back_to_unknown() -> None:
    assert all(Phase.UNKNOWN not in to for to in TRANSITIONS.values())
    r = Readiness(10.0)
    r.phase = Phase.ANSWERING
    r.phase = Phase.UNKNOWN  # a corrupted state is refused on the next move, never silently accepted
    with pytest.raises(IllegalMove):
        r._change(Phase.UNKNOWN, 1.0)


# --- reading the answer and the log ---------------------------------------------------------------------------------


def test_an_answer_counts_with_its_model_and_tokens() -> None:
    r = parse_reply(OK_REPLY, None, 12.5)
    assert r.answered and r.reply == "pong" and r.model == "alpha/alpha-model"
    assert r.usage == {"input": 1, "output": 1, "total": 2} and r.prompt_tokens_est == 18664
    assert r.error == "" and not r.timed_out


def test_a_401_is_no_answer_and_says_why() -> None:
    r = parse_reply(AUTH_REPLY, "Authentication failed (provider returned HTTP 401).", 9.1)
    assert not r.answered and r.run_id == RUN and "HTTP 401" in r.error


def test_a_timed_out_run_is_no_answer_even_with_openclaws_apology_as_text() -> None:
    r = parse_reply(TIMEOUT_REPLY, "exit 1", 57.8)
    assert not r.answered and r.timed_out and r.reply == ""
    assert r.error.startswith("the run ended as timeout in its provider phase: Request timed out")
    assert r.model == "alpha/alpha-model"


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"status": "ok", "result": {"payloads": [{"text": "  "}]}}, None),  # an empty answer
        ({"status": "ok", "result": {"payloads": [{"text": "pong"}]}}, "exit 1"),  # the CLI failed after all
        (None, "exit 1, not JSON: boom"),
        (["not", "an", "object"], None),
    ],
)
def test_anything_else_is_no_answer(data: object, error: str | None) -> None:
    assert not parse_reply(data, error, 1.0).answered


def test_turn_records_are_the_probes_own_run_only() -> None:
    recs = turn_records(LOG, RUN, since=0.0)
    assert [r["event"] for r in recs] == ["embedded_run_agent_end", "model_fallback_decision"]
    assert recs[-1]["reason"] == "auth" and recs[-1]["status"] == 401 and recs[-1]["model"] == "alpha-model"
    assert turn_records(LOG, "nobody", since=0.0) == []
    first = datetime.fromisoformat("2026-12-01T05:05:59.327+00:00").timestamp()
    late = turn_records(LOG, None, since=first + 0.1)  # no run id: by time (the decision 0.4 s later only)
    assert [r["event"] for r in late] == ["model_fallback_decision"]


@pytest.mark.parametrize(
    ("reply", "error", "records", "reason", "model"),
    [
        (AUTH_REPLY, "x", LOG[:2], "auth", "alpha/alpha-model"),  # the gateway's own record
        (TIMEOUT_REPLY, "exit 1", [], "timeout", "alpha/alpha-model"),
        (AUTH_REPLY, "x", [], "auth", None),  # the log says nothing: the CLI's words
        (COOLING_REPLY, "x", [], "auth", None),  # OpenClaw's own cooldown after a 401
        ({"ok": False, "error": {"message": "HTTP 429: Rate limit reached"}}, "x", [], "rate_limit", None),
        ({"ok": False, "error": {"message": "something odd"}}, "x", [], "unknown", None),
    ],
)
def test_classify(reply: object, error: str, records: list[str], reason: str, model: str | None) -> None:
    result = parse_reply(reply, error, 1.0)
    assert classify(result, turn_records(records, result.run_id, 0.0)) == (reason, model)


def test_our_own_deadline_is_a_timeout() -> None:
    result = ProbeResult(False, 180.0, error="no answer within 180 s", timed_out=True)
    assert classify(result, []) == ("timeout", None)


def test_the_probe_has_its_own_session_and_bounds_the_turn() -> None:
    cfg = ConversationConfig(agent="ops", timeout_s=45.5)
    args = agent_args(cfg)
    assert session_key(cfg) == "agent:ops:clawmedic-readiness"
    assert args[args.index("--session-key") + 1] == "agent:ops:clawmedic-readiness"
    assert args[args.index("--timeout") + 1] == "46" and "--json" in args and "--deliver" not in args


@pytest.mark.parametrize(
    "table",
    [
        {"interval_s": 5},
        {"timeout_s": 1},
        {"timeout_s": 7200},
        {"agent": "../main"},
        {"agent": ""},
        {"message": ""},
        {"bogus": 1},
    ],
)
def test_bad_conversation_settings_are_refused(table: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ConversationConfig.model_validate(table)


def test_conversation_is_for_openclaw_targets_only(tmp_path: Path) -> None:
    conf = tmp_path / "c.toml"
    conf.write_text(
        '[targets.web]\nkind = "http"\nliveness.url = "http://127.0.0.1:1/"\n'
        '[targets.web.start]\ncommand = ["/bin/true"]\n[targets.web.conversation]\n'
    )
    with pytest.raises(Exception, match="conversation"):
        load_config(conf)


# --- the plugin: incidents, escalation, recovery (the probe replaced) ---------------------------------------------


def _loaded(tmp_path: Path, models: bool, failures: int) -> LoadedConfig:
    conf = tmp_path / "clawmedic.toml"
    log = tmp_path / "gateway.log"
    log.write_text("\n".join(LOG) + "\n")
    conf.write_text(
        f"""[daemon]
state_dir = "state"
[targets.gw]
kind = "openclaw"
port = 19999
openclaw_home = "{tmp_path / "home"}"
log_file = "{log}"
[targets.gw.start]
command = ["/bin/true", "gateway", "run"]
[targets.gw.conversation]
interval_s = 60
failures = {failures}
"""
        + ('[targets.gw.models]\norder = ["beta/beta-model"]\n' if models else "")
    )
    (tmp_path / "home").mkdir(exist_ok=True)
    return load_config(conf)


class Rig:
    def __init__(self, tmp_path: Path, models: bool, failures: int = 1) -> None:
        self.now = [1000.0]
        self.answers: list[ProbeResult] = []
        self.woken: list[str] = []
        loaded = _loaded(tmp_path, models, failures)
        (tmp_path / "state").mkdir(exist_ok=True)
        self.ctx: Any = SimpleNamespace(
            loaded=loaded,
            events=EventLog(tmp_path / "state" / "events.jsonl", Redactor()),
            incidents=IncidentStore(tmp_path / "state" / "incidents.sqlite"),
        )
        self.plugin = ConversationProbe(
            clock=lambda: self.now[0], run_probe=lambda _l, _n, _c: self.answers.pop(0), on_failure=self.woken.append
        )
        self.plugin._targets(loaded)

    def probe(self, at: float, result: ProbeResult) -> str:
        self.now[0] = at
        self.answers.append(result)
        return asyncio.run(self.plugin.check(self.ctx, "gw"))

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in read_events(self.ctx.events.path) if e["kind"] == kind]


OK = parse_reply(OK_REPLY, None, 10.0)
FAILED_401 = parse_reply(AUTH_REPLY, "x", 9.0)
RECOVERED_ON_BETA = ProbeResult(True, 8.0, reply="pong", model="beta/beta-model")


def test_an_answer_opens_nothing(tmp_path: Path) -> None:
    rig = Rig(tmp_path, models=True)
    assert rig.probe(1000.0, OK) == "ok"
    (ev,) = rig.events("conversation_probe")
    assert ev["answered"] is True and ev["usage"] == {"input": 1, "output": 1, "total": 2}
    assert rig.ctx.incidents.list() == [] and rig.woken == []


def test_a_401_opens_one_incident_wakes_the_model_rules_and_recovers_on_the_fallback(tmp_path: Path) -> None:
    rig = Rig(tmp_path, models=True)
    assert rig.probe(1000.0, FAILED_401) == "open"
    (fault,) = rig.events("gateway_fault")
    assert fault["rule"] == "conversation-failing" and fault["reason"] == "auth"
    assert fault["model"] == "alpha/alpha-model"
    assert rig.woken == ["gw"], "the gateway check runs now: the model fallback acts on the same failure"
    inc = rig.ctx.incidents.get(fault["incident"])
    assert inc.status == "open" and inc.cause == "conversation"
    (diag,) = [e.detail for e in inc.timeline if e.kind == "diagnosis"]
    assert diag["signature"] == "cause=conversation|reason=auth"
    rules = [f["rule"] for f in diag["findings"]]
    assert rules[0] == "conversation-failing" and "model-failures" in rules, "the doctor's model rules ran too"
    assert "refuses the gateway's credentials" in diag["findings"][0]["detail"]
    assert rig.events("gateway_fault_escalated") == [], "a model fallback is configured: it gets its chance first"

    assert rig.probe(1060.0, RECOVERED_ON_BETA) == "recovered"
    inc = rig.ctx.incidents.get(fault["incident"])
    assert inc.status == "recovered" and inc.closed_at == 1060.0
    verdict = [e.detail for e in inc.timeline if e.kind == "verdict"][-1]
    assert verdict["healed"] is True and "answers again on beta/beta-model" in verdict["summary"]
    assert len(rig.events("gateway_fault")) == 1


def test_still_failing_escalates_once_and_without_a_fallback_at_once(tmp_path: Path) -> None:
    rig = Rig(tmp_path, models=True)
    rig.probe(1000.0, FAILED_401)
    assert rig.probe(1060.0, FAILED_401) == "still_failing"
    assert rig.probe(1120.0, FAILED_401) == "still_failing"
    (esc,) = rig.events("gateway_fault_escalated")
    assert rig.ctx.incidents.get(esc["incident"]).status == "escalated"
    assert len(rig.events("gateway_fault")) == 1, "one incident however long it fails"

    (tmp_path / "b").mkdir()
    other = Rig(tmp_path / "b", models=False)
    other.probe(1000.0, FAILED_401)
    (esc,) = other.events("gateway_fault_escalated")
    assert "no model fallback is configured" in esc["why"]


def test_the_plugin_probes_only_healthy_targets_when_due(tmp_path: Path) -> None:
    rig = Rig(tmp_path, models=True)
    plugin = rig.plugin
    assert plugin.readiness["gw"].due(1000.0)
    plugin.on_event({"kind": "state", "target": "gw", "new": "restarting"})
    assert plugin.states["gw"] == "restarting"
    rig.probe(1000.0, OK)
    assert not plugin.readiness["gw"].due(1059.0) and plugin.readiness["gw"].due(1060.0)


def test_one_slow_turn_is_a_doubt_two_in_a_row_are_an_incident(tmp_path: Path) -> None:
    rig = Rig(tmp_path, models=True, failures=2)
    assert rig.probe(1000.0, FAILED_401) == "doubt"
    assert rig.events("gateway_fault") == [] and rig.ctx.incidents.list() == []
    assert rig.woken == ["gw"], "the model rules act on the first failure already"
    assert rig.probe(1060.0, OK) == "ok"
    assert rig.probe(1120.0, FAILED_401) == "doubt"
    assert rig.probe(1180.0, FAILED_401) == "open"
    assert len(rig.events("gateway_fault")) == 1
