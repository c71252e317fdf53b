"""What every `clawmedic` command module shares: the Typer app, the consoles, the common options, loading the
config and reading the daemon's status. Command modules (`cli.py`, `cli_ops.py`) import from here and never from
each other, so the command line has no import cycle."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from clawmedic import control
from clawmedic.config import LoadedConfig, load_config
from clawmedic.store.lock import holder_pid

app = typer.Typer(
    help="clawmedic keeps a self-hosted OpenClaw gateway alive from the outside, and explains what broke.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
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
    return data
