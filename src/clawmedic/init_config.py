"""`clawmedic init`: write a commented config, detecting an existing ~/.openclaw install."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import json5
import tomlkit
from tomlkit.items import Table

DEFAULT_PORT = 18789  # OpenClaw's default gateway port


@dataclass(frozen=True)
class Detected:
    openclaw_home: Path
    config_found: bool
    port: int
    openclaw_bin: str | None


def detect(home: Path | None = None) -> Detected:
    home = home or Path.home()
    cfg = home / ".openclaw" / "openclaw.json"
    port = DEFAULT_PORT
    found = cfg.exists()
    if found:
        try:
            data = json5.loads(cfg.read_text(encoding="utf-8"))
            port = int(data.get("gateway", {}).get("port", DEFAULT_PORT))
        except (ValueError, OSError, AttributeError, TypeError):
            pass
    return Detected(home, found, port, shutil.which("openclaw"))


Row = str | tuple[str, object] | tuple[str, object, str]  # a comment line, or key = value with a note


def _table(rows: list[Row]) -> Table:
    t = tomlkit.table()
    for row in rows:
        if isinstance(row, str):
            t.add(tomlkit.comment(row) if row else tomlkit.nl())
            continue
        value = tomlkit.item(row[1])
        if len(row) == 3 and row[2]:
            value.comment(row[2])
        t.add(row[0], value)
    return t


def render(d: Detected) -> str:
    """The config as TOML, built with tomlkit so every value (a HOME with a `"` or a `\\` in it) is quoted right."""
    binary = d.openclaw_bin or "openclaw"
    found = (
        f"Found an OpenClaw install: {d.openclaw_home / '.openclaw' / 'openclaw.json'} (gateway port {d.port})."
        if d.config_found
        else "No ~/.openclaw/openclaw.json was found; adjust the target below to your install."
    )
    doc = tomlkit.document()
    for line in (
        "clawmedic config — written by `clawmedic init`.",
        found,
        'Secrets never go in this file: write "${NAME}" and put NAME=value in the env_file (0600) or the environment.',
    ):
        doc.add(tomlkit.comment(line))
    doc.add(tomlkit.nl())
    daemon = _table(
        [
            'state_dir = "~/.local/state/clawmedic"   # incidents, events, status (default: the platform\'s)',
            'env_file = "~/.config/clawmedic/.env"     # e.g. OPENCLAW_GATEWAY_TOKEN=...',
            ("log_level", "info", ""),
            ("stop_targets_on_exit", False, "managed gateways outlive the daemon and are adopted on its return"),
            "",
            "[daemon.http]                          # the status page (/) and Prometheus /metrics: on, loopback",
            'listen = "127.0.0.1:18780"             # "" turns it off; an outside address needs $CLAWMEDIC_HTTP_TOKEN',
            "",
            "[daemon.notify]                        # tell humans (Apprise URLs: ntfy, Telegram, Discord, email…)",
            'urls = ["ntfys://ntfy.sh/${NTFY_TOPIC}"]   # tokens as "${NAME}" secrets',
            'on = ["escalated", "gave_up", "still_down", "recovered", "restarted"]',
            '                                       # "restarted" (off by default): every healed restart, as monit',
            "",
            "[daemon.heartbeat]                     # dead-man's switch: the daemon's own death is noticed outside",
            'url = "https://hc-ping.com/${HEALTHCHECKS_UUID}"',
            'fail_url = "https://hc-ping.com/${HEALTHCHECKS_UUID}/fail"   # pinged while a target waits for a human',
            "interval_s = 60",
        ]
    )
    doc.add("daemon", daemon)

    gateway = _table(
        [
            ("kind", "openclaw", '"openclaw" derives /health and /ready probes from the port; or "http"'),
            ("port", d.port, ""),
            ("openclaw_home", str(d.openclaw_home), ""),
        ]
    )
    start = _table(
        [
            ("mode", "managed", "clawmedic runs the gateway as its own child"),
            ("command", [binary, "gateway", "run", "--bind", "loopback", "--port", str(d.port)], ""),
            'mode = "external"                        # or let a service manager run it:',
            'restart_command = ["systemctl", "--user", "restart", "openclaw-gateway"]',
        ]
    )
    env = _table(
        [
            ("OPENCLAW_SUPERVISOR_MODE", "external", "OpenClaw exits 0 to ask clawmedic for a full restart"),
            'OPENCLAW_GATEWAY_TOKEN = "${OPENCLAW_GATEWAY_TOKEN}"',
        ]
    )
    start.add("env", env)
    gateway.add("start", start)
    liveness = _table(
        [
            ("interval_s", 5, '/health must answer 200 with {"ok": true}'),
            ("timeout_s", 3, ""),
            ("failure_threshold", 3, ""),
        ]
    )
    gateway.add("liveness", liveness)
    limits = _table(
        [
            ("startup_timeout_s", 90, "OpenClaw boots in 7-25 s"),
            ("probation_s", 30, "healthy this long after a restart before the incident closes"),
            ("stop_timeout_s", 30, "SIGTERM, then SIGKILL"),
            ("backoff_initial_s", 10, "the first restart after a healthy period is immediate"),
            ("backoff_max_s", 600, ""),
            ("crash_loop_failures", 5, "this many failures within the window escalate instead"),
            ("crash_loop_window_s", 600, ""),
            ("memory_limit_mb", 3072, ""),
        ]
    )
    gateway.add("limits", limits)
    targets = tomlkit.table(is_super_table=True)
    targets.add("gateway", gateway)
    doc.add("targets", targets)
    return tomlkit.dumps(doc)
