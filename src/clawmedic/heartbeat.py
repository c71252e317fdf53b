"""The dead-man's switch: the daemon pings a URL on an interval (healthchecks.io, Uptime Kuma push, any HTTP
monitor), so that the watcher's own death is noticed from outside the machine — the monitor alerts when the pings
stop. While a target waits for a human (gave up), `fail_url` is pinged instead, if configured (healthchecks.io's
`/fail`, Uptime Kuma's `?status=down`).

A failed ping is logged when pinging starts failing and when it works again, never fatal: `run` never raises and
never returns (a plugin task that ended would stop the daemon).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx

from clawmedic.config import HeartbeatConfig, LoadedConfig
from clawmedic.notify import describe_url, register_url_secrets

if TYPE_CHECKING:
    from clawmedic.supervisor import Context

log = logging.getLogger("clawmedic.heartbeat")

_HUMAN_NEEDED = frozenset({"gave_up"})


class Heartbeat:
    """The `DaemonPlugin` that pings the heartbeat URL."""

    def __init__(
        self,
        loaded: LoadedConfig,
        cfg: HeartbeatConfig | None = None,
        *,
        client_factory: Callable[[float], httpx.AsyncClient] | None = None,
    ) -> None:
        self.loaded = loaded
        self.cfg = cfg or loaded.config.daemon.heartbeat
        if self.cfg.url is None:
            raise ValueError("the heartbeat needs daemon.heartbeat.url")
        self.url = loaded.resolve(self.cfg.url, "daemon.heartbeat.url")
        self.fail_url = loaded.resolve(self.cfg.fail_url, "daemon.heartbeat.fail_url") if self.cfg.fail_url else None
        for u in (self.url, self.fail_url):
            if u:
                register_url_secrets(loaded, u)
        self._client_factory = client_factory or (lambda t: httpx.AsyncClient(timeout=t, follow_redirects=True))
        self.states: dict[str, str] = {}
        self.pings = 0
        self.failures = 0
        self._failing: str | None = None

    def on_event(self, event: dict[str, Any]) -> None:
        if event.get("kind") == "state" and isinstance(event.get("target"), str):
            self.states[event["target"]] = str(event.get("new", ""))

    @property
    def human_needed(self) -> list[str]:
        return sorted(t for t, s in self.states.items() if s in _HUMAN_NEEDED)

    async def run(self, ctx: Context | None = None) -> None:
        async with self._client_factory(self.cfg.timeout_s) as client:
            while True:
                try:
                    await self.ping(client)
                except Exception as e:  # never up into the daemon
                    log.error("heartbeat: internal error: %r", e, exc_info=e)
                await asyncio.sleep(self.cfg.interval_s)

    async def ping(self, client: httpx.AsyncClient) -> bool:
        """One ping; returns whether the monitor accepted it. Logs only when that changes."""
        down = self.human_needed
        url = self.fail_url if down and self.fail_url else self.url
        where = describe_url(url)
        error: str | None = None
        try:
            if self.cfg.method == "POST":
                body = self.loaded.redactor.text(
                    f"clawmedic: {len(self.states)} target(s)"
                    + (f"; waiting for a human: {', '.join(down)}" if down else "; all handled")
                )
                resp = await client.post(url, content=body.encode(), headers={"Content-Type": "text/plain"})
            else:
                resp = await client.get(url)
            if resp.status_code >= 400:
                error = f"HTTP {resp.status_code}"
        except httpx.HTTPError as e:
            error = f"{type(e).__name__}: {e}"
        self.pings += 1
        if error is None:
            if self._failing is not None:
                log.info("heartbeat: %s answers again", where)
            self._failing = None
            return True
        self.failures += 1
        error = self.loaded.redactor.text(error)
        if self._failing is None:
            log.warning(
                "heartbeat: ping to %s failed (%s); will keep trying every %g s", where, error, self.cfg.interval_s
            )
        self._failing = error
        return False


def plugin_for(loaded: LoadedConfig) -> Heartbeat | None:
    """The heartbeat, or None when `daemon.heartbeat.url` is not set, or under a dry run: its pings would tell the
    monitor that a daemon supervises (the real one may be down) and its `fail_url` would page humans for a target
    the dry run only watched."""
    if not loaded.config.daemon.heartbeat.url:
        return None
    if loaded.dry_run:
        log.warning("dry run: the heartbeat (%s) is not pinged", describe_url(str(loaded.config.daemon.heartbeat.url)))
        return None
    return Heartbeat(loaded)
