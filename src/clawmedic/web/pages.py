"""The status page, the incident pages, `/api/status` and `/api/incidents/ID`, rendered on the server from what the
ladder and the incident store hold.

Jinja2 with autoescaping on for every template: a process's output, an incident's reason or a remedy's detail is
always text, never markup. The recovery report (Markdown, `doctor/report.py`) is rendered by markdown-it-py with
raw HTML off, so a `<script>` in it stays text too. Everything shown goes through the config's redactor first.
No JavaScript at all: the page reloads itself with a meta refresh, and the server's Content-Security-Policy
forbids scripts outright (a second wall behind the escaping, which the browser test checks on its own).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psutil
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markdown_it import MarkdownIt
from markupsafe import Markup

from clawmedic import defaults
from clawmedic.doctor import report
from clawmedic.redact import Redactor
from clawmedic.stats import Stats, duration
from clawmedic.store.incidents import Incident

_TEMPLATES = Path(__file__).with_name("templates")

# How each ladder state is drawn: green when serving, amber while clawmedic works on it, red when a human is needed.
_STATE_TONE = {
    "healthy": "ok",
    "probation": "ok",
    "starting": "busy",
    "suspect": "busy",
    "restarting": "busy",
    "backoff": "busy",
    "retrying": "busy",
    "escalated": "bad",
    "gave_up": "bad",
    "maintenance": "idle",
    "stopped": "idle",
}


# Every key the pages read, with what to show when a status lacks it (a daemon before its first target, an older
# status): a page must render whatever the snapshot holds.
_DAEMON_DEFAULTS: dict[str, Any] = {"pid": None, "started_at": None, "config": ""}
_TARGET_DEFAULTS: dict[str, Any] = {
    "state": "unknown",
    "since": None,
    "pid": None,
    "live": None,
    "liveness_detail": None,
    "ready": None,
    "ready_failing": [],
    "restarts": 0,
    "incident": None,
    "latent_incident": None,
    "last_exit": None,
    "kind": "",
    "mode": "",
}


def clock(ts: float | None) -> str:
    return "—" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _uptime(pid: object, now: float) -> float | None:
    if not isinstance(pid, int):
        return None
    try:
        return now - psutil.Process(pid).create_time()
    except psutil.Error:
        return None


class Pages:
    def __init__(self, redactor: Redactor) -> None:
        self.redactor = redactor
        self.env = Environment(
            loader=FileSystemLoader(_TEMPLATES), autoescape=True, undefined=StrictUndefined, keep_trailing_newline=True
        )
        self.env.filters.update(duration=duration, clock=clock)
        self.env.globals.update(refresh_s=defaults.HTTP_REFRESH_S)
        self._md = MarkdownIt("commonmark", {"html": False}).enable("table")

    def status_data(self, status: Mapping[str, Any], incidents: list[Incident]) -> dict[str, Any]:
        """What `/api/status` returns: the status file's content, live, plus the latest incidents; redacted."""
        data = {**status, "incidents": [self._incident_row(i) for i in incidents]}
        redacted: dict[str, Any] = self.redactor.data(data)
        return redacted

    def _incident_row(self, inc: Incident) -> dict[str, Any]:
        row = inc.to_dict()
        row.pop("timeline", None)
        return row

    def index(
        self, status: Mapping[str, Any], incidents: list[Incident], now: float | None = None, stats: Stats | None = None
    ) -> str:
        now = time.time() if now is None else now
        data = self.status_data(status, incidents)
        targets = []
        for name, t in data.get("targets", {}).items():
            targets.append(
                {
                    **_TARGET_DEFAULTS,
                    **t,
                    "name": name,
                    "tone": _STATE_TONE.get(str(t.get("state")), "idle"),
                    "in_state_s": now - t["since"] if isinstance(t.get("since"), int | float) else None,
                    "uptime_s": _uptime(t.get("pid"), now),
                }
            )
        daemon = {**_DAEMON_DEFAULTS, **data.get("daemon", {})}
        if stats is not None:  # causes quote incidents' reasons: redacted again, like everything shown
            stats = dataclasses.replace(stats, top_causes=[(self.redactor.text(c), n) for c, n in stats.top_causes])
        return self.env.get_template("index.html").render(
            daemon=daemon, targets=targets, incidents=data["incidents"], now=now, stats=stats
        )

    def incident_data(self, inc: Incident) -> dict[str, Any]:
        """What `/api/incidents/ID` returns: the incident with its timeline, and its "what changed" section apart
        (`changes`: None when the doctor collected no evidence); redacted."""
        data = {**inc.to_dict(), "changes": report.what_changed(inc)}
        redacted: dict[str, Any] = self.redactor.data(data)
        return redacted

    def incident(self, inc: Incident) -> str:
        timeline = [
            {
                "ts": e.ts,
                "kind": e.kind,
                "duration_s": e.duration_s,
                "detail": json.dumps(self.redactor.data(e.detail), indent=1, default=str, ensure_ascii=False),
            }
            for e in inc.timeline
        ]
        changes = report.what_changed(inc)
        markdown = self.redactor.text(report.render(inc, with_changes=False))  # "What changed" is shown above it
        return self.env.get_template("incident.html").render(
            inc=self.redactor.data(self._incident_row(inc)),
            changes=None if changes is None else self.redactor.data(changes),
            timeline=timeline,
            report=Markup(self._md.render(markdown)),  # noqa: S704 (markdown-it with raw HTML off: escaped)
            is_open=inc.closed_at is None,
        )

    def not_found(self, what: str) -> str:
        return self.env.get_template("not_found.html").render(what=what)
