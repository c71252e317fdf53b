"""The ladder: one target's decisions, as pure logic over a clock that is passed in.

`Ladder` never sleeps, spawns, signals or probes. The supervisor feeds it observations (`probe`, `exited`,
`memory_exceeded`, `tick`, `pause`, `resume`, `verdict`, `gates_checked`, `restore`) with the current time, and
carries out the actions it returns (`Launch`, `Stop`, `Escalate`, `OpenIncident`, `CloseIncident`, `CheckGates`).
Every change of state goes through `change_state()`, which checks the move against `states.ALLOWED`, stamps the
time and emits a `Transition`.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from clawmedic import defaults
from clawmedic.ladder.states import FATAL_EXITS, LIVE_STATES, RESTORED_STATES, ExitKind, State, can_move


class IllegalTransition(RuntimeError):
    """A bug: the ladder tried a move that `states.ALLOWED` forbids."""


@dataclass(frozen=True)
class LadderLimits:
    failure_threshold: int = defaults.FAILURE_THRESHOLD
    probe_interval_s: float = defaults.PROBE_INTERVAL_S
    suspect_interval_s: float = defaults.SUSPECT_INTERVAL_S
    startup_poll_s: float = defaults.STARTUP_POLL_S
    startup_timeout_s: float = defaults.STARTUP_TIMEOUT_S
    probation_s: float = defaults.PROBATION_S
    backoff_initial_s: float = defaults.BACKOFF_INITIAL_S
    backoff_max_s: float = defaults.BACKOFF_MAX_S
    backoff_jitter: float = defaults.BACKOFF_JITTER
    stable_reset_s: float = defaults.STABLE_RESET_S
    crash_loop_failures: int = defaults.CRASH_LOOP_FAILURES
    crash_loop_window_s: float = defaults.CRASH_LOOP_WINDOW_S
    stop_timeout_s: float = defaults.STOP_TIMEOUT_S
    hung_stop_timeout_s: float = defaults.HUNG_STOP_TIMEOUT_S
    retry_after_gave_up_s: float = defaults.RETRY_AFTER_GAVE_UP_S  # 0: no slow retry, gave_up waits for a human
    retry_jitter: float = defaults.RETRY_AFTER_GAVE_UP_JITTER


@dataclass(frozen=True)
class Saved:
    """What a daemon restart carries over (`Ladder.saved()` → a file → `Ladder.restore()`)."""

    state: State
    since: float
    failures: tuple[float, ...] = ()
    consecutive_restarts: int = 0
    incident_open: bool = False
    cause: str = ""  # why it escalated (an ExitKind value, "crash_loop"…): a resumed escalation asks the doctor again
    reason: str = ""
    retry_at: float | None = None


# --- actions: what the supervisor must do next ---------------------------------------------------------


@dataclass(frozen=True)
class Launch:
    reason: str


@dataclass(frozen=True)
class Stop:
    reason: str
    timeout_s: float  # SIGTERM to the process group, SIGKILL after this long


@dataclass(frozen=True)
class Escalate:
    reason: str
    cause: str  # an ExitKind value, "crash_loop", ...


@dataclass(frozen=True)
class OpenIncident:
    reason: str
    first_failure_at: float


@dataclass(frozen=True)
class CloseIncident:
    outcome: str  # "recovered"


@dataclass(frozen=True)
class CheckGates:
    """Gave up, and the slow retry is due: run the pre-start gates (no launch) and answer with `gates_checked`."""

    reason: str


Action = Launch | Stop | Escalate | OpenIncident | CloseIncident | CheckGates


@dataclass(frozen=True)
class Transition:
    old: State
    new: State
    at: float
    reason: str


@dataclass
class Ladder:
    limits: LadderLimits = field(default_factory=LadderLimits)
    rng: Callable[[], float] = random.random
    on_change: Callable[[Transition], None] | None = None

    state: State = State.STOPPED
    since: float = 0.0
    running: bool = False  # whether a process of ours is believed alive
    live: bool | None = None  # the last liveness verdict
    incident_open: bool = False
    consecutive_restarts: int = 0  # restarts since the last stable period; drives the backoff
    failures: deque[float] = field(default_factory=deque)  # failure times inside the crash-loop window
    suspect_count: int = 0
    suspect_since: float = 0.0
    startup_deadline: float | None = None
    probation_until: float | None = None
    restart_at: float | None = None
    healthy_since: float | None = None
    retry_at: float | None = None  # gave up: when the slow retry runs the gates next (None: off, or in flight)
    retrying: bool = False  # the current launch is the slow retry's: any failure goes back to gave_up
    escalation: tuple[str, str] = ("", "")  # (cause, reason) of the last escalation, kept for a daemon restart
    restored_from: State | None = None  # the state a previous daemon left: the first launch is a relaunch

    # --- the one way to move ---

    def change_state(self, new: State, now: float, reason: str) -> None:
        if new == self.state:
            return
        if not can_move(self.state, new):
            raise IllegalTransition(f"{self.state} -> {new} ({reason})")
        old, self.state, self.since = self.state, new, now
        self.healthy_since = now if new == State.HEALTHY else None
        if self.on_change is not None:
            self.on_change(Transition(old, new, now, reason))

    # --- inputs ---

    def start(self, now: float, *, running: bool = False, live: bool | None = None) -> list[Action]:
        """The daemon begins supervising. An already-running (adopted) process is watched, not relaunched."""
        if self.state in RESTORED_STATES:  # carried over from the previous daemon: still hands-off
            self.running, self.live = running, live
            return []
        if running:
            self.running = True
            self.live = live
            self._begin_startup(now, "adopted a running process")
            return []
        if self.restored_from is not None:
            return self._launch(now, f"relaunch after daemon restart (it was {self.restored_from.value})")
        return self._launch(now, "initial start")

    def saved(self) -> Saved:
        """The escalation state and failure history, for the next daemon."""
        cause, reason = self.escalation
        return Saved(
            self.state,
            self.since,
            tuple(self.failures),
            self.consecutive_restarts,
            self.incident_open,
            cause,
            reason,
            self.retry_at,
        )

    def restore(self, now: float, saved: Saved) -> list[Action]:
        """Before `start`: carry over what the previous daemon left. Failures older than the crash-loop window are
        dropped; `escalated` asks the doctor again (its answer was lost); `gave_up` stays given up, with its slow
        retry still on schedule; any other state starts afresh (`start` then relaunches or adopts)."""
        if self.state != State.STOPPED:
            return []
        self.failures = deque(f for f in saved.failures if now - self.limits.crash_loop_window_s <= f <= now)
        self.consecutive_restarts = max(0, saved.consecutive_restarts)
        self.incident_open = saved.incident_open
        self.escalation = (saved.cause, saved.reason)
        self.restored_from = saved.state
        if saved.state == State.RETRYING:  # the daemon died during a slow retry: that try failed
            saved = Saved(State.GAVE_UP, saved.since, retry_at=None)
        if saved.state == State.GAVE_UP:
            self.retry_at = self._carried_retry(now, saved.retry_at)
            self.change_state(State.GAVE_UP, now, "still given up after a daemon restart")
            return []
        if saved.state == State.ESCALATED:
            reason = f"escalation resumed after a daemon restart: {saved.reason}".rstrip(": ")
            self.change_state(State.ESCALATED, now, reason)
            return [Escalate(reason, saved.cause or "crash_loop")]
        return []

    def gates_checked(self, now: float, passed: bool, detail: str = "") -> list[Action]:
        """The slow retry's pre-start gates answered: launch once if they passed, else wait another period."""
        if self.state != State.GAVE_UP:
            return []
        if not passed:
            self.retry_at = self._next_retry(now)
            return []
        self.retry_at = None
        reason = detail or "slow retry after giving up: the pre-start checks pass"
        self.retrying = True
        if self.running:  # our process still runs but is not live: stop it, launch once it is gone
            self.restart_at = now
            self.startup_deadline = None
            self.change_state(State.RETRYING, now, reason)
            return [Stop(reason, self.limits.hung_stop_timeout_s)]
        return self._launch_retry(now, reason)

    def probe(self, now: float, ok: bool, detail: str = "") -> list[Action]:
        self.live = ok
        s = self.state
        if s == State.STARTING:
            if ok:
                self.probation_until = now + self.limits.probation_s
                self.change_state(State.PROBATION, now, "liveness passed")
                return self._maybe_healthy(now)
            return []
        if s == State.PROBATION:
            return self._maybe_healthy(now) if ok else self._suspect(now, detail)
        if s == State.HEALTHY:
            if ok:
                self._maybe_forget_failures(now)
                return []
            return self._suspect(now, detail)
        if s == State.SUSPECT:
            if ok:
                # Back to probation if we were in it (its end may have passed meanwhile: _maybe_healthy then
                # completes it and closes the incident), else straight back to healthy.
                back = State.PROBATION if self.probation_until is not None else State.HEALTHY
                self.change_state(back, now, f"liveness passed again after {self.suspect_count} failure(s)")
                self.suspect_count = 0
                return self._maybe_healthy(now) if back == State.PROBATION else []
            self.suspect_count += 1
            if self.suspect_count >= self.limits.failure_threshold:
                return self._fail(now, f"liveness failed {self.suspect_count} times: {detail}", hung=True)
            return []
        if s == State.RETRYING:
            if ok and self.restart_at is None and self.running:
                self.probation_until = now + self.limits.probation_s
                self.change_state(State.PROBATION, now, "the slow retry's launch is live")
                return self._maybe_healthy(now)
            return []
        if s in (State.ESCALATED, State.GAVE_UP) and ok and self.running:
            self.probation_until = now + self.limits.probation_s
            self.change_state(State.PROBATION, now, "live again")
            return []
        return []

    def exited(self, now: float, kind: ExitKind, detail: str = "") -> list[Action]:
        self.running = False
        self.live = False
        s = self.state
        if s == State.RETRYING:
            if self.restart_at is not None:  # the old process is gone: now the retry's launch
                return self._launch_retry(now, "slow retry after giving up: the old process stopped")
            if kind == ExitKind.REQUESTED:
                return []  # stopped by the daemon itself
            return self._retry_failed(now, f"process exited ({detail or kind})")
        if s == State.RESTARTING:
            if self.restart_at is not None and self.restart_at > now:
                self.change_state(State.BACKOFF, now, "stopped; waiting before the next attempt")
                return []
            return self._launch(now, "stopped; launching again")
        if s not in (State.STARTING, State.PROBATION, State.HEALTHY, State.SUSPECT):
            return []  # stopped, backoff, escalated, gave up or maintenance: nothing to do
        if kind == ExitKind.REQUESTED:
            self.change_state(State.STOPPED, now, "stopped on request")
            return []
        if kind == ExitKind.RESTART_REQUEST and s in LIVE_STATES:
            return self._launch(now, "the gateway exited 0 asking for a full restart")
        if kind in FATAL_EXITS:
            if self.retrying:
                return self._retry_failed(now, f"exit is not fixable by a restart ({kind}): {detail}")
            return self._escalate(now, f"exit is not fixable by a restart ({kind}): {detail}", kind.value)
        return self._fail(now, f"process exited ({detail or kind})", hung=False)

    def memory_exceeded(self, now: float, detail: str) -> list[Action]:
        if self.state not in LIVE_STATES:
            return []
        return self._fail(now, f"memory limit exceeded: {detail}", hung=False)

    def tick(self, now: float) -> list[Action]:
        s = self.state
        if s == State.STARTING and self.startup_deadline is not None and now >= self.startup_deadline:
            return self._fail(now, f"not live within the {self.limits.startup_timeout_s:g} s startup grace", hung=True)
        if s == State.PROBATION and self.live:
            return self._maybe_healthy(now)
        if s == State.BACKOFF and self.restart_at is not None and now >= self.restart_at:
            return self._launch(now, "backoff elapsed")
        if s == State.GAVE_UP and self.retry_at is not None and now >= self.retry_at:
            self.retry_at = None  # in flight until `gates_checked`
            return [CheckGates("slow retry after giving up")]
        if (
            s == State.RETRYING
            and self.startup_deadline is not None
            and self.restart_at is None
            and now >= self.startup_deadline
        ):
            return self._retry_failed(now, f"not live within the {self.limits.startup_timeout_s:g} s startup grace")
        if s == State.HEALTHY:
            self._maybe_forget_failures(now)
        return []

    def request_restart(self, now: float, reason: str = "restart requested") -> list[Action]:
        """A restart someone asked for (`clawmedic fix restart`, a rollback): not a failure, no backoff."""
        if self.state in (State.MAINTENANCE, State.RESTARTING, State.RETRYING):
            return []
        if self.state in (State.ESCALATED, State.GAVE_UP, State.STOPPED, State.BACKOFF) or not self.running:
            self._forget_failures()
            return self._launch(now, reason)
        self.restart_at = None
        self.change_state(State.RESTARTING, now, reason)
        return [Stop(reason, self.limits.stop_timeout_s)]

    def pause(self, now: float) -> list[Action]:
        self.retrying = False  # a human is in charge now: `resume` starts afresh
        self.change_state(State.MAINTENANCE, now, "paused by the user")
        return []

    def resume(self, now: float) -> list[Action]:
        """Leave maintenance or gave-up: a human has looked, so past failures are forgotten."""
        if self.state not in (State.MAINTENANCE, State.GAVE_UP, State.ESCALATED):
            return []
        self._forget_failures()
        if self.running and self.live:
            self.probation_until = now
            self.change_state(State.PROBATION, now, "resumed; the target is live")
            return self._maybe_healthy(now)
        if self.running:
            self._begin_startup(now, "resumed; waiting for liveness")
            return []
        return self._launch(now, "resumed; the target is not running")

    def verdict(self, now: float, healed: bool, detail: str = "", restart: bool = True) -> list[Action]:
        """The doctor's answer to an escalation."""
        if self.state != State.ESCALATED:
            return []
        if not healed:
            self.retry_at = self._next_retry(now)
            self.change_state(State.GAVE_UP, now, detail or "the doctor could not heal it")
            return []
        self._forget_failures()
        if self.running and not restart:  # repaired in place (e.g. resumed): its liveness decides
            self._begin_startup(now, detail or "the doctor healed it")
            return []
        if self.running:
            # A process that is not live will not pick the repair up by itself (a restored file, a freed port):
            # stop it and launch again at once; the probation after the relaunch is the verdict.
            reason = detail or "the doctor repaired it; restarting"
            self.restart_at = now
            self.change_state(State.RESTARTING, now, reason)
            return [Stop(reason, self.limits.hung_stop_timeout_s)]
        return self._launch(now, detail or "the doctor repaired it; launching")

    # --- scheduling ---

    def probe_interval(self) -> float:
        if self.state in (State.STARTING, State.RETRYING):
            return self.limits.startup_poll_s
        if self.state == State.SUSPECT:
            return self.limits.suspect_interval_s
        return self.limits.probe_interval_s

    def next_deadline(self) -> float | None:
        if self.state == State.STARTING:
            return self.startup_deadline
        if self.state == State.PROBATION:
            return self.probation_until
        if self.state == State.BACKOFF:
            return self.restart_at
        if self.state == State.GAVE_UP:
            return self.retry_at
        if self.state == State.RETRYING:
            return self.startup_deadline
        if (
            self.state == State.HEALTHY
            and self.healthy_since is not None
            and (self.consecutive_restarts or self.failures)
        ):
            return self.healthy_since + self.limits.stable_reset_s  # past failures are forgotten then
        return None

    def retry_delay(self) -> float:
        """The slow retry's period, jittered so several daemons do not retry in lockstep; 0 when it is off."""
        base = self.limits.retry_after_gave_up_s
        if base <= 0:
            return 0.0
        return max(0.0, base * (1.0 + self.limits.retry_jitter * (2.0 * self.rng() - 1.0)))

    def backoff_delay(self) -> float:
        """Delay before the next restart: none after a healthy period, then exponential with jitter."""
        n = self.consecutive_restarts
        if n == 0:
            return 0.0
        # the exponent is capped: 2.0 ** 1024 overflows, and a count carried over in ladder.json may be anything
        base = min(self.limits.backoff_max_s, self.limits.backoff_initial_s * 2.0 ** min(n - 1, 64))
        jittered = base * (1.0 + self.limits.backoff_jitter * (2.0 * self.rng() - 1.0))
        return max(0.0, min(self.limits.backoff_max_s, jittered))

    # --- internals ---

    def _begin_startup(self, now: float, reason: str) -> None:
        self.startup_deadline = now + self.limits.startup_timeout_s
        self.suspect_count = 0
        self.change_state(State.STARTING, now, reason)

    def _carried_retry(self, now: float, retry_at: float | None) -> float | None:
        """The previous daemon's slow retry time, but never later than one jittered period from now: a record
        damaged or edited to a far future must not end the slow retry."""
        latest = now + self.limits.retry_after_gave_up_s * (1.0 + self.limits.retry_jitter)
        if retry_at is None or self.limits.retry_after_gave_up_s <= 0:
            return self._next_retry(now)
        return min(retry_at, latest)

    def _next_retry(self, now: float) -> float | None:
        return now + self.retry_delay() if self.limits.retry_after_gave_up_s > 0 else None

    def _launch_retry(self, now: float, reason: str) -> list[Action]:
        self.restart_at = None
        self.running = True
        self.live = None
        self.suspect_count = 0
        self.startup_deadline = now + self.limits.startup_timeout_s
        self.change_state(State.RETRYING, now, reason)
        return [Launch(reason)]

    def _retry_failed(self, now: float, reason: str) -> list[Action]:
        """The slow retry did not hold: given up again, same incident, next try in a period."""
        self.retrying = False
        self.restart_at = None
        self.probation_until = None
        self.retry_at = self._next_retry(now)
        self.change_state(State.GAVE_UP, now, f"the slow retry failed: {reason}")
        if self.running:
            return [Stop(reason, self.limits.hung_stop_timeout_s)]
        return []

    def _launch(self, now: float, reason: str) -> list[Action]:
        self.retrying = False
        self.restart_at = None
        self.running = True  # optimistically; a failed spawn comes back through exited()
        self.live = None
        self._begin_startup(now, reason)
        return [Launch(reason)]

    def _suspect(self, now: float, detail: str) -> list[Action]:
        self.suspect_count = 1
        self.suspect_since = now
        self.change_state(State.SUSPECT, now, f"liveness failed: {detail}")
        if self.limits.failure_threshold <= 1:
            return self._fail(now, f"liveness failed: {detail}", hung=True)
        return []

    def _maybe_healthy(self, now: float) -> list[Action]:
        if self.probation_until is None or now < self.probation_until:
            return []
        self.probation_until = None
        if self.retrying:  # the slow retry held: what failed before is history
            self.retrying = False
            self._forget_failures()
        self.change_state(State.HEALTHY, now, "probation passed")
        if self.incident_open:
            self.incident_open = False
            return [CloseIncident("recovered")]
        return []

    def _open_incident(self, now: float, reason: str) -> list[Action]:
        if self.incident_open:
            return []
        self.incident_open = True
        first = self.suspect_since if self.state == State.SUSPECT else now
        return [OpenIncident(reason, first)]

    def _escalate(self, now: float, reason: str, cause: str) -> list[Action]:
        if self.retrying:
            return self._retry_failed(now, reason)
        actions = self._open_incident(now, reason)
        self.escalation = (cause, reason)
        self.restart_at = None
        self.change_state(State.ESCALATED, now, reason)
        return [*actions, Escalate(reason, cause)]

    def _fail(self, now: float, reason: str, *, hung: bool) -> list[Action]:
        if self.retrying:
            return self._retry_failed(now, reason)
        actions = self._open_incident(now, reason)
        self.failures.append(now)
        while self.failures and self.failures[0] < now - self.limits.crash_loop_window_s:
            self.failures.popleft()
        if len(self.failures) >= self.limits.crash_loop_failures:
            loop = (
                f"crash loop: {len(self.failures)} failures within {self.limits.crash_loop_window_s:g} s; "
                f"last: {reason}"
            )
            return [*actions, *self._escalate(now, loop, "crash_loop")]
        delay = self.backoff_delay()
        self.consecutive_restarts += 1
        self.restart_at = now + delay
        if self.running:
            timeout = self.limits.hung_stop_timeout_s if hung else self.limits.stop_timeout_s
            self.change_state(State.RESTARTING, now, reason)
            return [*actions, Stop(reason, timeout)]
        if delay <= 0:
            return [*actions, *self._launch(now, f"restarting at once: {reason}")]
        self.change_state(State.BACKOFF, now, f"{reason}; next attempt in {delay:.1f} s")
        return actions

    def _maybe_forget_failures(self, now: float) -> None:
        if self.healthy_since is not None and now - self.healthy_since >= self.limits.stable_reset_s:
            self._forget_failures()

    def _forget_failures(self) -> None:
        self.consecutive_restarts = 0
        self.failures.clear()
