"""Measurement only (bench_scale.py `--prober raw`): the daemon's HTTP probe replaced by a minimal asyncio HTTP/1.1
GET with one kept-alive connection per origin — the hand-written alternative to aiohttp that issue 12 asked to
measure. Plain http, Content-Length bodies only; not product code."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any
from urllib.parse import urlsplit

from clawmedic.config import ProbeConfig
from clawmedic.probes import Prober, ProbeResult

_conns: dict[tuple[str, int], tuple[asyncio.StreamReader, asyncio.StreamWriter]] = {}


async def _get(host: str, port: int, path: str) -> tuple[int, bytes]:
    key = (host, port)
    for attempt in (0, 1):
        conn = _conns.pop(key, None)
        reused = conn is not None
        if conn is None:
            conn = await asyncio.open_connection(host, port)
        reader, writer = conn
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
        except (OSError, asyncio.IncompleteReadError):
            writer.close()
            if reused and attempt == 0:
                continue  # the server closed the idle connection: once more on a fresh one
            raise
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        body = await reader.readexactly(length)
        _conns[key] = conn
        return status, body
    raise ConnectionError("unreachable")


async def _http(self: Prober, cfg: ProbeConfig) -> ProbeResult:
    assert cfg.url is not None
    u = urlsplit(str(cfg.url))
    start = time.monotonic()
    try:
        status, raw = await asyncio.wait_for(_get(u.hostname or "", u.port or 80, u.path or "/"), cfg.timeout_s)
    except TimeoutError:
        return ProbeResult(False, f"{cfg.url} did not answer within {cfg.timeout_s:g} s", latency_s=cfg.timeout_s)
    except (OSError, ValueError, asyncio.IncompleteReadError) as e:
        return ProbeResult(False, f"{cfg.url}: {type(e).__name__}: {e}")
    latency = time.monotonic() - start
    body: dict[str, Any] = {}
    try:
        parsed = json.loads(raw)
        body = parsed if isinstance(parsed, dict) else {}
    except ValueError:
        pass
    if status != cfg.expect_status:
        return ProbeResult(False, f"{cfg.url} answered {status}", status, latency, body)
    if cfg.expect_json and any(body.get(k) != v for k, v in cfg.expect_json.items()):
        return ProbeResult(False, f"{cfg.url}: not the expected service", status, latency, body)
    return ProbeResult(True, f"{status} in {latency * 1000:.0f} ms", status, latency, body)


def install() -> None:
    Prober._http = _http  # type: ignore[method-assign]
