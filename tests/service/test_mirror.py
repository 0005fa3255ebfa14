"""The project mirror: one ingest, then only changes; reconcile re-reads only what its counters say moved."""

from __future__ import annotations

import numpy as np
import pytest

from connectors.label_config import parse_label_config
from connectors.task_data import DataFetcher
from service.mirror import ProjectMirror
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
    real = DataFetcher.load_item
    monkeypatch.setattr(DataFetcher, "load_item", lambda self, *a: fetched.append(1) or real(self, *a))
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


def test_reconcile_reads_no_tasks_when_nothing_moved_and_rereads_what_did(tmp_path, fetcher) -> None:
    m, client = ingested(tmp_path, fetcher)
    client.scans.clear()
    assert m.reconcile(client, CFG, fetcher, full_scan_seconds=3600) == {"labels": False, "tasks": False,
                                                                       "queue": False}
    assert client.scans == []
    client.tasks[40]["annotations"] = [choice("3", 4000)]
    assert m.reconcile(client, CFG, fetcher, 3600)["labels"] is True
    assert client.scans == ["labeled"] and m.labels(CFG)[0][41] == 3, "a missed webhook is caught"
    client.scans.clear()
    client.tasks.append({"id": 999, "data": dict(client.tasks[0]["data"]), "annotations": []})
    del client.tasks[5]
    assert m.reconcile(client, CFG, fetcher, 3600)["tasks"] is True
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


def test_queue_labels_count_for_their_source_tasks(tmp_path, fetcher) -> None:
    m, client = ingested(tmp_path, fetcher)
    client.queue_labels = lambda qid: iter([(50, [choice("2", 9000)])])
    m.scan_queue(client, 77)
    assert m.labels(CFG)[0][50] == 2
