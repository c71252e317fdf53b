"""Limits live in `defaults.py`, each with its reason: the doctor's modules hard-code none.

A module-level number or a `timeout=<number>` argument in the modules below is a limit someone will look for in
defaults.py and not find. Facts that are not limits (a kernel constant, a file format's version) are listed here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import clawmedic

SRC = Path(clawmedic.__file__).parent
HELD = [
    *sorted((SRC / "doctor").rglob("*.py")),
    SRC / "targets" / "openclaw" / "__init__.py",
    SRC / "knowngood.py",
    SRC / "knowngood_client.py",
]
NOT_YET = {"doctor/conversation.py"}  # still to move (issue 11, item 5)
FACTS = {
    ("doctor/llm/run.py", "PR_SET_PDEATHSIG"),  # prctl(2)'s option number
    ("doctor/model_fallback.py", "SCHEMA"),  # the state file's format version
    ("doctor/llm/local.py", "PART_COUNT"),  # how many packages the embedded model ships in
}


def _number(node: ast.expr) -> bool:
    if isinstance(node, ast.Constant):
        return isinstance(node.value, int | float) and not isinstance(node.value, bool)
    if isinstance(node, ast.BinOp):
        return _number(node.left) and _number(node.right)
    return isinstance(node, ast.UnaryOp) and _number(node.operand)


def hard_coded_limits(path: Path, rel: str) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in tree.body:
        if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None and _number(node.value):
            target = node.targets[0] if isinstance(node, ast.Assign) else node.target
            if (rel, ast.unparse(target)) not in FACTS:
                found.append(f"{rel}:{node.lineno}: {ast.unparse(target)} = {ast.unparse(node.value)}")
    for kw in ast.walk(tree):
        if isinstance(kw, ast.keyword) and kw.arg and "timeout" in kw.arg and _number(kw.value):
            found.append(f"{rel}:{kw.value.lineno}: {kw.arg}={ast.unparse(kw.value)}")
    return found


def test_the_doctor_hard_codes_no_limit() -> None:
    found = [
        hit
        for path in HELD
        if (rel := str(path.relative_to(SRC))) not in NOT_YET
        for hit in hard_coded_limits(path, rel)
    ]
    assert not found, "move these to defaults.py, each with its reason: " + "; ".join(found)


def test_the_scan_sees_a_module_constant_and_a_literal_timeout(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import subprocess\nBUDGET_S = 4.0\nsubprocess.run(['x'], timeout=10)\nNAME = 'x'\n")
    assert hard_coded_limits(module, "m.py") == ["m.py:2: BUDGET_S = 4.0", "m.py:3: timeout=10"]
