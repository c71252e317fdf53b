"""Tier 4, the durable record: one GitHub issue per incident signature for incidents that gave up.

`[daemon.github]` names the repository ("owner/name"); the token is read from the environment variable `token_env`
only (never from the config file) and registered with the redactor. On a `gave_up` event the plugin computes the
incident's signature (the doctor's, from the latest `diagnosis` timeline entry; else the reason without digits and
paths), finds the open issue for it (a small JSON map in the state folder, else the open issues labelled
`labels` whose body carries the `clawmedic-signature: <sig>` marker), and either opens an issue (title: target and
summary; body: the Markdown recovery report and the marker) or adds a comment to it.

Rate limits: at most one write (issue or comment) per signature every `min_interval_s` (a repeat inside it is
skipped: the issue already says it), and at most `max_per_day` writes in any 24 hours, all signatures together.

The whole title and body go through the redactor just before sending. HTTP runs in `run` (httpx.AsyncClient), off
the event handler; a failed call (API down, 5xx, network) is logged and retried with backoff, and `run` never
raises and never returns (a plugin task that ended would stop the daemon).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import json
import logging
import os
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from clawmedic.config import GitHubConfig, LoadedConfig
from clawmedic.doctor.report import render as render_report
from clawmedic.paths import ensure_private_dir
from clawmedic.store.event_kinds import GITHUB_KINDS
from clawmedic.store.files import atomic_write
from clawmedic.store.incidents import Incident, IncidentStore

if TYPE_CHECKING:
    from clawmedic.supervisor import Context

log = logging.getLogger("clawmedic.github")

MARKER = "clawmedic-signature:"
_MARKER_RE = re.compile(re.escape(MARKER) + r" (\S+)")
_BODY_MAX = 60_000  # GitHub refuses bodies over 65,536 characters
_DAY_S = 86400.0
_JOB_MAX_AGE_S = _DAY_S  # a write that failed for a day is dropped; the incident and its report stay on disk
_IDLE_S = 3600.0
CRON_DISABLED = "cron_disabled"  # the gateway check disabled a failing cron job: one issue per job (not per incident)


def state_path(state_dir: Path) -> Path:
    return state_dir / "github-issues.json"


# --- the signature ----------------------------------------------------------------------------------------------


def normalise_reason(reason: str) -> str:
    """The reason without paths and digits (PIDs, ports, times), as a slug."""
    text = re.sub(r"(?:[A-Za-z]:)?[\\/][^\s'\"]*", " ", reason)
    text = re.sub(r"\d+", " ", text)
    slug = re.sub(r"[^a-z]+", "-", text.lower()).strip("-")
    return "reason=" + (slug[:120] or "unknown")


def signature(target: str, incident: Incident | None, reason: str) -> str:
    """`target|<doctor's signature>` (latest `diagnosis` entry), else `target|reason=<normalised reason>`."""
    sig = ""
    if incident is not None:
        for e in reversed(incident.timeline):
            if e.kind == "diagnosis" and e.detail.get("signature"):
                sig = str(e.detail["signature"])
                break
    if not sig:
        sig = normalise_reason(reason or (incident.reason if incident is not None else ""))
    return re.sub(r"[^\w|=,.:/+@-]", "_", f"{target}|{sig}")  # one token: no spaces, nothing that ends a comment


def _summary(incident: Incident | None, reason: str) -> str:
    titles: list[str] = []
    if incident is not None:
        for e in reversed(incident.timeline):
            if e.kind == "diagnosis":
                titles = [str(f.get("title") or f.get("rule")) for f in e.detail.get("findings") or []][:3]
                break
    text = "; ".join(titles) or reason or (incident.reason if incident is not None else "") or "gave up"
    text = " ".join(text.split())
    return text if len(text) <= 120 else text[:119] + "…"


# --- the state on disk ------------------------------------------------------------------------------------------


@dataclass
class IssueState:
    """signature → issue number, the last write per signature, and the writes of the last day (0600 JSON)."""

    issues: dict[str, int]
    last_write: dict[str, float]
    writes: list[float]

    @classmethod
    def load(cls, path: Path) -> IssueState:
        try:
            raw = json.loads(path.read_text())
            return cls(
                {str(k): int(v) for k, v in dict(raw.get("issues", {})).items()},
                {str(k): float(v) for k, v in dict(raw.get("last_write", {})).items()},
                [float(t) for t in raw.get("writes", [])],
            )
        except FileNotFoundError:
            return cls({}, {}, [])
        except (ValueError, TypeError, AttributeError) as e:
            log.warning("github: %s is unreadable (%s); starting with an empty issue map", path, e)
            return cls({}, {}, [])

    def save(self, path: Path) -> None:
        ensure_private_dir(path.parent)
        data = {"issues": self.issues, "last_write": self.last_write, "writes": self.writes}
        atomic_write(path, json.dumps(data, indent=1, sort_keys=True) + "\n")

    def wrote(self, sig: str, now: float) -> None:
        self.last_write[sig] = now
        self.writes = [t for t in self.writes if now - t < _DAY_S] + [now]


# --- the plugin ---------------------------------------------------------------------------------------------------


@dataclass
class _Job:
    target: str
    incident: int
    reason: str
    at: float
    attempts: int = 0
    next_at: float = 0.0
    kind: str = "gave_up"  # or "gateway_fault_escalated": up, but a fault inside it needs a human
    sig: str | None = None  # its own signature (a disabled cron job: one issue per job), else the incident's
    min_interval_s: float | None = None  # its own repeat interval (cron jobs: 6 h), else `min_interval_s`


class ApiError(Exception):
    pass


class GitHubIssues:
    """The `DaemonPlugin` that files incidents that gave up as GitHub issues (one per signature)."""

    def __init__(
        self,
        loaded: LoadedConfig,
        token: str,
        cfg: GitHubConfig | None = None,
        *,
        clock: Callable[[], float] = time.time,
        client_factory: Callable[[], httpx.AsyncClient] | None = None,
    ) -> None:
        self.loaded = loaded
        cfg = cfg or loaded.config.daemon.github
        if cfg is None or not cfg.repo:
            raise ValueError("GitHub issues need daemon.github.repo")
        self.cfg = cfg
        self.repo: str = cfg.repo
        loaded.redactor.add(token)
        self._token = token
        self.clock = clock
        self._client_factory = client_factory or self._client
        self.state_path = state_path(loaded.state_dir)
        self.state: IssueState | None = None
        self._jobs: collections.deque[_Job] = collections.deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._failing: str | None = None
        self.writes = 0  # API writes done (issues and comments), for tests and status
        self.skipped = 0  # writes the rate limit held back

    def _client(self) -> httpx.AsyncClient:
        headers = {
            "Authorization": f"Bearer {self._token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
            "User-Agent": "clawmedic",
        }
        return httpx.AsyncClient(base_url=self.cfg.api_url.rstrip("/"), headers=headers, timeout=self.cfg.timeout_s)

    # DaemonPlugin
    def on_event(self, event: dict[str, Any]) -> None:
        if event.get("kind") == CRON_DISABLED and isinstance(event.get("incident"), int):
            self._cron_disabled(event)
            return
        if event.get("kind") not in GITHUB_KINDS or not isinstance(event.get("incident"), int):
            return
        ts = event.get("ts")
        at = float(ts) if isinstance(ts, int | float) else self.clock()
        reason = str(event.get("reason") or event.get("why") or "")
        self._jobs.append(_Job(str(event.get("target", "")), event["incident"], reason, at, kind=str(event["kind"])))
        if self._loop is not None and self._wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closing
                self._loop.call_soon_threadsafe(self._wake.set)

    def _cron_disabled(self, event: dict[str, Any]) -> None:
        """A cron job the gateway check disabled: one issue per job (its own signature), at most one write per
        `interval_s` (6 h) each."""
        job_id = str(event.get("job_id") or "")
        if not job_id:
            return
        target = str(event.get("target", ""))
        ts = event.get("ts")
        at = float(ts) if isinstance(ts, int | float) else self.clock()
        name = str(event.get("job_name") or job_id)
        reason = f"cron job {name} ({job_id}) failed {event.get('errors')} time(s) in a row: {event.get('error')}"
        sig = re.sub(r"[^\w|=,.:/+@-]", "_", f"{target}|cron={job_id}")
        interval = event.get("interval_s")
        self._jobs.append(
            _Job(
                target,
                event["incident"],
                reason,
                at,
                kind=CRON_DISABLED,
                sig=sig,
                min_interval_s=float(interval) if isinstance(interval, int | float) else None,
            )
        )
        if self._loop is not None and self._wake is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._wake.set)

    async def run(self, ctx: Context | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        incidents: IncidentStore | None = getattr(ctx, "incidents", None)
        while True:  # the client is remade only if something broke it
            try:
                async with self._client_factory() as client:
                    while True:
                        self._wake.clear()
                        wait = await self.work(client, incidents)
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._wake.wait(), wait)
            except Exception as e:  # never up into the daemon
                log.error("github: internal error: %r", e, exc_info=e)
                await asyncio.sleep(self.cfg.retry_s)

    async def work(self, client: httpx.AsyncClient, incidents: IncidentStore | None) -> float:
        """Do every job that is due; return how long to wait for the next one."""
        if self.state is None:
            self.state = await asyncio.to_thread(IssueState.load, self.state_path)
        now = self.clock()
        for _ in range(len(self._jobs)):
            job = self._jobs.popleft()
            if job.next_at > now:
                self._jobs.append(job)
                continue
            incident = await asyncio.to_thread(incidents.get, job.incident) if incidents is not None else None
            try:
                await self.file(client, job, incident)
            except (httpx.HTTPError, ApiError) as e:
                self._failed(job, f"{type(e).__name__}: {e}" if isinstance(e, httpx.HTTPError) else str(e))
            else:
                if self._failing is not None:
                    log.info("github: %s answers again", self.cfg.api_url)
                self._failing = None
        now = self.clock()
        return min((max(0.05, j.next_at - now) for j in self._jobs), default=_IDLE_S)

    def _failed(self, job: _Job, error: str) -> None:
        error = self.loaded.redactor.text(error)[:300]
        now = self.clock()
        if now - job.at >= _JOB_MAX_AGE_S:
            log.error(
                "github: dropped the issue for incident #%d after %d attempts: %s", job.incident, job.attempts, error
            )
            return
        delay = min(self.cfg.retry_max_s, self.cfg.retry_s * 2.0**job.attempts)
        job.attempts += 1
        job.next_at = now + delay
        self._jobs.append(job)
        if self._failing is None:
            log.warning("github: cannot file incident #%d (%s); retrying in %.0f s", job.incident, error, delay)
        self._failing = error

    async def file(self, client: httpx.AsyncClient, job: _Job, incident: Incident | None) -> str:
        """Open or comment on the issue for `job`'s signature; returns what was done ("created", "commented",
        "rate-limited"). Raises `httpx.HTTPError` / `ApiError` when the API fails (the caller retries)."""
        assert self.state is not None
        sig = job.sig or signature(job.target, incident, job.reason)
        now = self.clock()
        last = self.state.last_write.get(sig)
        interval = self.cfg.min_interval_s if job.min_interval_s is None else job.min_interval_s
        if last is not None and now - last < interval:
            self.skipped += 1
            log.info(
                "github: %s gave up again (incident #%d); its issue was written %.0f s ago: skipped",
                job.target,
                job.incident,
                now - last,
            )
            return "rate-limited"
        if len([t for t in self.state.writes if now - t < _DAY_S]) >= self.cfg.max_per_day:
            self.skipped += 1
            log.warning(
                "github: %d writes in 24 h (daemon.github.max_per_day): incident #%d is not filed",
                self.cfg.max_per_day,
                job.incident,
            )
            return "rate-limited"
        number = await self._find(client, sig)
        report = render_report(incident) if incident is not None else f"reason: {job.reason}"
        if len(report) > _BODY_MAX:
            report = report[:_BODY_MAX] + "\n\n… (cut; the full report is on the host)"
        when = dt.datetime.fromtimestamp(job.at).strftime("%Y-%m-%d %H:%M:%S")
        where = f"host `{socket.gethostname()}`, incident #{job.incident}, {when}"
        marker = f"<!-- {MARKER} {sig} -->"
        redact = self.loaded.redactor.text
        if number is not None:
            body = (
                f"**{job.target}** {_what(job)} again ({where}): a human is needed.\n\n"
                f"<details><summary>Report of incident #{job.incident}</summary>\n\n{report}\n\n</details>\n\n"
                f"{marker}\n"
            )
            await self._post(client, f"/repos/{self.repo}/issues/{number}/comments", {"body": redact(body)})
            done = "commented"
        else:
            summary = _summary(None if job.kind == CRON_DISABLED else incident, job.reason)
            title = f"clawmedic: {job.target} {_what(job)} — {summary}"
            body = (
                f"**{job.target}**: {_what(job)} ({where}); a human is needed.\n\n"
                f"After a fix: `clawmedic resume {job.target}`\n\n---\n\n{report}\n\n{marker}\n"
            )
            payload: dict[str, Any] = {"title": redact(title), "body": redact(body)}
            if self.cfg.labels:
                payload["labels"] = list(self.cfg.labels)
            created = await self._post(client, f"/repos/{self.repo}/issues", payload)
            number = int(created["number"])
            self.state.issues[sig] = number
            done = "created"
        self.state.wrote(sig, self.clock())
        self.writes += 1
        await asyncio.to_thread(self.state.save, self.state_path)
        log.info("github: %s issue #%d for %s (incident #%d)", done, number, job.target, job.incident)
        return done

    async def _find(self, client: httpx.AsyncClient, sig: str) -> int | None:
        """The open issue for `sig`: the remembered one if still open, else one whose body carries the marker."""
        assert self.state is not None
        known = self.state.issues.get(sig)
        if known is not None:
            resp = await client.get(f"/repos/{self.repo}/issues/{known}")
            if resp.status_code == 200 and resp.json().get("state") == "open":
                return known
            if resp.status_code not in (200, 404, 410):
                raise ApiError(self._error(resp))
            self.state.issues.pop(sig, None)  # closed or gone: a new one is opened (or found below)
        params = {"state": "open", "per_page": "100"}
        if self.cfg.labels:
            params["labels"] = ",".join(self.cfg.labels)
        resp = await client.get(f"/repos/{self.repo}/issues", params=params)
        if resp.status_code != 200:
            raise ApiError(self._error(resp))
        for issue in resp.json():
            if not isinstance(issue, dict) or "pull_request" in issue:
                continue
            if any(m == sig for m in _MARKER_RE.findall(str(issue.get("body") or ""))):
                number = int(issue["number"])
                self.state.issues[sig] = number
                return number
        return None

    async def _post(self, client: httpx.AsyncClient, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        resp = await client.post(path, json=payload)
        if resp.status_code not in (200, 201):
            raise ApiError(self._error(resp))
        data = resp.json()
        return data if isinstance(data, dict) else {}

    def _error(self, resp: httpx.Response) -> str:
        message = ""
        with contextlib.suppress(ValueError, AttributeError):
            message = str(resp.json().get("message", ""))
        text = f"HTTP {resp.status_code} from {resp.request.method} {resp.request.url.path}"
        return self.loaded.redactor.text(text + (f": {message[:200]}" if message else ""))


def plugin_for(loaded: LoadedConfig) -> tuple[GitHubIssues | None, str | None]:
    """The plugin, or (None, why) when `[daemon.github]` is set but cannot work; (None, None) when it is not set."""
    cfg = loaded.config.daemon.github
    if cfg is None:
        return None, None
    if not cfg.repo:
        return None, f'{loaded.source}: [daemon.github] has no repo ("owner/name"): GitHub issues are off.'
    if loaded.dry_run:  # a dry run changes nothing: an issue or a comment is a message to humans
        return None, f"{loaded.source}: dry run: GitHub issues in {cfg.repo} are neither filed nor commented on."
    token = os.environ.get(cfg.token_env, "").strip()
    if not token:
        return None, (
            f"{loaded.source}: [daemon.github] needs a token in the environment variable {cfg.token_env}, "
            "which is not set: GitHub issues are off."
        )
    return GitHubIssues(loaded, token, cfg), None


def _what(job: _Job) -> str:
    """What happened, in the words of the issue's title and comments."""
    if job.kind == "gave_up":
        return "gave up"
    if job.kind == CRON_DISABLED:
        return "disabled a failing cron job"
    return "has a fault inside the running gateway that clawmedic could not heal"
