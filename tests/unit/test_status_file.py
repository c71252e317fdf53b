"""status.json is written from per-target fragments: a target whose snapshot did not change is not redacted and
encoded again (issue 12: at 200 targets the heartbeat re-encoded ~100 KB every 5 s), yet a secret learnt since is
never left in an old fragment."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from clawmedic import defaults
from clawmedic.config import LoadedConfig, load_config
from clawmedic.daemon import Daemon
from tests.helpers.rig import StandinTarget, render_config


class FakeSupervisor:
    def __init__(self, detail: str) -> None:
        self.detail = detail
        self.state = "healthy"

    def snapshot(self) -> dict[str, Any]:
        return {"state": self.state, "liveness_detail": self.detail, "last_exit": {"code": 1, "at": 5.0}}


@pytest.fixture
def loaded(tmp_path: Path) -> LoadedConfig:
    path = tmp_path / "c.toml"
    path.write_text(render_config([StandinTarget("a"), StandinTarget("b")], state_dir=tmp_path / "state"))
    return load_config(path)


def test_unchanged_targets_are_not_encoded_again_and_a_new_secret_invalidates_every_fragment(
    loaded: LoadedConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon = Daemon(loaded)
    a, b = FakeSupervisor("ok"), FakeSupervisor("token s3cr3t-value-1234 in the URL")
    daemon.supervisors = {"a": a, "b": b}  # type: ignore[dict-item]
    redacted: list[Any] = []
    real = loaded.redactor.data

    def counting(obj: Any) -> Any:
        if isinstance(obj, dict) and "state" in obj:
            redacted.append(obj["liveness_detail"])
        return real(obj)

    monkeypatch.setattr(loaded.redactor, "data", counting)

    first = json.loads(daemon.status_text(running=True))
    assert sorted(redacted) == sorted(["ok", b.detail]) and first["targets"]["a"]["state"] == "healthy"
    assert first["daemon"]["running"] is True

    redacted.clear()
    again = json.loads(daemon.status_text(running=True))
    assert redacted == [], "nothing changed: no target redacted or encoded again"
    assert again["targets"] == first["targets"]

    a.detail, a.state = "probe failed", "suspect"
    changed = json.loads(daemon.status_text(running=True))
    assert redacted == ["probe failed"], "only the target that changed"
    assert changed["targets"]["a"]["liveness_detail"] == "probe failed"

    redacted.clear()
    loaded.redactor.add("s3cr3t-value-1234")  # e.g. a reloaded config's secret
    masked = json.loads(daemon.status_text(running=True))
    assert sorted(redacted) == sorted(["probe failed", b.detail]), "a new secret: every fragment again"
    assert "s3cr3t-value-1234" not in json.dumps(masked)


def test_a_probes_latency_alone_is_refreshed_at_most_every_detail_refresh_not_on_every_heartbeat(
    loaded: LoadedConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon = Daemon(loaded)
    a, b = FakeSupervisor("200 in 3 ms"), FakeSupervisor("200 in 4 ms")
    daemon.supervisors = {"a": a, "b": b}  # type: ignore[dict-item]
    first = json.loads(daemon.status_text(running=True))
    a.detail = "200 in 9 ms"  # the next probe: nothing happened
    assert json.loads(daemon.status_text(running=True))["targets"] == first["targets"], "not re-encoded for that"

    monkeypatch.setattr(defaults, "STATUS_DETAIL_REFRESH_S", 0.0)  # ... until the figures are old enough
    assert json.loads(daemon.status_text(running=True))["targets"]["a"]["liveness_detail"] == "200 in 9 ms"

    monkeypatch.setattr(defaults, "STATUS_DETAIL_REFRESH_S", 3600.0)
    a.state = "suspect"  # anything else that changes is written at once
    assert json.loads(daemon.status_text(running=True))["targets"]["a"]["state"] == "suspect"
