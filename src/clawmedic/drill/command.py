"""`clawmedic drill`'s body, so cli.py only declares the options."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console

from clawmedic.drill import report
from clawmedic.drill.faults import FAULTS, select
from clawmedic.drill.runner import Row, run_drill
from clawmedic.errors import ClawmedicError
from clawmedic.sandbox.install import ensure_install, find_install, rich_progress


class UnknownFault(ClawmedicError):
    """`--faults` names a fault the drill does not have (exit 2, like any bad input)."""

    exit_code = 2


def parse_faults(spec: str | None) -> list[str] | None:
    return [n.strip() for n in spec.split(",") if n.strip()] if spec else None


def drill(
    faults: str | None,
    as_json: bool,
    report_file: Path | None,
    compare: str | None,
    dir_: Path | None,
    out: Console,
    err: Console,
) -> int:
    """Run the drill; print the table (or JSON) and write the report. The exit code: 0 when every row met its
    expectation and every invariant held, else 1."""
    try:
        chosen = select(parse_faults(faults))
    except ValueError as e:
        raise UnknownFault(f"--faults: {e}.") from None
    if compare not in (None, "supervisord"):
        raise UnknownFault(f"--compare: only supervisord is known, not {compare!r}.")
    ui = err if as_json else out
    inst = find_install()
    if inst is None:
        ui.print("Installing the sandbox (Node 24 + OpenClaw) into the user cache — once, about a minute…")
        with rich_progress(ui) as progress:
            inst = ensure_install(progress=progress)
    ui.rule(f"[bold]clawmedic drill[/]: {len(chosen)} of {len(FAULTS)} faults on a sandboxed real gateway")
    with ui.status("starting") as status:

        def on_step(text: str) -> None:
            status.update(text)

        def on_row(i: int, row: Row) -> None:
            d = row.to_dict()
            mark = "[green]met[/]" if row.ok else "[red]MISSED[/]"
            ui.print(
                f"{i + 1:2d}. {row.title}: expected {row.expect}, {row.observed} — {mark}  detect "
                f"{report._s(d['detect_s'])}, recover {report._s(d['recover_s'])}, restarts {row.restarts}"
                + (f"  [red]{'; '.join(row.problems)}[/]" if row.problems else ""),
                highlight=False,
            )

        result: dict[str, Any] = run_drill(chosen, inst, dir_, on_row, on_step, compare=compare == "supervisord")
    if as_json:
        out.print_json(json.dumps(result))
    else:
        out.print(report.table(result))
        if result.get("compare"):
            out.print(report.compare_markdown(result["compare"]), highlight=False)
    if report_file is not None:
        report_file.write_text(report.markdown(result))
        ui.print(f"report written to {report_file}")
    return 0 if result["ok"] else 1
