"""The rule-based doctor: evidence → all matching diagnoses → guarded remedies → a verdict, a report, a learning.

The verdict is not the doctor's claim: after remedies it answers "healed" only in the sense of "worth a relaunch";
the ladder relaunches and its probation decides. If the fault returns, the ladder escalates the same incident again
and the doctor runs the next plan (remedies already tried for this incident are not repeated); when no plan is left,
the incident goes to humans with the report.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from clawmedic import defaults
from clawmedic.config import LoadedConfig
from clawmedic.doctor import Escalation, Verdict
from clawmedic.doctor.evidence import Evidence, collect
from clawmedic.doctor.learnings import LearningStore
from clawmedic.doctor.llm.agent import Consultation
from clawmedic.doctor.llm.backends import backend_name
from clawmedic.doctor.llm.run import consult_in_child
from clawmedic.doctor.remedies import REMEDIES, Guard, Outcome, Policy, RemedyContext, Status
from clawmedic.doctor.report import write_report
from clawmedic.doctor.rules import CAUSE, Finding, RemedyCall, causes, diagnose, near_misses, signature
from clawmedic.knowngood_client import KnownGoodClient
from clawmedic.store.incidents import IncidentStore

log = logging.getLogger("clawmedic")

# The doctor's seams, each replaceable by a test (tests/helpers/fakes.py): what it reads from the machine, what it
# changes on it, the LLM doctor's child process, the report on disk, and the clock it measures with.
Collector = Callable[..., Evidence]  # `evidence.collect(loaded, target, *, cause=..., ...)`
RemedyRunner = Callable[[RemedyContext, str, dict[str, Any]], Outcome]  # `Guard.run`: the policy, then the remedy
Consulter = Callable[..., Awaitable[Consultation]]  # `consult_in_child(loaded, target, payload, *, on_record=...)`
Reporter = Callable[[LoadedConfig, IncidentStore, int], object]  # `report.write_report`


class RuleDoctor:
    def __init__(
        self,
        loaded: LoadedConfig,
        incidents: IncidentStore,
        known_good: KnownGoodClient,
        learnings: LearningStore,
        policy: Policy,
        *,
        collector: Collector = collect,
        run_remedy: RemedyRunner | None = None,
        consult: Consulter = consult_in_child,
        report: Reporter = write_report,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.loaded = loaded
        self.incidents = incidents
        self.known_good = known_good
        self.learnings = learnings
        self.guard = Guard(policy)
        self._collect = collector
        self._run_remedy = run_remedy or self.guard.run
        self._consult_child = consult
        self._write_report = report
        self._clock = clock
        self._attempted: dict[int, set[str]] = {}
        self._pending: dict[int, tuple[str, list[str], str]] = {}  # incident -> (signature, remedies, summary)
        self._tried: dict[int, list[dict[str, Any]]] = {}  # incident -> every remedy outcome so far
        self._consulted: dict[int, int] = {}  # incident -> LLM consultations so far

    async def treat(self, esc: Escalation) -> Verdict:
        t0 = self._clock()
        last_exit = esc.evidence.get("last_exit")
        pid = esc.evidence.get("pid")
        config = esc.evidence.get("config")  # the supervisor validated the current file already
        healthy = esc.evidence.get("last_healthy_at")
        incident = self.incidents.get(esc.incident_id)
        ev = await asyncio.to_thread(
            self._collect,
            self.loaded,
            esc.target,
            cause=esc.cause,
            reason=esc.reason,
            last_exit=last_exit if isinstance(last_exit, dict) else None,
            pid=pid if isinstance(pid, int) else None,
            config=config if isinstance(config, dict) else None,
            since=self._window_start(esc.incident_id),
            first_failure_at=incident.first_failure_at if incident is not None else None,
            last_healthy_at=healthy if isinstance(healthy, int | float) else None,
        )
        collected = self._clock() - t0
        findings = diagnose(ev)
        sig = signature(ev, findings)
        inc = esc.incident_id
        self.incidents.add(inc, "evidence", {**ev.to_dict(), "collect_s": round(collected, 2)})
        self.incidents.add(inc, "diagnosis", {"signature": sig, "findings": [f.to_dict() for f in findings]})
        for f in findings:
            log.warning("%s: diagnosis %s (%.0f%%): %s", esc.target, f.rule, f.confidence * 100, f.detail)
        attempted = self._attempted.setdefault(inc, set())
        calls = self._plan(sig, findings, attempted)
        ctx = RemedyContext(self.loaded, esc.target, self.known_good)
        outcomes: list[Outcome] = []
        for call in calls:
            attempted.add(call.key)
            outcome = await asyncio.to_thread(self._run_remedy, ctx, call.remedy, call.params)
            outcomes.append(outcome)
            self.incidents.add(inc, "remedy", outcome.to_dict(), duration_s=outcome.took_s)
            log.warning("%s: remedy %s: %s — %s", esc.target, call.remedy, outcome.status.value, outcome.detail)
        tried = self._tried.setdefault(inc, [])
        tried += [o.to_dict() for o in outcomes]
        applied = [o for o in outcomes if o.status == Status.OK]
        remedy_s = sum(o.took_s for o in outcomes)
        summary = "; ".join(f.title for f in causes(findings)) or "no known fault matched the evidence"
        llm_note = ""
        if not applied and self._should_consult(inc, findings, calls, outcomes):
            t_llm = self._clock()
            near = near_misses(ev, findings)
            consultation = await self._consult(esc, ev.to_dict(), [f.to_dict() for f in findings], tried, near)
            remedy_s += self._clock() - t_llm  # the model's time (its process included) is the remedy's
            llm_calls = [RemedyCall(r["remedy"], r.get("params") or {}) for r in consultation.remedies]
            for r in consultation.remedies:
                attempted.add(RemedyCall(r["remedy"], r.get("params") or {}).key)
                outcomes.append(Outcome(r["remedy"], Status(r["status"]), r["detail"], r.get("params") or {}))
            tried += consultation.remedies
            applied = [o for o in outcomes if o.status == Status.OK]
            calls = [*calls, *llm_calls]
            llm_note = _llm_note(consultation)
            summary = f"{summary}; {llm_note}" if findings else llm_note
        total = self._clock() - t0
        verdict_detail: dict[str, Any] = {
            "healed": bool(applied),
            "remedies": [o.remedy for o in applied],
            "took_s": round(total, 3),
            "doctor_overhead_s": round(total - remedy_s, 3),
            "signature": sig,
        }
        if applied:
            self._pending[inc] = (sig, [c.key for c in calls if any(o.remedy == c.remedy for o in applied)], summary)
            restart = any(REMEDIES[o.remedy].restarts_target for o in applied if o.remedy in REMEDIES)
            then = "relaunching to verify" if restart else "verifying it in place"
            verdict = Verdict(True, f"{summary}: applied {', '.join(o.remedy for o in applied)}; {then}", restart)
        else:
            not_run = [f"{o.remedy} ({o.status.value}: {o.detail})" for o in outcomes]
            why = "; ".join(not_run) if not_run else "no remedy left to try" if findings else "no rule matched"
            verdict = Verdict(False, f"{summary} — needs a human: {why}")
            if inc in self._pending:
                sig0, remedies, summ = self._pending.pop(inc)
                self.learnings.record(sig0, remedies, False, inc, summ)
        self.incidents.add(inc, "verdict", {**verdict_detail, "summary": verdict.summary})
        await asyncio.to_thread(self._write_report, self.loaded, self.incidents, inc)
        return verdict

    def _window_start(self, inc: int) -> float | None:
        """The incident's window opens with the launch that failed first: at most a startup before the first
        failure. What the gateway logged before belongs to an earlier life (an old breaker, an old crash)."""
        incident = self.incidents.get(inc)
        return None if incident is None else incident.first_failure_at - defaults.EVIDENCE_LEAD_S

    def _should_consult(
        self, inc: int, findings: list[Finding], calls: list[RemedyCall], outcomes: list[Outcome]
    ) -> bool:
        """The LLM doctor is for what the rules cannot do: no rule explains the incident, or the rules' planned
        remedies failed (this round, or they were spent in an earlier round and the fault came back). A remedy
        that needs approval, or a finding with no remedy at all (a full disk, an old Node), is for humans."""
        cfg = self.loaded.config.daemon.doctor.llm
        if self._consulted.get(inc, 0) >= defaults.LLM_CONSULTATIONS_PER_INCIDENT or backend_name(cfg) is None:
            return False
        if not any(f.kind == CAUSE for f in findings):
            return True  # no rule explains it (a symptom such as the breaker is no explanation)
        if any(o.status == Status.FAILED for o in outcomes):
            return True
        return not calls and any(f.plan for f in findings)

    async def _consult(
        self,
        esc: Escalation,
        evidence: dict[str, Any],
        findings: list[dict[str, Any]],
        tried: list[dict[str, Any]],
        near: list[dict[str, str]],
    ) -> Consultation:
        inc = esc.incident_id
        self._consulted[inc] = self._consulted.get(inc, 0) + 1
        log.warning("%s: consulting the LLM doctor for incident #%d", esc.target, inc)

        def record(kind: str, detail: dict[str, Any]) -> None:
            self.incidents.add(inc, kind, detail)

        payload = {"evidence": evidence, "findings": findings, "tried": tried, "near_misses": near}
        result = await self._consult_child(self.loaded, esc.target, payload, on_record=record)
        for r in result.remedies:
            self.incidents.add(inc, "remedy", {**r, "by": "llm"}, duration_s=r.get("took_s"))
        log.warning("%s: LLM doctor %s: %s", esc.target, result.ended, result.conclusion or result.error or "")
        return result

    def _plan(self, sig: str, findings: list[Any], attempted: set[str]) -> list[RemedyCall]:
        calls: list[RemedyCall] = [c for f in findings for c in f.plan]
        proven = self.learnings.proven(sig)
        planned = {c.key for c in calls}
        calls += [RemedyCall(k) for k in proven if k not in planned and ":" not in k]  # learned from the LLM doctor
        calls.sort(key=lambda c: proven.index(c.key) if c.key in proven else len(proven))  # proven remedies first
        seen: set[str] = set()
        out = []
        for c in calls:
            if c.key not in attempted and c.key not in seen:
                seen.add(c.key)
                out.append(c)
        return out

    def on_event(self, event: dict[str, Any]) -> None:
        """Learn from the ladder's verdict on our remedies (the incident closed healed), and keep the report of an
        incident the doctor saw in step with its end (recovered, or gave up)."""
        inc = event.get("incident")
        kind = event.get("kind")
        if not isinstance(inc, int) or kind not in ("incident_closed", "gave_up") or inc not in self._attempted:
            return
        if kind == "incident_closed":
            if event.get("outcome") == "recovered" and inc in self._pending:
                sig, remedies, summary = self._pending.pop(inc)
                self.learnings.record(sig, remedies, True, inc, summary)
            for book in (self._attempted, self._tried, self._consulted, self._pending):
                book.pop(inc, None)
        try:
            self._write_report(self.loaded, self.incidents, inc)
        except OSError as e:
            log.warning("cannot write the report of incident #%d: %s", inc, e)


def _llm_note(c: Consultation) -> str:
    if c.ended == "unavailable":
        return f"LLM doctor unavailable: {c.error}"
    if c.ended in ("backend_failed", "time_budget") and not c.remedies:
        return f"LLM doctor ({c.backend}) failed: {c.error or c.ended}"
    said = c.conclusion or "no conclusion"
    why = f"; no remedy fits: {c.none_fits}" if c.none_fits and not c.remedies else ""
    return f"LLM doctor ({c.backend}): {said}" + (f" [{c.fault}]" if c.fault else "") + why


def reports_dir(state_dir: Path) -> Path:
    return state_dir / "reports"
