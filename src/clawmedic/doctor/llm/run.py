"""One LLM consultation, in a process of its own: `python -m clawmedic.doctor.llm.run`.

The daemon never loads a model or an SDK: it starts this process per consultation, reads its JSON lines (every
message and tool call, then the result) into the incident as they come, and kills it when the time budget is
spent. A backend that crashes (a native library's segfault included) takes this process down, not the daemon.

    python -m clawmedic.doctor.llm.run --config FILE --target NAME [--read-only] [--parent-pid PID] < input.json

It runs in a session of its own; the daemon SIGKILLs that whole group on every way out (verdict past the budget,
cancellation when the daemon stops, an error), and the kernel kills it if the daemon itself dies (PDEATHSIG).

Input: {"evidence": {...}, "findings": [...], "tried": [...], "near_misses": [...]} (already redacted). Output:
one JSON object a line, {"kind": ..., "detail": {...}}; the last has kind "result" and the `Consultation`.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clawmedic import defaults
from clawmedic.config import LoadedConfig, load_config
from clawmedic.doctor.llm.agent import Consultation, Limits, consult, evidence_prompt
from clawmedic.doctor.llm.backends import make_backend
from clawmedic.doctor.llm.tools import LiveTools
from clawmedic.doctor.llm.types import BackendUnavailable
from clawmedic.doctor.remedies import Guard, Policy, RemedyContext, Risk
from clawmedic.errors import ClawmedicError
from clawmedic.knowngood_client import KnownGoodClient

PR_SET_PDEATHSIG = 1  # prctl(2): the signal the kernel sends this process when its parent thread ends


def policy_of(loaded: LoadedConfig) -> Policy:
    cfg = loaded.config.daemon.doctor
    return Policy(frozenset(Risk(r) for r in cfg.allow), cfg.allow_kill_foreign)


def run_consultation(
    loaded: LoadedConfig,
    target: str,
    payload: dict[str, Any],
    *,
    read_only: bool,
    emit: Callable[[str, dict[str, Any]], None],
) -> Consultation:
    """Make the backend, build the tools, run the loop. An unusable backend is a result, not an exception."""
    cfg = loaded.config.daemon.doctor.llm
    try:
        backend = make_backend(cfg)
        if (load := getattr(backend, "load", None)) is not None:
            load()  # a local model that cannot load (wrong hash, missing part) is "unavailable", said once
    except BackendUnavailable as e:
        emit("llm_error", {"error": str(e)})
        return Consultation(cfg.backend, "unavailable", error=str(e))
    policy = policy_of(loaded)
    guard = Guard(policy)
    ctx = None if read_only else RemedyContext(loaded, target, KnownGoodClient(loaded.state_dir))
    tools = LiveTools(loaded, target, guard, ctx, read_only=read_only)
    prompt = evidence_prompt(
        payload.get("evidence", {}),
        payload.get("findings", []),
        payload.get("tried", []),
        payload.get("near_misses", []),
    )
    emit("llm_started", {"backend": backend.name, "read_only": read_only})
    return consult(
        backend, tools, prompt, Limits.of(loaded.config.daemon.doctor.llm), loaded.redactor, record=emit, policy=policy
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m clawmedic.doctor.llm.run")
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--target", required=True)
    ap.add_argument("--read-only", action="store_true")
    ap.add_argument("--parent-pid", type=int, default=0)  # the daemon: we die with it
    args = ap.parse_args(argv)
    die_with_parent(args.parent_pid)

    def emit(kind: str, detail: dict[str, Any]) -> None:
        print(json.dumps({"kind": kind, "detail": detail}, default=str), flush=True)

    try:
        loaded = load_config(args.config)
        payload = json.loads(sys.stdin.read() or "{}")
        result = run_consultation(loaded, args.target, payload, read_only=args.read_only, emit=emit)
    except ClawmedicError as e:
        result = Consultation("?", "unavailable", error=str(e))
    emit("result", result.to_dict())
    return 0


async def consult_in_child(
    loaded: LoadedConfig,
    target: str,
    payload: dict[str, Any],
    *,
    read_only: bool = False,
    on_record: Callable[[str, dict[str, Any]], None] | None = None,
) -> Consultation:
    """Run one consultation in a child process, bounded by the time budget; never raises for its failures."""
    budget = loaded.config.daemon.doctor.llm.time_budget_s
    backend = loaded.config.daemon.doctor.llm.backend
    t0 = time.monotonic()
    cmd = [sys.executable, "-m", "clawmedic.doctor.llm.run", "--config", str(loaded.source), "--target", target]
    cmd += ["--parent-pid", str(os.getpid())]
    if read_only:
        cmd.append("--read-only")
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
        limit=2**22,
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(json.dumps(payload, default=str).encode())
    proc.stdin.close()
    result: Consultation | None = None

    async def read() -> None:
        nonlocal result
        assert proc.stdout is not None
        async for line in proc.stdout:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("kind") == "result":
                result = _consultation(rec["detail"])
            elif on_record is not None:
                on_record(str(rec.get("kind")), rec.get("detail") or {})

    stderr_tail: collections.deque[str] = collections.deque(maxlen=5)

    async def read_stderr() -> None:
        assert proc.stderr is not None
        async for line in proc.stderr:
            stderr_tail.append(line.decode(errors="replace").strip())

    stderr_task = asyncio.create_task(read_stderr())
    try:
        await asyncio.wait_for(read(), timeout=budget + defaults.LLM_KILL_GRACE_S)
        await proc.wait()
        await _end_group(proc)  # a backend's own children (an agent CLI's helpers) do not outlive its verdict
    except TimeoutError:
        await _end_group(proc)
        stderr_task.cancel()
        return Consultation(
            backend,
            "time_budget",
            error=f"the LLM doctor ran past its {budget:g} s budget and was stopped",
            took_s=round(time.monotonic() - t0, 3),
        )
    except BaseException:  # cancelled (the daemon stops, the incident ends) or an error here: nothing outlives us
        stderr_task.cancel()
        await asyncio.shield(_end_group(proc))
        raise
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stderr_task, timeout=defaults.LLM_STDERR_DRAIN_S)
    if result is None:
        code = proc.returncode
        why = f"signal {-code}" if code is not None and code < 0 else f"exit {code}"
        last = next((ln for ln in reversed(stderr_tail) if ln), "")
        why += f": {loaded.redactor.text(last)[:300]}" if last else ""
        return Consultation(
            backend,
            "backend_failed",
            error=f"the LLM doctor process died ({why}) before its verdict",
            took_s=round(time.monotonic() - t0, 3),
        )
    return result


async def _end_group(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL the consultation's whole process group (its session: a backend's own children too) and reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # the child leads its own session: group id == its pid
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    await proc.wait()


def die_with_parent(parent_pid: int) -> None:
    """In the consultation child: have the kernel SIGKILL us when the daemon dies, however it dies (SIGKILL, OOM)
    — PR_SET_PDEATHSIG on Linux, so no polling thread competes with a model for the CPU. Elsewhere, and if the
    daemon died before we got here, a parent that is no longer `parent_pid` ends us at once."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if parent_pid and os.getppid() != parent_pid:
        os._exit(1)


def _consultation(d: dict[str, Any]) -> Consultation:
    from clawmedic.doctor.llm.agent import ToolRecord

    tools = [ToolRecord(**t) for t in d.pop("tools", [])]
    return Consultation(**d, tools=tools)


if __name__ == "__main__":
    sys.exit(main())
