"""Pushing a version: the order of the steps, no duplicated rows, retries, the queue copy.

The Label Studio side is a recording fake here (the issue's unit level); the same push runs
against a real Label Studio in ``tests/integration``.
"""

from __future__ import annotations

import dataclasses
import time
from types import SimpleNamespace

import numpy as np
import pytest

from connectors.label_config import parse_label_config
from connectors.label_studio import LabelStudioError
from service.push import META_KEY, VIEW_TITLE, PushError, PushState, QueueTops, push_suggestions, push_version
from service.served import ServedVersion
from service.settings import Settings

CONFIG = ('<View><Image name="image" value="$image"/><Choices name="choice" toName="image" choice="single">'
          '<Choice value="cat"/><Choice value="dog"/></Choices></View>')
CFG = parse_label_config(CONFIG)


class Recorder:
    """Label Studio as the push sees it: the project (4) and its queue project (99), each with its own rows."""

    QUEUE = 99

    def __init__(self, fail: dict[str, list[LabelStudioError]] | None = None, versions: dict | None = None) -> None:
        self.calls: list[tuple] = []
        self.fail = fail or {}
        self.versions = versions if versions is not None else {}
        self.rows: list[dict] = []
        self.queue_rows: list[dict] = []
        self.queued: dict[int, int] = {}  # source task -> its copy in the queue
        self.copies_gone: set[int] = set()  # copies a person deleted in the queue
        self.worked_on: set[int] = set()  # copies with a draft (seen by the delete's filter only)
        self.annotated: set[int] = set()  # copies with an annotation or a skip (seen by a read of the queue too)
        self.sources: set[int] | None = None  # the project's tasks (None: any asked for)

    def _call(self, name: str, *args):
        self.calls.append((name, *args))
        if self.fail.get(name):
            raise self.fail[name].pop(0)

    def _rows(self, pid) -> list[dict]:
        return self.queue_rows if pid == self.QUEUE else self.rows

    def delete_predictions(self, pid, versions=None):
        self._call("delete_predictions", pid, versions)
        rows = self._rows(pid)
        n = len(rows)
        rows[:] = [r for r in rows if r["model_version"] not in versions]
        return n - len(rows)

    def import_predictions(self, pid, predictions):
        self._call("import_predictions", pid, len(predictions))
        if pid == self.QUEUE and any(p["task"] in self.copies_gone for p in predictions):
            raise LabelStudioError("HTTP 400: a task is not in the project", retryable=False, status_code=400)
        self._rows(pid).extend(predictions)
        return len(predictions)

    def set_model_version(self, pid, name):
        self._call("set_model_version", pid, name)

    def model_versions(self, pid):
        self._call("model_versions", pid)
        counts = dict(self.versions) if pid != self.QUEUE else {}
        for r in self._rows(pid):
            counts[r["model_version"]] = counts.get(r["model_version"], 0) + 1
        return counts

    def prediction_versions(self, pid, ids):
        self._call("prediction_versions", pid, sorted(ids))
        if pid == self.QUEUE:
            there = set(ids) & set(self.queued.values()) - self.copies_gone
        else:
            there = {t["id"] for t in self.tasks_by_id(pid, ids)}
        return {t: {r["model_version"] for r in self._rows(pid) if r["task"] == t} for t in there}

    def ensure_view(self, pid, title, filters, ordering, extra=None):
        self._call("ensure_view", pid, title)
        if pid != self.QUEUE:
            self.view = {**getattr(self, "view", {}), "sae_backend": True, **(extra or {})}
        return 5

    def list_views(self, pid):
        return [{"id": 5, "data": self.view}] if hasattr(self, "view") else []

    def bulk_mark(self, pid, marks, key, previous=None, keep_existing=False):
        self._call("bulk_mark", pid, marks, key, previous, keep_existing)
        return len(marks) + len(previous or ())

    def ensure_webhook(self, pid, url, actions, headers=None):
        self._call("ensure_webhook", pid, url, tuple(actions), headers)
        return 3

    def ensure_queue_project(self, pid, known=None):
        self._call("ensure_queue_project", pid, known)
        return self.QUEUE

    def authorize_webhook(self, pid, url, headers):
        self._call("authorize_webhook", pid, url, headers)
        return True

    def match_label_config(self, qid, pid):
        self._call("match_label_config", qid, pid)
        return False

    def tasks_by_id(self, pid, ids):
        self._call("tasks_by_id", pid, list(ids))
        if pid == self.QUEUE:
            return [{"id": t} for t in ids if t in set(self.queued.values()) - self.copies_gone]
        return [{"id": t, "data": {"image": f"/data/upload/4/{t}.png"}} for t in ids
                if self.sources is None or t in self.sources]

    def delete_untouched_tasks(self, qid, ids):
        self._call("delete_untouched_tasks", qid, sorted(ids))
        gone = {s: c for s, c in self.queued.items()
                if c in set(ids) - self.worked_on - self.annotated - self.copies_gone}
        for s in gone:
            del self.queued[s]
        self.queue_rows = [r for r in self.queue_rows if r["task"] not in gone.values()]
        return len(gone)

    def queue_copies(self, qid):
        self._call("queue_copies", qid)
        return {s: c for s, c in self.queued.items() if c not in self.copies_gone}

    def read_queue(self, qid):
        copies = self.queue_copies(qid)
        return copies, frozenset(set(copies.values()) & self.annotated)

    def copy_to_queue(self, qid, tasks, have=None):
        self._call("copy_to_queue", qid, [t["id"] for t in tasks])
        have = dict(self.queue_copies(qid) if have is None else have)
        for t in tasks:
            if t["id"] not in have:
                have[t["id"]] = self.queued[t["id"]] = 1000 + t["id"] + 100 * len(self.copies_gone)
        return have


class LandsThenTimesOut(Recorder):
    """Its first import lands, then times out: a retry must not write the rows twice."""

    timed_out = False

    def import_predictions(self, pid, predictions):
        n = super().import_predictions(pid, predictions)
        if not self.timed_out:
            self.timed_out = True
            raise LabelStudioError("Label Studio unreachable (ReadTimeout)", retryable=True)
        return n


def served(number: int = 3, head: tuple[tuple[int, float], ...] = ((12, 0.05), (11, 0.2))) -> ServedVersion:
    """A scored snapshot with a stand-in model: the push only reads ids, class names, scores and the head."""
    ids = np.array([10, 11, 12])
    model = SimpleNamespace(class_names=list(CFG.classes))
    return ServedVersion(number, f"sae-v{number}", model, "margin", {10: 0}, ids, np.array([0, 1, 1]),
                         np.array([0.9, 0.2 / 1.2, 0.05 / 1.05]), np.array([0.9, 0.3, 0.1]),
                         np.array([t for t, _ in head]), np.array([v for _, v in head]))


def _settings(tmp_path, **kw) -> Settings:
    return Settings(**{"label_studio_url": "http://127.0.0.1:1", "label_studio_api_key": "k",
                       "model_dir": tmp_path, "push_top_k": 1, "push_head": 2, **kw})


def push(client, tmp_path, prior=None, version=None, exclude=None, queue_project_id=None, **kw):
    return push_version(client, 4, CFG, version or served(), _settings(tmp_path, **kw), prior or PushState(), exclude,
                        queue_project_id=queue_project_id)


def after(report) -> PushState:
    """The state a completed push leaves for the next (as the project manager keeps it)."""
    return PushState(report.number, frozenset(report.marked), report.queued, report.rows,
                     queue_tops=report.queue_tops)


def test_a_version_writes_its_head_only_and_deletes_only_its_own_earlier_rows(tmp_path) -> None:
    client = Recorder()
    client.rows = [{"task": t, "model_version": v} for t in (10, 11) for v in ("sae-v2", "vendor-model", "sae-v9x")]
    report = push(client, tmp_path)
    names = [c[0] for c in client.calls]
    assert names == ["delete_predictions", "import_predictions", "set_model_version", "ensure_view",
                     "model_versions", "delete_predictions", "bulk_mark"]
    assert client.calls[0][2] == ["sae-v3"] and client.calls[5][2] == ["sae-v2"]
    mine = [r for r in client.rows if r["model_version"] == "sae-v3"]
    assert [r["task"] for r in mine] == [12, 11], "the head, in ranking order; tasks outside it get no row"
    assert {r["model_version"] for r in client.rows} == {"sae-v3", "vendor-model", "sae-v9x"}, \
        "another model's predictions (and names that only look like ours) survive"
    row = mine[1]
    assert row["score"] == pytest.approx(0.2 / 1.2) and row["result"][0]["value"] == {"choices": ["dog"]}
    assert client.calls[3][2] == VIEW_TITLE
    assert client.calls[6][2] == {12: {"rank": 1, "margin": 0.05, "model_version": "sae-v3"}}
    assert client.calls[6][3] == META_KEY
    assert report.rows_written == 2 and report.marked == {12} and report.head == [12, 11]
    assert set(report.seconds) == {"delete_predictions", "import_predictions", "set_model_version",
                                   "model_versions", "ensure_view", "bulk_mark"}


def test_the_head_is_visible_in_the_view_before_old_rows_are_deleted_and_marks_written(tmp_path) -> None:
    client = Recorder()
    client.rows = [{"task": 10, "model_version": "sae-v2"}]
    marked_at, deleted_at = [], []
    mark, delete = client.bulk_mark, client.delete_predictions
    client.bulk_mark = lambda *a, **k: marked_at.append(time.time()) or mark(*a, **k)
    client.delete_predictions = lambda pid, versions=None: (
        deleted_at.append((versions, time.time())) or delete(pid, versions))
    before = time.time()
    report = push(client, tmp_path)
    older_deleted_at = [t for versions, t in deleted_at if versions == ["sae-v2"]]
    assert len(older_deleted_at) == 1
    assert before <= report.head_visible_at <= older_deleted_at[0] <= marked_at[0]
    assert report.summary()["head_visible_at"] == report.head_visible_at
    assert 0 <= report.summary()["seconds_until_view"] <= report.summary()["total_seconds"] + 0.01


def test_the_view_score_orders_like_the_ranking(tmp_path) -> None:
    client = Recorder()
    push(client, tmp_path, push_head=3, version=served(head=((12, 0.05), (11, 0.2), (10, 0.9))))
    scores = [r["score"] for r in client.rows]
    assert scores == sorted(scores), "lowest score first in Label Studio = the ranking's order"


def test_tasks_labeled_since_the_version_are_not_pushed(tmp_path) -> None:
    client = Recorder()
    report = push(client, tmp_path, exclude={12})
    assert report.head == [11] and [r["task"] for r in client.rows] == [11]


def test_a_marked_task_labeled_since_keeps_its_mark_and_costs_no_write(tmp_path) -> None:
    client = Recorder()
    push(client, tmp_path, prior=PushState(2, frozenset({10, 12})), exclude={10})
    previous = next(c[4] for c in client.calls if c[0] == "bulk_mark")
    assert previous == {12}, "task 10 was labeled: its mark stays as the record of why it was asked for"


def test_the_mark_of_a_task_whose_label_is_deleted_is_cleared_at_the_next_push(tmp_path) -> None:
    client = Recorder()
    labeled = push(client, tmp_path, prior=PushState(2, frozenset({10, 12})), exclude={10})
    assert 10 in labeled.marked, "still tracked while labeled, though not written"
    client = Recorder()
    push(client, tmp_path, prior=PushState(3, frozenset(labeled.marked)), exclude=set())
    marks, previous = next((c[2], c[4]) for c in client.calls if c[0] == "bulk_mark")
    assert 10 in previous and 10 not in marks, "its annotation was deleted: the stale mark is cleared"


def test_a_repeated_push_does_not_duplicate(tmp_path) -> None:
    client = Recorder()
    push(client, tmp_path)
    push(client, tmp_path)
    assert len(client.rows) == 2


def test_an_older_version_is_never_pushed_after_a_newer_one(tmp_path) -> None:
    client = Recorder()
    report = push(client, tmp_path, prior=PushState(last_number=4), version=served(3))
    assert report.stale and client.calls == []


def test_marks_read_the_whole_project_once_then_only_the_marked_tasks(tmp_path) -> None:
    client = Recorder()
    first = push(client, tmp_path)
    second = push(client, tmp_path, prior=PushState(3, frozenset(first.marked)),
                  version=served(4, ((11, 0.2), (12, 0.05))))
    previous = [c[4] for c in client.calls if c[0] == "bulk_mark"]
    assert previous == [None, {12}]
    keep = [c[5] for c in client.calls if c[0] == "bulk_mark"]
    assert keep == [False, True], "marks are rewritten once, then a task staying in the top-K keeps its mark"
    assert second.marked == {11}
    assert (first.marks_written, second.marks_written) == (1, 2), "the report counts the client's PATCHes"
    assert second.summary()["marks_written"] == 2

    client.fail["bulk_mark"] = [LabelStudioError("down", retryable=False)]
    with pytest.raises(PushError) as err:
        push(client, tmp_path, prior=PushState(4, frozenset(second.marked)), version=served(5, ((10, 0.3),)))
    assert err.value.marked == {10, 11}, "a half-done marking leaves every task that may carry a mark known"


def test_transient_errors_are_retried_and_permanent_ones_raise(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr("connectors.label_studio.wait_exponential", lambda **kw: (lambda state: 0))
    down = LabelStudioError("Label Studio unreachable (database is locked)", retryable=True, status_code=500)
    client = Recorder(fail={"import_predictions": [down, down]})
    push(client, tmp_path, push_retries=3)
    assert [c[0] for c in client.calls].count("import_predictions") == 3
    assert len(client.rows) == 2

    refused = LabelStudioError("HTTP 400", retryable=False, status_code=400)
    client = Recorder(fail={"ensure_view": [refused]})
    with pytest.raises(PushError, match="ensure_view"):
        push(client, tmp_path)
    assert [c[0] for c in client.calls].count("ensure_view") == 1


def test_queue_mode_copies_the_top_k_and_orders_the_queue_by_the_version(tmp_path) -> None:
    """The queue is where annotators work in queue mode: its copies must come in the ranking's order, not by id."""
    client = Recorder()
    report = push(client, tmp_path, push_mode="queue", push_top_k=2, queue_project_id=77)
    assert report.queue_project_id == 99 and ("ensure_queue_project", 4, 77) in client.calls
    assert ("copy_to_queue", 99, [12, 11]) in client.calls and report.queued.copies == {12: 1012, 11: 1011}
    scores = {r["task"]: r["score"] for r in client.rows}
    assert {r["task"]: r["score"] for r in client.queue_rows} == {1012: scores[12], 1011: scores[11]}
    assert all(r["model_version"] == "sae-v3" and r["result"] for r in client.queue_rows)
    assert ("set_model_version", 99, "sae-v3") in client.calls and ("ensure_view", 99, VIEW_TITLE) in client.calls

    client.calls.clear()
    again = push(client, tmp_path, prior=after(report), version=served(4, ((13, 0.01), (12, 0.05))),
                 push_mode="queue", push_top_k=2)
    assert {r["task"] for r in client.queue_rows} == {1013, 1012}, "1011 left the head: it sorts last"
    assert {r["model_version"] for r in client.queue_rows} == {"sae-v4"}, "the queue's earlier rows went"
    assert not [c for c in client.calls if c[:2] == ("prediction_versions", 99)], "a new version holds no rows"
    assert again.queued.rows == {1012, 1013} and again.queued.rows_number == 4


def test_the_queue_takes_the_project_s_edited_label_config_and_a_refusal_stops_no_push(tmp_path) -> None:
    """A class added to the project must be choosable in the queue, where the work is done in queue mode."""
    client = Recorder()
    report = push(client, tmp_path, push_mode="queue", push_top_k=2)
    assert ("match_label_config", 99, 4) in client.calls and report.summary()["queue_config_error"] is None

    def refused(qid, pid):
        raise LabelStudioError("HTTP 400: Created annotations are incompatible with provided labeling schema",
                               retryable=False, status_code=400)

    client.match_label_config = refused
    again = push(client, tmp_path, prior=after(report), version=served(4), push_mode="queue", push_top_k=2)
    assert "incompatible" in again.summary()["queue_config_error"]
    assert {r["model_version"] for r in client.queue_rows} == {"sae-v4"}, "the queue is ordered all the same"


def test_in_queue_mode_the_cold_start_suggestions_are_the_queue_s_first_work(tmp_path) -> None:
    """A team that works in the queue must not wait for the first trained version to see what to label."""
    client = Recorder()
    s = _settings(tmp_path, push_mode="queue", push_head=3, push_top_k=2)
    first = push_suggestions(client, 4, [40, 10, 30], s, PushState())
    assert first.queued.copies == {40: 1040, 10: 1010} and first.queue_project_id == 99
    assert [r["task"] for r in sorted(client.queue_rows, key=lambda r: r["score"])] == [1040, 1010]
    assert ("set_model_version", 99, "sae-v0") in client.calls
    push(client, tmp_path, prior=after(first), version=served(1), push_mode="queue", push_top_k=2)
    assert {r["model_version"] for r in client.queue_rows} == {"sae-v1"}, "the first version replaces them"


def test_a_queue_row_is_never_written_twice(tmp_path, monkeypatch) -> None:
    """An import that landed although its answer was lost, a push of the same version again, a restart."""
    monkeypatch.setattr("connectors.label_studio.wait_exponential", lambda **kw: (lambda state: 0))
    client = Recorder()
    real = client.import_predictions

    def lands_then_times_out(pid, predictions):
        n = real(pid, predictions)
        if pid == Recorder.QUEUE and not getattr(client, "timed_out", False):
            client.timed_out = True
            raise LabelStudioError("timed out", retryable=True)
        return n

    client.import_predictions = lands_then_times_out
    report = push(client, tmp_path, push_mode="queue", push_top_k=2, push_retries=2)
    assert sorted(r["task"] for r in client.queue_rows) == [1011, 1012], "the retry read and added nothing"
    for prior in (after(report), PushState(3, frozenset(report.marked), None, report.rows)):  # again; restarted
        push(client, tmp_path, prior=prior, version=served(3, ((12, 0.05), (11, 0.2), (10, 0.3))),
             push_mode="queue", push_top_k=3, push_head=3)
        assert sorted(r["task"] for r in client.queue_rows) == [1010, 1011, 1012], "only the new copy got a row"


def test_a_queue_row_outside_the_head_is_not_written_again_when_its_source_comes_back(tmp_path) -> None:
    """A label removed puts its task back into the same version's head; after a restart its row is not known."""
    client = Recorder()
    first = push(client, tmp_path, push_mode="queue", push_top_k=2)
    restarted = PushState(3, frozenset(first.marked), None, first.rows)
    labeled = push(client, tmp_path, prior=restarted, exclude={11}, push_mode="queue", push_top_k=2)
    push(client, tmp_path, prior=after(labeled), push_mode="queue", push_top_k=2)
    assert sorted(r["task"] for r in client.queue_rows) == [1011, 1012], "one row each"


def test_a_queue_taken_over_from_another_install_holds_this_install_s_rows_only(tmp_path) -> None:
    client = Recorder()
    client.queued = {12: 1012, 11: 1011}
    client.queue_rows = [{"task": 1012, "model_version": "sae-v3", "score": 0.9},
                         {"task": 1011, "model_version": "sae-v9", "score": 0.1}]  # the other install's
    report = push(client, tmp_path, prior=PushState(3, took_over=True), push_mode="queue", push_top_k=2)
    scores = {r["task"]: r["score"] for r in client.rows}
    assert sorted((r["task"], r["model_version"], r["score"]) for r in client.queue_rows) == \
        [(1011, "sae-v3", scores[11]), (1012, "sae-v3", scores[12])]
    assert report.queued.rows == {1011, 1012}


def test_a_queue_copy_a_person_deleted_is_passed_over_and_copied_again(tmp_path) -> None:
    """Label Studio refuses a whole import for one task it no longer has: the rest must still be ordered."""
    client = Recorder()
    first = push(client, tmp_path, push_mode="queue", push_top_k=2)
    client.copies_gone.add(first.queued.copies[12])
    again = push(client, tmp_path, prior=after(first), version=served(4), push_mode="queue", push_top_k=2)
    assert [r["task"] for r in client.queue_rows if r["model_version"] == "sae-v4"] == [1011]
    assert 12 not in again.queued.copies, "its copy is gone"
    push(client, tmp_path, prior=after(again), version=served(5), push_mode="queue", push_top_k=2)
    assert client.queued[12] != first.queued.copies[12], "copied again while it stays in the top-K"
    assert {r["task"] for r in client.queue_rows} == {client.queued[12], 1011}


def test_queue_copies_go_a_version_after_their_sources_leave_the_top_k_unless_someone_worked_on_them(
        tmp_path) -> None:
    """Else the queue gains a top-K every version for weeks, and offers tasks already labeled in the project."""
    client = Recorder()
    state = PushState()
    retired = []
    for number, top in enumerate([(12, 11), (13, 12), (14, 13), (15, 14), (16, 15)], start=3):
        if number == 5:
            client.worked_on.add(client.queued[12])  # a draft on 12's copy
        report = push(client, tmp_path, prior=state, version=served(number, ((top[0], 0.01), (top[1], 0.05))),
                      push_mode="queue", push_top_k=2)
        state, retired = after(report), [*retired, report.copies_retired]
        assert report.summary()["copies_retired"] == report.copies_retired
    assert retired == [0, 0, 1, 0, 1], "11 at v5 (in v3's and v4's top), 12 stays (worked on), 13 at v7"
    assert set(client.queued) == {12, 14, 15, 16} == set(state.queued.copies)
    asked = [c[2] for c in client.calls if c[0] == "delete_untouched_tasks"]
    assert asked == [[1011], [1012], [1013]], "a copy someone worked on is asked for once"
    assert state.queued.worked == {1012}

    client = Recorder()
    client.queued = {s: 1000 + s for s in range(20, 40)}  # left by a backend that never retired copies
    tops = QueueTops(2, frozenset({20}), frozenset())
    report = push(client, tmp_path, prior=PushState(2, frozenset({20}), queue_tops=tops), push_mode="queue",
                  push_top_k=1)
    assert report.copies_retired == 10 and len(client.queued) == 11, "ten a push (PUSH_TOP_K 1): the rest later"
    assert set(client.queued) == {12, *range(20, 30)}, "the newest first"
    report = push(client, tmp_path, prior=PushState(3, frozenset({12})), push_mode="queue", push_top_k=1,
                  version=served(4))
    assert report.copies_retired == 0, "the last version's top-K unknown (an earlier release, a takeover): none go"
    report = push(client, tmp_path, prior=after(report), version=served(5), push_mode="queue", push_top_k=1)
    assert report.copies_retired == 10, "known again after one version"


def test_a_task_labeled_in_the_project_leaves_the_queue_within_two_versions(tmp_path) -> None:
    """An annotator working the queue must not label again what a colleague labeled in the project; the mark the
    labeled task keeps (its provenance) must not keep its copy."""
    client = Recorder()
    first = push(client, tmp_path, push_mode="queue", push_top_k=2)
    labeled = {12}
    v4 = push(client, tmp_path, prior=after(first), version=served(4, ((13, 0.01), (11, 0.05))), exclude=labeled,
              push_mode="queue", push_top_k=2)
    assert 12 in client.queued and 12 in v4.marked, "stays through the version after it left; its mark stays"
    v5 = push(client, tmp_path, prior=after(v4), version=served(5, ((14, 0.01), (13, 0.05))), exclude=labeled,
              push_mode="queue", push_top_k=2)
    assert 12 not in client.queued and 12 not in v5.queued.copies and 12 in v5.marked


def test_queue_copies_stay_through_every_push_of_a_version_and_a_failed_one(tmp_path) -> None:
    client = Recorder()
    v3 = push(client, tmp_path, push_mode="queue", push_top_k=2)
    v4 = push(client, tmp_path, prior=after(v3), version=served(4, ((13, 0.01), (14, 0.05))), push_mode="queue",
              push_top_k=2)
    again = push(client, tmp_path, prior=after(v4), version=served(4, ((15, 0.01), (16, 0.05))), push_mode="queue",
                 push_top_k=2)
    assert again.copies_retired == 0 and {11, 12, 13, 14, 15, 16} <= set(client.queued), \
        "new tasks entered version 4's top: version 3's copies still stay through version 4"
    client.fail["ensure_view"] = [LabelStudioError("HTTP 400: bad", retryable=False)]
    with pytest.raises(PushError):
        push(client, tmp_path, prior=after(again), version=served(5, ((17, 0.01), (18, 0.05))), push_mode="queue",
             push_top_k=2)
    retried = push(client, tmp_path, prior=after(again), version=served(5, ((17, 0.01), (18, 0.05))),
                   push_mode="queue", push_top_k=2)
    assert {13, 14, 15, 16} <= set(client.queued) and not {11, 12} & set(client.queued), \
        "the failed push changed nothing: version 4's copies stay through 5, version 3's go"
    assert retried.queue_tops == QueueTops(5, frozenset({17, 18}), frozenset({13, 14, 15, 16}))

    real_view = client.ensure_view

    def queue_view_fails(pid, *args):
        if pid == Recorder.QUEUE:
            raise LabelStudioError("HTTP 500: database is locked", retryable=False)
        return real_view(pid, *args)

    client.ensure_view = queue_view_fails  # version 6 copies its top-K, then fails ordering the queue
    with pytest.raises(PushError) as failed:
        push(client, tmp_path, prior=after(retried), version=served(6, ((19, 0.01), (20, 0.05))), push_mode="queue",
             push_top_k=2)
    assert {19, 20} <= set(client.queued) and failed.value.queue_tops.number == 6
    client.ensure_view = real_view
    client.fail["ensure_queue_project"] = [LabelStudioError("HTTP 500: busy", retryable=False)]
    with pytest.raises(PushError) as early:
        push(client, tmp_path, prior=after(retried), version=served(6, ((19, 0.01), (20, 0.05))), push_mode="queue",
             push_top_k=2)
    assert early.value.queue_tops is None, "failed before copying: its top-K holds no copy to keep"
    kept = dataclasses.replace(after(retried), queue_tops=failed.value.queue_tops)  # as the project manager keeps it
    push(client, tmp_path, prior=kept, version=served(7, ((21, 0.01), (22, 0.05))), push_mode="queue", push_top_k=2)
    assert {19, 20} <= set(client.queued), "version 6's copies were in the queue: they stay through version 7"


def test_a_restart_reads_which_copies_were_labeled_and_never_asks_to_delete_them(tmp_path) -> None:
    client = Recorder()
    client.queued = {s: 1000 + s for s in range(20, 30)}
    client.annotated = {1020, 1021, 1022}
    restarted = PushState(2, frozenset({20}), None, queue_tops=QueueTops(2, frozenset({20}), frozenset()))
    report = push(client, tmp_path, prior=restarted, push_mode="queue", push_top_k=1)
    asked = {t for c in client.calls if c[0] == "delete_untouched_tasks" for t in c[2]}
    assert asked == {1023, 1024, 1025, 1026, 1027, 1028, 1029} and report.copies_retired == 7
    assert report.queued.worked == {1020, 1021, 1022}


def test_no_copy_goes_while_the_queue_holds_none_of_the_top_k(tmp_path) -> None:
    """Label Studio deletes a project's tabs, the team's too, with its last task."""
    client = Recorder()
    client.queued = {20: 1020}
    client.sources = set()  # every top task deleted in the project before its webhook was read
    push(client, tmp_path, prior=PushState(2, frozenset({20}), queue_tops=QueueTops(2, frozenset(), frozenset())),
         push_mode="queue", push_top_k=1)
    assert "delete_untouched_tasks" not in [c[0] for c in client.calls] and client.queued == {20: 1020}


def test_cold_start_suggestions_push_rows_without_a_result_in_order() -> None:
    from service.push import COLD_START_VERSION, push_suggestions

    rec = Recorder(versions={"vendor-v1": 7})
    s = Settings(push_head=10, push_top_k=2, push_retries=1)
    report = push_suggestions(rec, 3, [40, 10, 30], s, PushState())
    assert [r["task"] for r in rec.rows] == [40, 10, 30]
    assert all(r["result"] == [] and r["model_version"] == COLD_START_VERSION for r in rec.rows)
    scores = [r["score"] for r in rec.rows]
    assert scores == sorted(scores) and len(set(scores)) == 3, "the view shows them in the suggested order"
    assert report.number == 0 and report.marked == {40, 10} and not report.stale
    names = [c[0] for c in rec.calls]
    assert names.index("delete_predictions") < names.index("import_predictions") < names.index("set_model_version")
    assert ("delete_predictions", 3, [COLD_START_VERSION]) in rec.calls, "only its own rows are ever deleted"
    # retried after a failure: no duplicated rows
    push_suggestions(rec, 3, [40, 10, 30], s, PushState())
    assert len(rec.rows) == 3


def test_cold_start_never_follows_a_trained_version() -> None:
    from service.push import push_suggestions

    rec = Recorder()
    report = push_suggestions(rec, 3, [1, 2], Settings(push_retries=1), PushState(last_number=1))
    assert report.stale and rec.calls == []


def test_predictions_name_the_class_the_model_learned_when_the_config_changed_since(tmp_path) -> None:
    client = Recorder()
    names = list(CFG.classes)
    reordered = parse_label_config(CONFIG.replace(f'<Choice value="{names[0]}"/>', "").replace(
        "</Choices>", f'<Choice value="{names[0]}"/></Choices>'))
    assert reordered.classes != CFG.classes and sorted(reordered.classes) == sorted(CFG.classes)
    push_version(client, 1, reordered, served(), _settings(tmp_path), PushState())
    chosen = {r["task"]: r["result"][0]["value"]["choices"][0] for r in client.rows}
    assert chosen == {12: names[1], 11: names[1]}, "the model's class 1 by its name, not the new config's class 1"
    removed = parse_label_config(CONFIG.replace(f'<Choice value="{names[1]}"/>', '<Choice value="bird"/>'))
    client = Recorder()
    push_version(client, 1, removed, served(), _settings(tmp_path), PushState())
    assert [r["result"] for r in client.rows] == [[], []], "a class the config lost gets no result, not another's"


def test_with_backend_url_the_queue_project_sends_its_labels_here(tmp_path) -> None:
    client = Recorder()
    push(client, tmp_path, push_mode="queue")
    assert not [c for c in client.calls if c[0] == "ensure_webhook"], "no BACKEND_URL: counters and scans only"
    client = Recorder()
    push(client, tmp_path, push_mode="queue", backend_url="http://sae:9090/", basic_auth_user="ann",
         basic_auth_pass="pw")
    (call,) = [c for c in client.calls if c[0] == "ensure_webhook"]
    assert call[1:4] == (99, "http://sae:9090/webhook", ("ANNOTATION_CREATED", "ANNOTATION_UPDATED",
                                                        "ANNOTATIONS_DELETED", "TASKS_DELETED"))
    assert call[4] == {"Authorization": "Basic YW5uOnB3"}


def test_behind_basic_auth_the_webhook_label_studio_made_for_the_model_gets_the_header(tmp_path) -> None:
    """Label Studio makes it without headers: every webhook was refused (401) until the next poll read the change."""
    client = Recorder()
    push(client, tmp_path, backend_url="http://sae:9090/")
    push(client, tmp_path, basic_auth_user="ann", basic_auth_pass="pw")
    assert not [c for c in client.calls if c[0] == "authorize_webhook"], "no auth, or no URL to name the webhook by"
    push(client, tmp_path, backend_url="http://sae:9090/", basic_auth_user="ann", basic_auth_pass="pw")
    assert ("authorize_webhook", 4, "http://sae:9090/webhook", {"Authorization": "Basic YW5uOnB3"}) in client.calls

    def refused(pid, url, headers):
        raise LabelStudioError("HTTP 403: not allowed", retryable=False, status_code=403)

    client.authorize_webhook = refused
    report = push(client, tmp_path, version=served(4), backend_url="http://sae:9090/", basic_auth_user="ann",
                  basic_auth_pass="pw")
    assert report.rows_written and ("set_model_version", 4, "sae-v4") in client.calls, "the push goes on"


def test_a_queue_webhook_label_studio_refuses_does_not_stop_the_push(tmp_path) -> None:
    refused = LabelStudioError("HTTP 400: url: Enter a valid URL.", retryable=False)
    client = Recorder(fail={"ensure_webhook": [refused]})
    report = push(client, tmp_path, push_mode="queue", backend_url="http://sae-backend:9090")
    assert report.queue_project_id == 99 and [c for c in client.calls if c[0] == "copy_to_queue"], \
        "the queue is filled; its labels are polled instead"


def test_a_push_that_fails_after_making_the_queue_still_names_it(tmp_path) -> None:
    """Its webhook may already be registered: the queue's events must be known as the queue's."""
    client = Recorder(fail={"copy_to_queue": [LabelStudioError("HTTP 400: bad", retryable=False)]})
    with pytest.raises(PushError) as e:
        push(client, tmp_path, push_mode="queue", backend_url="http://sae.example:9090")
    assert e.value.queue_project_id == 99
    client = Recorder(fail={"bulk_mark": [LabelStudioError("HTTP 400: bad", retryable=False)]})
    with pytest.raises(PushError) as e:
        push(client, tmp_path, push_mode="queue")
    assert e.value.queue_project_id is None, "no queue was made"


def test_the_tasks_a_push_may_mark_are_known_before_it_writes_any(tmp_path) -> None:
    """A process killed mid-way (or a client closed under it) must still leave the next push O(K) and right."""
    told: list[set[int]] = []
    client = Recorder(fail={"bulk_mark": [RuntimeError("the client has been closed")]})
    with pytest.raises(RuntimeError):
        push_version(client, 4, CFG, served(), _settings(tmp_path), PushState(2, frozenset({7, 10})), {10},
                     marking=told.append)
    assert told == [{7, 12, 10}], "the old marks, the new top-K and a labeled task's carried mark"
    told.clear()
    client = Recorder(fail={"bulk_mark": [RuntimeError("killed")]})
    with pytest.raises(RuntimeError):
        push_suggestions(client, 3, [40, 10, 30], _settings(tmp_path), PushState(None, frozenset({5})), told.append)
    assert told == [{5, 40}]


def test_the_queue_is_read_once_then_known_from_the_last_push(tmp_path) -> None:
    """Reading the whole queue at every push costs O(queue) requests where O(top-K) copies changed."""
    client = Recorder()
    first = push(client, tmp_path, push_mode="queue", push_top_k=2)
    assert [c[0] for c in client.calls].count("queue_copies") == 1 and set(first.queued.copies) == {11, 12}
    client.calls.clear()
    again = push(client, tmp_path, prior=after(first), version=served(4, ((13, 0.01), (12, 0.05))),
                 push_mode="queue", push_top_k=2)
    assert "queue_copies" not in [c[0] for c in client.calls] and set(again.queued.copies) == {11, 12, 13}
    assert set(client.queued) == {11, 12, 13}, "only 13 was new"
    elsewhere = dataclasses.replace(first.queued, project=98)
    other = push(Recorder(), tmp_path, prior=PushState(3, None, elsewhere), push_mode="queue")
    assert other.queue_project_id == 99 and set(other.queued.copies) == {12}, "another queue project is read afresh"


def test_a_retried_queue_copy_reads_the_queue_again(tmp_path) -> None:
    """The import may have landed although its answer was lost: the retry must not copy the tasks twice."""
    client = Recorder()
    real = client.copy_to_queue
    calls = []

    def lands_then_times_out(qid, tasks, have=None):
        calls.append(have)
        n = real(qid, tasks, have)
        if len(calls) == 1:
            raise LabelStudioError("timed out", retryable=True)
        return n

    client.copy_to_queue = lands_then_times_out
    report = push(client, tmp_path, push_mode="queue", push_top_k=2, push_retries=2)
    assert calls[0] == {} and calls[1] is None, "the cache once, then the queue itself"
    assert set(client.queued) == {11, 12} and set(report.queued.copies) == {11, 12}


def test_an_import_that_timed_out_after_landing_is_retried_without_duplicating_rows(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr("connectors.label_studio.wait_exponential", lambda **kw: (lambda state: 0))
    client = LandsThenTimesOut()
    report = push(client, tmp_path, push_retries=3)
    names = [c[0] for c in client.calls]
    assert names.count("import_predictions") == 1 and names.count("prediction_versions") == 1, "read, not sent again"
    assert sorted(r["task"] for r in client.rows) == [11, 12] and report.rows_written == 2, "each task of the head once"
    assert {"delete_predictions", "import_predictions"} <= set(report.seconds)


def test_a_version_pushed_again_adds_rows_for_new_head_tasks_and_deletes_nothing(tmp_path) -> None:
    client = Recorder()
    first = push(client, tmp_path, version=served(3, ((12, 0.05),)), push_head=1)
    assert first.rows == {12}
    client.calls.clear()
    again = push(client, tmp_path, prior=PushState(3, frozenset(first.marked), rows=first.rows),
                 version=served(3, ((11, 0.01), (12, 0.05))))
    names = [c[0] for c in client.calls]
    assert "delete_predictions" not in names[:names.index("set_model_version")], "the view keeps its order"
    assert ("import_predictions", 4, 1) in client.calls and again.rows_written == 1
    assert sorted(r["task"] for r in client.rows if r["model_version"] == "sae-v3") == [11, 12]
    assert again.rows == {11, 12}
    client.rows.append({"task": 10, "model_version": "sae-v3"})  # stored from /predict: opened before it entered
    client.calls.clear()
    third = push(client, tmp_path, prior=PushState(3, frozenset(again.marked), rows=again.rows), push_head=3,
                 version=served(3, ((10, 0.01), (11, 0.02), (12, 0.05))))
    assert [c for c in client.calls if c[0] == "prediction_versions"] == [("prediction_versions", 4, [10])], \
        "only the task new in the head is read"
    assert third.rows_written == 0 and third.rows == {10, 11, 12}, "it holds a row already: no second one"
    assert sorted(r["task"] for r in client.rows if r["model_version"] == "sae-v3") == [10, 11, 12]
    unknown = push(client, tmp_path, prior=PushState(3, frozenset(again.marked)), version=served(3))
    assert unknown.rows_deleted == 3 and unknown.rows_written == 2, "rows not known: all replaced"


def test_a_version_with_nothing_left_to_label_pushes_without_naming_a_version_label_studio_refuses(tmp_path) -> None:
    """Every task labeled while it trained: Label Studio answers 400 to a model version no prediction carries."""
    class Strict(Recorder):
        def set_model_version(self, pid, name):
            if not any(r["model_version"] == name for r in self._rows(pid)):
                raise LabelStudioError("HTTP 400: Model version doesn't exist either as live model or as static "
                                       "predictions", retryable=False, status_code=400)
            super().set_model_version(pid, name)

    client = Strict()
    first = push(client, tmp_path, version=served(3))
    done = push(client, tmp_path, prior=after(first), version=served(4), exclude={11, 12})
    assert done.head == [] and not any(r["model_version"] == "sae-v3" for r in client.rows), "the older rows went"
    assert ("set_model_version", 4, "sae-v4") not in client.calls

    class Dropping(Strict):  # Label Studio drops rows it finds invalid (a class the config lost) and answers 201
        def import_predictions(self, pid, predictions):
            self._call("import_predictions", pid, len(predictions))
            return 0

    client = Dropping()
    report = push(client, tmp_path, version=served(5))
    assert report.rows_written == 0 and client.calls[-1][:2] == ("bulk_mark", 4), "the push went on to the marks"


def test_an_unread_predict_answer_is_not_the_task_s_row_and_goes_with_the_version(tmp_path) -> None:
    """/predict could not read task 11 before it entered the head: Label Studio stored the empty answer."""
    client = Recorder()
    first = push(client, tmp_path, version=served(3, ((12, 0.05),)), push_head=1)
    client.rows.append({"task": 11, "model_version": "sae-v3-unread", "score": 1.0, "result": []})
    again = push(client, tmp_path, prior=PushState(3, frozenset(first.marked), rows=first.rows),
                 version=served(3, ((11, 0.01), (12, 0.05))))
    assert again.rows_written == 1 and again.rows == {11, 12}
    real = [r for r in client.rows if r["task"] == 11 and r["model_version"] == "sae-v3"]
    assert len(real) == 1 and real[0]["score"] < 1.0 and real[0]["result"], "the version's own row, scored"
    restarted = push(client, tmp_path, prior=PushState(2, frozenset(), rows=None, rows_number=3),
                     version=served(3, ((11, 0.01), (12, 0.05))))
    assert restarted.rows_written == 0, "read back after a restart: the real rows are there, the unread one is not"
    push(client, tmp_path, prior=PushState(3, frozenset(again.marked), rows=again.rows), version=served(4))
    assert {r["model_version"] for r in client.rows} == {"sae-v4"}, "this backend's: deleted with its version"


def test_an_added_row_that_failed_is_read_back_and_nothing_is_deleted(
        tmp_path, monkeypatch) -> None:
    monkeypatch.setattr("connectors.label_studio.wait_exponential", lambda **kw: (lambda state: 0))
    known = PushState(3, frozenset(), rows=frozenset({12}))
    landed = LandsThenTimesOut()
    landed.rows = [{"task": 12, "model_version": "sae-v3"}]
    report = push(landed, tmp_path, prior=known, push_retries=3)
    assert sorted(r["task"] for r in landed.rows) == [11, 12] and report.rows == {11, 12}
    assert [c[2] for c in landed.calls if c[0] == "import_predictions"] == [1], "landed: not sent again"
    locked = Recorder(fail={"import_predictions": [LabelStudioError("HTTP 500: database is locked", retryable=True,
                                                                    status_code=500)]})
    locked.rows = [{"task": 12, "model_version": "sae-v3"}]
    report = push(locked, tmp_path, prior=known, push_retries=3)
    assert sorted(r["task"] for r in locked.rows) == [11, 12] and report.rows == {11, 12}
    for client in (landed, locked):
        deletes = [c for c in client.calls if c[0] == "delete_predictions"]
        assert all("sae-v3" not in c[2] for c in deletes), "the version Label Studio shows keeps its rows"


def test_a_failed_add_reads_which_head_tasks_hold_a_row_whatever_else_the_version_holds(tmp_path,
                                                                                        monkeypatch) -> None:
    monkeypatch.setattr("connectors.label_studio.wait_exponential", lambda **kw: (lambda state: 0))
    opened = [{"task": 12, "model_version": "sae-v3"}, {"task": 99, "model_version": "sae-v3"}]  # 99: a row Label
    # Studio stored from /predict when an annotator opened the task
    deleted = [{"task": 12, "model_version": "sae-v3"}]  # 10 was deleted in Label Studio, its row with it
    for held, state in ((opened, frozenset({12})), (deleted, frozenset({10, 12}))):
        locked = Recorder(fail={"import_predictions": [LabelStudioError("HTTP 500: database is locked",
                                                                        retryable=True, status_code=500)]})
        landed, meanwhile = LandsThenTimesOut(), OpenedMeanwhile()
        for client, how in ((locked, "none landed: 11 added again"), (landed, "landed: not again"),
                            (meanwhile, "landed while a /predict row was stored: not again")):
            client.rows = list(held)
            report = push(client, tmp_path, prior=PushState(3, frozenset(), rows=state), push_retries=3)
            assert sorted(r["task"] for r in client.rows if r["task"] != 98) == \
                sorted([11, *(r["task"] for r in held)]), how
            assert report.rows_written == 1 and {11, 12} <= report.rows, how
            assert not any(c[0] == "delete_predictions" and "sae-v3" in c[2] for c in client.calls), how


class OpenedMeanwhile(LandsThenTimesOut):
    """While the add runs, an annotator opens a task: Label Studio stores a row of the version from /predict."""

    def import_predictions(self, pid, predictions):
        self.rows.append({"task": 98, "model_version": predictions[0]["model_version"]})
        return super().import_predictions(pid, predictions)


def test_a_mark_whose_margin_is_not_finite_is_still_valid_json(tmp_path) -> None:
    import json

    client = Recorder()
    push(client, tmp_path, version=served(head=((12, float("nan")), (11, 0.2))))
    marks = next(c for c in client.calls if c[0] == "bulk_mark")[2]
    assert marks == {12: {"rank": 1, "margin": None, "model_version": "sae-v3"}}
    json.dumps(marks, allow_nan=False)


def test_a_push_that_takes_over_from_another_install_trusts_nothing_it_recorded(tmp_path) -> None:
    """The other install deleted and wrote rows and marks meanwhile: this one's records of them are stale."""
    from service.writer_claim import Writer

    client = Recorder()
    client.view = {"sae_backend": True, "sae_backend_writer": {"install": "theirs", "at": time.time() - 7200}}
    client.rows = [{"task": t, "model_version": v} for t in (10, 11) for v in ("sae-v3", "sae-v7")]
    prior = PushState(last_number=3, marked=frozenset({10}), rows=frozenset({11, 12}))
    report = push_version(client, 4, CFG, served(), _settings(tmp_path), prior, None, writer=Writer("mine"))
    assert report.took_over and client.view["sae_backend_writer"]["install"] == "mine"
    assert [c for c in client.calls if c[0] == "delete_predictions"] == [("delete_predictions", 4, ["sae-v3"]),
                                                                          ("delete_predictions", 4, ["sae-v7"])]
    assert {r["model_version"] for r in client.rows} == {"sae-v3"} and len(client.rows) == 2, "its head, once"
    assert next(c for c in client.calls if c[0] == "bulk_mark")[4:] == (None, False), "every mark read again"
    assert report.newer == []


def test_a_push_another_install_holds_writes_nothing_unless_the_lease_is_zero(tmp_path) -> None:
    from service.writer_claim import Claim, Writer

    client = Recorder()
    client.view = {"sae_backend": True, "sae_backend_writer": {"install": "theirs", "at": time.time() - 60}}
    report = push_version(client, 4, CFG, served(), _settings(tmp_path), PushState(), None, writer=Writer("mine"))
    assert report.other_writer == Claim("theirs", client.view["sae_backend_writer"]["at"]) and client.calls == []
    forced = push_version(client, 4, CFG, served(), _settings(tmp_path, writer_lease_seconds=0), PushState(), None,
                          writer=Writer("mine"))
    assert forced.other_writer is None and forced.took_over and forced.rows_written == 2, "lease 0: taken at once"
    assert client.view["sae_backend_writer"]["install"] == "mine"


class DeletedInLabelStudio(Recorder):
    """Task 11 is gone from Label Studio, which refuses a request naming it (with its import flag on, after
    importing the request's batches before the refused one: ``partly``)."""

    partly = True

    def import_predictions(self, pid, predictions):
        if any(p["task"] == 11 for p in predictions):
            self.rows += [p for p in predictions[:1] if p["task"] != 11] if self.partly else []
            raise LabelStudioError("HTTP 400: task ID 11 not found in project", retryable=False, status_code=400)
        return super().import_predictions(pid, predictions)

    def tasks_by_id(self, pid, ids):
        return [t for t in super().tasks_by_id(pid, ids) if t["id"] != 11]


def test_a_head_task_deleted_in_label_studio_since_the_ranking_does_not_keep_the_version_out(tmp_path) -> None:
    client = DeletedInLabelStudio()
    report = push(client, tmp_path)
    assert sorted(r["task"] for r in client.rows) == [12], "the other rows, once each"
    assert report.rows == {12} and report.rows_written == 1
    assert ("set_model_version", 4, "sae-v3") in client.calls
    adding = DeletedInLabelStudio()
    adding.partly, adding.rows = False, [{"task": 10, "model_version": "sae-v3"}]
    report = push(adding, tmp_path, prior=PushState(3, frozenset(), rows=frozenset({10})))
    assert sorted(r["task"] for r in adding.rows) == [10, 12] and report.rows == {10, 12}
    assert [c[0] for c in adding.calls].count("prediction_versions") == 1, "the read before the add drops 11: no 400"
    assert not any(c[0] == "delete_predictions" and "sae-v3" in c[2] for c in adding.calls), "only added"
    partly = DeletedInLabelStudio()  # with Label Studio's import flag: the batch before the refused one landed
    partly.rows = [{"task": 10, "model_version": "sae-v3"}]
    report = push(partly, tmp_path, prior=PushState(3, frozenset(), rows=frozenset({10})))
    assert sorted(r["task"] for r in partly.rows) == [10, 12] and report.rows == {10, 12}, "read: 12 once"
    assert not any(c[0] == "delete_predictions" and "sae-v3" in c[2] for c in partly.calls), "nothing replaced"
    refused = Recorder(fail={"import_predictions": [LabelStudioError("HTTP 400: bad score", retryable=False,
                                                                     status_code=400)]})
    with pytest.raises(PushError, match="bad score"):
        push(refused, tmp_path)


def test_a_retry_keeps_the_rows_of_tasks_that_left_the_head_and_a_takeover_s_delete_is_tried_until_it_went(
        tmp_path, monkeypatch) -> None:
    monkeypatch.setattr("connectors.label_studio.wait_exponential", lambda **kw: (lambda state: 0))
    locked = Recorder(fail={"import_predictions": [LabelStudioError("HTTP 500: database is locked", retryable=True,
                                                                    status_code=500)]})
    locked.rows = [{"task": t, "model_version": "sae-v3"} for t in (10, 12)]  # 10 labeled since: not in the head
    report = push(locked, tmp_path, prior=PushState(3, frozenset(), rows=frozenset({10, 12})), push_retries=3)
    assert report.rows == {10, 11, 12}, "10 still holds its row: a later push must not add a second"
    taken = Recorder(fail={"delete_predictions": [LabelStudioError("HTTP 503", retryable=True, status_code=503)]})
    taken.rows = [{"task": 12, "model_version": "sae-v3", "by": "another install"}]
    push(taken, tmp_path, prior=PushState(2, took_over=True), push_retries=3)
    assert [c[0] for c in taken.calls].count("delete_predictions") >= 2
    assert sorted(r["task"] for r in taken.rows) == [11, 12] and not any("by" in r for r in taken.rows)
