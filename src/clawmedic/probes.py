"""Liveness and readiness checks: the process must be alive and not stopped, and HTTP must answer as our target.

A SIGSTOPped gateway still accepts TCP, and a foreign process on the port can answer HTTP, so liveness is the
process state *and* the expected status and JSON body. All library errors become one `ProbeResult`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from clawmedic.config import ProbeConfig
from clawmedic.process import inspect


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
    """HTTP probes through one shared httpx client (the seam tests replace with a loopback stand-in)."""

    def __init__(self, client: httpx.AsyncClient | None = None) -> None:
        self._client = client or httpx.AsyncClient(trust_env=False, follow_redirects=False)
        self._observers: list[Callable[[ProbeConfig, ProbeResult, float], None]] = []

    def observe(self, callback: Callable[[ProbeConfig, ProbeResult, float], None]) -> None:
        """Call `callback(cfg, result, seconds)` after every HTTP probe (e.g. `/metrics`); it must not block."""
        self._observers.append(callback)

    async def aclose(self) -> None:
        await self._client.aclose()

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
        assert cfg.url is not None
        start = time.monotonic()
        try:
            r = await self._client.get(cfg.url, timeout=cfg.timeout_s)
        except httpx.TimeoutException:
            return ProbeResult(False, f"{cfg.url} did not answer within {cfg.timeout_s:g} s", latency_s=cfg.timeout_s)
        except httpx.HTTPError as e:
            return ProbeResult(False, f"{cfg.url}: {type(e).__name__}: {e}".rstrip(": "))
        latency = time.monotonic() - start
        body: dict[str, Any] = {}
        try:
            parsed = r.json()
            if isinstance(parsed, dict):
                body = parsed
        except ValueError:
            pass
        if r.status_code != cfg.expect_status:
            return ProbeResult(
                False, f"{cfg.url} answered {r.status_code}, expected {cfg.expect_status}", r.status_code, latency, body
            )
        if cfg.expect_json:
            wrong = {k: v for k, v in cfg.expect_json.items() if body.get(k) != v}
            if wrong:
                return ProbeResult(
                    False,
                    f"{cfg.url} answered without {wrong} in its body: not the expected service",
                    r.status_code,
                    latency,
                    body,
                )
        return ProbeResult(True, f"{r.status_code} in {latency * 1000:.0f} ms", r.status_code, latency, body)
