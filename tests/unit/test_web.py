"""The HTTP server's pure parts: the listen address, the config gate (exit 2), the metric families read from
snapshots and the incident store, and the pages' escaping and redaction. No server, no process, no sleep."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from clawmedic import defaults
from clawmedic.config import LoadedConfig, load_config
from clawmedic.errors import ConfigInvalid
from clawmedic.redact import Redactor
from clawmedic.stats import duration
from clawmedic.store.incidents import Incident, IncidentStore, TimelineEntry
from clawmedic.web.address import Listen, parse_listen
from clawmedic.web.metrics import LiveCollector, Metrics
from clawmedic.web.pages import Pages
from clawmedic.web.server import MIN_TOKEN_CHARS, plugin_for

# --- the address ------------------------------------------------------------------------------------------------

LISTEN_CASES = [
    # (listen, host, port, loopback)
    ("127.0.0.1:18780", "127.0.0.1", 18780, True),
    ("127.9.9.9:1", "127.9.9.9", 1, True),
    ("localhost:8080", "localhost", 8080, True),
    ("[::1]:9000", "::1", 9000, True),
    ("0.0.0.0:18780", "0.0.0.0", 18780, False),
    ("192.168.1.5:80", "192.168.1.5", 80, False),
    ("[::]:18780", "::", 18780, False),
    ("monitor.example:18780", "monitor.example", 18780, False),  # a name may resolve anywhere
]


@pytest.mark.parametrize(("listen", "host", "port", "loopback"), LISTEN_CASES)
def test_parse_listen(listen: str, host: str, port: int, loopback: bool) -> None:
    parsed = parse_listen(listen)
    assert (parsed.host, parsed.port, parsed.loopback) == (host, port, loopback)


@pytest.mark.parametrize("bad", ["18780", ":18780", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:70000", "::1:80", "a b:1"])
def test_a_bad_listen_address_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match=r"18780|port|bracket|space|HOST:PORT"):
        parse_listen(bad)


def test_ipv6_url_has_brackets() -> None:
    assert Listen("::1", 80).url == "http://[::1]:80"


# --- the config gate ----------------------------------------------------------------------------------------------

_TARGET = """
[targets.svc]
kind = "http"
port = 18789
[targets.svc.start]
command = ["true"]
[targets.svc.liveness]
url = "http://127.0.0.1:18789/health"
"""


def _config(tmp_path: Path, http: str) -> Path:
    path = tmp_path / "clawmedic.toml"
    path.write_text(f'[daemon]\nstate_dir = "state"\n{http}\n{_TARGET}')
    return path


def test_the_server_is_on_by_default_on_loopback(tmp_path: Path) -> None:
    loaded = load_config(_config(tmp_path, ""))
    assert loaded.config.daemon.http.listen == defaults.HTTP_LISTEN
    server = plugin_for(loaded)
    assert server is not None and server.listen.loopback and server.listen.port == 18780


def test_listen_empty_turns_it_off(tmp_path: Path) -> None:
    assert plugin_for(load_config(_config(tmp_path, '[daemon.http]\nlisten = ""'))) is None


def test_a_malformed_listen_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    path = _config(tmp_path, '[daemon.http]\nlisten = "everywhere"')
    with pytest.raises(ConfigInvalid, match=r"daemon\.http\.listen") as e:
        load_config(path)
    assert str(path) in str(e.value) and e.value.exit_code == defaults.EXIT_CONFIG


def test_an_outside_address_without_a_token_refuses_to_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(defaults.HTTP_TOKEN_ENV, raising=False)
    loaded = load_config(_config(tmp_path, '[daemon.http]\nlisten = "0.0.0.0:18780"'))
    with pytest.raises(ConfigInvalid, match=defaults.HTTP_TOKEN_ENV) as e:
        plugin_for(loaded)
    assert e.value.exit_code == defaults.EXIT_CONFIG
    assert "daemon.http.listen" in str(e.value) and str(e.value).count(". ") == 0  # one sentence


def test_a_short_token_is_refused_and_a_good_one_is_redacted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = load_config(_config(tmp_path, '[daemon.http]\nlisten = "0.0.0.0:18780"\ntoken_env = "MY_TOKEN"'))
    monkeypatch.setenv("MY_TOKEN", "x" * (MIN_TOKEN_CHARS - 1))
    with pytest.raises(ConfigInvalid, match="MY_TOKEN"):
        plugin_for(loaded)
    token = "tok-" + "7" * MIN_TOKEN_CHARS
    monkeypatch.setenv("MY_TOKEN", token)
    assert plugin_for(loaded) is not None
    assert token not in loaded.redactor.text(f"Authorization: Bearer {token}")


# --- metrics ----------------------------------------------------------------------------------------------------------


def _snapshot(**over: Any) -> dict[str, Any]:
    return {"state": "healthy", "live": True, "restarts": 0, "incident": None, "latent_incident": None, **over}


def _scrape(collector: Any) -> str:
    from prometheus_client import CollectorRegistry

    reg = CollectorRegistry()
    reg.register(collector)
    return generate_latest(reg).decode()


def test_live_gauges_come_from_the_snapshots(tmp_path: Path) -> None:
    snaps = {"a": _snapshot(restarts=3), "b": _snapshot(state="gave_up", live=False, incident=7, latent_incident=8)}
    text = _scrape(LiveCollector(lambda: snaps, tmp_path / "missing.sqlite"))
    assert 'clawmedic_target_up{target="a"} 1.0' in text
    assert 'clawmedic_target_up{target="b"} 0.0' in text
    assert 'clawmedic_target_state{state="gave_up",target="b"} 1.0' in text
    assert 'clawmedic_target_state{state="healthy",target="b"} 0.0' in text
    assert 'clawmedic_restarts_total{target="a"} 3.0' in text
    assert 'clawmedic_incidents_open{target="b"} 2.0' in text
    assert "clawmedic_build_info{version=" in text
    assert "clawmedic_incidents_total{" not in text  # no store yet: no counts, and no error


def test_incident_and_remedy_counters_come_from_the_store(tmp_path: Path) -> None:
    db = tmp_path / "incidents.sqlite"
    store = IncidentStore(db)
    try:
        closed = store.open("svc", "crash", 100.0, 101.0)
        store.update(closed, status="recovered", live_at=104.0, closed_at=110.0)
        store.add(closed, "remedy", {"remedy": "restore_known_good", "status": "ok", "detail": "done"})
        store.add(closed, "remedy", {"remedy": "restore_known_good", "status": "ok", "detail": "again"})
        store.add(closed, "remedy", {"remedy": "kill_foreign", "status": "refused", "detail": "policy"})
        store.open("svc", "still open", 200.0, 201.0)  # open: not counted as an outcome
        text = _scrape(LiveCollector(dict, db))
    finally:
        store.close()
    assert 'clawmedic_incidents_total{outcome="recovered",target="svc"} 1.0' in text
    assert 'outcome="open"' not in text
    assert 'clawmedic_remedies_total{remedy="restore_known_good",status="ok",target="svc"} 2.0' in text
    assert 'clawmedic_remedies_total{remedy="kill_foreign",status="refused",target="svc"} 1.0' in text


def _loaded(tmp_path: Path) -> LoadedConfig:
    return load_config(_config(tmp_path, ""))


def test_histograms_are_fed_by_probes_and_recoveries(tmp_path: Path) -> None:
    loaded = _loaded(tmp_path)
    metrics = Metrics(loaded, dict, tmp_path / "incidents.sqlite")
    from clawmedic.probes import ProbeResult

    liveness = loaded.targets["svc"].liveness
    metrics.on_probe(liveness, ProbeResult(True, "ok"), 0.02)
    metrics.on_probe(liveness.model_copy(), ProbeResult(True, "ok"), 0.02)  # not a target's own probe: ignored
    store = IncidentStore(tmp_path / "incidents.sqlite")
    try:
        inc = store.open("svc", "crash", 100.0, 101.0)
        store.update(inc, status="recovered", live_at=107.5, closed_at=110.0)
        metrics.incidents = store
        metrics.on_event({"kind": "incident_closed", "target": "svc", "incident": inc, "outcome": "recovered"})
        metrics.on_event({"kind": "incident_closed", "target": "svc", "incident": 999, "outcome": "recovered"})
        metrics.on_event({"kind": "state", "target": "svc"})
        text = generate_latest(metrics.registry).decode()
    finally:
        store.close()
    assert 'clawmedic_probe_duration_seconds_count{probe="liveness",target="svc"} 1.0' in text
    assert 'clawmedic_time_to_recover_seconds_count{target="svc"} 1.0' in text
    assert 'clawmedic_time_to_recover_seconds_sum{target="svc"} 7.5' in text
    assert 'clawmedic_time_to_recover_seconds_bucket{le="10.0",target="svc"} 1.0' in text
    assert 'clawmedic_time_to_recover_seconds_bucket{le="5.0",target="svc"} 0.0' in text
    assert "process_cpu_seconds_total" in text  # the daemon's own CPU, for the scrape-cost figure


# --- pages ------------------------------------------------------------------------------------------------------------

HOSTILE = "<script>alert(1)</script><img src=x onerror=alert(2)> [x](javascript:alert(3))"
SECRET = "hunter2-very-secret-value"


def _incident(reason: str) -> Incident:
    inc = Incident(7, "svc", "recovered", reason, None, 100.0, 101.0, 104.0, 110.0, 1)
    inc.timeline = [TimelineEntry(100.0, "exit", {"code": 1, "output_tail": [reason]}, None)]
    return inc


def test_the_status_page_escapes_and_redacts_everything(tmp_path: Path) -> None:
    pages = Pages(Redactor([SECRET]))
    status = {
        "daemon": {"pid": 1, "started_at": 50.0, "config": "c.toml"},
        "targets": {
            "svc": {
                **_snapshot(),
                "since": 90.0,
                "pid": None,
                "kind": "http",
                "mode": "managed",
                "liveness_detail": f"token {SECRET} <b>",
                "ready": None,
                "last_exit": None,
            }
        },
    }
    html = pages.index(status, [_incident(f"{HOSTILE} {SECRET}")], now=100.0)
    assert "<script>alert" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert SECRET not in html
    assert 'data-state="healthy"' in html and 'href="/incidents/7"' in html


def test_the_incident_page_renders_the_report_without_markup_from_the_output() -> None:
    pages = Pages(Redactor([SECRET]))
    html = pages.incident(_incident(f"{HOSTILE} {SECRET}"))
    assert "<h2>Symptom</h2>" in html  # the Markdown report, rendered
    assert "<script>alert" not in html and "<img src=x" not in html
    assert 'href="javascript:' not in html  # markdown-it refuses the link
    assert SECRET not in html


def _changed_incident() -> Incident:
    """An incident whose doctor recorded what changed: a config setting, one value a configured secret the
    collector did not know (so only the page's redaction can mask it), and markup in a summary."""
    inc = _incident("process exited (exit 78)")
    changes = [
        {
            "what": "config",
            "key": "openclaw.json",
            "summary": f"2 setting(s) of openclaw.json differ from known-good {HOSTILE}",
            "changed_at": 99.0,
            "reversible": True,
            "remedy": "restore_known_good",
            "settings": ['gateway.mode: "local" → "remote"', f'gateway.remote.url: (unset) → "wss://x/{SECRET}"'],
            "when": "at 00:01:39, 1 s before the first failure",
        }
    ]
    inc.timeline.append(TimelineEntry(101.0, "evidence", {"changes": changes, "last_exit": {"code": 78}}, None))
    return inc


def test_the_incident_page_shows_what_changed_redacted_and_once() -> None:
    pages = Pages(Redactor([SECRET]))
    html = pages.incident(_changed_incident())
    section = html.split('<div id="what-changed">', 1)[1].split("</div>", 1)[0]
    assert "gateway.mode: &#34;local&#34; → &#34;remote&#34;" in section  # the setting, as text
    assert "gateway.remote.url" in section and "***" in section and SECRET not in html  # the page's redaction
    assert "1 s before the first failure" in section and "restore_known_good" in section
    assert "<script>alert" not in html
    assert html.count("What changed") == 1  # the report below does not repeat it
    data = pages.incident_data(_changed_incident())  # /api/incidents/7
    assert data["changes"][0]["settings"][0] == 'gateway.mode: "local" → "remote"'
    assert SECRET not in str(data) and "***" in data["changes"][0]["settings"][1]


def test_an_incident_without_evidence_has_no_what_changed_and_nothing_changed_is_said() -> None:
    pages = Pages(Redactor())
    assert 'id="what-changed"' not in pages.incident(_incident("killed"))  # a plain restart: no doctor
    assert pages.incident_data(_incident("killed"))["changes"] is None
    inc = _incident("exit 1")
    inc.timeline.append(TimelineEntry(101.0, "evidence", {"changes": []}, None))
    assert "Nothing changed since the last healthy state" in pages.incident(inc)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "—"),
        (0.4, "0.4 s"),
        (45, "45 s"),
        (723, "12 min 3 s"),
        (720, "12 min"),
        (11520, "3 h 12 min"),
        (604800, "7 d"),
    ],
)
def test_duration(seconds: float | None, text: str) -> None:
    assert duration(seconds) == text


def test_the_status_page_renders_before_any_target_or_with_a_sparse_status() -> None:
    pages = Pages(Redactor())
    assert "No incident yet" in pages.index({"daemon": {}, "targets": {}}, [], now=100.0)
    html = pages.index({"daemon": {"pid": 3}, "targets": {"svc": {"state": "healthy"}}}, [], now=100.0)
    assert 'data-state="healthy"' in html


def test_a_fault_of_the_page_never_ends_the_daemon(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import asyncio
    import logging
    from types import SimpleNamespace

    server = plugin_for(_loaded(tmp_path))
    assert server is not None
    broken = SimpleNamespace(incidents=None, prober=None)  # `prober.observe` raises AttributeError

    async def scenario() -> bool:
        task = asyncio.get_running_loop().create_task(server.run(broken))  # type: ignore[arg-type]
        for _ in range(20):
            await asyncio.sleep(0)
        alive = not task.done()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return alive

    with caplog.at_level(logging.ERROR, logger="clawmedic.web"):
        assert asyncio.run(scenario()) is True  # a finished plugin task would stop the daemon
    assert any("supervision goes on" in r.getMessage() for r in caplog.records)


def test_readiness_is_not_claimed_for_a_target_that_is_not_live() -> None:
    target = {"state": "starting", "live": False, "ready": True}
    html = Pages(Redactor()).index({"daemon": {}, "targets": {"svc": target}}, [], now=100.0)
    assert '<span class="ok">ready</span>' not in html and "not live" in html
