"""End-to-end: conversation readiness on the real gateway, with the loopback OpenAI-compatible model stand-in.

One sandbox, one daemon; after one warm-up turn `[targets.gateway.conversation]` is switched on by a config reload
(probing every 10 s, `failures = 1`), then three phases:

- the stand-in answers → the probe's turn answers, no incident (and what one probe costs the model, measured);
- the stand-in hangs → the gateway stays up (/health 200) but the turn times out: one incident, diagnosis
  "timeout" on alpha/alpha-model; the stand-in answers again → the incident is closed as recovered;
- the stand-in answers 401 → one incident, diagnosis "auth"; the gateway check, woken by the probe, cools the
  model and moves the default to the fallback (`[targets.gateway.models]`); the next turn answers on the fallback
  and the incident closes as recovered.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from clawmedic.sandbox import gateway as gw
from clawmedic.sandbox.install import Install
from clawmedic.sandbox.model_standin import ModelStandin
from tests.e2e.conftest import Daemon, incident

pytestmark = [pytest.mark.gateway, pytest.mark.slow, pytest.mark.timeout(900)]

PRIMARY, FALLBACK = "alpha/alpha-model", "beta/beta-model"
INTERVAL_S = 10  # the smallest interval the config allows: the phases follow each other quickly
TIMEOUT_S = 30  # the hung turn's own timeout (the CLI takes seconds more to boot on a busy machine)
WAIT_S = 240.0  # a turn takes 10-60 s on a loaded 2-core machine; a probe every 10 s


@pytest.fixture
def models() -> Iterator[ModelStandin]:
    with ModelStandin(["alpha-model", "beta-model"]) as m:
        yield m


def _configure(sb: gw.Sandbox, models: ModelStandin) -> None:
    gw.use_models(sb, models.base_url, PRIMARY, [FALLBACK], probe_interval_s=60, check_interval_s=5.0)


def _warm_up(install: Install, sb: gw.Sandbox) -> None:
    """One turn before the probe starts: a fresh gateway's first turn builds the agent's workspace (a minute on a
    busy machine), which is not what the probe's timeout is about."""
    env = {**os.environ, "HOME": str(sb.home), "OPENCLAW_GATEWAY_TOKEN": sb.token}
    turn = subprocess.run(
        install.command("agent", "--session-key", "agent:main:warm-up", "--message", "ping", "--json"),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert turn.returncode == 0, turn.stdout + turn.stderr


def _enable_probe(sb: gw.Sandbox) -> None:
    """Turn the probe on in the running daemon (it reloads a changed config file by itself). `failures = 1`: the
    first failed turn opens the incident, before the model fallback, woken by it, heals the 401."""
    sb.config_path.write_text(
        sb.config_path.read_text()
        + f"\n[targets.{gw.TARGET}.conversation]\ninterval_s = {INTERVAL_S}\ntimeout_s = {TIMEOUT_S}\nfailures = 1\n"
    )


def _probe(daemon: Daemon, after: float, answered: bool) -> dict[str, Any]:
    return daemon.wait_event(
        lambda e: e["kind"] == "conversation_probe" and e["answered"] is answered, WAIT_S, after=after
    )


def _fault(daemon: Daemon, after: float) -> dict[str, Any]:
    return daemon.wait_event(
        lambda e: e["kind"] == "gateway_fault" and e["rule"] == "conversation-failing", WAIT_S, after=after
    )


def _resolved(daemon: Daemon, inc: int, after: float) -> dict[str, Any]:
    return daemon.wait_event(
        lambda e: e["kind"] == "gateway_fault_resolved" and e.get("incident") == inc, WAIT_S, after=after
    )


def _health(sb: gw.Sandbox) -> int:
    return httpx.get(f"http://127.0.0.1:{sb.port}/health", timeout=5, trust_env=False).status_code


def test_answers_hang_and_401_each_seen_through_a_real_turn(
    daemon: Daemon, sandbox: gw.Sandbox, install: Install, models: ModelStandin
) -> None:
    _configure(sandbox, models)
    daemon.start()
    daemon.wait_healthy()
    _warm_up(install, sandbox)
    t_on = time.time()
    _enable_probe(sandbox)
    daemon.wait_event(lambda e: e["kind"] == "config_reloaded", WAIT_S, after=t_on)
    healthy = {"ts": t_on}

    # --- ok: the turn answers, nothing opens; what one probe costs ------------------------------------------------
    n0 = len(models.received)
    ok = _probe(daemon, healthy["ts"], answered=True)
    assert ok["model"] == PRIMARY and ok["reason"] is None
    turn = models.received[n0:]
    assert turn and all(r.model == "alpha-model" for r in turn), "the probe's turn reached the configured model"
    assert not daemon.events("gateway_fault"), "an answering gateway opens no incident"
    first = turn[0]  # one probe is one model request (later ones may have come in meanwhile)
    print(
        f"\none probe: {first.prompt_chars} prompt chars in {first.messages} messages + {first.tools} tool definitions "
        f"({first.tools_chars} chars) ≈ {first.est_tokens} input tokens (4 chars/token); OpenClaw's own estimate "
        f"{ok['prompt_tokens_est']}; usage reported {ok['usage']}; took {ok['took_s']} s; requests so far {len(turn)}"
    )

    # --- hang: up (/health 200) but no answer → incident "timeout"; the stand-in answers again → recovered ---------
    models.set("alpha-model", "hang")
    t_hang = time.time()
    fault = _fault(daemon, t_hang)
    assert fault["reason"] == "timeout" and fault["model"] == PRIMARY, fault
    assert _health(sandbox) == 200, "the gateway is up all along: only the model path is broken"
    assert daemon.status().get("state") == "healthy", "the ladder did not restart a gateway that is up"
    inc = incident(sandbox, fault["incident"])
    assert inc["cause"] == "conversation"
    diag = next(e["detail"] for e in inc["timeline"] if e["kind"] == "diagnosis")
    assert diag["signature"] == "cause=conversation|reason=timeout"
    assert f"did not answer within {TIMEOUT_S} s" in diag["findings"][0]["detail"]
    t_detect = fault["ts"] - t_hang
    models.set("alpha-model", "ok")
    back = _resolved(daemon, fault["incident"], fault["ts"])
    assert back["outcome"] == "recovered"
    assert incident(sandbox, fault["incident"])["status"] == "recovered"

    # --- 401: incident "auth"; the model rules move the default; the next turn answers on the fallback -------------
    models.set("alpha-model", "401")
    t_401 = time.time()
    fault = _fault(daemon, back["ts"])
    assert fault["reason"] == "auth" and fault["model"] == PRIMARY and fault["incident"] != back["incident"], fault
    inc = incident(sandbox, fault["incident"])
    diag = next(e["detail"] for e in inc["timeline"] if e["kind"] == "diagnosis")
    assert diag["signature"] == "cause=conversation|reason=auth"
    rules = [f["rule"] for f in diag["findings"]]
    assert rules[0] == "conversation-failing" and "model-failures" in rules, "the doctor's model rules ran on it"
    moved = daemon.wait_event(lambda e: e["kind"] == "model_fallback", WAIT_S, after=t_401)
    assert moved["original"] == PRIMARY and moved["to"] == FALLBACK
    assert moved["ts"] - fault["ts"] < 120, "the probe woke the gateway check: the fallback did not wait for it"
    healed = _resolved(daemon, fault["incident"], fault["ts"])
    answered = [e for e in daemon.events("conversation_probe") if e["answered"] and e["ts"] <= healed["ts"]][-1]
    assert answered["model"] == FALLBACK, "the turn that closed the incident ran on the fallback"
    inc = incident(sandbox, fault["incident"])
    assert inc["status"] == "recovered"
    verdict = [e["detail"] for e in inc["timeline"] if e["kind"] == "verdict"][-1]
    assert verdict["healed"] is True and f"answers again on {FALLBACK}" in verdict["summary"]

    assert "internal error" not in daemon.log.read_text()
    print(
        f"conversation timeline: hang → incident in {t_detect:.1f} s; 401 → incident in {fault['ts'] - t_401:.1f} s, "
        f"default on the fallback in {moved['ts'] - t_401:.1f} s, answering again in {healed['ts'] - t_401:.1f} s"
    )
