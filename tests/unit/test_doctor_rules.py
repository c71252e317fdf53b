"""The diagnosis rules over recorded evidence (shapes as collected on the real gateway), and the remedy guard."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
from typing import Any, cast

import pytest

from clawmedic.doctor.evidence import Evidence
from clawmedic.doctor.remedies import Guard, Policy, Risk, Status
from clawmedic.doctor.rules import RULES, diagnose, failing_channels, signature
from clawmedic.ladder.exits import classify_exit
from clawmedic.ladder.states import FATAL_EXITS, ExitKind
from clawmedic.targets.openclaw.evidence import _satisfies

WS_MISSING = [
    "Error: Cannot find module 'ws/package.json'",
    "Require stack:",
    "- /x/node_modules/openclaw/dist/gateway.js",
]
BLOCKED = ["Gateway start blocked: set gateway.mode=local (current: remote) or pass --allow-unconfigured."]
CONTENTION = ["StateDatabaseCoordinatorContentionError: another OpenClaw process owns gateway-lifecycle"]
NOT_A_DB = ["SqliteError: file is not a database", "gateway.maintenance_required"]
# recorded on OpenClaw 2026.9.6: started with Node 22 (exit 1 at once), and with its HOME on a full tmpfs (exit 78)
NODE_22 = [
    "(node:4635) ExperimentalWarning: SQLite is an experimental feature and might change at any time",
    "openclaw: Node 22.22.0: node:sqlite truncates TEXT at embedded NUL (nodejs/node#61954); use 24.16+/26.1+ "
    "or a build with the fix",
    "If you use nvm, run:",
    "  nvm install 26",
]
DISK_FULL = [
    "Gateway failed to start: Doctor cannot repair this state: shared state database is unreadable at "
    "/h/.openclaw/state/openclaw.sqlite: database or disk is full (SQLite errcode=13); snapshot staging root "
    "/h/.cache/openclaw: free disk space/quota or set XDG_CACHE_HOME to a writable filesystem | ERR_SQLITE_ERROR.",
]


# what doctor/changes.py records for an edited openclaw.json (changed before the first failure at t=1000)
CONFIG_CHANGE: dict[str, Any] = {
    "what": "config",
    "key": "openclaw.json",
    "summary": "1 setting(s) of /h/.openclaw/openclaw.json differ from known-good: gateway.auth.mode: (unset) → "
    '"password"',
    "changed_at": 990.0,
    "reversible": True,
    "remedy": "restore_known_good",
    "settings": ['gateway.auth.mode: (unset) → "password"'],
    "when": "at 00:16:30, 10 s before the first failure",
}
# recorded on OpenClaw 2026.9.6 with gateway.auth.mode "password" and no password: validates, exit 78 at boot
PASSWORD_MISSING = [
    "2026-12-01T03:08:46.134+00:00 Gateway auth is set to password, but no password is configured.",
    "Set gateway.auth.password (or OPENCLAW_GATEWAY_PASSWORD), or pass --password.",
]


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
        "blocked start after a change",
        ev(
            last_exit={"code": 78},
            output_tail=BLOCKED,
            config={"valid": True, "stage": "ok"},
            known_good="a",
            config_differs_from_known_good=True,
            changes=[CONFIG_CHANGE],
            first_failure_at=1000.0,
        ),
        "config-changed",
        ["restore_known_good"],
    ),
    (
        "refused auth change: exit 78 in other words",
        ev(
            last_exit={"code": 78},
            output_tail=PASSWORD_MISSING,
            config={"valid": True, "stage": "ok"},
            known_good="a",
            changes=[CONFIG_CHANGE],
            first_failure_at=1000.0,
        ),
        "config-changed",
        ["restore_known_good"],
    ),
    (
        "TLS switched on: boots, never answers the HTTP probe (crash loop, no words)",
        ev(
            cause="crash_loop",
            last_exit={"code": -9},
            config={"valid": True, "stage": "ok"},
            known_good="a",
            changes=[CONFIG_CHANGE],
        ),
        "config-changed",
        ["restore_known_good"],
    ),
    (
        "a changed boot file (not the config)",
        ev(cause="crash", last_exit={"code": 1}, changes=[{**CONFIG_CHANGE, "what": "boot_file", "key": "x.env"}]),
        "config-changed",
        ["restore_known_good"],
    ),
    (
        "gateway's own parts not ready",
        ev(cause="gateway_check", gateway={"ready": {"status": 503, "failing": ["startup-sidecars"]}}),
        "not-ready",
        [],
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
    (
        "refused node (output only)",
        ev(cause="unsupported_runtime", last_exit={"code": 1}, output_tail=NODE_22),
        "node-engine-mismatch",
        [],
    ),
    ("disk full", ev(cause="diagnose", disk_free_mb=12.0), "disk-full", []),
    (
        "full tmpfs, exit 78",
        ev(last_exit={"code": 78}, output_tail=DISK_FULL, disk_free_mb=0.0, disk_total_mb=64.0, disk_path="/h"),
        "disk-full",
        [],
    ),
    (
        "breaker, fresh bundle",
        ev(cause="crash_loop", stability_bundles=["2026-x-crash_loop_breaker.json"], breaker_age_s=40.0),
        "crash-loop-breaker",
        [],
    ),
    (
        "breaker, said by this launch",
        ev(
            cause="crash_loop",
            output_tail=["restart-loop breaker tripped: 3 unclean boot(s) within 300000ms; suppressing channel/..."],
        ),
        "crash-loop-breaker",
        [],
    ),
    (
        "hang that returns",
        ev(cause="crash_loop", process={"pid": 1, "alive": True, "stopped": True}),
        "process-hang",
        ["resume_stopped_gateway"],
    ),
    (
        "model 429",
        ev(cause="diagnose", log_events=[{"event": "model_fallback_decision", "message": "rate_limit"}]),
        "model-failures",
        [],
    ),
    ("cron", ev(cause="diagnose", output_tail=["cron: job run returned error status {jobId: 1}"]), "cron-failing", []),
    ("channel", ev(cause="diagnose", output_tail=["[telegram] channel start failed: 401"]), "channel-down", []),
    (
        "start command missing",
        ev(cause="fatal_config", reason="cannot start /nonexistent/openclaw: No such file or directory"),
        "start-command-unusable",
        [],
    ),
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


def test_a_small_filesystem_with_room_is_not_full() -> None:
    roomy = ev(cause="diagnose", disk_free_mb=58.0, disk_total_mb=64.0, disk_path="/h")
    assert "disk-full" not in {f.rule for f in diagnose(roomy)}
    assert "disk-full" in {f.rule for f in diagnose(ev(cause="diagnose", disk_free_mb=150.0, disk_total_mb=9e5))}


def test_an_old_breaker_bundle_is_not_a_current_breaker() -> None:
    old = ev(cause="diagnose", stability_bundles=["2026-x-crash_loop_breaker.json"], breaker_age_s=86400.0)
    assert "crash-loop-breaker" not in {f.rule for f in diagnose(old)}


def test_the_full_disk_is_not_mistaken_for_a_corrupt_state_database() -> None:
    rules = {f.rule for f in diagnose(ev(last_exit={"code": 78}, output_tail=DISK_FULL, state_db={"ok": True}))}
    assert "state-db-corrupt" not in rules and "disk-full" in rules


@pytest.mark.parametrize(
    ("code", "tail", "kind"),
    [
        (1, NODE_22, ExitKind.UNSUPPORTED_RUNTIME),
        (1, ["Error: boom"], ExitKind.CRASH),
        (78, DISK_FULL, ExitKind.FATAL_CONFIG),
        (1, ["listen EADDRINUSE: address already in use 127.0.0.1:1"], ExitKind.PORT_IN_USE),
    ],
)
def test_exit_classification_of_recorded_output(code: int, tail: list[str], kind: ExitKind) -> None:
    assert classify_exit(code, requested=False, output_tail=tail) == kind
    assert (kind in FATAL_EXITS) == (kind != ExitKind.CRASH), "a refused runtime is not fixed by a restart"


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
        ("stop_stale_gateway", {"pid": 1}, Policy(), Status.REFUSED),  # a remedy is named, never its victim
        ("resume_stopped_gateway", {"pid": 1}, Policy(), Status.REFUSED),
        ("kill_port_holder", {"pid": 1}, Policy(frozenset(Risk), allow_kill_foreign=True), Status.REFUSED),
        ("kill_port_holder", {}, Policy(), Status.NEEDS_APPROVAL),
        ("kill_port_holder", {}, Policy(frozenset(Risk), allow_kill_foreign=False), Status.NEEDS_APPROVAL),
        ("restore_deps", {}, Policy(frozenset({Risk.READ_ONLY})), Status.NEEDS_APPROVAL),
    ],
)
def test_guard_refuses_as_data(remedy: str, params: dict[str, Any], policy: Policy, status: Status) -> None:
    outcome = Guard(policy).check(remedy, params)
    assert outcome is not None and outcome.status == status


def test_guard_allows_a_declared_remedy_in_policy() -> None:
    assert Guard(Policy()).check("restore_known_good", {}) is None
    assert Guard(Policy(frozenset(Risk), allow_kill_foreign=True)).check("kill_port_holder", {}) is None


def planned_remedies(*sources: str) -> dict[str, list[str]]:
    """Every remedy a plan can name, read from the source of the modules the plans live in — every branch, not only
    the ones the cases reach: `RemedyCall("name", ...)` -> the places it appears. A name that is not a literal is a
    place of its own (`<dynamic>`), so a plan cannot hide its remedy from this walk."""
    found: dict[str, list[str]] = {}
    for source in sources:
        tree = ast.parse(Path(source).read_text(encoding="utf-8"))
        keys_only = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "key"}
        for node in ast.walk(tree):
            if id(node) in keys_only:  # `RemedyCall(o.remedy, o.params).key`: the key of a call made, not a plan
                continue
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "RemedyCall":
                first = node.args[0] if node.args else None
                name = first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else "<dynamic>"
                found.setdefault(name, []).append(f"{Path(source).name}:{node.lineno}")
    return found


def test_every_planned_remedy_is_declared() -> None:
    """Walks the plans of every declared rule (and the gateway checks' own plans), not just the cases' findings."""
    from clawmedic.doctor import gateway_checks
    from clawmedic.doctor.remedies import REMEDIES

    sources = {inspect.getsourcefile(r.plan) for r in RULES} | {inspect.getsourcefile(gateway_checks)}
    planned = planned_remedies(*(s for s in sources if s))
    assert {"restore_known_good", "openclaw_doctor_fix", "channel_disable", "set_default_model"} <= set(planned)
    undeclared = {name: where for name, where in planned.items() if name not in REMEDIES}
    assert not undeclared, f"planned but not declared in REMEDIES: {undeclared}"
    from_cases = {c.remedy for _, evidence, _, _ in CASES for f in diagnose(evidence) for c in f.plan}
    assert from_cases <= set(planned), "a plan named a remedy this walk did not see"


def test_the_plan_walk_finds_an_undeclared_remedy_in_a_branch_no_case_reaches(tmp_path: Path) -> None:
    rules = tmp_path / "rules.py"
    rules.write_text(
        "def plan(ev):\n"
        "    if ev.rare:\n"
        "        return [RemedyCall('restore_known_goood')]\n"
        "    return [RemedyCall(ev.name)]\n"
    )
    assert set(planned_remedies(str(rules))) == {"restore_known_goood", "<dynamic>"}


def test_a_change_made_after_the_failures_began_is_not_reverted() -> None:
    """Someone edited the config during the incident (a fix, perhaps): the failures did not follow it."""
    later = ev(last_exit={"code": 78}, known_good="a", first_failure_at=900.0, changes=[CONFIG_CHANGE])
    assert "config-changed" not in {f.rule for f in diagnose(later)}


def test_a_fault_with_no_change_behind_it_is_not_reverted() -> None:
    same = ev(last_exit={"code": 78}, output_tail=BLOCKED, known_good="a", config={"valid": True, "stage": "ok"})
    plans = {c.remedy for f in diagnose(same) for c in f.plan}
    assert "restore_known_good" not in plans and "config-changed" not in {f.rule for f in diagnose(same)}


def test_a_healthy_gateway_with_an_unproven_edit_is_not_diagnosed() -> None:
    """`clawmedic diagnose` on a running gateway whose config changed since known-good: nothing failed."""
    running = ev(cause="diagnose", process={"pid": 1, "alive": True}, changes=[CONFIG_CHANGE], known_good="a")
    assert diagnose(running) == []


def test_the_crash_loop_breaker_is_a_symptom_and_the_cause_comes_first() -> None:
    looped = ev(
        cause="crash_loop",
        last_exit={"code": 78},
        output_tail=[*PASSWORD_MISSING, "restart-loop breaker tripped: 3 unclean boot(s) within 300000ms"],
        known_good="a",
        changes=[CONFIG_CHANGE],
    )
    found = diagnose(looped)
    assert found[0].rule == "config-changed"
    breaker = next(f for f in found if f.rule == "crash-loop-breaker")
    assert breaker.kind == "symptom" and found[-1] is breaker
    assert "rule=crash-loop-breaker" not in signature(looped, found), "a symptom does not make another incident"


def test_a_symptom_alone_is_still_reported() -> None:
    only = ev(cause="crash_loop", output_tail=["restart-loop breaker tripped: 3 unclean boot(s) within 300000ms"])
    assert [f.rule for f in diagnose(only)] == ["crash-loop-breaker"]


def test_an_unexplained_refusal_yields_to_a_cause() -> None:
    """config-blocked (a valid, unchanged config refused) is a fallback: a lock or a database explains exit 78."""
    locked = ev(last_exit={"code": 78}, output_tail=CONTENTION, config={"valid": True}, known_good="a")
    assert "config-blocked" not in {f.rule for f in diagnose(locked)}


class _PastTheCheck(Exception):
    pass


class _NoContext:
    def __getattr__(self, name: str) -> Any:
        raise _PastTheCheck(name)


@pytest.mark.parametrize(
    ("name", "internal"),
    [
        ("state-database", True),
        ("startup-sidecars", True),
        ("plugin-reload", True),
        ("agent-database:main", True),
        ("plugin-reload-bot", False),  # a channel's id may begin like an internal: the fixed ones match exactly
        ("state-database-mirror", False),
        ("telegram", False),
    ],
)
def test_rules_and_remedies_agree_on_what_in_ready_is_a_gateway_internal(name: str, internal: bool) -> None:
    """One list (targets/openclaw): the fixed names exactly, `agent-database:<id>` per agent."""
    from clawmedic.doctor.remedies import REMEDIES, ChannelParams, RemedyContext

    state = ev(cause="gateway_check", gateway={"ready": {"status": 503, "failing": [name]}})
    assert (name in failing_channels(state)) is not internal
    assert ("not-ready" in {f.rule for f in diagnose(state)}) is internal
    params = ChannelParams.model_construct(channel=name)  # the guard's pattern aside: the remedy's own check
    if internal:
        outcome = REMEDIES["channel_disable"].run(cast(RemedyContext, _NoContext()), params)
        assert outcome.status == Status.REFUSED and "gateway internal" in outcome.detail
    else:
        with pytest.raises(_PastTheCheck):  # it went on to snapshot the config: it would disable the channel
            REMEDIES["channel_disable"].run(cast(RemedyContext, _NoContext()), params)


def test_the_llm_faults_and_the_gateway_checks_rules_come_from_the_declared_rules() -> None:
    """Adding a rule is one entry in RULES: the LLM doctor may name it and, with `gateway_check=True`, the healthy
    gateway's checks run it."""
    from clawmedic.doctor.gateway_checks import GATEWAY_RULES
    from clawmedic.doctor.llm.tools import FAULTS, FinishParams

    declared = (*(r.id for r in RULES), "other")
    assert declared == FAULTS
    assert "not-ready" in FAULTS and "not-ready" in str(FinishParams.model_json_schema())
    assert {"cron-failing", "channel-down", "model-failures"} == GATEWAY_RULES
