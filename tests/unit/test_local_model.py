"""The embedded model's file handling and prompt shaping, with tiny fake chunks (no model is loaded here)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from clawmedic.doctor.llm import local
from clawmedic.doctor.llm.local import CONCLUSION_SCHEMA, _parse_answer, choice_schema, ensure_model, to_chat
from clawmedic.doctor.llm.types import BackendFailed, BackendUnavailable, Message, ToolSpec

NOW = 1_700_000_000.0  # 2023-11-14, a fixed clock for the moved-aside names


def _parts(folder: Path, chunks: list[bytes]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, data in enumerate(chunks, start=1):
        p = folder / f"part{i:02d}.bin"
        p.write_bytes(data)
        out.append(p)
    return out


@pytest.fixture
def chunks(tmp_path: Path) -> tuple[list[Path], str, bytes]:
    data = [b"GGUF" + bytes(range(200)), b"middle" * 100, b"the end"]
    whole = b"".join(data)
    return _parts(tmp_path / "parts", data), hashlib.sha256(whole).hexdigest(), whole


def test_ensure_model_joins_parts_in_order_and_stamps(tmp_path: Path, chunks: tuple[list[Path], str, bytes]) -> None:
    parts, sha, whole = chunks
    model = ensure_model(directory=tmp_path / "models", parts=lambda: parts, expected_sha256=sha)
    assert model == tmp_path / "models" / local.MODEL_FILENAME
    assert model.read_bytes() == whole
    stamp = json.loads((model.parent / (model.name + ".stamp")).read_text())
    assert stamp == {"size": len(whole), "mtime_ns": model.stat().st_mtime_ns, "sha256": sha}
    assert [p.name for p in model.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_wrong_hash_refused_and_kept_aside_not_deleted(tmp_path: Path, chunks: tuple[list[Path], str, bytes]) -> None:
    parts, _, whole = chunks
    folder = tmp_path / "models"
    with pytest.raises(BackendUnavailable, match=r"wrong|instead of") as err:
        ensure_model(directory=folder, parts=lambda: parts, expected_sha256="0" * 64, now=lambda: NOW)
    assert not (folder / local.MODEL_FILENAME).exists()
    aside = [p for p in folder.iterdir() if ".refused-" in p.name]
    assert len(aside) == 1 and aside[0].name.startswith(local.MODEL_FILENAME + ".refused-2023")
    assert aside[0].read_bytes() == whole  # kept for inspection
    assert str(aside[0]) in str(err.value)


def test_refused_parts_are_not_joined_again(
    tmp_path: Path, chunks: tuple[list[Path], str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    parts, _, _ = chunks
    folder = tmp_path / "models"
    with pytest.raises(BackendUnavailable):
        ensure_model(directory=folder, parts=lambda: parts, expected_sha256="0" * 64, now=lambda: NOW)
    opened: list[Path] = []
    real_open = Path.open

    def spy(self: Path, *a: object, **k: object) -> object:
        opened.append(self)
        return real_open(self, *a, **k)  # type: ignore[call-overload]

    monkeypatch.setattr(Path, "open", spy)
    with pytest.raises(BackendUnavailable, match="kept aside"):
        ensure_model(directory=folder, parts=lambda: parts, expected_sha256="0" * 64, now=lambda: NOW + 5)
    assert not any(p in parts for p in opened)
    assert len([p for p in folder.iterdir() if ".refused-" in p.name]) == 1  # no second 1 GB copy


def test_stamp_spares_rehashing(
    tmp_path: Path, chunks: tuple[list[Path], str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    parts, sha, _ = chunks
    folder = tmp_path / "models"
    ensure_model(directory=folder, parts=lambda: parts, expected_sha256=sha)
    hashed: list[Path] = []
    real_hash = local._hash_file

    def spy(p: Path) -> str:
        hashed.append(p)
        return real_hash(p)

    monkeypatch.setattr(local, "_hash_file", spy)
    assert ensure_model(directory=folder, parts=lambda: parts, expected_sha256=sha).is_file()
    assert hashed == []
    # A changed file (same size, new mtime) is hashed again.
    model = folder / local.MODEL_FILENAME
    os.utime(model, ns=(model.stat().st_atime_ns, model.stat().st_mtime_ns + 1_000_000_000))
    ensure_model(directory=folder, parts=lambda: parts, expected_sha256=sha)
    assert hashed == [model]


def test_damaged_cache_moved_aside_and_joined_again(tmp_path: Path, chunks: tuple[list[Path], str, bytes]) -> None:
    parts, sha, whole = chunks
    folder = tmp_path / "models"
    model = ensure_model(directory=folder, parts=lambda: parts, expected_sha256=sha)
    model.write_bytes(whole[:-3] + b"BAD")  # same size, different content, new mtime
    again = ensure_model(directory=folder, parts=lambda: parts, expected_sha256=sha, now=lambda: NOW)
    assert again.read_bytes() == whole
    aside = [p for p in folder.iterdir() if ".refused-" in p.name]
    assert len(aside) == 1 and aside[0].read_bytes().endswith(b"BAD")


def test_missing_part_is_unavailable_with_install_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local, "PART_MODULE", "clawmedic_no_such_chunk_{n}")
    with pytest.raises(BackendUnavailable, match=r"clawmedic\[local-llm\]"):
        local.find_parts()
    with pytest.raises(BackendUnavailable, match=r"clawmedic\[local-llm\]"):
        ensure_model(directory=tmp_path / "models")
    assert local.local_available() is False


def test_find_parts_locates_data_files_without_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for n in (1, 2):
        pkg = tmp_path / f"fakechunk_{n}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
        (pkg / "data" / f"part{n:02d}.bin").write_bytes(b"x")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(local, "PART_MODULE", "fakechunk_{n}")
    monkeypatch.setattr(local, "PART_COUNT", 2)
    assert local.find_parts() == [tmp_path / "fakechunk_1/data/part01.bin", tmp_path / "fakechunk_2/data/part02.bin"]
    monkeypatch.setattr(local, "PART_COUNT", 3)
    with pytest.raises(BackendUnavailable, match="fakechunk_3"):
        local.find_parts()


TOOLS = [
    ToolSpec("log_tail", "The last lines of the gateway's log.", {"type": "object", "properties": {}}),
    ToolSpec(
        "stop_stale_gateway",
        "Stop a stale gateway process.",
        {"type": "object", "properties": {"pid": {"type": "integer", "title": "Pid"}}, "required": ["pid"]},
    ),
]


def test_choice_schema_has_one_branch_per_tool_with_its_arguments() -> None:
    schema = choice_schema(TOOLS, thought_max_chars=50)
    branches = schema["anyOf"]
    assert [b["properties"]["tool"] for b in branches] == [{"const": "log_tail"}, {"const": "stop_stale_gateway"}]
    assert list(branches[0]["properties"]) == ["thought", "tool", "arguments"]  # thought first: reason, then choose
    assert branches[0]["properties"]["thought"]["maxLength"] == 50
    assert branches[1]["properties"]["arguments"]["required"] == ["pid"]
    assert branches[1]["properties"]["arguments"]["additionalProperties"] is False
    assert "thought" not in choice_schema(TOOLS, thought_max_chars=0)["anyOf"][0]["properties"]


def test_choice_schema_inlines_refs() -> None:
    params = {
        "$defs": {"Sig": {"type": "string", "enum": ["TERM", "KILL"]}},
        "type": "object",
        "properties": {"signal": {"$ref": "#/$defs/Sig"}},
    }
    args = choice_schema([ToolSpec("signal", "d", params)])["anyOf"][0]["properties"]["arguments"]
    assert args["properties"]["signal"] == {"type": "string", "enum": ["TERM", "KILL"]}
    assert "$defs" not in json.dumps(args)


def test_to_chat_renders_tool_calls_and_results_for_a_plain_template() -> None:
    transcript: list[Message] = [
        {"role": "system", "content": "You are the doctor."},
        {"role": "user", "content": "Evidence: exit 78"},
        {
            "role": "assistant",
            "content": "look at the log",
            "tool_calls": [{"id": "1", "name": "log_tail", "arguments": {}}],
        },
        {"role": "tool", "tool_call_id": "1", "name": "log_tail", "content": "JSON5: invalid at line 3"},
    ]
    chat = to_chat(transcript, TOOLS, final=False)
    assert [m["role"] for m in chat] == ["system", "user", "assistant", "user"]
    assert "- stop_stale_gateway: Stop a stale gateway process. Arguments: pid: integer." in chat[0]["content"]
    assert chat[3]["content"].endswith(local._NEXT_RULE)  # the rule last, where a small model heeds it
    assert json.loads(chat[2]["content"]) == {"thought": "look at the log", "tool": "log_tail", "arguments": {}}
    assert chat[3]["content"].startswith("Result of tool log_tail:\nJSON5: invalid")
    final = to_chat(transcript, TOOLS, final=True)
    assert final[0] == chat[0]  # same system prompt on the last step: the cached prefix is reused
    assert final[-1]["role"] == "user" and '"conclusion"' in final[-1]["content"]


def _answer(content: str, finish: str = "stop") -> dict[str, object]:
    return {
        "choices": [{"message": {"role": "assistant", "content": content}, "finish_reason": finish}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


def test_parse_answer_tool_call_conclusion_and_failures() -> None:
    reply = _parse_answer(
        _answer('{"thought": "stale", "tool": "stop_stale_gateway", "arguments": {"pid": 42}}'), TOOLS, final=False
    )
    assert reply.text == "stale" and reply.usage == {"prompt_tokens": 10, "completion_tokens": 5}
    assert [(c.name, c.arguments) for c in reply.tool_calls] == [("stop_stale_gateway", {"pid": 42})]
    assert _parse_answer(_answer('{"conclusion": "Fixed."}'), [], final=True).text == "Fixed."
    with pytest.raises(BackendFailed, match="max_tokens"):
        _parse_answer(_answer('{"thought": "abc', "length"), TOOLS, final=False)
    with pytest.raises(BackendFailed, match="no offered tool"):
        _parse_answer(_answer('{"tool": "rm_rf", "arguments": {}}'), TOOLS, final=False)
    with pytest.raises(BackendFailed, match="refused the request: bad field"):
        _parse_answer({"error": {"code": 400, "message": "bad field"}}, TOOLS, final=False)
    assert CONCLUSION_SCHEMA["required"] == ["conclusion"]


def test_tools_are_described_in_two_groups_when_remedies_are_marked() -> None:
    tools = [*TOOLS, ToolSpec("restore_known_good", "Put openclaw.json back [remedy, risk: reversible]", {})]
    text = to_chat([{"role": "user", "content": "hi"}], tools, final=False)[0]["content"]
    looks, fixes = text.index("only look"), text.index("Remedies")
    assert looks < text.index("- log_tail") < fixes < text.index("- restore_known_good")


def test_already_called_tool_without_arguments_is_not_offered_again() -> None:
    transcript: list[Message] = [
        {"role": "user", "content": "Evidence"},
        {"role": "assistant", "content": "", "tool_calls": [{"id": "1", "name": "log_tail", "arguments": {}}]},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"id": "2", "name": "stop_stale_gateway", "arguments": {"pid": 1}}],
        },
    ]
    assert [t.name for t in local._not_yet_called(TOOLS, transcript)] == ["stop_stale_gateway"]


def test_conclusion_cut_at_its_cap_ends_at_a_full_sentence() -> None:
    cut = "The config was broken. It was restored. A human should " + "x" * local._CONCLUSION_MAX_CHARS
    assert local._whole_sentences(cut[: local._CONCLUSION_MAX_CHARS]) == "The config was broken. It was restored."
    assert local._whole_sentences(" Short, no period ") == "Short, no period"
