"""Background job runner: one job per project at a time, bursts coalesce into one follow-up.

Every job that writes to Label Studio for a project (a training with its push, or a push
alone) runs here, so a project has one writer and a push can never overtake a newer
version's. Requests that arrive while a project's job runs are remembered as one pending
follow-up; a pending training absorbs a pending push (a training ends with a push). A
thread pool bounds how many projects run at once (one by default: the CPU is shared with
serving).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger("sae_backend.jobs")
TRAIN, PUSH = "train", "push"
_WEIGHT = {PUSH: 0, TRAIN: 1}


class JobRunner:
    """``work(project_id, kind, reason)`` runs in the pool; ``kind`` is ``"train"`` or ``"push"``."""

    def __init__(self, work: Callable[[int, str, str], None], max_workers: int = 1) -> None:
        self._work = work
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="train")
        self._lock = threading.Lock()
        self._running: set[int] = set()
        self._queued: set[int] = set()
        self._pending: dict[int, tuple[str, str]] = {}
        self.completed = 0
        self.closed = False
        self.idle = threading.Event()
        self.idle.set()

    def request(self, project_id: int, reason: str, kind: str = TRAIN) -> str:
        """Ask for a run; returns ``queued``, ``coalesced`` or, once shut down, ``closed``."""
        if kind not in _WEIGHT:
            raise ValueError(f"unknown job kind {kind!r}")
        with self._lock:
            if self.closed:
                return "closed"
            if project_id in self._running or project_id in self._queued:
                old = self._pending.get(project_id)
                if old is None or _WEIGHT[kind] >= _WEIGHT[old[0]]:
                    self._pending[project_id] = (kind, reason)
                return "coalesced"
            self._queued.add(project_id)
            self.idle.clear()
            self._pool.submit(self._run, project_id, kind, reason)  # under the lock: a shutdown cannot come between
        return "queued"

    def _run(self, project_id: int, kind: str, reason: str) -> None:
        with self._lock:
            self._queued.discard(project_id)
            if self.closed:  # taken by a worker just before the shutdown: it must not start after it
                if not self._running and not self._queued:
                    self.idle.set()
                return
            self._running.add(project_id)
        try:
            self._work(project_id, kind, reason)
        except Exception:
            log.exception("%s job for project %s failed", kind, project_id)
        finally:
            with self._lock:
                self._running.discard(project_id)
                self.completed += 1
                follow = self._pending.pop(project_id, None)
                if self.closed:
                    follow = None
                if follow is not None:
                    self._queued.add(project_id)
                elif not self._running and not self._queued:
                    self.idle.set()
            if follow is not None:
                self._pool.submit(self._run, project_id, follow[0], f"follow-up ({follow[1]})")

    def is_running(self, project_id: int) -> bool:
        with self._lock:
            return project_id in self._running

    def is_busy(self, project_id: int) -> bool:
        """Running, waiting for a worker, or with a follow-up run pending."""
        with self._lock:
            return project_id in self._running or project_id in self._queued or project_id in self._pending

    def queue_length(self) -> int:
        """Projects waiting for a run: one with a run queued and a follow-up pending counts once."""
        with self._lock:
            return len(self._queued | self._pending.keys())

    def wait_idle(self, timeout: float | None = None) -> bool:
        return self.idle.wait(timeout)

    def shutdown(self, wait_seconds: float = 0.0) -> bool:
        """Drop what has not started and wait up to ``wait_seconds`` for what runs; True once nothing runs.

        The caller must not hand the model directory to another process while a job still writes there.
        """
        with self._lock:
            self.closed = True
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._queued.clear()
            self._pending.clear()
            if not self._running:
                self.idle.set()
        return self.idle.wait(wait_seconds)

