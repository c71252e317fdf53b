"""Benchmark (not a test): the doctor on the real sandboxed gateway — escalation to verdict, per fault.

Faults injected for real: a config that validates but blocks the start (exit 78 → restore known-good), a
corrupted state database (exit 78 → move it aside), and with `--llm local` a fault no rule explains (TLS switched
on: the gateway boots but speaks HTTPS), healed by the LLM doctor with the embedded model.
For each: time from the escalation to the doctor's verdict,
the doctor's own overhead (collecting evidence, diagnosing, reporting: the verdict minus the remedy's own time;
target < 5 s), and escalation to healthy again.

    .venv/bin/python bench/bench_doctor.py [--json] [--llm local]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clawmedic.sandbox import gateway as gw
from clawmedic.sandbox.install import ensure_install
from clawmedic.store.events import read_events

CLAWMEDIC = str(Path(sys.executable).parent / "clawmedic")


def _wait(events: Path, pred: Callable[[dict[str, Any]], bool], after: float, timeout: float = 300.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for e in read_events(events):
            if e["ts"] >= after and pred(e):
                return e
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting in {events}")


def _verdict(sb: gw.Sandbox, incident: int) -> dict[str, Any]:
    con = sqlite3.connect(sb.state_dir / "incidents.sqlite")
    try:
        rows = con.execute(
            "SELECT ts, detail FROM incident_events WHERE incident_id = ? AND kind = 'verdict'", (incident,)
        ).fetchall()
    finally:
        con.close()
    ts, detail = rows[-1]
    return {"ts": ts, **json.loads(detail)}


def _llm_steps(sb: gw.Sandbox, incident: int) -> list[str]:
    """The LLM doctor's tool calls in this incident, if it was consulted."""
    con = sqlite3.connect(sb.state_dir / "incidents.sqlite")
    try:
        rows = con.execute(
            "SELECT detail FROM incident_events WHERE incident_id = ? AND kind = 'llm_tool'", (incident,)
        ).fetchall()
    finally:
        con.close()
    return [f"{d['name']}:{d['status']}" for d in (json.loads(r[0]) for r in rows)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--json", action="store_true")
    ap.add_argument(
        "--llm",
        metavar="BACKEND",
        help="also a fault no rule explains (TLS switched on), healed by the LLM doctor with this backend (local)",
    )
    args = ap.parse_args()
    inst = ensure_install()
    root = Path(tempfile.mkdtemp(prefix="clawmedic-bench-doctor-"))
    limits = {"probation_s": 3.0, "stable_reset_s": 3.0, "known_good_after_s": 2.0}
    if args.llm:  # the TLS fault escalates after its relaunch fails the startup grace: one SIGKILL + one timeout
        limits |= {"crash_loop_failures": 2, "startup_timeout_s": 120.0}
    sb = gw.create(root / "sb", inst, limits=limits)
    with sb.config_path.open("a") as f:
        f.write(f'\n[daemon.doctor.llm]\nbackend = "{args.llm or "off"}"\n')
    events = sb.state_dir / "events.jsonl"
    daemon = subprocess.Popen(
        [CLAWMEDIC, "run", "--config", str(sb.config_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )

    def blocked_config() -> None:
        sb.openclaw_json.write_text(sb.openclaw_json.read_text().replace('"local"', '"remote"'))

    def corrupt_db() -> None:
        (sb.home / ".openclaw" / "state" / "openclaw.sqlite").write_bytes(b"not a database" * 64)

    def tls_on() -> None:  # validates and boots, but speaks HTTPS: no rule explains it
        cfg = json.loads(sb.openclaw_json.read_text())
        tls = sb.home / "tls"
        cfg["gateway"]["tls"] = {"enabled": True, "certPath": str(tls / "c.pem"), "keyPath": str(tls / "k.pem")}
        sb.openclaw_json.write_text(json.dumps(cfg))

    faults: list[tuple[str, Callable[[], None], bool]] = [
        ("config blocks the start (exit 78)", blocked_config, False),
        ("corrupted state database (exit 78)", corrupt_db, True),
    ]
    if args.llm:
        faults.append((f"TLS switched on, no rule: LLM doctor ({args.llm})", tls_on, False))
    rows = []
    try:
        _wait(events, lambda e: e["kind"] == "known_good", 0)
        for name, inject, stop_first in faults:
            time.sleep(4)
            pid = json.loads((sb.state_dir / "status.json").read_text())["targets"][gw.TARGET]["pid"]
            t0 = time.time()
            if stop_first:
                os.kill(pid, signal.SIGKILL)
                time.sleep(0.05)
                inject()
            else:
                inject()
                os.kill(pid, signal.SIGKILL)
            esc = _wait(events, lambda e: e["kind"] == "escalated", t0, 600)
            _wait(events, lambda e: e["kind"] == "incident_closed", t0, 1800)
            live = _wait(events, lambda e: e["kind"] == "live_again", t0)
            v = _verdict(sb, esc["incident"])
            row = {
                "fault": name,
                "escalation_to_verdict_s": round(v["ts"] - esc["ts"], 2),
                "doctor_overhead_s": v.get("doctor_overhead_s"),
                "llm": _llm_steps(sb, esc["incident"]),
                "remedies": v.get("remedies"),
                "escalation_to_live_s": round(live["ts"] - esc["ts"], 2),
            }
            rows.append(row)
            if not args.json:
                print(
                    f"{name}: verdict {row['escalation_to_verdict_s']} s after escalation "
                    f"(doctor overhead {row['doctor_overhead_s']} s; {row['remedies']}"
                    + (f"; LLM calls {row['llm']}" if row["llm"] else "")
                    + "), live again after "
                    f"{row['escalation_to_live_s']} s"
                )
    finally:
        daemon.terminate()
        daemon.wait(30)
        gw.stop_gateway(sb)
    if args.json:
        print(json.dumps({"machine": f"{os.cpu_count()} cores", "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
