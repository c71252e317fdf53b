"""The real embedded model (clawmedic[local-llm]) through the real agent loop: given the evidence of a broken
openclaw.json, it must choose the restore-known-good remedy. Slow (minutes on 2 cores); runs in CI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from clawmedic.doctor.llm.local import LocalBackend, ensure_model, local_available

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(1500),
    pytest.mark.skipif(not local_available(), reason="clawmedic[local-llm] is not installed (xllamacpp, model chunks)"),
]

CASES = Path(__file__).resolve().parents[2] / "evals" / "cases"


def test_real_model_file_is_the_official_one() -> None:
    model = ensure_model()  # joined from the installed chunks and checked against the official SHA-256
    assert model.stat().st_size > 1_000_000_000
    assert model.with_name(model.name + ".stamp").is_file()


def test_broken_config_makes_the_real_model_restore_known_good() -> None:
    """Through `clawmedic llm eval` (its own process, as the daemon's consultations are: llama.cpp never loads
    into the test runner) on the recorded evidence of a JSON typo in openclaw.json."""
    cmd = [sys.executable, "-m", "clawmedic", "llm", "eval", "--backend", "local", "--cases", str(CASES)]
    r = subprocess.run([*cmd, "-k", "invalid-json", "--json"], capture_output=True, text=True, timeout=1400)
    assert r.returncode in (0, 1), r.stderr[-2000:]
    score = json.loads(r.stdout)["scores"][0]
    assert score["error"] is None, score
    assert score["remedy_chosen"] == "restore_known_good", score
    assert score["fault_named"] == "config-invalid", score
    assert r.returncode == 0


def test_the_local_model_opens_no_tcp_port() -> None:
    """llama.cpp's server side is confined to a private Unix socket behind a random key."""
    code = (
        "from clawmedic.doctor.llm.local import LocalBackend; import psutil, os; b = LocalBackend(); b.load(); "
        "print(b._server.listening_address); "
        "print(sum(1 for c in psutil.Process(os.getpid()).net_connections('tcp') if c.status == 'LISTEN'))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    address, listening = r.stdout.split()[-2:]
    assert address.startswith("unix://")
    assert listening == "0"


def test_unknown_model_path_is_unavailable(tmp_path: Path) -> None:
    from clawmedic.doctor.llm.types import BackendUnavailable

    with pytest.raises(BackendUnavailable, match="does not exist"):
        LocalBackend(model_path=tmp_path / "none.gguf").load()
