"""Training and scoring through a real Ray cluster (head on loopback, started by the fixture)."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from connectors.datasets import Dataset
from model.persistence import save_model
from service.pool_store import PoolStore
from service.served import ServedVersion
from service.settings import SAESettings
from service.training import LocalTrainingBackend, ScoringJob, TrainingJob

ray = pytest.importorskip("ray", reason="the Ray tests need the ray extra: pip install 'sae-backend[ray]'")
from connectors.ray_head import RayHead  # noqa: E402
from service.ray_backend import RayTrainingBackend  # noqa: E402

CLASSES = [str(i) for i in range(10)]
ROOT = Path(__file__).resolve().parents[2]
N = 300


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory) -> RayHead:
    """A two-CPU Ray head on loopback for this module; the driver (this process) connects to it."""
    head = RayHead(tmp_path_factory.mktemp("ray"), num_cpus=2, object_store_mb=150)
    with head:
        yield head


@pytest.fixture(scope="module")
def ray_address(ray_head: RayHead) -> str:
    return ray_head.address


@pytest.fixture(scope="module")
def pool_dir(digits: Dataset, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("pool") / "pool"
    store = PoolStore(path, fsync=False)
    store.append(np.arange(1000, 1000 + N), np.rint(digits.x_train[:N] * 255).astype(np.uint8))
    store.close()
    return str(path)


def job(pool_dir: str, y: np.ndarray, project: int = 1, epochs: int = 3) -> TrainingJob:
    ids = np.arange(1000, 1000 + N)
    labels = {int(t): int(c) for t, c in zip(ids, y[:N], strict=True) if c >= 0}
    return TrainingJob(project, pool_dir, ids, labels, CLASSES,
                       SAESettings(epochs=epochs, warm_epochs=1, latent_dim=6), None, "cpu")


def backend(ray_address: str, tmp_path, **kw) -> RayTrainingBackend:
    return RayTrainingBackend(tmp_path / "staging", ray_address, **({"poll_seconds": 0.1, "device": "cpu"} | kw))


@pytest.mark.parametrize("strategy", ["margin", "cluster-margin"])
def test_a_version_trained_and_scored_in_shards_on_the_cluster_ranks_like_one_process(
        ray_address, pool_dir, digits_labels, tmp_path, strategy) -> None:
    b = backend(ray_address, tmp_path, shard_size=70)
    seen = []
    result = b.run(job(pool_dir, digits_labels), lambda stage, frac: seen.append(stage))
    assert result.metrics["backend"] == "ray" and result.metrics["attempts"] == 1
    assert result.metrics["worker"]["pid"] != os.getpid()
    assert any("Ray worker" in s for s in seen)
    assert list((tmp_path / "staging").iterdir()) == []  # the staged model is gone once loaded

    save_model(result.model, tmp_path / "v1")
    ids = np.arange(1000, 1000 + N)
    labeled = ids[digits_labels[:N] >= 0]
    scoring = ScoringJob(pool_dir, ids, labeled, str(tmp_path / "v1"), strategy, keep=40, device="cpu")
    shards = b.score(scoring, result.model)
    assert [len(s.ids) for s in shards] == [70, 70, 70, 70, 20]
    labels = {int(t): int(digits_labels[t - 1000]) for t in labeled}
    on_ray = ServedVersion.from_shards(1, "sae-v1", result.model, strategy, labels, shards, keep=40)
    local = ServedVersion.from_shards(1, "sae-v1", result.model, strategy, labels,
                                      LocalTrainingBackend().score(scoring, result.model), keep=40)
    assert np.array_equal(on_ray.ids, local.ids) and np.array_equal(on_ray.pred, local.pred)
    assert np.allclose(on_ray.score, local.score, atol=1e-6)
    assert on_ray.head_ids.tolist() == local.head_ids.tolist()
    assert not set(on_ray.head_ids.tolist()) & set(labels)


def test_the_cold_start_runs_on_the_cluster(ray_address, pool_dir, digits_labels, tmp_path) -> None:
    b = backend(ray_address, tmp_path)
    unlabeled = job(pool_dir, np.full(N, -1), epochs=2)
    picks = b.suggest(unlabeled, 12)
    assert len(picks) == 12 and len(set(picks.tolist())) == 12
    assert set(picks.tolist()) <= set(range(1000, 1000 + N))


def test_two_projects_train_at_once_on_two_workers(ray_address, pool_dir, digits_labels, tmp_path) -> None:
    b = backend(ray_address, tmp_path)
    results = {}
    threads = [threading.Thread(target=lambda p=p: results.__setitem__(p, b.run(job(pool_dir, digits_labels, p, 150))))
               for p in (1, 2)]
    for t in threads:
        t.start()
    both_training = False
    deadline = time.monotonic() + 120
    while not both_training and time.monotonic() < deadline and any(t.is_alive() for t in threads):
        stages = [str(b.workers.get(p, {}).get("stage", "")) for p in (1, 2)]
        both_training = all(s.startswith("epoch") for s in stages)
        time.sleep(0.02)
    for t in threads:
        t.join(300)
    assert both_training, "the two trainings never ran at the same time"
    one, two = results[1].metrics["worker"], results[2].metrics["worker"]
    assert one["pid"] != two["pid"]
    assert one["started_at"] < two["finished_at"] and two["started_at"] < one["finished_at"]


def _kill_worker_mid_training(b: RayTrainingBackend, pool_dir: str, y: np.ndarray) -> tuple[dict, int]:
    out: dict = {}

    def train() -> None:
        try:
            out["result"] = b.run(job(pool_dir, y, 3, epochs=60))
        except Exception as e:
            out["error"] = e

    t = threading.Thread(target=train)
    t.start()
    deadline = time.monotonic() + 120
    while not str(b.workers.get(3, {}).get("stage", "")).startswith("epoch"):
        assert time.monotonic() < deadline and t.is_alive(), out
        time.sleep(0.05)
    victim = int(b.workers[3]["pid"])
    os.kill(victim, signal.SIGKILL)
    t.join(300)
    return out, victim


def test_a_worker_killed_mid_training_is_retried_and_the_version_arrives(ray_address, pool_dir, digits_labels,
                                                                        tmp_path) -> None:
    out, victim = _kill_worker_mid_training(backend(ray_address, tmp_path, max_retries=2), pool_dir, digits_labels)
    result = out["result"]
    assert result.metrics["attempts"] == 2
    assert result.metrics["worker"]["pid"] != victim
    assert result.model.predict(np.zeros((1, 8, 8), np.float32)).shape == (1,)


def test_without_retries_a_killed_worker_fails_the_training_with_a_clear_error(ray_address, pool_dir,
                                                                              digits_labels, tmp_path) -> None:
    out, _ = _kill_worker_mid_training(backend(ray_address, tmp_path, max_retries=0), pool_dir, digits_labels)
    assert "result" not in out
    assert "failed on the Ray cluster after 0 retries" in str(out["error"])


def test_a_task_no_node_can_take_fails_the_job_instead_of_waiting_for_good(ray_address, pool_dir, digits_labels,
                                                                            tmp_path, monkeypatch) -> None:
    """A GPU node gone (or RAY_NUM_GPUS past any node): the task stays pending; the project would stay busy."""
    import service.ray_backend as ray_backend

    monkeypatch.setattr(ray_backend, "RESOURCE_CHECK_SECONDS", 0.2)
    gpu = backend(ray_address, tmp_path, num_gpus=1, wait_for_resources_seconds=1.0)
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match=r"a task asks for CPU 1, GPU 1 on one node \(the most any live node has: "
                                           r"CPU 2, GPU 0\)"):
        gpu.run(job(pool_dir, digits_labels))
    assert time.monotonic() - t0 < 30 and not gpu._inflight


def test_a_session_that_ended_is_joined_again_before_the_next_job(ray_address, pool_dir, digits_labels,
                                                                   tmp_path, monkeypatch) -> None:
    """A head restart ends a Ray Client session for good (is_initialized() turns False): each job would fail."""
    b = backend(ray_address, tmp_path)
    joins, before = [], b._train
    monkeypatch.setattr(b.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(b, "_connect", lambda address, seconds: joins.append(address))
    b._joined()
    assert joins == [ray_address] and b._train is not before, "the task handles of the old session are made again"
    monkeypatch.undo()
    assert b.run(job(pool_dir, digits_labels, epochs=1)).metrics["backend"] == "ray", "the handles made again work"


def _webhook(app, action: str) -> None:
    app.post("/webhook", json={"action": action, "project": {"id": 1}})


def test_the_service_trains_scores_and_pushes_through_the_cluster(ray_address, tmp_path) -> None:
    from tests.service.test_app import CONFIG, make

    b = backend(ray_address, tmp_path / "ray", shard_size=50)
    m, app, client = make(tmp_path, backend=b, sae_epochs=3, training_concurrency=2)
    shards = []
    score = b.score
    b.score = lambda *a, **k: shards.append(score(*a, **k)) or shards[-1]
    app.post("/setup", json={"project": "1.1", "schema": CONFIG})
    _webhook(app, "START_TRAINING")
    assert m.runner.wait_idle(180)
    status = app.get("/projects/1/status").json()
    assert status["model_version"] == "sae-v1", status
    assert m.store(1).history()[-1]["labeled"] == 40
    assert [len(s.ids) for s in shards[0]] == [50, 50, 20]  # the pool of 120 was scored in three shards
    assert client.pushed == ["sae-v1"] and client.rows["sae-v1"] == 80  # a prediction for every unlabeled task
    ranking = app.get("/projects/1/ranking", params={"limit": 5}).json()
    assert len(ranking["ranking"]) == 5
    m.shutdown()


def test_a_shutdown_cancels_the_cluster_job_and_the_next_start_resumes_it(ray_address, tmp_path) -> None:
    from tests.service.test_app import CONFIG, make
    from tests.service.test_faults import CountingBackend

    b = backend(ray_address, tmp_path / "ray")
    m, app, _ = make(tmp_path, backend=b, sae_epochs=400)
    app.post("/setup", json={"project": "1.1", "schema": CONFIG})
    _webhook(app, "START_TRAINING")
    deadline = time.monotonic() + 120
    while not str(b.workers.get(1, {}).get("stage", "")).startswith("epoch"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    pid = int(b.workers[1]["pid"])
    m.shutdown()
    deadline = time.monotonic() + 60
    while m.runner.is_running(1):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert m.projects[1].last_error is None  # a cancelled job is not a failed one
    assert m.store(1).read_project()["training_started"] == "START_TRAINING"
    with pytest.raises(ProcessLookupError):  # the worker running it was stopped
        for _ in range(100):
            os.kill(pid, 0)
            time.sleep(0.1)

    again = CountingBackend()
    m2, _, _ = make(tmp_path, backend=again, sae_epochs=3)
    assert m2.runner.wait_idle(120)
    assert again.runs == 1 and m2.projects[1].version_name == "sae-v1"


CLIENT_DRIVER = """
import json, pickle, sys
from pathlib import Path
from service.ray_backend import RayTrainingBackend
job, address, staging = pickle.loads(Path(sys.argv[1]).read_bytes())
backend = RayTrainingBackend(Path(staging), address, poll_seconds=0.1, device="cpu")
result = backend.run(job)
print(json.dumps({"backend": result.metrics["backend"], "labeled": result.metrics["labeled"],
                  "cv": result.model.svm_.coef_.shape[0]}))
"""


def test_a_driver_on_no_ray_node_trains_through_ray_client(ray_head: RayHead, pool_dir, digits_labels,
                                                           tmp_path) -> None:
    """The compose setup: the backend's container is not a Ray node and joins at ray://head:10001."""
    spec = tmp_path / "job.pkl"
    spec.write_bytes(pickle.dumps((job(pool_dir, digits_labels, epochs=1), ray_head.client_address,
                                   str(tmp_path / "staging"))))
    out = subprocess.run([sys.executable, "-c", CLIENT_DRIVER, str(spec)], capture_output=True, text=True,
                         timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    metrics = json.loads(out.stdout.strip().splitlines()[-1])
    assert metrics == {"backend": "ray", "labeled": int((digits_labels[:N] >= 0).sum()), "cv": len(CLASSES)}


def test_a_failed_shard_fails_the_job_at_once_and_cancels_the_others(ray_address, tmp_path, monkeypatch) -> None:
    def unreadable() -> None:
        raise ValueError("shard 2 cannot be read")

    def slow() -> int:
        time.sleep(20)
        return 1

    b = backend(ray_address, tmp_path)
    cancelled, cancel = [], ray.cancel
    monkeypatch.setattr(ray, "cancel", lambda ref, **kw: cancelled.append(ref) or cancel(ref, **kw))
    # the failing one first: on a cluster with one CPU free it still runs before the slow one is done
    refs = [ray.remote(num_cpus=1)(unreadable).remote(), ray.remote(num_cpus=1)(slow).remote()]
    with pytest.raises(ValueError, match="shard 2 cannot be read"):
        b._wait(refs, -1, None, None, "scoring the pool")
    if ray.wait([refs[1]], timeout=0)[0]:  # still queued when cancelled: Ray failed it at once
        with pytest.raises(ray.exceptions.TaskCancelledError):
            ray.get(refs[1])  # had the job waited for it, it would have returned 1
    assert cancelled == [refs[1]], "the job failed while the slow shard ran, and asked Ray to cancel it (best effort)"


def test_a_worker_trains_on_the_device_ray_gave_it(ray_address) -> None:
    from service.ray_backend import _on_worker

    task = ray.remote(num_cpus=1, num_gpus=0)(lambda j: _on_worker(j).device)
    spec = TrainingJob(1, "pool", np.arange(3), {}, CLASSES, SAESettings(), None, "cuda:1")
    assert ray.get(task.remote(spec)) == "cpu", "no GPU from Ray: the CPU, whatever the service's DEVICE"


def test_a_worker_scores_with_a_version_written_again_under_the_same_name(pool_dir, digits_labels, tmp_path,
                                                                         monkeypatch) -> None:
    """A model directory started afresh numbers its versions from 1 again; a worker's cache must not serve the old."""
    import shutil

    import service.ray_backend as ray_backend
    from service.training import train_project

    monkeypatch.setattr(ray_backend, "_on_worker", lambda job: job)
    version = tmp_path / "v1"
    ids = np.arange(1000, 1000 + N)
    scores = []
    for seed_labels in (digits_labels, np.where(digits_labels >= 0, (digits_labels + 1) % 9, -1)):
        labels = {int(t): int(c) for t, c in zip(ids, seed_labels[:N], strict=True) if c >= 0}
        model = train_project(TrainingJob(1, pool_dir, ids, labels, CLASSES, SAESettings(epochs=2, latent_dim=6),
                                          None, "cpu")).model
        if version.exists():
            shutil.rmtree(version)
            time.sleep(0.01)
        save_model(model, version)
        job = ScoringJob(pool_dir, ids, np.zeros(0, np.int64), str(version), "margin", 10, device="cpu")
        scores.append(ray_backend.score_on_worker(job, 0, N).pred)
    assert not np.array_equal(scores[0], scores[1]), "the second model scored, not the first one cached"
