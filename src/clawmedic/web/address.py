"""`[daemon.http] listen`: "HOST:PORT" (IPv6 as "[::1]:PORT"), and whether that host is loopback only.

Standard library only: the config validates the address with it before anything starts.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass


@dataclass(frozen=True)
class Listen:
    host: str
    port: int

    @property
    def loopback(self) -> bool:
        """True when only this machine can connect: a loopback IP, or the name `localhost`."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False  # any other name may resolve to an outside address

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def parse_listen(value: str) -> Listen:
    """Parse "HOST:PORT"; raises ValueError with a sentence fit for the config error."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise ValueError(f'{value!r} is not "HOST:PORT" (e.g. "127.0.0.1:18780"; "" turns the server off)')
    if host.startswith("["):
        if not host.endswith("]"):
            raise ValueError(f'{value!r}: an IPv6 host is written in brackets, e.g. "[::1]:18780"')
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f'{value!r}: an IPv6 host is written in brackets, e.g. "[::1]:18780"')
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"{value!r}: the port must be a number from 1 to 65535")
    if any(c.isspace() for c in host):
        raise ValueError(f"{value!r}: the host has a space in it")
    return Listen(host, int(port_text))
