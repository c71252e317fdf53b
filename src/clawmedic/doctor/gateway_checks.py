"""Gateway checks: faults that do not take the gateway down, found and healed while it is healthy.

A failing cron job, a channel that fails `/ready`, a model that keeps failing under a session's pin: the gateway
still answers `/health`, so the ladder never escalates it. `GatewayCheck` (a `DaemonPlugin`) reads the gateway's
own state every `interval_s` while its target is healthy — `cron list --all --json`, `/ready`, `channels status
--json` (only when channels are configured), the log's `model_fallback_decision` events since the last check and,
when models fail, `sessions --json` pins — runs the same rules as the doctor over it, and for each fault:

- opens one incident (never a second one while the first is open), recording evidence and diagnosis;
- runs the rule's plan through the `Guard` (a remedy outside the policy is recorded as needs_approval, not run);
- verifies with the same check: the incident closes as recovered when the fault is gone;
- a remedy that did not help is retried only after `cooldown_s`, at most `GATEWAY_REMEDY_MAX_TRIES` times; then,
  or when nothing is left to try, the incident escalates to humans and stays open until the fault is gone.

`Healer` holds these decisions as pure logic over a clock it is given; `GatewayCheck` carries them out.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

import httpx

from clawmedic import defaults
from clawmedic.config import GatewayChecksConfig, LoadedConfig
from clawmedic.control import read_control
from clawmedic.doctor.evidence import Evidence
from clawmedic.doctor.gateway_parts import ChannelRestarts, PluginQuarantine, part_findings
from clawmedic.doctor.model_fallback import Action, ModelFallback
from clawmedic.doctor.remedies import Guard, Outcome, Policy, RemedyContext, Risk, Status
from clawmedic.doctor.report import write_report
from clawmedic.doctor.rules import RULES, Finding, RemedyCall, diagnose
from clawmedic.process.launcher import tail_lines
from clawmedic.targets import openclaw
from clawmedic.targets.openclaw import inside

if TYPE_CHECKING:
    from clawmedic.supervisor import Context

log = logging.getLogger("clawmedic.gateway_checks")

GATEWAY_RULES = frozenset(r.id for r in RULES if r.gateway_check)  # declared in doctor/rules.py
CAUSE = "gateway_check"
MAX_ITEMS = defaults.GATEWAY_CHECK_MAX_ITEMS
MAX_TEXT = defaults.GATEWAY_CHECK_MAX_TEXT


# --- reading the gateway's state (bounded, never raises) ----------------------------------------------------------


@dataclass
class GatewayState:
    cron: list[dict[str, Any]] = field(default_factory=list)
    ready: dict[str, Any] = field(default_factory=dict)  # {"status": 200|503|None, "failing": [...]}
    channels: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    model_events: list[dict[str, Any]] = field(default_factory=list)
    model_errors: list[dict[str, Any]] = field(default_factory=list)  # failed turns (`embedded_run_agent_end`)
    session_pins: list[dict[str, Any]] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)  # what could not be read, and why
    plugins: list[dict[str, Any]] = field(default_factory=list)  # `plugins list --json` (inside.Plugin dicts)
    suppressed: list[str] = field(default_factory=list)  # channels the crash-loop breaker did not start (/ready)
    dropped: list[str] = field(default_factory=list)  # ids from the gateway that were not ids: ignored

    def to_dict(self) -> dict[str, Any]:
        return {
            "cron": self.cron,
            "ready": self.ready,
            "channels": self.channels,
            "model_events": self.model_events,
            "model_errors": self.model_errors,
            "session_pins": self.session_pins,
            "errors": self.errors,
            "plugins": self.plugins,
            "suppressed": self.suppressed,
            "dropped": self.dropped,
        }


def _text(v: object) -> str | None:
    return None if v is None else str(v)[:MAX_TEXT]


def parse_cron(data: object) -> list[dict[str, Any]]:
    """`cron list --all --json` → one small dict per job (FACTS §7)."""
    jobs = data.get("jobs") if isinstance(data, dict) else None
    out = []
    for j in jobs if isinstance(jobs, list) else []:
        if not isinstance(j, dict):
            continue
        raw = j.get("state")
        st: dict[str, Any] = raw if isinstance(raw, dict) else {}
        out.append(
            {
                "id": j.get("id"),
                "name": j.get("name"),
                "enabled": j.get("enabled"),
                "last_status": st.get("lastRunStatus") or st.get("lastStatus"),
                "last_error": _text(st.get("lastError") or j.get("lastError")),
                "consecutive_errors": st.get("consecutiveErrors"),
                "system": bool(j.get("declarationKey")),  # built-in jobs are declared by the gateway itself
            }
        )
    return out[:MAX_ITEMS]


def parse_channels(data: object) -> dict[str, list[dict[str, Any]]]:
    """`channels status --json` → channel id → its accounts' running/connected/health/lastError."""
    accounts = data.get("channelAccounts") if isinstance(data, dict) else None
    out: dict[str, list[dict[str, Any]]] = {}
    for ch, accs in (accounts if isinstance(accounts, dict) else {}).items():
        out[str(ch)] = [
            {
                "account": a.get("accountId"),
                "running": a.get("running"),
                "connected": a.get("connected"),
                "health": a.get("healthState"),
                "last_error": _text(a.get("lastError")),
            }
            for a in (accs if isinstance(accs, list) else [])[:MAX_ITEMS]
            if isinstance(a, dict)
        ]
    return out


def parse_sessions(data: object) -> list[dict[str, Any]]:
    """`sessions --json` → sessions that pin a model (`modelOverride`, FACTS §7)."""
    sessions = data.get("sessions") if isinstance(data, dict) else None
    return [
        {"key": s.get("key") or s.get("sessionKey"), "provider": s.get("providerOverride"), "model": s["modelOverride"]}
        for s in (sessions if isinstance(sessions, list) else [])
        if isinstance(s, dict) and s.get("modelOverride")
    ][:MAX_ITEMS]


def _ts(value: object) -> float | None:
    if isinstance(value, int | float):
        return float(value) / (1000 if value > 1e11 else 1)
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    return None


def parse_model_events(lines: list[str], since: float) -> list[dict[str, Any]]:
    """`model_fallback_decision` events of the gateway's JSON-lines log logged after `since` (FACTS §8)."""
    out = []
    for line in lines:
        if "model_fallback_decision" not in line:
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        obj = rec.get("1") if isinstance(rec, dict) else None
        if not isinstance(obj, dict) or obj.get("event") != "model_fallback_decision":
            continue
        meta = rec.get("_meta") if isinstance(rec.get("_meta"), dict) else {}
        at = _ts(rec.get("time") or meta.get("date"))
        if at is not None and at <= since:
            continue
        out.append(
            {
                "at": at,
                "decision": obj.get("decision"),
                "reason": obj.get("reason"),
                "status": obj.get("status"),
                "provider": obj.get("candidateProvider") or obj.get("requestedProvider"),
                "model": obj.get("candidateModel") or obj.get("requestedModel"),
                "outcome": obj.get("fallbackStepFinalOutcome"),
                "session_id": obj.get("sessionId"),
            }
        )
    return out[-MAX_ITEMS:]


def parse_model_errors(lines: list[str], since: float) -> list[dict[str, Any]]:
    """Failed agent turns (`embedded_run_agent_end` with `isError` and a `failoverReason`) logged after `since`.

    OpenClaw logs one per failed attempt, seconds after a 429 or a 401, while `model_fallback_decision` waits for
    its same-model retries to run out (9 of them, minutes with a Retry-After): the fallback acts on these."""
    out = []
    for line in lines:
        if "embedded_run_agent_end" not in line or "failoverReason" not in line:
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        obj = rec.get("1") if isinstance(rec, dict) else None
        if not isinstance(obj, dict) or obj.get("event") != "embedded_run_agent_end" or not obj.get("isError"):
            continue
        meta = rec.get("_meta") if isinstance(rec.get("_meta"), dict) else {}
        at = _ts(rec.get("time") or meta.get("date"))
        if at is not None and at <= since:
            continue
        out.append(
            {
                "at": at,
                "reason": obj.get("failoverReason"),
                "provider": obj.get("provider"),
                "model": obj.get("model"),
                "error": _text(obj.get("rawErrorPreview") or obj.get("error")),
            }
        )
    return out[-MAX_ITEMS:]


def _channels_configured(loaded: LoadedConfig, name: str) -> bool:
    """`channels status` costs a CLI run (~7 s under load); skip it when openclaw.json configures no channel."""
    try:
        cfg = openclaw.loads(openclaw.config_path(loaded.targets[name]).read_text())
    except (OSError, ValueError):
        return True  # cannot tell: ask the gateway
    return isinstance(cfg, dict) and bool(cfg.get("channels"))


def read_state(loaded: LoadedConfig, name: str, *, since: float, cfg: GatewayChecksConfig) -> GatewayState:
    """Read target `name`'s gateway state; every source bounded by `command_timeout_s`, failures become
    `errors[source]`. The result is redacted."""
    target = loaded.targets[name]
    st = GatewayState()
    timeout = cfg.command_timeout_s

    def cli(args: list[str], remote: bool) -> object:
        r = openclaw.gateway_cli(loaded, name, args, remote=remote, timeout=timeout)
        if r.error is not None:
            raise RuntimeError(r.error)
        return r.data

    def ready() -> None:
        resp = httpx.get(f"http://127.0.0.1:{target.port}/ready", timeout=min(timeout, 10.0), trust_env=False)
        body = resp.json() if resp.headers.get("content-type", "").startswith("application/json") else {}
        failing = body.get("failing") if isinstance(body, dict) else None
        st.ready = {"status": resp.status_code, "failing": [str(f) for f in failing or []][:MAX_ITEMS]}
        st.suppressed = inside.parse_suppressed(body)

    def cron() -> None:
        st.cron = parse_cron(cli(["cron", "list", "--all", "--json"], True))

    def channels() -> None:
        if _channels_configured(loaded, name):
            st.channels = parse_channels(cli(["channels", "status", "--json"], False))
            try:  # a channel turned off in openclaw.json is not down, whatever error its stopped accounts still show
                off = inside.disabled_in_config(openclaw.loads(openclaw.config_path(target).read_text()))
            except (OSError, ValueError):
                off = set()
            st.channels = {ch: accs for ch, accs in st.channels.items() if ch not in off}

    def models() -> None:
        if target.log_file is not None:
            lines = tail_lines(target.log_file, defaults.GATEWAY_CHECK_LOG_TAIL_LINES)
            st.model_events = parse_model_events(lines, since)
            if target.models is not None:
                st.model_errors = parse_model_errors(lines, since)
        if st.model_events or st.model_errors:  # pins matter only when a model fails
            st.session_pins = parse_sessions(cli(["sessions", "--json"], False))

    def plugins() -> None:
        found, st.dropped = inside.parse_plugins(cli(["plugins", "list", "--json"], False))
        st.plugins = [p.to_dict() for p in found]

    sources: dict[str, Callable[[], None]] = {"cron": cron, "ready": ready, "channels": channels, "models": models}
    if cfg.plugins.enabled:
        sources["plugins"] = plugins
    if target.port is None:
        sources.pop("ready")
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=len(sources), thread_name_prefix="gateway-check")
    futures = {pool.submit(fn): key for key, fn in sources.items()}
    done, pending = concurrent.futures.wait(futures, timeout=timeout + 5)
    for f in done:
        if (exc := f.exception()) is not None:
            st.errors[futures[f]] = f"{type(exc).__name__}: {exc}"[:MAX_TEXT]
    for f in pending:
        st.errors[futures[f]] = f"timed out after {timeout:g} s"
    pool.shutdown(wait=False, cancel_futures=True)
    return GatewayState(**loaded.redactor.data(st.to_dict()))


def findings_of(target: str, state: GatewayState) -> list[Finding]:
    """The doctor's own rules over the gateway's state; only the rules about a running gateway."""
    ev = Evidence(target, cause=CAUSE, gateway=state.to_dict())
    return [f for f in diagnose(ev) if f.rule in GATEWAY_RULES]


# --- the decisions: pure, over an injected clock --------------------------------------------------------------------

Phase = Literal["treating", "verifying", "escalated", "needs_approval"]


@dataclass
class Tracked:
    rule: str
    finding: Finding
    opened_at: float
    incident: int | None = None
    phase: Phase = "treating"
    next_try_at: float = 0.0
    verify_until: float = 0.0
    tries: dict[str, int] = field(default_factory=dict)  # remedy call key -> attempts
    applied: list[str] = field(default_factory=list)  # remedies that ran ok


@dataclass(frozen=True)
class Decision:
    kind: Literal["open", "treat", "resolved", "unverified", "escalate"]
    rule: str
    calls: list[RemedyCall] = field(default_factory=list)
    why: str = ""
    incident: int | None = None  # for `resolved`: the fault is no longer tracked
    healed: bool = False  # for `resolved`: a remedy of ours ran ok before it went


class Healer:
    """One incident per fault (keyed by rule), remedies with a cooldown and a try limit, escalation instead of
    loops. `step(findings, now)` says what to do; `record(rule, outcomes, now)` is told what happened."""

    def __init__(self, cooldown_s: float, verify_timeout_s: float, max_tries: int = defaults.GATEWAY_REMEDY_MAX_TRIES):
        self.cooldown_s = cooldown_s
        self.verify_timeout_s = verify_timeout_s
        self.max_tries = max_tries
        self.tracked: dict[str, Tracked] = {}

    def step(self, findings: list[Finding], now: float, hold: dict[str, float] | None = None) -> list[Decision]:
        """`hold`: rule → a moment before which it is not treated (a channel's restart interval), only watched."""
        out: list[Decision] = []
        present = {f.rule: f for f in findings}
        for rule in [r for r in self.tracked if r not in present]:
            gone = self.tracked.pop(rule)
            how = f"after {', '.join(gone.applied)}" if gone.applied else "without a remedy of ours"
            out.append(
                Decision(
                    "resolved", rule, why=f"the fault is gone {how}", incident=gone.incident, healed=bool(gone.applied)
                )
            )
        for rule, finding in present.items():
            if rule not in self.tracked:
                self.tracked[rule] = Tracked(rule, finding, now, next_try_at=now)
                out.append(Decision("open", rule, why=finding.detail))
            t = self.tracked[rule]
            t.finding = finding
            if t.phase in ("escalated", "needs_approval"):
                continue  # a human decides; the incident stays open until the fault is gone
            if t.phase == "verifying":
                if now < t.verify_until:
                    continue
                t.phase = "treating"
                out.append(
                    Decision("unverified", rule, why=f"still present {self.verify_timeout_s:g} s after the remedy")
                )
            if now < t.next_try_at or now < (hold or {}).get(rule, 0.0):
                continue
            calls = [c for c in finding.plan if t.tries.get(c.key, 0) < self.max_tries]
            if calls:
                out.append(Decision("treat", rule, calls))
            else:
                t.phase = "escalated"
                why = "no remedy is known for it" if not finding.plan else "the remedies did not help"
                out.append(Decision("escalate", rule, why=why))
        return out

    def record(self, rule: str, outcomes: list[Outcome], now: float) -> Phase:
        t = self.tracked[rule]
        for o in outcomes:
            key = RemedyCall(o.remedy, o.params).key
            # a refusal or an approval will not change by retrying: count it as used up
            spent = o.status in (Status.REFUSED, Status.NEEDS_APPROVAL, Status.FAILED)
            t.tries[key] = self.max_tries if spent else t.tries.get(key, 0) + 1
        t.next_try_at = now + self.cooldown_s
        if any(o.status == Status.NEEDS_APPROVAL for o in outcomes):
            t.phase = "needs_approval"
        elif any(o.status == Status.OK for o in outcomes):
            t.applied += [o.remedy for o in outcomes if o.status == Status.OK]
            t.phase = "verifying"
            t.verify_until = now + self.verify_timeout_s
        elif not any(t.tries.get(c.key, 0) < self.max_tries for c in t.finding.plan):
            t.phase = "escalated"
        else:
            t.next_try_at = now  # something else in the plan is still worth a try
        return t.phase


# --- the plugin -------------------------------------------------------------------------------------------------------


class GatewayCheck:
    """The `DaemonPlugin`: checks every healthy OpenClaw target, heals through the `Guard`, records incidents."""

    def __init__(
        self,
        loaded: LoadedConfig,
        *,
        clock: Callable[[], float] = time.time,
        read: Callable[[LoadedConfig, str, float], GatewayState] | None = None,
    ) -> None:
        self.loaded = loaded
        self.cfg = loaded.config.daemon.doctor.gateway_checks
        doc = loaded.config.daemon.doctor
        self.guard = Guard(Policy(frozenset(Risk(r) for r in doc.allow), doc.allow_kill_foreign, loaded.dry_run))
        self.clock = clock
        self._read = read or (lambda ld, name, since: read_state(ld, name, since=since, cfg=self.cfg))
        self.targets = [n for n, t in loaded.targets.items() if t.kind == "openclaw"]
        self.healers = {n: Healer(self.cfg.cooldown_s, self.cfg.verify_timeout_s) for n in self.targets}
        self.models: dict[str, ModelFallback] = {}  # targets with `[targets.NAME.models]`: they own model faults
        for n in self.targets:
            mc = loaded.targets[n].models
            if mc is not None:
                self.models[n] = ModelFallback(
                    mc.order,
                    rate_limit_cooldown_s=mc.rate_limit_cooldown_min * 60,
                    auth_cooldown_s=mc.auth_cooldown_min * 60,
                    probe_interval_s=mc.probe_interval_s,
                    path=loaded.state_dir / "models" / f"{n}.json",
                )
        self.states: dict[str, str] = {}
        self._since = {n: clock() for n in self.targets}
        self._failing_read: dict[str, str | None] = {}
        self._model_blocked: dict[str, float] = {}  # until when a default that could not be set is left alone
        self._checks = dict.fromkeys(self.targets, 0)  # checks run per target: model events say in which one
        chc = self.cfg.channels
        self.channels = {n: ChannelRestarts(chc.down_checks, chc.min_interval_s, chc.restarts) for n in self.targets}
        self.plugins = {
            n: PluginQuarantine(self.cfg.plugins.min_interval_s, loaded.state_dir / "plugins" / f"{n}.json")
            for n in self.targets
        }
        self._state: dict[str, GatewayState] = {}  # the last state read per target (what a remedy acted on)
        self._wake = asyncio.Event()  # set by `wake`: check now instead of at the end of the interval

    def on_event(self, event: dict[str, Any]) -> None:
        if event.get("kind") == "state" and isinstance(event.get("target"), str):
            self.states[event["target"]] = str(event.get("new", ""))

    async def run(self, ctx: Context) -> None:
        while True:
            verifying = False
            for name in self.targets:
                if self.states.get(name) != "healthy":
                    continue
                try:
                    await self.check(ctx, name)
                except Exception as e:  # never up into the daemon
                    log.error("%s: gateway check: internal error: %r", name, e, exc_info=e)
                verifying |= any(t.phase == "verifying" for t in self.healers[name].tracked.values())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._wake.wait(), defaults.GATEWAY_VERIFY_POLL_S if verifying else self.cfg.interval_s
                )
            self._wake.clear()

    def wake(self, target: str) -> None:
        """Check now: the conversation probe saw `target`'s turn fail, and the model rules act on that failure."""
        log.debug("%s: gateway check woken by the conversation probe", target)
        self._wake.set()

    async def check(self, ctx: Context, name: str) -> list[Decision]:
        """One check of one target: read, diagnose, act on the healer's decisions."""
        since, now = self._since[name], self.clock()
        self._checks[name] += 1
        state = await asyncio.to_thread(self._read, self.loaded, name, since)
        # events seen now are not new next time, even if they were logged while this check was reading
        seen = [e["at"] for e in [*state.model_events, *state.model_errors] if isinstance(e.get("at"), float)]
        self._since[name] = max([now, *seen])
        self._log_read_errors(name, state)
        findings = findings_of(name, state)
        if name in self.models:  # the fallback moves the default and the pins instead of clearing pins
            findings = [f for f in findings if f.rule != "model-failures"]
            await self._models(ctx, name, state)
        self._state[name] = state
        await self._resume_plugins(ctx, name)
        findings, hold = part_findings(
            name,
            state.to_dict(),
            findings,
            self.channels[name],
            self.plugins[name],
            self.clock(),
            start_suppressed=self.cfg.channels.start_suppressed,
        )
        healer = self.healers[name]
        decisions = healer.step(findings, self.clock(), hold)
        inc_store, events = ctx.incidents, ctx.events
        for d in decisions:
            t = healer.tracked.get(d.rule)
            if d.kind == "open" and t is not None:
                t.incident = self._open(ctx, name, t.finding, state)
            elif d.kind == "treat" and t is not None and t.incident is not None:
                await self._treat(ctx, name, t, d.calls)
            elif d.kind == "unverified" and t is not None and t.incident is not None:
                inc_store.add(t.incident, "verify", {"fault_present": True, "detail": t.finding.detail, "why": d.why})
                events.emit("gateway_fault_unverified", name, incident=t.incident, rule=d.rule)
            elif d.kind == "escalate" and t is not None and t.incident is not None:
                self._escalate(ctx, name, t, "escalated", d.why)
        for d in decisions:  # after the loop above: `resolved` pops the fault from the healer
            if d.kind == "resolved":
                self._resolved(ctx, name, d, state)
        for t in healer.tracked.values():
            if t.phase == "verifying" and t.incident is not None:
                inc_store.add(t.incident, "verify", {"fault_present": True, "detail": t.finding.detail})
        if healer.tracked:  # while a fault is open, every check is on the record (and nothing when all is well)
            events.emit("gateway_checked", name, open={r: t.phase for r, t in healer.tracked.items()})
        return decisions

    # --- the model fallback ------------------------------------------------------------------------------------------

    async def _models(self, ctx: Context, name: str, state: GatewayState) -> None:
        mf = self.models[name]
        now = self.clock()
        for ref, cd in mf.observe([*state.model_events, *state.model_errors], now):
            minutes = round(mf.durations[cd.kind] / 60)
            ctx.events.emit(
                "model_cooldown",
                name,
                model=ref,
                cooldown=cd.kind,
                reason=cd.reason,
                until=cd.until,
                minutes=minutes,
                check=self._checks[name],
            )
            log.warning("%s: model %s cools for %d min (%s)", name, ref, minutes, cd.reason)
        for _ in range(2):  # a probe that answers is acted on in the same check
            default = await asyncio.to_thread(openclaw.default_model, self.loaded.targets[name])
            actions = mf.step(default, state.session_pins, self.clock())
            if self.clock() < self._model_blocked.get(name, 0.0):  # the default could not be set: wait cooldown_s
                actions = [a for a in actions if a.kind == "probe"]
            answered = False
            for a in actions:
                result = await self._model_action(ctx, name, mf, a, default, state)
                if result is None:  # the default did not move: nothing else makes sense this check
                    self._model_blocked[name] = self.clock() + self.cfg.cooldown_s
                    return
                answered |= result
            if not answered:
                return

    async def _model_action(
        self, ctx: Context, name: str, mf: ModelFallback, a: Action, default: str | None, state: GatewayState
    ) -> bool | None:
        """Carry out one action of the fallback; True when a probe found a model answering again, None when the
        default could not be moved (escalated)."""
        rctx = RemedyContext(self.loaded, name, ctx.known_good)
        if a.kind == "probe":
            t0 = time.monotonic()
            ok, detail = await asyncio.to_thread(probe_model, self.loaded, name, a.model, self.cfg.command_timeout_s)
            took = round(time.monotonic() - t0, 2)
            mf.probed(a.model, ok, self.clock())
            ctx.events.emit("model_probe", name, model=a.model, answered=ok, took_s=took, detail=detail)
            if mf.state.incident is not None:
                ctx.incidents.add(
                    mf.state.incident, "verify", {"probe": a.model, "answered": ok, "detail": detail}, duration_s=took
                )
            log.info("%s: probe of %s: %s (%.1f s)", name, a.model, "answers" if ok else "still failing", took)
            return ok
        if a.kind == "exhausted":
            inc = self._model_incident(ctx, name, mf, a, state)
            self._model_escalate(ctx, name, inc, a.why)
            return False
        if a.kind == "switch" or a.kind == "return":
            inc = self._model_incident(ctx, name, mf, a, state)
            o = await asyncio.to_thread(self.guard.run, rctx, "set_default_model", {"model": a.model})
            ctx.incidents.add(inc, "remedy", o.to_dict(), duration_s=o.took_s)
            ctx.events.emit(
                "gateway_remedy", name, incident=inc, remedy=o.remedy, status=o.status.value, detail=o.detail
            )
            if o.status != Status.OK:
                self._model_escalate(ctx, name, inc, f"{o.remedy}: {o.status.value} — {o.detail}")
                return None
            now = self.clock()
            if a.kind == "switch":
                mf.switched(default or "", a.model, now)
                ctx.events.emit(
                    "model_fallback",
                    name,
                    incident=inc,
                    original=mf.state.original,
                    to=a.model,
                    why=a.why,
                    check=self._checks[name],
                )
                log.warning("%s: default model %s → %s: %s (incident #%d)", name, default, a.model, a.why, inc)
            else:
                fallback = mf.state.fallback
                spent = mf.returned(now)
                summary = f"back on {a.model} after {spent:.0f} s on {fallback}; {a.why}"
                ctx.incidents.add(
                    inc, "verdict", {"healed": True, "summary": summary, "on_fallback_s": round(spent, 1)}
                )
                ctx.incidents.update(inc, status="recovered", live_at=now, closed_at=now)
                ctx.events.emit("model_restored", name, incident=inc, model=a.model, on_fallback_s=round(spent, 1))
                ctx.events.emit(
                    "gateway_fault_resolved", name, incident=inc, rule="model-cooldown", outcome="recovered"
                )
                log.info("%s: incident #%d recovered: %s", name, inc, summary)
                self._write_report(ctx, inc)
            return False
        # a pin on a cooling model moves to the same fallback
        params = {"session_key": a.session, "model": a.model}
        o = await asyncio.to_thread(self.guard.run, rctx, "pin_session_model", params)
        pin_inc = mf.state.incident
        if pin_inc is not None:
            ctx.incidents.add(pin_inc, "remedy", o.to_dict(), duration_s=o.took_s)
        ctx.events.emit(
            "gateway_remedy", name, incident=pin_inc, remedy=o.remedy, status=o.status.value, detail=o.detail
        )
        log.warning("%s: remedy %s: %s — %s", name, o.remedy, o.status.value, o.detail)
        return False

    def _model_incident(self, ctx: Context, name: str, mf: ModelFallback, a: Action, state: GatewayState) -> int:
        if mf.state.incident is not None:
            return mf.state.incident
        now = self.clock()
        inc = ctx.incidents.open(name, f"gateway check: the default model cools — {a.why}", now, now)
        ctx.incidents.update(inc, cause=CAUSE)
        ctx.incidents.add(inc, "evidence", {"gateway": state.to_dict(), "models": mf.to_dict()})
        finding = Finding(
            "model-cooldown",
            "the default model cools (rate limit, quota or auth)",
            0.9,
            a.why,
            [RemedyCall("set_default_model", {"model": a.model})] if a.kind == "switch" else [],
            "clawmedic moves the default back once the model answers OpenClaw's probe; check the provider's quota "
            "or key if it does not.",
        )
        diagnosis = {"signature": f"cause={CAUSE}|rule=model-cooldown", "findings": [finding.to_dict()]}
        ctx.incidents.add(inc, "diagnosis", diagnosis)
        ctx.events.emit("gateway_fault", name, incident=inc, rule="model-cooldown", detail=a.why)
        mf.set_incident(inc)
        return inc

    def _model_escalate(self, ctx: Context, name: str, inc: int, why: str) -> None:
        ctx.incidents.update(inc, status="escalated")
        ctx.incidents.add(inc, "verdict", {"healed": False, "summary": f"model fallback — needs a human: {why}"})
        ctx.events.emit(
            "gateway_fault_escalated", name, incident=inc, rule="model-cooldown", status="escalated", why=why
        )
        log.warning("%s: incident #%d escalated: %s", name, inc, why)

    # --- carrying the decisions out ---------------------------------------------------------------------------------

    def _open(self, ctx: Context, name: str, finding: Finding, state: GatewayState) -> int:
        now = self.clock()
        inc = ctx.incidents.open(name, f"gateway check: {finding.title} — {finding.detail}", now, now)
        ctx.incidents.update(inc, cause=CAUSE)
        ctx.incidents.add(inc, "evidence", {"gateway": state.to_dict(), "errors": state.errors})
        ctx.incidents.add(
            inc, "diagnosis", {"signature": f"cause={CAUSE}|rule={finding.rule}", "findings": [finding.to_dict()]}
        )
        ctx.events.emit("gateway_fault", name, incident=inc, rule=finding.rule, detail=finding.detail)
        log.warning("%s: gateway check found %s: %s (incident #%d)", name, finding.rule, finding.detail, inc)
        return inc

    async def _treat(self, ctx: Context, name: str, t: Tracked, calls: list[RemedyCall]) -> None:
        assert t.incident is not None
        rctx = RemedyContext(self.loaded, name, ctx.known_good)
        outcomes: list[Outcome] = []
        for call in calls:
            o = await asyncio.to_thread(self.guard.run, rctx, call.remedy, call.params)
            outcomes.append(o)
            ctx.incidents.add(t.incident, "remedy", o.to_dict(), duration_s=o.took_s)
            ctx.events.emit(
                "gateway_remedy", name, incident=t.incident, remedy=o.remedy, status=o.status.value, detail=o.detail
            )
            log.warning("%s: remedy %s: %s — %s", name, o.remedy, o.status.value, o.detail)
            self._after(ctx, name, t.incident, o)
        if t.rule == "channel-down":  # a restart that failed is spent: the disable is next, not an escalation
            chs = sorted({str(c.params.get("channel")) for c in calls})
            policy, now = self.channels[name], self.clock()
            t.finding = replace(t.finding, plan=[c for ch in chs if (c := policy.call(ch, now)) is not None])
        phase = self.healers[name].record(t.rule, outcomes, self.clock())
        if phase in ("needs_approval", "escalated"):
            why = "; ".join(f"{o.remedy}: {o.status.value} — {o.detail}" for o in outcomes if o.status != Status.OK)
            self._escalate(ctx, name, t, phase, why)

    def _after(self, ctx: Context, name: str, incident: int, o: Outcome) -> None:
        """What a remedy on a channel, a plugin or a cron job means for the policies and for humans."""
        now = self.clock()
        if o.status in (Status.REFUSED, Status.NEEDS_APPROVAL, Status.WOULD):
            return
        ch, pid = str(o.params.get("channel", "")), str(o.params.get("plugin", ""))
        if o.remedy == "channel_restart":
            self.channels[name].restarted(ch, now)
        elif o.remedy == "channel_start":
            self.channels[name].started(ch, now)
        elif o.remedy == "plugin_disable":
            q = self.plugins[name]
            q.tried(pid, now)
            if o.status == Status.OK:
                change = o.changes[0] if o.changes else {}
                seq = read_control(self.loaded.state_dir).resume_seq.get(name, 0)
                q.record(pid, now, seq, change.get("error"), change.get("snapshot_before"))
                ctx.events.emit("plugin_disabled", name, incident=incident, plugin=pid, error=change.get("error"))
        elif o.remedy == "cron_disable" and o.status == Status.OK:
            job_id = str(o.params.get("job_id", ""))
            state = self._state.get(name) or GatewayState()
            job = next((j for j in state.cron if j.get("id") == job_id), {})
            ctx.events.emit(
                "cron_disabled",
                name,
                incident=incident,
                job_id=job_id,
                job_name=job.get("name"),
                errors=job.get("consecutive_errors"),
                error=job.get("last_error"),
                interval_s=self.cfg.cron_issue_interval_s,
            )

    async def _resume_plugins(self, ctx: Context, name: str) -> None:
        """After `clawmedic resume NAME`: enable again every plugin clawmedic disabled before that request."""
        q = self.plugins[name]
        if not q.disabled:
            return
        seq = read_control(self.loaded.state_dir).resume_seq.get(name, 0)
        rctx = RemedyContext(self.loaded, name, ctx.known_good)
        for pid in q.to_enable(seq):
            o = await asyncio.to_thread(self.guard.run, rctx, "plugin_enable", {"plugin": pid})
            ctx.events.emit("plugin_enabled", name, plugin=pid, status=o.status.value, detail=o.detail)
            log.warning("%s: after resume, %s: %s — %s", name, o.remedy, o.status.value, o.detail)
            if o.status == Status.OK:
                q.enabled(pid)

    def _escalate(self, ctx: Context, name: str, t: Tracked, status: str, why: str) -> None:
        assert t.incident is not None
        summary = f"{t.finding.title} — needs a human ({status}): {why}"
        ctx.incidents.update(t.incident, status=status)
        ctx.incidents.add(t.incident, "verdict", {"healed": False, "summary": summary})
        ctx.events.emit("gateway_fault_escalated", name, incident=t.incident, rule=t.rule, status=status, why=why)
        log.warning("%s: incident #%d %s: %s", name, t.incident, status, why)
        self._write_report(ctx, t.incident)

    def _resolved(self, ctx: Context, name: str, d: Decision, state: GatewayState) -> None:
        inc = d.incident
        if inc is None:
            return
        now = self.clock()
        outcome = "recovered" if d.healed else "resolved"
        ctx.incidents.add(inc, "verify", {"fault_present": False, "gateway": state.to_dict()})
        ctx.incidents.add(inc, "verdict", {"healed": d.healed, "summary": f"{d.why}; verified by the same check"})
        ctx.incidents.update(inc, status=outcome, live_at=now, closed_at=now)
        ctx.events.emit("gateway_fault_resolved", name, incident=inc, rule=d.rule, outcome=outcome)
        log.info("%s: incident #%d %s: %s", name, inc, outcome, d.why)
        self._write_report(ctx, inc)

    def _write_report(self, ctx: Context, incident: int) -> None:
        try:
            write_report(self.loaded, ctx.incidents, incident)
        except OSError as e:
            log.warning("cannot write the report of incident #%d: %s", incident, e)

    def _log_read_errors(self, name: str, state: GatewayState) -> None:
        text = "; ".join(f"{k}: {v}" for k, v in sorted(state.errors.items())) or None
        if text != self._failing_read.get(name):
            if text:
                log.warning("%s: gateway check could not read: %s", name, text)
            elif self._failing_read.get(name):
                log.info("%s: gateway check reads everything again", name)
            self._failing_read[name] = text


def probe_model(loaded: LoadedConfig, name: str, model: str, timeout: float) -> tuple[bool, str]:
    """OpenClaw's own live probe of `model`'s provider, through the running gateway: `gateway call models.probe`
    (the RPC behind `models status --probe --probe-provider P`, which refuses to run beside a live gateway on the
    same state folder). Returns (answered, what it said)."""
    provider = model.split("/", 1)[0]
    probe_ms = int(defaults.MODEL_PROBE_TIMEOUT_S * 1000)
    params = json.dumps({"provider": provider, "timeoutMs": probe_ms})
    wait_ms = str(probe_ms + 10_000)  # `gateway call` gives up after 10 s by default, before the probe ends
    args = ["gateway", "call", "models.probe", "--params", params, "--timeout", wait_ms, "--json"]
    r = openclaw.gateway_cli(loaded, name, args, remote=True, timeout=max(timeout, probe_ms / 1000 + 20))
    if r.error is not None:
        return False, r.error[:MAX_TEXT]
    return parse_probe(r.data)


def parse_probe(data: object) -> tuple[bool, str]:
    """`models.probe`'s answer `{provider, status: ok|auth|rate_limit|billing|timeout|format|no_model|unknown,
    latencyMs, error}` → (answered, a short summary)."""
    if not isinstance(data, dict):
        return False, f"unexpected answer: {str(data)[:MAX_TEXT]}"
    status = str(data.get("status"))
    latency = data.get("latencyMs")
    said = status + (f" in {latency} ms" if isinstance(latency, int | float) else "")
    if data.get("error"):
        said += f": {data['error']}"
    return status == "ok", said[:MAX_TEXT]


def plugin_for(loaded: LoadedConfig) -> GatewayCheck | None:
    """The gateway check, or None when the doctor or the check is off, or no target is an OpenClaw gateway."""
    doc = loaded.config.daemon.doctor
    if not (doc.enabled and doc.gateway_checks.enabled):
        return None
    if not any(t.kind == "openclaw" for t in loaded.targets.values()):
        return None
    return GatewayCheck(loaded)
