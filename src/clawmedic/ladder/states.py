"""Every state a supervised target can be in, and every move allowed between them — on one screen.

Standard library only: this module is the vocabulary the rest of the tree speaks.

    stopped ──► starting ──► probation ──► healthy ◄──► suspect
                   ▲  │          │            │            │
                   │  └──────────┴─────┬──────┴────────────┘
                   │                   ▼
                   ├──────────── restarting ◄──── backoff
                   │                   │
                   │                   ▼
                   └──────────── escalated ──► gave_up ──► retrying ──► probation
                                                 ▲            │              │
                                                 └────────────┴──────────────┘ (the slow retry failed)
    stopped ──► escalated / gave_up: restored after a daemon restart (`Ladder.restore`).
    maintenance: entered from anywhere by `pause`; observe only, act on nothing; left by `resume`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final


class State(StrEnum):
    STOPPED = "stopped"  # not running, and not meant to be (before the first start, after a requested stop)
    STARTING = "starting"  # launched; inside the startup grace, waiting for liveness
    PROBATION = "probation"  # live after a (re)start; must stay live for the probation period
    HEALTHY = "healthy"  # live and past probation
    SUSPECT = "suspect"  # liveness failing, fewer times than the threshold
    RESTARTING = "restarting"  # stopping the old process; the new one is launched when it is gone
    BACKOFF = "backoff"  # waiting before the next restart attempt
    ESCALATED = "escalated"  # a restart will not fix it: handed to the doctor, no restarts of our own
    GAVE_UP = "gave_up"  # the doctor could not heal it; a human is needed (`clawmedic resume` retries)
    RETRYING = "retrying"  # gave up, but the slow retry's pre-start gates passed: launched once, waiting for liveness
    MAINTENANCE = "maintenance"  # paused by the user: keep observing, take no action


class ExitKind(StrEnum):
    """What an exit of the target's process means for the ladder."""

    REQUESTED = "requested"  # clawmedic (or the user through clawmedic) asked it to stop
    RESTART_REQUEST = "restart_request"  # unrequested exit 0: in external mode OpenClaw asks for a relaunch
    FATAL_CONFIG = "fatal_config"  # exit 78 (EX_CONFIG): config invalid or maintenance needed
    PORT_IN_USE = "port_in_use"  # another process holds the port (exit 1 + EADDRINUSE, or seen before launch)
    UNSUPPORTED_RUNTIME = "unsupported_runtime"  # the target refuses the Node it runs on (exit 1 at boot)
    CRASH = "crash"  # anything else: a restart may fix it


# States in which the target is expected to answer its liveness probe.
LIVE_STATES: Final = frozenset({State.PROBATION, State.HEALTHY, State.SUSPECT})
# States in which clawmedic takes no action of its own.
HANDS_OFF_STATES: Final = frozenset({State.ESCALATED, State.GAVE_UP, State.MAINTENANCE, State.STOPPED})
# States a daemon restart carries over as they were (the others start afresh, keeping the failure history).
RESTORED_STATES: Final = frozenset({State.ESCALATED, State.GAVE_UP})
# Exit kinds a restart cannot fix: escalate at once instead of looping.
FATAL_EXITS: Final = frozenset({ExitKind.FATAL_CONFIG, ExitKind.PORT_IN_USE, ExitKind.UNSUPPORTED_RUNTIME})

_ANY: Final = frozenset(State)

ALLOWED: Final[dict[State, frozenset[State]]] = {
    State.STOPPED: frozenset({State.STARTING, State.ESCALATED, State.GAVE_UP, State.MAINTENANCE}),
    State.STARTING: frozenset(
        {State.PROBATION, State.RESTARTING, State.BACKOFF, State.ESCALATED, State.MAINTENANCE, State.STOPPED}
    ),
    State.PROBATION: frozenset(
        {
            State.HEALTHY,
            State.SUSPECT,
            State.STARTING,
            State.RESTARTING,
            State.BACKOFF,
            State.ESCALATED,
            State.GAVE_UP,
            State.MAINTENANCE,
            State.STOPPED,
        }
    ),
    State.HEALTHY: frozenset(
        {
            State.SUSPECT,
            State.STARTING,
            State.RESTARTING,
            State.BACKOFF,
            State.ESCALATED,
            State.MAINTENANCE,
            State.STOPPED,
        }
    ),
    State.SUSPECT: frozenset(
        {
            State.HEALTHY,
            State.PROBATION,
            State.STARTING,
            State.RESTARTING,
            State.BACKOFF,
            State.ESCALATED,
            State.GAVE_UP,
            State.MAINTENANCE,
            State.STOPPED,
        }
    ),
    State.RESTARTING: frozenset({State.STARTING, State.BACKOFF, State.ESCALATED, State.MAINTENANCE, State.STOPPED}),
    State.BACKOFF: frozenset({State.RESTARTING, State.STARTING, State.ESCALATED, State.MAINTENANCE, State.STOPPED}),
    State.ESCALATED: frozenset(
        {State.GAVE_UP, State.STARTING, State.RESTARTING, State.PROBATION, State.MAINTENANCE, State.STOPPED}
    ),
    State.GAVE_UP: frozenset({State.STARTING, State.PROBATION, State.RETRYING, State.MAINTENANCE, State.STOPPED}),
    State.RETRYING: frozenset({State.PROBATION, State.GAVE_UP, State.MAINTENANCE, State.STOPPED}),
    State.MAINTENANCE: _ANY - {State.MAINTENANCE, State.RESTARTING, State.BACKOFF},
}


def can_move(old: State, new: State) -> bool:
    return new in ALLOWED[old]
