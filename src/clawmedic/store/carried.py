"""What one target's supervision carries over a daemon restart (crash, `systemctl restart`, guardian, reboot).

A small JSON file per target, `targets/<name>/ladder.json`, rewritten atomically on every change of state: the
ladder's escalation state and failure history, the open incident, and the latent-fault incident with the digest of
the file it is about. A missing file means a first start; an unreadable or malformed one is moved aside (never
deleted) and the daemon starts afresh, as it did before this file existed.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clawmedic.ladder.machine import Saved
from clawmedic.ladder.states import State
from clawmedic.store.files import atomic_write, move_aside

log = logging.getLogger("clawmedic")

_VERSION = 1


@dataclass(frozen=True)
class Carried:
    ladder: Saved
    incident: int | None = None  # the incident the target's ladder has open
    latent_incident: int | None = None  # an open latent config fault …
    latent_digest: str | None = None  # … about the file with this content (sha256)
    saved_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        lad = self.ladder
        return {
            "version": _VERSION,
            "saved_at": self.saved_at,
            "state": lad.state.value,
            "since": lad.since,
            "failures": list(lad.failures),
            "consecutive_restarts": lad.consecutive_restarts,
            "incident_open": lad.incident_open,
            "cause": lad.cause,
            "reason": lad.reason,
            "retry_at": lad.retry_at,
            "incident": self.incident,
            "latent_incident": self.latent_incident,
            "latent_digest": self.latent_digest,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Carried:
        """Raise ValueError/TypeError/KeyError on anything that is not what `to_dict` wrote."""
        if d.get("version") != _VERSION:
            raise ValueError(f"unknown version {d.get('version')!r}")
        saved = Saved(
            state=State(d["state"]),
            since=_time(d["since"]),
            failures=tuple(_time(f) for f in d["failures"]),
            consecutive_restarts=_int(d["consecutive_restarts"]),
            incident_open=_bool(d["incident_open"]),
            cause=str(d["cause"]),
            reason=str(d["reason"]),
            retry_at=None if d["retry_at"] is None else _time(d["retry_at"]),
        )
        return cls(
            saved,
            _opt_id(d["incident"]),
            _opt_id(d["latent_incident"]),
            None if d["latent_digest"] is None else str(d["latent_digest"]),
            _time(d["saved_at"]),
        )


def carried_path(target_dir: Path) -> Path:
    return target_dir / "ladder.json"


def save(target_dir: Path, carried: Carried) -> None:
    atomic_write(carried_path(target_dir), json.dumps(carried.to_dict(), indent=1))


def load(target_dir: Path) -> Carried | None:
    """The previous daemon's record, or None (first start, or a damaged file: moved aside and logged)."""
    path = carried_path(target_dir)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        log.warning("cannot read %s (%s): starting without the previous daemon's state", path, e.strerror or e)
        return None
    try:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise TypeError("not an object")
        return Carried.from_dict(data)
    except (ValueError, TypeError, KeyError) as e:
        try:
            aside: Path | str = move_aside(path, "corrupt")
        except OSError:
            aside = "(could not move it aside)"
        log.warning("%s is damaged (%s); kept as %s, starting without the previous daemon's state", path, e, aside)
        return None


def _time(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise ValueError(f"not a time: {v!r}")
    return float(v)


def _int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"not an integer: {v!r}")
    return v


def _opt_id(v: Any) -> int | None:
    """An incident id: a positive SQLite integer (a bigger one raised OverflowError in every lookup)."""
    if v is None:
        return None
    if not 0 < _int(v) < 2**63:
        raise ValueError(f"not an incident id: {v!r}")
    return int(v)


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"not a boolean: {v!r}")
    return v
