"""The bounded agent loop: redacted evidence in, tool calls through the guard, a conclusion out.

Bounds (STYLE §5): a step limit, no tools offered on the last step, a time budget, per-tool output caps with a
visible truncation notice, repeated identical calls refused. Every request is redacted at the boundary, just
before it leaves for the backend, whatever was put in the transcript. Every message and tool call is handed to
`record` as it happens, so the incident keeps the whole conversation even if the loop is cut short.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from clawmedic.config import LlmConfig
from clawmedic.doctor.llm.tools import FAULTS, FINISH, READ_TOOLS, FinishParams, ToolEnv, schema
from clawmedic.doctor.llm.types import Backend, BackendFailed, Message, ToolSpec
from clawmedic.doctor.remedies import REMEDIES, Policy, Status
from clawmedic.redact import Redactor

Record = Callable[[str, dict[str, Any]], None]

SYSTEM_PROMPT = """You are the doctor of clawmedic, a supervisor that keeps an OpenClaw gateway (a Node.js AI \
gateway) alive from outside. The gateway is down or failing and the automatic restarts did not fix it. Find the \
root cause from the evidence and repair it with the declared remedies.
- Read the evidence first; call a read-only tool only when the evidence does not already answer.
- Call one tool per turn. A remedy changes the machine: choose the one that fixes the root cause.
- Every remedy is checked by a guard. A refused remedy will not run: do not ask for it again.
- Decide on a remedy before you finish: call the remedy that fixes the root cause, or, when none fits, say why \
in finish's `none_fits`.
- When the repair is done, or nothing more can be done safely, call `finish` with your diagnosis and the fault.
Known faults: """ + ", ".join(FAULTS)

DECISION_REFUSAL = (
    "refused: no remedy decision yet. Call the remedy that fixes the root cause, or call finish again with "
    "`none_fits` saying why no remedy fits."
)

LAST_STEP_PROMPT = (
    "This is your last turn and no tools are available. Reply with your conclusion in two or three sentences: "
    "the root cause, what was done, and what a human should do next."
)


@dataclass(frozen=True)
class Limits:
    max_steps: int
    time_budget_s: float
    request_timeout_s: float
    tool_output_max_chars: int

    @classmethod
    def of(cls, cfg: LlmConfig) -> Limits:
        """The bounds `[daemon.doctor.llm]` sets."""
        return cls(cfg.max_steps, cfg.time_budget_s, cfg.request_timeout_s, cfg.tool_output_max_chars)


@dataclass
class ToolRecord:
    step: int
    name: str
    arguments: dict[str, Any]
    status: str  # "ok" for a read-only tool, the remedy's Outcome status, or "refused"
    result: str
    truncated: bool = False


@dataclass
class Consultation:
    """The loop's result, as data: what the model concluded and what it did, and why the loop ended."""

    backend: str
    ended: str  # "finished" | "concluded" | "step_limit" | "time_budget" | "backend_failed"
    conclusion: str = ""
    fault: str | None = None
    none_fits: str | None = None  # the model's reason that no remedy fits, when it ran none
    decision_asked: bool = False  # a finish without a remedy decision was refused once (one corrective turn)
    steps: int = 0
    tools: list[ToolRecord] = field(default_factory=list)
    remedies: list[dict[str, Any]] = field(default_factory=list)  # Outcome dicts, in order
    error: str | None = None
    took_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def applied(self) -> list[str]:
        return [r["remedy"] for r in self.remedies if r["status"] == Status.OK.value]


def tool_specs(policy: Policy | None = None) -> list[ToolSpec]:
    """The read-only tools, the declared remedies for a gateway that is down that the policy lets run (the risk
    class in each description), and `finish`. A remedy the guard would refuse for its class is not offered: a
    small model told "needs approval" asks again instead of moving on. The guard still checks every call."""
    specs = [ToolSpec(t.name, t.description, schema(t.params)) for t in READ_TOOLS.values()]
    specs += [
        ToolSpec(r.name, f"{r.description} [remedy, risk: {r.risk.value}]", schema(r.params))
        for r in REMEDIES.values()
        if not r.needs_running_gateway
        and (policy is None or (r.risk in policy.allowed and (policy.allow_kill_foreign or not r.signals_foreign)))
    ]
    specs.append(ToolSpec(FINISH, "Conclude: the diagnosis and which known fault it is", schema(FinishParams)))
    return specs


def evidence_prompt(
    evidence: dict[str, Any],
    findings: list[dict[str, Any]],
    tried: list[dict[str, Any]],
    near_misses: list[dict[str, Any]] | None = None,
) -> str:
    """The first user message: a compact rendering of the (already redacted) evidence, what the rules found and
    the rules that almost matched (`rules.near_misses`), each with why not."""
    ev = evidence
    lines = [f"Target {ev.get('target')!r}: {ev.get('reason') or ev.get('cause')}"]
    keys = (
        ("last_exit", "last exit"),
        ("process", "process"),
        ("config", "config validation"),
        ("port_owner", "port owner"),
        ("deps_problems", "missing packages"),
        ("node", "node"),
        ("state_db", "state database"),
        ("duplicates", "other gateways on the same HOME"),
        ("stability_bundles", "stability bundles"),
        ("errors", "collectors that could not tell"),
    )
    for key, label in keys:
        if ev.get(key):
            lines.append(f"- {label}: {json.dumps(ev[key])[:600]}")
    if "known_good" in ev:
        kg = ev.get("known_good")
        differs = " (the current config differs from it)" if ev.get("config_differs_from_known_good") else ""
        lines.append(f"- known-good config snapshot: {'yes' + differs if kg else 'none'}")
    changes = ev.get("changes") or []
    if changes:
        lines += ["", "What changed since the last healthy state (each with when):"]
        for c in changes[:8]:
            revert = f" [reverted by {c.get('remedy')}]" if c.get("reversible") and c.get("remedy") else ""
            lines.append(f"- {c.get('what')}: {c.get('summary')} ({c.get('when')}){revert}")
        lines.append("")
    if ev.get("disk_free_mb") is not None:
        lines.append(f"- free disk: {ev['disk_free_mb']} MB")
    if ev.get("lint_findings"):
        lint = [f"{f.get('severity')}: {f.get('message')}" for f in ev["lint_findings"][:5]]
        lines.append("- openclaw doctor --lint: " + "; ".join(lint))
    tail = [str(x) for x in ev.get("output_tail") or []][-15:]
    if tail:
        lines += ["", "Gateway output (last lines):", *tail]
    events = [f"{e.get('level')} {e.get('message')}" for e in (ev.get("log_events") or [])][-8:]
    if events:
        lines += ["", "Gateway log (warnings/errors):", *events]
    if findings:
        lines += ["", "The rules found: " + "; ".join(f"{f['rule']} ({f['detail']})" for f in findings)]
    if near_misses:
        lines += ["", "Rules that almost matched, and why they did not:"]
        lines += [f"- {n.get('rule')} ({n.get('title')}): {n.get('why_not')}" for n in near_misses[:8]]
    if tried:
        lines.append("Already tried: " + "; ".join(f"{o['remedy']} → {o['status']}: {o['detail']}" for o in tried))
    return "\n".join(lines)


def _cap(text: str, limit: int) -> tuple[str, bool]:
    if len(text) <= limit:
        return text, False
    notice = f"\n[truncated by clawmedic: {limit} of {len(text)} characters shown; ask for less]"
    return text[:limit] + notice, True


def consult(
    backend: Backend,
    tools: ToolEnv,
    prompt: str,
    limits: Limits,
    redactor: Redactor,
    *,
    record: Record | None = None,
    clock: Callable[[], float] = time.monotonic,
    policy: Policy | None = None,
) -> Consultation:
    """Run the loop until the model finishes, answers in text, or a bound is hit. Never raises for the model's
    or the backend's faults: they end the loop and are part of the result."""
    emit = record or (lambda _kind, _detail: None)
    t0 = clock()
    deadline = t0 + limits.time_budget_s
    specs = tool_specs(policy)
    offered = {s.name for s in specs}
    messages: list[Message] = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": redactor.text(prompt)},
    ]
    for m in messages:
        emit("llm_message", m)
    result = Consultation(backend.name, "step_limit")
    seen: set[str] = set()
    for step in range(1, limits.max_steps + 1):
        remaining = deadline - clock()
        if remaining <= 0:
            result.ended = "time_budget"
            break
        last = step == limits.max_steps
        if last:
            messages.append({"role": "user", "content": LAST_STEP_PROMPT})
            emit("llm_message", messages[-1])
        request: list[Message] = redactor.data(messages)  # the boundary: nothing unredacted leaves
        result.steps = step
        try:
            reply = backend.complete(request, [] if last else specs, timeout_s=min(limits.request_timeout_s, remaining))
        except BackendFailed as e:
            result.ended, result.error = "backend_failed", str(e)
            emit("llm_error", {"step": step, "error": str(e)})
            break
        calls = [] if last else reply.tool_calls  # on the last step no tool is run, whatever the model says
        assistant: Message = {
            "role": "assistant",
            "content": redactor.text(reply.text),
            "tool_calls": [{"id": c.id, "name": c.name, "arguments": redactor.data(c.arguments)} for c in calls],
        }
        messages.append(assistant)
        emit("llm_message", {**assistant, "step": step, "usage": reply.usage})
        if not calls:
            result.ended, result.conclusion = "concluded", reply.text.strip()
            break
        finished = False
        for call in calls:
            rec = _run_call(call.name, call.arguments, step, offered, seen, tools, limits, result)
            if call.name == FINISH and rec.status == "ok":
                finished = True
            result.tools.append(rec)
            emit("llm_tool", asdict(rec))
            tool_msg: Message = {"role": "tool", "tool_call_id": call.id, "name": call.name, "content": rec.result}
            messages.append(redactor.data(tool_msg))
        if finished:
            result.ended = "finished"
            break
        if clock() >= deadline:
            result.ended = "time_budget"
            break
    result.took_s = round(clock() - t0, 3)
    emit("llm_conclusion", {k: v for k, v in result.to_dict().items() if k not in ("tools",)})
    return result


def _run_call(
    name: str,
    arguments: dict[str, Any],
    step: int,
    offered: set[str],
    seen: set[str],
    tools: ToolEnv,
    limits: Limits,
    result: Consultation,
) -> ToolRecord:
    key = name + json.dumps(arguments, sort_keys=True, default=str)
    if name not in offered:
        return ToolRecord(step, name, arguments, "refused", f"refused: {name!r} is not one of the tools offered")
    if key in seen:
        return ToolRecord(
            step, name, arguments, "refused", "refused: the same call was already made; its result is above"
        )
    seen.add(key)
    if name == FINISH:
        try:
            params = FinishParams.model_validate(arguments)
        except ValueError as e:
            return ToolRecord(step, name, arguments, "refused", f"refused: bad arguments for finish: {e}")
        decided = any(t.name in REMEDIES for t in result.tools) or bool((params.none_fits or "").strip())
        if not decided and not result.decision_asked:
            result.decision_asked = True  # one corrective turn; the same finish is accepted after it
            seen.discard(key)
            return ToolRecord(step, name, arguments, "refused", DECISION_REFUSAL)
        result.none_fits = (params.none_fits or "").strip() or None
        result.conclusion = params.diagnosis
        result.fault = params.fault if params.fault in FAULTS else "other"
        return ToolRecord(step, name, arguments, "ok", "noted")
    out = tools.call(name, arguments)
    text, truncated = _cap(out.text, limits.tool_output_max_chars)
    status = out.outcome.status.value if out.outcome is not None else "ok"
    if out.text.startswith("refused:"):
        status = "refused"
    if out.outcome is not None:
        result.remedies.append(out.outcome.to_dict())
    return ToolRecord(step, name, arguments, status, text, truncated)
