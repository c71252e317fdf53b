"""clawmedic keeps a self-hosted OpenClaw gateway alive from the outside, and explains what broke."""

import sys as _sys

# httpx's package imports its command-line tool (`httpx._main`: click, pygments, rich.syntax, rich.progress) when
# installed with the `cli` extra, whether or not it is used: ~5 MB of RSS in the daemon and ~40 ms in every command.
# clawmedic never runs httpx's CLI; without the module, httpx's own fallback `main` says how to get it.
_sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
