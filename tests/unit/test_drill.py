"""The drill's logic with fakes: the fault table, the invariant checkers on tmp dirs, the expectation verdicts,
and the exit code of a drill whose row missed its expectation."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import psutil
import pytest
from rich.console import Console

from clawmedic.drill import command, faults, invariants, runner
from clawmedic.drill.faults import FAULTS, Expect, expectation_met, select

REQUIRED = {
    "kill9",
    "hang",
    "short-stop",
    "valid-json5-edit",
    "invalid-json",
    "empty-config",
    "wrong-type-config",
    "missing-config",
    "wiped-dependency",
    "compound",
    "removed-entry",
    "corrupt-state-db",
    "port-squatter",
    "flapping",
    "daemon-killed-mid-repair",
    "model-429",
}


def test_the_table_has_every_fault_of_the_game_day_once_with_an_expectation() -> None:
    names = [f.name for f in FAULTS]
    assert len(names) == len(set(names))
    assert set(names) >= REQUIRED
    for f in FAULTS:
        assert isinstance(f.expect, Expect) and f.title and f.what and callable(f.inject)
    by = {f.name: f.expect for f in FAULTS}
    assert by["short-stop"] is Expect.UNTOUCHED and by["valid-json5-edit"] is Expect.UNTOUCHED
    assert by["port-squatter"] is Expect.ESCALATED and by["flapping"] is Expect.ESCALATED
    assert {f.name for f in FAULTS if f.compare} == {"kill9", "hang", "invalid-json"}
    model = select(["model-429"])[0]
    assert model.expect is Expect.HEALED and model.healed_by == "model_fallback"
    assert model.returns is not None and model.returns.event == "model_restored"


def test_select_keeps_table_order_and_names_an_unknown_fault() -> None:
    assert [f.name for f in select(["hang", "kill9"])] == ["kill9", "hang"]
    assert len(select(None)) == len(FAULTS)
    with pytest.raises(ValueError, match="bogus"):
        select(["kill9", "bogus"])


def test_the_short_stop_is_shorter_than_the_confirmation_of_a_hang() -> None:
    from clawmedic import defaults

    assert faults.SHORT_STOP_S < (defaults.FAILURE_THRESHOLD - 1) * defaults.SUSPECT_INTERVAL_S


# --- invariants on tmp dirs --------------------------------------------------------------------------------


def _tree(root: Path, *names: str) -> None:
    for n in names:
        (root / n).parent.mkdir(parents=True, exist_ok=True)
        (root / n).write_text(n)


def test_a_deleted_user_file_is_caught(tmp_path: Path) -> None:
    _tree(tmp_path, ".openclaw/openclaw.json", ".openclaw/workspace/notes.md")
    before = invariants.listing(tmp_path)
    (tmp_path / ".openclaw/workspace/notes.md").unlink()
    assert invariants.deleted_files(before, invariants.listing(tmp_path)) == [".openclaw/workspace/notes.md"]


def test_a_file_moved_aside_or_added_is_not_a_deletion(tmp_path: Path) -> None:
    _tree(tmp_path, ".openclaw/openclaw.json", ".openclaw/state/openclaw.sqlite", ".openclaw/gateway.lock")
    before = invariants.listing(tmp_path)
    cfg = tmp_path / ".openclaw/openclaw.json"
    cfg.rename(cfg.with_name("openclaw.json.broken-20261201T040000"))
    cfg.write_text("{}")  # restored from known-good
    db = tmp_path / ".openclaw/state/openclaw.sqlite"
    db.rename(db.with_name("openclaw.sqlite.broken-20261201T040001"))
    (tmp_path / ".openclaw/gateway.lock").unlink()  # the gateway's own lock comes and goes
    _tree(tmp_path, ".openclaw/new-file")
    assert invariants.deleted_files(before, invariants.listing(tmp_path)) == []


def test_the_token_is_found_in_a_sqlite_dump_and_a_git_object_but_not_in_the_verbatim_output(tmp_path: Path) -> None:
    token = "drl_" + "ab12" * 10
    con = sqlite3.connect(tmp_path / "incidents.sqlite")
    con.execute("CREATE TABLE timeline (detail TEXT)")
    con.execute("INSERT INTO timeline VALUES (?)", (json.dumps({"output_tail": f"refused {token}"}),))
    con.commit()
    con.close()
    obj = tmp_path / "snapshots" / "objects" / "ab" / "cdef"
    obj.parent.mkdir(parents=True)
    obj.write_bytes(zlib.compress(f"blob 40\0{token}".encode()))
    (tmp_path / "targets").mkdir()
    (tmp_path / "targets" / "output.log").write_text(f"gateway printed {token}\n")
    (tmp_path / "events.jsonl").write_text('{"kind": "launched"}\n')
    assert invariants.token_hits(tmp_path, token) == ["incidents.sqlite", "snapshots/objects/ab/cdef"]
    assert invariants.token_hits(tmp_path, "drl_not_there_at_all") == []


def _until(pred: Any) -> None:
    deadline = time.monotonic() + 10
    while not pred():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_a_signalled_foreign_process_is_caught() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        mark = invariants.ProcessMark.of(proc.pid, "canary")
        assert invariants.foreign_signalled([mark]) == []
        proc.send_signal(signal.SIGSTOP)
        # the kernel stops it asynchronously: wait for its state
        _until(lambda: psutil.Process(proc.pid).status() == psutil.STATUS_STOPPED)
        assert invariants.foreign_signalled([mark]) == [f"canary (pid {proc.pid})"]
        proc.send_signal(signal.SIGCONT)
        proc.kill()
        proc.wait(10)
        assert invariants.foreign_signalled([mark]) == [f"canary (pid {proc.pid})"]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


# --- verdicts from events ------------------------------------------------------------------------------------

T = 1000.0


def ev(kind: str, ts: float, **kw: Any) -> dict[str, Any]:
    return {"kind": kind, "ts": ts, **kw}


HEALED = [
    ev("exited", T + 0.1, pid=1),
    ev("incident_opened", T + 0.15, incident=7, reason="process exited"),
    ev("launched", T + 0.2, pid=2),
    ev("live_again", T + 12.0, at=T + 11.9),
    ev("state", T + 15.0, new="healthy"),
]
ESCALATED = [ev("port_conflict", T + 1, owner_pid=9), ev("escalated", T + 1.1, incident=8), ev("gave_up", T + 2)]


@pytest.mark.parametrize(
    ("expect", "events", "healthy", "met", "observed"),
    [
        (Expect.HEALED, HEALED, True, True, "healed"),
        (Expect.HEALED, HEALED, False, False, "down"),
        (Expect.HEALED, [], False, False, "down"),
        (Expect.UNTOUCHED, [], True, True, "not touched"),
        (Expect.UNTOUCHED, HEALED, True, False, "healed"),
        (Expect.UNTOUCHED, [ev("launched", T + 3, pid=2)], True, False, "acted on"),
        (Expect.ESCALATED, ESCALATED, False, True, "escalated"),
        (Expect.ESCALATED, HEALED, True, False, "healed"),
    ],
)
def test_expectation_verdicts(
    expect: Expect, events: list[dict[str, Any]], healthy: bool, met: bool, observed: str
) -> None:
    assert expectation_met(expect, events, healthy, T) == (met, observed)


def test_measure_takes_times_from_the_fault() -> None:
    row = runner.Row("kill9", "kill -9", "healed")
    runner.measure(row, HEALED, T)
    assert (row.detect_s, row.recover_s, row.restarts, row.incident) == (0.15, 11.9, 1, 7)


MODEL_HEALED = [
    ev("model_cooldown", T + 9.0, model="alpha/alpha-model"),
    ev("gateway_fault", T + 9.1, incident=3, rule="model-cooldown"),
    ev("model_fallback", T + 12.5, incident=3, original="alpha/alpha-model", to="beta/beta-model"),
]


def test_a_model_fault_is_healed_by_the_fallback_not_by_a_restart() -> None:
    assert expectation_met(Expect.HEALED, MODEL_HEALED, True, T, "model_fallback") == (True, "healed")
    assert expectation_met(Expect.HEALED, MODEL_HEALED[:2], True, T, "model_fallback") == (False, "acted on")
    assert expectation_met(Expect.HEALED, MODEL_HEALED, True, T) == (False, "acted on"), "the ladder never healed"
    row = runner.Row("model-429", "model 429", "healed")
    runner.measure(row, MODEL_HEALED, T, "model_fallback")
    assert (row.detect_s, row.recover_s, row.restarts, row.incident) == (9.1, 12.5, 0, 3)


# --- faults through a fake rig ------------------------------------------------------------------------------


class FakeRig:
    def __init__(self, tmp: Path, events: list[dict[str, Any]] | None = None) -> None:
        tmp.mkdir(exist_ok=True)
        self.openclaw_json = tmp / "openclaw.json"
        self.openclaw_json.write_text(json.dumps({"gateway": {"port": 1234}, "logging": {"file": "/x/g.log"}}))
        self.state_db = tmp / "openclaw.sqlite"
        self.node_modules = tmp / "node_modules"
        self.entry = tmp / "openclaw.mjs"
        self.aside = tmp / "aside"
        self.aside.mkdir()
        self.port = 1234
        self.crash_loop_failures = 3
        self.signals: list[signal.Signals] = []
        self.slept = 0.0
        self._events = events or []

    def gateway_pid(self) -> int:
        return 4242

    def signal_gateway(self, sig: signal.Signals) -> int:
        self.signals.append(sig)
        return 4242

    def events(self, after: float) -> list[dict[str, Any]]:
        return [e for e in self._events if e["ts"] >= after]

    def sleep(self, s: float) -> None:
        self.slept += s

    primary_model, fallback_model = "alpha/alpha-model", "beta/beta-model"
    model_mode = "ok"
    chats_started: list[str]
    answered_by: list[str]

    def set_model(self, mode: str) -> None:
        self.model_mode = mode

    def start_chat(self, session: str) -> None:
        self.chats_started = [*getattr(self, "chats_started", []), session]

    def stop_chats(self) -> None:
        self.chats_started = []

    def chat(self, session: str) -> list[str]:
        return self.answered_by

    def default_model(self) -> str | None:
        return str(json.loads(self.openclaw_json.read_text())["agents"]["defaults"]["model"]["primary"])


def test_the_short_stop_continues_the_gateway_and_a_restart_is_flagged(tmp_path: Path) -> None:
    rig = FakeRig(tmp_path)
    fault = select(["short-stop"])[0]
    fault.inject(rig)  # type: ignore[arg-type]
    assert rig.signals == [signal.SIGSTOP, signal.SIGCONT] and rig.slept == faults.SHORT_STOP_S
    assert fault.verify(rig, []) == []  # type: ignore[arg-type]
    assert fault.verify(rig, [ev("launched", T, pid=3)])  # type: ignore[arg-type]


def test_the_json5_edit_is_valid_json5_and_its_rewrite_is_flagged(tmp_path: Path) -> None:
    import json5

    rig = FakeRig(tmp_path)
    fault = select(["valid-json5-edit"])[0]
    fault.inject(rig)  # type: ignore[arg-type]
    parsed = json5.loads(rig.openclaw_json.read_text())
    assert parsed == {"gateway": {"mode": "local", "port": 1234, "bind": "loopback"}, "logging": {"file": "/x/g.log"}}
    assert fault.verify(rig, []) == []  # type: ignore[arg-type]
    rig.openclaw_json.write_text("{}")
    assert fault.verify(rig, []) == ["the hand-edited JSON5 file was rewritten"]  # type: ignore[arg-type]


def _set_default(rig: FakeRig, model: str) -> None:
    cfg = json.loads(rig.openclaw_json.read_text())
    cfg["agents"] = {"defaults": {"model": {"primary": model}}}
    rig.openclaw_json.write_text(json.dumps(cfg))


def test_the_model_429_row_needs_the_default_on_the_fallback_a_chat_it_answers_and_the_primary_back(
    tmp_path: Path,
) -> None:
    rig = FakeRig(tmp_path)
    fault = select(["model-429"])[0]
    assert fault.returns is not None
    fault.inject(rig)  # type: ignore[arg-type]
    assert rig.model_mode == "429" and len(rig.chats_started) == 1, "the stand-in fails and a turn runs on it"
    _set_default(rig, "beta/beta-model")
    rig.answered_by = ["beta-model"]
    assert fault.verify(rig, MODEL_HEALED) == []  # type: ignore[arg-type]
    assert rig.chats_started == [], "the failing turn is stopped before the chat on the fallback"
    rig.answered_by = []
    assert fault.verify(rig, MODEL_HEALED) == [  # type: ignore[arg-type]
        "a chat through the gateway was not answered by the fallback (models asked: [])"
    ]
    assert any("restarted" in p for p in fault.verify(rig, [*MODEL_HEALED, ev("launched", T + 13, pid=5)]))  # type: ignore[arg-type]
    _set_default(rig, "alpha/alpha-model")
    assert any("not the fallback" in p for p in fault.verify(rig, MODEL_HEALED))  # type: ignore[arg-type]
    fault.returns.end(rig)  # type: ignore[arg-type]
    assert rig.model_mode == "ok"
    assert fault.returns.verify(rig, []) == []  # type: ignore[arg-type]
    _set_default(rig, "beta/beta-model")
    assert fault.returns.verify(rig, []) == [  # type: ignore[arg-type]
        "openclaw.json's default model is beta/beta-model, not the primary alpha/alpha-model again"
    ]


def test_the_json5_edit_keeps_the_model_providers(tmp_path: Path) -> None:
    import json5

    rig = FakeRig(tmp_path)
    cfg = json.loads(rig.openclaw_json.read_text())
    cfg["models"] = {"providers": {"alpha": {"baseUrl": "http://127.0.0.1:9/v1", "models": [{"id": "alpha-model"}]}}}
    rig.openclaw_json.write_text(json.dumps(cfg))
    _set_default(rig, "alpha/alpha-model")
    select(["valid-json5-edit"])[0].inject(rig)  # type: ignore[arg-type]
    text = rig.openclaw_json.read_text()
    assert text.startswith("// edited by hand")
    parsed = json5.loads(text)
    assert parsed["models"] == cfg["models"] and parsed["agents"]["defaults"]["model"]["primary"] == "alpha/alpha-model"


def test_flapping_that_loops_after_giving_up_is_a_miss(tmp_path: Path) -> None:
    loop = [ev("launched", T + i, pid=10 + i) for i in range(3)] + [ev("gave_up", T + 4), ev("launched", T + 9, pid=99)]
    rig = FakeRig(tmp_path, loop)
    fault = select(["flapping"])[0]
    assert fault.verify(rig, loop) == ["launched again after giving up (a loop)"]  # type: ignore[arg-type]
    calm = FakeRig(tmp_path / "calm", loop[:4])
    assert fault.verify(calm, loop[:4]) == []  # type: ignore[arg-type]


# --- the command's exit code -----------------------------------------------------------------------------------


def _result(ok: bool) -> dict[str, Any]:
    row = runner.Row("kill9", "kill -9", "healed", observed="healed" if ok else "down", met=ok)
    row.invariants = {"deleted": [], "signalled": [], "token": []}
    return {
        "machine": runner.machine(),
        "openclaw": "x",
        "node": "y",
        "boot_s": 1.0,
        "rows": [row.to_dict()],
        "ok": row.ok,
    }


@pytest.mark.parametrize("ok", [True, False])
def test_a_missed_expectation_exits_1(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ok: bool) -> None:
    monkeypatch.setattr(command, "find_install", lambda: object())
    monkeypatch.setattr(command, "run_drill", lambda *a, **k: _result(ok))
    quiet = Console(file=open(tmp_path / "out.txt", "w"))  # noqa: SIM115
    code = command.drill("kill9", True, tmp_path / "r.md", None, None, quiet, quiet)
    assert code == (0 if ok else 1)
    assert ("| kill -9 | healed | healed | yes |" if ok else "| kill -9 | healed | down | NO |") in (
        tmp_path / "r.md"
    ).read_text()


def test_an_unknown_fault_is_one_sentence_with_exit_2() -> None:
    with pytest.raises(command.UnknownFault, match="unknown fault nope") as e:
        command.drill("nope", True, None, None, None, Console(), Console())
    assert e.value.exit_code == 2


def test_a_config_fault_after_the_json5_edit_still_breaks_the_file(tmp_path: Path) -> None:
    rig = FakeRig(tmp_path)
    select(["valid-json5-edit"])[0].inject(rig)  # type: ignore[arg-type]
    faults._wrong_type(rig.openclaw_json, rig.aside)
    assert json.loads(rig.openclaw_json.read_text())["gateway"]["bind"] == 42
    assert faults._config_restored(rig, [ev("config_restored", T)]) == []  # type: ignore[arg-type]
    rig.openclaw_json.write_text("{,,,")
    assert "openclaw.json is not valid JSON5 after the repair" in faults._config_restored(rig, [])  # type: ignore[arg-type]


def test_supervisords_spawn_after_the_fault_is_read_from_its_log() -> None:
    from clawmedic.drill.compare import spawned_after

    log = (
        "2026-12-01 04:33:20,027 WARN exited: gateway (terminated by SIGKILL; not expected)\n"
        "2026-12-01 04:33:20,211 INFO spawned: 'gateway' with pid 6960\n"
    )
    t = time.mktime(time.strptime("2026-12-01 04:33:20", "%Y-%m-%d %H:%M:%S"))
    assert spawned_after(log, t) == pytest.approx(t + 0.211)
    assert spawned_after(log, t + 1) is None


def test_a_sandboxs_processes_never_include_the_caller_or_its_parents(tmp_path: Path) -> None:
    """`flock LOCK clawmedic drill --dir ROOT` names ROOT in the parent's command line: the drill's cleanup must
    not kill it (it did: the flock died with 137)."""
    root = tmp_path / "drill-root"
    code = f"import pathlib, clawmedic.sandbox.gateway as g; print(g.pids_using(pathlib.Path({str(root)!r})))"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", str(root)])
    try:
        r = subprocess.run(
            ["sh", "-c", f'"$0" -c "$1"; : {root}', sys.executable, code],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == f"[{sleeper.pid}]", "the sandbox's process, not the shell that started the caller"
    finally:
        sleeper.kill()
        sleeper.wait(10)
