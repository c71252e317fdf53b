"""Benchmark (not a test): what a real `clawmedic run` costs at scale — many HTTP targets, many managed children.

A stand-in fleet (this script with `--serve`, its own process: one asyncio server on N loopback ports answering
`GET /health` with `200 {"ok":true}` over HTTP/1.1 keep-alive) records when each port was asked. Then a real
`clawmedic run --config …` (its own process, default 5 s probes) supervises N targets:

- `external`: N `kind = "http"` targets with `start.mode = "external"` (nothing to launch, only probes);
- `managed`: N managed children (`sleep`), each probed on a fleet port (a child process plus a probe each).

After a warm-up, over `--seconds` (≥ 60 by default) the daemon's CPU (utime+stime from /proc/PID/stat, % of one
core), RSS and USS (smaps_rollup), and its thread count are read; the fleet reports the gaps between two probes of
the same port inside that window (p50 / p99 / max, measured at the server). `--floor` runs, instead of the daemon,
a raw asyncio GET loop (keep-alive, one connection per port, scheduled at start + k·interval) over the same ports:
the floor any prober is compared with.

    .venv/bin/python bench/bench_scale.py --targets 200                 # external targets
    .venv/bin/python bench/bench_scale.py --targets 200 --managed       # 200 managed `sleep` children
    .venv/bin/python bench/bench_scale.py --targets 200 --floor         # the raw-asyncio floor
    .venv/bin/python bench/bench_scale.py --targets 1000 --seconds 60 --json

Every process it starts (the fleet, the daemon, the daemon's children through `stop_targets_on_exit`) is stopped by
PID at the end; the temp folder is removed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
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

HERE = Path(__file__).resolve().parent
VENV_BIN = Path(sys.executable).parent
BODY = b'{"ok":true}'
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n" + BODY
CLK_TCK = os.sysconf("SC_CLK_TCK")
# `--prober raw`: the daemon with its HTTP probe swapped for bench/_raw_prober.py (a hand-written asyncio GET)
RAW_DAEMON = (
    f"import sys; sys.path.insert(0, {str(HERE)!r}); import _raw_prober; _raw_prober.install(); "
    "from clawmedic.cli import main; sys.argv[0] = 'clawmedic'; main()"
)


# --- the stand-in fleet (its own process) -------------------------------------------------------------------------


async def _serve(base: int, n: int, out: Path) -> None:
    hits: dict[int, list[float]] = {base + i: [] for i in range(n)}

    def handler(port: int) -> Any:
        async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    hits[port].append(time.monotonic())
                    if head.startswith(b"GET"):
                        writer.write(RESPONSE)
                        await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
                pass
            finally:
                writer.close()

        return on_conn

    servers = [await asyncio.start_server(handler(p), "127.0.0.1", p, backlog=64) for p in hits]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, lambda: out.write_text(json.dumps({str(k): v for k, v in hits.items()})))
    print("ready", flush=True)
    await stop.wait()
    for s in servers:
        s.close()


# --- the raw-asyncio floor (its own process) --------------------------------------------------------------------


async def _floor(base: int, n: int, interval: float) -> None:
    async def one(port: int) -> None:
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        loop = asyncio.get_running_loop()
        start = loop.time() + (port - base) * interval / n
        k = 0
        while True:
            k += 1
            await asyncio.sleep(max(0.0, start + k * interval - loop.time()))
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                assert reader is not None
                writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                body = json.loads(await reader.readexactly(length))
                assert head.startswith(b"HTTP/1.1 200") and body.get("ok") is True
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError):
                writer = None

    await asyncio.gather(*(one(base + i) for i in range(n)))


# --- the measurement ------------------------------------------------------------------------------------------


def _free_base(n: int) -> int:
    import socket

    for base in range(21000, 60000 - n, 1500):
        try:
            socks = []
            for p in sorted({base, base + n // 2, base + n - 1}):
                s = socket.socket()
                s.bind(("127.0.0.1", p))
                socks.append(s)
            for s in socks:
                s.close()
            return base
        except OSError:
            continue
    raise SystemExit("no free range of loopback ports")


def _config(folder: Path, base: int, n: int, managed: bool) -> Path:
    parts = [f'[daemon]\nstate_dir = "{folder / "state"}"\nstop_targets_on_exit = true\n']
    for i in range(n):
        port = base + i
        start = (
            'mode = "managed"\ncommand = ["sleep", "100000"]'
            if managed
            else 'mode = "external"\nrestart_command = ["true"]'
        )
        parts.append(
            f'[targets.t{i}]\nkind = "http"\n[targets.t{i}.start]\n{start}\n'
            f'[targets.t{i}.liveness]\nurl = "http://127.0.0.1:{port}/health"\nexpect_json = {{ ok = true }}\n'
        )
    path = folder / "clawmedic.toml"
    path.write_text("\n".join(parts))
    return path


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)


def _status(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "Threads"):
            out[key] = int(value.split()[0])
    uss = 0
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                uss += int(line.split()[1])
    out["USS"] = uss
    return out


def _children(pid: int) -> list[int]:
    with contextlib.suppress(OSError):
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return []


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def run(n: int, managed: bool, floor: bool, warmup: float, seconds: float, prober: str = "") -> dict[str, Any]:
    base = _free_base(n)
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        folder = Path(tmp)
        hits_file = folder / "hits.json"
        fleet = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(base), str(n), str(hits_file)],
            stdout=subprocess.PIPE,
            text=True,
        )
        proc: subprocess.Popen[bytes] | None = None
        try:
            assert fleet.stdout is not None
            fleet.stdout.readline()  # "ready"
            config = ["run", "--config", str(_config(folder, base, n, managed))]
            if floor:
                cmd = [sys.executable, __file__, "--floor-loop", str(base), str(n)]
            elif prober == "raw":
                cmd = [sys.executable, "-c", RAW_DAEMON, *config]
            else:
                cmd = [str(VENV_BIN / "clawmedic"), *config]
            log = (folder / "daemon.log").open("wb")
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            time.sleep(warmup)
            if proc.poll() is not None:
                raise SystemExit(f"the daemon exited: {(folder / 'daemon.log').read_text()[-2000:]}")
            t0, c0 = time.monotonic(), _cpu_ticks(proc.pid)
            w0 = time.monotonic()
            samples = []
            while time.monotonic() - t0 < seconds:
                time.sleep(min(5.0, seconds - (time.monotonic() - t0)))
                samples.append(_status(proc.pid))
            t1, c1 = time.monotonic(), _cpu_ticks(proc.pid)
            w1 = time.monotonic()
            kids = len(_children(proc.pid))
            fleet.send_signal(signal.SIGUSR1)
            for _ in range(100):
                time.sleep(0.1)
                if hits_file.exists() and hits_file.stat().st_size > 0:
                    time.sleep(0.2)
                    break
            hits = json.loads(hits_file.read_text())
        finally:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            fleet.send_signal(signal.SIGTERM)
            try:
                fleet.wait(10)
            except subprocess.TimeoutExpired:
                fleet.kill()
                fleet.wait()
    gaps: list[float] = []
    probed = 0
    for times in hits.values():
        inside = [t for t in times if w0 <= t <= w1]
        probed += bool(inside)
        gaps.extend(b - a for a, b in itertools.pairwise(inside))
    return {
        "what": "floor" if floor else ("managed" if managed else "external") + (f" ({prober})" if prober else ""),
        "targets": n,
        "seconds": round(t1 - t0, 1),
        "cpu_pct_of_core": round(100 * (c1 - c0) / CLK_TCK / (t1 - t0), 2),
        "rss_mb": round(max(s["VmRSS"] for s in samples) / 1024, 1),
        "uss_mb": round(max(s["USS"] for s in samples) / 1024, 1),
        "threads_max": max(s["Threads"] for s in samples),
        "children": kids,
        "targets_probed": probed,
        "gap_p50_s": round(statistics.median(gaps), 3) if gaps else None,
        "gap_p99_s": round(_percentile(gaps, 0.99), 3),
        "gap_max_s": round(max(gaps), 3) if gaps else None,
        "load_1min": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        asyncio.run(_serve(int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--floor-loop":
        asyncio.run(_floor(int(sys.argv[2]), int(sys.argv[3]), 5.0))
        return
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--targets", type=int, nargs="+", default=[200])
    ap.add_argument("--managed", action="store_true", help="managed `sleep` children instead of external targets")
    ap.add_argument("--floor", action="store_true", help="a raw asyncio GET loop instead of the daemon")
    ap.add_argument("--prober", choices=["", "raw"], default="", help="raw: the daemon with a hand-written GET")
    ap.add_argument("--warmup", type=float, default=20.0)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows = [run(n, args.managed, args.floor, args.warmup, args.seconds, args.prober) for n in args.targets]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    cols = list(rows[0])
    print("  ".join(cols))
    for r in rows:
        print("  ".join(str(r[c]) for c in cols))


if __name__ == "__main__":
    main()
