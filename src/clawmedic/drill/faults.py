"""The drill's faults, declared as a table: name, what is done, how it is injected, what must follow (healed /
not touched / escalated to a human) and how the result is verified. Injection and checks go through a `Rig`, so
the table is tested with a fake one and run for real on a sandboxed gateway by `runner`."""

from __future__ import annotations

import contextlib
import enum
import json
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import json5

from clawmedic import defaults

# a pause, not a hang: half the time clawmedic takes to confirm a first failed probe (the next ones come 1 s apart)
SHORT_STOP_S = (defaults.FAILURE_THRESHOLD - 1) * defaults.SUSPECT_INTERVAL_S / 2
QUIET_WINDOW_S = 20.0  # how long a fault that must not be acted on is watched (a hang is acted on after ~15 s)
HEAL_TIMEOUT_S = 240.0  # boots take 7-25 s, far longer on a loaded machine; config faults add a validation
# a model that answers again: OpenClaw's probe runs at most every 60 s (MODEL_PROBE_MIN_INTERVAL_S) and takes up to 20 s
RETURN_TIMEOUT_S = defaults.MODEL_PROBE_MIN_INTERVAL_S + HEAL_TIMEOUT_S


class Expect(enum.StrEnum):
    HEALED = "healed"
    UNTOUCHED = "not touched"
    ESCALATED = "escalated"


class Rig(Protocol):
    """What a fault may do to the sandbox and its supervisor."""

    openclaw_json: Path
    state_db: Path
    node_modules: Path
    entry: Path
    aside: Path  # where the drill keeps what it took away (outside the sandbox HOME)
    port: int
    crash_loop_failures: int
    squatter_pid: int | None
    primary_model: str  # "provider/model" of the gateway's default model, served by the model stand-in
    fallback_model: str  # the first model of `[targets.NAME.models] order`

    def gateway_pid(self) -> int: ...
    def signal_gateway(self, sig: signal.Signals) -> int: ...
    def wait_event(self, kind: str, after: float, timeout: float, **match: Any) -> dict[str, Any]: ...
    def events(self, after: float) -> list[dict[str, Any]]: ...
    def wait_gone(self, pid: int) -> None: ...
    def stop_all(self) -> None: ...
    def start_daemon(self) -> None: ...
    def kill_daemon(self) -> None: ...
    def restart_daemon(self) -> None: ...
    def resume(self) -> None: ...
    def start_squatter(self) -> int: ...
    def stop_squatter(self) -> None: ...
    def squatter_intact(self) -> bool: ...
    def sleep(self, s: float) -> None: ...
    def set_model(self, mode: str) -> None: ...  # the primary model of the stand-in: "ok", "429", "401", "hang"
    def start_chat(self, session: str) -> None: ...  # a turn on the default model, in the background
    def stop_chats(self) -> None: ...
    def chat(self, session: str) -> list[str]: ...  # the models asked during a turn that answered; [] if none did
    def default_model(self) -> str | None: ...


def _kind(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e.get("kind") == kind]


# --- injections: each returns the moment the gateway was broken ------------------------------------------------


def _kill9(rig: Rig) -> float:
    t = time.time()
    rig.signal_gateway(signal.SIGKILL)
    return t


def _hang(rig: Rig) -> float:
    t = time.time()
    rig.signal_gateway(signal.SIGSTOP)
    return t


def _short_stop(rig: Rig) -> float:
    t = time.time()
    rig.signal_gateway(signal.SIGSTOP)
    rig.sleep(SHORT_STOP_S)
    rig.signal_gateway(signal.SIGCONT)
    return t


JSON5_EDIT = """// edited by hand: JSON5, comments and trailing commas are fine for OpenClaw
{
  gateway: {
    mode: "local", // loopback only
    port: PORT,
    bind: "loopback",
  },
  /* the gateway's own log */
  logging: { file: LOG, },
}
"""


def _json5_edit(rig: Rig) -> float:
    cfg = json5.loads(rig.openclaw_json.read_text())
    text = JSON5_EDIT.replace("PORT", str(cfg["gateway"]["port"])).replace("LOG", json.dumps(cfg["logging"]["file"]))
    kept = {k: cfg[k] for k in ("models", "agents") if k in cfg}  # the hand edit keeps the model providers
    if kept:
        text = text.rstrip().removesuffix("}") + "".join(f"  {k}: {json.dumps(v)},\n" for k, v in kept.items()) + "}\n"
    t = time.time()
    rig.openclaw_json.write_text(text)
    return t


def _config_then_crash(break_config: Callable[[Path, Path], None]) -> Callable[[Rig], float]:
    def inject(rig: Rig) -> float:
        t_edit = time.time()
        break_config(rig.openclaw_json, rig.aside)
        rig.wait_event("latent_config_fault", t_edit, 60)  # the running gateway keeps its loaded config
        return _kill9(rig)

    return inject


def _invalid_json(path: Path, _aside: Path) -> None:
    path.write_text(path.read_text() + ",,,{{")


def _empty(path: Path, _aside: Path) -> None:
    path.write_text("")


def _wrong_type(path: Path, _aside: Path) -> None:
    cfg = json5.loads(path.read_text())
    cfg["gateway"]["bind"] = 42
    path.write_text(json.dumps(cfg, indent=2) + "\n")


def _missing(path: Path, _aside: Path) -> None:
    path.rename(path.with_name(path.name + ".drill-moved"))


def _wipe_ws(rig: Rig) -> None:
    (rig.node_modules / "ws").rename(rig.aside / f"ws-wiped-{time.time_ns()}")


def _wiped_dependency(rig: Rig) -> float:
    _wipe_ws(rig)
    return _kill9(rig)


def _compound(rig: Rig) -> float:
    _wipe_ws(rig)
    return _config_then_crash(_invalid_json)(rig)


def _removed_entry(rig: Rig) -> float:
    rig.entry.rename(rig.aside / f"entry-removed-{time.time_ns()}")
    return _kill9(rig)


def _corrupt_state_db(rig: Rig) -> float:
    t = time.time()
    pid = rig.signal_gateway(signal.SIGKILL)
    rig.wait_gone(pid)
    rig.state_db.write_bytes(b"this is not a database" * 100)
    return t


def _squatter(rig: Rig) -> float:
    rig.stop_all()  # the gateway down, its port free: a stranger takes it before clawmedic starts
    rig.start_squatter()
    t = time.time()
    rig.start_daemon()
    return t


def _flapping(rig: Rig) -> float:
    """Kill every new gateway as soon as it is launched, until clawmedic gives up (or far more launches than the
    crash-loop limit, which is the miss)."""
    t = time.time()
    rig.signal_gateway(signal.SIGKILL)
    seen: set[int] = set()
    deadline = time.monotonic() + HEAL_TIMEOUT_S
    while time.monotonic() < deadline:
        evs = rig.events(t)
        if _kind(evs, "gave_up") or len(_kind(evs, "launched")) > 2 * rig.crash_loop_failures:
            break
        for e in _kind(evs, "launched"):
            if e["pid"] not in seen:
                seen.add(e["pid"])
                rig.sleep(1.0)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(e["pid"]), signal.SIGKILL)
        rig.sleep(0.2)
    return t


def _model_429(rig: Rig) -> float:
    t = time.time()
    rig.set_model("429")
    rig.start_chat("agent:main:drill-429")  # a turn on the default model fails, and the gateway logs why
    return t


def _model_answers_again(rig: Rig) -> float:
    t = time.time()
    rig.set_model("ok")
    return t


def _killed_mid_repair(rig: Rig) -> float:
    t = _kill9(rig)
    rig.wait_event("launched", t, 60)  # the repair is under way: a new gateway booting, on probation
    rig.kill_daemon()
    rig.start_daemon()  # what the guardian or the service manager does
    return t


# --- verifications: the problems found, beyond the expectation itself ------------------------------------------


def _nothing(_rig: Rig, _events: list[dict[str, Any]]) -> list[str]:
    return []


def _no_restart(_rig: Rig, events: list[dict[str, Any]]) -> list[str]:
    acted = [e["kind"] for e in events if e.get("kind") in ("launched", "stopped", "incident_opened")]
    return [f"acted on a fault it should have left alone: {', '.join(acted)}"] if acted else []


def _json5_kept(rig: Rig, events: list[dict[str, Any]]) -> list[str]:
    problems = _no_restart(rig, events)
    text = rig.openclaw_json.read_text()
    if not text.startswith("// edited by hand"):
        problems.append("the hand-edited JSON5 file was rewritten")
    if _kind(events, "latent_config_fault") or _kind(events, "config_restored"):
        problems.append("a valid JSON5 file was reported or restored as broken")
    return problems


def _config_restored(rig: Rig, events: list[dict[str, Any]]) -> list[str]:
    problems = []
    if not _kind(events, "config_restored"):
        problems.append("no config_restored event: the config was not restored from known-good")
    try:
        json5.loads(rig.openclaw_json.read_text())  # the known-good copy may be the hand-written JSON5
    except (OSError, ValueError):
        problems.append("openclaw.json is not valid JSON5 after the repair")
    if any(e.get("code") == 78 for e in _kind(events, "exited")):
        problems.append("the gateway was started on the broken config (exit 78)")
    return problems


def _deps_restored(rig: Rig, events: list[dict[str, Any]]) -> list[str]:
    problems = [] if (rig.node_modules / "ws" / "package.json").exists() else ["ws is still missing"]
    if not any(e.get("ok") for e in _kind(events, "deps_restored")):
        problems.append("no successful deps_restored event")
    return problems


def _compound_restored(rig: Rig, events: list[dict[str, Any]]) -> list[str]:
    return _config_restored(rig, events) + _deps_restored(rig, events)


def _entry_restored(rig: Rig, events: list[dict[str, Any]]) -> list[str]:
    return [] if rig.entry.exists() else [f"{rig.entry.name} is still missing"]


def _db_moved_aside(rig: Rig, events: list[dict[str, Any]]) -> list[str]:
    kept = list(rig.state_db.parent.glob(rig.state_db.name + ".broken-*"))
    return [] if kept else ["the corrupt state database was not kept aside"]


def _on_the_fallback(rig: Rig, events: list[dict[str, Any]]) -> list[str]:
    problems = []
    moved = _kind(events, "model_fallback")
    if not any(e.get("to") == rig.fallback_model for e in moved):
        problems.append(f"no model_fallback event moving the default to {rig.fallback_model}")
    if (default := rig.default_model()) != rig.fallback_model:
        problems.append(f"openclaw.json's default model is {default}, not the fallback {rig.fallback_model}")
    if _kind(events, "launched"):
        problems.append("the gateway was restarted for a model fault")
    rig.stop_chats()
    served = rig.chat("agent:main:drill-after-429")
    if rig.fallback_model.split("/", 1)[1] not in served:
        problems.append(f"a chat through the gateway was not answered by the fallback (models asked: {served})")
    return problems


def _back_on_the_primary(rig: Rig, events: list[dict[str, Any]]) -> list[str]:
    if (default := rig.default_model()) != rig.primary_model:
        return [f"openclaw.json's default model is {default}, not the primary {rig.primary_model} again"]
    return []


def _model_cleanup(rig: Rig) -> None:
    rig.stop_chats()
    rig.set_model("ok")


def _squatter_named_and_alive(rig: Rig, events: list[dict[str, Any]]) -> list[str]:
    problems = []
    conflicts = _kind(events, "port_conflict")
    if not any(c.get("owner_pid") == rig.squatter_pid for c in conflicts):
        problems.append(f"no port_conflict event naming the squatter (pid {rig.squatter_pid})")
    if not rig.squatter_intact():
        problems.append("the foreign squatter was signalled")
    if _kind(events, "launched"):
        problems.append("a gateway was launched onto a taken port")
    return problems


def _squatter_cleanup(rig: Rig) -> None:
    rig.stop_squatter()  # the human's part: the stranger goes away ...
    rig.resume()  # ... and clawmedic is told to try again


def _gave_up_without_looping(rig: Rig, events: list[dict[str, Any]]) -> list[str]:
    problems = []
    launches = len(_kind(events, "launched"))
    if launches > rig.crash_loop_failures + 1:
        problems.append(f"{launches} launches: more than the crash-loop limit ({rig.crash_loop_failures}) allows")
    gave = _kind(events, "gave_up")
    if not gave:
        return [*problems, "never gave up"]
    rig.sleep(QUIET_WINDOW_S / 2)
    later = [e for e in rig.events(gave[0]["ts"]) if e.get("kind") == "launched"]
    if later:
        problems.append("launched again after giving up (a loop)")
    return problems


@dataclass(frozen=True)
class Return:
    """A fault that ends by itself after the repair (a model that answers again): clawmedic must undo its
    workaround. The row's `back_s` is the end of the fault → the event that says clawmedic went back."""

    what: str  # how the fault ends, in the past tense
    back: str  # what clawmedic did then
    end: Callable[[Rig], float]  # ends the fault; returns the moment
    event: str  # the daemon's event that says clawmedic went back
    verify: Callable[[Rig, list[dict[str, Any]]], list[str]] = _nothing


@dataclass(frozen=True)
class Fault:
    name: str  # as given to --faults
    title: str
    what: str
    expect: Expect
    inject: Callable[[Rig], float]
    verify: Callable[[Rig, list[dict[str, Any]]], list[str]] = _nothing
    cleanup: Callable[[Rig], None] | None = None  # after the row, to get a healthy gateway back
    compare: bool = False  # also run under supervisord by --compare
    healed_by: str = "state"  # the event of the repair: "state" is the ladder back to healthy
    returns: Return | None = None


FAULTS: tuple[Fault, ...] = (
    Fault("kill9", "kill -9", "the gateway is killed outright (SIGKILL)", Expect.HEALED, _kill9, compare=True),
    Fault(
        "hang",
        "hang (SIGSTOP)",
        "the gateway is frozen: TCP accepted, never answered",
        Expect.HEALED,
        _hang,
        compare=True,
    ),
    Fault(
        "short-stop",
        "short stop",
        f"SIGSTOP, then SIGCONT {SHORT_STOP_S:g} s later (under the threshold)",
        Expect.UNTOUCHED,
        _short_stop,
        _no_restart,
    ),
    Fault(
        "valid-json5-edit",
        "valid JSON5 edit",
        "openclaw.json rewritten by hand as JSON5 with comments",
        Expect.UNTOUCHED,
        _json5_edit,
        _json5_kept,
    ),
    Fault(
        "invalid-json",
        "invalid JSON + crash",
        "a JSON typo in openclaw.json, then the gateway crashes",
        Expect.HEALED,
        _config_then_crash(_invalid_json),
        _config_restored,
        compare=True,
    ),
    Fault(
        "empty-config",
        "empty config + crash",
        "openclaw.json emptied, then a crash",
        Expect.HEALED,
        _config_then_crash(_empty),
        _config_restored,
    ),
    Fault(
        "wrong-type-config",
        "wrong-type config + crash",
        '"bind": 42 in openclaw.json, then a crash',
        Expect.HEALED,
        _config_then_crash(_wrong_type),
        _config_restored,
    ),
    Fault(
        "missing-config",
        "missing config + crash",
        "openclaw.json moved away, then a crash",
        Expect.HEALED,
        _config_then_crash(_missing),
        _config_restored,
    ),
    Fault(
        "wiped-dependency",
        "wiped dependency",
        "node_modules/ws removed, then a crash",
        Expect.HEALED,
        _wiped_dependency,
        _deps_restored,
    ),
    Fault(
        "compound",
        "broken config + wiped dependency",
        "a JSON typo and ws removed, then a crash",
        Expect.HEALED,
        _compound,
        _compound_restored,
    ),
    Fault(
        "removed-entry",
        "removed entry file",
        "openclaw.mjs removed, then a crash",
        Expect.HEALED,
        _removed_entry,
        _entry_restored,
    ),
    Fault(
        "corrupt-state-db",
        "corrupt state database",
        "openclaw.sqlite overwritten with garbage during a crash",
        Expect.HEALED,
        _corrupt_state_db,
        _db_moved_aside,
    ),
    Fault(
        "port-squatter",
        "foreign port squatter",
        "another program holds the gateway's port at start",
        Expect.ESCALATED,
        _squatter,
        _squatter_named_and_alive,
        _squatter_cleanup,
    ),
    Fault(
        "flapping",
        "flapping",
        "every new gateway is killed a second after its launch",
        Expect.ESCALATED,
        _flapping,
        _gave_up_without_looping,
        lambda rig: rig.resume(),
    ),
    Fault(
        "daemon-killed-mid-repair",
        "daemon killed mid-repair",
        "kill -9 of the gateway, then of clawmedic while the new gateway boots; clawmedic started again",
        Expect.HEALED,
        _killed_mid_repair,
    ),
    Fault(
        "model-429",
        "model 429",
        "the default model (a loopback stand-in) answers 429 with Retry-After; a chat fails on it",
        Expect.HEALED,
        _model_429,
        _on_the_fallback,
        _model_cleanup,
        healed_by="model_fallback",
        returns=Return(
            "the model answered again",
            "back on the primary model",
            _model_answers_again,
            "model_restored",
            _back_on_the_primary,
        ),
    ),
)


def select(names: list[str] | None) -> list[Fault]:
    """The faults named (in table order), or all. Raises ValueError naming an unknown one."""
    if not names:
        return list(FAULTS)
    known = {f.name for f in FAULTS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown fault {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return [f for f in FAULTS if f.name in names]


def is_repair(e: dict[str, Any], healed_by: str = "state") -> bool:
    """`e` is the event that says the fault was repaired: the ladder back to healthy, or the fault's own event."""
    return e.get("kind") == healed_by and (healed_by != "state" or e.get("new") == "healthy")


OPENED = ("incident_opened", "gateway_fault")  # an incident of the ladder, or of a gateway check (a model fault)


def expectation_met(
    expect: Expect, events: list[dict[str, Any]], healthy: bool, t_fault: float, healed_by: str = "state"
) -> tuple[bool, str]:
    """Whether what happened (the daemon's events since the fault, and /health at the end) is what was expected;
    and what happened, in a few words."""
    opened = [e for e in events if e.get("kind") in OPENED and e["ts"] >= t_fault]
    healed = [e for e in events if is_repair(e, healed_by) and e["ts"] >= t_fault]
    escalated = [e for e in events if e.get("kind") in ("escalated", "gave_up") and e["ts"] >= t_fault]
    acted = [e for e in events if e.get("kind") in (*OPENED, "launched", "config_restored")]
    if escalated and not healed:
        observed = "escalated"
    elif opened and healed and healthy:
        observed = "healed"
    elif not acted and healthy:
        observed = "not touched"
    else:
        observed = "down" if not healthy else "acted on"
    return observed == expect.value, observed
