"""The daemon's HTTP server for real: a `clawmedic run` supervising a stand-in, scraped by a real Prometheus
(Debian's `prometheus`) and looked at in a real headless Chromium (Debian's `chromium` + `chromium-driver`,
driven by Selenium). Everything on loopback; every process is ended by its PID.

`.ci/run` installs the three Debian packages, so nothing here is skipped in CI.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from clawmedic import defaults
from clawmedic.config import load_config
from clawmedic.daemon import incidents_path
from clawmedic.store.incidents import IncidentStore
from tests.helpers.receivers import HttpReceiver
from tests.helpers.rig import Rig, StandinTarget, free_port, kill_leftovers
from tests.integration.test_cli import CLAWMEDIC, cli_env

T = TypeVar("T")

# The alert rules and the scrape example; the Grafana dashboard is in ../grafana.
CONTRIB = Path(__file__).resolve().parents[2] / "contrib" / "prometheus"

# A line a target prints just before it dies: it reaches the incident's reason, its timeline and its report.
SCRIPT = "<script>document.title='pwned'</script>"
PAYLOAD = SCRIPT + "<img src=x onerror=\"document.title='pwned'\">"
SECRET = "web-s3cret-9f4e2a7c1d"  # a resolved "${WEB_SECRET}" the target prints just before dying


def wait(
    predicate: Callable[[], T | None], timeout: float, what: str, proc: subprocess.Popen[bytes] | None = None
) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert proc is None or proc.poll() is None, f"the process exited ({proc.returncode}) waiting for {what}"
        assert time.monotonic() < deadline, f"timed out after {timeout:g} s waiting for {what}"
        time.sleep(0.1)


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, headers=headers or {})  # noqa: S310 (loopback http only)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:  # noqa: S310 (loopback http only)
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def end(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM a process this test started (by its PID), then SIGKILL if it lingers."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class WebDaemon:
    rig: Rig
    proc: subprocess.Popen[bytes]
    url: str
    exit_file: Path

    def status(self) -> dict[str, Any]:
        code, body = get(f"{self.url}/api/status")
        assert code == 200, body
        data: dict[str, Any] = json.loads(body)
        return data

    def target(self) -> dict[str, Any]:
        found: dict[str, Any] = self.status()["targets"].get("svc", {})
        return found


@contextlib.contextmanager
def running(
    tmp_path: Path, target: StandinTarget, state: str, env_file: dict[str, str] | None = None
) -> Iterator[WebDaemon]:
    """A real `clawmedic run` with its HTTP server on a free loopback port, supervising `target`; returns once the
    target is in `state`. Ends the daemon and every child it started, by PID."""
    home = tmp_path / "home"
    home.mkdir()
    rig = Rig(tmp_path)
    port = free_port()
    config = rig.write_config(target, env_file=env_file, daemon={"http": {"listen": f"127.0.0.1:{port}"}})
    log = (tmp_path / "daemon.log").open("wb")
    proc = subprocess.Popen(
        [CLAWMEDIC, "run", "--config", str(config)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        env=cli_env(home),
        cwd=home,
    )
    d = WebDaemon(rig, proc, f"http://127.0.0.1:{port}", tmp_path / "exit-now")
    try:
        wait(lambda: _reachable(d.url), 20, "the HTTP server", proc)
        wait(lambda: d.target().get("state") == state, 30, f"the target {state}", proc)
        yield d
    finally:
        end(proc, 30)
        log.close()
        rig.cleanup()
        kill_leftovers(load_config(config))  # the children by their resolved command (a "${SECRET}" in it)


@pytest.fixture
def web_daemon(tmp_path: Path) -> Iterator[WebDaemon]:
    """A stand-in that prints a secret, then `PAYLOAD`, and exits 1 when its exit file appears, and boots in 1 s (so
    a restart can be seen on the page)."""
    exit_file = tmp_path / "exit-now"
    dies = ["--exit-file", str(exit_file), "--exit-code", "1", "--print", "token ${WEB_SECRET}", "--print", PAYLOAD]
    target = StandinTarget(args=["--boot-delay", "1", *dies])
    with running(tmp_path, target, "healthy", env_file={"WEB_SECRET": SECRET}) as d:
        yield d


def _reachable(url: str) -> bool:
    try:
        return get(f"{url}/api/status")[0] == 200
    except OSError:
        return False


# --- a real Prometheus ---------------------------------------------------------------------------------------------


@dataclass
class Prometheus:
    proc: subprocess.Popen[bytes]
    url: str

    def query(self, promql: str) -> list[dict[str, Any]]:
        code, body = get(f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
        if code != 200:
            return []
        result: list[dict[str, Any]] = json.loads(body)["data"]["result"]
        return result

    def value(self, promql: str) -> float | None:
        found = self.query(promql)
        return float(found[0]["value"][1]) if found else None


@contextlib.contextmanager
def running_prometheus(tmp_path: Path, scrape: str, extra: str = "") -> Iterator[Prometheus]:
    """Debian's Prometheus on a free loopback port, scraping `scrape` (HOST:PORT) every second; `extra` is more
    top-level YAML (rule files, alerting)."""
    binary = shutil.which("prometheus")
    assert binary, "Debian's prometheus is not installed (.ci/run installs it: apt-get install prometheus)"
    port = free_port()
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
        f"scrape_configs:\n  - job_name: clawmedic\n    static_configs:\n      - targets: ['{scrape}']\n{extra}"
    )
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={cfg}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
    )
    p = Prometheus(proc, f"http://127.0.0.1:{port}")
    try:
        wait(lambda: _ready(p.url), 30, "Prometheus ready", proc)
        yield p
    finally:
        end(proc)
        log.close()


@pytest.fixture
def prometheus(tmp_path: Path, web_daemon: WebDaemon) -> Iterator[Prometheus]:
    with running_prometheus(tmp_path, web_daemon.url.removeprefix("http://")) as p:
        yield p


def _ready(url: str) -> bool:
    try:
        return get(f"{url}/-/ready")[0] == 200
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_a_real_prometheus_scrapes_up_and_counts_a_restart_after_kill_9(
    web_daemon: WebDaemon, prometheus: Prometheus
) -> None:
    svc = web_daemon.target()  # /api/status
    assert (svc["state"], svc["live"], svc["restarts"]) == ("healthy", True, 0)
    code, text = get(f"{web_daemon.url}/metrics")
    assert code == 200
    assert 'clawmedic_target_up{target="svc"} 1.0' in text
    assert 'clawmedic_target_state{state="healthy",target="svc"} 1.0' in text
    assert 'clawmedic_build_info{version="' in text
    assert 'clawmedic_probe_duration_seconds_count{probe="liveness",target="svc"}' in text
    assert get(f"{web_daemon.url}/incidents/999")[0] == 404
    code, body = get(f"{web_daemon.url}/targets/svc")
    assert code == 200 and json.loads(body)["state"] == "healthy"
    assert get(f"{web_daemon.url}/targets/nope")[0] == 404

    up = 'clawmedic_target_up{job="clawmedic",target="svc"}'
    wait(lambda: prometheus.value(up) == 1.0, 30, f"{up} == 1 in Prometheus", prometheus.proc)
    assert prometheus.value('up{job="clawmedic"}') == 1.0  # the scrape itself succeeded
    assert prometheus.value('clawmedic_restarts_total{target="svc"}') == 0.0

    child = web_daemon.target()["pid"]
    os.kill(child, signal.SIGKILL)  # the daemon started it; its PID comes from the daemon's own status
    restarts = 'clawmedic_restarts_total{target="svc"}'
    wait(lambda: (prometheus.value(restarts) or 0) >= 1, 30, f"{restarts} >= 1 in Prometheus", prometheus.proc)
    recovered = 'clawmedic_incidents_total{target="svc",outcome="recovered"}'
    wait(lambda: prometheus.value(recovered) == 1.0, 30, f"{recovered} == 1 in Prometheus", prometheus.proc)
    wait(lambda: prometheus.value(up) == 1.0, 30, "up again", prometheus.proc)
    ttr = prometheus.value('clawmedic_time_to_recover_seconds_count{target="svc"}')
    assert ttr == 1.0
    assert web_daemon.target()["pid"] != child

    # `clawmedic stats` reads the same records: one incident, healed by a restart, uptime below 100 %.
    stats = subprocess.run(
        [CLAWMEDIC, "stats", "--json", "--since", "1h", "--config", str(web_daemon.rig.config_path)],
        capture_output=True,
        text=True,
        env=cli_env(web_daemon.rig.tmp_path / "home"),
        timeout=60,
    )
    assert stats.returncode == 0, stats.stderr
    summary = json.loads(stats.stdout)
    assert summary["incidents"] == 1 and summary["healed_by"]["restart"] == 1
    assert 0 < summary["targets"]["svc"]["uptime_pct"] < 100
    assert summary["mttr_median_s"] > 0

    # Every expression of the Grafana dashboard is valid PromQL and finds data (remedies: none ran here).
    dashboard = json.loads((CONTRIB.parent / "grafana" / "clawmedic.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 10
    for expr in exprs:
        code, body = get(f"{prometheus.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        assert code == 200 and json.loads(body)["status"] == "success", (expr, body)
        assert "remedies" in expr or json.loads(body)["data"]["result"], f"no data for {expr}"


# --- a real browser ------------------------------------------------------------------------------------------------


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, "Debian's chromium and chromium-driver are not installed (.ci/run installs them)"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",  # containers often have a tiny /dev/shm
        "--window-size=1280,900",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    service = Service(executable_path=driver, log_output=str(tmp_path / "chromedriver.log"))
    monkeypatch.setenv("SE_OFFLINE", "true")  # never let Selenium Manager look for a browser to download
    drv = webdriver.Chrome(options=options, service=service)
    try:
        yield drv
    finally:
        drv.quit()  # ends chromedriver and the Chromium it started


def _row_state(drv: Any) -> str:
    from selenium.webdriver.common.by import By

    state: str = drv.find_element(By.ID, "target-svc").get_attribute("data-state")
    return state


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_the_status_page_in_a_real_browser_shows_the_restart_and_escapes_the_output(
    web_daemon: WebDaemon, browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    browser.get(web_daemon.url + "/")
    row = browser.find_element(By.ID, "target-svc")
    assert row.get_attribute("data-state") == "healthy"
    assert "healthy" in row.text and "live" in row.text
    refresh = browser.find_element(By.CSS_SELECTOR, 'meta[http-equiv="refresh"]').get_attribute("content")
    assert refresh == str(defaults.HTTP_REFRESH_S)

    # The target prints the payload and exits 1: an incident, a restart (1 s boot), healthy again.
    seen = [_row_state(browser)]  # healthy, as asserted above
    web_daemon.exit_file.touch()

    def healthy_after_a_restart() -> bool:
        browser.refresh()
        state = _row_state(browser)
        if not seen or seen[-1] != state:
            seen.append(state)
        return len(seen) >= 3 and seen[-1] == "healthy"

    wait(healthy_after_a_restart, 30, f"healthy → restart → healthy on the page (seen {seen})")
    assert seen[0] == "healthy" and any(s in ("restarting", "starting", "backoff", "probation") for s in seen), seen
    assert "1" in browser.find_element(By.ID, "target-svc").text  # one restart

    browser.refresh()  # the week's figures (cached, but not across an incident's end) agree with the list
    assert [td.text for td in browser.find_elements(By.CSS_SELECTOR, "#stats td")][:1] == ["svc"]
    assert browser.find_elements(By.CSS_SELECTOR, "#stats td")[3].text == "1"  # one incident
    reason = browser.find_element(By.CSS_SELECTOR, "#incidents .reason").text
    assert PAYLOAD in reason  # shown as text ...
    assert browser.find_elements(By.CSS_SELECTOR, "script, img") == []  # ... not as markup, anywhere on the page
    assert browser.title.startswith("clawmedic")  # and nothing ran
    browser.save_screenshot(str(tmp_path / "status-page.png"))

    browser.find_element(By.CSS_SELECTOR, "#incidents a").click()
    wait(lambda: browser.find_elements(By.ID, "timeline"), 10, "the incident page")
    assert browser.find_element(By.ID, "incident-status").text == "recovered"
    assert "Recovery report" in browser.page_source
    assert browser.find_element(By.CSS_SELECTOR, "#report h2").text == "Symptom"  # the Markdown, rendered
    assert SCRIPT in browser.find_element(By.ID, "timeline").text  # the output tail (as JSON), as text
    assert "token ***" in browser.find_element(By.ID, "timeline").text  # the secret line, redacted
    assert SECRET not in browser.page_source
    assert SECRET not in get(f"{web_daemon.url}/api/status")[1] and SECRET not in get(f"{web_daemon.url}/")[1]
    assert browser.find_elements(By.CSS_SELECTOR, "#timeline script, #report script, img") == []
    assert "pwned" not in browser.title
    assert browser.find_elements(By.ID, "what-changed") == []  # a plain restart: the doctor collected nothing

    # What the doctor records when it is consulted (the e2e change-rule test makes it for real): the changes since
    # the last healthy state, one setting carrying the secret the collector did not know. The page and its JSON
    # show it, through the daemon's redaction.
    incident_id = int(browser.current_url.rstrip("/").rsplit("/", 1)[-1])
    change = {
        "what": "config",
        "key": "openclaw.json",
        "summary": "1 setting(s) of openclaw.json differ from known-good",
        "changed_at": time.time(),
        "reversible": True,
        "remedy": "restore_known_good",
        "settings": [f'gateway.remote.url: (unset) → "wss://h/{SECRET}"'],
        "when": "at 05:00:00, 2 s before the first failure",
    }
    state = load_config(web_daemon.rig.config_path).state_dir
    store = IncidentStore(incidents_path(state))  # no redactor: the secret is stored as the collector gave it
    store.add(incident_id, "evidence", {"changes": [change]})
    store.close()
    browser.refresh()
    shown = wait(lambda: browser.find_elements(By.ID, "what-changed"), 10, "the what-changed section")[0].text
    assert 'gateway.remote.url: (unset) → "wss://h/***"' in shown and "2 s before the first failure" in shown
    assert SECRET not in browser.page_source
    code, body = get(f"{web_daemon.url}/api/incidents/{incident_id}")
    assert code == 200 and SECRET not in body
    assert json.loads(body)["changes"][0]["settings"] == ['gateway.remote.url: (unset) → "wss://h/***"']
    assert get(f"{web_daemon.url}/api/incidents/999")[0] == 404
    browser.save_screenshot(str(tmp_path / "incident-page.png"))
    for shot in ("status-page.png", "incident-page.png"):
        assert (tmp_path / shot).read_bytes().startswith(b"\x89PNG")
        if artifacts := os.environ.get("CLAWMEDIC_ARTIFACTS"):
            Path(artifacts).mkdir(parents=True, exist_ok=True)
            shutil.copy(tmp_path / shot, Path(artifacts) / shot)


# --- the outside world -------------------------------------------------------------------------------------------


def test_run_refuses_an_outside_address_without_a_token(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    rig = Rig(tmp_path)
    config = rig.write_config(StandinTarget(), daemon={"http": {"listen": f"0.0.0.0:{free_port()}"}})
    env = {k: v for k, v in cli_env(home).items() if k != defaults.HTTP_TOKEN_ENV}
    result = subprocess.run(
        [CLAWMEDIC, "run", "--config", str(config)], capture_output=True, text=True, env=env, cwd=home, timeout=60
    )
    assert result.returncode == defaults.EXIT_CONFIG
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert defaults.HTTP_TOKEN_ENV in result.stderr and "daemon.http.listen" in result.stderr
    assert not (rig.state_dir / "events.jsonl").exists()  # the daemon never started, nor any target


def test_with_a_token_every_request_must_carry_it(tmp_path: Path) -> None:
    import asyncio

    from aiohttp.test_utils import TestClient, TestServer

    from clawmedic.web.address import Listen
    from clawmedic.web.server import HttpServer

    token = "a-long-enough-bearer-token"
    loaded = load_config(Rig(tmp_path).write_config(StandinTarget()))
    server = HttpServer(loaded, Listen("127.0.0.1", 0), token)

    async def scenario() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        async with TestClient(TestServer(server.app(), host="127.0.0.1")) as client:
            for path in ("/", "/metrics", "/api/status", "/incidents/1"):
                seen[f"none {path}"] = (await client.get(path)).status
                bad = await client.get(path, headers={"Authorization": "Bearer wrong"})
                seen[f"bad {path}"] = bad.status
            ok = await client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
            seen["ok"] = (ok.status, await ok.text())
            missing = await client.get("/incidents/1", headers={"Authorization": f"Bearer {token}"})
            seen["missing"] = (missing.status, dict(missing.headers))
            post = await client.post("/", headers={"Authorization": f"Bearer {token}"})
            seen["post"] = post.status
        return seen

    seen = asyncio.run(scenario())
    assert {k: v for k, v in seen.items() if k.startswith(("none", "bad"))} == {
        f"{who} {path}": 401 for path in ("/", "/metrics", "/api/status", "/incidents/1") for who in ("none", "bad")
    }
    status, text = seen["ok"]
    assert status == 200 and "clawmedic_build_info" in text
    status, headers = seen["missing"]
    assert status == 404 and "script-src" not in headers["Content-Security-Policy"]
    assert headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert seen["post"] == 405  # read-only


# --- the fleet recipe: alert rules, a real Alertmanager ----------------------------------------------------------


def test_promtool_accepts_the_alert_rules_and_the_scrape_example() -> None:
    promtool = shutil.which("promtool")
    assert promtool, "Debian's prometheus (promtool) is not installed (.ci/run installs it)"
    rules = subprocess.run([promtool, "check", "rules", str(CONTRIB / "alerts.yml")], capture_output=True, text=True)
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert "SUCCESS: 5 rules found" in rules.stdout
    config = subprocess.run(
        [promtool, "check", "config", str(CONTRIB / "prometheus.yml")], capture_output=True, text=True
    )
    assert config.returncode == 0, config.stdout + config.stderr


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[tuple[str, HttpReceiver]]:
    """Debian's Alertmanager on loopback (no clustering), delivering every alert at once to a loopback webhook."""
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    assert binary, "Debian's prometheus-alertmanager is not installed (.ci/run installs it)"
    with HttpReceiver() as hook:
        cfg = tmp_path / "alertmanager.yml"
        cfg.write_text(
            "route:\n  receiver: hook\n  group_by: [alertname, target]\n"
            "  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\n"
            f"receivers:\n  - name: hook\n    webhook_configs:\n      - url: '{hook.url('/alert', 'http')}'\n"
        )
        port = free_port()
        log = (tmp_path / "alertmanager.log").open("wb")
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={cfg}",
                f"--storage.path={tmp_path / 'am'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",
                "--log.level=warn",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        try:
            wait(lambda: _ready(f"http://127.0.0.1:{port}"), 30, "Alertmanager ready", proc)
            yield f"127.0.0.1:{port}", hook
        finally:
            end(proc)
            log.close()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_target_that_gave_up_reaches_a_webhook_through_prometheus_and_alertmanager(
    tmp_path: Path, alertmanager: tuple[str, HttpReceiver]
) -> None:
    am, hook = alertmanager
    rules = tmp_path / "alerts.yml"
    rules.write_text((CONTRIB / "alerts.yml").read_text())
    extra = (
        f"rule_files: ['{rules}']\nalerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['{am}']\n"
    )
    # Exit 78 (config invalid): a restart cannot fix it, so clawmedic escalates at once and, with no remedy that
    # fits a stand-in, gives up.
    target = StandinTarget(args=["--exit-after", "0.5", "--exit-code", "78"])
    with running(tmp_path, target, "gave_up") as daemon, running_prometheus(tmp_path, daemon.url[7:], extra) as prom:
        gave_up = 'ALERTS{alertname="ClawmedicGaveUp",alertstate="firing",target="svc"}'
        wait(lambda: prom.value(gave_up) == 1.0, 30, "ClawmedicGaveUp firing in Prometheus", prom.proc)

        def delivered() -> list[dict[str, Any]]:
            alerts = [a for r in hook.items() for a in r.json().get("alerts", [])]
            return [a for a in alerts if a["labels"].get("alertname") == "ClawmedicGaveUp"]

        alerts = wait(delivered, 60, "ClawmedicGaveUp delivered to the webhook by Alertmanager", prom.proc)
        assert alerts[0]["status"] == "firing"
        assert alerts[0]["labels"]["target"] == "svc" and alerts[0]["labels"]["severity"] == "critical"
        assert "gave up on svc" in alerts[0]["annotations"]["summary"]
        assert prom.value('ALERTS{alertname="ClawmedicTargetDown",alertstate="pending"}') == 1.0  # for: 2m
        code, body = get(f"{daemon.url}/targets/svc")  # what a status-code monitor or a kubelet sees
        assert code == 503 and json.loads(body)["state"] == "gave_up"
