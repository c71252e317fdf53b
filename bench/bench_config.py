"""Benchmark (not a test): a corrupted config plus a restart, on the real sandboxed gateway.

For each round: the gateway is healthy with a known-good snapshot; `openclaw.json` is corrupted (invalid JSON5);
the gateway is killed (SIGKILL), so its next boot would read the broken file. Measured: from the kill to the
gateway live again (clawmedic validates, restores known-good, relaunches), against the gateway's own boot time
for that relaunch. Target: within twice the boot time + 5 s.

    .venv/bin/python bench/bench_config.py [--rounds N] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from clawmedic.sandbox import gateway as gw
from clawmedic.sandbox.install import ensure_install
from clawmedic.store.events import read_events

CLAWMEDIC = str(Path(sys.executable).parent / "clawmedic")


def _wait(events: Path, pred: Any, after: float, timeout: float = 240.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for e in read_events(events):
            if e["ts"] >= after and pred(e):
                return e
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting in {events}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    inst = ensure_install()
    root = Path(tempfile.mkdtemp(prefix="clawmedic-bench-config-"))
    sb = gw.create(root / "sb", inst, limits={"probation_s": 3.0, "stable_reset_s": 3.0, "known_good_after_s": 2.0})
    events = sb.state_dir / "events.jsonl"
    daemon = subprocess.Popen(
        [CLAWMEDIC, "run", "--config", str(sb.config_path), "--json-logs"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    rows: list[dict[str, float]] = []
    try:
        _wait(events, lambda e: e["kind"] == "known_good", 0)
        for i in range(args.rounds):
            time.sleep(4)  # past the stable period: each round is a first failure
            status = json.loads((sb.state_dir / "status.json").read_text())["targets"][gw.TARGET]
            pid = status["pid"]
            sb.openclaw_json.write_text(sb.openclaw_json.read_text() + ",,,{{")
            t0 = time.time()
            os.kill(pid, signal.SIGKILL)
            restored = _wait(events, lambda e: e["kind"] == "config_restored", t0)
            launched = _wait(events, lambda e: e["kind"] == "launched", t0)
            live = _wait(events, lambda e: e["kind"] == "live_again", t0)
            _wait(events, lambda e: e["kind"] == "incident_closed", t0)
            row = {
                "round": i + 1,
                "restore_s": restored["ts"] - t0,
                "boot_s": live["ts"] - launched["ts"],
                "kill_to_live_s": live["ts"] - t0,
            }
            row["budget_s"] = 2 * row["boot_s"] + 5
            rows.append(row)
            if not args.json:
                print(
                    f"round {i + 1}: restored after {row['restore_s']:.2f} s, live after {row['kill_to_live_s']:.2f} s "
                    f"(boot {row['boot_s']:.2f} s; budget {row['budget_s']:.2f} s)"
                )
    finally:
        daemon.terminate()
        daemon.wait(30)
        gw.stop_gateway(sb)
    summary = {
        "rounds": rows,
        "median_kill_to_live_s": statistics.median(r["kill_to_live_s"] for r in rows),
        "median_boot_s": statistics.median(r["boot_s"] for r in rows),
        "within_budget": all(r["kill_to_live_s"] <= r["budget_s"] for r in rows),
        "machine": f"{os.cpu_count()} cores",
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(
            f"median: live again {summary['median_kill_to_live_s']:.2f} s after the kill, boot "
            f"{summary['median_boot_s']:.2f} s; within 2×boot+5 s: {summary['within_budget']}"
        )


if __name__ == "__main__":
    main()
