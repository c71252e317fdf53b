"""The LLM doctor's protocol, against a scripted OpenAI/Anthropic-compatible server on loopback and a stand-in
agent CLI on PATH: the guard refuses what the policy forbids, a planted secret never leaves, the bounds hold,
truncation is visible, and every consultation ends with a verdict."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from clawmedic.config import LoadedConfig, load_config
from clawmedic.doctor import Escalation
from clawmedic.doctor.clinic import RuleDoctor
from clawmedic.doctor.learnings import LearningStore
from clawmedic.doctor.llm.agent import Consultation, Limits, consult, evidence_prompt
from clawmedic.doctor.llm.backends import make_backend
from clawmedic.doctor.llm.run import policy_of, run_consultation
from clawmedic.doctor.llm.tools import LiveTools, RecordedTools
from clawmedic.doctor.llm.types import BackendUnavailable
from clawmedic.doctor.remedies import Guard, Policy, Risk
from clawmedic.knowngood_client import KnownGoodClient
from clawmedic.process.launcher import Launcher
from clawmedic.store.incidents import IncidentStore
from tests.helpers.rig import free_port
from tests.helpers.scripted_llm import ScriptedLLM, Turn, call, say

PLANTED = "sk-planted-secret-0123456789abcdef"


def write_config(tmp_path: Path, llm: dict[str, Any], allow_kill_foreign: bool = False) -> LoadedConfig:
    llm_lines = "\n".join(f"{k} = {json.dumps(v)}" for k, v in llm.items())
    port = free_port()
    text = f"""
[daemon]
state_dir = "state"
[daemon.doctor]
allow_kill_foreign = {str(allow_kill_foreign).lower()}
[daemon.doctor.llm]
{llm_lines}
[targets.svc]
kind = "http"
port = {port}
liveness.url = "http://127.0.0.1:{port}/health"
[targets.svc.start]
command = ["{sys.executable}", "-c", "pass"]
env = {{ SERVICE_TOKEN = "${{PLANTED_TOKEN}}" }}
"""
    path = tmp_path / "clawmedic.toml"
    path.write_text(text)
    os.environ["PLANTED_TOKEN"] = PLANTED
    return load_config(path)


def openai_cfg(llm: ScriptedLLM, **extra: Any) -> dict[str, Any]:
    return {"backend": "openai", "model": "scripted", "base_url": llm.url, **extra}


def limits(**kw: Any) -> Limits:
    base = {"max_steps": 6, "time_budget_s": 60.0, "request_timeout_s": 20.0, "tool_output_max_chars": 3000}
    return Limits(**{**base, **kw})


def recorded(outputs: dict[str, str] | None = None, policy: Policy | None = None) -> RecordedTools:
    return RecordedTools(outputs or {}, Guard(policy or Policy()))


def test_a_foreign_kill_proposed_by_the_model_is_refused_recorded_and_the_process_lives(tmp_path: Path) -> None:
    squatter = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with ScriptedLLM([call("kill_port_holder"), call("finish", diagnosis="port squatted", fault="other")]) as llm:
            loaded = write_config(tmp_path, openai_cfg(llm))
            guard = Guard(policy_of(loaded))
            ctx_tools = LiveTools(loaded, "svc", guard, _ctx(loaded), read_only=False)
            result = consult(
                make_backend(loaded.config.daemon.doctor.llm), ctx_tools, "port taken", limits(), loaded.redactor
            )
        assert squatter.poll() is None, "the foreign process was not signalled"
        assert [t.status for t in result.tools] == ["needs_approval", "ok"]
        assert result.remedies[0]["status"] == "needs_approval" and result.applied == []
        sent_back = [m for m in llm.requests[1]["messages"] if m["role"] == "tool"]
        assert "needs_approval" in sent_back[0]["content"], "the refusal is shown to the model"
        assert result.ended == "finished"
    finally:
        squatter.kill()
        squatter.wait()


def _ctx(loaded: LoadedConfig) -> Any:
    from clawmedic.doctor.remedies import RemedyContext

    return RemedyContext(loaded, "svc", KnownGoodClient(loaded.state_dir))


def test_a_planted_secret_never_appears_in_any_request(tmp_path: Path) -> None:
    with ScriptedLLM([call("log_tail", lines=20), call("redacted_config"), say("done")]) as llm:
        loaded = write_config(tmp_path, openai_cfg(llm))
        out = Launcher(loaded.state_dir / "targets" / "svc").log_path
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(f"booting with token {PLANTED}\nAuthorization: Bearer {PLANTED}\ncrashed\n")
        evidence = {"target": "svc", "reason": f"crashed; env had {PLANTED}", "output_tail": [f"key={PLANTED}"]}
        prompt = evidence_prompt(evidence, [], [])
        tools = LiveTools(loaded, "svc", Guard(Policy()), None, read_only=True)
        result = consult(make_backend(loaded.config.daemon.doctor.llm), tools, prompt, limits(), loaded.redactor)
    assert len(llm.requests) == 3
    assert PLANTED.encode() not in llm.all_bytes()
    assert b"crashed" in llm.raw[1], "the tool output itself did reach the model"
    assert result.ended == "concluded"


def test_the_step_limit_holds_and_the_last_step_offers_no_tools(tmp_path: Path) -> None:
    script: list[Turn] = [call("log_tail", lines=n) for n in range(1, 10)]
    with ScriptedLLM(script) as llm:
        loaded = write_config(tmp_path, openai_cfg(llm))
        result = consult(
            make_backend(loaded.config.daemon.doctor.llm), recorded(), "x", limits(max_steps=3), loaded.redactor
        )
    assert len(llm.requests) == 3
    assert all("tools" in r for r in llm.requests[:2])
    assert "tools" not in llm.requests[2], "no tools on the last step"
    assert "last turn" in llm.requests[2]["messages"][-1]["content"]
    assert len(result.tools) == 2, "the tool call answered on the last step was not run"
    assert result.steps == 3 and result.ended == "concluded"


def test_the_time_budget_holds(tmp_path: Path) -> None:
    slow = [Turn(tool="log_tail", arguments={"lines": n}, delay_s=1.0) for n in range(1, 20)]
    with ScriptedLLM(slow) as llm:
        loaded = write_config(tmp_path, openai_cfg(llm))
        result = consult(
            make_backend(loaded.config.daemon.doctor.llm),
            recorded(),
            "x",
            limits(max_steps=20, time_budget_s=2.5),
            loaded.redactor,
        )
    assert result.ended in ("time_budget", "backend_failed")
    assert len(llm.requests) <= 4 < 20, "the loop stopped long before the step limit"


def test_truncation_is_visible_to_the_model(tmp_path: Path) -> None:
    with ScriptedLLM([call("log_tail", lines=50), say("enough")]) as llm:
        loaded = write_config(tmp_path, openai_cfg(llm))
        tools = recorded({"log_tail": "x" * 5000})
        result = consult(
            make_backend(loaded.config.daemon.doctor.llm),
            tools,
            "x",
            limits(tool_output_max_chars=300),
            loaded.redactor,
        )
    tool_msg = next(m for m in llm.requests[1]["messages"] if m["role"] == "tool")
    assert "[truncated by clawmedic: 300 of 5000 characters shown" in tool_msg["content"]
    assert len(tool_msg["content"]) < 500
    assert result.tools[0].truncated


def test_a_repeated_identical_call_is_refused(tmp_path: Path) -> None:
    with ScriptedLLM([call("config_validation"), call("config_validation"), say("ok")]) as llm:
        loaded = write_config(tmp_path, openai_cfg(llm))
        result = consult(make_backend(loaded.config.daemon.doctor.llm), recorded(), "x", limits(), loaded.redactor)
    assert [t.status for t in result.tools] == ["ok", "refused"]
    assert "already made" in result.tools[1].result


def test_an_undeclared_tool_and_bad_parameters_are_refused(tmp_path: Path) -> None:
    script = [call("run_shell", command="rm -rf /"), call("stop_stale_gateway", pid="not-a-pid"), say("ok")]
    with ScriptedLLM(script) as llm:
        loaded = write_config(tmp_path, openai_cfg(llm))
        result = consult(make_backend(loaded.config.daemon.doctor.llm), recorded(), "x", limits(), loaded.redactor)
    assert [t.status for t in result.tools] == ["refused", "refused"]
    assert "not one of the tools offered" in result.tools[0].result
    assert "bad parameters" in result.tools[1].result


def test_anthropic_backend_speaks_tool_use_and_tool_result(tmp_path: Path) -> None:
    os.environ["TEST_ANTHROPIC_KEY"] = "test-key-not-secret"
    with ScriptedLLM(
        [call("config_validation"), call("finish", diagnosis="bad config", fault="config-invalid")]
    ) as llm:
        loaded = write_config(
            tmp_path,
            {"backend": "anthropic", "model": "scripted", "base_url": llm.root, "api_key_env": "TEST_ANTHROPIC_KEY"},
        )
        tools = recorded({"config_validation": '{"valid": false}'})
        result = consult(
            make_backend(loaded.config.daemon.doctor.llm), tools, f"x {PLANTED}", limits(), loaded.redactor
        )
    second = llm.requests[1]
    assert "system" in second and all(m["role"] != "system" for m in second["messages"])
    results = [b for m in second["messages"] if m["role"] == "user" for b in m["content"] if b["type"] == "tool_result"]
    assert results and results[0]["content"] == '{"valid": false}'
    assert result.ended == "finished" and result.fault == "config-invalid"
    assert PLANTED.encode() not in llm.all_bytes()


def test_missing_key_and_unreachable_endpoint_are_one_clear_sentence(tmp_path: Path) -> None:
    os.environ.pop("CLAWMEDIC_TEST_NO_KEY", None)
    loaded = write_config(
        tmp_path,
        {
            "backend": "openai",
            "model": "m",
            "base_url": "https://llm.example.com/v1",
            "api_key_env": "CLAWMEDIC_TEST_NO_KEY",
        },
    )
    with pytest.raises(BackendUnavailable, match=r"needs an API key in \$CLAWMEDIC_TEST_NO_KEY"):
        make_backend(loaded.config.daemon.doctor.llm)
    loaded = write_config(
        tmp_path, {"backend": "openai", "model": "m", "base_url": f"http://127.0.0.1:{free_port()}/v1"}
    )
    result = run_consultation(loaded, "svc", {"evidence": {"target": "svc"}}, read_only=True, emit=lambda k, d: None)
    assert result.ended == "backend_failed" and result.error and "cannot reach" in result.error


def _doctor(loaded: LoadedConfig) -> tuple[RuleDoctor, IncidentStore, int]:
    incidents = IncidentStore(loaded.state_dir / "incidents.sqlite", loaded.redactor)
    inc = incidents.open("svc", "crashed for no known reason", time.time())
    learnings = LearningStore(loaded.state_dir / "learnings.sqlite")
    doctor = RuleDoctor(loaded, incidents, KnownGoodClient(loaded.state_dir), learnings, policy_of(loaded))
    return doctor, incidents, inc


def test_the_daemon_path_ends_with_a_verdict_and_keeps_the_conversation(tmp_path: Path) -> None:
    script = [call("log_tail", lines=10), call("retry_start"), call("finish", diagnosis="transient", fault="other")]
    with ScriptedLLM(script) as llm:
        loaded = write_config(tmp_path, openai_cfg(llm))
        loaded.state_dir.mkdir(parents=True, exist_ok=True)
        doctor, incidents, inc = _doctor(loaded)
        verdict = asyncio.run(doctor.treat(Escalation("svc", inc, "crashed", "crash_loop", {"last_exit": {"code": 1}})))
    assert verdict.healed, verdict.summary
    assert "LLM doctor" in verdict.summary and "transient" in verdict.summary
    got = incidents.get(inc)
    assert got is not None
    kinds = [e.kind for e in got.timeline]
    assert kinds.count("llm_message") >= 4 and kinds.count("llm_tool") == 3
    assert any(
        e.kind == "remedy" and e.detail.get("by") == "llm" and e.detail["remedy"] == "retry_start" for e in got.timeline
    )
    report = (loaded.state_dir / "reports" / f"incident-{inc}.md").read_text()
    assert "LLM doctor" in report and "retry_start" in report


def test_an_unusable_backend_escalates_to_humans_with_the_reason(tmp_path: Path) -> None:
    loaded = write_config(
        tmp_path, {"backend": "openai", "model": "m", "base_url": f"http://127.0.0.1:{free_port()}/v1"}
    )
    loaded.state_dir.mkdir(parents=True, exist_ok=True)
    doctor, _incidents, inc = _doctor(loaded)
    verdict = asyncio.run(doctor.treat(Escalation("svc", inc, "crashed", "crash_loop", {"last_exit": {"code": 1}})))
    assert not verdict.healed
    assert "cannot reach" in verdict.summary and "needs a human" in verdict.summary


STANDIN_CLI = """#!{python}
import json, os, sys
prompt = open(sys.argv[1]).read() if len(sys.argv) > 1 else sys.stdin.read()
open(os.environ["STANDIN_CLI_LOG"], "w").write(prompt)
print("Looking at the evidence... the config does not parse.")
print(json.dumps({{"diagnosis": "openclaw.json is not valid JSON5", "fault": "config-invalid",
                  "remedies": [{{"name": "restore_known_good", "arguments": {{}}}},
                               {{"name": "kill_port_holder", "arguments": {{}}}}]}}))
"""


@pytest.mark.parametrize("tmux", [False, True])
def test_agent_cli_backend_with_a_stand_in_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tmux: bool) -> None:
    if tmux and subprocess.run(["which", "tmux"], capture_output=True).returncode != 0:
        pytest.skip("tmux is not installed")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    cli = bindir / "standin-agent"
    cli.write_text(STANDIN_CLI.format(python=sys.executable))
    cli.chmod(cli.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    log = tmp_path / "prompt-seen.txt"
    monkeypatch.setenv("STANDIN_CLI_LOG", str(log))
    command = ["standin-agent", "{prompt}"] if tmux else ["standin-agent"]
    loaded = write_config(tmp_path, {"backend": "cli", "command": command, "tmux": tmux})
    prompt = evidence_prompt(
        {"target": "svc", "reason": f"exit 78, token {PLANTED}", "config": {"valid": False}}, [], []
    )
    result = consult(make_backend(loaded.config.daemon.doctor.llm), recorded(), prompt, limits(), loaded.redactor)
    seen = log.read_text()
    assert "exit 78" in seen and "restore_known_good" in seen, "the CLI got the evidence and the remedies"
    assert PLANTED not in seen
    assert [(t.name, t.status) for t in result.tools] == [
        ("restore_known_good", "ok"),
        ("kill_port_holder", "needs_approval"),  # the same guard as the rules'
        ("finish", "ok"),
    ]
    assert result.ended == "finished" and result.fault == "config-invalid"


def test_read_only_diagnosis_runs_no_remedy(tmp_path: Path) -> None:
    with ScriptedLLM([call("retry_start"), call("finish", diagnosis="d", fault="other")]) as llm:
        loaded = write_config(tmp_path, openai_cfg(llm))
        result = run_consultation(
            loaded, "svc", {"evidence": {"target": "svc"}}, read_only=True, emit=lambda k, d: None
        )
    assert isinstance(result, Consultation)
    assert result.remedies[0]["status"] == "refused" and "read-only" in result.remedies[0]["detail"]


REPO = Path(__file__).resolve().parents[2]


def test_every_evaluation_case_agrees_with_the_rules() -> None:
    """The cases are recorded evidence of real faults: the rule doctor must name the same fault and plan an
    acceptable remedy, so a model's score is measured against answers we trust."""
    from clawmedic.doctor.evidence import Evidence
    from clawmedic.doctor.llm.evals import load_cases
    from clawmedic.doctor.rules import diagnose

    cases = load_cases(REPO / "evals" / "cases")
    assert len(cases) >= 12
    for case in cases:
        findings = diagnose(Evidence(**case.evidence))
        if case.fault == "other":  # a fault no rule explains: the LLM doctor's own
            assert findings == [], (case.name, findings)
            continue
        assert case.fault in [f.rule for f in findings], case.name
        planned = [c.remedy for f in findings if f.rule == case.fault for c in f.plan]
        first: str | None = planned[0] if planned else None
        assert first in case.remedies, (case.name, planned)


def _eval(llm: ScriptedLLM, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "clawmedic", "llm", "eval", "--cases", str(REPO / "evals" / "cases")]
    cmd += ["--backend", "openai", "--model", "scripted", "--base-url", llm.url, "--json", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=REPO, check=False)


def test_llm_eval_scores_a_right_and_a_wrong_answer() -> None:
    right = [call("restore_known_good"), call("finish", diagnosis="typo", fault="config-invalid")]
    with ScriptedLLM(right) as llm:
        r = _eval(llm, "-k", "invalid-json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["accuracy"] == 1.0
    wrong = [call("move_aside_state_db"), call("finish", diagnosis="db", fault="state-db-corrupt")]
    with ScriptedLLM(wrong) as llm:
        r = _eval(llm, "-k", "invalid-json")
    assert r.returncode == 1
    got = json.loads(r.stdout)
    assert got["accuracy"] == 0.0 and got["scores"][0]["remedy_chosen"] == "move_aside_state_db"


def test_llm_check_names_an_unreachable_endpoint_in_one_line() -> None:
    cmd = [sys.executable, "-m", "clawmedic", "llm", "check", "--backend", "openai", "--model", "m"]
    cmd += ["--base-url", f"http://127.0.0.1:{free_port()}/v1"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=REPO, check=False)
    assert r.returncode == 3
    assert "cannot reach" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_a_remedy_that_needs_approval_goes_to_humans_not_to_the_model(tmp_path: Path) -> None:
    with ScriptedLLM([call("retry_start")]) as llm:
        loaded = write_config(tmp_path, openai_cfg(llm))
        loaded.state_dir.mkdir(parents=True, exist_ok=True)
        port = loaded.targets["svc"].port
        code = f"import socket,time; s=socket.socket(); s.bind(('127.0.0.1',{port})); s.listen(); time.sleep(60)"
        squatter = subprocess.Popen([sys.executable, "-c", code])
        try:
            deadline = time.monotonic() + 10
            while (
                time.monotonic() < deadline
                and subprocess.run(
                    [sys.executable, "-c", f"import socket; socket.create_connection(('127.0.0.1',{port}),1)"],
                    capture_output=True,
                ).returncode
            ):
                time.sleep(0.1)
            doctor, _incidents, inc = _doctor(loaded)
            verdict = asyncio.run(doctor.treat(Escalation("svc", inc, "port taken", "port_conflict", {})))
            assert squatter.poll() is None, "the foreign holder is left alive"
        finally:
            squatter.kill()
            squatter.wait()
    assert not verdict.healed and "needs_approval" in verdict.summary
    assert llm.requests == [], "the rules knew the fault: a human decides, the model is not asked"


CRASHING_CLI = """#!{python}
import os, signal
os.kill(os.getppid(), signal.SIGKILL)  # the consultation's process dies, as if a native backend segfaulted
"""


def test_a_backend_that_kills_its_process_does_not_take_the_caller_down(tmp_path: Path) -> None:
    cli = tmp_path / "crashing-agent"
    cli.write_text(CRASHING_CLI.format(python=sys.executable))
    cli.chmod(cli.stat().st_mode | stat.S_IXUSR)
    loaded = write_config(tmp_path, {"backend": "cli", "command": [str(cli)]})
    loaded.state_dir.mkdir(parents=True, exist_ok=True)
    doctor, incidents, inc = _doctor(loaded)
    verdict = asyncio.run(doctor.treat(Escalation("svc", inc, "crashed", "crash_loop", {"last_exit": {"code": 1}})))
    assert not verdict.healed
    assert "the LLM doctor process died (signal 9)" in verdict.summary
    got = incidents.get(inc)
    assert got is not None and any(e.kind == "llm_started" for e in got.timeline), "what it did before is kept"


def test_remedies_the_policy_refuses_are_not_offered_and_still_refused_when_asked(tmp_path: Path) -> None:
    from clawmedic.doctor.llm.agent import tool_specs

    offered = {s.name for s in tool_specs(Policy())}
    assert "restore_known_good" in offered and "finish" in offered and "log_tail" in offered
    assert "kill_port_holder" not in offered, "a foreign kill needs approval by default: not offered"
    assert "cron_disable" not in offered, "remedies for a running gateway are not offered for one that is down"
    assert "kill_port_holder" in {s.name for s in tool_specs(Policy(allow_kill_foreign=True, allowed=frozenset(Risk)))}
    with ScriptedLLM([call("kill_port_holder"), say("done")]) as llm:
        loaded = write_config(tmp_path, openai_cfg(llm))
        result = consult(
            make_backend(loaded.config.daemon.doctor.llm), recorded(), "x", limits(), loaded.redactor, policy=Policy()
        )
    assert "kill_port_holder" not in [t["function"]["name"] for t in llm.requests[0]["tools"]]
    assert [(t.name, t.status) for t in result.tools] == [("kill_port_holder", "refused")]
    assert result.remedies == [] and result.applied == []
