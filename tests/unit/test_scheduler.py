"""The one deadline heap (`clawmedic.scheduler`), given the time: probes at start + k·interval without drift, missed
periods skipped, one-shot deadlines moved, a state's new interval re-anchored — and on a real loop, one timer for
every job."""

from __future__ import annotations

import asyncio
from functools import partial

import pytest

from clawmedic.scheduler import Job, Schedule, Scheduler


def run_until(s: Schedule, times: list[float]) -> list[tuple[float, str]]:
    """Advance an injected clock through `times`; (time, job) for every job due at each."""
    ran: list[tuple[float, str]] = []
    for now in times:
        for job in s.pop_due(now):
            ran.append((now, job.name))
            job.fn()
    return ran


@pytest.mark.parametrize(
    ("clock", "expected"),
    [
        # (the times the loop happened to wake, the probes that ran): due at 100 + 5k whatever the wake-up's lateness
        ([100.0, 105.0, 110.0, 115.0], [100.0, 105.0, 110.0, 115.0]),
        ([100.3, 105.4, 110.2, 115.9], [100.3, 105.4, 110.2, 115.9]),  # late wake-ups do not push the next one
        ([100.0, 104.9, 105.0, 109.99, 110.0], [100.0, 105.0, 110.0]),  # not before its deadline
        ([100.0, 117.0, 119.9, 120.0], [100.0, 117.0, 120.0]),  # 105 and 110 missed: one run, then back on 120
    ],
)
def test_a_periodic_job_fires_at_start_plus_k_intervals_without_drift(
    clock: list[float], expected: list[float]
) -> None:
    s = Schedule()
    s.every("probe", lambda: 5.0, lambda: None, start=100.0)
    assert [t for t, _ in run_until(s, clock)] == expected


def test_deadlines_stay_on_the_grid_over_a_thousand_periods_even_when_each_wake_up_is_late() -> None:
    s = Schedule()
    job = s.every("probe", lambda: 5.0, lambda: None, start=0.0)
    for k in range(1000):
        assert s.pop_due(k * 5.0 + 0.7) == [job]  # every wake-up 0.7 s late
        assert job.due == (k + 1) * 5.0  # the next one is still on the grid: no accumulated drift


def test_many_jobs_share_one_heap_in_deadline_order() -> None:
    s = Schedule()
    for i in range(200):
        s.every(f"t{i}", lambda: 5.0, lambda: None, start=100.0 + i * 0.025)  # spread over one interval
    assert s.next_due() == 100.0
    ran = [j.name for j in s.pop_due(104.99)]  # a wake-up that came late for every one of them
    assert ran == [f"t{i}" for i in range(200)], "each once, in deadline order"
    assert s.next_due() == 105.0, "t0 back on its grid"
    assert [j.name for j in s.pop_due(105.03)] == ["t0", "t1"]


def test_a_one_shot_job_runs_only_when_moved_and_a_move_replaces_the_earlier_deadline() -> None:
    s = Schedule()
    job = s.once("ladder", lambda: None)
    assert s.next_due() is None and s.pop_due(1e9) == []
    s.move(job, 50.0)
    s.move(job, 30.0)  # an observation moved the deadline earlier
    s.move(job, 40.0)  # ... and later again: only the latest counts
    assert s.pop_due(39.0) == []
    assert s.pop_due(40.0) == [job]
    assert s.pop_due(1e9) == [], "a one-shot job is not rearmed by running"


def test_moving_a_periodic_job_runs_it_now_and_anchors_the_next_runs_there() -> None:
    """A new ladder state probes at once (entering suspect), then every interval from that moment."""
    s = Schedule()
    job = s.every("probe", lambda: 5.0, lambda: None, start=100.0)
    assert s.pop_due(100.0) == [job]
    s.move(job, 102.0)
    assert run_until(s, [102.0, 106.0, 107.0, 112.0]) == [(102.0, "probe"), (107.0, "probe"), (112.0, "probe")]


def test_a_new_interval_is_anchored_at_the_run_that_noticed_it() -> None:
    interval = [5.0]
    s = Schedule()
    job = s.every("probe", lambda: interval[0], lambda: None, start=0.0)
    assert run_until(s, [0.0, 5.0]) == [(0.0, "probe"), (5.0, "probe")]
    interval[0] = 1.0  # suspect: probe faster
    assert run_until(s, [10.0, 11.0, 11.5, 12.0]) == [(10.0, "probe"), (11.0, "probe"), (12.0, "probe")]
    assert job.due == 13.0


def test_disarmed_and_cancelled_jobs_never_run() -> None:
    s = Schedule()
    a = s.every("a", lambda: 1.0, lambda: None, start=1.0)
    b = s.once("b", lambda: None)
    s.move(b, 2.0)
    s.disarm(b)
    s.cancel(a)
    s.move(a, 3.0)  # a cancelled job stays cancelled
    assert s.pop_due(100.0) == []
    assert s.next_due() is None


def test_on_a_real_loop_one_timer_serves_every_job_and_a_failing_job_does_not_stop_the_others() -> None:
    async def scenario() -> tuple[list[str], int]:
        sched = Scheduler()
        ran: list[str] = []
        now = sched.now()

        def boom() -> None:
            raise RuntimeError("a bug in one target's job")

        jobs: list[Job] = [sched.every("boom", lambda: 0.01, boom, start=now)]
        for i in range(50):
            jobs.append(sched.every(f"t{i}", lambda: 0.05, partial(ran.append, f"t{i}"), start=now + i * 0.001))
        loop = asyncio.get_running_loop()
        timers = len(loop._scheduled)  # type: ignore[attr-defined]  # asyncio's own heap of TimerHandles
        await asyncio.sleep(0.2)
        for job in jobs:
            sched.cancel(job)
        sched.close()
        return ran, timers

    ran, timers = asyncio.run(scenario())
    assert timers == 1, "one call_at for the earliest deadline, not one per job"
    assert all(f"t{i}" in ran for i in range(50)), "every job ran although one of them raises"
    assert ran.count("t0") >= 2, "periodic jobs run again"
