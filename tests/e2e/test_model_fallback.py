"""End-to-end: the model fallback on the real gateway, with a loopback OpenAI-compatible model stand-in.

One sandbox, one daemon, three phases: the default model answers 429 → within one gateway check the default is the
fallback, a session pinned to the failing model is on the fallback too, and real chats through the gateway answer;
the model recovers → OpenClaw's own probe sees it and the default is back, the incident closed as recovered with the
time on the fallback; the model answers 401 → the longer (auth) cooldown, and the fallback again.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import json5
import pytest

from clawmedic.sandbox import gateway as gw
from clawmedic.sandbox.install import Install
from clawmedic.sandbox.model_standin import ModelStandin
from tests.e2e.conftest import Daemon, incident

pytestmark = [pytest.mark.gateway, pytest.mark.slow, pytest.mark.timeout(900)]

PRIMARY, FALLBACK = "alpha/alpha-model", "beta/beta-model"
PINNED = "agent:main:main"
PROBE_S = 60  # the smallest probe interval the config allows
WAIT_S = 240.0  # a failed turn is logged in seconds, a check runs every 5 s; the CLIs are slow on a busy machine


@pytest.fixture
def models() -> Iterator[ModelStandin]:
    with ModelStandin(["alpha-model", "beta-model"], retry_after=1) as m:
        yield m


def _env(sb: gw.Sandbox) -> dict[str, str]:
    return {**os.environ, "HOME": str(sb.home), "OPENCLAW_GATEWAY_TOKEN": sb.token}


def _openclaw(install: Install, sb: gw.Sandbox, *args: str) -> Any:
    r = subprocess.run(
        [*install.command(*args), "--url", f"ws://127.0.0.1:{sb.port}", "--token", sb.token],
        env=_env(sb),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)


def _chat(install: Install, sb: gw.Sandbox, session: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        install.command("agent", "--session-key", session, "--message", "ping", "--json"),
        env=_env(sb),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _failing_chat(install: Install, sb: gw.Sandbox, session: str) -> subprocess.Popen[bytes]:
    """A turn on the default model, in the background: it fails (and OpenClaw logs it) while the daemon acts."""
    return subprocess.Popen(
        install.command("agent", "--session-key", session, "--message", "ping", "--json", "--timeout", "40"),
        env=_env(sb),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _default(sb: gw.Sandbox) -> str:
    cfg = json5.loads(sb.openclaw_json.read_text())
    return str(cfg["agents"]["defaults"]["model"]["primary"])


def _pin(install: Install, sb: gw.Sandbox, key: str) -> str | None:
    r = subprocess.run(
        install.command("sessions", "--json"), env=_env(sb), capture_output=True, text=True, timeout=120, check=True
    )
    for s in json.loads(r.stdout)["sessions"]:
        if s["key"] == key:
            provider, model = s.get("providerOverride"), s.get("modelOverride")
            return f"{provider}/{model}" if provider and model and "/" not in model else model
    return None


def _configure(sb: gw.Sandbox, models: ModelStandin) -> None:
    gw.use_models(sb, models.base_url, PRIMARY, [FALLBACK], probe_interval_s=PROBE_S, check_interval_s=5.0)


def _reap(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)


def test_429_falls_back_probe_returns_401_cools_longer(
    daemon: Daemon, sandbox: gw.Sandbox, install: Install, models: ModelStandin
) -> None:
    _configure(sandbox, models)
    daemon.start()
    healthy = daemon.wait_healthy()
    pin = json.dumps({"key": PINNED, "model": PRIMARY})
    assert _openclaw(install, sandbox, "gateway", "call", "sessions.patch", "--params", pin, "--json")["ok"] is True

    # --- 429: on the fallback within one check ---------------------------------------------------------------------
    models.set("alpha-model", "429")
    t_fault = time.time()
    trigger = _failing_chat(install, sandbox, "agent:main:trigger-429")
    try:
        cooled = daemon.wait_event(
            lambda e: e["kind"] == "model_cooldown" and e["model"] == PRIMARY, WAIT_S, after=healthy["ts"]
        )
        assert cooled["cooldown"] == "rate_limit" and cooled["minutes"] == 300
        moved = daemon.wait_event(lambda e: e["kind"] == "model_fallback", WAIT_S, after=cooled["ts"])
        assert moved["original"] == PRIMARY and moved["to"] == FALLBACK
        assert moved["check"] == cooled["check"], "the default moved in the same check that saw the failure"
        t_fallback = moved["ts"]
        assert _default(sandbox) == FALLBACK, "openclaw.json's default is the fallback"
        pinned = daemon.wait_event(
            lambda e: e["kind"] == "gateway_remedy" and e["remedy"] == "pin_session_model", WAIT_S, after=cooled["ts"]
        )
        assert pinned["status"] == "ok" and PINNED in pinned["detail"]
    finally:
        _reap(trigger)
    assert _pin(install, sandbox, PINNED) == FALLBACK, "the gateway itself says the pinned session is on the fallback"
    served_before = models.requests["beta-model"]
    for session in ("agent:main:fresh", PINNED):  # the default (a new session) and the moved pin both answer
        turn = _chat(install, sandbox, session)
        assert turn.returncode == 0, turn.stdout + turn.stderr
        assert "pong" in turn.stdout
    assert models.requests["beta-model"] >= served_before + 2, "the fallback model answered both turns"

    # --- recovery: OpenClaw's probe sees it, the default is back --------------------------------------------------
    models.set("alpha-model", "ok")
    t_recover = time.time()
    back = daemon.wait_event(lambda e: e["kind"] == "model_restored", PROBE_S + WAIT_S, after=t_recover)
    assert back["model"] == PRIMARY and back["on_fallback_s"] > 0
    probes = [e for e in daemon.events("model_probe") if e["ts"] <= back["ts"]]
    assert probes and probes[-1]["answered"] is True and probes[-1]["model"] == PRIMARY
    assert _default(sandbox) == PRIMARY, "openclaw.json's default is the original again"
    inc = incident(sandbox, back["incident"])
    assert inc["status"] == "recovered" and inc["closed_at"] is not None
    verdicts = [e["detail"] for e in inc["timeline"] if e["kind"] == "verdict"]
    assert verdicts[-1]["healed"] is True and "on beta/beta-model" in verdicts[-1]["summary"]
    remedies = [(e["detail"]["remedy"], e["detail"]["params"]) for e in inc["timeline"] if e["kind"] == "remedy"]
    assert remedies[0] == ("set_default_model", {"model": FALLBACK})
    assert ("pin_session_model", {"session_key": PINNED, "model": FALLBACK}) in remedies
    assert remedies[-1] == ("set_default_model", {"model": PRIMARY})
    shown = daemon.cli("incidents", "show", str(back["incident"]), "--markdown")
    assert shown.returncode == 0, shown.stderr
    for words in ("model-cooldown", "set_default_model: ok", "pin_session_model: ok", "Recovered"):
        assert words in shown.stdout, f"{words!r} missing from the report:\n{shown.stdout}"

    # --- 401: the longer cooldown, and the fallback again -------------------------------------------------------
    models.set("alpha-model", "401")
    trigger = _failing_chat(install, sandbox, "agent:main:trigger-401")
    try:
        # a turn of the 429 phase may still fail on the gateway side (its CLI was reaped, not its run) and cool the
        # primary for the rate limit first, and move it then: the auth cooldown still follows, the longer kind
        cooled = daemon.wait_event(
            lambda e: e["kind"] == "model_cooldown" and e["model"] == PRIMARY and e["cooldown"] == "auth",
            WAIT_S,
            after=back["ts"],
        )
        assert cooled["minutes"] == 720
        moved = daemon.wait_event(lambda e: e["kind"] == "model_fallback", WAIT_S, after=back["ts"])
        assert moved["to"] == FALLBACK and moved["incident"] != back["incident"]
    finally:
        _reap(trigger)
    assert _default(sandbox) == FALLBACK
    saved = json.loads((sandbox.state_dir / "models" / f"{gw.TARGET}.json").read_text())
    assert saved["mode"] == "on_fallback" and saved["cooldowns"][PRIMARY]["kind"] == "auth"
    until = saved["cooldowns"][PRIMARY]["until"]
    assert until - time.time() > 700 * 60, "the auth cooldown is the long one (720 min), persisted"

    assert "internal error" not in daemon.log.read_text(), "the gateway check never failed on its own"
    print(  # the measured timeline, for the README
        f"\nmodel timeline: 429 at +0 → on the fallback at +{t_fallback - t_fault:.1f} s; "
        f"recovered at +0 → back on the primary at +{back['ts'] - t_recover:.1f} s "
        f"(on the fallback {back['on_fallback_s']:.0f} s); probe took {probes[-1]['took_s']} s"
    )
