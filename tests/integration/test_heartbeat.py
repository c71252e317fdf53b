"""The dead-man's switch for real: the daemon (in-process, with the plugins its config asks for) pings a loopback
HTTP monitor on its interval, switches to the fail URL while a target waits for a human, and keeps running when the
monitor is down."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from clawmedic.cli_ops import plugins_for
from clawmedic.daemon import Daemon
from clawmedic.heartbeat import Heartbeat
from tests.helpers.receivers import HttpReceiver
from tests.helpers.rig import Rig, StandinTarget, free_port, kill_leftovers, wait_for

pytestmark = [pytest.mark.timeout(60)]

UUID = "5f0c1d2e-planted-heartbeat-uuid"


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    try:
        yield r
    finally:
        r.cleanup()


def test_heartbeat_pings_switches_to_fail_url_and_survives_a_dead_monitor(rig: Rig) -> None:
    exit_file = rig.tmp_path / "exit-now"
    monitor = HttpReceiver(free_port()).start()
    beat = {
        "url": f"http://127.0.0.1:{monitor.port}/ping/${{HC_UUID}}",
        "fail_url": f"http://127.0.0.1:{monitor.port}/ping/${{HC_UUID}}/fail",
        "interval_s": 0.2,
        "timeout_s": 1.0,
    }
    target = StandinTarget(args=["--exit-file", str(exit_file), "--exit-code", "78"])
    rig.write_config(target, env_file={"HC_UUID": UUID}, daemon={"heartbeat": beat})
    loaded = rig.load()
    plugins = plugins_for(loaded)
    heartbeat = next(p for p in plugins if isinstance(p, Heartbeat))

    def paths() -> list[str]:
        return [r.path for r in monitor.items()]

    async def scenario() -> None:
        d = Daemon(loaded, plugins=plugins)
        task = asyncio.get_running_loop().create_task(d.run())
        try:
            await wait_for(lambda: len(paths()) >= 3, 10, what="three pings", watch=task)
            assert set(paths()) == {f"/ping/{UUID}"}  # the secret is resolved in the URL
            await wait_for(lambda: rig.events("state") and rig.states()[-1] == "healthy", 15, watch=task)
            exit_file.touch()  # exit 78: escalated, then gave up — a human is needed
            await wait_for(lambda: f"/ping/{UUID}/fail" in paths(), 15, what="a ping of the fail URL", watch=task)
            monitor.stop()
            failures = heartbeat.failures
            await wait_for(lambda: heartbeat.failures >= failures + 3, 10, what="failed pings", watch=task)
            assert not task.done()  # a dead monitor never stops the daemon
        finally:
            d.request_stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 30)
            kill_leftovers(loaded)

    try:
        asyncio.run(scenario())
    finally:
        monitor.stop()
