"""The doctor interface: where the ladder hands an incident a restart cannot fix.

The real doctor (evidence, rules, remedies) is another tier; until it is configured, `RecordOnlyDoctor` records
the escalation in the incident and answers "not healed", so the ladder stops restarting and waits for a human.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Escalation:
    target: str
    incident_id: int
    reason: str
    cause: str  # an ExitKind value or "crash_loop"
    evidence: dict[str, object] = field(default_factory=dict)  # already redacted


@dataclass(frozen=True)
class Verdict:
    healed: bool
    summary: str
    restart: bool = True  # healed: relaunch a target that still runs (False: the repair took effect in place)


class Doctor(Protocol):
    async def treat(self, escalation: Escalation) -> Verdict: ...


class RecordOnlyDoctor:
    """No remedies: the incident is recorded and handed to a human."""

    async def treat(self, escalation: Escalation) -> Verdict:
        return Verdict(False, f"no doctor configured: a human is needed ({escalation.cause})")
