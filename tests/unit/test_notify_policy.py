"""The notification policy and the delivery queue, with time passed in (no sleeping): grouping, deduplication, the
repeat interval, the recovered follow-up, routing by severity, backoff, and redaction of the rendered message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from clawmedic.config import load_config
from clawmedic.notify import Alert, Notifier, NotifyPolicy, destinations, render

ALL_KINDS = ("escalated", "gave_up", "still_down", "recovered", "latent_config_fault", "latent_config_resolved")


def policy(
    group_wait_s: float = 30.0, repeat_interval_s: float = 3600.0, kinds: tuple[str, ...] = ALL_KINDS
) -> NotifyPolicy:
    return NotifyPolicy(group_wait_s=group_wait_s, repeat_interval_s=repeat_interval_s, kinds=kinds)


def ev(kind: str, target: str = "gw", **fields: Any) -> dict[str, Any]:
    return {"kind": kind, "target": target, **fields}


def state(new: str, target: str = "gw") -> dict[str, Any]:
    return ev("state", target, new=new)


def run(p: NotifyPolicy, script: list[tuple[float, dict[str, Any] | None]]) -> list[tuple[float, str, int | None]]:
    """Feed (time, event) rows — an event of None is a tick — and return (time, kind, incident) of every alert."""
    out: list[tuple[float, str, int | None]] = []
    for now, event in script:
        alerts = p.observe(event, now) if event is not None else p.tick(now)
        out += [(now, a.kind, a.incident) for a in alerts]
    return out


def escalation(t: float, inc: int = 1) -> list[tuple[float, dict[str, Any] | None]]:
    return [(t, state("escalated")), (t, ev("escalated", incident=inc, reason="exit 78", cause="fatal_config"))]


def gave_up(t: float, inc: int = 1) -> list[tuple[float, dict[str, Any] | None]]:
    return [(t, state("gave_up")), (t, ev("gave_up", incident=inc, reason="no rule matched"))]


def test_an_escalation_and_its_verdict_make_one_message() -> None:
    alerts = run(policy(), [*escalation(0.0), (10.0, None), *gave_up(12.0), (100.0, None)])
    assert alerts == [(12.0, "gave_up", 1)]


def test_an_escalation_the_doctor_is_still_working_on_is_told_after_the_group_wait() -> None:
    alerts = run(policy(group_wait_s=30.0), [*escalation(0.0), (29.9, None), (30.0, None), *gave_up(45.0)])
    assert alerts == [(30.0, "escalated", 1), (45.0, "gave_up", 1)]  # gave_up is another kind: told once more


def test_an_escalation_the_doctor_healed_tells_nobody() -> None:
    script = [
        *escalation(0.0),
        (5.0, state("starting")),  # the doctor's remedy worked: the ladder relaunches
        (40.0, None),
        (41.0, state("healthy")),
        (41.0, ev("incident_closed", incident=1, outcome="recovered")),
        (100.0, None),
    ]
    assert run(policy(), script) == []


def test_a_second_escalation_of_the_same_incident_is_not_told_again() -> None:
    script = [*escalation(0.0), *gave_up(1.0), (2.0, state("starting")), *escalation(3.0), *gave_up(4.0), (500.0, None)]
    assert run(policy(), script) == [(1.0, "gave_up", 1)]


@pytest.mark.parametrize(
    ("ticks", "expected"),
    [
        ([59.9], []),
        ([60.0], [(60.0, "still_down", 1)]),
        ([60.0, 119.0, 120.0], [(60.0, "still_down", 1), (120.0, "still_down", 1)]),
    ],
)
def test_reminders_follow_the_repeat_interval(ticks: list[float], expected: list[tuple[float, str, int]]) -> None:
    script: list[tuple[float, dict[str, Any] | None]] = [*gave_up(0.0)]
    script += [(t, None) for t in ticks]
    assert run(policy(repeat_interval_s=60.0), script)[1:] == expected


def test_no_reminder_while_paused_by_a_human_and_one_recovered_follow_up() -> None:
    script = [
        *gave_up(0.0),
        (30.0, state("maintenance")),
        (60.0, None),  # paused: skipped
        (70.0, state("starting")),
        (120.0, None),  # down again: reminded
        (125.0, state("probation")),
        (130.0, state("healthy")),
        (130.0, ev("incident_closed", incident=1, outcome="recovered")),
        (500.0, None),
        (131.0, ev("incident_closed", incident=1, outcome="recovered")),  # a duplicate close: nothing
    ]
    kinds = [k for _, k, _ in run(policy(repeat_interval_s=60.0), script)]
    assert kinds == ["gave_up", "still_down", "recovered"]


def test_no_recovered_follow_up_when_the_down_message_was_filtered_out() -> None:
    script = [*gave_up(0.0), (5.0, ev("incident_closed", incident=1, outcome="recovered"))]
    assert run(policy(kinds=("recovered",)), script) == []


def test_a_latent_config_fault_is_told_once_and_its_resolution_follows() -> None:
    script: list[tuple[float, dict[str, Any] | None]] = [
        (0.0, ev("latent_config_fault", incident=7, issues=["gateway.port: expected number"], path="/x.json")),
        (1.0, ev("latent_config_fault", incident=7, issues=["again"], path="/x.json")),
        (2.0, ev("latent_config_resolved", incident=7)),
        (3.0, ev("latent_config_resolved", incident=7)),
    ]
    assert run(policy(), script) == [(0.0, "latent_config_fault", 7), (2.0, "latent_config_resolved", 7)]


def test_next_deadline_is_the_group_wait_or_the_next_reminder() -> None:
    p = policy(group_wait_s=30.0, repeat_interval_s=600.0)
    assert p.next_deadline() is None
    run(p, escalation(100.0))
    assert p.next_deadline() == 130.0
    run(p, gave_up(110.0))
    assert p.next_deadline() == 710.0


# --- routing, delivery and rendering, with a config on disk ---


def _config(tmp_path: Path, notify: str, target_notify: str = "") -> Path:
    (tmp_path / "secrets.env").write_text("TOKEN=plantedSecretValue42\n")
    path = tmp_path / "c.toml"
    path.write_text(
        f"""
[daemon]
state_dir = "state"
env_file = "secrets.env"
[daemon.notify]
{notify}
[targets.gw]
kind = "http"
liveness = {{ url = "http://127.0.0.1:9/health" }}
start = {{ command = ["sleep", "1"], env = {{ KEY = "${{TOKEN}}" }} }}
{target_notify}
[targets.other]
kind = "http"
liveness = {{ url = "http://127.0.0.1:9/health" }}
start = {{ command = ["sleep", "1"] }}
"""
    )
    return path


def test_destinations_route_by_severity_and_target(tmp_path: Path) -> None:
    loaded = load_config(
        _config(
            tmp_path,
            'urls = ["json://a/x"]\nseverities = ["critical"]',
            '[targets.gw.notify]\nurls = ["json://phone/${TOKEN}"]\nseverities = ["critical", "warning"]',
        )
    )
    ds = destinations(loaded)
    assert [(d.key, d.wants("gw", "warning"), d.wants("other", "critical")) for d in ds] == [
        ("daemon.notify.urls[0]", False, True),
        ("targets.gw.notify.urls[0]", True, False),
    ]
    assert loaded.secrets["TOKEN"] == "plantedSecretValue42"  # a notify URL's "${TOKEN}" was resolved


class FlakySender:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.sent: list[tuple[str, str, str]] = []

    def send(self, url: str, title: str, body: str, notify_type: str) -> tuple[bool, str]:
        if self.failures > 0:
            self.failures -= 1
            return False, f"connection refused by {url}"
        self.sent.append((url, title, body))
        return True, ""


def test_failed_deliveries_back_off_exponentially_then_deliver_once(tmp_path: Path) -> None:
    loaded = load_config(
        _config(tmp_path, 'urls = ["json://127.0.0.1:9/${TOKEN}"]\nretry_initial_s = 10\nretry_max_s = 25')
    )
    clock = [1000.0]
    sender = FlakySender(failures=3)
    n = Notifier(loaded, sender=sender, clock=lambda: clock[0])
    outbox = n.open()
    alert = Alert("incident:1:gave_up", "gave_up", "critical", "failure", "gw", 1, 1000.0, {"reason": "exit 78"})
    assert n.enqueue([alert, alert], None) == 1  # the same alert twice is queued once
    attempts = []
    errors = []
    for t in (1000.0, 1005.0, 1010.0, 1029.9, 1030.0, 1054.9, 1055.0, 1100.0):
        clock[0] = t
        if n.deliver_due():
            attempts.append((t, "sent"))
        elif (row := outbox.all()[0]).attempts > len(attempts):
            attempts.append((t, f"failed, next at {row.next_at:g}"))
            errors.append(row.last_error or "")
    assert attempts == [
        (1000.0, "failed, next at 1010"),
        (1010.0, "failed, next at 1030"),
        (1030.0, "failed, next at 1055"),  # 40 s capped at retry_max_s = 25
        (1055.0, "sent"),
    ]
    assert len(sender.sent) == 1
    url = sender.sent[0][0]
    assert url.endswith("/plantedSecretValue42")  # resolved only at send time …
    assert "plantedSecretValue42" not in outbox.path.read_text(errors="replace")  # … never stored
    assert errors and all("connection refused" in e and "plantedSecretValue42" not in e for e in errors)
    outbox.close()


def test_a_message_older_than_give_up_after_is_dropped(tmp_path: Path) -> None:
    loaded = load_config(
        _config(tmp_path, 'urls = ["json://127.0.0.1:9/x"]\ngive_up_after_s = 60\nretry_initial_s = 1')
    )
    clock = [0.0]
    n = Notifier(loaded, sender=FlakySender(failures=1000), clock=lambda: clock[0])
    outbox = n.open()
    n.enqueue([Alert("k", "gave_up", "critical", "failure", "gw", None, 0.0)], None)
    for t in range(0, 70, 1):
        clock[0] = float(t)
        n.deliver_due()
    assert [r.status for r in outbox.all()] == ["dropped"]
    outbox.close()


def test_the_rendered_message_is_redacted_as_a_whole(tmp_path: Path) -> None:
    loaded = load_config(_config(tmp_path, 'urls = ["json://127.0.0.1:9/x"]'))
    alert = Alert(
        "incident:3:gave_up",
        "gave_up",
        "critical",
        "failure",
        "gw",
        3,
        0.0,
        {"reason": "crashed with plantedSecretValue42 in argv", "diagnosis": "token=abc123def456"},
    )
    title, body = render(alert, loaded, None, (tmp_path / "log", ["line with plantedSecretValue42"]), 10.0)
    assert "plantedSecretValue42" not in title + body
    assert "abc123def456" not in body
    assert "clawmedic incidents show 3 --report" in body
    assert "line with ***" in body


def test_after_a_daemon_restart_what_was_told_is_not_told_again_and_recovered_still_follows() -> None:
    """A previous daemon told `gave_up` about incident 1 at t=5: the new one stays quiet about it, reminds on the
    old schedule, and says `recovered` when it heals (issue 10 §3, issue 17)."""
    p = policy(repeat_interval_s=100.0)
    p.remember("gw", 1, "gave_up", 5.0)
    script = [(10.0, state("gave_up")), *gave_up(12.0), (104.0, None), (105.0, None)]
    script += [(200.0, state("retrying")), (230.0, state("healthy"))]
    script += [(230.0, ev("incident_closed", incident=1, outcome="recovered"))]
    assert run(p, script) == [(105.0, "still_down", 1), (230.0, "recovered", 1)]
