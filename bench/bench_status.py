"""Benchmark (not a test): the wall time, CPU and peak RSS of a whole `clawmedic status` process, and its imports.

A one-target config in a temp folder (no daemon running: `status` reads the config and `status.json` and prints).
Each run is a fresh process; wall time from a monotonic clock around it, CPU and peak RSS from the kernel's own
accounting of the reaped child (`os.wait4`). `--baseline-src DIR` (e.g. a `git worktree` of an older commit's `src`)
runs that code in turn with this one (A B A B …), so a drifting, shared machine moves both alike.

    .venv/bin/python bench/bench_status.py [--runs 15] [--baseline-src /tmp/wt-old/src] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CLAWMEDIC = str(Path(sys.executable).parent / "clawmedic")


def _one(config: Path, src: str | None) -> tuple[float, float, float]:
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = src
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [CLAWMEDIC, "status", "--config", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
    )
    _, _, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - t0
    proc.returncode = 0  # reaped by wait4 above
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def _import_ms(src: str | None) -> float:
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = src
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import clawmedic.cli"], capture_output=True, text=True, env=env
    ).stderr
    line = next(x for x in out.splitlines() if x.rstrip().endswith("| clawmedic.cli"))
    return int(line.split("|")[1]) / 1000


def _summary(rows: list[tuple[float, float, float]]) -> dict[str, float]:
    return {
        "wall_s": round(statistics.median(r[0] for r in rows), 3),
        "cpu_s": round(statistics.median(r[1] for r in rows), 3),
        "peak_rss_mb": round(statistics.median(r[2] for r in rows), 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--baseline-src", help="another checkout's src/ to compare with (run in turn)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-status-") as tmp:
        config = Path(tmp) / "c.toml"
        config.write_text(
            f'[daemon]\nstate_dir = "{Path(tmp) / "state"}"\n[targets.gw]\nkind = "http"\n'
            '[targets.gw.start]\nmode = "external"\nrestart_command = ["true"]\n'
            '[targets.gw.liveness]\nurl = "http://127.0.0.1:1/health"\n'
        )
        sources: dict[str, str | None] = {"this": None}
        if args.baseline_src:
            sources["baseline"] = args.baseline_src
        for src in sources.values():
            _one(config, src)  # warm-up (bytecode caches)
        rows: dict[str, list[tuple[float, float, float]]] = {k: [] for k in sources}
        for _ in range(args.runs):
            for name, src in sources.items():
                rows[name].append(_one(config, src))
        result: dict[str, Any] = {
            name: {**_summary(rows[name]), "import_cli_ms": round(statistics.median(_import_ms(src) for _ in range(5)))}
            for name, src in sources.items()
        }
        result["load_1min"] = round(os.getloadavg()[0], 2)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for name in sources:
        r = result[name]
        print(
            f"{name:9} status: wall {r['wall_s']} s, cpu {r['cpu_s']} s, peak RSS {r['peak_rss_mb']} MB; "
            f"import clawmedic.cli {r['import_cli_ms']} ms (medians of {args.runs})"
        )
    print(f"load average (1 min): {result['load_1min']}")


if __name__ == "__main__":
    main()
