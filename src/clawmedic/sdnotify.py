"""systemd's notify protocol: `READY=1` once the daemon supervises, `WATCHDOG=1` from its own event loop.

With `Type=notify` and `WatchdogSec=` in the unit, systemd itself restarts a daemon whose loop stops turning (a hung
daemon sends no `WATCHDOG=1`), at no cost — the guardian timer is then not needed on systemd (it stays for cron and
launchd). The protocol is one datagram `KEY=VALUE\\n…` to the AF_UNIX socket named by `$NOTIFY_SOCKET` (a leading
`@` is Linux's abstract namespace), documented as stable in sd_notify(3). That is a dozen lines of standard library;
the `sdnotify` PyPI package is the same dozen lines (unreleased since 2017) and `systemd-python` needs libsystemd's
headers to build, so neither is worth a dependency.

The variables are removed from the environment (sd_notify's `unset_environment`), so supervised gateways do not
inherit a socket that is the daemon's to use.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket

from clawmedic import defaults

log = logging.getLogger(__name__)


class SystemdNotifier:
    """Sends state lines to systemd; `interval_s`: how often to send `WATCHDOG=1` (None: no watchdog asked for)."""

    def __init__(self, address: str, interval_s: float | None) -> None:
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self.interval_s = interval_s
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> SystemdNotifier | None:
        """The notifier systemd asked for through the environment (taken out of it), or None outside systemd."""
        env = os.environ if environ is None else environ
        address = env.pop("NOTIFY_SOCKET", "")
        usec, pid = env.pop("WATCHDOG_USEC", ""), env.pop("WATCHDOG_PID", "")
        if not address or not address.startswith(("/", "@")):
            return None
        interval: float | None = None
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            # half the watchdog period, as sd_watchdog_enabled(3) advises, so one late turn is not a restart
            interval = max(defaults.SYSTEMD_WATCHDOG_MIN_PING_S, int(usec) / 1e6 / 2)
        return cls(address, interval)

    def send(self, state: str) -> bool:
        try:
            self._sock.sendto(state.encode(), self.address)
        except OSError as e:  # systemd went away or the socket is not ours to use: supervision carries on
            log.debug("sd_notify %s to %s failed: %s", state, self.address, e)
            return False
        return True

    async def run(self) -> None:
        """Say READY=1, then WATCHDOG=1 every `interval_s` for as long as the loop turns; STOPPING=1 at the end."""
        self.send(f"READY=1\nMAINPID={os.getpid()}\nSTATUS=supervising")
        try:
            while True:
                await asyncio.sleep(self.interval_s if self.interval_s is not None else 3600.0)
                if self.interval_s is not None:
                    self.send("WATCHDOG=1")
        finally:
            self.send("STOPPING=1")
            with contextlib.suppress(OSError):
                self._sock.close()
