"""The daemon's HTTP server: `/` (status page), `/incidents/ID`, `/api/status`, `/api/incidents/ID` and `/metrics`,
as a `DaemonPlugin`.

Why aiohttp: the daemon is one asyncio loop, and `aiohttp.web` serves on that same loop through `AppRunner` and
`TCPSite` — no second thread or process, no server that wants to own signal handling or the loop (as uvicorn does),
and prometheus-client ships its exposition handler for it (`prometheus_client.aiohttp`). It is well kept, typed,
and a single dependency. Jinja2 renders the pages with autoescaping; markdown-it-py (already here through rich)
renders the recovery report with raw HTML off.

Off the probe hot path: a request only reads what the supervisors and the incident store already hold — it never
probes, never waits on a target, and the probe loops do not wait on it. A port that is busy is retried every
`HTTP_BIND_RETRY_S` while supervision goes on. Read-only: GET (and HEAD) only.

A non-loopback `listen` needs a bearer token from the environment (`token_env`); `plugin_for` refuses to start
without one (exit 2), and every request must then carry `Authorization: Bearer <token>`.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web
from prometheus_client.aiohttp import make_aiohttp_handler

from clawmedic import defaults, stats
from clawmedic.config import LoadedConfig
from clawmedic.daemon import events_path, incidents_path
from clawmedic.errors import ConfigInvalid
from clawmedic.stats import Stats
from clawmedic.store.incidents import IncidentStore
from clawmedic.web.address import Listen, parse_listen
from clawmedic.web.metrics import Metrics

if TYPE_CHECKING:
    from clawmedic.supervisor import Context
    from clawmedic.web.pages import Pages

log = logging.getLogger("clawmedic.web")

MIN_TOKEN_CHARS = 16  # a bearer token shorter than this is guessable; refuse it rather than expose the daemon

# No script may run on these pages at all (they have none), nothing is framed, nothing leaks in a Referer.
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class StatusSource(Protocol):
    """What the server reads: the `Daemon` (its live supervisors and the status it writes to status.json)."""

    @property
    def supervisors(self) -> Mapping[str, Any]: ...

    def snapshot(self, running: bool) -> dict[str, Any]: ...


class HttpServer:
    """A `DaemonPlugin`: serves the status page and `/metrics` for the daemon it is attached to."""

    def __init__(self, loaded: LoadedConfig, listen: Listen, token: str | None = None) -> None:
        self.loaded = loaded
        self.listen = listen
        self._token = token
        self._source: StatusSource | None = None
        self._incidents: IncidentStore | None = None
        self._stats: tuple[float, Stats] | None = None  # (computed at, the last week)
        self.metrics = Metrics(loaded, self._snapshots, incidents_path(loaded.state_dir))
        self._pages: Pages | None = None
        self.bound = asyncio.Event()  # set once the port is open (tests, and the log line)

    @property
    def pages(self) -> Pages:
        """Built at the first page served: jinja2 and markdown-it (~10 MB of RSS) stay out of a daemon nobody browses
        (Prometheus scraping /metrics does not need them)."""
        if self._pages is None:
            from clawmedic.web.pages import Pages

            self._pages = Pages(self.loaded.redactor)
        return self._pages

    def attach(self, source: StatusSource) -> None:
        self._source = source

    def _snapshots(self) -> dict[str, dict[str, Any]]:
        if self._source is None:
            return {}
        return {name: sup.snapshot() for name, sup in list(self._source.supervisors.items())}

    def _status(self) -> dict[str, Any]:
        if self._source is None:
            return {"daemon": {}, "targets": {}}
        return self._source.snapshot(running=True)

    # --- DaemonPlugin ---------------------------------------------------------------------------------------------

    def on_event(self, event: dict[str, Any]) -> None:
        self.metrics.on_event(event)
        if event.get("kind") in ("incident_opened", "incident_closed", "gave_up"):
            self._stats = None  # the week's figures must agree with the incident list below them

    async def run(self, ctx: Context) -> None:
        """Serve until cancelled. A fault of the page's own never ends supervision: the daemon stops when a plugin's
        task ends, so after logging the error this task waits, without a page, until the daemon stops."""
        try:
            await self._serve(ctx)
        except Exception:
            log.exception("status page: stopped by an internal error; supervision goes on without it")
            await asyncio.Event().wait()

    async def _serve(self, ctx: Context) -> None:
        self._incidents = ctx.incidents
        self.metrics.incidents = ctx.incidents
        ctx.prober.observe(self.metrics.on_probe)
        runner = web.AppRunner(self.app(), access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        try:
            await self._bind(runner)
            await asyncio.Event().wait()  # serve until the daemon stops (this task is cancelled)
        finally:
            await runner.cleanup()

    async def _bind(self, runner: web.AppRunner) -> None:
        warned = False
        while True:
            site = web.TCPSite(runner, self.listen.host, self.listen.port)
            try:
                await site.start()
            except OSError as e:
                level = logging.DEBUG if warned else logging.WARNING
                log.log(
                    level,
                    "status page: cannot listen on %s (%s); trying again every %g s, supervision goes on",
                    self.listen.url,
                    e.strerror or e,
                    defaults.HTTP_BIND_RETRY_S,
                )
                warned = True
                await asyncio.sleep(defaults.HTTP_BIND_RETRY_S)
                continue
            log.info("status page on %s/ and Prometheus metrics on %s/metrics", self.listen.url, self.listen.url)
            self.bound.set()
            return

    # --- the app --------------------------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard])
        app.router.add_get("/", self._index)
        app.router.add_get("/incidents/{id:[0-9]{1,18}}", self._incident)
        app.router.add_get("/api/status", self._api_status)
        app.router.add_get("/api/incidents/{id:[0-9]{1,18}}", self._api_incident)
        app.router.add_get("/targets/{name}", self._target)
        app.router.add_get("/metrics", make_aiohttp_handler(self.metrics.registry))
        return app

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self._token is not None:
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {self._token}".encode()):
                return web.Response(
                    status=401,
                    text="a bearer token is required\n",
                    headers={"WWW-Authenticate": "Bearer", **_SECURITY_HEADERS},
                )
        try:
            response = await handler(request)
        except web.HTTPException as e:
            e.headers.update(_SECURITY_HEADERS)  # 404, 405: the same headers
            raise
        response.headers.update(_SECURITY_HEADERS)
        return response

    async def _index(self, request: web.Request) -> web.Response:
        incidents = self._incidents.list(limit=defaults.HTTP_INCIDENTS_SHOWN) if self._incidents else []
        text = self.pages.index(self._status(), incidents, stats=await self._week())
        return web.Response(text=text, content_type="text/html")

    async def _week(self) -> Stats | None:
        """`clawmedic stats` for the last week, recomputed at most once a minute, in a thread (it reads the event
        stream): the page never waits on it for long, and the loop never."""
        if self._incidents is None:
            return None
        now = time.time()
        if self._stats is None or now - self._stats[0] >= defaults.HTTP_STATS_REFRESH_S:
            events = events_path(self.loaded.state_dir)
            since = now - defaults.HTTP_STATS_WINDOW_S
            self._stats = (now, await asyncio.to_thread(stats.gather, self._incidents, events, since, now))
        return self._stats[1]

    async def _incident(self, request: web.Request) -> web.Response:
        incident_id = int(request.match_info["id"])
        inc = self._incidents.get(incident_id) if self._incidents else None
        if inc is None:
            text = self.pages.not_found(f"There is no incident #{incident_id}.")
            return web.Response(status=404, text=text, content_type="text/html")
        return web.Response(text=self.pages.incident(inc), content_type="text/html")

    async def _api_incident(self, request: web.Request) -> web.Response:
        """One incident as JSON: its record, timeline and "what changed" section, redacted like the page."""
        incident_id = int(request.match_info["id"])
        inc = self._incidents.get(incident_id) if self._incidents else None
        if inc is None:
            return web.json_response({"error": f"no incident #{incident_id}"}, status=404)
        text = json.dumps(self.pages.incident_data(inc), default=str)
        return web.Response(text=text, content_type="application/json")

    async def _target(self, request: web.Request) -> web.Response:
        """One target for monitors that read only the status code (Uptime Kuma, a Kubernetes liveness probe of the
        gateway's container): 200 while it is live or clawmedic is healing it, 503 once clawmedic gave up (a human's
        turn, or the platform's), 404 for a name the config does not have."""
        name = request.match_info["name"]
        snap = self._snapshots().get(name)
        if snap is None:
            return web.json_response({"error": f"no target {name!r}"}, status=404)
        body = self.loaded.redactor.data({"target": name, **snap})
        status = 503 if snap.get("state") == "gave_up" else 200
        return web.Response(status=status, text=json.dumps(body, default=str), content_type="application/json")

    async def _api_status(self, request: web.Request) -> web.Response:
        incidents = self._incidents.list(limit=defaults.HTTP_INCIDENTS_SHOWN) if self._incidents else []
        data = self.pages.status_data(self._status(), incidents)
        return web.Response(text=json.dumps(data, default=str), content_type="application/json")


def plugin_for(loaded: LoadedConfig) -> HttpServer | None:
    """The server `[daemon.http]` asks for, or None when `listen = ""`. Raises `ConfigInvalid` (exit 2) for an
    address other machines can reach when no bearer token is set in the environment."""
    cfg = loaded.config.daemon.http
    if not cfg.listen:
        return None
    listen = parse_listen(cfg.listen)  # validated with the config already
    token: str | None = None
    if not listen.loopback:
        token = os.environ.get(cfg.token_env, "")
        if len(token) < MIN_TOKEN_CHARS:
            raise ConfigInvalid(
                f"{loaded.source}: daemon.http.listen: {cfg.listen} can be reached from other machines, so it needs "
                f"a bearer token of at least {MIN_TOKEN_CHARS} characters in the environment variable "
                f'{cfg.token_env} (or listen on "127.0.0.1:{listen.port}").'
            )
        loaded.redactor.add(token)
    return HttpServer(loaded, listen, token)
