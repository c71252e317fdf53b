"""End-to-end: the LLM doctor on the real gateway, for a fault no rule explains.

The fault is real: TLS is switched on in openclaw.json. The config validates and the gateway boots and says
"ready" — but it now speaks HTTPS, so `/health` over HTTP never answers: restarts cannot help, the crash loop
escalates, and no diagnosis rule matches: the edit was made during the incident (a hang had opened it), so the
change rule, which reverts only what came before the failures, leaves it to the model. The model (a scripted
OpenAI-compatible server on loopback, so the test is deterministic) reads the evidence, asks for the config
validation, and calls `restore_known_good` through the guard; the verdict is clawmedic's own probation on the
relaunched gateway.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import json5
import pytest

from clawmedic.sandbox import gateway as gw
from clawmedic.sandbox.install import Install
from tests.e2e.conftest import Daemon, cleanup_sandbox, incident
from tests.helpers.scripted_llm import ScriptedLLM, call

pytestmark = [pytest.mark.gateway, pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture
def tls_sandbox(install: Install, tmp_path: Path) -> Iterator[gw.Sandbox]:
    sb = gw.create(
        tmp_path / "sandbox",
        install,
        limits={
            "probation_s": 3.0,
            "stable_reset_s": 5.0,
            "startup_timeout_s": 120.0,  # a boot takes 7-25 s (80 s seen under load); HTTPS never passes
            "crash_loop_failures": 2,
            "known_good_after_s": 2.0,
        },
    )
    try:
        yield sb
    finally:
        cleanup_sandbox(sb)


def test_an_unknown_fault_is_diagnosed_and_healed_by_the_llm_doctor(tls_sandbox: gw.Sandbox, tmp_path: Path) -> None:
    sb = tls_sandbox
    script = [
        call("config_validation"),
        call("restore_known_good"),
        call(
            "finish", diagnosis="gateway.tls was enabled: the gateway speaks HTTPS and fails HTTP probes", fault="other"
        ),
    ]
    with ScriptedLLM(script) as llm:
        with sb.config_path.open("a") as f:
            f.write(f'\n[daemon.doctor.llm]\nbackend = "openai"\nmodel = "scripted"\nbase_url = "{llm.url}"\n')
        daemon = Daemon(sb, tmp_path / "daemon.log")
        try:
            daemon.start()
            daemon.wait_healthy()
            daemon.wait_event(lambda e: e["kind"] == "known_good", 90)
            cfg = json5.loads(sb.openclaw_json.read_text())
            tls_dir = sb.home / "tls"
            cfg["gateway"]["tls"] = {
                "enabled": True,
                "certPath": str(tls_dir / "cert.pem"),
                "keyPath": str(tls_dir / "key.pem"),
            }
            t_hang = time.time()
            os.kill(daemon.pid(), signal.SIGSTOP)  # a hang opens the incident before anything changed
            daemon.wait_event(lambda e: e["kind"] == "incident_opened", 120, after=t_hang)
            sb.openclaw_json.write_text(json.dumps(cfg, indent=2))  # edited during the incident, before the relaunch
            esc = daemon.wait_event(lambda e: e["kind"] == "escalated", 400, after=t_hang)
            assert esc["cause"] == "crash_loop"
            closed = daemon.wait_event(
                lambda e: e["kind"] == "incident_closed" and e.get("incident") == esc["incident"], 400
            )
            assert closed["outcome"] == "recovered"
            assert gw.health(sb.port)
        finally:
            daemon.stop()
    assert "tls" not in json5.loads(sb.openclaw_json.read_text())["gateway"], "the known-good config is back"
    assert list(sb.openclaw_json.parent.glob("openclaw.json.broken-*")), "the TLS config is kept beside it"
    first = llm.requests[0]["messages"][1]["content"]
    assert "known-good config snapshot: yes (the current config differs from it)" in first
    assert sb.token.encode() not in llm.all_bytes(), "the gateway token never reaches the model"
    inc = incident(sb, esc["incident"])
    findings = [f for e in inc["timeline"] if e["kind"] == "diagnosis" for f in e["detail"]["findings"]]
    assert findings == [], "no rule explains this fault: it is the LLM doctor's"
    tools = [(e["detail"]["name"], e["detail"]["status"]) for e in inc["timeline"] if e["kind"] == "llm_tool"]
    assert tools == [("config_validation", "ok"), ("restore_known_good", "ok"), ("finish", "ok")]
    report = daemon.cli("incidents", "show", str(esc["incident"]), "--markdown").stdout
    assert "## LLM doctor" in report and "restore_known_good" in report and "HTTPS" in report
