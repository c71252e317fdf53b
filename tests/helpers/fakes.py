"""The fakes for unit tests, in one place: the seams clawmedic's logic is given as arguments (a clock, what the
doctor reads from the machine and changes on it, the LLM doctor's child process, the report on disk).

Fakes are for the logic; the real collectors, remedies and child processes are tested for real in the integration
and end-to-end tiers.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from clawmedic.config import LoadedConfig
from clawmedic.doctor.evidence import Evidence
from clawmedic.doctor.llm.agent import Consultation
from clawmedic.doctor.remedies import Guard, Outcome, RemedyContext, Status
from clawmedic.store.incidents import IncidentStore


class FakeClock:
    """Monotonic seconds that move only when the test (or a fake seam standing for a slow step) moves them."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class FakeCollector:
    """`evidence.collect`: the next scripted evidence (the last one again once the script runs out). Records each
    call's keyword arguments; collecting takes `takes_s` on the clock."""

    script: list[Evidence]
    clock: FakeClock | None = None
    takes_s: float = 0.0
    calls: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, loaded: LoadedConfig, target: str, **kw: Any) -> Evidence:
        self.calls.append({"target": target, **kw})
        if self.clock is not None:
            self.clock.advance(self.takes_s)
        return self.script[min(len(self.calls), len(self.script)) - 1]


@dataclass
class FakeRemedies:
    """`Guard.run` that changes nothing: the guard's policy check is the real one; a call it lets through is
    recorded and answered with the scripted status (OK unless `status` names another), taking `takes_s`."""

    guard: Guard
    status: dict[str, Status] = field(default_factory=dict)
    clock: FakeClock | None = None
    takes_s: float = 0.0
    ran: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def __call__(self, ctx: RemedyContext, name: str, params: dict[str, Any]) -> Outcome:
        refusal = self.guard.check(name, params)
        if refusal is not None:
            return refusal
        self.ran.append((name, params))
        if self.clock is not None:
            self.clock.advance(self.takes_s)
        return Outcome(name, self.status.get(name, Status.OK), f"fake {name}", params, took_s=self.takes_s)


@dataclass
class FakeConsult:
    """`consult_in_child`: records the payload the doctor sends and answers with a scripted consultation."""

    result: Consultation
    payloads: list[dict[str, Any]] = field(default_factory=list)

    async def __call__(
        self,
        loaded: LoadedConfig,
        target: str,
        payload: dict[str, Any],
        *,
        read_only: bool = False,
        on_record: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> Consultation:
        self.payloads.append(json.loads(json.dumps(payload)))  # what the child receives: the payload at this moment
        return self.result


@dataclass
class FakeReports:
    """`report.write_report`: remembers which incidents' reports were written."""

    written: list[int] = field(default_factory=list)

    def __call__(self, loaded: LoadedConfig, incidents: IncidentStore, incident_id: int) -> None:
        self.written.append(incident_id)
