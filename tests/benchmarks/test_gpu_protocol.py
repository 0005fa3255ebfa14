"""The full-data GPU protocol script, run end to end on the CPU with tiny settings (it has never had a GPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.idx_files import write_idx

ROOT = Path(__file__).resolve().parents[2]


def _fashion_like(directory: Path, n_train: int = 400, n_test: int = 100) -> None:
    """28x28 images in Fashion-MNIST's IDX layout: a bright band whose height says the class."""
    directory.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        y = np.arange(n) % 10
        x = rng.integers(0, 60, (n, 28, 28))
        for i, c in enumerate(y):
            x[i, 2 * c:2 * c + 6, 4:24] += 180
        write_idx(directory / f"{prefix}-images-idx3-ubyte", x.astype(np.uint8))
        write_idx(directory / f"{prefix}-labels-idx1-ubyte", y.astype(np.uint8))


def test_the_gpu_protocol_runs_each_variant_and_seed_as_its_own_process(tmp_path) -> None:
    _fashion_like(tmp_path / "data")
    out = tmp_path / "out"
    variant = "lam099:sae+margin:--max-shift 2 --flip --initial-strategy typicality --lam 0.99"
    env = {**os.environ, "PY": sys.executable, "DATA": str(tmp_path / "data"), "OUT": str(out), "DEV": "cpu",
           "POOL": "200", "EPOCHS": "1", "WARM": "1", "ROUNDS": "1", "VAL": "100", "TEST": "100", "LIMIT": "300",
           "SEEDS": "0 1", "VARIANTS": variant}
    done = subprocess.run(["bash", "benchmarks/gpu_protocol.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    assert "cuda False" in (out / "device.txt").read_text(), "the device is recorded beside the runs"
    for seed in (0, 1):
        data = json.loads((out / f"lam099-s{seed}" / "curve.json").read_text())
        assert [(r["model"], r["strategy"], r["seed"], r["tag"]) for r in data["runs"]] == [
            ("sae", "margin", seed, "fm10-lam099")]
        assert [p["labeled"] for p in data["runs"][0]["curve"]] == [100, 200]
        assert "val_error" in data["runs"][0]["curve"][-1], "settings are chosen on the carved validation set"
        s = data["settings"]
        assert (s["lam"], s["flip"], s["max_shift"], s["initial_strategy"], s["validation_size"]) == (
            0.99, True, 2, "typicality", 100), "the variant's arguments reach the run"
