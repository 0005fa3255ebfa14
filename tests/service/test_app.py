"""Routes, triggers and failure handling, with recorded Label Studio payloads and an in-memory task source."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import threading
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sklearn.datasets import load_digits

from connectors.label_studio import LabelStudioClient
from service.app import create_app
from service.projects import ProjectManager
from service.settings import Settings
from service.training import LocalTrainingBackend, TrainingBackend

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "label-studio-1.23.2-requests.jsonl"
CONFIG = ('<View><Image name="image" value="$image"/><Choices name="choice" toName="image" choice="single">'
          + "".join(f'<Choice value="{i}"/>' for i in range(10)) + "</Choices></View>")


def recorded(path: str, action: str | None = None) -> dict:
    for line in FIXTURES.read_text().splitlines():
        d = json.loads(line)
        if d.get("path") == path and (action is None or d["body"].get("action") == action):
            return d["body"]
    raise LookupError(path)


def _png(img: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray((img * 255 / 16).astype(np.uint8), mode="L").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def choice(label: str, ann_id: int) -> dict:
    return {"id": ann_id, "result": [{"from_name": "choice", "to_name": "image", "type": "choices",
                                      "value": {"choices": [label]}}]}


class FakeClient:
    """In-memory stand-in for Label Studio's task API (the push is exercised against a real server elsewhere)."""

    def __init__(self, n: int = 120, labeled: int = 40) -> None:
        d = load_digits()
        self.tasks = []
        for i in range(n):
            anns = [choice(str(d.target[i]), i)] if i < labeled else []
            self.tasks.append({"id": i + 1, "data": {"image": _png(d.images[i])}, "annotations": anns})
        self.pushed: list[str] = []
        self.rows: dict[str, int] = {}
        self.fail_push = False
        self.reads = 0
        self.view: dict | None = None  # the backend's Data Manager view, where the writer's claim lives
        self.holding: dict[str, set[int]] = {}  # per model version, the tasks holding a row of it
        self.holding_reads = 0

    def iter_tasks(self, project_id, labeled=None, fields="all", **kw):
        self.reads += 1
        for t in self.tasks:
            if labeled is not None and bool(t["annotations"]) != labeled:
                continue
            yield t if fields == "all" else {k: v for k, v in t.items() if k != "annotations"}

    def tasks_by_id(self, project_id, ids):
        return [t for t in self.tasks if t["id"] in set(ids)]

    def newest_task_id(self, project_id):
        return max((t["id"] for t in self.tasks), default=None)

    def labeled_count(self, project_id):
        return sum(1 for t in self.tasks if t["annotations"])

    def last_saved(self, project_id):
        return None  # no clock: every read of labels is a full one

    labeled_tasks = LabelStudioClient.labeled_tasks  # over this stand-in's iter_tasks

    def get_project(self, project_id):
        return {"label_config": CONFIG, "task_number": len(self.tasks),
                "num_tasks_with_annotations": self.labeled_count(project_id),
                "total_annotations_number": sum(len(t["annotations"]) for t in self.tasks),
                "skipped_annotations_number": 0}

    def model_versions(self, project_id):
        return {v: n for v, n in self.rows.items() if n}

    def match_label_config(self, project_id, source_project_id):
        return False

    def authorize_webhook(self, project_id, url, headers):
        return False

    def delete_predictions(self, project_id, versions=None):
        from connectors.label_studio import LabelStudioError

        if self.fail_push:
            raise LabelStudioError("down", retryable=True)
        for v in versions:
            self.holding.pop(v, None)
        return sum(self.rows.pop(v, 0) for v in versions)

    def import_predictions(self, project_id, predictions):
        from connectors.label_studio import LabelStudioError

        known = {t["id"] for t in self.tasks}
        if any(p["task"] not in known for p in predictions):  # as Label Studio: the whole request is refused
            raise LabelStudioError("HTTP 400: a prediction names a task that is not in the project", retryable=False,
                                   status_code=400)
        self.imported = [p["task"] for p in predictions]
        name = predictions[0]["model_version"]
        self.pushed.append(name)
        self.rows[name] = self.rows.get(name, 0) + len(predictions)
        self.holding.setdefault(name, set()).update(self.imported)
        return len(predictions)

    def prediction_versions(self, project_id, ids):
        self.holding_reads += 1
        there = {t["id"] for t in self.tasks} & set(ids)
        return {t: {v for v, held in self.holding.items() if t in held} for t in there}

    def set_model_version(self, *a): ...
    def list_views(self, pid): return [self.view] if self.view else []

    def ensure_view(self, pid, title, filters, ordering, extra=None):
        self.view = {"id": 1, "data": {**(self.view or {"data": {}})["data"], "sae_backend": True, **(extra or {})}}
        return 1

    def bulk_mark(self, *a, **k): return 0


class BlockingBackend(TrainingBackend):
    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.runs = 0
        self.fail = False

    def run(self, job, progress=None):
        self.runs += 1
        self.started.set()
        assert self.release.wait(30)
        if self.fail:
            raise RuntimeError("boom in training")
        return LocalTrainingBackend().run(job, progress)


def make(tmp_path, backend=None, client=None, **kw):
    params = dict(label_studio_url="http://127.0.0.1:1", label_studio_api_key="secret-key-123",
                  model_dir=tmp_path, sae_epochs=15, sae_warm_epochs=5, retrain_debounce_seconds=0, push_retries=1)
    s = Settings(**(params | kw))
    client = client or FakeClient()
    m = ProjectManager(s, client_factory=lambda url, key: client, backend=backend, start_scheduler=False)
    return m, TestClient(create_app(s, manager=m)), client


def test_health_and_setup_with_recorded_payload(tmp_path):
    m, app, _ = make(tmp_path)
    assert app.get("/health").json()["status"] == "UP"
    body = recorded("/setup")
    r = app.post("/setup", json=body)
    assert r.status_code == 200 and r.json() == {"model_version": "untrained"}
    assert m.projects[1].config.classes == ["cat", "dog", "bird"]


@pytest.mark.parametrize("project", [True, "-3.1", "99999999999999999999999.1", "1_000.2", 1.9, "١.2"])
def test_setup_refuses_a_project_id_a_webhook_would_refuse(tmp_path, project):
    m, app, _ = make(tmp_path)
    assert app.post("/setup", json={"project": project, "schema": CONFIG}).status_code == 422
    assert not m.projects and not list(tmp_path.glob("project-*")), "nothing registered, nothing written"


def test_a_setup_of_the_queue_project_is_refused_with_the_project_to_connect(tmp_path):
    """Trained and pushed as a project of its own, the queue would have its source's rows written over."""
    m, app, _ = make(tmp_path)
    app.post("/setup", json={"project": "1.1", "schema": CONFIG})
    m.get(1).queue_project_id = 77
    r = app.post("/setup", json={"project": "77.1", "schema": CONFIG})
    assert r.status_code == 422 and "connect the model to project 1" in r.json()["detail"] and 77 not in m.projects
    r = app.post("/predict", json={"project": "77.1", "label_config": CONFIG, "tasks": [{"id": 5, "data": {}}]})
    assert r.json()["results"] == [] and 77 not in m.projects, "nor by a /predict (interactive mode) without /setup"


def seconds_while(app, asks: list, settle: float, calls: list, release: threading.Event | None = None) -> list[float]:
    """Start ``asks`` on threads, in one event loop for every request as under uvicorn; after ``settle`` seconds, time
    each of ``calls`` (each answers 200) while they hang; then ``release`` them and wait for them to end."""
    import time

    seconds = []
    with app:
        threads = [threading.Thread(target=ask) for ask in asks]
        for t in threads:
            t.start()
        time.sleep(settle)
        for call in calls:
            t0 = time.monotonic()
            assert call() == 200
            seconds.append(time.monotonic() - t0)
        if release is not None:
            release.set()
        for t in threads:
            t.join(60)
    return seconds


def test_health_answers_at_once_while_many_predicts_wait_on_a_hanging_storage(tmp_path, monkeypatch):
    """Label Studio marks a backend whose /health takes over 1 s disconnected; webhooks have the same 1 s."""

    import service.projects as projects
    from connectors.item_codec import ItemCodec
    from connectors.task_data import TaskDataError

    m, app, _ = make(tmp_path)
    app.post("/setup", json={"project": "1.1", "schema": CONFIG})
    app.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 1}})
    assert m.runner.wait_idle(120)
    release = threading.Event()
    monkeypatch.setattr(projects, "PREDICT_DEADLINE_SECONDS", 4.0)

    def hang(self, fetcher, value, task_id=None):
        release.wait(30)
        raise TaskDataError("the storage gave up")

    monkeypatch.setattr(ItemCodec, "load", hang)
    asks = [lambda i=i: app.post("/predict", json={"project": "1.1", "tasks": [
        {"id": 5000 + i, "data": {"image": "https://storage.example/x.png"}}]}) for i in range(40)]
    health, hook = seconds_while(app, asks, 1.0, [
        lambda: app.get("/health").status_code,
        lambda: app.post("/webhook", json={"action": "PROJECT_UPDATED", "project": {"id": 1}}).status_code], release)
    assert health < 1.0 and hook < 1.0, (health, hook)


def test_pictures_are_drawn_two_at_a_time_and_the_rest_answer_meanwhile(tmp_path, monkeypatch):
    """A dashboard asking for many pictures at once must not hold the threads webhooks and /status run in."""
    import time

    import service.plots as plots

    m, app, _ = make(tmp_path)
    app.post("/setup", json={"project": "1.1", "schema": CONFIG})
    app.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 1}})
    assert m.runner.wait_idle(120)
    running, most, lock = [0], [0], threading.Lock()

    def slow(*a, **k):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.5)
        with lock:
            running[0] -= 1
        return b"png"

    monkeypatch.setattr(plots, "latent_png", slow)
    asks = [lambda: app.get("/projects/1/latent.png")] * 40
    (status_seconds,) = seconds_while(app, asks, 0.3, [lambda: app.get("/projects/1/status").status_code])
    assert most[0] == 2 and status_seconds < 1.0, (most[0], status_seconds)


def test_setup_without_choices_gives_reason(tmp_path):
    _, app, _ = make(tmp_path)
    r = app.post("/setup", json={"project": "3.1", "schema": '<View><Image name="i" value="$i"/></View>'})
    assert r.status_code == 422 and "Choices" in r.json()["detail"]


@pytest.mark.parametrize("route", ["/setup", "/predict", "/webhook"])
def test_malformed_bodies_are_4xx(tmp_path, route):
    _, app, _ = make(tmp_path)
    assert app.post(route, content=b"{not json", headers={"content-type": "application/json"}).status_code == 422
    r = app.post(route, json={})
    assert 400 <= r.status_code < 500 and r.json()["detail"]


def test_webhook_answers_while_training_blocks_and_events_coalesce(tmp_path):
    backend = BlockingBackend()
    m, app, client = make(tmp_path, backend=backend)
    app.post("/setup", json={"project": "1.1", "schema": CONFIG})
    r = app.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 1}})
    assert r.status_code == 200
    assert backend.started.wait(10)
    assert m.runner.is_running(1) and app.get("/projects/1/status").json()["training"] is True
    body = recorded("/webhook", "ANNOTATION_CREATED")
    body["project"]["id"] = 1
    outcomes = []
    for i in range(40, 60):
        ann = choice(str(i % 10), 1000 + i)
        client.tasks[i]["annotations"] = [ann]
        body["annotation"] = {**body["annotation"], **ann, "task": i + 1}
        body["task"] = {"id": i + 1}
        outcomes.append(app.post("/webhook", json=body).json()["status"])
    assert outcomes[:9] == ["below-threshold"] * 9, "fewer than RETRAIN_MIN_NEW_LABELS changes wait"
    assert set(outcomes[9:]) == {"coalesced"}, "then every event joins one follow-up run"
    backend.release.set()
    assert m.runner.wait_idle(120)
    assert backend.runs == 2
    status = app.get("/projects/1/status").json()
    assert status["model_version"] == "sae-v2" and client.pushed == ["sae-v1", "sae-v2"]
    assert status["scoring_seconds"] > 0, "the time to score the pool for the version in service"


def test_failed_training_keeps_old_version_and_restart_serves_it(tmp_path):
    backend = BlockingBackend()
    backend.release.set()
    m, app, _ = make(tmp_path, backend=backend)
    app.post("/setup", json={"project": "1.1", "schema": CONFIG})
    m.request_training(1, "test")
    assert m.runner.wait_idle(120)
    task = {"id": 9999, "data": {"image": FakeClient().tasks[50]["data"]["image"]}}
    before = app.post("/predict", json={"tasks": [task], "project": "1.1"}).json()
    assert before["results"][0]["model_version"] == "sae-v1"
    backend.fail = True
    m.request_training(1, "test")
    assert m.runner.wait_idle(120)
    status = app.get("/projects/1/status").json()
    assert status["model_version"] == "sae-v1" and "boom in training" in status["last_error"]
    assert app.post("/predict", json={"tasks": [task], "project": "1.1"}).json() == before
    assert 'sae_errors_total{kind="training"} 1.0' in app.get("/metrics").text
    _, app2, _ = make(tmp_path, backend=BlockingBackend())
    assert app2.get("/projects/1/status").json()["model_version"] == "sae-v1"
    assert app2.post("/predict", json={"tasks": [task], "project": "1.1"}).json() == before


def test_poll_catches_missed_webhook_and_push_retries(tmp_path):
    m, app, client = make(tmp_path)
    app.post("/setup", json={"project": "1.1", "schema": CONFIG})
    client.fail_push = True
    m.poll()
    assert m.runner.wait_idle(120)
    st = app.get("/projects/1/status").json()
    assert st["model_version"] == "sae-v1" and st["push_pending"] is True and client.pushed == []
    client.fail_push = False
    m.poll()
    assert m.runner.wait_idle(60), "the retried push runs in the job runner, like every write"
    assert app.get("/projects/1/status").json()["push_pending"] is False and client.pushed == ["sae-v1"]


def test_corrupt_and_unknown_class_tasks_are_skipped_with_reason(tmp_path):
    client = FakeClient()
    client.tasks[60]["data"]["image"] = "data:image/png;base64," + base64.b64encode(b"\x89PNG broken").decode()
    client.tasks[0]["annotations"][0]["result"][0]["value"]["choices"] = ["seven"]
    m, app, _ = make(tmp_path, client=client)
    app.post("/setup", json={"project": "1.1", "schema": CONFIG})
    m.request_training(1, "test")
    assert m.runner.wait_idle(120)
    st = app.get("/projects/1/status").json()
    assert st["model_version"] == "sae-v1" and st["skipped_count"] == 1
    assert st["skipped"][0]["task"] == 61 and "image" in st["skipped"][0]["reason"]
    assert "seven" in st["label_problems"][0]["problem"] and st["labeled"] == 39


def test_basic_auth_on_every_route(tmp_path):
    _, app, _ = make(tmp_path, basic_auth_user="u", basic_auth_pass="p")
    for method, route in [("get", "/health"), ("get", "/"), ("post", "/setup"), ("post", "/predict"),
                          ("post", "/webhook"), ("get", "/versions"), ("get", "/metrics"),
                          ("get", "/projects/1/status")]:
        assert getattr(app, method)(route).status_code == 401
        assert getattr(app, method)(route, auth=("u", "wrong")).status_code == 401
    assert app.get("/health", auth=("u", "p")).status_code == 200


def test_morph_names_the_classes_the_model_learned_after_the_config_changed(tmp_path) -> None:
    from PIL import Image

    from model.morph import morph
    from service.plots import morph_png

    m, app, _ = make(tmp_path)
    app.post("/setup", json={"project": "1.1", "schema": CONFIG})
    app.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 1}})
    assert m.runner.wait_idle(120)
    reversed_config = CONFIG.replace("".join(f'<Choice value="{i}"/>' for i in range(10)),
                                     "".join(f'<Choice value="{i}"/>' for i in reversed(range(10))))
    app.post("/setup", json={"project": "1.1", "schema": reversed_config})
    assert m.projects[1].config.classes[0] == "9"
    r = app.get("/projects/1/morph.png", params={"from": "1", "to": "2"})
    assert r.status_code == 200
    expected = morph_png(morph(m.projects[1].served.model, 1, 2, 8), "1 -> 2")
    pixels = [np.asarray(Image.open(io.BytesIO(b))) for b in (r.content, expected)]
    np.testing.assert_array_equal(*pixels)
    assert app.get("/projects/1/latent.png").status_code == 200


def _rings_read_off(tmp_path, monkeypatch):
    """A trained project whose picture holds every task, and the list the rings of each drawing go to."""
    import service.plots

    m, app, client = make(tmp_path, push_top_k=5)
    app.post("/setup", json={"project": "1.1", "schema": CONFIG})
    app.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 1}})
    assert m.runner.wait_idle(120)
    st = m.projects[1]
    served = st.served
    served.latent["ids"] = served.ids.copy()
    served.latent["z"] = np.zeros((len(served.ids), served.latent["z"].shape[1]), np.float32)
    served.latent["y"] = np.full(len(served.ids), -1)
    rings: list[set[int]] = []
    monkeypatch.setattr(service.plots, "latent_png", lambda z, y, names, marked, **kw: rings.append(
        set(served.latent["ids"][marked].tolist())) or b"")
    return m, app, client, st, served, rings


def test_the_latent_picture_rings_what_the_push_marks_not_tasks_labeled_since(tmp_path, monkeypatch) -> None:
    m, app, client, st, served, rings = _rings_read_off(tmp_path, monkeypatch)
    assert app.get("/projects/1/latent.png").status_code == 200
    assert rings[-1] == set(served.head_ids[:5].tolist())
    first = int(served.head_ids[0])
    task = next(t for t in client.tasks if t["id"] == first)
    task["annotations"] = [choice("3", 777)]
    m.mirror(st).upsert_annotation(first, {**choice("3", 777), "task": first})
    app.get("/projects/1/latent.png")
    assert first not in rings[-1] and rings[-1] == set(served.head_ids[1:6].tolist()), "as the push marks them"
    m.settings.push_top_k = 0
    app.get("/projects/1/latent.png")
    assert rings[-1] == set(), "nothing is pushed for labeling"


def test_the_ranking_and_the_rings_leave_out_a_head_task_deleted_since_as_the_push_does(tmp_path, monkeypatch) -> None:
    m, app, _, st, served, rings = _rings_read_off(tmp_path, monkeypatch)
    deleted = int(served.head_ids[0])
    m.mirror(st).remove_tasks([deleted])  # its TASKS_DELETED webhook
    ranking = [r["task"] for r in app.get("/projects/1/ranking", params={"limit": 5}).json()["ranking"]]
    assert ranking == served.head_ids[1:6].tolist()
    app.get("/projects/1/latent.png")
    assert rings[-1] == set(ranking)


def test_a_picture_is_drawn_once_while_its_version_and_rings_stay(tmp_path, monkeypatch) -> None:
    """A dashboard refreshing every few seconds must not cost most of a second of CPU each time."""
    import model.morph

    m, app, _, st, served, rings = _rings_read_off(tmp_path, monkeypatch)
    for _ in range(3):
        assert app.get("/projects/1/latent.png").status_code == 200
    assert len(rings) == 1
    first = int(served.head_ids[0])
    m.mirror(st).upsert_annotation(first, {**choice("3", 777), "task": first})
    app.get("/projects/1/latent.png")
    assert len(rings) == 2, "a task labeled since leaves the rings: drawn again"
    st.served = dataclasses.replace(served, rows_mark=None)
    app.get("/projects/1/latent.png")
    assert len(rings) == 2, "a snapshot replaced for new tasks that did not join the picture: the same picture"
    st.served = served = dataclasses.replace(served, latent=dict(served.latent))
    app.get("/projects/1/latent.png")
    assert len(rings) == 3, "new tasks joined the picture: drawn again"

    morphs, real = [], model.morph.morph
    monkeypatch.setattr(model.morph, "morph", lambda *a: morphs.append(a[1:]) or real(*a))
    for params in ({"from": "1", "to": "2"}, {"from": "1", "to": "2"}, {"from": "1", "to": "2", "steps": 4}):
        assert app.get("/projects/1/morph.png", params=params).status_code == 200
    assert morphs == [(1, 2, 8), (1, 2, 4)]


def test_a_new_version_s_picture_lets_the_old_version_go() -> None:
    import gc
    import weakref

    from service.app import PictureCache

    class Model:
        pass

    cache, old, new = PictureCache(size=8), Model(), Model()
    cache.put(("morph", 1, "a", "b", 8), (old,), b"old")
    cache.put(("morph", 2, "a", "b", 8), (old,), b"other project")
    assert cache.get(("morph", 1, "a", "b", 8), (old,)) == b"old"
    cache.put(("latent", 1, "h"), (new, {}), b"new")
    assert cache.get(("morph", 1, "a", "b", 8), (old,)) is None and len(cache._kept) == 2, \
        "a picture of the next model drops the project's pictures of the last"
    assert cache.get(("morph", 2, "a", "b", 8), (old,)) == b"other project"
    assert cache.get(("latent", 1, "h"), (new, {})) is None, "a basis is matched by identity, not by value"
    gone = weakref.ref(old)
    del old
    gc.collect()
    assert gone() is None, "a version no longer served is not kept alive by its pictures"
    assert cache.get(("morph", 2, "a", "b", 8), (Model(),)) is None
