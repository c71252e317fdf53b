"""What an exit code (and the last lines the process printed) means for the ladder. Pure."""

from __future__ import annotations

import re
from collections.abc import Sequence

from clawmedic.ladder.states import ExitKind
from clawmedic.text import clip

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
        return "adopted: clawmedic did not start it, so its exit code is unknown"
    if code < 0:
        return f"killed by signal {-code}"
    if code > 128:
        return f"exit {code} (signal {code - 128})"
    return f"exit {code}"


EXIT_SAID_CHARS = 300  # of the last line the process printed, quoted in an exit's reason
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# words of a refusal or an error; OpenClaw often prints a housekeeping line after it ("Config write audit: …")
_TELLING = re.compile(
    r"(?i)\b(?:error|fail(?:ed|s|ure)?|blocked|refus\w*|cannot|can't|invalid|missing|not configured|denied"
    r"|unsupported|unreadable|EADDRINUSE|ENOSPC)\b|\bno \w+ is configured"
)


def telling_line(output_tail: Sequence[str]) -> str:
    """The line that says why the process ended: the last one with words of an error or a refusal, else the last
    one; colour codes removed, clawmedic's own markers skipped."""
    lines = [_ANSI.sub("", ln).strip() for ln in output_tail if ln.strip() and not ln.startswith("---")]
    return next((ln for ln in reversed(lines) if _TELLING.search(ln)), lines[-1] if lines else "")


def exit_detail(code: int | None, said: str = "") -> str:
    """An exit in words, with the last line the process printed (already redacted), cut where a reader can stop."""
    said = said.strip()
    return describe_exit(code) + (f": {clip(said, EXIT_SAID_CHARS)}" if said else "")
