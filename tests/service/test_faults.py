"""Faults and bad input that do not need a Label Studio server: storms, concurrency, bad data, secrets."""

from __future__ import annotations

import base64
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from connectors.label_studio import LabelStudioClient
from connectors.task_data import TaskDataError
from service.app import create_app
from service.training import LocalTrainingBackend
from tests.integration.conftest import Backend
from tests.service.test_app import CONFIG, BlockingBackend, FakeClient, choice, make


class CountingBackend(LocalTrainingBackend):
    def __init__(self) -> None:
        super().__init__()
        self.runs = 0

    def run(self, job, progress=None):
        self.runs += 1
        return super().run(job, progress)


def test_webhook_storm_gives_a_handful_of_trainings(tmp_path):
    backend = CountingBackend()
    m, app, _ = make(tmp_path, backend=backend, retrain_debounce_seconds=0.3, retrain_max_delay_seconds=5)
    m.scheduler.start()
    app.post("/setup", json={"project": "1.1", "schema": CONFIG})
    for i in range(1000):
        body = {"action": "ANNOTATION_CREATED", "annotation": {**choice(str(i % 10), 10_000 + i), "task": 1 + i % 40},
                "project": {"id": 1, "num_tasks_with_annotations": 40 + i // 20}}
        assert app.post("/webhook", json=body).status_code == 200
        if i % 100 == 0:
            assert app.get("/health").json()["status"] == "UP"
    assert m.runner.wait_idle(120)
    time.sleep(1.0)
    assert m.runner.wait_idle(120)
    assert 1 <= backend.runs <= 5
    assert app.get("/projects/1/status").json()["model_version"] is not None
    m.shutdown()


def test_concurrent_predicts_during_training_are_all_answered(tmp_path):
    blocking = BlockingBackend()
    blocking.release.set()
    m, _, fake = make(tmp_path, backend=blocking)
    server = Backend(create_app(m.settings, manager=m)).start()
    try:
        httpx.post(f"{server.url}/setup", json={"project": "1.1", "schema": CONFIG})
        m.request_training(1, "first")
        assert m.runner.wait_idle(120)
        tasks = [{"id": 10_000 + i, "data": fake.tasks[i]["data"]} for i in range(60, 64)]
        expected = httpx.post(f"{server.url}/predict", json={"tasks": tasks, "project": "1.1"}, timeout=60).json()
        assert len(expected["results"]) == 4
        blocking.release.clear()
        blocking.started.clear()
        m.request_training(1, "second")
        assert blocking.started.wait(10)

        def call(_):
            return httpx.post(f"{server.url}/predict", json={"tasks": tasks, "project": "1.1"}, timeout=120).json()

        with ThreadPoolExecutor(50) as pool:
            answers = list(pool.map(call, range(50)))
        assert m.runner.is_running(1)
        assert all(a == expected for a in answers)
        blocking.release.set()
        assert m.runner.wait_idle(120)
    finally:
        blocking.release.set()
        server.stop()


def _data_uri(raw: bytes, kind: str = "image/png") -> str:
    return f"data:{kind};base64," + base64.b64encode(raw).decode()


def test_bad_task_data_is_skipped_with_reasons_and_the_rest_trains(tmp_path):
    client = FakeClient()
    good = base64.b64decode(client.tasks[70]["data"]["image"].split(",", 1)[1])
    client.tasks[60]["data"]["image"] = _data_uri(good[: len(good) // 2])
    client.tasks[61]["data"]["image"] = _data_uri(b"just some text", "text/plain")
    client.tasks[62]["data"]["image"] = _data_uri(good + b"\0" * 5000)
    client.tasks[63]["data"]["image"] = "http://169.254.169.254/latest/meta-data"
    client.tasks[64]["data"]["image"] = "file:///etc/passwd"
    client.tasks[65]["data"] = {"other": 1}
    m, app, _ = make(tmp_path, client=client, fetch_max_bytes=4000)
    app.post("/setup", json={"project": "1.1", "schema": CONFIG})
    m.request_training(1, "test")
    assert m.runner.wait_idle(120)
    st = app.get("/projects/1/status").json()
    reasons = {s["task"]: s["reason"] for s in st["skipped"]}
    assert set(reasons) == {61, 62, 63, 64, 65, 66}
    assert st["model_version"] == "sae-v1" and st["unlabeled"] == 120 - 40 - 6
    assert "refused" in reasons[64] and "refused" in reasons[65]
    assert "image" in reasons[61] and "image" in reasons[62] and "4000-byte" in reasons[63] and "image" in reasons[66]
    assert 'sae_errors_total{kind="data"} 6.0' in app.get("/metrics").text
    m.request_training(1, "again")
    assert m.runner.wait_idle(120) and app.get("/projects/1/status").json()["model_version"] == "sae-v2"
    assert 'sae_errors_total{kind="data"} 6.0' in app.get("/metrics").text, "each unreadable task counts once"


def test_api_key_never_in_logs_or_errors(tmp_path, caplog):
    key = "k3y-that-must-not-leak-0123456789"
    m, app, _ = make(tmp_path, client=None)
    m.client_factory = lambda url, k: LabelStudioClient(url, k, timeout=2)
    m.settings.label_studio_api_key = type(m.settings.label_studio_api_key)(key)
    caplog.set_level(logging.DEBUG)
    app.post("/setup", json={"project": "1.1", "schema": CONFIG, "access_token": key})
    m.request_training(1, "test")
    assert m.runner.wait_idle(60)
    m.poll()
    status = app.get("/projects/1/status").json()
    assert status["last_error"] and "LabelStudio" in status["last_error"]
    assert key not in caplog.text and key not in str(status)
    assert key not in app.get("/metrics").text


def test_every_route_refuses_malformed_input_with_4xx(tmp_path):
    _, app, _ = make(tmp_path)
    cases = [("/setup", {"project": None}), ("/setup", {"project": "x.y"}), ("/predict", {"tasks": "no"}),
             ("/predict", {"tasks": [], "project": "abc"}), ("/webhook", {"action": 3}),
             ("/webhook", {"action": "START_TRAINING"}), ("/webhook", {"action": "ANNOTATION_CREATED", "project": "x"})]
    for route, body in cases:
        r = app.post(route, json=body)
        assert 400 <= r.status_code < 500, (route, body, r.status_code)
        assert r.json()["detail"]
    for route in ("/projects/abc/status", "/projects/1/ranking?limit=0", "/projects/999/status"):
        assert 400 <= app.get(route).status_code < 500
    assert app.get("/projects/1/morph.png").status_code in (404, 422)


def test_predict_answers_odd_tasks_one_by_one_never_a_500(tmp_path):
    m, app, _ = make(tmp_path)
    app.post("/setup", json={"project": "1.1", "schema": CONFIG})
    app.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 1}})
    assert m.runner.wait_idle(120)
    r = app.post("/predict", json={"project": "1.1", "tasks": [{"id": 2**64, "data": "x"}, {"id": 1, "data": {}}]})
    assert r.status_code == 200
    first, second = r.json()["results"]
    assert first["result"] == [] and "task data must be an object" in first["error"]
    assert first["score"] == 1.0, "an unread task is asked for last, never first"
    assert second["model_version"] == "sae-v1" and second["result"], "a known task is answered from the snapshot"
    m.settings.label_studio_url, m.settings.label_studio_api_key = None, None  # no URL or key from anywhere
    r = app.post("/predict", json={"project": "1.1", "tasks": [{"id": 999, "data": {"image": "/data/x.png"}},
                                                               {"id": 1, "data": {}}]})
    unread, known = r.json()["results"]
    assert r.status_code == 200 and "no Label Studio URL" in unread["error"] and known["result"]


def test_with_basic_auth_the_api_pages_are_not_served(tmp_path):
    _, app, _ = make(tmp_path, basic_auth_user="ann", basic_auth_pass="secret")
    for route in ("/docs", "/redoc", "/openapi.json"):
        assert app.get(route).status_code == 404
        assert app.get(route, auth=("ann", "secret")).status_code == 404
    _, app, _ = make(tmp_path / "open")
    assert app.get("/openapi.json").status_code == 200


def test_predict_for_an_unknown_project_id_registers_nothing(tmp_path):
    m, app, _ = make(tmp_path)
    r = app.post("/predict", json={"project": "424242.1", "tasks": [{"id": 1, "data": {}}]})
    assert r.status_code == 200 and r.json() == {"results": [], "model_version": None}
    assert app.get("/projects/424242/status").status_code == 404 and 424242 not in m.projects
    app.get("/versions")
    assert not (tmp_path / "project-424242").exists()


def served(tmp_path):
    """A project with its first version in service."""
    m, app, client = make(tmp_path)
    app.post("/setup", json={"project": "1.1", "schema": CONFIG})
    app.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 1}})
    assert m.runner.wait_idle(120)
    return m, app, client


def test_predict_reads_unscored_tasks_side_by_side_and_answers_within_its_deadline(tmp_path, monkeypatch):
    import service.projects as projects
    from connectors.item_codec import ItemCodec

    _m, app, client = served(tmp_path)
    real = ItemCodec.load

    hung, ended = threading.Event(), threading.Event()

    def slow(self, fetcher, value, task_id=None):
        if task_id == 900:  # its storage hangs until the test lets it fail
            hung.wait(30)
            ended.set()
            raise TaskDataError("the storage gave up")
        time.sleep(0.4)
        return real(self, fetcher, client.tasks[task_id - 900]["data"]["image"], task_id)

    monkeypatch.setattr(ItemCodec, "load", slow)
    monkeypatch.setattr(projects, "PREDICT_DEADLINE_SECONDS", 2.0)
    tasks = [{"id": 900 + i, "data": {"image": f"http://127.0.0.1:1/data/upload/1/{i}.png"}} for i in range(8)]
    t0 = time.perf_counter()
    try:
        results = app.post("/predict", json={"project": "1.1", "tasks": tasks}).json()["results"]
        assert time.perf_counter() - t0 < 10, "eight reads of 0.4 s side by side, the hung one given up at 2 s"
        assert "not read within 2 s" in results[0]["error"] and results[0]["score"] == 1.0
        assert results[0]["model_version"] == f"{results[1]['model_version']}-unread", \
            "Label Studio stores the answer: under the version's name it would stand for the task's real row"
        assert all(r["result"] and "error" not in r for r in results[1:])
        assert 'sae_errors_total{kind="data"} 1.0' in app.get("/metrics").text, "the answer that says why counts"
    finally:
        hung.set()
    assert ended.wait(10)
    time.sleep(0.2)
    assert 'sae_errors_total{kind="data"} 1.0' in app.get("/metrics").text, "the read that failed late not again"


def test_predict_decodes_inline_task_data_in_the_request_s_own_thread(tmp_path, monkeypatch):
    """data: URIs need no request: a pool of threads would only contend for the interpreter (measured slower)."""
    import service.projects as projects

    m, app, client = make(tmp_path)
    app.post("/setup", json={"project": "1.1", "schema": CONFIG})
    app.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 1}})
    assert m.runner.wait_idle(120)
    monkeypatch.setattr(projects, "ThreadPoolExecutor", lambda *a, **k: pytest.fail("no pool for inline data"))
    tasks = [{"id": 900 + i, "data": client.tasks[i]["data"]} for i in range(3)]
    assert client.tasks[0]["data"]["image"].startswith("data:")
    results = app.post("/predict", json={"project": "1.1", "tasks": tasks}).json()["results"]
    assert all(r["result"] and "error" not in r for r in results)


def test_predict_counts_each_task_it_answers_with_an_error(tmp_path, monkeypatch):
    import numpy as np

    from connectors.item_codec import ItemCodec

    m, app, client = served(tmp_path)
    real = ItemCodec.load
    monkeypatch.setattr(ItemCodec, "load", lambda self, fetcher, value, task_id=None: np.zeros((5, 3), np.float32)
                        if task_id == 900 else real(self, fetcher, value, task_id))  # images are resized: a codec bug
    tasks = [{"id": 900, "data": client.tasks[1]["data"]}, {"id": 901, "data": client.tasks[0]["data"]}]
    results = app.post("/predict", json={"project": "1.1", "tasks": tasks}).json()["results"]
    assert "does not match the model" in results[0]["error"] and "error" not in results[1]
    assert 'sae_errors_total{kind="data"} 1.0' in app.get("/metrics").text, "an item of another shape counts"

    def no_fetcher(st):
        raise ValueError("no Label Studio URL")

    monkeypatch.setattr(m, "fetcher", no_fetcher)
    results = app.post("/predict", json={"project": "1.1", "tasks": tasks}).json()["results"]
    assert all("cannot be read" in r["error"] for r in results)
    assert 'sae_errors_total{kind="data"} 3.0' in app.get("/metrics").text, "each task a missing fetcher leaves unread"
