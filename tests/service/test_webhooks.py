"""Webhooks: a body Label Studio would not send is refused whole; a queue's labels count for their source."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from service.webhooks import queue_source
from tests.service.test_app import CONFIG, make


@pytest.mark.parametrize(("body", "named"), [
    ({"action": "ANNOTATION_CREATED", "annotation": "x"}, "annotation must be an object"),
    ({"action": "ANNOTATION_UPDATED", "annotation": {"id": 1, "task": "abc"}}, "task id must be an integer"),
    ({"action": "ANNOTATION_CREATED", "annotation": {"id": 2**64, "task": 3}}, "annotation.id"),
    ({"action": "ANNOTATION_CREATED", "annotation": {"task": 3}}, "annotation.id must be an integer id, got None"),
    ({"action": "ANNOTATION_UPDATED", "annotation": {"id": 4}}, "task id must be an integer id, got None"),
    ({"action": "ANNOTATION_CREATED"}, "annotation.id must be an integer id, got None"),
    ({"action": "ANNOTATIONS_DELETED", "annotations": [5]}, "annotations[] must be an object"),
    ({"action": "ANNOTATIONS_DELETED", "annotations": {"id": 5}}, "annotations must be a list"),
    ({"action": "TASKS_DELETED", "tasks": [{"id": "x"}]}, "tasks[].id must be an integer"),
    ({"action": "TASKS_CREATED", "tasks": [{"id": True}]}, "tasks[].id must be an integer"),
])
def test_a_webhook_body_label_studio_would_not_send_is_a_422_naming_the_field(tmp_path, body, named):
    _, app, _ = make(tmp_path)
    app.post("/setup", json={"project": "1.1", "schema": CONFIG})
    r = app.post("/webhook", json={**body, "project": {"id": 1}})
    assert r.status_code == 422 and named in r.json()["detail"], r.text


def test_a_queue_is_known_by_its_recorded_id_or_by_the_source_its_tasks_name() -> None:
    source, served = SimpleNamespace(queue_project_id=77, config=None), SimpleNamespace(queue_project_id=None,
                                                                                     config="a config")
    m = SimpleNamespace(states=lambda: {1: source, 2: served})
    assert queue_source(m, 77, {}) is source
    claimed = {"task": {"meta": {"source_project": 1}}}
    assert queue_source(m, 78, claimed) is source, "before a push recorded the queue"
    assert queue_source(m, 2, {"task": {"meta": {"source_project": 1}}}) is None, "a served project is its own"
    assert queue_source(m, 78, {"task": {"meta": {"source_project": 9}}}) is None, "an unknown source"
    assert queue_source(m, 1, claimed) is None, "a project claiming itself"


def test_a_task_deleted_during_the_first_ingest_does_not_stay_in_the_pool(tmp_path) -> None:
    m, app, client = make(tmp_path)
    app.post("/setup", json={"project": "1.1", "schema": CONFIG})
    st = m.get(1)
    mirror = m.mirror(st)
    mirror.add_tasks(client.tasks[:3], st.config, m.fetcher(st))  # the ingest's first page, stored
    assert not mirror.ingested and 2 in mirror.store
    r = app.post("/webhook", json={"action": "TASKS_DELETED", "project": {"id": 1}, "tasks": [{"id": 2}]})
    assert r.json()["status"] != "ignored" and 2 not in mirror.store and 2 not in mirror.annotations


@pytest.mark.parametrize("body", [{"action": "START_TRAINING"}, {"action": "TASKS_DELETED", "tasks": [{"id": 3}]},
                                  {"action": "ANNOTATION_CREATED", "annotation": {"id": 5, "task": 3}}])
def test_a_webhook_of_a_project_never_set_up_registers_nothing(tmp_path, body) -> None:
    m, app, _ = make(tmp_path)
    r = app.post("/webhook", json={**body, "project": {"id": 97}})
    assert r.json()["status"] == "ignored" and 97 not in m.projects and not (tmp_path / "project-97").exists()
    assert m.runner.wait_idle(5) and m.runner.completed == 0
