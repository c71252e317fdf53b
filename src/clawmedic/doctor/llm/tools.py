"""What the model may do: the doctor's read-only tools, the declared remedies (through the `Guard`), and `finish`.

Nothing else is offered. A tool environment answers a call with text for the model and, for a remedy, the
`Outcome` as data. `LiveTools` reads the real machine; `RecordedTools` answers from an evaluation case's
recorded outputs and never changes anything (its remedies are checked by the same `Guard`, then only recorded).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from clawmedic.config import LoadedConfig
from clawmedic.doctor.changes import mask_secret_settings, secret_name
from clawmedic.doctor.remedies import REMEDIES, Guard, Outcome, RemedyContext, Status
from clawmedic.doctor.rules import RULES
from clawmedic.process import identity, inspect
from clawmedic.process.launcher import Launcher, tail_lines
from clawmedic.redact import MASK
from clawmedic.targets import openclaw

FINISH = "finish"
# The faults a conclusion may name: the declared rules' ids (doctor/rules.py), or "other".
FAULTS = (*(r.id for r in RULES), "other")
_SECRET_KEYS = ("token", "key", "secret", "password", "passwd", "auth", "credential", "cookie")


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LogTailParams(_Params):
    lines: int = Field(default=40, ge=1, le=200, description="how many of the last lines")


class NoParams(_Params):
    pass


class FinishParams(_Params):
    diagnosis: str = Field(description="the root cause in one or two sentences")
    fault: str = Field(description="which known fault this is: " + ", ".join(FAULTS))
    none_fits: str | None = Field(
        default=None,
        description="only when you ran no remedy: why none of the remedies fits this fault (a human must act)",
    )


@dataclass(frozen=True)
class ReadTool:
    name: str
    description: str
    params: type[BaseModel]


READ_TOOLS: dict[str, ReadTool] = {
    t.name: t
    for t in (
        ReadTool("log_tail", "The gateway's last console output lines and warning/error log events", LogTailParams),
        ReadTool("config_validation", "Validate openclaw.json now (JSON5 parse + OpenClaw's own validator)", NoParams),
        ReadTool("redacted_config", "openclaw.json as it is on disk now, secrets masked", NoParams),
        ReadTool("port_owner", "Which process holds the gateway's port (pid, command line, ours or not)", NoParams),
        ReadTool("process_list", "Gateway and Node processes on this machine (pid, state, command line)", NoParams),
    )
}


@dataclass(frozen=True)
class ToolResult:
    text: str
    outcome: Outcome | None = None  # set for a remedy call


class ToolEnv(Protocol):
    def call(self, name: str, arguments: dict[str, Any]) -> ToolResult: ...


def schema(model: type[BaseModel]) -> dict[str, Any]:
    """A JSON Schema object for the parameters, without pydantic's titles (less noise for small models)."""
    s = model.model_json_schema()
    props = {k: {kk: vv for kk, vv in v.items() if kk != "title"} for k, v in s.get("properties", {}).items()}
    out: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
    if s.get("required"):
        out["required"] = s["required"]
    return out


def outcome_text(o: Outcome) -> str:
    return json.dumps({"remedy": o.remedy, "status": o.status.value, "detail": o.detail})


class LiveTools:
    """The real machine. Every remedy goes through `guard.run`; `read_only` refuses every remedy (diagnose)."""

    def __init__(self, loaded: LoadedConfig, target: str, guard: Guard, ctx: RemedyContext | None, *, read_only: bool):
        self.loaded = loaded
        self.target = target
        self.guard = guard
        self.ctx = ctx
        self.read_only = read_only

    def call(self, name: str, arguments: dict[str, Any]) -> ToolResult:
        if name in REMEDIES:
            if self.read_only or self.ctx is None:
                o = Outcome(name, Status.REFUSED, "this is a read-only diagnosis: remedies are not run", arguments)
                return ToolResult(outcome_text(o), o)
            o = self.guard.run(self.ctx, name, arguments)
            return ToolResult(outcome_text(o), o)
        tool = READ_TOOLS.get(name)
        if tool is None:
            return ToolResult(f"refused: {name!r} is not one of the tools offered")
        try:
            params = tool.params.model_validate(arguments)
        except ValidationError as e:
            return ToolResult(f"refused: bad arguments for {name}: {e.errors()[0]['msg']}")
        text = getattr(self, "_" + name)(params)
        return ToolResult(self.loaded.redactor.text(text))

    def _log_tail(self, p: LogTailParams) -> str:
        launcher = Launcher(self.loaded.state_dir / "targets" / self.target)
        out = tail_lines(launcher.log_path, p.lines)
        cfg = self.loaded.targets[self.target]
        log = tail_lines(cfg.log_file, p.lines * 4) if cfg.log_file else []
        events = [ln for ln in log if '"WARN"' in ln or '"ERROR"' in ln or '"FATAL"' in ln][-p.lines :]
        return "console output:\n" + "\n".join(out) + "\n\nlog events (warn/error):\n" + "\n".join(events)

    def _config_validation(self, _: NoParams) -> str:
        return json.dumps(openclaw.validate(self.loaded, self.target).to_dict())

    def _redacted_config(self, _: NoParams) -> str:
        path = openclaw.config_path(self.loaded.targets[self.target])
        if not path.exists():
            return f"{path} does not exist"
        text = path.read_text(errors="replace")
        try:
            data = openclaw.loads(text)
        except ValueError:
            return f"{path} does not parse as JSON5; its text, secrets masked:\n{mask_secret_settings(text)}"
        return json.dumps(mask_secrets(data), indent=1)

    def _port_owner(self, _: NoParams) -> str:
        port = self.loaded.targets[self.target].port
        owner = inspect.port_owner(port) if port else None
        if owner is None:
            return f"nothing listens on port {port}"
        ours = owner.pid is not None and identity.has_marker(owner.pid, self.loaded.state_dir / "targets" / self.target)
        stale = owner.pid is not None and not ours and identity.is_stale_gateway_of(self.loaded, self.target, owner.pid)
        return json.dumps(
            {"port": port, "pid": owner.pid, "cmdline": owner.cmdline, "ours": ours, "stale_gateway": stale}
        )

    def _process_list(self, _: NoParams) -> str:
        import psutil

        rows = []
        for p in psutil.process_iter(["pid", "name", "status", "cmdline"]):
            cmd = " ".join(p.info.get("cmdline") or [])
            if p.info.get("name") in ("openclaw-gateway", "node") or "openclaw" in cmd:
                rows.append({"pid": p.pid, "name": p.info.get("name"), "status": p.info.get("status"), "cmd": cmd})
        return json.dumps(rows[:40])


class RecordedTools:
    """An evaluation case's recorded world: read-only tools answer from `outputs`; remedies are checked by the
    guard and recorded, never run."""

    def __init__(self, outputs: Mapping[str, str], guard: Guard) -> None:
        self.outputs = outputs
        self.guard = guard

    def call(self, name: str, arguments: dict[str, Any]) -> ToolResult:
        if name in REMEDIES:
            refusal = self.guard.check(name, arguments)
            o = refusal or Outcome(name, Status.OK, "recorded (evaluation): not run", arguments)
            return ToolResult(outcome_text(o), o)
        if name not in READ_TOOLS:
            return ToolResult(f"refused: {name!r} is not one of the tools offered")
        return ToolResult(self.outputs.get(name, "(nothing recorded for this tool)"))


def _secret_key(k: object) -> bool:
    return any(s in str(k).lower() for s in _SECRET_KEYS) or secret_name(str(k))


def mask_secrets(obj: Any) -> Any:
    """Mask the values of keys that name a credential (tokens, API keys, passwords), anywhere in a structure."""
    if isinstance(obj, dict):
        return {k: MASK if _secret_key(k) and not isinstance(v, dict) else mask_secrets(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [mask_secrets(v) for v in obj]
    return obj
