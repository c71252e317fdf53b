"""`clawmedic stats`: what the last days looked like, from the records clawmedic already keeps.

- incidents and time to recover (median, p90) from the incident store;
- uptime % per target from the event stream: the share of the time the daemon watched the target in which it was
  live (probation, healthy or suspect). Time without a daemon is not counted either way; a daemon that died
  without a `daemon_stopped` event is taken to have watched until its next start;
- the tier that healed each closed incident: `restart` (the ladder alone), `known_good` (the known-good config
  restored), `rule` (a doctor rule's remedy), `llm` (a remedy the LLM doctor chose), `human` (it gave up and a
  person brought it back); incidents still open or given up count as `unresolved`;
- the top root causes: the doctor's diagnosis when there is one, else the ladder's cause, else the reason.

Pure functions of the records and a `now`, so they are tested without a clock.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from clawmedic.ladder.states import LIVE_STATES
from clawmedic.store.incidents import Incident, IncidentStore
from clawmedic.text import clip

TIERS = ("restart", "known_good", "rule", "llm", "human")
_LIVE = frozenset(s.value for s in LIVE_STATES)
_SINCE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str) -> float:
    """'7d', '12h', '30m', '2w', '90s' → seconds; raises ValueError with a sentence."""
    m = _SINCE.match(text)
    if m is None or float(m.group(1)) <= 0:
        raise ValueError(f"--since {text!r} is not a duration such as 30m, 12h, 7d or 2w")
    return float(m.group(1)) * _UNIT_S[m.group(2)]


def duration(seconds: float | None) -> str:
    """'45 s', '12 min 3 s', '3 h 12 min', '2 d 4 h', '7 d' (two units at most, a zero second one left out)."""
    if seconds is None:
        return "—"
    s = max(0, int(seconds))
    if s < 60:
        return f"{max(seconds, 0.0):.1f} s" if seconds < 10 else f"{s} s"
    big, small = next((u, v) for u, v in ((86400, 3600), (3600, 60), (60, 1)) if s >= u)
    names = {86400: "d", 3600: "h", 60: "min", 1: "s"}
    rest = s % big // small
    return f"{s // big} {names[big]}" + (f" {rest} {names[small]}" if rest else "")


def quantile(values: list[float], q: float) -> float | None:
    """Nearest-rank quantile (p90 of 10 values is the 9th smallest); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def healed_by(inc: Incident) -> str:
    """The highest tier that took part in healing a closed incident, or 'unresolved'."""
    if inc.closed_at is None or inc.status != "recovered":
        return "unresolved"
    kinds = {e.kind for e in inc.timeline}
    states = {str(e.detail.get("from")) for e in inc.timeline if e.kind == "state"}
    if "gave_up" in states or "maintenance" in states:
        return "human"
    ok = [e.detail for e in inc.timeline if e.kind == "remedy" and e.detail.get("status") == "ok"]
    if any(d.get("by") == "llm" for d in ok):
        return "llm"
    if any("known_good" not in str(d.get("remedy")) for d in ok):
        return "rule"
    if ok or "config_restored" in kinds:
        return "known_good"
    return "restart"


def root_cause(inc: Incident) -> str:
    for e in inc.timeline:
        if e.kind == "diagnosis":
            findings = e.detail.get("findings") or []
            causes = [f for f in findings if isinstance(f, Mapping) and f.get("kind", "cause") == "cause"]
            if causes:
                return str(causes[0].get("title") or causes[0].get("rule"))
    if inc.cause:
        return inc.cause
    return clip(re.sub(r"\d+", "N", inc.reason), 80)  # "exited 1: … pid 4242" groups with its repeats


@dataclass
class TargetStats:
    incidents: int = 0
    mttr_median_s: float | None = None
    mttr_p90_s: float | None = None
    uptime_pct: float | None = None  # None: never watched in the window
    watched_s: float = 0.0
    healed_by: dict[str, int] = field(default_factory=dict)


@dataclass
class Stats:
    since: float
    until: float
    incidents: int
    mttr_median_s: float | None
    mttr_p90_s: float | None
    healed_by: dict[str, int]  # tier (and 'unresolved') → incidents
    top_causes: list[tuple[str, int]]
    targets: dict[str, TargetStats]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["top_causes"] = [{"cause": c, "incidents": n} for c, n in self.top_causes]
        return d


def uptime(events: Iterable[Mapping[str, Any]], since: float, now: float) -> dict[str, tuple[float, float]]:
    """target → (seconds watched, seconds live) within [since, now], from `state` and daemon start/stop events."""
    watched: dict[str, float] = {}
    live: dict[str, float] = {}
    state: dict[str, str] = {}  # the last known state of each target while a daemon runs
    changed_at: dict[str, float] = {}
    running = False

    def close(target: str, at: float) -> None:
        start, end = max(changed_at[target], since), min(at, now)
        if end > start:
            watched[target] = watched.get(target, 0.0) + end - start
            if state[target] in _LIVE:
                live[target] = live.get(target, 0.0) + end - start

    def stop_all(at: float) -> None:
        for t in list(state):
            close(t, at)
        state.clear()
        changed_at.clear()

    for e in sorted(events, key=lambda e: float(e.get("at") or e.get("ts") or 0.0)):
        at = float(e.get("at") or e.get("ts") or 0.0)
        kind = e.get("kind")
        if kind in ("daemon_started", "daemon_stopped"):
            stop_all(at)
            running = kind == "daemon_started"
        elif kind == "state" and isinstance(e.get("target"), str):
            t = e["target"]
            if t in state:
                close(t, at)
            state[t], changed_at[t] = str(e.get("new")), at
    if running:
        stop_all(now)
    return {t: (w, live.get(t, 0.0)) for t, w in watched.items()}


def compute(
    incidents: Iterable[Incident], events: Iterable[Mapping[str, Any]], since: float, now: float, top: int = 5
) -> Stats:
    chosen = [i for i in incidents if i.detected_at >= since]
    per: dict[str, TargetStats] = {}
    ttr: dict[str, list[float]] = {}
    tiers: Counter[str] = Counter()
    causes: Counter[str] = Counter()
    for inc in chosen:
        ts = per.setdefault(inc.target, TargetStats())
        ts.incidents += 1
        tier = healed_by(inc)
        tiers[tier] += 1
        ts.healed_by[tier] = ts.healed_by.get(tier, 0) + 1
        causes[root_cause(inc)] += 1
        if inc.time_to_recover_s is not None:
            ttr.setdefault(inc.target, []).append(max(0.0, inc.time_to_recover_s))
    for target, (watched_s, live_s) in uptime(events, since, now).items():
        ts = per.setdefault(target, TargetStats())
        ts.watched_s = round(watched_s, 1)
        ts.uptime_pct = round(100.0 * live_s / watched_s, 3) if watched_s > 0 else None
    for target, values in ttr.items():
        per[target].mttr_median_s = quantile(values, 0.5)
        per[target].mttr_p90_s = quantile(values, 0.9)
    every = [v for values in ttr.values() for v in values]
    return Stats(
        since=since,
        until=now,
        incidents=len(chosen),
        mttr_median_s=quantile(every, 0.5),
        mttr_p90_s=quantile(every, 0.9),
        healed_by={t: tiers.get(t, 0) for t in (*TIERS, "unresolved")},
        top_causes=causes.most_common(top),
        targets=dict(sorted(per.items())),
    )


def read_events(path: Path) -> list[dict[str, Any]]:
    """The state changes and daemon starts/stops in `path` and its rotated predecessor (`.1`); a line cut short by
    a crash is skipped."""
    out: list[dict[str, Any]] = []
    for p in (path.with_name(path.name + ".1"), path):
        try:
            text = p.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            if '"kind":"state"' not in line and '"kind":"daemon_' not in line:
                continue  # the only kinds uptime needs; a week of events is parsed in milliseconds, not seconds
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                out.append(event)
    return out


def gather(incidents: IncidentStore, events_file: Path, since: float, now: float) -> Stats:
    """`compute` over the store's incidents detected since `since` and the event stream."""
    found = [incidents.get(i.id) for i in incidents.list(limit=1_000_000) if i.detected_at >= since]
    return compute([i for i in found if i is not None], read_events(events_file), since, now)
