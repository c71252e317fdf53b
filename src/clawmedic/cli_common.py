"""What every `clawmedic` command module shares: the Typer app, the consoles, the common options, loading the
config and reading the daemon's status. Command modules (`cli.py`, `cli_ops.py`) import from here and never from
each other, so the command line has no import cycle."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from typer.core import TyperOption

from clawmedic import control
from clawmedic.config import LoadedConfig, load_config
from clawmedic.store.lock import holder_pid

app = typer.Typer(
    help="clawmedic keeps a self-hosted OpenClaw gateway alive from the outside, and explains what broke.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish and PowerShell
    pretty_exceptions_enable=False,
)


def _type_column(param: TyperOption, ctx: Any) -> str | None:
    """The help's type column: nothing for a flag (Typer prints `<bool>` beside `--json`, `--help`…), the value's
    type for every other option."""
    return None if param.is_flag else _typer_type_column(param, ctx)


_typer_type_column = TyperOption.display_type_rich
TyperOption.display_type_rich = _type_column  # type: ignore[method-assign, assignment]


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        Console().print(f"clawmedic {version('clawmedic')}", highlight=False)
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", help="Print clawmedic's version and exit.", callback=_version, is_eager=True),
    ] = False,
) -> None:
    """clawmedic keeps a self-hosted OpenClaw gateway alive from the outside, and explains what broke."""


out = Console()
err = Console(stderr=True, soft_wrap=True)  # an error is one line, never wrapped at 80 columns

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="clawmedic config file (default: $CLAWMEDIC_CONFIG or the platform's "
        "config folder, e.g. ~/.config/clawmedic/config.toml).",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")]
TargetArg = Annotated[str | None, typer.Argument(help="Target name (default: every target).", show_default=False)]


def _load(config: Path | None) -> LoadedConfig:
    return load_config(config)


def read_status(loaded: LoadedConfig) -> dict[str, Any]:
    from clawmedic.paths import status_path

    try:
        data: dict[str, Any] = json.loads(status_path(loaded.state_dir).read_text())
    except (OSError, ValueError):
        data = {"daemon": {}, "targets": {}}
    pid = holder_pid(loaded.state_dir)
    data.setdefault("daemon", {})["running"] = pid is not None
    data["daemon"]["pid"] = pid
    ctl = control.read_control(loaded.state_dir)
    for name in loaded.targets:
        t = data.setdefault("targets", {}).setdefault(name, {"state": "unknown"})
        t["paused"] = name in ctl.paused
        if t["paused"] and name in ctl.paused_until:
            t["paused_until"] = ctl.paused_until[name]  # `pause --for`: the daemon resumes it then
    return data
