"""Diagnosis rules, declared: an id, what evidence they match, a confidence, the remedy plan, advice.

Rules are pure functions of `Evidence` (unit-tested over recorded fixtures). `diagnose()` returns every rule
that matches, not the first: a broken config and a wiped dependency can be present at once. They cover every row
of the fault matrix in shared/openclaw/FACTS.md.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from clawmedic import defaults
from clawmedic.doctor.changes import before_failure
from clawmedic.doctor.evidence import Evidence
from clawmedic.targets import kinds, openclaw
from clawmedic.text import clip

CAUSE = "cause"
SYMPTOM = "symptom"


@dataclass(frozen=True)
class RemedyCall:
    remedy: str
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.remedy + "".join(f":{k}={v}" for k, v in sorted(self.params.items()))


@dataclass(frozen=True)
class Finding:
    rule: str
    title: str
    confidence: float
    detail: str
    plan: list[RemedyCall]
    advice: str
    kind: str = CAUSE

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "title": self.title,
            "confidence": self.confidence,
            "detail": self.detail,
            "plan": [{"remedy": c.remedy, "params": c.params} for c in self.plan],
            "advice": self.advice,
            "kind": self.kind,
        }


@dataclass(frozen=True)
class Rule:
    id: str
    title: str
    confidence: float
    matches: Callable[[Evidence], str | None]  # the finding's detail, or None
    plan: Callable[[Evidence], list[RemedyCall]]
    advice: str
    kind: str = CAUSE  # SYMPTOM: a consequence, recorded but never the diagnosis while a cause is found
    fallback: bool = False  # matches only when no other cause does (an unexplained refusal, say)
    # also checked on a running, healthy gateway by doctor/gateway_checks.py (faults that do not take it down)
    gateway_check: bool = False
    near: Callable[[Evidence], str | None] | None = None  # why it almost matched (for the LLM doctor), or None


def _exit_code(ev: Evidence) -> int | None:
    code = (ev.last_exit or {}).get("code")
    return code if isinstance(code, int) else None


def _search(ev: Evidence, pattern: str) -> str | None:
    m = re.search(pattern, ev.text())
    if m is None:
        return None
    line = next((ln for ln in ev.text().splitlines() if m.group(0) in ln), m.group(0))
    return clip(line.strip(), 300)


# --- matchers ---------------------------------------------------------------------------------------------------


def _config_invalid(ev: Evidence) -> str | None:
    if ev.config is None or ev.config.get("valid", True):
        return None
    issues = "; ".join(ev.config.get("issues", [])) or str(ev.config.get("stage"))
    return f"openclaw.json is invalid ({ev.config.get('stage')}): {issues}"


def _config_plan(ev: Evidence) -> list[RemedyCall]:
    if ev.known_good:
        return [RemedyCall("restore_known_good")]
    issues = " ".join((ev.config or {}).get("issues", []))
    if "Unrecognized key" in issues:
        return [RemedyCall("openclaw_doctor_fix")]  # FACTS: doctor --fix strips unknown keys
    return []


def _last_words(ev: Evidence) -> str:
    """What the gateway said last (this launch), for a finding's detail."""
    return next((clip(ln.strip(), 200) for ln in reversed(ev.output_tail) if ln.strip()), "")


def _config_blocked(ev: Evidence) -> str | None:
    """Exit 78 with a valid config that did not change (the change rule takes the ones that did), whatever words
    the gateway used; a fallback: only when no other cause (a lock, a database, a package) explains the exit."""
    if _exit_code(ev) != 78 or (ev.config or {}).get("valid") is False or reversible_changes(ev):
        return None
    said = _last_words(ev)
    return "the gateway refused to start (exit 78)" + (f": {said}" if said else "")


def _failing(ev: Evidence) -> bool:
    """The target is down or failing: an incident, or `diagnose` of a gateway that exited and is not running."""
    if ev.cause not in ("", "diagnose", "gateway_check"):
        return True
    return ev.cause == "diagnose" and not ev.process.get("alive") and _exit_code(ev) not in (None, 0)


def reversible_changes(ev: Evidence) -> list[dict[str, Any]]:
    """Recorded changes a remedy can revert (config or a boot file against known-good) that came before the
    failures began."""
    return [
        c
        for c in ev.changes
        if c.get("reversible") and c.get("what") in ("config", "boot_file") and before_failure(c, ev.first_failure_at)
    ]


def _changed(ev: Evidence) -> str | None:
    """The change rule: the failures began after a reversible change. Whatever words the gateway used to refuse
    (or none: a boot that never answers), and whether the config validates or not."""
    found = reversible_changes(ev) if _failing(ev) else []
    if not found:
        return None
    said = _last_words(ev)
    return "; ".join(f"{c.get('summary')} ({c.get('when')})" for c in found) + (
        f"; the gateway said: {said}" if said else ""
    )


def _missing_dependency(ev: Evidence) -> str | None:
    if ev.deps_problems:
        return "missing or broken packages: " + ", ".join(
            f"{p.get('package')} ({p.get('kind')})" for p in ev.deps_problems[:10]
        )
    return _search(ev, r"Cannot find (?:module|package) '[^']+'|ERR_MODULE_NOT_FOUND")


def _port_foreign(ev: Evidence) -> str | None:
    o = ev.port_owner
    if not o or o.get("ours") or o.get("stale_gateway"):
        return None
    return f"port {o.get('port')} is held by pid {o.get('pid')} ({o.get('cmdline')}), a process clawmedic did not start"


def _port_stale(ev: Evidence) -> str | None:
    o = ev.port_owner
    if not o or not o.get("stale_gateway"):
        return None
    return f"port {o.get('port')} is held by a stale gateway of this target: pid {o.get('pid')}"


def _duplicate(ev: Evidence) -> str | None:
    said = _search(ev, r"StateDatabaseCoordinatorContentionError[^\n]*|another OpenClaw process owns[^\n]*")
    if ev.duplicates:
        pids = ", ".join(str(d.get("pid")) for d in ev.duplicates)
        return f"another gateway runs on the same state directory (pid {pids})" + (f": {said}" if said else "")
    return f"{said} (the other process was not found)" if said else None


def _state_db(ev: Evidence) -> str | None:
    if ev.state_db.get("ok") is False:
        return f"the state database cannot be read: {ev.state_db.get('error')}"
    return _search(ev, r"file is not a database|database disk image is malformed")


def _node(ev: Evidence) -> str | None:
    if ev.node.get("satisfied") is False:
        return f"Node {ev.node.get('version')} does not satisfy openclaw's engines {ev.node.get('engines')!r}"
    said = _search(ev, r"openclaw: Node \d+\.\d+\.\d+: [^\n]*")  # the gateway's own refusal at boot
    return f"the gateway refuses its Node: {said}" if said else None


def _disk(ev: Evidence) -> str | None:
    where = f" ({ev.disk_path})" if ev.disk_path else ""
    if ev.disk_free_mb is not None:
        low = (
            defaults.LOW_DISK_MB
            if ev.disk_total_mb is None
            else min(defaults.LOW_DISK_MB, defaults.LOW_DISK_FRACTION * ev.disk_total_mb)
        )
        if ev.disk_free_mb < low:
            return f"only {ev.disk_free_mb:.1f} MB free on the gateway's disk{where}"
    said = _search(ev, r"database or disk is full[^\n]*|ENOSPC[^\n]*|no space left on device[^\n]*")
    return f"the gateway reports a full disk{where}: {said}" if said else None


def _breaker(ev: Evidence) -> str | None:
    """The breaker is active for its window only; its bundle stays on disk long after, so an old one means nothing."""
    pattern = re.compile(r"restart-loop breaker tripped[^\n]*")
    said = next((m.group(0) for ln in ev.output_tail if (m := pattern.search(ln))), None)  # by this very launch
    if said:
        return said.strip()
    for e in reversed(ev.current_log_events()):
        m = pattern.search(str(e.get("message", "")))
        at, now = e.get("at"), ev.collected_at
        age = now - at if isinstance(at, int | float) and now is not None else None
        if m is not None and (age is None or age <= defaults.BREAKER_WINDOW_S):
            return m.group(0).strip() + (f" (logged {age:.0f} s ago)" if age is not None else "")
    if ev.breaker_age_s is not None and ev.breaker_age_s <= defaults.BREAKER_WINDOW_S:
        bundle = next((b for b in reversed(ev.stability_bundles) if "crash_loop_breaker" in b), "")
        return f"crash-loop breaker bundle {bundle} written {ev.breaker_age_s:.0f} s ago"
    return None


# --- a running gateway's own state (`ev.gateway`, read by doctor/gateway_checks.py) --------------------------------


def failing_channels(ev: Evidence) -> dict[str, str]:
    """Channel id -> why it counts as down: named in /ready's failing[], or every account stopped with an error."""
    out: dict[str, str] = {}
    for name in (ev.gateway.get("ready") or {}).get("failing") or []:
        if isinstance(name, str) and not openclaw.is_ready_internal(name):
            out[name] = "/ready fails on it"
    for ch, accounts in (ev.gateway.get("channels") or {}).items():
        if accounts and all(not a.get("running") and a.get("last_error") for a in accounts):
            out.setdefault(ch, f"not running: {accounts[0].get('last_error')}")
    return out


def failing_cron_jobs(ev: Evidence) -> list[dict[str, Any]]:
    """Enabled jobs whose last runs failed, at least `CRON_ERRORS_BEFORE_DISABLE` in a row."""
    return [
        j
        for j in ev.gateway.get("cron") or []
        if j.get("enabled") is True
        and j.get("last_status") == "error"
        and int(j.get("consecutive_errors") or 1) >= defaults.CRON_ERRORS_BEFORE_DISABLE
    ]


def _failing_models(ev: Evidence) -> set[str]:
    """`provider/model` and bare model names seen failing in the gateway's fallback decisions."""
    names: set[str] = set()
    for e in ev.gateway.get("model_events") or []:
        provider, model = e.get("provider"), e.get("model")
        if isinstance(model, str) and model:
            names.add(model)
            if isinstance(provider, str) and provider and "/" not in model:
                names.add(f"{provider}/{model}")
    return names


def pins_on_failing_models(ev: Evidence) -> list[dict[str, Any]]:
    """Sessions pinned to a model the gateway saw failing: they cannot fall back while the pin holds."""
    failing = _failing_models(ev)
    out = []
    for pin in ev.gateway.get("session_pins") or []:
        model, provider = pin.get("model"), pin.get("provider")
        full = f"{provider}/{model}" if provider and model and "/" not in str(model) else model
        if full in failing or model in failing:
            out.append(pin)
    return out


def _channel(ev: Evidence) -> str | None:
    down = failing_channels(ev)
    if down:
        return "; ".join(f"channel {ch} is down ({why})" for ch, why in down.items())
    return _search(ev, r"channel[^\n]*(?:failed|stuck|timed out|error)[^\n]*|telegram[^\n]*(?:error|failed)[^\n]*")


def _model(ev: Evidence) -> str | None:
    live = ev.gateway.get("model_events") or []
    if live:
        last = live[-1]
        pins = pins_on_failing_models(ev)
        return (
            f"{len(live)} model fallback decision(s) since the last check, last: reason={last.get('reason')} "
            f"status={last.get('status')} model={last.get('provider')}/{last.get('model')} "
            f"outcome={last.get('outcome')}"
            + (f"; session(s) pinned to it: {', '.join(str(p.get('key')) for p in pins)}" if pins else "")
        )
    failed = ("model_fallback_decision", "embedded_run_agent_end")
    hits = [e for e in ev.current_log_events() if e.get("event") in failed]
    if hits:
        return f"{len(hits)} model fallback/failure event(s), last: {hits[-1].get('message')}"
    return _search(ev, r"reason=(?:rate_limit|auth|billing|overloaded)[^\n]*|chain_exhausted")


def _cron(ev: Evidence) -> str | None:
    jobs = failing_cron_jobs(ev)
    if jobs:
        return "; ".join(
            f"cron job {j.get('name') or j.get('id')} ({j.get('id')}) failed {j.get('consecutive_errors')} time(s) "
            f"in a row: {j.get('last_error')}"
            for j in jobs
        )
    return _search(ev, r"cron: job run returned error status[^\n]*|\[cron\] failed to start[^\n]*")


def _not_ready(ev: Evidence) -> str | None:
    """/ready fails on the gateway's own parts (its sidecars, databases): a consequence of something else."""
    failing = [f for f in (ev.gateway.get("ready") or {}).get("failing") or [] if openclaw.is_ready_internal(str(f))]
    return f"/ready fails on {', '.join(map(str, failing))}" if failing else None


def _hang(ev: Evidence) -> str | None:
    return "the gateway process is stopped (SIGSTOP)" if ev.process.get("stopped") else None


def _start_command(ev: Evidence) -> str | None:
    """The supervisor could not even spawn the start command (missing binary, not executable, a bad cwd)."""
    m = re.search(r"cannot start [^\n]*", ev.reason)
    return m.group(0) if m else None


def _none(_: Evidence) -> list[RemedyCall]:
    return []


# --- near-misses: why a rule almost matched (for the LLM doctor's prompt); pure, no I/O, no search ------------


def _change_lines(changes: list[dict[str, Any]]) -> str:
    return "; ".join(f"{c.get('what')}: {c.get('summary')} ({c.get('when')})" for c in changes[:3])


def _near_changed(ev: Evidence) -> str | None:
    if not _failing(ev) or reversible_changes(ev):
        return None
    if ev.changes:
        return (
            "changes were recorded, but none is a reversible config or boot-file change made before the first "
            f"failure: {_change_lines(ev.changes)}"
        )
    if ev.config_differs_from_known_good:
        return "the config differs from the known-good snapshot, but no change since the last healthy state is recorded"
    if "changes" in ev.errors:
        return f"what changed could not be read: {ev.errors['changes']}"
    return None


def _near_blocked(ev: Evidence) -> str | None:
    code = _exit_code(ev)
    if code is None or code <= 0 or code == 78 or (ev.config or {}).get("valid") is not True:
        return None
    return f"the config validates and the gateway exited {code}, not 78 (OpenClaw's exit for a refused config)"


def _near_dependency(ev: Evidence) -> str | None:
    moved = [c for c in ev.changes if c.get("what") in ("dependencies", "openclaw")]
    if moved and not ev.deps_problems:
        return f"the install changed but no package is missing: {_change_lines(moved)}"
    return f"the packages could not be checked: {ev.errors['deps']}" if "deps" in ev.errors else None


def _near_port(ev: Evidence) -> str | None:
    o = ev.port_owner
    if o and o.get("ours"):
        return f"port {o.get('port')} is held by the target's own process (pid {o.get('pid')}), not another program"
    if ev.cause == "port_conflict" and not o:
        return "the exit looked like a port conflict, but nothing holds the port now"
    return None


def _near_node(ev: Evidence) -> str | None:
    moved = [c for c in ev.changes if c.get("what") == "node"]
    if moved and ev.node.get("satisfied") is True:
        return f"Node changed but satisfies openclaw's engines ({ev.node.get('version')}): {_change_lines(moved)}"
    if ev.node.get("found") and ev.node.get("satisfied") is None:
        return f"Node {ev.node.get('version')} could not be compared with engines {ev.node.get('engines')!r}"
    return None


def _near_disk(ev: Evidence) -> str | None:
    if ev.disk_free_mb is None:
        return None
    low = (
        defaults.LOW_DISK_MB
        if ev.disk_total_mb is None
        else min(defaults.LOW_DISK_MB, defaults.LOW_DISK_FRACTION * ev.disk_total_mb)
    )
    if ev.disk_free_mb < defaults.NEAR_LOW_DISK_FACTOR * low:
        return f"{ev.disk_free_mb:.1f} MB free: low, but above the {low:.0f} MB that counts as full"
    return None


def _near_breaker(ev: Evidence) -> str | None:
    if ev.breaker_age_s is not None and ev.breaker_age_s > defaults.BREAKER_WINDOW_S:
        return f"a crash-loop breaker bundle exists but is {ev.breaker_age_s:.0f} s old (the breaker lasts 300 s)"
    return None


def _near_hang(ev: Evidence) -> str | None:
    p = ev.process
    if p.get("alive") and not p.get("stopped") and _failing(ev):
        return f"the process (pid {p.get('pid')}) is alive and not stopped, yet the target fails its probes"
    return None


def _near_state_db(ev: Evidence) -> str | None:
    return f"the state database could not be checked: {ev.errors['state_db']}" if "state_db" in ev.errors else None


RULES: list[Rule] = [
    Rule(
        "config-invalid",
        "openclaw.json does not validate",
        0.95,
        _config_invalid,
        _config_plan,
        "Change openclaw.json with `clawmedic config apply NEW_FILE`: it validates first and rolls back on failure.",
    ),
    Rule(
        "config-changed",
        "the failures began after a change to the config (or a boot file) that can be reverted",
        0.9,
        _changed,
        lambda ev: [RemedyCall("restore_known_good")],
        "A schema-valid config can still be refused at boot (auth, TLS, gateway.mode); make changes with "
        "`clawmedic config apply NEW_FILE`: it rolls back on its own when the gateway does not stay healthy.",
        near=_near_changed,
    ),
    Rule(
        "config-blocked",
        "the gateway refuses to start with a config that did not change",
        0.6,
        _config_blocked,
        lambda ev: [RemedyCall("retry_start")] if ev.known_good else [],
        "The config is the known-good one, so something else changed: read the gateway's words above; "
        "`openclaw doctor` may name it.",
        fallback=True,
        near=_near_blocked,
    ),
    Rule(
        "missing-dependency",
        "a package of the install is missing or broken",
        0.95,
        _missing_dependency,
        lambda ev: [RemedyCall("restore_deps")],
        "Update OpenClaw with a complete `npm install`; clawmedic re-records the install once it is healthy.",
        near=_near_dependency,
    ),
    Rule(
        "port-taken-by-foreign-process",
        "another program holds the gateway's port",
        0.95,
        _port_foreign,
        lambda ev: [RemedyCall("kill_port_holder")] if ev.port_owner and ev.port_owner.get("pid") else [],
        "Stop the program that holds the port, or move the target to another port.",  # a kind says how
        near=_near_port,
    ),
    Rule(
        "port-taken-by-stale-gateway",
        "an old gateway of this target still holds the port",
        0.95,
        _port_stale,
        lambda ev: [RemedyCall("stop_stale_gateway")] if ev.port_owner else [],
        "Run the gateway only under clawmedic (or `clawmedic safe-start`) so no copy is left behind.",
    ),
    Rule(
        "duplicate-instance",
        "two gateways share one state directory",
        0.9,
        _duplicate,
        lambda ev: [RemedyCall("stop_stale_gateway")] if ev.duplicates else [],
        "Start the gateway in one place only (one service unit, or clawmedic).",
    ),
    Rule(
        "state-db-corrupt",
        "the gateway's state database is unreadable",
        0.9,
        _state_db,
        lambda ev: [RemedyCall("move_aside_state_db")],
        "Keep `openclaw backup create` on a schedule so state can be restored, not just reset.",
        near=_near_state_db,
    ),
    Rule(
        "node-engine-mismatch",
        "the Node version does not satisfy OpenClaw's engines",
        0.8,
        _node,
        _none,
        "Install a Node version inside openclaw's `engines` range.",
        near=_near_node,
    ),
    Rule(
        "disk-full",
        "the disk is almost full",
        0.8,
        _disk,
        _none,
        "Free disk space on the gateway's filesystem (or move its HOME to a larger one); logs, caches and backups "
        "grow. clawmedic deletes nothing of yours, so this needs a human.",
        near=_near_disk,
    ),
    Rule(
        "crash-loop-breaker",
        "OpenClaw's crash-loop breaker suppressed channels",
        0.6,
        _breaker,
        _none,
        "After the cause is fixed, channels come back after 300 s, or with `gateway call channels.start`.",
        kind=SYMPTOM,
        near=_near_breaker,
    ),
    Rule(
        "not-ready",
        "the gateway reports itself not ready",
        0.4,
        _not_ready,
        _none,
        "A gateway that stays unready names what fails in /ready's `failing` list; that part is the place to look.",
        kind=SYMPTOM,
    ),
    Rule(
        "channel-down",
        "a channel is failing",
        0.5,
        _channel,
        lambda ev: [RemedyCall("channel_disable", {"channel": ch}) for ch in failing_channels(ev)],
        "Check the channel's credentials and network, then `openclaw config set channels.<id>.enabled true`.",
        gateway_check=True,
    ),
    Rule(
        "model-failures",
        "model calls fail (rate limit, auth, timeout)",
        0.5,
        _model,
        lambda ev: [
            RemedyCall("clear_session_model_pin", {"session_key": p["key"]}) for p in pins_on_failing_models(ev)
        ],
        "Add fallbacks (`openclaw models fallbacks add`), check the provider's key and quota, and avoid pinning "
        "sessions to one model.",
        gateway_check=True,
    ),
    Rule(
        "cron-failing",
        "a cron job fails",
        0.5,
        _cron,
        lambda ev: [RemedyCall("cron_disable", {"job_id": j["id"]}) for j in failing_cron_jobs(ev)],
        "Fix the job's command, then `openclaw cron enable <id>`; `openclaw cron runs <id>` shows its failures.",
        gateway_check=True,
    ),
    Rule(
        "process-hang",
        "the gateway is frozen",
        0.7,
        _hang,
        lambda ev: [RemedyCall("resume_stopped_gateway")] if ev.process.get("pid") else [],
        "Something stops the gateway with SIGSTOP (a debugger, job control, a cgroup freezer, a watchdog) even after "
        "restarts: find it; clawmedic resumes the process it started, but the stopper will strike again.",
        near=_near_hang,
    ),
    Rule(
        "start-command-unusable",
        "the start command cannot be run",
        0.95,
        _start_command,
        _none,
        "Fix `start.command` (and `start.cwd`) in clawmedic's config: the program must exist and be executable; "
        "`clawmedic config check` names what is wrong.",
    ),
]


def diagnose(ev: Evidence) -> list[Finding]:
    """Every matching rule: causes first (most confident first), then symptoms, which are consequences and carry
    no plan while a cause is found. A fallback rule counts only when no other cause matched."""
    found: list[tuple[Rule, str]] = [(r, d) for r in RULES if (d := r.matches(ev)) is not None]
    kind = kinds.kind_of(ev.target_kind)
    has_cause = any(r.kind == CAUSE and not r.fallback for r, _ in found)
    out = []
    for rule, detail in found:
        if rule.fallback and has_cause:
            continue
        caused = rule.kind == SYMPTOM and has_cause
        plan = [] if caused else rule.plan(ev)
        advice = kind.advice.get(rule.id, rule.advice)  # in the target kind's own words, where it has them
        out.append(Finding(rule.id, rule.title, rule.confidence, detail, plan, advice, rule.kind))
    return sorted(out, key=lambda f: (f.kind != CAUSE, -f.confidence))


def causes(findings: list[Finding]) -> list[Finding]:
    """The diagnosis: the causes, or, when none was found, the symptoms (all there is to say)."""
    found = [f for f in findings if f.kind == CAUSE]
    return found or findings


def signature(ev: Evidence, findings: list[Finding]) -> str:
    """Normalised evidence: what kind of incident this is, independent of PIDs, paths and times."""
    parts = [f"cause={ev.cause}", f"exit={_exit_code(ev)}", *sorted(f"rule={f.rule}" for f in causes(findings))]
    missing = sorted(str(p.get("package")) for p in ev.deps_problems)
    if missing:
        parts.append("deps=" + ",".join(missing[:5]))
    if ev.config is not None:
        parts.append(f"config={ev.config.get('stage')}")
    return "|".join(parts)


def near_misses(ev: Evidence, findings: list[Finding] | None = None) -> list[dict[str, str]]:
    """Rules that did not match but came close, each with why not: a fallback rule that matched but gave way to
    another cause, and rules whose facts were partly there. What the rules cannot decide is what the LLM doctor is
    for; telling it how close they came points it at the evidence that matters."""
    found = findings if findings is not None else diagnose(ev)
    has_cause = any(f.kind == CAUSE for f in found)
    out = []
    for rule in RULES:
        if rule.id in {f.rule for f in found}:
            continue
        if rule.fallback and has_cause:  # it counts only when no cause is found: close only if it matched
            why: str | None = "it matched, but gives way to another cause the rules found" if rule.matches(ev) else None
        else:
            why = rule.near(ev) if rule.near is not None else None
        if why:
            out.append({"rule": rule.id, "title": rule.title, "why_not": clip(why, 300)})
    return out
