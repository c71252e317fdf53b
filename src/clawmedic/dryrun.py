"""`clawmedic run --dry-run`: observe, diagnose and decide everything, change nothing.

The switch is `LoadedConfig.dry_run`, set by `run --dry-run`, and it is honoured at the seams where clawmedic acts,
not by tests scattered through the logic:

- processes: `launcher_for` gives each supervisor a `DryRunLauncher`, which answers `would()` for every launch,
  stop or restart command (the supervisor records "would relaunch"/"would stop" in its events and incident and
  carries on as if it were done) and never spawns or signals (an adopted process's handle refuses too);
- remedies and known-good restores: the `Guard` (`Policy.dry_run`) checks each call as usual, then answers
  `Status.WOULD` instead of running it;
- notifications: `WouldSender` logs what it would have sent and sends nothing.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from pathlib import Path

from clawmedic.config import LoadedConfig
from clawmedic.errors import ClawmedicError
from clawmedic.process.launcher import Handle, Launcher

log = logging.getLogger("clawmedic")


class NotDone(ClawmedicError):
    """A dry run reached an action that changes something; it was not carried out."""


class _WouldHandle(Handle):
    """An adopted process under a dry run: watched, never signalled."""

    def signal_group(self, sig: signal.Signals) -> None:
        raise NotDone(f"dry run: pid {self.pid} was not sent {sig.name}.")

    async def stop(self, timeout_s: float) -> tuple[int | None, bool]:
        raise NotDone(f"dry run: pid {self.pid} was not stopped.")


class DryRunLauncher(Launcher):
    def would(self, action: str) -> str | None:
        return f"would {action} (dry run: nothing was done)"

    async def spawn(self, command: list[str], env: dict[str, str], cwd: Path | None) -> Handle:
        raise NotDone(f"dry run: {command[0]} was not started.")

    def adopt(self) -> Handle | None:
        handle = super().adopt()  # reading process.json and the identity marker changes nothing
        return None if handle is None else _WouldHandle(handle.record, None)


def launcher_for(loaded: LoadedConfig, target_dir: Path, redact: Callable[[str], str] | None = None) -> Launcher:
    return (DryRunLauncher if loaded.dry_run else Launcher)(target_dir, redact)


class WouldSender:
    """The notifier's `Sender` under a dry run: the message is logged, not sent."""

    def send(self, url: str, title: str, body: str, notify_type: object) -> tuple[bool, str]:
        scheme = url.split("://", 1)[0]
        log.warning("dry run: would notify %s:// (%s): %s", scheme, notify_type, title)
        return True, ""
