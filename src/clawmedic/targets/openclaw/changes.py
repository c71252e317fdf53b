"""What changed in an OpenClaw install since its last healthy state: the OpenClaw version against the recorded
install, and the Node binary replaced (doctor/changes.py collects the rest: boot files, clawmedic's launch)."""

from __future__ import annotations

import json
from pathlib import Path

from clawmedic import deps
from clawmedic.config import LoadedConfig
from clawmedic.doctor.changes import Change, _mtime
from clawmedic.targets import openclaw


def install_changes(loaded: LoadedConfig, name: str, since: float | None) -> list[Change]:
    """The OpenClaw version against the recorded install, and the Node binary replaced after the last healthy
    state (its version before is not recorded, so only the replacement is told)."""
    out = []
    cfg = loaded.targets[name]
    manifest = deps.load_manifest(loaded, name)
    loc = deps.find_location(cfg)
    if manifest is not None and loc is not None:
        pkg = loc.openclaw_dir / "package.json"
        try:
            version = str(json.loads(pkg.read_text()).get("version", ""))
        except (OSError, ValueError):
            version = ""
        if version and version != manifest.openclaw_version:
            out.append(
                Change(
                    "openclaw",
                    "openclaw",
                    f"OpenClaw {manifest.openclaw_version} (recorded healthy) is now {version}",
                    _mtime(pkg),
                )
            )
    cli = openclaw.cli_command(cfg) or []
    if len(cli) > 1 and since is not None and (at := _mtime(Path(cli[0]))) is not None and at > since:
        out.append(Change("node", "node", f"the Node binary {cli[0]} was replaced", at))
    return out
