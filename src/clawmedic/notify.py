"""Tier 4, humans last: tell a person, once, with the whole story — through Apprise (any of its URL schemes).

Three parts, each replaceable in a test:

- `NotifyPolicy` decides *what* to tell and *when*, from the daemon's events and a time it is given (pure, no I/O):
  grouped per incident (an escalation waits `group_wait_s` for the doctor's verdict, so one message carries both),
  deduplicated (one message per incident and kind; a second escalation of the same incident tells nobody again),
  a `still_down` reminder every `repeat_interval_s` while the target is down, and one `recovered` follow-up.
- `Outbox`, an on-disk queue (SQLite, 0600, in the state folder): one row per message and destination, retried with
  exponential backoff until delivered or `give_up_after_s` old. It survives a daemon restart. It keeps the URL as
  configured ("${NAME}" unresolved), so no resolved secret is written to disk.
- `Sender`, the one seam to the outside: `AppriseSender` delivers to one URL, in a worker thread, catching every
  error. The whole title and body go through the redactor again just before sending.

`Notifier` is the `DaemonPlugin` that ties them together; it never raises and never returns (a plugin task that
ended would stop the daemon). `send_now` is the direct path used by `clawmedic notify test` and the guardian.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import datetime as dt
import itertools
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol
from urllib.parse import urlsplit

from clawmedic.config import LoadedConfig, NotifyKind, Severity
from clawmedic.errors import ConfigInvalid
from clawmedic.paths import ensure_private_dir
from clawmedic.process.launcher import tail_lines
from clawmedic.store.health import is_write_failure, state_writes
from clawmedic.store.incidents import Incident, IncidentStore
from clawmedic.store.sqlite import Db, MovedAside

if TYPE_CHECKING:
    from clawmedic.supervisor import Context

log = logging.getLogger("clawmedic.notify")

NotifyType = Literal["info", "success", "warning", "failure"]
_TICK_S = 0.5  # how often the policy looks at its deadlines (group wait, reminders) without events
_SENT_KEPT_S = 7 * 86400.0  # delivered rows are kept a week for `notify` forensics, then pruned
_TAIL_LINE_CHARS = 200  # one log line in a message; longer lines are cut (after redaction)
# Target states in which the target is not down for a human's purposes (no reminder then).
_NOT_DOWN_STATES = frozenset({"probation", "healthy", "maintenance"})


def queue_path(state_dir: Path) -> Path:
    return state_dir / "notify-queue.sqlite"


# --- what to tell: the policy (pure) ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Alert:
    """One message to tell, before rendering. `severity` routes it; a follow-up keeps its first message's."""

    key: str  # dedup key: "incident:3:gave_up", "incident:3:still_down:2"
    kind: NotifyKind
    severity: Severity
    notify_type: NotifyType
    target: str
    incident: int | None
    at: float
    facts: dict[str, Any] = field(default_factory=dict)  # from the events: reason, cause, diagnosis, issues…


@dataclass
class _Case:
    """What the policy remembers about one escalated incident until it closes."""

    target: str
    incident: int
    reason: str = ""
    cause: str = ""
    diagnosis: str = ""
    pending_since: float | None = None  # an escalation waiting out the group wait
    told: set[str] = field(default_factory=set)  # kinds decided (dedup), whether or not `events` lets them out
    reached_someone: bool = False  # a down message actually went out: then, and only then, a follow-up does too
    last_told_at: float | None = None  # the last down message (first one or reminder)
    reminders: int = 0


class NotifyPolicy:
    """Turns events (and the passing of time) into alerts. No I/O: `now` is always given."""

    def __init__(self, *, group_wait_s: float, repeat_interval_s: float, kinds: Iterable[str]) -> None:
        self.group_wait_s = group_wait_s
        self.repeat_interval_s = repeat_interval_s
        self.kinds = frozenset(kinds)
        self.cases: dict[int, _Case] = {}
        self.latent: dict[int, bool] = {}  # latent-fault incident -> whether its message went out
        self.gateway_faults: dict[int, bool] = {}  # gateway-fault incident -> whether its message went out
        self.target_state: dict[str, str] = {}

    def observe(self, event: dict[str, Any], now: float) -> list[Alert]:
        kind = event.get("kind")
        target = str(event.get("target", ""))
        inc = event.get("incident")
        if kind == "state":
            new = str(event.get("new", ""))
            self.target_state[target] = new
            if new != "escalated":  # the doctor handed it back (relaunch), or a human paused it: nothing to tell yet
                for case in self.cases.values():
                    if case.target == target:
                        case.pending_since = None
            return []
        if kind in ("state_writes_failing", "state_writes_recovered"):  # about the daemon itself: one each episode
            facts = {k: event.get(k) for k in ("failing", "state_dir", "down_s")}
            ntype: NotifyType = "failure" if kind == "state_writes_failing" else "success"
            key = f"daemon:{kind}:{event.get('ts')}"
            return self._allowed([Alert(key, kind, "critical", ntype, "", None, now, facts)])
        if not isinstance(inc, int):
            return []
        if kind == "escalated":
            case = self.cases.setdefault(inc, _Case(target, inc))
            case.reason = str(event.get("reason", "")) or case.reason
            case.cause = str(event.get("cause", "")) or case.cause
            if not case.told and case.pending_since is None:
                case.pending_since = now
            out = self._flush(now) if self.group_wait_s <= 0 else []
            return self._allowed(out)
        if kind == "gave_up":
            case = self.cases.setdefault(inc, _Case(target, inc))
            case.diagnosis = str(event.get("reason", "")) or case.diagnosis
            case.pending_since = None
            if "gave_up" in case.told:
                return []  # the same incident gave up again (after a `resume`): told already
            case.told |= {"escalated", "gave_up"}
            case.last_told_at = now
            return self._allowed([self._alert(case, "gave_up", now)])
        if kind == "incident_closed":
            closed = self.cases.pop(inc, None)
            if closed is None or not closed.reached_someone:
                if event.get("outcome") == "recovered" and "restarted" in self.kinds:  # opt-in: every healed restart
                    facts = {"outcome": "recovered"}
                    return [Alert(f"incident:{inc}:restarted", "restarted", "info", "success", target, inc, now, facts)]
                return []  # healed before anyone had to hear of it: the report is enough
            facts = {"outcome": event.get("outcome", "recovered")}
            return self._allowed([self._alert(closed, "recovered", now, **facts)])
        if kind == "latent_config_fault":
            if inc in self.latent:
                return []
            self.latent[inc] = "latent_config_fault" in self.kinds
            facts = {k: event.get(k) for k in ("issues", "stage", "path")}
            alert = Alert(
                f"incident:{inc}:latent_config_fault",
                "latent_config_fault",
                "warning",
                "warning",
                target,
                inc,
                now,
                facts,
            )
            return self._allowed([alert])
        if kind == "gateway_fault_escalated":
            if inc in self.gateway_faults:
                return []
            self.gateway_faults[inc] = "gateway_fault" in self.kinds
            facts = {"rule": event.get("rule"), "status": event.get("status"), "reason": event.get("why")}
            alert = Alert(
                f"incident:{inc}:gateway_fault", "gateway_fault", "critical", "failure", target, inc, now, facts
            )
            return self._allowed([alert])
        if kind == "gateway_fault_resolved":
            if not self.gateway_faults.pop(inc, False):
                return []
            facts = {"outcome": event.get("outcome")}
            alert = Alert(
                f"incident:{inc}:gateway_fault_resolved",
                "gateway_fault_resolved",
                "critical",
                "success",
                target,
                inc,
                now,
                facts,
            )
            return self._allowed([alert])
        if kind == "latent_config_resolved":
            if not self.latent.pop(inc, False):
                return []
            alert = Alert(
                f"incident:{inc}:latent_config_resolved",
                "latent_config_resolved",
                "warning",
                "success",
                target,
                inc,
                now,
            )
            return self._allowed([alert])
        return []

    def tick(self, now: float) -> list[Alert]:
        return self._allowed(self._flush(now) + self._reminders(now))

    def remember(self, target: str, incident: int, kind: str, told_at: float) -> None:
        """A message a previous daemon sent about an incident still open (a daemon restart): it is not sent again,
        and its follow-ups (reminders, `recovered`) still go out."""
        case = self.cases.setdefault(incident, _Case(target, incident))
        case.told |= {kind, "escalated"} if kind in ("gave_up", "still_down") else {kind}
        case.reminders += kind == "still_down"
        case.reached_someone = True
        case.last_told_at = max(case.last_told_at or 0.0, told_at)

    def next_deadline(self) -> float | None:
        times = [c.pending_since + self.group_wait_s for c in self.cases.values() if c.pending_since is not None]
        if self.repeat_interval_s > 0:
            times += [
                c.last_told_at + self.repeat_interval_s for c in self.cases.values() if c.last_told_at is not None
            ]
        return min(times, default=None)

    def _flush(self, now: float) -> list[Alert]:
        out = []
        for case in self.cases.values():
            if case.pending_since is None or now < case.pending_since + self.group_wait_s:
                continue
            case.pending_since = None
            if self.target_state.get(case.target, "escalated") != "escalated":
                continue
            case.told.add("escalated")
            case.last_told_at = now
            out.append(self._alert(case, "escalated", now))
        return out

    def _reminders(self, now: float) -> list[Alert]:
        if self.repeat_interval_s <= 0:
            return []
        out = []
        for case in self.cases.values():
            if case.last_told_at is None or now < case.last_told_at + self.repeat_interval_s:
                continue
            case.last_told_at = now
            if self.target_state.get(case.target) in _NOT_DOWN_STATES:
                continue  # paused by a human, or coming back: no reminder this round
            case.reminders += 1
            out.append(self._alert(case, "still_down", now, reminder=case.reminders))
        return out

    def _alert(self, case: _Case, kind: NotifyKind, now: float, **extra: Any) -> Alert:
        if kind != "recovered" and kind in self.kinds:
            case.reached_someone = True
        key = f"incident:{case.incident}:{kind}" + (f":{extra['reminder']}" if kind == "still_down" else "")
        notify_type: NotifyType = "success" if kind == "recovered" else "failure"
        facts = {"reason": case.reason, "cause": case.cause, "diagnosis": case.diagnosis, **extra}
        return Alert(key, kind, "critical", notify_type, case.target, case.incident, now, facts)

    def _allowed(self, alerts: list[Alert]) -> list[Alert]:
        return [a for a in alerts if a.kind in self.kinds]


# --- where to: destinations ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Destination:
    key: str  # where it is configured, e.g. "daemon.notify.urls[0]"
    url: str  # as configured: "${NAME}" secrets unresolved
    severities: frozenset[str]
    targets: frozenset[str] | None  # None: every target's messages

    def wants(self, target: str | None, severity: str) -> bool:
        """Does this destination take a message of `severity` about `target` (None: about the whole daemon)?"""
        return severity in self.severities and (self.targets is None or target is None or target in self.targets)


def destinations(loaded: LoadedConfig) -> list[Destination]:
    """Every configured notification URL, with the messages it takes."""
    cfg = loaded.config
    opted_out = {name for name, t in cfg.targets.items() if t.notify is not None and not t.notify.daemon_urls}
    shared_targets = frozenset(n for n in cfg.targets if n not in opted_out) if opted_out else None
    out = [
        Destination(f"daemon.notify.urls[{i}]", u, frozenset(cfg.daemon.notify.severities), shared_targets)
        for i, u in enumerate(cfg.daemon.notify.urls)
    ]
    for name, t in cfg.targets.items():
        if t.notify is not None:
            out += [
                Destination(f"targets.{name}.notify.urls[{i}]", u, frozenset(t.notify.severities), frozenset({name}))
                for i, u in enumerate(t.notify.urls)
            ]
    return out


def describe_url(url: str) -> str:
    """A URL safe to print: scheme and host only (Apprise URLs carry tokens in every other part)."""
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. "http://[::1": not even its host can be shown
        return f"{url.split(':', 1)[0][:20]}://…" if ":" in url else "(not a URL)"
    return f"{parts.scheme}://{parts.hostname or ''}{':' + str(parts.port) if _port(parts) else ''}/…"


def _port(parts: Any) -> int | None:
    try:
        port: int | None = parts.port
    except ValueError:
        return None
    return port


def register_url_secrets(loaded: LoadedConfig, url: str) -> None:
    """Redact what looks like a token inside a resolved URL (a password, a long path segment or query value),
    even when the user wrote it literally instead of as "${NAME}": Apprise's error texts quote the URL. (The config
    registers every configured URL when it loads; this covers URLs resolved later.)"""
    loaded.redactor.add_url(url, apprise=True)


def check_urls(loaded: LoadedConfig) -> None:
    """Raise `ConfigInvalid` (naming the key) for a URL Apprise does not understand."""
    import apprise

    for d in destinations(loaded):
        resolved = loaded.resolve(d.url, d.key)
        register_url_secrets(loaded, resolved)
        if not apprise.Apprise().add(resolved):
            raise ConfigInvalid(
                f"{loaded.source}: {d.key}: Apprise does not understand the URL {describe_url(d.url)} "
                "(see https://github.com/caronc/apprise/wiki for the schemes)."
            )


# --- the outbox (on disk) -------------------------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    dest TEXT NOT NULL,
    dest_key TEXT NOT NULL,
    kind TEXT NOT NULL,
    notify_type TEXT NOT NULL,
    target TEXT,
    incident INTEGER,
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at REAL NOT NULL,
    next_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT 'pending',
    last_error TEXT,
    sent_at REAL,
    UNIQUE (key, dest)
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(status, next_at);
"""


@dataclass(frozen=True)
class Queued:
    id: int
    key: str
    dest: str
    dest_key: str
    kind: str
    notify_type: str
    target: str | None
    incident: int | None
    title: str
    body: str
    created_at: float
    next_at: float
    attempts: int
    status: str
    last_error: str | None
    sent_at: float | None


_COLS = (
    "id, key, dest, dest_key, kind, notify_type, target, incident, title, body, created_at, next_at, attempts, "
    "status, last_error, sent_at"
)


class Outbox:
    """Messages waiting for delivery (and those delivered, for a week). Bodies are stored already redacted."""

    def __init__(self, path: Path, on_moved: Callable[[MovedAside], None] | None = None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db = Db(path, _SCHEMA, on_moved=on_moved)  # a corrupt file is moved aside, not fatal

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def add(
        self, alert_key: str, dest: Destination, kind: str, notify_type: str, target: str | None, incident: int | None,
        title: str, body: str, now: float,
    ) -> bool:  # fmt: skip
        """Queue one message for one destination; False when that very message was queued before."""
        with self._lock:
            cur = self._db.execute(
                "INSERT OR IGNORE INTO outbox (key, dest, dest_key, kind, notify_type, target, incident, title, body, "
                "created_at, next_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (alert_key, dest.url, dest.key, kind, notify_type, target, incident, title, body, now, now),
            )
        return cur.rowcount > 0

    def due(self, now: float) -> list[Queued]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLS} FROM outbox WHERE status = 'pending' AND next_at <= ? ORDER BY id",  # noqa: S608
                (now,),
            ).fetchall()
        return [Queued(*r) for r in rows]

    def all(self, status: str | None = None) -> list[Queued]:
        q = f"SELECT {_COLS} FROM outbox"  # noqa: S608
        args: tuple[Any, ...] = ()
        if status is not None:
            q += " WHERE status = ?"
            args = (status,)
        with self._lock:
            rows = self._db.execute(q + " ORDER BY id", args).fetchall()
        return [Queued(*r) for r in rows]

    def next_due(self) -> float | None:
        with self._lock:
            row = self._db.execute("SELECT MIN(next_at) FROM outbox WHERE status = 'pending'").fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def mark_sent(self, row_id: int, now: float) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE outbox SET status = 'sent', sent_at = ?, attempts = attempts + 1, last_error = NULL "
                "WHERE id = ?",
                (now, row_id),
            )

    def mark_failed(self, row: Queued, error: str, next_at: float) -> None:
        """Count a failed attempt; every pending message to the same URL waits with it (order is kept)."""
        with self._lock:
            self._db.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_at = ? WHERE id = ?",
                (error, next_at, row.id),
            )
            self._db.execute(
                "UPDATE outbox SET next_at = MAX(next_at, ?) WHERE dest = ? AND status = 'pending'",
                (next_at, row.dest),
            )

    def drop(self, row_id: int, error: str) -> None:
        with self._lock:
            self._db.execute("UPDATE outbox SET status = 'dropped', last_error = ? WHERE id = ?", (error, row_id))

    def retry_now(self, now: float) -> None:
        """A new daemon tries its whole queue at once instead of waiting out the old backoff."""
        with self._lock:
            self._db.execute("UPDATE outbox SET next_at = ? WHERE status = 'pending'", (now,))

    def prune(self, now: float) -> None:
        with self._lock:
            self._db.execute(
                "DELETE FROM outbox WHERE status != 'pending' AND COALESCE(sent_at, created_at) < ?",
                (now - _SENT_KEPT_S,),
            )


# --- delivery: the seam ---------------------------------------------------------------------------------------------


class Sender(Protocol):
    def send(self, url: str, title: str, body: str, notify_type: NotifyType) -> tuple[bool, str]:
        """Deliver one message to one resolved URL; return (delivered, error text). Must not raise."""
        ...


def quiet_apprise() -> None:
    """Apprise logs URLs (tokens included) at WARNING; with no handler of its own those lines would reach stderr
    through logging's last resort. Keep them inside: errors are captured per delivery and redacted."""
    lg = logging.getLogger("apprise")
    lg.propagate = False
    if not any(isinstance(h, logging.NullHandler) for h in lg.handlers):
        lg.addHandler(logging.NullHandler())


class _Capture(logging.Handler):
    """Apprise's warnings during one delivery: the error text of a failure (redacted before it is kept)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage().replace("\n", " ")[:500])


class AppriseSender:
    """Deliver through Apprise, one URL at a time (so a failing receiver never re-sends to a working one)."""

    def __init__(self) -> None:
        quiet_apprise()

    def send(self, url: str, title: str, body: str, notify_type: NotifyType) -> tuple[bool, str]:
        try:
            import apprise

            ap = apprise.Apprise()
            if not ap.add(url):
                return False, "Apprise does not understand this URL"
            capture = _Capture()
            logger = logging.getLogger("apprise")
            logger.addHandler(capture)
            try:
                ok = bool(
                    ap.notify(
                        body=body,
                        title=title,
                        notify_type=notify_type,  # Apprise's own names: info, success, warning, failure
                        body_format="text",  # plain text, line breaks kept (an email is not reflowed as HTML)
                    )
                )
            finally:
                logger.removeHandler(capture)
            return ok, "" if ok else (capture.lines[-1] if capture.lines else "delivery failed")
        except Exception as e:  # anything from Apprise or a plugin: never up into the daemon
            return False, f"{type(e).__name__}: {e}"


# --- rendering ---------------------------------------------------------------------------------------------------


def _t(ts: float | None) -> str:
    return "—" if ts is None else dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _dur(s: float) -> str:
    s = max(0.0, s)
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def log_source(loaded: LoadedConfig, target: str) -> Path | None:
    """The log whose tail a message carries: a managed target's console output (it has what the gateway printed
    while dying, before its own logging was up), else the target's `log_file`."""
    cfg = loaded.targets.get(target)
    if cfg is None:
        return None
    output = loaded.state_dir / "targets" / target / "output.log"
    candidates = [output, cfg.log_file] if cfg.start.mode == "managed" else [cfg.log_file, output]
    for c in candidates:
        if c is not None and c.is_file() and c.stat().st_size > 0:
            return c
    return None


def log_tail(loaded: LoadedConfig, target: str, lines: int) -> tuple[Path | None, list[str]]:
    """The last `lines` lines of the target's log, each redacted *before* it is cut (a cut secret would not match)."""
    path = log_source(loaded, target)
    if path is None or lines <= 0:
        return path, []
    raw = [ln for ln in tail_lines(path, lines * 3) if ln.strip() and not ln.startswith("--- clawmedic:")]
    out = []
    for ln in raw[-lines:]:
        ln = loaded.redactor.text(ln)
        out.append(ln if len(ln) <= _TAIL_LINE_CHARS else ln[: _TAIL_LINE_CHARS - 1] + "…")
    return path, out


_HEADLINES: dict[str, str] = {
    "escalated": "{target} escalated: a restart will not fix it and the doctor is still working on it",
    "gave_up": "{target} is down and clawmedic gave up: a human is needed",
    "still_down": "{target} is still down (reminder {reminder}): a human is needed",
    "recovered": "{target} recovered",
    "restarted": "{target} went down and clawmedic restarted it: it is healthy again",
    "latent_config_fault": "{target}: its config on disk is invalid; the next restart would fail",
    "latent_config_resolved": "{target}: its config on disk is valid again",
    "state_writes_failing": "clawmedic cannot write its state folder; it keeps supervising from memory",
    "state_writes_recovered": "clawmedic writes its state folder again",
    "gateway_fault": "{target} is up, but a fault inside it needs a human: clawmedic could not heal it",
    "gateway_fault_resolved": "{target}: the fault inside the gateway is gone",
}
_TITLES: dict[str, str] = {
    "escalated": "{target} escalated",
    "gave_up": "{target} is down — a human is needed",
    "still_down": "{target} is still down",
    "recovered": "{target} recovered",
    "restarted": "{target} restarted and healthy",
    "latent_config_fault": "{target}: latent config fault",
    "latent_config_resolved": "{target}: config valid again",
    "state_writes_failing": "state folder not writable",
    "state_writes_recovered": "state folder writable again",
    "gateway_fault": "{target}: a fault inside the gateway needs a human",
    "gateway_fault_resolved": "{target}: gateway fault resolved",
}


def render(
    alert: Alert, loaded: LoadedConfig, incident: Incident | None, tail: tuple[Path | None, list[str]], now: float
) -> tuple[str, str]:
    """Title and body of one message, redacted as a whole."""
    facts = {"target": alert.target, "reminder": alert.facts.get("reminder", 1)}
    ref = f" (incident #{alert.incident})" if alert.incident is not None else ""
    title = "clawmedic: " + _TITLES[alert.kind].format(**facts) + ref
    lines = [_HEADLINES[alert.kind].format(**facts) + ref + ".", ""]
    lines.append(f"host: {socket.gethostname()}" + (f" · target: {alert.target}" if alert.target else ""))
    if alert.kind.startswith("state_writes_"):
        lines.append(f"state folder: {alert.facts.get('state_dir')}")
        failing = alert.facts.get("failing") or {}
        lines += [f"  - {where}: {why}" for where, why in dict(failing).items()]
        if alert.kind == "state_writes_failing":
            lines.append("Status, events, incidents and logs are not saved until space returns; free some space.")
    down = alert.kind in ("escalated", "gave_up", "still_down")
    if incident is not None:
        if down:
            lines.append(
                f"down since {_t(incident.first_failure_at)} ({_dur(now - incident.first_failure_at)}) · "
                f"restarts: {incident.restarts}"
            )
        if alert.kind in ("recovered", "restarted"):
            ttr = incident.time_to_recover_s
            lines.append(
                f"live again {_t(incident.live_at)}" + (f", {_dur(ttr)} after the first failure" if ttr else "")
            )
        lines.append(f"reason: {incident.reason}")
    escalation = str(alert.facts.get("reason") or "")
    if escalation and (incident is None or escalation != incident.reason):
        lines.append(f"escalated: {escalation}")
    if alert.kind == "gateway_fault":
        lines.append(f"check: {alert.facts.get('rule')} ({alert.facts.get('status')})")
        lines.append("The gateway still serves; see `clawmedic incidents show` for what was tried.")
    if alert.kind in ("latent_config_fault",):
        lines.append(f"file: {alert.facts.get('path')}")
        for issue in list(alert.facts.get("issues") or [])[:10]:
            lines.append(f"  - {issue}")
        lines.append("clawmedic restores the known-good config before any restart; see `clawmedic config diff`.")
    diagnosis, advice = _diagnosis(incident, str(alert.facts.get("diagnosis") or ""))
    if diagnosis and alert.kind != "latent_config_resolved":
        lines.append(f"diagnosis: {diagnosis}")
    if advice and down:
        lines.append(f"advice: {advice}")
    path, tail_text = tail
    if tail_text and down:
        lines += ["", f"last {len(tail_text)} lines of {path}:", *(f"  {ln}" for ln in tail_text)]
    if alert.incident is not None:
        lines += ["", f"full report: clawmedic incidents show {alert.incident} --report --config {loaded.source}"]
        report = loaded.state_dir / "reports" / f"incident-{alert.incident}.md"
        if report.exists():
            lines.append(f"report file: {report}")
    if down:
        lines.append(f"retry after a fix: clawmedic resume {alert.target} --config {loaded.source}")
    body = "\n".join(lines)
    return loaded.redactor.text(title), loaded.redactor.text(body)


def _diagnosis(incident: Incident | None, verdict: str) -> tuple[str, str]:
    findings: list[dict[str, Any]] = []
    if incident is not None:
        for e in reversed(incident.timeline):
            if e.kind == "diagnosis":
                findings = list(e.detail.get("findings") or [])
                break
        if not verdict:
            verdict = next(
                (str(e.detail.get("summary", "")) for e in reversed(incident.timeline) if e.kind == "verdict"), ""
            )
    parts = [f"{f.get('title') or f.get('rule')}: {f.get('detail', '')}" for f in findings[:3]]
    text = "; ".join(parts)
    if verdict and verdict not in text:
        text = f"{text} — {verdict}" if text else verdict
    advice = next((str(f["advice"]) for f in findings if f.get("advice")), "")
    return text, advice


# --- the plugin ------------------------------------------------------------------------------------------------------


class Notifier:
    """The `DaemonPlugin` of tier 4: events in, messages out, through the on-disk queue."""

    def __init__(
        self,
        loaded: LoadedConfig,
        *,
        sender: Sender | None = None,
        clock: Callable[[], float] = time.time,
        tick_s: float = _TICK_S,
    ) -> None:
        self.loaded = loaded
        self.cfg = loaded.config.daemon.notify
        self.destinations = destinations(loaded)
        for d in self.destinations:
            register_url_secrets(loaded, loaded.resolve(d.url, d.key))
        self.policy = NotifyPolicy(
            group_wait_s=self.cfg.group_wait_s, repeat_interval_s=self.cfg.repeat_interval_s, kinds=self.cfg.events
        )
        self.sender: Sender = sender or AppriseSender()
        self.clock = clock
        self.tick_s = tick_s
        self._outbox: Outbox | None = None  # opened by `run`, in the daemon's (private) state folder
        self._inbox: collections.deque[dict[str, Any]] = collections.deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake_policy: asyncio.Event | None = None
        self._wake_delivery: asyncio.Event | None = None
        self._failing: dict[str, str] = {}  # dest -> error, for logging on change
        self._last_error = ""
        # While the state folder takes no writes (full disk): messages the queue could not take, and queued ones
        # delivered (or retried) whose row could not be updated — so a message still goes out, and only once.
        self._unqueued: list[Queued] = []
        self._settled: dict[int, float | None] = {}  # row id -> next try (None: sent or dropped)
        self._unqueued_ids = itertools.count(-1, -1)
        self._on_moved: Callable[[MovedAside], None] | None = None

    # DaemonPlugin
    def on_event(self, event: dict[str, Any]) -> None:
        self._inbox.append(event)
        if self._loop is not None and self._wake_policy is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closing
                self._loop.call_soon_threadsafe(self._wake_policy.set)

    async def run(self, ctx: Context) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake_policy = asyncio.Event()
        self._wake_delivery = asyncio.Event()
        incidents: IncidentStore | None = getattr(ctx, "incidents", None)
        events = getattr(ctx, "events", None)
        if events is not None:
            self._on_moved = lambda m: events.emit(
                "state_db_moved_aside", path=str(m.path), moved_to=str(m.moved_to), error=m.error
            )
        try:
            now = self.clock()
            outbox = self.open()
            await asyncio.to_thread(outbox.prune, now)
            await asyncio.to_thread(outbox.retry_now, now)
            await asyncio.to_thread(self._remember_told, outbox, incidents)
        except OSError as e:
            if not is_write_failure(e):
                self._internal_error("opening the queue", e)
            else:  # a full disk: the queue tidies itself another time; messages go out from memory meanwhile
                state_writes.failed(queue_path(self.loaded.state_dir).name, e)
        except Exception as e:  # an unusable queue must not stop the daemon; the loops keep trying and saying so
            self._internal_error("opening the queue", e)
        self._wake_delivery.set()
        try:
            await asyncio.gather(self._policy_loop(incidents), self._delivery_loop())
        finally:
            if self._outbox is not None:
                self._outbox.close()

    def _remember_told(self, outbox: Outbox, incidents: IncidentStore | None) -> None:
        """After a daemon restart: what the previous daemon told about incidents that are still open."""
        if incidents is None:
            return
        seen: set[str] = set()
        for q in outbox.all():
            if q.kind not in ("escalated", "gave_up", "still_down") or q.incident is None or q.key in seen:
                continue
            seen.add(q.key)
            inc = incidents.get(q.incident)
            if inc is not None and inc.closed_at is None and q.target is not None:
                self.policy.remember(q.target, q.incident, q.kind, q.sent_at or q.created_at)

    def _internal_error(self, doing: str, e: Exception) -> None:
        """Log an internal error once per distinct error (a broken disk would otherwise log twice a second)."""
        key = f"{doing}: {e!r}"
        if key != self._last_error:
            log.error("notify: internal error while %s: %r", doing, e, exc_info=e)
        self._last_error = key

    async def _policy_loop(self, incidents: IncidentStore | None) -> None:
        assert self._wake_policy is not None and self._wake_delivery is not None
        while True:
            self._wake_policy.clear()
            try:
                now = self.clock()
                alerts: list[Alert] = []
                while self._inbox:
                    alerts += self.policy.observe(self._inbox.popleft(), now)
                alerts += self.policy.tick(now)
                queued = await asyncio.to_thread(self.enqueue, alerts, incidents) if alerts else 0
                if queued:
                    self._wake_delivery.set()
            except Exception as e:  # never up into the daemon
                self._internal_error("preparing messages", e)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake_policy.wait(), self.tick_s)

    async def _delivery_loop(self) -> None:
        assert self._wake_delivery is not None
        while True:
            self._wake_delivery.clear()
            wait = self.tick_s * 4
            try:
                await asyncio.to_thread(self.deliver_due)
                next_due = await asyncio.to_thread(self.outbox.next_due)
                held = [r.next_at for r in self._unqueued] + [t for t in self._settled.values() if t is not None]
                next_due = min([*held, *([next_due] if next_due is not None else [])], default=None)
                if next_due is not None:
                    wait = min(max(0.05, next_due - self.clock()), 60.0)
            except Exception as e:  # never up into the daemon
                self._internal_error("delivering", e)
            else:
                if next_due is None:
                    wait = 3600.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake_delivery.wait(), wait)

    def open(self) -> Outbox:
        """Open the on-disk queue (done by `run`)."""
        if self._outbox is None:
            ensure_private_dir(self.loaded.state_dir)
            self._outbox = Outbox(queue_path(self.loaded.state_dir), on_moved=self._on_moved)
        return self._outbox

    @property
    def outbox(self) -> Outbox:
        if self._outbox is None:
            raise RuntimeError("the notifier is not running")
        return self._outbox

    def enqueue(self, alerts: list[Alert], incidents: IncidentStore | None) -> int:
        outbox = self.outbox
        queued = 0
        for alert in alerts:
            incident = incidents.get(alert.incident) if incidents is not None and alert.incident is not None else None
            tail = log_tail(self.loaded, alert.target, self.cfg.log_tail_lines)
            title, body = render(alert, self.loaded, incident, tail, self.clock())
            wanted = [d for d in self.destinations if d.wants(alert.target or None, alert.severity)]
            for d in wanted:
                try:
                    added = outbox.add(
                        alert.key, d, alert.kind, alert.notify_type, alert.target, alert.incident, title, body, alert.at
                    )
                except OSError as e:  # the disk is full: keep it in memory, it still goes out over the network
                    if not is_write_failure(e):
                        raise
                    state_writes.failed(outbox.path.name, e)
                    self._unqueued.append(
                        Queued(next(self._unqueued_ids), alert.key, d.url, d.key, alert.kind, alert.notify_type,
                               alert.target, alert.incident, title, body, alert.at, alert.at, 0, "pending", None, None)
                    )  # fmt: skip
                    added = True
                queued += added
            log.info(
                "notify: %s for %s%s → %d destination(s)",
                alert.kind,
                alert.target or "the daemon",
                f" (incident #{alert.incident})" if alert.incident is not None else "",
                len(wanted),
            )
        return queued

    def deliver_due(self) -> int:
        """Try every message that is due (in this thread); return how many were delivered."""
        delivered = 0
        failed_dests: set[str] = set()
        now = self.clock()
        rows = [r for r in self._unqueued if r.next_at <= now]
        for r in self.outbox.due(now):
            if r.id not in self._settled:
                rows.append(r)
            elif (at := self._settled[r.id]) is not None and at <= now:
                rows.append(dataclasses.replace(r, next_at=at))
        for row in rows:
            if row.dest in failed_dests:
                continue  # that receiver just failed: its other messages wait with the first one
            ok = self._deliver(row)
            delivered += ok
            if not ok:
                failed_dests.add(row.dest)
        return delivered

    def _deliver(self, row: Queued) -> bool:
        now = self.clock()
        where = describe_url(row.dest)
        try:
            url = self.loaded.resolve(row.dest, row.dest_key)
        except KeyError as e:  # queued by a daemon whose config had a secret this one lacks
            why = f"secret {e} is no longer configured"
            self._settle(row, None, lambda: self.outbox.drop(row.id, why))
            log.error("notify: dropped message #%d to %s: secret %s is no longer configured", row.id, where, e)
            return False
        redact = self.loaded.redactor.text
        try:
            ok, error = self.sender.send(url, redact(row.title), redact(row.body), _notify_type(row.notify_type))
        except Exception as e:  # a Sender must not raise; if one does, it is one more failed attempt
            ok, error = False, f"{type(e).__name__}: {e}"
        error = redact(error)[-500:]
        if ok:
            self._settle(row, None, lambda: self.outbox.mark_sent(row.id, now))
            if self._failing.pop(row.dest, None) is not None:
                log.info("notify: %s receives again; delivered queued message #%d", where, row.id)
            return True
        if now - row.created_at >= self.cfg.give_up_after_s:
            self._settle(row, None, lambda: self.outbox.drop(row.id, error))
            log.error("notify: dropped message #%d to %s after %d attempts: %s", row.id, where, row.attempts + 1, error)
            return False
        delay = min(self.cfg.retry_max_s, self.cfg.retry_initial_s * 2.0**row.attempts)
        self._settle(row, now + delay, lambda: self.outbox.mark_failed(row, error, now + delay))
        if row.dest not in self._failing:
            log.warning("notify: cannot deliver to %s (%s); queued, retrying in %.0f s", where, error, delay)
        self._failing[row.dest] = error
        return False

    def _settle(self, row: Queued, next_at: float | None, update: Callable[[], None]) -> None:
        """Record a delivery attempt in the queue — or, for a message the disk did not take or cannot update now,
        in memory (`next_at` None: done with it)."""
        if row.id < 0:
            self._unqueued = [r for r in self._unqueued if r.id != row.id]
            if next_at is not None:
                self._unqueued.append(dataclasses.replace(row, next_at=next_at, attempts=row.attempts + 1))
            return
        try:
            update()
        except OSError as e:
            if not is_write_failure(e):
                raise
            state_writes.failed(self.outbox.path.name, e)
            self._settled[row.id] = next_at
        else:
            self._settled.pop(row.id, None)


def _notify_type(value: str) -> NotifyType:
    return value if value in ("info", "success", "warning", "failure") else "info"  # type: ignore[return-value]


# --- the direct path: `notify test` and the guardian ---------------------------------------------------------------


@dataclass(frozen=True)
class DirectResult:
    key: str
    where: str
    delivered: bool
    error: str
    queued: bool = False


def send_now(
    loaded: LoadedConfig,
    title: str,
    body: str,
    *,
    severity: Severity | None = "info",
    notify_type: NotifyType = "info",
    target: str | None = None,
    sender: Sender | None = None,
    queue_failures_as: str | None = None,
) -> list[DirectResult]:
    """Send one message at once to every destination that takes `severity` (None: every destination) about
    `target` (None: about the whole daemon), redacted as a whole.

    `queue_failures_as`: a dedup key under which an undelivered message is put in the on-disk queue, so the next
    daemon retries it (the guardian uses this: its alert must not be lost because a receiver blinked).
    """
    sender = sender or AppriseSender()
    redact = loaded.redactor.text
    title, body = redact(title), redact(body)
    results = []
    outbox: Outbox | None = None
    seen: set[str] = set()
    try:
        for d in destinations(loaded):
            if (severity is not None and not d.wants(target, severity)) or d.url in seen:
                continue
            seen.add(d.url)
            url = loaded.resolve(d.url, d.key)
            register_url_secrets(loaded, url)
            ok, error = sender.send(url, title, body, notify_type)
            queued = False
            if not ok and queue_failures_as is not None:
                outbox = outbox or Outbox(queue_path(loaded.state_dir))
                queued = outbox.add(
                    queue_failures_as, d, "guardian", notify_type, target, None, title, body, time.time()
                )
            results.append(DirectResult(d.key, describe_url(d.url), ok, redact(error), queued))
    finally:
        if outbox is not None:
            outbox.close()
    return results


def plugin_for(loaded: LoadedConfig) -> Notifier | None:
    """The notifier, or None when no URL is configured. Raises `ConfigInvalid` for a URL Apprise rejects."""
    if not destinations(loaded):
        return None
    check_urls(loaded)
    from clawmedic.dryrun import WouldSender

    return Notifier(loaded, sender=WouldSender() if loaded.dry_run else None)
