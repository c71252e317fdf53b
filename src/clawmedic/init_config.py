"""`clawmedic init`: write a commented config, detecting an existing ~/.openclaw install."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import json5

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


def render(d: Detected) -> str:
    binary = d.openclaw_bin or "openclaw"
    found = (
        f"# Found an OpenClaw install: {d.openclaw_home / '.openclaw' / 'openclaw.json'} (gateway port {d.port})."
        if d.config_found
        else "# No ~/.openclaw/openclaw.json was found; adjust the target below to your install."
    )
    return f"""# clawmedic config — written by `clawmedic init`.
{found}
# Secrets never go in this file: write "${{NAME}}" and put NAME=value in the env_file (0600) or the environment.

[daemon]
# state_dir = "~/.local/state/clawmedic"   # incidents, events, status (default: the platform's state folder)
# env_file = "~/.config/clawmedic/.env"     # e.g. OPENCLAW_GATEWAY_TOKEN=...
log_level = "info"
stop_targets_on_exit = false               # managed gateways outlive the daemon and are adopted on its return

# [daemon.http]                            # the status page (/) and Prometheus /metrics: on by default, loopback
# listen = "127.0.0.1:18780"               # "" turns it off; an outside address needs $CLAWMEDIC_HTTP_TOKEN

[targets.gateway]
kind = "openclaw"                          # "openclaw" derives /health and /ready probes from the port; or "http"
port = {d.port}
openclaw_home = "{d.openclaw_home}"

[targets.gateway.start]
mode = "managed"                           # clawmedic runs the gateway as its own child
command = ["{binary}", "gateway", "run", "--bind", "loopback", "--port", "{d.port}"]
# mode = "external"                        # or let a service manager run it:
# restart_command = ["systemctl", "--user", "restart", "openclaw-gateway"]

[targets.gateway.start.env]
OPENCLAW_SUPERVISOR_MODE = "external"      # OpenClaw exits 0 to ask clawmedic for a full restart
# OPENCLAW_GATEWAY_TOKEN = "${{OPENCLAW_GATEWAY_TOKEN}}"

[targets.gateway.liveness]                 # /health must answer 200 with {{"ok": true}}
interval_s = 5
timeout_s = 3
failure_threshold = 3

[targets.gateway.limits]
startup_timeout_s = 90                     # OpenClaw boots in 7-25 s
probation_s = 30                           # healthy this long after a restart before the incident closes
stop_timeout_s = 30                        # SIGTERM, then SIGKILL
backoff_initial_s = 10                     # the first restart after a healthy period is immediate
backoff_max_s = 600
crash_loop_failures = 5                    # this many failures within the window escalate instead
crash_loop_window_s = 600
memory_limit_mb = 3072
"""
