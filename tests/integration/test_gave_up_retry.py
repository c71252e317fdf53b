"""Issue 17 against real child processes: after `gave_up`, a slow retry every `retry_after_gave_up_s`, gated.

A crash-looping stand-in drives the target to gave_up with a 3 s retry period. Then, one period each:
  1. a foreign process squats on the port: the gate finds it, nothing is launched;
  2. the squatter left but the fault is still there: launched once, crashes, still gave_up, same incident;
  3. the fault is gone: launched, probation passes, the incident closes as recovered.
The real gateway version (a flapping killer) is tests/e2e/test_gave_up_retry.py.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.rig import Rig, StandinTarget, free_port

pytestmark = pytest.mark.timeout(90)

RETRY_S = 3.0  # a period long enough to start the squatter in, short enough for CI


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    try:
        yield r
    finally:
        r.cleanup()


def _squat(port: int) -> subprocess.Popen[bytes]:
    code = (
        "import socket, time\n"
        f"s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1', {port}))\n"
        "s.listen(); time.sleep(120)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        with socket.socket() as c:
            if c.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        assert proc.poll() is None and time.monotonic() < deadline, "the squatter did not start"
        time.sleep(0.02)


def test_gave_up_retries_slowly_only_through_the_gates_and_recovers_the_same_incident(rig: Rig) -> None:
    crash = rig.tmp_path / "crash"
    crash.write_text("Error: the upstream is down\n")
    port = free_port()
    rig.write_config(
        StandinTarget(port=port, args=["--crash-file", str(crash)], limits={"retry_after_gave_up_s": RETRY_S})
    )
    squatter: subprocess.Popen[bytes] | None = None

    async def scenario() -> tuple[float, float, float]:
        nonlocal squatter
        async with rig.daemon():
            gave_up = await rig.wait_event("gave_up", timeout=30)
            squatter = _squat(port)
            blocked = await rig.wait_event("retry_gates", since=gave_up["ts"], timeout=10, passed=False)
            assert f"port {port} is held by" in blocked["detail"]
            squatter.kill()
            squatter.wait()
            second = await rig.wait_event("retry_gates", since=blocked["ts"] + 0.01, timeout=10, passed=True)
            await rig.wait_event("retry_failed", since=second["ts"], timeout=10)
            crash.unlink()
            third = await rig.wait_event("retry_gates", since=second["ts"] + 0.01, timeout=10, passed=True)
            await rig.wait_event("incident_closed", since=third["ts"], timeout=20)
            await rig.wait_for(lambda: rig.target_status().get("state") == "healthy", 5, "status: healthy")
            return gave_up["ts"], blocked["ts"], second["ts"]

    try:
        gave_up_at, blocked_at, second_at = asyncio.run(scenario())
    finally:
        if squatter is not None and squatter.poll() is None:
            squatter.kill()
            squatter.wait()

    launches = rig.events("launched", since=gave_up_at)
    assert not [e for e in launches if e["ts"] < second_at]  # the squatter's period launched nothing
    assert len(launches) == 2  # one a period, once the gate passed
    assert all("slow retry" in e["reason"] for e in launches)
    assert blocked_at - gave_up_at == pytest.approx(RETRY_S, abs=RETRY_S * 0.1 + 1.0)  # jittered period
    [incident] = rig.incidents()  # the same incident throughout: no second one
    assert incident.status == "recovered"
    assert len(rig.events("gave_up")) == 1  # a failed retry is not a new "gave up" (nobody is told again)
    assert [e["new"] for e in rig.events("state", since=gave_up_at)] == [
        "retrying",
        "gave_up",
        "retrying",
        "probation",
        "healthy",
    ]
