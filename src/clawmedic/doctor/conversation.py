"""Conversation readiness: beyond /health, can the gateway answer at all?

A gateway whose process is alive and whose `/health` says 200 may still be unable to hold a conversation: its
model's key was revoked (401), its provider hangs, its quota ran out. `[targets.NAME.conversation]` (opt-in) sends
one short message through the gateway to the configured agent every `interval_s` — `openclaw agent --agent A
--session-key agent:A:clawmedic-readiness --message … --json --timeout T`, a real turn — and expects an answer
within `timeout_s`. `failures` turns in a row (default 2) without an answer open an incident ("up but cannot
answer") whose diagnosis names the reason from the gateway's own log records of that turn (`embedded_run_agent_end`,
`model_fallback_decision`, matched by its run id) and the doctor's model rules. Every failed turn wakes the gateway
check, so the model fallback (`[targets.NAME.models]`) acts on the same failure at once. While it fails the probe
asks again every `CONVERSATION_RETRY_S` (or `interval_s`, if shorter); the first answer closes the incident as
recovered, naming the model that answered.

Every state and move on one screen (`Readiness`, decisions over a clock it is given):

    unknown ──(answered)──► answering ──(no answer, fewer than `failures` in a row)──► doubtful
    doubtful ──(answered)──► answering        doubtful ──(no answer, `failures` in a row)──► failing (incident)
    failing ──(no answer)──► failing (each try on the incident's timeline) ──(answered)──► answering (recovered)

What one probe costs: OpenClaw sends its whole agent prompt with every turn (system prompt, workspace files, tool
definitions): about 15,000 input tokens and a one-word answer, measured with the loopback model stand-in
(tests/e2e/test_conversation.py). The probe's own session keeps its short history, which grows by two short
messages per probe until OpenClaw compacts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final, Literal

from clawmedic import defaults
from clawmedic.config import ConversationConfig, LoadedConfig
from clawmedic.doctor.evidence import Evidence
from clawmedic.doctor.gateway_checks import GATEWAY_RULES, MAX_TEXT, _ts
from clawmedic.doctor.report import write_report
from clawmedic.doctor.rules import Finding, diagnose
from clawmedic.process.launcher import tail_lines
from clawmedic.targets import openclaw

if TYPE_CHECKING:
    from clawmedic.supervisor import Context

log = logging.getLogger("clawmedic.conversation")

CAUSE: Final = "conversation"
LOG_TAIL_LINES: Final = 2000  # the probe's own turn was logged within its timeout: far fewer lines than this
TICK_S: Final = 1.0  # how often the plugin looks for a due probe (a comparison per target)


class Phase(StrEnum):
    UNKNOWN = "unknown"  # not probed yet (or the daemon just started)
    ANSWERING = "answering"
    DOUBTFUL = "doubtful"  # failed fewer than `failures` times in a row: asked again soon, no incident yet
    FAILING = "failing"  # an incident is open until the next answer


TRANSITIONS: Final[dict[Phase, frozenset[Phase]]] = {
    Phase.UNKNOWN: frozenset({Phase.ANSWERING, Phase.DOUBTFUL, Phase.FAILING}),
    Phase.ANSWERING: frozenset({Phase.ANSWERING, Phase.DOUBTFUL, Phase.FAILING}),
    Phase.DOUBTFUL: frozenset({Phase.DOUBTFUL, Phase.ANSWERING, Phase.FAILING}),
    Phase.FAILING: frozenset({Phase.FAILING, Phase.ANSWERING}),
}


class IllegalMove(RuntimeError):
    """A move the table does not allow: a bug in the caller."""


Verdict = Literal["ok", "doubt", "open", "still_failing", "recovered"]


class Readiness:
    """One target's probe schedule and phase. `due(now)` says when to probe, `record(answered, now)` what it means:
    `failures` turns in a row without an answer open the incident (one slow turn on a busy host is not an outage)."""

    def __init__(self, interval_s: float, failures: int = 1, retry_s: float | None = None, now: float = 0.0) -> None:
        self.interval_s = interval_s
        self.failures = failures
        self.retry_s = min(interval_s, defaults.CONVERSATION_RETRY_S) if retry_s is None else retry_s
        self.phase = Phase.UNKNOWN
        self.next_at = now  # the first probe as soon as the target is healthy
        self.failed = 0  # turns in a row without an answer
        self.failing_since: float | None = None  # the first of them
        self.changed_at: float | None = None

    def _change(self, new: Phase, now: float) -> None:
        if new not in TRANSITIONS[self.phase]:
            raise IllegalMove(f"{self.phase.value} → {new.value}")
        self.phase = new
        self.changed_at = now

    def due(self, now: float) -> bool:
        return now >= self.next_at

    def record(self, answered: bool, now: float) -> Verdict:
        was = self.phase
        if answered:
            self._change(Phase.ANSWERING, now)
            self.next_at = now + self.interval_s
            self.failed, self.failing_since = 0, None
            return "recovered" if was == Phase.FAILING else "ok"
        self.failed += 1
        self.failing_since = self.failing_since if self.failing_since is not None else now
        self.next_at = now + self.retry_s
        if was == Phase.FAILING:
            self._change(Phase.FAILING, now)
            return "still_failing"
        if self.failed < self.failures:
            self._change(Phase.DOUBTFUL, now)
            return "doubt"
        self._change(Phase.FAILING, now)
        return "open"


# --- one probe: a real turn through the gateway (bounded, never raises) ----------------------------------------------


@dataclass
class ProbeResult:
    answered: bool
    took_s: float
    reply: str = ""  # the agent's answer, cut short
    error: str = ""  # why there is none: the CLI's error, the run's status, our timeout
    run_id: str | None = None
    model: str | None = None  # "provider/model" that answered (or was asked)
    usage: dict[str, Any] = field(default_factory=dict)  # tokens the provider reported for the turn
    prompt_tokens_est: int | None = None  # OpenClaw's own estimate of the prompt it sent
    timed_out: bool = False  # no answer at all within the timeout (ours or the run's)

    def to_dict(self) -> dict[str, Any]:
        return {
            "answered": self.answered,
            "took_s": round(self.took_s, 2),
            "reply": self.reply,
            "error": self.error,
            "run_id": self.run_id,
            "model": self.model,
            "usage": self.usage,
            "prompt_tokens_est": self.prompt_tokens_est,
            "timed_out": self.timed_out,
        }


def session_key(cfg: ConversationConfig) -> str:
    """The probe's own session: never the user's main one, and one session for every probe (not 96 a day)."""
    return f"agent:{cfg.agent}:clawmedic-readiness"


def agent_args(cfg: ConversationConfig) -> list[str]:
    return [
        "agent",
        "--agent",
        cfg.agent,
        "--session-key",
        session_key(cfg),
        "--message",
        cfg.message,
        "--json",
        "--timeout",
        str(max(1, round(cfg.timeout_s))),
    ]


def parse_reply(data: object, error: str | None, took_s: float) -> ProbeResult:
    """`openclaw agent --json`'s answer → a `ProbeResult`. Answered means status "ok" with a non-empty text."""
    d = _obj(data)
    run_id = d.get("runId") if isinstance(d.get("runId"), str) else None
    result = _obj(d.get("result"))
    payloads = result.get("payloads")
    text = " ".join(str(p.get("text") or "") for p in _list(payloads) if isinstance(p, dict)).strip()
    agent = _obj(_obj(result.get("meta")).get("agentMeta"))
    model = openclaw_model(agent.get("provider"), agent.get("model"))
    usage = _obj(agent.get("usage"))
    budget = _obj(agent.get("contextBudgetStatus"))
    est = budget.get("estimatedPromptTokens")
    status = d.get("status")
    answered = error is None and status == "ok" and bool(text)
    why = ""
    if not answered:
        err = d.get("error")
        if isinstance(err, dict) and err.get("message"):
            why = str(err["message"])
        elif status and status != "ok":  # e.g. "timeout" in its "provider" phase, with OpenClaw's apology as text
            phase = d.get("timeoutPhase")
            why = (
                f"the run ended as {status}"
                + (f" in its {phase} phase" if phase else "")
                + (f": {text}" if text else "")
            )
        elif error:
            why = error
        else:
            why = "the agent answered with no text"
        text = ""
    return ProbeResult(
        answered,
        took_s,
        reply=text[:MAX_TEXT],
        error=why[:MAX_TEXT],
        run_id=run_id,
        model=model,
        usage={k: v for k, v in usage.items() if k in ("input", "output", "total") and isinstance(v, int)},
        prompt_tokens_est=est if isinstance(est, int) else None,
        timed_out=status == "timeout" or "timed out" in why.lower(),
    )


def _obj(v: object) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _list(v: object) -> list[Any]:
    return v if isinstance(v, list) else []


def openclaw_model(provider: object, model: object) -> str | None:
    if not isinstance(model, str) or not model:
        return None
    return model if "/" in model or not isinstance(provider, str) or not provider else f"{provider}/{model}"


def probe(loaded: LoadedConfig, name: str, cfg: ConversationConfig) -> ProbeResult:
    """One turn through target `name`'s running gateway; our own deadline is the turn's plus the CLI's boot."""
    t0 = time.monotonic()
    deadline = cfg.timeout_s + defaults.CONVERSATION_CLI_MARGIN_S
    r = openclaw.gateway_cli(loaded, name, agent_args(cfg), remote=False, timeout=deadline)
    took = time.monotonic() - t0
    if r.rc is None and r.data is None:  # it could not run, or our deadline passed
        timed_out = "timed out" in (r.error or "")
        error = f"no answer within {deadline:g} s" if timed_out else (r.error or "the CLI could not run")
        return ProbeResult(False, took, error=error[:MAX_TEXT], timed_out=timed_out)
    return parse_reply(r.data, r.error, took)


# --- what the gateway logged about the turn ------------------------------------------------------------------------


def turn_records(lines: list[str], run_id: str | None, since: float) -> list[dict[str, Any]]:
    """The gateway's failure records of the probe's turn: `embedded_run_agent_end` (isError) and
    `model_fallback_decision`, matched by run id (or, without one, logged after `since`)."""
    out = []
    for line in lines:
        if "embedded_run_agent_end" not in line and "model_fallback_decision" not in line:
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        obj = rec.get("1") if isinstance(rec, dict) else None
        if not isinstance(obj, dict) or obj.get("event") not in ("embedded_run_agent_end", "model_fallback_decision"):
            continue
        if obj["event"] == "embedded_run_agent_end" and not obj.get("isError"):
            continue
        meta = rec.get("_meta") if isinstance(rec.get("_meta"), dict) else {}
        at = _ts(rec.get("time") or meta.get("date"))
        if run_id is not None and obj.get("runId") != run_id:
            continue
        if run_id is None and (at is None or at < since):
            continue
        out.append(
            {
                "at": at,
                "event": obj["event"],
                "reason": obj.get("failoverReason") or obj.get("reason"),
                "status": obj.get("status"),
                "provider": obj.get("candidateProvider") or obj.get("provider") or obj.get("requestedProvider"),
                "model": obj.get("candidateModel") or obj.get("model") or obj.get("requestedModel"),
                "decision": obj.get("decision"),
                "outcome": obj.get("fallbackStepFinalOutcome"),
                "error": str(obj.get("rawErrorPreview") or obj.get("errorPreview") or obj.get("error") or "")[
                    :MAX_TEXT
                ],
            }
        )
    return out[-50:]


# The CLI's own words when the log says nothing (an older gateway, a log elsewhere): reason ← pattern
_REPLY_REASONS: Final = (
    (
        "auth",
        re.compile(r"HTTP 401|HTTP 403|authentication failed|invalid api key|disabled after a provider auth", re.I),
    ),
    ("rate_limit", re.compile(r"HTTP 429|rate.?limit|quota", re.I)),
    ("timeout", re.compile(r"timed? ?out|no answer within", re.I)),
    ("model_not_found", re.compile(r"model not found|unknown model|HTTP 404", re.I)),
)

ADVICE: Final[dict[str, str]] = {
    "auth": "the provider refuses the gateway's key: renew it (`openclaw models auth list` shows the profiles), or "
    "let `[targets.NAME.models] order` move the default to another model meanwhile.",
    "rate_limit": "the provider rate-limits or ran out of quota: wait, raise the quota, or add a fallback model "
    "(`[targets.NAME.models] order`).",
    "timeout": "the model did not answer in time: check the provider's status and the network from the gateway's "
    "host; a fallback model (`[targets.NAME.models] order`) keeps the agent answering meanwhile.",
    "model_not_found": "the configured model does not exist at the provider: fix `agents.defaults.model`.",
    "unknown": "the agent's turn failed for a reason the gateway did not name: `openclaw logs` around the incident "
    "shows the turn.",
}


def classify(result: ProbeResult, records: list[dict[str, Any]]) -> tuple[str, str | None]:
    """(reason, "provider/model") of a failed turn: the gateway's own records first, then the CLI's words."""
    for rec in reversed(records):
        if rec.get("reason"):
            return str(rec["reason"]), openclaw_model(rec.get("provider"), rec.get("model")) or result.model
    if result.timed_out:
        return "timeout", result.model
    for reason, pattern in _REPLY_REASONS:
        if pattern.search(result.error):
            return reason, result.model
    return "unknown", result.model


def finding_of(result: ProbeResult, reason: str, model: str | None, timeout_s: float) -> Finding:
    on = f" on {model}" if model else ""
    said = {
        "auth": f"the model{on} refuses the gateway's credentials",
        "rate_limit": f"the model{on} is rate-limited or out of quota",
        "timeout": f"the model{on} did not answer within {timeout_s:g} s",
        "model_not_found": f"the model{on} does not exist at its provider",
    }.get(reason, f"the agent's turn failed{on} ({reason})")
    detail = f"up but cannot answer: {said} — {result.error}" if result.error else f"up but cannot answer: {said}"
    return Finding(
        "conversation-failing",
        "the gateway is up but cannot answer",
        0.9 if reason != "unknown" else 0.6,
        detail[: 2 * MAX_TEXT],
        [],
        ADVICE.get(reason, ADVICE["unknown"]),
    )


# --- the plugin -----------------------------------------------------------------------------------------------------


class ConversationProbe:
    """The `DaemonPlugin`: probes each healthy OpenClaw target that has `[targets.NAME.conversation]`, opens and
    closes its "cannot answer" incidents, and wakes the gateway check (`on_failure`) so the model rules act now."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        run_probe: Callable[[LoadedConfig, str, ConversationConfig], ProbeResult] = probe,
        on_failure: Callable[[str], None] | None = None,
    ) -> None:
        self.clock = clock
        self.run_probe = run_probe
        self.on_failure = on_failure
        self.states: dict[str, str] = {}
        self.readiness: dict[str, Readiness] = {}
        self.configs: dict[str, ConversationConfig] = {}
        self.incidents: dict[str, int] = {}  # target -> its open "cannot answer" incident
        self.escalated: set[int] = set()  # incidents already handed to humans

    def on_event(self, event: dict[str, Any]) -> None:
        if event.get("kind") == "state" and isinstance(event.get("target"), str):
            self.states[event["target"]] = str(event.get("new", ""))

    def _targets(self, loaded: LoadedConfig) -> dict[str, ConversationConfig]:
        """The targets to probe, read from the live config (a reload adds, changes or removes them)."""
        wanted = {n: t.conversation for n, t in loaded.targets.items() if t.kind == "openclaw" and t.conversation}
        for name in [n for n in self.readiness if wanted.get(n) != self.configs.get(n)]:
            del self.readiness[name]  # removed or changed: its schedule starts again (an open incident stays)
        for name, cfg in wanted.items():
            if name not in self.readiness:
                self.readiness[name] = Readiness(cfg.interval_s, cfg.failures, now=self.clock())
                self.configs[name] = cfg
        return wanted

    async def run(self, ctx: Context) -> None:
        while True:
            for name in self._targets(ctx.loaded):
                if self.states.get(name) != "healthy" or not self.readiness[name].due(self.clock()):
                    continue
                try:
                    await self.check(ctx, name)
                except Exception as e:  # never up into the daemon
                    log.error("%s: conversation probe: internal error: %r", name, e, exc_info=e)
                    self.readiness[name].next_at = self.clock() + self.readiness[name].retry_s
            await asyncio.sleep(TICK_S)

    async def check(self, ctx: Context, name: str) -> Verdict:
        """One probe of one target, and what follows from it."""
        loaded = ctx.loaded
        cfg = self.configs[name]
        started = self.clock()
        result = await asyncio.to_thread(self.run_probe, loaded, name, cfg)
        now = self.clock()
        records: list[dict[str, Any]] = []
        reason: str | None = None
        model = result.model
        if not result.answered:
            log_file = loaded.targets[name].log_file
            if log_file is not None:
                lines = await asyncio.to_thread(tail_lines, log_file, LOG_TAIL_LINES)
                records = turn_records(lines, result.run_id, started - 1)
            reason, model = classify(result, records)
        verdict = self.readiness[name].record(result.answered, now)
        ctx.events.emit(
            "conversation_probe",
            name,
            answered=result.answered,
            took_s=round(result.took_s, 2),
            model=model,
            reason=reason,
            error=result.error or None,
            usage=result.usage,
            prompt_tokens_est=result.prompt_tokens_est,
        )
        if verdict == "open":
            self._open(ctx, name, cfg, result, reason or "unknown", model, records)
        elif verdict == "still_failing" and name in self.incidents:
            inc = self.incidents[name]
            ctx.incidents.add(
                inc,
                "verify",
                {"answered": False, "reason": reason, "model": model, "error": result.error},
                duration_s=result.took_s,
            )
            if inc not in self.escalated:  # the model rules had their chance: a human is needed
                self._escalate(
                    ctx, name, inc, f"still no answer after {now - started:.0f} s ({reason}): {result.error}"
                )
        elif verdict == "recovered":
            self._recovered(ctx, name, result)
        if not result.answered and self.on_failure is not None:
            self.on_failure(name)  # the model rules act on the same failure now, not at the next gateway check
        return verdict

    def _open(
        self,
        ctx: Context,
        name: str,
        cfg: ConversationConfig,
        result: ProbeResult,
        reason: str,
        model: str | None,
        records: list[dict[str, Any]],
    ) -> None:
        now = self.clock()
        finding = finding_of(result, reason, model, cfg.timeout_s)
        # the doctor's own model rules over the turn's records ("model-failures" names pins on the failing model)
        gateway = {"model_events": [r for r in records if r["event"] == "model_fallback_decision"]}
        model_findings = [f for f in diagnose(Evidence(name, cause=CAUSE, gateway=gateway)) if f.rule in GATEWAY_RULES]
        inc = ctx.incidents.open(name, f"conversation probe: {finding.detail}", now, now)
        ctx.incidents.update(inc, cause=CAUSE)
        ctx.incidents.add(
            inc,
            "evidence",
            {"probe": result.to_dict(), "agent": cfg.agent, "session": session_key(cfg), "gateway_records": records},
            duration_s=result.took_s,
        )
        ctx.incidents.add(
            inc,
            "diagnosis",
            {
                "signature": f"cause={CAUSE}|reason={reason}",
                "findings": [finding.to_dict(), *(f.to_dict() for f in model_findings)],
            },
        )
        self.incidents[name] = inc
        ctx.events.emit(
            "gateway_fault", name, incident=inc, rule=finding.rule, reason=reason, model=model, detail=finding.detail
        )
        log.warning("%s: %s (incident #%d)", name, finding.detail, inc)
        if ctx.loaded.targets[name].models is None:  # no model fallback can heal it: tell a human now
            self._escalate(ctx, name, inc, f"no model fallback is configured ([targets.{name}.models]); {reason}")

    def _escalate(self, ctx: Context, name: str, inc: int, why: str) -> None:
        self.escalated.add(inc)
        ctx.incidents.update(inc, status="escalated")
        ctx.incidents.add(
            inc, "verdict", {"healed": False, "summary": f"the agent cannot answer — needs a human: {why}"}
        )
        ctx.events.emit(
            "gateway_fault_escalated", name, incident=inc, rule="conversation-failing", status="escalated", why=why
        )
        log.warning("%s: incident #%d escalated: %s", name, inc, why)

    def _recovered(self, ctx: Context, name: str, result: ProbeResult) -> None:
        inc = self.incidents.pop(name, None)
        if inc is None:
            return
        self.escalated.discard(inc)
        now = self.clock()
        on = f" on {result.model}" if result.model else ""
        summary = f"the agent answers again{on} ({result.took_s:.1f} s)"
        ctx.incidents.add(inc, "verify", {"answered": True, "model": result.model}, duration_s=result.took_s)
        ctx.incidents.add(inc, "verdict", {"healed": True, "summary": summary})
        ctx.incidents.update(inc, status="recovered", live_at=now, closed_at=now)
        ctx.events.emit("gateway_fault_resolved", name, incident=inc, rule="conversation-failing", outcome="recovered")
        log.info("%s: incident #%d recovered: %s", name, inc, summary)
        with contextlib.suppress(OSError):
            write_report(ctx.loaded, ctx.incidents, inc)


def plugin_for(loaded: LoadedConfig, on_failure: Callable[[str], None] | None = None) -> ConversationProbe | None:
    """The probe, or None when no target is an OpenClaw gateway. It reads `[targets.NAME.conversation]` from the
    live config at every tick, so a reload turns it on or off per target; idle, it costs one comparison a second."""
    if not any(t.kind == "openclaw" for t in loaded.targets.values()):
        return None
    return ConversationProbe(on_failure=on_failure)
