"""Every event kind that means "a human is needed" reaches a notification by type, and the ones that leave a target
broken until someone acts reach GitHub too. The kinds are enumerated from `store.event_kinds`, so a new kind added
there fails here until the notifier (and, if listed, GitHub) handle it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from clawmedic.config import ALL_NOTIFY_KINDS, GitHubConfig, load_config
from clawmedic.github_issues import GitHubIssues
from clawmedic.notify import NotifyPolicy, render
from clawmedic.store.event_kinds import GITHUB_KINDS, NOTIFY_KIND, HumanNeeded

# The events a daemon writes around each kind, as they appear in events.jsonl (the state change comes first).
_SCRIPTS: dict[HumanNeeded, list[dict[str, Any]]] = {
    HumanNeeded.ESCALATED: [
        {"kind": "state", "target": "gw", "new": "escalated"},
        {"kind": "escalated", "target": "gw", "incident": 1, "reason": "exit 78", "cause": "fatal_config"},
    ],
    HumanNeeded.GAVE_UP: [
        {"kind": "state", "target": "gw", "new": "gave_up"},
        {"kind": "gave_up", "target": "gw", "incident": 2, "reason": "no remedy left"},
    ],
    HumanNeeded.LATENT_CONFIG_FAULT: [
        {"kind": "latent_config_fault", "target": "gw", "incident": 3, "issues": ["gateway.port"], "path": "/x"},
    ],
    HumanNeeded.GATEWAY_FAULT_ESCALATED: [
        {
            "kind": "gateway_fault_escalated",
            "target": "gw",
            "incident": 4,
            "rule": "channel-down",
            "status": "escalated",
            "why": "disable_channel: failed — the channel is built in",
        },
    ],
    HumanNeeded.STATE_WRITES_FAILING: [
        {"kind": "state_writes_failing", "target": None, "failing": {"status.json": "ENOSPC"}, "ts": 1.0},
    ],
}


@pytest.fixture
def loaded(tmp_path: Path) -> Any:
    cfg = tmp_path / "clawmedic.toml"
    cfg.write_text(
        '[daemon]\nstate_dir = "state"\n[targets.gw]\nkind = "http"\n'
        'liveness = { url = "http://127.0.0.1:9/health" }\nstart = { command = ["sleep", "1"] }\n'
    )
    return load_config(cfg)


def test_every_human_needed_kind_has_a_script_and_a_notification_kind() -> None:
    assert set(_SCRIPTS) == set(HumanNeeded)
    assert set(NOTIFY_KIND) == set(HumanNeeded)
    assert set(NOTIFY_KIND.values()) <= set(ALL_NOTIFY_KINDS)


@pytest.mark.parametrize("kind", list(HumanNeeded), ids=str)
def test_a_human_needed_event_becomes_a_rendered_message(kind: HumanNeeded, loaded: Any) -> None:
    policy = NotifyPolicy(group_wait_s=0.0, repeat_interval_s=0.0, kinds=ALL_NOTIFY_KINDS)
    alerts = [a for event in _SCRIPTS[kind] for a in policy.observe(event, 10.0)]
    assert [a.kind for a in alerts] == [NOTIFY_KIND[kind]]
    title, body = render(alerts[0], loaded, None, (None, []), 20.0)
    assert title.startswith("clawmedic: ") and body


def test_a_gateway_fault_is_told_once_and_its_resolution_follows() -> None:
    policy = NotifyPolicy(group_wait_s=0.0, repeat_interval_s=0.0, kinds=ALL_NOTIFY_KINDS)
    (escalated,) = _SCRIPTS[HumanNeeded.GATEWAY_FAULT_ESCALATED]
    resolved = {"kind": "gateway_fault_resolved", "target": "gw", "incident": 4, "outcome": "resolved"}
    kinds = [a.kind for e in (escalated, escalated, resolved, resolved) for a in policy.observe(e, 1.0)]
    assert kinds == ["gateway_fault", "gateway_fault_resolved"]


@pytest.mark.parametrize("kind", list(HumanNeeded), ids=str)
def test_github_takes_exactly_the_kinds_that_leave_a_target_broken(kind: HumanNeeded, loaded: Any) -> None:
    gh = GitHubIssues(loaded, "token", GitHubConfig(repo="o/r"))
    for event in _SCRIPTS[kind]:
        gh.on_event(event)
    assert len(gh._jobs) == (1 if kind in GITHUB_KINDS else 0)
    if kind in GITHUB_KINDS:
        assert gh._jobs[0].kind == kind.value and gh._jobs[0].reason
