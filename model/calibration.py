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


GRID = np.linspace(0.0, 1.0, 101)  # where a smooth map is evaluated into knots, so every map is saved alike
BETA_EPS = 1e-3  # the confidence is clipped at 0 and 1 (a tie, a centre or beyond): the beta map's logs need room


def isotonic_map(confidence: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Knots ``(2, m)`` of the non-decreasing step map that fits ``right`` best (Zadrozny & Elkan 2002): no shape
    assumed, so on a few dozen items its top step is often exactly 1.0."""
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(confidence, right)
    return np.vstack([iso.X_thresholds_, iso.y_thresholds_])


def _platt_fit(x: np.ndarray, right: np.ndarray):
    """A logistic regression of ``right`` on ``x`` without a penalty, on Platt's targets: ``(N₊ + 1) / (N₊ + 2)`` for
    a success and ``1 / (N₋ + 2)`` for a mistake, so a few dozen items that happen to separate give a steep map, not
    a step to 0 and 1 (each item enters as a success and a mistake weighted by its target)."""
    from sklearn.linear_model import LogisticRegression

    right = np.asarray(right, np.float64)
    n_pos = float(np.count_nonzero(right))
    target = np.where(right > 0, (n_pos + 1) / (n_pos + 2), 1 / (len(right) - n_pos + 2))
    xx = np.vstack([x, x])
    yy = np.concatenate([np.ones(len(x)), np.zeros(len(x))])
    return LogisticRegression(C=1e10, max_iter=1000).fit(xx, yy, sample_weight=np.concatenate([target, 1 - target]))


def logistic_map(confidence: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Knots of ``σ(a·c + b)`` (Platt 1999) on :data:`GRID`: two numbers, so a few dozen items fit it, and it
    never says 0 or 1. A fit that falls with the confidence is taken as the flat rate of being right."""
    fit = _platt_fit(np.asarray(confidence, np.float64)[:, None], right)
    p = fit.predict_proba(GRID[:, None])[:, 1] if fit.coef_[0, 0] > 0 else np.full(len(GRID), np.mean(right))
    return np.vstack([GRID, p])


def _beta_features(c: np.ndarray) -> np.ndarray:
    c = np.clip(np.asarray(c, np.float64), BETA_EPS, 1.0 - BETA_EPS)
    return np.column_stack([np.log(c), -np.log1p(-c)])


def beta_map(confidence: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Knots of the beta map ``σ(a·ln c − b·ln(1 − c) + m)`` (Kull et al. 2017) on :data:`GRID`, fitted as
    :func:`logistic_map` is: three numbers, it bends at both ends where the logistic map cannot. A negative ``a``
    (else ``b``) would make it fall somewhere, so that feature is dropped and the other refitted, as the paper does;
    the flat rate where that one falls too."""
    x, g = _beta_features(confidence), _beta_features(GRID)
    keep = [0, 1]
    while keep:
        fit = _platt_fit(x[:, keep], right)
        coef = fit.coef_[0]
        if (coef > 0).all():
            return np.vstack([GRID, fit.predict_proba(g[:, keep])[:, 1]])
        keep = [k for i, k in enumerate(keep) if i != int(np.argmax(coef <= 0))] if len(keep) > 1 else []
    return np.vstack([GRID, np.full(len(GRID), np.mean(right))])


MAPS = {"isotonic": isotonic_map, "logistic": logistic_map, "beta": beta_map}
# the map the service fits: chosen on validation over isotonic and beta, on the held tenth and on every label alike
# (README, "Which map turns the confidence into a probability")
SERVED_MAP = "logistic"


def brier_score(probability: np.ndarray, correct: np.ndarray) -> float:
    """Mean squared gap between the stated chance and what happened: proper, so unlike the ECE a map that says
    the overall rate for every item does not score well by it."""
    p = np.asarray(probability, np.float64)
    return float(np.mean((p - np.asarray(correct, np.float64)) ** 2)) if len(p) else float("nan")
