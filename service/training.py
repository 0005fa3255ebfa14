"""One training job for one project: gather the pool, fit, evaluate.

The job is a plain function of its inputs (tasks in, model and metrics out) behind
:class:`TrainingBackend`, so it can later run on a GPU worker or a cluster: the service
only needs ``run(job) -> TrainingResult``.
"""

from __future__ import annotations

import copy
import io
import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.svm import LinearSVC

from connectors.annotations import resolve_label
from connectors.label_config import LabelConfig
from connectors.task_data import DataFetcher, TaskDataError
from model.sae_classifier import SAEClassifier

log = logging.getLogger("sae_backend.training")
Progress = Callable[[str, float], None]


@dataclass
class Pool:
    """Every usable task of a project as arrays; ``y`` is -1 for unlabeled tasks."""

    task_ids: np.ndarray
    x: np.ndarray
    y: np.ndarray
    task_data: dict[int, dict] = field(default_factory=dict)
    skipped: dict[int, str] = field(default_factory=dict)
    problems: dict[int, str] = field(default_factory=dict)


@dataclass
class TrainingJob:
    project_id: int
    config: LabelConfig
    pool: Pool
    previous: SAEClassifier | None
    epochs: int
    warm_epochs: int
    latent_dim: int
    lam: float
    device: str
    progress: Progress | None = None
    max_shift: int = 0


@dataclass
class TrainingResult:
    model: SAEClassifier
    metrics: dict


def pick_image_format(raw: bytes, size: int | None) -> tuple[str, int]:
    """Grey or colour, and the square side every image of the project is resized to."""
    from PIL import Image

    with Image.open(io.BytesIO(raw)) as img:
        rgb = img.convert("RGB")
        arr = np.asarray(rgb)
        grey = bool(np.all(arr[..., 0] == arr[..., 1]) and np.all(arr[..., 1] == arr[..., 2]))
        side = size or max(img.size)
    return ("L" if grey else "RGB"), int(min(max(side, 8), 128))


def _chunks(items: Iterable[dict], size: int) -> Iterable[list[dict]]:
    chunk: list[dict] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def gather_pool(tasks: Iterable[dict], config: LabelConfig, fetcher: DataFetcher, fmt: dict,
                extra_labels: dict[int, list[dict]] | None = None, progress: Progress | None = None,
                workers: int = 8, chunk_size: int = 256) -> Pool:
    """Load every task; a task whose data cannot be read is skipped with its reason.

    Tasks stream in pages and items are fetched by a few threads at a time: downloads wait on
    the network, not the CPU, and one at a time a first training of thousands of images would
    spend minutes on round trips.
    """
    ids, xs, ys = [], [], []
    skipped: dict[int, str] = {}
    problems: dict[int, str] = {}
    data: dict[int, dict] = {}
    extra_labels = extra_labels or {}

    def load(value: object) -> np.ndarray | TaskDataError:
        try:
            return fetcher.load_item(value, config.kind, fmt.get("mode", "L"), fmt.get("size"))
        except TaskDataError as e:
            return e

    seen = 0
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fetch") as pool:
        for chunk in _chunks(tasks, chunk_size):
            todo = []
            for task in chunk:
                tid = int(task["id"])
                value = (task.get("data") or {}).get(config.data_key)
                if value is None:
                    skipped[tid] = f"task data has no {config.data_key!r} field"
                    continue
                label = resolve_label(list(task.get("annotations") or []) + list(extra_labels.get(tid, [])), config)
                if label.problem:
                    problems[tid] = label.problem
                if config.kind == "image" and "mode" not in fmt:
                    try:
                        fmt["mode"], fmt["size"] = pick_image_format(fetcher.fetch_bytes(value), fmt.get("size"))
                    except (TaskDataError, OSError, ValueError) as e:
                        skipped[tid] = str(e)
                        continue
                todo.append((tid, value, label, task.get("data") or {}))
            for (tid, _, label, task_data), item in zip(todo, pool.map(load, [t[1] for t in todo]), strict=True):
                if isinstance(item, TaskDataError):
                    skipped[tid] = str(item)
                    continue
                if xs and item.shape != xs[0].shape:
                    skipped[tid] = f"item shape {item.shape} differs from the project's {xs[0].shape}"
                    continue
                ids.append(tid)
                xs.append(item)
                ys.append(-1 if label.class_index is None else label.class_index)
                data[tid] = task_data
            seen += len(chunk)
            if progress:
                progress(f"loading tasks ({seen})", 0.0)
    if not xs:
        return Pool(np.zeros(0, np.int64), np.zeros((0, 1), np.float32), np.zeros(0, np.int64), data, skipped,
                    problems)
    return Pool(np.asarray(ids, np.int64), np.stack(xs).astype(np.float32), np.asarray(ys, np.int64), data,
                skipped, problems)


def cv_accuracy(z: np.ndarray, y: np.ndarray, folds: int = 5) -> float | None:
    """Cross-validated accuracy of the latent SVM on labeled items (None when too few per class)."""
    counts = np.bincount(y)
    counts = counts[counts > 0]
    k = int(min(folds, counts.min())) if len(counts) >= 2 else 0
    if k < 2:
        return None
    cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=0)
    return float(np.mean(cross_val_score(LinearSVC(dual="auto", max_iter=5000), z, y, cv=cv)))


def train_project(job: TrainingJob) -> TrainingResult:
    """Fit the SAE + SVM on the pool, warm-starting from the version in service when shapes agree."""
    pool = job.pool
    labeled = pool.y >= 0
    if len(np.unique(pool.y[labeled])) < 2:
        raise ValueError(f"need labels of at least two classes to train; have {int(labeled.sum())} labeled tasks")
    t0 = time.perf_counter()
    prev = job.previous
    warm = prev is not None and tuple(prev.sae_.input_shape_) == tuple(pool.x.shape[1:]) \
        and prev.n_classes_ == len(job.config.classes)

    def on_epoch(epoch: int, total: int, record: dict) -> None:
        if job.progress:
            job.progress(f"epoch {epoch}/{total}", epoch / max(total, 1))

    if warm:
        model = copy.deepcopy(prev)
        model.set_params(warm_start=True, epochs=job.warm_epochs, device=job.device,
                         sae_params={**(model.sae_params or {}), "max_shift": job.max_shift})
        model.sae_.set_params(on_epoch=on_epoch)
    else:
        model = SAEClassifier(class_names=list(job.config.classes), latent_dim=job.latent_dim, lam=job.lam,
                              epochs=job.epochs, device=job.device,
                              sae_params={"on_epoch": on_epoch, "max_shift": job.max_shift})
    model.fit(pool.x, pool.y)
    model.sae_.set_params(on_epoch=None)
    if model.sae_params:
        model.sae_params = {k: v for k, v in model.sae_params.items() if k != "on_epoch"}
    seconds = time.perf_counter() - t0
    z_lab = model.transform(pool.x[labeled])
    metrics = {"labeled": int(labeled.sum()), "unlabeled": int((~labeled).sum()),
               "cv_accuracy": cv_accuracy(z_lab, pool.y[labeled]), "train_seconds": round(seconds, 3),
               "warm_start": bool(warm), "skipped": len(pool.skipped)}
    return TrainingResult(model, metrics)


class TrainingBackend:
    """Where training runs. The local backend runs it in the calling (worker) thread."""

    def run(self, job: TrainingJob) -> TrainingResult:
        raise NotImplementedError


class LocalTrainingBackend(TrainingBackend):
    def run(self, job: TrainingJob) -> TrainingResult:
        return train_project(job)
