"""The change-driven loop against a real Label Studio: corrections, new tasks, the view, what a push writes."""

from __future__ import annotations

import base64
import threading

import httpx
import pytest

from connectors.label_studio import LabelStudioClient, retrying
from service.app import create_app
from service.push import ORDERING, UNLABELED_FILTER
from service.settings import Settings
from tests.integration.conftest import DIGITS_CONFIG, Backend, digits_pngs, wait_for

pytestmark = pytest.mark.integration
HEAD = 30


def _choice(label: object) -> list[dict]:
    return [{"from_name": "choice", "to_name": "image", "type": "choices", "value": {"choices": [str(label)]}}]


def _status(backend: Backend, pid: int) -> dict:
    return httpx.get(f"{backend.url}/projects/{pid}/status", timeout=10).json()


def _served(backend: Backend, pid: int, version: str) -> dict:
    return wait_for(lambda: (s := _status(backend, pid))["model_version"] == version and not s["training"]
                    and not s["push_pending"] and s, timeout=240)


def _project(ls_client: LabelStudioClient, title: str, n: int, seed: int) -> tuple[int, list[int], dict, list]:
    """A digits project of ``n`` uploaded PNGs: its id, task ids, true class per task, the files."""
    pid = ls_client.create_project(title, DIGITS_CONFIG)
    files, y = digits_pngs(n, seed=seed)
    ids = ls_client.upload_files(pid, files)
    return pid, ids, dict(zip(ids, y.tolist(), strict=True)), files


def test_changes_drive_versions_and_a_version_writes_its_head_only(label_studio, ls_client: LabelStudioClient,
                                                                    tmp_path) -> None:
    pid, ids, truth, files = _project(ls_client, "live loop", 150, seed=2)
    vendor = [{"task": t, "model_version": "vendor-v1", "score": 0.5, "result": _choice(3)} for t in ids[:20]]
    ls_client.import_predictions(pid, vendor)
    for t in ids[20:50]:
        ls_client.create_annotation(t, _choice(truth[t]))
    s = Settings(label_studio_url=label_studio.url, label_studio_api_key=label_studio.token,
                 model_dir=tmp_path / "models", retrain_min_new_labels=1, retrain_debounce_seconds=0.5,
                 sae_epochs=30, sae_warm_epochs=8, push_head=HEAD, push_top_k=5, poll_interval_seconds=3600)
    backend = Backend(create_app(s)).start()
    try:
        ml = ls_client.connect_ml_backend(pid, backend.url)
        ls_client.train(ml)  # POST /api/ml/{id}/train -> START_TRAINING
        status = _served(backend, pid, "sae-v1")
        assert status["labeled"] == 30 and status["mirror"]["stored"] == 150

        order = ls_client.ordered_task_ids(pid, UNLABELED_FILTER, ORDERING, HEAD)
        ranking = httpx.get(f"{backend.url}/projects/{pid}/ranking?limit={HEAD}").json()["ranking"]
        assert order == [r["task"] for r in ranking], "the saved view shows the ranking, in its order"
        versions = ls_client.model_versions(pid)
        assert versions.get("sae-v1") == HEAD and versions.get("vendor-v1") == 20, "a version writes its head only"

        outside = [t for t in ids[50:] if t not in set(order)][:3]
        ls_client.ls.actions.create(id="retrieve_tasks_predictions", project=pid,
                                    selected_items={"all": False, "included": outside})
        for t in outside:
            preds = ls_client.get_task(t)["predictions"]
            assert [p["model_version"] for p in preds] == ["sae-v1"], "answered by the version in service"

        task = ids[20]
        ann = ls_client.ls.annotations.list(id=task)[0]
        ls_client.ls.annotations.update(id=ann.id, result=_choice((truth[task] + 1) % 10))
        status = _served(backend, pid, "sae-v2")
        assert status["labeled"] == 30 and status["changes_since_version"] == 0, "a correction retrains"
        versions = ls_client.model_versions(pid)
        assert versions.get("vendor-v1") == 20, "another model's predictions survive every push"
        assert not versions.get("sae-v1"), "our own earlier rows (head and retrieved ones) are gone"

        png = base64.b64encode(files[0][1]).decode()
        new = ls_client.import_tasks(pid, [{"data": {"image": f"data:image/png;base64,{png}"}}])[0]
        assert ls_client.newest_task_id(pid) == new
        wait_for(lambda: _status(backend, pid)["mirror"]["stored"] == 151, timeout=60, every=0.2)
        answer = httpx.post(f"{backend.url}/predict",
                            json={"tasks": [{"id": new, "data": {}}], "project": f"{pid}.1"}).json()
        assert answer["results"][0]["model_version"] == "sae-v2", "scored by the version in service, no retrain"
        assert _status(backend, pid)["model_version"] == "sae-v2"
    finally:
        backend.stop()


def test_concurrent_writes_to_sqlite_are_retried_not_fatal(ls_client: LabelStudioClient) -> None:
    """SQLite answers concurrent writes with "database is locked" 500s; retried with backoff, every write lands."""
    pid, ids, _, _ = _project(ls_client, "concurrent writes", 60, seed=3)
    errors: list[BaseException] = []

    def annotate(part: list[int]) -> None:
        try:
            for t in part:
                retrying(8, 0.25, 5)(ls_client.create_annotation, t, _choice(0))
        except BaseException as e:
            errors.append(e)

    def predict() -> None:
        try:
            for _ in range(5):
                rows = [{"task": t, "model_version": "load", "score": 0.1, "result": _choice(1)} for t in ids]
                retrying(8, 0.25, 5)(ls_client.import_predictions, pid, rows)
                retrying(8, 0.25, 5)(ls_client.delete_predictions, pid, ["load"])
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=annotate, args=(ids[i::3],)) for i in range(3)]
    threads.append(threading.Thread(target=predict))
    for th in threads:
        th.start()
    for th in threads:
        th.join(300)
    assert errors == []
    assert ls_client.labeled_count(pid) == len(ids)


def test_cold_start_suggestions_are_the_first_work_then_give_way(label_studio, ls_client: LabelStudioClient,
                                                                 tmp_path) -> None:
    pid, ids, truth, _ = _project(ls_client, "cold start", 90, seed=4)
    s = Settings(label_studio_url=label_studio.url, label_studio_api_key=label_studio.token,
                 model_dir=tmp_path / "models", retrain_min_new_labels=1, retrain_debounce_seconds=0.5,
                 sae_epochs=20, sae_warm_epochs=5, push_head=10, push_top_k=5, poll_interval_seconds=3600,
                 push_mode="queue")  # the source project's view as in view mode, and the queue besides
    backend = Backend(create_app(s)).start()
    try:
        ml = ls_client.connect_ml_backend(pid, backend.url)
        ls_client.train(ml)
        status = wait_for(lambda: (st := _status(backend, pid))["last_push"].get("model_version") == "sae-v0"
                          and not st["training"] and st, timeout=240)
        assert status["model_version"] is None and status["cold_start_suggestions"] == 10
        suggested = [r["task"] for r in httpx.get(f"{backend.url}/projects/{pid}/ranking").json()["ranking"]]
        assert ls_client.model_versions(pid) == {"sae-v0": 10}, "rows without a result are accepted"
        order = ls_client.ordered_task_ids(pid, UNLABELED_FILTER, ORDERING, 10)
        assert order == suggested, "the view shows the suggestions first, in their order"
        assert ls_client.get_task(suggested[0])["meta"]["sae"]["reason"] == "typical"
        queue = status["queue_project"]
        copies = ls_client.queue_copies(queue)
        assert [copies[t] for t in suggested[:5]] == ls_client.ordered_task_ids(queue, UNLABELED_FILTER, ORDERING, 5), \
            "in queue mode the queue shows the top-K suggestions first, in their order"
        for t in ids[:30]:
            ls_client.create_annotation(t, _choice(truth[t]))
        ls_client.train(ml)
        wait_for(lambda: (st := _status(backend, pid))["model_version"] and st["labeled"] == 30
                 and not st["training"] and not st["push_pending"], timeout=240)
        assert "sae-v0" not in ls_client.model_versions(pid), "the first version replaces the suggestions"
        assert "sae-v0" not in ls_client.model_versions(queue), "in the queue too"
    finally:
        backend.stop()
