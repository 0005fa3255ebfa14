"""The live loop at the unit level: every label change counts, new tasks are scored at once, one writer per project."""

from __future__ import annotations

import dataclasses
import itertools
import threading
import time

import numpy as np
import pytest

from service.jobs import PUSH
from service.served import ServedVersion
from tests.service.test_app import CONFIG, FakeClient, choice, make
from tests.service.test_faults import CountingBackend

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def webhook(app, action: str, **body) -> str:
    return app.post("/webhook", json={"action": action, "project": {"id": 1}, **body}).json()["status"]


def first_version(tmp_path, client=None, **kw):
    backend = CountingBackend()
    m, app, client = make(tmp_path, backend=backend, client=client, **kw)
    app.post("/setup", json={"project": "1.1", "schema": CONFIG})
    webhook(app, "START_TRAINING")
    assert m.runner.wait_idle(120)
    assert app.get("/projects/1/status").json()["model_version"] == "sae-v1"
    return m, app, client, backend


def test_label_changes_are_counted_by_class_name_across_label_config_edits() -> None:
    from service.projects import count_changes

    before = {1: 0, 2: 1, 3: 2}  # a, b, c
    assert count_changes({1: 0, 2: 2, 3: 3}, before, ["a", "x", "b", "c"], ["a", "b", "c"]) == 0, "x added"
    assert count_changes({1: 1, 2: 1, 3: 2}, before, ["b", "a", "c"], ["a", "b", "c"]) == 1, \
        "a and b swapped places: task 1 still a (now index 1), task 2 corrected from b to a"
    assert count_changes({1: 0, 2: 1}, before, ["a", "b"], ["a", "b", "c"]) == 1, "c removed: its label is gone"
    assert count_changes({1: 0, 2: 1, 3: 1}, before) == 1


def test_a_class_added_to_the_label_config_changes_no_label(tmp_path) -> None:
    m, app, client, _ = first_version(tmp_path, retrain_min_new_labels=1000)
    edited = CONFIG.replace('<Choice value="5"/>', '<Choice value="x"/><Choice value="5"/>')
    client.get_project = lambda pid, _g=client.get_project: {**_g(pid), "label_config": edited}
    app.post("/setup", json={"project": "1.2", "schema": edited})
    assert m.projects[1].config.classes[5] == "x"
    assert app.get("/projects/1/status").json()["changes_since_version"] == 0, "no annotation changed"


def test_the_cron_before_two_classes_are_labeled_is_no_failure_and_delays_no_first_version(tmp_path) -> None:
    """Nights of RETRAIN_CRON while the team labels the cold start's suggestions: no alert, no backoff."""
    client = FakeClient(n=60, labeled=0)
    m, app, client = make(tmp_path, client=client, push_head=5, push_top_k=5, retrain_min_new_labels=2)
    app.post("/setup", json={"project": "1.1", "schema": CONFIG})
    m.request_training(1, "START_TRAINING")
    assert m.runner.wait_idle(120) and client.rows == {"sae-v0": 5}, "the cold start's suggestions"
    st = m.projects[1]
    m.mirror(st).upsert_annotation(1, choice("3", 1001))
    for _ in range(3):
        m.cron()
        assert m.runner.wait_idle(120)
    status = app.get("/projects/1/status").json()
    assert st.failures == 0 and m.metrics.errors.labels("training")._value.get() == 0
    assert "at least two classes; 1 tasks are labeled" in status["last_error"], "what it waits for, in status"
    st.failures = 3  # real failures before: the latest try failed nothing, so it extends no backoff
    m.cron()
    assert m.runner.wait_idle(120) and st.failures == 0
    m.mirror(st).upsert_annotation(2, choice("5", 1002))
    assert m.labels_changed(1, "ANNOTATION_CREATED") != "backing-off"
    m.shutdown()


def test_a_kill_while_a_trained_version_pushes_does_not_train_it_again(tmp_path) -> None:
    """The version is saved, scored, serving and recorded: the next start pushes it, and trains nothing."""
    import shutil

    pushing, release = threading.Event(), threading.Event()

    class SlowImport(FakeClient):  # Label Studio slow (or down, push retried with backoff) during the stop
        def import_predictions(self, project_id, predictions):
            pushing.set()
            release.wait(30)
            return super().import_predictions(project_id, predictions)

    client = SlowImport()
    m, app, _ = make(tmp_path / "a", client=client, backend=CountingBackend(), sae_epochs=3,
                     retrain_min_new_labels=1000)
    app.post("/setup", json={"project": "1.1", "schema": CONFIG})
    m.request_training(1, "START_TRAINING")
    assert pushing.wait(120), "the version is trained, saved, scored and serving; its push runs"
    assert m.projects[1].version_name == "sae-v1"
    m.shutdown(wait_seconds=0.2)  # SIGTERM: the push outlives the grace period ...
    shutil.copytree(tmp_path / "a", tmp_path / "b", ignore=shutil.ignore_patterns(".sae-backend.lock"))  # ... SIGKILL
    release.set()
    m.runner.wait_idle(60)
    again = CountingBackend()
    m2, _, _ = make(tmp_path / "b", client=FakeClient(), backend=again, sae_epochs=3, retrain_min_new_labels=1000)
    assert m2.projects[1].version_name == "sae-v1" and m2.projects[1].push_pending
    time.sleep(0.2)
    assert m2.runner.wait_idle(120)
    versions = m2.store(1).numbers()
    m2.shutdown()
    assert again.runs == 0, f"the labels sae-v1 already has were trained again: versions now {versions}"


def test_labeled_tasks_deleted_count_as_label_changes_at_once(tmp_path) -> None:
    """As ANNOTATIONS_DELETED does: a TASKS_DELETED of labeled tasks asks for a training, not the next poll."""
    m, app, client, _ = first_version(tmp_path, retrain_min_new_labels=10, retrain_debounce_seconds=0)
    labeled = [t["id"] for t in client.tasks if t["annotations"]][:10]
    client.tasks = [t for t in client.tasks if t["id"] not in labeled]
    assert webhook(app, "TASKS_DELETED", tasks=[{"id": t} for t in labeled]) not in ("below-threshold", "ignored")
    assert m.runner.wait_idle(120) and m.projects[1].version_name == "sae-v2"
    m.shutdown()


def test_a_version_whose_scoring_fails_is_not_kept(tmp_path) -> None:
    """Scoring that fails at every try (the whole pool out of GPU memory, a full disk) must not pile up versions."""
    class ScoringFails(CountingBackend):
        fail = False

        def score(self, job, model, progress=None):
            if self.fail:
                raise MemoryError("out of memory while scoring the pool")
            return super().score(job, model, progress)

    m, app, _, backend = first_version(tmp_path, keep_versions=2)
    backend.__class__ = ScoringFails
    backend.fail = True
    for _ in range(3):
        m.request_training(1, "START_TRAINING")
        assert m.runner.wait_idle(120)
    status = app.get("/projects/1/status").json()
    assert status["model_version"] == "sae-v1" and "out of memory" in status["last_error"]
    assert m.store(1).numbers() == [1], "the version in service, and no version that never served"
    backend.fail = False
    m.request_training(1, "START_TRAINING")
    assert m.runner.wait_idle(120) and m.projects[1].version_name == "sae-v5", "numbers only grow"
    m.shutdown()


def test_a_training_whose_start_cannot_be_recorded_fails_and_does_not_stay_running(tmp_path, monkeypatch) -> None:
    """A full disk at the start's record must not leave the project "training" and every poll returning early."""
    m, app, _, backend = first_version(tmp_path, retrain_min_new_labels=1000)
    real, calls = m._persist, []

    def full_disk_once(st):
        calls.append(st.training)
        if len(calls) == 1:
            raise OSError(28, "No space left on device")
        real(st)

    monkeypatch.setattr(m, "_persist", full_disk_once)
    webhook(app, "START_TRAINING")
    assert m.runner.wait_idle(120)
    status = app.get("/projects/1/status").json()
    assert status["training"] is False and "No space left" in status["last_error"]
    assert status["model_version"] == "sae-v1" and backend.runs == 1, "the version in service keeps serving"
    assert not m.runner.is_busy(1), "the poll reads the project again"


def test_a_version_saved_before_its_push_was_asked_for_is_pushed_after_a_restart(tmp_path) -> None:
    """A process that ended between saving a version and recording its push pending must still push it."""
    m, _, client, _ = first_version(tmp_path, retrain_min_new_labels=1000)
    m.shutdown()
    store = m.store(1)
    store.write_project({**store.read_project(), "push_pending": False, "last_pushed_number": 0})
    m2, _, _ = make(tmp_path, client=client)
    assert m2.projects[1].version_name == "sae-v1" and m2.projects[1].push_pending
    m2.shutdown()
    store.write_project({**store.read_project(), "push_pending": False, "last_pushed_number": 1})
    m3, _, _ = make(tmp_path, client=client)
    assert not m3.projects[1].push_pending, "a version already pushed is not pushed again"
    m3.shutdown()


def test_a_project_deleted_in_label_studio_is_counted_once_and_left_alone_until_it_is_back(tmp_path) -> None:
    """A deleted project polled for weeks must not grow errors{poll}, the metric a team alerts on."""
    from connectors.label_studio import LabelStudioError

    class Deletable(FakeClient):
        gone = False
        listed = True  # a 404 while the project list still names it: a wrong path, a proxy, not a deletion

        def get_project(self, project_id):
            if self.gone:
                raise LabelStudioError("get_project: Label Studio answered HTTP 404: Not found", False, 404)
            return super().get_project(project_id)

        def list_projects(self):
            return [{"id": 1}] if self.listed else []

    m, app, client, backend = first_version(tmp_path, client=Deletable(), retrain_min_new_labels=1000)
    errors = m.metrics.errors
    client.gone = True
    m.poll()
    assert m.projects[1].gone_since is None and errors.labels("poll")._value.get() == 1, "listed: not gone"
    client.listed = False
    for _ in range(3):
        m.poll()
        m.cron()
        webhook(app, "START_TRAINING")
        assert m.runner.wait_idle(60)
    assert errors.labels("project_gone")._value.get() == 1 and errors.labels("poll")._value.get() == 1
    assert app.get("/projects/1/status").json()["gone_from_label_studio_since"] is not None
    assert backend.runs == 1 and errors.labels("training")._value.get() == 0, "nothing trained for it"
    m.projects[1].push_pending = True  # as a push that failed on the 404 leaves it
    m._persist(m.projects[1])
    m.shutdown()
    m2, app2, _ = make(tmp_path, client=client, retrain_min_new_labels=1000)
    assert m2.projects[1].gone_since is not None, "remembered across a restart"
    assert m2.projects[1].push_pending and m2.runner.wait_idle(60)
    assert m2.metrics.errors.labels("push")._value.get() == 0, "its pending push waits for the project"
    client.gone = False
    m2.poll()
    assert m2.projects[1].gone_since is None and app2.get("/projects/1/status").json()["model_version"] == "sae-v1"
    m2.shutdown()


def test_a_label_config_fixed_in_label_studio_is_taken_at_the_next_poll(tmp_path) -> None:
    """A project first set up with a config this backend cannot use must not wait for a /setup once it is fixed."""
    m, app, _ = make(tmp_path, client=FakeClient())
    app.post("/setup", json={"project": "1.1", "schema": CONFIG.replace('choice="single"', 'choice="multiple"')})
    st = m.projects[1]
    assert st.config is None and st.config_error
    m.poll()  # Label Studio holds the fixed one (the fake's project config)
    assert st.config is not None and st.config_error is None
    m.shutdown()


def test_a_correction_retrains(tmp_path) -> None:
    m, app, client, backend = first_version(tmp_path, retrain_min_new_labels=1)
    task = client.tasks[3]
    old = task["annotations"][0]["result"][0]["value"]["choices"][0]
    fixed = choice(str((int(old) + 1) % 10), task["annotations"][0]["id"])
    assert webhook(app, "ANNOTATION_UPDATED", annotation={**fixed, "task": task["id"]}) != "below-threshold"
    assert m.runner.wait_idle(120)
    status = app.get("/projects/1/status").json()
    assert backend.runs == 2 and status["model_version"] == "sae-v2"
    assert status["labeled"] == 40 and status["changes_since_version"] == 0


def test_deletions_and_additions_that_net_to_zero_retrain(tmp_path) -> None:
    m, app, client, backend = first_version(tmp_path, retrain_min_new_labels=10)
    gone = [{"id": t["annotations"][0]["id"]} for t in client.tasks[:5]]
    assert webhook(app, "ANNOTATIONS_DELETED", annotations=gone) == "below-threshold"
    outcomes = [webhook(app, "ANNOTATION_CREATED", annotation={**choice(str(i % 10), 500 + i), "task": i + 1})
                for i in range(60, 65)]
    assert outcomes[-1] not in ("below-threshold",), "5 removed + 5 added = 10 changes, although the count is 40"
    assert m.runner.wait_idle(120)
    status = app.get("/projects/1/status").json()
    assert backend.runs == 2 and status["labeled"] == 40 and status["version_labeled"] == 40


def test_unusable_annotations_never_cause_a_retrain_at_each_poll(tmp_path) -> None:
    client = FakeClient()
    for t in client.tasks[60:70]:
        t["annotations"] = [choice("seven", 900 + t["id"])]
    m, app, client, backend = first_version(tmp_path, client=client, reconcile_full_scan_seconds=0.001)
    for _ in range(3):
        m.poll()
        assert m.runner.wait_idle(60)
    status = app.get("/projects/1/status").json()
    assert backend.runs == 1, "ten annotated but unusable tasks are reported, not retrained on"
    assert len(status["label_problems"]) == 10 and status["changes_since_version"] == 0


def test_a_new_task_is_ranked_and_answered_within_seconds_without_a_retrain(tmp_path) -> None:
    m, app, client, backend = first_version(tmp_path)
    rows_before = client.rows.get("sae-v1", 0)
    new = {"id": 5000, "data": {"image": client.tasks[100]["data"]["image"]}}
    client.tasks.append({**new, "annotations": []})
    t0 = time.monotonic()
    assert webhook(app, "TASKS_CREATED", tasks=[new]) == "scoring"
    ranked = []
    while time.monotonic() - t0 < 10 and not ranked:
        ranked = [r for r in app.get("/projects/1/ranking?limit=1000").json()["ranking"] if r["task"] == 5000]
        time.sleep(0.05)
    assert ranked, "the new task is in the ranking within seconds"
    assert m.runner.wait_idle(60)
    assert backend.runs == 1
    answer = app.post("/predict", json={"tasks": [{"id": 5000, "data": {}}], "project": "1.1"}).json()
    assert answer["results"][0]["model_version"] == "sae-v1" and answer["results"][0]["score"] == ranked[0]["score"]
    assert client.rows["sae-v1"] == rows_before + 1, "the head, now with the new task, is written again"
    assert app.get("/projects/1/status").json()["mirror"]["stored"] == 121
    assert m.metrics.unlabeled.labels("1")._value.get() == 121 - 40, "the gauge counts the new task"


class HeldClient(FakeClient):
    """Holds the first import until released, and records the model versions set on the project."""

    def __init__(self) -> None:
        super().__init__()
        self.hold = threading.Event()
        self.held = threading.Event()
        self.versions_set: list[str] = []

    def import_predictions(self, project_id, predictions):
        if not self.held.is_set():
            self.held.set()
            assert self.hold.wait(30)
        return super().import_predictions(project_id, predictions)

    def set_model_version(self, project_id, name):
        self.versions_set.append(name)


def test_a_push_of_an_older_version_can_never_follow_a_newer_one(tmp_path) -> None:
    client = HeldClient()
    m, app, _ = make(tmp_path, client=client)
    app.post("/setup", json={"project": "1.1", "schema": CONFIG})
    webhook(app, "START_TRAINING")
    assert client.held.wait(60), "the first version's push is held"
    assert webhook(app, "START_TRAINING") == "coalesced"
    m.poll()
    client.hold.set()
    assert m.runner.wait_idle(120)
    assert client.versions_set == ["sae-v1", "sae-v2"]
    assert app.get("/projects/1/status").json()["push_pending"] is False


def test_a_pending_push_is_completed_after_a_restart(tmp_path) -> None:
    client = FakeClient()
    client.fail_push = True
    m, app, _, _ = first_version(tmp_path, client=client)
    assert app.get("/projects/1/status").json()["push_pending"] is True and client.pushed == []
    m.shutdown()
    client.fail_push = False
    m2, app2, _ = make(tmp_path, client=client)
    assert m2.runner.wait_idle(60)
    assert client.pushed == ["sae-v1"] and app2.get("/projects/1/status").json()["push_pending"] is False


def test_status_carries_the_stop_estimate_between_versions(tmp_path) -> None:
    m, app, client, _ = first_version(tmp_path, retrain_min_new_labels=1, stop_kappa=0.5)
    first = app.get("/projects/1/status").json()["stop_estimate"]
    assert first["kappas"] == [] and first["stop_suggested"] is False and first["mean_last"] is None
    for n in range(3):
        webhook(app, "START_TRAINING")
        assert m.runner.wait_idle(120)
        est = app.get("/projects/1/status").json()["stop_estimate"]
        assert [k["version"] for k in est["kappas"]] == list(range(2, n + 3))
        assert all(-1.0 <= k["kappa"] <= 1.0 for k in est["kappas"])
    assert est["threshold"] == 0.5
    # the same labels and data: successive versions mostly agree, so at a low bar the estimate says stop
    assert est["mean_last"] > 0.5 and est["stop_suggested"] is True
    _, app2, _ = make(tmp_path, client=client, stop_kappa=0.5)
    assert app2.get("/projects/1/status").json()["stop_estimate"] == est, "kept across a restart"


def test_cold_start_suggests_typical_tasks_then_the_first_version_replaces_them(tmp_path) -> None:
    from tests.service.test_app import FakeClient

    client = FakeClient(n=120, labeled=0)
    m, app, client = make(tmp_path, client=client, push_head=10, push_top_k=5)
    app.post("/setup", json={"project": "1.1", "schema": CONFIG})
    assert webhook(app, "START_TRAINING") == "queued"
    assert m.runner.wait_idle(120)
    status = app.get("/projects/1/status").json()
    assert status["model_version"] is None and status["last_error"] is None
    assert status["cold_start_suggestions"] == 10 and status["last_push"]["model_version"] == "sae-v0"
    assert client.rows == {"sae-v0": 10}
    ranking = app.get("/projects/1/ranking").json()
    assert ranking["model_version"] == "sae-v0" and len(ranking["ranking"]) == 10
    suggested = [r["task"] for r in ranking["ranking"]]
    assert len(set(suggested)) == 10
    webhook(app, "TASKS_DELETED", tasks=[{"id": suggested[0]}])
    assert [r["task"] for r in app.get("/projects/1/ranking").json()["ranking"]] == suggested[1:], \
        "a suggestion deleted since is no longer offered"
    client.tasks = [t for t in client.tasks if t["id"] != suggested[0]]
    suggested = suggested[1:]
    # the suggestions cover the data: typical items of 10 clusters span several digit classes
    from sklearn.datasets import load_digits

    assert len({int(load_digits().target[t - 1]) for t in suggested}) >= 5
    # the team labels the suggestions: the first trained version's push deletes the cold-start rows
    for t in client.tasks:
        if t["id"] in suggested or t["id"] <= 30:
            t["annotations"] = [choice(str(load_digits().target[t["id"] - 1]), 1000 + t["id"])]
    webhook(app, "START_TRAINING")
    assert m.runner.wait_idle(120)
    assert app.get("/projects/1/status").json()["model_version"] == "sae-v1"
    assert "sae-v0" not in client.rows and client.rows["sae-v1"] == 10
    # never again once a version exists
    m.poll()
    assert m.runner.wait_idle(60)
    assert client.pushed.count("sae-v0") == 1


def test_without_cold_start_no_labels_is_an_error_and_nothing_is_pushed(tmp_path) -> None:
    from tests.service.test_app import FakeClient

    m, app, client = make(tmp_path, client=FakeClient(n=60, labeled=0), cold_start="none")
    app.post("/setup", json={"project": "1.1", "schema": CONFIG})
    webhook(app, "START_TRAINING")
    assert m.runner.wait_idle(60)
    status = app.get("/projects/1/status").json()
    assert "at least two classes" in status["last_error"] and client.pushed == []


def cold_start_whose_push_failed(tmp_path):
    """Five suggestions of a project without labels, made, kept, and not pushed (Label Studio refused)."""
    from tests.service.test_app import FakeClient

    client = FakeClient(n=60, labeled=0)
    client.fail_push = True
    m, app, client = make(tmp_path, client=client, push_head=5, push_top_k=5)
    app.post("/setup", json={"project": "1.1", "schema": CONFIG})
    webhook(app, "START_TRAINING")
    assert m.runner.wait_idle(120)
    return m, app, client


def test_a_cold_start_push_that_fails_with_any_error_is_recorded_like_a_version_s(tmp_path) -> None:
    from tests.service.test_app import FakeClient

    class Closed(FakeClient):
        def delete_predictions(self, project_id, versions=None):
            raise RuntimeError("Cannot send a request, as the client has been closed.")

    m, app, _ = make(tmp_path, client=Closed(n=60, labeled=0), push_head=5, push_top_k=5)
    app.post("/setup", json={"project": "1.1", "schema": CONFIG})
    webhook(app, "START_TRAINING")
    assert m.runner.wait_idle(120)
    status = app.get("/projects/1/status").json()
    assert status["cold_start_suggestions"] == 5 and "client has been closed" in status["last_push_error"]
    assert status["last_error"] is None and 'sae_errors_total{kind="push"} 1.0' in app.get("/metrics").text


def test_cold_start_suggestions_survive_a_restart_and_are_not_retrained(tmp_path, monkeypatch) -> None:
    from service import training

    _, app, client = cold_start_whose_push_failed(tmp_path)
    status = app.get("/projects/1/status").json()
    assert status["cold_start_suggestions"] == 5 and status["last_push_error"] and client.pushed == []
    calls = []
    monkeypatch.setattr(training, "suggest_first", lambda *a, **k: calls.append(1))
    client.fail_push = False
    m2, _, _ = make(tmp_path, client=client, push_head=5, push_top_k=5)
    m2.poll()
    assert m2.runner.wait_idle(120)
    assert calls == [], "the suggestions were kept, only the push is retried"
    assert client.rows == {"sae-v0": 5}


def test_a_training_compacts_the_mirror_once_most_tasks_are_deleted(tmp_path) -> None:
    m, app, client, _ = first_version(tmp_path)
    ids_file = next(tmp_path.glob("project-1/mirror/**/ids.bin"))
    assert ids_file.stat().st_size == 120 * 8
    gone = [{"id": t["id"]} for t in client.tasks[50:]]
    client.tasks = client.tasks[:50]
    assert webhook(app, "TASKS_DELETED", tasks=gone) == "below-threshold", "unlabeled tasks: no label changed"
    assert ids_file.stat().st_size == 120 * 8, "deletions only tombstone"
    webhook(app, "START_TRAINING")
    assert m.runner.wait_idle(120)
    status = app.get("/projects/1/status").json()
    assert status["model_version"] == "sae-v2" and status["mirror"]["stored"] == 50
    assert ids_file.stat().st_size == 50 * 8, "70 of 120 rows dead: the training compacted the store"


def test_predictions_and_ranking_carry_a_calibrated_probability(tmp_path) -> None:
    m, app, client, _ = first_version(tmp_path)
    tasks = [{"id": t["id"], "data": t["data"]} for t in client.tasks[40:100]]
    results = app.post("/predict", json={"tasks": tasks, "project": "1.1"}).json()["results"]
    conf = [r["confidence"] for r in results]
    prob = [r["probability"] for r in results]
    assert all(0.0 <= p <= 1.0 for p in prob)
    order = sorted(range(len(conf)), key=conf.__getitem__)
    assert all(prob[a] <= prob[b] + 1e-9 for a, b in itertools.pairwise(order)), "same order as the confidence"
    assert m.projects[1].served.model.svm_.calibration_ is not None, "40 labels of 10 classes: calibrated"
    ranking = app.get("/projects/1/ranking?limit=5").json()["ranking"]
    assert all(0.0 <= r["probability"] <= 1.0 for r in ranking)


def test_class_distances_reach_training_and_a_file_that_does_not_fit_keeps_the_version_serving(tmp_path) -> None:
    import json

    path = tmp_path / "distances.json"
    near = {str(a): {str(b): 0.25 if {a, b} == {3, 8} else 1.0 for b in range(a + 1, 10)} for a in range(9)}
    path.write_text(json.dumps(near))
    (tmp_path / "store").mkdir()
    m, app, _, backend = first_version(tmp_path / "store", class_distances=path)
    distances = m.projects[1].served.model.sae_.distances_
    assert distances[3, 8] == 0.25 and distances[3, 7] == 1.0
    path.write_text(json.dumps({"cat": {"dog": 1.0}}))
    webhook(app, "START_TRAINING")
    assert m.runner.wait_idle(60)
    status = app.get("/projects/1/status").json()
    assert "CLASS_DISTANCES" in status["last_error"] and "unknown classes" in status["last_error"]
    assert status["model_version"] == "sae-v1" and backend.runs == 1, "refused before any training"


class HoldSecondPush(FakeClient):
    """Holds the second import until released, and records every imported task id."""

    def __init__(self) -> None:
        super().__init__()
        self.hold, self.held = threading.Event(), threading.Event()
        self.imports: list[list[int]] = []

    def import_predictions(self, project_id, predictions):
        self.imports.append([p["task"] for p in predictions])
        if len(self.imports) == 2:
            self.held.set()
            assert self.hold.wait(30)
        return super().import_predictions(project_id, predictions)


def test_a_task_that_enters_the_head_during_a_push_is_pushed_after_it(tmp_path) -> None:
    client = HoldSecondPush()
    m, app, _, _ = first_version(tmp_path, client=client)
    image = client.tasks[100]["data"]["image"]
    for tid in (5000, 5001):
        client.tasks.append({"id": tid, "data": {"image": image}, "annotations": []})
    assert webhook(app, "TASKS_CREATED", tasks=[{"id": 5000, "data": {"image": image}}]) == "scoring"
    assert client.held.wait(30), "task 5000 entered the head: its push is under way, and held"
    assert webhook(app, "TASKS_CREATED", tasks=[{"id": 5001, "data": {"image": image}}]) == "scoring"
    deadline = time.monotonic() + 30
    while 5001 not in m.projects[1].served.head_ids.tolist() and time.monotonic() < deadline:
        time.sleep(0.05)
    client.hold.set()
    assert m.runner.wait_idle(60)
    assert 5001 in client.imports[-1], "the same version, but its head changed while the push ran"
    assert app.get("/projects/1/status").json()["push_pending"] is False


def test_a_task_deleted_after_scoring_is_left_out_of_the_next_push(tmp_path) -> None:
    m, app, client, _ = first_version(tmp_path)
    head = m.projects[1].served.head_ids.tolist()
    gone = next(t for t in head if t not in m.projects[1].served.labels)
    client.tasks = [t for t in client.tasks if t["id"] != gone]
    assert webhook(app, "TASKS_DELETED", tasks=[{"id": gone}]) == "below-threshold"
    m.projects[1].push_pending = True
    m.projects[1].push_state = dataclasses.replace(m.projects[1].push_state, rows=None)  # after a failed push, say
    m.runner.request(1, "test: push again", "push")
    assert m.runner.wait_idle(60)
    status = app.get("/projects/1/status").json()
    assert status["push_pending"] is False and status["last_push_error"] is None
    assert gone not in client.imported and len(client.imported) == len(head) - 1


class EditedConfig(FakeClient):
    def __init__(self) -> None:
        super().__init__()
        self.config = CONFIG

    def get_project(self, project_id):
        return {**super().get_project(project_id), "label_config": self.config}


def test_a_label_config_edited_without_setup_is_taken_at_the_next_poll(tmp_path) -> None:
    client = EditedConfig()
    m, app, _, _ = first_version(tmp_path, client=client)
    client.config = CONFIG.replace('<Choice value="0"/>', "").replace("</Choices>", '<Choice value="0"/></Choices>')
    m.poll()
    assert m.runner.wait_idle(60)
    assert m.projects[1].config.classes == [*map(str, range(1, 10)), "0"]
    client.config = CONFIG.replace('choice="single"', 'choice="multiple"')
    m.poll()
    assert m.runner.wait_idle(60)
    status = app.get("/projects/1/status").json()
    assert m.projects[1].config.classes[-1] == "0", "an unusable edit keeps the config in use"
    assert "single" in status["label_config_error"] or "multiple" in status["label_config_error"]
    client.config = m.projects[1].label_config  # the edit is undone
    m.poll()
    assert m.runner.wait_idle(60)
    assert app.get("/projects/1/status").json()["label_config_error"] is None


def test_query_strategy_options_reach_the_served_ranking(tmp_path) -> None:
    heads = {}
    for until in (10, 1000):  # 40 labels: margin past the switch, typicality before it
        spec = f"typicality-margin:until={until}"
        _, app, _, _ = first_version(tmp_path / str(until), query_strategy=spec)
        assert app.get("/projects/1/status").json()["query_strategy"] == spec
        heads[until] = [r["task"] for r in app.get("/projects/1/ranking?limit=10").json()["ranking"]]
    margin, _, _, _ = first_version(tmp_path / "margin", query_strategy="margin")
    assert heads[10] == margin.projects[1].served.head_ids[:10].tolist(), "past its switch it ranks as margin"
    assert heads[1000] != heads[10], "before it, typicality"


def test_a_queue_project_s_webhook_counts_for_the_source_task_at_once(tmp_path) -> None:
    m, app, client, _ = first_version(tmp_path, retrain_min_new_labels=1000)
    m.projects[1].queue_project_id = 77
    source = next(t["id"] for t in client.tasks if not t["annotations"])
    queue_task = {"id": 9001, "data": {}, "meta": {"source_task": source}}
    ann = {**choice("3", 555), "task": 9001}
    r = app.post("/webhook", json={"action": "ANNOTATION_CREATED", "project": {"id": 77}, "annotation": ann,
                                   "task": queue_task})
    assert r.status_code == 200 and r.json()["status"] == "below-threshold"
    labels = m.mirror(m.projects[1]).labels(m.projects[1].config)[0]
    assert labels[source] == 3 and 77 not in m.projects, "the queue is no project of its own"
    fixed = {**choice("4", 555), "task": 9001}
    app.post("/webhook", json={"action": "ANNOTATION_UPDATED", "project": {"id": 77}, "annotation": fixed,
                               "task": queue_task})
    assert m.mirror(m.projects[1]).labels(m.projects[1].config)[0][source] == 4, "a correction counts at once"
    app.post("/webhook", json={"action": "ANNOTATIONS_DELETED", "project": {"id": 77}, "annotations": [{"id": 555}]})
    assert source not in m.mirror(m.projects[1]).labels(m.projects[1].config)[0]
    assert app.get("/projects/1/status").json()["changes_since_version"] == 0, "created, corrected, deleted: net zero"
    app.post("/webhook", json={"action": "ANNOTATION_CREATED", "project": {"id": 77}, "annotation": ann,
                               "task": queue_task})
    r = app.post("/webhook", json={"action": "TASKS_DELETED", "project": {"id": 77}, "tasks": [{"id": 9001}]})
    assert r.status_code == 200 and 77 not in m.projects
    assert source not in m.mirror(m.projects[1]).labels(m.projects[1].config)[0], "the queue task took its label"


def test_a_queue_label_that_arrives_before_the_push_recorded_the_queue_is_counted_by_its_meta(tmp_path) -> None:
    m, app, client, _ = first_version(tmp_path, retrain_min_new_labels=1000)
    assert m.projects[1].queue_project_id is None
    source = next(t["id"] for t in client.tasks if not t["annotations"])
    queue_task = {"id": 9001, "data": {}, "meta": {"source_task": source, "source_project": 1}}
    app.post("/webhook", json={"action": "ANNOTATION_CREATED", "project": {"id": 78},
                               "annotation": {**choice("6", 556), "task": 9001}, "task": queue_task})
    assert m.mirror(m.projects[1]).labels(m.projects[1].config)[0][source] == 6 and 78 not in m.projects


def test_a_deletion_from_an_unknown_project_registers_nothing(tmp_path) -> None:
    m, app, _, _ = first_version(tmp_path, retrain_min_new_labels=1000)
    r = app.post("/webhook", json={"action": "ANNOTATIONS_DELETED", "project": {"id": 78}, "annotations": [{"id": 1}]})
    assert r.json()["status"] == "ignored" and 78 not in m.projects
    assert app.get("/projects/1/status").json()["changes_since_version"] == 0


class QueueFailsToFill(FakeClient):
    def ensure_queue_project(self, pid, known=None):
        self.known = [*getattr(self, "known", []), known]
        return 77

    def read_queue(self, qid):
        return {}, frozenset()

    def copy_to_queue(self, qid, tasks, have=None):
        from connectors.label_studio import LabelStudioError

        raise LabelStudioError("HTTP 400: refused", retryable=False)


def test_a_queue_made_by_a_push_that_then_failed_is_known_as_the_queue(tmp_path) -> None:
    m, app, client, _ = first_version(tmp_path, client=QueueFailsToFill(), push_mode="queue",
                                      retrain_min_new_labels=1000)
    assert m.projects[1].last_push_error and m.projects[1].queue_project_id == 77
    m.poll()
    assert m.runner.wait_idle(60) and client.known == [None, 77], "the retry asks for the queue it knows first"
    labeled = next(t for t in client.tasks if t["annotations"])
    r = app.post("/webhook", json={"action": "ANNOTATIONS_DELETED", "project": {"id": 77},
                                   "annotations": [{"id": labeled["annotations"][0]["id"]}]})
    assert r.status_code == 200 and 77 not in m.projects


def test_only_the_newest_versions_stay_on_disk(tmp_path) -> None:
    m, app, client, backend = first_version(tmp_path, retrain_min_new_labels=1, keep_versions=1)
    task = client.tasks[3]
    old = task["annotations"][0]["result"][0]["value"]["choices"][0]
    fixed = choice(str((int(old) + 1) % 10), task["annotations"][0]["id"])
    webhook(app, "ANNOTATION_UPDATED", annotation={**fixed, "task": task["id"]})
    assert m.runner.wait_idle(120) and backend.runs == 2
    store = m.store(1)
    assert store.numbers() == [2] and [p.name for p in store.dir.glob("served-v*")] == ["served-v000002.npz"]
    assert [v["model_version"] for v in app.get("/projects/1/status").json()["versions"]] == ["sae-v2"]


def test_a_correction_made_just_before_a_shutdown_survives_the_restart(tmp_path) -> None:
    m, app, client, _ = first_version(tmp_path, retrain_min_new_labels=1000)
    task = client.tasks[3]
    old = int(task["annotations"][0]["result"][0]["value"]["choices"][0])
    fixed = choice(str((old + 1) % 10), task["annotations"][0]["id"])
    webhook(app, "ANNOTATION_UPDATED", annotation={**fixed, "task": task["id"]})
    m.shutdown()
    m2, _, _ = make(tmp_path, client=client)
    st = m2.get(1)
    assert m2.mirror(st).labels(st.config)[0][task["id"]] == (old + 1) % 10


def test_a_push_that_keeps_failing_does_not_stop_the_poll_reading_labels(tmp_path) -> None:
    m, app, client = make(tmp_path, retrain_min_new_labels=1000)
    app.post("/setup", json={"project": "1.1", "schema": CONFIG})
    client.fail_push = True
    m.poll()
    assert m.runner.wait_idle(120) and m.projects[1].push_pending
    task = next(t for t in client.tasks if not t["annotations"])
    task["annotations"] = [choice("5", 4242)]  # its webhook was lost
    m.poll()
    assert m.runner.wait_idle(120)
    st = m.projects[1]
    assert m.mirror(st).labels(st.config)[0].get(task["id"]) == 5


def test_a_task_deleted_while_new_tasks_are_scored_drops_out(tmp_path, monkeypatch) -> None:
    m, _, client, _ = first_version(tmp_path, retrain_min_new_labels=1000)
    st = m.projects[1]
    mirror = m.mirror(st)
    mirror.add_tasks([{"id": 500 + i, "data": client.tasks[i]["data"]} for i in range(2)], st.config, m.fetcher(st))
    real = mirror.store.ids_since

    def ids_then_a_delete(mark):
        out = real(mark)
        mirror.remove_tasks([501])  # a TASKS_DELETED webhook between reading the ids and the items
        return out

    monkeypatch.setattr(mirror.store, "ids_since", ids_then_a_delete)
    m._score_missing(st)
    known = set(st.served.ids.tolist())
    assert 500 in known and 501 not in known


def test_new_tasks_are_found_by_reading_only_the_rows_added_since_the_last_look(tmp_path, monkeypatch) -> None:
    m, _, client, _ = first_version(tmp_path, retrain_min_new_labels=1000)
    st = m.projects[1]
    mirror = m.mirror(st)
    pool = len(mirror.store)
    asked: list[int] = []
    real = ServedVersion.lookup
    monkeypatch.setattr(ServedVersion, "lookup", lambda self, ids: asked.append(len(ids)) or real(self, ids))
    m._score_missing(st)  # the version's own scoring covered the pool: nothing to compare
    mirror.add_tasks([{"id": 700 + i, "data": client.tasks[i]["data"]} for i in range(3)], st.config, m.fetcher(st))
    m._score_missing(st)
    m._score_missing(st)
    assert (st.served.lookup(np.array([700, 701, 702])) >= 0).all() and len(st.served.ids) == pool + 3
    assert max(asked) <= 3 < pool, asked


def test_a_new_token_from_setup_replaces_the_old_client_instead_of_keeping_both(tmp_path) -> None:
    made = []
    m, app, _ = make(tmp_path, label_studio_api_key=None)
    m.client_factory = lambda url, key: made.append(key) or FakeClient()
    for token in ("first-token", "second-token", "second-token"):
        app.post("/setup", json={"project": "1.1", "schema": CONFIG, "access_token": token})
        m.client(m.get(1))
    assert made == ["first-token", "second-token"] and [k for _, k in m._clients] == ["second-token"]


def test_a_fresh_model_dir_numbers_its_first_version_past_what_label_studio_holds(tmp_path, caplog) -> None:
    """MODEL_DIR lost: the old backend's sae-v57 rows must count as older, not outlive every version below 58."""
    client = FakeClient()
    client.rows = {"sae-v57": 40, "vendor-model": 5}
    m, app, _ = make(tmp_path, backend=CountingBackend(), client=client)
    app.post("/setup", json={"project": "1.1", "schema": CONFIG})
    m.request_training(1, "first")
    assert m.runner.wait_idle(120)
    st = app.get("/projects/1/status").json()
    assert st["model_version"] == "sae-v58" and "sae-v57" not in client.rows and client.rows["vendor-model"] == 5
    assert app.get("/projects/1/status").json()["last_push"]["newer_in_label_studio"] == []
    client.rows["sae-v90"] = 3  # another backend, another MODEL_DIR
    m.request_training(1, "again")
    assert m.runner.wait_idle(120) and "another sae-backend" in caplog.text
    assert app.get("/projects/1/status").json()["last_push"]["newer_in_label_studio"] == ["sae-v90"]
    assert 'sae_errors_total{kind="other_writer"} 1.0' in app.get("/metrics").text


def test_a_first_version_is_not_saved_under_a_name_label_studio_could_not_be_asked_about(tmp_path) -> None:
    from connectors.label_studio import LabelStudioError

    class Away(FakeClient):
        away = True

        def model_versions(self, project_id):
            if self.away:
                raise LabelStudioError("down", retryable=True)
            return super().model_versions(project_id)

    client = Away()
    client.rows = {"sae-v57": 40}
    m, app, _ = make(tmp_path, backend=CountingBackend(), client=client)
    app.post("/setup", json={"project": "1.1", "schema": CONFIG})
    m.request_training(1, "first")
    assert m.runner.wait_idle(120)
    st = app.get("/projects/1/status").json()
    assert st["model_version"] is None and "model versions" in st["last_error"] and m.store(1).numbers() == []
    client.away = False
    m.request_training(1, "again")
    assert m.runner.wait_idle(120) and app.get("/projects/1/status").json()["model_version"] == "sae-v58"


def test_a_version_whose_scoring_never_finished_is_not_served_after_a_restart(tmp_path) -> None:
    m, _, client, _ = first_version(tmp_path, retrain_min_new_labels=1000)
    store = m.store(1)
    model = store.load(1, "cpu")
    m.shutdown()
    assert store.save(model, {"labeled": 40}) == (2, "sae-v2")  # saved, then the process died while scoring
    _, app, _ = make(tmp_path, client=client)
    status = app.get("/projects/1/status").json()
    assert status["model_version"] == "sae-v1", "the scored version before it serves"
    assert app.get("/projects/1/ranking", params={"limit": 3}).json()["ranking"]


def test_a_shutdown_stops_a_running_training_and_keeps_the_directory_until_it_has(tmp_path) -> None:
    from tests.service.test_dir_lock import other_process

    backend = CountingBackend()
    m, app, client = make(tmp_path, backend=backend, sae_epochs=400)
    app.post("/setup", json={"project": "1.1", "schema": CONFIG})
    webhook(app, "START_TRAINING")
    deadline = time.monotonic() + 120
    while not str(m.projects[1].progress.get("stage", "")).startswith("epoch"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    m.shutdown()
    assert not m.runner.is_running(1), "the training stopped at its next epoch, within the shutdown's wait"
    assert other_process(tmp_path).returncode == 0, "and only then was the directory let go"
    assert m.projects[1].last_error is None and m.store(1).numbers() == []
    record = m.store(1).read_project()
    assert record["training_started"] == "START_TRAINING" and record["training_stopped_by_shutdown"] is True
    again = CountingBackend()
    m2, _, _ = make(tmp_path, backend=again, client=client, sae_epochs=3)
    assert m2.projects[1].failures == 0 and m2.projects[1].last_error is None, "a clean stop is no failure"
    assert m2.runner.wait_idle(120) and again.runs == 1 and m2.projects[1].version_name == "sae-v1"
    m2.shutdown()


def test_a_training_asked_for_and_not_yet_started_at_a_shutdown_runs_at_the_next_start(tmp_path) -> None:
    """START_TRAINING queued behind other jobs when the service stops: the team pressed the button, so it runs
    although too few labels changed for a training of its own accord."""
    m, app, client, _ = first_version(tmp_path, retrain_min_new_labels=1000)
    m.runner.request = lambda *a, **k: "queued"  # waiting behind another project's job
    webhook(app, "START_TRAINING")
    m.shutdown()
    again = CountingBackend()
    m2, _, _ = make(tmp_path, backend=again, client=client, retrain_min_new_labels=1000)
    assert m2.runner.wait_idle(120) and again.runs == 1 and m2.projects[1].version_name == "sae-v2"
    m2.shutdown()
    m3, _, _ = make(tmp_path, backend=again, client=client, retrain_min_new_labels=1000)
    assert m3.runner.wait_idle(120) and again.runs == 1, "asked for once, run once"
    m3.shutdown()


def test_the_first_poll_runs_at_start_and_opens_the_mirror_before_any_webhook(tmp_path) -> None:
    """Changes made while the service was down are read at once, and the first webhook after a restart does not
    pay for opening the mirror (seconds at a hundred thousand labels, against Label Studio's 1 s)."""
    from service.projects import ProjectManager
    from service.settings import Settings

    m, _, client, _ = first_version(tmp_path)
    m.shutdown()
    polls = []
    s = Settings(label_studio_url="http://127.0.0.1:1", label_studio_api_key="secret-key-123", model_dir=tmp_path,
                 poll_interval_seconds=3600)
    m2 = ProjectManager(s, client_factory=lambda url, key: client, backend=CountingBackend(), start_scheduler=False)
    real = m2.poll
    m2.poll = lambda: (polls.append(time.monotonic()), real())
    m2.start_scheduler()
    try:
        deadline = time.monotonic() + 30
        while m2.projects[1].mirror is None or not polls:
            assert time.monotonic() < deadline, "no poll at start: the first one would come an hour later"
            time.sleep(0.05)
        assert m2.clock_watch._thread.is_alive(), "a clock set back moves the hourly poll back with it"
    finally:
        m2.shutdown()
    m2.clock_watch._thread.join(1)
    assert not m2.clock_watch._thread.is_alive()


def test_every_task_data_fetcher_a_webhook_a_poll_or_a_training_opens_is_closed(tmp_path) -> None:
    """Each holds an HTTP client in a reference cycle: left open, weeks of webhooks pile up connections and TLS
    contexts until a full garbage collection."""
    m, app, _, _ = first_version(tmp_path)
    made = []
    real = m.fetcher
    m.fetcher = lambda st: made.append(real(st)) or made[-1]
    m._new_tasks(1, [])
    m.poll()
    webhook(app, "START_TRAINING")
    assert m.runner.wait_idle(120) and m.projects[1].version_name == "sae-v2"
    assert len(made) >= 3 and all(f._closed for f in made)
    m.shutdown()


def test_a_predict_answer_names_the_version_that_scored_it_though_a_new_one_lands_meanwhile(tmp_path) -> None:
    m, app, _, _ = first_version(tmp_path)
    st = m.projects[1]
    real = m.predict_tasks

    def while_a_version_lands(state, tasks, served):
        out = real(state, tasks, served)
        state.served = dataclasses.replace(state.served, name="sae-v2", number=2)
        return out

    m.predict_tasks = while_a_version_lands
    body = app.post("/predict", json={"project": "1.1", "tasks": [{"id": 1, "data": {}}]}).json()
    assert st.version_name == "sae-v2"
    assert body["model_version"] == body["results"][0]["model_version"] == "sae-v1"
    m.shutdown()


def test_a_job_that_outlasts_the_shutdown_keeps_the_directory_locked(tmp_path) -> None:
    from tests.service.test_dir_lock import other_process

    release = threading.Event()

    class Stuck(CountingBackend):
        def run(self, job, progress=None):
            progress("epoch 1/1", 0.5)
            release.wait(30)
            return super().run(job, progress)

    m, app, _ = make(tmp_path, backend=Stuck())
    app.post("/setup", json={"project": "1.1", "schema": CONFIG})
    webhook(app, "START_TRAINING")
    deadline = time.monotonic() + 60
    while not m.runner.is_running(1):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    m.shutdown(wait_seconds=0.5)
    assert other_process(tmp_path).returncode == 3, "still held: a job of this process still writes there"
    assert m.store(1).read_project()["training_stopped_by_shutdown"] is True, "a kill from here is no crash"
    release.set()
    assert m.runner.wait_idle(60)


def test_an_unusable_config_from_setup_leaves_the_working_one_serving(tmp_path) -> None:
    m, app, client, _ = first_version(tmp_path, retrain_min_new_labels=1000)
    bad = '<View><Image name="i" value="$image"/></View>'
    r = app.post("/setup", json={"project": "1.1", "schema": bad})
    assert r.status_code == 422 and "Choices" in r.json()["detail"]
    task = client.tasks[0]
    answer = app.post("/predict", json={"project": "1.1", "tasks": [task]}).json()
    assert answer["results"] and answer["results"][0]["model_version"] == "sae-v1"
    assert m.store(1).read_project()["label_config"] == CONFIG
    assert "Choices" in app.get("/projects/1/status").json()["label_config_error"]
    _, app2, _ = make(tmp_path, client=client)
    assert app2.post("/predict", json={"project": "1.1", "tasks": [task]}).json()["results"], "and after a restart"
    assert app2.post("/setup", json={"project": "1.1", "schema": CONFIG}).status_code == 200
    assert app2.get("/projects/1/status").json()["label_config_error"] is None


def test_trainings_that_keep_failing_are_tried_again_after_longer_and_longer_pauses(tmp_path) -> None:
    from tests.service.test_app import BlockingBackend

    backend = BlockingBackend()
    backend.release.set()
    backend.fail = True
    m, app, _ = make(tmp_path, backend=backend, retrain_min_new_labels=1)
    app.post("/setup", json={"project": "1.1", "schema": CONFIG})
    m.request_training(1, "START_TRAINING")
    assert m.runner.wait_idle(120)
    st = m.projects[1]
    assert st.failures == 1 and m.labels_changed(1, "poll") == "backing-off"
    status = app.get("/projects/1/status").json()
    assert status["training_failures"] == 1 and status["retrying_after_a_pause"] is True
    st.last_error_at -= 61  # a minute after one failure: tried again
    assert m.labels_changed(1, "poll") != "backing-off"
    assert m.runner.wait_idle(120) and st.failures == 2
    st.last_error_at -= 61  # two in a row: two minutes
    assert m.labels_changed(1, "poll") == "backing-off"
    assert m.request_training(1, "START_TRAINING") == "queued", "a team's explicit request is not held back"
    assert m.runner.wait_idle(120) and st.failures == 3
    backend.fail = False
    m.request_training(1, "START_TRAINING")
    assert m.runner.wait_idle(120) and st.failures == 0 and st.last_error is None and not m.backing_off(st)


def test_a_training_that_keeps_taking_the_process_down_is_not_resumed_at_every_start(tmp_path) -> None:
    m, _, client, _ = first_version(tmp_path, retrain_min_new_labels=1000)
    m.shutdown()
    store = m.store(1)
    for start in range(1, 5):  # the record a process killed during the training it resumed leaves
        store.write_project({**store.read_project(), "training_started": "START_TRAINING",
                             "training_failures": start - 1})
        again = CountingBackend()
        m2, app2, _ = make(tmp_path, backend=again, client=client)
        status = app2.get("/projects/1/status").json()
        assert "ended with the process" in status["last_error"] and status["training_failures"] == start
        resumed = again.runs == 1 or m2.runner.is_busy(1)
        assert resumed == (start <= 2), f"start {start}"
        m2.runner.wait_idle(120)
        m2.shutdown()


def test_a_new_task_that_enters_the_head_past_tasks_labeled_since_the_version_is_pushed(tmp_path) -> None:
    m, app, client, _ = first_version(tmp_path, push_head=5, push_top_k=2, retrain_min_new_labels=1000)
    st = m.projects[1]
    head = st.served.head_ids.tolist()
    for i, tid in enumerate(head[:3]):  # labeled since the version: its push leaves them out
        webhook(app, "ANNOTATION_CREATED", annotation={**choice("1", 9000 + i), "task": tid})
    pushes = len(client.pushed)
    image = next(t for t in client.tasks if t["id"] == head[5])["data"]["image"]
    client.tasks.append({"id": 6000, "data": {"image": image}, "annotations": []})
    assert webhook(app, "TASKS_CREATED", tasks=[{"id": 6000, "data": {"image": image}}]) == "scoring"
    deadline = time.monotonic() + 30
    while 6000 not in st.served.head_ids.tolist():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert st.served.head_ids.tolist().index(6000) >= 5, "past PUSH_HEAD in the version's own head"
    while len(client.pushed) == pushes:  # the push is asked for just after the head changes: not idle yet
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert m.runner.wait_idle(60)
    assert len(client.pushed) == pushes + 1 and 6000 in client.imported, "but inside it among the unlabeled"


def test_a_failing_part_of_the_poll_stops_neither_the_rest_of_it_nor_other_projects(tmp_path, monkeypatch) -> None:
    m, _, _, _ = first_version(tmp_path, retrain_min_new_labels=1000)
    other = m.get(2)
    other.config = m.projects[1].config
    asked: list[int] = []

    def scoring_fails(st):
        raise MemoryError("new tasks too large")

    def labels_changed(pid, reason):
        asked.append(pid)
        if pid == 1:
            raise RuntimeError("boom")
        return "below-threshold"

    monkeypatch.setattr(m, "_score_missing", scoring_fails)
    monkeypatch.setattr(m, "labels_changed", labels_changed)
    monkeypatch.setattr(m, "mirror", lambda st: type("Ingested", (), {"ingested": True, "reconcile": lambda *a: {},
                                                                      "state": {}})())
    monkeypatch.setattr(m, "_wants_cold_start", lambda st: False)
    m.poll()
    assert asked == [1, 2], "the labels are checked although scoring failed, and project 2 after project 1 failed"
    assert m.metrics.errors.labels("poll")._value.get() == 2, "one per project whose poll failed"


def test_label_studio_away_counts_one_poll_error_a_project(tmp_path) -> None:
    from connectors.label_studio import LabelStudioError

    class Away(FakeClient):
        away = False

        def __getattribute__(self, name):
            value = object.__getattribute__(self, name)
            if name.startswith("_") or not callable(value) or not object.__getattribute__(self, "away"):
                return value

            def refused(*a, **kw):
                raise LabelStudioError("connection refused", retryable=True)
            return refused

    m, app, client, _ = first_version(tmp_path, client=Away(), retrain_min_new_labels=1000)
    client.away = True
    m.poll()
    m.poll()
    assert 'sae_errors_total{kind="poll"} 2.0' in app.get("/metrics").text, "the claim and the read fail, once a poll"


def test_the_cron_retrains_only_projects_with_a_label_config(tmp_path, monkeypatch) -> None:
    m, _, _, _ = first_version(tmp_path, retrain_min_new_labels=1000)
    m.get(7)  # known from a webhook alone
    asked: list[int] = []
    monkeypatch.setattr(m, "request_training", lambda pid, reason: asked.append(pid))
    m.cron()
    assert asked == [1]


def test_annotations_created_in_bulk_are_read_by_a_poll_a_moment_later(tmp_path) -> None:
    m, app, client, _ = first_version(tmp_path, retrain_min_new_labels=1000)
    m.scheduler.start()
    fresh = [t for t in client.tasks if not t["annotations"]][:3]
    for i, task in enumerate(fresh):  # e.g. "create annotations from predictions": no per-annotation webhook
        task["annotations"] = [choice("4", 7000 + i)]
    assert [webhook(app, "ANNOTATIONS_CREATED") for _ in range(5)] == ["polling"] * 5
    assert len([j for j in m.scheduler.get_jobs() if j.id == "poll-soon"]) == 1, "a burst asks once"
    st = m.projects[1]
    deadline = time.monotonic() + 30
    while not all(m.mirror(st).labels(st.config)[0].get(t["id"]) == 4 for t in fresh):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert app.post("/webhook", json={"action": "PROJECT_UPDATED", "project": {"id": 99}}).json()["status"] == "ignored"
    assert 99 not in m.projects
    m.shutdown()


def test_after_a_restart_a_pending_push_adds_to_the_rows_it_knows_and_reads_those_a_cut_short_one_left(
        tmp_path) -> None:
    m, _, client, _ = first_version(tmp_path, retrain_min_new_labels=1000, push_head=5, push_top_k=2)
    rows = m.projects[1].push_state.rows
    assert rows is not None and len(rows) == 5 and set(client.imported) == rows
    m.shutdown()
    store = m.store(1)
    deleted = []
    real = client.delete_predictions
    client.delete_predictions = lambda pid, versions=None: deleted.append(versions) or real(pid, versions)
    saved = store.read_project()
    for how, project, reads, replaced in (
            ("pending, its rows recorded", {"push_pending": True}, 0, False),
            ("cut short while writing them", {"push_pending": True, "pushed_rows": None}, 1, False),
            ("pending, a file of an earlier release", {"push_pending": True, "pushed_rows_number": None}, 1, False)):
        store.write_project({**saved, **project})
        deleted.clear()
        before = client.holding_reads
        m2, _, _ = make(tmp_path, client=client, push_head=5, push_top_k=2)
        assert m2.runner.wait_idle(60), how
        assert client.pushed[-1] == "sae-v1" and m2.projects[1].push_state.rows == rows, how
        assert client.rows["sae-v1"] == 5 and client.holding_reads - before == reads, how
        assert (["sae-v1"] in deleted) == replaced, how
        m2.shutdown()


def test_an_unexpected_error_after_the_new_version_serves_fails_the_push_not_the_training(tmp_path) -> None:
    class ClosedOnPush(FakeClient):
        closed = False

        def set_model_version(self, project_id, name):
            if self.closed:
                raise RuntimeError("Cannot send a request, as the client has been closed.")
            return super().set_model_version(project_id, name)

    client = ClosedOnPush()
    m, app, _, _ = first_version(tmp_path, client=client, retrain_min_new_labels=1000)
    client.closed = True
    m.request_training(1, "START_TRAINING")
    assert m.runner.wait_idle(120)
    status = app.get("/projects/1/status").json()
    assert status["model_version"] == "sae-v2" and status["last_error"] is None and status["training_failures"] == 0
    assert "client has been closed" in status["last_push_error"] and status["push_pending"] is True


def test_a_project_edit_asks_for_a_poll_only_when_it_changed_the_label_config(tmp_path) -> None:
    _, app, _, _ = first_version(tmp_path, retrain_min_new_labels=1000)

    def project_updated(config: str) -> str:
        body = {"action": "PROJECT_UPDATED", "project": {"id": 1, "label_config": config}}
        return app.post("/webhook", json=body).json()["status"]

    assert project_updated(CONFIG) == "ignored", "this backend's own model version PATCH, say"
    assert project_updated(CONFIG.replace("<View>", "<View> ")) == "polling"


def test_a_poll_asked_for_while_one_runs_makes_that_one_read_again(tmp_path, monkeypatch) -> None:
    m, _, _, _ = first_version(tmp_path, retrain_min_new_labels=1000)
    runs = []

    def poll_body():
        runs.append(1)
        if len(runs) == 1:
            m.poll()  # a poll_soon firing meanwhile: the lock is held
    monkeypatch.setattr(m, "_poll", poll_body)
    m.poll()
    assert len(runs) == 2


def test_the_training_pause_stays_bounded_however_many_failures(tmp_path) -> None:
    m, _, _, _ = first_version(tmp_path, retrain_min_new_labels=1000)
    st = m.projects[1]
    st.failures, st.last_error_at = 5000, time.time()
    assert m.backing_off(st)
    st.last_error_at -= 3601
    assert not m.backing_off(st), "an hour at most"


def test_a_cold_start_suggestion_labeled_before_its_push_is_left_out_of_it(tmp_path) -> None:
    m, app, client = cold_start_whose_push_failed(tmp_path)
    first = m.projects[1].suggested[0]
    task = next(t for t in client.tasks if t["id"] == first)
    task["annotations"] = [choice("3", 4000)]
    webhook(app, "ANNOTATION_CREATED", annotation={**choice("3", 4000), "task": first})
    client.fail_push = False
    m.poll()
    assert m.runner.wait_idle(120)
    assert client.rows == {"sae-v0": 4} and first not in client.imported


class GatedBackend(CountingBackend):
    """Holds each training until let go, so that requests arrive while one runs."""

    def __init__(self) -> None:
        super().__init__()
        self.go, self.started = threading.Event(), threading.Event()

    def run(self, job, progress=None):
        self.started.set()
        assert self.go.wait(60)
        return super().run(job, progress)


def test_a_label_driven_training_that_finds_nothing_new_when_it_starts_trains_nothing(tmp_path) -> None:
    m, _, _, backend = first_version(tmp_path, retrain_min_new_labels=3)
    m.projects[1].push_pending = True
    assert m.request_training(1, "follow-up (debounced: ANNOTATION_CREATED: 3 label changes)", forced=False) == "queued"
    assert m.runner.wait_idle(120)
    st = m.projects[1]
    assert backend.runs == 1 and st.version_name == "sae-v1", "sae-v1 already has the changes that asked for it"
    assert not st.push_pending, "the push a training would have ended with still ran"
    m.backend = gated = GatedBackend()
    assert m.request_training(1, "START_TRAINING") == "queued" and gated.started.wait(60)
    m.request_training(1, "START_TRAINING")
    assert m.request_training(1, "debounced: poll: 0 label changes", forced=False) == "coalesced"
    gated.go.set()
    assert m.runner.wait_idle(120)
    assert gated.runs == 2 and m.projects[1].version_name == "sae-v3", \
        "a START_TRAINING stays asked for when a label-driven request takes its place in the queue"
    m.shutdown()


class QueueDeleted(FakeClient):
    """A queue project that holds one label until a user deletes the whole project."""

    def __init__(self) -> None:
        super().__init__()
        self.queues, self.deleted = [77, 78], set()
        self.source = next(t["id"] for t in self.tasks if not t["annotations"])

    def ensure_queue_project(self, pid, known=None):
        return next(q for q in self.queues if q not in self.deleted)

    def read_queue(self, qid):
        return {}, frozenset()

    def copy_to_queue(self, qid, tasks, have=None):
        return {}

    def get_project(self, project_id):
        from connectors.label_studio import LabelStudioError

        if project_id in self.deleted:
            raise LabelStudioError("get_project: Label Studio answered HTTP 404: Not found", False, 404)
        return super().get_project(project_id)

    def list_projects(self):
        return [{"id": p} for p in (1, *self.queues) if p not in self.deleted]

    def queue_labels(self, queue_project_id, updated_after=None):
        if queue_project_id == 77:
            yield self.source, 9001, [{**choice("5", 7001), "task": 9001}]


def test_a_deleted_queue_project_takes_its_labels_with_it_and_the_next_push_makes_a_new_one(tmp_path) -> None:
    m, _, client, _ = first_version(tmp_path, client=QueueDeleted(), push_mode="queue", retrain_min_new_labels=1000)
    st = m.projects[1]
    assert st.queue_project_id == 77
    m.poll()
    assert m.mirror(st).labels(st.config)[0][client.source] == 5, "a label made in the queue counts"
    client.deleted.add(77)
    m.poll()
    assert st.queue_project_id is None and st.push_pending and st.last_error is None
    assert client.source not in m.mirror(st).labels(st.config)[0], "the queue's labels went with it"
    assert m.store(1).read_project()["queue_project_id"] is None
    m.poll()
    assert m.runner.wait_idle(60) and st.queue_project_id == 78 and not st.push_pending
    m.request_training(1, "START_TRAINING")
    assert m.runner.wait_idle(120) and st.version_name == "sae-v2" and st.last_error is None, "trainings go on"
    m.shutdown()


def test_a_queue_left_behind_by_push_mode_view_is_still_read_until_it_is_deleted(tmp_path) -> None:
    """Its labels are the team's: corrections made there count, and they go when the queue project goes."""
    m, _, client, _ = first_version(tmp_path, client=QueueDeleted(), push_mode="queue", retrain_min_new_labels=1000)
    st = m.projects[1]
    m.poll()
    assert m.mirror(st).labels(st.config)[0][client.source] == 5
    m.shutdown()
    m2, _, _ = make(tmp_path, client=client, push_mode="view", retrain_min_new_labels=1000)
    st2 = m2.projects[1]
    corrected = {**choice("6", 7001), "task": 9001, "updated_at": "2030-01-01T00:00:00Z"}
    client.queue_labels = lambda qid, updated_after=None: iter([(client.source, 9001, [corrected])])
    counters = client.get_project  # the queue's counters move with the correction (this stand-in keeps no clock)
    client.get_project = lambda pid: {**counters(pid), "total_annotations_number": 999} if pid == 77 else counters(pid)
    m2.poll()
    assert m2.runner.wait_idle(60) and m2.mirror(st2).labels(st2.config)[0][client.source] == 6, "corrected there"
    client.deleted.add(77)
    m2.poll()
    assert m2.runner.wait_idle(60) and client.source not in m2.mirror(st2).labels(st2.config)[0]
    assert st2.queue_project_id is None and not st2.push_pending, "in view mode no queue is made again"
    m2.shutdown()


def test_a_queue_deleted_during_the_cold_start_is_made_again_with_the_suggestions(tmp_path) -> None:
    """Before any version is trained, the suggestions are the team's only work: a deleted queue must come back."""
    from tests.service.test_app import FakeClient

    class Cold(QueueDeleted, FakeClient):
        def __init__(self) -> None:
            FakeClient.__init__(self, n=120, labeled=0)
            self.queues, self.deleted, self.source = [77, 78], set(), None

        def queue_labels(self, queue_project_id, updated_after=None):
            return iter(())

    client = Cold()
    m, app, client = make(tmp_path, client=client, push_mode="queue", push_head=10, push_top_k=5)
    app.post("/setup", json={"project": "1.1", "schema": CONFIG})
    webhook(app, "START_TRAINING")
    assert m.runner.wait_idle(120)
    st = m.projects[1]
    assert st.queue_project_id == 77 and client.pushed == ["sae-v0"]
    client.deleted.add(77)
    m.poll()
    assert m.runner.wait_idle(120) and st.queue_project_id == 78 and not st.push_pending and st.served is None
    assert client.pushed == ["sae-v0"], "the suggestions' rows in the project are known: none written again"
    m.poll()
    assert m.runner.wait_idle(60) and st.queue_project_id == 78 and client.pushed == ["sae-v0"], "and only once"
    m.shutdown()


def test_on_a_project_whose_label_check_is_slow_a_burst_of_label_webhooks_is_checked_once_a_moment_later(
        tmp_path, monkeypatch) -> None:
    m, app, client, backend = first_version(tmp_path, retrain_min_new_labels=3)
    m.scheduler.start()
    checks = []
    real = m.labels_changed
    monkeypatch.setattr(m, "labels_changed", lambda pid, reason: checks.append(reason) or real(pid, reason))
    m.projects[1].label_check_seconds = 5.0  # as on a project with millions of labeled tasks
    unlabeled = [t for t in client.tasks if not t["annotations"]][:3]
    outcomes = [webhook(app, "ANNOTATION_CREATED", annotation={**choice("2", 8000 + i), "task": t["id"]})
                for i, t in enumerate(unlabeled)]
    assert outcomes == ["checking"] * 3 and checks == [], "the webhooks answer without reading every label"
    deadline = time.monotonic() + 60
    while backend.runs < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert len(checks) == 1, "one check for the burst, and it counted all three changes"
    assert m.runner.wait_idle(120) and m.projects[1].version_name == "sae-v2"
    m.shutdown()


def test_a_slow_label_check_is_remembered_across_a_restart(tmp_path) -> None:
    m, app, client, _ = first_version(tmp_path, retrain_min_new_labels=1000)
    m.projects[1].label_check_seconds = 5.0
    webhook(app, "START_TRAINING")  # a training's start saves the project
    assert m.runner.wait_idle(120)
    m.shutdown()
    m2, _, _ = make(tmp_path, client=client)
    assert m2.projects[1].label_check_seconds == 5.0, "the first label webhook after a restart is deferred too"
    m2.shutdown()


def test_a_queue_read_that_failed_leaves_a_queue_a_push_made_meanwhile(tmp_path) -> None:
    m, _, client, _ = first_version(tmp_path, retrain_min_new_labels=1000)
    client.list_projects = lambda: [{"id": 1}]
    st = m.projects[1]
    st.queue_project_id = 78  # the push that ran beside the poll made and recorded a new queue
    m._queue_read(st, {"queue_error": "HTTP 404", "queue_gone": True, "queue_project": 77})
    assert st.queue_project_id == 78
    m._queue_read(st, {"queue_error": "HTTP 404", "queue_gone": True, "queue_project": 78})
    assert st.queue_project_id is None


def test_a_404_from_a_queue_project_label_studio_still_lists_keeps_its_labels(tmp_path) -> None:
    """A proxy answers 404 while Label Studio restarts: the queue's labels (most of them, in queue mode) stay."""
    m, _, client, _ = first_version(tmp_path, retrain_min_new_labels=1000)
    st = m.projects[1]
    st.queue_project_id = 78
    m.mirror(st).queue_annotations[5] = [choice("3", 900)]
    client.list_projects = lambda: [{"id": 1}, {"id": 78}]
    m._queue_read(st, {"queue_error": "HTTP 404", "queue_gone": True, "queue_project": 78})
    assert st.queue_project_id == 78 and 5 in m.mirror(st).queue_annotations
    client.list_projects = lambda: (_ for _ in ()).throw(ConnectionError("Label Studio restarting"))
    m._queue_read(st, {"queue_error": "HTTP 404", "queue_gone": True, "queue_project": 78})
    assert st.queue_project_id == 78, "a list that cannot be read proves nothing"
    client.list_projects = lambda: [{"id": 1}]
    m._queue_read(st, {"queue_error": "HTTP 404", "queue_gone": True, "queue_project": 78})
    assert st.queue_project_id is None and 5 not in m.mirror(st).queue_annotations


def test_a_setup_naming_another_host_without_a_token_drops_the_old_token(tmp_path) -> None:
    m, app, _ = make(tmp_path, label_studio_url=None, label_studio_api_key=None)
    app.post("/setup", json={"project": "1.1", "schema": CONFIG, "hostname": "http://ls:8080", "access_token": "t0k"})
    assert m.api_key(m.projects[1]) == "t0k"
    app.post("/setup", json={"project": "1.1", "schema": CONFIG, "hostname": "http://ls:8080/"})
    assert m.api_key(m.projects[1]) == "t0k", "the same server keeps its token"
    app.post("/setup", json={"project": "1.1", "schema": CONFIG, "hostname": "http://elsewhere"})
    with pytest.raises(RuntimeError, match="no Label Studio API key"):
        m.api_key(m.projects[1])
    m, app, _ = make(tmp_path / "env", label_studio_api_key=None)  # LABEL_STUDIO_URL set: /setup's host is not used
    app.post("/setup", json={"project": "1.1", "schema": CONFIG, "hostname": "http://a", "access_token": "t0k"})
    app.post("/setup", json={"project": "1.1", "schema": CONFIG, "hostname": "http://b"})
    assert m.api_key(m.projects[1]) == "t0k" and m.ls_url(m.projects[1]) == "http://127.0.0.1:1"


def test_a_setup_that_changes_nothing_writes_nothing(tmp_path, monkeypatch) -> None:
    m, app, _ = make(tmp_path)
    app.post("/setup", json={"project": "1.1", "schema": CONFIG})
    writes = []
    monkeypatch.setattr(m, "_persist", writes.append)
    for _ in range(3):
        assert app.post("/setup", json={"project": "1.1", "schema": CONFIG}).status_code == 200
    assert writes == []
    app.post("/setup", json={"project": "1.1", "schema": CONFIG, "hostname": "http://ls:8080"})
    assert len(writes) == 1


def two_installs(tmp_path):
    """Two backends, each its own MODEL_DIR, on one project; the first trained and pushed first."""
    client = FakeClient()
    installs = [make(tmp_path / d, backend=CountingBackend(), client=client)[:2] for d in "ab"]
    for m, app in installs:
        app.post("/setup", json={"project": "1.1", "schema": CONFIG})
        m.request_training(1, "first")
        assert m.runner.wait_idle(120)
    return client, *installs


def test_a_second_backend_on_a_project_writes_nothing_while_the_first_holds_it(tmp_path) -> None:
    """Two MODEL_DIRs on one project would delete each other's rows: the one that claimed it first writes."""
    client, (first, _app1), (second, app2) = two_installs(tmp_path)
    assert client.pushed == ["sae-v1"] and client.view["data"]["sae_backend_writer"]["install"] == first.install
    st = app2.get("/projects/1/status").json()
    assert st["model_version"] == "sae-v2" and st["push_pending"], "it trains and serves, and keeps the push"
    assert "another sae-backend" in st["last_push_error"] and first.install in st["last_push_error"]
    assert 'sae_errors_total{kind="other_writer"} 1.0' in app2.get("/metrics").text
    for reason in ("again", "and again"):  # the holder goes on: its numbers pass the waiting one's
        first.request_training(1, reason)
        assert first.runner.wait_idle(120)
    assert set(client.rows) == {"sae-v3"}

    claim = client.view["data"].pop("sae_backend_writer")  # a person edited the tab: Label Studio drops the claim
    second.runner.request(1, "the next poll", PUSH)
    assert second.runner.wait_idle(120) and client.pushed == ["sae-v1", "sae-v2", "sae-v3"], "the claim seen holds"
    assert "sae_backend_writer" not in client.view["data"]
    client.view["data"]["sae_backend_writer"] = {**claim, "at": claim["at"] - 3601}  # the first stopped an hour ago
    second.runner.request(1, "the next poll", PUSH)
    assert second.runner.wait_idle(120) and client.pushed[-1] == "sae-v2"
    st = app2.get("/projects/1/status").json()
    assert not st["push_pending"] and st["last_push_error"] is None
    assert st["last_push"]["took_over"] and st["last_push"]["newer_in_label_studio"] == []
    assert set(client.rows) == {"sae-v2"}, "the first's rows go, though numbered above"
    assert client.view["data"]["sae_backend_writer"]["install"] == second.install
    assert 'sae_errors_total{kind="other_writer"} 3.0' in app2.get("/metrics").text, "two refusals, a takeover"


def test_a_cold_start_another_install_holds_is_asked_again_once_a_lease(tmp_path, monkeypatch) -> None:
    """Its suggestions are the work meanwhile: a training job at every poll would only ask to be refused."""
    client = FakeClient(n=60, labeled=0)
    first, app1, _ = make(tmp_path / "a", client=client, push_head=5, push_top_k=5)
    second, app2, _ = make(tmp_path / "b", client=client, push_head=5, push_top_k=5)
    for app, m in ((app1, first), (app2, second)):
        app.post("/setup", json={"project": "1.1", "schema": CONFIG})
        webhook(app, "START_TRAINING")
        assert m.runner.wait_idle(120)
    assert client.pushed == ["sae-v0"] and "another sae-backend" in app2.get("/projects/1/status").json()[
        "last_push_error"]
    asked = []
    monkeypatch.setattr(second, "request_training", lambda pid, reason, **k: asked.append(reason))
    second.poll()
    assert second.runner.wait_idle(60) and asked == []
    monkeypatch.setattr(second.settings, "writer_lease_seconds", 0.5)
    time.sleep(0.6)
    second.poll()
    assert second.runner.wait_idle(60) and asked == ["poll: cold start"]


def test_a_takeover_cut_short_is_finished_by_the_next_push(tmp_path) -> None:
    """The other install's rows go though numbered above this one's, even when the push that took over failed."""
    client = FakeClient()
    client.view = {"id": 1, "data": {"sae_backend": True,
                                     "sae_backend_writer": {"install": "gone", "at": time.time() - 7200}}}
    m, app, _ = make(tmp_path, backend=CountingBackend(), client=client)
    app.post("/setup", json={"project": "1.1", "schema": CONFIG})
    client.fail_push = True  # the claim is written, then Label Studio fails the rows
    m.request_training(1, "first")
    assert m.runner.wait_idle(120) and app.get("/projects/1/status").json()["last_push_error"]
    assert client.view["data"]["sae_backend_writer"]["install"] == m.install
    client.fail_push = False
    client.rows["sae-v90"] = 3  # the install taken over had gone further
    m2, app2, _ = make(tmp_path, backend=CountingBackend(), client=client)  # and this one restarted meanwhile
    m2.runner.request(1, "the next poll", PUSH)
    assert m2.runner.wait_idle(120)
    st = app2.get("/projects/1/status").json()
    assert st["last_push"]["took_over"] and st["last_push"]["newer_in_label_studio"] == []
    assert set(client.rows) == {"sae-v1"} and not m2.projects[1].push_state.took_over


def test_a_holder_back_after_a_night_away_goes_on_as_the_holder(tmp_path) -> None:
    """Its claim lapsed but nobody took it: what it recorded stands, so no mark or row is read and written again."""
    from service.writer_claim import Claim

    m, app, client = make(tmp_path, backend=CountingBackend())
    app.post("/setup", json={"project": "1.1", "schema": CONFIG})
    m.request_training(1, "first")
    assert m.runner.wait_idle(120)
    night = Claim(m.install, time.time() - 9 * 3600)
    client.view["data"]["sae_backend_writer"] = night.as_dict()
    st = m.projects[1]
    with st.lock:
        st.claim_seen = night  # as its last poll before the night read and saved it
        m._persist(st)
    again, app2, _ = make(tmp_path, backend=CountingBackend(), client=client)  # started again in the morning
    again.projects[1].push_pending = True
    again.runner.request(1, "the next poll", PUSH)
    assert again.runner.wait_idle(120)
    assert not app2.get("/projects/1/status").json()["last_push"]["took_over"]
    assert again.projects[1].push_state.marked is not None
    assert client.view["data"]["sae_backend_writer"]["at"] > night.at + 8 * 3600, "renewed"


def test_the_poll_renews_the_holder_s_claim_and_refreshes_the_one_another_reads(tmp_path) -> None:
    """A quiet hour must not hand the project over; an edit of the tab must not make a yielder take it early."""
    client, (first, _app1), (second, _app2) = two_installs(tmp_path)
    claim = client.view["data"]["sae_backend_writer"]
    claim["at"] -= 2000  # no push for over half the lease
    first.poll()
    assert first.runner.wait_idle(60)
    renewed = client.view["data"]["sae_backend_writer"]
    assert renewed["install"] == first.install and renewed["at"] > claim["at"] + 1900
    second.poll()
    assert second.runner.wait_idle(60) and second.projects[1].claim_seen.at == renewed["at"]
    assert client.pushed == ["sae-v1"]


def test_the_poll_renews_a_busy_holder_s_claim_and_never_takes_over(tmp_path, monkeypatch) -> None:
    m, app, client = make(tmp_path, backend=CountingBackend())
    app.post("/setup", json={"project": "1.1", "schema": CONFIG})
    m.request_training(1, "first")
    assert m.runner.wait_idle(120)
    client.view["data"]["sae_backend_writer"]["at"] -= 2000
    monkeypatch.setattr(m.runner, "is_busy", lambda pid: True)  # a long training runs
    m.poll()
    assert time.time() - client.view["data"]["sae_backend_writer"]["at"] < 60, "renewed all the same"
    client.view["data"]["sae_backend_writer"] = {"install": "other", "at": time.time() - 7200}
    m.poll()
    assert client.view["data"]["sae_backend_writer"]["install"] == "other", "a lapsed claim: the next push's to take"


def test_a_takeover_whose_claim_write_fails_reads_every_mark_again(tmp_path) -> None:
    from connectors.label_studio import LabelStudioError

    class ClaimFails(FakeClient):
        fail_claim = False

        def ensure_view(self, pid, title, filters, ordering, extra=None):
            if self.fail_claim and extra:
                raise LabelStudioError("HTTP 400: refused", retryable=False)
            return super().ensure_view(pid, title, filters, ordering, extra)

    client = ClaimFails()
    m, app, _ = make(tmp_path, backend=CountingBackend(), client=client)
    app.post("/setup", json={"project": "1.1", "schema": CONFIG})
    m.request_training(1, "first")
    assert m.runner.wait_idle(120) and m.projects[1].push_state.marked is not None
    client.view["data"]["sae_backend_writer"] = {"install": "other", "at": time.time() - 7200}
    client.fail_claim = True
    m.projects[1].push_pending = True
    m.runner.request(1, "the next poll", PUSH)
    assert m.runner.wait_idle(120) and app.get("/projects/1/status").json()["last_push_error"]
    state = m.projects[1].push_state
    assert state.took_over and state.marked is None, "the other install's marks are not known: all read again"


def test_a_fresh_install_learns_the_holder_s_claim_before_its_first_push(tmp_path) -> None:
    """Should an edit of the tab erase the claim just before that push, the claim it read still holds."""
    client = FakeClient()
    first, app1, _ = make(tmp_path / "a", backend=CountingBackend(), client=client)
    app1.post("/setup", json={"project": "1.1", "schema": CONFIG})
    first.request_training(1, "first")
    assert first.runner.wait_idle(120)
    second, app2, _ = make(tmp_path / "b", backend=CountingBackend(), client=client)
    app2.post("/setup", json={"project": "1.1", "schema": CONFIG})
    second._check_claim(second.projects[1])  # its poll, before any training
    assert second.projects[1].claim_seen.install == first.install and client.view["data"]["sae_backend_writer"][
        "install"] == first.install, "read, not written"
    client.view["data"].pop("sae_backend_writer")
    second.request_training(1, "first")
    assert second.runner.wait_idle(120) and client.pushed == ["sae-v1"]
    assert "another sae-backend" in app2.get("/projects/1/status").json()["last_push_error"]


def test_a_lease_too_short_for_the_polls_to_renew_is_named_at_start(tmp_path, caplog) -> None:
    make(tmp_path / "a")
    assert "WRITER_LEASE_SECONDS" not in caplog.text
    make(tmp_path / "b", poll_interval_seconds=1800)
    assert "WRITER_LEASE_SECONDS (3600.0) is not over twice POLL_INTERVAL_SECONDS (1800.0)" in caplog.text


def test_a_push_that_failed_after_writing_its_rows_keeps_them_through_its_retry_and_a_restart(tmp_path) -> None:
    from connectors.label_studio import LabelStudioError

    class MarksFail(FakeClient):
        """Label Studio clears the project's model version with its rows: a retry must not delete the shown one's."""

        fail_marks = 0

        def __init__(self) -> None:
            super().__init__()
            self.deleted: list[list[str]] = []

        def delete_predictions(self, project_id, versions=None):
            self.deleted.append(list(versions))
            return super().delete_predictions(project_id, versions)

        def bulk_mark(self, *a, **k):
            if self.fail_marks:
                self.fail_marks -= 1
                raise LabelStudioError("database is locked", retryable=False)
            return 0

    client = MarksFail()
    m, _, client, _ = first_version(tmp_path, client=client, retrain_min_new_labels=1000)
    client.fail_marks = 2
    m.request_training(1, "again")
    assert m.runner.wait_idle(120)
    st = m.projects[1]
    head, first_try = client.rows["sae-v2"], len(client.deleted)  # a new version's first write deletes its none
    assert st.push_pending and st.push_state.last_number == 1 and head > 0
    m.poll()  # the retry fails at its marks too
    assert m.runner.wait_idle(120) and st.push_pending
    assert st.push_state.rows_number == 2 and len(st.push_state.rows) == head
    m.shutdown()
    m2, _, _ = make(tmp_path, client=client)  # a restart before the retry, which the start asks for
    assert m2.runner.wait_idle(120) and not m2.projects[1].push_pending
    assert client.rows["sae-v2"] == head and "sae-v1" not in client.rows
    retried = client.deleted[first_try:]
    assert not any("sae-v2" in versions for versions in retried), "the version Label Studio shows kept its rows"
    m2.shutdown()


def test_while_a_push_writes_its_rows_they_are_recorded_as_unknown(tmp_path) -> None:
    import json

    class Watching(FakeClient):
        seen: list = []  # noqa: RUF012 - one instance

        def import_predictions(self, project_id, predictions):  # what a process killed here would find on disk
            self.seen.append(json.loads((tmp_path / "project-1" / "project.json").read_text())["pushed_rows"])
            return super().import_predictions(project_id, predictions)

    m, _, client, _ = first_version(tmp_path, client=Watching(), retrain_min_new_labels=1000)
    assert m.store(1).read_project()["pushed_rows"], "known once written"
    client.seen.clear()
    m.request_training(1, "again")
    assert m.runner.wait_idle(120) and m.projects[1].served.name == "sae-v2"
    assert client.seen == [None], "sae-v1's rows are not sae-v2's: unknown until they are written"
    assert m.store(1).read_project()["pushed_rows_number"] == 2
    m.shutdown()


def test_the_marked_set_lives_beside_the_project_record_and_the_queue_tops_in_it(tmp_path, monkeypatch) -> None:
    """It keeps every labeled task that was asked for: O(labels) rewritten at every record of the project (a batch of
    new tasks entering the head, a training's start) would grow with the project."""
    import json

    from service.push import PushState, QueueTops
    from service.versions import VersionStore

    m, app, client = make(tmp_path, client=FakeClient())
    app.post("/setup", json={"project": "1.1", "schema": CONFIG})
    writes = []
    real = VersionStore.write_marked
    monkeypatch.setattr(VersionStore, "write_marked", lambda self, marked: writes.append(len(marked)) or
                        real(self, marked))
    st = m.projects[1]
    marked = frozenset(range(1000, 1500))
    tops = QueueTops(3, frozenset({1000, 1001}), frozenset({999}))
    with st.lock:
        st.push_state = PushState(3, marked, queue_tops=tops)
        m._persist(st)
        st.push_pending = True
        m._persist(st)
    record = json.loads((tmp_path / "project-1" / "project.json").read_text())
    assert record["marked"] == {"file": "marked.bin", "count": 500} and writes == [500], "once, not per record"
    m.shutdown()
    m2, _, _ = make(tmp_path, client=client)
    assert m2.projects[1].push_state.marked == marked
    assert m2.projects[1].push_state.queue_tops == tops, "the queue's copies stay for the same top-Ks after a restart"
    with m2.projects[1].lock:
        m2._persist(m2.projects[1])
    assert writes == [500], "read back, not written again"
    m2.shutdown()

    whole = (tmp_path / "project-1" / "marked.bin").read_bytes()
    for damaged in (b"torn", whole[:-8]):  # cut mid-number; cut to fewer tasks than the record says
        (tmp_path / "project-1" / "marked.bin").write_bytes(damaged)
        m3, _, _ = make(tmp_path, client=client)
        assert m3.projects[1].push_state.marked is None, "unknown: the next push reads and rewrites every mark"
        m3.shutdown()
    record["marked"] = [7, 8]  # as an earlier release wrote it
    (tmp_path / "project-1" / "project.json").write_text(json.dumps(record))
    m4, _, _ = make(tmp_path, client=client)
    assert m4.projects[1].push_state.marked == {7, 8}
    m4.shutdown()
