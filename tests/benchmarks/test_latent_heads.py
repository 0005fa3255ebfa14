"""Other heads on latent codes, read on held-out codes: fitted on the labeled codes, pool heads on the pool's too."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("latent_heads", ROOT / "benchmarks" / "latent_heads.py")
latent_heads = importlib.util.module_from_spec(spec)
sys.modules["latent_heads"] = latent_heads
spec.loader.exec_module(latent_heads)


class _Codes:
    """A model whose codes are its inputs: the heads see exactly the points made here."""

    n_classes_ = 3

    def transform(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.float64)


def _blobs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    return np.eye(3)[y] + rng.normal(0, 0.1, (n, 3)), y


def test_every_head_separates_well_separated_codes_and_reads_val_and_test() -> None:
    x, y_true = _blobs(300, 0)
    y = np.full(300, -1)
    y[:30] = y_true[:30]
    xv, yv = _blobs(200, 1)
    xt, yt = _blobs(200, 2)
    out = latent_heads.probe_heads(_Codes(), x, y, xv, yv, xt, yt)
    assert set(out) == set(latent_heads.heads(3)) | set(latent_heads.pool_heads(3))
    assert out["svm C=1"]["val_error"] < 0.02 and out["knn 10"]["test_error"] < 0.02


def test_svm_c1_is_the_model_s_own_head() -> None:
    """On overlapping classes, where heads disagree, ``svm C=1`` reads exactly what the model's SVM would."""
    from model.latent_svm import LatentSVM

    rng = np.random.default_rng(3)
    x, y_true = _blobs(400, 0)
    x = x + rng.normal(0, 0.6, x.shape)
    y = np.full(400, -1)
    y[:60] = y_true[:60]
    xt, yt = _blobs(300, 2)
    xt = xt + rng.normal(0, 0.6, xt.shape)
    out = latent_heads.probe_heads(_Codes(), x, y, x[:0], y[:0], xt, yt)
    own = LatentSVM(n_classes=3).fit(x[:60], y[:60]).predict(xt)
    assert out["svm C=1"]["test_error"] == round(float(np.mean(own != yt)), 5)
    assert 0.05 < out["svm C=1"]["test_error"] < 0.6
    assert len({v["test_error"] for v in out.values()}) > 1, "the heads do differ where classes overlap"


def test_heads_see_only_the_labeled_items() -> None:
    x, y_true = _blobs(300, 0)
    y = np.full(300, -1)
    y[:30] = (y_true[:30] + 1) % 3  # every label wrong: a head trained on them is wrong everywhere
    out = latent_heads.probe_heads(_Codes(), x, y, *_blobs(100, 1), *_blobs(100, 2))
    assert out["nearest centre"]["test_error"] > 0.9
    assert "val_error" not in latent_heads.probe_heads(_Codes(), x, y, x[:0], y[:0], *_blobs(50, 2))["knn 10"]


def test_pool_heads_carry_labels_along_the_pool_s_clusters() -> None:
    """Two moons with six labels each: the unlabeled pool's shape says what the labeled codes alone cannot."""
    from sklearn.datasets import make_moons

    class TwoClasses(_Codes):
        n_classes_ = 2

    x, y_true = make_moons(600, noise=0.05, random_state=0)
    y = np.full(600, -1)
    for c in (0, 1):
        y[np.flatnonzero(y_true == c)[:6]] = c
    xt, yt = make_moons(300, noise=0.05, random_state=1)
    out = latent_heads.probe_heads(TwoClasses(), x, y, x[:0], y[:0], xt, yt)
    assert out["label spreading, 10 neighbours, α 0.9"]["test_error"] < 0.02
    assert out["svm C=1"]["test_error"] > 0.1, "a line through twelve points cannot follow the moons"
