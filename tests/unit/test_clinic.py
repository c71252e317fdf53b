"""The rule doctor over its seams (tests/helpers/fakes.py): scripted evidence, remedies that change nothing behind
the real guard, a scripted LLM consultation, a fake clock. The real collectors, remedies and child process are
tested for real in tests/integration and tests/e2e."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from clawmedic.config import LoadedConfig, load_config
from clawmedic.doctor import Escalation, Verdict
from clawmedic.doctor.clinic import RuleDoctor
from clawmedic.doctor.evidence import Evidence
from clawmedic.doctor.learnings import LearningStore
from clawmedic.doctor.llm.agent import Consultation
from clawmedic.doctor.llm.run import policy_of
from clawmedic.doctor.remedies import Guard
from clawmedic.knowngood_client import KnownGoodClient
from clawmedic.store.incidents import IncidentStore
from tests.helpers.fakes import FakeClock, FakeCollector, FakeConsult, FakeRemedies, FakeReports

BROKEN_CONFIG = Evidence(
    "svc",
    cause="fatal_config",
    last_exit={"code": 78},
    known_good="abc123",
    config={"valid": False, "stage": "parse", "issues": ["JSON5 parse failed"]},
)
FOREIGN_PORT = Evidence(
    "svc", cause="port_conflict", port_owner={"port": 18789, "pid": 4242, "cmdline": "nc -l", "ours": False}
)
UNEXPLAINED = Evidence(
    "svc",
    cause="crash_loop",
    last_exit={"code": 1},
    output_tail=["Error: boom"],
    process={"pid": 5, "alive": True, "stopped": False},
)


class Rig:
    def __init__(self, tmp_path: Path, script: list[Evidence], *, llm: str = "off", consultation: Any = None) -> None:
        toml = tmp_path / "clawmedic.toml"
        toml.write_text(
            f'[daemon]\nstate_dir = "state"\n[daemon.doctor.llm]\nbackend = "{llm}"\nmodel = "m"\n'
            'base_url = "http://127.0.0.1:9/v1"\n'
            '[targets.svc]\nkind = "http"\nport = 19998\nliveness.url = "http://127.0.0.1:19998/health"\n'
            '[targets.svc.start]\ncommand = ["true"]\n'
        )
        self.loaded: LoadedConfig = load_config(toml)
        self.loaded.state_dir.mkdir(parents=True, exist_ok=True)
        self.clock = FakeClock()
        self.collector = FakeCollector(script, self.clock, takes_s=2.0)
        self.remedies = FakeRemedies(Guard(policy_of(self.loaded)), clock=self.clock, takes_s=3.0)
        self.consult = FakeConsult(consultation or Consultation("openai", "finished"))
        self.reports = FakeReports()
        self.incidents = IncidentStore(self.loaded.state_dir / "incidents.sqlite")
        self.learnings = LearningStore(self.loaded.state_dir / "learnings.sqlite")
        self.doctor = RuleDoctor(
            self.loaded,
            self.incidents,
            KnownGoodClient(self.loaded.state_dir),  # only remedies use it, and they are fakes here
            self.learnings,
            policy_of(self.loaded),
            collector=self.collector,
            run_remedy=self.remedies,
            consult=self.consult,
            report=self.reports,
            clock=self.clock,
        )
        self.inc = self.incidents.open("svc", "exited 78", time.time())

    def treat(self, cause: str = "fatal_config") -> Verdict:
        return asyncio.run(self.doctor.treat(Escalation("svc", self.inc, "it failed", cause, {"pid": 77})))

    def timeline(self, kind: str) -> list[dict[str, Any]]:
        inc = self.incidents.get(self.inc)
        assert inc is not None
        return [e.detail for e in inc.timeline if e.kind == kind]


def test_a_planned_remedy_that_runs_heals_and_its_times_are_the_clocks(tmp_path: Path) -> None:
    rig = Rig(tmp_path, [BROKEN_CONFIG])
    verdict = rig.treat()
    assert verdict.healed and verdict.restart, verdict.summary
    assert "applied restore_known_good; relaunching to verify" in verdict.summary
    assert rig.remedies.ran == [("restore_known_good", {})]
    assert rig.collector.calls[0]["cause"] == "fatal_config" and rig.collector.calls[0]["pid"] == 77
    assert rig.timeline("evidence")[0]["collect_s"] == 2.0
    assert rig.timeline("diagnosis")[0]["findings"][0]["rule"] == "config-invalid"
    (done,) = rig.timeline("verdict")
    assert (done["took_s"], done["doctor_overhead_s"], done["healed"]) == (5.0, 2.0, True)
    assert rig.reports.written == [rig.inc]


def test_a_fault_that_comes_back_gets_no_remedy_twice_and_goes_to_a_human(tmp_path: Path) -> None:
    rig = Rig(tmp_path, [BROKEN_CONFIG])
    assert rig.treat().healed
    again = rig.treat()  # the ladder escalated the same incident again: the restore did not hold
    assert not again.healed and "needs a human: no remedy left to try" in again.summary
    assert rig.remedies.ran == [("restore_known_good", {})]
    (learned,) = rig.learnings.all()
    assert (learned.remedies, learned.successes, learned.failures) == (["restore_known_good"], 0, 1)


def test_a_remedy_outside_the_policy_is_not_run_and_the_llm_is_not_asked_either(tmp_path: Path) -> None:
    rig = Rig(tmp_path, [FOREIGN_PORT], llm="openai")
    verdict = rig.treat("port_conflict")
    assert not verdict.healed and "kill_port_holder (needs_approval" in verdict.summary
    assert rig.remedies.ran == [] and rig.consult.payloads == []  # approval is a human's, not a model's


def test_what_no_rule_explains_goes_to_the_llm_doctor_with_the_rules_near_misses(tmp_path: Path) -> None:
    answer = Consultation(
        "openai",
        "finished",
        conclusion="a transient crash",
        fault="other",
        remedies=[{"remedy": "retry_start", "status": "ok", "detail": "relaunch", "params": {}}],
    )
    rig = Rig(tmp_path, [UNEXPLAINED], llm="openai", consultation=answer)
    verdict = rig.treat("crash_loop")
    assert verdict.healed and "LLM doctor (openai): a transient crash [other]" in verdict.summary
    (payload,) = rig.consult.payloads
    assert payload["evidence"]["output_tail"] == ["Error: boom"] and payload["findings"] == []
    assert [n["rule"] for n in payload["near_misses"]] == ["process-hang"] and payload["tried"] == []
    assert rig.remedies.ran == []  # the model's remedies ran in its own child, through its own guard


def test_a_healed_incident_teaches_the_next_one_with_the_same_signature(tmp_path: Path) -> None:
    rig = Rig(tmp_path, [BROKEN_CONFIG])
    assert rig.treat().healed
    rig.doctor.on_event({"incident": rig.inc, "kind": "incident_closed", "outcome": "recovered"})
    (learned,) = rig.learnings.all()
    assert (learned.remedies, learned.successes) == (["restore_known_good"], 1)
    assert rig.reports.written == [rig.inc, rig.inc]  # the report follows the incident to its end
