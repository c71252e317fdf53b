"""Unit tests of the ladder: pure decision logic driven over virtual time.

Nothing here sleeps or reads a clock: every input carries its own `now`, and the actions the ladder returns
are compared field by field (reasons are free text, so they match anything).

Layout:
  * one `test_transition_<old>_to_<new>` per edge of `states.ALLOWED` the logic can take, registered with
    `@covers`, and a guard that every allowed edge is either covered or listed as unreachable;
  * `change_state` against `ALLOWED` (legal and forbidden pairs are derived from the table itself);
  * behaviour groups: backoff, crash loop, exit kinds, startup grace, suspect, maintenance, verdict, memory,
    scheduling.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TypeVar
from unittest.mock import ANY

import pytest

from clawmedic.ladder.machine import (
    Action,
    CheckGates,
    CloseIncident,
    Escalate,
    IllegalTransition,
    Ladder,
    LadderLimits,
    Launch,
    OpenIncident,
    Saved,
    Stop,
    Transition,
)
from clawmedic.ladder.states import ALLOWED, LIVE_STATES, ExitKind, State

# Small, distinct numbers so that every assertion can tell which limit produced a value.
LIMITS = LadderLimits(
    failure_threshold=3,
    probe_interval_s=5.0,
    suspect_interval_s=1.0,
    startup_poll_s=0.25,
    startup_timeout_s=60.0,
    probation_s=10.0,
    backoff_initial_s=10.0,
    backoff_max_s=600.0,
    backoff_jitter=0.2,
    stable_reset_s=100.0,
    crash_loop_failures=5,
    crash_loop_window_s=600.0,
    stop_timeout_s=30.0,
    hung_stop_timeout_s=5.0,
    retry_after_gave_up_s=300.0,
    retry_jitter=0.1,
)
HUNG = LIMITS.hung_stop_timeout_s
GRACEFUL = LIMITS.stop_timeout_s
LOOP1 = replace(LIMITS, crash_loop_failures=1)  # the first failure is already a crash loop
NO_LOOP = replace(LIMITS, crash_loop_failures=1000)  # never a crash loop: lets backoff run to the cap
FATAL_KINDS = [ExitKind.FATAL_CONFIG, ExitKind.PORT_IN_USE]

Edge = tuple[State, State]
Move = tuple[State, State, float]


# --- the rig ----------------------------------------------------------------------------------------------


@dataclass
class Rig:
    ladder: Ladder
    log: list[Transition]

    def moves(self) -> list[Move]:
        """The transitions emitted since the last `clear()`, as (old, new, at)."""
        return [(t.old, t.new, t.at) for t in self.log]

    def clear(self) -> None:
        self.log.clear()

    def state(self) -> State:
        """Read through a call so that mypy does not keep narrowing `ladder.state` across inputs."""
        return self.ladder.state


def middle() -> float:
    return 0.5  # jitter factor 1.0: the nominal delay


def constant(value: float) -> Callable[[], float]:
    return lambda: value


def state_of(ladder: Ladder) -> State:
    return ladder.state


def make(limits: LadderLimits = LIMITS, rng: Callable[[], float] = middle) -> Rig:
    log: list[Transition] = []
    return Rig(Ladder(limits=limits, rng=rng, on_change=log.append), log)


@pytest.fixture
def rig() -> Rig:
    return make()


# Expected actions: the key fields are exact, the free-text reason matches anything.
def launch() -> Launch:
    return Launch(ANY)


def stop(timeout_s: float) -> Stop:
    return Stop(ANY, timeout_s)


def escalate(cause: str) -> Escalate:
    return Escalate(ANY, cause)


def opened(first_failure_at: float) -> OpenIncident:
    return OpenIncident(ANY, first_failure_at)


RECOVERED = CloseIncident("recovered")


# --- drivers: bring a rig into a state through its public inputs; each returns the time it stopped at ------

Setup = Callable[[Rig], float]


def at_stopped(rig: Rig) -> float:
    assert rig.state() == State.STOPPED
    return 0.0


def at_starting(rig: Rig) -> float:
    assert rig.ladder.start(0.0) == [launch()]
    return 0.0


def at_probation(rig: Rig) -> float:
    """Live at t=1 after a clean start: probation runs until t=11; no failure on record."""
    at_starting(rig)
    assert rig.ladder.probe(1.0, ok=True) == []
    assert rig.state() == State.PROBATION
    return 1.0


def at_healthy(rig: Rig) -> float:
    """Healthy since t=11, no failure on record."""
    at_probation(rig)
    assert rig.ladder.tick(11.0) == []
    assert rig.state() == State.HEALTHY
    return 11.0


def at_suspect(rig: Rig) -> float:
    """Healthy, then the first failed probe at t=12."""
    at_healthy(rig)
    assert rig.ladder.probe(12.0, ok=False) == []
    assert rig.state() == State.SUSPECT
    return 12.0


def at_restarting(rig: Rig) -> float:
    """Healthy, then over its memory limit at t=12: stopping, the relaunch is due at once (restart_at=12)."""
    at_healthy(rig)
    assert rig.ladder.memory_exceeded(12.0, "rss") == [opened(12.0), stop(GRACEFUL)]
    assert rig.state() == State.RESTARTING
    assert rig.ladder.restart_at == 12.0
    return 12.0


def at_backoff(rig: Rig) -> float:
    """Crashed at t=1 (relaunched at once) and at t=2: waiting until t=12."""
    at_starting(rig)
    assert rig.ladder.exited(1.0, ExitKind.CRASH) == [opened(1.0), launch()]
    assert rig.ladder.exited(2.0, ExitKind.CRASH) == []
    assert rig.state() == State.BACKOFF
    assert rig.ladder.restart_at == 12.0
    return 2.0


def at_escalated(rig: Rig) -> float:
    """Healthy, then exit 78 at t=12: escalated, no process running."""
    at_healthy(rig)
    assert rig.ladder.exited(12.0, ExitKind.FATAL_CONFIG) == [opened(12.0), escalate("fatal_config")]
    assert rig.state() == State.ESCALATED
    assert not rig.ladder.running
    return 12.0


def at_escalated_after_failure(rig: Rig) -> float:
    """Healthy with one crash on record, then exit 78 at t=15: escalated, no process running."""
    at_healthy_after_failure(rig)
    assert rig.ladder.exited(15.0, ExitKind.FATAL_CONFIG) == [opened(15.0), escalate("fatal_config")]
    assert rig.state() == State.ESCALATED
    assert rig.ladder.consecutive_restarts == 1
    return 15.0


def at_gave_up(rig: Rig) -> float:
    at_escalated(rig)
    assert rig.ladder.verdict(13.0, healed=False) == []
    assert rig.state() == State.GAVE_UP
    return 13.0


def at_escalated_running(rig: Rig) -> float:
    """Needs a LOOP1 rig. Suspect from t=12, third failed probe at t=14 is a crash loop: escalated while the
    (hung) process is still ours and running."""
    assert rig.ladder.limits.crash_loop_failures == 1
    at_suspect(rig)
    assert rig.ladder.probe(13.0, ok=False) == []
    assert rig.ladder.probe(14.0, ok=False) == [opened(12.0), escalate("crash_loop")]
    assert rig.state() == State.ESCALATED
    assert rig.ladder.running
    return 14.0


def at_gave_up_running(rig: Rig) -> float:
    at_escalated_running(rig)
    assert rig.ladder.verdict(15.0, healed=False) == []
    assert rig.state() == State.GAVE_UP
    return 15.0


RETRY_AT = 313.0  # at_gave_up gave up at t=13; the slow retry's period is 300 s (the middle rng: no jitter)


def at_retrying(rig: Rig) -> float:
    """Gave up at t=13 (incident open); at t=313 the slow retry's gates pass: launched once, startup until 373."""
    at_gave_up(rig)
    assert rig.ladder.retry_at == RETRY_AT
    assert rig.ladder.tick(RETRY_AT) == [CheckGates(ANY)]
    assert rig.ladder.gates_checked(RETRY_AT, passed=True) == [launch()]
    assert rig.state() == State.RETRYING
    return RETRY_AT


def at_retry_probation(rig: Rig) -> float:
    """The slow retry's launch is live at t=320: probation until t=330."""
    at_retrying(rig)
    assert rig.ladder.probe(320.0, ok=True) == []
    assert rig.state() == State.PROBATION
    return 320.0


def at_maintenance(rig: Rig) -> float:
    at_healthy(rig)
    assert rig.ladder.pause(12.0) == []
    assert rig.state() == State.MAINTENANCE
    return 12.0


def at_probation_after_failure(rig: Rig) -> float:
    """Crashed at t=1 (relaunched at once, incident open), live at t=2: probation until t=12,
    consecutive_restarts=1, so the next failure backs off 10 s."""
    at_starting(rig)
    assert rig.ladder.exited(1.0, ExitKind.CRASH) == [opened(1.0), launch()]
    assert rig.ladder.probe(2.0, ok=True) == []
    assert rig.state() == State.PROBATION
    assert rig.ladder.consecutive_restarts == 1
    return 2.0


def at_healthy_after_failure(rig: Rig) -> float:
    """As above, probation passed at t=12 (incident closed); the failure is not forgotten until t=112."""
    at_probation_after_failure(rig)
    assert rig.ladder.tick(12.0) == [RECOVERED]
    assert rig.state() == State.HEALTHY
    assert rig.ladder.consecutive_restarts == 1
    return 12.0


def at_suspect_after_failure(rig: Rig) -> float:
    at_probation_after_failure(rig)
    assert rig.ladder.probe(3.0, ok=False) == []
    assert rig.state() == State.SUSPECT
    return 3.0


# --- edge registry -----------------------------------------------------------------------------------------

COVERED: set[Edge] = set()
F = TypeVar("F", bound=Callable[..., object])


def covers(*edges: Edge) -> Callable[[F], F]:
    """Record that the decorated test drives the ladder along these edges."""

    def mark(fn: F) -> F:
        COVERED.update(edges)
        return fn

    return mark


ALLOWED_EDGES: frozenset[Edge] = frozenset((old, new) for old, targets in ALLOWED.items() for new in targets)
FORBIDDEN_EDGES: list[Edge] = [
    (old, new) for old in State for new in State if old != new and (old, new) not in ALLOWED_EDGES
]

# Allowed by the table but taken by no input of `Ladder` today (kept explicit so a new edge needs a test).
UNREACHABLE: frozenset[Edge] = frozenset(
    {
        (State.RESTARTING, State.ESCALATED),  # an exit while restarting always relaunches or backs off
        (State.RESTARTING, State.STOPPED),
        (State.BACKOFF, State.RESTARTING),  # backoff elapsing launches directly
        (State.BACKOFF, State.ESCALATED),
        (State.BACKOFF, State.STOPPED),
        (State.ESCALATED, State.STOPPED),  # exits are ignored while hands-off
        (State.GAVE_UP, State.STOPPED),
        (State.MAINTENANCE, State.HEALTHY),  # resume goes through PROBATION
        (State.MAINTENANCE, State.SUSPECT),
        (State.MAINTENANCE, State.ESCALATED),
        (State.MAINTENANCE, State.GAVE_UP),
        (State.MAINTENANCE, State.STOPPED),
        (State.MAINTENANCE, State.RETRYING),  # resume launches afresh: the slow retry starts only from gave_up
        (State.RETRYING, State.STOPPED),  # only the daemon's shutdown takes it (through change_state)
    }
)


# --- one test per edge ---------------------------------------------------------------------------------------


@covers((State.STOPPED, State.STARTING))
@pytest.mark.parametrize(
    ("running", "expected"),
    [pytest.param(False, [launch()], id="launch"), pytest.param(True, [], id="adopt-running-process")],
)
def test_transition_stopped_to_starting(rig: Rig, running: bool, expected: list[Action]) -> None:
    actions = rig.ladder.start(5.0, running=running, live=True if running else None)
    assert actions == expected
    assert rig.state() == State.STARTING
    assert rig.ladder.running
    assert rig.ladder.startup_deadline == 65.0
    assert rig.moves() == [(State.STOPPED, State.STARTING, 5.0)]
    assert rig.log[0].reason


# Pausing works from every state; ALLOWED lets every state but MAINTENANCE itself move there.
PAUSE_FROM: list[tuple[State, Setup]] = [
    (State.STOPPED, at_stopped),
    (State.STARTING, at_starting),
    (State.PROBATION, at_probation),
    (State.HEALTHY, at_healthy),
    (State.SUSPECT, at_suspect),
    (State.RESTARTING, at_restarting),
    (State.BACKOFF, at_backoff),
    (State.ESCALATED, at_escalated),
    (State.GAVE_UP, at_gave_up),
    (State.RETRYING, lambda rig: at_retrying(rig)),
]


@covers(*((state, State.MAINTENANCE) for state, _ in PAUSE_FROM))
@pytest.mark.parametrize(("old", "setup"), [pytest.param(s, f, id=f"{s}_to_maintenance") for s, f in PAUSE_FROM])
def test_transition_any_to_maintenance(rig: Rig, old: State, setup: Setup) -> None:
    setup(rig)
    assert rig.state() == old
    rig.clear()
    assert rig.ladder.pause(100.0) == []
    assert rig.state() == State.MAINTENANCE
    assert rig.moves() == [(old, State.MAINTENANCE, 100.0)]
    assert rig.ladder.pause(101.0) == []  # pausing again is a no-op, not an illegal self-move
    assert rig.moves() == [(old, State.MAINTENANCE, 100.0)]


def test_every_state_but_maintenance_can_be_paused() -> None:
    assert {s for s, _ in PAUSE_FROM} == set(State) - {State.MAINTENANCE}


@covers((State.STARTING, State.PROBATION))
@pytest.mark.parametrize("adopted", [False, True], ids=["launched", "adopted"])
def test_transition_starting_to_probation(rig: Rig, adopted: bool) -> None:
    rig.ladder.start(0.0, running=adopted)
    rig.clear()
    assert rig.ladder.probe(3.0, ok=True) == []
    assert rig.state() == State.PROBATION
    assert rig.ladder.probation_until == 13.0
    assert rig.moves() == [(State.STARTING, State.PROBATION, 3.0)]


@covers((State.STARTING, State.RESTARTING))
@pytest.mark.parametrize("now", [60.0, 75.0], ids=["at-deadline", "past-deadline"])
def test_transition_starting_to_restarting(rig: Rig, now: float) -> None:
    at_starting(rig)
    assert rig.ladder.tick(now) == [opened(now), stop(HUNG)]
    assert rig.state() == State.RESTARTING
    assert rig.moves()[-1] == (State.STARTING, State.RESTARTING, now)
    assert rig.ladder.restart_at == now  # first failure: relaunch as soon as it is gone


@covers((State.STARTING, State.BACKOFF))
@pytest.mark.parametrize("kind", [ExitKind.CRASH, ExitKind.RESTART_REQUEST])
def test_transition_starting_to_backoff(rig: Rig, kind: ExitKind) -> None:
    at_starting(rig)
    rig.clear()
    # First crash: relaunched at once, STARTING -> STARTING is no move at all.
    assert rig.ladder.exited(1.0, ExitKind.CRASH) == [opened(1.0), launch()]
    assert rig.moves() == []
    # Second crash (exit 0 while not live counts as one too): wait the initial backoff.
    assert rig.ladder.exited(2.0, kind) == []  # the incident is already open
    assert rig.state() == State.BACKOFF
    assert rig.ladder.restart_at == 12.0
    assert rig.ladder.next_deadline() == 12.0
    assert rig.moves() == [(State.STARTING, State.BACKOFF, 2.0)]


@covers((State.STARTING, State.ESCALATED))
@pytest.mark.parametrize(
    ("limits", "kind", "cause"),
    [
        pytest.param(LIMITS, ExitKind.FATAL_CONFIG, "fatal_config", id="fatal-config"),
        pytest.param(LIMITS, ExitKind.PORT_IN_USE, "port_in_use", id="port-in-use"),
        pytest.param(LOOP1, ExitKind.CRASH, "crash_loop", id="crash-loop"),
    ],
)
def test_transition_starting_to_escalated(limits: LadderLimits, kind: ExitKind, cause: str) -> None:
    rig = make(limits)
    at_starting(rig)
    rig.clear()
    assert rig.ladder.exited(3.0, kind) == [opened(3.0), escalate(cause)]
    assert rig.state() == State.ESCALATED
    assert rig.ladder.restart_at is None
    assert rig.moves() == [(State.STARTING, State.ESCALATED, 3.0)]


@covers((State.STARTING, State.STOPPED))
def test_transition_starting_to_stopped(rig: Rig) -> None:
    at_starting(rig)
    rig.clear()
    assert rig.ladder.exited(3.0, ExitKind.REQUESTED) == []
    assert rig.state() == State.STOPPED
    assert not rig.ladder.running
    assert rig.moves() == [(State.STARTING, State.STOPPED, 3.0)]


@covers((State.PROBATION, State.HEALTHY))
@pytest.mark.parametrize(
    ("observe", "now"),
    [
        pytest.param("tick", 11.0, id="tick-at-end"),
        pytest.param("tick", 30.0, id="tick-late"),
        pytest.param("probe", 11.0, id="probe-at-end"),
        pytest.param("probe", 30.0, id="probe-late"),
    ],
)
def test_transition_probation_to_healthy(rig: Rig, observe: str, now: float) -> None:
    at_probation(rig)
    rig.clear()
    assert rig.ladder.tick(10.9) == []
    assert rig.ladder.probe(10.9, ok=True) == []
    assert rig.state() == State.PROBATION
    actions = rig.ladder.tick(now) if observe == "tick" else rig.ladder.probe(now, ok=True)
    assert actions == []  # no incident was open
    assert rig.state() == State.HEALTHY
    assert rig.ladder.probation_until is None
    assert rig.ladder.healthy_since == now
    assert rig.moves() == [(State.PROBATION, State.HEALTHY, now)]


@covers((State.PROBATION, State.SUSPECT))
def test_transition_probation_to_suspect(rig: Rig) -> None:
    at_probation(rig)
    rig.clear()
    assert rig.ladder.probe(5.0, ok=False) == []
    assert rig.state() == State.SUSPECT
    assert rig.ladder.suspect_count == 1
    assert rig.moves() == [(State.PROBATION, State.SUSPECT, 5.0)]


@covers((State.PROBATION, State.STARTING))
@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        pytest.param(ExitKind.CRASH, [opened(5.0), launch()], id="crash-relaunched-at-once"),
        pytest.param(ExitKind.RESTART_REQUEST, [launch()], id="restart-request"),
    ],
)
def test_transition_probation_to_starting(rig: Rig, kind: ExitKind, expected: list[Action]) -> None:
    at_probation(rig)
    rig.clear()
    assert rig.ladder.exited(5.0, kind) == expected
    assert rig.state() == State.STARTING
    assert rig.ladder.running
    assert rig.moves() == [(State.PROBATION, State.STARTING, 5.0)]


@covers((State.PROBATION, State.RESTARTING))
def test_transition_probation_to_restarting(rig: Rig) -> None:
    at_probation(rig)
    rig.clear()
    assert rig.ladder.memory_exceeded(5.0, "rss 4 GB") == [opened(5.0), stop(GRACEFUL)]
    assert rig.state() == State.RESTARTING
    assert rig.moves() == [(State.PROBATION, State.RESTARTING, 5.0)]


@covers((State.PROBATION, State.BACKOFF))
def test_transition_probation_to_backoff(rig: Rig) -> None:
    at_probation_after_failure(rig)
    rig.clear()
    assert rig.ladder.exited(5.0, ExitKind.CRASH) == []  # incident from t=1 still open
    assert rig.state() == State.BACKOFF
    assert rig.ladder.restart_at == 15.0
    assert rig.moves() == [(State.PROBATION, State.BACKOFF, 5.0)]


@covers((State.PROBATION, State.ESCALATED))
@pytest.mark.parametrize(
    ("limits", "kind", "cause"),
    [
        pytest.param(LIMITS, ExitKind.FATAL_CONFIG, "fatal_config", id="fatal-config"),
        pytest.param(LIMITS, ExitKind.PORT_IN_USE, "port_in_use", id="port-in-use"),
        pytest.param(LOOP1, ExitKind.CRASH, "crash_loop", id="crash-loop"),
    ],
)
def test_transition_probation_to_escalated(limits: LadderLimits, kind: ExitKind, cause: str) -> None:
    rig = make(limits)
    at_probation(rig)
    rig.clear()
    assert rig.ladder.exited(5.0, kind) == [opened(5.0), escalate(cause)]
    assert rig.state() == State.ESCALATED
    assert rig.moves() == [(State.PROBATION, State.ESCALATED, 5.0)]


@covers((State.PROBATION, State.STOPPED))
def test_transition_probation_to_stopped(rig: Rig) -> None:
    at_probation(rig)
    rig.clear()
    assert rig.ladder.exited(5.0, ExitKind.REQUESTED) == []
    assert rig.state() == State.STOPPED
    assert rig.moves() == [(State.PROBATION, State.STOPPED, 5.0)]


@covers((State.HEALTHY, State.SUSPECT))
def test_transition_healthy_to_suspect(rig: Rig) -> None:
    at_healthy(rig)
    rig.clear()
    assert rig.ladder.probe(12.0, ok=False) == []
    assert rig.state() == State.SUSPECT
    assert rig.ladder.suspect_since == 12.0
    assert rig.moves() == [(State.HEALTHY, State.SUSPECT, 12.0)]


@covers((State.HEALTHY, State.STARTING))
@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        pytest.param(ExitKind.CRASH, [opened(20.0), launch()], id="crash-relaunched-at-once"),
        pytest.param(ExitKind.RESTART_REQUEST, [launch()], id="restart-request"),
    ],
)
def test_transition_healthy_to_starting(rig: Rig, kind: ExitKind, expected: list[Action]) -> None:
    at_healthy(rig)
    rig.clear()
    assert rig.ladder.exited(20.0, kind) == expected
    assert rig.state() == State.STARTING
    assert rig.ladder.startup_deadline == 80.0
    assert rig.moves() == [(State.HEALTHY, State.STARTING, 20.0)]


@covers((State.HEALTHY, State.RESTARTING))
def test_transition_healthy_to_restarting(rig: Rig) -> None:
    at_healthy(rig)
    rig.clear()
    assert rig.ladder.memory_exceeded(20.0, "rss 4 GB") == [opened(20.0), stop(GRACEFUL)]
    assert rig.state() == State.RESTARTING
    assert rig.ladder.restart_at == 20.0
    assert rig.moves() == [(State.HEALTHY, State.RESTARTING, 20.0)]


@covers((State.HEALTHY, State.ESCALATED))
@pytest.mark.parametrize(
    ("limits", "kind", "cause"),
    [
        pytest.param(LIMITS, ExitKind.FATAL_CONFIG, "fatal_config", id="fatal-config"),
        pytest.param(LIMITS, ExitKind.PORT_IN_USE, "port_in_use", id="port-in-use"),
        pytest.param(LOOP1, ExitKind.CRASH, "crash_loop", id="crash-loop"),
    ],
)
def test_transition_healthy_to_escalated(limits: LadderLimits, kind: ExitKind, cause: str) -> None:
    rig = make(limits)
    at_healthy(rig)
    rig.clear()
    assert rig.ladder.exited(20.0, kind) == [opened(20.0), escalate(cause)]
    assert rig.state() == State.ESCALATED
    assert rig.moves() == [(State.HEALTHY, State.ESCALATED, 20.0)]


@covers((State.HEALTHY, State.STOPPED))
def test_transition_healthy_to_stopped(rig: Rig) -> None:
    at_healthy(rig)
    rig.clear()
    assert rig.ladder.exited(20.0, ExitKind.REQUESTED) == []
    assert rig.state() == State.STOPPED
    assert rig.ladder.healthy_since is None
    assert rig.moves() == [(State.HEALTHY, State.STOPPED, 20.0)]


@covers((State.SUSPECT, State.HEALTHY))
def test_transition_suspect_to_healthy(rig: Rig) -> None:
    at_suspect(rig)
    assert rig.ladder.probe(13.0, ok=False) == []
    rig.clear()
    assert rig.ladder.probe(14.0, ok=True) == []
    assert rig.state() == State.HEALTHY
    assert rig.ladder.suspect_count == 0
    assert rig.moves() == [(State.SUSPECT, State.HEALTHY, 14.0)]


@covers((State.SUSPECT, State.PROBATION))
def test_transition_suspect_to_probation(rig: Rig) -> None:
    at_probation(rig)  # probation until t=11
    assert rig.ladder.probe(5.0, ok=False) == []
    rig.clear()
    assert rig.ladder.probe(6.0, ok=True) == []
    assert rig.state() == State.PROBATION
    assert rig.ladder.probation_until == 11.0  # the probation period is not restarted
    assert rig.moves() == [(State.SUSPECT, State.PROBATION, 6.0)]
    assert rig.ladder.tick(11.0) == []
    assert rig.state() == State.HEALTHY


@covers((State.SUSPECT, State.STARTING))
@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        # The incident starts at the first failed probe, not at the exit.
        pytest.param(ExitKind.CRASH, [opened(12.0), launch()], id="crash-relaunched-at-once"),
        pytest.param(ExitKind.RESTART_REQUEST, [launch()], id="restart-request"),
    ],
)
def test_transition_suspect_to_starting(rig: Rig, kind: ExitKind, expected: list[Action]) -> None:
    at_suspect(rig)
    rig.clear()
    assert rig.ladder.exited(13.0, kind) == expected
    assert rig.state() == State.STARTING
    assert rig.moves() == [(State.SUSPECT, State.STARTING, 13.0)]


@covers((State.SUSPECT, State.RESTARTING))
@pytest.mark.parametrize(
    ("inputs", "expected"),
    [
        pytest.param([("probe", 13.0), ("probe", 14.0)], [opened(12.0), stop(HUNG)], id="threshold-of-failed-probes"),
        pytest.param([("memory", 14.0)], [opened(12.0), stop(GRACEFUL)], id="memory-exceeded"),
    ],
)
def test_transition_suspect_to_restarting(rig: Rig, inputs: list[tuple[str, float]], expected: list[Action]) -> None:
    at_suspect(rig)
    rig.clear()
    actions: list[Action] = []
    for kind, now in inputs:
        actions = rig.ladder.probe(now, ok=False) if kind == "probe" else rig.ladder.memory_exceeded(now, "rss")
    assert actions == expected
    assert rig.state() == State.RESTARTING
    assert rig.moves() == [(State.SUSPECT, State.RESTARTING, 14.0)]


@covers((State.SUSPECT, State.BACKOFF))
def test_transition_suspect_to_backoff(rig: Rig) -> None:
    at_suspect_after_failure(rig)
    rig.clear()
    assert rig.ladder.exited(4.0, ExitKind.CRASH) == []
    assert rig.state() == State.BACKOFF
    assert rig.ladder.restart_at == 14.0
    assert rig.moves() == [(State.SUSPECT, State.BACKOFF, 4.0)]


@covers((State.SUSPECT, State.ESCALATED))
@pytest.mark.parametrize(
    ("kind", "cause"),
    [
        pytest.param(ExitKind.FATAL_CONFIG, "fatal_config", id="fatal-config"),
        pytest.param(ExitKind.PORT_IN_USE, "port_in_use", id="port-in-use"),
    ],
)
def test_transition_suspect_to_escalated(rig: Rig, kind: ExitKind, cause: str) -> None:
    at_suspect(rig)
    rig.clear()
    assert rig.ladder.exited(13.0, kind) == [opened(12.0), escalate(cause)]
    assert rig.state() == State.ESCALATED
    assert rig.moves() == [(State.SUSPECT, State.ESCALATED, 13.0)]


@covers((State.SUSPECT, State.ESCALATED))
def test_transition_suspect_to_escalated_on_crash_loop_leaves_the_process_alone() -> None:
    rig = make(LOOP1)
    at_suspect(rig)
    rig.clear()
    assert rig.ladder.probe(13.0, ok=False) == []
    assert rig.ladder.probe(14.0, ok=False) == [opened(12.0), escalate("crash_loop")]  # no Stop, no Launch
    assert rig.state() == State.ESCALATED
    assert rig.ladder.running
    assert rig.moves() == [(State.SUSPECT, State.ESCALATED, 14.0)]


@covers((State.SUSPECT, State.STOPPED))
def test_transition_suspect_to_stopped(rig: Rig) -> None:
    at_suspect(rig)
    rig.clear()
    assert rig.ladder.exited(13.0, ExitKind.REQUESTED) == []
    assert rig.state() == State.STOPPED
    assert rig.moves() == [(State.SUSPECT, State.STOPPED, 13.0)]


@covers((State.RESTARTING, State.STARTING))
@pytest.mark.parametrize("kind", list(ExitKind))
@pytest.mark.parametrize("now", [12.0, 13.0], ids=["at-restart-at", "after-restart-at"])
def test_transition_restarting_to_starting(rig: Rig, kind: ExitKind, now: float) -> None:
    """Whatever the exit looks like, the process we were stopping is gone: launch the new one."""
    at_restarting(rig)  # restart_at = 12
    rig.clear()
    assert rig.ladder.exited(now, kind) == [launch()]
    assert rig.state() == State.STARTING
    assert rig.ladder.restart_at is None
    assert rig.moves() == [(State.RESTARTING, State.STARTING, now)]


@covers((State.RESTARTING, State.BACKOFF))
def test_transition_restarting_to_backoff(rig: Rig) -> None:
    at_healthy_after_failure(rig)
    assert rig.ladder.memory_exceeded(20.0, "rss") == [opened(20.0), stop(GRACEFUL)]
    assert rig.ladder.restart_at == 30.0  # second failure in a row: 10 s
    rig.clear()
    assert rig.ladder.exited(21.0, ExitKind.CRASH) == []
    assert rig.state() == State.BACKOFF
    assert rig.ladder.restart_at == 30.0
    assert rig.moves() == [(State.RESTARTING, State.BACKOFF, 21.0)]


@covers((State.BACKOFF, State.STARTING))
@pytest.mark.parametrize("now", [12.0, 50.0], ids=["at-restart-at", "late-tick"])
def test_transition_backoff_to_starting(rig: Rig, now: float) -> None:
    at_backoff(rig)  # restart_at = 12
    rig.clear()
    assert rig.ladder.tick(11.99) == []
    assert rig.state() == State.BACKOFF
    assert rig.ladder.tick(now) == [launch()]
    assert rig.state() == State.STARTING
    assert rig.ladder.restart_at is None
    assert rig.moves() == [(State.BACKOFF, State.STARTING, now)]


@covers((State.ESCALATED, State.GAVE_UP))
def test_transition_escalated_to_gave_up(rig: Rig) -> None:
    at_escalated(rig)
    rig.clear()
    assert rig.ladder.verdict(20.0, healed=False, detail="config still invalid") == []
    assert rig.state() == State.GAVE_UP
    assert rig.moves() == [(State.ESCALATED, State.GAVE_UP, 20.0)]
    assert rig.log[0].reason == "config still invalid"


@covers((State.ESCALATED, State.STARTING))
@pytest.mark.parametrize(
    ("limits", "setup", "act", "expected"),
    [
        pytest.param(LIMITS, at_escalated_after_failure, "verdict", [launch()], id="healed-not-running-launches"),
        pytest.param(LOOP1, at_escalated_running, "in-place", [], id="healed-in-place-waits-for-liveness"),
        pytest.param(LIMITS, at_escalated_after_failure, "resume", [launch()], id="resume-not-running-launches"),
        pytest.param(LOOP1, at_escalated_running, "resume", [], id="resume-running-not-live"),
    ],
)
def test_transition_escalated_to_starting(limits: LadderLimits, setup: Setup, act: str, expected: list[Action]) -> None:
    rig = make(limits)
    setup(rig)
    assert rig.ladder.failures
    rig.clear()
    if act == "resume":
        actions = rig.ladder.resume(20.0)
    else:
        actions = rig.ladder.verdict(20.0, healed=True, restart=act != "in-place")
    assert actions == expected
    assert rig.state() == State.STARTING
    assert rig.ladder.startup_deadline == 80.0
    assert rig.ladder.consecutive_restarts == 0  # a human or the doctor looked: failures forgotten
    assert not rig.ladder.failures
    assert rig.moves() == [(State.ESCALATED, State.STARTING, 20.0)]


@covers((State.ESCALATED, State.RESTARTING))
def test_transition_escalated_to_restarting() -> None:
    """Healed while our (not live) process still runs: it is stopped and launched again at once."""
    rig = make(LOOP1)
    at_escalated_running(rig)
    rig.clear()
    actions = rig.ladder.verdict(20.0, healed=True, detail="restored known-good")
    assert actions == [Stop("restored known-good", LOOP1.hung_stop_timeout_s)]
    assert rig.state() == State.RESTARTING
    assert rig.moves() == [(State.ESCALATED, State.RESTARTING, 20.0)]
    assert not rig.ladder.failures
    assert rig.ladder.exited(21.0, ExitKind.CRASH, "killed") == [launch()]
    assert rig.state() == State.STARTING


@covers((State.ESCALATED, State.PROBATION))
def test_transition_escalated_to_probation() -> None:
    rig = make(LOOP1)
    at_escalated_running(rig)
    rig.clear()
    assert rig.ladder.probe(20.0, ok=True) == []
    assert rig.state() == State.PROBATION
    assert rig.ladder.probation_until == 30.0
    assert rig.moves() == [(State.ESCALATED, State.PROBATION, 20.0)]
    assert rig.ladder.tick(30.0) == [RECOVERED]
    assert rig.state() == State.HEALTHY


@covers((State.GAVE_UP, State.STARTING))
@pytest.mark.parametrize(
    ("limits", "setup", "expected"),
    [
        pytest.param(LIMITS, at_gave_up, [launch()], id="not-running-launches"),
        pytest.param(LOOP1, at_gave_up_running, [], id="running-not-live-waits"),
    ],
)
def test_transition_gave_up_to_starting(limits: LadderLimits, setup: Setup, expected: list[Action]) -> None:
    rig = make(limits)
    setup(rig)
    rig.clear()
    assert rig.ladder.resume(20.0) == expected
    assert rig.state() == State.STARTING
    assert rig.ladder.consecutive_restarts == 0
    assert not rig.ladder.failures
    assert rig.moves() == [(State.GAVE_UP, State.STARTING, 20.0)]


@covers((State.GAVE_UP, State.PROBATION))
def test_transition_gave_up_to_probation() -> None:
    rig = make(LOOP1)
    at_gave_up_running(rig)
    rig.clear()
    assert rig.ladder.probe(20.0, ok=True) == []
    assert rig.state() == State.PROBATION
    assert rig.ladder.probation_until == 30.0
    assert rig.moves() == [(State.GAVE_UP, State.PROBATION, 20.0)]


def _exit_during_maintenance(rig: Rig) -> None:
    at_maintenance(rig)
    assert rig.ladder.exited(13.0, ExitKind.CRASH) == []


def _hang_during_maintenance(rig: Rig) -> None:
    at_maintenance(rig)
    assert rig.ladder.probe(13.0, ok=False) == []


@covers((State.MAINTENANCE, State.STARTING))
@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        pytest.param(_exit_during_maintenance, [launch()], id="not-running-launches"),
        pytest.param(_hang_during_maintenance, [], id="running-not-live-waits"),
    ],
)
def test_transition_maintenance_to_starting(rig: Rig, setup: Callable[[Rig], None], expected: list[Action]) -> None:
    setup(rig)
    rig.clear()
    assert rig.ladder.resume(20.0) == expected
    assert rig.state() == State.STARTING
    assert rig.ladder.startup_deadline == 80.0
    assert rig.moves() == [(State.MAINTENANCE, State.STARTING, 20.0)]


@covers((State.MAINTENANCE, State.PROBATION), (State.PROBATION, State.HEALTHY))
def test_transition_maintenance_to_probation(rig: Rig) -> None:
    """Resumed while live: the (zero-length) probation passes at once, so it lands in HEALTHY."""
    at_maintenance(rig)
    assert rig.ladder.probe(13.0, ok=True) == []
    rig.clear()
    assert rig.ladder.resume(20.0) == []
    assert rig.state() == State.HEALTHY
    assert rig.moves() == [
        (State.MAINTENANCE, State.PROBATION, 20.0),
        (State.PROBATION, State.HEALTHY, 20.0),
    ]


# --- the slow retry after gave_up, and a daemon restart (Saved → restore) ---------------------------------------


@covers((State.GAVE_UP, State.RETRYING))
def test_transition_gave_up_to_retrying(rig: Rig) -> None:
    at_gave_up(rig)
    rig.clear()
    assert rig.ladder.tick(RETRY_AT - 1) == []  # not yet due
    assert rig.ladder.tick(RETRY_AT) == [CheckGates(ANY)]
    assert rig.ladder.tick(RETRY_AT + 1) == []  # the gates are in flight: asked once
    assert rig.state() == State.GAVE_UP
    assert rig.ladder.gates_checked(RETRY_AT + 2, passed=True) == [launch()]
    assert rig.state() == State.RETRYING
    assert rig.ladder.startup_deadline == RETRY_AT + 2 + 60.0
    assert rig.moves() == [(State.GAVE_UP, State.RETRYING, RETRY_AT + 2)]


def test_slow_retry_blocked_by_a_gate_stays_gave_up_without_launching(rig: Rig) -> None:
    """A fault a launch cannot fix (a squatter on the port, unsupported Node…): no launch, looked at next period."""
    at_gave_up(rig)
    rig.clear()
    assert rig.ladder.tick(RETRY_AT) == [CheckGates(ANY)]
    assert rig.ladder.gates_checked(RETRY_AT, passed=False) == []
    assert rig.state() == State.GAVE_UP
    assert rig.ladder.retry_at == RETRY_AT + 300.0
    assert rig.ladder.next_deadline() == RETRY_AT + 300.0
    assert rig.moves() == []
    assert rig.ladder.tick(RETRY_AT + 300.0) == [CheckGates(ANY)]


def test_slow_retry_period_is_jittered() -> None:
    low, high = make(rng=constant(0.0)), make(rng=constant(1.0))
    at_gave_up(low)
    at_gave_up(high)
    assert low.ladder.retry_at == pytest.approx(13.0 + 270.0)
    assert high.ladder.retry_at == pytest.approx(13.0 + 330.0)


def test_slow_retry_off_when_the_period_is_zero() -> None:
    rig = make(replace(LIMITS, retry_after_gave_up_s=0.0))
    at_gave_up(rig)
    assert rig.ladder.retry_at is None
    assert rig.ladder.next_deadline() is None
    assert rig.ladder.tick(1e9) == []
    assert rig.state() == State.GAVE_UP


def test_gates_answer_outside_gave_up_is_ignored(rig: Rig) -> None:
    """Paused while the gates ran: the human is in charge, no launch."""
    at_gave_up(rig)
    assert rig.ladder.tick(RETRY_AT) == [CheckGates(ANY)]
    assert rig.ladder.pause(RETRY_AT + 1) == []
    assert rig.ladder.gates_checked(RETRY_AT + 2, passed=True) == []
    assert rig.state() == State.MAINTENANCE


@covers((State.RETRYING, State.PROBATION), (State.PROBATION, State.HEALTHY))
def test_transition_retrying_to_probation_then_recovered(rig: Rig) -> None:
    """gave_up → retrying → probation → healthy: the incident closes as recovered, past failures forgotten."""
    at_retrying(rig)
    rig.clear()
    assert rig.ladder.probe(315.0, ok=False) == []  # inside the startup grace: nothing
    assert rig.ladder.probe(320.0, ok=True) == []
    assert rig.state() == State.PROBATION
    assert rig.ladder.tick(329.0) == []
    assert rig.ladder.tick(330.0) == [RECOVERED]
    assert rig.state() == State.HEALTHY
    assert not rig.ladder.incident_open
    assert not rig.ladder.retrying
    assert rig.ladder.consecutive_restarts == 0
    assert rig.moves() == [(State.RETRYING, State.PROBATION, 320.0), (State.PROBATION, State.HEALTHY, 330.0)]


@covers((State.RETRYING, State.GAVE_UP))
@pytest.mark.parametrize(
    ("how", "now"),
    [
        pytest.param("crash", 315.0, id="exited"),
        pytest.param("fatal", 315.0, id="exit-not-fixable-by-restart"),
        pytest.param("timeout", 373.0, id="not-live-within-startup-grace"),
    ],
)
def test_transition_retrying_to_gave_up(rig: Rig, how: str, now: float) -> None:
    """The slow retry failed: still gave up, the same incident (nothing opened, nothing escalated), next try later."""
    at_retrying(rig)
    rig.clear()
    if how == "crash":
        actions = rig.ladder.exited(now, ExitKind.CRASH, "exit 1")
    elif how == "fatal":
        actions = rig.ladder.exited(now, ExitKind.PORT_IN_USE, "EADDRINUSE")
    else:
        assert rig.ladder.tick(now - 1) == []
        actions = rig.ladder.tick(now)
    expected: list[Action] = [stop(HUNG)] if how == "timeout" else []  # a process not live by then is stopped
    assert actions == expected
    assert rig.state() == State.GAVE_UP
    assert rig.ladder.incident_open
    assert rig.ladder.retry_at == now + 300.0
    assert rig.moves() == [(State.RETRYING, State.GAVE_UP, now)]
    assert rig.ladder.exited(now + 1, ExitKind.REQUESTED) == []  # the stopped retry's exit changes nothing


@covers((State.PROBATION, State.GAVE_UP))
def test_transition_probation_to_gave_up(rig: Rig) -> None:
    """The slow retry's launch was live, then crashed during its probation: back to gave up, no backoff."""
    at_retry_probation(rig)
    rig.clear()
    assert rig.ladder.exited(325.0, ExitKind.CRASH, "killed") == []
    assert rig.state() == State.GAVE_UP
    assert rig.ladder.retry_at == 625.0
    assert rig.moves() == [(State.PROBATION, State.GAVE_UP, 325.0)]


@covers((State.SUSPECT, State.GAVE_UP))
def test_transition_suspect_to_gave_up(rig: Rig) -> None:
    """The slow retry's launch stopped answering during its probation: stopped, back to gave up."""
    at_retry_probation(rig)
    rig.clear()
    assert rig.ladder.probe(321.0, ok=False) == []
    assert rig.ladder.probe(322.0, ok=False) == []
    assert rig.ladder.probe(323.0, ok=False) == [stop(HUNG)]
    assert rig.state() == State.GAVE_UP
    assert rig.moves() == [(State.PROBATION, State.SUSPECT, 321.0), (State.SUSPECT, State.GAVE_UP, 323.0)]


def test_slow_retry_of_a_running_process_stops_it_then_launches() -> None:
    """Gave up with our hung process still running: the retry stops it and launches once it is gone."""
    rig = make(LOOP1)
    at_gave_up_running(rig)
    retry_at = rig.ladder.retry_at
    assert retry_at == 315.0
    assert rig.ladder.tick(retry_at) == [CheckGates(ANY)]
    assert rig.ladder.gates_checked(retry_at, passed=True) == [stop(HUNG)]
    assert rig.state() == State.RETRYING
    assert rig.ladder.probe(retry_at + 0.5, ok=True) == []  # the old process: not the retry's verdict
    assert rig.state() == State.RETRYING
    assert rig.ladder.exited(retry_at + 1, ExitKind.REQUESTED) == [launch()]
    assert rig.ladder.startup_deadline == retry_at + 61.0
    assert rig.ladder.probe(retry_at + 2, ok=True) == []
    assert rig.state() == State.PROBATION


def test_restart_request_during_the_slow_retry_is_ignored(rig: Rig) -> None:
    at_retrying(rig)
    assert rig.ladder.request_restart(314.0) == []
    assert rig.state() == State.RETRYING


def test_saved_round_trip(rig: Rig) -> None:
    at_gave_up(rig)
    saved = rig.ladder.saved()
    assert saved == Saved(State.GAVE_UP, 13.0, (), 0, True, "fatal_config", ANY, RETRY_AT)


@covers((State.STOPPED, State.GAVE_UP))
def test_transition_stopped_to_gave_up(rig: Rig) -> None:
    """A daemon restart while gave up: still gave up (no launch, no incident, no escalation), retry on schedule."""
    before = make()
    at_gave_up(before)
    rig.clear()
    assert rig.ladder.restore(20.0, before.ladder.saved()) == []
    assert rig.state() == State.GAVE_UP
    assert rig.ladder.incident_open
    assert rig.ladder.retry_at == RETRY_AT
    assert rig.moves() == [(State.STOPPED, State.GAVE_UP, 20.0)]
    assert rig.ladder.start(21.0) == []  # the daemon's start: hands-off still
    assert rig.ladder.exited(22.0, ExitKind.CRASH) == []
    assert rig.state() == State.GAVE_UP
    assert rig.ladder.tick(RETRY_AT) == [CheckGates(ANY)]


def test_restore_while_retrying_counts_that_try_as_failed(rig: Rig) -> None:
    before = make()
    at_retrying(before)
    assert rig.ladder.restore(400.0, before.ladder.saved()) == []
    assert rig.state() == State.GAVE_UP
    assert rig.ladder.retry_at == 700.0


@covers((State.STOPPED, State.ESCALATED))
def test_transition_stopped_to_escalated(rig: Rig) -> None:
    """The daemon died while the doctor worked: its answer is lost, so the doctor is asked again, same incident."""
    before = make()
    at_escalated(before)
    assert rig.ladder.restore(20.0, before.ladder.saved()) == [escalate("fatal_config")]
    assert rig.state() == State.ESCALATED
    assert rig.ladder.incident_open
    assert rig.moves() == [(State.STOPPED, State.ESCALATED, 20.0)]
    assert rig.ladder.verdict(21.0, healed=False) == []
    assert rig.state() == State.GAVE_UP


def test_restore_keeps_the_failure_window_so_a_crash_loop_escalates_instead_of_flapping() -> None:
    """Four crashes, daemon restarted: the fifth crash inside the window escalates (no fresh five tries)."""
    before = make(NO_LOOP)
    at_starting(before)
    for t in (1.0, 2.0, 13.0, 34.0):
        before.ladder.exited(t, ExitKind.CRASH)
        if before.ladder.restart_at is not None:
            before.ladder.tick(before.ladder.restart_at)  # backoff elapses: launched again
    saved = before.ladder.saved()
    assert len(saved.failures) == 4
    rig = make()
    assert rig.ladder.restore(500.0, saved) == []
    assert rig.state() == State.STOPPED
    assert rig.ladder.start(500.0) == [launch()]
    assert "relaunch after daemon restart" in rig.log[-1].reason
    assert rig.ladder.exited(501.0, ExitKind.CRASH) == [escalate("crash_loop")]  # incident already open: not again


def test_restore_forgets_failures_older_than_the_window() -> None:
    saved = Saved(State.HEALTHY, 5.0, failures=(1.0, 2.0, 900.0), consecutive_restarts=3)
    rig = make()
    rig.ladder.restore(1000.0, saved)
    assert list(rig.ladder.failures) == [900.0]
    assert rig.ladder.consecutive_restarts == 3


def test_first_start_is_an_initial_start(rig: Rig) -> None:
    at_starting(rig)
    assert rig.log[-1].reason == "initial start"


def test_restore_after_the_daemon_started_is_ignored(rig: Rig) -> None:
    at_healthy(rig)
    assert rig.ladder.restore(20.0, Saved(State.GAVE_UP, 1.0, incident_open=True)) == []
    assert rig.state() == State.HEALTHY


def test_every_allowed_edge_is_covered_or_known_unreachable() -> None:
    assert COVERED <= ALLOWED_EDGES, sorted(COVERED - ALLOWED_EDGES)
    assert UNREACHABLE <= ALLOWED_EDGES, sorted(UNREACHABLE - ALLOWED_EDGES)
    assert not COVERED & UNREACHABLE, sorted(COVERED & UNREACHABLE)
    assert COVERED | UNREACHABLE == ALLOWED_EDGES, sorted(ALLOWED_EDGES - COVERED - UNREACHABLE)


# --- change_state against ALLOWED ---------------------------------------------------------------------------


@pytest.mark.parametrize(("old", "new"), FORBIDDEN_EDGES, ids=[f"{o}_to_{n}" for o, n in FORBIDDEN_EDGES])
def test_illegal_transition_raises(old: State, new: State) -> None:
    log: list[Transition] = []
    ladder = Ladder(limits=LIMITS, state=old, since=1.0, on_change=log.append)
    with pytest.raises(IllegalTransition, match=f"{old} -> {new}"):
        ladder.change_state(new, 5.0, "test")
    assert state_of(ladder) == old
    assert ladder.since == 1.0
    assert log == []


def test_forbidden_table_is_not_empty() -> None:
    # A guard for the parametrisation above: the diagram forbids, among others, these moves.
    assert (State.STOPPED, State.HEALTHY) in FORBIDDEN_EDGES
    assert (State.MAINTENANCE, State.RESTARTING) in FORBIDDEN_EDGES
    assert (State.GAVE_UP, State.RESTARTING) in FORBIDDEN_EDGES


ALLOWED_LIST = sorted(ALLOWED_EDGES)


@pytest.mark.parametrize(("old", "new"), ALLOWED_LIST, ids=[f"{o}_to_{n}" for o, n in ALLOWED_LIST])
def test_allowed_change_state_emits_transition(old: State, new: State) -> None:
    log: list[Transition] = []
    ladder = Ladder(limits=LIMITS, state=old, on_change=log.append)
    ladder.change_state(new, 7.0, "why")
    assert state_of(ladder) == new
    assert ladder.since == 7.0
    assert ladder.healthy_since == (7.0 if new == State.HEALTHY else None)
    assert log == [Transition(old, new, 7.0, "why")]


@pytest.mark.parametrize("state", list(State))
def test_change_state_to_same_state_is_a_silent_no_op(state: State) -> None:
    log: list[Transition] = []
    ladder = Ladder(limits=LIMITS, state=state, since=1.0, on_change=log.append)
    ladder.change_state(state, 7.0, "again")
    assert state_of(ladder) == state
    assert ladder.since == 1.0
    assert log == []


def test_change_state_without_listener() -> None:
    ladder = Ladder(limits=LIMITS)
    assert ladder.start(1.0) == [launch()]
    assert state_of(ladder) == State.STARTING


# --- backoff -------------------------------------------------------------------------------------------------


def test_first_restart_after_a_healthy_period_is_immediate(rig: Rig) -> None:
    at_healthy(rig)
    assert rig.ladder.exited(20.0, ExitKind.CRASH) == [opened(20.0), launch()]
    assert rig.state() == State.STARTING
    assert rig.ladder.consecutive_restarts == 1


def test_first_backoff_delay_does_not_consult_the_rng() -> None:
    def boom() -> float:
        raise AssertionError("rng used for an immediate restart")

    ladder = Ladder(limits=LIMITS, rng=boom)
    assert ladder.backoff_delay() == 0.0


@pytest.mark.parametrize(
    ("consecutive", "expected"),
    [(0, 0.0), (1, 10.0), (2, 20.0), (3, 40.0), (4, 80.0), (5, 160.0), (6, 320.0), (7, 600.0), (8, 600.0), (30, 600.0)],
)
def test_backoff_delay_doubles_up_to_the_cap(consecutive: int, expected: float) -> None:
    ladder = Ladder(limits=LIMITS, rng=middle, consecutive_restarts=consecutive)
    assert ladder.backoff_delay() == pytest.approx(expected)


@pytest.mark.parametrize(
    ("rng_value", "consecutive", "expected"),
    [
        (0.0, 1, 8.0),
        (0.5, 1, 10.0),
        (1.0, 1, 12.0),
        (0.0, 3, 32.0),
        (0.5, 3, 40.0),
        (1.0, 3, 48.0),
        (0.0, 6, 256.0),
        (1.0, 6, 384.0),
        (0.0, 7, 480.0),  # at the cap the jitter can only shorten the wait ...
        (0.5, 7, 600.0),
        (1.0, 7, 600.0),  # ... never lengthen it past backoff_max_s
    ],
)
def test_backoff_jitter_pinned(rng_value: float, consecutive: int, expected: float) -> None:
    ladder = Ladder(limits=LIMITS, rng=constant(rng_value), consecutive_restarts=consecutive)
    assert ladder.backoff_delay() == pytest.approx(expected)


@pytest.mark.parametrize("consecutive", range(1, 10))
def test_backoff_jitter_stays_within_bounds(consecutive: int) -> None:
    base = min(600.0, 10.0 * 2 ** (consecutive - 1))
    for i in range(21):
        ladder = Ladder(limits=LIMITS, rng=constant(i / 20), consecutive_restarts=consecutive)
        delay = ladder.backoff_delay()
        assert base * 0.8 - 1e-9 <= delay <= min(base * 1.2, 600.0) + 1e-9


@pytest.mark.parametrize(
    ("rng_value", "expected"),
    [
        (0.5, [0.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0, 600.0, 600.0]),
        (0.0, [0.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 480.0, 480.0]),
        (1.0, [0.0, 12.0, 24.0, 48.0, 96.0, 192.0, 384.0, 600.0, 600.0]),
    ],
)
def test_repeated_crashes_back_off_exponentially(rng_value: float, expected: list[float]) -> None:
    rig = make(NO_LOOP, rng=constant(rng_value))
    ladder = rig.ladder
    ladder.start(0.0)
    now = 0.0
    delays: list[float] = []
    for _ in expected:
        now += 1.0
        actions = ladder.exited(now, ExitKind.CRASH)
        if state_of(ladder) == State.STARTING:
            assert actions[-1] == launch()
            delays.append(0.0)
            continue
        assert state_of(ladder) == State.BACKOFF
        assert actions == []
        assert ladder.restart_at is not None
        delays.append(ladder.restart_at - now)
        assert ladder.tick(ladder.restart_at - 0.01) == []
        now = ladder.restart_at
        assert ladder.tick(now) == [launch()]
    assert delays == pytest.approx(expected)


@pytest.mark.parametrize("observe", ["tick", "probe"])
def test_stable_healthy_period_forgets_failures(rig: Rig, observe: str) -> None:
    at_healthy_after_failure(rig)  # healthy since t=12 with one failure on record
    assert rig.ladder.tick(111.9) == []
    assert rig.ladder.probe(111.9, ok=True) == []
    assert rig.ladder.consecutive_restarts == 1
    assert list(rig.ladder.failures) == [1.0]
    actions = rig.ladder.tick(112.0) if observe == "tick" else rig.ladder.probe(112.0, ok=True)
    assert actions == []
    assert rig.ladder.consecutive_restarts == 0
    assert not rig.ladder.failures
    # The next restart is immediate again.
    assert rig.ladder.exited(113.0, ExitKind.CRASH) == [opened(113.0), launch()]
    assert rig.state() == State.STARTING


def test_hang_soon_after_recovery_backs_off(rig: Rig) -> None:
    at_healthy_after_failure(rig)
    for now in (13.0, 14.0):
        assert rig.ladder.probe(now, ok=False) == []
    assert rig.ladder.probe(15.0, ok=False) == [opened(13.0), stop(HUNG)]
    assert rig.ladder.restart_at == 25.0
    assert rig.ladder.exited(16.0, ExitKind.CRASH) == []
    assert rig.state() == State.BACKOFF
    assert rig.ladder.tick(25.0) == [launch()]


@covers((State.HEALTHY, State.BACKOFF))
def test_transition_healthy_to_backoff(rig: Rig) -> None:
    at_healthy_after_failure(rig)  # healthy since t=12, one failure on record
    assert rig.ladder.exited(20.0, ExitKind.CRASH) == [opened(20.0)]
    assert rig.state() == State.BACKOFF
    assert rig.ladder.restart_at == 30.0


# --- crash loop -----------------------------------------------------------------------------------------------


def _crash_until_loop(rig: Rig, count: int) -> tuple[float, list[Action]]:
    """Start, then crash `count` times, each one second after the (re)launch; return the time of the last
    (re)launch and the actions of the last crash."""
    ladder = rig.ladder
    ladder.start(0.0)
    now = 0.0
    actions: list[Action] = []
    for _ in range(count):
        now += 1.0
        actions = ladder.exited(now, ExitKind.CRASH)
        if state_of(ladder) == State.BACKOFF:
            assert ladder.restart_at is not None
            now = ladder.restart_at
            assert ladder.tick(now) == [launch()]
    return now, actions


@pytest.mark.parametrize(("failures", "window"), [(3, 100.0), (5, 600.0)])
def test_crash_loop_escalates_instead_of_restarting(failures: int, window: float) -> None:
    rig = make(replace(LIMITS, crash_loop_failures=failures, crash_loop_window_s=window))
    last, _ = _crash_until_loop(rig, failures - 1)
    assert rig.state() == State.STARTING
    consecutive = rig.ladder.consecutive_restarts
    rig.clear()
    now = last + 1.0
    actions = rig.ladder.exited(now, ExitKind.CRASH)
    assert actions == [escalate("crash_loop")]  # the incident is already open; no Launch, no Stop
    assert rig.state() == State.ESCALATED
    assert rig.ladder.restart_at is None
    assert rig.ladder.consecutive_restarts == consecutive
    assert len(rig.ladder.failures) == failures
    assert rig.moves() == [(State.STARTING, State.ESCALATED, now)]
    # Hands off from now on: ticks and further exits do nothing.
    assert rig.ladder.tick(now + 1000.0) == []
    assert rig.ladder.exited(now + 1000.0, ExitKind.CRASH) == []


def test_failures_spread_wider_than_the_window_do_not_escalate() -> None:
    rig = make(replace(LIMITS, crash_loop_failures=3, crash_loop_window_s=10.0))
    ladder = rig.ladder
    ladder.start(0.0)
    now = 0.0
    for _ in range(8):  # backoff gaps (>= 10 s) keep at most two failures inside the 10 s window
        now += 1.0
        ladder.exited(now, ExitKind.CRASH)
        assert state_of(ladder) in (State.STARTING, State.BACKOFF)
        assert len(ladder.failures) <= 2
        if state_of(ladder) == State.BACKOFF:
            assert ladder.restart_at is not None
            now = ladder.restart_at
            assert ladder.tick(now) == [launch()]
    assert State.ESCALATED not in {t.new for t in rig.log}


@pytest.mark.parametrize(
    ("second_crash_at", "escalates"),
    [pytest.param(11.0, True, id="on-the-window-edge"), pytest.param(11.5, False, id="just-outside")],
)
def test_crash_loop_window_boundary(second_crash_at: float, escalates: bool) -> None:
    rig = make(replace(LIMITS, crash_loop_failures=2, crash_loop_window_s=10.0))
    rig.ladder.start(0.0)
    assert rig.ladder.exited(1.0, ExitKind.CRASH) == [opened(1.0), launch()]
    actions = rig.ladder.exited(second_crash_at, ExitKind.CRASH)
    if escalates:
        assert actions == [escalate("crash_loop")]
        assert rig.state() == State.ESCALATED
    else:
        assert actions == []
        assert rig.state() == State.BACKOFF
        assert list(rig.ladder.failures) == [second_crash_at]


# --- exit kinds -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setup", "old"),
    [
        pytest.param(at_probation_after_failure, State.PROBATION, id="probation"),
        pytest.param(at_healthy_after_failure, State.HEALTHY, id="healthy"),
        pytest.param(at_suspect_after_failure, State.SUSPECT, id="suspect"),
    ],
)
def test_restart_request_relaunches_without_counting_a_failure(rig: Rig, setup: Setup, old: State) -> None:
    now = setup(rig) + 1.0
    consecutive = rig.ladder.consecutive_restarts
    failures = list(rig.ladder.failures)
    incident = rig.ladder.incident_open
    rig.clear()
    assert rig.ladder.exited(now, ExitKind.RESTART_REQUEST) == [launch()]  # no OpenIncident, no backoff
    assert rig.state() == State.STARTING
    assert rig.ladder.consecutive_restarts == consecutive
    assert list(rig.ladder.failures) == failures
    assert rig.ladder.incident_open == incident
    assert rig.moves() == [(old, State.STARTING, now)]


def test_restart_request_from_clean_healthy_opens_nothing(rig: Rig) -> None:
    at_healthy(rig)
    assert rig.ladder.exited(20.0, ExitKind.RESTART_REQUEST) == [launch()]
    assert rig.ladder.consecutive_restarts == 0
    assert not rig.ladder.failures
    assert not rig.ladder.incident_open


@pytest.mark.parametrize("kind", FATAL_KINDS)
@pytest.mark.parametrize(
    "setup",
    [at_starting, at_probation, at_healthy, at_suspect],
    ids=["starting", "probation", "healthy", "suspect"],
)
def test_fatal_exits_escalate_at_once(rig: Rig, setup: Setup, kind: ExitKind) -> None:
    now = setup(rig) + 1.0
    actions = rig.ladder.exited(now, kind)
    assert [type(a) for a in actions] == [OpenIncident, Escalate]
    assert actions[-1] == escalate(kind.value)
    assert rig.state() == State.ESCALATED
    assert not rig.ladder.failures  # not a crash-loop failure either
    assert rig.ladder.consecutive_restarts == 0


@pytest.mark.parametrize(
    ("setup", "state"),
    [
        pytest.param(at_backoff, State.BACKOFF, id="backoff"),
        pytest.param(at_escalated, State.ESCALATED, id="escalated"),
        pytest.param(at_gave_up, State.GAVE_UP, id="gave-up"),
        pytest.param(at_maintenance, State.MAINTENANCE, id="maintenance"),
    ],
)
@pytest.mark.parametrize("kind", list(ExitKind))
def test_exit_in_a_hands_off_state_does_nothing(rig: Rig, setup: Setup, state: State, kind: ExitKind) -> None:
    now = setup(rig) + 1.0
    rig.clear()
    assert rig.ladder.exited(now, kind) == []
    assert rig.state() == state
    assert not rig.ladder.running
    assert rig.moves() == []


def test_exit_after_a_requested_stop_does_nothing(rig: Rig) -> None:
    at_healthy(rig)
    rig.ladder.exited(20.0, ExitKind.REQUESTED)
    rig.clear()
    assert rig.ladder.exited(21.0, ExitKind.CRASH) == []
    assert rig.state() == State.STOPPED
    assert rig.moves() == []


# --- startup grace ------------------------------------------------------------------------------------------------


def test_failed_probes_during_startup_grace_do_nothing(rig: Rig) -> None:
    at_starting(rig)  # deadline t=60
    rig.clear()
    for now in (0.25, 1.0, 30.0, 59.9):
        assert rig.ladder.probe(now, ok=False) == []
        assert rig.ladder.tick(now) == []
        assert rig.state() == State.STARTING
    assert rig.ladder.next_deadline() == 60.0
    assert rig.moves() == []
    assert rig.ladder.tick(60.0) == [opened(60.0), stop(HUNG)]
    assert rig.state() == State.RESTARTING
    assert rig.moves() == [(State.STARTING, State.RESTARTING, 60.0)]


def test_adopted_process_gets_the_startup_grace_too(rig: Rig) -> None:
    assert rig.ladder.start(0.0, running=True, live=False) == []
    assert rig.ladder.probe(59.0, ok=False) == []
    assert rig.ladder.tick(60.0) == [opened(60.0), stop(HUNG)]


# --- suspect ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("threshold", [1, 2, 3, 5])
def test_failure_threshold_consecutive_failures_needed(threshold: int) -> None:
    rig = make(replace(LIMITS, failure_threshold=threshold))
    at_healthy(rig)
    for i in range(1, threshold):
        assert rig.ladder.probe(11.0 + i, ok=False) == []
        assert rig.state() == State.SUSPECT
        assert rig.ladder.suspect_count == i
    last = 11.0 + threshold
    assert rig.ladder.probe(last, ok=False) == [opened(12.0), stop(HUNG)]
    assert rig.state() == State.RESTARTING
    assert rig.moves()[-1] == (State.SUSPECT, State.RESTARTING, last)


def test_a_success_between_failures_resets_the_count(rig: Rig) -> None:
    at_healthy(rig)
    assert rig.ladder.probe(12.0, ok=False) == []
    assert rig.ladder.probe(13.0, ok=False) == []
    assert rig.ladder.probe(14.0, ok=True) == []  # back to healthy
    assert rig.state() == State.HEALTHY
    assert rig.ladder.probe(15.0, ok=False) == []
    assert rig.ladder.probe(16.0, ok=False) == []
    assert rig.state() == State.SUSPECT
    assert rig.ladder.suspect_count == 2
    # The incident starts at the first failed probe of this run of failures.
    assert rig.ladder.probe(17.0, ok=False) == [opened(15.0), stop(HUNG)]


def test_probation_passing_closes_the_open_incident(rig: Rig) -> None:
    at_restarting(rig)  # incident opened at t=12
    assert rig.ladder.exited(13.0, ExitKind.CRASH) == [launch()]
    assert rig.ladder.probe(14.0, ok=True) == []
    assert rig.ladder.probation_until == 24.0
    assert rig.ladder.tick(23.9) == []
    rig.clear()
    assert rig.ladder.tick(24.0) == [RECOVERED]
    assert rig.state() == State.HEALTHY
    assert not rig.ladder.incident_open
    assert rig.moves() == [(State.PROBATION, State.HEALTHY, 24.0)]
    assert rig.ladder.tick(30.0) == []  # closed only once


def test_only_one_incident_open_at_a_time(rig: Rig) -> None:
    at_restarting(rig)
    assert rig.ladder.exited(13.0, ExitKind.CRASH) == [launch()]
    assert rig.ladder.probe(14.0, ok=True) == []
    assert rig.ladder.memory_exceeded(15.0, "rss") == [stop(GRACEFUL)]  # no second OpenIncident


def test_recovery_from_suspect_after_probation_elapsed_closes_the_incident(rig: Rig) -> None:
    at_restarting(rig)  # incident opened at t=12
    assert rig.ladder.exited(13.0, ExitKind.CRASH) == [launch()]
    assert rig.ladder.probe(14.0, ok=True) == []  # probation until t=24
    assert rig.ladder.probe(20.0, ok=False) == []  # suspect during probation
    actions = rig.ladder.probe(25.0, ok=True)  # live again, probation period over
    assert rig.state() == State.HEALTHY
    assert actions == [RECOVERED]
    assert not rig.ladder.incident_open


# --- maintenance ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "setup",
    [at_starting, at_probation, at_healthy, at_suspect, at_restarting, at_backoff],
    ids=["starting", "probation", "healthy", "suspect", "restarting", "backoff"],
)
def test_maintenance_observes_but_acts_on_nothing(rig: Rig, setup: Setup) -> None:
    now = setup(rig) + 1.0
    rig.ladder.pause(now)
    rig.clear()
    for i in range(10):
        assert rig.ladder.probe(now + i, ok=False) == []
    assert rig.ladder.memory_exceeded(now + 10, "rss") == []
    assert rig.ladder.tick(now + 1000.0) == []
    assert rig.ladder.exited(now + 1001.0, ExitKind.CRASH) == []
    assert rig.ladder.exited(now + 1002.0, ExitKind.FATAL_CONFIG) == []
    assert rig.ladder.tick(now + 5000.0) == []
    assert rig.ladder.verdict(now + 5001.0, healed=True) == []
    assert rig.state() == State.MAINTENANCE
    assert rig.moves() == []
    assert rig.ladder.next_deadline() is None
    # Leaving maintenance with the process gone launches it.
    assert rig.ladder.resume(now + 6000.0) == [launch()]


def test_maintenance_keeps_tracking_liveness(rig: Rig) -> None:
    at_maintenance(rig)
    rig.ladder.probe(13.0, ok=False)
    assert rig.ladder.live is False
    rig.ladder.probe(14.0, ok=True)
    assert rig.ladder.live is True


def test_resume_forgets_failures(rig: Rig) -> None:
    at_healthy_after_failure(rig)
    rig.ladder.pause(20.0)
    assert rig.ladder.consecutive_restarts == 1
    assert rig.ladder.resume(21.0) == []  # live: straight back to healthy
    assert rig.ladder.consecutive_restarts == 0
    assert not rig.ladder.failures
    assert rig.ladder.exited(22.0, ExitKind.CRASH) == [opened(22.0), launch()]


def test_resume_live_closes_an_open_incident(rig: Rig) -> None:
    at_restarting(rig)  # incident opened at t=12, stop under way
    rig.ladder.pause(13.0)
    assert rig.ladder.probe(14.0, ok=True) == []  # the stop was cancelled outside clawmedic: live
    rig.clear()
    assert rig.ladder.resume(15.0) == [RECOVERED]
    assert rig.state() == State.HEALTHY
    assert not rig.ladder.incident_open
    assert rig.moves() == [
        (State.MAINTENANCE, State.PROBATION, 15.0),
        (State.PROBATION, State.HEALTHY, 15.0),
    ]


@pytest.mark.parametrize(
    "setup", [at_stopped, at_starting, at_healthy, at_backoff], ids=["stopped", "starting", "healthy", "backoff"]
)
def test_resume_outside_maintenance_does_nothing(rig: Rig, setup: Setup) -> None:
    now = setup(rig)
    state = rig.state()
    rig.clear()
    assert rig.ladder.resume(now + 1.0) == []
    assert rig.state() == state
    assert rig.moves() == []


# --- verdict ---------------------------------------------------------------------------------------------------------


def test_healed_then_live_goes_through_probation_to_healthy(rig: Rig) -> None:
    at_escalated(rig)  # incident opened at t=12
    assert rig.ladder.verdict(20.0, healed=True) == [launch()]
    assert rig.ladder.probe(21.0, ok=True) == []
    assert rig.state() == State.PROBATION
    assert rig.ladder.tick(31.0) == [RECOVERED]
    assert rig.state() == State.HEALTHY


def test_gave_up_then_resume_launches_again(rig: Rig) -> None:
    at_gave_up(rig)
    assert rig.ladder.tick(RETRY_AT - 1) == []  # before the slow retry is due, nothing of its own
    assert rig.ladder.probe(RETRY_AT - 1, ok=False) == []
    assert rig.ladder.resume(RETRY_AT - 0.5) == [launch()]
    assert rig.state() == State.STARTING


@pytest.mark.parametrize("healed", [True, False])
@pytest.mark.parametrize(
    "setup",
    [at_stopped, at_healthy, at_gave_up, at_maintenance],
    ids=["stopped", "healthy", "gave-up", "maintenance"],
)
def test_verdict_outside_escalated_is_ignored(rig: Rig, setup: Setup, healed: bool) -> None:
    now = setup(rig)
    state = rig.state()
    rig.clear()
    assert rig.ladder.verdict(now + 1.0, healed=healed) == []
    assert rig.state() == state
    assert rig.moves() == []


# --- memory ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("setup", [at_probation, at_healthy, at_suspect], ids=["probation", "healthy", "suspect"])
def test_memory_exceeded_in_a_live_state_stops_gracefully(rig: Rig, setup: Setup) -> None:
    now = setup(rig) + 1.0
    assert rig.state() in LIVE_STATES
    actions = rig.ladder.memory_exceeded(now, "rss 4 GB")
    assert [type(a) for a in actions] == [OpenIncident, Stop]
    assert actions[-1] == stop(GRACEFUL)
    assert rig.state() == State.RESTARTING


@pytest.mark.parametrize(
    "setup",
    [at_stopped, at_starting, at_restarting, at_backoff, at_escalated, at_gave_up, at_maintenance],
    ids=["stopped", "starting", "restarting", "backoff", "escalated", "gave-up", "maintenance"],
)
def test_memory_exceeded_outside_live_states_is_ignored(rig: Rig, setup: Setup) -> None:
    now = setup(rig) + 1.0
    state = rig.state()
    rig.clear()
    assert rig.ladder.memory_exceeded(now, "rss 4 GB") == []
    assert rig.state() == state
    assert rig.moves() == []


# --- scheduling -------------------------------------------------------------------------------------------------------

PROBE_INTERVALS = {
    State.STARTING: 0.25,
    State.RETRYING: 0.25,
    State.SUSPECT: 1.0,
}


@pytest.mark.parametrize("state", list(State))
def test_probe_interval(state: State) -> None:
    ladder = Ladder(limits=LIMITS, state=state)
    assert ladder.probe_interval() == PROBE_INTERVALS.get(state, 5.0)


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        pytest.param(at_stopped, None, id="stopped"),
        pytest.param(at_starting, 60.0, id="starting-startup-deadline"),
        pytest.param(at_probation, 11.0, id="probation-until"),
        pytest.param(at_healthy, None, id="healthy"),
        pytest.param(at_healthy_after_failure, 112.0, id="healthy-forgets-failures-at"),
        pytest.param(at_suspect, None, id="suspect"),
        pytest.param(at_restarting, None, id="restarting"),
        pytest.param(at_backoff, 12.0, id="backoff-restart-at"),
        pytest.param(at_escalated, None, id="escalated"),
        pytest.param(at_gave_up, 313.0, id="gave-up-retry-at"),
        pytest.param(lambda rig: at_retrying(rig), 373.0, id="retrying-startup-deadline"),
    ],
)
def test_next_deadline(rig: Rig, setup: Setup, expected: float | None) -> None:
    setup(rig)
    assert rig.ladder.next_deadline() == expected


def test_ticking_only_at_deadlines_forgets_failures_on_time(rig: Rig) -> None:
    """The supervisor's timer sleeps until `next_deadline()` (no 1 Hz tick): ticking exactly there must do
    everything the old once-a-second tick did — here, forget past failures after `stable_reset_s` healthy."""
    at_healthy_after_failure(rig)
    deadline = rig.ladder.next_deadline()
    assert deadline == 112.0
    assert rig.ladder.tick(deadline - 0.001) == [] and rig.ladder.consecutive_restarts == 1
    assert rig.ladder.tick(deadline) == []
    assert rig.ladder.consecutive_restarts == 0 and not rig.ladder.failures
    assert rig.ladder.next_deadline() is None  # nothing time-based is left: the timer waits for an observation
