"""Seconds per training epoch of the SAE over a 60k-image pool (Fashion-MNIST train split).

    python benchmarks/epoch_time.py --device cpu --epochs 2 --channels 32,64,128
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from connectors.datasets import load_fashion_mnist
from model.sae import StructuringAutoencoder


def _peak_rss_mb() -> float:
    """Peak resident memory of this process (data set, model, optimiser and batches)."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data-path", default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--channels", default="32,64,128")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--labels", type=int, default=1000)
    p.add_argument("--json", default=None, help="append the result as a JSON line to this file")
    a = p.parse_args()
    ds = load_fashion_mnist(a.data_path)
    rng = np.random.default_rng(0)
    y = np.full(len(ds.y_train), -1)
    lab = rng.choice(len(y), a.labels, replace=False)
    y[lab] = ds.y_train[lab]
    ch = tuple(int(c) for c in a.channels.split(","))
    sae = StructuringAutoencoder(epochs=a.epochs, channels=ch, batch_size=a.batch_size, device=a.device,
                                 n_classes=10).fit(ds.x_train, y)
    secs = [h["seconds"] for h in sae.history_]
    device = str(sae.device_)
    name = torch.cuda.get_device_name(0) if sae.device_.type == "cuda" else platform.processor() or platform.machine()
    res = {"device": device, "device_name": name, "threads": torch.get_num_threads(), "channels": ch,
           "batch_size": a.batch_size, "items": len(y), "epoch_seconds": secs,
           "median_epoch_seconds": float(np.median(secs)), "peak_rss_mb": _peak_rss_mb(),
           "peak_gpu_mb": (round(torch.cuda.max_memory_allocated() / 2**20, 1)
                           if sae.device_.type == "cuda" else None)}
    print(json.dumps(res))
    if a.json:
        with open(a.json, "a") as f:
            f.write(json.dumps(res) + "\n")


if __name__ == "__main__":
    main()
