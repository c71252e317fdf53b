"""The rules' near-misses: rules that did not match but came close, each with why not (what the LLM doctor is told).
A table of recorded-evidence shapes, one row each."""

from __future__ import annotations

from typing import Any

import pytest

from clawmedic.doctor.evidence import Evidence
from clawmedic.doctor.rules import diagnose, near_misses

VALID = {"valid": True, "stage": "ok", "issues": []}
NODE_CHANGE = {"what": "node", "summary": "the Node binary was replaced", "when": "5 s ago", "reversible": False}

# (name, evidence, the near-miss rule expected, words its why_not must hold)
NEAR: list[tuple[str, dict[str, Any], str, str]] = [
    (
        "a valid config refused with exit 1",
        {"cause": "crash_loop", "last_exit": {"code": 1}, "config": VALID},
        "config-blocked",
        "exited 1, not 78",
    ),
    (
        "a config that differs with no recorded change",
        {"cause": "crash_loop", "last_exit": {"code": 1}, "config_differs_from_known_good": True},
        "config-changed",
        "no change since the last healthy state",
    ),
    (
        "an irreversible change",
        {"cause": "crash_loop", "last_exit": {"code": 1}, "changes": [NODE_CHANGE]},
        "config-changed",
        "none is a reversible config",
    ),
    (
        "Node replaced but within engines",
        {
            "cause": "crash_loop",
            "node": {"found": True, "version": "24.1.0", "satisfied": True},
            "changes": [NODE_CHANGE],
        },
        "node-engine-mismatch",
        "satisfies",
    ),
    ("low disk, not full", {"cause": "crash_loop", "disk_free_mb": 500.0}, "disk-full", "500.0 MB free"),
    ("an old breaker bundle", {"cause": "crash_loop", "breaker_age_s": 900.0}, "crash-loop-breaker", "900 s old"),
    (
        "a live process that does not answer",
        {"cause": "crash_loop", "process": {"pid": 7, "alive": True, "stopped": False}},
        "process-hang",
        "alive and not stopped",
    ),
    ("a port conflict with nobody on the port", {"cause": "port_conflict"}, "port-taken-by-foreign-process", "nothing"),
    (
        "our own process on the port",
        {"cause": "crash_loop", "port_owner": {"port": 1, "pid": 7, "ours": True}},
        "port-taken-by-foreign-process",
        "target's own process",
    ),
    (
        "exit 78 that another cause explains",
        {"cause": "fatal_config", "last_exit": {"code": 78}, "config": VALID, "deps_problems": [{"package": "ws"}]},
        "config-blocked",
        "gives way",
    ),
]


@pytest.mark.parametrize(("name", "evidence", "rule", "words"), NEAR, ids=[r[0] for r in NEAR])
def test_near_miss(name: str, evidence: dict[str, Any], rule: str, words: str) -> None:
    ev = Evidence("gw", **evidence)
    found = diagnose(ev)
    near = {n["rule"]: n["why_not"] for n in near_misses(ev, found)}
    assert rule not in {f.rule for f in found}, name
    assert rule in near and words in near[rule], (name, near)


def test_a_rule_that_matched_is_no_near_miss_and_a_quiet_machine_has_none() -> None:
    ev = Evidence("gw", cause="crash_loop", last_exit={"code": 78}, config={"valid": False, "stage": "schema"})
    assert "config-invalid" not in {n["rule"] for n in near_misses(ev)}
    assert near_misses(Evidence("gw", cause="diagnose", process={"pid": 7, "alive": True})) == []
