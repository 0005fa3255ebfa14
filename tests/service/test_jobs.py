"""The job runner: one run per project at a time, bursts coalesce, a failing job does not stop it."""

from __future__ import annotations

import threading

from service.jobs import JobRunner


class Blocking:
    """Work that records its calls and holds each run until released."""

    def __init__(self, fail_first: bool = False) -> None:
        self.calls: list[tuple[int, str]] = []
        self.kinds: list[str] = []
        self.started = threading.Event()
        self.release = threading.Event()
        self.fail_first = fail_first

    def __call__(self, project_id: int, kind: str, reason: str) -> None:
        self.calls.append((project_id, reason))
        self.kinds.append(kind)
        self.started.set()
        self.release.wait(10)
        if self.fail_first and len(self.calls) == 1:
            raise RuntimeError("boom")


def test_requests_during_a_run_coalesce_into_one_follow_up() -> None:
    work = Blocking()
    runner = JobRunner(work)
    try:
        assert runner.request(1, "webhook") == "queued"
        assert work.started.wait(5)
        assert runner.is_running(1) and runner.is_busy(1)
        assert [runner.request(1, f"event {i}") for i in range(5)] == ["coalesced"] * 5
        assert runner.queue_length() == 1
        work.release.set()
        assert runner.wait_idle(10)
        assert [c[0] for c in work.calls] == [1, 1]
        assert work.calls[1][1] == "follow-up (event 4)"
        assert not runner.is_busy(1) and runner.queue_length() == 0 and runner.completed == 2
    finally:
        work.release.set()
        runner.shutdown()


def test_a_project_waiting_with_a_follow_up_counts_once_in_the_queue() -> None:
    work = Blocking()
    runner = JobRunner(work)
    try:
        runner.request(1, "webhook")
        assert work.started.wait(5)
        assert runner.request(2, "webhook") == "queued" and runner.request(2, "again") == "coalesced"
        assert runner.queue_length() == 1, "project 2 waits, once"
    finally:
        work.release.set()
        runner.shutdown()


def test_a_failing_job_leaves_the_runner_working() -> None:
    work = Blocking(fail_first=True)
    work.release.set()
    runner = JobRunner(work)
    try:
        runner.request(7, "first")
        assert runner.wait_idle(10)
        assert runner.request(7, "second") == "queued"
        assert runner.wait_idle(10)
        assert [r for _, r in work.calls] == ["first", "second"]
        assert runner.completed == 2
    finally:
        runner.shutdown()


def test_projects_queue_behind_one_worker_and_all_run() -> None:
    work = Blocking()
    runner = JobRunner(work, max_workers=1)
    try:
        runner.request(1, "a")
        assert work.started.wait(5)
        assert runner.request(2, "b") == "queued"
        assert runner.is_busy(2) and not runner.is_running(2)
        work.release.set()
        assert runner.wait_idle(10)
        assert sorted(p for p, _ in work.calls) == [1, 2]
    finally:
        work.release.set()
        runner.shutdown()


def test_a_pending_training_absorbs_a_pending_push_and_not_the_other_way() -> None:
    work = Blocking()
    runner = JobRunner(work)
    try:
        runner.request(1, "first push", kind="push")
        assert work.started.wait(5)
        runner.request(1, "labels", kind="train")
        runner.request(1, "poll", kind="push")
        work.release.set()
        assert runner.wait_idle(10)
        assert work.kinds == ["push", "train"] and work.calls[1][1] == "follow-up (labels)"
    finally:
        runner.shutdown()


def test_a_shutdown_drops_what_waits_and_waits_a_while_for_what_runs() -> None:
    work = Blocking()
    runner = JobRunner(work)
    runner.request(1, "first")
    assert work.started.wait(5)
    runner.request(1, "a follow-up")
    runner.request(2, "another project, waiting for the worker")
    assert runner.shutdown(wait_seconds=0.2) is False, "the running job still runs"
    assert runner.request(3, "after the shutdown") == "closed" and not runner.is_busy(3)
    work.release.set()
    assert runner.shutdown(wait_seconds=10) is True
    assert work.calls == [(1, "first")], "neither the follow-up nor the waiting project ran"
    assert not runner.is_busy(1) and not runner.is_busy(2)


def test_a_job_a_worker_took_just_before_the_shutdown_does_not_start() -> None:
    work = Blocking()
    runner = JobRunner(work)
    assert runner.shutdown() is True
    runner._run(5, "train", "taken before the shutdown, run after it")
    assert work.calls == [] and runner.wait_idle(1)
