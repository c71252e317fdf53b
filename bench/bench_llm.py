"""Benchmark (not a test): the embedded local model (clawmedic[local-llm]) — assembly, load, seconds per decision.

- assembly: joining the 22 installed chunks into a fresh cache folder, hashing while writing (cold), and the
  second call that trusts the stamp (warm);
- load: xllamacpp loading the GGUF (in this process, once);
- decision: one `complete()` with the doctor's real tools and system prompt over the broken-openclaw.json evidence,
  a fresh transcript each time (no cached prefix), and a follow-up decision after the chosen tool's recorded
  result (the prefix is cached by llama.cpp, so only the new tokens are read); median over `--decisions` runs.

    .venv/bin/python bench/bench_llm.py [--decisions 3] [--threads N] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from clawmedic.doctor.llm.agent import SYSTEM_PROMPT, evidence_prompt, tool_specs
from clawmedic.doctor.llm.local import LocalBackend, ensure_model, local_available
from clawmedic.doctor.llm.types import Message
from clawmedic.doctor.remedies import Policy

OUTPUT_TAIL = [
    "Invalid config at /home/u/.openclaw/openclaw.json: JSON5 parse failed: invalid character ',' at 3:5",
    "Gateway exited with code 78",
]
VALIDATION = {"valid": False, "stage": "parse", "issues": ["JSON5: invalid character ',' at 3:5"]}
EVIDENCE = {
    "target": "gateway",
    "cause": "fatal_config",
    "reason": "the gateway exited and cannot start",
    "last_exit": {"code": 78, "kind": "fatal_config"},
    "output_tail": OUTPUT_TAIL,
    "config": VALIDATION,
    "known_good": "4f1c2a9e0b",
    "config_differs_from_known_good": True,
}

# What the read-only tools answer in this incident (as in evals/cases/01-invalid-json.json).
TOOL_OUTPUT = {
    "log_tail": "console output:\n" + "\n".join(OUTPUT_TAIL),
    "config_validation": json.dumps(VALIDATION),
    "port_owner": "nothing listens on port 18789",
}


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--decisions", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if not local_available():
        raise SystemExit("clawmedic[local-llm] is not installed")

    figures: dict[str, Any] = {"cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2)}
    scratch = Path(tempfile.mkdtemp(prefix="clawmedic-bench-llm-"))
    try:
        t = time.monotonic()
        ensure_model(directory=scratch)
        figures["assembly_cold_s"] = round(time.monotonic() - t, 2)
        t = time.monotonic()
        ensure_model(directory=scratch)
        figures["assembly_warm_s"] = round(time.monotonic() - t, 4)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    _say(f"assembly: cold {figures['assembly_cold_s']} s, warm {figures['assembly_warm_s']} s")

    backend = LocalBackend(threads=args.threads)
    t = time.monotonic()
    backend.load()
    figures["load_s"] = round(time.monotonic() - t, 2)
    _say(f"load: {figures['load_s']} s")

    specs = tool_specs(Policy())  # what the daemon offers under the default policy
    base: list[Message] = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": evidence_prompt(EVIDENCE, [], [])},
    ]
    fresh: list[float] = []
    followup: list[float] = []
    choices: list[str] = []
    usage: list[dict[str, int]] = []
    for i in range(args.decisions):
        # A different first line each time, so no run reuses the previous one's cached prompt.
        messages = [{**base[0], "content": f"(run {i}) " + base[0]["content"]}, base[1]]
        t = time.monotonic()
        reply = backend.complete(messages, specs, timeout_s=900)
        fresh.append(time.monotonic() - t)
        call = reply.tool_calls[0]
        choices.append(call.name)
        usage.append(reply.usage)
        _say(f"decision {i + 1}: {fresh[-1]:.1f} s → {call.name} {call.arguments} {reply.usage}")
        messages += [
            {"role": "assistant", "content": reply.text, "tool_calls": [vars(call)]},
            {"role": "tool", "tool_call_id": call.id, "name": call.name, "content": TOOL_OUTPUT.get(call.name, "ok")},
        ]
        t = time.monotonic()
        reply = backend.complete(messages, specs, timeout_s=900)
        followup.append(time.monotonic() - t)
        _say(f"  follow-up: {followup[-1]:.1f} s → {[c.name for c in reply.tool_calls]} {reply.usage}")
    figures["decision_fresh_median_s"] = round(statistics.median(fresh), 1)
    figures["decision_followup_median_s"] = round(statistics.median(followup), 1)
    figures["decisions"] = [round(x, 1) for x in fresh]
    figures["followups"] = [round(x, 1) for x in followup]
    figures["first_choices"] = choices
    figures["usage"] = usage
    figures["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
    if args.json:
        print(json.dumps(figures, indent=1))
    else:
        for k, v in figures.items():
            print(f"{k:28} {v}")


if __name__ == "__main__":
    main()
