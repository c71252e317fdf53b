"""Benchmark (not a test): the redactor's cost per line, which every event and log line pays.

Prints nanoseconds per line for typical log lines (nothing to mask), a line with a token to mask, and a 4 KB
event, with a redactor that knows 20 configured secrets (as a config with a few env values and URLs would).

    .venv/bin/python bench/bench_redact.py [--lines N] [--json]
"""

from __future__ import annotations

import argparse
import json
import time

from clawmedic.redact import Redactor

LINES = {
    "plain log line": "2026-12-01T03:04:05.123Z [gateway] listening on ws://127.0.0.1:18789 (PID 41822) ready in 812ms",
    "JSON log line": '{"time":"2026-12-01T03:04:05.123Z","level":"info","subsystem":"gateway/ws","msg":"client '
    'connected","connId":"3f2a9c1e-0b7d-4a5f-8e8c-9b0a1d2e3f4a","remote":"127.0.0.1:51234"}',
    "line with a token": "upstream rejected Authorization: Bearer ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8 (401)",
    "4 KB event": " ".join(["probe ok http://127.0.0.1:18789/health 200 in 3.1 ms"] * 80),
}


def per_line_ns(redactor: Redactor, line: str, n: int) -> float:
    redactor.text(line)  # compile the literal pattern outside the loop
    t0 = time.perf_counter_ns()
    for _ in range(n):
        redactor.text(line)
    return (time.perf_counter_ns() - t0) / n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--lines", type=int, default=20000)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    redactor = Redactor(f"configured-secret-{i:02d}-Zq8w" for i in range(20))
    results = {name: round(per_line_ns(redactor, line, args.lines)) for name, line in LINES.items()}
    if args.json:
        print(json.dumps(results))
        return
    for name, ns in results.items():
        print(f"{name:20} {ns:>8} ns/line  ({len(LINES[name])} chars)")


if __name__ == "__main__":
    main()
