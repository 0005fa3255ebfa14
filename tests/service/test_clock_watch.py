"""A wall clock set back moves the poll and the debounced jobs back with it; cron jobs keep their time of day."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger

from service.clock_watch import ClockWatch


class _Clocks:
    def __init__(self) -> None:
        self.wall, self.mono = time.time(), 50.0

    def tick(self, seconds: float, wall_shift: float = 0.0) -> None:
        self.mono += seconds
        self.wall += seconds + wall_shift


@pytest.fixture
def scheduler():
    s = BackgroundScheduler(timezone="UTC")
    s.start(paused=True)  # next run times are computed, nothing runs
    yield s
    s.shutdown(wait=False)


def _noop() -> None:
    pass


def test_a_clock_set_back_moves_interval_and_one_off_jobs_back_and_leaves_cron_alone(scheduler) -> None:
    now = datetime.now(UTC)
    poll = scheduler.add_job(_noop, "interval", seconds=60, id="poll", next_run_time=now + timedelta(seconds=60))
    once = scheduler.add_job(_noop, "date", run_date=now + timedelta(seconds=45), id="debounce")
    cron = scheduler.add_job(_noop, CronTrigger.from_crontab("0 3 * * *", timezone="UTC"), id="cron")
    before = {j.id: j.next_run_time for j in (poll, once, cron)}
    clocks = _Clocks()
    watch = ClockWatch(scheduler, wall=lambda: clocks.wall, monotonic=lambda: clocks.mono)
    clocks.tick(30, wall_shift=-3600)
    assert watch.check() == pytest.approx(3600)
    after = {j.id: j.next_run_time for j in scheduler.get_jobs()}
    assert after["poll"] == before["poll"] - timedelta(seconds=3600)
    assert after["debounce"] == before["debounce"] - timedelta(seconds=3600)
    assert after["cron"] == before["cron"], "a time of day stays a time of day"
    clocks.tick(30)
    assert watch.check() == 0.0, "measured from the last look: the same jump is not counted twice"
    assert scheduler.get_job("poll").next_run_time == after["poll"]


def test_a_job_that_fell_due_before_the_look_moves_to_now_not_into_the_past(scheduler) -> None:
    """Moved into the past, the poll would be dropped as missed (a second's grace) and come an interval late."""
    clocks = _Clocks()
    watch = ClockWatch(scheduler, wall=lambda: clocks.wall, monotonic=lambda: clocks.mono)
    due = datetime.fromtimestamp(clocks.wall, UTC) + timedelta(seconds=2)
    scheduler.add_job(_noop, "interval", seconds=60, id="poll", next_run_time=due)
    clocks.tick(3, wall_shift=-600)  # the look comes 3 s after the poll was due
    assert watch.check() == pytest.approx(600)
    assert scheduler.get_job("poll").next_run_time == datetime.fromtimestamp(clocks.wall, UTC)


def test_time_passing_a_small_correction_or_a_clock_set_forward_move_nothing(scheduler) -> None:
    job = scheduler.add_job(_noop, "interval", seconds=60, id="poll")
    planned = job.next_run_time
    clocks = _Clocks()
    watch = ClockWatch(scheduler, wall=lambda: clocks.wall, monotonic=lambda: clocks.mono)
    for seconds, shift in ((30, 0.0), (30, -2.0), (30, +7200.0)):
        clocks.tick(seconds, wall_shift=shift)
        assert watch.check() == 0.0
    assert scheduler.get_job("poll").next_run_time == planned


def test_the_watch_runs_on_its_own_thread_until_stopped(scheduler) -> None:
    scheduler.add_job(_noop, "interval", seconds=60, id="poll")
    planned = scheduler.get_job("poll").next_run_time
    clocks = _Clocks()
    watch = ClockWatch(scheduler, every=0.01, wall=lambda: clocks.wall, monotonic=lambda: clocks.mono)
    watch.start()
    try:
        clocks.wall -= 600
        for _ in range(500):
            if scheduler.get_job("poll").next_run_time != planned:
                break
            watch._stop.wait(0.01)
        assert scheduler.get_job("poll").next_run_time == planned - timedelta(seconds=600)
    finally:
        watch.stop()
    watch._thread.join(1)
    assert not watch._thread.is_alive()
