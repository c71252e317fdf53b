"""Liveness and readiness checks: the process must be alive and not stopped, and HTTP must answer as our target.

A SIGSTOPped gateway still accepts TCP, and a foreign process on the port can answer HTTP, so liveness is the
process state *and* the expected status and JSON body. All library errors become one `ProbeResult`.

HTTP goes through one `aiohttp.ClientSession` whose `TCPConnector` keeps idle connections per origin (a dict keyed
by host, port and TLS) with no global limit: finding a connection for a probe is one dict lookup, whatever the number
of targets. Measured with `bench/bench_scale.py` (a real daemon, 200 http targets on loopback, 5 s probes, a shared
2-core VM): with the shared `httpx.AsyncClient` this replaces the daemon used 8.5–9 % of a core, about half of it in
httpcore's pool bookkeeping (each request walks every pooled connection and queued request); with aiohttp 2.4–3.2 %;
with a hand-written asyncio HTTP/1.1 GET and one kept-alive connection per origin (`bench/_raw_prober.py`) 2.0 %;
a bare GET loop in its own process 1.6 %. aiohttp is kept for the last half point: it is well kept, already loaded
by the daemon's status page (no extra memory in the default setup), speaks TLS, chunked bodies and redirects-as-data,
and retries a GET once when a kept-alive connection turns out closed by the server (Node closes idle sockets after
5 s, exactly one probe interval) — all of which a hand-written client would have to re-earn.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from clawmedic import defaults
from clawmedic.config import ProbeConfig
from clawmedic.process import inspect

if TYPE_CHECKING:
    import aiohttp  # imported on the first probe: commands such as `clawmedic status` never pay for it


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    detail: str  # why it failed, or a short success note
    status: int | None = None
    latency_s: float = 0.0
    body: dict[str, Any] = field(default_factory=dict)

    @property
    def failing(self) -> list[str]:
        """Readiness: the `failing[]` list OpenClaw's /ready returns."""
        value = self.body.get("failing", [])
        return [str(x) for x in value] if isinstance(value, list) else []


class Prober:
    """HTTP probes through one shared aiohttp session with per-origin keep-alive (the seam tests replace)."""

    def __init__(self, session: aiohttp.ClientSession | None = None) -> None:
        self._session = session  # made on first use, inside the running loop (aiohttp wants one)
        self._observers: list[Callable[[ProbeConfig, ProbeResult, float], None]] = []

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            import aiohttp

            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=defaults.PROBE_KEEPALIVE_S),
                trust_env=False,  # a probe of a loopback target must not go through the user's proxy
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    def observe(self, callback: Callable[[ProbeConfig, ProbeResult, float], None]) -> None:
        """Call `callback(cfg, result, seconds)` after every HTTP probe (e.g. `/metrics`); it must not block."""
        self._observers.append(callback)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def liveness(self, cfg: ProbeConfig, pid: int | None) -> ProbeResult:
        if pid is not None:
            if not inspect.is_alive(pid):
                return ProbeResult(False, f"process {pid} is gone")
            if inspect.is_stopped(pid):
                return ProbeResult(False, f"process {pid} is stopped (SIGSTOP or traced): it cannot answer")
        return await self.http(cfg)

    async def http(self, cfg: ProbeConfig) -> ProbeResult:
        start = time.monotonic()
        result = await self._http(cfg)
        took = time.monotonic() - start
        for callback in self._observers:
            callback(cfg, result, took)
        return result

    async def _http(self, cfg: ProbeConfig) -> ProbeResult:
        import aiohttp

        assert cfg.url is not None
        start = time.monotonic()
        try:
            async with self._client().get(
                cfg.url, allow_redirects=False, timeout=aiohttp.ClientTimeout(total=cfg.timeout_s)
            ) as r:
                status, raw = r.status, await r.read()
        except TimeoutError:
            return ProbeResult(False, f"{cfg.url} did not answer within {cfg.timeout_s:g} s", latency_s=cfg.timeout_s)
        except aiohttp.ClientError as e:
            return ProbeResult(False, f"{cfg.url}: {type(e).__name__}: {e}".rstrip(": "))
        except Exception as e:
            return ProbeResult(False, f"{cfg.url}: cannot be requested: {type(e).__name__}: {e}".rstrip(": "))
        latency = time.monotonic() - start
        body: dict[str, Any] = {}
        try:
            parsed = json.loads(raw)
            if isinstance(parsed, dict):
                body = parsed
        except ValueError:
            pass
        if status != cfg.expect_status:
            return ProbeResult(
                False, f"{cfg.url} answered {status}, expected {cfg.expect_status}", status, latency, body
            )
        if cfg.expect_json:
            wrong = {k: v for k, v in cfg.expect_json.items() if body.get(k) != v}
            if wrong:
                return ProbeResult(
                    False,
                    f"{cfg.url} answered without {wrong} in its body: not the expected service",
                    status,
                    latency,
                    body,
                )
        return ProbeResult(True, f"{status} in {latency * 1000:.0f} ms", status, latency, body)
