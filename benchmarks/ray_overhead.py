"""Training and scoring through Ray against the same jobs run in one process, on the same machine.

Starts a Ray head on loopback (``--num-cpus`` of this machine, nothing else attached), builds a
pool store of Fashion-MNIST training images (scikit-learn's digits upscaled when it is not
installed), and times, ``--repeats`` times each, alternating the arms so a busy machine slows
both alike:

* training: ``train_project`` in this process vs ``RayTrainingBackend.run`` (one task given
  every CPU, so both arms train with the same threads); the first Ray call, which starts a
  worker process and imports torch, is reported on its own;
* scoring the pool with the saved version: one process (``LocalTrainingBackend.score``) vs
  shards of ``--shard-size`` over one-CPU Ray tasks (as many at once as there are CPUs);
* peak memory: this process's peak RSS, and the largest peak RSS of any Ray worker.

    python benchmarks/ray_overhead.py --pool 60000 --labels 1000 --out benchmarks/results/ray-overhead-cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import timed

from connectors.datasets import FASHION_MNIST_DIR, DatasetError, load_digits_dataset, read_idx
from connectors.ray_head import RayHead
from model.persistence import save_model
from service.pool_store import PoolStore
from service.settings import SAESettings
from service.training import LocalTrainingBackend, ScoringJob, TrainingJob, train_project


def pool_images(n: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        x = read_idx(Path(FASHION_MNIST_DIR) / "train-images-idx3-ubyte.gz")
        y = read_idx(Path(FASHION_MNIST_DIR) / "train-labels-idx1-ubyte.gz").astype(np.int64)
    except (DatasetError, OSError):
        d = load_digits_dataset()
        x = np.rint(np.kron(d.x_train, np.ones((1, 3, 3))) * 255).astype(np.uint8)
        y = d.y_train
    reps = -(-n // len(x))
    return np.tile(x, (reps, 1, 1))[:n], np.tile(y, reps)[:n]


def worker_peak_rss_mb() -> float:
    """The largest VmHWM among this machine's Ray worker processes (``ray::`` in their name)."""
    peak = 0.0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        if "Name:\tray::" not in text:
            continue
        for line in text.splitlines():
            if line.startswith("VmHWM:"):
                peak = max(peak, int(line.split()[1]) / 1024)
    return round(peak, 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pool", type=int, default=60000)
    p.add_argument("--train-items", type=int, default=10000, help="training runs on the first items of the pool")
    p.add_argument("--labels", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--channels", default="16,32,64")
    p.add_argument("--shard-size", type=int, default=15000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    import ray
    import torch

    from service.ray_backend import RayTrainingBackend

    cpus = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="ray-overhead-") as tmp, RayHead(Path(tmp) / "ray", num_cpus=cpus):
        work = Path(tmp)
        x, y = pool_images(a.pool)
        ids = np.arange(1, a.pool + 1, dtype=np.int64)
        store = PoolStore(work / "pool", fsync=False)
        store.append(ids, x)
        store.close()
        rng = np.random.default_rng(0)
        labeled = np.sort(rng.choice(a.train_items, a.labels, replace=False))
        labels = {int(ids[i]): int(y[i]) for i in labeled}
        classes = [str(c) for c in range(int(y.max()) + 1)]
        sae = SAESettings(epochs=a.epochs, channels=tuple(int(c) for c in a.channels.split(",")))
        job = TrainingJob(1, str(work / "pool"), ids[: a.train_items], labels, classes, sae, None, "cpu")

        trainer = RayTrainingBackend(work / "staging", num_cpus=cpus, poll_seconds=0.1, device="cpu")
        scorer = RayTrainingBackend(work / "staging-score", num_cpus=1, shard_size=a.shard_size, device="cpu")
        _, first_ray = timed(lambda: trainer.run(job))
        train_project(job)  # the local arm's first call (torch's own start-up), untimed like Ray's
        train = {"local": [], "ray": []}
        result = None
        for _ in range(a.repeats):
            result, s = timed(lambda: train_project(job))
            train["local"].append(s)
            _, s = timed(lambda: trainer.run(job))
            train["ray"].append(s)
        save_model(result.model, work / "v1")
        scoring = ScoringJob(str(work / "pool"), ids, np.fromiter(labels, np.int64), str(work / "v1"), "margin",
                             1000, device="cpu")
        scorer.score(scoring, result.model)  # starts the scoring workers, untimed
        LocalTrainingBackend().score(scoring, result.model)
        score = {"local": [], "ray": []}
        for _ in range(a.repeats):
            _, s = timed(lambda: LocalTrainingBackend().score(scoring, result.model))
            score["local"].append(s)
            shards, s = timed(lambda: scorer.score(scoring, result.model))
            score["ray"].append(s)
        out = {
            "benchmark": "ray_overhead", "pool": a.pool, "train_items": a.train_items, "labels": a.labels,
            "epochs": a.epochs, "channels": a.channels, "shard_size": a.shard_size, "shards": len(shards),
            "repeats": a.repeats, "ray": ray.__version__, "torch": torch.__version__, "cpu_count": cpus,
            "torch_threads_local": torch.get_num_threads(), "python": platform.python_version(),
            "machine": platform.processor() or platform.machine(),
            "train_seconds": train, "first_ray_train_seconds": first_ray,
            "score_seconds": score,
            "score_items_per_s": {k: [round(a.pool / s, 1) for s in v] for k, v in score.items()},
            "peak_rss_mb": {"service_process": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                            "largest_ray_worker": worker_peak_rss_mb()},
        }
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(out, indent=1))
        print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
