"""Decisions about the parts inside a running gateway — channels and plugins — as pure logic over a given clock.

`ChannelRestarts`: a channel counts as a fault only once it stayed disconnected for `down_checks` checks in a row;
then it gets a targeted restart (`channel_restart`: `channels.stop` + `channels.start`), at most `restarts` of them
and at least `min_interval_s` apart, and only then is it disabled (`channel_disable`). A channel the crash-loop
breaker suppressed is started again (`channel_start`) once it was seen suppressed on a stable gateway, once per
`min_interval_s`.

`PluginQuarantine`: an enabled plugin in `status: error` that is not built in is disabled (`plugin_disable`), at
most once per `min_interval_s` per plugin; what clawmedic disabled is remembered on disk (so `clawmedic resume`
can re-enable exactly those, after a daemon restart too) with the resume request number it was disabled under.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clawmedic.doctor.evidence import Evidence
from clawmedic.doctor.rules import Finding, RemedyCall, failing_channels
from clawmedic.store.files import atomic_write
from clawmedic.targets.openclaw.inside import Plugin, disconnected_channels, valid_channel_id, valid_plugin_id

log = logging.getLogger("clawmedic.gateway_checks")


@dataclass
class _Channel:
    down_checks: int = 0
    restarts: int = 0  # restarts during the current outage
    last_restart: float | None = None
    last_start: float | None = None  # a suppressed channel started again


class ChannelRestarts:
    def __init__(self, down_checks: int, min_interval_s: float, restarts: int) -> None:
        self.down_checks = down_checks
        self.min_interval_s = min_interval_s
        self.restarts = restarts
        self.channels: dict[str, _Channel] = {}

    def observe(self, down: set[str], now: float) -> set[str]:
        """Count this check; returns the channels down for `down_checks` checks in a row (the faults)."""
        for ch in down:
            self.channels.setdefault(ch, _Channel()).down_checks += 1
        for ch, c in self.channels.items():
            if ch not in down:
                c.down_checks = 0
                if c.last_restart is None or now - c.last_restart >= self.min_interval_s:
                    c.restarts = 0  # back and stable for an interval: a later outage starts afresh
        return {ch for ch in down if self.channels[ch].down_checks >= self.down_checks}

    def call(self, ch: str, now: float) -> RemedyCall | None:
        """What to do about down channel `ch` now: a restart, the disable once restarts are spent, or None (the
        last restart is less than `min_interval_s` ago: wait)."""
        c = self.channels.setdefault(ch, _Channel())
        if c.restarts < self.restarts:
            if c.last_restart is not None and now - c.last_restart < self.min_interval_s:
                return None
            return RemedyCall("channel_restart", {"channel": ch})
        return RemedyCall("channel_disable", {"channel": ch})

    def wait_until(self, chs: set[str]) -> float:
        """The earliest moment a waiting channel of `chs` may be restarted again."""
        times = [c.last_restart + self.min_interval_s for ch in chs if (c := self.channels.get(ch)) and c.last_restart]
        return min(times, default=0.0)

    def restarted(self, ch: str, now: float) -> None:
        c = self.channels.setdefault(ch, _Channel())
        c.restarts += 1
        c.last_restart = now

    def start_suppressed(self, suppressed: list[str], now: float) -> list[RemedyCall]:
        """`channel_start` for each channel the breaker suppressed, at most once per `min_interval_s` each."""
        out = []
        for ch in suppressed:
            c = self.channels.setdefault(ch, _Channel())
            if c.last_start is None or now - c.last_start >= self.min_interval_s:
                out.append(RemedyCall("channel_start", {"channel": ch}))
        return out

    def started(self, ch: str, now: float) -> None:
        self.channels.setdefault(ch, _Channel()).last_start = now


@dataclass
class Disabled:
    plugin: str
    at: float
    resume_seq: int  # `clawmedic resume` requests seen when it was disabled: a later one re-enables it
    error: str | None = None
    snapshot: str | None = None


@dataclass
class PluginQuarantine:
    min_interval_s: float
    path: Path | None = None
    disabled: dict[str, Disabled] = field(default_factory=dict)
    last_try: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.path is not None:
            self.disabled = load_disabled(self.path)

    def failing(self, plugins: list[Plugin]) -> list[Plugin]:
        """Plugins in error that clawmedic may disable: enabled, not built in."""
        return [p for p in plugins if p.failing and not p.builtin]

    def calls(self, plugins: list[Plugin], now: float) -> list[RemedyCall]:
        out = []
        for p in self.failing(plugins):
            last = self.last_try.get(p.id)
            if last is None or now - last >= self.min_interval_s:
                out.append(RemedyCall("plugin_disable", {"plugin": p.id}))
        return out

    def tried(self, plugin: str, now: float) -> None:
        self.last_try[plugin] = now

    def record(self, plugin: str, now: float, resume_seq: int, error: str | None, snapshot: str | None) -> None:
        self.disabled[plugin] = Disabled(plugin, now, resume_seq, error, snapshot)
        self._save()

    def to_enable(self, resume_seq: int) -> list[str]:
        """The plugins clawmedic disabled before the latest `clawmedic resume` request."""
        return sorted(p for p, d in self.disabled.items() if resume_seq > d.resume_seq)

    def enabled(self, plugin: str) -> None:
        self.disabled.pop(plugin, None)
        self.last_try.pop(plugin, None)
        self._save()

    def _save(self) -> None:
        if self.path is None:
            return
        data = {p: d.__dict__ for p, d in self.disabled.items()}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path, json.dumps(data, indent=1, sort_keys=True) + "\n")
        except OSError as e:
            log.warning("cannot record the plugins clawmedic disabled in %s: %s", self.path, e)


def load_disabled(path: Path) -> dict[str, Disabled]:
    """The record of disabled plugins; an entry that is not one (wrong types, an id that is not a plugin id) is
    left out, and an unreadable file is an empty record (logged)."""
    try:
        raw: Any = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        log.warning("%s is unreadable (%s): no plugin is remembered as disabled by clawmedic", path, e)
        return {}
    out: dict[str, Disabled] = {}
    for key, d in (raw if isinstance(raw, dict) else {}).items():
        pid = valid_plugin_id(key)
        if pid is None or not isinstance(d, dict):
            continue
        at, seq = d.get("at"), d.get("resume_seq")
        if not isinstance(at, int | float) or not isinstance(seq, int) or isinstance(seq, bool):
            continue
        err, snap = d.get("error"), d.get("snapshot")
        out[pid] = Disabled(
            pid, float(at), seq, err if isinstance(err, str) else None, snap if isinstance(snap, str) else None
        )
    return out


# --- the findings the healer treats -------------------------------------------------------------------------------

CHANNEL_ADVICE = "Check the channel's credentials and network, then `openclaw config set channels.<id>.enabled true`."
PLUGIN_ADVICE = (
    "Fix or update the plugin (`openclaw plugins doctor` names the failure), then `clawmedic resume TARGET` enables "
    "it again."
)
BREAKER = "restart-loop breaker"  # in the account's lastError when the breaker held it back (OpenClaw 2026.9.6)
SUPPRESSED_ADVICE = "OpenClaw's crash-loop breaker left these channels stopped; fix what crashed the gateway."


def part_findings(
    target: str,
    state: dict[str, Any],
    findings: list[Finding],
    channels: ChannelRestarts,
    plugins: PluginQuarantine,
    now: float,
    *,
    start_suppressed: bool = True,
) -> tuple[list[Finding], dict[str, float]]:
    """The rules' findings with channel-down replaced by the restart policy's (a fault only after `down_checks`
    checks; restart before disable; a rule held while a restart interval runs), plus `plugin-error` and
    `channel-suppressed`. Returns the findings and the holds (rule → not before)."""
    ev = Evidence(target, cause="gateway_check", gateway=state)
    down = {ch: why for ch, why in failing_channels(ev).items() if valid_channel_id(ch)}
    for ch, why in disconnected_channels(state.get("channels") or {}).items():
        down.setdefault(ch, why)
    accounts = state.get("channels") or {}
    held = [ch for ch in state.get("suppressed") or [] if valid_channel_id(ch)]
    for ch in held:
        down.pop(ch, None)  # a suppressed channel is not down: OpenClaw chose not to start it
    # /ready's `suppressed` also lists channels with ambient credentials (from the environment), which OpenClaw
    # never auto-starts on purpose: only those its crash-loop breaker held back are started again
    suppressed = [ch for ch in held if any(BREAKER in str(a.get("last_error") or "") for a in accounts.get(ch) or [])]
    due = channels.observe(set(down), now)
    out = [f for f in findings if f.rule != "channel-down"]
    hold: dict[str, float] = {}
    if due:
        calls = [c for ch in sorted(due) if (c := channels.call(ch, now)) is not None]
        if not calls:
            hold["channel-down"] = channels.wait_until(due)
        detail = "; ".join(
            f"channel {ch} is down ({down[ch]}) for {channels.channels[ch].down_checks} checks" for ch in sorted(due)
        )
        out.append(Finding("channel-down", "a channel is failing", 0.5, detail, calls, CHANNEL_ADVICE))
    if suppressed:
        calls = channels.start_suppressed(suppressed, now) if start_suppressed else []
        detail = f"the crash-loop breaker suppressed channel(s) {', '.join(suppressed)} on a now stable gateway"
        out.append(
            Finding(
                "channel-suppressed",
                "channels the crash-loop breaker suppressed",
                0.6,
                detail,
                calls,
                SUPPRESSED_ADVICE,
            )
        )
    listed = [_plugin(p) for p in state.get("plugins") or []]
    failing = [p for p in listed if p.failing]  # built-in ones too: reported, never disabled (no remedy: humans)
    if failing:
        detail = "; ".join(
            f"plugin {p.id} ({'built in' if p.builtin else p.origin}) is in error: {p.error}" for p in failing
        )
        calls = plugins.calls(failing, now)
        ours = plugins.failing(failing)
        if not calls and ours:  # a disable was tried less than min_interval_s ago: wait, do not escalate
            hold["plugin-error"] = min(plugins.last_try.get(p.id, now) for p in ours) + plugins.min_interval_s
        out.append(Finding("plugin-error", "a plugin is in error", 0.6, detail, calls, PLUGIN_ADVICE))
    return out, hold


def _plugin(d: dict[str, Any]) -> Plugin:
    return Plugin(
        str(d.get("id")), d.get("enabled") is True, str(d.get("status")), str(d.get("origin")), d.get("error")
    )


__all__ = ["ChannelRestarts", "Disabled", "PluginQuarantine", "load_disabled", "part_findings"]
