"""Keeps the scheduler's timed jobs on time when the wall clock is set back.

APScheduler 3 times its jobs by the wall clock: set back by an hour (an NTP step after a long drift, a virtual
machine restored), the poll and every debounced training would wait that hour on top of their own delay, with no
error anywhere. Interval and one-off jobs mean "so long from now", so they move back with the clock; cron jobs
mean a time of day, and stay. A clock set forward needs nothing: the jobs then fall due at once. The watch looks
every second, so a job that fell due between the jump and the look is moved to now, not into the past (where the
scheduler would drop it as missed), and one added in that second (moved back too, so it runs early) is rare.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.triggers.cron import CronTrigger

log = logging.getLogger(__name__)


class ClockWatch:
    """Compares the wall clock with the monotonic one every ``every`` seconds; a gap that shrank by more than
    ``tolerance`` seconds (NTP slews by far less) is a clock set back, and the jobs move back by as much, to now
    at the earliest. A machine suspended and resumed reads as a clock set forward (the monotonic clock stops)."""

    def __init__(self, scheduler: BaseScheduler, every: float = 1.0, tolerance: float = 5.0,
                 wall: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.scheduler, self.every, self.tolerance = scheduler, every, tolerance
        self._wall, self._monotonic = wall, monotonic
        self._offset = wall() - monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="clock-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.check()
            except Exception:  # a scheduler shutting down under it, say: the next look tries again
                log.exception("the clock watch failed")

    def check(self) -> float:
        """Move the jobs back by as far as the clock went back since the last look; returns that (0: not back)."""
        offset = self._wall() - self._monotonic()
        back, self._offset = self._offset - offset, offset
        if back <= self.tolerance:
            return 0.0
        log.warning("the clock was set back %.0f s: the poll and the waiting trainings move back with it", back)
        now = datetime.fromtimestamp(self._wall(), UTC)
        for job in self.scheduler.get_jobs():
            if job.next_run_time is None or isinstance(job.trigger, CronTrigger):
                continue
            with contextlib.suppress(JobLookupError):  # a one-off job that ran meanwhile
                job.modify(next_run_time=max(job.next_run_time - timedelta(seconds=back), now))
        return back
