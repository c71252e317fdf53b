"""What an exit code (and the last lines the process printed) means for the ladder. Pure."""

from __future__ import annotations

import re
from collections.abc import Sequence

from clawmedic.ladder.states import ExitKind

EX_CONFIG = 78  # sysexits: OpenClaw uses it for an invalid/missing config, maintenance needed, a locked state database
_PORT_MARKERS = ("EADDRINUSE", "address already in use", "already listening on")
# OpenClaw's own refusal of the Node it was started with, e.g. "openclaw: Node 22.22.0: node:sqlite truncates TEXT
# at embedded NUL (…); use 24.16+/26.1+ or a build with the fix" (exit 1 within a second, every time).
_RUNTIME_REFUSED = re.compile(r"^openclaw: Node \d+\.\d+\.\d+: ")


def classify_exit(code: int | None, *, requested: bool, output_tail: Sequence[str] = ()) -> ExitKind:
    if requested:
        return ExitKind.REQUESTED
    if code == 0:
        return ExitKind.RESTART_REQUEST
    if code == EX_CONFIG:
        return ExitKind.FATAL_CONFIG
    if code == 1 and any(m in line for line in output_tail[-40:] for m in _PORT_MARKERS):
        return ExitKind.PORT_IN_USE
    if code == 1 and any(_RUNTIME_REFUSED.match(line) for line in output_tail[-40:]):
        return ExitKind.UNSUPPORTED_RUNTIME
    return ExitKind.CRASH


def describe_exit(code: int | None) -> str:
    if code is None:
        return "exited (code unknown: not our child)"
    if code < 0:
        return f"killed by signal {-code}"
    if code > 128:
        return f"exit {code} (signal {code - 128})"
    return f"exit {code}"
