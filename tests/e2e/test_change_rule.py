"""End-to-end: the doctor asks "what changed?" (issue 18) on the real gateway.

Config edits that validate but that the gateway refuses at boot — each time in other words, with exit 78 or exit 1 —
are reverted by the change rule, without the model, in one sandbox (each boot costs 10-15 s). The fault with no
change behind it (a corrupt state database) is checked in test_doctor.py: nothing is reverted there.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from clawmedic.sandbox import gateway as gw
from clawmedic.sandbox.install import Install
from tests.e2e.conftest import NO_LLM, SANDBOX_LIMITS, Daemon, cleanup_sandbox, incident

pytestmark = [pytest.mark.gateway, pytest.mark.slow, pytest.mark.timeout(900)]

# a refused exit 1 is a crash to the ladder: two failures (the kill, the refusal) make the loop that escalates
LIMITS = {**SANDBOX_LIMITS, "crash_loop_failures": 2, "backoff_initial_s": 1.0}


def _set(path: str, value: object) -> Callable[[dict[str, Any]], None]:
    def edit(cfg: dict[str, Any]) -> None:
        *parents, leaf = path.split(".")
        node = cfg
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value

    return edit


# (what, edit, the exit the gateway refuses with, the setting the "what changed" evidence must name).
# Each validates (`openclaw config validate` says valid) and is refused at boot (OpenClaw 2026.9.6, measured).
REFUSED = [
    ("gateway.mode remote", _set("gateway.mode", "remote"), 78, "gateway.mode"),  # "Gateway start blocked: …"
    ("password auth without a password", _set("gateway.auth", {"mode": "password"}), 78, "gateway.auth.mode"),
    ("trusted-proxy auth without a proxy", _set("gateway.auth", {"mode": "trusted-proxy"}), 1, "gateway.auth.mode"),
]


def _validates(install: Install, sb: gw.Sandbox) -> bool:
    r = subprocess.run(
        install.command("config", "validate", "--json"),
        env={**os.environ, "HOME": str(sb.home)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    return r.returncode == 0 and json.loads(r.stdout).get("valid") is True


def test_refused_config_changes_are_reverted_by_the_change_rule_without_the_model(
    install: Install, tmp_path: Path
) -> None:
    sb = gw.create(tmp_path / "sandbox", install, limits=LIMITS, llm=NO_LLM)
    d = Daemon(sb, tmp_path / "daemon.log")
    try:
        d.start()
        d.wait_healthy()
        d.wait_event(lambda e: e["kind"] == "known_good", 60)
        good = sb.openclaw_json.read_text()
        for what, edit, code, setting in REFUSED:
            cfg = json.loads(good)
            edit(cfg)
            t0 = time.time()
            pid = d.pid()
            sb.openclaw_json.write_text(json.dumps(cfg, indent=2) + "\n")
            assert _validates(install, sb), f"{what}: the edit must validate"
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)  # the next boot reads the edited config
            esc = d.wait_event(lambda e: e["kind"] == "escalated", 180, after=t0)
            d.wait_event(lambda e: e["kind"] == "incident_closed" and e["outcome"] == "recovered", 240, after=t0)
            assert gw.health(sb.port), what
            assert sb.openclaw_json.read_text() == good, f"{what}: the known-good config is back"
            refused = [e for e in d.events("exited") if e["ts"] >= t0 and e["code"] == code]
            loop = 1 if code == 78 else int(LIMITS["crash_loop_failures"])  # exit 78 escalates at once
            assert 1 <= len(refused) <= loop, f"{what}: refused with exit {code}, then reverted (no restart loop)"
            assert esc["cause"] == ("fatal_config" if code == 78 else "crash_loop"), esc

            inc = incident(sb, esc["incident"])
            timeline = inc["timeline"]
            findings = [f for e in timeline if e["kind"] == "diagnosis" for f in e["detail"]["findings"]]
            assert findings[0]["rule"] == "config-changed", (what, [f["rule"] for f in findings])
            symptoms = [f for f in findings if f["rule"] == "crash-loop-breaker"]
            assert all(f["kind"] == "symptom" and not f["plan"] for f in symptoms), "the breaker is a consequence"
            remedies = [e["detail"] for e in timeline if e["kind"] == "remedy"]
            assert [(r["remedy"], r["status"]) for r in remedies] == [("restore_known_good", "ok")], what
            kept = remedies[0]["changes"][0]["kept"]
            assert kept and setting.rsplit(".", 1)[-1] in Path(kept).read_text(), "the refused file is kept"
            assert not [e for e in timeline if e["kind"] == "llm_started"], "healed without the model"
            changes = [c for e in timeline if e["kind"] == "evidence" for c in e["detail"]["changes"]]
            assert any(s.startswith(setting) for c in changes for s in c["settings"]), (what, changes)
            assert all(c["when"] != "when is unknown" for c in changes if c["what"] == "config"), changes
            shown = d.cli("incidents", "show", str(esc["incident"]), "--markdown")
            assert shown.returncode == 0, shown.stderr
            report = shown.stdout
            assert "## What changed" in report and setting in report and "config-changed" in report
            assert sb.token not in report
            time.sleep(LIMITS["stable_reset_s"] + 1)  # healthy long enough that the ladder forgets the failures
    finally:
        d.stop()
        cleanup_sandbox(sb)
