"""A project's jobs, and where they run: training (read the pool, fit, evaluate) and scoring the pool.

The jobs are plain data (:class:`TrainingJob`: where the pool is stored, which tasks carry
which label, the settings, the version to warm-start from; :class:`ScoringJob`: the pool,
the saved version, the strategy), so they can run in another process or on another
machine that sees the same files: the service only needs ``backend.run(job, progress)
-> TrainingResult`` and ``backend.score(job, model) -> [ShardScores]``.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.svm import LinearSVC

from model.acquisition import TypicalitySampling, get_strategy
from model.persistence import load_model
from model.sae import StructuringAutoencoder
from model.sae_classifier import PASSED_SAE_PARAMS, SAEClassifier
from service.pool_store import PoolStore
from service.served import ShardScores, score_shard
from service.settings import SAESettings

log = logging.getLogger("sae_backend.training")
READ_THROUGH_DEAD_SHARE = 0.25  # of a training's stretch of rows: deleted tasks' rows read through, not gathered around
SCORE_SHARD = 1 << 16  # tasks a local scoring shard reads at a time: a pool with gaps gathers one shard, not all
Progress = Callable[[str, float], None]


@dataclass(frozen=True)
class TrainingJob:
    project_id: int
    pool_dir: str
    task_ids: np.ndarray
    labels: dict[int, int]
    class_names: list[str]
    sae: SAESettings = field(default_factory=SAESettings)
    previous_dir: str | None = None
    device: str = "auto"
    class_distances: tuple[tuple[float, ...], ...] | None = None  # K x K in class_names' order; None: all equal


@dataclass(frozen=True)
class ScoringJob:
    """Score every stored task with a saved version, in shards that can run anywhere the files are."""

    pool_dir: str
    task_ids: np.ndarray
    labeled_ids: np.ndarray
    version_dir: str
    strategy: str
    keep: int
    seed: int = 0
    device: str = "auto"

    def shards(self, size: int) -> list[tuple[int, int]]:
        """``(start, stop)`` positions into ``task_ids``, at most ``size`` each (one empty shard for no tasks)."""
        n = len(self.task_ids)
        return [(a, min(a + size, n)) for a in range(0, n, size)] or [(0, 0)]


class JobCancelledError(RuntimeError):
    """The backend stopped a job because the service is shutting down; it resumes at the next start."""


@dataclass
class TrainingResult:
    model: SAEClassifier
    metrics: dict


def pool_items(store: PoolStore, task_ids: np.ndarray) -> np.ndarray:
    """The stored items of these tasks: the memory map itself when they are its first rows in order."""
    rows = store.rows(task_ids)
    if len(rows) and np.array_equal(rows, np.arange(rows[0], rows[0] + len(rows))):
        return store.items()[rows[0]: rows[0] + len(rows)]
    return store.items(rows)


def live_items(pool_dir: str, task_ids: np.ndarray, store: PoolStore | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The job's tasks still stored, and their items: a task deleted since the job was made is left out. ``store``:
    the pool already open (opening reads its whole index), else it is opened here."""
    store, ids = _stored(pool_dir, task_ids, store)
    return ids, pool_items(store, ids)


def _stored(pool_dir: str, task_ids: np.ndarray, store: PoolStore | None = None) -> tuple[PoolStore, np.ndarray]:
    """The pool (opened here unless given) and those of the job's tasks it still holds."""
    store = store if store is not None else PoolStore(pool_dir, read_only=True)
    ids = np.asarray(task_ids, np.int64)
    return store, ids[store.holds(ids)]


def pool_stretch(pool_dir: str, task_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(ids, items, live)`` for a training over the job's tasks still stored, read from the memory map as it lies.

    A pool is compacted only once its deleted tasks' rows pass :data:`~service.pool_store.COMPACT_DEAD_SHARE`, so
    the tasks' rows may have gaps; gathering them would copy the whole pool into memory. Where the gaps are at most
    :data:`READ_THROUGH_DEAD_SHARE` of the stretch from the first task's row to the last, the stretch is read as it
    lies and a gap row is an item of no task (id -1, ``live`` False), which the fit reads past (its ``mask``): never
    trained on, labeled, suggested or scored. Otherwise the items are gathered.
    """
    store, ids = _stored(pool_dir, task_ids)
    rows = store.rows(ids)
    if len(rows) and bool(np.all(np.diff(rows) > 0)):
        lo, hi = int(rows[0]), int(rows[-1]) + 1
        if hi - lo - len(rows) <= READ_THROUGH_DEAD_SHARE * (hi - lo):
            stretch = np.full(hi - lo, -1, np.int64)
            stretch[rows - lo] = ids
            return stretch, store.items()[lo:hi], stretch >= 0
    return ids, store.items(rows), np.ones(len(ids), bool)


def cv_accuracy(z: np.ndarray, y: np.ndarray, folds: int = 5) -> float | None:
    """Cross-validated accuracy of the latent SVM on labeled items (None when too few per class)."""
    counts = np.bincount(y)
    counts = counts[counts > 0]
    k = int(min(folds, counts.min())) if len(counts) >= 2 else 0
    if k < 2:
        return None
    cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=0)
    return float(np.mean(cross_val_score(LinearSVC(dual="auto", max_iter=5000, random_state=0), z, y, cv=cv)))


def _same_networks(prev: SAEClassifier, s: SAESettings) -> bool:
    """Would these settings build the networks ``prev`` has? Only what its network kind is built from counts."""
    probe = copy.copy(prev.sae_)  # shallow: a user's own encoder stays the same object
    probe.set_params(latent_dim=int(s.latent_dim), channels=tuple(s.channels))
    return probe._architecture(prev.sae_.input_shape_) == prev.sae_._architecture(prev.sae_.input_shape_)


def train_project(job: TrainingJob, progress: Progress | None = None) -> TrainingResult:
    """Fit the SAE + SVM on the pool, warm-starting from the previous version when shapes agree."""
    ids, x, live = pool_stretch(job.pool_dir, job.task_ids)
    y = np.fromiter((job.labels.get(int(t), -1) for t in ids), np.int64, len(ids))
    labeled = (y >= 0) & live
    if len(np.unique(y[labeled])) < 2:
        raise ValueError(f"need labels of at least two classes to train; have {int(labeled.sum())} labeled tasks")
    t0 = time.perf_counter()
    prev = load_model(job.previous_dir, job.device) if job.previous_dir else None
    s = job.sae
    # reordered classes would swap their positions; another latent size or encoder width needs new networks
    # codes pulled by labels a holdout keeps out would still carry them: where this training holds labels out, another
    # holdout, or a version whose few labels all pulled (held ones too), trains afresh (the model's own rule)
    warm = prev is not None and tuple(prev.sae_.input_shape_[-x.ndim + 1:]) == tuple(x.shape[1:]) \
        and list(prev.class_names or []) == list(job.class_names) and _same_networks(prev, s) \
        and copy.copy(prev).set_params(calibration_holdout=s.calibration_holdout).keeps_networks(y, ids)

    def on_epoch(epoch: int, total: int, record: dict) -> None:
        if progress:
            progress(f"epoch {epoch}/{total}", epoch / max(total, 1))

    semi = dict(self_training=s.self_training, self_training_threshold=s.self_training_threshold,
                semi_supervised_from=s.semi_supervised_from, test_time_flip=s.test_time_flip,
                calibration_holdout=s.calibration_holdout)
    distances = None if job.class_distances is None else np.asarray(job.class_distances, np.float64)
    trains = {k: getattr(s, k) for k in PASSED_SAE_PARAMS if hasattr(s, k)}  # every training's, first or warm
    trains.update(channels=tuple(s.channels), class_distances=distances)
    if warm:  # the fit trains copies of prev's networks
        model = copy.copy(prev).set_params(
            warm_start=True, epochs=s.warm_epochs, lam=s.lam, device=job.device, **semi,
            sae_params={**(prev.sae_params or {}), **trains, "steps_per_epoch": s.warm_steps, "on_epoch": on_epoch})
    else:
        model = SAEClassifier(class_names=list(job.class_names), latent_dim=s.latent_dim, lam=s.lam,
                              epochs=s.epochs, device=job.device, **semi,
                              sae_params={"on_epoch": on_epoch, **trains})
    model.fit(x, y, ids=ids, mask=live)  # task ids pick the calibration holdout: the same tasks in every version;
    # rows of deleted tasks are read past, never trained on
    model.sae_.set_params(on_epoch=None)
    if model.sae_params:
        model.sae_params = {k: v for k, v in model.sae_params.items() if k != "on_epoch"}
    seconds = time.perf_counter() - t0
    z_lab = model.transform(x[np.flatnonzero(labeled)])
    metrics = {"labeled": int(labeled.sum()), "unlabeled": int((~labeled & live).sum()),
               "cv_accuracy": cv_accuracy(z_lab, y[labeled]), "train_seconds": round(seconds, 3),
               "warm_start": bool(model.warm_started_)}
    return TrainingResult(model, metrics)


def score_pool(job: ScoringJob, start: int, stop: int, model: SAEClassifier | None = None,
               store: PoolStore | None = None) -> ShardScores:
    """Score tasks ``start:stop`` of the job (loading the saved version when no model is given; ``store``: the pool
    already open, for a caller scoring many shards)."""
    model = model if model is not None else load_model(job.version_dir, job.device)
    ids, x = live_items(job.pool_dir, job.task_ids[start:stop], store)
    strategy = get_strategy(job.strategy, job.seed + start)  # a seed of its own: shards draw different numbers
    return score_shard(model, ids, x, strategy, job.keep, np.isin(ids, job.labeled_ids))


def suggest_first(job: TrainingJob, k: int, progress: Progress | None = None) -> np.ndarray:
    """Cold start: the ``k`` task ids to label first, before any label exists (TypiClust on a plain autoencoder).

    A team's very first labels are worth most on typical items of the dense regions, so
    the autoencoder (λ = 0: reconstruction only) is trained on the whole pool and the
    most typical item of each of ``k`` latent clusters is suggested, largest cluster first.
    """
    ids, x, live = pool_stretch(job.pool_dir, job.task_ids)
    s = job.sae

    def on_epoch(epoch: int, total: int, record: dict) -> None:
        if progress:
            progress(f"cold start: epoch {epoch}/{total}", epoch / max(total, 1))

    ae = StructuringAutoencoder(latent_dim=s.latent_dim, lam=0.0, epochs=s.epochs, channels=tuple(s.channels),
                                max_shift=s.max_shift, flip=s.flip, steps_per_epoch=s.warm_steps,
                                device=job.device, on_epoch=on_epoch).fit(x, mask=live)
    tasks = np.flatnonzero(live)
    return ids[tasks][TypicalitySampling().first(ae.transform(x)[tasks], k)]


class TrainingBackend:
    """Where jobs run. The local backend runs them in the calling (job runner) thread."""

    def run(self, job: TrainingJob, progress: Progress | None = None) -> TrainingResult:
        raise NotImplementedError

    def suggest(self, job: TrainingJob, k: int, progress: Progress | None = None) -> np.ndarray:
        raise NotImplementedError

    def score(self, job: ScoringJob, model: SAEClassifier, progress: Progress | None = None) -> list[ShardScores]:
        """The pool's scores in shards, in pool order (here with the model already in memory, the pool opened once)."""
        with PoolStore(job.pool_dir, read_only=True) as store:
            return [score_pool(job, a, b, model, store) for a, b in job.shards(SCORE_SHARD)]

    def close(self) -> None:
        """Stop what is running elsewhere (the service is shutting down)."""


class LocalTrainingBackend(TrainingBackend):
    """Jobs in the calling thread; :meth:`close` stops a running one at its next epoch."""

    def __init__(self) -> None:
        self._closing = threading.Event()

    def _check(self, stage: str) -> None:
        if self._closing.is_set():
            raise JobCancelledError(f"stopped by the shutdown at {stage}")

    def _watched(self, progress: Progress | None) -> Progress:
        self._check("the start")

        def report(stage: str, fraction: float) -> None:
            self._check(stage)
            if progress:
                progress(stage, fraction)
        return report

    def run(self, job: TrainingJob, progress: Progress | None = None) -> TrainingResult:
        return train_project(job, self._watched(progress))

    def suggest(self, job: TrainingJob, k: int, progress: Progress | None = None) -> np.ndarray:
        return suggest_first(job, k, self._watched(progress))

    def score(self, job: ScoringJob, model: SAEClassifier, progress: Progress | None = None) -> list[ShardScores]:
        self._check("scoring")
        return super().score(job, model, progress)

    def close(self) -> None:
        self._closing.set()
