"""The project mirror: one ingest, then only changes; a poll reads the tasks saved since the last one."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from connectors.item_codec import ItemCodec
from connectors.label_config import parse_label_config
from connectors.task_data import DataFetcher, TaskDataError
from service import mirror as mirror_module
from service.mirror import ProjectMirror
from service.mirror_db import MirrorDB
from tests.service.test_app import CONFIG, FakeClient, choice

CFG = parse_label_config(CONFIG)


class CountingClient(FakeClient):
    """Counts what the mirror reads: pages of all tasks, of labeled tasks, and project lookups."""

    def __init__(self, n: int = 60, labeled: int = 20) -> None:
        super().__init__(n, labeled)
        self.scans: list[str] = []

    def iter_tasks(self, project_id, labeled=None, fields="all", **kw):
        self.scans.append("labeled" if labeled else ("ids" if fields == "task_only" else "all"))
        return super().iter_tasks(project_id, labeled, fields, **kw)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """This machine's clock as the mirror reads it, moved on by hand."""
    now = [1000.0]
    monkeypatch.setattr(mirror_module, "_clock", lambda: now[0])
    return now


@pytest.fixture
def fetcher() -> DataFetcher:
    return DataFetcher("http://127.0.0.1:1", "key")


def ingested(tmp_path, fetcher, client=None) -> tuple[ProjectMirror, CountingClient]:
    client = client or CountingClient()
    m = ProjectMirror(tmp_path / "mirror", 1)
    m.ingest(client, CFG, fetcher)
    return m, client


def test_ingest_stores_uint8_items_and_labels_once(tmp_path, fetcher) -> None:
    progress = []
    client = CountingClient()
    m = ProjectMirror(tmp_path / "mirror", 1)
    m.ingest(client, CFG, fetcher, lambda stage, f: progress.append(f))
    assert m.ingested and len(m.store) == 60 and m.store.dtype == np.uint8
    assert m.fmt["mode"] == "L" and m.store.item_shape == (1, 8, 8)
    labels, problems = m.labels(CFG)
    assert len(labels) == 20 and problems == {} and progress[-1] == 1.0
    again = ProjectMirror(tmp_path / "mirror", 1)
    assert again.ingested and again.labels(CFG)[0] == labels, "the mirror survives a restart"


def test_an_interrupted_ingest_does_not_fetch_stored_items_again(tmp_path, fetcher, monkeypatch) -> None:
    client = CountingClient()
    m = ProjectMirror(tmp_path / "mirror", 1)
    m.add_tasks(client.tasks[:30], CFG, fetcher)
    fetched = []
    real = ItemCodec.load
    monkeypatch.setattr(ItemCodec, "load", lambda self, *a: fetched.append(1) or real(self, *a))
    m.ingest(client, CFG, fetcher)
    assert len(fetched) == 30 and len(m.store) == 60


def test_webhook_changes_update_labels_without_reading_label_studio(tmp_path, fetcher) -> None:
    m, client = ingested(tmp_path, fetcher)
    client.scans.clear()
    m.upsert_annotation(30, choice("4", 777))
    m.upsert_annotation(1, {**choice("9", client.tasks[0]["annotations"][0]["id"])})
    assert m.remove_annotations([client.tasks[1]["annotations"][0]["id"]]) == [2]
    labels, _ = m.labels(CFG)
    assert labels[30] == 4 and labels[1] == 9 and 2 not in labels and len(labels) == 20
    m.remove_tasks([30])
    assert 30 not in m.labels(CFG)[0] and 30 not in m.store
    assert client.scans == []


def test_a_deletion_finds_its_task_after_moves_scans_and_restarts(tmp_path, fetcher) -> None:
    """The annotation-to-task index must never go stale: every path that replaces annotations is crossed."""
    m, client = ingested(tmp_path, fetcher)
    first = client.tasks[0]["annotations"][0]["id"]
    assert m.remove_annotations([first]) == [1]
    assert m.remove_annotations([first, 424242]) == [], "already gone, or never seen"
    m.upsert_annotation(40, choice("3", 888))
    client.tasks[4]["annotations"] = [choice("2", 999)]
    m._scan_labels(client)  # replaces the dict wholesale: 888 is gone, 999 is new
    assert m.remove_annotations([888]) == [] and m.remove_annotations([999]) == [5]
    m.save()
    again = ProjectMirror(tmp_path / "mirror", 1)
    third = client.tasks[2]["annotations"][0]["id"]
    assert again.remove_annotations([third]) == [3] and 3 not in again.labels(CFG)[0]
    m.upsert_queue_annotation(7, choice("1", 5001))
    assert m.remove_annotations([5001]) == [] and m.remove_queue_annotations([5001]) == [7], "each store its own"


def test_a_poll_that_changed_nothing_writes_nothing(tmp_path, fetcher) -> None:
    m, client = ingested(tmp_path, fetcher)
    path = tmp_path / "mirror" / "mirror.db"
    m.reconcile(client, CFG, fetcher, 3600)
    before = path.stat().st_mtime_ns, path.stat().st_size
    m.reconcile(client, CFG, fetcher, 3600)
    assert (path.stat().st_mtime_ns, path.stat().st_size) == before, "nothing moved, nothing written"
    m.upsert_annotation(30, choice("4", 777))
    m.save()
    assert m.db.rows_written == 1, "one task changed, one row written, not every annotation"
    assert ProjectMirror(tmp_path / "mirror", 1).labels(CFG)[0][30] == 4


def test_a_save_writes_only_what_changed_and_a_reload_sees_all_of_it(tmp_path, fetcher) -> None:
    m, _ = ingested(tmp_path, fetcher)
    m.remove_annotations([a["id"] for a in m.annotations[1]])
    m.upsert_queue_annotation(7, choice("1", 5001))
    m.skipped[159] = "not an image"  # tasks not stored
    m.retrying[99] = 2
    m.state["counters"] = {"task_number": 61}
    m.save()
    assert m.db.rows_written == 3, "a task emptied, a queue label, a skip"
    again = ProjectMirror(tmp_path / "mirror", 1)
    assert (again.annotations, again.queue_annotations) == (m.annotations, m.queue_annotations)
    assert (again.skipped, again.retrying) == ({159: "not an image"}, {99: 2})
    assert again.state["counters"] == {"task_number": 61} and again.ingested
    del m.skipped[159]
    m.save()
    assert m.db.rows_written == 1 and ProjectMirror(tmp_path / "mirror", 1).skipped == {}


def test_a_mirror_json_from_before_is_moved_into_the_database(tmp_path, fetcher) -> None:
    m, _ = ingested(tmp_path, fetcher)
    legacy = {"annotations": {str(t): a for t, a in m.annotations.items()},
              "queue_annotations": {"7": [choice("1", 5001)]}, "skipped": {"159": "not an image"},
              "retrying": {"99": 1}, "state": m.state}
    (tmp_path / "mirror" / "mirror.db").unlink()
    (tmp_path / "mirror" / "mirror.json").write_text(json.dumps(legacy))
    again = ProjectMirror(tmp_path / "mirror", 1)
    assert not (tmp_path / "mirror" / "mirror.json").exists() and (tmp_path / "mirror" / "mirror.db").exists()
    assert again.labels(CFG)[0] == {**m.labels(CFG)[0], 7: 1} and again.retrying == {99: 1} and again.ingested
    assert ProjectMirror(tmp_path / "mirror", 1).skipped == {159: "not an image"}, "read from the database now"


def test_reconcile_reads_no_tasks_when_nothing_moved_and_rereads_what_did(tmp_path, fetcher) -> None:
    m, client = ingested(tmp_path, fetcher)
    client.scans.clear()
    assert m.reconcile(client, CFG, fetcher, full_scan_seconds=3600) == {"labels": False, "tasks": False,
                                                                       "queue": False, "retried": 0}
    assert client.scans == []
    client.tasks[40]["annotations"] = [choice("3", 4000)]
    assert m.reconcile(client, CFG, fetcher, 3600)["labels"] == "all", "this client tells no server time"
    assert client.scans == ["labeled"] and m.labels(CFG)[0][41] == 3, "a missed webhook is caught"
    client.scans.clear()
    client.tasks.append({"id": 999, "data": dict(client.tasks[0]["data"]), "annotations": []})
    del client.tasks[5]
    assert m.reconcile(client, CFG, fetcher, 3600)["tasks"] == "all", "this client tells no time"
    assert client.scans == ["ids", "labeled"] and 999 in m.store and 6 not in m.store, \
        "an add plus a delete leaves the count alone; the newest id moves"


def test_a_correction_without_its_webhook_is_caught_by_the_slow_full_scan(tmp_path, fetcher) -> None:
    m, client = ingested(tmp_path, fetcher)
    client.tasks[0]["annotations"] = [choice("5", client.tasks[0]["annotations"][0]["id"])]
    m.reconcile(client, CFG, fetcher, 3600)
    assert m.labels(CFG)[0][1] != 5, "counters do not move on a correction"
    m.reconcile(client, CFG, fetcher, full_scan_seconds=0.0)
    assert m.labels(CFG)[0][1] == 5


def test_unreadable_tasks_are_reported_once_and_not_fetched_again(tmp_path, fetcher) -> None:
    client = CountingClient()
    client.tasks[10]["data"]["image"] = "data:image/png;base64,bm90IGFuIGltYWdl"
    m, _ = ingested(tmp_path, fetcher, client)
    assert set(m.skipped) == {11} and len(m.store) == 59
    assert len(m.add_tasks([client.tasks[10]], CFG, fetcher)) == 0 and set(m.skipped) == {11}


def test_a_task_whose_data_is_not_an_object_is_skipped_with_its_reason_and_the_batch_stored(tmp_path,
                                                                                             fetcher) -> None:
    m, client = ingested(tmp_path, fetcher)
    new = [{"id": 500, "data": ["not", "an", "object"]}, {"id": 501, "data": client.tasks[0]["data"]}]
    assert m.add_tasks(new, CFG, fetcher).tolist() == [501]
    assert "no 'image' field" in m.skipped[500]


def task_11_fails(monkeypatch: pytest.MonkeyPatch, times: int) -> None:
    """Fetching task 11 fails ``times`` times for a temporary reason, then works."""
    real, failures = ItemCodec.load, {"left": times}

    def flaky(self, fetcher, value, task_id=None):
        if task_id == 11 and failures["left"] > 0:
            failures["left"] -= 1
            raise TaskDataError("GET /data/11.png answered HTTP 503", temporary=True)
        return real(self, fetcher, value, task_id)

    monkeypatch.setattr(ItemCodec, "load", flaky)


def test_a_temporary_fetch_failure_is_tried_again_at_the_next_reconcile(tmp_path, fetcher, monkeypatch) -> None:
    task_11_fails(monkeypatch, 2)
    m, client = ingested(tmp_path, fetcher)
    assert m.retrying == {11: 1} and m.skipped == {} and 11 not in m.store
    client.scans.clear()
    assert m.reconcile(client, CFG, fetcher, 3600)["retried"] == 1
    assert m.retrying == {11: 2} and client.scans == [], "the task alone is asked for again, no scan"
    assert ProjectMirror(tmp_path / "mirror", 1).retrying == {11: 2}, "kept across a restart"
    m.reconcile(client, CFG, fetcher, 3600)
    assert 11 in m.store and m.retrying == {} and m.skipped == {}
    assert str(m.labels(CFG)[0][11]) == client.tasks[10]["annotations"][0]["result"][0]["value"]["choices"][0]


def test_a_task_that_keeps_failing_for_a_temporary_reason_is_reported_after_three_tries(tmp_path, fetcher,
                                                                                      monkeypatch) -> None:
    real = ItemCodec.load

    def down(self, fetcher, value, task_id=None):
        if task_id == 11:
            raise TaskDataError("timed out after 10 s fetching /data/11.png", temporary=True)
        return real(self, fetcher, value, task_id)

    monkeypatch.setattr(ItemCodec, "load", down)
    m, client = ingested(tmp_path, fetcher)
    m.reconcile(client, CFG, fetcher, 3600)
    assert m.retrying == {11: 2}
    m.reconcile(client, CFG, fetcher, 3600)
    assert m.retrying == {} and m.skipped == {11: "timed out after 10 s fetching /data/11.png (3 tries)"}
    client.tasks = [t for t in client.tasks if t["id"] != 12]
    monkeypatch.setattr(ItemCodec, "load", lambda self, *a, **k: (_ for _ in ()).throw(
        TaskDataError("HTTP 502", temporary=True)))
    m.retrying = {12: 1}
    m.reconcile(client, CFG, fetcher, 3600)
    assert 12 not in m.retrying and 12 not in m.skipped, "a task deleted meanwhile is no longer tried"


class ScanWithWebhook(CountingClient):
    """Delivers a webhook's change to the mirror while a scan of ``scan`` reads, after the changed task's page.

    Tasks are yielded as copies, as a real server's answers are: a change made later is not in them.
    """

    def __init__(self, scan: str) -> None:
        super().__init__()
        self.scan, self.during_scan = scan, None

    def iter_tasks(self, project_id, labeled=None, fields="all", **kw):
        kind = "labeled" if labeled else ("ids" if fields == "task_only" else "all")
        for i, t in enumerate(super().iter_tasks(project_id, labeled, fields, **kw)):
            yield copy.deepcopy(t)
            if i == 5 and kind == self.scan and self.during_scan:
                self.during_scan()
                self.during_scan = None


def test_a_correction_that_arrives_during_a_label_scan_is_not_undone_by_it(tmp_path, fetcher) -> None:
    client = ScanWithWebhook("labeled")
    m, _ = ingested(tmp_path, fetcher, client)
    first = client.tasks[0]["annotations"][0]
    label = m.labels(CFG)[0][1]
    fixed = choice(str((label + 1) % 10), first["id"])

    def webhook() -> None:
        client.tasks[0]["annotations"] = [fixed]
        m.upsert_annotation(1, fixed)

    client.during_scan = webhook
    m.reconcile(client, CFG, fetcher, full_scan_seconds=0.0)
    assert client.during_scan is None, "the webhook came during the label scan"
    assert m.labels(CFG)[0][1] == (label + 1) % 10, "the scan read task 1 before the correction"
    m.reconcile(client, CFG, fetcher, full_scan_seconds=0.0)
    assert m.labels(CFG)[0][1] == (label + 1) % 10 and m._words == {}


def test_an_annotation_made_during_the_ingest_is_kept(tmp_path, fetcher) -> None:
    client = ScanWithWebhook("all")
    m = ProjectMirror(tmp_path / "mirror", 1)

    def webhook() -> None:
        client.tasks[2]["annotations"] = [choice("7", 4242)]
        m.upsert_annotation(3, choice("7", 4242))

    client.during_scan = webhook
    m.ingest(client, CFG, fetcher)
    assert client.during_scan is None
    assert m.labels(CFG)[0][3] == 7 and len(m.labels(CFG)[0]) == 20


def test_queue_labels_count_for_their_source_tasks(tmp_path, fetcher) -> None:
    m, client = ingested(tmp_path, fetcher)
    client.queue_labels = lambda qid, **kw: iter([(50, 1050, [choice("2", 9000)])])
    m.scan_queue(client, 77)
    assert m.labels(CFG)[0][50] == 2


def test_labels_resolve_only_the_tasks_that_changed_since_the_last_call(tmp_path, fetcher, monkeypatch) -> None:
    m, client = ingested(tmp_path, fetcher)
    calls = []
    real = mirror_module.resolve_label
    monkeypatch.setattr(mirror_module, "resolve_label", lambda items, config: calls.append(1) or real(items, config))
    first, _ = m.labels(CFG)
    assert len(calls) == 20
    calls.clear()
    m.upsert_annotation(1, choice("9", client.tasks[0]["annotations"][0]["id"]))
    m.remove_annotations([client.tasks[1]["annotations"][0]["id"]])
    m.upsert_annotation(30, choice("4", 777))
    labels, _ = m.labels(CFG)
    assert len(calls) == 2, "task 1 and task 30 again; task 2 lost its label; the other 18 from the cache"
    assert labels[1] == 9 and labels[30] == 4 and 2 not in labels
    assert {t: v for t, v in labels.items() if t not in (1, 30)} == {t: v for t, v in first.items() if t not in (1, 2)}
    other = parse_label_config(CONFIG.replace('<Choice value="9"/>', ""))
    calls.clear()
    assert 1 not in m.labels(other)[0] and len(calls) == 20, "another config resolves every task again"


def _twelve_bit_client(n: int = 12) -> CountingClient:
    """A microscope's project: 16-bit PNGs whose values stop at 4095."""
    import base64
    import io

    from PIL import Image

    client = CountingClient(n, labeled=n // 2)
    for i, task in enumerate(client.tasks):
        buf = io.BytesIO()
        Image.fromarray(np.full((8, 8), 4095 - 300 * i, np.uint16)).save(buf, "PNG")
        task["data"]["image"] = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    return client


def test_a_bit_depth_set_before_the_first_ingest_spreads_the_images_and_stays_with_the_project(
        tmp_path, fetcher, caplog) -> None:
    client = _twelve_bit_client()
    unset = ProjectMirror(tmp_path / "unset", 1)
    unset.ingest(client, CFG, fetcher)
    assert unset.store.get([1])[0].max() == 15, "read as 16-bit: the brightest image is 15 of 255"
    m = ProjectMirror(tmp_path / "mirror", 1, image_bit_depth=12)
    m.ingest(client, CFG, fetcher)
    assert m.fmt["bits"] == 12 and m.store.get([1])[0].max() == 255 and m.store.get([2])[0].max() == 236
    assert m.codec(CFG).bits == 12, "/predict decodes like the stored items"
    again = ProjectMirror(tmp_path / "mirror", 1, image_bit_depth=10)
    assert again.fmt["bits"] == 12, "a changed setting would scale new images unlike the stored ones"
    assert "IMAGE_BIT_DEPTH=10 is not taken" in caplog.text
    (tmp_path / "mirror" / "mirror.db").write_bytes(b"SQLite format 3\x00" + b"\x07" * 200)
    assert ProjectMirror(tmp_path / "mirror", 1, image_bit_depth=12).fmt["bits"] == 12, \
        "an unreadable mirror: the stored items keep the setting's depth"
    before = ProjectMirror(tmp_path / "later", 1)
    before.save()
    assert ProjectMirror(tmp_path / "later", 1, image_bit_depth=12).fmt.get("bits") == 12, \
        "set before any image fixed the format: taken"
    caplog.clear()
    assert ProjectMirror(tmp_path / "unset", 1, image_bit_depth=16).fmt.get("bits") is None and not caplog.text, \
        "16 is what unset reads as: nothing to name"


def test_the_image_form_is_saved_the_moment_it_is_fixed(tmp_path, fetcher) -> None:
    """Killed during the first ingest and restarted with another setting: the stored items' form still holds."""
    client = _twelve_bit_client()
    m = ProjectMirror(tmp_path / "mirror", 1)
    m.add_tasks(client.tasks[:6], CFG, fetcher)  # the first chunk stored, then killed before the ingest's save
    again = ProjectMirror(tmp_path / "mirror", 1, image_bit_depth=12)
    assert again.fmt == {"mode": "L", "size": 8}, "stored at 16 bits: a later setting is not taken"
    again.ingest(client, CFG, fetcher)
    assert again.store.get([7])[0].max() == 2295 // 257, "task 7 read like task 1, at 16 bits"


def test_an_unreadable_mirror_file_is_set_aside_and_the_project_read_again(tmp_path, fetcher) -> None:
    m, client = ingested(tmp_path, fetcher)
    (tmp_path / "mirror" / "mirror.db").write_bytes(b"SQLite format 3\x00" + b"\x07" * 200)  # a torn write
    again = ProjectMirror(tmp_path / "mirror", 1)
    assert not again.ingested and again.annotations == {}
    assert again.fmt == {"mode": "L", "size": 8}, "the stored items fix the format new ones are decoded to"
    assert list((tmp_path / "mirror").glob("mirror.db.corrupt-*")), "kept aside for a look, not deleted"
    again.ingest(client, CFG, fetcher)
    assert again.labels(CFG)[0] == m.labels(CFG)[0] and len(again.store) == 60


def test_a_project_webhook_during_a_queue_scan_keeps_the_queue_s_new_label(tmp_path, fetcher) -> None:
    m, client = ingested(tmp_path, fetcher)

    def queue_labels(qid, **kw):
        yield 5, 1005, [choice("2", 9000)]
        m.upsert_annotation(5, choice("7", 9100))  # the project's own webhook, meanwhile

    client.queue_labels = queue_labels
    m.scan_queue(client, 77)
    assert [a["id"] for a in m.queue_annotations[5]] == [9000], "the queue's scan only yields to queue webhooks"


def test_a_webhook_during_the_ingest_changes_only_the_annotation_it_names(tmp_path, fetcher) -> None:
    client = ScanWithWebhook("all")
    client.tasks[4]["annotations"] = [choice("1", 10), choice("1", 11), choice("2", 12)]
    m = ProjectMirror(tmp_path / "mirror", 1)

    def webhook() -> None:  # the page with task 5 is read; then annotation 10 is re-saved, and 12 deleted
        m.upsert_annotation(5, choice("1", 10))
        m.remove_annotations([12])

    client.during_scan = webhook
    m.ingest(client, CFG, fetcher)
    assert sorted(a["id"] for a in m.annotations[5]) == [10, 11], "11 as read, 10 as re-saved, 12 gone"
    assert m.labels(CFG)[0][5] == 1


class DatedClient(CountingClient):
    """Label Studio's database clock: each task keeps when it was last saved, and a read can ask for the later
    ones (``read``: the tasks that reads of labeled tasks returned).

    ``save`` is an annotation saved or deleted, which saves its task; ``unsaved_delete`` is a change that does not
    (an edit in the database, say).
    """

    def __init__(self) -> None:
        super().__init__()
        self.now = datetime(2026, 1, 1, tzinfo=timezone.utc)
        for i, t in enumerate(self.tasks):  # saved long ago, ten minutes apart
            t["updated_at"] = self.now - timedelta(days=1, minutes=10 * (len(self.tasks) - i))
        self.read: list[int] = []
        self.whole_reads = 0  # reads of every task (ids)

    def tick(self, seconds: float = 600) -> None:
        self.now += timedelta(seconds=seconds)

    def save(self, task_id: int, annotations: list[dict], at: datetime | None = None) -> None:
        self.tick(1)
        task = self.tasks[task_id - 1]
        task["annotations"], task["updated_at"] = annotations, at or self.now

    def unsaved_delete(self, task_id: int) -> None:
        self.tasks[task_id - 1]["annotations"] = []

    def last_saved(self, project_id):
        return max(t["updated_at"] for t in self.tasks)

    def iter_tasks(self, project_id, labeled=None, fields="all", updated_after=None, **kw):
        if labeled is None and updated_after is None:
            self.whole_reads += 1
        for t in super().iter_tasks(project_id, labeled, fields, **kw):
            if updated_after is None or t["updated_at"] > updated_after:
                if labeled:
                    self.read.append(t["id"])
                yield copy.deepcopy(t)


def test_a_poll_reads_only_the_tasks_saved_since_its_last_read(tmp_path, fetcher) -> None:
    m, client = ingested(tmp_path, fetcher, DatedClient())
    client.tick()
    client.save(41, [choice("3", 4000)])  # a new label and a correction, both webhooks lost
    client.save(1, [choice("9", client.tasks[0]["annotations"][0]["id"])])
    client.read.clear()
    assert m.reconcile(client, CFG, fetcher, 3600)["labels"] == "changed"
    assert sorted(client.read) == [1, 41], "two tasks read, not the 21 labeled ones"
    labels = m.labels(CFG)[0]
    assert labels[41] == 3 and labels[1] == 9 and len(labels) == 21
    client.tick()
    client.save(41, [choice("5", 4000)])
    client.read.clear()
    m.reconcile(client, CFG, fetcher, 3600)
    assert sorted(client.read) == [1, 41], "41 saved since; 1, the newest save the last read saw, in the overlap"
    assert m.labels(CFG)[0][41] == 5


def test_a_save_that_lands_late_is_read_at_the_next_poll(tmp_path, fetcher) -> None:
    """A save is stamped when it starts and seen when it commits: one stamped before the last save a read saw,
    but committed after that read, is still read by the next one."""
    m, client = ingested(tmp_path, fetcher, DatedClient())
    client.tick()
    client.save(3, [choice("1", 7000)])
    m.reconcile(client, CFG, fetcher, 3600)
    seen = client.now
    client.tick()
    client.save(42, [choice("6", 7001)], at=seen - timedelta(seconds=mirror_module.OVERLAP_SECONDS / 2))
    client.read.clear()
    assert m.reconcile(client, CFG, fetcher, 3600)["labels"] == "changed"
    assert 42 in client.read and m.labels(CFG)[0][42] == 6


def test_a_label_deleted_on_its_own_is_dropped_at_the_next_poll(tmp_path, fetcher) -> None:
    m, client = ingested(tmp_path, fetcher, DatedClient())
    client.tick()
    client.save(2, [])  # its only annotation deleted, the webhook lost: the task is saved, and unlabeled now
    assert m.reconcile(client, CFG, fetcher, 3600)["labels"] == "changed"
    assert 2 not in m.labels(CFG)[0] and 2 not in m.annotations


def test_a_change_that_saved_no_task_is_read_in_full_at_the_second_poll(tmp_path, fetcher) -> None:
    m, client = ingested(tmp_path, fetcher, DatedClient())
    client.tick()
    client.unsaved_delete(3)  # saves no task: a read of the saved ones cannot see it, the annotation count can
    client.save(50, [choice("1", 5000)])
    client.read.clear()
    assert m.reconcile(client, CFG, fetcher, 3600)["labels"] == "changed", "one difference may be a late webhook"
    assert 3 in m.labels(CFG)[0] and client.read == [50]
    client.tick()
    client.read.clear()
    assert m.reconcile(client, CFG, fetcher, 3600)["labels"] == "all"
    labels = m.labels(CFG)[0]
    assert 3 not in labels and labels[50] == 1 and len(labels) == 20
    assert client.read[0] == 50 and sorted(client.read[1:]) == sorted(labels), "the saved task, then every one"
    client.tick()
    assert m.reconcile(client, CFG, fetcher, 3600)["labels"] is False, "the counts agree again"


def test_a_difference_that_stays_after_a_full_read_does_not_make_every_poll_read_everything(tmp_path,
                                                                                            fetcher) -> None:
    """Label Studio may count annotations a labeled read never shows (a stored counter gone stale, say)."""
    client = DatedClient()
    real = client.get_project
    client.get_project = lambda pid: {**real(pid), "total_annotations_number":
                                      real(pid)["total_annotations_number"] + 2}
    m, _ = ingested(tmp_path, fetcher, client)
    for _ in range(2):
        client.tick()
        client.save(45 + _, [choice("2", 6000 + _)])
        m.reconcile(client, CFG, fetcher, 3600)
    assert m.state["counts"]["1"] == {"gap": 2}, "measured after the full read"
    for k in range(3):
        client.tick()
        client.save(50 + k, [choice("2", 6100 + k)])
        client.read.clear()
        assert m.reconcile(client, CFG, fetcher, 3600)["labels"] == "changed"
        assert client.read[-1] == 50 + k and len(client.read) <= 2, "and the save before, within the overlap"


def test_a_webhook_during_a_read_of_saved_tasks_is_not_undone_by_it(tmp_path, fetcher) -> None:
    client = DatedClient()
    m, _ = ingested(tmp_path, fetcher, client)
    client.tick()
    client.save(1, [choice("4", client.tasks[0]["annotations"][0]["id"])])
    real = client.iter_tasks
    later = choice("6", client.tasks[0]["annotations"][0]["id"])

    def iter_tasks(*a, **kw):
        for t in real(*a, **kw):
            yield t
            if t["id"] == 1 and kw.get("updated_after"):  # task 1 read, then corrected again, webhook delivered
                client.save(1, [later])
                m.upsert_annotation(1, later)

    client.iter_tasks = iter_tasks
    client.read.clear()
    m.reconcile(client, CFG, fetcher, 3600)
    assert client.read == [1] and m.labels(CFG)[0][1] == 6


def test_a_due_full_scan_and_an_unknown_clock_read_every_labeled_task(tmp_path, fetcher) -> None:
    m, client = ingested(tmp_path, fetcher, DatedClient())
    client.tick()
    client.read.clear()
    assert m.reconcile(client, CFG, fetcher, full_scan_seconds=0.0)["labels"] == "all"
    assert len(client.read) == 20
    m.state["read_at"].clear()  # a mirror saved before reads were timed
    client.save(45, [choice("8", 9999)])
    client.read.clear()
    assert m.reconcile(client, CFG, fetcher, 3600)["labels"] == "all" and len(client.read) == 21
    client.tick()
    client.read.clear()
    assert m.reconcile(client, CFG, fetcher, 3600)["labels"] is False and client.read == [45], \
        "timed again from that read on: a quiet poll reads the newest save again (the overlap), and nothing else"


def test_a_queue_read_of_saved_tasks_replaces_only_the_labels_of_the_queue_tasks_read(tmp_path, fetcher) -> None:
    m, client = ingested(tmp_path, fetcher, DatedClient())
    old = client.now - timedelta(days=1)
    queue = {101: [{**choice("2", 9000), "task": 101}, {**choice("2", 9002), "task": 101}],
             102: [{**choice("2", 9001), "task": 102}]}  # two queue tasks copying source task 50
    saved_at = {101: old, 102: old - timedelta(hours=1)}
    yielded = []

    def queue_labels(qid, updated_after=None):
        for q, anns in queue.items():
            if updated_after is None or saved_at[q] > updated_after:
                yielded.append(q)
                yield 50, q, copy.deepcopy(anns)

    def last_saved(pid):
        return max(saved_at.values()) if pid == 77 else DatedClient.last_saved(client, pid)

    client.queue_labels, client.last_saved = queue_labels, last_saved
    client.get_project = lambda pid: {**CountingClient.get_project(client, pid),
                                      **({"total_annotations_number": sum(map(len, queue.values()))} if pid == 77
                                         else {})}
    m.reconcile(client, CFG, fetcher, 3600, queue_project_id=77)
    assert len(m.queue_annotations[50]) == 3
    client.tick()
    queue[101] = [{**choice("4", 9000), "task": 101}]  # 9000 corrected, 9002 deleted: their webhooks lost
    saved_at[101] = client.now
    yielded.clear()
    assert m.reconcile(client, CFG, fetcher, 3600, queue_project_id=77)["queue"] == "changed"
    assert yielded == [101], "queue task 102 was saved long before the last read's newest save"
    assert sorted((a["id"], a["result"][0]["value"]["choices"][0]) for a in m.queue_annotations[50]) == \
        [(9000, "4"), (9001, "2")]


def test_a_queue_project_emptied_while_its_webhooks_were_lost_loses_its_labels_at_the_next_polls(tmp_path,
                                                                                                fetcher) -> None:
    m, client = ingested(tmp_path, fetcher, DatedClient())
    queue = {101: [{**choice("2", 9000), "task": 101}], 102: [{**choice("3", 9001), "task": 102}]}

    def queue_labels(qid, updated_after=None):
        for q, anns in queue.items():
            yield 50 if q == 101 else 51, q, copy.deepcopy(anns)

    def last_saved(pid):  # Label Studio's newest save of a project without tasks: none
        return (client.now if queue else None) if pid == 77 else DatedClient.last_saved(client, pid)

    client.queue_labels, client.last_saved = queue_labels, last_saved
    client.get_project = lambda pid: {**CountingClient.get_project(client, pid),
                                      **({"total_annotations_number": sum(map(len, queue.values())),
                                          "task_number": len(queue)} if pid == 77 else {})}
    m.reconcile(client, CFG, fetcher, 3600, queue_project_id=77)
    assert set(m.queue_annotations) == {50, 51}
    queue.clear()  # every queue task deleted: the webhooks lost
    for _ in range(2):
        client.tick()
        m.reconcile(client, CFG, fetcher, 3600, queue_project_id=77)
    assert m.queue_annotations == {}, "not kept until the full scan a day later"


def test_a_webhook_that_arrives_after_a_later_save_was_read_does_not_undo_it(tmp_path, fetcher) -> None:
    """Webhooks may arrive out of order; an annotation's copy saved later wins, whichever way it came."""
    m, client = ingested(tmp_path, fetcher)
    ann = client.tasks[0]["annotations"][0]["id"]
    m.upsert_annotation(1, {**choice("5", ann), "updated_at": "2026-01-01T10:00:02.000000Z"})
    m.upsert_annotation(1, {**choice("3", ann), "updated_at": "2026-01-01T10:00:01.000000Z"})  # the earlier save's
    assert m.labels(CFG)[0][1] == 5
    m.upsert_annotation(1, {**choice("4", ann), "updated_at": "2026-01-01T10:00:03.000000Z"})
    assert m.labels(CFG)[0][1] == 4
    words = mirror_module._Words()
    words.said(2, {**choice("7", 50), "updated_at": "2026-01-01T10:00:01.000000Z"})  # late, during a scan
    words.said(2, {**choice("8", 51), "updated_at": "2026-01-01T10:00:09.000000Z"})
    read = [{**choice("6", 50), "updated_at": "2026-01-01T10:00:05.000000Z"},
            {**choice("6", 51), "updated_at": "2026-01-01T10:00:05.000000Z"}]
    assert [a["result"][0]["value"]["choices"] for a in words.over(2, read)] == [["6"], ["8"]]
    words.gone({51})
    assert [a["id"] for a in words.over(2, read)] == [50], "a deletion wins whatever the times"


def test_a_save_stamped_ahead_of_the_clock_does_not_hide_the_saves_before_it(tmp_path, fetcher) -> None:
    """The Data Manager's bulk deletion stamps its tasks with the server's local time, which Label Studio takes for
    UTC: two hours ahead on a server two hours east. A correction made meanwhile must still be read."""
    m, client = ingested(tmp_path, fetcher, DatedClient())
    now = datetime.now(timezone.utc)
    client.save(3, [], at=now + timedelta(hours=2))
    m.reconcile(client, CFG, fetcher, 3600)
    client.save(1, [choice("9", client.tasks[0]["annotations"][0]["id"])], at=now + timedelta(seconds=1))
    m.reconcile(client, CFG, fetcher, 3600)
    assert m.labels(CFG)[0][1] == 9 and 3 not in m.labels(CFG)[0]


def test_a_quiet_project_stops_reading_its_last_saves_again_once_they_settled(tmp_path, fetcher, clock) -> None:
    m, client = ingested(tmp_path, fetcher, DatedClient())
    client.tick()
    client.save(41, [choice("3", 4000)])
    client.tick()
    reads = []
    for _ in range(4):  # polls a minute apart
        clock[0] += 60
        client.read.clear()
        m.reconcile(client, CFG, fetcher, 3600)
        reads.append(list(client.read))
    assert reads == [[41], [41], [41], []], "read back while a late commit may still land, then not at all"
    client.tick()
    client.save(42, [choice("4", 4001)])
    clock[0] += 60
    client.read.clear()
    m.reconcile(client, CFG, fetcher, 3600)
    assert client.read == [42] and m.labels(CFG)[0][42] == 4


def test_only_the_same_count_difference_at_two_polls_reads_every_labeled_task(tmp_path, fetcher) -> None:
    """A difference that changes between polls is labeling under way (webhooks on their way); one that stays is not."""
    client = DatedClient()
    extra = [0]
    real = client.get_project
    client.get_project = lambda pid: {**real(pid), "total_annotations_number":
                                      real(pid)["total_annotations_number"] + extra[0]}
    m, _ = ingested(tmp_path, fetcher, client)
    how = []
    for e in (1, 2, 2, 2):
        extra[0] = e
        client.tick()
        how.append(m.reconcile(client, CFG, fetcher, 3600)["labels"])
    assert how == ["changed", "changed", "all", False]
    assert m.state["counts"]["1"] == {"gap": 2}


def test_another_queue_project_is_read_in_full(tmp_path, fetcher) -> None:
    m, client = ingested(tmp_path, fetcher, DatedClient())
    asked = []

    def queue_labels(qid, updated_after=None):
        asked.append((qid, updated_after is None))
        yield from [(50, 1000 + qid, [{**choice("2", 9000 + qid), "task": 1000 + qid}])] if updated_after is None \
            else []

    client.queue_labels = queue_labels
    for qid in (77, 77, 78, 77):
        client.tick()
        m.reconcile(client, CFG, fetcher, 3600, queue_project_id=qid)
    assert asked == [(77, True), (77, False), (78, True), (77, True)], "each switch reads the new queue whole"
    assert [a["id"] for a in m.queue_annotations[50]] == [9077]


def test_a_new_task_is_stored_from_the_saved_tasks_and_a_deleted_one_found_by_every_id(tmp_path, fetcher,
                                                                                        clock) -> None:
    m, client = ingested(tmp_path, fetcher, DatedClient())
    client.tick()
    client.tasks.append({**copy.deepcopy(client.tasks[0]), "id": 61, "annotations": [], "updated_at": client.now})
    client.tasks.append({**copy.deepcopy(client.tasks[1]), "id": 62, "annotations": [choice("2", 6200)],
                         "updated_at": client.now})  # imported with a label; both webhooks lost
    reads = client.whole_reads
    assert m.reconcile(client, CFG, fetcher, 3600)["tasks"] == "changed"
    assert client.whole_reads == reads, "no read of every task id for two new tasks"
    assert {61, 62} <= set(m.store.ids().tolist()) and m.labels(CFG)[0][62] == 2
    for _ in range(2):  # quiet polls until the overlap settled: nothing is read again
        clock[0] += 200
        m.reconcile(client, CFG, fetcher, 3600)
    client.tick()
    del client.tasks[20]
    m.remove_tasks([21])  # its webhook: nothing to read
    assert m.reconcile(client, CFG, fetcher, 3600)["tasks"] == "changed" and client.whole_reads == reads
    client.tick()
    del client.tasks[10]  # deleted, its webhook lost: no save shows it, the task count does
    assert m.reconcile(client, CFG, fetcher, 3600)["tasks"] == "all"
    assert client.whole_reads == reads + 1 and 11 not in m.store


def test_a_task_imported_during_the_poll_does_not_read_as_a_deletion(tmp_path, fetcher) -> None:
    m, client = ingested(tmp_path, fetcher, DatedClient())
    client.tick()
    client.tasks.append({**copy.deepcopy(client.tasks[0]), "id": 61, "annotations": [], "updated_at": client.now})
    real = client.last_saved

    def last_saved(pid):  # read after the counters: a task imported in between is in the saved read, not the count
        client.tasks.append({**copy.deepcopy(client.tasks[0]), "id": 62, "annotations": [], "updated_at": client.now})
        return real(pid)

    client.last_saved = last_saved
    reads = client.whole_reads
    assert m.reconcile(client, CFG, fetcher, 3600)["tasks"] == "changed" and client.whole_reads == reads
    assert {61, 62} <= set(m.store.ids().tolist())


@pytest.mark.parametrize("earlier", ["none", "a bare time"])
def test_a_mirror_from_before_marks_reads_every_labeled_task_once_then_only_saved_ones(tmp_path, fetcher,
                                                                                      earlier) -> None:
    m, client = ingested(tmp_path, fetcher, DatedClient())
    if earlier == "none":  # mirror.json written before reads were marked
        del m.state["read_at"]
    else:  # a development build saved the mark as a bare time
        m.state["read_at"] = {"1": m.state["read_at"]["1"]["at"]}
    client.tick()
    client.save(1, [choice("9", client.tasks[0]["annotations"][0]["id"])])  # a correction moves no counter
    client.tick()
    assert m.reconcile(client, CFG, fetcher, 3600)["labels"] == "all" and m.labels(CFG)[0][1] == 9
    client.tick()
    client.save(2, [choice("8", client.tasks[1]["annotations"][0]["id"])])
    client.tick()
    client.read.clear()
    assert m.reconcile(client, CFG, fetcher, 3600)["labels"] == "changed"
    assert sorted(client.read) == [1, 2], "2 saved since; 1, the newest save the last read saw, in the overlap"


def test_a_labeled_task_deleted_without_its_webhook_leaves_no_count_difference(tmp_path, fetcher) -> None:
    m, client = ingested(tmp_path, fetcher, DatedClient())
    client.tick()
    del client.tasks[4]  # task 5, labeled: its annotation goes with it
    client.save(45, [choice("1", 4500)])
    assert m.reconcile(client, CFG, fetcher, 3600)["tasks"] == "all"
    assert 5 not in m.store and "differed" not in m.state["counts"].get("1", {}), "the task step ran first"


def test_an_unreadable_mirror_json_from_before_is_set_aside_too(tmp_path, fetcher) -> None:
    (tmp_path / "mirror").mkdir()
    (tmp_path / "mirror" / "mirror.json").write_text('{"annotations": {"1": [')
    m = ProjectMirror(tmp_path / "mirror", 1)
    assert not m.ingested and list((tmp_path / "mirror").glob("mirror.json.corrupt-*"))
    m.ingest(CountingClient(), CFG, fetcher)
    assert len(m.labels(CFG)[0]) == 20 and ProjectMirror(tmp_path / "mirror", 1).ingested


def test_a_move_from_mirror_json_cut_short_leaves_the_json_to_read_again(tmp_path, fetcher, monkeypatch) -> None:
    m, _ = ingested(tmp_path, fetcher)
    legacy = {"annotations": {str(t): a for t, a in m.annotations.items()}, "state": m.state}
    (tmp_path / "mirror" / "mirror.db").unlink()
    (tmp_path / "mirror" / "mirror.json").write_text(json.dumps(legacy))
    real = MirrorDB.save

    def killed(self, snap):
        real(self, snap)
        raise RuntimeError("killed before the rename")

    monkeypatch.setattr(MirrorDB, "save", killed)
    with pytest.raises(RuntimeError):
        ProjectMirror(tmp_path / "mirror", 1)
    assert not (tmp_path / "mirror" / "mirror.db").exists(), "no half-moved database to trust"
    monkeypatch.setattr(MirrorDB, "save", real)
    again = ProjectMirror(tmp_path / "mirror", 1)
    assert again.ingested and again.labels(CFG)[0] == m.labels(CFG)[0]
    assert not (tmp_path / "mirror" / "mirror.json").exists()


def test_a_full_read_that_finds_nothing_new_rewrites_no_task(tmp_path, fetcher) -> None:
    m, client = ingested(tmp_path, fetcher)
    m.save()
    assert m.reconcile(client, CFG, fetcher, full_scan_seconds=0)["labels"] == "all"
    assert m.db.rows_written == 0, "every list read equal to the one held stays the one held"
    client.tasks[40]["annotations"] = [choice("3", 4000)]
    m.reconcile(client, CFG, fetcher, full_scan_seconds=0)
    assert m.db.rows_written == 1 and ProjectMirror(tmp_path / "mirror", 1).labels(CFG)[0][41] == 3


def test_a_mirror_database_that_cannot_be_opened_is_an_error_not_a_reason_to_read_everything(tmp_path) -> None:
    import sqlite3

    (tmp_path / "mirror" / "mirror.db").mkdir(parents=True)  # e.g. a volume mounted wrongly
    with pytest.raises(sqlite3.OperationalError):
        ProjectMirror(tmp_path / "mirror", 1)
    assert not list((tmp_path / "mirror").glob("*.corrupt-*")), "nothing set aside"


def test_a_journal_left_without_its_database_is_moved_away_before_a_move_from_mirror_json(tmp_path, fetcher) -> None:
    import shutil
    import sqlite3

    m, _ = ingested(tmp_path, fetcher)
    db, journal = tmp_path / "mirror" / "mirror.db", tmp_path / "mirror" / "mirror.db-journal"
    con = sqlite3.connect(db, isolation_level=None)
    con.execute("BEGIN")
    con.execute("DELETE FROM annotations")  # a transaction under way: its journal holds the old pages
    shutil.copy(journal, tmp_path / "hot-journal")
    con.execute("ROLLBACK")
    con.close()
    (tmp_path / "mirror" / "mirror.json").write_text(json.dumps(
        {"annotations": {str(t): a for t, a in m.annotations.items()}, "state": m.state}))
    db.unlink()
    shutil.copy(tmp_path / "hot-journal", journal)  # as a crash between moving the database and its journal leaves
    ProjectMirror(tmp_path / "mirror", 1)
    again = ProjectMirror(tmp_path / "mirror", 1)
    assert again.ingested and again.labels(CFG)[0] == m.labels(CFG)[0], "the moved database was not overwritten"
    assert list((tmp_path / "mirror").glob("mirror.db-journal.orphan-*"))


def test_a_retry_stored_just_before_a_kill_is_not_counted_twice_after_it(tmp_path, fetcher, monkeypatch) -> None:
    task_11_fails(monkeypatch, 1)
    m, client = ingested(tmp_path, fetcher)
    assert m.retrying == {11: 1}
    monkeypatch.setattr(ProjectMirror, "save", lambda self: None)  # killed before the mirror's save
    m.reconcile(client, CFG, fetcher, 3600)
    assert 11 in m.store
    monkeypatch.undo()
    again = ProjectMirror(tmp_path / "mirror", 1)
    assert again.retrying == {} and 11 in again.store
    client.scans.clear()
    again.reconcile(client, CFG, fetcher, 3600)
    assert "ids" not in client.scans, "the counts agree: no poll reads every task id"


def test_an_unreadable_task_stored_just_before_a_kill_is_not_counted_twice_after_it(tmp_path, fetcher,
                                                                                    monkeypatch) -> None:
    """The daily retry stored it, the save did not happen: it must not stay both stored and unreadable."""
    client = CountingClient()
    good = client.tasks[10]["data"]["image"]
    client.tasks[10]["data"]["image"] = "data:image/png;base64,bm90IGFuIGltYWdl"
    m, _ = ingested(tmp_path, fetcher, client)
    assert set(m.skipped) == {11}
    client.tasks[10]["data"]["image"] = good  # the cause fixed
    monkeypatch.setattr(ProjectMirror, "save", lambda self: None)  # killed before the reconcile's save
    m.reconcile(client, CFG, fetcher, 0.0)
    assert 11 in m.store and m.skipped == {}
    monkeypatch.undo()
    again = ProjectMirror(tmp_path / "mirror", 1)
    assert again.skipped == {} and again.retrying == {} and 11 in again.store
    again.reconcile(client, CFG, fetcher, 3600)
    client.scans.clear()
    again.reconcile(client, CFG, fetcher, 3600)
    assert "ids" not in client.scans, "the counts agree: no poll reads every task id"
    again.skipped[11] = "a record from an older release"
    again.retrying[11] = 1
    again.add_tasks([client.tasks[10]], CFG, fetcher)
    assert again.skipped == {} and again.retrying == {}, "read again while stored: it counts once"


def test_a_task_deleted_while_its_item_is_fetched_is_not_kept(tmp_path, fetcher, monkeypatch) -> None:
    m, client = ingested(tmp_path, fetcher)
    real = ItemCodec.load

    def deleted_meanwhile(self, fetcher, value, task_id=None):
        if task_id == 501:
            m.remove_tasks([501])  # a TASKS_DELETED webhook while the fetch runs
        return real(self, fetcher, value, task_id)

    monkeypatch.setattr(ItemCodec, "load", deleted_meanwhile)
    new = [{"id": 500 + i, "data": client.tasks[i]["data"], "annotations": [{**choice("1", 900 + i), "task": 500 + i}]}
           for i in range(2)]
    assert m.add_tasks(new, CFG, fetcher).tolist() == [500]
    assert 500 in m.store and 501 not in m.store and 501 not in m.annotations


def test_a_task_deleted_before_its_creation_is_read_is_never_stored(tmp_path, fetcher) -> None:
    m, client = ingested(tmp_path, fetcher)
    late = {"id": 700, "data": client.tasks[0]["data"], "annotations": [{**choice("1", 990), "task": 700}]}
    m.remove_tasks([700])  # TASKS_DELETED handled while its TASKS_CREATED still waits for the sync thread
    assert len(m.add_tasks([late], CFG, fetcher)) == 0 and 700 not in m.store and 700 not in m.annotations


def test_unreadable_tasks_are_tried_again_after_a_restart_and_at_the_full_scan_not_at_every_poll(
        tmp_path, fetcher, monkeypatch) -> None:
    client = CountingClient()
    good = client.tasks[10]["data"]["image"]
    client.tasks[10]["data"]["image"] = "data:image/png;base64,bm90IGFuIGltYWdl"
    tries: list[int] = []
    real = ItemCodec.load
    monkeypatch.setattr(ItemCodec, "load", lambda self, f, value, task_id=None: tries.append(task_id) or real(
        self, f, value, task_id))
    m, _ = ingested(tmp_path, fetcher, client)
    assert set(m.skipped) == {11} and tries.count(11) == 1
    m.reconcile(client, CFG, fetcher, 3600)
    m.reconcile(client, CFG, fetcher, 3600)
    assert tries.count(11) == 1 and set(m.skipped) == {11}, "the ingest just read it: not at every poll"
    client.tasks[10]["data"]["image"] = good  # the cause fixed (a storage added, a key or a setting changed)
    m.reconcile(client, CFG, fetcher, 3600)
    assert 11 not in m.store
    m.reconcile(client, CFG, fetcher, 0.0)  # the daily full scan
    assert 11 in m.store and m.skipped == {} and m.retrying == {}
    client.tasks.append({"id": 600, "data": {"image": "data:image/png;base64,bm90IGFuIGltYWdl"}, "annotations": []})
    m.add_tasks([client.tasks[-1]], CFG, fetcher)
    m.save()
    assert set(m.skipped) == {600}
    client.tasks[-1]["data"]["image"] = good
    again = ProjectMirror(tmp_path / "mirror", 1)
    assert set(again.skipped) == {600}
    again.reconcile(client, CFG, fetcher, 3600)
    assert 600 in again.store and again.skipped == {}, "a restart tries them again"


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares its size and holds no pixels: what Pillow's decompression-bomb guard reads."""
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
            + struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND")))


def test_an_image_past_pillow_s_own_pixel_guard_among_the_first_is_skipped_alone(tmp_path, fetcher) -> None:
    import base64

    client = CountingClient()
    bomb = "data:image/png;base64," + base64.b64encode(_png_header(20000, 10000)).decode()
    tasks = [{"id": 900, "data": {"image": bomb}}, *[{"id": t["id"], "data": t["data"]} for t in client.tasks[:4]]]
    m = ProjectMirror(tmp_path / "mirror", 1)
    assert sorted(m.add_tasks(tasks, CFG, fetcher).tolist()) == [1, 2, 3, 4]
    assert "too many pixels" in m.skipped[900] and m.state["fmt"]["mode"] == "L"


def test_a_batch_whose_image_format_could_not_be_read_waits_instead_of_fixing_a_shape(tmp_path, fetcher,
                                                                                      monkeypatch) -> None:
    client = CountingClient()
    tasks = [{"id": t["id"], "data": t["data"]} for t in client.tasks[:4]]
    real, seen = DataFetcher.fetch_bytes, set()

    def first_try_fails(self, value, task_id=None):
        if task_id not in seen:  # Label Studio restarting while the format is sampled
            seen.add(task_id)
            raise TaskDataError("connection refused", temporary=True)
        return real(self, value, task_id)

    monkeypatch.setattr(DataFetcher, "fetch_bytes", first_try_fails)
    m = ProjectMirror(tmp_path / "mirror", 1)
    assert len(m.add_tasks(tasks, CFG, fetcher)) == 0 and m.store.item_shape is None
    assert m.retrying == {1: 1, 2: 1, 3: 1, 4: 1} and "mode" not in m.state["fmt"]
    assert len(m.add_tasks(tasks, CFG, fetcher)) == 4 and m.state["fmt"]["mode"] == "L" and m.retrying == {}


def test_a_first_batch_of_vectors_fixes_the_length_most_of_them_have(tmp_path) -> None:
    cfg = parse_label_config('<View><Text name="t" value="$v"/><Choices name="c" toName="t">'
                             '<Choice value="a"/><Choice value="b"/></Choices></View>')
    tasks = [{"id": 1, "data": {"v": [0, 0]}}, *[{"id": i, "data": {"v": list(range(8))}} for i in range(2, 6)]]
    m = ProjectMirror(tmp_path / "mirror", 1)
    assert m.add_tasks(tasks, cfg, DataFetcher("http://127.0.0.1:1", "key")).tolist() == [2, 3, 4, 5]
    assert m.store.item_shape == (8,) and "differs from the project's (8,)" in m.skipped[1]


def test_a_deleted_task_takes_its_annotations_out_of_the_annotation_index(tmp_path) -> None:
    """The index is rebuilt only when it misses: weeks of deleted labeled tasks must not pile up in it."""
    m = ProjectMirror(tmp_path, 1)
    m.upsert_annotation(5, choice("3", 501))
    m.upsert_annotation(6, choice("4", 601))
    m.remove_tasks([5])
    assert set(m._index[False]) == {601}
    assert m.remove_annotations([601]) == [6] and not m.annotations
