"""The drill's results as a Rich table (live, row by row) and as Markdown (`--report`)."""

from __future__ import annotations

from typing import Any

from rich.table import Table


def _s(v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v * 1000:.0f} ms" if v < 1 else f"{v:.2f} s"


def _inv(row: dict[str, Any]) -> str:
    bad = [f"{k}: {', '.join(v)}" for k, v in row["invariants"].items() if v]
    return "; ".join(bad) if bad else ("ok" if row["invariants"] else "—")


def cells(row: dict[str, Any], width: int = 60) -> list[str]:
    return [
        row["title"],
        row["expect"],
        row["observed"],
        "yes" if row["ok"] else "NO",
        _s(row["detect_s"]),
        _s(row["recover_s"]),
        str(row["restarts"]),
        row["diagnosis"][:width],
        _inv(row),
    ]


HEADERS = ["fault", "expected", "observed", "met", "detect", "recover", "restarts", "diagnosis", "invariants"]


def table(result: dict[str, Any]) -> Table:
    t = Table(*HEADERS, title="clawmedic drill")
    for row in result["rows"]:
        c = cells(row)
        c[3] = "[green]yes[/]" if row["ok"] else "[red]NO[/]"
        t.add_row(*c)
    return t


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        f"clawmedic drill — {m['date']}, {m['system']}, {m['cpus']} CPUs (load {m['load']}), "
        f"OpenClaw {result['openclaw']} on Node {result['node']}, first boot {result['boot_s']} s",
        "",
        "| " + " | ".join(HEADERS) + " |",
        "|" + "---|" * len(HEADERS),
    ]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in cells(r, 120)) + " |" for r in result["rows"]]
    problems = [f"- {r['title']}: {p}" for r in result["rows"] for p in r["problems"]]
    if problems:
        lines += ["", "Problems:", *problems]
    if result.get("compare"):
        lines += ["", compare_markdown(result["compare"])]
    return "\n".join(lines) + "\n"


def compare_markdown(cmp: dict[str, Any]) -> str:
    lines = [
        "| fault | supervisord: recover | clawmedic: recover | ratio | supervisord: relaunch | clawmedic: relaunch |",
        "|---|---|---|---|---|---|",
    ]
    for r in cmp["rows"]:
        lines.append(
            f"| {r['title']} | {r['supervisord']} | {r['clawmedic']} | {r['ratio']} | "
            f"{_s(r.get('supervisord_relaunch_s'))} | {_s(r.get('clawmedic_relaunch_s'))} |"
        )
    return "\n".join(lines)
