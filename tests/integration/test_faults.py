"""Faults that involve Label Studio: it goes down mid-push; the backend is SIGKILLed mid-training."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading

import httpx
import pytest

from connectors.label_studio import LabelStudioClient
from connectors.label_studio_server import free_port
from service.app import create_app
from service.projects import ProjectManager
from service.settings import Settings
from tests.integration.conftest import DIGITS_CONFIG, Backend, digits_pngs, wait_for

pytestmark = pytest.mark.integration


def _project(client: LabelStudioClient, n_labeled: int = 30) -> tuple[int, list[int]]:
    pid = client.create_project("faults", DIGITS_CONFIG)
    files, y = digits_pngs(150, seed=1)
    ids = client.upload_files(pid, files)
    for tid, label in list(zip(ids, y.tolist(), strict=True))[:n_labeled]:
        client.create_annotation(tid, [{"from_name": "choice", "to_name": "image", "type": "choices",
                                        "value": {"choices": [str(label)]}}])
    return pid, ids


class DropsDuringPush(LabelStudioClient):
    """A real client that takes Label Studio down just before the first prediction import."""

    server = None
    dropped = threading.Event()

    def import_predictions(self, project_id, predictions, chunk_size=10_000):
        if not self.dropped.is_set():
            self.dropped.set()
            self.server.stop()
            threading.Timer(3.0, self.server.start).start()
        return super().import_predictions(project_id, predictions, chunk_size)


def test_label_studio_down_during_push_completes_without_duplicates(label_studio, ls_client, tmp_path):
    pid, ids = _project(ls_client)
    DropsDuringPush.server = label_studio
    s = Settings(label_studio_url=label_studio.url, label_studio_api_key=label_studio.token, model_dir=tmp_path,
                 sae_epochs=30, push_top_k=5, poll_interval_seconds=3600, push_retries=10)
    manager = ProjectManager(s, client_factory=lambda url, key: DropsDuringPush(url, key))
    backend = Backend(create_app(s, manager=manager)).start()
    try:
        httpx.post(f"{backend.url}/setup", json={"project": f"{pid}.1", "schema": DIGITS_CONFIG})
        httpx.post(f"{backend.url}/webhook", json={"action": "START_TRAINING", "project": {"id": pid}})
        status = wait_for(lambda: (st := httpx.get(f"{backend.url}/projects/{pid}/status").json())
                          ["model_version"] and not st["training"] and st, timeout=240)
        assert DropsDuringPush.dropped.is_set()
        assert status["push_pending"] is False and status["last_push_error"] is None
        wait_for(lambda: httpx.get(f"{label_studio.url}/health", timeout=2).status_code == 200, timeout=60)
        tasks = list(ls_client.iter_tasks(pid))
        assert len(tasks) == len(ids)
        unlabeled = [t for t in tasks if not t["annotations"]]
        assert len(unlabeled) == len(ids) - 30
        assert all(len(t["predictions"]) == 1 and t["predictions"][0]["model_version"] == "sae-v1"
                   for t in unlabeled), "one row per task of the head (here every unlabeled task), none twice"
    finally:
        backend.stop()
        manager.shutdown()


def _serve(label_studio, model_dir, port, **env):
    e = dict(os.environ, LABEL_STUDIO_URL=label_studio.url, LABEL_STUDIO_API_KEY=label_studio.token,
             MODEL_DIR=str(model_dir), SAE_EPOCHS="30", POLL_INTERVAL_SECONDS="3600", PUSH_TOP_K="5",
             **{k.upper(): str(v) for k, v in env.items()})
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
                             "--log-level", "warning"], env=e, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: _up(url), timeout=60, every=0.3)
    return proc, url


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _status(url: str, pid: int) -> dict:
    return httpx.get(f"{url}/projects/{pid}/status", timeout=10).json()


def _epoch(status: dict) -> int:
    """The epoch a running training is in (0 when it is not training yet); polls may skip epochs."""
    m = re.match(r"epoch (\d+)/", status["progress"].get("stage") or "")
    return int(m.group(1)) if m else 0


def test_sigkill_mid_training_serves_last_complete_version_and_retrains(label_studio, ls_client, tmp_path):
    pid, _ = _project(ls_client)
    port = free_port()
    proc, url = _serve(label_studio, tmp_path, port)
    try:
        httpx.post(f"{url}/setup", json={"project": f"{pid}.1", "schema": DIGITS_CONFIG})
        httpx.post(f"{url}/webhook", json={"action": "START_TRAINING", "project": {"id": pid}})
        wait_for(lambda: _status(url, pid)["model_version"] == "sae-v1" and not _status(url, pid)["training"])
    finally:
        proc.terminate()
        proc.wait(20)
    proc, url = _serve(label_studio, tmp_path, port, sae_warm_epochs=1_000_000)
    try:
        assert _status(url, pid)["model_version"] == "sae-v1"
        httpx.post(f"{url}/webhook", json={"action": "START_TRAINING", "project": {"id": pid}})
        wait_for(lambda: _epoch(_status(url, pid)) >= 2, timeout=180, every=0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(20)
    versions = sorted(p.name for p in (tmp_path / f"project-{pid}").iterdir() if p.name.startswith("v"))
    assert versions == ["v000001"]
    proc, url = _serve(label_studio, tmp_path, port, sae_warm_epochs=5)
    try:
        first = _status(url, pid)
        assert first["model_version"] == "sae-v1"
        assert first["training_failures"] == 1 and "ended with the process" in first["last_error"]
        status = wait_for(lambda: (s := _status(url, pid))["model_version"] == "sae-v2" and not s["training"] and s)
        assert status["labeled"] == 30 and status["last_error"] is None
    finally:
        proc.terminate()
        proc.wait(20)
