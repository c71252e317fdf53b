"""Promise 5 of issue 10: the doctor's evidence is current and reads as words.

Pure tests over recorded evidence: the gateway's JSON-lines log records (FACTS §8: `"0"` bindings, `"1"`/`"2"` the
message, `_meta.logLevelName`, `time`), the evidence the doctor collected, and the ladder's own reasons.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from clawmedic import defaults
from clawmedic.doctor.evidence import Evidence, parse_log
from clawmedic.doctor.rules import diagnose
from clawmedic.ladder.exits import exit_detail, telling_line
from clawmedic.ladder.machine import Ladder, LadderLimits, OpenIncident
from clawmedic.ladder.states import ExitKind
from clawmedic.text import ELLIPSIS, clip

NOW = 1_790_000_000.0  # when the doctor collected the evidence
BREAKER = (
    "restart-loop breaker tripped: 3 unclean boot(s) within 300000ms; suppressing channel/provider account auto-start"
)
# recorded on OpenClaw 2026.9.6: a python http.server held the gateway's port (FACTS §4)
PORT_OUTPUT = [
    "Gateway failed to start: another gateway instance is already listening on ws://127.0.0.1:19130 | listen "
    "EADDRINUSE: address already in use 127.0.0.1:19130 | EADDRINUSE",
    "Port 19130 is already in use. - pid 15790 root: python3 -m http.server 19130",
]
FOREIGN = {
    "port": 19130,
    "pid": 15790,
    "cmdline": "python3 -m http.server 19130",
    "ours": False,
    "stale_gateway": False,
}


def record(at: float, message: str, level: str = "WARN", subsystem: str = "gateway") -> str:
    stamp = datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return json.dumps(
        {
            "0": json.dumps({"subsystem": subsystem}),
            "1": message,
            "_meta": {"runtime": "node", "date": stamp, "logLevelId": 4, "logLevelName": level},
            "time": stamp,
        }
    )


def port_incident(log_events: list[dict[str, object]], window_start: float | None) -> Evidence:
    return Evidence(
        "gateway",
        cause="port_in_use",
        last_exit={"code": 1},
        output_tail=PORT_OUTPUT,
        port_owner=FOREIGN,
        log_events=log_events,
        collected_at=NOW,
        window_start=window_start,
    )


def test_an_old_breaker_record_does_not_blame_a_later_port_conflict() -> None:
    """The case from issue 10: the log's last 400 lines held a breaker record 703 s old."""
    first_failure = NOW - 20.0
    window = first_failure - defaults.EVIDENCE_LEAD_S
    lines = [record(NOW - 703.0, BREAKER), record(NOW - 25.0, "listen EADDRINUSE 127.0.0.1:19130", "ERROR")]
    events = parse_log(lines, window)
    assert [e["message"] for e in events] == ["listen EADDRINUSE 127.0.0.1:19130"], "the old record is left out"
    assert abs(float(events[0]["at"]) - (NOW - 25.0)) < 0.01, "each event carries its time"
    rules = [f.rule for f in diagnose(port_incident(events, window))]
    assert rules[0] == "port-taken-by-foreign-process" and "crash-loop-breaker" not in rules, rules


def test_rules_ignore_recorded_events_outside_the_window() -> None:
    """Evidence recorded before the collector filtered (or edited by hand): the rules apply the window themselves."""
    events = parse_log([record(NOW - 703.0, BREAKER)], None)
    assert events and events[0]["at"] is not None
    assert "crash-loop-breaker" not in {f.rule for f in diagnose(port_incident(events, NOW - 110.0))}


def test_a_breaker_older_than_its_own_window_is_over() -> None:
    """Even inside a long incident window (or `diagnose` with no incident), OpenClaw clears its breaker after 300 s."""
    events = parse_log([record(NOW - defaults.BREAKER_WINDOW_S - 100.0, BREAKER)], NOW - defaults.EVIDENCE_WINDOW_S)
    assert len(events) == 1
    assert "crash-loop-breaker" not in {f.rule for f in diagnose(port_incident(events, NOW - 3600.0))}


def test_a_fresh_breaker_record_still_counts() -> None:
    events = parse_log([record(NOW - 40.0, BREAKER)], NOW - 200.0)
    found = {f.rule: f for f in diagnose(port_incident(events, NOW - 200.0))}
    assert "crash-loop-breaker" in found and "40 s ago" in found["crash-loop-breaker"].detail


def test_an_adopted_gateways_exit_reads_as_words() -> None:
    ladder = Ladder(limits=LadderLimits(crash_loop_failures=1000))
    ladder.start(0.0, running=True, live=True)  # adopted: clawmedic did not start it
    actions = ladder.exited(50.0, ExitKind.CRASH, exit_detail(None))
    reason = next(a.reason for a in actions if isinstance(a, OpenIncident))
    assert "adopted" in reason and "exit code is unknown" in reason, reason
    assert "not our child" not in reason and "exited (exited" not in reason, reason


def test_an_exit_78_reason_is_cut_at_a_word_with_an_ellipsis() -> None:
    said = (
        "Gateway failed to start: Doctor cannot repair this state: shared state database is unreadable at "
        "/home/u/.openclaw/state/openclaw.sqlite: database or disk is full (SQLite errcode=13); snapshot staging "
        "root /home/u/.cache/openclaw: free disk space/quota or set XDG_CACHE_HOME to a writable filesystem | "
        "ERR_SQLITE_ERROR. Run openclaw doctor for details and consult the troubleshooting guide afterwards."
    )
    detail = exit_detail(78, said)
    assert detail.startswith("exit 78: Gateway failed to start: "), "the head of the line is what a reader needs"
    assert detail.endswith(ELLIPSIS), detail
    kept = detail.removeprefix("exit 78: ").removesuffix(ELLIPSIS)
    assert said.startswith(kept), "nothing rewritten, only cut"
    assert said[len(kept)] in " .;:|", f"cut mid-word: {kept[-20:]!r} + {said[len(kept) : len(kept) + 10]!r}"


def test_long_log_and_output_lines_are_cut_at_a_word() -> None:
    words = "the gateway could not open its state database because the disk is full " * 10
    events = parse_log([record(NOW - 5.0, words, "ERROR")], NOW - 60.0)
    msg = str(events[0]["message"])
    assert len(msg) <= defaults.EVIDENCE_MAX_LINE_CHARS and msg.endswith(ELLIPSIS)
    assert words.startswith(msg.removesuffix(ELLIPSIS)) and words[len(msg) - 1] == " ", msg[-30:]
    assert clip("short", 10) == "short"


def test_an_exit_reason_quotes_the_refusal_not_the_housekeeping_after_it() -> None:
    """Recorded on OpenClaw 2026.9.6 with gateway.mode "remote" (validates, exit 78): the last line is an audit
    note, the line before says why; console colours are not words."""
    tail = [
        "\x1b[90m2026-12-01T03:08:25.842+00:00\x1b[39m \x1b[36m[gateway]\x1b[39m \x1b[36mloading configuration…"
        "\x1b[39m",
        "Gateway start blocked: set gateway.mode=local (current: remote) or pass --allow-unconfigured.",
        "Config write audit: SQLite diagnostic_events/config-audit state (latest 50000 rows)",
        "--- clawmedic: exited 78",
    ]
    said = telling_line(tail)
    assert said.startswith("Gateway start blocked: set gateway.mode=local"), said
    assert exit_detail(78, said).startswith("exit 78: Gateway start blocked")
    assert telling_line(["\x1b[36mhello\x1b[39m"]) == "hello", "no error words: the last line, without colours"
