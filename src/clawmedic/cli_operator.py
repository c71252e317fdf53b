"""The operator's commands at 3 a.m.: `pause [--for 30m]`, `resume`, `logs TARGET [-f] [-n N]`.

Registered on the main `clawmedic` app by importing this module (cli.py does so at its end).

Exit codes, as everywhere: 0 ok; 2 bad config or usage (an unknown target, a duration that is not one).
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Annotated

import typer

from clawmedic import control, paths
from clawmedic.cli_common import ConfigOpt, TargetArg, _load, app, err, out
from clawmedic.errors import ConfigInvalid
from clawmedic.store.lock import holder_pid

_NO_DAEMON = (
    "no clawmedic daemon is running for this config: {what} is recorded and takes effect when `clawmedic run` starts"
)


@app.command()
def pause(
    target: TargetArg = None,
    config: ConfigOpt = None,
    for_: Annotated[
        str | None,
        typer.Option(
            "--for",
            help="Maintenance that ends by itself after this long (30m, 2h, 1d); without it, until `clawmedic resume`.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Maintenance mode: keep observing TARGET but take no action until `clawmedic resume` (or for a while: --for)."""
    from clawmedic.stats import parse_since

    until = None
    if for_ is not None:
        try:
            until = time.time() + parse_since(for_)
        except ValueError:
            raise ConfigInvalid(f"--for {for_!r} is not a duration such as 30m, 2h or 1d.") from None
    loaded = _load(config)
    names = loaded.selected(target)
    control.pause(paths.ensure_private_dir(loaded.state_dir), names, until=until)
    ends = "until `clawmedic resume`"
    if until is not None:
        ends = f"until {dt.datetime.fromtimestamp(until).strftime('%Y-%m-%d %H:%M:%S')}, then resumed by itself"
    out.print(f"paused: {', '.join(names)} {ends} (the daemon observes but will not act)", highlight=False)
    if holder_pid(loaded.state_dir) is None:
        err.print(_NO_DAEMON.format(what="the pause") + ".", highlight=False)


@app.command()
def resume(target: TargetArg = None, config: ConfigOpt = None) -> None:
    """Leave maintenance mode, or retry a target that gave up (past failures are forgotten)."""
    loaded = _load(config)
    names = loaded.selected(target)
    control.resume(paths.ensure_private_dir(loaded.state_dir), names)
    out.print(f"resumed: {', '.join(names)}")
    if holder_pid(loaded.state_dir) is None:
        err.print(_NO_DAEMON.format(what="the resume") + ".", highlight=False)


@app.command()
def logs(
    target: Annotated[
        str | None, typer.Argument(help="Target name (default: the only one).", show_default=False)
    ] = None,
    config: ConfigOpt = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines until Ctrl-C.")] = False,
    lines: Annotated[int, typer.Option("--lines", "-n", help="How many lines to show first.", min=0, max=100_000)] = 50,
) -> None:
    """The target's output and clawmedic's lines about it, interleaved by time, secrets redacted."""
    from clawmedic import target_logs

    loaded = _load(config)
    name, _ = loaded.target(target)
    srcs, first = target_logs.last(loaded, name, lines)
    for ln in first:
        out.print(ln.render(), highlight=False, markup=False, soft_wrap=True)
    if not first and not follow:
        err.print(
            f"no lines yet for {name}: " + ", ".join(str(s.path) for s in srcs) + " are empty or absent.",
            highlight=False,
        )
    if follow:
        try:
            for ln in target_logs.follow(loaded, name, srcs, sleep=time.sleep):
                out.print(ln.render(), highlight=False, markup=False, soft_wrap=True)
        except KeyboardInterrupt:
            return
