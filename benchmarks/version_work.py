"""The backend's own work per model version at a million items, without Label Studio.

Builds a pool of N uint8 28x28 images on disk as a memmap (Fashion-MNIST tiled when it is
installed, else scikit-learn's digits upscaled; small random noise makes every item differ)
with L labels, then times separately: (a) writing the pool store, (b) a warm-started retrain
with a step budget (after an untimed first fit with a smaller budget), (c) encoding the whole
pool, (d) the SVM decision over the pool, confidences and the margin ranking of the top K.
The pool is never a float32 array whole: the model stages it as uint8 and converts by batch.

    python benchmarks/version_work.py --n 1000000 --steps 200 --out version-work.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from connectors.datasets import FASHION_MNIST_DIR, DatasetError, load_digits_dataset, read_idx
from model.acquisition import MarginSampling
from model.device import resolve_device
from model.sae import StructuringAutoencoder, as_pool_array
from model.sae_classifier import SAEClassifier

T = TypeVar("T")
SIDE = 28
NOISE = 8  # pixel values added at random, 0..NOISE-1: enough to make tiled copies differ


def _fashion_mnist_uint8() -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST's train split as stored (uint8): no float copy to round back."""
    parts = []
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        found = [FASHION_MNIST_DIR / f"{stem}{suffix}" for suffix in ("", ".gz")]
        found = [f for f in found if f.exists()]
        if not found:
            raise DatasetError(f"no {stem}[.gz] in {FASHION_MNIST_DIR}")
        parts.append(read_idx(found[0]))
    return parts[0], parts[1].astype(np.int64)


def source_images() -> tuple[np.ndarray, np.ndarray, str]:
    """uint8 images (m, 28, 28) and their labels to tile the pool from."""
    if FASHION_MNIST_DIR.exists():
        try:
            return (*_fashion_mnist_uint8(), "fashion-mnist")
        except DatasetError as e:
            print(f"fashion-mnist unreadable ({e}); using digits", file=sys.stderr)
    ds = load_digits_dataset()
    x = np.concatenate([ds.x_train, ds.x_test])[:, 0]
    x = x.repeat(3, axis=1).repeat(3, axis=2)
    pad = (SIDE - x.shape[1]) // 2
    x = np.pad(x, ((0, 0), (pad, SIDE - x.shape[1] - pad), (pad, SIDE - x.shape[2] - pad)))
    return np.round(x * 255).astype(np.uint8), np.concatenate([ds.y_train, ds.y_test]), "digits-upscaled"


def write_pool(path: Path, n: int, src: np.ndarray, src_labels: np.ndarray, rng: np.random.Generator,
               chunk: int = 32768) -> tuple[np.ndarray, float, float]:
    """Write the pool as a ``.npy`` file, chunk by chunk as a store is filled, and fsync it.

    Returns the true labels, the seconds spent generating and the seconds spent writing.
    Plain writes rather than a writable memmap keep the written pages out of this process's RSS.
    """
    generate = write = 0.0
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": (n, SIDE, SIDE)})
        for s in range(0, n, chunk):
            t0 = time.perf_counter()
            idx = np.arange(s, min(s + chunk, n)) % len(src)
            noise = rng.integers(0, NOISE, (len(idx), SIDE, SIDE), dtype=np.uint8)
            block = np.minimum(src[idx], 255 - NOISE) + noise
            t1 = time.perf_counter()
            f.write(block.tobytes())
            write += time.perf_counter() - t1
            generate += t1 - t0
        t0 = time.perf_counter()
        f.flush()
        os.fsync(f.fileno())
        write += time.perf_counter() - t0
    return src_labels[np.arange(n) % len(src)], generate, write


def peak_rss_mb() -> float:
    """Peak resident memory so far; pages of the mapped pool that were read count too."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def anon_rss_mb() -> float | None:
    """Resident memory now without file-backed pages (the mapped pool), on Linux; a float pool would show here."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


class Phases:
    """Wall time of each phase, peak RSS so far (it only grows) and, on CUDA, the phase's peak GPU memory."""

    def __init__(self, dev: torch.device) -> None:
        self.dev = dev
        self.result: dict[str, dict] = {}

    def _sync(self) -> None:
        if self.dev.type == "cuda":
            torch.cuda.synchronize(self.dev)

    def run(self, name: str, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
        if self.dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.dev)
        self._sync()
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        self._sync()
        rec = {"seconds": round(time.perf_counter() - t0, 4), "peak_rss_mb": peak_rss_mb(),
               "anon_rss_mb_after": anon_rss_mb()}
        if self.dev.type == "cuda":
            rec["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated(self.dev) / 2**20, 1)
        self.result[name] = rec
        print(f"{name}: {rec}", flush=True)
        return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000, help="pool size")
    p.add_argument("--labels", type=int, default=1000, help="labeled items (10 classes)")
    p.add_argument("--steps", type=int, default=200, help="step budget of the timed warm retrain")
    p.add_argument("--first-steps", type=int, default=20, help="step budget of the untimed first fit")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--channels", default="16,32,64")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--encode-batch", type=int, default=None,
                   help="items per encoding batch (default 8192 on CUDA, 4096 elsewhere: activations dominate RSS)")
    p.add_argument("--top-k", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default=None, help="folder for the pool file (default: a temporary folder)")
    p.add_argument("--out", default=None, help="write the result as JSON to this file")
    a = p.parse_args(argv)
    if a.labels < 2 or a.labels > a.n:
        p.error("--labels must be between 2 and --n")

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a timeout still removes the pool file
    load_before = os.getloadavg()
    own_dir = a.workdir is None
    work = Path(tempfile.mkdtemp(prefix="version-work-") if own_dir else a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"pool-{os.getpid()}.npy"
    rng = np.random.default_rng(a.seed)
    channels = tuple(int(c) for c in a.channels.split(","))
    try:
        src, src_labels, source = source_images()
        y_true, gen_s, write_s = write_pool(path, a.n, src, src_labels, rng)
        del src
        pool_mb = a.n * SIDE * SIDE / 1e6
        print(f"pool: {a.n} items from {source}, {pool_mb:.0f} MB written in {write_s:.2f} s", flush=True)
        pool = np.load(path, mmap_mode="r")
        y = np.full(a.n, -1, dtype=np.int64)
        chosen = rng.choice(a.n, a.labels, replace=False)
        y[chosen] = y_true[chosen]

        clf = SAEClassifier(class_names=[str(c) for c in range(10)], epochs=1, device=a.device,
                            random_state=a.seed,
                            sae_params={"channels": channels, "batch_size": a.batch_size,
                                        "steps_per_epoch": a.first_steps})
        dev = resolve_device(a.device)
        encode_batch = a.encode_batch or (8192 if dev.type == "cuda" else 4096)
        phases = Phases(dev)
        phases.run("first_fit", clf.fit, pool, y)  # a model to warm-start from; not the figure of interest
        phases.run("stage_pool", lambda: StructuringAutoencoder._stage(as_pool_array(pool), dev))
        clf.set_params(warm_start=True, epochs=1,
                       sae_params={**clf.sae_params, "steps_per_epoch": a.steps})
        phases.run("warm_retrain", clf.fit, pool, y)
        z = phases.run("encode_pool", clf.sae_.transform, pool, batch_size=encode_batch)

        unlabeled = np.flatnonzero(y < 0)

        def rank() -> np.ndarray:
            scores = clf.svm_.decision_function(z)
            clf.svm_.confidence_from_scores(scores)
            return MarginSampling().query(scores[unlabeled], a.top_k).indices

        top = phases.run("svm_and_ranking", rank)
        scores = clf.svm_.decision_function(z)
        error = float(np.mean(np.argmax(scores[unlabeled], axis=1) != y_true[unlabeled]))
        result = {
            "benchmark": "version_work",
            "n": a.n, "labels": a.labels, "source": source, "pool_mb": round(pool_mb, 1),
            "device": str(dev), "device_name": device_name(dev), "torch": torch.__version__,
            "numpy": np.__version__, "python": platform.python_version(), "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "load_average_1m": {"before": round(load_before[0], 2), "after": round(os.getloadavg()[0], 2)},
            "settings": {"steps": a.steps, "first_steps": a.first_steps, "channels": list(channels),
                         "batch_size": a.batch_size, "labeled_per_batch": clf.sae_.labeled_per_batch,
                         "latent_dim": clf.sae_.latent_dim, "encode_batch": encode_batch, "top_k": a.top_k,
                         "amp": clf.sae_.amp, "seed": a.seed},
            "pool_write": {"seconds": round(write_s, 4), "mb_per_s": round(pool_mb / write_s, 1),
                           "generate_seconds": round(gen_s, 4)},
            **phases.result,
            "warm_retrain_epoch_seconds": round(clf.sae_.history_[-1]["seconds"], 4),
            "encode_items_per_s": round(a.n / phases.result["encode_pool"]["seconds"]),
            "ranked": len(top),
            "error_on_unlabeled": round(error, 4),
            "peak_rss_mb": peak_rss_mb(),
            "rss_note": "peak_rss_mb counts the pages of the mapped pool that were read (up to pool_mb, "
                        "page cache the kernel can drop); anon_rss_mb_after leaves them out",
        }
        if dev.type == "cuda":
            result["peak_gpu_mb"] = max(r.get("peak_gpu_mb", 0) for r in phases.result.values())
    finally:
        path.unlink(missing_ok=True)
        if own_dir:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result, indent=1))
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
