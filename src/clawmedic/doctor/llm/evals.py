"""Evaluations: recorded incident cases run against a backend, scored on the fault named and the remedy chosen.

A case (`evals/cases/*.json`) holds redacted evidence as the collectors record it, the recorded outputs of the
read-only tools, and the expected fault, the acceptable first remedies (`null` = none is right) and remedies that
must not be chosen. Remedies are checked by the guard (default policy) and recorded, never run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from clawmedic.doctor.evidence import Evidence
from clawmedic.doctor.llm.agent import Consultation, Limits, consult, evidence_prompt
from clawmedic.doctor.llm.tools import FINISH, RecordedTools
from clawmedic.doctor.llm.types import Backend
from clawmedic.doctor.remedies import REMEDIES, Guard, Policy
from clawmedic.doctor.rules import near_misses
from clawmedic.errors import ConfigInvalid
from clawmedic.redact import Redactor


@dataclass(frozen=True)
class Case:
    name: str
    description: str
    evidence: dict[str, Any]
    tools: dict[str, str]
    fault: str
    remedies: list[str | None]
    forbidden: list[str]


@dataclass
class Score:
    case: str
    fault_expected: str
    fault_named: str | None
    fault_ok: bool
    remedy_expected: list[str | None]
    remedy_chosen: str | None
    remedy_ok: bool
    steps: int
    ended: str
    seconds: float
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.fault_ok and self.remedy_ok


def load_cases(folder: Path) -> list[Case]:
    if not folder.is_dir():
        raise ConfigInvalid(f"{folder} is not a folder of evaluation cases (evals/cases in the repository).")
    cases = []
    for path in sorted(folder.glob("*.json")):
        try:
            d = json.loads(path.read_text())
            exp = d["expected"]
            cases.append(
                Case(
                    d["name"],
                    d.get("description", ""),
                    d["evidence"],
                    d.get("tools", {}),
                    exp["fault"],
                    exp["remedies"],
                    exp.get("forbidden", []),
                )
            )
        except (ValueError, KeyError, TypeError) as e:
            raise ConfigInvalid(f"{path}: not an evaluation case ({type(e).__name__}: {e}).") from None
    if not cases:
        raise ConfigInvalid(f"{folder} holds no *.json evaluation cases.")
    return cases


def score(case: Case, result: Consultation) -> Score:
    """The first well-formed remedy call is the choice (a call refused for bad parameters is not a choice)."""
    chosen = next(
        (t.name for t in result.tools if t.name in REMEDIES and "bad parameters" not in t.result),
        None,
    )
    proposed = {t.name for t in result.tools if t.name in REMEDIES and t.name != FINISH}
    remedy_ok = chosen in case.remedies and not (proposed & set(case.forbidden))
    return Score(
        case.name,
        case.fault,
        result.fault,
        result.fault == case.fault,
        case.remedies,
        chosen,
        remedy_ok,
        result.steps,
        result.ended,
        result.took_s,
        result.error,
    )


def run_case(backend: Backend, case: Case, limits: Limits, policy: Policy | None = None) -> Score:
    policy = policy or Policy()
    tools = RecordedTools(case.tools, Guard(policy))
    near = near_misses(Evidence(**case.evidence))  # as the daemon's consultation gets them
    prompt = evidence_prompt(case.evidence, [], [], near)
    t0 = time.monotonic()
    result = consult(backend, tools, prompt, limits, Redactor(), policy=policy)
    result.took_s = round(time.monotonic() - t0, 2)
    return score(case, result)


def run_all(
    backend: Backend, cases: list[Case], limits: Limits, progress: Callable[[Score], None] | None = None
) -> list[Score]:
    scores = []
    for case in cases:
        s = run_case(backend, case, limits)
        scores.append(s)
        if progress is not None:
            progress(s)
    return scores


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2] if values else 0.0


def summary(backend: str, scores: list[Score]) -> dict[str, Any]:
    """Accuracy (fully right, fault named, remedy chosen), the median case and the median decision (one model turn:
    a case's seconds over its steps)."""
    n = len(scores) or 1
    return {
        "backend": backend,
        "cases": len(scores),
        "accuracy": round(sum(s.ok for s in scores) / n, 3),
        "fault_accuracy": round(sum(s.fault_ok for s in scores) / n, 3),
        "remedy_accuracy": round(sum(s.remedy_ok for s in scores) / n, 3),
        "median_seconds": _median([s.seconds for s in scores]),
        "median_seconds_per_decision": round(_median([s.seconds / s.steps for s in scores if s.steps]), 2),
        "scores": [{**asdict(s), "ok": s.ok} for s in scores],
    }
