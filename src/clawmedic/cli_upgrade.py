"""`clawmedic upgrade [VERSION] [--dry-run] [--json]` and `clawmedic upgrade --rollback`: the command line of
`targets/openclaw/upgrade.py`. Registered on the main app by importing this module (cli.py does so at its end).

Exit codes: 0 upgraded (or already on that version, or a dry run); 1 the upgrade failed — it was refused before the
switch, or rolled back — and the gateway runs the old version (the reason says which, and when the way back failed
too); 2 bad usage (not a version, an unknown one, an external target, nothing to roll back to); 3 the registry,
npm or the new install is unavailable (nothing was switched); 4 another upgrade of the target is running.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from clawmedic.cli_common import ConfigOpt, JsonOpt, _load, app, err, out


@app.command("upgrade")
def upgrade(
    version: Annotated[
        str | None,
        typer.Argument(help="OpenClaw version to upgrade to (default: the registry's latest).", show_default=False),
    ] = None,
    target: Annotated[
        str | None, typer.Option("--target", "-t", help="Target name (default: the only one).", show_default=False)
    ] = None,
    rollback: Annotated[
        bool, typer.Option("--rollback", help="Go back to the install that ran before the last switch.")
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan; change nothing.")] = False,
    probation: Annotated[
        float | None,
        typer.Option(
            "--probation",
            min=0.0,
            max=3600.0,
            help="Seconds the new version must stay live before the upgrade counts (default 60).",
            show_default=False,
        ),
    ] = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Upgrade a managed OpenClaw gateway without taking it down: install VERSION beside the current install,
    check its dependencies and the current config with it, switch, and roll back by itself if it fails."""
    from clawmedic.sandbox.install import rich_progress
    from clawmedic.targets.openclaw import upgrade as up

    loaded = _load(config)
    name, _ = loaded.target(target)
    ui = err if json_ else out
    if rollback and version is not None:
        raise up.UpgradeRefused("Give either a VERSION or --rollback, not both.")

    def say(message: str) -> None:
        ui.print(f"[dim]·[/] {escape(message)}", highlight=False)

    with rich_progress(ui) as progress:
        ops = up.RealOps(progress=progress, say=say)
        seconds = up.UPGRADE_PROBATION_S if probation is None else probation
        upgrader = up.Upgrader(loaded, name, ops, say=say, probation_s=seconds)
        if rollback:
            report = upgrader.rollback(dry_run=dry_run)
        else:
            # An exact version is checked against the registry only by a dry run: the install step names a missing
            # one, and an install clawmedic already holds (after a rollback) needs no registry at all.
            if version is None or dry_run:
                wanted = up.registry_version(up.check_version(version) if version else "latest")
            else:
                wanted = up.check_version(version)
            report = upgrader.upgrade(wanted, dry_run=dry_run)
    if json_:
        print(json.dumps(report.to_dict(), indent=1))
    else:
        _render(report)
    if report.exit_code:
        raise typer.Exit(report.exit_code)


def _render(report: object) -> None:
    from clawmedic.targets.openclaw.upgrade import Report

    assert isinstance(report, Report)
    title = "rollback" if report.action == "rollback" else "upgrade"
    head = f"{title} of {report.target}: openclaw {report.from_version} → {report.to_version}"
    if report.outcome in ("planned", "already"):
        out.print(f"[bold]{escape(head)}[/] ({escape(report.reason)})", highlight=False)
        for i, line in enumerate(report.plan, 1):
            out.print(f"  {i}. {escape(line)}", highlight=False)
        return
    if report.steps:
        table = Table(title=head, title_justify="left")
        for col in ("step", "ok", "seconds", "detail"):
            table.add_column(col, justify="right" if col == "seconds" else "left")
        for s in report.steps:
            table.add_row(s.name, "yes" if s.ok else "[red]no[/]", f"{s.seconds:.1f}", escape(s.detail))
        out.print(table)
    colour = "green" if report.ok else "red"
    out.print(f"[{colour}]{escape(report.outcome.replace('_', ' '))}[/]: {escape(report.reason)}", highlight=False)
    if report.running_version:
        out.print(f"the gateway reports openclaw {escape(report.running_version)}", highlight=False)
