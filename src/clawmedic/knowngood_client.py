"""The known-good store as the daemon uses it: each operation in a short-lived `python -m clawmedic.knowngood`
process, so the long-running daemon never imports dulwich (~15 MB of RSS for an operation that runs a few times
an hour). The CLI, which exits after one command, uses `knowngood.KnownGoodStore` directly.

Also home to the store's light types (no dulwich here).
"""

from __future__ import annotations

import base64
import errno
import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clawmedic import defaults
from clawmedic.errors import ClawmedicError, EnvironmentMissing
from clawmedic.store.health import StateUnwritable, is_write_failure, state_writes


class NoKnownGood(ClawmedicError):
    """There is no snapshot to restore from: a human must repair the file."""


class UnknownRevision(ClawmedicError):
    exit_code = defaults.EXIT_CONFIG


@dataclass(frozen=True)
class Snapshot:
    rev: str
    at: float
    target: str
    reason: str
    health: str
    known_good: bool
    files: list[str] = field(default_factory=list)

    @property
    def short(self) -> str:
        return self.rev[:10]

    def to_dict(self) -> dict[str, object]:
        return {
            "rev": self.rev,
            "at": self.at,
            "target": self.target,
            "reason": self.reason,
            "health": self.health,
            "known_good": self.known_good,
            "files": self.files,
        }


@dataclass(frozen=True)
class Restored:
    key: str
    path: Path
    rev: str
    moved_aside: Path | None  # where the replaced file is kept (None if there was none)


class KnownGoodClient:
    """Same operations as `KnownGoodStore` (snapshot, known_good, read, restore), run out of process."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir

    def _call(self, op: str, payload: dict[str, Any]) -> Any:
        r = subprocess.run(
            [sys.executable, "-m", "clawmedic.knowngood", op, str(self.state_dir), json.dumps(payload)],
            capture_output=True,
            text=True,
            timeout=defaults.KNOWN_GOOD_OP_TIMEOUT_S,
            check=False,
        )
        try:
            out = json.loads(r.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise EnvironmentMissing(
                f"The known-good store in {self.state_dir} failed ({op}): {r.stderr.strip()[-300:]}"
            ) from None
        if out.get("error") == "StateUnwritable":  # a full disk: the caller degrades (no snapshot this time)
            raise StateUnwritable(int(out.get("errno") or errno.ENOSPC), f"known-good store: {out['message']}")
        if "error" in out:
            raise {"NoKnownGood": NoKnownGood, "UnknownRevision": UnknownRevision}[out["error"]](out["message"])
        return out["result"]

    def snapshot(
        self, target: str, files: dict[str, Path], reason: str, health: str, *, known_good: bool = False
    ) -> Snapshot | None:
        """None also when the state folder takes no writes (reported; the next snapshot tries again)."""
        try:
            d = self._snapshot(target, files, reason, health, known_good)
        except OSError as e:
            if not is_write_failure(e):
                raise
            state_writes.failed("known-good store", e)
            return None
        return Snapshot(**d) if d else None

    def _snapshot(
        self, target: str, files: dict[str, Path], reason: str, health: str, known_good: bool
    ) -> dict[str, Any] | None:
        d: dict[str, Any] | None = self._call(
            "snapshot",
            {
                "target": target,
                "files": {k: str(v) for k, v in files.items()},
                "reason": reason,
                "health": health,
                "known_good": known_good,
            },
        )
        return d

    def known_good(self, target: str) -> Snapshot | None:
        d = self._call("known_good", {"target": target})
        return Snapshot(**d) if d else None

    def known_good_files(self, target: str) -> tuple[Snapshot, dict[str, bytes]] | None:
        """The known-good snapshot and the content of every file in it, in one child process: the doctor's
        what-changed diff needs all of them, and a child process costs seconds on a loaded host."""
        d = self._call("known_good_files", {"target": target})
        if not d:
            return None
        files = {k: base64.b64decode(v) for k, v in d["files"].items() if v is not None}
        return Snapshot(**d["snapshot"]), files

    def latest(self, target: str) -> Snapshot | None:
        d = self._call("latest", {"target": target})
        return Snapshot(**d) if d else None

    def read(self, target: str, key: str, rev: str) -> bytes | None:
        d = self._call("read", {"target": target, "key": key, "rev": rev})
        return base64.b64decode(d) if d is not None else None

    def restore(self, target: str, key: str, dest: Path, rev: str | None = None) -> Restored:
        d = self._call("restore", {"target": target, "key": key, "dest": str(dest), "rev": rev})
        return Restored(d["key"], Path(d["path"]), d["rev"], Path(d["moved_aside"]) if d["moved_aside"] else None)
