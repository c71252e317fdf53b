"""The real embedded model (clawmedic[local-llm]) through the real agent loop: given the evidence of a broken
openclaw.json, it must choose the restore-known-good remedy. Slow (minutes on 2 cores); runs in CI."""

from __future__ import annotations

from pathlib import Path

import pytest

from clawmedic.doctor.llm.agent import Limits, consult, evidence_prompt
from clawmedic.doctor.llm.local import LocalBackend, ensure_model, local_available
from clawmedic.doctor.llm.tools import READ_TOOLS, RecordedTools
from clawmedic.doctor.remedies import REMEDIES, Guard, Policy
from clawmedic.redact import Redactor

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(1500),
    pytest.mark.skipif(not local_available(), reason="clawmedic[local-llm] is not installed (xllamacpp, model chunks)"),
]

# What the collectors record for a JSON typo in openclaw.json (as in evals/cases/01-invalid-json.json).
EVIDENCE = {
    "target": "gateway",
    "cause": "fatal_config",
    "reason": "the gateway exited and cannot start",
    "last_exit": {"code": 78, "kind": "fatal_config"},
    "output_tail": [
        "Invalid config at /home/u/.openclaw/openclaw.json: JSON5 parse failed: invalid character ',' at 3:5",
        "Gateway exited with code 78",
    ],
    "config": {"valid": False, "stage": "parse", "issues": ["JSON5: invalid character ',' at 3:5"]},
    "known_good": "4f1c2a9e0b",
    "config_differs_from_known_good": True,
}
RECORDED = {
    "log_tail": "console output:\nInvalid config at /home/u/.openclaw/openclaw.json: JSON5 parse failed: "
    "invalid character ',' at 3:5\nGateway exited with code 78\n",
    "config_validation": '{"valid": false, "stage": "parse", "issues": ["JSON5: invalid character \',\' at 3:5"]}',
    "redacted_config": '{\n gateway: {\n  ,,,{{ mode: "local", port: 18789 }\n}',
    "port_owner": "nothing listens on port 18789",
    "process_list": "[]",
}


def test_real_model_file_is_the_official_one() -> None:
    model = ensure_model()  # joined from the installed chunks and checked against the official SHA-256
    assert model.stat().st_size > 1_000_000_000
    assert model.with_name(model.name + ".stamp").is_file()


def test_broken_config_makes_the_real_model_restore_known_good() -> None:
    backend = LocalBackend(max_tokens=200)
    # Three steps: at most one read-only look, then the remedy; the third (no tools) is the conclusion.
    limits = Limits(max_steps=3, time_budget_s=1200, request_timeout_s=400, tool_output_max_chars=3000)
    tools = RecordedTools(RECORDED, Guard(Policy()))
    result = consult(backend, tools, evidence_prompt(EVIDENCE, [], []), limits, Redactor())

    assert result.error is None, result.error
    chosen = [t.name for t in result.tools]
    remedies = [name for name in chosen if name in REMEDIES]
    assert remedies, f"the model chose no remedy: {chosen}"
    assert remedies[0] == "restore_known_good", f"the model chose {chosen}"
    before = chosen[: chosen.index("restore_known_good")]
    assert len(before) <= 1 and all(name in READ_TOOLS for name in before), f"the model chose {chosen}"
    assert result.applied == ["restore_known_good"]  # allowed by the default guard policy, recorded
    # llama.cpp's HTTP side is confined to a private Unix socket: no TCP port was opened.
    assert backend._server.listening_address.startswith("unix://")


def test_unknown_model_path_is_unavailable(tmp_path: Path) -> None:
    from clawmedic.doctor.llm.types import BackendUnavailable

    with pytest.raises(BackendUnavailable, match="does not exist"):
        LocalBackend(model_path=tmp_path / "none.gguf").load()
