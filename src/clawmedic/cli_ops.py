"""Commands that keep clawmedic itself running and tell humans: `guardian`, `install`, `uninstall`, `notify test`;
and `plugins_for`, the daemon plugins (notifier, heartbeat) a config asks for.

Registered on the main `clawmedic` app by importing this module (cli.py does so at its end).

Exit codes, as everywhere: 0 ok; 1 the job failed (the daemon could not be restarted, a message was not delivered,
a unit could not be written); 2 bad config or usage; 3 something outside clawmedic is missing.
"""

from __future__ import annotations

import json
import logging
import shlex
import socket
import time
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from clawmedic import defaults
from clawmedic.cli_common import ConfigOpt, JsonOpt, _load, app, err, out, read_status
from clawmedic.config import LoadedConfig
from clawmedic.errors import ConfigInvalid

if TYPE_CHECKING:
    from clawmedic.daemon import DaemonPlugin
    from clawmedic.install_units import Platform


def plugins_for(loaded: LoadedConfig) -> list[DaemonPlugin]:
    """The daemon plugins this config asks for: the notifier (`[daemon.notify]` or any `[targets.X.notify]` URL),
    the heartbeat (`[daemon.heartbeat] url`), GitHub issues (`[daemon.github]`, its token in the environment; a
    section that cannot work is logged as one warning) and the HTTP server (`[daemon.http]`, on by default).
    Raises `ConfigInvalid` for a URL Apprise does not understand, or an outside HTTP address without a token."""
    from clawmedic import github_issues, heartbeat, notify

    plugins: list[DaemonPlugin] = []
    if (notifier := notify.plugin_for(loaded)) is not None:
        plugins.append(notifier)
    if (beat := heartbeat.plugin_for(loaded)) is not None:
        plugins.append(beat)
    from clawmedic.doctor import gateway_checks

    if (check := gateway_checks.plugin_for(loaded)) is not None:
        plugins.append(check)  # heals faults that leave the gateway up (cron jobs, channels, model pins)
    from clawmedic.doctor import conversation

    if (talk := conversation.plugin_for(loaded, check.wake if check is not None else None)) is not None:
        plugins.append(talk)  # `[targets.NAME.conversation]`: can the agent answer at all?
    issues, why_off = github_issues.plugin_for(loaded)
    if issues is not None:
        plugins.append(issues)
    elif why_off:
        logging.getLogger("clawmedic.github").warning(why_off)
    from clawmedic.web.server import plugin_for as http_plugin_for

    if (http := http_plugin_for(loaded)) is not None:
        plugins.append(http)  # the status page and /metrics; refuses an outside address without a token (exit 2)
    return plugins


# --- guardian -----------------------------------------------------------------------------------------------------


@app.command()
def guardian(
    config: ConfigOpt = None,
    json_: JsonOpt = False,
    stale_after: Annotated[
        float | None,
        typer.Option(
            help="Seconds without a heartbeat before a running daemon counts as hung (default: config).",
            show_default=False,
        ),
    ] = None,
    wait: Annotated[
        float | None,
        typer.Option(
            help="Seconds to wait for a restarted daemon's first heartbeat (default: config).", show_default=False
        ),
    ] = None,
    restart_command: Annotated[
        str | None,
        typer.Option(
            help="Restart through a service manager instead of starting `clawmedic run` detached, e.g. "
            '"systemctl --user restart clawmedic.service" (split like a shell would; not run by a shell).',
            show_default=False,
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="Print nothing when the daemon is fine.")] = False,
) -> None:
    """Check the daemon's heartbeat and process; restart it when it is dead or hung, alert humans when it cannot.

    Run by the OS every minute (see `clawmedic install`). Exit 0: the daemon runs (now); 1: it could not be
    restarted (an alert was sent or queued); 2: bad config."""
    from clawmedic.guardian import guard

    loaded = _load(config)
    if stale_after is not None and stale_after < 10:
        raise ConfigInvalid("--stale-after must be at least 10 s: the daemon refreshes its heartbeat every 5 s.")
    command = shlex.split(restart_command) if restart_command else None
    report = guard(loaded, stale_after_s=stale_after, start_wait_s=wait, restart_command=command)
    if json_:
        out.print_json(json.dumps(report.to_dict(), default=str))
    elif report.action == "restarted":
        out.print(f"daemon was {report.before.state} ({report.before.detail}): restarted as pid {report.new_pid}")
    elif report.action == "failed":
        delivered = sum(1 for a in report.alerted if a.get("delivered"))
        queued = sum(1 for a in report.alerted if a.get("queued"))
        err.print(
            f"[red]the clawmedic daemon is {report.before.state} and could not be restarted:[/] {report.detail}. "
            + (
                f"Alerted {delivered} destination(s)" + (f", queued {queued}" if queued else "") + "."
                if report.alerted
                else "No notification URL is configured ([daemon.notify] urls): nobody was told."
            ),
            highlight=False,
        )
    elif not quiet:
        out.print(f"daemon {report.before.state}: {report.detail}", highlight=False)
    if not report.ok:
        raise typer.Exit(defaults.EXIT_FAILURE)


# --- install / uninstall -------------------------------------------------------------------------------------------

DryRun = Annotated[bool, typer.Option("--dry-run", help="Print what would be done; change nothing.")]


def _print_report(report: object, json_: bool, show_files: bool) -> None:
    from clawmedic.install_units import Report

    assert isinstance(report, Report)
    if json_:
        out.print_json(json.dumps(report.to_dict(), default=str))
        return
    head = f"platform: {report.platform}" + (" (dry run: nothing is changed)" if report.dry_run else "")
    out.print(head, highlight=False, soft_wrap=True)
    colours = {"skip": "yellow", "move-aside": "yellow", "note": "dim"}
    for s in report.steps:
        colour = "red" if not s.ok else colours.get(s.action, "green" if s.done else "cyan")
        out.print(f"[{colour}]{s.action:>10}[/]  {escape(s.detail)}", highlight=False, soft_wrap=True)
    if show_files:
        for f in report.files:
            out.print(f"\n[bold]--- {escape(str(f.path))}[/]", highlight=False, soft_wrap=True)
            out.file.write(f.content)  # verbatim: a unit file must not be wrapped or marked up
            out.file.flush()
    for n in report.notes:
        out.print(f"[dim]note:[/] {escape(n)}", highlight=False, soft_wrap=True)
    if report.manifest is not None:
        out.print(
            f"[dim]recorded in {escape(str(report.manifest))} (what `clawmedic uninstall` removes)[/]",
            highlight=False,
            soft_wrap=True,
        )


@app.command()
def install(
    config: ConfigOpt = None,
    dry_run: DryRun = False,
    with_gateway: Annotated[
        bool,
        typer.Option(
            "--with-gateway",
            help="Also start the gateway with the OS, through `clawmedic safe-start` (the target must be "
            'start.mode = "external").',
        ),
    ] = False,
    target: Annotated[
        str | None,
        typer.Option("--target", "-t", help="The gateway target (default: the only one).", show_default=False),
    ] = None,
    json_: JsonOpt = False,
    platform: Annotated[
        str, typer.Option("--platform", hidden=True, help="auto, systemd, launchd (macos) or cron.")
    ] = "auto",
) -> None:
    """Start clawmedic with the OS: systemd user units (Linux), launchd agents (macOS) or a crontab block (Linux
    without systemd) — the daemon restarted always, the guardian every minute. Prints what it does."""
    from clawmedic import install_units as iu
    from clawmedic.store.lock import holder_pid

    loaded = _load(config)
    chosen = _platform(platform)
    plan = iu.build_plan(loaded, chosen, with_gateway=with_gateway, target=target)
    running = holder_pid(loaded.state_dir)
    if running is not None and chosen != "cron":
        plan.notes.append(
            f"a clawmedic daemon already runs (pid {running}) outside the service: stop it, and the service takes over."
        )
    report = iu.install(loaded, plan, dry_run=dry_run)
    _print_report(report, json_, show_files=dry_run)
    if not report.ok:
        raise typer.Exit(defaults.EXIT_FAILURE)


def _platform(name: str) -> Platform:
    from clawmedic import install_units as iu

    if name == "auto":
        return iu.detect_platform()
    aliases: dict[str, Platform] = {"systemd": "systemd", "launchd": "launchd", "macos": "launchd", "cron": "cron"}
    if name not in aliases:
        raise ConfigInvalid(f"--platform must be auto, systemd, launchd (macos) or cron, not {name!r}.")
    return aliases[name]


@app.command()
def uninstall(config: ConfigOpt = None, dry_run: DryRun = False, json_: JsonOpt = False) -> None:
    """Stop and remove exactly what `clawmedic install` wrote (recorded in its manifest in the state folder).

    Files install generated and nobody changed since are removed; a file edited after install is moved aside; a file
    install had moved aside is put back."""
    from clawmedic import install_units as iu

    loaded = _load(config)
    report = iu.uninstall(loaded, dry_run=dry_run)
    _print_report(report, json_, show_files=False)
    if not report.ok:
        raise typer.Exit(defaults.EXIT_FAILURE)


# --- notify test ----------------------------------------------------------------------------------------------------

notify_app = typer.Typer(help="Notifications (tier 4): test the configured Apprise URLs.", no_args_is_help=True)
app.add_typer(notify_app, name="notify")


@notify_app.command("test")
def notify_test(
    config: ConfigOpt = None,
    target: Annotated[
        str | None,
        typer.Option("--target", "-t", help="Only this target's destinations (default: all).", show_default=False),
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Send a test message to every configured notification URL, now, and say which ones received it."""
    from clawmedic import notify

    loaded = _load(config)
    if target is not None:
        loaded.target(target)
    if not notify.destinations(loaded):
        raise ConfigInvalid(
            f'{loaded.source}: daemon.notify.urls is empty: add an Apprise URL (e.g. "ntfy://my-topic") to test.'
        )
    notify.check_urls(loaded)
    status = read_status(loaded)
    states = ", ".join(f"{n}: {t.get('state', 'unknown')}" for n, t in status.get("targets", {}).items())
    daemon = status.get("daemon", {})
    body = "\n".join(
        [
            f"This is a test message from clawmedic on {socket.gethostname()}, "
            f"sent {time.strftime('%Y-%m-%d %H:%M:%S')}.",
            f"config: {loaded.source}",
            f"daemon: {'running (pid ' + str(daemon.get('pid')) + ')' if daemon.get('running') else 'not running'}",
            f"targets: {states or '—'}",
            "If you read this, clawmedic can reach you when a gateway needs a human.",
        ]
    )
    results = notify.send_now(loaded, "clawmedic: test message", body, severity=None, target=target)
    if json_:
        out.print_json(json.dumps([r.__dict__ for r in results]))
    else:
        table = Table("destination", "where", "delivered", "error")
        for r in results:
            table.add_row(r.key, r.where, "[green]yes[/]" if r.delivered else "[red]no[/]", r.error)
        out.print(table)
    if not all(r.delivered for r in results):
        raise typer.Exit(defaults.EXIT_FAILURE)
