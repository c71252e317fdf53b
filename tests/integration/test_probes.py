"""The HTTP probe against a real loopback server: status, JSON body, timeout, refused connection, keep-alive.

The server is a raw asyncio one in the test's own loop (it can answer anything, stall, or count connections).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from clawmedic.config import ProbeConfig
from clawmedic.probes import Prober, ProbeResult


def _response(status: int, body: bytes) -> bytes:
    return (
        f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
    )


async def _serve(answer: bytes | None, connections: list[int]) -> asyncio.Server:
    """Answer every request with `answer` on one kept-alive connection; `None`: read the request and never answer."""

    async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                if answer is None:
                    await asyncio.sleep(30)
                    return
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(on_conn, "127.0.0.1", 0)


def _probe(answer: bytes | None, times: int = 1, **cfg: Any) -> tuple[list[ProbeResult], int]:
    async def scenario() -> tuple[list[ProbeResult], int]:
        connections: list[int] = []
        server = await _serve(answer, connections)
        port = server.sockets[0].getsockname()[1]
        prober = Prober()
        try:
            config = ProbeConfig(url=f"http://127.0.0.1:{port}/health", **cfg)
            results = [await prober.http(config) for _ in range(times)]
        finally:
            await prober.aclose()
            server.close()
        return results, len(connections)

    return asyncio.run(scenario())


def test_expected_status_and_json_body_is_live() -> None:
    (r,), _ = _probe(_response(200, b'{"ok":true,"x":1}'), expect_json={"ok": True})
    assert r.ok and r.status == 200 and r.body == {"ok": True, "x": 1}


def test_wrong_status_fails_and_says_which() -> None:
    (r,), _ = _probe(_response(503, b'{"ok":false}'))
    assert not r.ok and r.status == 503 and "answered 503, expected 200" in r.detail


def test_right_status_without_the_expected_json_is_not_our_service() -> None:
    (r,), _ = _probe(_response(200, b'{"ok":false}'), expect_json={"ok": True})
    assert not r.ok and "not the expected service" in r.detail


def test_a_body_that_is_not_json_fails_an_expect_json_probe() -> None:
    (r,), _ = _probe(_response(200, b"<html>hello</html>"), expect_json={"ok": True})
    assert not r.ok and r.body == {}


def test_a_redirect_is_not_followed() -> None:
    answer = b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:1/\r\nContent-Length: 0\r\n\r\n"
    (r,), _ = _probe(answer)
    assert not r.ok and r.status == 302


def test_no_answer_within_the_timeout_fails_as_a_timeout() -> None:
    (r,), _ = _probe(None, timeout_s=0.3)
    assert not r.ok and "did not answer within 0.3 s" in r.detail


def test_refused_connection_fails_with_the_reason() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connect is refused

        async def scenario() -> ProbeResult:
            prober = Prober()
            try:
                return await prober.http(ProbeConfig(url=f"http://127.0.0.1:{port}/health", timeout_s=2))
            finally:
                await prober.aclose()

        r = asyncio.run(scenario())
    assert not r.ok and r.status is None and f"127.0.0.1:{port}" in r.detail and "Connect" in r.detail


def test_probes_of_one_origin_reuse_one_kept_alive_connection() -> None:
    results, connections = _probe(_response(200, b'{"ok":true}'), times=5)
    assert all(r.ok for r in results)
    assert connections == 1


def test_observers_see_every_probe() -> None:
    seen: list[bool] = []

    async def scenario(run: Callable[[Prober], Awaitable[None]]) -> None:
        prober = Prober()
        prober.observe(lambda cfg, result, took: seen.append(result.ok))
        try:
            await run(prober)
        finally:
            await prober.aclose()

    async def refused(prober: Prober) -> None:
        await prober.http(ProbeConfig(url="http://127.0.0.1:1/health", timeout_s=1))

    asyncio.run(scenario(refused))
    assert seen == [False]
