"""Control requests reach the daemon at once through its wake-up socket (`control.poke`), not a poll."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from clawmedic import control, defaults
from tests.helpers.rig import Rig, StandinTarget


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    yield r
    r.cleanup()


# --- the control channel: a command's request reaches the daemon at once, with no poll ---------------------------


@pytest.mark.timeout(120)
def test_a_pause_and_a_resume_reach_the_daemon_through_its_wake_up_socket_not_a_poll(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(defaults, "CONTROL_RECHECK_S", 3600.0)  # unpoked, the daemon would look in an hour
    rig.write_config(StandinTarget("svc"))

    async def scenario() -> None:
        async with rig.daemon():
            await rig.wait_state("healthy")
            await asyncio.sleep(0.5)  # past the control loop's first pass: from here on only a poke wakes it
            asked = time.time()
            control.pause(rig.state_dir, ["svc"])
            await rig.wait_state("maintenance", since=asked, timeout=30)
            asked = time.time()
            control.resume(rig.state_dir, ["svc"])
            await rig.wait_for(lambda: "healthy" in rig.states(since=asked), 30, "healthy after the resume")

    asyncio.run(scenario())
