"""Recovery reports in Markdown: symptom, evidence (redacted), diagnosis, actions and results, verdict, time to
recover, and advice. Rendered from the incident's own timeline, so every incident has one, healed or not."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from clawmedic.config import LoadedConfig
from clawmedic.store.files import atomic_write
from clawmedic.store.health import is_write_failure, state_writes
from clawmedic.store.incidents import Incident, IncidentStore
from clawmedic.targets import kinds


def _t(ts: float | None) -> str:
    return "—" if ts is None else dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def report_path(state_dir: Path, incident_id: int) -> Path:
    return state_dir / "reports" / f"incident-{incident_id}.md"


def what_changed(inc: Incident) -> list[dict[str, Any]] | None:
    """The incident's "what changed" section: the changes the doctor's last evidence recorded (`[]`: nothing had
    changed since the last healthy state), or None when no evidence with it was collected (a plain restart)."""
    recorded = [e.detail["changes"] for e in inc.timeline if e.kind == "evidence" and "changes" in e.detail]
    return list(recorded[-1]) if recorded else None


def _noun(inc: Incident) -> str:
    """How the report names the target when the caller does not say: by the kind its evidence recorded."""
    kinds_seen = [e.detail["target_kind"] for e in inc.timeline if e.kind == "evidence" and "target_kind" in e.detail]
    return kinds.kind_of(str(kinds_seen[-1])).noun if kinds_seen else "the target"


def render(inc: Incident, with_changes: bool = True, noun: str | None = None) -> str:
    """The report in Markdown; `with_changes=False` leaves out "What changed" (the incident page shows it apart).
    `noun`: how the target is named ("the gateway", "the service": its kind's word, targets/kinds.py)."""
    lines = [f"# Incident #{inc.id} — {inc.target}: {inc.status}", ""]
    lines += [
        "## Symptom",
        "",
        inc.reason,
        "",
        f"- first failure: {_t(inc.first_failure_at)}; detected: {_t(inc.detected_at)}",
        f"- live again: {_t(inc.live_at)}"
        + (f" ({inc.time_to_recover_s:.1f} s after the first failure)" if inc.time_to_recover_s is not None else ""),
        f"- closed: {_t(inc.closed_at)}; restarts: {inc.restarts}; cause: {inc.cause or '—'}",
        "",
    ]
    evidence = [e for e in inc.timeline if e.kind == "evidence"]
    diagnoses = [e for e in inc.timeline if e.kind == "diagnosis"]
    if evidence:
        ev = evidence[-1].detail
        lines += changes_lines((what_changed(inc) or []) if with_changes else [])
        lines += ["## Evidence", ""]
        if ev.get("last_exit"):
            lines.append(f"- last exit: `{json.dumps(ev['last_exit'])}`")
        for key in ("config", "port_owner", "process", "state_db", "node"):
            if ev.get(key):
                lines.append(f"- {key}: `{json.dumps(ev[key])}`")
        if ev.get("deps_problems"):
            lines.append("- missing packages: " + ", ".join(str(p.get("package")) for p in ev["deps_problems"]))
        if ev.get("duplicates"):
            lines.append(f"- other gateways on the same HOME: `{json.dumps(ev['duplicates'])}`")
        if ev.get("disk_free_mb") is not None:
            total = f" of {ev['disk_total_mb']} MB" if ev.get("disk_total_mb") is not None else ""
            where = f" on {ev['disk_path']}" if ev.get("disk_path") else ""
            lines.append(f"- free disk: {ev['disk_free_mb']} MB{total}{where}")
        if ev.get("errors"):
            lines.append(f"- collectors that could not tell: `{json.dumps(ev['errors'])}`")
        lines += _gateway_lines(ev.get("gateway") or {})
        tail = ev.get("output_tail") or []
        if tail:
            lines += ["", "Gateway output (last lines, redacted):", "", "```", *tail[-15:], "```"]
        lines.append("")
    advice: list[str] = []
    if diagnoses:
        lines += ["## Diagnosis", ""]
        found = diagnoses[-1].detail.get("findings", [])
        causes = [d for d in found if d.get("kind", "cause") == "cause"]
        symptoms = [d for d in found if d.get("kind", "cause") != "cause"]
        for d in causes or symptoms:
            lines.append(f"- **{d['rule']}** ({d['confidence'] * 100:.0f}%): {d['detail']}")
            advice.append(d["advice"])
        if causes and symptoms:
            lines += ["", "Consequences of the cause above (symptoms, not the diagnosis):", ""]
            lines += [f"- {d['rule']}: {d['detail']}" for d in symptoms]
        if not found:
            lines.append("- no known fault matched the evidence")
        lines.append("")
    lines += _llm_section(inc)
    actions = [
        e
        for e in inc.timeline
        if e.kind in ("action", "remedy", "verify", "config_restored", "deps_restored", "exit", "preflight")
    ]
    if actions:
        lines += ["## Actions and results", "", "| time | what | result |", "|---|---|---|"]
        for e in actions:
            lines.append(f"| {_t(e.ts)} | {e.kind} | {_summarise(e.detail)} |")
        lines.append("")
    verdicts = [e for e in inc.timeline if e.kind == "verdict"]
    lines += ["## Verdict", ""]
    if inc.status == "recovered" and inc.cause == "gateway_check" and verdicts:
        lines.append(f"Recovered: {verdicts[-1].detail.get('summary')} ({_t(inc.closed_at)}).")
    elif inc.status == "recovered":
        lines.append(f"Recovered: {noun or _noun(inc)} passed its probation ({_t(inc.closed_at)}).")
    elif verdicts:
        lines.append(str(verdicts[-1].detail.get("summary", inc.status)))
    else:
        lines.append(inc.status)
    for v in verdicts:
        if "took_s" in v.detail:
            lines.append(f"- doctor run: {v.detail['took_s']} s (own overhead {v.detail.get('doctor_overhead_s')} s)")
    lines.append("")
    if advice:
        lines += ["## To prevent a recurrence", "", *(f"- {a}" for a in dict.fromkeys(advice)), ""]
    return "\n".join(lines)


def changes_lines(changes: list[dict[str, Any]]) -> list[str]:
    """The "what changed" section: every difference from the last healthy state, with when it happened."""
    if not changes:
        return []
    out = ["## What changed", ""]
    for c in changes:
        revert = f"; reverted by `{c['remedy']}`" if c.get("reversible") and c.get("remedy") else ""
        out.append(f"- **{c.get('what')}** {c.get('summary')} ({c.get('when')}{revert})")
        out += [f"  - `{s}`" for s in c.get("settings") or []]
    return [*out, ""]


def _llm_section(inc: Incident) -> list[str]:
    """What the LLM doctor was shown, what it called (with each call's status) and what it concluded."""
    started = [e for e in inc.timeline if e.kind == "llm_started"]
    ended = [e for e in inc.timeline if e.kind == "llm_conclusion"]
    errors = [e for e in inc.timeline if e.kind == "llm_error"]
    if not (started or ended or errors):
        return []
    out = ["## LLM doctor", ""]
    for e in started:
        out.append(f"- consulted {e.detail.get('backend')} at {_t(e.ts)}")
    calls = [e.detail for e in inc.timeline if e.kind == "llm_tool"]
    if calls:
        out += ["", "| step | tool | arguments | status |", "|---|---|---|---|"]
        for c in calls:
            args = json.dumps(c.get("arguments", {})).replace("|", "/")[:120]
            note = " (output truncated)" if c.get("truncated") else ""
            out.append(f"| {c.get('step')} | {c.get('name')} | `{args}` | {c.get('status')}{note} |")
        out.append("")
    for e in errors:
        out.append(f"- backend problem: {e.detail.get('error')}")
    for e in ended:
        d = e.detail
        fault = f" (fault: {d['fault']})" if d.get("fault") else ""
        out.append(f"- ended: {d.get('ended')} after {d.get('steps')} step(s), {d.get('took_s')} s{fault}")
        if d.get("conclusion"):
            out += ["", f"> {d['conclusion']}"]
    out += ["", "The verdict is clawmedic's own health check, not the model's claim.", ""]
    return out


def _gateway_lines(gw: dict[str, Any]) -> list[str]:
    """A running gateway's own state (doctor/gateway_checks.py): what failed, not the whole dump."""
    lines = []
    for j in gw.get("cron") or []:
        if j.get("last_status") == "error":
            lines.append(
                f"- cron job `{j.get('name')}` ({j.get('id')}): enabled={j.get('enabled')}, last run error "
                f"({j.get('consecutive_errors')} in a row): {j.get('last_error')}"
            )
    ready = gw.get("ready") or {}
    if ready.get("status") not in (None, 200):
        lines.append(f"- /ready: {ready.get('status')}, failing {ready.get('failing')}")
    for ch, accounts in (gw.get("channels") or {}).items():
        bad = [a for a in accounts if not a.get("running") or a.get("last_error")]
        if bad:
            lines.append(f"- channel {ch}: `{json.dumps(bad)}`")
    events = gw.get("model_events") or []
    if events:
        last = events[-1]
        lines.append(
            f"- model fallback decisions: {len(events)}, last {last.get('provider')}/{last.get('model')} "
            f"reason={last.get('reason')} status={last.get('status')} outcome={last.get('outcome')}"
        )
    if gw.get("session_pins"):
        lines.append(f"- session model pins: `{json.dumps(gw['session_pins'])}`")
    return lines


def _summarise(detail: dict[str, Any]) -> str:
    if "fault_present" in detail:
        return ("the fault is still there" if detail["fault_present"] else "re-check: the fault is gone").replace(
            "|", "/"
        )
    if "status" in detail and "remedy" in detail:
        return f"{detail['remedy']}: {detail['status']} — {detail.get('detail', '')}".replace("|", "/")
    text = ", ".join(f"{k}={v}" for k, v in detail.items() if k not in ("output_tail",))
    return text.replace("|", "/")[:300]


def write_report(loaded: LoadedConfig, incidents: IncidentStore, incident_id: int) -> Path | None:
    inc = incidents.get(incident_id)
    if inc is None:
        return None
    path = report_path(loaded.state_dir, incident_id)
    try:
        cfg = loaded.targets.get(inc.target)
        noun = kinds.kind_of(cfg.kind).noun if cfg is not None else None
        # redacted whole: a block split over lines is one secret again
        atomic_write(path, loaded.redactor.text(render(inc, noun=noun)))
    except OSError as e:  # a full disk: no report file this time, the doctor's verdict still counts
        if not is_write_failure(e):
            raise
        state_writes.failed(f"reports/{path.name}", e)
        return None
    return path
