"""A process tree read from /proc/PID/task/TID/children (the memory check's walk) against psutil's full scan."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import psutil

from clawmedic.process import inspect


def test_tree_pids_and_rss_match_psutils_scan_of_every_process() -> None:
    # a shell with two children, one of which has a child of its own (grandchild)
    proc = subprocess.Popen(["sh", "-c", "sleep 60 & (sleep 60 & wait) & wait"], start_new_session=True)
    try:
        root = psutil.Process(proc.pid)
        deadline = time.monotonic() + 10
        while len(root.children(recursive=True)) < 3:
            assert time.monotonic() < deadline, "the tree did not form"
            time.sleep(0.05)
        expected = {proc.pid, *(c.pid for c in root.children(recursive=True))}
        assert inspect.tree_pids(proc.pid) == expected
        assert len(expected) == 4
        assert inspect.tree_rss(proc.pid) >= sum(psutil.Process(p).memory_info().rss for p in expected) * 0.5
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert inspect.tree_pids(proc.pid) == set()
    assert inspect.tree_rss(proc.pid) == 0
