"""The known-good store is shared by processes: the daemon's `knowngood` child, `clawmedic config apply` and the
CLI's own `snapshot` may write at the same moment. Two real processes writing snapshots at once lose nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from clawmedic.knowngood import KnownGoodStore

ROUNDS = 12

WRITER = """
import json, sys, time
from pathlib import Path
from clawmedic.knowngood import KnownGoodStore

state, who, go, rounds = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
src = state.parent / f"{who}.json"
while not go.exists():
    time.sleep(0.001)
store = KnownGoodStore(state)  # the first writer creates the repository: both may try at once
for i in range(rounds):
    src.write_text(json.dumps({"who": who, "round": i}))
    store.snapshot(who, {"openclaw.json": src}, f"round {i}", "healthy", known_good=i == rounds - 1)
"""


def test_two_processes_writing_snapshots_at_once_lose_none(tmp_path: Path) -> None:
    state, go = tmp_path / "state", tmp_path / "go"
    state.mkdir()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(state), who, str(go), str(ROUNDS)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for who in ("alpha", "beta")
    ]
    try:
        time.sleep(0.5)  # both are waiting for the go file (interpreter started, clawmedic imported)
        go.touch()
        results = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in results]

    store = KnownGoodStore(state)
    for who in ("alpha", "beta"):
        snaps = store.history(who, limit=1000)
        assert sorted(s.reason for s in snaps) == sorted(f"round {i}" for i in range(ROUNDS)), who
        for s in snaps:  # every commit holds that round's file, not the other writer's half-staged tree
            data = store.read(who, "openclaw.json", s.rev)
            assert data is not None and json.loads(data) == {"who": who, "round": int(s.reason.split()[1])}
        kg = store.known_good(who)
        assert kg is not None and kg.reason == f"round {ROUNDS - 1}"
    assert len(store.history(limit=1000)) == 2 * ROUNDS
