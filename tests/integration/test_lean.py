"""Issue 12's promises that are not about speed, on real processes: `clawmedic status` exit codes scripts can use, a
chatty child's output.log capped while it runs."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from clawmedic import defaults
from clawmedic.process.launcher import Launcher
from tests.helpers.rig import STANDIN, Rig, StandinTarget
from tests.integration.test_cli import CLAWMEDIC, cli_env


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    yield r
    r.cleanup()


def status(rig: Rig, *args: str) -> subprocess.CompletedProcess[str]:
    home = rig.tmp_path / "home"
    home.mkdir(exist_ok=True)
    return subprocess.run(
        [CLAWMEDIC, "status", *args, "--config", str(rig.config_path)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env(home),
        check=False,
    )


# --- status: exit 0 all healthy, 1 any target down or no daemon, 2 an unknown target ------------------------------


@pytest.mark.timeout(120)
def test_status_exits_0_only_when_the_daemon_runs_and_every_target_is_healthy(rig: Rig) -> None:
    rig.write_config(StandinTarget("svc"), StandinTarget("bad", args=("--exit-after", "0", "--exit-code", "78")))

    async def scenario() -> list[subprocess.CompletedProcess[str]]:
        async with rig.daemon():
            await rig.wait_state("healthy", target="svc")
            await rig.wait_for(
                lambda: rig.target_status("bad").get("state") in ("escalated", "gave_up"), 30, "bad given up"
            )
            return [await asyncio.to_thread(status, rig, *a) for a in ([], ["svc"], ["bad"], ["nosuch"], ["--json"])]

    both, svc, bad, unknown, as_json = asyncio.run(scenario())
    assert both.returncode == defaults.EXIT_FAILURE, both.stdout
    first = both.stdout.splitlines()[0]
    assert "bad" in first and "svc" not in first, "the one-line summary names the target that is down"
    assert svc.returncode == defaults.EXIT_OK and svc.stdout.startswith("OK"), svc.stdout
    assert bad.returncode == defaults.EXIT_FAILURE, bad.stdout
    assert unknown.returncode == defaults.EXIT_CONFIG and "nosuch" in unknown.stderr, unknown.stderr
    assert as_json.returncode == defaults.EXIT_FAILURE and '"ok": false' in as_json.stdout

    stopped = status(rig, "svc")  # the daemon is gone: a healthy last status is no longer a promise
    assert stopped.returncode == defaults.EXIT_FAILURE
    assert "not running" in stopped.stdout.splitlines()[0]


# --- output.log capped while a chatty child runs ----------------------------------------------------------------------

CHATTY = (
    "import runpy, sys, threading, time\n"
    "def chat():\n"
    "    while True:\n"
    "        print('chatter ' * 120, flush=True)\n"
    "        time.sleep(0.001)\n"
    "threading.Thread(target=chat, daemon=True).start()\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)


class ChattyTarget(StandinTarget):
    def command(self) -> list[str]:
        return [sys.executable, "-c", CHATTY, str(STANDIN), "--port", str(self.port)]


@pytest.mark.timeout(120)
def test_a_chatty_childs_output_log_is_capped_while_it_runs(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(defaults, "OUTPUT_LOG_MAX_BYTES", 256 * 1024)
    target = ChattyTarget("svc", limits={"memory_check_interval_s": 0.3})
    rig.write_config(target)
    log = rig.state_dir / "targets" / "svc" / "output.log"

    async def scenario() -> tuple[int, list[Path]]:
        async with rig.daemon():
            await rig.wait_state("healthy")
            [pid] = rig.launched_pids()
            await rig.wait_for(lambda: len(list(log.parent.glob("output.log.*"))) >= 2, 30, "two caps")
            assert rig.launched_pids() == [pid], "capped while the same child runs, not between launches"
            return pid, sorted(log.parent.glob("output.log.*"))

    _, copies = asyncio.run(scenario())
    assert all(c.stat().st_size > defaults.OUTPUT_LOG_MAX_BYTES for c in copies), "each copy holds what was capped"
    with log.open("rb") as f:
        head = f.read(4096)
    assert head and b"\0" not in head, "the child's O_APPEND writes start at the top again: no hole of NULs"
    assert b"chatter" in head


def test_cap_log_copies_and_empties_in_place_while_the_writer_keeps_its_descriptor(tmp_path: Path) -> None:
    launcher = Launcher(tmp_path)
    writer = subprocess.Popen(
        [sys.executable, "-c", "import time\nwhile True:\n    print('y' * 200, flush=True)\n    time.sleep(0.0005)"],
        stdout=launcher.log_path.open("ab"),
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while launcher.log_path.stat().st_size <= 64 * 1024:
            assert time.monotonic() < deadline, "the writer wrote too little"
            time.sleep(0.05)
        import clawmedic.process.launcher as launcher_module

        copy = launcher_module.cap_log(launcher.log_path, 64 * 1024)
        assert copy is not None and copy.stat().st_size > 64 * 1024
        assert copy.stat().st_mode & 0o777 == 0o600
        time.sleep(0.2)
        after = launcher.log_path.read_bytes()
        assert after and len(after) < copy.stat().st_size, "emptied in place; the writer goes on at the new end"
        assert after[:1] == b"y" and b"\0" not in after
        assert launcher_module.cap_log(launcher.log_path, 1 << 30) is None, "below the limit: untouched"
    finally:
        writer.kill()
        writer.wait()


def test_the_daemons_own_console_log_is_capped_only_when_appended_to(tmp_path: Path) -> None:
    """cron's `>> daemon-console.log 2>&1`: our own stdout/stderr, O_APPEND, nothing else rotates it."""
    import os

    from clawmedic.process.launcher import cap_own_console

    appended = tmp_path / "daemon-console.log"
    overwritten = tmp_path / "not-appended.log"
    with appended.open("ab") as a, overwritten.open("wb") as w:
        for f in (a, w):
            f.write(b"console line\n" * 10_000)
            f.flush()
        copies = cap_own_console(64 * 1024, fds=(a.fileno(), a.fileno(), w.fileno()))
        assert [c.name.split(".")[0] for c in copies] == ["daemon-console"], "the same file once; never the other"
        assert appended.stat().st_size == 0 and copies[0].stat().st_size == 130_000
        assert overwritten.stat().st_size == 130_000, "truncating a non-O_APPEND file would leave a hole"
        os.write(a.fileno(), b"next\n")
    assert appended.read_bytes() == b"next\n"
