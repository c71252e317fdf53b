"""`clawmedic demo`: a real sandboxed gateway under clawmedic, broken on purpose, healed live, with timings."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from clawmedic import paths
from clawmedic.config import load_config
from clawmedic.daemon import Daemon, incidents_path
from clawmedic.errors import EnvironmentMissing
from clawmedic.ladder.states import State
from clawmedic.logs import setup_logging
from clawmedic.sandbox import gateway as gw
from clawmedic.sandbox.install import ensure_install, find_install, rich_progress
from clawmedic.store.incidents import IncidentStore
from clawmedic.supervisor import TargetSupervisor

DEMO_PROBATION_S = 10.0  # shorter than the default 30 s so the demo takes about two minutes
DEMO_STABLE_RESET_S = 5.0  # each fault is a fresh one: its first restart is immediate, as after any stable period
HEAL_TIMEOUT_S = 240.0  # a fault not healed by then is reported as not healed

DEMO_KNOWN_GOOD_AFTER_S = 3.0  # the config is marked known-good soon after the first healthy boot

FAULTS: list[tuple[str, str, signal.Signals, bool]] = [  # name, what happens, signal, corrupt the config first
    ("kill -9", "the gateway process is killed outright (SIGKILL)", signal.SIGKILL, False),
    ("hang (SIGSTOP)", "the gateway is frozen: it still accepts TCP but never answers", signal.SIGSTOP, False),
    (
        "broken config + crash",
        "openclaw.json gets a JSON typo (the running gateway ignores it), then the gateway crashes",
        signal.SIGKILL,
        True,
    ),
]


def run_demo(dir_: Path | None, console: Console, quiet: bool = False) -> list[dict[str, Any]]:
    inst = find_install()
    if inst is None:
        console.print("Installing the sandbox (Node 24 + OpenClaw) into the user cache — once, about a minute…")
        with rich_progress(console) as progress:
            inst = ensure_install(progress=progress)
    root = (dir_ or paths.default_state_dir() / "sandbox" / "demo").expanduser().resolve()
    gw.ensure_dir_is_ours(root)
    sb = gw.create(
        root,
        inst,
        limits={
            "probation_s": DEMO_PROBATION_S,
            "stable_reset_s": DEMO_STABLE_RESET_S,
            "known_good_after_s": DEMO_KNOWN_GOOD_AFTER_S,
        },
    )
    gw.stop_daemon(sb)  # leftovers of an interrupted demo
    gw.stop_gateway(sb)
    loaded = load_config(sb.config_path)
    setup_logging("info", quiet, loaded.redactor)
    from clawmedic.web.address import Listen
    from clawmedic.web.server import HttpServer

    page = HttpServer(loaded, Listen("127.0.0.1", gw.free_port()))  # a free port: a real daemon may hold 18780
    daemon = Daemon(loaded, stop_targets_on_exit=True, plugins=[page])
    page.attach(daemon)
    try:
        return asyncio.run(_scenario(daemon, sb, console, page.listen.url))
    finally:
        gw.stop_gateway(sb)


async def _scenario(daemon: Daemon, sb: gw.Sandbox, console: Console, page_url: str) -> list[dict[str, Any]]:
    task = asyncio.create_task(daemon.run())
    rows: list[dict[str, Any]] = []
    try:
        console.rule("[bold]clawmedic demo[/]: a real OpenClaw gateway, supervised")
        console.print(f"sandbox {sb.root}, gateway on 127.0.0.1:{sb.port}")
        console.print(f"watch it live: {page_url}/", highlight=False)
        t0 = time.monotonic()
        await _wait_state(daemon, task, State.HEALTHY, 240.0)
        console.print(
            f"[green]gateway healthy[/] after {time.monotonic() - t0:.1f} s (boot + {DEMO_PROBATION_S:g} s probation)"
        )
        store = IncidentStore(incidents_path(sb.state_dir))
        for name, what, sig, corrupt in FAULTS:
            console.rule(f"fault: {name}")
            console.print(what)
            if corrupt:
                await _wait_known_good(daemon)
                sb.openclaw_json.write_text(sb.openclaw_json.read_text() + ",,,{{")
                console.print(f"wrote ',,,{{{{' into {sb.openclaw_json}")
                await asyncio.sleep(1.5)  # clawmedic's watcher reports the latent fault at once
            rows.append(await _inject(daemon, task, store, name, sig, console))
        store.close()
    finally:
        daemon.request_stop()
        with contextlib.suppress(Exception):
            await task
    _table(console, rows)
    return rows


async def _wait_state(daemon: Daemon, task: asyncio.Task[None], state: State, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if task.done():
            task.result()
            raise EnvironmentMissing("The clawmedic daemon stopped during the demo.")
        sup = daemon.supervisors.get(gw.TARGET)
        if sup is not None and sup.ladder.state == state and sup.incident_id is None:
            return
        if sup is not None and sup.ladder.state in (State.ESCALATED, State.GAVE_UP):
            raise EnvironmentMissing(f"The sandboxed gateway could not be started: {sup.last_exit}.")
        await asyncio.sleep(0.1)
    raise EnvironmentMissing(f"The sandboxed gateway was not {state} within {timeout:g} s.")


async def _wait_incident(sup: TargetSupervisor, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while sup.incident_id is None:
        if time.monotonic() > deadline:
            raise EnvironmentMissing(f"clawmedic did not detect the fault within {timeout:g} s.")
        await asyncio.sleep(0.02)


async def _wait_known_good(daemon: Daemon, timeout: float = 60.0) -> None:
    sup = daemon.supervisors[gw.TARGET]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await asyncio.to_thread(sup.ctx.known_good.known_good, gw.TARGET) is not None:
            return
        await asyncio.sleep(0.2)
    raise EnvironmentMissing("No known-good snapshot was taken.")


async def _inject(
    daemon: Daemon, task: asyncio.Task[None], store: IncidentStore, name: str, sig: signal.Signals, console: Console
) -> dict[str, Any]:
    sup = daemon.supervisors[gw.TARGET]
    while sup.ladder.consecutive_restarts:  # wait for the stable period that forgets the previous fault
        await asyncio.sleep(0.1)
    assert sup.handle is not None
    pid = sup.handle.pid
    before = {i.id for i in store.list(100)}
    t_fault = time.time()
    os.kill(pid, sig)
    console.print(f"sent {sig.name} to gateway pid {pid}")
    row: dict[str, Any] = {
        "fault": name,
        "pid": pid,
        "healed": False,
        "detect_s": None,
        "recover_s": None,
        "incident": None,
    }
    try:
        await _wait_incident(sup, HEAL_TIMEOUT_S)
        await _wait_state(daemon, task, State.HEALTHY, HEAL_TIMEOUT_S)
    except EnvironmentMissing as e:
        console.print(f"[red]not healed:[/] {e}")
        return row
    new = [i for i in store.list(100) if i.id not in before]
    if new:
        inc = store.get(new[-1].id)
        assert inc is not None
        row.update(
            incident=inc.id,
            healed=inc.status == "recovered",
            detect_s=round(inc.detected_at - t_fault, 3),
            recover_s=round(inc.live_at - t_fault, 3) if inc.live_at else None,
            restarts=inc.restarts,
        )
        console.print(
            f"[green]healed[/]: detected after {row['detect_s']:.3f} s, live again after "
            f"{row['recover_s']:.2f} s (incident #{inc.id}, new pid {sup.handle.pid if sup.handle else '?'})"
        )
    return row


def _table(console: Console, rows: list[dict[str, Any]]) -> None:
    table = Table("fault", "healed", "time to detect", "time to recover", "incident", title="clawmedic demo results")
    for r in rows:
        table.add_row(
            r["fault"],
            "[green]yes[/]" if r["healed"] else "[red]no[/]",
            f"{r['detect_s']:.3f} s" if r["detect_s"] is not None else "—",
            f"{r['recover_s']:.2f} s" if r["recover_s"] is not None else "—",
            f"#{r['incident']}" if r["incident"] else "—",
        )
    console.print(table)
