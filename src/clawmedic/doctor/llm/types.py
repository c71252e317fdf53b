"""What every backend speaks: a neutral chat transcript in, a reply (text and/or tool calls) out.

Messages are plain dicts in one neutral shape, converted by each backend to its wire format:

- ``{"role": "system" | "user", "content": str}``
- ``{"role": "assistant", "content": str, "tool_calls": [{"id": str, "name": str, "arguments": dict}]}``
- ``{"role": "tool", "tool_call_id": str, "name": str, "content": str}``
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from clawmedic.errors import ClawmedicError

Message = dict[str, Any]


@dataclass(frozen=True)
class ToolSpec:
    """A tool offered to the model: its name, what it does, and its parameters as a JSON Schema object."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]


@dataclass
class Reply:
    """One model turn: free text (the conclusion, on the last step) and/or the tools it wants called."""

    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    usage: dict[str, int] = field(default_factory=dict)  # prompt/completion tokens when the backend says


class Backend(Protocol):
    name: str  # for the incident and the report, e.g. "openai:gpt-4o-mini" or "local:qwen2.5-coder-1.5b"

    def complete(self, messages: list[Message], tools: list[ToolSpec], *, timeout_s: float) -> Reply:
        """One decision. `tools` empty: the model must answer in text (the last step). Raises `BackendFailed`."""
        ...


class BackendUnavailable(ClawmedicError):
    """The configured backend cannot be used at all (no key, missing extra, model file with the wrong hash)."""


class BackendFailed(ClawmedicError):
    """One request failed (unreachable endpoint, timeout, malformed answer); the incident escalates to humans."""
