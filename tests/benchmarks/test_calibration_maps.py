"""Maps from confidence to probability, read on the very model a curve trains: the served one and the others."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np

from model.calibration import holdout
from model.latent_svm import LatentSVM

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("calibration_maps", ROOT / "benchmarks" / "calibration_maps.py")
calibration_maps = importlib.util.module_from_spec(spec)
sys.modules["calibration_maps"] = calibration_maps
spec.loader.exec_module(calibration_maps)


class _Codes:
    """A model whose codes are its inputs, calibrated as ``SAEClassifier`` is: on its held labels, picked by id."""

    def __init__(self, x: np.ndarray, y: np.ndarray, share: float) -> None:
        self.calibration_holdout = share
        labeled = np.flatnonzero(y >= 0)
        held = holdout(np.arange(len(y)), share)[labeled]
        self.svm_ = LatentSVM(n_classes=3).fit(x[labeled], y[labeled], calibrate_on=held)

    def transform(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, np.float64)

    def predict_confidence(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scores = self.svm_.decision_function(x)
        return np.argmax(scores, axis=1), self.svm_.confidence_from_scores(scores)


def _blobs(n: int, seed: int, noise: float = 0.7) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    return np.eye(3)[y] + rng.normal(0, noise, (n, 3)), y


def _labeled(n: int, share_labeled: int) -> tuple[np.ndarray, np.ndarray]:
    x, y_true = _blobs(n, 0)
    y = np.full(n, -1)
    y[:share_labeled] = y_true[:share_labeled]
    return x, y


def test_every_map_is_read_on_both_splits_fitted_on_the_held_items_and_on_every_label() -> None:
    x, y = _labeled(3000, 600)
    out = calibration_maps.probe_calibration(_Codes(x, y, 0.2), x, y, *_blobs(800, 1), *_blobs(800, 2))
    assert set(out["held"]) == set(out["every label"]) == {"isotonic", "logistic", "beta"}
    assert set(out["none"]) == {"val", "test"} and set(out["held"]["beta"]["test"]) == {"ece", "brier"}
    assert 90 < out["n_held"] < 150 and out["n_labels"] == 600
    assert out["check"] == 0.0, "the probe's isotonic map on the held items is the model's own"
    for fitted in ("held", "every label"):
        assert all(out[fitted][m]["val"]["ece"] < out["none"]["val"]["ece"] for m in ("isotonic", "logistic", "beta"))


def test_a_probe_that_does_not_read_the_model_s_own_map_shows_in_its_check() -> None:
    x, y = _labeled(3000, 600)
    model = _Codes(x, y, 0.2)
    model.calibration_holdout = 0.5  # the probe now fits on other items than the model did
    assert calibration_maps.probe_calibration(model, x, y, *_blobs(400, 1), *_blobs(400, 2))["check"] > 0


def test_too_few_held_items_calibrate_on_every_label_as_the_model_does() -> None:
    x, y = _labeled(1000, 60)
    out = calibration_maps.probe_calibration(_Codes(x, y, 0.1), x, y, x[:0], y[:0], *_blobs(300, 2))
    assert out["n_held"] == out["n_labels"] == 60 and out["check"] == 0.0
    assert out["held"] == out["every label"] and "val" not in out["none"]
