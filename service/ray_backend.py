"""Training and scoring on a Ray cluster (``TRAINING_BACKEND=ray``, ``RAY_ADDRESS``).

The jobs are the plain-data jobs of :mod:`service.training`, run as Ray tasks on workers
that see ``MODEL_DIR`` at the same path (one machine, or a volume every node mounts). A
worker writes the trained model into a staging directory under ``MODEL_DIR`` with the same
atomic rule as a version (written under a temporary name, renamed into place), and the
service loads it from there and saves it as the next version, so nothing half-written is
ever served. A worker that dies mid-job makes Ray run the task again (``RAY_MAX_RETRIES``);
when the retries are spent the training fails as any training does and the version in
service keeps serving. Big pools are scored as parallel tasks over shards of
``RAY_SCORE_SHARD_SIZE`` tasks whose shortlists are merged into one ranking.

Ray is imported here only; the single-machine path never needs it installed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from model.persistence import load_model, save_model
from model.sae_classifier import SAEClassifier
from service.settings import Settings
from service.training import (
    JobCancelledError,
    Progress,
    ScoringJob,
    ShardScores,
    TrainingBackend,
    TrainingJob,
    TrainingResult,
    score_pool,
    suggest_first,
    train_project,
)

log = logging.getLogger("sae_backend.ray")
PROGRESS_FILE = "progress.json"
RESOURCE_CHECK_SECONDS = 10.0


def _write_progress(stage_dir: Path, info: dict) -> None:
    tmp = stage_dir / f".{PROGRESS_FILE}.{os.getpid()}"
    tmp.write_text(json.dumps(info))
    tmp.replace(stage_dir / PROGRESS_FILE)


def _worker_progress(stage_dir: Path, attempt: str) -> Progress:
    """A progress callback that leaves the worker's stage where the service polls it."""
    who = {"pid": os.getpid(), "host": socket.gethostname(), "attempt": attempt, "started_at": time.time()}

    def report(stage: str, fraction: float) -> None:
        _write_progress(stage_dir, {**who, "stage": stage, "fraction": fraction})

    report("started on a Ray worker", 0.0)
    return report


def _on_worker(job: TrainingJob | ScoringJob) -> TrainingJob | ScoringJob:
    """The job with the device Ray gave this task: its GPU when it was given one (``RAY_NUM_GPUS``), else the CPU.

    The service's ``DEVICE`` names its own machine's devices; on a worker Ray decides, and a task
    without a GPU must not take one Ray does not count.
    """
    import ray

    return dataclasses.replace(job, device="cuda" if ray.get_gpu_ids() else "cpu")


def train_on_worker(job: TrainingJob, stage_dir: str) -> tuple[str, dict]:
    """Ray task: train, save into this attempt's own directory, return where it is and the metrics."""
    job = _on_worker(job)
    stage = Path(stage_dir)
    attempt = f"attempt-{uuid.uuid4().hex[:8]}"
    started = time.time()
    (stage / attempt).mkdir()
    result = train_project(job, _worker_progress(stage, attempt))
    path = save_model(result.model, stage / attempt / "model")
    return str(path), {**result.metrics, "worker": {"host": socket.gethostname(), "pid": os.getpid(),
                                                    "started_at": started, "finished_at": time.time()}}


def suggest_on_worker(job: TrainingJob, k: int, stage_dir: str) -> list[int]:
    """Ray task: the cold-start suggestions."""
    job = _on_worker(job)
    picks = suggest_first(job, k, _worker_progress(Path(stage_dir), f"attempt-{uuid.uuid4().hex[:8]}"))
    return [int(t) for t in picks]


@functools.lru_cache(maxsize=2)
def _saved_model(version_dir: str, device: str, written_ns: int) -> SAEClassifier:
    """A worker loads a version once for all the shards it scores; ``written_ns`` tells a directory written again
    under the same name (a model directory started afresh numbers its versions from 1 again) from the old one."""
    return load_model(version_dir, device)


def score_on_worker(job: ScoringJob, start: int, stop: int) -> ShardScores:
    """Ray task: score one shard of the pool with the saved version."""
    job = _on_worker(job)
    written = (Path(job.version_dir) / "settings.json").stat().st_mtime_ns
    return score_pool(job, start, stop, _saved_model(job.version_dir, job.device, written))


class RayTrainingBackend(TrainingBackend):
    """Runs training, cold-start and scoring jobs as Ray tasks; several projects' jobs at once."""

    def __init__(self, staging_dir: Path, address: str | None = None, num_cpus: float = 1.0, num_gpus: float = 0.0,
                 max_retries: int = 2, shard_size: int = 100_000, poll_seconds: float = 0.5,
                 device: str = "auto", connect_seconds: float = 120.0,
                 wait_for_resources_seconds: float = 600.0) -> None:
        try:
            import ray
        except ImportError as e:
            raise RuntimeError("TRAINING_BACKEND=ray needs Ray: pip install 'sae-backend[ray]'") from e
        self.ray = ray
        self.address, self.connect_seconds = address, connect_seconds
        if not ray.is_initialized():
            self._connect(address, connect_seconds)
        self.staging_dir = Path(staging_dir)
        if self.staging_dir.exists():  # models a killed service never picked up; their trainings are resumed
            shutil.rmtree(self.staging_dir, ignore_errors=True)
        self.shard_size = shard_size
        self.max_retries = max_retries
        self.poll_seconds = poll_seconds
        self.device = device
        self.needs = {"CPU": float(num_cpus), "GPU": float(num_gpus)}
        self.wait_for_resources_seconds = wait_for_resources_seconds  # a node may come back, or be started
        self._joining = threading.Lock()
        self._opts = {"num_cpus": num_cpus, "num_gpus": num_gpus, "max_retries": max_retries, "retry_exceptions": False}
        self._remotes()
        self._inflight: dict = {}
        self._closed = False
        self.workers: dict[int, dict] = {}

    def _connect(self, address: str | None, seconds: float) -> None:
        """Join the cluster, waiting for a head that is still starting (compose starts them side by side).

        ``ray://host:10001`` connects through Ray Client, from a machine that is not a Ray node (the
        compose setup); ``host:6379`` needs this machine to be a node of the cluster.
        """
        deadline = time.monotonic() + seconds
        while True:
            try:
                self.ray.init(address=address, ignore_reinit_error=True, log_to_driver=False, namespace="sae-backend")
                return
            except (ConnectionError, RuntimeError) as e:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"cannot reach the Ray cluster at {address or 'RAY_ADDRESS'}: {e}") from e
                log.info("waiting for the Ray cluster at %s: %s", address, e)
                time.sleep(2)

    def _remotes(self) -> None:
        self._train = self.ray.remote(train_on_worker).options(**self._opts)
        self._suggest = self.ray.remote(suggest_on_worker).options(**self._opts)
        self._score = self.ray.remote(score_on_worker).options(**self._opts)

    def _joined(self) -> None:
        """Join the cluster again where the session ended: a head restarted (an upgrade, a crash) ends a Ray Client
        session for good, and every job would fail until the service restarted."""
        with self._joining:  # trainings of several projects at once: one joins, the others find it joined
            if not self.ray.is_initialized():
                log.warning("the Ray session ended (the head restarted?); joining the cluster again")
                self._connect(self.address, self.connect_seconds)
                self._remotes()

    def _lacking(self) -> str | None:
        """What one task asks for that no live node of the cluster has, or None (also where the cluster cannot say)."""
        try:
            nodes = [n.get("Resources") or {} for n in self.ray.nodes() if n.get("Alive")]
        except Exception:
            return None
        if any(all(float(r.get(k, 0.0)) >= v for k, v in self.needs.items()) for r in nodes):
            return None
        most = {k: max((float(r.get(k, 0.0)) for r in nodes), default=0.0) for k in self.needs}
        return ", ".join(f"{k} {v:g}" for k, v in self.needs.items() if v > 0) + \
            f" on one node (the most any live node has: {', '.join(f'{k} {most[k]:g}' for k in self.needs)})"

    @classmethod
    def from_settings(cls, settings: Settings) -> RayTrainingBackend:
        return cls(Path(settings.model_dir) / "ray-staging", settings.ray_address, settings.ray_num_cpus,
                   settings.ray_num_gpus, settings.ray_max_retries, settings.ray_score_shard_size,
                   device=settings.device, wait_for_resources_seconds=settings.ray_wait_for_resources_seconds)

    def _wait(self, refs: list, project_id: int, stage_dir: Path | None, progress: Progress | None,
              what: str) -> list:
        """Wait for ``refs`` while relaying the worker's progress; Ray's failures become clear errors.

        The first task that fails fails the job at once and cancels the others: a pool scored in shards is of
        no use with one missing, and the others would hold the cluster's workers for nothing.
        """
        ray = self.ray
        what = f"{what} for project {project_id}" if project_id >= 0 else what
        for ref in refs:
            self._inflight[ref] = project_id
        pending, results = list(refs), {}
        lacking_since: float | None = None
        checked: float | None = None
        try:
            while pending:
                if self._closed:
                    raise JobCancelledError(f"{what} was cancelled")
                now = time.monotonic()
                if checked is None or now - checked >= RESOURCE_CHECK_SECONDS:  # else no node takes it, for good
                    checked, lacking = now, self._lacking()
                    lacking_since = None if lacking is None else (lacking_since or checked)
                    if lacking_since is not None and checked - lacking_since >= self.wait_for_resources_seconds:
                        raise RuntimeError(f"{what} cannot run on the Ray cluster: a task asks for {lacking} "
                                           "(RAY_NUM_CPUS, RAY_NUM_GPUS); no node has had them for "
                                           f"{checked - lacking_since:.0f} s (RAY_WAIT_FOR_RESOURCES_SECONDS)")
                ready, pending = ray.wait(pending, num_returns=len(pending), timeout=self.poll_seconds)
                results.update(zip(ready, ray.get(ready), strict=True))
                if stage_dir is not None:
                    self._relay(stage_dir, project_id, progress)
                elif progress and len(refs) > 1:
                    done = len(refs) - len(pending)
                    progress(f"{what}: {done}/{len(refs)} shards", done / len(refs))
            return [results[ref] for ref in refs]
        except ray.exceptions.TaskCancelledError as e:
            raise JobCancelledError(f"{what} was cancelled") from e
        except ray.exceptions.RayTaskError as e:
            raise e.as_instanceof_cause() from None
        except ray.exceptions.RayError as e:
            raise RuntimeError(f"{what} failed on the Ray cluster after {self.max_retries} retries: "
                               f"{type(e).__name__}: {e}") from e
        finally:
            for ref in pending:
                with contextlib.suppress(Exception):  # a task that just finished or was lost cannot be cancelled
                    ray.cancel(ref)
            for ref in refs:
                self._inflight.pop(ref, None)

    def _relay(self, stage_dir: Path, project_id: int, progress: Progress | None) -> None:
        try:
            info = json.loads((stage_dir / PROGRESS_FILE).read_text())
        except (OSError, ValueError):
            return
        self.workers[project_id] = info
        if progress:
            progress(f"{info['stage']} (Ray worker {info['host']}:{info['pid']})", float(info["fraction"]))

    @contextlib.contextmanager
    def _staged(self, project_id: int) -> Iterator[Path]:
        """A staging folder for one job's model and progress, gone (with the job's progress) afterwards."""
        stage = self.staging_dir / f"project-{project_id}-{uuid.uuid4().hex[:12]}"
        stage.mkdir(parents=True)
        try:
            yield stage
        finally:
            shutil.rmtree(stage, ignore_errors=True)
            self.workers.pop(project_id, None)

    def run(self, job: TrainingJob, progress: Progress | None = None) -> TrainingResult:
        self._joined()
        with self._staged(job.project_id) as stage:
            (path, metrics), = self._wait([self._train.remote(job, str(stage))], job.project_id, stage, progress,
                                          "the training")
            model = load_model(path, self.device)
            attempts = len(list(stage.glob("attempt-*")))
        return TrainingResult(model, {**metrics, "backend": "ray", "attempts": attempts})

    def suggest(self, job: TrainingJob, k: int, progress: Progress | None = None) -> np.ndarray:
        self._joined()
        with self._staged(job.project_id) as stage:
            (picks,) = self._wait([self._suggest.remote(job, k, str(stage))], job.project_id, stage, progress,
                                  "the cold start")
        return np.asarray(picks, np.int64)

    def score(self, job: ScoringJob, model: SAEClassifier, progress: Progress | None = None) -> list[ShardScores]:
        """One shard scores in this process with the model at hand; more go to the cluster in parallel."""
        shards = job.shards(self.shard_size)
        if len(shards) == 1:
            return super().score(job, model, progress)
        self._joined()
        ref = self.ray.put(job)
        return self._wait([self._score.remote(ref, a, b) for a, b in shards], -1, None, progress,
                          "scoring the pool")

    def close(self) -> None:
        """Cancel every job still running on the cluster (the jobs resume when the service starts again)."""
        self._closed = True
        for ref in list(self._inflight):
            try:
                self.ray.cancel(ref, force=True)
            except Exception as e:  # a finished or lost task cannot be cancelled; nothing else to do
                log.debug("cancel failed: %s", e)
