"""Benchmark (not a test): the CPU cost of the HTTP server's pages at many targets.

Builds a daemon's shared state in a temp folder — N real `TargetSupervisor`s (not running: their snapshot is what a
scrape reads) and an incident store holding a long history (incidents with remedies) — then measures, in this
process, the CPU time (`time.process_time`) of:

- one `/metrics` exposition (`generate_latest` over the daemon's registry: the live collector reading every
  supervisor's snapshot, the grouped counts from the incident store, the histograms, the process collector);
- one status page `/` render, and one `/api/status`;
- one whole `/metrics` request over loopback HTTP (aiohttp server and client in this one process: an upper bound).

    .venv/bin/python bench/bench_web.py [--targets 200] [--incidents 1000] [--rounds 50] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from prometheus_client import generate_latest

from clawmedic.config import load_config
from clawmedic.daemon import events_path, incidents_path
from clawmedic.doctor import RecordOnlyDoctor
from clawmedic.knowngood_client import KnownGoodClient
from clawmedic.probes import Prober, ProbeResult
from clawmedic.store.events import EventLog
from clawmedic.store.incidents import IncidentStore
from clawmedic.supervisor import Context, TargetSupervisor
from clawmedic.web.address import Listen
from clawmedic.web.server import HttpServer


def _config(folder: Path, targets: int) -> Path:
    parts = [f'[daemon]\nstate_dir = "{folder / "state"}"\n[daemon.http]\nlisten = "127.0.0.1:18780"\n']
    for i in range(targets):
        port = 20000 + i
        parts.append(
            f'[targets.gw{i}]\nkind = "http"\nport = {port}\n[targets.gw{i}.start]\ncommand = ["true"]\n'
            f'[targets.gw{i}.liveness]\nurl = "http://127.0.0.1:{port}/health"\n'
        )
    path = folder / "clawmedic.toml"
    path.write_text("\n".join(parts))
    return path


class _Source:
    def __init__(self, supervisors: dict[str, TargetSupervisor]) -> None:
        self._supervisors = supervisors

    @property
    def supervisors(self) -> Mapping[str, Any]:
        return self._supervisors

    def snapshot(self, running: bool) -> dict[str, Any]:
        return {
            "daemon": {"pid": 1, "running": running},
            "targets": {n: s.snapshot() for n, s in self.supervisors.items()},
        }


def _cpu_ms(fn: Callable[[], object], rounds: int) -> dict[str, float]:
    fn()  # warm up
    samples = []
    for _ in range(rounds):
        t0 = time.process_time()
        fn()
        samples.append((time.process_time() - t0) * 1000)
    return {"median_ms": round(statistics.median(samples), 2), "max_ms": round(max(samples), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", type=int, default=200)
    ap.add_argument("--incidents", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-web-") as tmp:
        folder = Path(tmp)
        loaded = load_config(_config(folder, args.targets))
        loaded.state_dir.mkdir(parents=True, exist_ok=True)
        incidents = IncidentStore(incidents_path(loaded.state_dir), loaded.redactor)
        names = list(loaded.targets)
        for i in range(args.incidents):
            inc = incidents.open(names[i % len(names)], f"process exited (exit 1: boom {i})", 1000.0 + i, 1001.0 + i)
            incidents.add(inc, "remedy", {"remedy": "restore_known_good", "status": "ok", "detail": "restored"})
            incidents.update(inc, status="recovered", live_at=1005.0 + i, closed_at=1010.0 + i)
        ctx = Context(
            loaded,
            EventLog(events_path(loaded.state_dir), loaded.redactor),
            incidents,
            Prober(),
            RecordOnlyDoctor(),
            KnownGoodClient(loaded.state_dir),
        )
        supervisors = {name: TargetSupervisor(name, ctx) for name in names}
        for sup in supervisors.values():
            sup.liveness = ProbeResult(True, "200 in 3 ms", 200, 0.003)
        server = HttpServer(loaded, Listen("127.0.0.1", 0))
        server.attach(_Source(supervisors))
        server.metrics.incidents = incidents
        server._incidents = incidents  # what run(ctx) sets, without binding a port
        for name in names:  # a day of probes at a 10 s interval would fill every bucket; a few per target do
            for _ in range(5):
                server.metrics.on_probe(loaded.targets[name].liveness, ProbeResult(True, "ok"), 0.004)
        exposition = generate_latest(server.metrics.registry)
        recent = incidents.list(limit=50)
        results: dict[str, Any] = {
            "targets": args.targets,
            "incidents": args.incidents,
            "metrics_bytes": len(exposition),
            "metrics_lines": exposition.count(b"\n"),
            "metrics_exposition": _cpu_ms(lambda: generate_latest(server.metrics.registry), args.rounds),
            "status_page": _cpu_ms(lambda: server.pages.index(server._status(), incidents.list(limit=50)), args.rounds),
            "api_status": _cpu_ms(lambda: server.pages.status_data(server._status(), recent), args.rounds),
            "metrics_http_request": asyncio.run(_http_round_trips(server, args.rounds)),
        }
        incidents.close()
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{args.targets} targets, {args.incidents} incidents in the store (CPU time, median / max of {args.rounds})")
    print(f"  /metrics exposition: {results['metrics_bytes']} bytes, {results['metrics_lines']} lines")
    for key in ("metrics_exposition", "status_page", "api_status", "metrics_http_request"):
        r = results[key]
        print(f"  {key:22} {r['median_ms']:7.2f} ms   (max {r['max_ms']:.2f} ms)")


async def _http_round_trips(server: HttpServer, rounds: int) -> dict[str, float]:
    from aiohttp.test_utils import TestClient, TestServer

    samples = []
    async with TestClient(TestServer(server.app(), host="127.0.0.1")) as client:
        await (await client.get("/metrics")).read()
        for _ in range(rounds):
            t0 = time.process_time()
            await (await client.get("/metrics")).read()
            samples.append((time.process_time() - t0) * 1000)
    return {"median_ms": round(statistics.median(samples), 2), "max_ms": round(max(samples), 2)}


if __name__ == "__main__":
    main()
