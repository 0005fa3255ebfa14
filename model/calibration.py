"""Is a confidence honest? Reliability bins and expected calibration error (Guo et al. 2017).

A confidence c is calibrated when, among items given c, a fraction c is predicted right.
The paper's normalised SVM confidence is a margin ratio, not a probability, so the
benchmark measures it the same way as a classifier's softmax.
"""

from __future__ import annotations

import numpy as np


def reliability(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> dict[str, list[float]]:
    """Per equal-width bin of confidence: item count, mean confidence and accuracy (NaN when empty)."""
    c = np.clip(np.nan_to_num(np.asarray(confidence, dtype=np.float64), nan=0.0), 0.0, 1.0)
    ok = np.asarray(correct, dtype=np.float64)
    if c.shape != ok.shape:
        raise ValueError(f"confidence {c.shape} and correct {ok.shape} differ in shape")
    which = np.minimum((c * bins).astype(np.int64), bins - 1)
    count = np.bincount(which, minlength=bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.bincount(which, c, minlength=bins) / count
        acc = np.bincount(which, ok, minlength=bins) / count
    return {"count": count.tolist(), "confidence": conf.tolist(), "accuracy": acc.tolist()}


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> float:
    """Count-weighted mean |accuracy - confidence| over the bins: 0 for a perfectly honest confidence."""
    r = reliability(confidence, correct, bins)
    count = np.asarray(r["count"])
    if count.sum() == 0:
        return float("nan")
    gap = np.abs(np.asarray(r["accuracy"]) - np.asarray(r["confidence"]))
    return float(np.sum(np.where(count > 0, gap, 0.0) * count) / count.sum())


def holdout(ids: np.ndarray, fraction: float) -> np.ndarray:
    """Items whose labels a model keeps out of its training to measure itself on: a ``fraction`` of them,
    picked by a hash of their ids, so the same items stay out as a project grows and versions warm-start."""
    ids = np.asarray(ids)
    if float(fraction) <= 0 or len(ids) == 0:
        return np.zeros(len(ids), bool)
    key = (ids.astype(np.int64).astype(np.uint64) * np.uint64(0xD1B54A32D192ED03)) >> np.uint64(11)
    return key < np.uint64(float(fraction) * 2.0 ** 53)
