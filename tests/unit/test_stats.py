"""`clawmedic stats` as pure functions of incidents, events and a given `now`: one scenario a row."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from clawmedic.stats import compute, healed_by, parse_since, quantile, root_cause, uptime
from clawmedic.store.incidents import Incident, TimelineEntry


def incident(
    id_: int = 1,
    *,
    target: str = "gw",
    status: str = "recovered",
    detected: float = 1000.0,
    ttr: float | None = 10.0,
    closed: bool = True,
    cause: str | None = None,
    reason: str = "process exited (killed by signal 9)",
    timeline: list[tuple[str, dict[str, Any]]] = (),  # type: ignore[assignment]
) -> Incident:
    inc = Incident(
        id_,
        target,
        status,
        reason,
        cause,
        detected,
        detected,
        None if ttr is None else detected + ttr,
        detected + (ttr or 0) + 5 if closed else None,
        1,
    )
    inc.timeline = [TimelineEntry(detected + i, kind, detail, None) for i, (kind, detail) in enumerate(timeline)]
    return inc


HEALED_CASES = [
    # (what happened, incident, tier)
    ("a restart alone", incident(), "restart"),
    ("known-good restored at start", incident(timeline=[("config_restored", {"known_good": "abc"})]), "known_good"),
    (
        "the known-good remedy",
        incident(timeline=[("remedy", {"remedy": "restore_known_good", "status": "ok"})]),
        "known_good",
    ),
    ("a rule's remedy", incident(timeline=[("remedy", {"remedy": "cron_disable", "status": "ok"})]), "rule"),
    ("a remedy that failed", incident(timeline=[("remedy", {"remedy": "cron_disable", "status": "error"})]), "restart"),
    (
        "the LLM doctor's remedy",
        incident(timeline=[("remedy", {"remedy": "cron_disable", "status": "ok", "by": "llm"})]),
        "llm",
    ),
    (
        "gave up, then a human",
        incident(
            timeline=[
                ("remedy", {"remedy": "cron_disable", "status": "ok"}),
                ("state", {"from": "gave_up", "to": "starting"}),
            ]
        ),
        "human",
    ),
    ("still open", incident(status="open", ttr=None, closed=False), "unresolved"),
    ("gave up, still", incident(status="gave_up", ttr=None, closed=False), "unresolved"),
]


@pytest.mark.parametrize(("what", "inc", "tier"), HEALED_CASES, ids=[c[0] for c in HEALED_CASES])
def test_healed_by(what: str, inc: Incident, tier: str) -> None:
    assert healed_by(inc) == tier


def test_root_cause_prefers_the_diagnosis_then_the_cause_then_the_reason() -> None:
    diagnosed = incident(
        timeline=[("diagnosis", {"findings": [{"rule": "bad_json", "title": "openclaw.json is not valid JSON5"}]})],
        cause="fatal_config",
    )
    assert root_cause(diagnosed) == "openclaw.json is not valid JSON5"
    assert root_cause(incident(cause="crash_loop")) == "crash_loop"
    assert root_cause(incident(reason="exited 1 (pid 4242)")) == root_cause(incident(reason="exited 1 (pid 77)"))


# Events: (at, kind, target, new state). A daemon watches from 0 to 100, is down 100-200, watches 200-now.
EVENTS = [
    (0.0, "daemon_started", None, None),
    (0.0, "state", "gw", "starting"),
    (10.0, "state", "gw", "healthy"),
    (50.0, "state", "gw", "restarting"),
    (60.0, "state", "gw", "probation"),
    (100.0, "daemon_stopped", None, None),
    (200.0, "daemon_started", None, None),
    (200.0, "state", "gw", "healthy"),
]


def _events() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for at, kind, target, new in EVENTS:
        e: dict[str, Any] = {"ts": at, "kind": kind}
        if target is not None:
            e.update(target=target, new=new, at=at)
        out.append(e)
    return out


@pytest.mark.parametrize(
    ("since", "now", "watched", "live"),
    [
        (0.0, 300.0, 200.0, 180.0),  # 100 watched + 100 watched; live 40 + 40 + 100
        (55.0, 300.0, 145.0, 140.0),  # the window starts while it restarts
        (150.0, 250.0, 50.0, 50.0),  # the gap without a daemon is not counted
        (0.0, 30.0, 30.0, 20.0),  # `now` inside the first run
    ],
)
def test_uptime_counts_only_watched_time(since: float, now: float, watched: float, live: float) -> None:
    assert uptime(_events(), since, now) == {"gw": (watched, live)}


def test_a_daemon_that_died_without_stopping_watched_until_its_next_start() -> None:
    events = [e for e in _events() if e["kind"] != "daemon_stopped"]
    assert uptime(events, 0.0, 300.0) == {"gw": (300.0, 280.0)}  # the probation ran on until the restart at 200


def test_compute_sums_up_a_window() -> None:
    incidents = [
        incident(1, ttr=4.0),
        incident(2, ttr=10.0, timeline=[("remedy", {"remedy": "cron_disable", "status": "ok"})]),
        incident(3, ttr=30.0),
        incident(4, status="gave_up", ttr=None, closed=False, cause="crash_loop"),
        incident(5, detected=-50.0, ttr=999.0),  # before the window
    ]
    s = compute(incidents, _events(), since=0.0, now=300.0)
    assert s.incidents == 4
    assert (s.mttr_median_s, s.mttr_p90_s) == (10.0, 30.0)
    assert s.healed_by == {"restart": 2, "known_good": 0, "rule": 1, "llm": 0, "human": 0, "unresolved": 1}
    assert s.top_causes[0] == ("process exited (killed by signal N)", 3)
    assert s.targets["gw"].uptime_pct == 90.0 and s.targets["gw"].incidents == 4
    assert s.to_dict()["top_causes"][1] == {"cause": "crash_loop", "incidents": 1}


@pytest.mark.parametrize(("text", "seconds"), [("7d", 604800.0), ("12h", 43200.0), ("30m", 1800.0), ("2w", 1209600.0)])
def test_parse_since(text: str, seconds: float) -> None:
    assert parse_since(text) == seconds


@pytest.mark.parametrize("bad", ["", "7", "d", "-1d", "0h", "3x", "7 days"])
def test_a_bad_since_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="--since"):
        parse_since(bad)


def test_quantile_is_nearest_rank() -> None:
    assert quantile([], 0.9) is None
    assert quantile([5.0], 0.9) == 5.0
    assert quantile([float(i) for i in range(1, 11)], 0.9) == 9.0
    assert quantile([3.0, 1.0, 2.0], 0.5) == 2.0


def test_a_long_reason_is_cut_at_a_word() -> None:
    cause = root_cause(incident(reason="liveness failed 3 times: process 10129 is stopped (SIGSTOP or traced): " * 2))
    assert len(cause) <= 80 and cause.endswith("…") and not cause.endswith("ans…")


def test_read_events_keeps_state_and_daemon_events_and_skips_a_cut_line(tmp_path: Path) -> None:
    from clawmedic.redact import Redactor
    from clawmedic.stats import read_events
    from clawmedic.store.events import EventLog

    path = tmp_path / "events.jsonl"
    log = EventLog(path, Redactor())
    log.emit("daemon_started", pid=1)
    log.emit("state", "gw", old="stopped", new="starting", at=1.0)
    log.emit("liveness", "gw", ok=True)
    with path.open("a") as f:
        f.write('{"ts":2,"kind":"state","target":"gw","ne')  # a crash mid-line
    assert [e["kind"] for e in read_events(path)] == ["daemon_started", "state"]
