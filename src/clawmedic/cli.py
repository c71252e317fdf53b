"""The `clawmedic` command (Typer + Rich). Every user error is one sentence and a documented exit code.

Exit codes: 0 ok; 1 the job failed (a fault was not healed, a target is down); 2 bad config or usage;
3 something outside clawmedic is missing (binary, download, sandbox); 4 another daemon holds the lock.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from clawmedic import control, defaults, paths
from clawmedic.cli_common import ConfigOpt, JsonOpt, TargetArg, _load, app, err, out, read_status
from clawmedic.config import LoadedConfig, check_commands, load_config, make_state_dir
from clawmedic.errors import ClawmedicError, ConfigInvalid, EnvironmentMissing
from clawmedic.store.files import atomic_write, move_aside

__all__ = ["app", "main"]  # the app (commands registered) and the entry point

sandbox_app = typer.Typer(
    help="Install and run an isolated, real OpenClaw gateway to supervise and break.", no_args_is_help=True
)
app.add_typer(sandbox_app, name="sandbox")


def _fmt_time(ts: float | None) -> str:
    return "—" if ts is None else dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _fmt_s(s: float | None) -> str:
    return "—" if s is None else f"{s:.2f} s"


def _state_label(t: dict[str, Any], now: float | None = None) -> str:
    """A target's state in words: "gave up; next try in 7 min" while the slow retry is scheduled."""
    state = str(t.get("state", "unknown"))
    if state == "gave_up":
        at = t.get("next_retry_at")
        if not isinstance(at, int | float):
            return "gave up; waiting for a human (clawmedic resume)"
        left = max(0.0, at - (time.time() if now is None else now))
        return f"gave up; next try in {_fmt_wait(left)}"
    if state == "retrying":
        return "gave up; trying again now"
    if state == "maintenance" and isinstance(until := t.get("paused_until"), int | float):
        return f"maintenance until {dt.datetime.fromtimestamp(until).strftime('%H:%M:%S')}"  # `pause --for`
    return state


def _fmt_wait(s: float) -> str:
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{round(s / 60)} min"
    return f"{s / 3600:.1f} h"


# --- run -----------------------------------------------------------------------------------------------


@app.command()
def run(
    config: ConfigOpt = None,
    json_logs: Annotated[bool, typer.Option("--json-logs", help="Log one JSON object a line on stderr.")] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Observe, diagnose and decide, but change nothing: every restart, restore, remedy and "
            'notification is recorded as "would" (events, incidents, status) instead of being done.',
        ),
    ] = False,
) -> None:
    """Run the daemon in the foreground: supervise every target of the config until SIGTERM or Ctrl-C."""
    from clawmedic.cli_ops import plugins_for
    from clawmedic.daemon import Daemon
    from clawmedic.logfiles import setup_file_logging
    from clawmedic.logs import setup_logging

    loaded = _load(config)
    loaded.dry_run = dry_run  # honoured at the seams (dryrun.py): launcher, Guard, notifier
    check_commands(loaded)  # a missing cwd (exit 2) or program (exit 3) is refused before anything starts
    make_state_dir(loaded)
    setup_logging(loaded.config.daemon.log_level, json_logs, loaded.redactor)
    plugins = plugins_for(loaded)  # a URL Apprise rejects is a config error (exit 2) before anything starts
    setup_file_logging(loaded)

    async def main() -> None:
        daemon = Daemon(loaded, plugins=plugins)
        for plugin in plugins:
            if (attach := getattr(plugin, "attach", None)) is not None:
                attach(daemon)  # the HTTP server reads the live supervisors
        await daemon.run()

    import asyncio  # here, not at the top: `status` and the other quick commands never need it

    asyncio.run(main())


# --- status ------------------------------------------------------------------------------------------------


UP_STATES = frozenset({"healthy", "probation", "maintenance"})  # `status` exits 0 only if every target is in one


def status_summary(data: dict[str, Any]) -> tuple[bool, str]:
    """(all well, one line): all well means the daemon runs and every target shown is healthy, on probation after a
    restart, or paused by a human. The line names the targets that are not."""
    d = data["daemon"]
    targets: dict[str, dict[str, Any]] = data["targets"]
    down = {n: str(t.get("state", "unknown")) for n, t in targets.items() if t.get("state") not in UP_STATES}
    counts: dict[str, int] = {}
    for t in targets.values():
        state = str(t.get("state", "unknown"))
        counts[state] = counts.get(state, 0) + 1
    states = ", ".join(f"{n} {s.replace('_', ' ')}" for s, n in sorted(counts.items(), key=lambda x: -x[1]))
    noun = "target" if len(targets) == 1 else "targets"
    if not d.get("running"):
        return False, f"NOT OK: the daemon is not running; {len(targets)} {noun} unsupervised (last known: {states})"
    if down:
        named = ", ".join(f"{n} {s.replace('_', ' ')}" for n, s in down.items())
        return False, f"NOT OK: {len(down)} of {len(targets)} {noun} not healthy ({named})"
    return True, f"OK: {len(targets)} {noun} {states}"


@app.command()
def status(target: TargetArg = None, config: ConfigOpt = None, json_: JsonOpt = False) -> None:
    """Show each target's state, health and current incident (read from the daemon's status file): a one-line summary,
    then the table. Exit 0 if the daemon runs and every target (or TARGET) is healthy, on probation or paused; exit 1
    if any is down, escalated or gave up, or the daemon is not running."""
    loaded = _load(config)
    data = read_status(loaded)
    if target is not None:
        name = loaded.target(target)[0]  # an unknown target: one sentence, exit 2
        data["targets"] = {name: data["targets"].get(name, {"state": "unknown"})}
    ok, summary = status_summary(data)
    code = defaults.EXIT_OK if ok else defaults.EXIT_FAILURE
    if json_:
        data["summary"] = {"ok": ok, "line": summary, "exit": code}
        out.print_json(json.dumps(data, default=str))
        raise typer.Exit(code)
    out.print(f"[{'green' if ok else 'red'}]{escape(summary)}[/]", highlight=False)
    d = data["daemon"]
    if d.get("running"):
        out.print(f"daemon: [green]running[/] (pid {d['pid']}), status updated {_fmt_time(d.get('updated_at'))}")
    else:
        out.print(
            "daemon: [red]not running[/] — start it with `clawmedic run`"
            + (f" (last status {_fmt_time(d.get('updated_at'))})" if d.get("updated_at") else "")
        )
    if d.get("dry_run") and d.get("running"):
        out.print("[yellow]dry run[/]: it decides but changes nothing; see the 'would' events and incident entries")
    if isinstance(reload := d.get("reload"), dict):  # the last config reload: what changed, or why it was refused
        colour = "green" if reload.get("ok") else "red"
        said = escape(str(reload.get("message", "")))
        out.print(f"config reload at {_fmt_time(reload.get('at'))}: [{colour}]{said}[/]", highlight=False)
    table = Table("target", "state", "pid", "live", "ready", "restarts", "incident", "since")
    for name, t in data["targets"].items():
        state = t.get("state", "unknown")
        colour = {"healthy": "green", "probation": "cyan", "starting": "cyan", "maintenance": "yellow"}.get(
            state, "red"
        )
        ready = t.get("ready")
        table.add_row(
            name,
            f"[{colour}]{_state_label(t)}[/]" + (" (paused)" if t.get("paused") and state != "maintenance" else ""),
            str(t.get("pid") or "—"),
            {True: "yes", False: "[red]no[/]", None: "—"}[t.get("live")],
            {True: "yes", False: f"[yellow]no[/] {t.get('ready_failing') or ''}", None: "—"}[ready],
            str(t.get("restarts", 0)),
            f"#{t['incident']}" if t.get("incident") else "—",
            _fmt_time(t.get("since")),
        )
    out.print(table)
    raise typer.Exit(code)


# --- incidents -------------------------------------------------------------------------------------------------

incidents_app = typer.Typer(help="List incidents, or show one with its timeline.", invoke_without_command=True)
app.add_typer(incidents_app, name="incidents")


@incidents_app.callback()
def incidents_list(
    ctx: typer.Context,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
    limit: Annotated[int, typer.Option(help="How many, newest first.", min=1, max=2**63 - 1)] = 20,
) -> None:
    """List incidents, newest first (`clawmedic incidents show ID` for one)."""
    if ctx.invoked_subcommand is not None:
        ctx.obj = config
        return
    from clawmedic.paths import incidents_path
    from clawmedic.store.incidents import IncidentStore

    loaded = _load(config)
    store = IncidentStore(incidents_path(paths.ensure_private_dir(loaded.state_dir)), loaded.redactor)
    items = store.list(limit)
    if json_:
        out.print_json(json.dumps([i.to_dict() for i in items], default=str))
        return
    if not items:
        out.print("No incidents recorded.")
        return
    table = Table("id", "target", "status", "opened", "recovered in", "restarts", "reason")
    for i in items:
        table.add_row(
            f"#{i.id}",
            i.target,
            i.status,
            _fmt_time(i.detected_at),
            _fmt_s(i.time_to_recover_s),
            str(i.restarts),
            i.reason[:80],
        )
    out.print(table)


@incidents_app.command("show")
def incidents_show(
    ctx: typer.Context,
    incident_id: Annotated[int, typer.Argument(help="Incident number.", min=1, max=2**63 - 1)],
    config: ConfigOpt = None,
    json_: JsonOpt = False,
    report: Annotated[bool, typer.Option("--report", help="Render the recovery report.")] = False,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print the recovery report as raw Markdown.")] = False,
) -> None:
    """Show one incident with its timeline of probes, actions, outcomes and durations (--report for the
    recovery report: symptom, evidence, diagnosis, actions, verdict, advice)."""
    from clawmedic.paths import incidents_path
    from clawmedic.store.incidents import IncidentStore

    loaded = _load(config or ctx.obj)
    store = IncidentStore(incidents_path(paths.ensure_private_dir(loaded.state_dir)), loaded.redactor)
    inc = store.get(incident_id)
    if inc is None:
        raise ConfigInvalid(f"There is no incident #{incident_id} in {loaded.state_dir}.")
    if json_:
        out.print_json(json.dumps(inc.to_dict(), default=str))
        return
    if markdown or report:
        from rich.markdown import Markdown

        from clawmedic.doctor.report import render

        text = render(inc)
        if markdown:
            print(text)
        else:
            out.print(Markdown(text))
        return
    out.print(f"[bold]Incident #{inc.id}[/] — {inc.target} — [bold]{inc.status}[/]")
    out.print(f"reason: {inc.reason}")
    out.print(
        f"first failure {_fmt_time(inc.first_failure_at)}, detected {_fmt_time(inc.detected_at)}, "
        f"live again {_fmt_time(inc.live_at)} ({_fmt_s(inc.time_to_recover_s)}), closed {_fmt_time(inc.closed_at)}"
    )
    table = Table("+s", "event", "detail", "took")
    for e in inc.timeline:
        detail = e.detail.copy()
        tail = detail.pop("output_tail", None)
        text = ", ".join(f"{k}={v}" for k, v in detail.items())
        if tail:
            text += "\n" + "\n".join(str(x)[:160] for x in tail[-5:])
        table.add_row(f"{e.ts - inc.first_failure_at:+.2f}", e.kind, text, _fmt_s(e.duration_s))
    out.print(table)


# --- stats ---------------------------------------------------------------------------------------------------------


@app.command()
def stats(
    config: ConfigOpt = None,
    since: Annotated[str, typer.Option("--since", help="How far back: 30m, 12h, 7d, 2w.")] = "7d",
    json_: JsonOpt = False,
) -> None:
    """Incidents, time to recover (median and p90), uptime % per target, the tier that healed each incident and the
    top root causes, over the last --since (default 7d)."""
    import time

    from clawmedic import stats as st
    from clawmedic.paths import events_path, incidents_path
    from clawmedic.store.incidents import IncidentStore

    try:
        window = st.parse_since(since)
    except ValueError as e:
        raise ConfigInvalid(f"{e}.") from None
    loaded = _load(config)
    now = time.time()
    store = IncidentStore(incidents_path(paths.ensure_private_dir(loaded.state_dir)), loaded.redactor)
    try:
        result = st.gather(store, events_path(loaded.state_dir), now - window, now)
    finally:
        store.close()
    if json_:
        out.print_json(json.dumps(result.to_dict(), default=str))
        return
    out.print(
        f"Since {_fmt_time(result.since)}: {result.incidents} incident(s); time to recover median "
        f"{_fmt_s(result.mttr_median_s)}, p90 {_fmt_s(result.mttr_p90_s)}",
        highlight=False,
    )
    table = Table("target", "uptime", "watched", "incidents", "recover median", "p90")
    for name, t in result.targets.items():
        up = "—" if t.uptime_pct is None else f"{t.uptime_pct:.2f} %"
        watched = st.duration(t.watched_s)
        table.add_row(name, up, watched, str(t.incidents), _fmt_s(t.mttr_median_s), _fmt_s(t.mttr_p90_s))
    out.print(table)
    healed = ", ".join(f"{tier} {n}" for tier, n in result.healed_by.items() if n)
    out.print(f"Healed by: {healed or '—'}", highlight=False)
    for cause, n in result.top_causes:
        out.print(f"  {n} × {cause}", highlight=False, markup=False)


@app.command("reload")
def reload_config(config: ConfigOpt = None) -> None:
    """Make the running daemon read its config again (as SIGHUP does); waits for its answer. An invalid config is
    refused and the daemon keeps running the previous one (exit 2)."""
    from clawmedic.store.lock import holder_pid

    problem: ConfigInvalid | None = None
    try:
        state_dir: Path | None = _load(config).state_dir
    except ConfigInvalid as e:
        problem = e
        state_dir = _state_dir_of(config)  # the daemon still runs the old config: it should hear about this one
    if state_dir is None or holder_pid(state_dir) is None:
        if problem is not None:
            raise problem
        raise ClawmedicError("No clawmedic daemon runs for this config; `clawmedic run` reads it when it starts.")
    seq = control.request_reload(state_dir)
    deadline = time.monotonic() + defaults.CONTROL_ACK_TIMEOUT_S
    while (acks := control.read_acks(state_dir)) is None or acks.reload_seq < seq:
        if time.monotonic() > deadline:
            raise ClawmedicError(
                f"The clawmedic daemon (pid {holder_pid(state_dir)}) did not take the reload request within "
                f"{defaults.CONTROL_ACK_TIMEOUT_S:g} s: it may be hung (see `clawmedic status`)."
            )
        time.sleep(0.1)
    if not acks.reload_ok:
        raise ConfigInvalid(acks.reload_message)
    out.print(acks.reload_message, highlight=False, markup=False)


def _state_dir_of(config: Path | None) -> Path | None:
    """The state folder of the daemon running `config`, read leniently from a config that does not validate: its
    `daemon.state_dir`, else the default — and only when that daemon's status names this very file."""
    import tomllib

    source = (config or paths.default_config_path()).expanduser()
    try:
        daemon = tomllib.loads(source.read_text()).get("daemon", {})
        named = daemon.get("state_dir") if isinstance(daemon, dict) else None
    except (OSError, ValueError, UnicodeDecodeError):
        named = None
    if isinstance(named, str) and named:
        p = Path(named).expanduser()
        state_dir = p if p.is_absolute() else (source.parent / p).resolve()
    else:
        state_dir = paths.default_state_dir()
    try:
        running = json.loads(paths.status_path(state_dir).read_text())["daemon"]["config"]
        same = Path(running).resolve() == source.resolve()
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return state_dir if same else None


# --- init ------------------------------------------------------------------------------------------------------------


@app.command()
def init(
    path: Annotated[
        Path | None,
        typer.Option("--path", help="Where to write (default: the platform's config folder).", show_default=False),
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing config (it is moved aside, not deleted).")] = False,
) -> None:
    """Write a commented config, detecting an existing ~/.openclaw install."""
    from clawmedic.init_config import detect, render

    dest = (path or paths.default_config_path()).expanduser()
    if dest.exists() and not force:
        raise ConfigInvalid(f"{dest} already exists; pass --force to replace it (the old one is kept beside it).")
    found = detect()
    if dest.exists():
        kept = move_aside(dest, "old")
        out.print(f"kept the previous config as {kept}")
    atomic_write(dest, render(found))
    load_config(dest)  # what we write must load
    out.print(f"wrote {dest}")
    out.print(
        "OpenClaw install found: "
        + (
            f"{found.openclaw_home}/.openclaw (port {found.port})"
            if found.config_found
            else "none (edit the target before `run`)"
        )
    )


# --- config: check / apply / snapshot / history / diff, and rollback ---

config_app = typer.Typer(
    help="Prevention: validate, apply with probation and automatic rollback, snapshots.", no_args_is_help=True
)
app.add_typer(config_app, name="config")
TargetOpt = Annotated[
    str | None, typer.Option("--target", "-t", help="Target name (default: the only one).", show_default=False)
]


@config_app.command("check")
def config_check(
    file: Annotated[
        Path | None,
        typer.Argument(help="File to check (default: the target's live openclaw.json).", show_default=False),
    ] = None,
    target: TargetOpt = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Validate a config without applying it: JSON5 parse, then `openclaw config validate --json`. Exit 1 if invalid."""
    from clawmedic.targets import openclaw

    loaded = _load(config)
    name, cfg = loaded.target(target)
    if file is not None and not file.exists():
        raise ConfigInvalid(f"{file} does not exist.")
    v = openclaw.validate(loaded, name, candidate=file)
    path = file or openclaw.config_path(cfg)
    if json_:
        out.print_json(json.dumps({"file": str(path), **v.to_dict()}))
    elif v.valid:
        out.print(
            f"[green]valid[/]: {path}"
            + (" (JSON5 only: the openclaw CLI could not run)" if v.stage == "unchecked" else "")
        )
    else:
        out.print(f"[red]invalid[/] ({v.stage}): {path}")
        for issue in v.issues:
            out.print(f"  - {issue}", highlight=False)
    if not v.valid:
        raise typer.Exit(defaults.EXIT_FAILURE)


@config_app.command("apply")
def config_apply(
    new_file: Annotated[Path, typer.Argument(help="The new openclaw.json to apply.")],
    target: TargetOpt = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
    probation: Annotated[float, typer.Option(help="Seconds the gateway must stay healthy.")] = (
        defaults.APPLY_PROBATION_S
    ),
) -> None:
    """Validate → snapshot → apply → probation → automatic rollback if the gateway is not healthy."""
    from clawmedic import runbook

    loaded = _load(config)
    name, _ = loaded.target(target)
    if not new_file.is_file():
        raise ConfigInvalid(f"{new_file} does not exist.")
    progress = (lambda _m: None) if json_ else (lambda m: err.print(f"[dim]…[/] {m}", highlight=False))
    report = runbook.apply_config(loaded, name, new_file, probation_s=probation, progress=progress)
    if json_:
        out.print_json(json.dumps(report.to_dict()))
    else:
        verdict = (
            "[green]applied and healthy[/]"
            if report.healthy
            else "[yellow]rolled back[/]"
            if report.rolled_back
            else "[red]refused[/]"
            if not report.applied
            else "[red]applied, unhealthy[/]"
        )
        out.print(f"{verdict}: {report.reason}", highlight=False)
        for step in report.steps:
            out.print(f"  - {step}", highlight=False)
        if report.incident:
            out.print(f"recorded as incident #{report.incident}")
    if not report.healthy:
        raise typer.Exit(defaults.EXIT_FAILURE)


@config_app.command("snapshot")
def config_snapshot(
    target: TargetArg = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
    known_good: Annotated[
        bool, typer.Option("--known-good", help="Mark it known-good (the config must validate).")
    ] = False,
) -> None:
    """Snapshot the target's boot-critical files now."""
    from clawmedic import runbook

    loaded = _load(config)
    name, _ = loaded.target(target)
    snap = runbook.snapshot(loaded, name, known_good=known_good)
    if json_:
        out.print_json(json.dumps(snap.to_dict() if snap else None))
    elif snap is None:
        out.print("nothing changed since the last snapshot")
    else:
        out.print(
            f"snapshot {snap.short} of {name}"
            + (" [green](known-good)[/]" if snap.known_good else "")
            + f": {', '.join(snap.files)}"
        )


@config_app.command("history")
def config_history(
    target: TargetArg = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 30,
) -> None:
    """List snapshots of the boot-critical files: when, why, health, known-good."""
    from clawmedic import runbook

    loaded = _load(config)
    name, _ = loaded.target(target)
    snaps = runbook._store(loaded).history(name, limit)
    if json_:
        out.print_json(json.dumps([s.to_dict() for s in snaps]))
        return
    table = Table("rev", "when", "reason", "health", "known-good", "files")
    for s in snaps:
        table.add_row(
            s.short, _fmt_time(s.at), s.reason, s.health, "[green]yes[/]" if s.known_good else "", ", ".join(s.files)
        )
    out.print(table)


@config_app.command("diff")
def config_diff(
    rev: Annotated[str | None, typer.Argument(help="Snapshot (default: known-good).", show_default=False)] = None,
    target: TargetOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Show what changed in the live config since a snapshot (default: the known-good one)."""
    from clawmedic import runbook
    from clawmedic.targets import openclaw

    loaded = _load(config)
    name, cfg = loaded.target(target)
    text = runbook._store(loaded).diff(name, openclaw.CONFIG_KEY, openclaw.config_path(cfg), rev)
    out.print(text or "no differences", highlight=False, markup=False)


@app.command("rollback")
def rollback_cmd(
    target: TargetArg = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
    to: Annotated[
        str | None, typer.Option("--to", help="Snapshot to restore (default: known-good).", show_default=False)
    ] = None,
) -> None:
    """Put the boot-critical files back from a snapshot (the replaced ones are kept) and restart the gateway."""
    from clawmedic import runbook

    loaded = _load(config)
    name, _ = loaded.target(target)
    progress = (lambda _m: None) if json_ else (lambda m: err.print(f"[dim]…[/] {m}", highlight=False))
    result = runbook.rollback(loaded, name, to, progress=progress)
    if json_:
        out.print_json(json.dumps(result))
    else:
        out.print(
            ("[green]rolled back, healthy[/]" if result["healthy"] else "[red]rolled back, not healthy[/]")
            + f" (incident #{result['incident']})"
        )
        out.print(result["restart"], highlight=False, markup=False)
    if not result["healthy"]:
        raise typer.Exit(defaults.EXIT_FAILURE)


# --- the runbook: fix …, and safe-start ---

fix_app = typer.Typer(
    help="Runbook for humans at 3 a.m.: each step idempotent, with --dry-run and --json; each repair is recorded as an "
    "incident (`fix status` only reads).",
    no_args_is_help=True,
)
app.add_typer(fix_app, name="fix")
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Print the plan; change nothing.")]


def _run_fix(
    action: str, target: str | None, config: Path | None, json_: bool, dry_run: bool, kill_foreign: bool = False
) -> None:
    from clawmedic import runbook

    loaded = _load(config)
    name, _ = loaded.target(target)
    progress = (lambda _m: None) if json_ else (lambda m: err.print(f"[dim]…[/] {m}", highlight=False))
    report = runbook.run_fix(loaded, name, action, dry_run=dry_run, kill_foreign=kill_foreign, progress=progress)
    if json_:
        out.print_json(json.dumps(report.to_dict(), default=str))
    else:
        colours = {"ok": "green", "fixed": "green", "planned": "cyan", "refused": "yellow", "failed": "red"}
        for step in report.steps:
            out.print(
                f"[{colours.get(step.status, 'white')}]{step.status:>8}[/]  {step.name:<10} {step.detail}",
                highlight=False,
            )
        if report.incident:
            out.print(f"recorded as incident #{report.incident}")
    if not report.ok:
        raise typer.Exit(defaults.EXIT_FAILURE)


@fix_app.command("status")
def fix_status(
    target: TargetArg = None, config: ConfigOpt = None, json_: JsonOpt = False, dry_run: DryRunOpt = False
) -> None:
    """Check everything (daemon, liveness, config, known-good, dependencies, port) without changing anything."""
    _run_fix("status", target, config, json_, dry_run)


@fix_app.command("config")
def fix_config(
    target: TargetArg = None, config: ConfigOpt = None, json_: JsonOpt = False, dry_run: DryRunOpt = False
) -> None:
    """Validate the gateway config; if invalid, restore known-good (the broken file is kept beside it)."""
    _run_fix("config", target, config, json_, dry_run)


@fix_app.command("deps")
def fix_deps(
    target: TargetArg = None, config: ConfigOpt = None, json_: JsonOpt = False, dry_run: DryRunOpt = False
) -> None:
    """Find missing or broken npm packages of the install and restore them from the pristine copy (or npm)."""
    _run_fix("deps", target, config, json_, dry_run)


KillForeignOpt = Annotated[
    bool, typer.Option("--kill-foreign", help="Allow stopping a process clawmedic did not start that holds the port.")
]


@fix_app.command("port")
def fix_port(
    target: TargetArg = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
    dry_run: DryRunOpt = False,
    kill_foreign: KillForeignOpt = False,
) -> None:
    """Free the gateway's port from a stale gateway of this target; a foreign holder is named, not touched."""
    _run_fix("port", target, config, json_, dry_run, kill_foreign)


@fix_app.command("restart")
def fix_restart(
    target: TargetArg = None, config: ConfigOpt = None, json_: JsonOpt = False, dry_run: DryRunOpt = False
) -> None:
    """Restart the gateway and wait until a new process is healthy: through the daemon when one runs, else
    directly, the way the daemon launches it (a daemon started later adopts it)."""
    _run_fix("restart", target, config, json_, dry_run)


@fix_app.command("nuclear")
def fix_nuclear(
    target: TargetArg = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
    dry_run: DryRunOpt = False,
    kill_foreign: KillForeignOpt = False,
) -> None:
    """config → deps → port → restart, in order, verifying after each step."""
    _run_fix("nuclear", target, config, json_, dry_run, kill_foreign)


@app.command("safe-start", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def safe_start(
    ctx: typer.Context,
    target: Annotated[
        str | None, typer.Argument(help="Target name, then `--` and the command to exec.", show_default=False)
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Check dependencies (restore missing ones), validate the config (restore known-good), check the port, then
    exec the command — so a service manager keeps the PID. Use as systemd `ExecStart=` or launchd
    `ProgramArguments`: `clawmedic safe-start gateway -- openclaw gateway run --port 18789`."""
    import os

    from clawmedic import runbook

    command = list(ctx.args)
    if target is not None and target.startswith("-"):
        target = None
    loaded = _load(config)
    name, cfg = loaded.target(target)
    if not command:
        if not cfg.start.command:
            raise ConfigInvalid("safe-start needs a command after `--` (the target has no start.command).")
        command = [loaded.resolve(x, "command") for x in cfg.start.command]
    steps = runbook.safe_start_checks(loaded, name, progress=lambda m: err.print(f"safe-start: {m}", highlight=False))
    if not all(s.good for s in steps):
        bad = next(s for s in steps if not s.good)
        err.print(f"[red]safe-start refused to start {name}:[/] {bad.detail}", highlight=False)
        raise typer.Exit(defaults.EXIT_FAILURE)
    env = {**os.environ, **loaded.command_env(name)}
    try:
        os.execvpe(command[0], command, env)  # noqa: S606 - replacing ourselves is the point: the PID is kept
    except OSError as e:
        raise EnvironmentMissing(f"Cannot exec {command[0]}: {e.strerror}.") from None


# --- the doctor: diagnose, learnings ---


@app.command()
def diagnose(
    target: TargetArg = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
    llm: Annotated[
        bool, typer.Option("--llm", help="Also ask the LLM doctor ([daemon.doctor.llm]); its remedies are refused.")
    ] = False,
) -> None:
    """Collect evidence and run the diagnosis rules, read-only: nothing is changed."""
    import psutil

    from clawmedic.doctor.evidence import collect
    from clawmedic.doctor.rules import diagnose as run_rules
    from clawmedic.doctor.rules import signature
    from clawmedic.process.launcher import Launcher

    loaded = _load(config)
    name, _ = loaded.target(target)
    handle = Launcher(loaded.state_dir / "targets" / name).adopt()
    status_entry = read_status(loaded)["targets"].get(name, {})
    pid = handle.pid if handle and psutil.pid_exists(handle.pid) else None
    ev = collect(loaded, name, cause="diagnose", last_exit=status_entry.get("last_exit"), pid=pid, budget_s=25.0)
    findings = run_rules(ev)
    consultation = _diagnose_llm(loaded, name, ev.to_dict(), [f.to_dict() for f in findings], json_) if llm else None
    if json_:
        out.print_json(
            json.dumps(
                {
                    "target": name,
                    "signature": signature(ev, findings),
                    "findings": [f.to_dict() for f in findings],
                    "evidence": ev.to_dict(),
                    **({"llm": consultation.to_dict()} if consultation is not None else {}),
                },
                default=str,
            )
        )
        return
    if ev.changes:
        out.print("[bold]what changed[/] since the last healthy state:")
        for c in ev.changes:
            out.print(f"  {c.get('what')}: {c.get('summary')} ({c.get('when')})", highlight=False)
            for setting in c.get("settings") or []:
                out.print(f"    {setting}", highlight=False)
    if not findings:
        out.print(f"[green]{name}: no known fault found[/]")
    for f in findings:
        if f.kind != "cause":
            out.print(f"[dim]{f.rule} (a symptom, not the cause): {f.detail}[/]", highlight=False)
            continue
        plan = ", ".join(c.remedy for c in f.plan) or "none (a human decides)"
        out.print(f"[bold]{f.rule}[/] ({f.confidence * 100:.0f}%): {f.detail}", highlight=False)
        out.print(f"  plan: {plan}\n  advice: {f.advice}", highlight=False)
    if ev.errors:
        out.print(f"[dim]collectors that could not tell: {ev.errors}[/]", highlight=False)
    if consultation is not None:
        c = consultation
        fault = f" [{c.fault}]" if c.fault else ""
        out.print(f"[bold]LLM doctor[/] ({c.backend}, {c.ended}, {c.steps} step(s), {c.took_s:.1f} s){fault}:")
        out.print(f"  {c.conclusion or c.error or 'no conclusion'}", highlight=False)
        for r in c.remedies:
            out.print(f"  would run: {r['remedy']} {r.get('params') or ''}", highlight=False)


def _diagnose_llm(
    loaded: LoadedConfig, name: str, evidence: dict[str, Any], findings: list[dict[str, Any]], quiet: bool
) -> Any:
    """A read-only consultation, in its own process like the daemon's, with each step shown as it happens."""
    from clawmedic.doctor.llm.run import consult_in_child

    def show(kind: str, detail: dict[str, Any]) -> None:
        if quiet:
            return
        if kind == "llm_started":
            err.print(f"[dim]consulting {detail.get('backend')} (read-only)…[/]")
        elif kind == "llm_tool":
            err.print(f"[dim]  step {detail.get('step')}: {detail.get('name')} → {detail.get('status')}[/]")

    payload = {"evidence": evidence, "findings": findings, "tried": []}
    import asyncio

    return asyncio.run(consult_in_child(loaded, name, payload, read_only=True, on_record=show))


@app.command()
def learnings(
    config: ConfigOpt = None,
    json_: JsonOpt = False,
    export: Annotated[
        Path | None, typer.Option("--export", help="Write recovery-learnings.md to this path.", show_default=False)
    ] = None,
) -> None:
    """What healed each kind of incident before (the doctor tries proven remedies first)."""
    from clawmedic.doctor.learnings import LearningStore, export_markdown
    from clawmedic.paths import learnings_path

    loaded = _load(config)
    store = LearningStore(learnings_path(paths.ensure_private_dir(loaded.state_dir)))
    items = store.all()
    if export is not None:
        atomic_write(export, export_markdown(items), mode=0o644)
        out.print(f"wrote {export} ({len(items)} learning(s))")
        return
    if json_:
        out.print_json(json.dumps([i.to_dict() for i in items], default=str))
        return
    if not items:
        out.print("No learnings yet.")
        return
    table = Table("signature", "remedies", "healed", "failed", "last incident")
    for i in items:
        table.add_row(i.signature, ", ".join(i.remedies), str(i.successes), str(i.failures), f"#{i.last_incident}")
    out.print(table)


# --- the LLM doctor ------------------------------------------------------------------------------------------------

llm_app = typer.Typer(help="The LLM doctor: check its backend, run the evaluation cases.", no_args_is_help=True)
app.add_typer(llm_app, name="llm")
BackendOpt = Annotated[
    str | None,
    typer.Option(
        "--backend", help="Override [daemon.doctor.llm] backend: local, openai, anthropic, cli.", show_default=False
    ),
]
ModelOpt = Annotated[str | None, typer.Option("--model", help="Override the model name.", show_default=False)]
BaseUrlOpt = Annotated[
    str | None, typer.Option("--base-url", help="Override the OpenAI-compatible endpoint.", show_default=False)
]


def _llm_config(config: Path | None, backend: str | None, model: str | None, base_url: str | None) -> Any:
    """The [daemon.doctor.llm] section (the defaults when there is no config), with command-line overrides."""
    from pydantic import ValidationError

    from clawmedic.config import LlmConfig

    try:
        base = _load(config).config.daemon.doctor.llm
    except ConfigInvalid:
        if config is not None:
            raise
        base = LlmConfig()
    update = {k: v for k, v in (("backend", backend), ("model", model), ("base_url", base_url)) if v is not None}
    try:
        return LlmConfig.model_validate({**base.model_dump(), **update})
    except ValidationError as e:
        raise ConfigInvalid(f"[daemon.doctor.llm]: {e.errors()[0]['msg'].removeprefix('Value error, ')}.") from None


def _backend(cfg: Any) -> Any:
    from clawmedic.doctor.llm.backends import make_backend
    from clawmedic.doctor.llm.types import BackendUnavailable

    try:
        return make_backend(cfg)
    except BackendUnavailable as e:
        raise EnvironmentMissing(f"LLM doctor: {e}.") from None


@llm_app.command("check")
def llm_check(
    config: ConfigOpt = None,
    backend: BackendOpt = None,
    model: ModelOpt = None,
    base_url: BaseUrlOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Ask the configured backend one short question: is it installed, reachable, and answering?"""
    import time

    from clawmedic.doctor.llm.types import BackendFailed

    b = _backend(_llm_config(config, backend, model, base_url))
    t0 = time.monotonic()
    try:
        reply = b.complete(
            [{"role": "user", "content": "Reply with the single word: ready"}],
            [],
            timeout_s=defaults.LLM_REQUEST_TIMEOUT_S,
        )
    except BackendFailed as e:
        raise EnvironmentMissing(f"LLM doctor: {b.name}: {e}.") from None
    took = time.monotonic() - t0
    if json_:
        out.print_json(json.dumps({"backend": b.name, "ok": True, "seconds": round(took, 2), "answer": reply.text}))
        return
    out.print(f"[green]{b.name} answers[/] in {took:.1f} s: {reply.text.strip()[:80]!r}", highlight=False)


@llm_app.command("eval")
def llm_eval(
    cases: Annotated[Path, typer.Option("--cases", help="Folder of evaluation cases.")] = Path("evals/cases"),
    config: ConfigOpt = None,
    backend: BackendOpt = None,
    model: ModelOpt = None,
    base_url: BaseUrlOpt = None,
    only: Annotated[
        str | None, typer.Option("-k", help="Only the cases whose name contains this.", show_default=False)
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Run the recorded incident cases against a backend and report its accuracy (fault named, remedy chosen).

    Nothing is changed: tools answer from the recordings and remedies are only checked by the guard.
    Exit 1 if any case fails."""
    from clawmedic.doctor.llm.evals import Score, load_cases, run_all, summary

    cfg = _llm_config(config, backend, model, base_url)
    selected = [c for c in load_cases(cases) if only is None or only in c.name]
    if not selected:
        raise ConfigInvalid(f"no evaluation case in {cases} matches -k {only!r}.")
    b = _backend(cfg)
    from clawmedic.doctor.llm.agent import Limits

    limits = Limits.of(cfg)

    def progress(s: Score) -> None:
        mark = "[green]pass[/]" if s.ok else "[red]FAIL[/]"
        err.print(
            f"{mark} {s.case}: fault {s.fault_named} (want {s.fault_expected}), remedy {s.remedy_chosen} "
            f"(want {' or '.join(str(r) for r in s.remedy_expected)}), {s.steps} step(s), {s.seconds:.1f} s",
            highlight=False,
        )

    err.print(f"[dim]{len(selected)} case(s) against {b.name}…[/]")
    result = summary(b.name, run_all(b, selected, limits, progress))
    if json_:
        out.print_json(json.dumps(result))
    else:
        out.print(
            f"{b.name}: accuracy {result['accuracy'] * 100:.0f}% ({sum(s['ok'] for s in result['scores'])}/"
            f"{result['cases']}); fault {result['fault_accuracy'] * 100:.0f}%, remedy "
            f"{result['remedy_accuracy'] * 100:.0f}%; median {result['median_seconds']:.1f} s a case",
            highlight=False,
        )
    if result["accuracy"] < 1.0:
        raise typer.Exit(defaults.EXIT_FAILURE)


# --- sandbox --------------------------------------------------------------------------------------------------------

DirOpt = Annotated[
    Path | None, typer.Option("--dir", help="Sandbox folder (default: <state>/sandbox/default).", show_default=False)
]


def _install(quiet: bool = False) -> Any:
    from clawmedic.sandbox.install import ensure_install, find_install, rich_progress

    found = find_install()
    if found is not None:
        return found
    if quiet:
        return ensure_install()
    err.print(
        f"Installing Node {defaults.NODE_VERSION} and OpenClaw {defaults.OPENCLAW_VERSION} into "
        f"{paths.cache_dir()} (once; about 850 MB)…"
    )
    with rich_progress(err) as progress:
        return ensure_install(progress=progress)


@sandbox_app.command("install")
def sandbox_install(json_: JsonOpt = False) -> None:
    """Install the pinned Node 24 and OpenClaw into the per-user cache (idempotent)."""
    inst = _install(quiet=json_)
    info = {
        "root": str(inst.root),
        "node": str(inst.node),
        "node_version": inst.node_version,
        "openclaw_version": inst.openclaw_version,
        "openclaw_entry": str(inst.openclaw_entry),
    }
    if json_:
        out.print_json(json.dumps(info))
    else:
        out.print(f"OpenClaw {inst.openclaw_version} on Node {inst.node_version} is installed in {inst.root}")


@sandbox_app.command("up")
def sandbox_up(
    dir_: DirOpt = None,
    port: Annotated[int | None, typer.Option(help="Port (default: a free one, kept across runs).")] = None,
    json_: JsonOpt = False,
) -> None:
    """Start an isolated real gateway (own HOME, loopback, free port, 0600 token) and write its clawmedic config."""
    from clawmedic.sandbox import gateway as gw

    root = (dir_ or gw.default_dir()).expanduser().resolve()
    gw.ensure_dir_is_ours(root)
    inst = _install(quiet=json_)
    sb = gw.create(root, inst, port=port)
    handle = gw.start_gateway(sb)
    if not json_:
        err.print(f"gateway pid {handle.pid} booting on 127.0.0.1:{sb.port}…")
    took = gw.wait_healthy(sb.port, pid=handle.pid)
    info = {**sb.describe(), "boot_s": round(took, 2)}
    if json_:
        out.print_json(json.dumps(info))
        return
    out.print(f"[green]sandboxed gateway is up[/] on {info['url']} (pid {handle.pid}, healthy after {took:.1f} s)")
    out.print(f"  HOME     {info['home']}\n  log      {info['log_file']}\n  config   {info['config']}")
    out.print(f"supervise it:  clawmedic run --config {info['config']}")


@sandbox_app.command("down")
def sandbox_down(dir_: DirOpt = None, json_: JsonOpt = False) -> None:
    """Stop the sandbox's clawmedic daemon (if any) and its gateway. Files are kept."""
    from clawmedic.sandbox import gateway as gw

    sb = gw.open_existing((dir_ or gw.default_dir()).expanduser().resolve())
    daemon = gw.stop_daemon(sb)
    pid = gw.stop_gateway(sb)
    info = {"dir": str(sb.root), "stopped_daemon_pid": daemon, "stopped_gateway_pid": pid}
    if json_:
        out.print_json(json.dumps(info))
    else:
        out.print(f"stopped: daemon {daemon or '—'}, gateway {pid or '—'} (files kept in {sb.root})")


@sandbox_app.command("status")
def sandbox_status(dir_: DirOpt = None, json_: JsonOpt = False) -> None:
    """Show the sandbox's port, paths, gateway PID and health."""
    from clawmedic.sandbox import gateway as gw

    sb = gw.open_existing((dir_ or gw.default_dir()).expanduser().resolve())
    info = {**sb.describe(), "healthy": gw.health(sb.port)}
    if json_:
        out.print_json(json.dumps(info))
        return
    table = Table("key", "value", show_header=False)
    for k, v in info.items():
        table.add_row(k, str(v))
    out.print(table)
    if not info["healthy"]:
        raise typer.Exit(defaults.EXIT_FAILURE)


# --- demo ---


@app.command()
def demo(
    json_: JsonOpt = False,
    dir_: Annotated[
        Path | None,
        typer.Option("--dir", help="Sandbox folder for the demo (default: <state>/sandbox/demo).", show_default=False),
    ] = None,
) -> None:
    """Start a sandboxed real gateway under clawmedic, break it (kill -9, then a SIGSTOP hang) and show each fault
    detected and healed, ending with time-to-detect and time-to-recover per fault."""
    from clawmedic.demo import run_demo

    rows = run_demo(dir_, console=err if json_ else out, quiet=json_)
    if json_:
        out.print_json(json.dumps(rows))
    if not all(r["healed"] for r in rows):
        raise typer.Exit(defaults.EXIT_FAILURE)


@app.command()
def drill(
    faults: Annotated[
        str | None, typer.Option("--faults", help="Comma-separated faults to run (default: all).", show_default=False)
    ] = None,
    json_: JsonOpt = False,
    report: Annotated[
        Path | None, typer.Option("--report", help="Also write the results as Markdown to this file.")
    ] = None,
    compare: Annotated[
        str | None, typer.Option("--compare", help="Run kill -9, hang and broken config under supervisord too.")
    ] = None,
    dir_: Annotated[
        Path | None,
        typer.Option("--dir", help="Sandbox folder (default: a fresh one, removed afterwards).", show_default=False),
    ] = None,
) -> None:
    """Game day: break a sandboxed real gateway every way in the drill's table (never your own gateway) and check
    each fault is healed, left alone or escalated as it should, with timings and invariants. Exit 1 on a miss."""
    from clawmedic.drill.command import drill as run

    code = run(faults, json_, report, compare, dir_, out, err)
    if code:
        raise typer.Exit(code)


import clawmedic.cli_operator  # noqa: E402 - registers pause, resume and logs on `app`
import clawmedic.cli_ops  # noqa: E402 - registers guardian, install, uninstall and notify on `app`
import clawmedic.cli_upgrade  # noqa: E402, F401 - registers upgrade on `app`


def main() -> None:
    try:
        app()
    except ClawmedicError as e:  # bad config or usage, a missing binary …: one sentence, the documented exit code
        err.print(f"[red]error:[/] {escape(' '.join(str(e).split()))}", highlight=False)
        sys.exit(e.exit_code)
    except OSError as e:  # a file or folder the checks could not foresee (a full disk, a permission changed since)
        where = f" ({e.filename})" if e.filename else ""
        err.print(f"[red]error:[/] {escape(e.strerror or str(e))}{escape(where)}.", highlight=False)
        sys.exit(defaults.EXIT_FAILURE)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
