"""One deadline heap for every target's timed work (probes, ladder deadlines, memory checks, snapshots).

`Schedule` is the pure part: jobs and their deadlines, given the time. A periodic job fires at
`anchor + k·interval` — never `previous end + interval` — so a slow probe or a busy loop does not make it drift, and
missed periods are skipped rather than fired in a burst. `Scheduler` puts it on the event loop with a single timer
(one `loop.call_at` for the earliest deadline), however many targets there are: no loop per target.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("clawmedic")

Interval = Callable[[], float]  # read at every reschedule: a probe's interval depends on the ladder's state


@dataclass(eq=False)
class Job:
    name: str
    fn: Callable[[], None]  # runs on the loop; must not block (it spawns a task for slow work)
    interval: Interval | None = None  # None: a one-shot job, armed with `Schedule.move`
    anchor: float = 0.0  # periodic: fires at anchor + k·interval
    period: float = 0.0  # the interval the anchor was taken with
    due: float | None = None  # None: not scheduled
    version: int = 0  # heap entries of an older version are stale (moved or cancelled)
    cancelled: bool = field(default=False)


class Schedule:
    """The deadline heap, pure: every method takes the time it is given."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, int, Job]] = []
        self._seq = itertools.count()

    def _push(self, job: Job, due: float) -> None:
        job.version += 1
        job.due = due
        heapq.heappush(self._heap, (due, next(self._seq), job.version, job))

    def every(self, name: str, interval: Interval, fn: Callable[[], None], *, start: float) -> Job:
        """A periodic job whose first run is at `start`, then every `interval()` after it."""
        job = Job(name, fn, interval, anchor=start, period=interval())
        self._push(job, start)
        return job

    def once(self, name: str, fn: Callable[[], None]) -> Job:
        """A one-shot job, not yet armed (`move` arms it, again after each run)."""
        return Job(name, fn)

    def move(self, job: Job, due: float) -> None:
        """Run `job` at `due` instead; a periodic job is anchored there (its next runs are due + k·interval)."""
        if job.cancelled:
            return
        if job.interval is not None:
            job.anchor, job.period = due, job.interval()
        self._push(job, due)

    def disarm(self, job: Job) -> None:
        """Not due until moved again."""
        job.version += 1
        job.due = None

    def cancel(self, job: Job) -> None:
        job.cancelled = True
        self.disarm(job)

    def _drop_stale(self) -> None:
        while self._heap and self._heap[0][2] != self._heap[0][3].version:
            heapq.heappop(self._heap)

    def next_due(self) -> float | None:
        self._drop_stale()
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> list[Job]:
        """The jobs due at `now`, earliest first; each periodic one is rescheduled at its next `anchor + k·interval`
        after `now` (periods missed while the loop was busy are skipped, not fired in a burst)."""
        ran: list[Job] = []
        while (due := self.next_due()) is not None and due <= now:
            _, _, _, job = heapq.heappop(self._heap)
            job.due = None
            ran.append(job)
            if job.interval is not None:
                period = job.interval()
                if period != job.period:  # the interval changed (a new ladder state): re-anchored at this run
                    job.anchor, job.period = due, period
                k = math.floor((now - job.anchor) / period) + 1
                self._push(job, job.anchor + k * period)
        return ran


class Scheduler(Schedule):
    """The schedule on the running event loop: one `call_at` timer for the earliest deadline of all jobs."""

    def __init__(self) -> None:
        super().__init__()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None

    def now(self) -> float:
        """The loop's monotonic clock, the one `call_at` uses."""
        return asyncio.get_running_loop().time()

    def _push(self, job: Job, due: float) -> None:
        super()._push(job, due)
        self._arm()

    def _arm(self) -> None:
        due = self.next_due()
        if due == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = self._timer_at = None
        if due is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # scheduled before the loop runs (tests of the pure part): armed at the next push
            return
        self._timer_at = due
        self._timer = loop.call_at(due, self._fire)

    def _fire(self) -> None:
        self._timer = self._timer_at = None
        for job in self.pop_due(self.now()):
            if job.cancelled:
                continue
            try:
                job.fn()
            except Exception:  # one job's bug must not stop every other target's timers
                log.exception("scheduled job %s failed", job.name)
        self._arm()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._timer_at = None
        self._heap.clear()
