"""What an exit code (and the last lines the process printed) means for the ladder. Pure."""

from __future__ import annotations

from collections.abc import Sequence

from clawmedic.ladder.states import ExitKind

EX_CONFIG = 78  # sysexits: OpenClaw uses it for an invalid/missing config, maintenance needed, a locked state database
_PORT_MARKERS = ("EADDRINUSE", "address already in use", "already listening on")


def classify_exit(code: int | None, *, requested: bool, output_tail: Sequence[str] = ()) -> ExitKind:
    if requested:
        return ExitKind.REQUESTED
    if code == 0:
        return ExitKind.RESTART_REQUEST
    if code == EX_CONFIG:
        return ExitKind.FATAL_CONFIG
    if code == 1 and any(m in line for line in output_tail[-40:] for m in _PORT_MARKERS):
        return ExitKind.PORT_IN_USE
    return ExitKind.CRASH


def describe_exit(code: int | None) -> str:
    if code is None:
        return "exited (code unknown: not our child)"
    if code < 0:
        return f"killed by signal {-code}"
    if code > 128:
        return f"exit {code} (signal {code - 128})"
    return f"exit {code}"
