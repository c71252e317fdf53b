"""The fleet recipes in contrib/ hold together: the compose file and the Kubernetes manifest parse, the clawmedic
config inside each loads as clawmedic's own config (the validation every command runs), and what they name exists —
the gateway's service, container, port and process, clawmedic's listen port and token variable, the `/targets/NAME`
endpoint the gateway's liveness probe asks, the files the images are built from. The liveness probe's script runs in a
real Node.js against loopback servers when one is installed (the sandbox's, or `node` on PATH).

No Docker daemon or cluster is needed (none is offline); `promtool` checks the Prometheus files in test_web."""

from __future__ import annotations

import re
import shlex
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import tomlkit
import yaml

from clawmedic import paths
from clawmedic.config import LoadedConfig, load_config
from clawmedic.errors import ConfigInvalid
from clawmedic.process.identity import GATEWAY_PROCESS_NAME
from clawmedic.web.address import parse_listen
from clawmedic.web.server import plugin_for

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "contrib" / "docker-compose"
K8S = ROOT / "contrib" / "kubernetes" / "clawmedic-sidecar.yaml"
TOKEN = "t0ken-for-the-recipe-test"


def _load(text: str, tmp_path: Path) -> LoadedConfig:
    """The recipe's config with its state folder moved under tmp_path (the recipe's is a container path)."""
    doc = tomlkit.parse(text)
    doc["daemon"]["state_dir"] = str(tmp_path / "state")
    path = tmp_path / "config.toml"
    path.write_text(tomlkit.dumps(doc))
    return load_config(path)


def _flag(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def _http_needs_the_token(loaded: LoadedConfig, monkeypatch: pytest.MonkeyPatch) -> int:
    """The recipe listens beyond loopback: without its token variable `run` refuses; with it, it serves."""
    cfg = loaded.config.daemon.http
    assert not parse_listen(cfg.listen).loopback
    monkeypatch.delenv(cfg.token_env, raising=False)
    with pytest.raises(ConfigInvalid, match="bearer token"):
        plugin_for(loaded)
    monkeypatch.setenv(cfg.token_env, TOKEN)
    server = plugin_for(loaded)
    assert server is not None
    routes = {getattr(r.resource, "canonical", "") for r in server.app().router.routes()}
    assert {"/targets/{name}", "/metrics", "/api/status"} <= routes
    return parse_listen(cfg.listen).port


# --- docker compose --------------------------------------------------------------------------------------------------


def test_compose_recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    compose = yaml.safe_load((COMPOSE / "compose.yaml").read_text())
    gateway, medic = compose["services"]["openclaw-gateway"], compose["services"]["clawmedic"]
    loaded = _load((COMPOSE / "clawmedic.toml").read_text(), tmp_path)
    (name, target), *others = loaded.targets.items()
    assert not others
    # clawmedic probes the gateway's service at the port the gateway is told to listen on, beyond its loopback
    assert target.host == "openclaw-gateway" and target.port == int(_flag(gateway["command"], "--port"))
    assert _flag(gateway["command"], "--bind") == "lan"
    assert target.liveness.url == f"http://openclaw-gateway:{target.port}/health"
    # external mode: Docker restarts the very container the gateway runs in
    assert target.start.mode == "external" and target.start.restart_command is not None
    assert target.start.restart_command[0] == "curl"
    assert f"/containers/{gateway['container_name']}/restart" in target.start.restart_command[-1]
    assert "/var/run/docker.sock:/var/run/docker.sock" in medic["volumes"]
    # the known-good snapshots read the gateway's own volume, mounted at the same path in both
    home_mount = next(v for v in gateway["volumes"] if v.startswith("openclaw-home:"))
    assert home_mount in medic["volumes"] and home_mount.split(":")[1] == str(target.openclaw_home)
    # the config file the container reads is this one; its HTTP port is the one published
    assert "./clawmedic.toml:/etc/clawmedic/config.toml:ro" in medic["volumes"]
    assert _flag(medic["command"], "--config") == "/etc/clawmedic/config.toml"
    port = _http_needs_the_token(loaded, monkeypatch)
    assert f"127.0.0.1:{port}:{port}" in medic["ports"]
    assert loaded.config.daemon.http.token_env in medic["environment"]
    # the images are built from files that exist
    assert (COMPOSE / gateway["build"]["dockerfile"]).is_file()
    context = (COMPOSE / medic["build"]["context"]).resolve()
    dockerfile = (context / medic["build"]["dockerfile"]).read_text()
    assert context == ROOT
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            assert all((ROOT / src).exists() for src in line.split()[1:-1]), line
    assert name == "gateway"


# --- kubernetes ------------------------------------------------------------------------------------------------------


def _k8s() -> dict[str, Any]:
    return {d["kind"]: d for d in yaml.safe_load_all(K8S.read_text())}


def _liveness_script(container: dict[str, Any]) -> str:
    command: list[str] = container["livenessProbe"]["exec"]["command"]
    assert command[:2] == ["node", "-e"]
    return command[2]


def test_kubernetes_sidecar_recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    docs = _k8s()
    loaded = _load(docs["ConfigMap"]["data"]["config.toml"], tmp_path)
    (name, target), *others = loaded.targets.items()
    assert not others
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    assert pod["shareProcessNamespace"] is True
    containers = {c["name"]: c for c in pod["containers"]}
    gateway, medic = containers["gateway"], containers["clawmedic"]
    # same pod: loopback, the gateway's own port
    assert target.host == "127.0.0.1" and target.port == int(_flag(gateway["command"], "--port"))
    # external mode: the restart ends the gateway's process (by its title), and the kubelet starts it again
    assert target.start.mode == "external" and target.start.restart_command is not None
    assert target.start.restart_command[0] == "pkill"
    pattern = target.start.restart_command[-1]
    assert re.search(pattern, GATEWAY_PROCESS_NAME) and "--full" in target.start.restart_command
    # the liveness probe of the gateway asks clawmedic about this target, on its port, with its token
    port = _http_needs_the_token(loaded, monkeypatch)
    script = _liveness_script(gateway)
    assert f"http://127.0.0.1:{port}/targets/{name}" in script
    assert f"process.env.{loaded.config.daemon.http.token_env}" in script
    assert f"http://127.0.0.1:{target.port}/health" in script  # the fallback when clawmedic is not there
    env_names = {e["name"] for e in gateway["env"]}
    assert loaded.config.daemon.http.token_env in env_names and "OPENCLAW_GATEWAY_TOKEN" in env_names
    # clawmedic reads the config from the ConfigMap, the gateway's home from the same volume
    assert _flag(medic["command"], "--config") == "/etc/clawmedic/config.toml"
    mounts = {m["name"]: m["mountPath"] for m in medic["volumeMounts"]}
    assert mounts["clawmedic-config"] == "/etc/clawmedic" and mounts["openclaw-home"] == str(target.openclaw_home)
    assert {m["name"]: m["mountPath"] for m in gateway["volumeMounts"]}["openclaw-home"] == str(target.openclaw_home)
    # Prometheus reaches the port clawmedic listens on, through the Service
    (metrics,) = medic["ports"]
    assert metrics["containerPort"] == port
    (svc_port,) = docs["Service"]["spec"]["ports"]
    assert svc_port["targetPort"] == metrics["name"] and svc_port["port"] == port
    assert docs["Service"]["spec"]["selector"] == docs["Deployment"]["spec"]["selector"]["matchLabels"]


# --- the liveness script, in a real Node.js ---------------------------------------------------------------------------


def _node() -> str | None:
    found = sorted(paths.cache_dir().glob("sandbox/*/node/bin/node"))
    return str(found[-1]) if found else shutil.which("node")


class _Answer(ThreadingHTTPServer):
    def __init__(self, status: int) -> None:
        self.status = status
        self.auth: list[str] = []
        answer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                answer.auth.append(self.headers.get("Authorization", ""))
                self.send_response(answer.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def servers() -> Iterator[list[_Answer]]:
    started: list[_Answer] = []
    yield started
    for s in started:
        s.shutdown()
        s.server_close()


@pytest.mark.parametrize(
    ("clawmedic", "health", "expected"),
    [
        (200, 200, 0),  # live, or being healed
        (200, 503, 0),  # clawmedic is healing it: the kubelet keeps its hands off
        (503, 200, 1),  # clawmedic gave up: the kubelet restarts the container
        (None, 200, 0),  # no clawmedic: the gateway's own /health decides
        (None, 503, 1),
        (None, None, 1),
    ],
)
def test_the_gateway_liveness_script_in_node(
    servers: list[_Answer], clawmedic: int | None, health: int | None, expected: int
) -> None:
    node = _node()
    if node is None:
        pytest.skip("no Node.js here (the sandbox install brings one: clawmedic sandbox install)")
    docs = _k8s()
    loaded_port = parse_listen(tomlkit.parse(docs["ConfigMap"]["data"]["config.toml"])["daemon"]["http"]["listen"]).port
    ports = []
    for status in (clawmedic, health):
        if status is None:
            ports.append(_free_port())  # nobody listens
            continue
        server = _Answer(status)
        servers.append(server)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        ports.append(server.server_address[1])
    gateway = next(c for c in docs["Deployment"]["spec"]["template"]["spec"]["containers"] if c["name"] == "gateway")
    script = (
        _liveness_script(gateway)
        .replace(f"127.0.0.1:{loaded_port}/", f"127.0.0.1:{ports[0]}/")
        .replace("127.0.0.1:18789/", f"127.0.0.1:{ports[1]}/")
    )
    done = subprocess.run(
        [node, "-e", script],
        env={"CLAWMEDIC_HTTP_TOKEN": TOKEN, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == expected, f"{shlex.join([node, '-e', script])}\n{done.stderr}"
    if clawmedic is not None:
        assert servers[0].auth == [f"Bearer {TOKEN}"]
