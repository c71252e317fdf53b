"""The LLM doctor is asked for a remedy decision and told how close the rules came (issue 18 item 4): the raw
requests carry the rules' near-misses, and a `finish` without a remedy or a "none fits, because …" is refused
once, with one corrective turn inside the step limit."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from clawmedic.config import LoadedConfig, load_config
from clawmedic.doctor import Escalation
from clawmedic.doctor.clinic import RuleDoctor
from clawmedic.doctor.evidence import Evidence
from clawmedic.doctor.learnings import LearningStore
from clawmedic.doctor.llm.agent import DECISION_REFUSAL, Consultation, Limits, consult, evidence_prompt
from clawmedic.doctor.llm.backends import make_backend
from clawmedic.doctor.llm.evals import Case, run_case
from clawmedic.doctor.llm.run import policy_of
from clawmedic.doctor.llm.tools import RecordedTools
from clawmedic.doctor.remedies import Guard, Policy
from clawmedic.doctor.rules import near_misses
from clawmedic.knowngood_client import KnownGoodClient
from clawmedic.redact import Redactor
from clawmedic.store.incidents import IncidentStore
from tests.helpers.rig import free_port
from tests.helpers.scripted_llm import ScriptedLLM, Turn, call

LIMITS = Limits(max_steps=6, time_budget_s=60.0, request_timeout_s=20.0, tool_output_max_chars=3000)


def _config(tmp_path: Path, llm: ScriptedLLM) -> LoadedConfig:
    port = free_port()
    path = tmp_path / "clawmedic.toml"
    path.write_text(f"""
[daemon]
state_dir = "state"
[daemon.doctor.llm]
backend = "openai"
model = "scripted"
base_url = "{llm.url}"
[targets.svc]
kind = "http"
port = {port}
liveness.url = "http://127.0.0.1:{port}/health"
[targets.svc.start]
command = ["{sys.executable}", "-c", "pass"]
""")
    return load_config(path)


def _consult(script: list[Turn], tmp_path: Path) -> tuple[Consultation, ScriptedLLM]:
    with ScriptedLLM(script) as llm:
        loaded = _config(tmp_path, llm)
        prompt = evidence_prompt({"target": "svc", "reason": "exit 1"}, [], [])
        tools = RecordedTools({}, Guard(Policy()))
        result = consult(make_backend(loaded.config.daemon.doctor.llm), tools, prompt, LIMITS, Redactor())
    return result, llm


def _tool_replies(request: dict[str, Any]) -> list[str]:
    return [str(m.get("content")) for m in request["messages"] if m["role"] == "tool"]


def test_a_finish_without_a_remedy_decision_is_refused_once_then_accepted(tmp_path: Path) -> None:
    finish = call("finish", diagnosis="unclear", fault="other")
    result, llm = _consult([finish, finish], tmp_path)
    assert len(llm.requests) == 2, "one corrective turn, then the same finish is accepted"
    assert _tool_replies(llm.requests[1]) == [DECISION_REFUSAL]
    assert [(t.name, t.status) for t in result.tools] == [("finish", "refused"), ("finish", "ok")]
    assert result.ended == "finished" and result.decision_asked and result.none_fits is None


def test_a_finish_that_says_why_no_remedy_fits_is_accepted_at_once(tmp_path: Path) -> None:
    why = "Node is too old; installing another Node is for a human"
    result, llm = _consult(
        [call("finish", diagnosis="old node", fault="node-engine-mismatch", none_fits=why)], tmp_path
    )
    assert len(llm.requests) == 1
    assert result.ended == "finished" and not result.decision_asked and result.none_fits == why


def test_a_finish_after_a_remedy_is_accepted_at_once(tmp_path: Path) -> None:
    script = [call("restore_known_good"), call("finish", diagnosis="bad edit", fault="config-changed")]
    result, llm = _consult(script, tmp_path)
    assert len(llm.requests) == 2
    assert not any(DECISION_REFUSAL in r for r in _tool_replies(llm.requests[1]))
    assert result.ended == "finished" and not result.decision_asked and result.fault == "config-changed"


def test_finish_offers_the_none_fits_field_and_the_prompt_asks_for_a_decision(tmp_path: Path) -> None:
    _, llm = _consult([call("finish", diagnosis="d", fault="other", none_fits="nothing fits")], tmp_path)
    body = llm.requests[0]
    finish = next(t["function"] for t in body["tools"] if t["function"]["name"] == "finish")
    assert "none_fits" in finish["parameters"]["properties"]
    assert "none_fits" in body["messages"][0]["content"], "the system prompt asks for the decision"


def test_the_daemon_path_sends_the_rules_near_misses(tmp_path: Path) -> None:
    """A port conflict with nothing on the port: no rule matches, the model is asked, and its first request says
    which rule came close and why it did not match."""
    script = [call("retry_start"), call("finish", diagnosis="the holder left", fault="other")]
    with ScriptedLLM(script) as llm:
        loaded = _config(tmp_path, llm)
        loaded.state_dir.mkdir(parents=True, exist_ok=True)
        incidents = IncidentStore(loaded.state_dir / "incidents.sqlite", loaded.redactor)
        inc = incidents.open("svc", "port taken", time.time())
        learnings = LearningStore(loaded.state_dir / "learnings.sqlite")
        doctor = RuleDoctor(loaded, incidents, KnownGoodClient(loaded.state_dir), learnings, policy_of(loaded))
        esc = Escalation("svc", inc, "port taken", "port_conflict", {"last_exit": {"code": 1}})
        asyncio.run(doctor.treat(esc))
    assert llm.requests, "no rule explained it: the model was consulted"
    first = llm.requests[0]["messages"][1]["content"]
    assert "Rules that almost matched" in first
    assert "port-taken-by-foreign-process" in first and "nothing holds the port now" in first


def test_an_evaluation_sends_the_near_misses_of_the_case_evidence(tmp_path: Path) -> None:
    evidence: dict[str, Any] = {
        "target": "gateway",
        "cause": "crash_loop",
        "reason": "crash loop",
        "last_exit": {"code": 1, "kind": "crash"},
        "config": {"valid": True, "stage": "ok", "issues": []},
        "node": {"found": True, "version": "24.0.0", "engines": ">=24", "satisfied": True},
        "changes": [
            {"what": "node", "summary": "the Node binary was replaced", "when": "5 s before", "reversible": False}
        ],
    }
    expected = near_misses(Evidence(**evidence))
    assert {n["rule"] for n in expected} >= {"config-blocked", "node-engine-mismatch"}
    case = Case("c", "", evidence, {}, "other", [None], [])
    with ScriptedLLM([call("finish", diagnosis="d", fault="other", none_fits="n")]) as llm:
        loaded = _config(tmp_path, llm)
        run_case(make_backend(loaded.config.daemon.doctor.llm), case, LIMITS)
    first = llm.requests[0]["messages"][1]["content"]
    assert all(f"- {n['rule']} ({n['title']}): {n['why_not']}" in first for n in expected)
    assert "Node changed but satisfies" in first
