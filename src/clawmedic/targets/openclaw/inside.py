"""What clawmedic knows about the parts inside a running OpenClaw gateway: channels and plugins.

Ids come from the gateway's own output (`channels status --json`, `/ready`, `plugins list --json`), which a
broken or hostile plugin can shape: every id is checked against a strict pattern before it reaches a command line
(never a shell: argv lists only), and anything else is dropped with the reason kept.

Shapes observed on OpenClaw 2026.9.6:
- `plugins list --json` → `{plugins: [{id, enabled, status: loaded|disabled|error, origin: bundled|global|
  workspace|config, error?, failurePhase?}]}`. `origin: bundled` is a plugin shipped inside OpenClaw itself (63 of
  them): never disabled by clawmedic. The list reads manifests only (it does not import the plugins' code), so a
  plugin whose code throws at load is listed `loaded`; `status: error` comes from a failed validation or a
  quarantined payload (OpenClaw's loader, `recordPluginError`).
- `/ready` under the crash-loop breaker lists the channels it did not start under `suppressed` (FACTS §5).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

CHANNEL_ID = r"^[a-z0-9][a-z0-9_-]{0,63}$"  # telegram, discord, whatsapp, a2a, msteams, …
PLUGIN_ID = r"^[a-z0-9@][a-z0-9@/._-]{0,127}$"  # `e2e-broken`, `memory-core`, `@scope/name` (npm names)
_CHANNEL = re.compile(CHANNEL_ID)
_PLUGIN = re.compile(PLUGIN_ID)
BUILTIN_ORIGINS = frozenset({"bundled"})  # shipped inside OpenClaw: part of the gateway, not the user's add-on
MAX_ITEMS = 100  # plugins or channels kept per read (63 bundled plugins today)
MAX_TEXT = 300


def valid_channel_id(value: object) -> str | None:
    """The channel id if it is one (lowercase letters, digits, `-`, `_`; no dots, spaces, slashes or options)."""
    return value if isinstance(value, str) and _CHANNEL.fullmatch(value) and ".." not in value else None


def valid_plugin_id(value: object) -> str | None:
    """The plugin id if it is one; never something that starts like an option, a path or walks up (`..`)."""
    if not isinstance(value, str) or not _PLUGIN.fullmatch(value) or ".." in value or value.startswith("/"):
        return None
    return value


@dataclass(frozen=True)
class Plugin:
    id: str
    enabled: bool
    status: str
    origin: str
    error: str | None

    @property
    def builtin(self) -> bool:
        return self.origin in BUILTIN_ORIGINS

    @property
    def failing(self) -> bool:
        return self.enabled and self.status == "error"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "enabled": self.enabled,
            "status": self.status,
            "origin": self.origin,
            "builtin": self.builtin,
            "error": self.error,
        }


def parse_plugins(data: object) -> tuple[list[Plugin], list[str]]:
    """`plugins list --json` → the plugins, and what was dropped (an id that is not one) and why."""
    raw = data.get("plugins") if isinstance(data, dict) else None
    out: list[Plugin] = []
    dropped: list[str] = []
    for p in raw if isinstance(raw, list) else []:
        if not isinstance(p, dict):
            continue
        pid = valid_plugin_id(p.get("id"))
        if pid is None:
            dropped.append(f"plugin id {str(p.get('id'))[:80]!r} is not a plugin id: ignored")
            continue
        err = p.get("error")
        out.append(
            Plugin(
                pid,
                p.get("enabled") is True,
                str(p.get("status") or "")[:40],
                str(p.get("origin") or "")[:40],
                None if err is None else str(err)[:MAX_TEXT],
            )
        )
    return out[:MAX_ITEMS], dropped[:10]


def parse_suppressed(ready_body: object) -> list[str]:
    """The channels the crash-loop breaker did not start, from `/ready`'s body (`suppressed`: ids, or objects
    naming one under `channel`/`id`); anything that is not a channel id is left out."""
    raw = ready_body.get("suppressed") if isinstance(ready_body, dict) else None
    out: list[str] = []
    for item in raw if isinstance(raw, list) else []:
        name = item.get("channel") or item.get("channelId") or item.get("id") if isinstance(item, dict) else item
        ch = valid_channel_id(name)
        if ch is not None and ch not in out:
            out.append(ch)
    return out[:MAX_ITEMS]


def disconnected_channels(channels: dict[str, list[dict[str, Any]]]) -> dict[str, str]:
    """Channel id → why it counts as disconnected, from `channels status` accounts: every account of it stopped or
    not connected, *with* an error. A channel with no account is not judged, and `connected: false` without an
    error is not a fault (webhook-mode channels never hold a connection; OpenClaw's own readiness judges them)."""
    out: dict[str, str] = {}
    for ch, accounts in channels.items():
        if valid_channel_id(ch) is None or not accounts:
            continue
        if all((not a.get("running") or a.get("connected") is False) and a.get("last_error") for a in accounts):
            first = accounts[0]
            why = first.get("last_error") or first.get("health") or "not connected"
            out[ch] = f"disconnected: {str(why)[:MAX_TEXT]}"
    return out


def disabled_in_config(config: object) -> set[str]:
    """Channel ids that openclaw.json turns off (`channels.<id>.enabled: false`): `channels status` still lists
    their accounts, stopped and carrying the last error they had (e.g. `channel stop timed out`), which is not a
    fault of a channel that is meant to be off."""
    channels = config.get("channels") if isinstance(config, dict) else None
    return {
        ch
        for ch, c in (channels if isinstance(channels, dict) else {}).items()
        if valid_channel_id(ch) and isinstance(c, dict) and c.get("enabled") is False
    }
