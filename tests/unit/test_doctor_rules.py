"""The diagnosis rules over recorded evidence (shapes as collected on the real gateway), and the remedy guard."""

from __future__ import annotations

from typing import Any

import pytest

from clawmedic.doctor.evidence import Evidence, _satisfies
from clawmedic.doctor.remedies import Guard, Policy, Risk, Status
from clawmedic.doctor.rules import RULES, diagnose, signature

WS_MISSING = [
    "Error: Cannot find module 'ws/package.json'",
    "Require stack:",
    "- /x/node_modules/openclaw/dist/gateway.js",
]
BLOCKED = ["Gateway start blocked: set gateway.mode=local (current: remote) or pass --allow-unconfigured."]
CONTENTION = ["StateDatabaseCoordinatorContentionError: another OpenClaw process owns gateway-lifecycle"]
NOT_A_DB = ["SqliteError: file is not a database", "gateway.maintenance_required"]


def ev(**kw: Any) -> Evidence:
    base: dict[str, Any] = {"target": "gateway", "cause": "fatal_config"}
    base.update(kw)
    return Evidence(**base)


CASES: list[tuple[str, Evidence, str, list[str]]] = [
    (
        "invalid json",
        ev(config={"valid": False, "stage": "parse", "issues": ["JSON5 parse failed"]}, known_good="abc"),
        "config-invalid",
        ["restore_known_good"],
    ),
    (
        "unknown key, no known-good",
        ev(config={"valid": False, "stage": "schema", "issues": ['gateway: Unrecognized key: "bogus"']}),
        "config-invalid",
        ["openclaw_doctor_fix"],
    ),
    (
        "missing file",
        ev(config={"valid": False, "stage": "missing", "issues": ["x does not exist"]}, known_good="a"),
        "config-invalid",
        ["restore_known_good"],
    ),
    (
        "blocked start",
        ev(
            last_exit={"code": 78},
            output_tail=BLOCKED,
            config={"valid": True, "stage": "ok"},
            known_good="a",
            config_differs_from_known_good=True,
        ),
        "config-blocked",
        ["restore_known_good"],
    ),
    (
        "blocked start, file already good again",
        ev(last_exit={"code": 78}, output_tail=BLOCKED, known_good="a", config={"valid": True, "stage": "ok"}),
        "config-blocked",
        ["retry_start"],
    ),
    ("ws missing (output)", ev(last_exit={"code": 78}, output_tail=WS_MISSING), "missing-dependency", ["restore_deps"]),
    (
        "croner missing (manifest)",
        ev(cause="diagnose", deps_problems=[{"package": "croner", "kind": "missing"}]),
        "missing-dependency",
        ["restore_deps"],
    ),
    (
        "foreign port holder",
        ev(
            cause="port_in_use",
            port_owner={
                "port": 1,
                "pid": 42,
                "cmdline": "python3 -m http.server",
                "ours": False,
                "stale_gateway": False,
            },
        ),
        "port-taken-by-foreign-process",
        ["kill_port_holder"],
    ),
    (
        "stale gateway on the port",
        ev(
            cause="port_in_use",
            port_owner={"port": 1, "pid": 43, "cmdline": "openclaw", "ours": False, "stale_gateway": True},
        ),
        "port-taken-by-stale-gateway",
        ["stop_stale_gateway"],
    ),
    (
        "duplicate instance",
        ev(last_exit={"code": 78}, output_tail=CONTENTION, duplicates=[{"pid": 44, "cmdline": "g"}]),
        "duplicate-instance",
        ["stop_stale_gateway"],
    ),
    ("corrupt state db", ev(last_exit={"code": 78}, output_tail=NOT_A_DB), "state-db-corrupt", ["move_aside_state_db"]),
    (
        "old node",
        ev(cause="diagnose", node={"version": "20.20.2", "engines": ">=24.16.0 <25", "satisfied": False}),
        "node-engine-mismatch",
        [],
    ),
    ("disk full", ev(cause="diagnose", disk_free_mb=12.0), "disk-full", []),
    ("breaker", ev(cause="diagnose", stability_bundles=["2026-x-crash_loop_breaker.json"]), "crash-loop-breaker", []),
    ("hang", ev(cause="crash_loop", process={"pid": 1, "alive": True, "stopped": True}), "process-hang", []),
    (
        "model 429",
        ev(cause="diagnose", log_events=[{"event": "model_fallback_decision", "message": "rate_limit"}]),
        "model-failures",
        [],
    ),
    ("cron", ev(cause="diagnose", output_tail=["cron: job run returned error status {jobId: 1}"]), "cron-failing", []),
    ("channel", ev(cause="diagnose", output_tail=["[telegram] channel start failed: 401"]), "channel-down", []),
]


@pytest.mark.parametrize(("name", "evidence", "rule", "remedies"), CASES, ids=[c[0] for c in CASES])
def test_rule_matches_recorded_evidence(name: str, evidence: Evidence, rule: str, remedies: list[str]) -> None:
    findings = {f.rule: f for f in diagnose(evidence)}
    assert rule in findings, f"{name}: {list(findings)}"
    assert [c.remedy for c in findings[rule].plan] == remedies


def test_every_rule_has_a_case() -> None:
    assert {r.id for r in RULES} <= {c[2] for c in CASES}


def test_healthy_evidence_matches_nothing() -> None:
    assert (
        diagnose(
            ev(
                cause="diagnose",
                config={"valid": True, "stage": "ok"},
                disk_free_mb=50_000.0,
                node={"satisfied": True},
                state_db={"ok": True},
            )
        )
        == []
    )


def test_several_faults_are_all_found() -> None:
    both = ev(
        last_exit={"code": 78},
        output_tail=WS_MISSING,
        known_good="a",
        config={"valid": False, "stage": "parse", "issues": ["JSON5 parse failed"]},
    )
    assert {"config-invalid", "missing-dependency"} <= {f.rule for f in diagnose(both)}


def test_signature_ignores_pids_and_paths() -> None:
    a = ev(last_exit={"code": 78, "pid": 1}, output_tail=[*WS_MISSING, "pid 1"])
    b = ev(last_exit={"code": 78, "pid": 2}, output_tail=[*WS_MISSING, "pid 2"])
    assert signature(a, diagnose(a)) == signature(b, diagnose(b))


@pytest.mark.parametrize(
    ("version", "spec", "ok"),
    [
        ("24.21.0", ">=24.16.0 <25 || >=26.1.0", True),
        ("20.20.2", ">=24.16.0 <25 || >=26.1.0", False),
        ("26.2.0", ">=24.16.0 <25 || >=26.1.0", True),
        ("25.0.0", ">=24.16.0 <25 || >=26.1.0", False),
    ],
)
def test_node_engine_ranges(version: str, spec: str, ok: bool) -> None:
    assert _satisfies(version, spec) is ok


@pytest.mark.parametrize(
    ("remedy", "params", "policy", "status"),
    [
        ("rm_rf_slash", {}, Policy(), Status.REFUSED),
        ("stop_stale_gateway", {"pid": "x"}, Policy(), Status.REFUSED),
        ("stop_stale_gateway", {"pid": 1, "extra": 2}, Policy(), Status.REFUSED),
        ("kill_port_holder", {"pid": 1}, Policy(), Status.NEEDS_APPROVAL),
        ("kill_port_holder", {"pid": 1}, Policy(frozenset(Risk), allow_kill_foreign=False), Status.NEEDS_APPROVAL),
        ("restore_deps", {}, Policy(frozenset({Risk.READ_ONLY})), Status.NEEDS_APPROVAL),
    ],
)
def test_guard_refuses_as_data(remedy: str, params: dict[str, Any], policy: Policy, status: Status) -> None:
    outcome = Guard(policy).check(remedy, params)
    assert outcome is not None and outcome.status == status


def test_guard_allows_a_declared_remedy_in_policy() -> None:
    assert Guard(Policy()).check("restore_known_good", {}) is None
    assert Guard(Policy(frozenset(Risk), allow_kill_foreign=True)).check("kill_port_holder", {"pid": 1}) is None


def test_every_planned_remedy_is_declared() -> None:
    from clawmedic.doctor.remedies import REMEDIES

    planned = {c.remedy for _, evidence, _, _ in CASES for f in diagnose(evidence) for c in f.plan}
    assert planned <= set(REMEDIES), planned - set(REMEDIES)
