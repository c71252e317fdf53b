"""The "what changed" evidence (doctor/changes.py): a semantic config diff with secrets masked, and when."""

from __future__ import annotations

import json
import os
from pathlib import Path

from clawmedic.config import load_config
from clawmedic.doctor.changes import _boot_file_changes, before_failure, config_diff, deps_changes, when
from clawmedic.redact import Redactor

GOOD = {"gateway": {"mode": "local", "port": 19185, "bind": "loopback", "auth": {"token": "tok-Abc123-very-secret"}}}


def test_the_config_diff_names_each_setting() -> None:
    new = json.loads(json.dumps(GOOD))
    new["gateway"]["mode"] = "remote"
    new["gateway"]["tls"] = {"enabled": True}
    assert config_diff(GOOD, new, Redactor()) == [
        'gateway.mode: "local" → "remote"',
        "gateway.tls.enabled: (unset) → true",
    ]


def test_a_changed_secret_is_named_but_never_shown() -> None:
    new = json.loads(json.dumps(GOOD))
    new["gateway"]["auth"] = {"token": "tok-Xyz789-also-secret", "password": "hunter2-long-enough"}
    lines = config_diff(GOOD, new, Redactor())
    text = "\n".join(lines)
    assert "gateway.auth.token (secret): *** (old) → *** (new)" in lines
    assert "gateway.auth.password (secret): (unset) → ***" in lines
    assert "tok-" not in text and "hunter2" not in text, text
    assert Redactor().data(lines) == lines, "the evidence's own redaction leaves these lines as they are"


def test_a_known_secret_is_masked_under_any_name() -> None:
    new = {"models": {"providers": {"fake": {"baseUrl": "http://x/v1?k=s3cr3t-value-1234"}}}}
    text = "\n".join(config_diff({}, new, Redactor(["s3cr3t-value-1234"])))
    assert "s3cr3t" not in text and "models.providers.fake.baseUrl" in text


def test_when_places_a_change_between_the_last_healthy_probe_and_the_first_failure() -> None:
    words = when(1000.0, 960.0, 1012.0)
    assert "40 s after the last healthy probe" in words and "12 s before the first failure" in words
    assert when(None, 960.0, 1012.0) == "when is unknown"
    assert before_failure({"changed_at": 1000.0}, 1012.0) and not before_failure({"changed_at": 1013.0}, 1012.0)
    assert before_failure({"changed_at": None}, 1012.0), "an unknown time may still be the cause"


def test_missing_packages_are_dated_by_their_folder(tmp_path: Path) -> None:
    (tmp_path / "node_modules").mkdir()
    os.utime(tmp_path / "node_modules", (1234.0, 1234.0))
    found = deps_changes([{"package": "ws", "kind": "missing", "path": "node_modules/ws"}], tmp_path)
    assert len(found) == 1 and found[0].reversible and found[0].remedy == "restore_deps"
    assert found[0].changed_at == 1234.0 and "ws (missing)" in found[0].summary


def test_boot_files_against_known_good(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".openclaw").mkdir(parents=True)
    extra = tmp_path / "gateway.env"
    extra.write_text("A=1\n")
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n[targets.gw]\nkind = "openclaw"\nport = 19185\n'
        f'openclaw_home = "{home}"\nboot_files = ["{extra}"]\n[targets.gw.start]\nmode = "managed"\n'
        'command = ["openclaw", "gateway", "run"]\n'
    )
    loaded = load_config(cfg)
    new = json.loads(json.dumps(GOOD))
    new["gateway"]["auth"] = {"mode": "password"}
    (home / ".openclaw" / "openclaw.json").write_text(json.dumps(new))
    known = {"openclaw.json": json.dumps(GOOD).encode(), "gateway.env": b"A=1\n"}
    found = {c.key: c for c in _boot_file_changes(loaded, "gw", known.get)}
    assert set(found) == {"openclaw.json"}, "an unchanged boot file is no change"
    change = found["openclaw.json"]
    assert change.reversible and change.remedy == "restore_known_good" and change.changed_at is not None
    assert 'gateway.auth.mode: (unset) → "password"' in change.settings
    assert "gateway.auth.token (secret): *** → (unset)" in change.settings
    assert "tok-" not in json.dumps(change.to_dict())
    extra.write_text("A=2\n")
    assert {c.what for c in _boot_file_changes(loaded, "gw", known.get)} == {"config", "boot_file"}


def test_the_report_shows_what_changed_and_names_the_cause_before_its_symptoms() -> None:
    from clawmedic.doctor.report import render
    from clawmedic.store.incidents import Incident, TimelineEntry

    change = {
        "what": "config",
        "summary": "1 setting(s) differ",
        "when": "at 10:00:00, 5 s before the first failure",
        "reversible": True,
        "remedy": "restore_known_good",
        "settings": ['gateway.mode: "local" → "remote"'],
    }
    breaker = {"rule": "crash-loop-breaker", "confidence": 0.6, "detail": "tripped", "advice": "a", "kind": "symptom"}
    cause = {"rule": "config-changed", "confidence": 0.9, "detail": "changed", "advice": "b", "kind": "cause"}
    inc = Incident(1, "gw", "escalated", "exit 78", "fatal_config", 1000.0, 1001.0, None, None, 1)
    inc.timeline = [
        TimelineEntry(1002.0, "evidence", {"changes": [change]}, None),
        TimelineEntry(1003.0, "diagnosis", {"findings": [breaker, cause]}, None),
    ]
    text = render(inc)
    assert text.index("## What changed") < text.index("## Evidence")
    assert 'gateway.mode: "local" → "remote"' in text and "reverted by `restore_known_good`" in text
    diagnosis = text[text.index("## Diagnosis") :]
    assert diagnosis.index("config-changed") < diagnosis.index("crash-loop-breaker")
    assert "symptoms, not the diagnosis" in diagnosis


def test_a_change_in_form_only_is_shown_but_not_a_cause(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".openclaw").mkdir(parents=True)
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n[targets.gw]\nkind = "openclaw"\nport = 19185\n'
        f'openclaw_home = "{home}"\n[targets.gw.start]\nmode = "managed"\ncommand = ["openclaw", "gateway", "run"]\n'
    )
    (home / ".openclaw" / "openclaw.json").write_text("// rewritten by `openclaw config set`\n" + json.dumps(GOOD))
    found = _boot_file_changes(load_config(cfg), "gw", {"openclaw.json": json.dumps(GOOD, indent=2).encode()}.get)
    assert len(found) == 1 and "form only" in found[0].summary and not found[0].reversible
    (home / ".openclaw" / "openclaw.json").write_text(",,,{{")
    broken = _boot_file_changes(load_config(cfg), "gw", {"openclaw.json": json.dumps(GOOD).encode()}.get)
    assert broken[0].reversible and "no longer parses" in broken[0].summary


def test_the_llm_doctor_is_shown_what_changed() -> None:
    from clawmedic.doctor.llm.agent import evidence_prompt

    change = {
        "what": "config",
        "summary": 'gateway.auth.mode: (unset) → "password"',
        "when": "at 10:00:00, 5 s before the first failure",
        "reversible": True,
        "remedy": "restore_known_good",
    }
    prompt = evidence_prompt({"target": "gw", "cause": "fatal_config", "changes": [change]}, [], [])
    assert "What changed since the last healthy state" in prompt
    assert 'gateway.auth.mode: (unset) → "password" (at 10:00:00, 5 s before the first failure)' in prompt
    assert "[reverted by restore_known_good]" in prompt
