"""The target-kind seam (targets/kinds.py): generic code asks the kind, and a plain HTTP target is spoken of in
generic words — no OpenClaw setting in its advice, no "gateway" in its report."""

from __future__ import annotations

import re
import time
from pathlib import Path

import clawmedic
from clawmedic.config import load_config
from clawmedic.doctor.evidence import Evidence
from clawmedic.doctor.report import render, report_path, write_report
from clawmedic.doctor.rules import diagnose
from clawmedic.store.incidents import IncidentStore
from clawmedic.targets import kinds

FOREIGN = {"port": 8080, "pid": 4242, "cmdline": "nc -l 8080", "ours": False, "stale_gateway": False}


def _advice(kind: str) -> str:
    (finding,) = [f for f in diagnose(Evidence("t", "port_conflict", port_owner=FOREIGN, target_kind=kind))]
    assert finding.rule == "port-taken-by-foreign-process"
    return finding.advice


def test_an_http_targets_port_advice_names_no_openclaw_setting() -> None:
    assert "gateway" not in _advice("http") and "the service" in _advice("http")
    assert "`gateway.port`" in _advice("openclaw")
    assert "`gateway.port`" in _advice(Evidence("t").target_kind)  # evidence recorded before kinds: OpenClaw's


def test_only_the_openclaw_kind_brings_openclaw_collectors_and_its_home() -> None:
    http, oc = kinds.kind_of("http"), kinds.kind_of("openclaw")
    ev = Evidence("t")
    assert http.collectors(None, "t", ev, pid=None, config=None, lint=True) == {}  # type: ignore[arg-type]
    found = oc.collectors(None, "t", ev, pid=None, config=None, lint=False)  # type: ignore[arg-type]
    assert set(found) == {"config", "deps", "node", "state_db", "stability", "duplicates"}
    assert kinds.kind_of("something-else") is http
    assert http.install_changes(None, "t", 0.0) == []  # type: ignore[arg-type]


def test_an_http_targets_report_says_the_service(tmp_path: Path) -> None:
    toml = tmp_path / "clawmedic.toml"
    toml.write_text(
        '[daemon]\nstate_dir = "state"\n[targets.web]\nkind = "http"\nport = 19997\n'
        'liveness.url = "http://127.0.0.1:19997/health"\n[targets.web.start]\ncommand = ["true"]\n'
    )
    loaded = load_config(toml)
    loaded.state_dir.mkdir(parents=True)
    incidents = IncidentStore(loaded.state_dir / "incidents.sqlite")
    inc = incidents.open("web", "liveness failed", time.time())
    incidents.update(inc, status="recovered", closed_at=time.time())
    write_report(loaded, incidents, inc)
    text = report_path(loaded.state_dir, inc).read_text()
    assert "Recovered: the service passed its probation" in text and "gateway" not in text
    incidents.add(inc, "evidence", Evidence("web", target_kind="openclaw").to_dict())
    found = incidents.get(inc)
    assert found is not None and "Recovered: the gateway passed its probation" in render(found)


# `kind == "openclaw"` branches still outside targets/ (issue 11): a file may lose them, none may gain one.
KIND_BRANCHES_LEFT = {
    "config.py": 5,
    "supervisor.py": 5,
    "runbook.py": 6,
    "doctor/gateway_checks.py": 2,
    "doctor/conversation.py": 2,
}
_KIND_BRANCH = re.compile(r"\bkind\s*(?:==|!=)\s*[\"'](?:openclaw|http)[\"']")


def test_no_new_kind_branch_outside_targets() -> None:
    src = Path(clawmedic.__file__).parent
    found = {
        rel: n
        for path in sorted(src.rglob("*.py"))
        if (rel := str(path.relative_to(src))).split("/")[0] != "targets"
        and (n := len(_KIND_BRANCH.findall(path.read_text(encoding="utf-8"))))
    }
    grown = {rel: n for rel, n in found.items() if n > KIND_BRANCHES_LEFT.get(rel, 0)}
    assert not grown, f"ask the target kind (targets/kinds.py) instead of branching on it: {grown}"
    assert "doctor/evidence.py" not in found and "doctor/changes.py" not in found
